//! A source of your own: a tool built on lake implements [`Source`] and runs a pipeline with it.
//!
//! ```sh
//! cargo run --example custom_source -- /tmp/meters 2024-05-01
//! ```
//!
//! The program registers a source kind, `kind = "meters"`, with one call
//! (`lake::kinds().source(MetersKind)`): lake.toml then declares the source with that kind and
//! its own key (`meters = 3`), checked at its line like lake's own kinds. (A program that builds
//! its source itself can declare it `kind = "program"` and hand it over with
//! [`Lake::with_source`].) Everything else is lake's: the window folder
//! `raw/meters/ingest_date=…/` committed exactly once by its manifest, the SHA-256 of what
//! landed, the SQL step, the ledger. Here the "API" is a generator of meter readings (one CSV per
//! daily window, streamed in chunks: a source never holds a whole object in memory); a real
//! one would page through a service or read a queue.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use lake::Lake;
use lake::core::backend::BackendEnv;
use lake::core::chrono::{Datelike, NaiveDate, Utc};
use lake::core::config::{ConfigCx, SourceSpec};
use lake::core::doctor::Check;
use lake::core::ledger::{RunRecord, Status};
use lake::core::run::RunOptions;
use lake::core::source::{SourceConfig, SourceKind, SourceObject, Window};
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

/// `kind = "meters"`: the generator as a source kind, with its one key.
#[derive(Debug)]
struct MetersKind;

/// Its keys, as written in `[sources.<name>]` (besides the keys every source has).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MetersKeys {
    /// How many meters report (1 to 1000).
    meters: u32,
}

impl SourceKind for MetersKind {
    fn name(&self) -> &'static str {
        "meters"
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn SourceConfig>> {
        let keys: MetersKeys = cx.own()?;
        if !(1..=1000).contains(&keys.meters) {
            cx.value(&cx.key_of("meters"), "from 1 to 1000 meters");
            return None;
        }
        Some(Arc::new(MetersConfig {
            meters: keys.meters,
        }))
    }
}

/// A checked `kind = "meters"` source.
#[derive(Debug)]
struct MetersConfig {
    meters: u32,
}

#[async_trait]
impl SourceConfig for MetersConfig {
    fn describe(&self, spec: &SourceSpec) -> String {
        format!(
            "(meters, line {}): {} meters → raw/{}/ingest_date=<date>/",
            spec.line, self.meters, spec.name
        )
    }

    async fn open(&self, _spec: &SourceSpec, _env: &BackendEnv) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(MeterReadings {
            meters: self.meters,
        }))
    }

    /// `lake doctor`'s check: here only what it will read (a real source would ask its API).
    async fn doctor(&self, spec: &SourceSpec, _env: &BackendEnv) -> Vec<Check> {
        vec![Check::pass(
            format!("source {}", spec.name),
            format!("{} meters", self.meters),
        )]
    }
}

/// The kinds this program offers: lake's and its own.
fn kinds() -> lake::core::kinds::Kinds {
    lake::kinds().source(MetersKind)
}

/// Any error, boxed: this example's error type (a real tool would have its own).
type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const LAKE_TOML: &str = r#"
[lake]
name = "meters"
root = "lake"

[sources.meters]
kind = "meters"           # registered by this program: lake::kinds().source(MetersKind)
meters = 3

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

/// Write `toml` as lake.toml into `dir`, run it for `date` with the generator, and return the run's
/// record and the refined rows as CSV lines.
async fn run(
    dir: &std::path::Path,
    toml: &str,
    date: NaiveDate,
) -> AnyResult<(RunRecord, Vec<String>)> {
    std::fs::create_dir_all(dir)?;
    let config = dir.join("lake.toml");
    std::fs::write(&config, toml)?;
    let lake = Lake::open_with(&config, None, &kinds()).await?;
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
    let (record, rows) = run(std::path::Path::new(&dir), LAKE_TOML, date).await?;
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
    async fn a_registered_source_kind_lands_once_and_feeds_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let date = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let (record, rows) = run(dir.path(), LAKE_TOML, date).await.unwrap();
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
        let (again, _) = run(dir.path(), LAKE_TOML, date).await.unwrap();
        assert_eq!(again.ingest[0].status, Status::UpToDate);
        assert_eq!(again.steps[0].status, Status::UpToDate);
    }

    #[tokio::test]
    async fn the_kinds_key_is_checked_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let date = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let bad = LAKE_TOML.replace("meters = 3", "meters = 0");
        let err = run(dir.path(), &bad, date).await.unwrap_err().to_string();
        let line = bad.lines().position(|l| l == "meters = 0").unwrap() + 1;
        assert!(err.contains(&format!("lake.toml:{line}")), "{err}");
        assert!(
            err.contains("sources.meters.meters: from 1 to 1000"),
            "{err}"
        );
        // The kind's doctor check is among lake doctor's.
        std::fs::write(dir.path().join("lake.toml"), LAKE_TOML).unwrap();
        let lake = Lake::open_with(dir.path().join("lake.toml"), None, &kinds())
            .await
            .unwrap();
        let checks = lake.doctor().await;
        let mine = checks.iter().find(|c| c.name == "source meters").unwrap();
        assert_eq!((mine.mark(), mine.detail.as_str()), ("✓", "3 meters"));
        let typo = LAKE_TOML.replace("meters = 3", "meter = 3");
        let err = run(dir.path(), &typo, date).await.unwrap_err().to_string();
        assert!(err.contains("unknown field `meter`"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_program_source_is_handed_over_with_with_source() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("lake.toml");
        let program = LAKE_TOML.replace("kind = \"meters\"", "kind = \"program\"");
        let program = program.replace("meters = 3\n", "");
        std::fs::write(&config, &program).unwrap();
        let date = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let lake = Lake::open(&config, None)
            .await
            .unwrap()
            .with_source(Arc::new(MeterReadings { meters: 3 }))
            .unwrap();
        let record = lake.run(&RunOptions::new(date)).await.unwrap();
        assert_eq!(record.status, Status::Succeeded, "{record:#?}");
        // A program source nobody provided is an error before anything runs.
        let lake = Lake::open(&config, None).await.unwrap();
        let err = lake.run(&RunOptions::new(date)).await.unwrap_err();
        assert!(err.to_string().contains("Lake::with_source"), "{err}");
        // And with_source refuses a source declared with another kind.
        std::fs::write(&config, LAKE_TOML).unwrap();
        let lake = Lake::open_with(&config, None, &kinds()).await.unwrap();
        let err = lake
            .with_source(Arc::new(MeterReadings { meters: 1 }))
            .unwrap_err();
        assert!(err.to_string().contains("kind = \"program\""), "{err}");
    }
}
