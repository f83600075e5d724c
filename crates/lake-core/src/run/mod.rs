//! The orchestrator: one run of a pipeline for one logical date.
//!
//! validate (done by the caller) → plan → resolve secrets → lock → ingest the sources the
//! steps read → start the cluster when a step needs it → run steps in order, each writing to
//! staging and publishing on success → terminate the cluster → ledger → release the lock.
//! The cluster is terminated and the lock released on every path, including cancellation.

mod catalog;
mod ingest;
mod poll;
mod request;
mod sinks;
mod steps;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use sha2::{Digest, Sha256};
pub use tokio_util::sync::CancellationToken;

use crate::cluster::{ClusterBackend, ClusterHandle, StepState};
use crate::config::{Pipeline, Redactor, Secret};
use crate::ledger::{self, RunRecord, Status, StepRecord};
use crate::lock;
use crate::source::Source;
use crate::zone::{DynZoneStore, ZoneStoreExt};
use crate::{Error, Result};

pub use catalog::catalog_sync;
pub use request::StepContext;
pub use steps::{PLAN_RUN_ID, staging_prefix};

/// Everything a run needs, built by the caller from a [`Pipeline`].
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The checked pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Where the zones live.
    pub store: Arc<DynZoneStore>,
    /// Where the steps run.
    pub backend: Arc<dyn ClusterBackend>,
    /// The pipeline's sources by name.
    pub sources: BTreeMap<String, Arc<dyn Source>>,
    /// The pipeline's sinks by name (a sink this build cannot serve is missing: it fails
    /// when it runs, saying so).
    pub sinks: BTreeMap<String, Arc<dyn crate::sink::Sink>>,
    /// The catalog published datasets are registered in (`[catalog]` on a root it serves).
    pub catalog: Option<Arc<dyn crate::catalog::Catalog>>,
    /// The table formats steps' outputs are committed in (`table_format`), by name; `parquet`
    /// needs none. A step whose format is missing fails, saying so.
    pub formats: BTreeMap<String, Arc<dyn crate::table_format::TableFormat>>,
}

/// Something that wants to hear about a run as it goes (the CLI prints these).
pub trait RunObserver: Send + Sync {
    /// Called for each event, in order.
    fn event(&self, event: &Event);
}

/// A run's progress.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// The run has its id and lock.
    Started {
        /// The run id.
        run_id: String,
    },
    /// Something the user should know that does not stop the run.
    Warning(String),
    /// Another run holds the pipeline's lock; this one waits for it (`lock_wait`).
    Waiting {
        /// The run holding the lock.
        run_id: String,
        /// Who runs it.
        holder: String,
    },
    /// A source window was fetched or found complete.
    Ingested {
        /// The source.
        source: String,
        /// The window's date.
        date: NaiveDate,
        /// Why it failed, when it did.
        error: Option<String>,
        /// What happened.
        status: Status,
        /// Objects in the window.
        objects: usize,
        /// Bytes in the window.
        bytes: u64,
    },
    /// Catch-up of a source starts: this many windows to land or skip.
    Catching {
        /// The source.
        source: String,
        /// Windows in the range.
        windows: usize,
    },
    /// Bytes of a source arrived (sent often, once per chunk: keep observers cheap).
    Fetched {
        /// The source (shared: this event is sent for every chunk, without allocating).
        source: Arc<str>,
        /// Bytes in this chunk.
        bytes: u64,
    },
    /// A step was submitted.
    StepStarted {
        /// The step.
        name: String,
    },
    /// What the backend did with its cluster (created, attached, terminated leftovers).
    Cluster(String),
    /// A submitted step's state, sent when it or the cluster's changes (and at most every
    /// minute otherwise).
    StepProgress {
        /// The step.
        name: String,
        /// Its state.
        state: StepState,
        /// Since it was submitted.
        elapsed: Duration,
        /// The backend's line on its cluster (`cluster j-… RUNNING`).
        cluster: Option<String>,
    },
    /// A merge step's dataset held batches of dates after the run's: the batch of `date` is
    /// merged again, after `after`'s.
    Replaying {
        /// The step.
        step: String,
        /// The later date whose batch is merged again.
        date: NaiveDate,
        /// The run's date.
        after: NaiveDate,
    },
    /// A step ended and its output is being published (copied or moved into its dataset).
    Publishing {
        /// The step.
        step: String,
        /// The dataset (`refined/credit_by_purpose`).
        output: String,
    },
    /// A step reached its final state.
    StepFinished {
        /// The step's record.
        record: StepRecord,
    },
    /// A sink loaded its table, found it up to date, failed or was skipped.
    SinkFinished {
        /// The sink's record.
        record: crate::ledger::SinkRecord,
    },
    /// A dataset's catalog table was registered, found up to date, or failed.
    CatalogFinished {
        /// The table's record.
        record: crate::ledger::CatalogRecord,
    },
}

