//! The S3 store the tests use, on the emulator of `lake_testing::emulator`.

#![allow(dead_code, unreachable_pub)]

use lake_aws::AwsSpec;
use lake_aws::{Aws, MIN_PART, S3ZoneStore};

/// S3 tests run one at a time: each resets the emulator first.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub use lake_testing::emulator::endpoint;

/// Reset the emulator, create `bucket`, and open a store under `bucket/lake` with 5 MiB parts.
pub async fn fresh_store(endpoint: &str, bucket: &str) -> S3ZoneStore {
    lake_testing::emulator::reset(endpoint);
    let aws = Aws::load(&AwsSpec {
        region: Some("us-east-1".into()),
        max_attempts: 3,
        connect_timeout: std::time::Duration::from_secs(5),
        operation_timeout: std::time::Duration::from_secs(120),
        ..AwsSpec::default()
    })
    .await;
    let client = aws.s3();
    client
        .create_bucket()
        .bucket(bucket)
        .send()
        .await
        .expect("create the test bucket");
    S3ZoneStore::new(client, bucket, "lake").with_parts(MIN_PART, 4)
}
