//! `lake run` of a clean → Parquet → daily aggregate pipeline over a generated hourly weather
//! CSV, against the same SQL in DuckDB's CLI, in the same run.
//!
//! ```sh
//! python3 -m venv .venv && .venv/bin/pip install duckdb-cli   # the `duckdb` CLI
//! DUCKDB=.venv/bin/duckdb cargo bench -p lake-cli --bench sql_vs_duckdb
//! ```
//!
//! `LAKE_BENCH_ROWS` sets the row count (default 1,000,000), `LAKE_BENCH_RUNS` the runs per
//! tool (default 5, taken in turn; the median is reported). Wall time and peak RSS come from GNU time
//! (`/usr/bin/time -f "%e %M"`) around each process, so both tools are measured the same way.
//! Without a DuckDB CLI only lake is measured. `LAKE_BIN` names another `lake` binary to measure
//! (e.g. `target/dist/lake`, built by `cargo build --profile dist -p lake-cli`).
//!
//! `LAKE_BENCH_DATA` sets the data's shape (seeded, so the same file each time): `days` (the
//! default: 41,667 daily groups), `few` (30 days: 30 groups), `many` (213,000 days: up to
//! 213,000 groups) or `strings` (a `station` text key of up to 1,000,000 distinct values, the
//! aggregate grouped by it).
//!
//! `LAKE_BENCH_SHAPES=1` adds four steps after the daily aggregate, in both tools, for the query
//! shapes the two steps do not reach: a window function (the three warmest hours of each day),
//! a hash join (each hour against its day), string functions and a full sort. Each output is
//! checked against DuckDB's. Then each of those steps runs alone, in turn with DuckDB running
//! its SQL: `lake run --only <step> --force` and a DuckDB `COPY` that read the same inputs (the
//! Parquet files of lake's run); each output is checked again, and the medians are reported
//! per step.

use std::path::Path;
use std::process::Command;

use lake_testing::measure::{lake_bin, median, setting, timed};
use lake_testing::weather::{Data, EXPECT, generate_data, lake_toml_data};

/// A step beyond the daily aggregate: its name (also its output's, under `refined/`), its
/// inputs, its SQL (the same text in both tools) and the query the check runs on its output
/// (`{t}`: the output's Parquet files, with `filename` and `file_row_number` columns).
struct Shape {
    name: &'static str,
    inputs: &'static [&'static str],
    sql: &'static str,
    check: &'static str,
}

const SHAPES: &[Shape] = &[
    Shape {
        name: "weather_top3",
        inputs: &["trusted/weather_hourly"],
        sql: "SELECT date, time, temperature_2m, rn FROM (
  SELECT date, time, temperature_2m,
         ROW_NUMBER() OVER (PARTITION BY date ORDER BY temperature_2m DESC, time) AS rn
  FROM weather_hourly
) AS ranked WHERE rn <= 3",
        check: "SELECT count(*), sum(rn), round(sum(temperature_2m), 1) FROM {t}",
    },
    Shape {
        name: "weather_anomaly",
        inputs: &["trusted/weather_hourly", "refined/weather_daily"],
        sql: "SELECT h.time, h.temperature_2m - d.temp_mean AS anomaly, d.temp_max - d.temp_min AS daily_range
FROM weather_hourly AS h JOIN weather_daily AS d ON h.date = d.date",
        check: "SELECT count(*), round(sum(daily_range), 1) FROM {t}",
    },
    Shape {
        name: "weather_labels",
        inputs: &["trusted/weather_hourly"],
        sql: "SELECT time,
  concat(substr(CAST(date AS VARCHAR), 1, 7), '/', CASE WHEN temperature_2m >= 20 THEN 'warm' ELSE 'cool' END) AS label,
  upper(replace(CAST(date AS VARCHAR), '-', 'x')) AS day_key,
  lpad(CAST(relative_humidity_2m AS VARCHAR), 3, '0') AS humidity_text,
  regexp_replace(CAST(date AS VARCHAR), '^[0-9]{2}', '') AS short_date
FROM weather_hourly",
        check: "SELECT count(*), count(DISTINCT label), count(DISTINCT day_key), sum(length(humidity_text)), count(DISTINCT short_date) FROM {t}",
    },
    Shape {
        name: "weather_sorted",
        inputs: &["trusted/weather_hourly"],
        sql: "SELECT time, temperature_2m, wind_speed_10m FROM weather_hourly
ORDER BY wind_speed_10m DESC, temperature_2m, time",
        // Rows, and rows out of order, reading the files one after another in name order.
        check: "SELECT count(*), round(sum(wind_speed_10m), 1), count(*) FILTER (WHERE prev < wind_speed_10m)
FROM (SELECT wind_speed_10m, lag(wind_speed_10m) OVER (ORDER BY filename, file_row_number) AS prev FROM {t})",
    },
];

