//! `[schedule]` as a library service: what is due, the status of the recent ticks, and the
//! scheduler loop (`lake schedule`), for any program that embeds lake. The CLI only prints
//! what [`ScheduleEvent`]s say.

use std::collections::BTreeSet;

use lake_core::chrono::{DateTime, NaiveDate, Utc};
use lake_core::ledger::{self, RunRecord, RunSummary, Status};
use lake_core::run::{CancellationToken, RunOptions};
use lake_core::schedule::{Schedule, Tick};
use lake_core::{Error, Result};
use serde::Serialize;

use crate::Lake;

/// A recent tick and the last run of its date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecentTick {
    /// When it came.
    pub at: DateTime<Utc>,
    /// Its logical date.
    pub date: NaiveDate,
    /// The newest run of that date.
    pub run_id: Option<String>,
    /// How that run ended (`not run` without one).
    pub status: String,
}

/// `lake schedule status`: the schedule, its next ticks, the recent ones with their runs, and
/// the dates due now.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduleStatus {
    /// The schedule.
    pub schedule: Schedule,
    /// The next five ticks.
    pub next: Vec<Tick>,
    /// The recent ticks (the catch-up window's), oldest first.
    pub recent: Vec<RecentTick>,
    /// The dates a scheduler would run now, oldest first.
    pub due: Vec<NaiveDate>,
}

/// What the scheduler loop reports as it goes.
#[derive(Debug)]
pub enum ScheduleEvent<'a> {
    /// `--once` found nothing to run.
    NothingDue,
    /// A tick's run starts.
    Tick(&'a Tick),
    /// A tick's run ended (its notice sent, when `[notify]` asks).
    Ran(&'a RunRecord),
    /// Waiting for the next tick.
    Waiting(&'a Tick),
}

/// How the scheduler loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleEnd {
    /// `--once`: every due run succeeded (or none was due).
    Succeeded,
    /// `--once`: a due run did not succeed.
    Failed,
    /// The cancel token fired.
    Cancelled,
}

/// The dates with a succeeded run and when the last succeeded run started.
fn successes(runs: &[RunSummary]) -> (Option<DateTime<Utc>>, BTreeSet<NaiveDate>) {
    let ok = runs.iter().filter(|r| r.status == Status::Succeeded);
    (
        ok.clone().map(|r| r.started).max(),
        ok.map(|r| r.date).collect(),
    )
}

impl Lake {
    /// The pipeline's `[schedule]`, or a usage error saying how to add one.
    pub fn schedule(&self) -> Result<&Schedule> {
        self.pipeline.schedule.as_ref().ok_or_else(|| Error::Invalid {
            what: self.pipeline.file.display().to_string(),
            message: "has no [schedule]: add one, e.g. `[schedule]` `cron = \"0 7 * * *\"` (docs/lake-toml.md)".into(),
        })
    }

    /// The ticks due at `now`, oldest first (one read of the ledger's index).
    pub async fn due(&self, now: DateTime<Utc>) -> Result<Vec<Tick>> {
        let s = self.schedule()?;
        let (last, dates) =
            successes(&ledger::pipeline_summaries(&*self.store, &self.pipeline.name).await?);
        Ok(s.due(now, last, &dates))
    }

    /// The schedule's status at `now` (one read of the ledger's index).
    pub async fn schedule_status(&self, now: DateTime<Utc>) -> Result<ScheduleStatus> {
        let s = self.schedule()?;
        let runs = ledger::pipeline_summaries(&*self.store, &self.pipeline.name).await?;
        let (last, dates) = successes(&runs);
        let recent = s
            .recent(now)
            .into_iter()
            .map(|t| {
                let run = runs
                    .iter()
                    .filter(|r| r.date == t.date)
                    .max_by_key(|r| r.started);
                RecentTick {
                    at: t.at,
                    date: t.date,
                    run_id: run.map(|r| r.run_id.clone()),
                    status: run.map_or("not run".to_owned(), |r| r.status.to_string()),
                }
            })
            .collect();
        Ok(ScheduleStatus {
            schedule: s.clone(),
            next: s.next(now, 5),
            recent,
            due: s
                .due(now, last, &dates)
                .into_iter()
                .map(|t| t.date)
                .collect(),
        })
    }

    /// The scheduler: run each due tick's date (oldest first, once each, even when its run
    /// fails: the next tick tries again), then sleep until the next tick, until `cancel`
    /// fires; with `once`, run what is due now and return. `options` makes each run's options
    /// for a date (its observer, its cancel token); `events` hears what happens.
    pub async fn run_schedule(
        &self,
        once: bool,
        cancel: &CancellationToken,
        options: impl Fn(NaiveDate) -> RunOptions,
        mut events: impl FnMut(ScheduleEvent<'_>),
    ) -> Result<ScheduleEnd> {
        let s = self.schedule()?;
        // The latest tick this loop ran: a tick is run once, even when its run failed.
        let mut last_ran: Option<DateTime<Utc>> = None;
        loop {
            let due: Vec<Tick> = self
                .due(Utc::now())
                .await?
                .into_iter()
                .filter(|t| last_ran.is_none_or(|l| t.at > l))
                .collect();
            if due.is_empty() && once {
                events(ScheduleEvent::NothingDue);
            }
            let mut failed = false;
            let ran = !due.is_empty();
            for tick in &due {
                events(ScheduleEvent::Tick(tick));
                last_ran = Some(tick.at);
                let record = self.run(&options(tick.date)).await?;
                events(ScheduleEvent::Ran(&record));
                if cancel.is_cancelled() {
                    return Ok(ScheduleEnd::Cancelled);
                }
                failed |= record.status != Status::Succeeded;
            }
            crate::notify::notify_stale(self, Utc::now()).await;
            if once {
                return Ok(if failed {
                    ScheduleEnd::Failed
                } else {
                    ScheduleEnd::Succeeded
                });
            }
            if ran {
                // Ticks that came while these ran are due now: once each date, not piled up.
                continue;
            }
            let Some(next) = s.next(Utc::now(), 1).pop() else {
                return Err(Error::Invalid {
                    what: format!("[schedule] cron {:?}", s.cron),
                    message: "has no next tick".into(),
                });
            };
            events(ScheduleEvent::Waiting(&next));
            let wait = (next.at - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return Ok(ScheduleEnd::Cancelled),
            }
        }
    }
}
