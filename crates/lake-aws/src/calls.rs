//! What every AWS backend's calls share: the service error with its code, retrying throttled
//! calls with lake's one backoff policy, and reading the end of a (gzipped) log in S3.

use std::fmt;
use std::io::Read;
use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use bytes::Bytes;
use lake_core::zone::{DynZoneStore, Key, ZoneStoreExt};
use lake_core::{Cause, Classify, Error, ErrorKind, Result};
use sha2::{Digest, Sha256};

/// How much of a step's log is kept (its end).
pub(crate) const LOG_TAIL: usize = 64 * 1024;

/// An error from EMR or S3, with the service's code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The service's error code (`ThrottlingException`, `AccessDeniedException`, …).
    pub code: Option<String>,
    /// What it said.
    pub message: String,
}

impl ApiError {
    /// An error with a code.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: Some(code.to_owned()),
            message: message.into(),
        }
    }

    /// The request was throttled: wait and try again.
    pub fn is_throttling(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some(
                "ThrottlingException"
                    | "Throttling"
                    | "RequestLimitExceeded"
                    | "TooManyRequestsException"
                    | "SlowDown"
            )
        )
    }

    /// Worth another try: throttled, or a server-side fault (`InternalServerError`,
    /// `ServiceUnavailable`, …). A request that got no answer (no credentials, no network) is
    /// not: it fails at once with its cause.
    pub fn is_retryable(&self) -> bool {
        self.is_throttling()
            || matches!(
                self.code.as_deref(),
                Some(
                    "InternalServerError"
                        | "InternalServerException"
                        | "InternalFailure"
                        | "ServiceUnavailable"
                        | "RequestTimeout"
                        | "RequestTimeoutException"
                )
            )
    }

    /// The caller is not allowed to make the request.
    pub fn is_access_denied(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation")
        ) || self.message.contains("not authorized to perform")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(c) => write!(f, "{c}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ApiError {}

/// lake-aws's error: what an AWS call answered, classified (a denial is fixed in IAM, not by
/// trying again; a throttle or a fault of the service is worth a retry). It reaches lake-core's
/// [`Error`] as the [`Cause`] of a store, source or cluster failure.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// An S3 request was denied: the action and resource it needed.
    #[error(
        "AccessDenied: this identity may not {action} on {resource} ({detail}). A statement that allows it: \
         {{\"Effect\": \"Allow\", \"Action\": \"{action}\", \"Resource\": \"{resource}\"}}; \
         `lake iam-policy` prints the whole policy this lake.toml needs"
    )]
    Denied {
        /// The IAM action (`s3:PutObject`).
        action: &'static str,
        /// The resource's ARN.
        resource: String,
        /// What the service said.
        detail: String,
    },
    /// A call of a backend was denied.
    #[error(
        "{api}\n  → {operation} was denied.{} `lake iam-policy` prints the policy this pipeline needs; `lake doctor` checks it.",
        needs.as_ref().map(|n| format!(" It needs {n}.")).unwrap_or_default()
    )]
    CallDenied {
        /// The operation (`start job x`).
        operation: String,
        /// The service's answer.
        api: ApiError,
        /// What it needs, when the operation has a known cause.
        needs: Option<String>,
    },
    /// The service answered with another error, or none came (no network, no credentials).
    #[error("{0}")]
    Api(ApiError),
}

impl Classify for AwsError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Denied { .. } | Self::CallDenied { .. } => ErrorKind::Refused,
            Self::Api(e) if e.is_access_denied() => ErrorKind::Refused,
            Self::Api(_) => ErrorKind::Transient,
        }
    }
}

pub(crate) fn api_error<E: ProvideErrorMetadata + std::error::Error + 'static>(e: &E) -> ApiError {
    ApiError {
        code: e.code().map(str::to_owned),
        // No service message (a connection or credentials error): its causes, in words.
        message: e
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| lake_core::run::error_chain(e)),
    }
}

