//! The orchestrator: one run of a pipeline for one logical date.
//!
//! validate (done by the caller) → plan → resolve secrets → lock → ingest the sources the
//! steps read → start the cluster when a step needs it → run steps in order, each writing to
//! staging and publishing on success → terminate the cluster → ledger → release the lock.
//! The cluster is terminated and the lock released on every path, including cancellation.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::cluster::{
    ClusterBackend, ClusterHandle, ClusterSpec, CopyWork, SparkWork, SqlInput, SqlWork, StepHandle,
    StepRequest, StepState, StepWork,
};
use crate::config::{Pipeline, Redactor, Secret, StepSpec, StepSpecKind, WriteMode, Zone};
use crate::ledger::{self, IngestRecord, RunRecord, Status, StepRecord};
use crate::lock;
use crate::publish::{self, Landed, ObjectEntry, StepMetrics};
use crate::source::{Source, Window};
use crate::zone::{DynZoneStore, ZoneStoreExt};
use crate::{Error, Result};

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
    /// A step reached its final state.
    StepFinished {
        /// The step's record.
        record: StepRecord,
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

    fn emit(&self, e: Event) {
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

/// The steps a run considers, in order: all, or `only` (checked against the pipeline).
pub fn selected_steps(pipeline: &Pipeline, only: &[String]) -> Result<Vec<String>> {
    for name in only {
        if !pipeline.steps.contains_key(name) {
            return Err(Error::Invalid {
                what: format!("--only {name}"),
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
}

async fn execute(ctx: &RunContext, opts: &RunOptions, work: Work) -> Result<RunRecord> {
    let p = &ctx.pipeline;
    let steps = match &work {
        Work::Steps(steps) => steps.clone(),
        Work::Ingest { .. } => Vec::new(),
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
        // The run that held it is gone: drop its staging and close its ledger record.
        let staging = format!("_lake/staging/{}", old.run_id);
        let _ = ctx.store.delete_prefix(&staging).await;
        // A local store's unfinished uploads (`name#1`) are files no listing shows.
        if let Some(dir) = ctx.store.local_path(&staging) {
            let _ = tokio::fs::remove_dir_all(dir).await;
        }
        if let Ok(mut rec) = ledger::get(&*ctx.store, &old.run_id).await
            && rec.status == Status::Running
        {
            rec.status = Status::Failed;
            rec.ended = Some(Utc::now());
            rec.error = Some(format!(
                "abandoned: its process stopped before the end; run {run_id} took over the lock"
            ));
            let _ = ledger::write(&*ctx.store, &rec).await;
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
            };
            let r = match &work {
                Work::Steps(steps) => runner.run_all(steps, &mut record).await,
                Work::Ingest { sources, dates } => {
                    runner.ingest_all(sources, dates, &mut record).await
                }
            };
            let cluster = runner.cluster.into_inner();
            if let Some(c) = &cluster
                && opts.keep_cluster
                && !c.attached
            {
                opts.emit(Event::Cluster(format!(
                    "kept cluster {} running (--keep-cluster): it costs money until it is terminated, \
                     by its idle timeout, the next run of {}, or `lake clusters --reap`",
                    c.id, p.name
                )));
            } else if let Some(cluster) = cluster
                && let Err(e) = ctx.backend.terminate(&cluster).await
            {
                {
                    opts.emit(Event::Warning(format!(
                        "terminating {} cluster {} failed: {e:#}",
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
                }) =>
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
}

impl Runner<'_> {
    async fn ingest_all(
        &mut self,
        sources: &[String],
        dates: &[NaiveDate],
        record: &mut RunRecord,
    ) -> Result<()> {
        for source in sources {
            // `--force` of `lake ingest` fetches complete windows again.
            self.catch_up(source, dates, self.opts.force, record)
                .await?;
        }
        Ok(())
    }

    /// The windows of `source` to fetch: those holding `dates`, or the catch-up from its
    /// cursor to the run's date.
    fn windows(&self, source: &str, dates: &[NaiveDate], cursor: Option<NaiveDate>) -> Vec<Window> {
        let spec = &self.ctx.pipeline.sources[source];
        if !dates.is_empty() {
            let mut w: Vec<Window> = dates.iter().map(|d| spec.window_of(*d)).collect();
            w.dedup();
            return w;
        }
        let from = match cursor {
            Some(c) => spec.window_of(c).end,
            None => spec.start.unwrap_or(self.opts.date),
        };
        let mut windows = spec.window.windows(from, self.opts.date, spec.start);
        if windows.is_empty() {
            // Caught up already (or an earlier date): the run's own window, found complete or
            // fetched if it is missing.
            windows.push(spec.window_of(self.opts.date));
        }
        windows
    }

    /// The manifest of the newest window before `window` that stored objects (following
    /// `duplicate_of` of empty ones), from the cursor back.
    async fn previous_content(
        &self,
        source: &str,
        window: &Window,
        cursor: Option<NaiveDate>,
    ) -> Result<Option<publish::Manifest>> {
        let store = &*self.ctx.store;
        let spec = &self.ctx.pipeline.sources[source];
        let Some(c) = cursor else {
            return Ok(None);
        };
        let day = spec.window_of(c).start.min(
            window
                .start
                .pred_opt()
                .map_or(window.start, |d| spec.window_of(d).start),
        );
        if day >= window.start {
            return Ok(None);
        }
        let Some(m) =
            publish::read_manifest(store, &publish::raw_window_prefix(source, day)).await?
        else {
            return Ok(None);
        };
        match &m.duplicate_of {
            Some(original) => publish::read_manifest(store, original).await,
            None => Ok(Some(m)),
        }
    }

    /// Fetch the windows of `source` oldest first, moving its cursor; stop at the first
    /// failure. Returns false when one failed.
    async fn catch_up(
        &mut self,
        source: &str,
        dates: &[NaiveDate],
        force: bool,
        record: &mut RunRecord,
    ) -> Result<bool> {
        let spec = &self.ctx.pipeline.sources[source];
        let dedup = spec.dedup_content;
        // Read once; this run is the cursor's only writer (it holds the lock).
        let mut cursor = publish::cursor(&*self.ctx.store, source)
            .await?
            .map(|c| c.last_complete);
        let windows = self.windows(source, dates, cursor);
        self.opts.emit(Event::Catching {
            source: source.to_owned(),
            windows: windows.len(),
        });
        for window in windows {
            if self.opts.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            // The newest complete window before this one with content, to compare bytes with.
            let previous = if dedup {
                self.previous_content(source, &window, cursor).await?
            } else {
                None
            };
            let rec = self
                .ingest(source, &window, force, previous.as_ref())
                .await?;
            let failed = rec.status == Status::Failed;
            self.emit_ingested(&rec);
            record.ingest.push(rec);
            if failed {
                return Ok(false);
            }
            // The cursor only moves over contiguous windows: a window fetched out of order
            // (`--date` far ahead) must not make catch-up skip the gap.
            let next = match cursor {
                Some(c) => Some(spec.window_of(c).end),
                None => spec.start.map(|s| spec.window_of(s).start),
            };
            if next.is_none_or(|n| window.start <= n) && cursor.is_none_or(|c| c < window.start) {
                publish::set_cursor(&*self.ctx.store, source, window.start, self.run_id).await?;
                cursor = Some(window.start);
            }
        }
        Ok(true)
    }

    fn emit_ingested(&self, rec: &IngestRecord) {
        self.opts.emit(Event::Ingested {
            source: rec.source.clone(),
            date: rec.date,
            status: rec.status,
            objects: rec.objects.len(),
            bytes: rec.bytes,
            error: rec.error.clone(),
        });
    }

    async fn run_all(&mut self, steps: &[String], record: &mut RunRecord) -> Result<()> {
        let p = Arc::clone(&self.ctx.pipeline);
        let mut failed_sources = BTreeSet::new();
        for source in p.sources_read_by(steps.iter().map(String::as_str)) {
            if self.opts.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if !self.catch_up(&source, &[], false, record).await? {
                failed_sources.insert(source.clone());
            }
        }

        self.steps(steps, &failed_sources, record).await
    }

    /// Run `steps` (in dependency order), each as soon as the steps it depends on have
    /// finished, at most `[lake] max_parallel_steps` at once (and no more than the backend
    /// runs at once). A step whose dependency did not succeed, or whose raw input failed to
    /// land, is skipped; the others go on.
    async fn steps(
        &self,
        steps: &[String],
        failed_sources: &BTreeSet<String>,
        record: &mut RunRecord,
    ) -> Result<()> {
        use futures::StreamExt;
        let p = Arc::clone(&self.ctx.pipeline);
        let limit = p
            .backend
            .config()
            .step_concurrency()
            .map_or(p.max_parallel_steps, |b| b.min(p.max_parallel_steps))
            .max(1);
        let mut done: BTreeMap<String, Status> = BTreeMap::new();
        let mut waiting: Vec<&String> = steps.iter().collect();
        let mut running = futures::stream::FuturesUnordered::new();
        let mut error: Option<Error> = None;
        let mut finished = Vec::new();
        loop {
            // Start (or settle) every waiting step whose dependencies have finished.
            let mut i = 0;
            while i < waiting.len() {
                let spec = &p.steps[waiting[i]];
                let deps = spec.depends_on.iter().filter(|d| steps.contains(d));
                if deps.clone().any(|d| !done.contains_key(d)) {
                    i += 1;
                    continue;
                }
                let blocked = spec
                    .depends_on
                    .iter()
                    .find(|d| {
                        done.get(*d)
                            .is_some_and(|s| !matches!(s, Status::Succeeded | Status::UpToDate))
                    })
                    .map(|d| format!("dependency {d:?} did not succeed"))
                    .or_else(|| {
                        spec.inputs
                            .iter()
                            .find(|i| {
                                i.dataset.zone == Zone::Raw
                                    && failed_sources.contains(&i.dataset.name)
                            })
                            .map(|i| format!("ingest of {} failed", i.dataset))
                    });
                let settled = if self.cancel.is_cancelled() {
                    Some(skipped(
                        spec,
                        Status::Cancelled,
                        "the run was cancelled".into(),
                    ))
                } else if let Some(reason) = blocked {
                    Some(skipped(spec, Status::Skipped, reason))
                } else if running.len() >= limit {
                    i += 1;
                    continue;
                } else {
                    running.push(async move { (spec, self.step(spec).await) });
                    None
                };
                waiting.remove(i);
                if let Some(rec) = settled {
                    done.insert(rec.name.clone(), rec.status);
                    self.opts.emit(Event::StepFinished {
                        record: rec.clone(),
                    });
                    finished.push(rec);
                    // What it settled may unblock an earlier waiting step.
                    i = 0;
                }
            }
            let Some((spec, result)) = running.next().await else {
                break;
            };
            let rec = match result {
                Ok(rec) => rec,
                Err(e) => {
                    // The store or the backend failed: stop the steps beside it, end the run.
                    self.cancel.cancel();
                    let rec = skipped(spec, Status::Failed, self.redactor.redact(&error_chain(&e)));
                    error.get_or_insert(e);
                    rec
                }
            };
            done.insert(rec.name.clone(), rec.status);
            self.opts.emit(Event::StepFinished {
                record: rec.clone(),
            });
            finished.push(rec);
        }
        // The ledger lists steps in pipeline order; their times say what overlapped.
        finished.sort_by_key(|r| steps.iter().position(|s| *s == r.name));
        record.steps.extend(finished);
        if let Some(e) = error {
            return Err(e);
        }
        if self.opts.cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        Ok(())
    }

    async fn ingest(
        &self,
        source: &str,
        window: &Window,
        force: bool,
        previous: Option<&publish::Manifest>,
    ) -> Result<IngestRecord> {
        let src = self
            .ctx
            .sources
            .get(source)
            .ok_or_else(|| Error::NotImplemented {
                operation: "ingest",
                implementer: format!("this build (no source was given for {source:?})"),
            })?;
        let progress: Option<publish::ProgressFn> = self.opts.observer.as_ref().map(|o| {
            let o = Arc::clone(o);
            let source: Arc<str> = source.into();
            Arc::new(move |bytes| {
                o.event(&Event::Fetched {
                    source: Arc::clone(&source),
                    bytes,
                });
            }) as publish::ProgressFn
        });
        let land = publish::LandOptions {
            force,
            dedup_against: previous,
            progress,
        };
        let landed = tokio::select! {
            r = publish::land_with(&*self.ctx.store, src.as_ref(), window, self.run_id, &land) => r,
            () = self.opts.cancel.cancelled() => return Err(Error::Cancelled),
        };
        Ok(match landed {
            Ok(Landed::Fetched(m)) => ingest_record(
                source,
                window,
                Status::Succeeded,
                m.bytes(),
                m.objects,
                None,
            ),
            Ok(Landed::AlreadyComplete(m)) => {
                ingest_record(source, window, Status::UpToDate, m.bytes(), m.objects, None)
            }
            Ok(Landed::Duplicate(m)) => {
                self.opts.emit(Event::Warning(format!(
                    "ingest {source} {}: same bytes as {}; nothing stored (dedup = \"content\")",
                    window.date(),
                    m.duplicate_of.as_deref().unwrap_or("the previous window")
                )));
                ingest_record(source, window, Status::Succeeded, 0, Vec::new(), None)
            }
            Err(e) => ingest_record(
                source,
                window,
                Status::Failed,
                0,
                Vec::new(),
                Some(error_chain(&e)),
            ),
        })
    }

    async fn step(&self, spec: &StepSpec) -> Result<StepRecord> {
        let store = &*self.ctx.store;
        let started = Utc::now();
        let clock = Instant::now();
        let mut rec = skipped(spec, Status::Running, String::new());
        rec.started = Some(started);

        let mut per_input = Vec::new();
        for input in &spec.inputs {
            let date = input
                .at_date
                .then(|| {
                    self.ctx
                        .pipeline
                        .sources
                        .get(&input.dataset.name)
                        .map(|s| s.window_of(self.opts.date).start)
                })
                .flatten();
            per_input.push(publish::dataset_objects(store, &input.dataset, date).await?);
        }
        rec.inputs = per_input.iter().flatten().cloned().collect();
        let fingerprint = fingerprint(spec, self.opts.date, &rec.inputs);
        if let Some(out) = &spec.output
            && !self.opts.force
            && let Some(m) = publish::read_manifest(store, &out.prefix()).await?
            && m.fingerprint.as_deref() == Some(fingerprint.as_str())
        {
            rec.status = Status::UpToDate;
            rec.bytes = Some(m.bytes());
            rec.output_objects = m.objects;
            rec.error = Some(format!(
                "{out} is up to date: written by run {} from the same inputs (use --force to rerun)",
                m.run_id
            ));
            rec.duration_ms = Some(clock.elapsed().as_millis() as u64);
            rec.ended = Some(Utc::now());
            return Ok(rec);
        }

        let staging = staging_prefix(self.run_id, &spec.name);
        let output_url = match &spec.output {
            Some(_) => {
                store.delete_prefix(&staging).await?;
                Some(match store.local_path(&staging) {
                    Some(path) => {
                        tokio::fs::create_dir_all(&path)
                            .await
                            .map_err(|source| Error::Io {
                                action: "create directory",
                                path: path.clone(),
                                source,
                            })?;
                        path.to_string_lossy().into_owned()
                    }
                    None => store.url_of(&staging),
                })
            }
            None => None,
        };
        let request = self.request(spec, &staging, output_url.as_deref(), per_input);
        let cluster = self
            .cluster
            .get_or_try_init(|| async {
                let spec = ClusterSpec::new(
                    &self.ctx.pipeline.name,
                    self.run_id,
                    &self.ctx.store.root_url(),
                );
                let handle = self.ctx.backend.start(&spec).await?;
                for note in &handle.notes {
                    self.opts.emit(Event::Cluster(note.clone()));
                }
                Ok::<_, Error>(handle)
            })
            .await?
            .clone();
        self.opts.emit(Event::StepStarted {
            name: spec.name.clone(),
        });
        let result = match self.ctx.backend.submit(&cluster, &request).await {
            Ok(handle) => self.wait(&cluster, &handle, spec).await,
            Err(e) => Err(StepFailure::Error(e)),
        };
        let outcome = match result {
            Ok(()) => match &spec.output {
                Some(out) => {
                    self.publish(spec, &staging, out, fingerprint, &mut rec)
                        .await
                }
                None => Ok(()),
            },
            Err(e) => Err(e),
        };
        rec.duration_ms = Some(clock.elapsed().as_millis() as u64);
        rec.ended = Some(Utc::now());
        match outcome {
            Ok(()) => rec.status = Status::Succeeded,
            Err(failure) => {
                // Never publish a failed step; its staging goes, the previous output stays.
                if spec.output.is_some() {
                    let _ = store.delete_prefix(&staging).await;
                }
                match failure {
                    StepFailure::Cancelled => rec.status = Status::Cancelled,
                    StepFailure::Failed(message) => {
                        rec.status = Status::Failed;
                        rec.error = Some(message);
                    }
                    StepFailure::Error(e) => {
                        rec.status = Status::Failed;
                        rec.error = Some(self.redactor.redact(&error_chain(&e)));
                    }
                }
            }
        }
        Ok(rec)
    }

    /// Publish a completed step's staging: its rejected rows first (kept even when there are
    /// too many, so they can be inspected), then, within `max_rejected`, its output.
    async fn publish(
        &self,
        spec: &StepSpec,
        staging: &str,
        out: &crate::config::ZoneRef,
        fingerprint: String,
        rec: &mut StepRecord,
    ) -> std::result::Result<(), StepFailure> {
        let store = &*self.ctx.store;
        let err = StepFailure::Error;
        let metrics_key =
            crate::zone::Key::new(format!("{staging}/{}", publish::STEP_METRICS)).map_err(err)?;
        let metrics: Option<StepMetrics> = store.get_json(&metrics_key).await.map_err(err)?;
        if let Some(m) = &metrics {
            rec.rows = Some(m.rows);
            rec.rejected = Some(m.rejected);
        }
        let rejected = metrics.as_ref().map_or(0, |m| m.rejected);
        if rejected > 0 {
            let target = publish::rejected_prefix(out.zone, &spec.name);
            publish::publish(
                store,
                &format!("{staging}/{}", publish::REJECTED),
                &target,
                WriteMode::Append,
                self.run_id,
                None,
            )
            .await
            .map_err(err)?;
        }
        if let (Some(m), StepSpecKind::Sql { max_rejected, .. }) = (&metrics, &spec.kind) {
            let total = m.rows + m.rejected;
            let share = if total == 0 {
                0.0
            } else {
                m.rejected as f64 / total as f64
            };
            if share > *max_rejected {
                let mut by_count: Vec<(&String, &u64)> = m.reasons.iter().collect();
                by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
                let mut reasons: Vec<String> = by_count
                    .iter()
                    .take(10)
                    .map(|(r, n)| format!("  {n} × {r}"))
                    .collect();
                if by_count.len() > 10 {
                    reasons.push(format!("  … and {} more checks", by_count.len() - 10));
                }
                return Err(StepFailure::Failed(format!(
                    "{} of {total} rows ({:.1}%) were rejected, more than max_rejected = {} ({}%); {out} was left as it was. \
                     The rejected rows are in {}:\n{}",
                    m.rejected,
                    share * 100.0,
                    max_rejected,
                    max_rejected * 100.0,
                    publish::rejected_prefix(out.zone, &spec.name),
                    reasons.join("\n")
                )));
            }
        }
        let m = publish::publish(
            store,
            staging,
            &out.prefix(),
            spec.mode,
            self.run_id,
            Some(fingerprint),
        )
        .await
        .map_err(err)?;
        rec.bytes = Some(m.bytes());
        rec.output_objects = m.objects;
        Ok(())
    }

    fn request(
        &self,
        spec: &StepSpec,
        staging: &str,
        output: Option<&str>,
        objects: Vec<Vec<ObjectEntry>>,
    ) -> StepRequest {
        StepContext {
            pipeline: &self.ctx.pipeline,
            store: &*self.ctx.store,
            date: self.opts.date,
            run_id: self.run_id,
        }
        .request(
            spec,
            staging,
            output,
            objects,
            self.secrets.get(&spec.name).cloned().unwrap_or_default(),
        )
    }

    async fn wait(
        &self,
        cluster: &ClusterHandle,
        handle: &StepHandle,
        spec: &StepSpec,
    ) -> std::result::Result<(), StepFailure> {
        let backend = &self.ctx.backend;
        let started = Instant::now();
        let (floor, max_floor) = backend.poll_floor();
        let mut interval = self.opts.poll.max(floor);
        let max_poll = self.opts.max_poll.max(max_floor);
        let mut last_seen: Option<(StepState, Option<String>)> = None;
        let mut last_report = Instant::now();
        loop {
            match backend
                .poll(cluster, handle)
                .await
                .map_err(StepFailure::Error)?
            {
                StepState::Completed => return Ok(()),
                StepState::Cancelled => return Err(StepFailure::Cancelled),
                StepState::Failed { reason } => {
                    // Logs may be late (EMR copies them minutes after): wait, but not past a
                    // cancel.
                    let logs = tokio::select! {
                        l = backend.logs(cluster, handle) => l.unwrap_or_default(),
                        () = self.cancel.cancelled() => Default::default(),
                    };
                    let mut msg = reason;
                    let cause = crate::cluster::cause_lines(&logs.stderr_tail, 20);
                    if !cause.is_empty() {
                        msg.push_str(&format!("\ncause:\n{}", cause.join("\n")));
                    }
                    let tail = tail_lines(&logs.stderr_tail, 20);
                    if !tail.is_empty() {
                        msg.push_str(&format!("\nstderr (last lines):\n{tail}"));
                    }
                    return Err(StepFailure::Failed(self.redactor.redact(&msg)));
                }
                state @ (StepState::Pending | StepState::Running) => {
                    let line = backend.status(cluster).await;
                    let seen = (state.clone(), line.clone());
                    if last_seen.as_ref() != Some(&seen) || last_report.elapsed() >= PROGRESS_EVERY
                    {
                        self.opts.emit(Event::StepProgress {
                            name: handle.name.clone(),
                            state,
                            elapsed: started.elapsed(),
                            cluster: line,
                        });
                        last_seen = Some(seen);
                        last_report = Instant::now();
                    }
                }
            }
            if let Some(limit) = spec.timeout
                && started.elapsed() >= limit
            {
                let _ = backend.cancel(cluster, handle).await;
                return Err(StepFailure::Failed(format!(
                    "timed out after {}s (timeout = {}s)",
                    started.elapsed().as_secs(),
                    limit.as_secs()
                )));
            }
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = self.cancel.cancelled() => {
                    let _ = backend.cancel(cluster, handle).await;
                    return Err(StepFailure::Cancelled);
                }
            }
            interval = (interval * 2).min(max_poll);
        }
    }
}

/// The run id a plan's requests show where a run puts its own.
pub const PLAN_RUN_ID: &str = "<run-id>";

/// The staging prefix a step of a run writes to before its output is published.
pub fn staging_prefix(run_id: &str, step: &str) -> String {
    format!("_lake/staging/{run_id}/{step}")
}

/// What a step request is made from besides the step: for the orchestrator, and for plans that
/// show a run's requests before it runs (with a placeholder run id).
#[derive(Clone, Copy)]
pub struct StepContext<'a> {
    /// The pipeline.
    pub pipeline: &'a Pipeline,
    /// Its zones.
    pub store: &'a DynZoneStore,
    /// The logical date.
    pub date: NaiveDate,
    /// The run id.
    pub run_id: &'a str,
}

impl StepContext<'_> {
    /// The request for `spec`: placeholders expanded, the `LAKE_*` environment and `secrets`
    /// (the step's resolved `env`) added, inputs resolved to `objects`.
    pub fn request(
        &self,
        spec: &StepSpec,
        staging: &str,
        output: Option<&str>,
        objects: Vec<Vec<ObjectEntry>>,
        secrets: Vec<(String, Secret)>,
    ) -> StepRequest {
        let p = self.pipeline;
        let date = self.date.to_string();
        let root = self.store.root_url();
        let expand = |arg: &str| {
            arg.replace("{date}", &date)
                .replace("{run_id}", self.run_id)
                .replace("{root}", &root)
                .replace("{output}", output.unwrap_or(""))
        };
        let mut env: Vec<(String, Secret)> = vec![
            ("LAKE_ROOT".into(), plain(&root)),
            ("LAKE_RUN_ID".into(), plain(self.run_id)),
            ("LAKE_DATE".into(), plain(&date)),
            ("LAKE_STEP".into(), plain(&spec.name)),
            ("LAKE_PIPELINE".into(), plain(&p.name)),
        ];
        if let Some(out) = output {
            env.push(("LAKE_OUTPUT".into(), plain(out)));
        }
        for input in &spec.inputs {
            let var = format!(
                "LAKE_INPUT_{}_{}",
                input.dataset.zone.as_str().to_uppercase(),
                input.dataset.name.to_uppercase().replace('-', "_")
            );
            let prefix = input.dataset.prefix();
            let loc = self
                .store
                .local_path(&prefix)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|| self.store.url_of(&prefix));
            env.push((var, plain(&loc)));
        }
        env.extend(secrets);
        let inputs: Vec<SqlInput> = spec
            .inputs
            .iter()
            .zip(objects)
            .map(|(i, objects)| SqlInput {
                table: i.table.clone(),
                dataset: i.to_string(),
                prefix: i.dataset.prefix(),
                format: i.format.clone(),
                objects,
            })
            .collect();
        let work = match &spec.kind {
            StepSpecKind::Command { command } => StepWork::Command {
                argv: command.iter().map(|a| expand(a)).collect(),
                env,
                workdir: p.base_dir.clone(),
            },
            StepSpecKind::Spark {
                app,
                args,
                spark_args,
            } => StepWork::Spark(SparkWork {
                app: app.clone(),
                args: args.iter().map(|a| expand(a)).collect(),
                spark_args: spark_args.clone(),
                env,
                workdir: p.base_dir.clone(),
            }),
            StepSpecKind::Copy => StepWork::Copy(CopyWork {
                input: inputs.into_iter().next().expect("validated: one input"),
                output: staging.to_owned(),
            }),
            StepSpecKind::Sql {
                sql,
                sql_line,
                partition_by,
                expect,
                ..
            } => StepWork::Sql(SqlWork {
                sql: sql.clone(),
                origin: format!("{}:{sql_line} (steps.{}.sql)", p.file.display(), spec.name),
                inputs,
                output: staging.to_owned(),
                partition_by: partition_by.clone(),
                expect: expect.clone(),
                run_id: self.run_id.to_owned(),
            }),
        };
        StepRequest {
            name: spec.name.clone(),
            work,
            timeout: spec.timeout,
        }
    }
}

/// A step's unchanged state is reported again after this long.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

enum StepFailure {
    Cancelled,
    Failed(String),
    Error(Error),
}

fn plain(s: &str) -> Secret {
    Secret::plain(s)
}

fn skipped(spec: &StepSpec, status: Status, reason: String) -> StepRecord {
    StepRecord {
        name: spec.name.clone(),
        kind: spec.kind_name().to_owned(),
        status,
        inputs: Vec::new(),
        output: spec.output.as_ref().map(ToString::to_string),
        output_objects: Vec::new(),
        rows: None,
        rejected: None,
        bytes: None,
        started: None,
        ended: None,
        duration_ms: None,
        error: (!reason.is_empty()).then_some(reason),
    }
}

fn ingest_record(
    source: &str,
    window: &Window,
    status: Status,
    bytes: u64,
    objects: Vec<ObjectEntry>,
    error: Option<String>,
) -> IngestRecord {
    IngestRecord {
        source: source.to_owned(),
        date: window.date(),
        status,
        objects,
        bytes,
        error,
    }
}

/// What makes a step's output what it is: its definition (as written, secrets unresolved), the
/// date, and its inputs' hashes.
fn fingerprint(spec: &StepSpec, date: NaiveDate, inputs: &[ObjectEntry]) -> String {
    let mut h = Sha256::new();
    let mut def = serde_json::to_value(spec).unwrap_or_default();
    if let Some(o) = def.as_object_mut() {
        o.remove("line");
    }
    h.update(def.to_string());
    h.update(date.to_string());
    for i in inputs {
        h.update(&i.key);
        h.update(&i.sha256);
    }
    hex::encode(h.finalize())
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
