//! A source of your own: a tool built on lake implements [`Source`] and runs a pipeline with it.
//!
//! ```sh
//! cargo run --example custom_source -- /tmp/meters 2024-05-01
//! ```
//!
//! lake.toml declares the source with `kind = "program"`; the program hands lake its
//! implementation with [`Lake::with_source`]. Everything else is lake's: the window folder
//! `raw/meters/ingest_date=…/` committed exactly once by its manifest, the SHA-256 of what
//! landed, the SQL step, the ledger. Here the "API" is a generator of meter readings (one CSV per
//! daily window, streamed in chunks: a source never holds a whole object in memory); a real
//! one would page through a service or read a queue.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use lake::Lake;
use lake::core::chrono::{Datelike, NaiveDate, Utc};
use lake::core::ledger::{RunRecord, Status};
use lake::core::run::RunOptions;
use lake::core::source::{SourceObject, Window};
use lake::core::zone::ByteStream;
use lake::core::{Result, Source};

/// Readings of `meters` meters every hour of a window's days, as CSV.
#[derive(Debug)]
struct MeterReadings {
    meters: u32,
}

impl MeterReadings {
    /// One day's CSV lines, in chunks of one meter each.
    fn day(&self, day: NaiveDate) -> impl Iterator<Item = Bytes> + Send + 'static {
        let meters = self.meters;
        (0..meters).map(move |m| {
            let mut chunk = String::new();
            for hour in 0..24 {
                // A deterministic "consumption": meter, day of year and hour.
                let kwh = f64::from((m * 7 + day.ordinal() * 3 + hour * 11) % 50) / 10.0;
                chunk.push_str(&format!("m{m:03},{day}T{hour:02}:00:00,{kwh:.1}\n"));
            }
            Bytes::from(chunk)
        })
    }
}

#[async_trait]
impl Source for MeterReadings {
    fn name(&self) -> &str {
        "meters"
    }

    async fn objects(&self, window: &Window) -> Result<Vec<SourceObject>> {
        Ok(vec![SourceObject {
            name: format!("readings-{}.csv", window.start),
            size: None,
            content_type: Some("text/csv".into()),
            origin: "generator://meters".into(),
        }])
    }

    async fn open(&self, window: &Window, _object: &SourceObject) -> Result<ByteStream> {
        let header = std::iter::once(Bytes::from_static(b"meter,time,kwh\n"));
        let days: Vec<NaiveDate> = window
            .start
            .iter_days()
            .take_while(|d| *d < window.end)
            .collect();
        let body: Vec<Bytes> = days.into_iter().flat_map(|d| self.day(d)).collect();
        Ok(Box::pin(futures::stream::iter(
            header.chain(body).map(Ok::<_, lake::core::Error>),
        )))
    }
}

/// Any error, boxed: this example's error type (a real tool would have its own).
type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const LAKE_TOML: &str = r#"
[lake]
name = "meters"
root = "lake"

[sources.meters]
kind = "program"          # provided by this program: Lake::with_source

[steps.daily]
kind = "sql"
inputs = ["raw/meters@date"]
output = "refined/meters_daily"
sql = """
SELECT meter, CAST(SUBSTR(time, 1, 10) AS DATE) AS day, ROUND(SUM(CAST(kwh AS DOUBLE)), 1) AS kwh
FROM meters GROUP BY meter, SUBSTR(time, 1, 10)
"""
expect = ["kwh >= 0"]
"#;

/// Write the lake.toml into `dir`, run it for `date` with the generator, and return the run's
/// record and the refined rows as CSV lines.
async fn run(dir: &std::path::Path, date: NaiveDate) -> AnyResult<(RunRecord, Vec<String>)> {
    std::fs::create_dir_all(dir)?;
    let config = dir.join("lake.toml");
    std::fs::write(&config, LAKE_TOML)?;
    let lake = Lake::open(&config, None)
        .await?
        .with_source(Arc::new(MeterReadings { meters: 3 }))?;
    let record = lake.run(&RunOptions::new(date)).await?;
    let ctx = lake.query_session().await?;
    let batches = ctx
        .sql("SELECT meter, CAST(day AS VARCHAR) AS day, kwh FROM refined.meters_daily ORDER BY meter")
        .await?
        .collect()
        .await?;
    let mut rows = Vec::new();
    for b in &batches {
        let text = lake::local::engine::datafusion::arrow::util::display::ArrayFormatter::try_new;
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| text(c.as_ref(), &Default::default()))
            .collect::<std::result::Result<_, _>>()?;
        for r in 0..b.num_rows() {
            rows.push(
                cols.iter()
                    .map(|c| c.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
    }
    Ok((record, rows))
}

#[tokio::main]
#[cfg_attr(test, allow(dead_code))]
async fn main() -> AnyResult<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "target/meters".to_owned());
    let date = match args.next() {
        Some(d) => NaiveDate::parse_from_str(&d, "%Y-%m-%d")?,
        None => Utc::now().date_naive(),
    };
    let (record, rows) = run(std::path::Path::new(&dir), date).await?;
    println!("run {}: {:?}", record.run_id, record.status);
    for r in rows {
        println!("{r}");
    }
    if record.status != Status::Succeeded {
        std::process::exit(1);
    }
    Ok(())
}

/// `cargo test` runs this example (Cargo.toml: `test = true`).
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_program_source_lands_once_and_feeds_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let date = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let (record, rows) = run(dir.path(), date).await.unwrap();
        assert_eq!(record.status, Status::Succeeded, "{record:#?}");
        assert_eq!(record.ingest[0].status, Status::Succeeded);
        // Three meters, one day: 24 readings each summed here from the generator's formula.
        let want: Vec<String> = (0..3u32)
            .map(|m| {
                let sum: u32 = (0..24)
                    .map(|h| (m * 7 + date.ordinal() * 3 + h * 11) % 50)
                    .sum();
                format!("m{m:03},2024-05-01,{:.1}", f64::from(sum) / 10.0)
            })
            .collect();
        assert_eq!(rows, want);
        // The window is committed: a second run fetches nothing and the step is up to date.
        let (again, _) = run(dir.path(), date).await.unwrap();
        assert_eq!(again.ingest[0].status, Status::UpToDate);
        assert_eq!(again.steps[0].status, Status::UpToDate);
    }

    #[tokio::test]
    async fn the_source_must_be_declared_as_a_program_source() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("lake.toml");
        std::fs::write(
            &config,
            LAKE_TOML.replace("kind = \"program\"", "kind = \"file\"\npath = \"x\""),
        )
        .unwrap();
        let lake = Lake::open(&config, None).await.unwrap();
        let err = lake
            .with_source(Arc::new(MeterReadings { meters: 1 }))
            .unwrap_err();
        assert!(err.to_string().contains("kind = \"program\""), "{err}");
        // And a program source nobody provided is an error before anything runs.
        std::fs::write(&config, LAKE_TOML).unwrap();
        let lake = Lake::open(&config, None).await.unwrap();
        let err = lake
            .run(&RunOptions::new(Utc::now().date_naive()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("Lake::with_source"), "{err}");
    }
}
