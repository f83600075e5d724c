//! Sinks: where a committed dataset goes after the step that writes it (a database table).
//!
//! The core decides *when* a sink runs (after its step succeeded or was up to date, in the same
//! run, or on its own with `lake sink`) and records it in the ledger; a sink crate decides
//! *how* the rows get there. What a sink must guarantee: the destination changes in one
//! transaction or not at all, and it remembers which committed dataset it holds, in that same
//! transaction, so a load is skipped when nothing changed and never done twice.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::Result;
use crate::backend::{AsAny, BackendEnv};
use crate::config::{ConfigCx, SinkSpec, Template};
use crate::doctor::Check;
use crate::ledger::{self, LineageRow, RunRecord, Status};
use crate::publish::{Dataset, Manifest};

/// A kind of sink: `kind = "<name>"` in a `[sinks.<name>]`, with keys of its own.
///
/// Core reads the keys every sink has (`kind`, `from`, `optional`: [`SHARED`]); the kind
/// reads the rest with [`ConfigCx::own`], reporting each problem with its line through the
/// context, and returns the checked config only when nothing was wrong.
pub trait SinkKind: Send + Sync + fmt::Debug + 'static {
    /// The name users write in `kind = "…"`.
    fn name(&self) -> &'static str;

    /// Check the sink's own keys; the checked config when they are right.
    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn SinkConfig>>;
}

/// The keys of a `[sinks.<name>]` that core reads (a kind's [`ConfigCx::own`] leaves them out).
pub const SHARED: &[&str] = &["kind", "from", "optional"];

/// A checked sink configuration (its own keys): what the run, `lake plan`, `lake doctor` and
/// `lake iam-policy` ask of a sink besides loading.
#[async_trait]
pub trait SinkConfig: AsAny + Send + Sync + fmt::Debug + 'static {
    /// Where the rows go, as people read it (`public.hourly`): the ledger's `table`.
    fn destination(&self) -> String;

    /// The plan line after the dataset's arrow (`public.hourly (replace) at ${env:PG_URL}`);
    /// no secret in it.
    fn describe(&self) -> String {
        self.destination()
    }

    /// The checked keys as JSON for `lake plan --json` (no secret in it).
    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// The key and text of a destination two sinks cannot share (`("table", "postgres table
    /// public.hourly")`): two sinks with the same text are refused at that key.
    fn exclusive(&self) -> Option<(&'static str, String)> {
        None
    }

    /// The values whose `${env:…}` variables must all be set for an `optional = true` sink
    /// to be on.
    fn required(&self) -> Vec<&Template> {
        Vec::new()
    }

    /// The sink a run loads through, reading the zones as `env` offers them.
    async fn open(&self, spec: &SinkSpec, env: &BackendEnv) -> Result<Arc<dyn Sink>>;

    /// IAM statements the sink needs (added by `lake iam-policy`).
    fn iam_statements(&self, _spec: &SinkSpec) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

/// A checked sink config, as the pipeline holds it.
pub type SinkRef = crate::kinds::Checked<dyn SinkConfig>;

/// A destination of committed datasets, configured by a `[sinks.<name>]`.
#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// The `[sinks.<name>]` it serves.
    fn spec(&self) -> &SinkSpec;

    /// Load `load.dataset` into the destination, unless it already holds that content (see
    /// [`fingerprint`]) and `load.force` is false. All or nothing: on an error the destination is as it was.
    async fn load(&self, load: &SinkLoad) -> Result<SinkOutcome>;

    /// `lake doctor`'s checks: the destination reachable, and the rights to create and write
    /// the table.
    async fn doctor(&self) -> Vec<Check>;
}

/// What a sink is asked to load.
#[derive(Debug, Clone)]
pub struct SinkLoad {
    /// The committed dataset (its manifest's objects).
    pub dataset: Dataset,
    /// Its manifest (for [`fingerprint`]).
    pub manifest: Manifest,
    /// The run loading it.
    pub run_id: String,
    /// One row per step of the run that made the data, for `lineage_table`.
    pub lineage: Vec<LineageRow>,
    /// Load even when the destination holds this fingerprint already.
    pub force: bool,
}

/// How a sink ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkOutcome {
    /// The rows were loaded.
    Loaded {
        /// Rows loaded.
        rows: u64,
        /// Bytes of the dataset's objects read.
        bytes: u64,
    },
    /// The destination holds this content already.
    UpToDate,
}

/// What identifies a sink's load: `tag` (what changes the load besides the data, such as a
/// mode) and the committed objects with their SHA-256. A republish of the same bytes keeps it;
/// any changed object, or another tag, changes it.
pub fn fingerprint(tag: &str, manifest: &Manifest) -> String {
    let mut h = Sha256::new();
    h.update(tag);
    let mut objects: Vec<_> = manifest.objects.iter().collect();
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    for o in objects {
        let rel = o.key.strip_prefix(&manifest.prefix).unwrap_or(&o.key);
        h.update(format!("\n{rel} {} {}", o.size, o.sha256));
    }
    hex::encode(h.finalize())
}

/// The lineage a sink writes for the data of `run`: its steps that succeeded or were up to
/// date, a row per dataset each read (see [`ledger::lineage`]).
pub fn lineage(run: &RunRecord) -> Vec<LineageRow> {
    ledger::lineage(run)
        .into_iter()
        .filter(|l| !l.ingest && matches!(l.status, Status::Succeeded | Status::UpToDate))
        .collect()
}
