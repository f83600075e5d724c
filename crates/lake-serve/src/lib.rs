//! # lake-serve
//!
//! `lake serve`: the pipeline, its runs and its data in a browser, from the one binary. Pages
//! are rendered on the server (maud escapes every value), charts are SVG drawn on the server
//! (plotters): nothing is fetched from the network. A page reloads itself when a run ends
//! (its script polls `/api/version`).
//!
//! ## What it defends against
//!
//! It binds 127.0.0.1 by default and answers only requests whose `Host` names it (the bound
//! address, `localhost`, or a name given with `--allow-host`), so a web page cannot reach it by
//! rebinding its own name to 127.0.0.1; requests from other sites reach only pages, by a
//! link. On another address a token is required and checked on every request
//! (`Authorization: Bearer …`, or `?token=…` once, which sets a cookie and redirects to the
//! same address without it). Queries run on threads of their own within one memory budget,
//! a time limit and a number at once ([`queries`]); connections are capped and must send
//! their headers within a few seconds; every response carries a content security policy
//! without inline script, `nosniff`, `no-referrer` and `frame-ancestors 'none'`.

pub mod chart;
mod defend;
pub mod graph;
mod metrics;
mod pages;
mod queries;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use lake::Lake;
use lake::core::{Error, Result};

/// The shortest token `lake serve` takes.
pub const MIN_TOKEN_CHARS: usize = 16;

/// How `lake serve` listens.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The address to bind (default `127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// The token every request must carry; required off loopback.
    pub token: Option<String>,
    /// Host names requests may use besides the bound address (a proxy's name): `name` (any
    /// port) or `name:port`.
    pub allow_hosts: Vec<String>,
    /// Rows the query box returns at most.
    pub query_rows: usize,
    /// The longest a query (the query box, a chart, a dataset page) runs.
    pub query_timeout: Duration,
    /// Memory all queries share (`[serve] query_memory`).
    pub query_memory: u64,
    /// Queries a visitor may run at once (`[serve] max_queries`); pages have as many of
    /// their own.
    pub max_queries: usize,
    /// Connections open at once; past it the oldest idle one is closed to make room (or,
    /// when all are busy, new ones wait to be accepted).
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers (and may stay idle).
    pub header_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        let spec = lake::core::config::ServeSpec::default();
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            allow_hosts: Vec::new(),
            query_rows: 1000,
            query_timeout: spec.query_timeout,
            query_memory: spec.query_memory,
            max_queries: spec.max_queries,
            max_connections: 256,
            header_timeout: Duration::from_secs(5),
        }
    }
}

impl ServeOptions {
    /// The defaults with the limits of `[serve]`.
    pub fn from_spec(spec: &lake::core::config::ServeSpec) -> Self {
        Self {
            query_timeout: spec.query_timeout,
            query_memory: spec.query_memory,
            max_queries: spec.max_queries,
            ..Self::default()
        }
    }

    /// Refuse a non-loopback address without a token, and a token too short to guess.
    pub fn check(&self) -> Result<()> {
        let invalid = |message: String| Error::Invalid {
            what: format!("lake serve --bind {}", self.bind),
            message,
        };
        match self.token.as_deref().filter(|t| !t.is_empty()) {
            None if !self.bind.ip().is_loopback() => Err(invalid(
                "serving beyond this machine needs a token: set LAKE_SERVE_TOKEN (or pass --token; the process list shows it) and put a TLS proxy in front; every request must then carry it".into(),
            )),
            Some(t) if t.chars().count() < MIN_TOKEN_CHARS => Err(invalid(format!(
                "the token has {} characters; use at least {MIN_TOKEN_CHARS} (for example `openssl rand -hex 16`)",
                t.chars().count()
            ))),
            _ => Ok(()),
        }
    }
}

/// What every handler gets.
#[derive(Debug)]
pub(crate) struct App {
    pub(crate) lake: Lake,
    pub(crate) opts: ServeOptions,
    pub(crate) hosts: defend::Hosts,
    pub(crate) queries: queries::Queries,
    /// The pages' query answers of the last second.
    pub(crate) page_rows: queries::Recent<pages::Rows>,
    /// The ledger's index as read in the last second (`/api/version` and every page).
    pub(crate) summaries: queries::Recent<Arc<Vec<lake::core::ledger::RunSummary>>>,
    /// The index as last read, with its version: read again only when a run was written.
    pub(crate) parsed: std::sync::Mutex<Option<(String, Arc<Vec<lake::core::ledger::RunSummary>>)>>,
    /// The runs each page shows, as read in the last second.
    pub(crate) runs: queries::Recent<Arc<Vec<lake::core::ledger::RunRecord>>>,
    /// The committed datasets (and the run that wrote each) as listed in the last second.
    pub(crate) datasets: queries::Recent<pages::Datasets>,
    /// Each dataset's age and freshness as checked in the last second (pages and `/metrics`).
    pub(crate) ages: queries::Recent<Arc<Vec<lake::core::freshness::Freshness>>>,
}

/// How long a page's answers are kept: pages open by many visitors at once are made once.
const RECENT: Duration = Duration::from_secs(1);

