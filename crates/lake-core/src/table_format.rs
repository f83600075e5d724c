//! Table formats: how a published dataset is also described for engines that read tables, not
//! folders (`[lake] table_format = "iceberg"`).
//!
//! lake's own manifest stays the commit point of a publish (lake's readers and the skip logic
//! read it). After it, the step's table format commits a snapshot that lists exactly the
//! objects the manifest lists, before the replaced objects are tidied away: an engine reading
//! the table sees the old snapshot or the new one, never a mix. A commit is idempotent (a
//! snapshot that describes the manifest already is left as it is), so a run that finds its
//! output up to date commits again what a killed run left uncommitted.
//!
//! The default format, `parquet`, is the folder alone and needs no plug-in. A crate that
//! offers another registers a [`TableFormatKind`] with [`Kinds::table_format`](crate::kinds::Kinds::table_format).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::Result;
use crate::backend::BackendEnv;
use crate::publish::{Dataset, Manifest};
use crate::zone::DynZoneStore;

/// The name of the default format: Parquet folders with lake's manifests, nothing more.
pub const PARQUET: &str = "parquet";

/// The folder, directly under a dataset's prefix, where a table format keeps its own files
/// (`trusted/credit/metadata/`). Publishing never lists or tidies it as data.
pub const METADATA: &str = "metadata";

/// True for a key (relative to its dataset) that a table format owns.
pub fn is_format_file(rel: &str) -> bool {
    rel.split_once('/').is_some_and(|(dir, _)| dir == METADATA)
}

/// A table format a program offers: `table_format = "<name>"`.
pub trait TableFormatKind: Send + Sync + fmt::Debug + 'static {
    /// The name users write (`iceberg`).
    fn name(&self) -> &'static str;

    /// The format a run commits with, over what the program shares.
    fn open(&self, env: &BackendEnv) -> Result<Arc<dyn TableFormat>>;
}

/// What one commit describes: a dataset as its manifest lists it after a publish.
#[derive(Debug, Clone)]
pub struct SnapshotOf<'a> {
    /// The dataset (zone, name, prefix and the objects the manifest lists).
    pub dataset: &'a Dataset,
    /// The manifest that was committed.
    pub manifest: &'a Manifest,
    /// The step that wrote it.
    pub step: &'a str,
    /// Its partition columns (`partition_by`), outermost first.
    pub partition_by: &'a [String],
    /// Snapshots older than this are expired (the current one never is); their files stay
    /// as long (publish keeps replaced objects for the same time).
    pub retain: Duration,
}

/// A table format's writer.
#[async_trait]
pub trait TableFormat: Send + Sync + fmt::Debug {
    /// The name (`iceberg`).
    fn name(&self) -> &'static str;

    /// Before a publish: would the table at `target` take the columns of `staged` (a step's
    /// staged output, partitioned by `partition_by`)? A narrowed or changed type is an error
    /// naming the column, so the dataset keeps its data. The default checks nothing.
    async fn check(
        &self,
        _store: &DynZoneStore,
        _staged: &Dataset,
        _target: &str,
        _partition_by: &[String],
    ) -> Result<()> {
        Ok(())
    }

    /// Commit a snapshot describing `of` (nothing when the current snapshot describes it
    /// already). A dataset whose columns the table cannot take (a narrowed type) is an error
    /// naming the column.
    async fn commit(&self, store: &DynZoneStore, of: &SnapshotOf<'_>) -> Result<()>;

    /// The data files of the table's newest snapshot committed at or before `at` (for
    /// `lake query --as-of`), as objects whose SHA-256 is unknown (empty: checked by size);
    /// `None` when the table has no such snapshot (it did not exist yet, or that snapshot
    /// expired).
    async fn files_as_of(
        &self,
        store: &DynZoneStore,
        prefix: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Vec<crate::publish::ObjectEntry>>>;

    /// The table's current metadata file as catalogs name it (`s3://…/metadata/v3.metadata.json`);
    /// `None` before its first commit.
    async fn metadata_location(&self, store: &DynZoneStore, prefix: &str)
    -> Result<Option<String>>;

    /// `lake vacuum`: expire the snapshots committed more than `retain` ago (never the
    /// current one), then delete the data files under `prefix` that no remaining snapshot
    /// and not `keep` (what lake's manifest lists) needs, and the expired snapshots' own
    /// files. Call it holding the pipeline's lock (no publish is running).
    async fn vacuum(
        &self,
        store: &DynZoneStore,
        prefix: &str,
        keep: &[crate::publish::ObjectEntry],
        retain: Duration,
    ) -> Result<Vacuumed>;

    /// The table's snapshots, newest first, for `lake ls`.
    async fn snapshots(&self, store: &DynZoneStore, prefix: &str) -> Result<Vec<SnapshotInfo>>;
}

/// What `lake vacuum` did to one table.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Vacuumed {
    /// The dataset (`trusted/credit`).
    pub dataset: String,
    /// Snapshots expired.
    pub expired: usize,
    /// Data files deleted (no snapshot left lists them).
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Snapshots left.
    pub snapshots: usize,
}

/// One snapshot of a table, as `lake ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotInfo {
    /// The format's snapshot id.
    pub id: String,
    /// When it was committed.
    pub committed: DateTime<Utc>,
    /// The run that published it.
    pub run_id: Option<String>,
    /// `append`, `overwrite`.
    pub operation: String,
    /// Files and rows it holds.
    pub files: u64,
    /// Rows it holds.
    pub rows: u64,
    /// True for the table's current snapshot.
    pub current: bool,
}
