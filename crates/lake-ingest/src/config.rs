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

use crate::paginate::Paginate;
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

use lake_core::kinds::json_object as to_map;

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
    paginate: Option<PaginateKeys>,
    records_path: Option<String>,
    max_pages: Option<u64>,
}

/// `paginate = { kind = "cursor", cursor_path = "meta.next", param = "cursor" }` and the other
/// kinds' keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PaginateKeys {
    kind: Option<String>,
    next_url_path: Option<String>,
    cursor_path: Option<String>,
    param: Option<String>,
    limit_param: Option<String>,
    limit: Option<u64>,
    start: Option<u64>,
}

/// A dotted JSON path as written (`meta.next_cursor`): non-empty parts.
fn dotted(path: &str) -> bool {
    !path.is_empty() && path.split('.').all(|p| !p.trim().is_empty())
}

/// The `paginate` table, checked: its kind and the keys that kind takes.
fn paginate(
    cx: &mut ConfigCx<'_, '_>,
    k: &PaginateKeys,
    query: &BTreeMap<String, String>,
) -> Option<Paginate> {
    let at = cx.key_of("paginate");
    let kind = k.kind.as_deref().unwrap_or_default();
    // Which keys each kind takes, to refuse the others by name.
    let takes: &[&str] = match kind {
        "link_header" => &[],
        "next_url" => &["next_url_path"],
        "cursor" => &["cursor_path", "param"],
        "offset" => &["param", "limit_param", "limit", "start"],
        "page" => &["param", "start"],
        _ => {
            cx.value(
                &format!("{at}.kind"),
                format!(
                    "{kind:?} is not a pagination: use one of {}",
                    Paginate::KINDS.join(", ")
                ),
            );
            return None;
        }
    };
    let given = [
        ("next_url_path", k.next_url_path.is_some()),
        ("cursor_path", k.cursor_path.is_some()),
        ("param", k.param.is_some()),
        ("limit_param", k.limit_param.is_some()),
        ("limit", k.limit.is_some()),
        ("start", k.start.is_some()),
    ];
    let mut ok = true;
    for (key, set) in given {
        if set && !takes.contains(&key) {
            cx.key(
                &format!("{at}.{key}"),
                format!("paginate kind {kind:?} takes no `{key}`"),
            );
            ok = false;
        }
    }
    let mut path = |cx: &mut ConfigCx<'_, '_>, key: &str, v: &Option<String>| match v {
        Some(p) if dotted(p) => p.clone(),
        Some(p) => {
            cx.value(
                &format!("{at}.{key}"),
                format!("{p:?} is not a dotted path such as \"meta.next\""),
            );
            ok = false;
            String::new()
        }
        None => {
            cx.key(
                &at,
                format!(
                    "paginate kind {kind:?} needs `{key}`: the dotted path in a page where it is"
                ),
            );
            ok = false;
            String::new()
        }
    };
    let param = |default: &str| k.param.clone().unwrap_or_else(|| default.to_owned());
    let p = match kind {
        "link_header" => Paginate::LinkHeader,
        "next_url" => Paginate::NextUrl {
            next_url_path: path(cx, "next_url_path", &k.next_url_path),
        },
        "cursor" => Paginate::Cursor {
            cursor_path: path(cx, "cursor_path", &k.cursor_path),
            param: param("cursor"),
        },
        "offset" => {
            if k.limit == Some(0) {
                cx.value(
                    &format!("{at}.limit"),
                    "limit is the records per page: at least 1",
                );
                ok = false;
            }
            Paginate::Offset {
                param: param("offset"),
                limit_param: k.limit_param.clone().unwrap_or_else(|| "limit".into()),
                limit: k.limit.unwrap_or(100),
                start: k.start.unwrap_or(0),
            }
        }
        _ => Paginate::Page {
            param: param("page"),
            start: k.start.unwrap_or(1),
        },
    };
    for name in p.params() {
        if name.is_empty() {
            cx.value(&at, "an empty query parameter name");
            ok = false;
        } else if query.contains_key(name) {
            cx.key(
                &cx.key_of(&format!("query.{name}")),
                format!("`{name}` is set by paginate ({kind}) on every page: remove it from query"),
            );
            ok = false;
        }
    }
    ok.then_some(p)
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
        if let Some(p) = &k.records_path
            && !dotted(p)
        {
            cx.value(
                &cx.key_of("records_path"),
                format!("{p:?} is not a dotted path such as \"data.items\""),
            );
            ok = false;
        }
        let paged = match &k.paginate {
            Some(p) => match paginate(cx, p, &k.query) {
                Some(p) => Some(p),
                None => {
                    ok = false;
                    None
                }
            },
            None => {
                for (key, set) in [
                    ("records_path", k.records_path.is_some()),
                    ("max_pages", k.max_pages.is_some()),
                ] {
                    if set {
                        cx.key(
                            &cx.key_of(key),
                            format!("`{key}` is for paged sources: set `paginate` too"),
                        );
                        ok = false;
                    }
                }
                None
            }
        };
        if k.max_pages == Some(0) {
            cx.value(&cx.key_of("max_pages"), "max_pages must be at least 1");
            ok = false;
        }
        match (url_t, filename_t) {
            (Some(url), Some(filename)) if ok => Some(Arc::new(HttpSpec {
                url,
                query,
                headers,
                auth,
                filename,
                transfer,
                paginate: paged,
                records_path: k.records_path.clone(),
                max_pages: k.max_pages.unwrap_or(HttpSpec::DEFAULT_MAX_PAGES),
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
    /// How a window's answer is paged, if it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paginate: Option<Paginate>,
    /// Where a page's records are (a dotted path), for the empty-page stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub records_path: Option<String>,
    /// The most pages a window may have: past it the window fails (never a silent cut).
    pub max_pages: u64,
}

impl HttpSpec {
    /// `max_pages` when it is not set.
    pub const DEFAULT_MAX_PAGES: u64 = 10_000;
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
        let paged = match &self.paginate {
            None => String::new(),
            Some(p) => format!(
                ", paged by {} up to {} pages",
                serde_json::to_value(p)
                    .ok()
                    .and_then(|v| v["kind"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
                self.max_pages
            ),
        };
        let name = match &self.paginate {
            None => self.filename.to_string(),
            Some(_) => {
                crate::paginate::page_name(&self.filename.to_string(), 1).replace("00001", "NNNNN")
            }
        };
        format!(
            "(http, line {}, window {}{paged}): GET {} → raw/{}/ingest_date=<date>/{name}",
            spec.line, spec.window, self.url, spec.name
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
