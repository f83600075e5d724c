//! The one place AWS clients are made.

use crate::AwsSpec;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

/// The SDK configuration for a pipeline's `[aws]` table, over the SDK's default chain:
/// credentials from the environment, profiles (`AWS_PROFILE`, SSO), container and instance
/// roles; the region from `[aws] region`, `AWS_REGION` or the profile; endpoints from
/// `[aws] endpoint_url`, `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_<SERVICE>`. Standard retry
/// mode with `max_attempts`, and connect and operation timeouts.
#[derive(Debug, Clone)]
pub struct Aws {
    sdk: SdkConfig,
    spec: AwsSpec,
}

impl Aws {
    /// Resolve the configuration: credentials stay lazy (resolved at the first request); the
    /// region comes from the SDK's default chain, which ends with the instance metadata
    /// service (a request) when nothing else names one.
    pub async fn load(spec: &AwsSpec) -> Self {
        let mut loader = Self::loader(spec);
        if let Some(r) = &spec.region {
            loader = loader.region(Region::new(r.clone()));
        }
        Self {
            sdk: loader.load().await,
            spec: spec.clone(),
        }
    }

    /// As [`load`](Self::load), but the region only from `[aws] region`, `AWS_REGION` /
    /// `AWS_DEFAULT_REGION` or the profile files: nothing is asked of the network (no instance
    /// metadata service) and no credentials, for commands such as `lake plan` that make no
    /// request.
    pub async fn load_offline(spec: &AwsSpec) -> Self {
        use aws_config::environment::region::EnvironmentVariableRegionProvider;
        use aws_config::meta::region::RegionProviderChain;
        use aws_config::profile::ProfileFileRegionProvider;
        let mut profile = ProfileFileRegionProvider::builder();
        if let Some(p) = &spec.profile {
            profile = profile.profile_name(p);
        }
        let region = RegionProviderChain::first_try(spec.region.clone().map(Region::new))
            .or_else(EnvironmentVariableRegionProvider::new())
            .or_else(profile.build())
            .region()
            .await;
        // No credentials either, and a region in any case: without one the SDK's credentials
        // and token chains look one up on the network. Nothing is sent, so the placeholder
        // reaches no request.
        let region = region.or(Some(Region::from_static("us-east-1")));
        Self {
            sdk: Self::loader(spec)
                .region(region)
                .no_credentials()
                .load()
                .await,
            spec: spec.clone(),
        }
    }

    fn loader(spec: &AwsSpec) -> aws_config::ConfigLoader {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(spec.max_attempts))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(spec.connect_timeout)
                    .operation_timeout(spec.operation_timeout)
                    .build(),
            );
        if let Some(p) = &spec.profile {
            loader = loader.profile_name(p);
        }
        if let Some(e) = &spec.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        loader
    }

    /// The `[aws]` table it was made from.
    pub fn spec(&self) -> &AwsSpec {
        &self.spec
    }

    /// The resolved SDK configuration.
    pub fn sdk(&self) -> &SdkConfig {
        &self.sdk
    }

    /// The region, if one was found.
    pub fn region(&self) -> Option<&str> {
        self.sdk.region().map(Region::as_ref)
    }

    /// The endpoint every service uses, if one is set.
    pub fn endpoint_url(&self) -> Option<&str> {
        self.sdk.endpoint_url()
    }

    /// An S3 client. Path-style addressing is on when `[aws] force_path_style` says so, or by
    /// default when an endpoint is set (S3-compatible servers rarely serve bucket subdomains).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let custom_endpoint =
            self.sdk.endpoint_url().is_some() || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let path_style = self.spec.force_path_style.unwrap_or(custom_endpoint);
        let conf = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(path_style)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    /// An EMR client, without the SDK's retries: the EMR backend retries its calls with lake's
    /// one policy ([`lake_core::retry`]), so a throttled call is not retried twice, and
    /// RunJobFlow (which a retry could turn into a second cluster) is not retried at all.
    pub fn emr(&self) -> aws_sdk_emr::Client {
        let conf = aws_sdk_emr::config::Builder::from(&self.sdk)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_emr::Client::from_conf(conf)
    }

    /// An EMR Serverless client, without the SDK's retries (the backend retries its calls with
    /// lake's one policy, as EMR's).
    pub fn emr_serverless(&self) -> aws_sdk_emrserverless::Client {
        let conf = aws_sdk_emrserverless::config::Builder::from(&self.sdk)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_emrserverless::Client::from_conf(conf)
    }

    /// A Glue client.
    pub fn glue(&self) -> aws_sdk_glue::Client {
        aws_sdk_glue::Client::new(&self.sdk)
    }

    /// An Athena client, without the SDK's retries: `lake query --engine athena` retries its
    /// calls with lake's one policy, so a throttled call is not retried twice.
    pub fn athena(&self) -> aws_sdk_athena::Client {
        let conf = aws_sdk_athena::config::Builder::from(&self.sdk)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .build();
        aws_sdk_athena::Client::from_conf(conf)
    }

    /// An IAM client.
    pub fn iam(&self) -> aws_sdk_iam::Client {
        aws_sdk_iam::Client::new(&self.sdk)
    }

    /// A Secrets Manager client.
    pub fn secretsmanager(&self) -> aws_sdk_secretsmanager::Client {
        aws_sdk_secretsmanager::Client::new(&self.sdk)
    }

    /// A Systems Manager client (Parameter Store).
    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        aws_sdk_ssm::Client::new(&self.sdk)
    }

    /// An STS client.
    pub fn sts(&self) -> aws_sdk_sts::Client {
        aws_sdk_sts::Client::new(&self.sdk)
    }
}

/// An AWS SDK error in words, for users: a service error as its code, message and request id
/// (`NoSuchBucket: The specified bucket does not exist (request id 4T2…)`); any other (no
/// credentials, a connection refused, a timeout) as its chain of causes, each in its own words.
/// Never the SDK's Debug dump of the raw response.
pub(crate) fn describe<E, R>(e: &aws_sdk_s3::error::SdkError<E, R>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    use aws_sdk_s3::error::ProvideErrorMetadata;
    use aws_sdk_s3::operation::RequestId;
    if let Some(code) = e.code() {
        let mut s = format!("{code}: {}", e.message().unwrap_or("(no message)"));
        if let Some(id) = e.meta().request_id() {
            s.push_str(&format!(" (request id {id})"));
        }
        return s;
    }
    lake_core::run::error_chain(e)
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::config::http::HttpResponse as Response;
    use aws_sdk_s3::error::{ErrorMetadata, SdkError};
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::primitives::SdkBody;

    #[test]
    fn service_errors_are_code_message_and_request_id_never_a_debug_dump() {
        let meta = ErrorMetadata::builder()
            .code("NoSuchBucket")
            .message("The specified bucket does not exist")
            .custom("aws_request_id", "4T2EXAMPLE")
            .build();
        let e: SdkError<GetObjectError, Response> = SdkError::service_error(
            GetObjectError::generic(meta),
            Response::new(404.try_into().unwrap(), SdkBody::from("<Error>…</Error>")),
        );
        assert_eq!(
            super::describe(&e),
            "NoSuchBucket: The specified bucket does not exist (request id 4T2EXAMPLE)"
        );
        let e: SdkError<GetObjectError, Response> = SdkError::timeout_error("operation timed out");
        let text = super::describe(&e);
        assert!(
            text.contains("timed out") && !text.contains("Response {"),
            "{text}"
        );
    }
}