/// Call `op`, waiting and retrying (`attempts` in all, the first wait `backoff`, doubling) while
/// it is throttled or the service fails on its side; any other error is returned at once.
pub(crate) async fn retrying<T, F, Fut>(
    attempts: u32,
    backoff: Duration,
    operation: &str,
    op: F,
) -> std::result::Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = std::result::Result<T, ApiError>>,
{
    let mut delays =
        lake_core::retry::Backoff::retries(attempts, backoff, Duration::from_secs(60)).delays();
    loop {
        match op().await {
            Err(e) if e.is_retryable() => match delays.next() {
                Some(wait) => {
                    tracing::debug!("{operation}: {e}; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// An S3 object (a log file) by its `s3://bucket/key` URL, or `None` when it does not exist
/// (yet).
pub(crate) async fn read_s3_object(
    s3: &aws_sdk_s3::Client,
    url: &str,
) -> std::result::Result<Option<Vec<u8>>, ApiError> {
    let (bucket, key) = url
        .strip_prefix("s3://")
        .and_then(|r| r.split_once('/'))
        .ok_or_else(|| ApiError::new("InvalidUrl", format!("{url} is not s3://bucket/key")))?;
    match s3.get_object().bucket(bucket).key(key).send().await {
        Ok(out) => {
            let body = out.body.collect().await.map_err(|e| ApiError {
                code: None,
                message: format!("reading {url}: {e}"),
            })?;
            Ok(Some(body.to_vec()))
        }
        Err(e) => {
            let e = api_error(&e);
            if matches!(e.code.as_deref(), Some("NoSuchKey" | "NotFound")) {
                Ok(None)
            } else {
                Err(e)
            }
        }
    }
}

/// The last [`LOG_TAIL`] bytes of a log read from `url` as text, unpacked when it ends in
/// `.gz`. A Spark stderr can unpack to hundreds of MiB, so it is decompressed in chunks and
/// only the tail carried along.
pub(crate) fn log_tail(url: &str, raw: Vec<u8>) -> Result<String> {
    let mut tail = Vec::with_capacity(2 * LOG_TAIL);
    if url.ends_with(".gz") {
        let mut gz = flate2::read::MultiGzDecoder::new(&raw[..]);
        let mut buf = vec![0u8; LOG_TAIL];
        loop {
            let n = gz.read(&mut buf).map_err(|source| Error::Io {
                action: "decompress",
                path: url.into(),
                source,
            })?;
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * LOG_TAIL {
                tail.drain(..tail.len() - LOG_TAIL);
            }
        }
    } else {
        tail = raw;
    }
    let start = tail.len().saturating_sub(LOG_TAIL);
    Ok(String::from_utf8_lossy(&tail[start..]).into_owned())
}

/// The environment of a step as `K=V` pairs, refusing secrets: a step's arguments on EMR and
/// EMR Serverless are visible to anyone who can describe the cluster or the job run.
pub(crate) fn plain_env(
    step: &str,
    env: &[(String, lake_core::config::Secret)],
) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (k, v) in env {
        if v.is_sensitive() {
            return Err(Error::Invalid {
                what: format!("step {step}: env.{k}"),
                message: "a secret (${env:…}) cannot be passed to an EMR or EMR Serverless step: its arguments are visible in the console and the API. Read it on the cluster (AWS Secrets Manager, SSM Parameter Store) instead".into(),
            });
        }
        out.push((k.clone(), v.expose().to_owned()));
    }
    Ok(out)
}

/// A backend's error for a failed call: an access denial says what it needs (`needs`, when
/// the operation has a known cause) and where the policy is, and is not retried.
pub(crate) fn backend_error(
    backend: &str,
    operation: &str,
    e: ApiError,
    needs: Option<String>,
) -> Error {
    let cause = if e.is_access_denied() {
        AwsError::CallDenied {
            operation: operation.to_owned(),
            api: e,
            needs,
        }
    } else {
        AwsError::Api(e)
    };
    Error::Cluster {
        backend: backend.into(),
        operation: operation.into(),
        source: Box::new(Cause::new(cause)),
    }
}

/// Put `bytes` at `_lake/code/<hash>/<name>` of `store` (content-addressed, so uploads are
/// idempotent) and return its URL; without `upload`, only the URL (for a plan).
pub(crate) async fn upload_code(
    store: &DynZoneStore,
    name: &str,
    bytes: Bytes,
    upload: bool,
) -> Result<String> {
    let hash = hex::encode(Sha256::digest(&bytes));
    let key = Key::new(format!("_lake/code/{}/{name}", &hash[..16]))?;
    if upload && store.head(&key).await.is_err() {
        store.put_bytes(&key, bytes).await?;
    }
    Ok(store.url_of(key.as_str()))
}

/// A step's application: an `s3://` path as it is, a local file uploaded with
/// [`upload_code`].
pub(crate) async fn upload_app(store: &DynZoneStore, path: &str, upload: bool) -> Result<String> {
    if path.starts_with("s3://") {
        return Ok(path.to_owned());
    }
    let bytes = tokio::fs::read(path).await.map_err(|source| Error::Io {
        action: "read",
        path: path.into(),
        source,
    })?;
    let name = std::path::Path::new(path)
        .file_name()
        .map_or_else(|| "app".into(), |n| n.to_string_lossy().into_owned());
    upload_code(store, &name, Bytes::from(bytes), upload).await
}
