//! `kind = "kaggle"`: a Kaggle dataset through the Kaggle API's download endpoint.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::KaggleSpec;
use async_trait::async_trait;
use lake_core::Result;
use lake_core::run::EnvLookup;
use lake_core::source::{Source, SourceObject, Window};
use lake_core::zone::ByteStream;

use crate::http::Fetcher;

/// A Kaggle dataset, fetched as it is now each window: the whole dataset as
/// `<dataset>.zip`, or the listed `files` one by one.
///
/// Credentials come from `KAGGLE_USERNAME` and `KAGGLE_KEY`, else from `kaggle.json` in
/// `$KAGGLE_CONFIG_DIR` or `~/.kaggle`, as the Kaggle CLI reads them. They are looked up when a
/// window is fetched (so `lake validate` needs none) and never printed.
#[derive(Clone)]
pub struct KaggleSource {
    name: String,
    spec: KaggleSpec,
    env: EnvLookup,
    fetch: Fetcher,
}

impl std::fmt::Debug for KaggleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KaggleSource")
            .field("name", &self.name)
            .field(
                "dataset",
                &format!("{}/{}", self.spec.owner, self.spec.dataset),
            )
            .finish_non_exhaustive()
    }
}

/// `kaggle.json`.
#[derive(serde::Deserialize)]
struct KaggleJson {
    username: String,
    key: String,
}

impl KaggleSource {
    /// A source named `name`; `env` gives the credentials' variables and the config folder.
    pub fn new(name: impl Into<String>, spec: KaggleSpec, env: EnvLookup) -> Result<Self> {
        let name = name.into();
        let fetch = Fetcher::new(&name, &spec.transfer, false)?
        .with_auth_hint(
            "check the Kaggle credentials, and accept the dataset's rules on kaggle.com if it has any",
        );
        Ok(Self {
            name,
            spec,
            env,
            fetch,
        })
    }

    /// Use `base` as the first backoff (tests use a few milliseconds).
    pub fn with_base_backoff(mut self, base: Duration) -> Self {
        self.fetch.set_base_backoff(base);
        self
    }

    /// The user name and key, from the environment or `kaggle.json`.
    fn credentials(&self) -> Result<(String, String)> {
        let env = |k: &str| (self.env)(k).filter(|v| !v.is_empty());
        if let (Some(u), Some(k)) = (env("KAGGLE_USERNAME"), env("KAGGLE_KEY")) {
            return Ok((u, k));
        }
        let dir = match env("KAGGLE_CONFIG_DIR") {
            Some(d) => PathBuf::from(d),
            None => match env("HOME").or_else(|| env("USERPROFILE")) {
                Some(home) => PathBuf::from(home).join(".kaggle"),
                None => PathBuf::from(".kaggle"),
            },
        };
        let path = dir.join("kaggle.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            self.fetch.err(
                format!(
                    "no Kaggle credentials: set KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json \
                     (from kaggle.com → Settings → API → Create New Token) at {} \
                     (KAGGLE_CONFIG_DIR chooses the folder): {e}",
                    path.display()
                ),
                None,
            )
        })?;
        // serde_json's message names the line and column, never the values.
        let creds: KaggleJson = serde_json::from_str(&text).map_err(|e| {
            self.fetch.err(
                format!(
                    "{}: not a Kaggle credentials file ({{\"username\": …, \"key\": …}}): {e}",
                    path.display()
                ),
                None,
            )
        })?;
        Ok((creds.username, creds.key))
    }

    /// The download URL of the dataset, or of one of its files.
    fn url(&self, file: Option<&str>) -> Result<reqwest::Url> {
        let base = format!("{}/datasets/download", self.spec.endpoint);
        let mut url = reqwest::Url::parse(&base).map_err(|e| {
            self.fetch
                .err(format!("{base:?} is not a URL"), Some(Box::new(e)))
        })?;
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|()| self.fetch.err(format!("{base:?} cannot take a path"), None))?;
            path.push(&self.spec.owner).push(&self.spec.dataset);
            if let Some(f) = file {
                path.extend(f.split('/'));
            }
        }
        Ok(url)
    }
}

