//! Sinks: where a committed dataset goes after the step that writes it (a database table).
//!
//! The core decides *when* a sink runs (after its step succeeded or was up to date, in the same
//! run, or on its own with `lake sink`) and records it in the ledger; a sink crate decides
//! *how* the rows get there. What a sink must guarantee: the destination changes in one
//! transaction or not at all, and it remembers which committed dataset it holds, in that same
//! transaction, so a load is skipped when nothing changed and never done twice.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::Result;
use crate::config::{SinkMode, SinkSpec};
use crate::doctor::Check;
use crate::ledger::{self, LineageRow, RunRecord, Status};
use crate::publish::{Dataset, Manifest};

/// A destination of committed datasets, configured by a `[sinks.<name>]`.
#[async_trait]
pub trait Sink: Send + Sync + std::fmt::Debug {
    /// The `[sinks.<name>]` it serves.
    fn spec(&self) -> &SinkSpec;

    /// Load `load.dataset` into the destination, unless it already holds `load.fingerprint`
    /// and `load.force` is false. All or nothing: on an error the destination is as it was.
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
    /// What identifies this content and mode (see [`fingerprint`]).
    pub fingerprint: String,
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

/// What identifies a sink's load: its mode and the committed objects with their SHA-256. A
/// republish of the same bytes keeps it; any changed object, or another mode, changes it.
pub fn fingerprint(mode: SinkMode, manifest: &Manifest) -> String {
    let mut h = Sha256::new();
    h.update(mode.as_str());
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
