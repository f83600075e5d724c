//! The S3 emulator the tests run against: `bash .ci/run` starts moto's server on 127.0.0.1
//! and sets `AWS_ENDPOINT_URL` (with dummy credentials) and `LAKE_REQUIRE_S3=1`. Without an
//! endpoint the tests skip and say why; with `LAKE_REQUIRE_S3` they fail instead.

#![allow(dead_code, unreachable_pub)]

use lake_aws::{Aws, MIN_PART, S3ZoneStore};
use lake_core::config::AwsSpec;

/// S3 tests run one at a time: each resets the emulator first.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The emulator's URL, or `None` (after saying why) when the tests should skip.
pub fn endpoint() -> Option<String> {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var_os("LAKE_REQUIRE_S3").is_none(),
                "LAKE_REQUIRE_S3 is set but AWS_ENDPOINT_URL is not: the S3 emulator did not start"
            );
            eprintln!(
                "skipped: no S3 emulator (set AWS_ENDPOINT_URL, or run `bash .ci/run`, which starts moto)"
            );
            None
        }
    }
}

/// Reset the emulator, create `bucket`, and open a store under `bucket/lake` with 5 MiB parts.
pub async fn fresh_store(endpoint: &str, bucket: &str) -> S3ZoneStore {
    let reset = reqwest::Client::new()
        .post(format!("{}/moto-api/reset", endpoint.trim_end_matches('/')))
        .send()
        .await
        .expect("reset the emulator");
    assert!(
        reset.status().is_success(),
        "moto reset: {}",
        reset.status()
    );
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
