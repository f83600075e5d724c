//! Human output.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;

use lake::core::ledger::{RunRecord, Status, StepRecord};
use lake::core::run::{Event, RunObserver};

pub(crate) use lake::core::human::{bytes, millis};

pub(crate) fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// Prints run events to stderr as they happen: plain lines, and on a terminal live lines that
/// update in place: a bar per source being ingested (bytes, rate, windows), and a spinner per
/// running step (its state and elapsed time, then "publishing"). Piped, progress is not
/// printed: a step's state only when it changes.
pub(crate) struct Progress {
    verbose: bool,
    bars: Option<Bars>,
    /// Piped: the last state printed per step.
    states: Mutex<HashMap<String, &'static str>>,
}

/// The live lines of a terminal.
struct Bars {
    multi: indicatif::MultiProgress,
    /// Per source: its bar, windows done, windows in all.
    sources: Mutex<HashMap<String, (indicatif::ProgressBar, usize, usize)>>,
    /// Per running step: its spinner.
    steps: Mutex<HashMap<String, indicatif::ProgressBar>>,
}

impl Bars {
    fn spinner(&self, template: &str) -> indicatif::ProgressBar {
        let bar =
            indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::hidden());
        bar.set_style(indicatif::ProgressStyle::with_template(template).expect("a valid template"));
        let bar = self.multi.add(bar);
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    }
}

impl Progress {
    /// Live lines only when stderr is a terminal.
    pub(crate) fn new(verbose: bool) -> Self {
        let bars = std::io::stderr().is_terminal().then(|| Bars {
            multi: indicatif::MultiProgress::new(),
            sources: Mutex::new(HashMap::new()),
            steps: Mutex::new(HashMap::new()),
        });
        Self {
            verbose,
            bars,
            states: Mutex::new(HashMap::new()),
        }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some(b) => b.multi.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// Keep the live lines up to date; true when the event was only for them.
    fn bar(&self, event: &Event) -> bool {
        let Some(b) = &self.bars else {
            return matches!(
                event,
                Event::Fetched { .. } | Event::Catching { .. } | Event::Publishing { .. }
            );
        };
        match event {
            Event::Catching { source, windows } => {
                let bar = b.spinner(
                    "{spinner:.cyan} ingest {prefix}: window {msg}, {binary_bytes} at {binary_bytes_per_sec}, {elapsed}",
                );
                bar.set_prefix(source.clone());
                bar.set_message(format!("1/{windows}"));
                let mut sources = b.sources.lock().expect("bars lock");
                sources.insert(source.clone(), (bar, 0, *windows));
                true
            }
            Event::Fetched { source, bytes } => {
                let sources = b.sources.lock().expect("bars lock");
                if let Some((bar, _, _)) = sources.get(&**source) {
                    bar.inc(*bytes);
                }
                true
            }
            Event::Ingested { source, .. } => {
                let mut sources = b.sources.lock().expect("bars lock");
                if let Some((bar, done, all)) = sources.get_mut(source) {
                    *done += 1;
                    if *done >= *all {
                        bar.finish_and_clear();
                        sources.remove(source);
                    } else {
                        bar.set_message(format!("{}/{all}", *done + 1));
                    }
                }
                false
            }
            Event::StepStarted { name } => {
                let bar = b.spinner("{spinner:.cyan} step {prefix}: {msg} {elapsed}");
                bar.set_prefix(name.clone());
                bar.set_message("submitted");
                b.steps.lock().expect("bars lock").insert(name.clone(), bar);
                !self.verbose
            }
            Event::StepProgress { name, .. } => {
                if let Some(bar) = b.steps.lock().expect("bars lock").get(name) {
                    bar.set_message(step_state(event, false).unwrap_or_default());
                    return true;
                }
                false
            }
            Event::Publishing { step, output } => {
                if let Some(bar) = b.steps.lock().expect("bars lock").get(step) {
                    bar.set_message(format!("publishing → {output}"));
                }
                true
            }
            Event::StepFinished { record } => {
                if let Some(bar) = b.steps.lock().expect("bars lock").remove(&record.name) {
                    bar.finish_and_clear();
                }
                false
            }
            _ => false,
        }
    }

    /// The line an event prints (after the live lines had theirs), or `None`.
    fn text(&self, event: &Event) -> Option<String> {
        Some(match event {
            Event::Started { run_id } => format!("run {run_id}"),
            Event::Warning(w) => format!("warning: {w}"),
            Event::Waiting { run_id, holder } => {
                format!("waiting for run {run_id} ({holder}) to release the pipeline's lock")
            }
            Event::Ingested {
                source,
                date,
                status,
                objects,
                bytes: b,
                error,
            } => match status {
                Status::UpToDate => format!(
                    "ingest {source} {date}: skipped, window already complete ({}, {})",
                    plural(*objects, "object"),
                    bytes(*b)
                ),
                Status::Succeeded => format!(
                    "ingest {source} {date}: fetched {}, {}",
                    plural(*objects, "object"),
                    bytes(*b)
                ),
                _ => format!(
                    "ingest {source} {date}: FAILED: {}",
                    error.as_deref().unwrap_or("(no reason given)")
                ),
            },
            Event::StepStarted { name } if self.verbose => format!("step {name}: started"),
            Event::Cluster(note) => note.clone(),
            Event::StepProgress { name, state, .. } => {
                // Piped: a step's state when it changes, not each poll's elapsed time.
                let state = state_name(state);
                let mut states = self.states.lock().expect("states lock");
                if states.insert(name.clone(), state) == Some(state) {
                    return None;
                }
                format!("step {name}: {}", step_state(event, true)?)
            }
            Event::Replaying { step, date, after } => {
                format!("step {step}: merging the batch of {date} again, after {after}'s")
            }
            Event::StepFinished { record } => step_line(record),
            Event::SinkFinished { record } => sink_line(record),
            Event::CatalogFinished { record } => catalog_line(record),
            _ => return None,
        })
    }
}

/// A submitted step's state as printed: `PENDING` until it runs, then `RUNNING`.
fn state_name(state: &lake::core::cluster::StepState) -> &'static str {
    match state {
        lake::core::cluster::StepState::Pending => "PENDING",
        _ => "RUNNING",
    }
}

