//! # lake-ingest
//!
//! Sources of raw data, each a [`Source`](lake_core::Source): [`FileSource`] for local paths and
//! globs, [`HttpSource`] for one GET per window, [`KaggleSource`] for a Kaggle dataset, and
//! [`Extracting`] around any of them to unpack archives (`extract = true`). [`build_sources`]
//! turns a pipeline's `[sources.*]` tables into sources. Landing a window exactly once
//! (manifest with put-if-absent) is written once in [`lake_core::publish::land`], for every
//! source and every store.

mod archive;
mod file;
mod http;
mod kaggle;
mod reach;

use std::collections::BTreeMap;
use std::sync::Arc;

use lake_core::Result;
use lake_core::Source;
use lake_core::config::{Pipeline, SourceSpecKind};
use lake_core::run::EnvLookup;

pub use archive::Extracting;
pub use file::FileSource;
pub use http::HttpSource;
pub use kaggle::KaggleSource;

/// The pipeline's sources, by name; `env` resolves `${env:…}` values when a source needs them.
/// `kind = "program"` sources are not among them: the embedding program provides those.
pub fn build_sources(
    pipeline: &Pipeline,
    env: EnvLookup,
) -> Result<BTreeMap<String, Arc<dyn Source>>> {
    let mut out: BTreeMap<String, Arc<dyn Source>> = BTreeMap::new();
    for spec in pipeline.sources.values() {
        let source: Arc<dyn Source> = match &spec.kind {
            SourceSpecKind::File {
                patterns,
                follow_symlinks,
            } => Arc::new(
                FileSource::new(&spec.name, patterns.clone()).follow_symlinks(*follow_symlinks),
            ),
            SourceSpecKind::Http(http) => Arc::new(HttpSource::new(
                &spec.name,
                (**http).clone(),
                Arc::clone(&env),
            )?),
            SourceSpecKind::Kaggle(k) => Arc::new(KaggleSource::new(
                &spec.name,
                (**k).clone(),
                Arc::clone(&env),
            )?),
            // The embedding program provides it.
            SourceSpecKind::Program => continue,
            #[allow(unreachable_patterns)]
            _ => {
                return Err(lake_core::Error::NotImplemented {
                    operation: "this source kind",
                    implementer: "lake-ingest".into(),
                });
            }
        };
        let source = match &spec.extract {
            Some(x) => Arc::new(Extracting::new(source, x.clone())?),
            None => source,
        };
        out.insert(spec.name.clone(), source);
    }
    Ok(out)
}

/// POST `body` as JSON to `url` (a run's notice to a webhook), within 10 seconds. The error
/// never contains the URL, which is a secret.
pub async fn post_json(url: &str, body: &serde_json::Value) -> Result<u16, String> {
    // No Referer and no redirects: the URL is a secret, and a redirect would send it along.
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .referer(false)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.without_url().to_string())?;
    let response = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).map_err(|e| e.to_string())?)
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(format!("the webhook answered {status}"))
    }
}
