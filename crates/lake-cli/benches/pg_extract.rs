//! A PostgreSQL source's extract against `psql \copy … TO STDOUT` of the same rows into a
//! file, in the same run, on two table shapes: wide (ten typed columns: bigint, text, varchar,
//! numeric(12,2), double, timestamptz, timestamp, date, boolean, jsonb) and narrow (two
//! columns, through `query`).
//!
//! ```sh
//! LAKE_TEST_PG_URL=postgres://user:pass@127.0.0.1:5432/postgres cargo bench -p lake-cli --bench pg_extract
//! ```
//!
//! `LAKE_BENCH_ROWS` sets the rows (default 1,000,000), `LAKE_BENCH_RUNS` the runs per tool
//! (default 3, taken in turn; the median wall and the largest peak RSS are reported). lake's
//! run is `lake ingest` of one window into a fresh filesystem root (binary COPY, Parquet with
//! zstd, SHA-256, manifest); psql's writes CSV text. The table is generated in the database
//! from its row numbers (deterministic, no random source).

use std::process::Command;

use lake_testing::measure::{Measure, lake_bin, median, setting, timed};
use lake_testing::postgres::{fresh_database, psql, server};

fn main() {
    let Some(server) = server() else { return };
    let rows = setting("LAKE_BENCH_ROWS", 1_000_000);
    let runs = setting("LAKE_BENCH_RUNS", 3).max(1);
    let bin = lake_bin(env!("CARGO_BIN_EXE_lake"));
    let url = fresh_database(&server, "extract");
    psql(
        &url,
        &format!(
            "CREATE TABLE orders AS SELECT
                i::bigint AS id,
                'customer ' || (i * 7919 % 100000) AS customer,
                (ARRAY['new','paid','shipped','returned'])[1 + i % 4]::varchar(12) AS status,
                round(((i * 104729 % 1000000) / 100.0)::numeric, 2)::numeric(12,2) AS amount,
                (i % 1000) / 7.0::double precision AS ratio,
                timestamptz '2024-01-01 00:00:00+00' + (i * interval '37 seconds') AS updated_at,
                timestamp '2024-01-01 00:00:00' + (i * interval '11 seconds') AS seen,
                date '2020-01-01' + (i % 1500)::int AS born,
                i % 3 = 0 AS active,
                jsonb_build_object('n', i % 10, 'tag', 't' || (i % 5)) AS attrs
             FROM generate_series(1::bigint, {rows}) AS i"
        ),
    );
    println!("PostgreSQL extract: {rows} rows, {runs} runs each, in turn");
    println!(
        "| shape | lake ingest | peak RSS | psql \\copy TO STDOUT | RSS | wall ratio | lake Parquet | psql CSV |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (shape, select, keys) in [
        (
            "wide (10 columns)",
            "SELECT * FROM orders",
            "table = \"orders\"".to_owned(),
        ),
        (
            "narrow (2 columns)",
            "SELECT id, amount FROM orders",
            "query = \"SELECT id, amount FROM orders\"".to_owned(),
        ),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(
            dir.join("lake.toml"),
            format!(
                "[lake]\nname = \"x\"\nroot = \"lake\"\n\n[sources.orders]\nkind = \"postgres\"\nurl = \"${{env:PG_URL}}\"\n{keys}\n"
            ),
        )
        .unwrap();
        let out = dir.join("out.csv");
        let (mut lake_m, mut psql_m): (Vec<Measure>, Vec<Measure>) = (Vec::new(), Vec::new());
        let (mut parquet_bytes, mut csv_bytes) = (0, 0);
        for _ in 0..runs {
            let _ = std::fs::remove_dir_all(dir.join("lake"));
            lake_m.push(timed(
                Command::new(&bin)
                    .current_dir(dir)
                    .env("PG_URL", &url)
                    .env_remove("RUST_LOG")
                    .args(["-q", "ingest", "orders", "--date", "2024-05-01"]),
            ));
            let window = dir.join("lake/raw/orders/ingest_date=2024-05-01");
            parquet_bytes = std::fs::read_dir(&window)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
                .map(|e| e.metadata().unwrap().len())
                .sum::<u64>();
            psql_m.push(timed(Command::new("sh").args([
                "-c",
                &format!(
                    "psql '{url}' -X -q -c \"\\copy ({select}) TO STDOUT WITH (FORMAT csv)\" > '{}'",
                    out.display()
                ),
            ])));
            csv_bytes = std::fs::metadata(&out).unwrap().len();
        }
        let (l, p) = (median(lake_m), median(psql_m));
        println!(
            "| {shape} | {:.2} s | {:.1} MiB | {:.2} s | {:.1} MiB | {:.2}× | {:.1} MiB | {:.1} MiB |",
            l.wall,
            l.rss_mib(),
            p.wall,
            p.rss_mib(),
            l.wall / p.wall,
            parquet_bytes as f64 / 1048576.0,
            csv_bytes as f64 / 1048576.0
        );
    }
}