/// A running step's state, elapsed time (a live line shows its own) and cluster.
fn step_state(event: &Event, elapsed_too: bool) -> Option<String> {
    let Event::StepProgress {
        state,
        elapsed,
        cluster,
        ..
    } = event
    else {
        return None;
    };
    Some(format!(
        "{}{}{}",
        state_name(state),
        if elapsed_too {
            format!(" {}", duration(*elapsed))
        } else {
            String::new()
        },
        cluster
            .as_ref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default()
    ))
}

impl RunObserver for Progress {
    fn event(&self, event: &Event) {
        if json() {
            if let Event::Started { run_id } = event {
                *RUN_ID
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(run_id.clone());
            }
            // Each chunk's bytes: a line per chunk would drown the log.
            if matches!(event, Event::Fetched { .. }) {
                return;
            }
            let (name, fields) = event_fields(event);
            let text = self.text(event).unwrap_or_else(|| name.replace('_', " "));
            eprintln!("{}", json_line(name, &text, fields));
            return;
        }
        if self.bar(event) {
            return;
        }
        if let Some(text) = self
            .text(event)
            .map(|t| lake::core::human::printable(&t).into_owned())
        {
            self.line(text);
        }
    }
}

/// `--log-format json`: every stderr line is one JSON object.
static JSON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The run the JSON lines belong to, once it has an id.
static RUN_ID: Mutex<Option<String>> = Mutex::new(None);

