//! `lake sink --force` of the 1M-row weather data (`trusted/weather_hourly`, five typed
//! columns) into PostgreSQL, against `psql \copy` of the same rows as CSV into the same table
//! shape, in the same run.
//!
//! ```sh
//! LAKE_TEST_PG_URL=postgres://user:pass@127.0.0.1:5432/postgres cargo bench -p lake-cli --bench sink
//! ```
//!
//! `bash .ci/run` prints how its server is started (`.ci/postgres.sh`). `LAKE_BENCH_ROWS` sets
//! the rows (default 1,000,000), `LAKE_BENCH_RUNS` the runs per tool (default 5, taken in
//! turn; the median wall time and the largest peak RSS are reported). Both loads replace a
//! table in one transaction: lake swaps a new table in, psql runs `-1` (one transaction)
//! with a DROP, CREATE and `\copy`.

use std::process::Command;

use lake_testing::measure::{lake_bin, median, setting, timed};
use lake_testing::postgres::{fresh_database, psql, server};
use lake_testing::weather::{generate, lake_toml};

const SINK: &str = r#"
[sinks.hourly]
kind = "postgres"
url = "${env:PG_URL}"
from = "trusted/weather_hourly"
table = "bench.weather_hourly"
"#;

fn main() {
    let Some(server) = server() else { return };
    let rows = setting("LAKE_BENCH_ROWS", 1_000_000);
    let runs = setting("LAKE_BENCH_RUNS", 5).max(1);
    let lake_bin = lake_bin(env!("CARGO_BIN_EXE_lake"));
    let url = fresh_database(&server, "bench");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let csv = dir.join("weather.csv");
    generate(&csv, rows);
    std::fs::write(dir.join("lake.toml"), lake_toml(&csv, SINK)).unwrap();
    let lake = || {
        let mut c = Command::new(&lake_bin);
        c.current_dir(dir).env("PG_URL", &url);
        c
    };
    // The pipeline once (its first load included), then the rows as CSV for psql.
    timed(lake().args(["-q", "run", "--date", "2024-01-01"]));
    let loaded: usize = psql(&url, "SELECT count(*) FROM bench.weather_hourly")
        .parse()
        .unwrap();
    let rows_csv = dir.join("hourly.csv");
    timed(lake().args([
        "query",
        "SELECT * FROM trusted.weather_hourly",
        "--output",
        rows_csv.to_str().unwrap(),
    ]));
    let script = dir.join("copy.sql");
    std::fs::write(
        &script,
        format!(
            "DROP TABLE IF EXISTS bench.ref;\n\
             CREATE TABLE bench.ref (LIKE bench.weather_hourly);\n\
             \\copy bench.ref FROM '{}' WITH (FORMAT csv, HEADER true)\n",
            rows_csv.display()
        ),
    )
    .unwrap();
    println!(
        "sink: {loaded} rows of trusted/weather_hourly ({:.1} MiB as CSV), {runs} runs each",
        std::fs::metadata(&rows_csv).unwrap().len() as f64 / (1 << 20) as f64
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ours.push(timed(lake().args(["-q", "sink", "--force"])));
        theirs.push(timed(
            Command::new("psql")
                .args([&url, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-f"])
                .arg(&script),
        ));
    }
    // Both tables hold the same rows.
    let digest = |t: &str| {
        psql(
            &url,
            &format!(
                "SELECT count(*), sum(temperature_2m)::numeric(20,1), min(time), max(date) FROM {t}"
            ),
        )
    };
    assert_eq!(digest("bench.weather_hourly"), digest("bench.ref"));
    let (lake, copy) = (median(ours), median(theirs));
    println!(
        "  lake sink --force {:>7.2} s  {:>7.1} MiB",
        lake.wall,
        lake.rss_mib()
    );
    println!(
        "  psql \\copy (CSV)  {:>7.2} s  {:>7.1} MiB",
        copy.wall,
        copy.rss_mib()
    );
    println!(
        "  lake / psql       {:>7.2}×  (wall)",
        lake.wall / copy.wall
    );
}