#[async_trait]
impl Source for KaggleSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn objects(&self, _window: &Window) -> Result<Vec<SourceObject>> {
        let slug = format!("{}/{}", self.spec.owner, self.spec.dataset);
        if self.spec.files.is_empty() {
            return Ok(vec![SourceObject {
                name: format!("{}.zip", self.spec.dataset),
                size: None,
                content_type: None,
                origin: format!("kaggle:{slug}"),
            }]);
        }
        Ok(self
            .spec
            .files
            .iter()
            .map(|f| SourceObject {
                name: f.clone(),
                size: None,
                content_type: None,
                origin: format!("kaggle:{slug}/{f}"),
            })
            .collect())
    }

    async fn open(&self, _window: &Window, object: &SourceObject) -> Result<ByteStream> {
        let file = (!self.spec.files.is_empty()).then_some(object.name.as_str());
        let url = self.url(file)?;
        let (user, key) = self.credentials()?;
        let shown = url.to_string();
        let secret = lake_core::config::Secret::sensitive(key.clone());
        let secrets = lake_core::config::Redactor::new([&secret])
            .with_basic_auth(&lake_core::config::Secret::plain(user.clone()), &secret);
        self.fetch
            .get(&shown, &url, &secrets, || {
                Ok(self
                    .fetch
                    .client()
                    .get(url.clone())
                    .basic_auth(&user, Some(&key)))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn spec() -> KaggleSpec {
        KaggleSpec {
            owner: "uciml".into(),
            dataset: "german-credit".into(),
            files: Vec::new(),
            endpoint: "http://127.0.0.1:9/api/v1".into(),
            transfer: crate::config::Transfer {
                connect_timeout: Duration::from_secs(1),
                read_timeout: Duration::from_secs(1),
                max_attempts: 1,
                max_bytes: 1 << 20,
                allow_private_redirects: false,
            },
        }
    }

    fn source(vars: &[(&str, &str)]) -> KaggleSource {
        let vars: std::collections::HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        KaggleSource::new("credit", spec(), Arc::new(move |k| vars.get(k).cloned())).unwrap()
    }

    #[test]
    fn credentials_come_from_the_environment_then_kaggle_json() {
        let s = source(&[("KAGGLE_USERNAME", "ann"), ("KAGGLE_KEY", "k1")]);
        assert_eq!(s.credentials().unwrap(), ("ann".into(), "k1".into()));

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kaggle.json"),
            r#"{"username":"bob","key":"k2"}"#,
        )
        .unwrap();
        let d = dir.path().to_str().unwrap();
        let s = source(&[("KAGGLE_CONFIG_DIR", d), ("KAGGLE_USERNAME", "only-user")]);
        assert_eq!(s.credentials().unwrap(), ("bob".into(), "k2".into()));

        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".kaggle")).unwrap();
        std::fs::write(
            home.path().join(".kaggle/kaggle.json"),
            r#"{"username":"cy","key":"secret-k3"#,
        )
        .unwrap();
        let s = source(&[("HOME", home.path().to_str().unwrap())]);
        let err = s.credentials().unwrap_err().to_string();
        assert!(err.contains("not a Kaggle credentials file"), "{err}");
        assert!(!err.contains("secret-k3"), "{err}");

        let s = source(&[("HOME", "/nonexistent")]);
        let err = s.credentials().unwrap_err().to_string();
        assert!(
            err.contains("set KAGGLE_USERNAME and KAGGLE_KEY")
                && err.contains("/nonexistent/.kaggle/kaggle.json"),
            "{err}"
        );
    }

    #[test]
    fn urls_name_the_dataset_and_file() {
        let s = source(&[]);
        assert_eq!(
            s.url(None).unwrap().as_str(),
            "http://127.0.0.1:9/api/v1/datasets/download/uciml/german-credit"
        );
        assert_eq!(
            s.url(Some("dir/a b.csv")).unwrap().as_str(),
            "http://127.0.0.1:9/api/v1/datasets/download/uciml/german-credit/dir/a%20b.csv"
        );
    }
}