/// Looks up an environment variable (`std::env::var` in the CLI, a map in tests).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Options of one run.
#[derive(Clone)]
pub struct RunOptions {
    /// The logical date.
    pub date: NaiveDate,
    /// Run only these steps (their dependencies' outputs must exist already). Empty: all.
    pub only: Vec<String>,
    /// Rerun steps whose output is up to date.
    pub force: bool,
    /// Who runs it, for the lock and the ledger.
    pub holder: String,
    /// The first poll interval; it doubles up to `max_poll`.
    pub poll: Duration,
    /// The longest poll interval.
    pub max_poll: Duration,
    /// Cancel the run (Ctrl-C). Steps are cancelled, the cluster terminated, the lock released.
    pub cancel: CancellationToken,
    /// Looks up `${env:VAR}` values.
    pub env: EnvLookup,
    /// Progress events.
    pub observer: Option<Arc<dyn RunObserver>>,
    /// How long to wait for another run of the pipeline to release its lock; zero: fail at
    /// once with [`Error::Locked`].
    pub lock_wait: Duration,
    /// Leave the cluster running at the end (to look at it); the next run of the pipeline, or
    /// `lake clusters --reap`, terminates it.
    pub keep_cluster: bool,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("date", &self.date)
            .field("only", &self.only)
            .field("force", &self.force)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl RunOptions {
    /// Options for `date` with the process environment, no observer and default polling.
    pub fn new(date: NaiveDate) -> Self {
        Self {
            date,
            only: Vec::new(),
            force: false,
            holder: default_holder(),
            poll: Duration::from_millis(50),
            max_poll: Duration::from_secs(2),
            cancel: CancellationToken::new(),
            env: Arc::new(|v| std::env::var(v).ok()),
            observer: None,
            lock_wait: Duration::ZERO,
            keep_cluster: false,
        }
    }

    /// Tell the observer, if any.
    pub fn emit(&self, e: Event) {
        if let Some(o) = &self.observer {
            o.event(&e);
        }
    }
}

/// `user@host pid N`.
pub fn default_holder() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{} pid {}", this_host(), std::process::id())
}

