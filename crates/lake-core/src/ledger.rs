//! The run ledger: one JSON document per run at `_lake/runs/<run-id>.json`.
//!
//! This is the lineage table: what ran, on which inputs (keys, sizes, SHA-256), what it wrote,
//! how long it took and how it ended. It never contains a resolved secret.
//!
//! Beside the documents, each pipeline has an index (`_lake/runs.index/<pipeline>.json`) with
//! a [`RunSummary`] per run, so the questions asked often (the newest run, the runs of a date,
//! the last runs, a run by id prefix) cost one small listing and one read instead of a read per
//! run ever made. A pipeline's index is written with each of its run documents, by the run
//! that holds the pipeline's lock, so its writers never race. Without an index (a ledger that
//! an older lake wrote) readers read the documents, and the pipeline's next write builds it
//! from them; [`check_index`] compares it with the documents and [`rebuild_index`] rebuilds it
//! (`lake fsck`, `lake fsck --repair`).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::publish::ObjectEntry;
use crate::zone::{DynZoneStore, Key, ZoneStoreExt};
use crate::{Error, Result};

/// Where run records live, under the root.
pub const RUNS: &str = "_lake/runs";

/// How a run or a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Still going (or the process died: no end time).
    Running,
    /// Done without error.
    Succeeded,
    /// At least one step or ingest failed.
    Failed,
    /// Ctrl-C, SIGTERM or the caller's token.
    Cancelled,
    /// Not run because a dependency did not succeed, or the run stopped first.
    Skipped,
    /// Not run because its output already holds what it would write (same step, date, inputs).
    UpToDate,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Skipped => "skipped",
            Self::UpToDate => "up to date",
        })
    }
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run id.
    pub run_id: String,
    /// The pipeline.
    pub pipeline: String,
    /// The `--env` used.
    pub env: Option<String>,
    /// The logical date.
    pub date: NaiveDate,
    /// The lake root.
    pub root: String,
    /// The backend.
    pub backend: String,
    /// Who ran it.
    pub holder: String,
    /// Start.
    pub started: DateTime<Utc>,
    /// End (absent while running).
    pub ended: Option<DateTime<Utc>>,
    /// Outcome.
    pub status: Status,
    /// Sources fetched (or found complete) for the run.
    pub ingest: Vec<IngestRecord>,
    /// Steps, in the order they were considered.
    pub steps: Vec<StepRecord>,
    /// The error that ended the run, if it was not a step's.
    pub error: Option<String>,
    /// Sinks run (`[sinks.<name>]`), in the order they ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sinks: Vec<SinkRecord>,
    /// Catalog tables registered (`[catalog]`), in the order they were.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catalog: Vec<CatalogRecord>,
}

/// One dataset's table in the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogRecord {
    /// The dataset (`refined/credit_by_purpose`).
    pub dataset: String,
    /// The table (`credit.refined_credit_by_purpose`).
    pub table: String,
    /// `succeeded` (created or changed), `up_to_date` (it described this data), `failed`.
    pub status: Status,
    /// The table was created.
    #[serde(default)]
    pub created: bool,
    /// Partitions added.
    #[serde(default)]
    pub partitions_added: usize,
    /// Partitions dropped.
    #[serde(default)]
    pub partitions_dropped: usize,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One sink's load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkRecord {
    /// The sink.
    pub name: String,
    /// The dataset it loads (`refined/credit_by_purpose`).
    pub from: String,
    /// The table (`credit.by_purpose`; never the URL).
    pub table: String,
    /// `succeeded` (loaded), `up_to_date` (the table holds this data), `failed`, `skipped`.
    pub status: Status,
    /// Rows loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes of the dataset read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Why it failed or was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl CatalogRecord {
    /// The record of registering `dataset` as `table`, from how it ended and when it started.
    pub fn new(
        dataset: String,
        table: String,
        outcome: crate::Result<crate::catalog::CatalogOutcome>,
        started: std::time::Instant,
    ) -> Self {
        let (status, o, error) = match outcome {
            Ok(o) if o.unchanged() => (Status::UpToDate, o, None),
            Ok(o) => (Status::Succeeded, o, None),
            Err(e) => (
                Status::Failed,
                Default::default(),
                Some(crate::run::error_chain(&e)),
            ),
        };
        Self {
            dataset,
            table,
            status,
            created: o.created,
            partitions_added: o.partitions_added,
            partitions_dropped: o.partitions_dropped,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            error,
        }
    }
}

