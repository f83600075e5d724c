//! `[telemetry]`: where lake sends its traces and metrics. lake-otel owns the table.

use std::time::Duration;

use lake_core::config::{ConfigCx, Pipeline, parse_duration, secs};
use lake_core::settings::SettingsKind;
use serde::{Deserialize, Serialize};

/// `[telemetry]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TelemetryConfig {
    otlp_endpoint: Option<String>,
    timeout: Option<String>,
    enabled: Option<bool>,
}

/// A checked `[telemetry]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelemetrySpec {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`): traces go to
    /// `/v1/traces`, metrics to `/v1/metrics`. `None`: the `OTEL_EXPORTER_OTLP_*` variables.
    pub otlp_endpoint: Option<String>,
    /// The longest an export may take (each of the trace and the metrics).
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// `false` turns telemetry off whatever the environment says.
    pub enabled: bool,
}

impl Default for TelemetrySpec {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            timeout: Duration::from_secs(2),
            enabled: true,
        }
    }
}

impl TelemetrySpec {
    /// The pipeline's checked `[telemetry]`, or the defaults.
    pub fn of(pipeline: &Pipeline) -> Self {
        pipeline
            .settings(TelemetrySettings.table())
            .unwrap_or_default()
    }
}

/// The `[telemetry]` table's kind: register it with `Kinds::settings(TelemetrySettings)`.
#[derive(Debug, Clone, Copy)]
pub struct TelemetrySettings;

impl SettingsKind for TelemetrySettings {
    fn table(&self) -> &'static str {
        "telemetry"
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<serde_json::Value> {
        let t: TelemetryConfig = cx.own().unwrap_or_default();
        let defaults = TelemetrySpec::default();
        if let Some(e) = &t.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            cx.value(
                "telemetry.otlp_endpoint",
                format!("{e:?} is not an http:// or https:// URL (OTLP/HTTP, port 4318)"),
            );
        }
        let timeout = match t.timeout.as_deref().map(parse_duration) {
            None => defaults.timeout,
            Some(Ok(d)) if !d.is_zero() => d,
            Some(Ok(_)) => {
                cx.value("telemetry.timeout", "a duration over zero, such as \"2s\"");
                defaults.timeout
            }
            Some(Err(m)) => {
                cx.value("telemetry.timeout", m);
                defaults.timeout
            }
        };
        let spec = TelemetrySpec {
            otlp_endpoint: t.otlp_endpoint,
            timeout,
            enabled: t.enabled.unwrap_or(true),
        };
        Some(serde_json::to_value(spec).expect("a TelemetrySpec serialises"))
    }
}
