//! # lake-aws
//!
//! lake on AWS. [`Aws`] is the one place AWS clients are made (the SDK's default credential
//! chain, region, endpoints, retries and timeouts, with the `[aws]` table of lake.toml on
//! top). [`S3ZoneStore`] keeps the zones under an S3 prefix and passes the same
//! [`ZoneStore`](lake_core::ZoneStore) conformance suite as the local stores.
//! [`aws_checks`] and [`iam_policy`] are what `lake doctor` and `lake iam-policy` print.

pub mod athena;
mod calls;
mod client;
pub mod doctor;
pub mod emr;
pub mod glue;
mod glue_kind;
mod policy;
mod s3;
mod s3_source;
pub mod secrets;
pub mod serverless;
mod settings;

pub use calls::{ApiError, AwsError};
pub use client::Aws;
pub use doctor::aws_checks;
pub use emr::EmrBackend;
pub use glue::GlueCatalog;
pub use glue_kind::{GlueConfig, GlueKind};
pub use policy::iam_policy;
pub use s3::{MIN_PART, S3ZoneStore};
pub use s3_source::{S3Source, S3SourceKind, S3SourceSpec};
pub use serverless::ServerlessBackend;
pub use settings::{AwsConfig, AwsSettings, AwsSpec, Sse};