/// This machine's host name, as lock holders name it.
pub fn this_host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// A new run id: UTC start time and a random suffix (`20240101T120000Z-3f9a1c`).
pub fn new_run_id() -> String {
    let now = Utc::now();
    let mut h = Sha256::new();
    h.update(now.timestamp_nanos_opt().unwrap_or_default().to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    h.update(
        COUNTER
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    format!(
        "{}-{}",
        now.format("%Y%m%dT%H%M%SZ"),
        &hex::encode(h.finalize())[..6]
    )
}

/// The dates an ingest names: every day of `from..=to` when both are given, else `date`, else
/// none (each source catches up from its cursor).
pub fn ingest_dates(
    date: Option<NaiveDate>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<Vec<NaiveDate>> {
    Ok(match (date, from, to) {
        (_, Some(f), Some(t)) if f > t => {
            return Err(Error::Invalid {
                what: format!("dates {f} to {t}"),
                message: "the range starts after it ends".into(),
            });
        }
        (_, Some(f), Some(t)) => f.iter_days().take_while(|d| *d <= t).collect(),
        (Some(d), _, _) => vec![d],
        _ => Vec::new(),
    })
}

/// The steps a run considers, in order: all, or `only` (checked against the pipeline).
pub fn selected_steps(pipeline: &Pipeline, only: &[String]) -> Result<Vec<String>> {
    for name in only {
        if !pipeline.steps.contains_key(name) {
            return Err(Error::Invalid {
                what: format!("step {name}"),
                message: format!("no step {name:?}; steps: {}", pipeline.order.join(", ")),
            });
        }
    }
    Ok(pipeline
        .order
        .iter()
        .filter(|s| only.is_empty() || only.contains(s))
        .cloned()
        .collect())
}

/// Run the pipeline for one date.
///
/// Returns the run's record (also written to the ledger) whatever the steps did; check its
/// `status`. Errors are for runs that could not start (a missing `${env:…}`, a held lock) or a
/// ledger that could not be written.
pub async fn run(ctx: &RunContext, opts: &RunOptions) -> Result<RunRecord> {
    let steps = selected_steps(&ctx.pipeline, &opts.only)?;
    execute(ctx, opts, Work::Steps(steps)).await
}

/// Ingest `sources` (all when empty) without running steps: the windows holding `dates`, or,
/// when `dates` is empty, every window from the source's cursor (else its `start`, else the
/// run's date) to the one holding the run's date. Oldest first; a source stops at its first
/// failed window (later windows are not fetched and its cursor stays at the last complete
/// one); complete windows are skipped. Recorded in the ledger like a run, under the same lock.
pub async fn ingest(
    ctx: &RunContext,
    sources: &[String],
    dates: &[NaiveDate],
    opts: &RunOptions,
) -> Result<RunRecord> {
    let p = &ctx.pipeline;
    for s in sources {
        if !p.sources.contains_key(s) {
            return Err(Error::Invalid {
                what: format!("source {s}"),
                message: format!(
                    "no [sources.{s}] in {}; sources: {}",
                    p.file.display(),
                    p.sources.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
    }
    let sources = if sources.is_empty() {
        p.sources.keys().cloned().collect()
    } else {
        sources.to_vec()
    };
    let mut dates = dates.to_vec();
    dates.sort();
    dates.dedup();
    execute(ctx, opts, Work::Ingest { sources, dates }).await
}

/// Run `sinks` (every sink when empty) over the committed data, without ingesting or running
/// steps: each loads its table unless the table holds that data already (`opts.force` loads
/// anyway). Recorded in the ledger like a run, under the same lock.
pub async fn sink(ctx: &RunContext, sinks: &[String], opts: &RunOptions) -> Result<RunRecord> {
    let p = &ctx.pipeline;
    for s in sinks {
        if !p.sinks.contains_key(s) {
            return Err(Error::Invalid {
                what: format!("sink {s}"),
                message: if p.sinks.is_empty() {
                    format!("{} has no [sinks.*]", p.file.display())
                } else {
                    format!(
                        "no [sinks.{s}] in {}; sinks: {}",
                        p.file.display(),
                        p.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
                    )
                },
            });
        }
    }
    execute(ctx, opts, Work::Sinks(sinks.to_vec())).await
}

/// Take the pipeline's lock, waiting up to `opts.lock_wait` for a live holder to let go.
async fn acquire_waiting(
    ctx: &RunContext,
    opts: &RunOptions,
    run_id: &str,
) -> Result<lock::LockGuard> {
    let p = &ctx.pipeline;
    let until = Instant::now() + opts.lock_wait;
    let mut told = false;
    let mut pause = Duration::from_millis(100);
    loop {
        match lock::acquire(&*ctx.store, &p.name, run_id, &opts.holder, p.lock_ttl).await {
            Err(Error::Locked {
                run_id: theirs,
                holder,
                ..
            }) if Instant::now() + pause < until => {
                if !told {
                    opts.emit(Event::Waiting {
                        run_id: theirs,
                        holder,
                    });
                    told = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = opts.cancel.cancelled() => return Err(Error::Cancelled),
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// What one locked, recorded execution does.
enum Work {
    /// Ingest what the steps read for the run's date, then run the steps.
    Steps(Vec<String>),
    /// Only ingest, these sources for these dates.
    Ingest {
        sources: Vec<String>,
        dates: Vec<NaiveDate>,
    },
    /// Only these sinks (all when empty), over the committed data.
    Sinks(Vec<String>),
}

async fn execute(ctx: &RunContext, opts: &RunOptions, work: Work) -> Result<RunRecord> {
    let p = &ctx.pipeline;
    let steps = match &work {
        Work::Steps(steps) => steps.clone(),
        Work::Ingest { .. } | Work::Sinks(_) => Vec::new(),
    };
    // Secrets are resolved before anything happens, so a missing variable costs nothing.
    let mut secrets: BTreeMap<String, Vec<(String, Secret)>> = BTreeMap::new();
    for name in &steps {
        let spec = &p.steps[name];
        let mut env = Vec::new();
        for (var, t) in &spec.env {
            env.push((
                var.clone(),
                t.resolve(&format!("steps.{name}.env.{var}"), &*opts.env)?,
            ));
        }
        secrets.insert(name.clone(), env);
    }
    let redactor = Redactor::new(secrets.values().flatten().map(|(_, s)| s));

    let run_id = new_run_id();
    let guard = acquire_waiting(ctx, opts, &run_id).await?;
    if let Some(old) = &guard.took_over {
        // The run that held it is gone: drop its staging, remove what its publishing left that
        // no manifest lists, and close its ledger record.
        drop_staging(&*ctx.store, &old.run_id).await;
        tidy_outputs(ctx).await;
        let abandoned = format!(
            "abandoned: its process stopped before the end; run {run_id} took over the lock"
        );
        match ledger::get(&*ctx.store, &old.run_id).await {
            Ok(mut rec) if rec.status == Status::Running => {
                rec.status = Status::Failed;
                rec.ended = Some(Utc::now());
                rec.error = Some(abandoned);
                let _ = ledger::write(&*ctx.store, &rec).await;
            }
            // Killed after it took the lock and before it wrote its first record: the ledger
            // still gets an entry, from what the lock says.
            Err(e) if e.is_not_found() => {
                let rec = RunRecord {
                    run_id: old.run_id.clone(),
                    pipeline: ctx.pipeline.name.clone(),
                    env: ctx.pipeline.env.clone(),
                    date: old.acquired.date_naive(),
                    root: ctx.store.root_url(),
                    backend: ctx.backend.name().to_owned(),
                    holder: old.holder.clone(),
                    started: old.acquired,
                    ended: Some(Utc::now()),
                    status: Status::Failed,
                    ingest: Vec::new(),
                    steps: Vec::new(),
                    sinks: Vec::new(),
                    catalog: Vec::new(),
                    error: Some(format!(
                        "{abandoned} (it had written nothing yet; its date is the day it started)"
                    )),
                };
                let _ = ledger::write(&*ctx.store, &rec).await;
            }
            _ => {}
        }
        opts.emit(Event::Warning(format!(
            "took over the lock of run {} ({}; expires {}): it expired or its process is gone",
            old.run_id, old.holder, old.expires
        )));
    }
    opts.emit(Event::Started {
        run_id: run_id.clone(),
    });
    let mut record = RunRecord {
        run_id: run_id.clone(),
        pipeline: p.name.clone(),
        env: p.env.clone(),
        date: opts.date,
        root: ctx.store.root_url(),
        backend: ctx.backend.name().to_owned(),
        holder: opts.holder.clone(),
        started: Utc::now(),
        ended: None,
        status: Status::Running,
        ingest: Vec::new(),
        steps: Vec::new(),
        error: None,
        sinks: Vec::new(),
        catalog: Vec::new(),
    };
    let outcome = match ledger::write(&*ctx.store, &record).await {
        Ok(()) => {
            let mut runner = Runner {
                ctx,
                opts,
                run_id: &run_id,
                secrets,
                redactor,
                cluster: tokio::sync::OnceCell::new(),
                cancel: opts.cancel.child_token(),
                committed: Default::default(),
            };
            let r = match &work {
                Work::Steps(steps) => runner.run_all(steps, &mut record).await,
                Work::Ingest { sources, dates } => {
                    runner.ingest_all(sources, dates, &mut record).await
                }
                Work::Sinks(names) => runner.sinks_only(names, &mut record).await,
            };
            let cluster = runner.cluster.into_inner();
            if let Some(c) = &cluster
                && opts.keep_cluster
                && !c.attached
            {
                opts.emit(Event::Cluster(format!(
                    "kept cluster {} running, as asked: it costs money until it is terminated, \
                     by its idle timeout, the next run of {}, or `lake clusters --reap`",
                    c.id, p.name
                )));
            } else if let Some(cluster) = cluster
                && let Err(e) = ctx.backend.terminate(&cluster).await
            {
                {
                    // The cause (not confirmed after N attempts, and how to clean up by hand)
                    // is in the error's source.
                    let e = error_chain(&e);
                    opts.emit(Event::Warning(format!(
                        "terminating {} cluster {} failed: {e}",
                        ctx.backend.name(),
                        cluster.id
                    )));
                    record
                        .error
                        .get_or_insert_with(|| format!("terminate cluster {}: {e}", cluster.id));
                }
            }
            r
        }
        Err(e) => Err(e),
    };
    // Whatever the steps left in staging (a failed step's folder) goes with the run.
    drop_staging(&*ctx.store, &run_id).await;
    record.ended = Some(Utc::now());
    record.status = match &outcome {
        Err(Error::Cancelled) => Status::Cancelled,
        Err(e) => {
            record.error = Some(error_chain(e));
            Status::Failed
        }
        Ok(()) if opts.cancel.is_cancelled() => Status::Cancelled,
        Ok(())
            if record.ingest.iter().any(|i| i.status == Status::Failed)
                || record.steps.iter().any(|s| {
                    matches!(
                        s.status,
                        Status::Failed | Status::Skipped | Status::Cancelled
                    )
                })
                || record.sinks.iter().any(|s| {
                    matches!(
                        s.status,
                        Status::Failed | Status::Skipped | Status::Cancelled
                    )
                })
                || record.catalog.iter().any(|c| c.status == Status::Failed) =>
        {
            Status::Failed
        }
        Ok(()) if record.error.is_some() => Status::Failed,
        Ok(()) => Status::Succeeded,
    };
    let written = ledger::write(&*ctx.store, &record).await;
    let released = lock::release(&*ctx.store, &guard).await;
    written?;
    released?;
    Ok(record)
}

/// Remove from every raw source and every output of the pipeline (and its rejected rows) the
/// objects no manifest lists: what a run killed while landing or publishing left. Best effort.
async fn tidy_outputs(ctx: &RunContext) {
    let store = &*ctx.store;
    for source in ctx.pipeline.sources.keys() {
        let _ = crate::publish::tidy_source(store, source).await;
    }
    for spec in ctx.pipeline.steps.values() {
        let Some(out) = &spec.output else { continue };
        for prefix in [
            out.prefix(),
            crate::publish::rejected_prefix(out.zone, &spec.name),
        ] {
            // No manifest: nothing there was ever committed.
            let objects = match crate::publish::read_manifest(store, &prefix).await {
                Ok(m) => m.map(|m| m.objects).unwrap_or_default(),
                Err(_) => continue,
            };
            let _ = crate::publish::tidy(
                store,
                &prefix,
                &objects,
                std::iter::empty(),
                ctx.pipeline.retain_replaced,
            )
            .await;
        }
    }
}

/// Remove a run's staging: its objects, then what the store sweeps (a filesystem's folders
/// and unfinished uploads, which no listing shows). Best effort: staging is never read again.
async fn drop_staging(store: &DynZoneStore, run_id: &str) {
    let staging = format!("_lake/staging/{run_id}");
    let _ = store.delete_prefix(&staging).await;
    let _ = store.sweep(&staging).await;
}

/// `error: a: b: c` style chain of an error and its sources.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

struct Runner<'a> {
    ctx: &'a RunContext,
    opts: &'a RunOptions,
    run_id: &'a str,
    secrets: BTreeMap<String, Vec<(String, Secret)>>,
    redactor: Redactor,
    /// Started by the first step that needs it, shared by the steps running at once.
    cluster: tokio::sync::OnceCell<ClusterHandle>,
    /// The run's cancellation (Ctrl-C) and the steps': a step that cannot go on (an error of
    /// the store or the backend) cancels the steps running beside it.
    cancel: CancellationToken,
    /// Objects this run landed or published (keys): hashed as they were written.
    committed: std::sync::Mutex<BTreeSet<String>>,
}
