//! `[schedule]`: the ticks of a cron expression in a time zone, each tick's logical date, and
//! which ticks are due given the runs the ledger holds.

use crate::ValueError;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
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

/// The environment variable that lets `[schedule] cron` have a sixth, leading seconds field
/// (`*/2 * * * * *`): for tests of the scheduler, which cannot wait minutes between ticks.
pub const SECONDS_VAR: &str = "LAKE_SCHEDULE_SECONDS";

/// Parse a standard 5-field cron expression (or `@hourly`, `@daily`, `@weekly`, `@monthly`);
/// 6 fields with seconds first when [`SECONDS_VAR`] is `1`.
pub fn parse_cron(expr: &str) -> Result<Cron, ValueError> {
    let seconds = std::env::var(SECONDS_VAR).is_ok_and(|v| v == "1");
    let fields = expr.split_whitespace().count();
    if fields > 5 && !(seconds && fields == 6) && !expr.trim_start().starts_with('@') {
        return Err(format!(
            "{expr:?}: 5 fields (minute hour day-of-month month day-of-week), or @hourly, @daily, @weekly"
        ).into());
    }
    expr.parse::<Cron>()
        .map_err(|e| format!("{expr:?} is not a cron expression: {e}").into())
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

    /// The ticks at or before `now` that a scheduler looks at: the latest tick of each
    /// logical date within `catchup` of `now` (without catch-up, only the latest tick), oldest
    /// first. One per date: every tick of a date runs the same `lake run --date D`.
    pub fn recent(&self, now: DateTime<Utc>) -> Vec<Tick> {
        let local = now.with_timezone(&self.timezone);
        let Ok(latest) = self.parsed.find_previous_occurrence(&local, true) else {
            return Vec::new();
        };
        let mut ticks = vec![self.tick(latest)];
        if let Some(window) = self.catchup {
            let since = now - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
            let mut at = latest;
            // From the start of the tick's date (in the zone) back: the previous date's last
            // tick. A date whose midnight does not exist (a DST jump at 00:00) starts at its
            // first instant that does.
            loop {
                let date = at.date_naive();
                let midnight = (0..3)
                    .find_map(|h| {
                        self.timezone
                            .from_local_datetime(&date.and_hms_opt(h, 0, 0)?)
                            .earliest()
                    })
                    .unwrap_or(at);
                let Ok(prev) = self.parsed.find_previous_occurrence(&midnight, false) else {
                    break;
                };
                if prev.with_timezone(&Utc) <= since || prev >= at {
                    break;
                }
                ticks.push(self.tick(prev));
                at = prev;
            }
        }
        ticks.reverse();
        ticks
    }

    /// The ticks of [`recent`](Self::recent) a scheduler runs now, oldest first: those whose
    /// date has no successful run (`succeeded`), and those that came after the last run that
    /// succeeded started (`last_success`; a tick that came during a run waits for it, and is
    /// run once however many came). A run at each tick, as `lake run --date D` would be, and
    /// never two for one date at once.
    pub fn due(
        &self,
        now: DateTime<Utc>,
        last_success: Option<DateTime<Utc>>,
        succeeded: &std::collections::BTreeSet<NaiveDate>,
    ) -> Vec<Tick> {
        self.recent(now)
            .into_iter()
            .filter(|t| !succeeded.contains(&t.date) || last_success.is_none_or(|l| t.at > l))
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
        let due: Vec<NaiveDate> = s
            .due(now, Some(utc("2024-05-08T07:00:05Z")), &done)
            .iter()
            .map(|t| t.date)
            .collect();
        assert_eq!(due, [d("2024-05-07"), d("2024-05-09")]);
        // Without catch-up, only the latest tick.
        let off = schedule("0 7 * * *", chrono_tz::UTC, None);
        let due: Vec<NaiveDate> = off
            .due(now, None, &BTreeSet::new())
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

    fn dates(ticks: &[Tick]) -> Vec<String> {
        ticks.iter().map(|t| t.date.to_string()).collect()
    }

    /// Daylight-saving changes: a date whose tick time does not exist (spring forward) still
    /// gets one run, at the next instant that exists; a tick time that happens twice (fall
    /// back) gives its date one run; logical dates are the zone's.
    #[test]
    fn daylight_saving_changes_give_every_date_one_tick() {
        let cases = [
            // cron, zone, now (UTC), catch-up days, expected dates, expected instants (UTC)
            (
                "30 2 * * *",
                chrono_tz::Europe::Berlin,
                "2024-04-01T12:00:00Z",
                3,
                vec!["2024-03-30", "2024-03-31", "2024-04-01"],
                vec![
                    "2024-03-30T01:30:00Z",
                    // 02:30 does not exist on the 31st: the run is at 03:00 CEST, when the
                    // clocks jump past it.
                    "2024-03-31T01:00:00Z",
                    "2024-04-01T00:30:00Z",
                ],
            ),
            (
                "30 2 * * *",
                chrono_tz::Europe::Berlin,
                "2024-10-28T12:00:00Z",
                2,
                vec!["2024-10-27", "2024-10-28"],
                vec![
                    // 02:30 happens twice on the 27th: one run, at the first.
                    "2024-10-27T00:30:00Z",
                    "2024-10-28T01:30:00Z",
                ],
            ),
            (
                "0 7 * * *",
                chrono_tz::America::New_York,
                "2024-03-11T12:00:00Z",
                3,
                vec!["2024-03-09", "2024-03-10", "2024-03-11"],
                vec![
                    "2024-03-09T12:00:00Z",
                    "2024-03-10T11:00:00Z",
                    "2024-03-11T11:00:00Z",
                ],
            ),
        ];
        for (cron, tz, now, days, want_dates, want_at) in cases {
            let s = schedule(cron, tz, Some(days));
            let ticks = s.recent(utc(now));
            assert_eq!(dates(&ticks), want_dates, "{cron} in {tz}");
            let at: Vec<DateTime<Utc>> = ticks.iter().map(|t| t.at).collect();
            let want: Vec<DateTime<Utc>> = want_at.iter().map(|s| utc(s)).collect();
            assert_eq!(at, want, "{cron} in {tz}");
        }
    }

    /// Month ends, catch-up limits and `catchup = "off"`.
    #[test]
    fn month_ends_and_catch_up_limits() {
        // The 31st only in months that have one; the 30th of February never comes.
        let s = schedule("0 6 31 * *", chrono_tz::UTC, Some(120));
        assert_eq!(
            dates(&s.recent(utc("2024-06-15T00:00:00Z"))),
            ["2024-03-31", "2024-05-31"]
        );
        let s = schedule("0 6 1 * *", chrono_tz::UTC, Some(40));
        assert_eq!(
            dates(&s.recent(utc("2024-03-01T06:00:00Z"))),
            ["2024-02-01", "2024-03-01"],
            "a tick at now is included"
        );
        // A leap day.
        let s = schedule("0 0 29 2 *", chrono_tz::UTC, Some(400));
        assert_eq!(
            dates(&s.recent(utc("2025-01-01T00:00:00Z"))),
            ["2024-02-29"]
        );
        // Catch-up reaches back exactly its length, no further.
        let s = schedule("0 7 * * *", chrono_tz::UTC, Some(2));
        assert_eq!(
            dates(&s.recent(utc("2024-05-10T07:00:00Z"))),
            ["2024-05-09", "2024-05-10"]
        );
        assert_eq!(
            dates(&s.recent(utc("2024-05-10T07:00:01Z"))),
            ["2024-05-09", "2024-05-10"]
        );
        // Off: only the latest, however long the downtime.
        let s = schedule("0 7 * * *", chrono_tz::UTC, None);
        assert_eq!(
            dates(&s.recent(utc("2024-05-10T06:59:59Z"))),
            ["2024-05-09"]
        );
    }

    /// Every tick runs: a tick after the last successful run is due even when its date has
    /// succeeded; ticks that came during a run are one run.
    #[test]
    fn ticks_after_the_last_success_are_due_once_per_date() {
        let s = schedule("*/5 * * * *", chrono_tz::UTC, Some(1));
        let now = utc("2024-05-10T07:12:00Z");
        let done: BTreeSet<NaiveDate> = [d("2024-05-09"), d("2024-05-10")].into();
        // The 07:00 run succeeded, having started at 07:00:01; 07:05 and 07:10 came since.
        let due = s.due(now, Some(utc("2024-05-10T07:00:01Z")), &done);
        assert_eq!(
            due.iter().map(|t| t.at).collect::<Vec<_>>(),
            [utc("2024-05-10T07:10:00Z")]
        );
        // The run of 07:10 started: nothing is due until 07:15.
        assert!(
            s.due(now, Some(utc("2024-05-10T07:10:00Z")), &done)
                .is_empty()
        );
        // A date that never succeeded is due whatever ran since.
        let only_today: BTreeSet<NaiveDate> = [d("2024-05-10")].into();
        assert_eq!(
            dates(&s.due(now, Some(utc("2024-05-10T07:10:00Z")), &only_today)),
            ["2024-05-09"]
        );
    }

    #[test]
    fn bad_expressions_are_refused_in_words() {
        assert!(parse_cron("0 7 * *").is_err());
        assert!(parse_cron("61 7 * * *").is_err());
        assert!(parse_cron("0 0 7 * * *").unwrap_err().contains("5 fields"));
        assert!(parse_cron("@daily").is_ok());
    }
}