/// One source window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestRecord {
    /// The source.
    pub source: String,
    /// The window's logical date.
    pub date: NaiveDate,
    /// `succeeded` (fetched now), `up_to_date` (already complete), `failed`.
    pub status: Status,
    /// The window's objects.
    pub objects: Vec<ObjectEntry>,
    /// Total bytes.
    pub bytes: u64,
    /// Why it failed.
    pub error: Option<String>,
    /// Fetches made (more than 1 when the window was fetched again, `retries`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub attempts: u32,
    /// The errors of the fetches that failed before the last one, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempt_errors: Vec<String>,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// Outcome.
    pub status: Status,
    /// The objects it read.
    pub inputs: Vec<ObjectEntry>,
    /// The zone reference it wrote.
    pub output: Option<String>,
    /// The objects it published.
    pub output_objects: Vec<ObjectEntry>,
    /// Rows written, when known.
    pub rows: Option<u64>,
    /// Rows set aside by expectations or failed CASTs (`sql` steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<u64>,
    /// With `mode = "merge"`: keys inserted, updated and deleted, files rewritten and kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<crate::publish::MergeCounts>,
    /// With `mode = "merge"` or `"history"`, for a date before the dataset's newest batch:
    /// the later dates whose batches were merged again after this one's, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replayed: Vec<NaiveDate>,
    /// Bytes written, when known.
    pub bytes: Option<u64>,
    /// Start.
    pub started: Option<DateTime<Utc>>,
    /// End (steps run at once overlap: compare `started` and `ended`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<DateTime<Utc>>,
    /// Wall time in milliseconds.
    pub duration_ms: Option<u64>,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// Attempts made (more than 1 when the step was retried).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub attempts: u32,
    /// The errors of the attempts that failed before the last one, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempt_errors: Vec<String>,
}

fn run_key(run_id: &str) -> Result<Key> {
    Key::new(format!("_lake/runs/{run_id}.json"))
}

/// Write (or rewrite) a run's record, then its line in its pipeline's index. Call it holding
/// the pipeline's lock (runs do).
pub async fn write(store: &DynZoneStore, record: &RunRecord) -> Result<()> {
    let meta = store.put_json(&run_key(&record.run_id)?, record).await?;
    let mut runs = pipeline_head(store, &record.pipeline).await?;
    // A run killed between its document and its line left the line behind: mended here, by
    // the next run of the pipeline (which holds the lock, so no other of its runs is live).
    settle(store, &mut runs, Some(&record.run_id)).await?;
    upsert(&mut runs, RunSummary::of(record, meta.size));
    put_pipeline(store, &record.pipeline, runs).await.map(drop)
}

/// The most lines a pipeline's head index holds: past it, its oldest ended runs are sealed
/// into a segment, so a run's writes and the readers of recent runs cost the same at the
/// thousandth run as at the first.
const HEAD_MAX: usize = 200;

/// The newest lines a head keeps when it is sealed (at least: a run still running stays).
const HEAD_KEEP: usize = 100;

/// Write `runs` (sorted by run id) as `pipeline`'s index: its oldest ended lines sealed into
/// segments `<pipeline>/<first run id>.json` (written once, never changed) while more than
/// [`HEAD_MAX`] remain, then the rest as its head `<pipeline>.json`. A segment is written
/// before the head that drops its lines: a crash between leaves a line in both, which readers
/// take once.
async fn put_pipeline(
    store: &DynZoneStore,
    pipeline: &str,
    mut runs: Vec<RunSummary>,
) -> Result<Vec<Key>> {
    let mut written = Vec::new();
    while runs.len() > HEAD_MAX {
        let n = runs[..runs.len() - HEAD_KEEP]
            .iter()
            .take_while(|r| r.status != Status::Running)
            .count();
        if n == 0 {
            break;
        }
        let key = segment_key(pipeline, &runs[0].run_id)?;
        put_index(store, &key, runs.drain(..n).collect()).await?;
        written.push(key);
    }
    let head = index_key(pipeline)?;
    put_index(store, &head, runs).await?;
    written.push(head);
    Ok(written)
}