/// Make every stderr line a JSON object (`--log-format json`).
pub(crate) fn set_json(on: bool) {
    JSON.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Whether stderr's lines are JSON objects.
pub(crate) fn json() -> bool {
    JSON.load(std::sync::atomic::Ordering::Relaxed)
}

/// One JSON log line: `ts`, `run_id` (null before the run has one), `event`, `message`, then
/// `fields`' own keys.
pub(crate) fn json_line(event: &str, message: &str, fields: serde_json::Value) -> String {
    let run_id = RUN_ID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let mut line = serde_json::Map::new();
    line.insert(
        "ts".into(),
        lake::core::chrono::Utc::now()
            .to_rfc3339_opts(lake::core::chrono::SecondsFormat::Millis, true)
            .into(),
    );
    line.insert("run_id".into(), run_id.into());
    line.insert("event".into(), event.into());
    line.insert("message".into(), message.into());
    if let serde_json::Value::Object(more) = fields {
        line.extend(more);
    }
    serde_json::Value::Object(line).to_string()
}

/// A line on stderr: as written, or as a JSON object whose `event` is `event`.
pub(crate) fn note(event: &str, text: &str) {
    if json() {
        eprintln!("{}", json_line(event, text, serde_json::json!({})));
    } else {
        eprintln!("{text}");
    }
}

/// A run event's name in JSON lines and its fields.
fn event_fields(event: &Event) -> (&'static str, serde_json::Value) {
    use serde_json::json;
    match event {
        Event::Started { .. } => ("run_started", json!({})),
        Event::Warning(_) => ("warning", json!({ "level": "warn" })),
        Event::Waiting { run_id, holder } => (
            "waiting_for_lock",
            json!({ "holder_run_id": run_id, "holder": holder }),
        ),
        Event::Ingested {
            source,
            date,
            error,
            status,
            objects,
            bytes,
        } => (
            "ingest_window",
            json!({ "source": source, "date": date, "status": status, "objects": objects,
                    "bytes": bytes, "error": error }),
        ),
        Event::Catching { source, windows } => (
            "ingest_started",
            json!({ "source": source, "windows": windows }),
        ),
        Event::Fetched { source, bytes } => (
            "ingest_bytes",
            json!({ "source": &**source, "bytes": bytes }),
        ),
        Event::StepStarted { name } => ("step_started", json!({ "step": name })),
        Event::Cluster(_) => ("cluster", json!({})),
        Event::StepProgress {
            name,
            state,
            elapsed,
            cluster,
        } => (
            "step_state",
            json!({ "step": name, "state": state_name(state),
                    "elapsed_ms": elapsed.as_millis() as u64, "cluster": cluster }),
        ),
        Event::Replaying { step, date, after } => (
            "step_replaying",
            json!({ "step": step, "date": date, "after": after }),
        ),
        Event::Publishing { step, output } => {
            ("step_publishing", json!({ "step": step, "output": output }))
        }
        Event::StepFinished { record } => ("step_finished", json!({ "step": record })),
        Event::SinkFinished { record } => ("sink_finished", json!({ "sink": record })),
        Event::CatalogFinished { record } => ("catalog_finished", json!({ "table": record })),
        // An event a newer lake-core added.
        _ => ("event", json!({})),
    }
}

pub(crate) fn step_line(s: &StepRecord) -> String {
    let out = s
        .output
        .as_deref()
        .map(|o| format!(" → {o}"))
        .unwrap_or_default();
    match s.status {
        Status::Succeeded => {
            let rows = match (s.rows, s.rejected) {
                (Some(r), Some(0) | None) => format!(", {}", plural(r as usize, "row")),
                (Some(r), Some(x)) => format!(
                    ", {}, {x} rejected → {}",
                    plural(r as usize, "row"),
                    s.output
                        .as_deref()
                        .and_then(|o| o.split('/').next())
                        .map(|z| format!("{z}/_rejected/{}", s.name))
                        .unwrap_or_default()
                ),
                _ => String::new(),
            };
            let attempt = if s.attempts > 1 {
                format!(" on attempt {}", s.attempts)
            } else {
                String::new()
            };
            let merged = s.merged.map_or(String::new(), |m| {
                format!(
                    "; merged: {} inserted, {} updated, {} deleted, {} of {} files rewritten",
                    m.inserted,
                    m.updated,
                    m.deleted,
                    m.rewritten_files,
                    m.rewritten_files + m.kept_files
                )
            });
            let replayed = match s.replayed.as_slice() {
                [] => String::new(),
                dates => format!(
                    "; then the batches of {} again",
                    dates
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            format!(
                "step {}: succeeded{attempt} in {}{out} ({}, {}{rows}{merged}{replayed})",
                s.name,
                millis(s.duration_ms),
                plural(s.output_objects.len(), "object"),
                bytes(s.bytes.unwrap_or(0))
            )
        }
        Status::UpToDate => format!(
            "step {}: skipped, {} (--force reruns it)",
            s.name,
            s.error.as_deref().unwrap_or("up to date")
        ),
        Status::Failed => format!(
            "step {}: FAILED after {}: {}",
            s.name,
            millis(s.duration_ms),
            s.error.as_deref().unwrap_or("(no reason given)")
        ),
        other => format!(
            "step {}: {other}: {}",
            s.name,
            s.error.as_deref().unwrap_or("")
        ),
    }
}

/// A sink's line: `sink credit_pg: loaded 10 rows into credit.by_purpose in 0.2s`.
pub(crate) fn sink_line(s: &lake::core::ledger::SinkRecord) -> String {
    match s.status {
        Status::Succeeded => format!(
            "sink {}: loaded {} from {} into {} in {}",
            s.name,
            plural(s.rows.unwrap_or(0) as usize, "row"),
            s.from,
            s.table,
            millis(Some(s.duration_ms))
        ),
        Status::UpToDate => format!(
            "sink {}: skipped, {} holds {} already (--force loads it again)",
            s.name, s.table, s.from
        ),
        Status::Failed => format!(
            "sink {}: FAILED after {}, {} is as it was: {}",
            s.name,
            millis(Some(s.duration_ms)),
            s.table,
            s.error.as_deref().unwrap_or("(no reason given)")
        ),
        other => format!(
            "sink {}: {other}: {}",
            s.name,
            s.error.as_deref().unwrap_or("")
        ),
    }
}

/// The last line of `lake sink`: tables loaded, up to date, failed.
/// A dataset's Glue table after a publish or `lake catalog sync`.
pub(crate) fn catalog_line(c: &lake::core::ledger::CatalogRecord) -> String {
    match c.status {
        Status::Failed => format!(
            "catalog {}: FAILED, the data of {} is committed (`lake catalog sync` registers it again): {}",
            c.table,
            c.dataset,
            c.error.as_deref().unwrap_or("(no reason given)")
        ),
        Status::UpToDate => format!("catalog {}: up to date", c.table),
        _ => {
            let mut parts = vec![if c.created { "created" } else { "updated" }.to_owned()];
            if c.partitions_added > 0 {
                parts.push(format!("{} added", plural(c.partitions_added, "partition")));
            }
            if c.partitions_dropped > 0 {
                parts.push(format!(
                    "{} dropped",
                    plural(c.partitions_dropped, "partition")
                ));
            }
            format!(
                "catalog {}: {} ({} in {})",
                c.table,
                parts.join(", "),
                c.dataset,
                millis(Some(c.duration_ms))
            )
        }
    }
}

/// The last line of `lake catalog sync`.
pub(crate) fn catalog_summary(records: &[lake::core::ledger::CatalogRecord]) -> String {
    let count = |st: Status| records.iter().filter(|r| r.status == st).count();
    format!(
        "catalog sync: {} registered, {} up to date, {} failed",
        count(Status::Succeeded),
        count(Status::UpToDate),
        count(Status::Failed)
    )
}

pub(crate) fn sink_summary(r: &RunRecord) -> String {
    let count = |st: Status| r.sinks.iter().filter(|s| s.status == st).count();
    let mut line = format!(
        "{} sink run {} of {}: {} loaded, {} up to date, {} failed",
        r.status,
        r.run_id,
        r.pipeline,
        count(Status::Succeeded),
        count(Status::UpToDate),
        count(Status::Failed)
    );
    if r.sinks.is_empty() {
        line.push_str(" (no sink is on)");
    }
    line
}

/// The end-of-run summary, on stdout.
/// The last line of `lake ingest`: windows fetched, skipped, failed, bytes, time.
pub(crate) fn ingest_summary(r: &RunRecord) -> String {
    let count = |st: Status| r.ingest.iter().filter(|i| i.status == st).count();
    let fetched: u64 = r
        .ingest
        .iter()
        .filter(|i| i.status == Status::Succeeded)
        .map(|i| i.bytes)
        .sum();
    let secs = r
        .ended
        .map(|e| (e - r.started).num_milliseconds() as f64 / 1000.0)
        .unwrap_or_default();
    format!(
        "{} ingest {} of {}: {} fetched ({}), {} already complete, {} failed, in {secs:.1}s",
        r.status,
        r.run_id,
        r.pipeline,
        plural(count(Status::Succeeded), "window"),
        bytes(fetched),
        count(Status::UpToDate),
        count(Status::Failed)
    )
}

pub(crate) fn summary(r: &RunRecord, outputs: &[(String, String)]) -> String {
    let count = |st: Status| r.steps.iter().filter(|s| s.status == st).count();
    let mut s = format!(
        "{} run {} of {} for {}: {} succeeded, {} up to date, {} failed, {} skipped",
        r.status,
        r.run_id,
        r.pipeline,
        r.date,
        count(Status::Succeeded),
        count(Status::UpToDate),
        count(Status::Failed),
        count(Status::Skipped) + count(Status::Cancelled)
    );
    if let Some(e) = &r.error {
        s.push_str(&format!("\nerror: {e}"));
    }
    for (name, where_) in outputs {
        s.push_str(&format!("\noutput {name}: {where_}"));
    }
    s
}

/// `45s`, `3m05s`, `1h02m`.
pub(crate) use lake::core::human::age as duration;

/// Set once a write to standard output found the reader gone (`lake runs --json | head -1`).
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Standard output for a command's results. A closed pipe is remembered, whatever error type
/// the writer above it (serde_json, Arrow's CSV writer) turns it into, so that `main` can
/// treat it as the end of output rather than a failure.
pub(crate) fn out() -> Out {
    Out(std::io::stdout().lock())
}

/// True when a result write found standard output closed.
pub(crate) fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// See [`out`].
pub(crate) struct Out(std::io::StdoutLock<'static>);

impl Out {
    fn seen<T>(r: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &r
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            STDOUT_CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}

impl std::io::Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Self::seen(self.0.write(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Self::seen(self.0.flush())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lake::core::cluster::StepState;

    use super::*;

    fn progress(name: &str, state: StepState, secs: u64) -> Event {
        Event::StepProgress {
            name: name.into(),
            state,
            elapsed: Duration::from_secs(secs),
            cluster: Some("cluster j-1 RUNNING".into()),
        }
    }

    /// Piped, a step's state prints when it changes, not at each poll; publishing and bytes
    /// of a fetch print nothing.
    #[test]
    fn piped_progress_prints_state_changes_only() {
        let p = Progress {
            verbose: false,
            bars: None,
            states: Mutex::new(HashMap::new()),
        };
        let lines: Vec<Option<String>> = [
            progress("a", StepState::Pending, 0),
            progress("a", StepState::Pending, 30),
            progress("a", StepState::Running, 60),
            progress("a", StepState::Running, 120),
            progress("b", StepState::Running, 5),
        ]
        .iter()
        .map(|e| p.text(e))
        .collect();
        assert_eq!(
            lines,
            [
                Some("step a: PENDING 0s (cluster j-1 RUNNING)".to_owned()),
                None,
                Some("step a: RUNNING 1m00s (cluster j-1 RUNNING)".to_owned()),
                None,
                Some("step b: RUNNING 5s (cluster j-1 RUNNING)".to_owned()),
            ]
        );
        for e in [
            Event::Publishing {
                step: "a".into(),
                output: "refined/x".into(),
            },
            Event::Fetched {
                source: "s".into(),
                bytes: 10,
            },
        ] {
            assert!(p.bar(&e), "{e:?} is progress only");
        }
    }
}