/// The shapes as lake.toml steps.
fn shapes_toml(shapes: &[Shape]) -> String {
    shapes
        .iter()
        .map(|s| {
            let inputs: Vec<String> = s.inputs.iter().map(|i| format!("\"{i}\"")).collect();
            format!(
                "\n[steps.{name}]\nkind = \"sql\"\ninputs = [{inputs}]\noutput = \"refined/{name}\"\nsql = \"\"\"\n{sql}\n\"\"\"\n",
                name = s.name,
                inputs = inputs.join(", "),
                sql = s.sql
            )
        })
        .collect()
}

/// The name a step's SQL reads `input` (`trusted/weather_hourly`) by: `weather_hourly`.
fn table_of(input: &str) -> &str {
    input.rsplit('/').next().unwrap_or(input)
}

/// DuckDB's statements for shape `s`: a view of each input by the name its SQL uses (over the
/// files `files_of` gives), then a `COPY` of its SQL to `out`.
fn shape_copy(s: &Shape, files_of: impl Fn(&str) -> std::path::PathBuf, out: &Path) -> String {
    let mut script = String::new();
    for input in s.inputs {
        script.push_str(&format!(
            "CREATE OR REPLACE VIEW {} AS SELECT * FROM read_parquet('{}');\n",
            table_of(input),
            files_of(input).display()
        ));
    }
    script.push_str(&format!(
        "COPY ({}) TO '{}' (FORMAT parquet, COMPRESSION zstd);\n",
        s.sql,
        out.display()
    ));
    script
}

