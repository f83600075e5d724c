//! `lake schedule` in the foreground, end to end through the binary, on a seconds-level
//! schedule (`LAKE_SCHEDULE_SECONDS=1` lets `cron` have a leading seconds field): every tick
//! runs once, a tick that comes during a slow run waits for it and is run once, and a
//! restarted scheduler runs what it missed at once, without waiting for the next tick.
//!
//! The runs are read from the ledger (`lake runs --json`), with their start and end times.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Ticks every 4 seconds; a command step that sleeps 9 s when the file `slow` exists (and
/// removes it), else returns at once.
fn pipeline(dir: &Path) {
    let slow = dir.join("slow");
    std::fs::write(
        dir.join("lake.toml"),
        format!(
            r#"[lake]
name = "ticks"

[steps.work]
kind = "command"
command = ["sh", "-c", "if [ -f '{slow}' ]; then rm '{slow}'; sleep 9; fi"]

[schedule]
cron = "*/4 * * * * *"
timezone = "UTC"
catchup = "1m"
"#,
            slow = slow.display()
        ),
    )
    .unwrap();
}

const TICK: f64 = 4.0;

fn scheduler(dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("schedule.log")).unwrap();
    std::process::Command::cargo_bin("lake")
        .unwrap()
        .current_dir(dir)
        .env("LAKE_SCHEDULE_SECONDS", "1")
        .env_remove("RUST_LOG")
        .arg("schedule")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[derive(Debug)]
struct Run {
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
    status: String,
}

/// The finished runs of the ledger, oldest first.
fn runs(dir: &Path) -> Vec<Run> {
    let out = std::process::Command::cargo_bin("lake")
        .unwrap()
        .current_dir(dir)
        .env("LAKE_SCHEDULE_SECONDS", "1")
        .args(["runs", "--json"])
        .output()
        .unwrap();
    let list: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let mut runs: Vec<Run> = list
        .iter()
        .filter(|r| !r["ended"].is_null())
        .map(|r| Run {
            started: r["started"].as_str().unwrap().parse().unwrap(),
            ended: r["ended"].as_str().unwrap().parse().unwrap(),
            status: r["status"].as_str().unwrap().to_owned(),
        })
        .collect();
    runs.sort_by_key(|r| r.started);
    runs
}

/// Wait until the ledger has `n` finished runs started at or after `since`.
fn wait_for(dir: &Path, n: usize, since: DateTime<Utc>) -> Vec<Run> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: Vec<Run> = runs(dir)
            .into_iter()
            .filter(|r| r.started >= since)
            .collect();
        if r.len() >= n {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} runs after 60 s: {r:?}\n{}",
            r.len(),
            std::fs::read_to_string(dir.join("schedule.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The ticks the scheduler ran, from its log lines (`schedule: the tick of … → lake run`).
fn ticks_run(log: &str) -> Vec<DateTime<Utc>> {
    log.lines()
        .filter_map(|l| l.strip_prefix("schedule: the tick of "))
        .map(|l| {
            let at = l.split(" UTC").next().unwrap();
            chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M:%S")
                .unwrap()
                .and_utc()
        })
        .collect()
}

/// The last tick at or before `t`.
fn tick_before(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    DateTime::from_timestamp(s - s.rem_euclid(TICK as i64), 0).unwrap()
}

fn secs(d: chrono::TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 1000.0
}

/// How long after its tick (a multiple of 4 s) a run started.
fn after_tick(t: DateTime<Utc>) -> f64 {
    (t.timestamp_millis() as f64 / 1000.0) % TICK
}

#[test]
fn every_tick_runs_once_and_a_tick_during_a_slow_run_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path());
    std::fs::write(dir.path().join("slow"), "").unwrap();
    let started = Utc::now();
    let mut child = scheduler(dir.path());
    let r = wait_for(dir.path(), 4, started);
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("schedule.log")).unwrap();
    assert!(r.iter().all(|r| r.status == "succeeded"), "{r:?}\n{log}");
    // The first run is the slow one: two ticks came while it ran.
    assert!(secs(r[0].ended - r[0].started) >= 8.5, "{r:?}");
    // One run at a time, each after the one before.
    for w in r.windows(2) {
        assert!(w[1].started >= w[0].ended, "overlap: {w:?}");
    }
    // The ticks that came during the slow run are run once, right after it: the latest of
    // them; the one before it is never run.
    let ticks = ticks_run(&log);
    let mut unique = ticks.clone();
    unique.dedup();
    assert_eq!(unique, ticks, "a tick ran twice:\n{log}");
    let during: Vec<&DateTime<Utc>> = ticks
        .iter()
        .filter(|t| **t > r[0].started && **t < r[0].ended)
        .collect();
    assert_eq!(
        during,
        [&tick_before(r[0].ended)],
        "ticks during the slow run:\n{log}"
    );
    assert!(secs(r[1].started - r[0].ended) < 1.5, "{r:?}\n{log}");
    // Then a run per tick, each at its tick.
    for x in &r[2..4] {
        assert!(after_tick(x.started) < 1.5, "not at a tick: {x:?}\n{log}");
    }
    let slot = |x: &Run| (x.started.timestamp_millis() as f64 / 1000.0 / TICK).floor() as i64;
    assert!(slot(&r[2]) < slot(&r[3]), "{r:?}");
    assert!(slot(&r[1]) < slot(&r[2]), "{r:?}");
}

#[test]
fn a_restarted_scheduler_runs_the_ticks_it_missed_at_once_and_once() {
    let dir = tempfile::tempdir().unwrap();
    pipeline(dir.path());
    let t0 = Utc::now();
    let mut child = scheduler(dir.path());
    wait_for(dir.path(), 1, t0);
    child.kill().unwrap();
    child.wait().unwrap();
    let stopped = Utc::now();
    // Two ticks (or three) pass with no scheduler.
    std::thread::sleep(Duration::from_secs(9));
    let restarted = Utc::now();
    assert!(
        runs(dir.path()).iter().all(|r| r.started < stopped),
        "nothing ran while stopped"
    );
    let mut child = scheduler(dir.path());
    let r = wait_for(dir.path(), 2, restarted);
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("schedule.log")).unwrap();
    // Two ticks or more were missed (one logical date): on restart they run at once, as one
    // run, the tick of the latest; then the scheduler waits for the next tick.
    assert!(
        (tick_before(restarted) - tick_before(stopped)).num_seconds() >= 2 * TICK as i64,
        "fewer than two ticks were missed"
    );
    let ticks = ticks_run(&log);
    let missed: Vec<&DateTime<Utc>> = ticks.iter().filter(|t| **t < restarted).collect();
    assert_eq!(missed, [&tick_before(restarted)], "{log}");
    assert!(
        secs(r[0].started - restarted) < 1.5,
        "the missed ticks waited: {r:?}\n{log}"
    );
    assert!(ticks[1] > restarted, "{log}");
    assert!(r.iter().all(|r| r.status == "succeeded"), "{r:?}\n{log}");
}
