//! `mode = "merge"` on a growing dataset: its cost should follow the batch, not the history.
//!
//! A dataset of `LAKE_BENCH_DAYS` (default 365) daily partitions × `LAKE_BENCH_ROWS` (default
//! 10,000) readings, keyed by (day, station), is loaded once. Then a daily batch of
//! `LAKE_BENCH_BATCH` (default 1% of the dataset's rows) updates readings of 3 random days, and
//! is applied, each from the same starting dataset, taken in turn:
//!
//! - `lake run` of the merge step (`mode = "merge"`, `partition_by = ["day"]`), with the
//!   files it rewrote and kept from the ledger;
//! - `lake run` of one day's rows (`LAKE_BENCH_ROWS`) with `mode = "overwrite_partitions"`: the
//!   daily run a merge should cost no more than 1.5× of;
//! - DuckDB (`DUCKDB`, else `duckdb` on PATH; skipped without it): `INSERT OR REPLACE` of the
//!   batch into a table with the same rows and a primary key, in its own database file.
//!
//! Data is generated from a seed (`LAKE_BENCH_SEED`, default 7), so runs compare.
//!
//! ```sh
//! DUCKDB=… cargo bench -p lake-cli --bench merge
//! ```

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use lake_testing::measure::{Measure, Rng, lake_bin, setting, timed};

fn day(d: usize) -> String {
    (lake::core::chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap()
        + lake::core::chrono::Days::new(d as u64))
    .to_string()
}

const STEP: &str = r#"
[steps.readings]
kind = "sql"
inputs = ["raw/readings@date"]
output = "trusted/readings"
partition_by = ["day"]
"#;

fn toml(sql: &str, mode: &str) -> String {
    format!(
        "[lake]\nname = \"bench\"\n\n[sources.readings]\nkind = \"file\"\npath = \"data/readings.csv\"\n{STEP}sql = \"{sql}\"\n{mode}\n"
    )
}

const SELECT: &str = "SELECT CAST(day AS DATE) AS day, CAST(station AS BIGINT) AS station, CAST(value AS DOUBLE) AS value, note FROM readings";

fn lake(dir: &Path, date: &str) -> Measure {
    timed(
        Command::new(lake_bin(env!("CARGO_BIN_EXE_lake")))
            .args(["-q", "run", "--date", date])
            .current_dir(dir),
    )
}

