//! `GET /metrics`: the pipeline's runs, steps and datasets in Prometheus' text format (0.0.4),
//! for a Prometheus server to scrape (behind the same Host, origin and token rules as every
//! route). Read from the ledger and the zones on each scrape, as the pages are.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use lake::core::ledger::Status;

use crate::App;
use crate::pages::{covering_runs, ledger_summaries};

/// A label value as the text format writes it: `\`, `"` and newlines escaped.
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// One metric family: its `# HELP` and `# TYPE` lines, then a line per sample.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Self { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
    }
}

/// How a run can end (or that it is still going).
const STATUSES: [Status; 4] = [
    Status::Succeeded,
    Status::Failed,
    Status::Cancelled,
    Status::Running,
];

pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Response {
    let failed = |e: String| (StatusCode::INTERNAL_SERVER_ERROR, e).into_response();
    let runs = match ledger_summaries(&app).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let covering = match covering_runs(&app).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let p = &app.lake.pipeline;
    let ages = crate::pages::ages(&app).await;
    let pl = p.name.as_str();
    let mut out = String::new();

    let mut f = Family::new(
        &mut out,
        "lake_runs_total",
        "counter",
        "Runs of the pipeline in the ledger, by how they ended.",
    );
    for s in STATUSES {
        let n = runs.iter().filter(|r| r.status == s).count();
        let status = s.to_string();
        f.sample(
            "lake_runs_total",
            &[("pipeline", pl), ("status", &status)],
            n as f64,
        );
    }
    if let Some(last) = runs.iter().max_by_key(|r| r.started) {
        let mut f = Family::new(
            &mut out,
            "lake_last_run_timestamp_seconds",
            "gauge",
            "When the newest run started (Unix time).",
        );
        f.sample(
            "lake_last_run_timestamp_seconds",
            &[("pipeline", pl)],
            last.started.timestamp() as f64,
        );
        let mut f = Family::new(
            &mut out,
            "lake_last_run_status",
            "gauge",
            "1 for how the newest run ended (or that it is running), 0 for the others.",
        );
        for s in STATUSES {
            let status = s.to_string();
            f.sample(
                "lake_last_run_status",
                &[("pipeline", pl), ("status", &status)],
                f64::from(u8::from(last.status == s)),
            );
        }
    }

    let last_steps = crate::pages::last_steps(&covering);
    let mut f = Family::new(
        &mut out,
        "lake_step_last_duration_seconds",
        "gauge",
        "How long each step's newest run took.",
    );
    for (name, s) in &last_steps {
        if let Some(ms) = s.duration_ms {
            let status = s.status.to_string();
            f.sample(
                "lake_step_last_duration_seconds",
                &[("pipeline", pl), ("step", name), ("status", &status)],
                ms as f64 / 1000.0,
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "lake_step_last_rows",
        "gauge",
        "Rows each step's newest run wrote.",
    );
    for (name, s) in &last_steps {
        if let Some(rows) = s.rows {
            f.sample(
                "lake_step_last_rows",
                &[("pipeline", pl), ("step", name)],
                rows as f64,
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "lake_dataset_age_seconds",
        "gauge",
        "Seconds since each dataset was last committed (absent: never).",
    );
    for a in ages.iter() {
        if let Some(age) = a.age_secs {
            f.sample(
                "lake_dataset_age_seconds",
                &[("pipeline", pl), ("dataset", &a.dataset)],
                age as f64,
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "lake_dataset_stale",
        "gauge",
        "1 when a dataset with a `freshness` limit is older than it (or never committed).",
    );
    for a in ages.iter().filter(|a| a.limit_secs.is_some()) {
        f.sample(
            "lake_dataset_stale",
            &[("pipeline", pl), ("dataset", &a.dataset)],
            f64::from(u8::from(a.is_stale())),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
