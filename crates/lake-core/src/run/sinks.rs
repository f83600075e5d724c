//! Sinks in a run: each after the step that writes its dataset, over what that step committed.

use std::time::Instant;

use super::{Event, Runner, error_chain};
use crate::config::SinkSpec;
use crate::ledger::{self, LineageRow, RunRecord, SinkRecord, Status};
use crate::publish::{self, Dataset, Manifest};

use crate::sink::{self, SinkLoad, SinkOutcome};
use crate::{Error, Result};

impl Runner<'_> {
    /// The sinks of the steps of this run: each whose step succeeded or was up to date loads
    /// (or finds its table up to date); the others are skipped, naming the step.
    pub(super) async fn sinks_after_steps(&self, record: &mut RunRecord) {
        let p = &self.ctx.pipeline;
        for spec in p.sinks.values().filter(|s| s.is_on(&*self.opts.env)) {
            let Some(step) = record.steps.iter().find(|s| s.name == spec.step) else {
                continue;
            };
            let rec = if self.opts.cancel.is_cancelled() {
                sink_record(
                    spec,
                    Status::Cancelled,
                    Some("the run was cancelled".into()),
                )
            } else if matches!(step.status, Status::Succeeded | Status::UpToDate) {
                self.sink(spec, record).await
            } else {
                sink_record(
                    spec,
                    Status::Skipped,
                    Some(format!("step {:?} did not succeed", spec.step)),
                )
            };
            self.opts.emit(Event::SinkFinished {
                record: rec.clone(),
            });
            record.sinks.push(rec);
        }
    }

    /// `names` (every sink when empty) over the committed data, as `lake sink` runs them: the
    /// lineage rows are those of the run that wrote each dataset.
    pub(super) async fn sinks_only(&self, names: &[String], record: &mut RunRecord) -> Result<()> {
        let p = &self.ctx.pipeline;
        for (name, spec) in &p.sinks {
            // Named, a sink runs (an unset URL variable is its error); unnamed, only if on.
            let wanted = if names.is_empty() {
                spec.is_on(&*self.opts.env)
            } else {
                names.contains(name)
            };
            if !wanted {
                continue;
            }
            if self.opts.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let rec = self.sink(spec, record).await;
            self.opts.emit(Event::SinkFinished {
                record: rec.clone(),
            });
            record.sinks.push(rec);
        }
        Ok(())
    }

    /// The lineage of the data in `manifest`: the steps of the run that wrote it (`current`,
    /// this run, or an earlier one from the ledger; none when the ledger has lost it).
    async fn lineage(&self, manifest: &Manifest, current: &RunRecord) -> Result<Vec<LineageRow>> {
        if manifest.run_id == current.run_id {
            return Ok(sink::lineage(current));
        }
        match ledger::get(&*self.ctx.store, &manifest.run_id).await {
            Ok(made) => Ok(sink::lineage(&made)),
            Err(e) if e.is_not_found() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn sink(&self, spec: &SinkSpec, current: &RunRecord) -> SinkRecord {
        let started = Instant::now();
        let outcome = async {
            let sink = self
                .ctx
                .sinks
                .get(&spec.name)
                .ok_or_else(|| Error::NotImplemented {
                    operation: "this sink",
                    implementer: format!(
                        "a run context with the sink {:?} opened (RunContext::sinks)",
                        spec.name
                    ),
                })?;
            let store = &*self.ctx.store;
            let prefix = spec.from.prefix();
            let manifest = publish::read_manifest(store, &prefix)
                .await?
                .ok_or_else(|| Error::Invalid {
                    what: format!("sinks.{}", spec.name),
                    message: format!(
                        "nothing is committed at {}: run the step {:?} first",
                        store.url_of(&prefix),
                        spec.step
                    ),
                })?;
            let lineage = self.lineage(&manifest, current).await?;
            let load = SinkLoad {
                dataset: Dataset {
                    zone: spec.from.zone,
                    name: spec.from.name.clone(),
                    prefix,
                    objects: manifest.objects.clone(),
                },
                manifest,
                run_id: self.run_id.to_owned(),
                lineage,
                force: self.opts.force,
            };
            sink.load(&load).await
        }
        .await;
        let mut rec = match outcome {
            Ok(SinkOutcome::Loaded { rows, bytes }) => SinkRecord {
                rows: Some(rows),
                bytes: Some(bytes),
                ..sink_record(spec, Status::Succeeded, None)
            },
            Ok(SinkOutcome::UpToDate) => sink_record(spec, Status::UpToDate, None),
            Err(e) => sink_record(
                spec,
                Status::Failed,
                Some(self.redactor.redact(&error_chain(&e))),
            ),
        };
        rec.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        rec
    }
}

/// A sink's record without counts: `error` says why it failed or was not run.
fn sink_record(spec: &SinkSpec, status: Status, error: Option<String>) -> SinkRecord {
    SinkRecord {
        name: spec.name.clone(),
        from: spec.from.to_string(),
        table: spec.config.destination(),
        status,
        rows: None,
        bytes: None,
        duration_ms: 0,
        error,
    }
}
