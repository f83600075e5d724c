//! Polling: a submitted step watched to its end with backoff, no faster than its backend
//! wants; its timeout, cancellation, and the cause of its failure from its logs.

use std::time::{Duration, Instant};

use super::{Event, Runner};
use crate::Error;
use crate::cluster::{ClusterHandle, StepHandle, StepState};
use crate::config::StepSpec;

impl Runner<'_> {
    pub(super) async fn wait(
        &self,
        cluster: &ClusterHandle,
        handle: &StepHandle,
        spec: &StepSpec,
    ) -> std::result::Result<(), StepFailure> {
        let backend = &self.ctx.backend;
        let started = Instant::now();
        let (floor, max_floor) = backend.poll_floor();
        // The poll schedule: lake's one backoff policy, without jitter or end.
        let mut schedule = crate::retry::Backoff::polls(
            self.opts.poll.max(floor),
            self.opts.max_poll.max(max_floor),
        )
        .delays();
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
                    // Tails are cut from longer output: scrub secrets before anything is picked
                    // from them, a secret cut at the start included.
                    let (stdout, stderr) = (
                        self.redactor.redact_tail(&logs.stdout_tail),
                        self.redactor.redact_tail(&logs.stderr_tail),
                    );
                    // The cause may be on either stream: PySpark under spark-submit prints the
                    // Python traceback on the JVM's standard output.
                    let cause = crate::cluster::cause_lines(&format!("{stdout}\n{stderr}"), 20);
                    if !cause.is_empty() {
                        msg.push_str(&format!("\ncause:\n{}", cause.join("\n")));
                    }
                    let tail = tail_lines(&stderr, 20);
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
                () = backend.wait(cluster, handle, schedule.next().unwrap_or(Duration::from_secs(30))) => {}
                () = self.cancel.cancelled() => {
                    let _ = backend.cancel(cluster, handle).await;
                    return Err(StepFailure::Cancelled);
                }
            }
        }
    }
}

/// A step's unchanged state is reported again after this long.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(60);

pub(super) enum StepFailure {
    Cancelled,
    Failed(String),
    Error(Error),
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
