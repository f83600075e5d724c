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
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let config = args
        .next()
        .unwrap_or_else(|| "examples/weather/lake.toml".to_owned());
    let date = match args.next() {
        Some(d) => NaiveDate::parse_from_str(&d, "%Y-%m-%d")?,
        None => Utc::now().date_naive(),
    };

    let lake = Lake::open(&config, None).await?;
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
    if let Some(out) = &lake.pipeline.steps[last].output {
        let sql = format!("SELECT * FROM {}.{} LIMIT 10", out.zone.as_str(), out.name);
        let batches = ctx.sql(&sql).await?.collect().await?;
        println!("{sql}\n{}", pretty_format_batches(&batches)?);
    }
    if record.status != lake::core::ledger::Status::Succeeded {
        std::process::exit(1);
    }
    Ok(())
}
