//! `[schedule]`: the ticks of a cron expression in a time zone, each tick's logical date, and
//! which ticks are due given the runs the ledger holds.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use croner::Cron;
use serde::{Serialize, Serializer};

/// A checked `[schedule]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    /// The cron expression as written.
    pub cron: String,
    /// It, parsed.
    #[serde(skip)]
    pub parsed: Cron,
    /// The time zone ticks are in; a tick's logical date is its date there.
    #[serde(serialize_with = "tz_name")]
    pub timezone: Tz,
    /// How far back missed ticks are run; `None`: only the latest.
    #[serde(with = "crate::config::opt_secs")]
    pub catchup: Option<std::time::Duration>,
}

fn tz_name<S: Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

/// Parse a standard 5-field cron expression (or `@hourly`, `@daily`, `@weekly`, `@monthly`).
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    if expr.split_whitespace().count() > 5 && !expr.trim_start().starts_with('@') {
        return Err(format!(
            "{expr:?}: 5 fields (minute hour day-of-month month day-of-week), or @hourly, @daily, @weekly"
        ));
    }
    expr.parse::<Cron>()
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}"))
}

/// One tick: when, in the schedule's zone, and its logical date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tick {
    /// The instant.
    pub at: DateTime<Utc>,
    /// Its date in the schedule's time zone: the `--date` of its run.
    pub date: NaiveDate,
}

impl Schedule {
    fn tick(&self, at: DateTime<Tz>) -> Tick {
        Tick {
            at: at.with_timezone(&Utc),
            date: at.date_naive(),
        }
    }

    /// The next `n` ticks after `now`.
    pub fn next(&self, now: DateTime<Utc>, n: usize) -> Vec<Tick> {
        self.parsed
            .iter_after(now.with_timezone(&self.timezone))
            .take(n)
            .map(|t| self.tick(t))
            .collect()
    }

    /// The ticks at or before `now` that a scheduler runs: within `catchup` of `now`, or
    /// (without catch-up) only the latest; one per logical date, oldest first.
    pub fn recent(&self, now: DateTime<Utc>) -> Vec<Tick> {
        let local = now.with_timezone(&self.timezone);
        let Ok(latest) = self.parsed.find_previous_occurrence(&local, true) else {
            return Vec::new();
        };
        let mut ticks = vec![self.tick(latest)];
        if let Some(window) = self.catchup {
            let since = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
            let mut at = latest;
            while let Ok(prev) = self.parsed.find_previous_occurrence(&at, false) {
                if prev.with_timezone(&Utc) <= since {
                    break;
                }
                ticks.push(self.tick(prev));
                at = prev;
            }
        }
        ticks.reverse();
        // One run per logical date: the latest tick of a date stands for it.
        let mut out: Vec<Tick> = Vec::new();
        for t in ticks {
            match out.last_mut() {
                Some(last) if last.date == t.date => *last = t,
                _ => out.push(t),
            }
        }
        out
    }

    /// The ticks of [`recent`](Self::recent) whose date has no successful run (`succeeded`:
    /// the dates the ledger has a succeeded run for), oldest first.
    pub fn due(
        &self,
        now: DateTime<Utc>,
        succeeded: &std::collections::BTreeSet<NaiveDate>,
    ) -> Vec<Tick> {
        self.recent(now)
            .into_iter()
            .filter(|t| !succeeded.contains(&t.date))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn schedule(cron: &str, tz: Tz, catchup: Option<u64>) -> Schedule {
        Schedule {
            cron: cron.into(),
            parsed: parse_cron(cron).unwrap(),
            timezone: tz,
            catchup: catchup.map(|d| std::time::Duration::from_secs(d * 86_400)),
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn daily_ticks_catch_up_within_the_window_and_skip_succeeded_dates() {
        let s = schedule("0 7 * * *", chrono_tz::UTC, Some(3));
        let now = utc("2024-05-10T06:00:00Z");
        let dates: Vec<NaiveDate> = s.recent(now).iter().map(|t| t.date).collect();
        assert_eq!(dates, [d("2024-05-07"), d("2024-05-08"), d("2024-05-09")]);
        let done: BTreeSet<NaiveDate> = [d("2024-05-08")].into();
        let due: Vec<NaiveDate> = s.due(now, &done).iter().map(|t| t.date).collect();
        assert_eq!(due, [d("2024-05-07"), d("2024-05-09")]);
        // Without catch-up, only the latest tick.
        let off = schedule("0 7 * * *", chrono_tz::UTC, None);
        let due: Vec<NaiveDate> = off
            .due(now, &BTreeSet::new())
            .iter()
            .map(|t| t.date)
            .collect();
        assert_eq!(due, [d("2024-05-09")]);
        assert_eq!(off.next(now, 2)[0].at, utc("2024-05-10T07:00:00Z"));
    }

    #[test]
    fn the_logical_date_is_the_ticks_date_in_its_time_zone_and_hourly_ticks_run_once_a_date() {
        // 00:30 in Berlin is still the previous day in UTC.
        let s = schedule("30 0 * * *", chrono_tz::Europe::Berlin, None);
        let t = &s.recent(utc("2024-05-09T23:00:00Z"))[0];
        assert_eq!(
            (t.at, t.date),
            (utc("2024-05-09T22:30:00Z"), d("2024-05-10"))
        );
        let hourly = schedule("@hourly", chrono_tz::UTC, Some(1));
        let dates: Vec<NaiveDate> = hourly
            .recent(utc("2024-05-10T05:30:00Z"))
            .iter()
            .map(|t| t.date)
            .collect();
        assert_eq!(dates, [d("2024-05-09"), d("2024-05-10")]);
    }

    #[test]
    fn bad_expressions_are_refused_in_words() {
        assert!(parse_cron("0 7 * *").is_err());
        assert!(parse_cron("61 7 * * *").is_err());
        assert!(parse_cron("0 0 7 * * *").unwrap_err().contains("5 fields"));
        assert!(parse_cron("@daily").is_ok());
    }
}