fn copy_dir(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn main() {
    let days = setting("LAKE_BENCH_DAYS", 365);
    let per_day = setting("LAKE_BENCH_ROWS", 10_000);
    let batch = setting("LAKE_BENCH_BATCH", days * per_day / 100);
    let mut rng = Rng(setting("LAKE_BENCH_SEED", 7) as u64);
    let tmp = tempfile::tempdir().unwrap();
    // `LAKE_BENCH_KEEP=1`: the folders stay, named, to profile a run in them again.
    let root = if std::env::var_os("LAKE_BENCH_KEEP").is_some() {
        let kept = tmp.keep();
        println!("merge bench: kept in {}", kept.display());
        kept
    } else {
        tmp.path().to_owned()
    };
    let base = root.join("base");
    std::fs::create_dir_all(base.join("data")).unwrap();

    // The history: every (day, station).
    let mut csv = String::from("day,station,value,note\n");
    for d in 0..days {
        let dd = day(d);
        for s in 0..per_day {
            let _ = writeln!(
                csv,
                "{dd},{s},{},n{}",
                rng.next_u64() % 10_000,
                rng.next_u64() % 97
            );
        }
    }
    std::fs::write(base.join("data/readings.csv"), &csv).unwrap();
    std::fs::write(
        base.join("lake.toml"),
        toml(SELECT, "mode = \"merge\"\nkey = [\"day\", \"station\"]"),
    )
    .unwrap();
    let load = lake(&base, "2030-01-01");
    println!(
        "merge bench: {days} days × {per_day} rows = {} rows loaded in {:.2} s ({:.0} MiB peak); batch {batch} rows over 3 days",
        days * per_day,
        load.wall,
        load.rss_kib as f64 / 1024.0
    );

    // The batch: readings of 3 days, corrected.
    let mut picked: Vec<usize> = Vec::new();
    while picked.len() < 3.min(days) {
        let d = (rng.next_u64() as usize) % days;
        if !picked.contains(&d) {
            picked.push(d);
        }
    }
    let mut csv = String::from("day,station,value,note\n");
    for i in 0..batch {
        let d = picked[i % picked.len()];
        let s = (rng.next_u64() as usize) % per_day;
        let _ = writeln!(csv, "{},{s},{},fixed", day(d), rng.next_u64() % 10_000);
    }
    let dated = "2030-01-02";

    // 1. merge.
    let m_dir = root.join("merge");
    copy_dir(&base, &m_dir);
    std::fs::write(m_dir.join("data/readings.csv"), &csv).unwrap();
    std::fs::write(
        m_dir.join("lake.toml"),
        toml(
            SELECT,
            "mode = \"merge\"\nkey = [\"day\", \"station\"]\non_tie = \"any\"",
        ),
    )
    .unwrap();
    let merge = lake(&m_dir, dated);
    let runs = Command::new(lake_bin(env!("CARGO_BIN_EXE_lake")))
        .args(["runs", "--json"])
        .current_dir(&m_dir)
        .output()
        .unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    let merged = runs
        .as_array()
        .and_then(|r| r.iter().find(|r| r["date"] == dated))
        .map(|r| r["steps"][0]["merged"].clone())
        .expect("the merge run in the ledger");
    assert_eq!(
        merged["rewritten_files"].as_u64(),
        Some(picked.len() as u64),
        "the batch touches {} days: {merged}",
        picked.len()
    );
    println!("merge changed: {merged}");

    // 2. The issue's reference: a day's `overwrite_partitions` run, one day's rows replacing
    // its partition, from the same starting dataset.
    let o_dir = root.join("overwrite");
    copy_dir(&base, &o_dir);
    let mut day_csv = String::from("day,station,value,note\n");
    for s in 0..per_day {
        let _ = writeln!(
            day_csv,
            "{},{s},{},fixed",
            day(picked[0]),
            rng.next_u64() % 10_000
        );
    }
    std::fs::write(o_dir.join("data/readings.csv"), &day_csv).unwrap();
    std::fs::write(
        o_dir.join("lake.toml"),
        toml(SELECT, "mode = \"overwrite_partitions\""),
    )
    .unwrap();
    let overwrite = lake(&o_dir, dated);

    // 3. DuckDB.
    let duckdb = std::env::var("DUCKDB").unwrap_or_else(|_| "duckdb".to_owned());
    let have_duckdb = Command::new(&duckdb)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    let duck = have_duckdb.then(|| {
        let dir = root.join("duck");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("batch.csv"), &csv).unwrap();
        let db = dir.join("readings.duckdb");
        let setup = format!(
            "CREATE TABLE readings (day DATE, station BIGINT, value DOUBLE, note VARCHAR, PRIMARY KEY (day, station)); \
             INSERT INTO readings SELECT * FROM read_csv('{}', header = true, columns = {{'day': 'DATE', 'station': 'BIGINT', 'value': 'DOUBLE', 'note': 'VARCHAR'}});",
            base.join("data/readings.csv").display()
        );
        let ok = Command::new(&duckdb)
            .arg(&db)
            .arg("-c")
            .arg(&setup)
            .status()
            .unwrap()
            .success();
        assert!(ok, "duckdb setup");
        timed(Command::new(&duckdb).arg(&db).arg("-c").arg(format!(
            "INSERT OR REPLACE INTO readings SELECT DISTINCT ON (day, station) * FROM read_csv('{}', header = true, columns = {{'day': 'DATE', 'station': 'BIGINT', 'value': 'DOUBLE', 'note': 'VARCHAR'}});",
            dir.join("batch.csv").display()
        )))
    });

    let row = |name: &str, m: &Measure| {
        println!(
            "| {name} | {:.2} s | {:.0} MiB | {:.2}× merge |",
            m.wall,
            m.rss_kib as f64 / 1024.0,
            m.wall / merge.wall
        );
    };
    println!("| run | wall | peak RSS | vs merge |");
    println!("|---|---|---|---|");
    row("lake merge", &merge);
    row("lake overwrite_partitions of one day", &overwrite);
    match &duck {
        Some(d) => row("duckdb INSERT OR REPLACE", d),
        None => println!("| duckdb | skipped (DUCKDB=…) | | |"),
    }
}
