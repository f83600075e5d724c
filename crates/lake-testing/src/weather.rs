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

/// The shape of the generated data (`LAKE_BENCH_DATA`), so a bench does not tune to one:
/// how many groups the aggregate makes, and of what key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// `days` (the default): stations of 1,000,000 hours each from 1950: 41,667 daily groups.
    Days,
    /// `few`: every row in 30 days of 2024: 30 daily groups.
    Few,
    /// `many`: rows spread over 213,000 days from 1678 (all a nanosecond timestamp holds):
    /// up to 213,000 daily groups, a few rows each at 1M rows.
    Many,
    /// `strings`: a `station` text column of up to 1,000,000 distinct values, and the
    /// aggregate grouped by it instead of the date.
    Strings,
}

/// Days in [`Data::Many`]'s span.
const MANY_DAYS: usize = 213_000;
/// Distinct stations in [`Data::Strings`].
const STATIONS: usize = 1_000_000;

impl Data {
    /// `LAKE_BENCH_DATA` (`days`, `few`, `many`, `strings`); `days` when unset.
    pub fn from_env() -> Self {
        match std::env::var("LAKE_BENCH_DATA").as_deref() {
            Ok("few") => Self::Few,
            Ok("many") => Self::Many,
            Ok("strings") => Self::Strings,
            Ok("days") | Err(_) => Self::Days,
            Ok(other) => panic!("LAKE_BENCH_DATA={other}: days, few, many or strings"),
        }
    }

    /// Its name, as `LAKE_BENCH_DATA` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Days => "days",
            Self::Few => "few",
            Self::Many => "many",
            Self::Strings => "strings",
        }
    }

    /// The groups the aggregate makes of `rows` rows.
    pub fn groups(self, rows: usize) -> usize {
        match self {
            Self::Days => rows.min(HOURS_PER_STATION).div_ceil(24),
            Self::Few => rows.min(30 * 24).div_ceil(24),
            Self::Many => rows.min(MANY_DAYS),
            Self::Strings => rows.min(STATIONS),
        }
    }

    /// The clean step's SQL.
    pub fn clean_sql(self) -> String {
        match self {
            Self::Strings => CLEAN_SQL.replace(
                "\nFROM weather",
                ",\n  station                                  AS station\nFROM weather",
            ),
            _ => CLEAN_SQL.to_owned(),
        }
    }

    /// The aggregate's SQL.
    pub fn daily_sql(self) -> String {
        match self {
            Self::Strings => DAILY_SQL.replace("date", "station"),
            _ => DAILY_SQL.to_owned(),
        }
    }
}

/// A deterministic hourly series from 1950 on: temperature, humidity, wind.
pub fn generate(path: &Path, rows: usize) {
    generate_data(path, rows, Data::Days);
}

/// Rows of the shape `data` (seeded: the same file every time).
pub fn generate_data(path: &Path, rows: usize, data: Data) {
    let mut out = String::with_capacity(rows * 48);
    out.push_str("time,temperature_2m,relative_humidity_2m,wind_speed_10m");
    out.push_str(if data == Data::Strings {
        ",station\n"
    } else {
        "\n"
    });
    let day = |y, m, d| {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
    };
    let start = match data {
        Data::Few => day(2024, 5, 1),
        Data::Many => day(1678, 1, 1),
        Data::Days | Data::Strings => day(1950, 1, 1),
    };
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..rows {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let t = match data {
            Data::Few => start + chrono::Duration::hours((i % (30 * 24)) as i64),
            Data::Many => {
                start
                    + chrono::Duration::days((i % MANY_DAYS) as i64)
                    + chrono::Duration::hours(((i / MANY_DAYS) % 24) as i64)
            }
            Data::Days | Data::Strings => {
                start + chrono::Duration::hours((i % HOURS_PER_STATION) as i64)
            }
        };
        let hour = (i % 24) as f64;
        let temp = 18.0
            + 7.0 * ((hour - 9.0) / 24.0 * std::f64::consts::TAU).sin()
            + (x % 100) as f64 / 20.0;
        let _ = write!(
            out,
            "{},{temp:.1},{},{:.1}",
            t.format("%Y-%m-%d %H:%M:%S"),
            40 + x % 60,
            (x >> 8) % 300 / 10
        );
        if data == Data::Strings {
            // An odd multiplier is a bijection mod 2^32: `STATIONS` distinct names, unordered.
            let id = ((i % STATIONS) as u32).wrapping_mul(0x9E37_79B1);
            let _ = write!(out, ",st-{id:08x}");
        }
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

/// The pipeline: `raw/weather` (the CSV at `csv`) → `trusted/weather_hourly` → `refined/weather_daily`,
/// root `lake` beside lake.toml, then `extra` (more tables).
pub fn lake_toml(csv: &Path, extra: &str) -> String {
    lake_toml_data(csv, Data::Days, extra)
}

/// The pipeline over data of the shape `data`.
pub fn lake_toml_data(csv: &Path, data: Data, extra: &str) -> String {
    lake_toml_inner(csv, &data.clean_sql(), &data.daily_sql()) + extra
}

fn lake_toml_inner(csv: &Path, clean: &str, daily: &str) -> String {
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
{clean}
"""
expect = ["{EXPECT}"]

[steps.weather_daily]
kind = "sql"
inputs = ["trusted/weather_hourly"]
output = "refined/weather_daily"
sql = """
{daily}
"""
"#,
        csv = csv.display()
    )
}
