//! Run a pipeline through the library API, then query what it built.
//!
//! ```sh
//! cargo run --example run_pipeline -- examples/weather/lake.toml 2024-05-01
//! ```
//!
//! The same as `lake run` followed by `lake query`, without the CLI: open the lake.toml,
//! run it for a date with an observer that prints progress, and read a refined dataset with
//! SQL on the embedded engine.

use std::sync::Arc;

use lake::Lake;
use lake::core::chrono::{NaiveDate, Utc};
use lake::core::run::{Event, RunObserver, RunOptions};
use lake::local::engine::datafusion::arrow::util::pretty::pretty_format_batches;

struct Print;

impl RunObserver for Print {
    fn event(&self, event: &Event) {
        match event {
            Event::StepFinished { record } => eprintln!(
                "{}: {:?} ({} rows)",
                record.name,
                record.status,
                record.rows.unwrap_or(0)
            ),
            Event::Ingested { source, bytes, .. } => eprintln!("{source}: {bytes} bytes in raw/"),
            _ => {}
        }
    }
}

#[tokio::main]
#[cfg_attr(test, allow(dead_code))]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let config = args
        .next()
        .unwrap_or_else(|| "examples/weather/lake.toml".to_owned());
    let date = match args.next() {
        Some(d) => NaiveDate::parse_from_str(&d, "%Y-%m-%d")?,
        None => Utc::now().date_naive(),
    };
    let (record, table) = run(&config, date).await?;
    println!("{table}");
    if record.status != lake::core::ledger::Status::Succeeded {
        std::process::exit(1);
    }
    Ok(())
}

/// Run the pipeline of `config` for `date` and show the first rows of its last step's output.
async fn run(
    config: &str,
    date: NaiveDate,
) -> Result<(lake::core::ledger::RunRecord, String), Box<dyn std::error::Error>> {
    let lake = Lake::open(config, None).await?;
    let mut opts = RunOptions::new(date);
    opts.observer = Some(Arc::new(Print));
    let record = lake.run(&opts).await?;
    println!(
        "run {} of {}: {:?}",
        record.run_id, record.pipeline, record.status
    );

    // Every committed dataset is a table: raw.<source>, trusted.<dataset>, refined.<dataset>.
    let ctx = lake.query_session().await?;
    let last = lake
        .pipeline
        .order
        .last()
        .ok_or("the pipeline has no steps")?;
    let mut table = String::new();
    if let Some(out) = &lake.pipeline.steps[last].output {
        let sql = format!("SELECT * FROM {}.{} LIMIT 10", out.zone.as_str(), out.name);
        let batches = ctx.sql(&sql).await?.collect().await?;
        table = format!("{sql}\n{}", pretty_format_batches(&batches)?);
    }
    Ok((record, table))
}

/// `cargo test` runs this example (Cargo.toml: `test = true`) on a copy of the weather example.
#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_the_weather_example() {
        let dir = tempfile::tempdir().unwrap();
        let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/weather");
        for sub in ["", "data"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            for e in std::fs::read_dir(from.join(sub)).unwrap() {
                let e = e.unwrap();
                if e.file_type().unwrap().is_file() {
                    std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
                }
            }
        }
        let config = dir.path().join("lake.toml");
        let date = lake::core::chrono::NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let (record, table) = super::run(config.to_str().unwrap(), date).await.unwrap();
        assert_eq!(record.status, lake::core::ledger::Status::Succeeded);
        assert_eq!(record.steps.len(), 2);
        assert!(
            table.contains("weather_daily") && table.contains("temp_max"),
            "{table}"
        );
    }
}
