//! [`Source`]: where raw data comes from.

use std::fmt;

use async_trait::async_trait;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::zone::ByteStream;

/// The logical date range a run covers: `start` inclusive to `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// First day (the run's logical date).
    pub start: NaiveDate,
    /// Day after the last.
    pub end: NaiveDate,
}

impl Window {
    /// The one-day window of `date`.
    pub fn day(date: NaiveDate) -> Self {
        Self {
            start: date,
            end: date.succ_opt().expect("date in range"),
        }
    }

    /// The logical date: the window's first day, used for `ingest_date=`.
    pub fn date(&self) -> NaiveDate {
        self.start
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.end == self.start.succ_opt().unwrap_or(self.end) {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}..{}", self.start, self.end)
        }
    }
}

/// An object a source offers for a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceObject {
    /// Name inside the window's folder (may contain `/`); becomes the raw object's key suffix.
    pub name: String,
    /// Size in bytes, if known before reading.
    pub size: Option<u64>,
    /// Content type, if known.
    pub content_type: Option<String>,
    /// Where it comes from (a path or URL), for the ledger; never holds credentials.
    pub origin: String,
}

/// Where raw data comes from: files, an HTTP API, Kaggle.
///
/// # Contract
///
/// - [`objects`](Self::objects) lists what the source offers for a window, in a stable order,
///   without reading the objects. An empty list is valid (nothing to fetch).
/// - [`open`](Self::open) streams one listed object's bytes exactly as the origin serves them.
///   It never holds a whole object in memory. A stream that ends early or yields an error means
///   the object is incomplete; the caller never publishes it.
/// - Both are safe to retry: a source has no side effects on its origin.
/// - Errors are [`Error::Source`](crate::Error::Source) naming the source, and never contain
///   credentials.
#[async_trait]
pub trait Source: Send + Sync + fmt::Debug + 'static {
    /// The source's name (its `[sources.<name>]` table).
    fn name(&self) -> &str;

    /// What the source offers for `window`.
    async fn objects(&self, window: &Window) -> Result<Vec<SourceObject>>;

    /// Stream one object returned by [`objects`](Self::objects).
    async fn open(&self, window: &Window, object: &SourceObject) -> Result<ByteStream>;
}
