//! How old each dataset is against the `freshness` its source or step allows: what
//! `lake status` lists, `lake serve` marks and `lake schedule` sends a notice about.
//!
//! A dataset's age runs from its last commit: the newest committed window of a source (a
//! window whose bytes repeated the previous one's counts: the source was read), the manifest
//! of a step's output. A dataset with a limit that was never committed is stale.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Result;
use crate::config::Pipeline;
use crate::publish::{WindowIndex, read_manifest};
use crate::zone::DynZoneStore;

/// One dataset's age against its limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Freshness {
    /// `raw/<source>`, `trusted/<dataset>` or `refined/<dataset>`.
    pub dataset: String,
    /// What writes it: `source <name>` or `step <name>`.
    pub writer: String,
    /// When it was last committed (none: never).
    pub last: Option<DateTime<Utc>>,
    /// Seconds since then.
    pub age_secs: Option<u64>,
    /// The `freshness` limit, in seconds (none: no limit).
    pub limit_secs: Option<u64>,
    /// `ok`, `stale` or `unchecked` (no limit).
    pub status: State,
}

/// Whether a dataset is within its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Within its limit.
    Ok,
    /// Older than its limit, or never committed.
    Stale,
    /// No `freshness` set.
    Unchecked,
}

impl Freshness {
    fn new(
        dataset: String,
        writer: String,
        last: Option<DateTime<Utc>>,
        limit: Option<Duration>,
        now: DateTime<Utc>,
    ) -> Self {
        let age = last.map(|t| (now - t).to_std().unwrap_or_default());
        let status = match (limit, age) {
            (None, _) => State::Unchecked,
            (Some(limit), Some(age)) if age <= limit => State::Ok,
            (Some(_), _) => State::Stale,
        };
        Self {
            dataset,
            writer,
            last,
            age_secs: age.map(|a| a.as_secs()),
            limit_secs: limit.map(|l| l.as_secs()),
            status,
        }
    }

    /// Whether the dataset is older than its limit (or was never committed).
    pub fn is_stale(&self) -> bool {
        self.status == State::Stale
    }

    /// Its age as notices and pages say it: `27h00m old`, or `never committed`.
    pub fn age_text(&self) -> String {
        self.age_secs.map_or("never committed".into(), |s| {
            format!("{} old", crate::human::age(Duration::from_secs(s)))
        })
    }

    /// Its limit as lake.toml writes it (`26h`), when it has one.
    pub fn limit_text(&self) -> Option<String> {
        self.limit_secs
            .map(|s| crate::human::duration(Duration::from_secs(s)))
    }
}

/// Every source's and step output's age at `now`, sources first, each in name order.
pub async fn check(
    pipeline: &Pipeline,
    store: &DynZoneStore,
    now: DateTime<Utc>,
) -> Result<Vec<Freshness>> {
    let mut out = Vec::new();
    for (name, source) in &pipeline.sources {
        let index = WindowIndex::load(store, name).await?;
        let last = index.windows.iter().map(|m| m.committed).max();
        out.push(Freshness::new(
            format!("raw/{name}"),
            format!("source {name}"),
            last,
            source.freshness,
            now,
        ));
    }
    for (name, step) in &pipeline.steps {
        let Some(output) = &step.output else {
            continue;
        };
        let last = read_manifest(store, &output.prefix())
            .await?
            .map(|m| m.committed);
        out.push(Freshness::new(
            output.to_string(),
            format!("step {name}"),
            last,
            step.freshness,
            now,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dataset_is_stale_past_its_limit_or_when_never_committed() {
        let now = Utc::now();
        let day = Duration::from_secs(86_400);
        let f = |last: Option<i64>, limit| {
            Freshness::new(
                "trusted/x".into(),
                "step x".into(),
                last.map(|h| now - chrono::Duration::hours(h)),
                limit,
                now,
            )
            .status
        };
        assert_eq!(f(Some(23), Some(day)), State::Ok);
        assert_eq!(f(Some(25), Some(day)), State::Stale);
        assert_eq!(f(None, Some(day)), State::Stale);
        assert_eq!(f(Some(1000), None), State::Unchecked);
        assert_eq!(f(None, None), State::Unchecked);
    }
}