/// `pipeline`'s head index lines as written (its newest runs); missing (a ledger from before
/// the index) or unreadable, its runs' summaries from the documents.
async fn pipeline_head(store: &DynZoneStore, pipeline: &str) -> Result<Vec<RunSummary>> {
    match store.get_json::<Index>(&index_key(pipeline)?).await {
        Ok(Some(i)) => Ok(i.runs),
        Ok(None) | Err(Error::Corrupt { .. }) => from_documents(store, Some(pipeline)).await,
        Err(e) => Err(e),
    }
}

/// `pipeline`'s runs, oldest first, from its own index alone (its head and its sealed
/// segments, whatever other pipelines share the root), each line the index saw running read
/// again from its document.
pub async fn pipeline_summaries(store: &DynZoneStore, pipeline: &str) -> Result<Vec<RunSummary>> {
    let head = pipeline_head(store, pipeline).await?;
    let mut sealed = Vec::new();
    for meta in store.list(&segments_prefix(pipeline)).await? {
        match store.get_json::<Index>(&meta.key).await {
            Ok(Some(i)) => sealed.extend(i.runs),
            Ok(None) => {}
            // A damaged segment: the documents answer (`lake fsck --repair` rewrites it).
            Err(Error::Corrupt { .. }) => return from_documents(store, Some(pipeline)).await,
            Err(e) => return Err(e),
        }
    }
    let mut runs = once_each(sealed.into_iter().chain(head));
    settle(store, &mut runs, None).await?;
    oldest_first(&mut runs);
    Ok(runs)
}

/// `pipeline`'s newest runs (at least its last [`HEAD_KEEP`], or all it has), oldest first:
/// one read of its head, whatever the number of runs it ever made. What a notice needs to
/// know how the run before ended.
pub async fn pipeline_recent(store: &DynZoneStore, pipeline: &str) -> Result<Vec<RunSummary>> {
    let mut runs = pipeline_head(store, pipeline).await?;
    settle(store, &mut runs, None).await?;
    oldest_first(&mut runs);
    Ok(runs)
}

/// Each run once (by id), the last line read of it winning: a line a crash left both in a
/// segment and in its head is the same run.
fn once_each(lines: impl IntoIterator<Item = RunSummary>) -> Vec<RunSummary> {
    let mut by_id = std::collections::BTreeMap::new();
    for s in lines {
        by_id.insert(s.run_id.clone(), s);
    }
    by_id.into_values().collect()
}

/// Read again the lines the index saw running (but `skip`'s) from their documents: a run
/// writes its document before its line, so after a crash its line may lag behind. The rare
/// line whose document is gone is kept as written (fsck reports it).
async fn settle(store: &DynZoneStore, runs: &mut [RunSummary], skip: Option<&str>) -> Result<()> {
    for s in runs
        .iter_mut()
        .filter(|s| s.status == Status::Running && Some(s.run_id.as_str()) != skip)
    {
        if let Some((r, size)) = store
            .get_json_sized::<RunRecord>(&run_key(&s.run_id)?)
            .await?
        {
            *s = RunSummary::of(&r, size);
        }
    }
    Ok(())
}

/// Where the pipelines' indexes live (`<pipeline>.json` each), beside `_lake/runs/`.
pub const INDEX: &str = "_lake/runs.index";

/// One run, as the index keeps it: what listings and schedules need, without its steps'
/// inputs and outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    /// The run id.
    pub run_id: String,
    /// The pipeline.
    pub pipeline: String,
    /// The logical date.
    pub date: NaiveDate,
    /// Outcome.
    pub status: Status,
    /// Start.
    pub started: DateTime<Utc>,
    /// End (absent while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended: Option<DateTime<Utc>>,
    /// Steps considered.
    pub steps: usize,
    /// Steps that succeeded or were up to date.
    pub steps_ok: usize,
    /// The size of the run's document this summary was made from.
    pub size: u64,
}

impl RunSummary {
    /// The summary of `r`, whose document is `size` bytes.
    pub fn of(r: &RunRecord, size: u64) -> Self {
        Self {
            run_id: r.run_id.clone(),
            pipeline: r.pipeline.clone(),
            date: r.date,
            status: r.status,
            started: r.started,
            ended: r.ended,
            steps: r.steps.len(),
            steps_ok: r
                .steps
                .iter()
                .filter(|s| matches!(s.status, Status::Succeeded | Status::UpToDate))
                .count(),
            size,
        }
    }
}

