//! The http source against servers started here on 127.0.0.1: retries, Retry-After, client
//! errors, timeouts, truncated and gzip bodies, secrets, and landing through a zone store.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use lake_core::DynZoneStore;
use lake_core::chrono::NaiveDate;
use lake_core::config::ConfigFile;
use lake_core::publish::{self, Landed};
use lake_core::source::{Source, Window};
use lake_core::zone::{Key, ZoneStoreExt};
use lake_ingest::HttpSource;
use lake_local::LocalZoneStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the server does for one request.
#[derive(Clone)]
enum Reply {
    /// Status line, extra headers, body (Content-Length set).
    Full(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// A 200 whose Content-Length promises more than is sent.
    Truncated,
    /// Headers, then nothing.
    Stall,
}

struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

/// Serve `script` in order (the last reply repeats).
async fn serve(script: Vec<Reply>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (h, r) = (Arc::clone(&hits), Arc::clone(&requests));
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let n = h.fetch_add(1, Ordering::SeqCst);
            let reply = script[n.min(script.len() - 1)].clone();
            let r = Arc::clone(&r);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                r.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                match reply {
                    Reply::Full(status, headers, body) => {
                        let mut head = format!(
                            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                            body.len()
                        );
                        for (k, v) in headers {
                            head.push_str(&format!("{k}: {v}\r\n"));
                        }
                        head.push_str("\r\n");
                        let _ = sock.write_all(head.as_bytes()).await;
                        let _ = sock.write_all(&body).await;
                    }
                    Reply::Truncated => {
                        let _ = sock
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\nonly ten b")
                            .await;
                    }
                    Reply::Stall => {
                        let _ = sock
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
                            .await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                }
                let _ = sock.shutdown().await;
            });
        }
    });
    Server {
        url,
        hits,
        requests,
    }
}

fn ok(body: &str) -> Reply {
    Reply::Full(200, vec![], body.as_bytes().to_vec())
}

/// An http source from a lake.toml snippet; `env` answers `${env:…}`.
fn source(url: &str, extra: &str, env: BTreeMap<&'static str, &'static str>) -> HttpSource {
    let text = format!(
        "[lake]\nname = \"t\"\n[sources.meteo]\nkind = \"http\"\nurl = \"{url}/v1/archive\"\nfilename = \"meteo_{{start:%Y%m%d}}.json\"\nquery = {{ start_date = \"{{start}}\", end_date = \"{{end}}\", latitude = \"6.25\" }}\n{extra}\n"
    );
    let file = ConfigFile::parse("lake.toml", "/x".into(), text).unwrap();
    let p = file
        .pipeline(None, &lake_testing::bare().source(lake_ingest::HttpKind))
        .unwrap();
    let spec = Box::new(
        p.sources["meteo"]
            .config
            .downcast::<lake_ingest::HttpSpec>()
            .expect("an http source")
            .clone(),
    );
    let env: lake_core::run::EnvLookup =
        Arc::new(move |v: &str| env.get(v).map(|s| (*s).to_owned()));
    HttpSource::new("meteo", *spec, env)
        .unwrap()
        .with_base_backoff(Duration::from_millis(5))
}

fn day() -> Window {
    Window::day(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap())
}

async fn fetch(src: &HttpSource) -> lake_core::Result<Vec<u8>> {
    let objs = src.objects(&day()).await?;
    let stream = src.open(&day(), &objs[0]).await?;
    let chunks: Vec<_> = stream.try_collect().await?;
    Ok(chunks.concat())
}

const METEO: &str = include_str!("../../../examples/weather/data/open_meteo_hourly.json");

#[tokio::test]
async fn fetches_the_window_with_its_query_and_name() {
    let s = serve(vec![ok(METEO)]).await;
    let src = source(&s.url, "", BTreeMap::new());
    let objs = src.objects(&day()).await.unwrap();
    assert_eq!(objs[0].name, "meteo_20240301.json");
    assert_eq!(
        objs[0].origin,
        format!(
            "{}/v1/archive?end_date=2024-03-01&latitude=6.25&start_date=2024-03-01",
            s.url
        )
    );
    assert_eq!(fetch(&src).await.unwrap(), METEO.as_bytes());
    let req = s.requests.lock().unwrap()[0].clone();
    assert!(
        req.starts_with(
            "GET /v1/archive?end_date=2024-03-01&latitude=6.25&start_date=2024-03-01 HTTP/1.1"
        ),
        "{req}"
    );
}

