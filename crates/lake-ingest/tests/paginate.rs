//! Paged http sources against an API served here on 127.0.0.1: each pagination kind, the
//! pages landed as objects of one window committed together, and the failures that land
//! nothing (a page that keeps failing, a runaway, a loop, a next page elsewhere).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lake_core::DynZoneStore;
use lake_core::chrono::NaiveDate;
use lake_core::config::ConfigFile;
use lake_core::publish::{self, Landed};
use lake_core::source::{Source, Window};
use lake_core::zone::{Key, ZoneStoreExt};
use lake_ingest::HttpSource;
use lake_local::LocalZoneStore;
use lake_testing::config::expect_each;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A response: status, extra headers, body.
type Answer = (u16, Vec<(String, String)>, String);

/// An API: the answer to each request target (`/v2/orders?cursor=…`), given the server's URL
/// and how many requests came before.
type Api = dyn Fn(&str, &str, usize) -> Answer + Send + Sync;

struct Server {
    url: String,
    /// Request targets, in order.
    targets: Arc<Mutex<Vec<String>>>,
}

async fn serve(api: Arc<Api>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let targets = Arc::new(Mutex::new(Vec::new()));
    let (t, base) = (Arc::clone(&targets), url.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (t, api, base) = (Arc::clone(&t), Arc::clone(&api), base.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => buf.extend_from_slice(&chunk[..k]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).into_owned();
                let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                let n = {
                    let mut t = t.lock().unwrap();
                    t.push(target.clone());
                    t.len() - 1
                };
                let (status, headers, body) = api(&base, &target, n);
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = sock.write_all(out.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Server { url, targets }
}

/// The value of query parameter `name` in a request target.
fn param(target: &str, name: &str) -> Option<String> {
    let url = reqwest::Url::parse(&format!("http://x{target}")).unwrap();
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn ok(body: String) -> Answer {
    (200, Vec::new(), body)
}

/// A paged http source `orders` from lake.toml keys; `env` answers `${env:…}`.
fn source(url: &str, keys: &str, env: BTreeMap<&'static str, &'static str>) -> HttpSource {
    let text = format!(
        "[lake]\nname = \"t\"\n[sources.orders]\nkind = \"http\"\nurl = \"{url}/v2/orders\"\n{keys}\n"
    );
    let file = ConfigFile::parse("lake.toml", "/x".into(), text).unwrap();
    let p = file
        .pipeline(None, &lake_testing::bare().source(lake_ingest::HttpKind))
        .unwrap();
    let spec = p.sources["orders"]
        .config
        .downcast::<lake_ingest::HttpSpec>()
        .expect("an http source")
        .clone();
    let env: lake_core::run::EnvLookup =
        Arc::new(move |v: &str| env.get(v).map(|s| (*s).to_owned()));
    HttpSource::new("orders", spec, env)
        .unwrap()
        .with_base_backoff(Duration::from_millis(5))
}

fn day() -> Window {
    Window::day(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap())
}

const PREFIX: &str = "raw/orders/ingest_date=2024-03-01";

/// Land the day's window; the committed objects' names and bodies, in the manifest's order.
async fn land(src: &HttpSource) -> lake_core::Result<Vec<(String, String)>> {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let landed = publish::land(&*store, src, &day(), "run-1").await;
    let manifest = publish::read_manifest(&*store, PREFIX).await.unwrap();
    match landed {
        Err(e) => {
            assert!(manifest.is_none(), "a failed window committed {manifest:?}");
            Err(e)
        }
        Ok(l) => {
            assert!(matches!(l, Landed::Fetched(_)), "{l:?}");
            let mut out = Vec::new();
            for o in manifest.unwrap().objects {
                let body = store
                    .get_bytes(&Key::new(o.key.clone()).unwrap())
                    .await
                    .unwrap();
                let name = o.key.rsplit('/').next().unwrap().to_owned();
                out.push((name, String::from_utf8(body.to_vec()).unwrap()));
            }
            Ok(out)
        }
    }
}

fn names(landed: &[(String, String)]) -> Vec<&str> {
    landed.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn cursor_pages_land_in_order_as_one_window() {
    let api: Arc<Api> = Arc::new(|_, target, _| {
        let body = match param(target, "cursor").as_deref() {
            None => r#"{"data":[{"id":1},{"id":2}],"meta":{"next_cursor":"c2"}}"#,
            Some("c2") => r#"{"data":[{"id":3}],"meta":{"next_cursor":7}}"#,
            Some("7") => r#"{"data":[{"id":4}],"meta":{"next_cursor":null}}"#,
            Some(other) => panic!("cursor {other}"),
        };
        ok(body.into())
    });
    let s = serve(api).await;
    let src = source(
        &s.url,
        r#"query = { updated_since = "{start}", updated_until = "{end}", limit = "500" }
paginate = { kind = "cursor", cursor_path = "meta.next_cursor", param = "cursor" }
max_pages = 10000"#,
        BTreeMap::new(),
    );
    let landed = land(&src).await.unwrap();
    assert_eq!(
        names(&landed),
        [
            "orders-p00001.json",
            "orders-p00002.json",
            "orders-p00003.json"
        ]
    );
    assert!(landed[1].1.contains(r#""id":3"#));
    let targets = s.targets.lock().unwrap().clone();
    assert_eq!(targets.len(), 3);
    for t in &targets {
        assert_eq!(
            param(t, "updated_since").as_deref(),
            Some("2024-03-01"),
            "{t}"
        );
        assert_eq!(param(t, "limit").as_deref(), Some("500"), "{t}");
    }
    assert_eq!(param(&targets[1], "cursor").as_deref(), Some("c2"));
    assert_eq!(param(&targets[2], "cursor").as_deref(), Some("7"));
}

#[tokio::test]
async fn link_header_pages_follow_relative_and_absolute_links() {
    let api: Arc<Api> = Arc::new(|base, target, _| {
        let page: u32 = param(target, "page").map_or(1, |p| p.parse().unwrap());
        let link = match page {
            1 => Some(
                r#"</v2/orders?page=2>; rel="next", </v2/orders?page=3>; rel="last""#.to_owned(),
            ),
            2 => Some(format!(
                r#"<{base}/v2/orders?page=1>; rel="prev first", <{base}/v2/orders?page=3>; rel="next""#
            )),
            _ => None,
        };
        let headers = link
            .map(|l| vec![("Link".to_owned(), l)])
            .unwrap_or_default();
        (200, headers, format!("page {page}\n"))
    });
    let s = serve(api).await;
    let src = source(
        &s.url,
        r#"filename = "orders_{date}.csv"
paginate = { kind = "link_header" }"#,
        BTreeMap::new(),
    );
    let landed = land(&src).await.unwrap();
    assert_eq!(
        landed,
        [
            (
                "orders_2024-03-01-p00001.csv".to_owned(),
                "page 1\n".to_owned()
            ),
            (
                "orders_2024-03-01-p00002.csv".to_owned(),
                "page 2\n".to_owned()
            ),
            (
                "orders_2024-03-01-p00003.csv".to_owned(),
                "page 3\n".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn next_url_pages_carry_the_secret_query_the_link_leaves_out() {
    let api: Arc<Api> = Arc::new(|base, target, _| {
        assert_eq!(
            param(target, "key").as_deref(),
            Some("s3cr3t-key"),
            "{target}"
        );
        let next = match param(target, "after").as_deref() {
            None => format!(r#""{base}/v2/orders?after=10""#),
            Some("10") => r#""/v2/orders?after=20""#.to_owned(),
            _ => "\"\"".to_owned(),
        };
        ok(format!(r#"{{"items":[1],"links":{{"next":{next}}}}}"#))
    });
    let s = serve(api).await;
    let src = source(
        &s.url,
        r#"query = { key = "${env:KEY}" }
paginate = { kind = "next_url", next_url_path = "links.next" }
records_path = "items""#,
        BTreeMap::from([("KEY", "s3cr3t-key")]),
    );
    let objects = src.objects(&day()).await.unwrap();
    assert_eq!(objects.len(), 3);
    for o in &objects {
        assert!(!o.origin.contains("s3cr3t"), "{}", o.origin);
    }
    src.finish(&day()).await;
    assert_eq!(land(&src).await.unwrap().len(), 3);
}

#[tokio::test]
async fn offset_stops_on_a_short_page_and_page_on_an_empty_one() {
    let rows = |n: usize| {
        let items: Vec<String> = (0..n).map(|i| format!(r#"{{"i":{i}}}"#)).collect();
        format!(r#"{{"results":{{"rows":[{}]}}}}"#, items.join(","))
    };
    let api: Arc<Api> = Arc::new(move |_, target, _| {
        let n = match param(target, "offset").as_deref() {
            Some("0") | Some("2") => 2,
            Some("4") => 1,
            other => panic!("offset {other:?}"),
        };
        assert_eq!(param(target, "limit").as_deref(), Some("2"));
        ok(rows(n))
    });
    let s = serve(api).await;
    let src = source(
        &s.url,
        r#"paginate = { kind = "offset", param = "offset", limit_param = "limit", limit = 2 }
records_path = "results.rows""#,
        BTreeMap::new(),
    );
    assert_eq!(land(&src).await.unwrap().len(), 3);
    assert_eq!(s.targets.lock().unwrap().len(), 3);

    let api: Arc<Api> = Arc::new(|_, target, _| {
        let page: u32 = param(target, "p").unwrap().parse().unwrap();
        ok(if page < 2 {
            "[1,2]".into()
        } else {
            "[]".into()
        })
    });
    let s = serve(api).await;
    let src = source(
        &s.url,
        r#"paginate = { kind = "page", param = "p", start = 0 }"#,
        BTreeMap::new(),
    );
    let landed = land(&src).await.unwrap();
    assert_eq!(names(&landed), ["orders-p00001.json", "orders-p00002.json"]);
    let targets = s.targets.lock().unwrap().clone();
    let pages: Vec<_> = targets.iter().map(|t| param(t, "p").unwrap()).collect();
    assert_eq!(
        pages,
        ["0", "1", "2"],
        "the empty third page ends the window, unlanded"
    );
}

/// An API whose cursor never ends.
fn endless() -> Arc<Api> {
    Arc::new(|_, _, n| ok(format!(r#"{{"data":[1],"next":"c{}"}}"#, n + 1)))
}

#[tokio::test]
async fn more_pages_than_max_pages_fail_the_window_naming_the_source() {
    let s = serve(endless()).await;
    let src = source(
        &s.url,
        r#"paginate = { kind = "cursor", cursor_path = "next" }
records_path = "data"
max_pages = 4"#,
        BTreeMap::new(),
    );
    let e = land(&src).await.unwrap_err().to_string();
    assert!(e.contains("orders") && e.contains("max_pages (4)"), "{e}");
    assert_eq!(s.targets.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_page_that_keeps_failing_fails_the_window_and_one_that_recovers_lands() {
    // Page 2 answers 503 for good: nothing of the window lands.
    let api: Arc<Api> = Arc::new(|_, target, _| match param(target, "cursor") {
        None => ok(r#"{"data":[1],"next":"c2"}"#.into()),
        Some(_) => (503, Vec::new(), "down".into()),
    });
    let s = serve(api).await;
    let keys = r#"paginate = { kind = "cursor", cursor_path = "next" }
records_path = "data"
max_attempts = 3"#;
    let e = land(&source(&s.url, keys, BTreeMap::new()))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("503") && e.contains("3 attempts"), "{e}");
    assert_eq!(
        s.targets.lock().unwrap().len(),
        4,
        "page 1, then page 2 three times"
    );

    // Page 2 answers 500, then 429 with Retry-After, then its records.
    let api: Arc<Api> = Arc::new(|_, target, n| match (param(target, "cursor"), n) {
        (None, _) => ok(r#"{"data":[1],"next":"c2"}"#.into()),
        (Some(_), 1) => (500, Vec::new(), "oops".into()),
        (Some(_), 2) => (429, vec![("Retry-After".into(), "1".into())], String::new()),
        (Some(_), _) => ok(r#"{"data":[2],"next":null}"#.into()),
    });
    let s = serve(api).await;
    let started = std::time::Instant::now();
    let landed = land(&source(&s.url, keys, BTreeMap::new())).await.unwrap();
    assert_eq!(landed.len(), 2);
    assert!(landed[1].1.contains("[2]"), "{landed:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After waited"
    );
    assert_eq!(s.targets.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_loop_or_a_next_page_on_another_origin_is_refused() {
    let api: Arc<Api> = Arc::new(|_, _, _| ok(r#"{"data":[1],"next":"same"}"#.into()));
    let s = serve(api).await;
    let src = source(
        &s.url,
        r#"paginate = { kind = "cursor", cursor_path = "next" }
records_path = "data""#,
        BTreeMap::new(),
    );
    let e = land(&src).await.unwrap_err().to_string();
    assert!(e.contains("loop"), "{e}");
    assert_eq!(s.targets.lock().unwrap().len(), 2);

    let api: Arc<Api> = Arc::new(|_, _, _| {
        ok(r#"{"data":[1],"next":"http://127.0.0.2:9/v2/orders?page=2"}"#.into())
    });
    let s = serve(api).await;
    let src = source(
        &s.url,
        r#"headers = { Authorization = "${env:TOKEN}" }
paginate = { kind = "next_url", next_url_path = "next" }"#,
        BTreeMap::from([("TOKEN", "Bearer t0ken")]),
    );
    let e = land(&src).await.unwrap_err().to_string();
    assert!(e.contains("127.0.0.2:9") && e.contains("refused"), "{e}");
    assert!(!e.contains("t0ken"), "{e}");
    assert_eq!(s.targets.lock().unwrap().len(), 1);
}

#[test]
fn paginate_keys_are_checked_at_their_lines() {
    let kinds = lake_testing::bare().source(lake_ingest::HttpKind);
    let d = lake_testing::config::diagnostics(
        r#"[lake]
name = "x"

[sources.a]
kind = "http"
url = "https://api.example.com/a"
paginate = { kind = "pages" }

[sources.b]
kind = "http"
url = "https://api.example.com/b"
records_path = "data"

[sources.c]
kind = "http"
url = "https://api.example.com/c"
query = { cursor = "x" }
paginate = { kind = "cursor", cursor_path = "meta..next", limit = 5 }
max_pages = 0
"#,
        &kinds,
    );
    expect_each(
        &d,
        &[
            ("sources.a.paginate.kind", 7, "not a pagination"),
            ("sources.b.records_path", 12, "set `paginate` too"),
            ("sources.c.paginate.limit", 18, "takes no `limit`"),
            ("sources.c.paginate.cursor_path", 18, "not a dotted path"),
            ("sources.c.query.cursor", 17, "set by paginate"),
            ("sources.c.max_pages", 19, "at least 1"),
        ],
    );
}
