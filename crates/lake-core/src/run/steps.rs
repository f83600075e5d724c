//! Steps: which run when (at once, up to the limit), each from its inputs to a published
//! output, and what makes an output up to date.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{NaiveDate, Utc};
use sha2::{Digest, Sha256};

use super::poll::StepFailure;
use super::{Event, Runner, StepContext, error_chain};
use crate::cluster::{ClusterSpec, StepRequest};
use crate::config::{StepSpec, StepSpecKind, WriteMode, Zone};
use crate::ledger::{RunRecord, Status, StepRecord};
use crate::publish::{self, ObjectEntry, StepMetrics};
use crate::zone::ZoneStoreExt;
use crate::{Error, ErrorKind, Result};

impl Runner<'_> {
    pub(super) async fn run_all(&mut self, steps: &[String], record: &mut RunRecord) -> Result<()> {
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

        let ran = self.steps(steps, &failed_sources, record).await;
        if ran.is_ok() {
            self.catalog_after_steps(record).await;
            self.sinks_after_steps(record).await;
        }
        ran
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

    /// Run `spec` for the run's date. A merge of a date before the dataset's newest batch is
    /// followed by the later batches again, in date order, so the dataset ends as if its
    /// batches had been merged in order.
    async fn step(&self, spec: &StepSpec) -> Result<StepRecord> {
        let date = self.opts.date;
        let (mut rec, later) = self.step_at(spec, date, self.opts.force).await?;
        if rec.status != Status::Succeeded {
            return Ok(rec);
        }
        for d in later {
            self.opts.emit(Event::Replaying {
                step: spec.name.clone(),
                date: d,
                after: date,
            });
            let (again, _) = self.step_at(spec, d, true).await?;
            rec.duration_ms = Some(rec.duration_ms.unwrap_or(0) + again.duration_ms.unwrap_or(0));
            rec.ended = again.ended;
            if again.status != Status::Succeeded {
                rec.status = again.status;
                rec.error = Some(format!(
                    "{date}'s batch was merged, but the batch of {d} could not be merged again after it: {}. \
                     The dataset holds the batches up to {}; run `lake run --date {d}` and each later date again",
                    again.error.as_deref().unwrap_or("cancelled"),
                    rec.replayed.last().copied().unwrap_or(date),
                ));
                break;
            }
            rec.bytes = again.bytes;
            rec.output_objects = again.output_objects;
            rec.replayed.push(d);
        }
        Ok(rec)
    }

    /// Run `spec` as of `date`: its record, and for a merge whose dataset holds batches of
    /// later dates, those dates.
    async fn step_at(
        &self,
        spec: &StepSpec,
        date: NaiveDate,
        force: bool,
    ) -> Result<(StepRecord, Vec<NaiveDate>)> {
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
                        .map(|s| s.window_of(date).start)
                })
                .flatten();
            per_input.push(publish::dataset_objects(store, &input.dataset, date).await?);
        }
        rec.inputs = per_input.iter().flatten().cloned().collect();
        // What the store holds of the inputs now, one listing per dataset: their entity tags
        // go into the fingerprint, so an input changed in place (same size, other bytes) makes
        // the step run again, where reading checks it against its manifest.
        let inputs: Vec<&ObjectEntry> = rec.inputs.iter().collect();
        let seen = publish::listing(store, &inputs).await?;
        let fingerprint = fingerprint(spec, date, &rec.inputs, &seen);
        // A merge's batches are by date: only steps that read a window of the date have them.
        let batched = spec.merge.is_some() && spec.inputs.iter().any(|i| i.at_date);
        let current = match &spec.output {
            Some(out) => publish::read_manifest(store, &out.prefix()).await?,
            None => None,
        };
        let later: Vec<NaiveDate> = match &current {
            Some(m) if batched => m
                .batches
                .range(date.succ_opt().unwrap_or(date)..)
                .map(|(d, _)| *d)
                .collect(),
            _ => Vec::new(),
        };
        if let (Some(out), Some(m)) = (&spec.output, current)
            && !force
            && (m.fingerprint.as_deref() == Some(fingerprint.as_str())
                || (batched && m.batches.get(&date) == Some(&fingerprint)))
            && publish::sizes_match(store, &seen, &inputs).is_ok()
            && present(store, &m.objects).await?
        {
            // A run killed between its manifest and its table snapshot left the table behind:
            // the commit catches it up (and is a no-op when the snapshot is there).
            if let Some(format) = self.format(spec)? {
                self.format_commit(&*format, spec, out)
                    .commit(store, &out.prefix(), &m)
                    .await?;
            }
            rec.status = Status::UpToDate;
            rec.bytes = Some(m.bytes());
            rec.error = Some(if m.fingerprint.as_deref() == Some(fingerprint.as_str()) {
                format!(
                    "{out} is up to date: written by run {} from the same inputs",
                    m.run_id
                )
            } else {
                format!("{out} holds the batch of {date} already, merged from the same inputs")
            });
            rec.output_objects = m.objects;
            rec.duration_ms = Some(clock.elapsed().as_millis() as u64);
            rec.ended = Some(Utc::now());
            return Ok((rec, Vec::new()));
        }

        // What the step reads is what its manifests list: a missing or resized object fails the
        // step here, named, rather than as a decode error deep in the backend.
        publish::sizes_match(store, &seen, &inputs)?;
        // Readers other than the embedded engine (which hashes what it reads) get an input only
        // while its entity tag is the committed one, or once its bytes were hashed here.
        let hashing_reader = self.ctx.backend.embedded_sql()
            && matches!(spec.kind, crate::config::StepSpecKind::Sql { .. });
        if !hashing_reader {
            let reread = publish::tags_match(store, &seen, &inputs).await?;
            if !reread.is_empty() {
                self.opts.emit(Event::Warning(format!(
                    "step {}: {} of its inputs have another entity tag than at their commit (a copied or restored lake?); their SHA-256 was checked by reading them back, as it will be each run until they are written again",
                    spec.name,
                    reread.len()
                )));
            }
        }

        let staging = staging_prefix(self.run_id, &spec.name);
        let output_url = match &spec.output {
            Some(_) => {
                store.delete_prefix(&staging).await?;
                Some(store.prepare_for_writer(&staging).await?)
            }
            None => None,
        };
        let mut request = self.request(spec, date, &staging, output_url.as_deref(), per_input);
        if let (Some(merge), Some(out), crate::cluster::StepWork::Sql(work)) =
            (&spec.merge, &spec.output, &mut request.work)
        {
            if !self.ctx.backend.merges() {
                return Err(Error::NotImplemented {
                    operation: "mode = \"merge\"",
                    implementer: format!(
                        "the {} backend (merge runs on the embedded engine and the Spark-based backends)",
                        self.ctx.backend.name()
                    ),
                });
            }
            let prefix = out.prefix();
            work.merge = Some(Box::new(crate::cluster::MergeWork {
                spec: merge.clone(),
                current: publish::read_manifest(store, &prefix)
                    .await?
                    .map(|m| m.objects)
                    .unwrap_or_default(),
                prefix,
            }));
        }
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
        // Attempts: a failure a retry can fix (a process exit, a cluster step, the backend)
        // runs the step again after a doubling, jittered wait; each attempt starts from an
        // empty staging, and only the last one's output can be published.
        let mut waits = crate::retry::Backoff::retries(
            spec.retries + 1,
            spec.retry_delay,
            spec.retry_delay.saturating_mul(32),
        )
        .delays();
        let result = loop {
            let result = match self.ctx.backend.submit(&cluster, &request).await {
                Ok(handle) => self.wait(&cluster, &handle, spec).await,
                Err(e) => Err(StepFailure::Error(e)),
            };
            let Err(failure) = &result else { break result };
            if !self.retryable(spec, failure) {
                break result;
            }
            let Some(wait) = waits.next() else {
                break result;
            };
            let said = match failure {
                StepFailure::Failed(m) => m.clone(),
                StepFailure::Error(e) => self.redactor.redact(&error_chain(e)),
                StepFailure::Cancelled => break result,
            };
            rec.attempt_errors.push(said);
            rec.attempts += 1;
            self.opts.emit(Event::Warning(format!(
                "step {}: attempt {} failed; retrying in {:.0?} (attempt {} of {})",
                spec.name,
                rec.attempts - 1,
                wait,
                rec.attempts,
                spec.retries + 1
            )));
            if spec.output.is_some() {
                let _ = store.delete_prefix(&staging).await;
                let _ = store.prepare_for_writer(&staging).await;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.opts.cancel.cancelled() => break Err(StepFailure::Cancelled),
            }
        };
        let outcome = match result {
            Ok(()) => match &spec.output {
                Some(out) => {
                    let produced = publish::Produced {
                        fingerprint,
                        batch: batched.then_some(date),
                    };
                    self.publish(spec, &staging, out, produced, &mut rec).await
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
        Ok((rec, later))
    }

    /// Publish a completed step's staging: its rejected rows first (kept even when there are
    /// too many, so they can be inspected), then, within `max_rejected`, its output.
    async fn publish(
        &self,
        spec: &StepSpec,
        staging: &str,
        out: &crate::config::ZoneRef,
        produced: publish::Produced,
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
            rec.merged = m.merged;
        }
        let rejected = metrics.as_ref().map_or(0, |m| m.rejected);
        if rejected > 0 {
            let target = publish::rejected_prefix(out.zone, &spec.name);
            let format = self.format(spec).map_err(err)?;
            let rejected_ref = crate::config::ZoneRef {
                zone: out.zone,
                name: format!("_rejected_{}", spec.name),
            };
            publish::publish(
                store,
                &format!("{staging}/{}", publish::REJECTED),
                &target,
                WriteMode::Append,
                self.run_id,
                None,
                self.ctx.pipeline.retain_replaced,
                format.as_deref().map(|f| publish::FormatCommit {
                    partition_by: &[],
                    ..self.format_commit(f, spec, &rejected_ref)
                }),
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
        self.check_catalog(staging, out).await?;
        self.check_format(spec, staging, out).await?;
        self.opts.emit(Event::Publishing {
            step: spec.name.clone(),
            output: out.to_string(),
        });
        let format = self.format(spec).map_err(err)?;
        let m = publish::publish(
            store,
            staging,
            &out.prefix(),
            spec.mode,
            self.run_id,
            Some(produced),
            self.ctx.pipeline.retain_replaced,
            format.as_deref().map(|f| self.format_commit(f, spec, out)),
        )
        .await
        .map_err(err)?;
        rec.bytes = Some(m.bytes());
        self.committed(&m.objects);
        rec.output_objects = m.objects;
        Ok(())
    }

    /// The table format of `spec`'s output: none for `parquet`; a format this program does not
    /// offer is an error naming it.
    fn format(&self, spec: &StepSpec) -> Result<Option<Arc<dyn crate::table_format::TableFormat>>> {
        if spec.table_format == crate::table_format::PARQUET {
            return Ok(None);
        }
        self.ctx
            .formats
            .get(&spec.table_format)
            .cloned()
            .map(Some)
            .ok_or_else(|| Error::NotImplemented {
                operation: "this table_format",
                implementer: format!(
                    "this program: step {} asks for table_format = {:?}, which it cannot open",
                    spec.name, spec.table_format
                ),
            })
    }

    fn format_commit<'a>(
        &'a self,
        format: &'a dyn crate::table_format::TableFormat,
        spec: &'a StepSpec,
        out: &'a crate::config::ZoneRef,
    ) -> publish::FormatCommit<'a> {
        let partition_by = match &spec.kind {
            StepSpecKind::Sql { partition_by, .. } => partition_by.as_slice(),
            _ => &[],
        };
        publish::FormatCommit {
            format,
            step: &spec.name,
            dataset: out,
            partition_by,
            retain: self.ctx.pipeline.retain_snapshots,
        }
    }

    /// With `[catalog]` naming `out`: refuse, before anything is published, an output whose
    /// table the catalog would refuse (a narrowed column), so the dataset keeps its data.
    async fn check_catalog(
        &self,
        staging: &str,
        out: &crate::config::ZoneRef,
    ) -> std::result::Result<(), StepFailure> {
        let (Some(catalog), Some(cspec)) = (&self.ctx.catalog, &self.ctx.pipeline.catalog) else {
            return Ok(());
        };
        if !cspec.includes(out.zone, &out.name) {
            return Ok(());
        }
        let staged = self.staged(staging, out).await?;
        catalog.check_staged(&staged).await.map_err(|e| {
            StepFailure::Failed(format!(
                "{}; {out} was left as it was",
                self.redactor.redact(&error_chain(&e))
            ))
        })
    }

    /// A step's staged output as a dataset: the objects it would publish.
    async fn staged(
        &self,
        staging: &str,
        out: &crate::config::ZoneRef,
    ) -> std::result::Result<publish::Dataset, StepFailure> {
        let objects = self
            .ctx
            .store
            .list(staging)
            .await
            .map_err(StepFailure::Error)?
            .into_iter()
            .filter(|m| !publish::is_hidden(publish::rel_key(m.key.as_str(), staging)))
            .map(|m| ObjectEntry {
                key: m.key.as_str().to_owned(),
                size: m.size,
                sha256: String::new(),
                origin: None,
                etag: None,
            })
            .collect();
        Ok(publish::Dataset {
            zone: out.zone,
            name: out.name.clone(),
            prefix: staging.to_owned(),
            objects,
        })
    }

    /// With a table format: refuse, before anything is published, an output whose columns the
    /// table cannot take (a changed type), so the dataset keeps its data.
    async fn check_format(
        &self,
        spec: &StepSpec,
        staging: &str,
        out: &crate::config::ZoneRef,
    ) -> std::result::Result<(), StepFailure> {
        let Some(format) = self.format(spec).map_err(StepFailure::Error)? else {
            return Ok(());
        };
        let staged = self.staged(staging, out).await?;
        let commit = self.format_commit(&*format, spec, out);
        format
            .check(&self.ctx.store, &staged, &out.prefix(), commit.partition_by)
            .await
            .map_err(|e| {
                StepFailure::Failed(format!(
                    "{}; {out} was left as it was",
                    self.redactor.redact(&error_chain(&e))
                ))
            })
    }

    fn request(
        &self,
        spec: &StepSpec,
        date: NaiveDate,
        staging: &str,
        output: Option<&str>,
        objects: Vec<Vec<ObjectEntry>>,
    ) -> StepRequest {
        let committed = self.committed.lock().expect("not poisoned");
        let ours = objects
            .iter()
            .flatten()
            .filter(|o| committed.contains(&o.key))
            .map(|o| o.key.clone())
            .collect();
        drop(committed);
        let mut request = StepContext {
            pipeline: &self.ctx.pipeline,
            store: &*self.ctx.store,
            date,
            run_id: self.run_id,
        }
        .request(
            spec,
            staging,
            output,
            objects,
            self.secrets.get(&spec.name).cloned().unwrap_or_default(),
        );
        if let crate::cluster::StepWork::Sql(work) = &mut request.work {
            work.committed = ours;
        }
        request
    }

    /// Note `objects` as committed by this run (hashed as they were written).
    pub(super) fn committed(&self, objects: &[ObjectEntry]) {
        self.committed
            .lock()
            .expect("not poisoned")
            .extend(objects.iter().map(|o| o.key.clone()));
    }
}

