//! kill -9 at random points of `run`, `run --force` and `ingest --force`, and reads while a
//! dataset is republished.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{
    Lake, Outcome, Root, Suite, folders_match_manifests, kill_after, loans_csv, loans_toml,
};

/// Rows of the file the kill experiments land.
const ROWS: usize = 20_000;
/// Rows the file gains when it changes (`ingest --force` trials).
const MORE: usize = 500;
const DAY0: &str = "2024-01-01";

/// What is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `lake run --date D` for a new date each trial (a window lands, then both steps).
    Run,
    /// `lake run --force` of a date already run (both steps republish).
    RunForce,
    /// `lake ingest --force` of a window whose file changed (a refetch under new keys, then
    /// the manifest switch).
    IngestForce,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Run => "kill -9 during `run`",
            Self::RunForce => "kill -9 during `run --force`",
            Self::IngestForce => "kill -9 during `ingest --force` of a changed file",
        }
    }
}

fn setup<'a>(s: &'a Suite, root: &Root, tag: &str) -> Result<(Lake<'a>, Duration), String> {
    let lake = Lake::new(&s.bin);
    lake.write("lake.toml", loans_toml(&root.url(tag), ""));
    lake.write("data/loans.csv", loans_csv(ROWS, 0));
    let t = Instant::now();
    lake.ok(&["run", "--date", DAY0])?;
    Ok((lake, t.elapsed()))
}

/// `s.kills` trials of `mode` on `root`: each kills the command at a random point of its
/// usual duration (or lets it end), runs `lake run` for the same date to recover, and checks
/// the lake: `lake fsck` clean (every object as its manifest says, nothing outside them, no
/// staging left), one window per date, row counts that agree from raw to refined, and on a
/// local root each dataset's folder exactly its manifest, hashed here.
pub fn kills(s: &Suite, root: &Root, mode: Mode) -> Outcome {
    let mut out = Outcome::new(mode.name(), root.name());
    fastrand::seed(s.seed ^ (mode as u64) << 8);
    let (lake, mut base) = match setup(s, root, "kills") {
        Ok(x) => x,
        Err(e) => {
            out.trials = 1;
            out.failures.push(format!("setup: {e}"));
            return out;
        }
    };
    // Kill points spread over the killed command's own duration, timed once unkilled.
    let timed = match mode {
        Mode::Run => Ok(()),
        Mode::RunForce => {
            let t = Instant::now();
            lake.ok(&["run", "--force", "--date", DAY0])
                .map(|_| base = t.elapsed())
        }
        Mode::IngestForce => {
            lake.write("data/loans.csv", loans_csv(ROWS + MORE, 99));
            let t = Instant::now();
            let r = lake.ok(&["ingest", "--force", "--date", DAY0]);
            base = t.elapsed();
            r.and_then(|_| lake.ok(&["run", "--date", DAY0]).map(|_| ()))
        }
    };
    if let Err(e) = timed {
        out.trials = 1;
        out.failures.push(format!("setup: {e}"));
        return out;
    }
    let mut killed = 0;
    for trial in 0..s.kills {
        out.trials += 1;
        let new_day = chrono_day(trial as u32 + 2);
        let (args, day, windows): (Vec<&str>, &str, i64) = match mode {
            Mode::Run => (vec!["run", "--date", &new_day], &new_day, trial as i64 + 2),
            Mode::RunForce => (vec!["run", "--force", "--date", DAY0], DAY0, 1),
            Mode::IngestForce => {
                let rows = if trial % 2 == 0 { ROWS + MORE } else { ROWS };
                lake.write("data/loans.csv", loans_csv(rows, trial));
                (vec!["ingest", "--force", "--date", DAY0], DAY0, 1)
            }
        };
        let delay = base.mul_f64(fastrand::f64() * 1.2);
        if kill_after(lake.cmd(&args), delay) {
            killed += 1;
        }
        let checked = lake
            .ok(&["run", "--date", day])
            .and_then(|_| consistent(&lake, root, day, windows, mode));
        if let Err(e) = checked {
            out.failures.push(format!(
                "trial {trial} (`lake {}` killed after {delay:?}): {e}",
                args.join(" ")
            ));
        }
    }
    out.notes.push(format!(
        "{killed} killed before the end (kill points spread over 0–1.2× its {:.2} s unkilled)",
        base.as_secs_f64()
    ));
    out
}

