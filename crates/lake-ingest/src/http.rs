//! `kind = "http"`: one GET per window, retried with backoff, streamed to the zone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lake_core::config::{Redactor, Template};

use crate::config::{HttpAuth, HttpSpec};
use lake_core::run::EnvLookup;
use lake_core::source::{Source, SourceObject, Window};
use lake_core::zone::ByteStream;
use lake_core::{Error, Result};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::paginate::{self, Paginate};
use crate::reach::Reach;

/// The first backoff; it doubles per attempt (jittered: up to twice as long) up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest `Retry-After` honoured; a longer one fails the request with its value.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);
/// Bytes of an error response quoted in the error.
const EXCERPT: usize = 200;

/// One HTTP GET per window: the URL, query and file name are rendered for the window, headers
/// and auth are resolved from the environment when the request is made.
///
/// Connection errors, timeouts before the response, 5xx and 429 are retried up to
/// `max_attempts` with exponential backoff, each wait lengthened by a random part of up to itself
/// (250 ms doubling to 30 s, so at most 60 s; or the server's `Retry-After`);
/// other 4xx fail at once with the status and the start of the body. The body streams as it
/// arrives, gzip or deflate decoded; a body that stops early (shorter than its Content-Length,
/// or a read timeout) is an error, so the window is never committed.
#[derive(Clone)]
pub struct HttpSource {
    name: String,
    spec: HttpSpec,
    env: EnvLookup,
    fetch: Fetcher,
    /// A paged source's windows: their pages, fetched by `objects` and spooled to local
    /// files until `finish`.
    pages: Arc<Mutex<HashMap<Window, Pages>>>,
}

/// A window's pages on local disk (removed with the folder when dropped).
struct Pages {
    _dir: lake_core::scratch::ScratchDir,
    files: HashMap<String, std::path::PathBuf>,
}

/// GETs with retries for one source: its client, backoff and attempt limit. Shared by the
/// `http` and `kaggle` sources.
#[derive(Clone)]
pub(crate) struct Fetcher {
    name: String,
    client: reqwest::Client,
    base_backoff: Duration,
    max_attempts: u32,
    max_bytes: u64,
    reach: Reach,
    /// Added to a 401 or 403 error: what to check about the credentials.
    auth_hint: Option<&'static str>,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("name", &self.name)
            .field("url", &self.spec.url)
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// A source named `name`; `env` resolves the `${env:…}` values of headers, query and auth.
    pub fn new(name: impl Into<String>, spec: HttpSpec, env: EnvLookup) -> Result<Self> {
        let name = name.into();
        // reqwest drops Authorization on a redirect to another host, but not the source's own
        // headers: with a secret among them, a redirect elsewhere is refused.
        let secret_headers = spec.headers.iter().any(|(_, t)| t.is_secret());
        let fetch = Fetcher::new(&name, &spec.transfer, secret_headers)?;
        Ok(Self {
            name,
            spec,
            env,
            fetch,
            pages: Arc::default(),
        })
    }

    /// Use `base` as the first backoff (tests use a few milliseconds).
    pub fn with_base_backoff(mut self, base: Duration) -> Self {
        self.fetch.set_base_backoff(base);
        self
    }

    fn err(&self, message: String, source: Option<lake_core::BoxError>) -> Error {
        self.fetch.err(message, source)
    }

    fn resolve(&self, key: &str, t: &Template, window: &Window) -> Result<String> {
        let v = t.render(key, &|n| window.value(n), &*self.env)?;
        Ok(v.expose().to_owned())
    }

    /// The URL with its query, and the same URL as it may be shown (templated `${env:…}`
    /// query values as `***`).
    fn url(&self, window: &Window) -> Result<(reqwest::Url, String)> {
        let base = self.resolve(
            &format!("sources.{}.url", self.name),
            &self.spec.url,
            window,
        )?;
        let mut url = reqwest::Url::parse(&base)
            .map_err(|e| self.err(format!("{base:?} is not a URL"), Some(Box::new(e))))?;
        let mut shown = url.clone();
        for (k, t) in &self.spec.query {
            let v = self.resolve(&format!("sources.{}.query.{k}", self.name), t, window)?;
            url.query_pairs_mut().append_pair(k, &v);
            let visible = if t.is_secret() { "***".to_owned() } else { v };
            shown.query_pairs_mut().append_pair(k, &visible);
        }
        Ok((url, shown.to_string()))
    }