/// An index document.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Summaries, sorted by run id.
    runs: Vec<RunSummary>,
}

/// Write an index, one line per run (compact: it is read on every listing of runs).
async fn put_index(store: &DynZoneStore, key: &Key, runs: Vec<RunSummary>) -> Result<()> {
    let mut out = b"{\"runs\":[\n".to_vec();
    for (i, r) in runs.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",\n");
        }
        serde_json::to_writer(&mut out, r).expect("a summary serializes");
    }
    out.extend_from_slice(b"\n]}\n");
    store.put_bytes(key, out.into()).await.map(|_| ())
}

fn index_key(pipeline: &str) -> Result<Key> {
    Key::new(format!("{INDEX}/{pipeline}.json"))
}

fn segments_prefix(pipeline: &str) -> String {
    format!("{INDEX}/{pipeline}/")
}

fn segment_key(pipeline: &str, first_run: &str) -> Result<Key> {
    Key::new(format!("{}{first_run}.json", segments_prefix(pipeline)))
}

fn upsert(runs: &mut Vec<RunSummary>, s: RunSummary) {
    runs.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    match runs.binary_search_by(|r| r.run_id.as_str().cmp(&s.run_id)) {
        Ok(i) => runs[i] = s,
        Err(i) => runs.insert(i, s),
    }
}

fn oldest_first(runs: &mut [RunSummary]) {
    runs.sort_by(|a, b| a.started.cmp(&b.started).then(a.run_id.cmp(&b.run_id)));
}

/// Every run's summary (of `pipeline`'s runs only, when given) from the documents: a listing
/// and a read per run. The truth the indexes are checked against.
pub async fn from_documents(
    store: &DynZoneStore,
    pipeline: Option<&str>,
) -> Result<Vec<RunSummary>> {
    let mut out = Vec::new();
    for meta in store.list(RUNS).await? {
        if run_id_of(meta.key.as_str()).is_some()
            && let Some(r) = store.get_json::<RunRecord>(&meta.key).await?
            && pipeline.is_none_or(|p| p == r.pipeline)
        {
            out.push(RunSummary::of(&r, meta.size));
        }
    }
    oldest_first(&mut out);
    Ok(out)
}

/// Every pipeline's index lines (heads and segments), each run once; `None` without any
/// index or when one is damaged (then the documents answer, and `lake fsck --repair` rebuilds
/// it).
async fn indexed(store: &DynZoneStore) -> Result<Option<Vec<RunSummary>>> {
    read_indexes(store, false).await
}

/// Whether an index object is a pipeline's head (`_lake/runs.index/<pipeline>.json`) rather
/// than one of its sealed segments.
fn is_head(key: &Key) -> bool {
    key.as_str()
        .rsplit_once('/')
        .is_some_and(|(dir, _)| dir == INDEX)
}