fn duckdb_script(csv: &Path, dir: &Path, data: Data, shapes: &[Shape]) -> String {
    let hourly = dir.join("weather_hourly.parquet");
    let clean = data.clean_sql().replace(
        "FROM weather",
        &format!(
            "FROM read_csv('{}', header = true, all_varchar = true) AS weather",
            csv.display()
        ),
    );
    let daily = data.daily_sql().replace(
        "FROM weather_hourly",
        &format!("FROM read_parquet('{}')", hourly.display()),
    );
    let mut script = format!(
        "COPY (SELECT * FROM ({clean}) WHERE {EXPECT}) TO '{}' (FORMAT parquet, COMPRESSION zstd);\n\
         COPY ({daily}) TO '{}' (FORMAT parquet, COMPRESSION zstd);\n",
        hourly.display(),
        dir.join("weather_daily.parquet").display()
    );
    for s in shapes {
        // The shapes read their inputs by name, as in lake: views of the files just written.
        script.push_str(&shape_copy(
            s,
            |input| dir.join(format!("{}.parquet", table_of(input))),
            &dir.join(format!("{}.parquet", s.name)),
        ));
    }
    script
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let rows = setting("LAKE_BENCH_ROWS", 1_000_000);
    let runs = setting("LAKE_BENCH_RUNS", 5).max(1);
    let shapes: &[Shape] = if setting("LAKE_BENCH_SHAPES", 0) != 0 {
        SHAPES
    } else {
        &[]
    };
    // LAKE_BIN measures another build of lake (the `dist` binary users install).
    let lake_bin = lake_bin(env!("CARGO_BIN_EXE_lake"));
    let duckdb = std::env::var("DUCKDB").unwrap_or_else(|_| "duckdb".to_owned());
    let have_duckdb = Command::new(&duckdb)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());

    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("weather.csv");
    let data = Data::from_env();
    generate_data(&csv, rows, data);
    let size = std::fs::metadata(&csv).unwrap().len();
    println!(
        "sql_vs_duckdb: {rows} rows of `{}` data ({} groups), {:.1} MiB CSV, {runs} runs each (median wall, max peak RSS){}",
        data.name(),
        data.groups(rows),
        size as f64 / (1 << 20) as f64,
        if shapes.is_empty() {
            ""
        } else {
            ", with the window, join, string and sort steps"
        }
    );

    // Taken in turn (lake, DuckDB, lake, …) so that both see the same machine.
    let mut lake_runs = Vec::new();
    let mut duck_runs = Vec::new();
    for i in 0..runs {
        let dir = tmp.path().join(format!("lake-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("lake.toml"),
            lake_toml_data(&csv, data, &shapes_toml(shapes)),
        )
        .unwrap();
        lake_runs.push(timed(
            Command::new(&lake_bin)
                .args(["-q", "run", "--date", "2024-01-01"])
                .current_dir(&dir),
        ));
        if i == 0 {
            check_lake(&lake_bin, &dir, rows, data.groups(rows));
        }
        std::fs::remove_dir_all(&dir).unwrap();
        if have_duckdb {
            let dir = tmp.path().join(format!("duck-{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let script = dir.join("bench.sql");
            std::fs::write(&script, duckdb_script(&csv, &dir, data, shapes)).unwrap();
            duck_runs.push(timed(
                Command::new(&duckdb)
                    .arg("-c")
                    .arg(format!(".read {}", script.display()))
                    .current_dir(&dir),
            ));
            if i == 0 {
                // Both wrote the same outputs: DuckDB reads lake's Parquet and its own.
                let lake_dir = tmp.path().join("lake-check/lake/refined");
                let daily =
                    "SELECT count(*), round(sum(temp_min), 1), round(sum(temp_max), 1) FROM {t}";
                let checks = std::iter::once(("weather_daily", daily))
                    .chain(shapes.iter().map(|s| (s.name, s.check)));
                for (name, check) in checks {
                    let ours = agree(
                        &duckdb,
                        name,
                        check,
                        &lake_dir.join(name),
                        &dir.join(format!("{name}.parquet")),
                    );
                    println!("  checked: lake's and DuckDB's {name} agree ({ours})");
                }
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
    let lake = median(lake_runs);
    println!(
        "  lake run      {:>7.2} s  {:>7.1} MiB",
        lake.wall,
        lake.rss_kib as f64 / 1024.0
    );
    rerun_cost(&lake_bin, &tmp.path().join("lake-check"), runs);
    if !have_duckdb {
        println!("  duckdb        skipped: no DuckDB CLI (set DUCKDB=…; pip install duckdb-cli)");
        return;
    }
    let duck = median(duck_runs);
    println!(
        "  duckdb        {:>7.2} s  {:>7.1} MiB",
        duck.wall,
        duck.rss_kib as f64 / 1024.0
    );
    println!(
        "  lake / duckdb {:>7.2}×  {:>7.2}×   (targets: ≤ 1.0× wall, ≤ 1.0× RSS)",
        lake.wall / duck.wall,
        lake.rss_kib as f64 / duck.rss_kib as f64
    );
    if !shapes.is_empty() {
        per_step(
            &lake_bin,
            &duckdb,
            &tmp.path().join("lake-check"),
            shapes,
            runs,
        );
    }
}

/// Each shape alone, lake and DuckDB in turn over the same input files (those of the committed
/// lake in `dir`): `lake run --only <step> --force` against a DuckDB `COPY` of the same SQL.
fn per_step(lake_bin: &Path, duckdb: &str, dir: &Path, shapes: &[Shape], runs: usize) {
    let out = dir.join("duck-step.parquet");
    println!("  each step alone (median wall, max peak RSS):");
    for s in shapes {
        // The step's inputs are lake's files.
        let script = shape_copy(
            s,
            |input| dir.join("lake").join(input).join("**/*.parquet"),
            &out,
        );
        let mut lake_runs = Vec::new();
        let mut duck_runs = Vec::new();
        for _ in 0..runs {
            lake_runs.push(timed(
                Command::new(lake_bin)
                    .args(["-q", "run", "--date", "2024-01-01", "--force", "--only"])
                    .arg(s.name)
                    .current_dir(dir),
            ));
            let _ = std::fs::remove_file(&out);
            duck_runs.push(timed(Command::new(duckdb).arg("-c").arg(&script)));
        }
        agree(
            duckdb,
            s.name,
            s.check,
            &dir.join("lake/refined").join(s.name),
            &out,
        );
        let (lake, duck) = (median(lake_runs), median(duck_runs));
        println!(
            "    {:<16} lake {:>5.2} s {:>6.1} MiB   duckdb {:>5.2} s {:>6.1} MiB   {:>5.2}× wall {:>5.2}× RSS",
            s.name,
            lake.wall,
            lake.rss_mib(),
            duck.wall,
            duck.rss_mib(),
            lake.wall / duck.wall,
            lake.rss_mib() / duck.rss_mib()
        );
    }
}

/// What reading inputs back costs: `run --force` over the committed lake in `dir` (its raw
/// window landed by an earlier run, so `[engine] verify = "sha256"` hashes it beside the
/// query), against `verify = "size"`.
fn rerun_cost(lake_bin: &Path, dir: &Path, runs: usize) {
    let toml = std::fs::read_to_string(dir.join("lake.toml")).unwrap();
    let mut walls = Vec::new();
    for verify in ["sha256", "size"] {
        std::fs::write(
            dir.join("lake.toml"),
            format!("{toml}\n[engine]\nverify = \"{verify}\"\n"),
        )
        .unwrap();
        let m = median(
            (0..runs)
                .map(|_| {
                    timed(
                        Command::new(lake_bin)
                            .args(["-q", "run", "--force", "--date", "2024-01-01"])
                            .current_dir(dir),
                    )
                })
                .collect(),
        );
        println!(
            "  run --force, verify = {verify:<6} {:>7.2} s  {:>7.1} MiB",
            m.wall,
            m.rss_mib()
        );
        walls.push(m.wall);
    }
    std::fs::write(dir.join("lake.toml"), toml).unwrap();
    println!(
        "  reading inputs back costs {:.2}× (sha256 ÷ size)",
        walls[0] / walls[1]
    );
}

/// Check lake's output (every row in trusted, one row per day in refined) and keep a copy of
/// it in `lake-check` for the comparison with DuckDB's.
fn check_lake(lake_bin: &Path, dir: &Path, rows: usize, groups: usize) {
    let out = Command::new(lake_bin)
        .args([
            "query",
            "SELECT (SELECT count(*) FROM trusted.weather_hourly) AS h, (SELECT count(*) FROM refined.weather_daily) AS d",
            "--format",
            "csv",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let counts = text.lines().nth(1).unwrap_or_default().to_owned();
    assert_eq!(
        counts,
        format!("{rows},{groups}"),
        "lake's output is incomplete"
    );
    let keep = dir.parent().unwrap().join("lake-check");
    let _ = std::fs::remove_dir_all(&keep);
    let status = Command::new("cp")
        .args(["-r"])
        .arg(dir)
        .arg(&keep)
        .status()
        .unwrap();
    assert!(status.success());
}

/// `check`'s result over lake's output `name` (the Parquet files in `lake_dir`), asserted equal
/// to its result over DuckDB's file `duck_file`.
fn agree(duckdb: &str, name: &str, check: &str, lake_dir: &Path, duck_file: &Path) -> String {
    let ours = aggregate(duckdb, check, &lake_dir.join("*.parquet"));
    let theirs = aggregate(duckdb, check, duck_file);
    assert_eq!(ours, theirs, "lake's {name} differs from DuckDB's");
    ours
}

/// The result of `query` over a Parquet output (`{t}` in it), read by DuckDB.
fn aggregate(duckdb: &str, query: &str, parquet: &Path) -> String {
    let out = Command::new(duckdb)
        .args(["-csv", "-noheader", "-c"])
        .arg(query.replace(
            "{t}",
            &format!(
                "read_parquet('{}', filename = true, file_row_number = true)",
                parquet.display()
            ),
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