    fn headers(&self, window: &Window) -> Result<HeaderMap> {
        let mut h = HeaderMap::new();
        for (k, t) in &self.spec.headers {
            let v = self.resolve(&format!("sources.{}.headers.{k}", self.name), t, window)?;
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| self.err(format!("{k:?} is not a header name"), None))?;
            let mut value = HeaderValue::from_str(&v)
                .map_err(|_| self.err(format!("the value of header {k} is not valid"), None))?;
            value.set_sensitive(t.is_secret());
            h.insert(name, value);
        }
        Ok(h)
    }

    /// Every secret value a request of `window` carries (query, headers, auth), to keep them out
    /// of errors.
    fn secrets(&self, window: &Window) -> Result<Redactor> {
        let mut values = Vec::new();
        let named = |field: &str, k: &str| format!("sources.{}.{field}.{k}", self.name);
        for (k, t) in &self.spec.query {
            values.push(t.render(&named("query", k), &|n| window.value(n), &*self.env)?);
        }
        for (k, t) in &self.spec.headers {
            values.push(t.render(&named("headers", k), &|n| window.value(n), &*self.env)?);
        }
        match &self.spec.auth {
            None => {}
            Some(HttpAuth::Bearer(t)) => {
                values.push(t.resolve(&named("auth", "bearer"), &*self.env)?)
            }
            Some(HttpAuth::Basic { username, password }) => {
                let user = username.resolve(&named("auth", "username"), &*self.env)?;
                let pass = password.resolve(&named("auth", "password"), &*self.env)?;
                // As sent: `Authorization: Basic base64(user:password)`.
                return Ok(Redactor::new(values.iter().chain([&user, &pass]))
                    .with_basic_auth(&user, &pass));
            }
        }
        Ok(Redactor::new(&values))
    }

    fn request(&self, url: reqwest::Url, headers: HeaderMap) -> Result<reqwest::RequestBuilder> {
        let mut req = self.fetch.client().get(url).headers(headers);
        match &self.spec.auth {
            None => {}
            Some(HttpAuth::Bearer(t)) => {
                let token = t.resolve(&format!("sources.{}.auth.bearer", self.name), &*self.env)?;
                req = req.bearer_auth(token.expose());
            }
            Some(HttpAuth::Basic { username, password }) => {
                let u = username
                    .resolve(&format!("sources.{}.auth.username", self.name), &*self.env)?;
                let p = password
                    .resolve(&format!("sources.{}.auth.password", self.name), &*self.env)?;
                req = req.basic_auth(u.expose(), Some(p.expose()));
            }
        }
        Ok(req)
    }
}

