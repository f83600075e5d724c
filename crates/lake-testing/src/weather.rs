//! The benchmarks' weather data: a generated hourly series (the "1M-row weather data" of
//! BENCHMARKS.md) and the pipeline that cleans it into Parquet and aggregates it by day.

use std::fmt::Write as _;
use std::path::Path;

/// The clean step: typed columns of the raw CSV.
pub const CLEAN_SQL: &str = "SELECT
  CAST(time AS TIMESTAMP)                  AS time,
  CAST(CAST(time AS TIMESTAMP) AS DATE)    AS date,
  CAST(temperature_2m AS DOUBLE)           AS temperature_2m,
  CAST(relative_humidity_2m AS INT)        AS relative_humidity_2m,
  CAST(wind_speed_10m AS DOUBLE)           AS wind_speed_10m
FROM weather";

/// The daily aggregate.
pub const DAILY_SQL: &str = "SELECT
  date,
  MIN(temperature_2m)  AS temp_min,
  MAX(temperature_2m)  AS temp_max,
  AVG(temperature_2m)  AS temp_mean
FROM weather_hourly
GROUP BY date
ORDER BY date";

/// The clean step's expectation.
pub const EXPECT: &str = "temperature_2m BETWEEN -90 AND 60";

/// Hours per station: a station's series runs from 1950 for about 114 years (timestamps stay
/// within what a nanosecond TIMESTAMP holds); more rows add stations.
pub const HOURS_PER_STATION: usize = 1_000_000;

/// A deterministic hourly series from 1950 on: temperature, humidity, wind.
pub fn generate(path: &Path, rows: usize) {
    let mut out = String::with_capacity(rows * 48);
    out.push_str("time,temperature_2m,relative_humidity_2m,wind_speed_10m\n");
    let start = chrono::NaiveDate::from_ymd_opt(1950, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let t = start + chrono::Duration::hours((i % HOURS_PER_STATION) as i64);
        let hour = (i % 24) as f64;
        let temp = 18.0
            + 7.0 * ((hour - 9.0) / 24.0 * std::f64::consts::TAU).sin()
            + (x % 100) as f64 / 20.0;
        let _ = writeln!(
            out,
            "{},{temp:.1},{},{:.1}",
            t.format("%Y-%m-%d %H:%M:%S"),
            40 + x % 60,
            (x >> 8) % 300 / 10
        );
    }
    std::fs::write(path, out).unwrap();
}

/// The pipeline: `raw/weather` (the CSV at `csv`) → `trusted/weather_hourly` → `refined/weather_daily`,
/// root `lake` beside lake.toml, then `extra` (more tables).
pub fn lake_toml(csv: &Path, extra: &str) -> String {
    lake_toml_inner(csv) + extra
}

fn lake_toml_inner(csv: &Path) -> String {
    format!(
        r#"[lake]
name = "bench"
root = "lake"

[sources.weather]
kind = "file"
path = "{csv}"

[steps.weather_hourly]
kind = "sql"
inputs = ["raw/weather@date"]
output = "trusted/weather_hourly"
sql = """
{CLEAN_SQL}
"""
expect = ["{EXPECT}"]

[steps.weather_daily]
kind = "sql"
inputs = ["trusted/weather_hourly"]
output = "refined/weather_daily"
sql = """
{DAILY_SQL}
"""
"#,
        csv = csv.display()
    )
}
