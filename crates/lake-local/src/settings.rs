//! `[engine]`: the embedded engine's limits (memory before spilling, threads, spill folder, how
//! what it reads is verified). lake-local owns the table: [`EngineSettings`] checks it when
//! lake.toml is loaded, and [`EngineSpec::of`] reads the checked table back.

use std::path::PathBuf;

use lake_core::config::{ConfigCx, Pipeline, parse_bytes};
use lake_core::settings::SettingsKind;
use serde::{Deserialize, Serialize};

/// `[engine]`: limits of the embedded SQL engine (DataFusion) that runs `sql` steps locally.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Memory for sorts, joins and aggregates before they spill to disk (`512MiB`, `4GiB`).
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// Threads (and partitions) a query uses; default: the number of CPUs.
    #[serde(default)]
    pub threads: Option<usize>,
    /// Folder for spill files; default: the system's temporary folder.
    #[serde(default)]
    pub spill_dir: Option<String>,
    /// How what a query reads is checked against its manifests: `"sha256"` (the default) or
    /// `"size"`.
    #[serde(default)]
    pub verify: Option<String>,
}

/// A checked `[engine]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSpec {
    /// Bytes for sorts, joins and aggregates before they spill; `None`: the engine's default.
    pub memory_limit: Option<u64>,
    /// Threads and partitions per query; `None`: the number of CPUs.
    pub threads: Option<usize>,
    /// Folder for spill files; `None`: the system's temporary folder.
    pub spill_dir: Option<PathBuf>,
    /// How what a query reads is checked against its manifests.
    pub verify: Verify,
}

impl EngineSpec {
    /// The pipeline's checked `[engine]`, or the defaults when this program did not register
    /// [`EngineSettings`].
    pub fn of(pipeline: &Pipeline) -> Self {
        pipeline
            .settings(EngineSettings.table())
            .unwrap_or_default()
    }
}

/// How the embedded engine checks the objects a step or `lake query` reads (`[engine] verify`).
/// Sizes are always checked; objects a run committed itself are not read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// Read every object back and compare its SHA-256 with its manifest's before the result is
    /// used (a step's output published, a query's rows shown).
    #[default]
    Sha256,
    /// Compare sizes only.
    Size,
}

/// The `[engine]` table's kind: register it with `Kinds::settings(EngineSettings)`.
#[derive(Debug, Clone, Copy)]
pub struct EngineSettings;

impl SettingsKind for EngineSettings {
    fn table(&self) -> &'static str {
        "engine"
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<serde_json::Value> {
        let e: EngineConfig = cx.own().unwrap_or_default();
        let memory_limit = e.memory_limit.as_ref().and_then(|m| {
            parse_bytes(m)
                .map_err(|msg| cx.value("engine.memory_limit", msg))
                .ok()
        });
        if e.threads == Some(0) {
            cx.value("engine.threads", "threads must be at least 1");
        }
        let verify = match e.verify.as_deref() {
            None | Some("sha256") => Verify::Sha256,
            Some("size") => Verify::Size,
            Some(other) => {
                cx.value(
                    "engine.verify",
                    format!("verify is \"sha256\" or \"size\", not {other:?}"),
                );
                Verify::Sha256
            }
        };
        let spec = EngineSpec {
            memory_limit,
            threads: e.threads.filter(|t| *t > 0),
            spill_dir: e.spill_dir.as_ref().map(|d| cx.base_dir.join(d)),
            verify,
        };
        Some(serde_json::to_value(spec).expect("an EngineSpec serialises"))
    }
}