/// The lines of every index object (`heads_only`: of the pipelines' heads), each run once.
async fn read_indexes(store: &DynZoneStore, heads_only: bool) -> Result<Option<Vec<RunSummary>>> {
    let mut indexes = store.list(INDEX).await?;
    if heads_only {
        indexes.retain(|m| is_head(&m.key));
    }
    if indexes.is_empty() {
        return Ok(None);
    }
    // Segments before heads: a line in both (a crash between them) is taken from the head.
    indexes.sort_by_key(|m| is_head(&m.key));
    let mut out = Vec::new();
    for meta in &indexes {
        match store.get_json::<Index>(&meta.key).await {
            Ok(Some(i)) => out.extend(i.runs),
            Ok(None) => {}
            Err(Error::Corrupt { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Ok(Some(once_each(out)))
}

/// Every run's summary, oldest first (by start, then id), from the pipelines' indexes: one
/// listing of `_lake/runs.index/` and a read per pipeline, plus a read of each run the index
/// saw running (it may have ended since). Without any index, from the documents.
pub async fn summaries(store: &DynZoneStore) -> Result<Vec<RunSummary>> {
    let Some(mut out) = indexed(store).await? else {
        return from_documents(store, None).await;
    };
    settle(store, &mut out, None).await?;
    oldest_first(&mut out);
    Ok(out)
}

/// A text that changes whenever a run is written (each write rewrites its pipeline's index):
/// the indexes' keys, sizes and entity tags (or times), from one small listing and no read.
/// `None` without any index (a ledger from before it).
pub async fn index_version(store: &DynZoneStore) -> Result<Option<String>> {
    let indexes = store.list(INDEX).await?;
    if indexes.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        indexes
            .iter()
            .map(|m| {
                format!(
                    "{} {} {}",
                    m.key,
                    m.size,
                    m.e_tag
                        .clone()
                        .unwrap_or_else(|| m.last_modified.to_rfc3339())
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    ))
}

/// The runs whose index line is missing, wrong or left over, by run id (compared with the
/// documents, ignoring sizes): what [`rebuild_index`] fixes. A line the index saw running
/// is compared as readers see it, read again from its document: a run killed between its
/// document and its line is not a finding (its pipeline's next run mends the line).
pub async fn check_index(store: &DynZoneStore) -> Result<Vec<String>> {
    let truth = from_documents(store, None).await?;
    let mut indexed = indexed(store).await?.unwrap_or_default();
    settle(store, &mut indexed, None).await?;
    let strip = |s: &RunSummary| RunSummary {
        size: 0,
        ..s.clone()
    };
    let want: std::collections::BTreeMap<&str, RunSummary> = truth
        .iter()
        .map(|s| (s.run_id.as_str(), strip(s)))
        .collect();
    let have: std::collections::BTreeMap<&str, RunSummary> = indexed
        .iter()
        .map(|s| (s.run_id.as_str(), strip(s)))
        .collect();
    let mut wrong: Vec<String> = want
        .iter()
        .filter(|(id, s)| have.get(*id) != Some(*s))
        .map(|(id, _)| (*id).to_owned())
        .chain(
            have.keys()
                .filter(|id| !want.contains_key(*id))
                .map(|id| (*id).to_owned()),
        )
        .collect();
    wrong.sort();
    Ok(wrong)
}

/// Write every pipeline's index again from the documents (and remove the indexes of
/// pipelines without runs). Call it holding the pipelines' locks (`lake fsck --repair`).
pub async fn rebuild_index(store: &DynZoneStore) -> Result<()> {
    let truth = from_documents(store, None).await?;
    let mut by_pipeline: std::collections::BTreeMap<String, Vec<RunSummary>> = Default::default();
    for s in truth {
        by_pipeline.entry(s.pipeline.clone()).or_default().push(s);
    }
    let old = store.list(INDEX).await?;
    let mut written = std::collections::BTreeSet::new();
    for (pipeline, mut runs) in by_pipeline {
        runs.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        written.extend(put_pipeline(store, &pipeline, runs).await?);
    }
    // What the new indexes do not hold: the indexes of pipelines without runs, and segments
    // cut elsewhere (removed after the new ones are written: meanwhile a line is in both).
    for meta in old.iter().filter(|m| !written.contains(&m.key)) {
        store.delete(&meta.key).await?;
    }
    Ok(())
}

/// The run id of a document's key (`_lake/runs/<id>.json`).
fn run_id_of(key: &str) -> Option<&str> {
    key.strip_prefix("_lake/runs/")?.strip_suffix(".json")
}

/// The newest run (by start), read whole: from the pipelines' heads (each holds its newest
/// runs), so as cheap at the thousandth run as at the first.
pub async fn latest(store: &DynZoneStore) -> Result<Option<RunRecord>> {
    let newest = match read_indexes(store, true).await? {
        Some(mut heads) => {
            settle(store, &mut heads, None).await?;
            oldest_first(&mut heads);
            heads
        }
        None => from_documents(store, None).await?,
    };
    match newest.last() {
        Some(s) => get(store, &s.run_id).await.map(Some),
        None => Ok(None),
    }
}

/// The last `n` runs (by start), read whole, oldest first.
pub async fn recent(store: &DynZoneStore, n: usize) -> Result<Vec<RunRecord>> {
    newest(store, &summaries(store).await?, n).await
}

/// The records of the last `n` of `all` (summaries oldest first), oldest first.
pub async fn newest(store: &DynZoneStore, all: &[RunSummary], n: usize) -> Result<Vec<RunRecord>> {
    let mut out = Vec::with_capacity(n.min(all.len()));
    for s in &all[all.len().saturating_sub(n)..] {
        out.push(get(store, &s.run_id).await?);
    }
    Ok(out)
}

/// One edge of a run's data flow: what a step (or a source's landing) read and what it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineageRow {
    /// The run (the batch).
    pub batch: String,
    /// When the step ended (else started; else the run's end or start).
    pub timestamp: DateTime<Utc>,
    /// The step, or `ingest <source>` for a landing.
    pub step: String,
    /// What it read: a dataset (`raw/credit`), or `source <name>` for a landing.
    pub source: String,
    /// What it wrote (`refined/credit_by_purpose`), when it wrote something.
    pub destination: Option<String>,
    /// How the step (or the window) ended.
    pub status: Status,
    /// True for a source's landing rather than a step.
    pub ingest: bool,
}

/// The data flow of `run`, the one definition of lineage (`_lake.lineage`, a sink's
/// `lineage_table`): a row per landed window's source, then a row per step and distinct
/// dataset among the objects it read.
pub fn lineage(run: &RunRecord) -> Vec<LineageRow> {
    let mut rows = Vec::new();
    for i in run.ingest.iter().filter(|i| !i.objects.is_empty()) {
        rows.push(LineageRow {
            batch: run.run_id.clone(),
            timestamp: run.ended.unwrap_or(run.started),
            step: format!("ingest {}", i.source),
            source: format!("source {}", i.source),
            destination: Some(format!("raw/{}", i.source)),
            status: i.status,
            ingest: true,
        });
    }
    for s in &run.steps {
        let mut sources: Vec<String> = s
            .inputs
            .iter()
            .map(|o| {
                let (zone, dataset) = dataset_of(&o.key);
                format!("{zone}/{dataset}")
            })
            .collect();
        sources.sort();
        sources.dedup();
        for source in sources {
            rows.push(LineageRow {
                batch: run.run_id.clone(),
                timestamp: s.ended.or(s.started).unwrap_or(run.started),
                step: s.name.clone(),
                source,
                destination: s.output.clone(),
                status: s.status,
                ingest: false,
            });
        }
    }
    rows
}

/// The zone and dataset of an object key (`trusted/credit/part-0.parquet` → `trusted`,
/// `credit`).
pub fn dataset_of(key: &str) -> (&str, &str) {
    let mut parts = key.splitn(3, '/');
    let zone = parts.next().unwrap_or_default();
    let dataset = parts.next().unwrap_or_default();
    (zone, dataset)
}

/// One run's record.
pub async fn get(store: &DynZoneStore, run_id: &str) -> Result<RunRecord> {
    store
        .get_json(&run_key(run_id)?)
        .await?
        .ok_or_else(|| Error::NotFound {
            key: format!("_lake/runs/{run_id}.json"),
            store: store.root_url(),
        })
}

/// Every run's record, oldest first.
pub async fn list(store: &DynZoneStore) -> Result<Vec<RunRecord>> {
    let mut out = Vec::new();
    for meta in store.list(RUNS).await? {
        if meta.key.as_str().ends_with(".json")
            && let Some(r) = store.get_json::<RunRecord>(&meta.key).await?
        {
            out.push(r);
        }
    }
    out.sort_by(|a, b| a.started.cmp(&b.started).then(a.run_id.cmp(&b.run_id)));
    Ok(out)
}

/// The one run whose id starts with `prefix` (`lake runs show 2024…`): an error naming the
/// ledger when none matches, and the matching ids when several do. Found in the index.
pub async fn find(store: &DynZoneStore, prefix: &str) -> Result<RunRecord> {
    let all = summaries(store).await?;
    let matching: Vec<&str> = all
        .iter()
        .map(|s| s.run_id.as_str())
        .filter(|id| id.starts_with(prefix))
        .collect();
    match matching.as_slice() {
        [id] => get(store, id).await,
        [] => Err(crate::Error::Invalid {
            what: format!("run {prefix:?}"),
            message: format!("no such run in {}", store.url_of(RUNS)),
        }),
        many => Err(crate::Error::Invalid {
            what: format!("run {prefix:?}"),
            message: format!("matches {} runs: {}", many.len(), many.join(", ")),
        }),
    }
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}
