//! [`Source`]: where raw data comes from.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::ValueError;
use crate::backend::{AsAny, BackendEnv};
use crate::config::{ConfigCx, SourceSpec};
use crate::zone::ByteStream;

/// A kind of source: `kind = "<name>"` in a `[sources.<name>]`, with keys of its own.
///
/// Core reads the keys every source has ([`SHARED`]: its windows, start, dedup, retries and
/// archive extraction); the kind reads the rest with [`ConfigCx::own`], reporting each problem
/// with its line through the context, and returns the checked config only when nothing was
/// wrong.
pub trait SourceKind: Send + Sync + fmt::Debug + 'static {
    /// The name users write in `kind = "…"`.
    fn name(&self) -> &'static str;

    /// Whether fetched archives are unpacked unless `extract = false` (a dataset that always
    /// comes zipped).
    fn extracts_by_default(&self) -> bool {
        false
    }

    /// Check the source's own keys; the checked config when they are right.
    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn SourceConfig>>;
}

/// The keys of a `[sources.<name>]` that core reads (a kind's [`ConfigCx::own`] leaves them
/// out).
pub const SHARED: &[&str] = &[
    "kind",
    "window",
    "start",
    "dedup",
    "retries",
    "retry_delay",
    "freshness",
    "extract",
    "members",
    "max_extracted_bytes",
    "max_compression_ratio",
    "max_members",
];

/// A checked source configuration (its kind's keys): what a run fetches through and what
/// `lake plan` shows.
#[async_trait]
pub trait SourceConfig: AsAny + Send + Sync + fmt::Debug + 'static {
    /// What `lake plan` prints after the source's name: its kind and line, what it fetches
    /// and where it lands (no secret in it).
    fn describe(&self, spec: &SourceSpec) -> String;

    /// The checked keys as JSON for `lake plan --json` (no secret in it).
    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// The source a run fetches from.
    async fn open(&self, spec: &SourceSpec, env: &BackendEnv) -> Result<Arc<dyn Source>>;

    /// IAM statements the source needs (added by `lake iam-policy`).
    fn iam_statements(&self, _spec: &SourceSpec) -> Vec<serde_json::Value> {
        Vec::new()
    }

    /// `lake doctor`'s checks of this source (the default checks nothing: no request is made
    /// before a run).
    async fn doctor(&self, _spec: &SourceSpec, _env: &BackendEnv) -> Vec<crate::doctor::Check> {
        Vec::new()
    }
}

/// A checked source config, as the pipeline holds it (serialised as its kind's keys).
pub type SourceRef = crate::kinds::Checked<dyn SourceConfig>;

impl Serialize for SourceRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.json().serialize(s)
    }
}

/// The logical date range a run covers: `start` inclusive to `end` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    /// First day (the run's logical date).
    pub start: NaiveDate,
    /// Day after the last.
    pub end: NaiveDate,
}

impl Window {
    /// The value of a window placeholder of a [`Template`](crate::config::Template): `{start}`
    /// and `{date}` the first day, `{end}` the last day (inclusive, as APIs take `end_date`).
    pub fn value(&self, name: &str) -> Option<crate::config::Value> {
        match name {
            "start" | "date" => Some(crate::config::Value::Date(self.start)),
            "end" => self.end.pred_opt().map(crate::config::Value::Date),
            _ => None,
        }
    }

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

/// How long a source's windows are: `1d`, `7d`, `1mo`, `3mo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowSize {
    /// A number of days.
    Days(u32),
    /// A number of calendar months.
    Months(u32),
}

impl Default for WindowSize {
    fn default() -> Self {
        Self::Days(1)
    }
}

impl fmt::Display for WindowSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Days(n) => write!(f, "{n}d"),
            Self::Months(n) => write!(f, "{n}mo"),
        }
    }
}

impl Serialize for WindowSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl WindowSize {
    /// Parse `1d`, `7d`, `1mo`, `3mo`.
    pub fn parse(raw: &str) -> std::result::Result<Self, ValueError> {
        let err = || {
            format!("{raw:?} is not a window: use a number and d or mo (\"1d\", \"7d\", \"1mo\")")
        };
        let at = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
        let n: u32 = raw[..at].parse().map_err(|_| err())?;
        if n == 0 {
            return Err(format!("{raw:?}: a window is at least one day").into());
        }
        match &raw[at..] {
            "d" => Ok(Self::Days(n)),
            "mo" => Ok(Self::Months(n)),
            _ => Err(err().into()),
        }
    }

