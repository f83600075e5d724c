//! # lake
//!
//! A batch data-lake pipeline in one file, `lake.toml`: fetch datasets into a **raw** zone,
//! turn them into **trusted** and **refined** zones with steps, and keep a ledger of every
//! run. The same file runs on this machine with no account (zones are folders, steps are
//! processes or the embedded engine) and, later, on AWS.
//!
//! This crate is the facade: it re-exports the workspace's crates behind features and offers
//! [`Lake`], the shortest way from a `lake.toml` to a run.
//!
//! ```no_run
//! # async fn demo() -> lake::core::Result<()> {
//! use lake::core::run::RunOptions;
//!
//! let lake = lake::Lake::open("examples/credit/lake.toml", None).await?;
//! let date = lake::core::chrono::Utc::now().date_naive();
//! let record = lake.run(&RunOptions::new(date)).await?;
//! println!("{} {}", record.run_id, record.status);
//! # Ok(()) }
//! ```
//!
//! Features: `local` (filesystem and memory zones, `backend = "local"`), `ingest` (sources),
//! `spark` (`backend = "spark"`), `postgres` (`[sinks.*]` of `kind = "postgres"`), `aws` (S3 zones, the AWS client factory, `backend = "emr"`),
//! `testing` (the EMR API mock). `local`, `ingest` and `spark` are on by default. The backends
//! a build offers are listed by [`backends`]; the core traits' mocks and the conformance suite
//! are in the dev-only `lake-testing` crate.

#[cfg(feature = "aws")]
pub use lake_aws as aws;
pub use lake_core as core;
#[cfg(feature = "ingest")]
pub use lake_ingest as ingest;
#[cfg(feature = "local")]
pub use lake_local as local;
#[cfg(feature = "postgres")]
pub use lake_postgres as postgres;
#[cfg(feature = "spark")]
pub use lake_spark as spark;

#[cfg(all(feature = "local", feature = "ingest"))]
mod notify;
#[cfg(all(feature = "local", feature = "ingest"))]
mod open;
#[cfg(all(feature = "local", feature = "ingest"))]
pub mod schedule;
#[cfg(all(feature = "local", feature = "ingest"))]
pub use open::{Lake, ProgramKind, ProgramSource, kinds, load, load_with, open_store};
