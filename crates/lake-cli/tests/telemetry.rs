//! `[telemetry]`: a run's trace and metrics over OTLP/HTTP, received by a small collector the
//! test starts on 127.0.0.1 and decoded from protobuf.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{Received, lake, receiver, stderr, stdout};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_proto::tonic::trace::v1::{Span, status};
use prost::Message;

fn spans(got: &Received) -> Vec<Span> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == "/v1/traces")
        .flat_map(|(_, b)| {
            ExportTraceServiceRequest::decode(b.as_slice())
                .unwrap()
                .resource_spans
        })
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn int(s: &Span, key: &str) -> Option<i64> {
    match attr(&s.attributes, key) {
        Some(any_value::Value::IntValue(i)) => Some(*i),
        _ => None,
    }
}

fn text(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

fn pipeline(dir: &Path, extra: &str, second: &str) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("data/orders.csv"),
        "id,amount,note\n1,10.5,x\n2,20,y\n3,-1,z\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("lake.toml"),
        format!(
            r#"[lake]
name = "traced"
root = "lake"
{extra}
[sources.orders]
kind = "file"
path = "data/orders.csv"

[steps.clean]
kind = "sql"
inputs = ["raw/orders"]
output = "trusted/orders"
sql = "SELECT CAST(id AS BIGINT) AS id, CAST(amount AS DOUBLE) AS amount FROM orders"
expect = ["amount > 0"]
max_rejected = 0.5

[steps.totals]
kind = "sql"
inputs = ["trusted/orders"]
output = "refined/totals"
sql = "{second}"
"#
        ),
    )
    .unwrap();
}

