//! The source kinds of this crate (`file`, `http`, `kaggle`): each reads its own keys of a
//! `[sources.<name>]` with [`ConfigCx::own`], every problem at its line, and opens its
//! [`Source`] for a run.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lake_core::backend::BackendEnv;
use lake_core::config::model::StringOrList;
use lake_core::config::{
    ConfigCx, SourceSpec, Template, WINDOW_VARS, parse_bytes, parse_duration, secs,
};
use lake_core::run::EnvLookup;
use lake_core::source::{SourceConfig, SourceKind};
use lake_core::{Result, Source};
use serde::{Deserialize, Serialize};

use crate::{FileSource, HttpSource, KaggleSource};

/// The environment lookup a run gives its sources (`${env:…}`), else the process's.
fn env_of(env: &BackendEnv) -> EnvLookup {
    env.extensions
        .get::<EnvLookup>()
        .cloned()
        .unwrap_or_else(|| Arc::new(|v: &str| std::env::var(v).ok()))
}

/// `kind = "file"`: local files matched by paths or globs, relative to lake.toml.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    path: Option<StringOrList>,
    follow_symlinks: Option<bool>,
}

impl SourceKind for FileKind {
    fn name(&self) -> &'static str {
        "file"
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn SourceConfig>> {
        let keys: FileKeys = cx.own()?;
        let patterns = keys.path.map(|p| p.0).unwrap_or_default();
        let mut ok = true;
        if patterns.is_empty() {
            let at = cx.at().to_owned();
            cx.key(
                &at,
                "a file source needs `path`: a path or glob relative to lake.toml",
            );
            ok = false;
        }
        for (i, p) in patterns.iter().enumerate() {
            if p.trim().is_empty() {
                cx.value(&cx.key_of(&format!("path[{i}]")), "empty path");
                ok = false;
            } else if let Err(e) = glob::Pattern::new(p) {
                cx.value(
                    &cx.key_of("path"),
                    format!("{p:?} is not a valid glob: {e}"),
                );
                ok = false;
            }
        }
        ok.then(|| {
            Arc::new(FileSpec {
                patterns: patterns
                    .iter()
                    .map(|p| cx.base_dir.join(p).to_string_lossy().into_owned())
                    .collect(),
                follow_symlinks: keys.follow_symlinks.unwrap_or(false),
            }) as Arc<dyn SourceConfig>
        })
    }
}

/// A checked `kind = "file"` source.
#[derive(Debug, Clone, Serialize)]
pub struct FileSpec {
    /// Patterns, absolute.
    pub patterns: Vec<String>,
    /// Land links that lead outside their pattern's folder.
    pub follow_symlinks: bool,
}

#[async_trait]
impl SourceConfig for FileSpec {
    fn describe(&self, spec: &SourceSpec) -> String {
        format!(
            "(file, line {}): {} → raw/{}/ingest_date=<date>/",
            spec.line,
            self.patterns.join(", "),
            spec.name
        )
    }

    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        to_map(self)
    }

    async fn open(&self, spec: &SourceSpec, _env: &BackendEnv) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(
            FileSource::new(&spec.name, self.patterns.clone())
                .follow_symlinks(self.follow_symlinks),
        ))
    }
}

fn to_map<T: Serialize>(value: &T) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// How a source that makes HTTP requests makes them: timeouts, attempts, and what it refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transfer {
    /// Time to connect.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes.
    #[serde(with = "secs")]
    pub read_timeout: Duration,
    /// Attempts per request.
    pub max_attempts: u32,
    /// The most bytes one response may have, counted after decoding.
    pub max_bytes: u64,
    /// Follow redirects to loopback, link-local, private and unique-local addresses even
    /// when the configured URL is not on one.
    pub allow_private_redirects: bool,
}

impl Transfer {
    /// `max_bytes` when it is not set: 10 GiB.
    pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;
}

/// The transfer keys as written (`http` and `kaggle` have them all).
struct TransferKeys<'k> {
    connect_timeout: &'k Option<String>,
    read_timeout: &'k Option<String>,
    max_attempts: Option<u32>,
    max_bytes: &'k Option<String>,
    allow_private_redirects: Option<bool>,
}

