//! `lake serve` over the 1M-row weather data: time to first byte of the home page (a chart of
//! the daily aggregate) and of `trusted.weather_hourly`'s first page (its row count, schema and
//! first 100 rows), against DuckDB's CLI reading that same first page from the same Parquet.
//!
//! ```sh
//! DUCKDB=.venv/bin/duckdb cargo bench -p lake-cli --bench serve
//! ```
//!
//! `LAKE_BENCH_ROWS` sets the rows (default 1,000,000), `LAKE_BENCH_RUNS` the requests per
//! page (default 10; the median is reported). Times are measured from connect to the first
//! byte of the response, on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Instant;

use lake_testing::measure::{lake_bin, setting, timed};
use lake_testing::weather::{generate, lake_toml};

const CHART: &str = r#"
[charts.temperature]
sql = "SELECT date, temp_min, temp_max, temp_mean FROM refined.weather_daily ORDER BY date"
x = "date"
y = ["temp_min", "temp_max", "temp_mean"]
"#;

/// Seconds to the first byte of GET `path`, and the whole response.
fn ttfb(addr: &str, path: &str) -> (f64, String) {
    let start = Instant::now();
    let mut c = TcpStream::connect(addr).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = [0u8; 1];
    c.read_exact(&mut first).unwrap();
    let t = start.elapsed().as_secs_f64();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    (
        t,
        String::from_utf8_lossy(&first).into_owned() + &String::from_utf8_lossy(&rest),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rows = setting("LAKE_BENCH_ROWS", 1_000_000);
    let runs = setting("LAKE_BENCH_RUNS", 10).max(1);
    let lake_bin = lake_bin(env!("CARGO_BIN_EXE_lake"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let csv = dir.join("weather.csv");
    generate(&csv, rows);
    std::fs::write(dir.join("lake.toml"), lake_toml(&csv, CHART)).unwrap();
    timed(
        Command::new(&lake_bin)
            .args(["-q", "run", "--date", "2024-01-01"])
            .current_dir(dir),
    );
    let mut server = Command::new(&lake_bin)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(dir)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned();
    println!(
        "serve: {rows} rows in trusted.weather_hourly, {runs} requests per page (median time to first byte)"
    );
    for (page, path, check) in [
        ("home page", "/", "data-chart=\"temperature\""),
        (
            "1M-row dataset, first page",
            "/datasets/trusted/weather_hourly",
            "Rows 1–100",
        ),
    ] {
        let (_, body) = ttfb(&addr, path);
        assert!(body.contains(check), "{path}: {body}");
        let t = median((0..runs).map(|_| ttfb(&addr, path).0).collect());
        println!("  {page:<28} {:>8.1} ms", t * 1000.0);
    }
    let _ = server.kill();
    let _ = server.wait();
    let duckdb = std::env::var("DUCKDB").unwrap_or_else(|_| "duckdb".to_owned());
    if Command::new(&duckdb)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let parquet = dir.join("lake/trusted/weather_hourly/*.parquet");
        let sql = format!(
            "SELECT count(*) FROM read_parquet('{p}'); DESCRIBE SELECT * FROM read_parquet('{p}'); SELECT * FROM read_parquet('{p}') LIMIT 100;",
            p = parquet.display()
        );
        let t = median(
            (0..runs)
                .map(|_| timed(Command::new(&duckdb).arg("-c").arg(&sql)).wall)
                .collect(),
        );
        println!(
            "  duckdb CLI, same first page  {:>8.1} ms (process start included)",
            t * 1000.0
        );
    } else {
        println!("  duckdb: skipped (set DUCKDB=…)");
    }
}