#[test]
fn a_run_is_one_trace_of_its_windows_steps_and_publishes_with_metrics() {
    let (url, got) = receiver();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pipeline(
        dir,
        &format!("\n[telemetry]\notlp_endpoint = \"{url}\"\n"),
        "SELECT COUNT(*) AS n, SUM(amount) AS total FROM orders",
    );
    let run = lake(dir)
        .args(["run", "--date", "2024-03-01"])
        .env("OTEL_SERVICE_NAME", "lake-test")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));

    let all = spans(&got);
    let by_name: BTreeMap<&str, &Span> = all.iter().map(|s| (s.name.as_str(), s)).collect();
    let names: Vec<&str> = by_name.keys().copied().collect();
    assert_eq!(
        names,
        [
            "ingest orders",
            "lake run",
            "publish refined/totals",
            "publish trusted/orders",
            "step clean",
            "step totals"
        ],
        "{all:#?}"
    );
    // One trace; the run is its root, and every other span hangs under it.
    let root = by_name["lake run"];
    assert!(root.parent_span_id.is_empty());
    assert!(all.iter().all(|s| s.trace_id == root.trace_id));
    for s in &all {
        let parent = match s.name.as_str() {
            "lake run" => continue,
            "publish trusted/orders" => by_name["step clean"],
            "publish refined/totals" => by_name["step totals"],
            _ => root,
        };
        assert_eq!(s.parent_span_id, parent.span_id, "{}", s.name);
        assert!(s.start_time_unix_nano <= s.end_time_unix_nano, "{}", s.name);
        assert!(
            s.start_time_unix_nano >= root.start_time_unix_nano
                && s.end_time_unix_nano <= root.end_time_unix_nano,
            "{} is outside the run",
            s.name
        );
    }
    let ok = status::StatusCode::Ok as i32;
    assert!(all.iter().all(|s| s.status.as_ref().unwrap().code == ok));
    // The window's and the steps' counts.
    let window = by_name["ingest orders"];
    assert_eq!(int(window, "lake.objects"), Some(1));
    assert_eq!(
        int(window, "lake.bytes"),
        Some(
            std::fs::metadata(dir.join("data/orders.csv"))
                .unwrap()
                .len() as i64
        )
    );
    assert_eq!(int(window, "lake.attempts"), Some(1));
    let clean = by_name["step clean"];
    assert_eq!(int(clean, "lake.rows"), Some(2));
    assert_eq!(int(clean, "lake.rejected"), Some(1));
    assert_eq!(
        text(&clean.attributes, "lake.backend").as_deref(),
        Some("local")
    );
    assert_eq!(int(by_name["step totals"], "lake.rows"), Some(1));
    let resource = got
        .lock()
        .unwrap()
        .iter()
        .find(|(p, _)| p == "/v1/traces")
        .map(|(_, b)| ExportTraceServiceRequest::decode(b.as_slice()).unwrap())
        .unwrap()
        .resource_spans[0]
        .resource
        .clone()
        .unwrap();
    assert_eq!(
        text(&resource.attributes, "service.name").as_deref(),
        Some("lake-test")
    );

    // Metrics: one succeeded run, each step's duration and rows by step.
    let metrics: Vec<_> = got
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == "/v1/metrics")
        .flat_map(|(_, b)| {
            ExportMetricsServiceRequest::decode(b.as_slice())
                .unwrap()
                .resource_metrics
        })
        .flat_map(|r| r.scope_metrics)
        .flat_map(|s| s.metrics)
        .collect();
    let find = |name: &str| {
        metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} in {metrics:#?}"))
    };
    let Some(metric::Data::Sum(runs)) = &find("lake.runs").data else {
        panic!("lake.runs is a sum");
    };
    assert_eq!(runs.data_points.len(), 1);
    assert_eq!(
        text(&runs.data_points[0].attributes, "status").as_deref(),
        Some("succeeded")
    );
    assert_eq!(
        runs.data_points[0].value,
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(1))
    );
    let Some(metric::Data::Histogram(steps)) = &find("lake.step.duration").data else {
        panic!("lake.step.duration is a histogram");
    };
    let mut stepped: Vec<String> = steps
        .data_points
        .iter()
        .map(|p| text(&p.attributes, "step").unwrap())
        .collect();
    stepped.sort();
    assert_eq!(stepped, ["clean", "totals"]);
    assert!(steps.data_points.iter().all(|p| p.count == 1));
    let Some(metric::Data::Sum(rows)) = &find("lake.step.rows").data else {
        panic!("lake.step.rows is a sum");
    };
    let clean_rows = rows
        .data_points
        .iter()
        .find(|p| text(&p.attributes, "step").as_deref() == Some("clean"))
        .unwrap();
    assert_eq!(
        clean_rows.value,
        Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(2))
    );

    // A failing step: its span has the error, and so does the run's.
    got.lock().unwrap().clear();
    pipeline(
        dir,
        &format!("\n[telemetry]\notlp_endpoint = \"{url}\"\n"),
        "SELECT no_such_column FROM orders",
    );
    let failed = lake(dir)
        .args(["run", "--date", "2024-03-01"])
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let all = spans(&got);
    let totals = all.iter().find(|s| s.name == "step totals").unwrap();
    let st = totals.status.as_ref().unwrap();
    assert_eq!(st.code, status::StatusCode::Error as i32);
    assert!(st.message.contains("no_such_column"), "{}", st.message);
    assert!(
        totals.events.iter().any(|e| e.name == "exception"),
        "{totals:#?}"
    );
    let run_span = all.iter().find(|s| s.name == "lake run").unwrap();
    assert_eq!(
        run_span.status.as_ref().unwrap().code,
        status::StatusCode::Error as i32
    );
    assert_eq!(
        text(&run_span.attributes, "lake.status").as_deref(),
        Some("failed")
    );
}

#[test]
fn a_collector_that_is_down_costs_a_run_under_a_second_and_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pipeline(dir, "", "SELECT COUNT(*) AS n FROM orders");
    // A port nothing listens on.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let timed = |endpoint: Option<&str>| {
        let mut c = lake(dir);
        c.args(["run", "--date", "2024-03-01", "--force"]);
        if let Some(e) = endpoint {
            c.env("OTEL_EXPORTER_OTLP_ENDPOINT", e);
        }
        let t = std::time::Instant::now();
        let out = c.output().unwrap();
        (t.elapsed(), out)
    };
    let (without, out) = timed(None);
    assert!(out.status.success(), "{}", stderr(&out));
    let (with, out) = timed(Some(&down));
    assert!(out.status.success(), "{}", stderr(&out));
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        said.contains("telemetry: the run's trace was not sent"),
        "{said}"
    );
    assert!(
        with < without + std::time::Duration::from_secs(1),
        "{with:?} with the collector down, {without:?} without"
    );
}
