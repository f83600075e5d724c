//! lake's runs as OpenTelemetry traces and metrics, exported over OTLP/HTTP (protobuf).
//!
//! A run is one trace: a `lake run` span with a span per source window, per step (with its
//! publish as a child), per catalog table and per sink, each with its counts and status, and
//! errors recorded on the span that failed. The spans are built when the run ends, from its
//! record (what the ledger keeps, so secrets are already scrubbed) and the times a
//! [`Recorder`] saw its events at, then sent in one request. Metrics (run and step durations,
//! rows, bytes, failures) are recorded from the same record and sent after it.
//!
//! An unreachable collector never fails a run and delays its end by at most `[telemetry]
//! timeout`: each export is one bounded request, and a failure is a warning.

mod http;
mod settings;
mod spans;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lake_core::config::Pipeline;
use lake_core::ledger::{RunRecord, Status};
use lake_core::run::{Event, RunObserver};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, MeterProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SpanExporter as _;

pub use settings::{TelemetrySettings, TelemetrySpec};

/// The environment variables that turn telemetry on without `[telemetry]`.
const ENDPOINT_VARS: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
];

/// The exporters of one program (a `lake run`, or `lake schedule` for all its runs).
pub struct Telemetry {
    spans: tokio::sync::Mutex<opentelemetry_otlp::SpanExporter>,
    meters: SdkMeterProvider,
    instruments: Instruments,
    timeout: Duration,
    pipeline: String,
    backend: String,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// The exporters `pipeline` asks for: `[telemetry] otlp_endpoint`, else the standard
    /// `OTEL_EXPORTER_OTLP_*ENDPOINT` variables; `None` when neither names a collector (or
    /// `OTEL_SDK_DISABLED=true`, or `[telemetry] enabled = false`). Call it inside a tokio
    /// runtime: requests are sent on it.
    pub fn of(pipeline: &Pipeline) -> Result<Option<Self>, String> {
        let spec = TelemetrySpec::of(pipeline);
        let env_on = ENDPOINT_VARS
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|e| !e.is_empty()));
        let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v == "true");
        if disabled || !spec.enabled || (spec.otlp_endpoint.is_none() && !env_on) {
            return Ok(None);
        }
        let client = http::Client::new(spec.timeout).map_err(|e| e.to_string())?;
        let endpoint = |path: &str| {
            spec.otlp_endpoint
                .as_ref()
                .map(|e| format!("{}{path}", e.trim_end_matches('/')))
        };
        let mut spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client.clone())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(spec.timeout);
        if let Some(e) = endpoint("/v1/traces") {
            spans = spans.with_endpoint(e);
        }
        let mut spans = spans.build().map_err(|e| e.to_string())?;
        let mut metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(spec.timeout);
        if let Some(e) = endpoint("/v1/metrics") {
            metrics = metrics.with_endpoint(e);
        }
        let metrics = metrics.build().map_err(|e| e.to_string())?;
        let resource = resource();
        spans.set_resource(&resource);
        // Exported when each run ends (force_flush) and, for a long `lake schedule`, every
        // minute in between.
        let reader = opentelemetry_sdk::metrics::PeriodicReader::builder(metrics)
            .with_interval(Duration::from_secs(60))
            .build();
        let meters = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(reader)
            .build();
        let instruments = Instruments::new(&meters);
        Ok(Some(Self {
            spans: tokio::sync::Mutex::new(spans),
            meters,
            instruments,
            timeout: spec.timeout,
            pipeline: pipeline.name.clone(),
            backend: pipeline.backend.name().to_owned(),
        }))
    }

    /// A recorder for one run: it passes every event on to `inner` and notes when each
    /// happened, for [`export`](Self::export).
    pub fn recorder(&self, inner: Option<Arc<dyn RunObserver>>) -> Arc<Recorder> {
        Arc::new(Recorder {
            inner,
            seen: Mutex::new(Vec::new()),
        })
    }

    /// Send the run's trace and metrics; a failure is logged, never returned. Takes at most
    /// about twice the timeout (the trace, then the metrics).
    pub async fn export(&self, record: &RunRecord, recorder: &Recorder) {
        let seen = recorder.seen.lock().map(|s| s.clone()).unwrap_or_default();
        let batch = spans::of_run(record, &seen, &self.backend);
        let sent = {
            let spans = self.spans.lock().await;
            tokio::time::timeout(self.timeout, spans.export(batch)).await
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("telemetry: the run's trace was not sent: {e}"),
            Err(_) => tracing::warn!(
                "telemetry: the run's trace was not sent within {:?}",
                self.timeout
            ),
        }
        self.instruments.record(&self.pipeline, record);
        let meters = self.meters.clone();
        let flushed = tokio::time::timeout(
            self.timeout,
            tokio::task::spawn_blocking(move || meters.force_flush()),
        )
        .await;
        match flushed {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!("telemetry: the run's metrics were not sent: {e}"),
            Ok(Err(e)) => tracing::warn!("telemetry: the run's metrics were not sent: {e}"),
            Err(_) => tracing::warn!(
                "telemetry: the run's metrics were not sent within {:?}",
                self.timeout
            ),
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // The reader's thread ends; what each run recorded was flushed when it ended.
        let _ = self
            .meters
            .shutdown_with_timeout(Duration::from_millis(100));
    }
}

