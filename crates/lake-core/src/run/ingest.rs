//! Ingest and cursors: the windows a source lands, oldest first, and the cursor that moves
//! over the contiguous complete ones.

use std::sync::Arc;

use chrono::NaiveDate;

use super::{Event, Runner, error_chain};
use crate::ledger::{IngestRecord, RunRecord, Status};
use crate::publish::{self, Landed, ObjectEntry};
use crate::source::Window;
use crate::{Error, ErrorKind, Result};

/// Windows landed between two saves of a source's window index (and moves of its cursor).
const INDEX_EVERY: usize = 64;

/// A source's window index and cursor while a run lands its windows.
struct Landing {
    index: publish::WindowIndex,
    /// The newest window of the contiguous complete ones, as landed so far.
    cursor: Option<NaiveDate>,
    /// The cursor as stored.
    saved: Option<NaiveDate>,
}

impl Landing {
    /// Save the index, then move the stored cursor: never past a window the saved index lacks.
    async fn flush(
        &mut self,
        store: &crate::zone::DynZoneStore,
        source: &str,
        run_id: &str,
    ) -> Result<()> {
        self.index.save(store).await?;
        if self.cursor != self.saved
            && let Some(day) = self.cursor
        {
            publish::set_cursor(store, source, day, run_id).await?;
            self.saved = self.cursor;
        }
        Ok(())
    }
}

impl Runner<'_> {
    pub(super) async fn ingest_all(
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
    ///
    /// The source's window index is saved every [`INDEX_EVERY`] windows and at the end, and
    /// the cursor is moved only after the index listing its windows is saved: a run that dies
    /// in between leaves the cursor behind, and the next run finds those windows complete and
    /// indexes them.
    pub(super) async fn catch_up(
        &mut self,
        source: &str,
        dates: &[NaiveDate],
        force: bool,
        record: &mut RunRecord,
    ) -> Result<bool> {
        let store = &*self.ctx.store;
        // Read once; this run is the cursor's only writer (it holds the lock).
        let cursor = publish::cursor(store, source)
            .await?
            .map(|c| c.last_complete);
        let mut landing = Landing {
            index: publish::WindowIndex::load(store, source).await?,
            cursor,
            saved: cursor,
        };
        let landed = self
            .land_windows(source, dates, force, record, &mut landing)
            .await;
        // Whatever happened, the windows committed so far are indexed, then the cursor moves.
        landing.flush(store, source, self.run_id).await?;
        landed
    }

    async fn land_windows(
        &self,
        source: &str,
        dates: &[NaiveDate],
        force: bool,
        record: &mut RunRecord,
        landing: &mut Landing,
    ) -> Result<bool> {
        let store = &*self.ctx.store;
        let spec = &self.ctx.pipeline.sources[source];
        let dedup = spec.dedup_content;
        let windows = self.windows(source, dates, landing.cursor);
        self.opts.emit(Event::Catching {
            source: source.to_owned(),
            windows: windows.len(),
        });
        for (i, window) in windows.into_iter().enumerate() {
            if self.opts.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            if i > 0 && i % INDEX_EVERY == 0 {
                landing.flush(store, source, self.run_id).await?;
            }
            // The newest complete window before this one with content, to compare bytes with.
            let previous = if dedup {
                self.previous_content(source, &window, landing.cursor)
                    .await?
            } else {
                None
            };
            let rec = self
                .ingest(
                    source,
                    &window,
                    force,
                    previous.as_ref(),
                    &mut landing.index,
                )
                .await?;
            let failed = rec.status == Status::Failed;
            self.emit_ingested(&rec);
            record.ingest.push(rec);
            if failed {
                return Ok(false);
            }
            // The cursor only moves over contiguous windows: a window fetched out of order
            // (`--date` far ahead) must not make catch-up skip the gap.
            let cursor = &mut landing.cursor;
            let next = match *cursor {
                Some(c) => Some(spec.window_of(c).end),
                None => spec.start.map(|s| spec.window_of(s).start),
            };
            if next.is_none_or(|n| window.start <= n) && cursor.is_none_or(|c| c < window.start) {
                *cursor = Some(window.start);
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

    async fn ingest(
        &self,
        source: &str,
        window: &Window,
        force: bool,
        previous: Option<&publish::Manifest>,
        index: &mut publish::WindowIndex,
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
        // A failed fetch is tried again (`retries`), after a doubling, jittered wait; a failed
        // landing leaves nothing of the window, so each attempt starts clean.
        let spec = &self.ctx.pipeline.sources[source];
        let mut waits = crate::retry::Backoff::retries(
            spec.retries + 1,
            spec.retry_delay,
            spec.retry_delay.saturating_mul(32),
        )
        .delays();
        let mut attempt_errors = Vec::new();
        let landed = loop {
            let landed = tokio::select! {
                r = publish::land_with(&*self.ctx.store, src.as_ref(), window, self.run_id, &land, index) => r,
                () = self.opts.cancel.cancelled() => return Err(Error::Cancelled),
            };
            let Err(e) = &landed else { break landed };
            // Only the environment may recover: usage, data and bugs fail the same way again.
            if e.kind() != ErrorKind::Transient {
                break landed;
            }
            let Some(wait) = waits.next() else {
                break landed;
            };
            attempt_errors.push(self.redactor.redact(&error_chain(e)));
            self.opts.emit(Event::Warning(format!(
                "ingest {source} {}: attempt {} failed; retrying in {wait:.0?}",
                window.date(),
                attempt_errors.len()
            )));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.opts.cancel.cancelled() => return Err(Error::Cancelled),
            }
        };
        if let Ok(Landed::Fetched(m)) = &landed {
            self.committed(&m.objects);
        }
        let mut rec = match landed {
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
        };
        rec.attempts = attempt_errors.len() as u32 + 1;
        rec.attempt_errors = attempt_errors;
        Ok(rec)
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
        attempts: 1,
        attempt_errors: Vec::new(),
    }
}