fn duration_or(
    cx: &mut ConfigCx<'_, '_>,
    field: &str,
    raw: &Option<String>,
    default: u64,
) -> Duration {
    raw.as_ref()
        .and_then(|t| {
            parse_duration(t)
                .map_err(|m| cx.value(&cx.key_of(field), m))
                .ok()
        })
        .unwrap_or(Duration::from_secs(default))
}

fn transfer_limits(cx: &mut ConfigCx<'_, '_>, k: TransferKeys<'_>) -> Transfer {
    let connect = duration_or(cx, "connect_timeout", k.connect_timeout, 10);
    let read = duration_or(cx, "read_timeout", k.read_timeout, 60);
    if k.max_attempts == Some(0) {
        cx.value(
            &cx.key_of("max_attempts"),
            "max_attempts counts the first try: at least 1",
        );
    }
    let max_bytes = match k.max_bytes.as_deref().map(parse_bytes) {
        None => Transfer::DEFAULT_MAX_BYTES,
        Some(Ok(0)) => {
            cx.value(&cx.key_of("max_bytes"), "max_bytes must be more than 0");
            Transfer::DEFAULT_MAX_BYTES
        }
        Some(Ok(b)) => b,
        Some(Err(m)) => {
            cx.value(&cx.key_of("max_bytes"), m);
            Transfer::DEFAULT_MAX_BYTES
        }
    };
    Transfer {
        connect_timeout: connect,
        read_timeout: read,
        max_attempts: k.max_attempts.unwrap_or(5).max(1),
        max_bytes,
        allow_private_redirects: k.allow_private_redirects.unwrap_or(false),
    }
}

/// `kind = "kaggle"`: a Kaggle dataset, fetched whole (or some of its files) each window.
#[derive(Debug, Clone, Copy, Default)]
pub struct KaggleKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KaggleKeys {
    dataset: Option<String>,
    files: Option<StringOrList>,
    endpoint: Option<String>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    max_attempts: Option<u32>,
    max_bytes: Option<String>,
    allow_private_redirects: Option<bool>,
}

/// Kaggle's owner and dataset slugs: letters, digits, `-`, `_` and `.`, not `.` or `..`.
fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl SourceKind for KaggleKind {
    fn name(&self) -> &'static str {
        "kaggle"
    }

    fn extracts_by_default(&self) -> bool {
        true
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn SourceConfig>> {
        let k: KaggleKeys = cx.own()?;
        let mut ok = true;
        let raw = k.dataset.clone().unwrap_or_default();
        let (owner, dataset) = match raw.split_once('/') {
            Some((o, d)) if is_slug(o) && is_slug(d) => (o.to_owned(), d.to_owned()),
            _ if raw.is_empty() => {
                let at = cx.at().to_owned();
                cx.key(
                    &at,
                    "a kaggle source needs `dataset = \"owner/name\"`, as in kaggle.com/datasets/owner/name",
                );
                ok = false;
                Default::default()
            }
            _ => {
                cx.value(
                    &cx.key_of("dataset"),
                    format!("{raw:?} is not a Kaggle dataset: write \"owner/name\""),
                );
                ok = false;
                Default::default()
            }
        };
        let files = k.files.as_ref().map(|f| f.0.clone()).unwrap_or_default();
        for (i, f) in files.iter().enumerate() {
            if f.is_empty()
                || f.starts_with(['/', '.', '_'])
                || f.contains("..")
                || f.contains('\\')
            {
                cx.value(
                    &cx.key_of(&format!("files[{i}]")),
                    format!(
                        "{f:?} is not a file of the dataset (a relative name such as \"data.csv\")"
                    ),
                );
                ok = false;
            }
        }
        let endpoint = k
            .endpoint
            .clone()
            .unwrap_or_else(|| KaggleSpec::DEFAULT_ENDPOINT.to_owned());
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            cx.value(
                &cx.key_of("endpoint"),
                format!("{endpoint:?} is not an http:// or https:// URL"),
            );
            ok = false;
        }
        let transfer = transfer_limits(
            cx,
            TransferKeys {
                connect_timeout: &k.connect_timeout,
                read_timeout: &k.read_timeout,
                max_attempts: k.max_attempts,
                max_bytes: &k.max_bytes,
                allow_private_redirects: k.allow_private_redirects,
            },
        );
        ok.then(|| {
            Arc::new(KaggleSpec {
                owner,
                dataset,
                files,
                endpoint: endpoint.trim_end_matches('/').to_owned(),
                transfer,
            }) as Arc<dyn SourceConfig>
        })
    }
}