#[tokio::test]
async fn retries_5xx_then_succeeds() {
    let s = serve(vec![
        Reply::Full(503, vec![], b"busy".to_vec()),
        Reply::Full(502, vec![], vec![]),
        ok("{}"),
    ])
    .await;
    let src = source(&s.url, "", BTreeMap::new());
    assert_eq!(fetch(&src).await.unwrap(), b"{}");
    assert_eq!(s.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let s = serve(vec![
        Reply::Full(429, vec![("Retry-After", "1".into())], vec![]),
        ok("{}"),
    ])
    .await;
    let src = source(&s.url, "", BTreeMap::new());
    let t = Instant::now();
    assert_eq!(fetch(&src).await.unwrap(), b"{}");
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn gives_up_after_max_attempts() {
    let s = serve(vec![Reply::Full(500, vec![], vec![])]).await;
    let src = source(&s.url, "max_attempts = 3", BTreeMap::new());
    let e = fetch(&src).await.unwrap_err().to_string();
    assert!(
        e.contains("500") && e.contains("gave up after 3 attempts"),
        "{e}"
    );
    assert_eq!(s.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn other_4xx_fail_at_once_with_the_status_and_body() {
    let s = serve(vec![Reply::Full(
        404,
        vec![],
        b"{\"reason\": \"no such dataset\"}".to_vec(),
    )])
    .await;
    let src = source(&s.url, "", BTreeMap::new());
    let e = fetch(&src).await.unwrap_err().to_string();
    assert!(e.contains("404") && e.contains("no such dataset"), "{e}");
    assert_eq!(s.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_stalled_body_times_out() {
    let s = serve(vec![Reply::Stall]).await;
    let src = source(&s.url, "read_timeout = \"1s\"", BTreeMap::new());
    let t = Instant::now();
    let e = fetch(&src).await.unwrap_err().to_string();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(e.contains("ended early or failed"), "{e}");
}

#[tokio::test]
async fn a_truncated_body_is_an_error_and_never_lands() {
    let s = serve(vec![Reply::Truncated]).await;
    let src = source(&s.url, "", BTreeMap::new());
    let e = fetch(&src).await.unwrap_err().to_string();
    assert!(e.contains("ended early"), "{e}");

    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let landed = publish::land(&*store, &src, &day(), "run-1").await;
    assert!(landed.is_err());
    assert!(
        publish::read_manifest(&*store, "raw/meteo/ingest_date=2024-03-01")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn gzip_is_decoded_and_lands_byte_for_byte() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(METEO.as_bytes()).unwrap();
    let body = gz.finish().unwrap();
    let s = serve(vec![Reply::Full(
        200,
        vec![("Content-Encoding", "gzip".into())],
        body,
    )])
    .await;
    let src = source(&s.url, "", BTreeMap::new());
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let Landed::Fetched(m) = publish::land(&*store, &src, &day(), "run-1").await.unwrap() else {
        panic!("fetched")
    };
    assert_eq!(m.objects[0].size, METEO.len() as u64);
    let key = Key::new("raw/meteo/ingest_date=2024-03-01/meteo_20240301.json").unwrap();
    assert_eq!(store.get_bytes(&key).await.unwrap(), METEO.as_bytes());
    assert!(
        s.requests.lock().unwrap()[0]
            .to_lowercase()
            .contains("accept-encoding: gzip")
    );
}

#[tokio::test]
async fn secrets_go_in_headers_and_never_in_errors() {
    let s = serve(vec![Reply::Full(401, vec![], b"bad token".to_vec())]).await;
    let src = source(
        &s.url,
        "headers = { X-Api-Key = \"${env:API_KEY}\" }\nauth = { bearer = \"${env:TOKEN}\" }",
        BTreeMap::from([("API_KEY", "key-123"), ("TOKEN", "tok-456")]),
    );
    let e = fetch(&src).await.unwrap_err().to_string();
    let req = s.requests.lock().unwrap()[0].to_lowercase();
    assert!(req.contains("x-api-key: key-123") && req.contains("authorization: bearer tok-456"));
    assert!(
        e.contains("401") && !e.contains("key-123") && !e.contains("tok-456"),
        "{e}"
    );

    // A secret query value is sent but shown as ***.
    let s = serve(vec![ok("{}")]).await;
    let text = format!(
        "[lake]\nname = \"t\"\n[sources.meteo]\nkind = \"http\"\nurl = \"{}/d\"\nquery = {{ key = \"${{env:API_KEY}}\" }}\n",
        s.url
    );
    let p = ConfigFile::parse("lake.toml", "/x".into(), text)
        .unwrap()
        .pipeline(None, &lake_testing::bare().source(lake_ingest::HttpKind))
        .unwrap();
    let spec = p.sources["meteo"]
        .config
        .downcast::<lake_ingest::HttpSpec>()
        .unwrap()
        .clone();
    let src = HttpSource::new(
        "meteo",
        spec,
        Arc::new(|v: &str| (v == "API_KEY").then(|| "key-123".to_owned())),
    )
    .unwrap();
    let objs = src.objects(&day()).await.unwrap();
    assert!(objs[0].origin.ends_with("/d?key=***"), "{}", objs[0].origin);
    assert_eq!(objs[0].name, "meteo.json");
    fetch(&src).await.unwrap();
    assert!(s.requests.lock().unwrap()[0].starts_with("GET /d?key=key-123 "));
}

#[tokio::test]
async fn a_refused_connection_is_retried_then_reported() {
    // A port nothing listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    let src = source(
        &url,
        "max_attempts = 2\nconnect_timeout = \"1s\"",
        BTreeMap::new(),
    );
    let e = fetch(&src).await.unwrap_err().to_string();
    assert!(e.contains("gave up after 2 attempts"), "{e}");
}

/// A server that echoes the request in its error body (many do) leaks nothing: the bearer
/// token and a secret header are scrubbed from the error.
#[tokio::test]
async fn an_error_body_that_echoes_the_request_leaks_no_secret() {
    let echo =
        "you sent: GET /v1/archive?key=qkey-789 Authorization: Bearer tok-456 X-Api-Key: key-123";
    let s = serve(vec![Reply::Full(400, vec![], echo.as_bytes().to_vec())]).await;
    let src = source(
        &s.url,
        "headers = { X-Api-Key = \"${env:API_KEY}\" }\nauth = { bearer = \"${env:TOKEN}\" }",
        BTreeMap::from([
            ("API_KEY", "key-123"),
            ("TOKEN", "tok-456"),
            ("QKEY", "qkey-789"),
        ]),
    );
    let e = fetch(&src).await.unwrap_err().to_string();
    assert!(e.contains("400") && e.contains("you sent"), "{e}");
    for secret in ["key-123", "tok-456"] {
        assert!(!e.contains(secret), "{secret} in {e}");
    }
    assert!(e.contains("Bearer ***"), "{e}");
}

/// reqwest drops Authorization on a redirect to another host, but not a source's own secret
/// header: such a redirect is refused and the other host never sees the header.
#[tokio::test]
async fn a_secret_header_never_follows_a_redirect_elsewhere() {
    let other = serve(vec![ok("{}")]).await;
    let s = serve(vec![Reply::Full(
        302,
        vec![("Location", format!("{}/stolen", other.url))],
        Vec::new(),
    )])
    .await;
    let src = source(
        &s.url,
        "headers = { X-Api-Key = \"${env:API_KEY}\" }",
        BTreeMap::from([("API_KEY", "key-123")]),
    );
    let e = fetch(&src).await.unwrap_err().to_string();
    assert!(e.contains("refused a redirect"), "{e}");
    assert!(!e.contains("key-123"), "{e}");
    assert_eq!(other.hits.load(Ordering::SeqCst), 0);

    // Without a secret header the same redirect is followed.
    let s = serve(vec![Reply::Full(
        302,
        vec![("Location", format!("{}/moved", other.url))],
        Vec::new(),
    )])
    .await;
    let src = source(&s.url, "", BTreeMap::new());
    assert_eq!(fetch(&src).await.unwrap(), b"{}");
    assert_eq!(other.hits.load(Ordering::SeqCst), 1);
}

/// A small gzip body that decodes to much more than `max_bytes` fails the window, naming the
/// source, and nothing of it lands.
#[tokio::test]
async fn a_body_past_max_bytes_fails_the_window_and_never_lands() {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'0'; 8 << 20]).unwrap();
    let body = gz.finish().unwrap();
    assert!(body.len() < 64 << 10, "a small body: {}", body.len());
    let s = serve(vec![Reply::Full(
        200,
        vec![("Content-Encoding", "gzip".into())],
        body,
    )])
    .await;
    let src = source(&s.url, "max_bytes = \"1MiB\"", BTreeMap::new());
    let e = fetch(&src).await.unwrap_err().to_string();
    assert!(
        e.contains("\"meteo\"") && e.contains("max_bytes (1048576 bytes"),
        "{e}"
    );
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    assert!(publish::land(&*store, &src, &day(), "run-1").await.is_err());
    assert!(
        publish::read_manifest(&*store, "raw/meteo/ingest_date=2024-03-01")
            .await
            .unwrap()
            .is_none()
    );
    // The same body within the limit lands.
    let src = source(&s.url, "max_bytes = \"9MiB\"", BTreeMap::new());
    assert_eq!(fetch(&src).await.unwrap().len(), 8 << 20);
}

/// No request sends a `Referer`, so a secret in a URL's query does not follow a redirect to
/// another origin.
#[tokio::test]
async fn a_redirect_sends_no_referer() {
    let other = serve(vec![ok("{}")]).await;
    let s = serve(vec![Reply::Full(
        302,
        vec![("Location", format!("{}/elsewhere", other.url))],
        Vec::new(),
    )])
    .await;
    let src = source(&s.url, "", BTreeMap::new());
    let _ = fetch(&src).await;
    let seen = other.requests.lock().unwrap().join("\n");
    assert!(seen.contains("GET /elsewhere"), "{seen}");
    assert!(!seen.to_lowercase().contains("referer"), "{seen}");
    // The first URL's query (where a source's `${env:…}` values go) is not sent along.
    assert!(!seen.contains("latitude"), "{seen}");
}