impl Fetcher {
    /// `same_origin_redirects`: follow redirects only within the first URL's scheme, host and
    /// port (a request carrying secret headers of its own). No request sends a `Referer` (a
    /// URL's query may hold a secret), and none reaches a private network from a public URL
    /// (see [`crate::reach`]).
    pub(crate) fn new(
        name: &str,
        transfer: &crate::config::Transfer,
        same_origin_redirects: bool,
    ) -> Result<Self> {
        let reach = Reach::new(transfer.allow_private_redirects);
        let guard = reach.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            let first = attempt.previous().first().map(reqwest::Url::origin);
            if attempt.previous().len() > 10 {
                attempt.error("more than 10 redirects")
            } else if let Some(refusal) = guard.refuse_redirect(attempt.url()) {
                attempt.error(refusal)
            } else if same_origin_redirects && first.is_some_and(|o| o != attempt.url().origin()) {
                let to = attempt.url().origin().ascii_serialization();
                attempt.error(format!(
                    "refused a redirect to {to}: the request carries secret headers, which would go with it"
                ))
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .redirect(policy)
            .referer(false)
            .dns_resolver(Arc::new(reach.clone()))
            .connect_timeout(transfer.connect_timeout)
            .read_timeout(transfer.read_timeout)
            .user_agent(concat!("lake/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Source {
                source_name: name.to_owned(),
                message: "cannot build the HTTP client".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(Self {
            name: name.to_owned(),
            client,
            base_backoff: BASE_BACKOFF,
            max_attempts: transfer.max_attempts.max(1),
            max_bytes: transfer.max_bytes,
            reach,
            auth_hint: None,
        })
    }

    /// Say `hint` after a 401 or 403.
    pub(crate) fn with_auth_hint(mut self, hint: &'static str) -> Self {
        self.auth_hint = Some(hint);
        self
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub(crate) fn set_base_backoff(&mut self, base: Duration) {
        self.base_backoff = base;
    }

    pub(crate) fn err(&self, message: String, source: Option<lake_core::BoxError>) -> Error {
        Error::Source {
            source_name: self.name.clone(),
            message,
            source,
        }
    }

    /// GET `url` with retries. `make` builds the request for each attempt; `shown` is the URL
    /// as it may be printed (secrets as `***`), and names the request in errors. The body
    /// fails past `max_bytes`, counted after decoding.
    pub(crate) async fn get(
        &self,
        shown: &str,
        url: &reqwest::Url,
        secrets: &Redactor,
        make: impl Fn() -> Result<reqwest::RequestBuilder>,
    ) -> Result<ByteStream> {
        Ok(self.get_with_headers(shown, url, secrets, make).await?.1)
    }

    /// [`get`](Self::get), with the response's headers.
    pub(crate) async fn get_with_headers(
        &self,
        shown: &str,
        url: &reqwest::Url,
        secrets: &Redactor,
        make: impl Fn() -> Result<reqwest::RequestBuilder>,
    ) -> Result<(HeaderMap, ByteStream)> {
        self.reach.configured(url).await;
        // Every message below may hold what the server sent back (a body that echoes the
        // request): no resolved secret goes into an error.
        let fail = |message: String| self.err(secrets.redact(&message), None);
        let attempts = self.max_attempts;
        // lake's one retry policy: doubling, jittered waits (unless the server says when).
        let mut delays =
            lake_core::retry::Backoff::retries(attempts, self.base_backoff, MAX_BACKOFF).delays();
        let mut backoff = move || delays.next().unwrap_or(MAX_BACKOFF);
        let mut last = String::new();
        for attempt in 0..attempts {
            if attempt > 0 {
                tracing::info!(source = %self.name, attempt, "retrying: {last}");
            }
            let sent = make()?.send().await;
            let wait = match sent {
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    last = format!("GET {shown}: {}", without_url(&e));
                    backoff()
                }
                Err(e) => {
                    return Err(fail(format!("GET {shown}: {}", without_url(&e))));
                }
                Ok(resp) if resp.status().is_success() => {
                    let headers = resp.headers().clone();
                    let name = self.name.clone();
                    let origin = shown.to_owned();
                    let max = self.max_bytes;
                    let mut seen = 0u64;
                    let stream = resp.bytes_stream().map(move |chunk| {
                        let chunk = chunk.map_err(|e| Error::Source {
                            source_name: name.clone(),
                            message: format!(
                                "GET {origin}: the body ended early or failed: {}",
                                without_url(&e)
                            ),
                            source: None,
                        })?;
                        seen += chunk.len() as u64;
                        if seen > max {
                            return Err(Error::Source {
                                source_name: name.clone(),
                                message: format!(
                                    "GET {origin}: the body is larger than max_bytes ({max} bytes, counted after decoding); the window is not committed"
                                ),
                                source: None,
                            });
                        }
                        Ok(chunk)
                    });
                    return Ok((headers, stream.boxed()));
                }
                Ok(resp) if retryable(resp.status()) => {
                    let status = resp.status();
                    let after = retry_after(resp.headers());
                    last = format!("GET {shown}: {status}");
                    match after {
                        Some(a) if a > MAX_RETRY_AFTER => {
                            return Err(fail(format!(
                                "{last}; the server asks to retry after {}s, longer than lake waits ({}s)",
                                a.as_secs(),
                                MAX_RETRY_AFTER.as_secs()
                            )));
                        }
                        Some(a) => a,
                        None => backoff(),
                    }
                }
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp.bytes().await.unwrap_or_default();
                    let excerpt = String::from_utf8_lossy(&body[..body.len().min(EXCERPT)])
                        .replace(['\n', '\r'], " ");
                    let excerpt = lake_core::human::printable(&excerpt).into_owned();
                    let hint = match self.auth_hint {
                        Some(h)
                            if matches!(
                                status,
                                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                            ) =>
                        {
                            format!(" ({h})")
                        }
                        _ => String::new(),
                    };
                    return Err(fail(format!(
                        "GET {shown}: {status}: {}{hint}",
                        excerpt.trim()
                    )));
                }
            };
            if attempt + 1 < attempts {
                tokio::time::sleep(wait).await;
            }
        }
        Err(fail(format!("{last} (gave up after {attempts} attempts)")))
    }
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let wait = when.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

#[async_trait]
impl Source for HttpSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn objects(&self, window: &Window) -> Result<Vec<SourceObject>> {
        if let Some(p) = &self.spec.paginate {
            return self.fetch_pages(p, window).await;
        }
        let (_, shown) = self.url(window)?;
        Ok(vec![SourceObject {
            name: self.resolve(
                &format!("sources.{}.filename", self.name),
                &self.spec.filename,
                window,
            )?,
            size: None,
            content_type: None,
            origin: shown,
        }])
    }

    async fn open(&self, window: &Window, object: &SourceObject) -> Result<ByteStream> {
        if self.spec.paginate.is_some() {
            let path = self.page_file(window, object)?;
            let file = tokio::fs::File::open(&path).await.map_err(|e| {
                self.err(
                    format!("cannot open page {}", object.name),
                    Some(Box::new(e)),
                )
            })?;
            let name = self.name.clone();
            let page = object.name.clone();
            return Ok(
                tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                    .map(move |r| {
                        r.map_err(|e| Error::Source {
                            source_name: name.clone(),
                            message: format!("reading page {page} failed"),
                            source: Some(Box::new(e)),
                        })
                    })
                    .boxed(),
            );
        }
        let (url, shown) = self.url(window)?;
        let headers = self.headers(window)?;
        let secrets = self.secrets(window)?;
        self.fetch
            .get(&shown, &url, &secrets, || {
                self.request(url.clone(), headers.clone())
            })
            .await
    }

    fn local_file(&self, window: &Window, object: &SourceObject) -> Option<std::path::PathBuf> {
        self.spec.paginate.as_ref()?;
        self.page_file(window, object).ok()
    }

    async fn finish(&self, window: &Window) {
        self.pages.lock().expect("pages lock").remove(window);
    }
}

impl HttpSource {
    fn page_file(&self, window: &Window, object: &SourceObject) -> Result<std::path::PathBuf> {
        self.pages
            .lock()
            .expect("pages lock")
            .get(window)
            .and_then(|p| p.files.get(&object.name).cloned())
            .ok_or_else(|| {
                self.err(
                    format!("page {} of window {window} was not fetched", object.name),
                    None,
                )
            })
    }

    /// Fetch `window`'s pages one after the other, each with its retries, into local files:
    /// the objects of the window, in order. A page that fails, a loop (a page leading to
    /// itself or to a page already fetched), a next page on another origin, or more than
    /// `max_pages` pages fail the window: nothing of it is landed.
    async fn fetch_pages(&self, p: &Paginate, window: &Window) -> Result<Vec<SourceObject>> {
        let (base, _) = self.url(window)?;
        let headers = self.headers(window)?;
        let secrets = self.secrets(window)?;
        let filename = self.resolve(
            &format!("sources.{}.filename", self.name),
            &self.spec.filename,
            window,
        )?;
        let dir = lake_core::scratch::ScratchDir::new("pages").map_err(|e| {
            self.err(
                "cannot make a folder for the pages".into(),
                Some(Box::new(e)),
            )
        })?;
        let first = p.first(&base);
        let mut seen = std::collections::HashSet::new();
        let mut objects = Vec::new();
        let mut files = HashMap::new();
        let mut next = Some(first.clone());
        let mut n = 0u64;
        while let Some(url) = next.take() {
            n += 1;
            if n > self.spec.max_pages {
                return Err(self.err(
                    format!(
                        "window {window} has more than max_pages ({}) pages; nothing of it is landed: raise max_pages or make the windows smaller",
                        self.spec.max_pages
                    ),
                    None,
                ));
            }
            if url.origin() != first.origin() {
                return Err(self.err(
                    format!(
                        "page {} of window {window} is on {}, not on the source's {}: refused (the source's credentials would go with it)",
                        n,
                        url.origin().ascii_serialization(),
                        first.origin().ascii_serialization()
                    ),
                    None,
                ));
            }
            if !seen.insert(url.to_string()) {
                return Err(self.err(
                    format!("page {n} of window {window} leads back to a page already fetched ({}): the API's pages loop", secrets.redact(url.as_str())),
                    None,
                ));
            }
            let shown = secrets.redact(url.as_str());
            let (resp_headers, mut body) = self
                .fetch
                .get_with_headers(&shown, &url, &secrets, || {
                    self.request(url.clone(), headers.clone())
                })
                .await?;
            let mut bytes = Vec::new();
            while let Some(chunk) = body.next().await {
                bytes.extend_from_slice(&chunk?);
            }
            let needs_json = !matches!(p, Paginate::LinkHeader) || self.spec.records_path.is_some();
            let doc: Option<serde_json::Value> = if needs_json {
                Some(serde_json::from_slice(&bytes).map_err(|e| {
                    self.err(format!("page {n} ({shown}) is not JSON"), Some(Box::new(e)))
                })?)
            } else {
                None
            };
            let records = match (&doc, p.counts_records() || self.spec.records_path.is_some()) {
                (Some(d), true) => Some(
                    paginate::count_records(d, self.spec.records_path.as_deref())
                        .map_err(|m| self.err(format!("page {n} ({shown}): {m}"), None))?,
                ),
                _ => None,
            };
            // An empty page after the first ends the window and is not landed.
            if n > 1 && records == Some(0) {
                break;
            }
            let name = paginate::page_name(&filename, n);
            let path = dir.path().join(&name);
            tokio::fs::write(&path, &bytes)
                .await
                .map_err(|e| self.err(format!("cannot spool page {n}"), Some(Box::new(e))))?;
            objects.push(SourceObject {
                name: name.clone(),
                size: Some(bytes.len() as u64),
                content_type: None,
                origin: shown.clone(),
            });
            files.insert(name, path);
            next = if records == Some(0) {
                None
            } else {
                p.next(&first, &url, n, &resp_headers, doc.as_ref(), records)
                    .map_err(|m| self.err(format!("page {n} ({shown}): {m}"), None))?
                    .map(|u| self.with_secret_query(u, window))
                    .transpose()?
            };
        }
        self.pages
            .lock()
            .expect("pages lock")
            .insert(*window, Pages { _dir: dir, files });
        Ok(objects)
    }

    /// A next page's URL (taken from a page, or made from the first), with each secret
    /// `query` parameter of the source it lacks: most APIs' next links do not repeat an API
    /// key sent in the query.
    fn with_secret_query(&self, mut url: reqwest::Url, window: &Window) -> Result<reqwest::Url> {
        let have: std::collections::HashSet<String> =
            url.query_pairs().map(|(k, _)| k.into_owned()).collect();
        for (k, t) in &self.spec.query {
            if t.is_secret() && !have.contains(k) {
                let v = self.resolve(&format!("sources.{}.query.{k}", self.name), t, window)?;
                url.query_pairs_mut().append_pair(k, &v);
            }
        }
        Ok(url)
    }
}

/// reqwest's message and causes, without the URL it repeats (the caller shows a redacted one).
fn without_url(e: &reqwest::Error) -> String {
    let chain = lake_core::run::error_chain(e);
    match (chain.find(" for url ("), chain.find("): ")) {
        (Some(a), Some(b)) if b > a => format!("{}{}", &chain[..a], &chain[b + 1..]),
        (Some(a), _) => chain[..a].to_owned(),
        _ => chain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    #[test]
    fn placeholders_render_for_the_window() {
        let w = Window {
            start: NaiveDate::from_ymd_opt(2024, 1, 30).unwrap(),
            end: NaiveDate::from_ymd_opt(2024, 2, 6).unwrap(),
        };
        let t = Template::parse("a?s={start}&e={end}&d={date}&c={start:%Y%m%d}&x={other}").unwrap();
        assert_eq!(
            t.render("url", &|n| w.value(n), &|_| None)
                .unwrap()
                .expose(),
            "a?s=2024-01-30&e=2024-02-05&d=2024-01-30&c=20240130&x={other}"
        );
    }
}