/// A checked `kind = "kaggle"` source.
#[derive(Debug, Clone, Serialize)]
pub struct KaggleSpec {
    /// The dataset's owner.
    pub owner: String,
    /// The dataset's name.
    pub dataset: String,
    /// Files to fetch one by one; empty: the whole dataset as one zip.
    pub files: Vec<String>,
    /// The API's base URL, without a trailing `/`.
    pub endpoint: String,
    /// Timeouts, attempts and bounds of its requests.
    #[serde(flatten)]
    pub transfer: Transfer,
}

impl KaggleSpec {
    /// The public Kaggle API.
    pub const DEFAULT_ENDPOINT: &str = "https://www.kaggle.com/api/v1";
}

#[async_trait]
impl SourceConfig for KaggleSpec {
    fn describe(&self, spec: &SourceSpec) -> String {
        format!(
            "(kaggle, line {}): {}/{}{} from {} → raw/{}/ingest_date=<date>/",
            spec.line,
            self.owner,
            self.dataset,
            if self.files.is_empty() {
                String::new()
            } else {
                format!(" [{}]", self.files.join(", "))
            },
            self.endpoint,
            spec.name
        )
    }

    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        to_map(self)
    }

    async fn open(&self, spec: &SourceSpec, env: &BackendEnv) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(KaggleSource::new(
            &spec.name,
            self.clone(),
            env_of(env),
        )?))
    }
}

/// `kind = "http"`: one HTTP GET per window.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpKind;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpKeys {
    url: Option<String>,
    #[serde(default)]
    query: BTreeMap<String, String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    auth: Option<AuthKeys>,
    filename: Option<String>,
    connect_timeout: Option<String>,
    read_timeout: Option<String>,
    max_attempts: Option<u32>,
    max_bytes: Option<String>,
    allow_private_redirects: Option<bool>,
}

/// `auth = { bearer = "${env:TOKEN}" }` or `auth = { username = "…", password = "${env:PW}" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthKeys {
    bearer: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

fn window_template(cx: &mut ConfigCx<'_, '_>, field: &str, text: &str) -> Option<Template> {
    Template::parse_only(text, WINDOW_VARS)
        .map_err(|m| cx.value(&cx.key_of(field), m))
        .ok()
}

