//! # lake-ingest
//!
//! Sources of raw data, each a [`Source`](lake_core::Source): [`FileSource`] for local paths and
//! globs, [`HttpSource`] for one GET per window, [`KaggleSource`] for a Kaggle dataset, and
//! [`Extracting`] around any of them to unpack archives (`extract = true`). Each is a source
//! kind ([`FileKind`], [`HttpKind`], [`KaggleKind`]) that reads its own keys of a
//! `[sources.*]` table and opens its source for a run. Landing a window exactly once
//! (manifest with put-if-absent) is written once in [`lake_core::publish::land`], for every
//! source and every store.

mod archive;
mod config;
mod file;
mod http;
mod kaggle;
mod paginate;
mod reach;

pub use archive::Extracting;
pub use config::{
    FileKind, FileSpec, HttpAuth, HttpKind, HttpSpec, KaggleKind, KaggleSpec, Transfer,
};
pub use file::FileSource;
pub use http::HttpSource;
pub use kaggle::KaggleSource;
pub use paginate::Paginate;

/// Why a webhook notice was not delivered. Never contains the URL, which is a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The request could not be made or sent (its error without the URL).
    #[error("the request failed")]
    Request(#[source] reqwest::Error),
    /// The webhook answered with a status other than 2xx.
    #[error("the webhook answered {0}")]
    Status(reqwest::StatusCode),
}

/// POST `body` as JSON to `url` (a run's notice to a webhook), within 10 seconds; the status
/// it answered.
pub async fn post_json(url: &str, body: &serde_json::Value) -> Result<u16, WebhookError> {
    let failed = |e: reqwest::Error| WebhookError::Request(e.without_url());
    // No Referer and no redirects: the URL is a secret, and a redirect would send it along.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .referer(false)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(failed)?;
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).expect("a JSON value serializes"))
        .send()
        .await
        .map_err(failed)?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(WebhookError::Status(status))
    }
}