/// The resource of every span and metric: `service.name` from `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES`, else `lake`; the attributes of `OTEL_RESOURCE_ATTRIBUTES`.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|n| !n.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| {
            a.split(',')
                .any(|kv| kv.trim_start().starts_with("service.name="))
        });
    let b = Resource::builder();
    if named {
        b.build()
    } else {
        b.with_service_name("lake").build()
    }
}

/// When the events of a run happened, as a [`RunObserver`] between the run and its observer.
pub struct Recorder {
    inner: Option<Arc<dyn RunObserver>>,
    seen: Mutex<Vec<(SystemTime, Seen)>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

/// The events a trace needs the time of.
#[derive(Debug, Clone)]
enum Seen {
    /// A source's windows start landing.
    Catching(String),
    /// A window ended.
    Ingested(String, chrono::NaiveDate),
    /// A step's output started publishing.
    Publishing(String),
    /// What the backend said of a step's cluster or job, last.
    Cluster(String, String),
    /// A step ended.
    StepFinished(String),
    /// A sink ended.
    Sink(String),
    /// A catalog table ended.
    Catalog(String),
}

impl RunObserver for Recorder {
    fn event(&self, event: &Event) {
        let seen = match event {
            Event::Catching { source, .. } => Some(Seen::Catching(source.clone())),
            Event::Ingested { source, date, .. } => Some(Seen::Ingested(source.clone(), *date)),
            Event::Publishing { step, .. } => Some(Seen::Publishing(step.clone())),
            Event::StepProgress {
                name,
                cluster: Some(c),
                ..
            } => Some(Seen::Cluster(name.clone(), c.clone())),
            Event::StepFinished { record } => Some(Seen::StepFinished(record.name.clone())),
            Event::SinkFinished { record } => Some(Seen::Sink(record.name.clone())),
            Event::CatalogFinished { record } => Some(Seen::Catalog(record.table.clone())),
            _ => None,
        };
        if let Some(s) = seen
            && let Ok(mut all) = self.seen.lock()
        {
            all.push((SystemTime::now(), s));
        }
        if let Some(o) = &self.inner {
            o.event(event);
        }
    }
}

/// The metric instruments (names are part of lake's interface: docs/monitoring.md).
struct Instruments {
    runs: Counter<u64>,
    run_duration: Histogram<f64>,
    step_duration: Histogram<f64>,
    step_rows: Counter<u64>,
    step_rejected: Counter<u64>,
    step_bytes: Counter<u64>,
    step_failures: Counter<u64>,
    ingest_bytes: Counter<u64>,
    ingest_objects: Counter<u64>,
    ingest_failures: Counter<u64>,
}

impl Instruments {
    fn new(provider: &SdkMeterProvider) -> Self {
        let m = provider.meter("lake");
        Self {
            runs: m
                .u64_counter("lake.runs")
                .with_description("Runs ended, by status")
                .build(),
            run_duration: m
                .f64_histogram("lake.run.duration")
                .with_unit("s")
                .with_description("A run's wall time")
                .build(),
            step_duration: m
                .f64_histogram("lake.step.duration")
                .with_unit("s")
                .with_description("A step's wall time, publish included")
                .build(),
            step_rows: m
                .u64_counter("lake.step.rows")
                .with_description("Rows steps wrote")
                .build(),
            step_rejected: m
                .u64_counter("lake.step.rejected")
                .with_description("Rows steps rejected")
                .build(),
            step_bytes: m
                .u64_counter("lake.step.bytes")
                .with_unit("By")
                .with_description("Bytes steps wrote")
                .build(),
            step_failures: m
                .u64_counter("lake.step.failures")
                .with_description("Steps that failed")
                .build(),
            ingest_bytes: m
                .u64_counter("lake.ingest.bytes")
                .with_unit("By")
                .with_description("Bytes landed in raw")
                .build(),
            ingest_objects: m
                .u64_counter("lake.ingest.objects")
                .with_description("Objects landed in raw")
                .build(),
            ingest_failures: m
                .u64_counter("lake.ingest.failures")
                .with_description("Source windows that failed")
                .build(),
        }
    }

    fn record(&self, pipeline: &str, r: &RunRecord) {
        let run = [
            KeyValue::new("pipeline", pipeline.to_owned()),
            KeyValue::new("status", r.status.to_string()),
        ];
        self.runs.add(1, &run);
        if let Some(end) = r.ended {
            let secs = (end - r.started).num_milliseconds().max(0) as f64 / 1000.0;
            self.run_duration.record(secs, &run);
        }
        for s in &r.steps {
            let attrs = [
                KeyValue::new("pipeline", pipeline.to_owned()),
                KeyValue::new("step", s.name.clone()),
                KeyValue::new("status", s.status.to_string()),
            ];
            if let Some(ms) = s.duration_ms {
                self.step_duration.record(ms as f64 / 1000.0, &attrs);
            }
            self.step_rows.add(s.rows.unwrap_or(0), &attrs);
            self.step_rejected.add(s.rejected.unwrap_or(0), &attrs);
            self.step_bytes.add(s.bytes.unwrap_or(0), &attrs);
            if s.status == Status::Failed {
                self.step_failures.add(1, &attrs);
            }
        }
        for i in &r.ingest {
            let attrs = [
                KeyValue::new("pipeline", pipeline.to_owned()),
                KeyValue::new("source", i.source.clone()),
                KeyValue::new("status", i.status.to_string()),
            ];
            self.ingest_bytes.add(i.bytes, &attrs);
            self.ingest_objects.add(i.objects.len() as u64, &attrs);
            if i.status == Status::Failed {
                self.ingest_failures.add(1, &attrs);
            }
        }
    }
}
