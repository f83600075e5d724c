//! What every request passes before a page is made: the `Host` it names (no DNS rebinding),
//! where it comes from (no cross-site use of data routes), the token off loopback; and the
//! security headers every response carries.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::App;

/// The policy of every page: scripts and styles only from this server (no inline script), no
/// framing, forms only to this server, nothing fetched elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The names a request's `Host` may carry: the bound address (and `localhost` on loopback),
/// and the names given with `--allow-host`.
#[derive(Debug, Clone)]
pub(crate) struct Hosts {
    bound: SocketAddr,
    allowed: Vec<String>,
}

impl Hosts {
    pub(crate) fn new(bound: SocketAddr, allowed: &[String]) -> Self {
        Self {
            bound,
            allowed: allowed
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .collect(),
        }
    }

    /// Whether `host` (a `Host` header's value) names this server.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        let name = name.trim_end_matches('.');
        // A name given with --allow-host: as given (with its port, or with any port, as a
        // proxy in front forwards it).
        if self
            .allowed
            .iter()
            .any(|a| *a == host || (a.as_str() == name && !a.contains(':')))
        {
            return true;
        }
        if port.unwrap_or(80) != self.bound.port() {
            return false;
        }
        let ip = self.bound.ip();
        if name == "localhost" {
            return ip.is_loopback() || ip.is_unspecified();
        }
        // An address in the URL cannot be rebound by DNS: the bound one, or any when bound to
        // every interface; on loopback, either loopback address.
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(a) => a == ip || ip.is_unspecified() || (ip.is_loopback() && a.is_loopback()),
            Err(_) => false,
        }
    }
}

/// `name[:port]` or `[v6][:port]`; `None` for a malformed port.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        (&host[..v6.len() + 2], after.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    (!name.is_empty()).then_some((name, port))
}

fn refuse(status: StatusCode, message: String) -> Response {
    (status, format!("lake serve: {message}\n")).into_response()
}

/// The routes a link from another site may open: pages, not data (downloads, the query box
/// with a query, charts, the API).
fn navigable(req: &Request) -> bool {
    let path = req.uri().path();
    let page = matches!(path, "/" | "/pipeline" | "/runs" | "/datasets" | "/query")
        || path.starts_with("/runs/")
        || (path.starts_with("/datasets/") && !path.ends_with("/download"));
    let runs_query = path == "/query"
        && req
            .uri()
            .query()
            .is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "sql"));
    page && !runs_query
}

/// `Host` must name this server; a request from another site (its `Origin`, or a browser's
/// `Sec-Fetch-Site`) reaches only pages, by a plain link.
pub(crate) async fn check_origin(
    State(app): State<Arc<App>>,
    req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "a request must name its Host".into(),
        );
    };
    if !app.hosts.allows(host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "Host {host:?} is not this server's address; to serve under that name, pass --allow-host {}",
                split_host(&host.to_ascii_lowercase()).map_or("NAME", |(n, _)| n)
            ),
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = origin.to_str().ok().is_some_and(|o| {
            o.eq_ignore_ascii_case(&format!("http://{host}"))
                || o.eq_ignore_ascii_case(&format!("https://{host}"))
        });
        if !same {
            return refuse(
                StatusCode::FORBIDDEN,
                "requests from other sites are refused".into(),
            );
        }
    }
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    let mode = headers
        .get("sec-fetch-mode")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if matches!(site, "cross-site" | "same-site")
        && !(mode == "navigate" && req.method() == Method::GET && navigable(&req))
    {
        return refuse(
            StatusCode::FORBIDDEN,
            "requests from other sites reach only pages, by a link".into(),
        );
    }
    next.run(req).await
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// With a token: every request carries it (header or cookie), else 401. `?token=` sets the
/// cookie and redirects to the same address without it, so the token stays out of the
/// address bar, the history and logs. Digests are compared, so the time taken says nothing of
/// the token.
pub(crate) async fn require_token(
    State(app): State<Arc<App>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = app.opts.token.as_deref() else {
        return next.run(req).await;
    };
    let want = digest(token);
    let headers: &HeaderMap = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix("lake_token="))
        .find(|c| digest(c) == want);
    if bearer.is_some_and(|b| digest(b) == want) || cookie.is_some() {
        return next.run(req).await;
    }
    let query = req.uri().query().unwrap_or_default();
    let given = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    if given.is_some_and(|q| digest(&q) == want) {
        let rest: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k != "token")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let mut to = req.uri().path().to_owned();
        if !rest.is_empty() {
            to.push('?');
            to.push_str(
                &url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(&rest)
                    .finish(),
            );
        }
        let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response();
        if let Ok(v) = format!("lake_token={token}; HttpOnly; SameSite=Strict; Path=/").parse() {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    refuse(
        StatusCode::UNAUTHORIZED,
        "this server needs its token (Authorization: Bearer <token>, or ?token=<token> once)"
            .into(),
    )
}

/// The headers every response carries.
pub(crate) async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_servers_names_are_hosts() {
        let local = Hosts::new(
            "127.0.0.1:8080".parse().unwrap(),
            &["lake.example.com".into()],
        );
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST:8080",
            "[::1]:8080",
            "lake.example.com",
            "lake.example.com:443",
        ] {
            assert!(local.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1:8081",
            "localhost",
            "10.0.0.1:8080",
            "127.0.0.1.evil.example:8080",
            "localhost:80a",
            "",
            ":8080",
        ] {
            assert!(!local.allows(bad), "{bad}");
        }
        let any = Hosts::new("0.0.0.0:9000".parse().unwrap(), &[]);
        assert!(any.allows("192.168.1.20:9000") && any.allows("localhost:9000"));
        assert!(!any.allows("rebind.example:9000") && !any.allows("192.168.1.20:9001"));
        let one = Hosts::new("10.1.2.3:9000".parse().unwrap(), &["lake:9000".into()]);
        assert!(one.allows("10.1.2.3:9000") && one.allows("lake:9000"));
        assert!(!one.allows("localhost:9000") && !one.allows("lake:9001"));
    }
}
