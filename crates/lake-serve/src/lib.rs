//! # lake-serve
//!
//! `lake serve`: the pipeline, its runs and its data in a browser, from the one binary. Pages
//! are rendered on the server (maud escapes every value), charts are SVG drawn on the server
//! (plotters): nothing is fetched from the network. A page reloads itself when a run ends
//! (it polls `/api/version`).
//!
//! It binds 127.0.0.1 by default; on another address a token is required and checked on every
//! request (`Authorization: Bearer …`, or `?token=…` once, which sets a cookie).

pub mod chart;
pub mod graph;
mod pages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lake::Lake;
use lake::core::{Error, Result};
use sha2::{Digest, Sha256};

/// How `lake serve` listens.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address to bind (default `127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// The token every request must carry; required off loopback.
    pub token: Option<String>,
    /// Rows the query box returns at most.
    pub query_rows: usize,
    /// The longest a query (the query box, a chart, a dataset page) runs.
    pub query_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            query_rows: 1000,
            query_timeout: Duration::from_secs(30),
        }
    }
}

impl ServeOptions {
    /// Refuse a non-loopback address without a token.
    pub fn check(&self) -> Result<()> {
        if !self.bind.ip().is_loopback() && self.token.as_deref().is_none_or(str::is_empty) {
            return Err(Error::Invalid {
                what: format!("lake serve --bind {}", self.bind),
                message: "serving beyond this machine needs a token: pass --token or set LAKE_SERVE_TOKEN (every request must then carry it)".into(),
            });
        }
        Ok(())
    }
}

/// What every handler gets.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) lake: Lake,
    pub(crate) opts: ServeOptions,
}

/// The routes of `lake serve`, token check included.
pub fn router(lake: Lake, opts: ServeOptions) -> Router {
    let app = Arc::new(App { lake, opts });
    Router::new()
        .route("/", get(pages::home))
        .route("/pipeline", get(pages::pipeline))
        .route("/runs", get(pages::runs))
        .route("/runs/{id}", get(pages::run))
        .route("/datasets", get(pages::datasets))
        .route("/datasets/{zone}/{name}", get(pages::dataset))
        .route("/datasets/{zone}/{name}/download", get(pages::download))
        .route("/charts/{name}", get(pages::chart_svg))
        .route("/query", get(pages::query))
        .route("/api/version", get(pages::version))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            require_token,
        ))
        .with_state(app)
}

/// Serve `lake` on `opts.bind` until `shutdown` resolves. Calls `ready` with the bound address
/// (the port, when 0 was asked) before the first request is taken.
pub async fn serve(
    lake: Lake,
    opts: ServeOptions,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    opts.check()?;
    let listener = tokio::net::TcpListener::bind(opts.bind)
        .await
        .map_err(|source| Error::Io {
            action: "listen on",
            path: opts.bind.to_string().into(),
            source,
        })?;
    let bound = listener.local_addr().map_err(|source| Error::Io {
        action: "listen on",
        path: opts.bind.to_string().into(),
        source,
    })?;
    ready(bound);
    axum::serve(listener, router(lake, opts))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| Error::Io {
            action: "serve on",
            path: bound.to_string().into(),
            source,
        })
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// With a token: every request carries it (header, cookie, or `?token=`, which then sets the
/// cookie), else 401. Digests are compared, so the time taken says nothing of the token.
async fn require_token(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
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
    let query = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    if bearer.is_some_and(|b| digest(b) == want) || cookie.is_some() {
        return next.run(req).await;
    }
    if query.as_deref().is_some_and(|q| digest(q) == want) {
        let mut resp = next.run(req).await;
        if let Ok(v) = format!("lake_token={token}; HttpOnly; SameSite=Strict; Path=/").parse() {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        return resp;
    }
    (
        StatusCode::UNAUTHORIZED,
        "lake serve: this server needs its token (Authorization: Bearer <token>, or ?token=<token>)\n",
    )
        .into_response()
}