impl Runner<'_> {
    /// True for a failure that running the step again can fix: a process or cluster step
    /// that failed, or an error of the backend. Not a cancellation, not a damaged or missing
    /// input, not a `sql` step on the embedded engine (its failures, SQL and data errors, would
    /// fail the same way again).
    fn retryable(&self, spec: &StepSpec, failure: &StepFailure) -> bool {
        let embedded_sql =
            matches!(spec.kind, StepSpecKind::Sql { .. }) && self.ctx.backend.embedded_sql();
        match failure {
            StepFailure::Cancelled => false,
            StepFailure::Failed(_) => !embedded_sql,
            // The environment may recover; usage, data and bugs fail the same way again.
            StepFailure::Error(e) => !embedded_sql && e.kind() == ErrorKind::Transient,
        }
    }
}

/// The run id a plan's requests show where a run puts its own.
pub const PLAN_RUN_ID: &str = "<run-id>";

/// The staging prefix a step of a run writes to before its output is published.
pub fn staging_prefix(run_id: &str, step: &str) -> String {
    format!("_lake/staging/{run_id}/{step}")
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
        merged: None,
        replayed: Vec::new(),
        bytes: None,
        started: None,
        ended: None,
        duration_ms: None,
        error: (!reason.is_empty()).then_some(reason),
        attempts: 1,
        attempt_errors: Vec::new(),
    }
}