impl SourceKind for HttpKind {
    fn name(&self) -> &'static str {
        "http"
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn SourceConfig>> {
        let k: HttpKeys = cx.own()?;
        let mut ok = true;
        let url = k.url.clone().unwrap_or_default();
        if url.is_empty() {
            let at = cx.at().to_owned();
            cx.key(
                &at,
                "an http source needs `url`, e.g. url = \"https://api.example.com/data?day={date}\"",
            );
            ok = false;
        } else if !(url.starts_with("http://") || url.starts_with("https://")) {
            cx.value(
                &cx.key_of("url"),
                format!("{url:?} is not an http:// or https:// URL"),
            );
            ok = false;
        } else if url.contains("${") {
            cx.value(
                &cx.key_of("url"),
                "put secrets in `query`, `headers` or `auth`, not in the URL (URLs are logged)",
            );
            ok = false;
        }
        let url_t = window_template(cx, "url", &url);
        let mut templates =
            |cx: &mut ConfigCx<'_, '_>, field: &str, map: &BTreeMap<String, String>| {
                let mut out = Vec::new();
                for (name, value) in map {
                    match Template::parse_only(value, WINDOW_VARS) {
                        Ok(t) => out.push((name.clone(), t)),
                        Err(m) => {
                            cx.value(&cx.key_of(&format!("{field}.{name}")), m);
                            ok = false;
                        }
                    }
                }
                out
            };
        let query = templates(cx, "query", &k.query);
        let headers = templates(cx, "headers", &k.headers);
        let auth = match &k.auth {
            None => None,
            Some(a) => {
                let mut parse = |cx: &mut ConfigCx<'_, '_>, field: &str, v: &str| {
                    Template::parse(v)
                        .map_err(|m| {
                            cx.value(&cx.key_of(&format!("auth.{field}")), m);
                            ok = false;
                        })
                        .ok()
                };
                match (&a.bearer, &a.username, &a.password) {
                    (Some(b), None, None) => parse(cx, "bearer", b).map(HttpAuth::Bearer),
                    (None, Some(u), Some(p)) => {
                        match (parse(cx, "username", u), parse(cx, "password", p)) {
                            (Some(username), Some(password)) => {
                                Some(HttpAuth::Basic { username, password })
                            }
                            _ => None,
                        }
                    }
                    _ => {
                        cx.key(
                            &cx.key_of("auth"),
                            "auth is { bearer = \"${env:TOKEN}\" } or { username = \"…\", password = \"${env:PASSWORD}\" }",
                        );
                        ok = false;
                        None
                    }
                }
            }
        };
        let filename = k.filename.clone().unwrap_or_else(|| {
            let last = url
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default();
            if last.contains('.') && !last.contains('{') {
                last.to_owned()
            } else {
                format!("{}.json", cx.name())
            }
        });
        let filename_t = window_template(cx, "filename", &filename);
        if filename.is_empty() || filename.starts_with(['/', '.', '_']) || filename.contains("..") {
            cx.value(
                &cx.key_of("filename"),
                format!("{filename:?} is not a file name for the window folder"),
            );
            ok = false;
        }
        let transfer = transfer_limits(
            cx,
            TransferKeys {
                connect_timeout: &k.connect_timeout,
                read_timeout: &k.read_timeout,
                max_attempts: k.max_attempts,
                max_bytes: &k.max_bytes,
                allow_private_redirects: k.allow_private_redirects,
            },
        );
        match (url_t, filename_t) {
            (Some(url), Some(filename)) if ok => Some(Arc::new(HttpSpec {
                url,
                query,
                headers,
                auth,
                filename,
                transfer,
            })),
            _ => None,
        }
    }
}

/// A checked `kind = "http"` source. Templates are unresolved: `${env:…}` values are looked up
/// when the source is built for a run, and never printed.
#[derive(Debug, Clone, Serialize)]
pub struct HttpSpec {
    /// URL with `{start}`, `{end}`, `{date}` and `{start:%fmt}` placeholders.
    pub url: Template,
    /// Query parameters (values: placeholders and `${env:…}`).
    pub query: Vec<(String, Template)>,
    /// Headers (values: `${env:…}`).
    pub headers: Vec<(String, Template)>,
    /// Authentication.
    pub auth: Option<HttpAuth>,
    /// Object name template.
    pub filename: Template,
    /// Timeouts, attempts and bounds of its requests.
    #[serde(flatten)]
    pub transfer: Transfer,
}

/// HTTP authentication, unresolved.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(Template),
    /// `Authorization: Basic …`.
    Basic {
        /// User.
        username: Template,
        /// Password.
        password: Template,
    },
}

#[async_trait]
impl SourceConfig for HttpSpec {
    fn describe(&self, spec: &SourceSpec) -> String {
        format!(
            "(http, line {}, window {}): GET {} → raw/{}/ingest_date=<date>/{}",
            spec.line, spec.window, self.url, spec.name, self.filename
        )
    }

    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        to_map(self)
    }

    async fn open(&self, spec: &SourceSpec, env: &BackendEnv) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(HttpSource::new(
            &spec.name,
            self.clone(),
            env_of(env),
        )?))
    }
}
