//! # lake-core
//!
//! The heart of `lake`: the pipeline model read from `lake.toml`, the three traits every
//! backend implements, and the logic written once on top of them — manifests, locks, the run
//! ledger and the orchestrator.
//!
//! ## Why this shape
//!
//! A batch data-lake pipeline is the same on a laptop and on AWS: fetch windows of raw data,
//! turn them into typed tables, aggregate, record what happened. What changes is *where* the
//! zones live and *where* the steps run. So the core speaks only in three small, object-safe
//! traits and never names a filesystem, S3 or an engine:
//!
//! - [`Source`](source::Source): where raw data comes from (files, HTTP, Kaggle);
//! - [`ZoneStore`](zone::ZoneStore): where zones live (a folder, memory, S3), with streaming
//!   put/get and an atomic put-if-absent;
//! - [`ClusterBackend`](cluster::ClusterBackend): where steps run (processes here, EMR there).
//!
//! Everything that must be right everywhere — exactly-once windows, atomic publishing, the lock,
//! the ledger, teardown on every path — is written once, against those traits, and tested with
//! their mocks (the dev-only lake-testing crate). A new backend is a new implementation, not a change here.
//!
//! ```
//! use lake_core::config::ConfigFile;
//!
//! let toml = r#"
//! [lake]
//! name = "demo"
//!
//! [sources.credit]
//! kind = "file"
//! path = "data/*.csv"
//!
//! [steps.report]
//! kind = "command"
//! command = ["python3", "report.py", "{date}"]
//! inputs = ["raw/credit"]
//! output = "refined/report"
//! "#;
//! let file = ConfigFile::parse("lake.toml", "/tmp/demo".into(), toml.to_owned()).unwrap();
//! // A program lists the backends it offers; lake-core names none (see `backend`).
//! let pipeline = file.pipeline(None, &lake_testing::backends()).unwrap();
//! assert_eq!(pipeline.order, ["report"]);
//! ```

pub mod backend;
pub mod catalog;
pub mod cluster;
pub mod config;
pub mod doctor;
mod error;
pub mod freshness;
pub mod fsck;
pub mod human;
pub mod kinds;
pub mod ledger;
pub mod lock;
pub mod publish;
pub mod retry;
pub mod run;
pub mod schedule;
pub mod scratch;
pub mod settings;
pub mod sink;
pub mod source;
pub mod table_format;
pub mod units;
pub mod zone;

/// Dates and times as lake uses them.
pub use async_trait::async_trait;
pub use chrono;
pub use error::{BoxError, Cause, Classify, Error, ErrorKind, Result, ValueError};

pub use cluster::ClusterBackend;
pub use source::Source;
pub use zone::{DynZoneStore, ZoneStore, ZoneStoreExt};