/// True when every object of a step's output manifest is in the store with its size: a file
/// deleted or truncated by hand makes the step not up to date. One listing per dataset.
async fn present(store: &crate::zone::DynZoneStore, outputs: &[ObjectEntry]) -> Result<bool> {
    let all: Vec<&ObjectEntry> = outputs.iter().collect();
    match publish::check_sizes(store, &all).await {
        Ok(()) => Ok(true),
        Err(Error::Mismatch { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// What makes a step's output what it is: its definition (as written, secrets unresolved), the
/// date, its inputs' hashes, and the entity tags the store lists for them (which change when an
/// object is written again, even with the same size).
fn fingerprint(
    spec: &StepSpec,
    date: NaiveDate,
    inputs: &[ObjectEntry],
    seen: &publish::Listing,
) -> String {
    let mut h = Sha256::new();
    let mut def = serde_json::to_value(spec).unwrap_or_default();
    if let Some(o) = def.as_object_mut() {
        // Keys that do not change what the step writes.
        for k in ["line", "retries", "retry_delay", "timeout"] {
            o.remove(k);
        }
    }
    h.update(def.to_string());
    h.update(date.to_string());
    for i in inputs {
        h.update(&i.key);
        h.update(&i.sha256);
        if let Some((_, Some(tag))) = seen.get(&i.key) {
            h.update(tag);
        }
    }
    hex::encode(h.finalize())
}
