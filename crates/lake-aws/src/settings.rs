//! `[aws]`: how every AWS client of the pipeline is made (profile, region, endpoint, retries,
//! timeouts, server-side encryption). lake-aws owns the table: [`AwsSettings`] checks it when
//! lake.toml is loaded, and [`AwsSpec::of`] reads the checked table back.

use std::time::Duration;

use lake_core::config::{ConfigCx, Pipeline, parse_duration, secs};
use lake_core::settings::SettingsKind;
use serde::{Deserialize, Serialize};

/// `[aws]`: overrides of the AWS SDK's defaults (environment, profiles, instance roles).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// A profile of ~/.aws/config (else `AWS_PROFILE`, else `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The region (else `AWS_REGION` or the profile's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// An endpoint for every service (an S3-compatible server); else `AWS_ENDPOINT_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_url: Option<String>,
    /// Path-style S3 addressing (`endpoint/bucket/key`); default: true with an endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_path_style: Option<bool>,
    /// Attempts per request, standard retry mode (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Time to connect (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout: Option<String>,
    /// Longest time of one operation, retries included (default `10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_timeout: Option<String>,
    /// Server-side encryption of what lake writes: `"AES256"` (SSE-S3) or `"aws:kms"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sse: Option<String>,
    /// With `sse = "aws:kms"`: the KMS key id or ARN (default: the account's S3 key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// The KMS key the secrets lake.toml names (`${aws-secretsmanager:…}`, `${aws-ssm:…}`)
    /// are encrypted with, when it is not the AWS managed key: `lake iam-policy` allows
    /// `kms:Decrypt` on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_kms_key_id: Option<String>,
}

/// A checked `[aws]`: `None` leaves a setting to the SDK's default chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsSpec {
    /// Profile name.
    pub profile: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Endpoint for every service.
    pub endpoint_url: Option<String>,
    /// Path-style S3 addressing; `None`: on when an endpoint is set.
    pub force_path_style: Option<bool>,
    /// Attempts per request.
    pub max_attempts: u32,
    /// Time to connect.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// Longest time of one operation, retries included.
    #[serde(with = "secs")]
    pub operation_timeout: Duration,
    /// Server-side encryption of objects lake writes.
    pub sse: Option<Sse>,
    /// The customer managed KMS key of the secrets lake.toml names, if any.
    #[serde(default)]
    pub secrets_kms_key_id: Option<String>,
}

/// The defaults of an absent `[aws]`.
impl Default for AwsSpec {
    fn default() -> Self {
        Self {
            profile: None,
            region: None,
            endpoint_url: None,
            force_path_style: None,
            max_attempts: 3,
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(600),
            sse: None,
            secrets_kms_key_id: None,
        }
    }
}

impl AwsSpec {
    /// The pipeline's checked `[aws]`, or the defaults when this program did not register
    /// [`AwsSettings`].
    pub fn of(pipeline: &Pipeline) -> Self {
        pipeline.settings(AwsSettings.table()).unwrap_or_default()
    }
}

/// Server-side encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sse {
    /// SSE-S3 (`AES256`).
    S3,
    /// SSE-KMS, with a key id or ARN (`None`: the account's default S3 key).
    Kms(Option<String>),
}

/// The `[aws]` table's kind: register it with `Kinds::settings(AwsSettings)`.
#[derive(Debug, Clone, Copy)]
pub struct AwsSettings;

impl SettingsKind for AwsSettings {
    fn table(&self) -> &'static str {
        "aws"
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<serde_json::Value> {
        let a: AwsConfig = cx.own().unwrap_or_default();
        let spec = check(cx, &a);
        Some(serde_json::to_value(spec).expect("an AwsSpec serialises"))
    }
}

/// `a` checked; each problem reported at its key.
fn check(cx: &mut ConfigCx<'_, '_>, a: &AwsConfig) -> AwsSpec {
    if let Some(e) = &a.endpoint_url
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        cx.value(
            "aws.endpoint_url",
            format!("{e:?} is not an http:// or https:// URL"),
        );
    }
    if a.max_attempts == Some(0) {
        cx.value(
            "aws.max_attempts",
            "max_attempts counts the first try: at least 1",
        );
    }
    let sse = match (a.sse.as_deref(), &a.kms_key_id) {
        (None, None) => None,
        (Some("AES256"), None) => Some(Sse::S3),
        (Some("aws:kms"), key) => Some(Sse::Kms(key.clone())),
        (Some("AES256"), Some(_)) | (None, Some(_)) => {
            cx.key("aws.kms_key_id", "kms_key_id goes with sse = \"aws:kms\"");
            None
        }
        (Some(other), _) => {
            cx.value(
                "aws.sse",
                format!("unknown sse {other:?}: \"AES256\" (SSE-S3) or \"aws:kms\" (SSE-KMS)"),
            );
            None
        }
    };
    let defaults = AwsSpec::default();
    let mut duration = |key: &str, raw: &Option<String>, default: Duration| {
        raw.as_ref()
            .and_then(|t| parse_duration(t).map_err(|m| cx.value(key, m)).ok())
            .unwrap_or(default)
    };
    AwsSpec {
        profile: a.profile.clone(),
        region: a.region.clone(),
        endpoint_url: a.endpoint_url.clone(),
        force_path_style: a.force_path_style,
        max_attempts: a.max_attempts.unwrap_or(defaults.max_attempts).max(1),
        connect_timeout: duration(
            "aws.connect_timeout",
            &a.connect_timeout,
            defaults.connect_timeout,
        ),
        operation_timeout: duration(
            "aws.operation_timeout",
            &a.operation_timeout,
            defaults.operation_timeout,
        ),
        sse,
        secrets_kms_key_id: a.secrets_kms_key_id.clone(),
    }
}