fn chrono_day(n: u32) -> String {
    // Dates from 2024-01-01 on, n = 1 being that day.
    let d = lake_core::chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("a date")
        + lake_core::chrono::Duration::days(i64::from(n) - 1);
    d.to_string()
}

fn consistent(
    lake: &Lake<'_>,
    root: &Root,
    day: &str,
    windows: i64,
    mode: Mode,
) -> Result<(), String> {
    lake.fsck()?;
    let w = lake.number("SELECT count(DISTINCT ingest_date) FROM raw.loans")?;
    if w != windows {
        return Err(format!("{w} raw windows, expected {windows}"));
    }
    let landed = lake.number(&format!(
        "SELECT count(*) FROM raw.loans WHERE ingest_date = DATE '{day}'"
    ))?;
    let expected: &[i64] = match mode {
        Mode::IngestForce => &[ROWS as i64, (ROWS + MORE) as i64],
        _ => &[ROWS as i64],
    };
    if !expected.contains(&landed) {
        return Err(format!(
            "raw window {day} has {landed} rows, expected one of {expected:?}"
        ));
    }
    let trusted = lake.number("SELECT count(*) FROM trusted.loans")?;
    if trusted != landed {
        return Err(format!(
            "trusted has {trusted} rows, its raw window {landed}"
        ));
    }
    let refined = lake.number("SELECT sum(n) FROM refined.summary")?;
    if refined != trusted {
        return Err(format!(
            "refined counts {refined} rows, trusted has {trusted}"
        ));
    }
    if *root == Root::Local {
        folders_match_manifests(
            &lake.path().join("lake"),
            &[
                &format!("raw/loans/ingest_date={day}"),
                "trusted/loans",
                "refined/summary",
            ],
        )?;
    }
    Ok(())
}

/// `s.reads` queries of a dataset while `run --force` republishes it again and again: each
/// must answer, with the right count.
pub fn readers(s: &Suite, root: &Root, retain: Option<&str>) -> Outcome {
    let what = match retain {
        Some(r) => format!("reads during `run --force` republishes (retain_replaced = \"{r}\")"),
        None => "reads during `run --force` republishes (default retain_replaced)".to_owned(),
    };
    let mut out = Outcome::new(what, root.name());
    let lake = Lake::new(&s.bin);
    let extra = retain.map_or(String::new(), |r| format!("retain_replaced = \"{r}\"\n"));
    lake.write("lake.toml", loans_toml(&root.url("readers"), &extra));
    lake.write("data/loans.csv", loans_csv(ROWS, 0));
    if let Err(e) = lake.ok(&["run", "--date", DAY0]) {
        out.trials = 1;
        out.failures.push(format!("setup: {e}"));
        return out;
    }
    let done = AtomicBool::new(false);
    let mut republished = 0;
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut n = 0;
            let mut errors = Vec::new();
            while !done.load(Ordering::Relaxed) {
                match lake.ok(&["run", "--force", "--date", DAY0]) {
                    Ok(_) => n += 1,
                    Err(e) => errors.push(format!("republish: {e}")),
                }
            }
            (n, errors)
        });
        for i in 0..s.reads {
            out.trials += 1;
            match lake.number("SELECT count(*) FROM trusted.loans") {
                Ok(n) if n == ROWS as i64 => {}
                Ok(n) => out
                    .failures
                    .push(format!("read {i}: {n} rows, expected {ROWS}")),
                Err(e) => out.failures.push(format!("read {i}: {e}")),
            }
        }
        done.store(true, Ordering::Relaxed);
        let (n, errors) = writer.join().expect("the writer");
        republished = n;
        out.failures.extend(errors);
    });
    out.notes
        .push(format!("{republished} republishes meanwhile"));
    out
}
