//! A growing lake's daily run: does a merged trusted step cost the same on day 365 as on day 1?
//!
//! The weather pipeline's shape on generated data: each day a raw window of hourly readings
//! of `LAKE_BENCH_STATIONS` (default 4,167) stations lands (24 × 4,167 ≈ 100k rows), together
//! with corrections of 10% of the previous day's readings (a forecast revised). The trusted step
//! merges each window into `trusted/weather_hourly` (`mode = "merge"`, key (date, station,
//! time), a folder per date), so each run rewrites the two dates it touches; the refined step
//! is the daily aggregate, as the examples have it.
//!
//! Every day from 1 to `LAKE_BENCH_DAYS` (default 365) runs in turn (`lake run --date`); the
//! trusted step's duration and the files it rewrote and kept are read from the ledger, and
//! the run's wall and peak RSS from GNU time, for days 1, 2, 10, 100 and the last. The goal:
//! the trusted step's time flat within 1.3× from day 1 to the last day. `LAKE_BENCH_REFINED=0`
//! leaves the refined step out (it reads the whole dataset, so it grows by design).
//!
//! Data is generated from a seed (`LAKE_BENCH_SEED`, default 11).
//!
//! ```sh
//! cargo bench -p lake-cli --bench merge_days
//! ```

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use lake_testing::measure::{Rng, lake_bin, setting, timed};

fn date(d: usize) -> lake::core::chrono::NaiveDate {
    lake::core::chrono::NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()
        + lake::core::chrono::Days::new(d as u64 - 1)
}

const TRUSTED: &str = r#"[lake]
name = "weather"

[sources.weather]
kind = "file"
path = "data/weather.csv"

[steps.weather_hourly]
kind = "sql"
inputs = ["raw/weather@date"]
output = "trusted/weather_hourly"
sql = "SELECT CAST(CAST(time AS TIMESTAMP) AS DATE) AS date, CAST(station AS BIGINT) AS station, CAST(time AS TIMESTAMP) AS time, CAST(temperature_2m AS DOUBLE) AS temperature_2m, CAST(wind_speed_10m AS DOUBLE) AS wind_speed_10m FROM weather"
partition_by = ["date"]
mode = "merge"
key = ["date", "station", "time"]
expect = ["temperature_2m BETWEEN -90 AND 60"]
"#;

const REFINED: &str = r#"
[steps.weather_daily]
kind = "sql"
inputs = ["trusted/weather_hourly"]
output = "refined/weather_daily"
sql = "SELECT date, MIN(temperature_2m) AS temp_min, MAX(temperature_2m) AS temp_max, AVG(temperature_2m) AS temp_mean FROM weather_hourly GROUP BY date ORDER BY date"
"#;

/// One reading's CSV line.
fn reading(out: &mut String, rng: &mut Rng, d: usize, station: usize, hour: usize) {
    let _ = writeln!(
        out,
        "{}T{hour:02}:00:00,{station},{:.1},{:.1}",
        date(d),
        (rng.next_u64() % 700) as f64 / 10.0 - 30.0,
        (rng.next_u64() % 400) as f64 / 10.0
    );
}

/// Day `d`'s raw window: its readings, and corrections of 10% of day `d - 1`'s.
fn window(rng: &mut Rng, d: usize, stations: usize) -> String {
    let mut out = String::with_capacity(stations * 24 * 40);
    out.push_str("time,station,temperature_2m,wind_speed_10m\n");
    for s in 0..stations {
        for h in 0..24 {
            reading(&mut out, rng, d, s, h);
        }
    }
    if d > 1 {
        // Every tenth reading of the day before, from a random offset: distinct keys.
        let offset = (rng.next_u64() as usize) % 10;
        for i in (offset..stations * 24).step_by(10) {
            reading(&mut out, rng, d - 1, i / 24, i % 24);
        }
    }
    out
}

/// The newest run's trusted step: (duration in seconds, files rewritten, files kept).
fn trusted_step(dir: &Path) -> (f64, u64, u64) {
    let json = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(lake_bin(env!("CARGO_BIN_EXE_lake")))
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let runs = json(&["runs", "--json"]);
    let id = runs
        .as_array()
        .and_then(|r| r.last())
        .and_then(|r| r["run_id"].as_str())
        .expect("a run")
        .to_owned();
    let run = json(&["runs", "show", &id, "--json"]);
    let step = run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "weather_hourly"))
        .expect("the trusted step in the run");
    assert_eq!(step["status"], "succeeded", "{step}");
    (
        step["duration_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0,
        step["merged"]["rewritten_files"].as_u64().unwrap_or(0),
        step["merged"]["kept_files"].as_u64().unwrap_or(0),
    )
}

fn main() {
    let days = setting("LAKE_BENCH_DAYS", 365).max(2);
    let stations = setting("LAKE_BENCH_STATIONS", 4_167);
    let refined = setting("LAKE_BENCH_REFINED", 1) != 0;
    let mut rng = Rng(setting("LAKE_BENCH_SEED", 11) as u64);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let toml = if refined {
        format!("{TRUSTED}{REFINED}")
    } else {
        TRUSTED.to_owned()
    };
    std::fs::write(dir.join("lake.toml"), toml).unwrap();
    println!(
        "merge_days: {days} days, {stations} stations × 24 hours a day (+10% corrections of the day before){}",
        if refined { ", refined step on" } else { "" }
    );
    println!("| day | trusted step | run wall | peak RSS | files rewritten / kept |");
    println!("|---|---|---|---|---|");
    let shown = [1, 2, 10, 100, days];
    let mut first = None;
    for d in 1..=days {
        std::fs::write(dir.join("data/weather.csv"), window(&mut rng, d, stations)).unwrap();
        let m = timed(
            Command::new(lake_bin(env!("CARGO_BIN_EXE_lake")))
                .args(["-q", "run", "--date", &date(d).to_string()])
                .current_dir(dir),
        );
        if shown.contains(&d) {
            let (secs, rewritten, kept) = trusted_step(dir);
            first.get_or_insert(secs);
            println!(
                "| {d} | {secs:.2} s ({:.2}× day 1) | {:.2} s | {:.0} MiB | {rewritten} / {kept} |",
                secs / first.unwrap_or(secs),
                m.wall,
                m.rss_mib()
            );
        }
    }
}