    /// The window holding `date`. Windows are laid end to end from `anchor` (a source's
    /// `start`); without one, day windows start on Monday 1970-01-05 (so `7d` windows are ISO
    /// weeks) and month windows on January 1970.
    pub fn window_of(self, date: NaiveDate, anchor: Option<NaiveDate>) -> Window {
        match self {
            Self::Days(n) => {
                let anchor = anchor.unwrap_or(NaiveDate::from_ymd_opt(1970, 1, 5).expect("a date"));
                let k = (date - anchor).num_days().div_euclid(i64::from(n));
                let start = anchor + chrono::Duration::days(k * i64::from(n));
                Window {
                    start,
                    end: start + chrono::Duration::days(i64::from(n)),
                }
            }
            Self::Months(n) => {
                let anchor = anchor.unwrap_or(NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date"));
                let idx = |d: NaiveDate| i64::from(d.year()) * 12 + i64::from(d.month0());
                let k = (idx(date) - idx(anchor)).div_euclid(i64::from(n));
                let month = |i: i64| {
                    NaiveDate::from_ymd_opt(i.div_euclid(12) as i32, i.rem_euclid(12) as u32 + 1, 1)
                        .expect("a month in range")
                };
                let first = idx(anchor) + k * i64::from(n);
                Window {
                    start: month(first),
                    end: month(first + i64::from(n)),
                }
            }
        }
    }

    /// The windows from the one holding `from` to the one holding `until`, oldest first.
    pub fn windows(
        self,
        from: NaiveDate,
        until: NaiveDate,
        anchor: Option<NaiveDate>,
    ) -> Vec<Window> {
        let mut out = Vec::new();
        let mut w = self.window_of(from, anchor);
        while w.start <= until {
            out.push(w);
            w = self.window_of(w.end, anchor);
        }
        out
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

    /// Stream one object returned by [`objects`](Self::objects). Several objects of a window
    /// may be open at once.
    async fn open(&self, window: &Window, object: &SourceObject) -> Result<ByteStream>;

    /// The local file holding `object`'s bytes as they are, when there is one (a file source):
    /// a store on the same machine then lands it with a kernel copy
    /// ([`ZoneStore::put_file`](crate::ZoneStore::put_file)) instead of streaming it.
    fn local_file(&self, _window: &Window, _object: &SourceObject) -> Option<std::path::PathBuf> {
        None
    }

    /// How many objects of a window are read at once (all within the landing's memory
    /// budget). The default, 32, suits a server that should not see a crowd; an object store
    /// serves many more, and a window of small objects waits on latency, not bandwidth.
    fn at_once(&self) -> usize {
        32
    }

    /// Fetch `object` straight into the local file `path` (complete or not at all; its folder
    /// exists) and return the size and SHA-256 of what it wrote there, when the source does
    /// better than one stream of [`open`](Self::open): an object store's ranged parts, several
    /// at once, each written at its offset and hashed as the file grows
    /// ([`FileWriter::create_hashed`](crate::zone::FileWriter::create_hashed)). `Ok(None)`
    /// (the default): it does not, and the caller streams `open`.
    async fn download(
        &self,
        _window: &Window,
        _object: &SourceObject,
        _path: &std::path::Path,
    ) -> Result<Option<crate::zone::Digested>> {
        Ok(None)
    }

    /// The caller is done with `window` (landed or failed): drop what
    /// [`objects`](Self::objects) prepared for it, such as unpacked archives.
    async fn finish(&self, _window: &Window) {}
}

/// An archive format lake unpacks (`extract = true`), known by the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `.zip`.
    Zip,
    /// `.tar.gz` or `.tgz`.
    TarGz,
    /// `.gz` (one member: the name without `.gz`).
    Gz,
}

impl ArchiveKind {
    /// The archive kind of a file name or key, if it is one.
    pub fn of(name: &str) -> Option<Self> {
        let name = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
        if name.ends_with(".zip") {
            Some(Self::Zip)
        } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            Some(Self::TarGz)
        } else if name.ends_with(".gz") && name.len() > 3 {
            Some(Self::Gz)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn windows_are_laid_from_their_anchor() {
        let week = WindowSize::parse("7d").unwrap();
        // ISO weeks by default: 2024-01-03 is a Wednesday.
        let w = week.window_of(d("2024-01-03"), None);
        assert_eq!((w.start, w.end), (d("2024-01-01"), d("2024-01-08")));
        let w = week.window_of(d("2024-01-03"), Some(d("2023-12-30")));
        assert_eq!((w.start, w.end), (d("2023-12-30"), d("2024-01-06")));
        let month = WindowSize::parse("1mo").unwrap();
        let w = month.window_of(d("2024-02-29"), None);
        assert_eq!((w.start, w.end), (d("2024-02-01"), d("2024-03-01")));
        let q = WindowSize::parse("3mo").unwrap();
        let w = q.window_of(d("2024-05-10"), None);
        assert_eq!((w.start, w.end), (d("2024-04-01"), d("2024-07-01")));
        let days: Vec<_> = WindowSize::Days(1)
            .windows(d("2024-01-30"), d("2024-02-02"), None)
            .iter()
            .map(|w| w.start.to_string())
            .collect();
        assert_eq!(
            days,
            ["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02"]
        );
        let months: Vec<_> = month
            .windows(d("2023-12-15"), d("2024-02-01"), None)
            .iter()
            .map(|w| w.start.to_string())
            .collect();
        assert_eq!(months, ["2023-12-01", "2024-01-01", "2024-02-01"]);
        assert!(WindowSize::parse("0d").is_err() && WindowSize::parse("1w").is_err());
    }
}
