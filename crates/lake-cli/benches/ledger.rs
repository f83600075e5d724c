//! What reading the ledger costs as it grows: the same commands over ledgers of 1, 100 and
//! 1,000 runs (`LAKE_BENCH_LEDGERS`, comma-separated, changes them).
//!
//! ```sh
//! cargo bench -p lake-cli --bench ledger
//! ```
//!
//! For each ledger size: `lake runs` (the newest 50, from the index), `lake schedule status`,
//! the notice path (`lake run` of a one-command pipeline whose `[notify] command` is `true`:
//! the notice reads the ledger for the previous run's status), and `lake serve`'s home page and
//! `/api/version` (median of `LAKE_BENCH_RUNS` requests, default 20, each after the page's
//! one-second cache has expired, so every request reads the ledger). Process figures are
//! medians of `LAKE_BENCH_RUNS` processes (default 5), a clock around each. The ledgers are written
//! through `lake::core::ledger::write`, as runs write them (the index with them), with ten
//! steps per run so a document weighs what a real one does.

use std::process::Command;
use std::time::{Duration, Instant};

use lake::core::chrono::{Duration as Days, NaiveDate, TimeZone, Utc};
use lake::core::ledger::{self, RunRecord, Status, StepRecord};
use lake::local::LocalZoneStore;
use lake_testing::measure::{lake_bin, setting};
use lake_testing::serve::{Served, get};

const TOML: &str = r#"[lake]
name = "ledger_bench"
root = "lake"

[steps.report]
kind = "command"
command = ["true"]

[schedule]
cron = "0 7 * * *"
catchup = "7d"

[notify]
on = ["success", "failure"]
command = ["true"]
"#;

fn record(i: usize) -> RunRecord {
    let started = Utc.with_ymd_and_hms(2022, 1, 1, 7, 0, 0).unwrap() + Days::hours(i as i64);
    let status = if i % 11 == 5 {
        Status::Failed
    } else {
        Status::Succeeded
    };
    let steps = (0..10)
        .map(|s| StepRecord {
            name: format!("step_{s}"),
            kind: "sql".into(),
            status,
            inputs: Vec::new(),
            output: Some(format!("trusted/d{s}")),
            output_objects: Vec::new(),
            rows: Some(1000 + i as u64),
            rejected: Some(0),
            merged: None,
            replayed: Vec::new(),
            bytes: Some(65_536),
            started: Some(started),
            ended: Some(started + Days::seconds(2)),
            duration_ms: Some(2000),
            error: None,
            attempts: 1,
            attempt_errors: Vec::new(),
        })
        .collect();
    RunRecord {
        run_id: format!("{}-{i:06x}", started.format("%Y%m%dT%H%M%SZ")),
        pipeline: "ledger_bench".into(),
        env: None,
        date: NaiveDate::from_ymd_opt(2022, 1, 1).unwrap() + Days::days(i as i64 / 24),
        root: "lake".into(),
        backend: "local".into(),
        holder: "bench".into(),
        started,
        ended: Some(started + Days::seconds(20)),
        status,
        ingest: Vec::new(),
        steps,
        error: None,
        sinks: Vec::new(),
        catalog: Vec::new(),
    }
}

fn ledger_of(dir: &std::path::Path, n: usize) {
    let store = LocalZoneStore::filesystem(dir.join("lake")).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for i in 0..n {
            ledger::write(&store, &record(i)).await.unwrap();
        }
    });
}

/// The median wall time of `runs` runs of `cmd` (a clock around the whole process: GNU
/// time's 10 ms steps are too coarse here).
fn median_wall(runs: usize, mut cmd: impl FnMut() -> Command) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            let out = cmd().output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1000.0)
}

/// The median time of GET `path` over `runs` requests, each after the page cache's second.
fn served(addr: &str, path: &str, runs: usize) -> f64 {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        std::thread::sleep(Duration::from_millis(1100));
        let start = Instant::now();
        let r = get(addr, path, &[], Duration::from_secs(30)).unwrap();
        times.push(start.elapsed().as_secs_f64());
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let sizes: Vec<usize> = std::env::var("LAKE_BENCH_LEDGERS")
        .unwrap_or_else(|_| "1,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let procs = setting("LAKE_BENCH_RUNS", 9);
    let requests = setting("LAKE_BENCH_RUNS", 20).max(5);
    let bin = lake_bin(env!("CARGO_BIN_EXE_lake"));
    println!(
        "| runs in the ledger | `lake runs` | `lake schedule status` | notice path (`lake run`) | serve `/` | serve `/api/version` |"
    );
    println!("|---|---|---|---|---|---|");
    for n in sizes {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("lake.toml"), TOML).unwrap();
        ledger_of(tmp.path(), n);
        let lake = |args: &[&str]| {
            let mut c = Command::new(&bin);
            c.current_dir(tmp.path()).args(args).env_remove("RUST_LOG");
            c
        };
        let runs = median_wall(procs, || lake(&["runs"]));
        let status = median_wall(procs, || lake(&["schedule", "status"]));
        // Each notice run adds a run: the ledger holds n to n + procs runs meanwhile.
        let notice = median_wall(procs, || lake(&["run", "--date", "2030-01-01"]));
        let mut cmd = lake(&["serve", "--bind", "127.0.0.1:0"]);
        cmd.env_remove("LAKE_SERVE_TOKEN");
        let server = Served::start(cmd);
        let home = served(&server.addr, "/", requests);
        let version = served(&server.addr, "/api/version", requests);
        drop(server);
        println!(
            "| {n} | {} | {} | {} | {} | {} |",
            ms(runs),
            ms(status),
            ms(notice),
            ms(home),
            ms(version)
        );
    }
}
