//! What `table_format = "iceberg"` costs a publish, and whether it grows with the table's
//! history.
//!
//! 1. The weather pipeline (generated hourly rows: `LAKE_BENCH_ROWS`, default 1M and 10M) with
//!    its outputs as Parquet folders and as Iceberg tables, the steps rerun (`run --force`)
//!    in turn, `LAKE_BENCH_RUNS` times each (default 5): median wall and peak RSS of each, and
//!    the ratio. The difference is the Iceberg commits (footers read, two Avro files and a
//!    metadata file written per dataset).
//! 2. One small table (10k rows) republished `LAKE_BENCH_SNAPSHOTS` times (default 1,000,
//!    all kept: `retain_snapshots` of a year): the wall of the first ten republishes against
//!    the last ten, and the metadata file's size at the end (each commit reads and rewrites
//!    it, so it grows with the snapshots kept; `retain_snapshots` bounds it).
//! 3. With `LAKE_PYSPARK_PYTHON` (a Python with pyiceberg), the read time of that table by
//!    another engine: pyiceberg loading the metadata and scanning the current snapshot to
//!    Arrow, timed inside Python (no interpreter start), median of 5, after 10 snapshots and
//!    after all of them.
//!
//! Run it with the binary users get:
//!
//! ```sh
//! cargo build --profile dist -p lake-cli
//! LAKE_BIN=target/dist/lake cargo bench -p lake-cli --bench iceberg
//! ```

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use lake_testing::measure::{Measure, lake_bin, median, setting, timed};

fn lake(dir: &Path) -> Command {
    let mut c = Command::new(lake_bin(env!("CARGO_BIN_EXE_lake")));
    c.current_dir(dir).env_remove("RUST_LOG");
    c
}

/// A folder with the weather pipeline over `csv`, its outputs kept as `format`, its raw
/// window landed and its steps run once.
fn pipeline(dir: &Path, csv: &Path, format: &str, extra: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let toml = lake_testing::weather::lake_toml(csv, "").replacen(
        "[lake]\n",
        &format!("[lake]\ntable_format = \"{format}\"\n{extra}"),
        1,
    );
    std::fs::write(dir.join("lake.toml"), toml).unwrap();
    let out = lake(dir)
        .args(["run", "--date", "2024-05-01"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// pyiceberg's read of the table whose metadata folder is `meta`: the median wall of 5 loads
/// and scans of its current snapshot, timed in the Python process, and the rows.
fn pyiceberg_read(python: &str, meta: &Path) -> (f64, u64) {
    const READ: &str = r#"
import sys, time, statistics
from pyiceberg.table import StaticTable
meta = sys.argv[1]
hint = open(f"{meta}/version-hint.text").read().strip()
walls, rows = [], 0
for _ in range(5):
    t = time.perf_counter()
    table = StaticTable.from_metadata(f"file://{meta}/v{hint}.metadata.json")
    rows = table.scan().to_arrow().num_rows
    walls.append(time.perf_counter() - t)
print(statistics.median(walls), rows)
"#;
    let out = Command::new(python)
        .args(["-c", READ])
        .arg(meta)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    (
        it.next().unwrap().parse().unwrap(),
        it.next().unwrap().parse().unwrap(),
    )
}

fn rerun(dir: &Path) -> Measure {
    timed(lake(dir).args(["run", "--date", "2024-05-01", "--force"]))
}

fn main() {
    let rows: Vec<usize> = std::env::var("LAKE_BENCH_ROWS")
        .unwrap_or_else(|_| "1000000,10000000".to_owned())
        .split(',')
        .map(|r| r.trim().parse().expect("LAKE_BENCH_ROWS: numbers"))
        .collect();
    let runs: usize = setting("LAKE_BENCH_RUNS", 5);
    let snapshots: usize = setting("LAKE_BENCH_SNAPSHOTS", 1000);
    let tmp = tempfile::tempdir().unwrap();

    println!("| rows | parquet folders | iceberg tables | wall ratio | RSS ratio |");
    println!("|---|---|---|---|---|");
    for n in rows {
        let csv = tmp.path().join(format!("weather-{n}.csv"));
        lake_testing::weather::generate(&csv, n);
        let folders = tmp.path().join(format!("parquet-{n}"));
        let tables = tmp.path().join(format!("iceberg-{n}"));
        pipeline(&folders, &csv, "parquet", "");
        pipeline(&tables, &csv, "iceberg", "");
        let (mut p, mut i) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            p.push(rerun(&folders));
            i.push(rerun(&tables));
        }
        let (p, i) = (median(p), median(i));
        println!(
            "| {n} | {:.2} s, {:.0} MiB | {:.2} s, {:.0} MiB | {:.2}× | {:.2}× |",
            p.wall,
            p.rss_mib(),
            i.wall,
            i.rss_mib(),
            i.wall / p.wall,
            i.rss_mib() / p.rss_mib()
        );
        let _ = std::fs::remove_dir_all(&folders);
        let _ = std::fs::remove_dir_all(&tables);
    }

    // History: every republish a snapshot, all kept.
    let csv = tmp.path().join("weather-small.csv");
    lake_testing::weather::generate(&csv, 10_000);
    let dir = tmp.path().join("history");
    pipeline(&dir, &csv, "iceberg", "retain_snapshots = \"365d\"\n");
    let meta = dir.join("lake/trusted/weather_hourly/metadata");
    let python = std::env::var("LAKE_PYSPARK_PYTHON").ok();
    let mut early_read = None;
    let mut walls = Vec::with_capacity(snapshots);
    for n in 1..snapshots {
        if n == 10
            && let Some(py) = &python
        {
            early_read = Some(pyiceberg_read(py, &meta));
        }
        let t = Instant::now();
        let out = lake(&dir)
            .args(["run", "--date", "2024-05-01", "--force"])
            .output()
            .unwrap();
        assert!(out.status.success());
        walls.push(t.elapsed().as_secs_f64());
    }
    let mean = |w: &[f64]| w.iter().sum::<f64>() / w.len() as f64;
    let first = mean(&walls[..10.min(walls.len())]);
    let last = mean(&walls[walls.len().saturating_sub(10)..]);
    let hint = std::fs::read_to_string(meta.join("version-hint.text")).unwrap();
    let size = std::fs::metadata(meta.join(format!("v{}.metadata.json", hint.trim())))
        .unwrap()
        .len();
    println!();
    println!(
        "{snapshots} snapshots of a 10k-row table: a republish {:.3} s at the first ten, {:.3} s at the last ten ({:.2}×); metadata file {:.0} KiB",
        first,
        last,
        last / first,
        size as f64 / 1024.0
    );
    if let (Some(py), Some((early, rows))) = (&python, early_read) {
        let (late, late_rows) = pyiceberg_read(py, &meta);
        assert_eq!(rows, late_rows);
        println!(
            "pyiceberg reading it ({rows} rows): {:.3} s after 10 snapshots, {:.3} s after {snapshots} ({:.2}×)",
            early,
            late,
            late / early
        );
    }
}