/// The routes of `lake serve` for a server bound to `bound`, with its checks (Host, origin,
/// token) and headers. `lake`'s engine is [guarded](Lake::guarded) with the options' memory.
pub fn router(lake: Lake, opts: ServeOptions, bound: SocketAddr) -> Result<Router> {
    let limits = lake::local::engine::QueryLimits::with_memory(opts.query_memory);
    let threads = lake::local::EngineSpec::of(&lake.pipeline)
        .threads
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(2);
    let queries =
        queries::Queries::new(threads, opts.max_queries, opts.query_timeout).map_err(|source| {
            Error::Io {
                action: "start the query threads of",
                path: "lake serve".into(),
                source,
            }
        })?;
    let app = Arc::new(App {
        lake: lake.guarded(limits)?,
        hosts: defend::Hosts::new(bound, &opts.allow_hosts),
        opts,
        queries,
        page_rows: queries::Recent::new(RECENT),
        summaries: queries::Recent::new(RECENT),
        parsed: std::sync::Mutex::new(None),
        runs: queries::Recent::new(RECENT),
        datasets: queries::Recent::new(RECENT),
        ages: queries::Recent::new(RECENT),
    });
    Ok(Router::new()
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
        .route("/metrics", get(metrics::metrics))
        .route("/assets/lake.css", get(pages::css))
        .route("/assets/lake.js", get(pages::js))
        // Layers run outside in: headers on every answer, then Host and origin, then the token.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            defend::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            defend::check_origin,
        ))
        .layer(axum::middleware::from_fn(defend::security_headers))
        .with_state(app))
}

/// The open connections, oldest first: each with its requests in flight and the handle that
/// closes it.
#[derive(Debug, Clone, Default)]
struct Connections(Arc<std::sync::Mutex<Conns>>);

#[derive(Debug, Default)]
struct Conns {
    next: u64,
    open: std::collections::VecDeque<Conn>,
}

#[derive(Debug)]
struct Conn {
    id: u64,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    handle: Option<tokio::task::AbortHandle>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().open.len()
    }

    fn add(&self) -> (u64, Arc<std::sync::atomic::AtomicUsize>) {
        let mut c = self.lock();
        c.next += 1;
        let id = c.next;
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        c.open.push_back(Conn {
            id,
            in_flight: Arc::clone(&in_flight),
            handle: None,
        });
        (id, in_flight)
    }

    fn set_handle(&self, id: u64, handle: tokio::task::AbortHandle) {
        if let Some(c) = self.lock().open.iter_mut().find(|c| c.id == id) {
            c.handle = Some(handle);
        }
    }

    fn remove(&self, id: u64) {
        self.lock().open.retain(|c| c.id != id);
    }

    /// Close the oldest connection with no request in flight; false when there is none.
    fn evict_idle(&self) -> bool {
        let mut c = self.lock();
        let idle = c.open.iter().position(|c| {
            c.handle.is_some() && c.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0
        });
        match idle.and_then(|i| c.open.remove(i)) {
            Some(conn) => {
                if let Some(h) = conn.handle {
                    h.abort();
                }
                true
            }
            None => false,
        }
    }
}

/// One request in flight on a connection, for as long as it lives.
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn new(count: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long connections get to finish once the server is stopping.
const STOP_GRACE: Duration = Duration::from_millis(1000);

/// Serve `lake` on `opts.bind` until `shutdown` resolves. Calls `ready` with the bound address
/// (the port, when 0 was asked) before the first request is taken. Once `shutdown` resolves,
/// no connection is accepted, those open get [`STOP_GRACE`] to finish, and running queries
/// are abandoned: it returns within about a second whatever runs.
pub async fn serve(
    lake: Lake,
    opts: ServeOptions,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
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
    let (max_connections, header_timeout) = (opts.max_connections.max(1), opts.header_timeout);
    let service = TowerToHyperService::new(router(lake, opts, bound)?);
    ready(bound);
    let conns = Connections::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut open = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // At the cap, the oldest connection without a request in flight (one that never sent
        // its headers, or an idle keep-alive) makes room; when every one is busy, new ones
        // wait in the listen queue. So a flood of silent connections cannot lock anyone out.
        if conns.len() >= max_connections && !conns.evict_idle() {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(20)) => continue,
                () = &mut shutdown => break,
            }
        }
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of file descriptors, a reset before accept: make room, go on.
                Err(e) => {
                    tracing::warn!("lake serve: accept: {e}");
                    conns.evict_idle();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let (id, in_flight) = conns.add();
        let inner = service.clone();
        let counted = Arc::clone(&in_flight);
        let service = hyper::service::service_fn(move |req| {
            let guard = InFlight::new(Arc::clone(&counted));
            let call = hyper::service::Service::call(&inner, req);
            async move {
                use axum::body::HttpBody as _;
                let resp = call.await?;
                if resp.body().size_hint().exact().is_some() {
                    return Ok::<_, std::convert::Infallible>(resp);
                }
                // A streamed body (a download) keeps the request in flight until it ends.
                Ok(resp.map(|body| {
                    axum::body::Body::from_stream(futures::StreamExt::map(
                        body.into_data_stream(),
                        move |chunk| {
                            let _in_flight = &guard;
                            chunk
                        },
                    ))
                }))
            }
        });
        let stop = stop.clone();
        let done = conns.clone();
        let handle = open.spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_headers(64);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(STOP_GRACE, conn).await;
                }
            }
            done.remove(id);
        });
        conns.set_handle(id, handle);
        // Reap finished connections as we go.
        while open.try_join_next().is_some() {}
    }
    drop(listener);
    stop.cancel();
    let _ = tokio::time::timeout(STOP_GRACE + Duration::from_millis(200), async {
        while open.join_next().await.is_some() {}
    })
    .await;
    open.abort_all();
    Ok(())
}
