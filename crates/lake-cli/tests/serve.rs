//! `lake serve` end to end: its HTTP rules, and its pages in a real browser (headless
//! Chromium from the Debian packages, which `.ci/run` installs), with screenshots under the
//! target dir (`serve-screenshots/`) for a person to look at.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;
use lake_testing::serve::Served;

fn lake(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("lake").unwrap();
    c.current_dir(dir).env_remove("RUST_LOG");
    c
}

/// Start `lake serve` with `args` (port 0: any free one) and read the address it prints.
fn serve(dir: &Path, args: &[&str]) -> Served {
    let mut c = lake(dir);
    c.arg("serve").args(args);
    Served::start(c)
}

/// One HTTP GET: the status, the headers (lowercase names) and the body.
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<(String, String)>, String) {
    let r = lake_testing::serve::get(addr, path, headers, Duration::from_secs(60)).unwrap();
    (r.status, r.headers, r.body)
}

/// A pipeline whose refined/notes holds a `<script>` value.
fn notes_lake() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("data/notes.csv"),
        "id,note\n1,<script>alert('x')</script>\n2,plain\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("lake.toml"),
        r#"[lake]
name = "notes"

[sources.notes]
kind = "file"
path = "data/notes.csv"

[steps.notes]
kind = "sql"
inputs = ["raw/notes@date"]
output = "refined/notes"
sql = "SELECT CAST(id AS INT) AS id, note FROM notes"

[steps.checked]
kind = "sql"
inputs = ["raw/notes@date"]
output = "refined/checked"
sql = "SELECT CAST(id AS INT) AS id, note FROM notes"
expect = ["id > 1"]
max_rejected = 0.9

[charts.ids]
sql = "SELECT id, id * 2 AS twice FROM refined.notes ORDER BY id"
kind = "bar"
x = "id"
y = ["twice"]

[charts.broken]
sql = "SELECT id FROM refined.notes"
x = "id"
y = ["missing"]
"#,
    )
    .unwrap();
    let o = lake(dir)
        .args(["-q", "run", "--date", "2024-03-01"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    tmp
}

const ROUTES: &[&str] = &[
    "/",
    "/pipeline",
    "/runs",
    "/datasets",
    "/datasets/refined/notes",
    "/datasets/refined/notes/download?format=csv",
    "/query?sql=SELECT%201",
    "/api/version",
    "/charts/none",
    "/metrics",
];

#[test]
fn off_loopback_every_route_needs_the_token() {
    let tmp = notes_lake();
    let dir = tmp.path();
    // No token: refused before listening.
    let o = lake(dir)
        .args(["serve", "--bind", "0.0.0.0:0"])
        .env_remove("LAKE_SERVE_TOKEN")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("needs a token"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A token too short to resist guessing is refused.
    let o = lake(dir)
        .args(["serve", "--bind", "0.0.0.0:0", "--token", "t0ken-4713"])
        .env_remove("LAKE_SERVE_TOKEN")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("at least 16"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    const TOKEN: &str = "t0ken-4713-abcdef-9";
    let s = serve(dir, &["--bind", "0.0.0.0:0", "--token", TOKEN]);
    let port = s.addr.rsplit(':').next().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let bearer = format!("Bearer {TOKEN}");
    for route in ROUTES {
        let (status, _, _) = get(&addr, route, &[]);
        assert_eq!(status, 401, "{route} without the token");
        let (status, _, _) = get(&addr, route, &[("Authorization", "Bearer wrong")]);
        assert_eq!(status, 401, "{route} with a wrong token");
        let (status, _, body) = get(&addr, route, &[("Authorization", &bearer)]);
        assert_ne!(status, 401, "{route} with the token: {body}");
    }
    // ?token= once sets a cookie and sends the browser to the same address without it.
    let (status, headers, _) = get(&addr, &format!("/runs?token={TOKEN}&x=1"), &[]);
    assert_eq!(status, 303);
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(header("location"), "/runs?x=1");
    let cookie = header("set-cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let (status, _, _) = get(&addr, "/datasets", &[("Cookie", &cookie)]);
    assert_eq!(status, 200);
    // On loopback no token is asked.
    let local = serve(dir, &["--bind", "127.0.0.1:0"]);
    assert_eq!(get(&local.addr, "/", &[]).0, 200);
}

/// Only requests that name this server in `Host` are answered (a page that rebinds its own name
/// to 127.0.0.1 gets nothing), other sites reach only pages by a link, and every answer carries
/// the security headers.
#[test]
fn host_origin_and_security_headers() {
    let tmp = notes_lake();
    let dir = tmp.path();
    let s = serve(
        dir,
        &["--bind", "127.0.0.1:0", "--allow-host", "lake.example.com"],
    );
    let port = s.addr.rsplit(':').next().unwrap().to_owned();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "lake.example.com".to_owned(),
    ] {
        let (status, _, _) = get(&s.addr, "/datasets", &[("Host", &host)]);
        assert_eq!(status, 200, "{host}");
    }
    for host in [
        format!("rebind.attacker.example:{port}"),
        format!("127.0.0.1:{}", port.parse::<u16>().unwrap() + 1),
        "lake.example.com.evil:80".to_owned(),
    ] {
        for route in ROUTES {
            let (status, _, body) = get(&s.addr, route, &[("Host", &host)]);
            assert_eq!(status, 421, "{route} with Host {host}: {body}");
        }
    }
    // From another site: a link to a page opens it; a fetch of data, a download or a query
    // from a link does not.
    let cross = [
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
    ];
    assert_eq!(get(&s.addr, "/datasets", &cross).0, 200);
    for route in [
        "/query?sql=SELECT%201",
        "/datasets/refined/notes/download?format=csv",
        "/api/version",
        "/charts/ids",
    ] {
        assert_eq!(get(&s.addr, route, &cross).0, 403, "{route}");
    }
    let (status, _, _) = get(
        &s.addr,
        "/query?sql=SELECT%201",
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(status, 403);
    let (status, _, _) = get(
        &s.addr,
        "/query?sql=SELECT%201",
        &[("Origin", &format!("http://{}", s.addr))],
    );
    assert_eq!(status, 200);
    // Every answer, error or not, carries the headers; the pages need no inline script.
    for route in ["/", "/query?sql=SELECT%20nope", "/assets/lake.js"] {
        let (_, headers, body) = get(&s.addr, route, &[]);
        let h = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert!(
            h("content-security-policy").contains("script-src 'self'"),
            "{route}"
        );
        assert!(h("content-security-policy").contains("frame-ancestors 'none'"));
        assert_eq!(h("x-content-type-options"), "nosniff");
        assert_eq!(h("referrer-policy"), "no-referrer");
        if route == "/" {
            assert!(body.contains("<script src=\"/assets/lake.js\">"), "{body}");
            assert!(!body.contains("<script>"), "no inline script: {body}");
        }
    }
}

#[test]
fn values_are_escaped_names_validated_and_the_query_box_is_read_only() {
    let tmp = notes_lake();
    let s = serve(tmp.path(), &["--bind", "127.0.0.1:0"]);
    let (status, _, body) = get(&s.addr, "/datasets/refined/notes", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("&lt;script&gt;alert('x')&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<script>alert"), "{body}");
    let (_, _, body) = get(
        &s.addr,
        "/query?sql=SELECT%20note%20FROM%20refined.notes",
        &[],
    );
    assert!(body.contains("&lt;script&gt;alert"), "{body}");
    assert!(!body.contains("<script>alert"), "{body}");

    for bad in [
        "/datasets/refined/..%2F..%2Fetc",
        "/datasets/..%2F..%2F/notes",
        "/datasets/refined/..",
        "/datasets/refined/..%2Fnotes/download?format=csv",
    ] {
        let (status, _, body) = get(&s.addr, bad, &[]);
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(!body.contains("root:"), "{bad}: {body}");
    }
    assert_eq!(get(&s.addr, "/datasets/refined/missing", &[]).0, 404);

    // A step that set rows aside links to them; their page shows each with its _reason.
    let (_, _, checked) = get(&s.addr, "/datasets/refined/checked", &[]);
    assert!(
        checked.contains("href=\"/datasets/refined/_rejected_checked\""),
        "{checked}"
    );
    let (status, _, rejected) = get(&s.addr, "/datasets/refined/_rejected_checked", &[]);
    assert_eq!(status, 200, "{rejected}");
    assert!(rejected.contains("<th>_reason</th>"), "{rejected}");
    assert!(rejected.contains("1 rows"), "{rejected}");

    // A failing chart shows its error, with its line, in its place; the other is drawn.
    let (status, _, home) = get(&s.addr, "/", &[]);
    assert_eq!(status, 200);
    let broken = home.split("data-chart=\"broken\"").nth(1).unwrap();
    assert!(
        broken.contains("class=\"error\"")
            && broken.contains("line 28")
            && broken.contains("no column &quot;missing&quot;"),
        "{home}"
    );
    let ids = home.split("data-chart=\"ids\"").nth(1).unwrap();
    assert!(
        ids[..ids.find("</svg>").unwrap()].matches("<rect").count() >= 2,
        "{home}"
    );

    for ddl in [
        "CREATE%20TABLE%20t%20AS%20SELECT%201",
        "DROP%20TABLE%20refined.notes",
        "COPY%20refined.notes%20TO%20'%2Ftmp%2Fx.csv'",
        "INSERT%20INTO%20refined.notes%20VALUES%20(3,'x')",
    ] {
        let (status, _, body) = get(&s.addr, &format!("/query?sql={ddl}"), &[]);
        assert_eq!(status, 400, "{ddl}: {body}");
        assert!(body.contains("class=\"error\""), "{ddl}: {body}");
    }
    // The data is untouched, and downloads are what lake query reads.
    let (status, headers, csv) = get(&s.addr, "/datasets/refined/notes/download?format=csv", &[]);
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "text/csv")
    );
    assert_eq!(csv.lines().count(), 3, "{csv}");
}

/// Headless Chromium, if this machine has it: `LAKE_REQUIRE_CHROMIUM` makes its absence a
/// failure (CI installs it).
fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(o) = Command::new(name).arg("--version").output()
            && o.status.success()
        {
            return Some(PathBuf::from(name));
        }
    }
    assert!(
        std::env::var_os("LAKE_REQUIRE_CHROMIUM").is_none(),
        "LAKE_REQUIRE_CHROMIUM is set but no chromium is on PATH"
    );
    eprintln!("skipped: no Chromium (apt-get install chromium)");
    None
}

/// The page at `url` as the browser has it after its scripts ran, and a screenshot of it.
fn browse(browser: &Path, url: &str, shot: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1280,1000",
    ];
    let dom = Command::new(browser)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(dom.status.success(), "chromium failed on {url}");
    let shot_ok = Command::new(browser)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(shot_ok.status.success(), "chromium screenshot of {url}");
    String::from_utf8_lossy(&dom.stdout).into_owned()
}

#[test]
fn the_weather_dashboard_in_chromium() {
    let Some(browser) = chromium() else { return };
    let tmp = lake_testing::example("weather");
    let dir = tmp.path();
    let o = lake(dir)
        .args(["-q", "run", "--date", "2024-03-01"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let s = serve(dir, &["--bind", "127.0.0.1:0"]);
    let url = |p: &str| format!("http://{}{p}", s.addr);

    // Home: the temperature chart, 7 points in each of its 3 series.
    let home = browse(&browser, &url("/"), &shots.join("home.png"));
    let chart = home
        .split("data-chart=\"temperature\"")
        .nth(1)
        .expect("the temperature chart");
    let chart = &chart[..chart.find("</svg>").expect("an svg")];
    let mut per_fill = std::collections::BTreeMap::<String, usize>::new();
    for c in chart.split("<circle").skip(1) {
        let fill = c
            .split("fill=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        *per_fill.entry(fill.to_owned()).or_default() += 1;
    }
    assert_eq!(per_fill.len(), 3, "{per_fill:?}");
    assert!(per_fill.values().all(|n| *n == 7), "{per_fill:?}");

    // Pipeline: three nodes, each run once and succeeded.
    let pipeline = browse(&browser, &url("/pipeline"), &shots.join("pipeline.png"));
    let nodes: Vec<&str> = pipeline
        .split("class=\"node\" data-id=\"")
        .skip(1)
        .map(|n| n.split('"').next().unwrap())
        .collect();
    assert_eq!(
        nodes,
        [
            "source:weather",
            "step:weather_hourly",
            "step:weather_daily"
        ]
    );
    assert_eq!(pipeline.matches("data-status=\"succeeded\"").count(), 3);

    // The hourly dataset: 100 rows on its first page, 7 partitions, 168 rows in all.
    let hourly = browse(
        &browser,
        &url("/datasets/trusted/weather_hourly"),
        &shots.join("dataset.png"),
    );
    let rows = hourly.split("<table class=\"rows\">").nth(1).unwrap();
    let rows = &rows[..rows.find("</table>").unwrap()];
    assert_eq!(rows.matches("<tr>").count(), 101, "a header and 100 rows");
    assert!(hourly.contains("7 partitions"), "{hourly}");
    assert!(hourly.contains("168 rows"), "{hourly}");

    // The query box.
    let q = browse(
        &browser,
        &url("/query?sql=SELECT+count(*)+AS+n+FROM+trusted.weather_hourly"),
        &shots.join("query.png"),
    );
    assert!(q.contains("<td>168</td>"), "{q}");

    // A failed run shows its error on the runs page.
    let toml = std::fs::read_to_string(dir.join("lake.toml")).unwrap();
    std::fs::write(
        dir.join("lake.toml"),
        format!(
            "{toml}\n[steps.broken]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo the sensor is offline >&2; exit 1\"]\n"
        ),
    )
    .unwrap();
    drop(s);
    let o = lake(dir)
        .args(["-q", "run", "--date", "2024-03-02"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let s = serve(dir, &["--bind", "127.0.0.1:0"]);
    let runs = browse(
        &browser,
        &format!("http://{}/runs", s.addr),
        &shots.join("runs.png"),
    );
    assert!(runs.contains("data-status=\"failed\""), "{runs}");
    assert!(runs.contains("the sensor is offline"), "{runs}");
    eprintln!("screenshots: {}", shots.display());
}

#[test]
fn lake_chart_draws_a_chart_to_svg_and_png() {
    let tmp = lake_testing::example("weather");
    let dir = tmp.path();
    let o = lake(dir)
        .args(["-q", "run", "--date", "2024-03-01"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for file in ["t.svg", "t.png"] {
        let o = lake(dir)
            .args(["chart", "temperature", "-o", file])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let svg = std::fs::read_to_string(dir.join("t.svg")).unwrap();
    assert_eq!(svg.matches("<circle").count(), 21, "3 series of 7 days");
    let png = std::fs::read(dir.join("t.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let be = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().unwrap());
    assert_eq!((be(16), be(20)), (800, 450), "the IHDR's width and height");
    // Another extension is refused, naming the file.
    let o = lake(dir)
        .args(["chart", "temperature", "-o", "t.jpg"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("t.jpg"));
}

#[test]
fn the_credit_dashboard_in_chromium() {
    let Some(browser) = chromium() else { return };
    let tmp = lake_testing::example("credit");
    let dir = tmp.path();
    let o = lake(dir)
        .args(["-q", "run", "--date", "2024-03-01"])
        .env_remove("PG_URL")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let s = serve(dir, &["--bind", "127.0.0.1:0"]);
    let home = browse(
        &browser,
        &format!("http://{}/", s.addr),
        &shots.join("credit-home.png"),
    );
    assert!(!home.contains("class=\"error\""), "{home}");
    // Both charts drawn: a bar per purpose (8) in each, beside the background and legend.
    for chart in ["loans", "mean_amount"] {
        let c = home
            .split(&format!("data-chart=\"{chart}\""))
            .nth(1)
            .unwrap_or_else(|| panic!("chart {chart}: {home}"));
        let svg = &c[..c.find("</svg>").unwrap()];
        assert!(svg.matches("<rect").count() >= 8, "{chart}: {svg}");
        assert!(svg.contains("business") && svg.contains("car"), "{chart}");
    }
    let pipeline = browse(
        &browser,
        &format!("http://{}/pipeline", s.addr),
        &shots.join("credit-pipeline.png"),
    );
    assert_eq!(
        pipeline.matches("class=\"node\"").count(),
        3,
        "source credit, steps credit and credit_by_purpose"
    );
    // Each source says what it fetches, as `lake plan` does.
    assert!(
        pipeline.contains("(file, line") && pipeline.contains("raw/credit/ingest_date="),
        "{pipeline}"
    );
    // The typed loans, with the link to the rows the step set aside.
    let trusted = browse(
        &browser,
        &format!("http://{}/datasets/trusted/credit", s.addr),
        &shots.join("credit-dataset.png"),
    );
    let count = trusted
        .split("<span class=\"rowcount\">")
        .nth(1)
        .and_then(|r| r.split(" rows").next())
        .and_then(|n| n.parse::<u64>().ok())
        .expect("a row count");
    // The example's loans all pass its checks: nothing set aside, no link to rejected rows.
    assert_eq!(count, 1000, "{trusted}");
    assert_eq!(count_of(dir, "SELECT count(*) FROM trusted.credit"), 1000);
    assert!(!trusted.contains("_rejected_credit"), "{trusted}");
}

/// A count by `lake query`.
fn count_of(dir: &Path, sql: &str) -> u64 {
    let o = lake(dir)
        .args(["query", sql, "--format", "csv"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&o.stdout)))
}

/// A merged dataset's page says what its last batch changed, as the ledger recorded it.
#[test]
fn a_merged_datasets_page_shows_its_last_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("lake.toml"),
        r#"[lake]
name = "shop"

[sources.customers]
kind = "file"
path = "data/customers.csv"

[steps.customers]
kind = "sql"
inputs = ["raw/customers@date"]
output = "trusted/customers"
sql = "SELECT CAST(id AS BIGINT) AS id, tier FROM customers"
mode = "merge"
key = ["id"]
delete_when = "tier = 'deleted'"
"#,
    )
    .unwrap();
    for (date, rows) in [
        ("2024-05-01", "1,gold\n2,basic\n3,basic\n"),
        ("2024-05-02", "2,gold\n3,deleted\n4,basic\n5,basic\n"),
    ] {
        std::fs::write(dir.join("data/customers.csv"), format!("id,tier\n{rows}")).unwrap();
        let o = lake(dir)
            .args(["-q", "run", "--date", date])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let s = serve(dir, &["--bind", "127.0.0.1:0"]);
    let (status, _, body) = get(&s.addr, "/datasets/trusted/customers", &[]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("last batch: 2 inserted · 1 updated · 1 deleted · 1 files rewritten, 0 kept"),
        "{body}"
    );
}

/// Move the commit time of the dataset at `prefix` (under the root `lake/`) `hours` into the
/// past, as if it had been published then.
fn committed_hours_ago(dir: &Path, prefix: &str, hours: i64) {
    let path = dir.join("lake").join(prefix).join("_manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let then = chrono::Utc::now() - chrono::Duration::hours(hours);
    m["committed"] = serde_json::json!(then);
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
}

/// The notices `[notify] command` appended to notices.jsonl, one JSON object each.
fn notices(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("notices.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `freshness`: a dataset published 27 hours ago against "26h" is stale in `lake status`
/// (exit 1) and on its `lake serve` page, and `lake schedule` sends one notice per staleness.
#[test]
fn a_dataset_older_than_its_freshness_is_stale_in_status_serve_and_one_notice() {
    use chrono::{Duration as Days, Timelike, Utc};
    let example = lake_testing::example("credit");
    let dir = example.path();
    let toml = std::fs::read_to_string(dir.join("lake.toml"))
        .unwrap()
        .replace("[steps.credit]\n", "[steps.credit]\nfreshness = \"26h\"\n")
        .replace(
            "[steps.credit_by_purpose]\n",
            "[steps.credit_by_purpose]\nfreshness = \"26h\"\n",
        );
    std::fs::write(
        dir.join("lake.toml"),
        toml + "\n[notify]\ncommand = [\"sh\", \"-c\", \"cat >> notices.jsonl; echo >> notices.jsonl\"]\n\n[schedule]\ncron = \"0 7 * * *\"\ntimezone = \"UTC\"\n",
    )
    .unwrap();
    // The latest tick's date, run now: the schedule has nothing due.
    let now = Utc::now();
    let latest = if now.hour() >= 7 {
        now.date_naive()
    } else {
        now.date_naive() - Days::days(1)
    };
    let run = |force: bool| {
        let mut c = lake(dir);
        c.args(["-q", "run", "--date", &latest.to_string()]);
        if force {
            c.arg("--force");
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(false);
    let plan = lake(dir).arg("plan").output().unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert_eq!(
        plan.matches("freshness:  stale past 26h").count(),
        2,
        "{plan}"
    );
    let status = || {
        let o = lake(dir).args(["status", "--json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let by: std::collections::BTreeMap<String, String> = v["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["dataset"].as_str().unwrap().to_owned(),
                    d["status"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        (o.status.code(), by)
    };
    let fresh = |s: &str| -> Vec<(String, String)> {
        [
            ("raw/credit", "unchecked"),
            ("refined/credit_by_purpose", s),
            ("trusted/credit", "ok"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .to_vec()
    };
    let (code, by) = status();
    assert_eq!(
        (code, by.into_iter().collect::<Vec<_>>()),
        (Some(0), fresh("ok"))
    );

    committed_hours_ago(dir, "refined/credit_by_purpose", 27);
    let (code, by) = status();
    assert_eq!(
        (code, by.into_iter().collect::<Vec<_>>()),
        (Some(1), fresh("stale")),
        "stale: exit 1"
    );
    let o = lake(dir).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("refined/credit_by_purpose"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("step credit_by_purpose")
            && line.contains("27h0")
            && line.split_whitespace().rev().take(2).eq(["stale", "26h"]),
        "{text}"
    );

    let s = serve(dir, &["--bind", "127.0.0.1:0"]);
    let (code, _, body) = get(&s.addr, "/datasets/refined/credit_by_purpose", &[]);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("class=\"stale\"") && body.contains("stale: 27h0"),
        "{body}"
    );
    let (_, _, list) = get(&s.addr, "/datasets", &[]);
    assert_eq!(list.matches("class=\"stale\"").count(), 1, "{list}");
    let (_, _, pipeline) = get(&s.addr, "/pipeline", &[]);
    assert_eq!(pipeline.matches("class=\"stale\"").count(), 1, "{pipeline}");
    assert_eq!(pipeline.matches("fresh: ").count(), 1, "{pipeline}");
    // The graph marks the stale step's node, and only it.
    assert_eq!(
        pipeline.matches("data-stale=\"true\"").count(),
        1,
        "{pipeline}"
    );
    let node = pipeline
        .split("<g class=\"node\"")
        .find(|g| g.contains("data-stale=\"true\""))
        .unwrap();
    assert!(
        node.contains("data-id=\"step:credit_by_purpose\"")
            && node.contains("stale: 27h0")
            && node.contains("stroke=\"#c62828\""),
        "{node}"
    );
    let (_, _, trusted) = get(&s.addr, "/datasets/trusted/credit", &[]);
    assert!(
        trusted.contains("fresh: ") && !trusted.contains("class=\"stale\""),
        "{trusted}"
    );
    drop(s);

    // One notice for this staleness, however many times the schedule looks.
    for _ in 0..2 {
        let o = lake(dir).args(["schedule", "--once"]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let sent = notices(dir);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["event"], "stale");
    assert_eq!(
        sent[0]["datasets"][0]["dataset"],
        "refined/credit_by_purpose"
    );
    assert!(
        sent[0]["text"]
            .as_str()
            .unwrap()
            .contains("refined/credit_by_purpose (step credit_by_purpose): 27h0"),
        "{sent:?}"
    );

    // Published again, then stale again: a new staleness, a new notice.
    run(true);
    assert_eq!(status().0, Some(0));
    let o = lake(dir).args(["schedule", "--once"]).output().unwrap();
    assert!(o.status.success());
    assert_eq!(notices(dir).len(), 1, "fresh: nothing sent");
    committed_hours_ago(dir, "refined/credit_by_purpose", 30);
    let o = lake(dir).args(["schedule", "--once"]).output().unwrap();
    assert!(o.status.success());
    let sent = notices(dir);
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[1]["text"].as_str().unwrap().contains(": 30h0"),
        "{sent:?}"
    );
}

/// The value of the sample `metric` with `labels` in a scrape (none when absent).
fn sample(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

/// `/metrics` parses as Prometheus text; its run counter, step figures and dataset ages are
/// the ledger's and the zones', and they move after a run.
#[test]
fn metrics_parse_as_prometheus_text_and_move_after_a_run() {
    let example = lake_testing::example("credit");
    let dir = example.path();
    let toml = std::fs::read_to_string(dir.join("lake.toml"))
        .unwrap()
        .replace(
            "[steps.credit_by_purpose]\n",
            "[steps.credit_by_purpose]\nfreshness = \"26h\"\n",
        );
    std::fs::write(dir.join("lake.toml"), toml).unwrap();
    let run = |date: &str| {
        let o = lake(dir)
            .args(["-q", "run", "--date", date])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run("2024-03-01");
    let s = serve(dir, &["--bind", "127.0.0.1:0"]);
    let scrape = || {
        let (code, headers, body) = get(&s.addr, "/metrics", &[]);
        assert_eq!(code, 200, "{body}");
        let kind = headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone());
        assert_eq!(
            kind.as_deref(),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        // Every line is a comment or `name{labels} value`: the parser skips what it cannot read.
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
            assert!(
                value.parse::<f64>().is_ok() && line.contains("{pipeline=\"credit\""),
                "{line}"
            );
        }
        prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
    };
    let first = scrape();
    let ok = [("pipeline", "credit"), ("status", "succeeded")];
    assert_eq!(sample(&first, "lake_runs_total", &ok), Some(1.0));
    assert_eq!(
        sample(&first, "lake_runs_total", &[("status", "failed")]),
        Some(0.0)
    );
    assert_eq!(sample(&first, "lake_last_run_status", &ok), Some(1.0));
    // The step's rows are the ledger's.
    let runs: serde_json::Value =
        serde_json::from_slice(&lake(dir).args(["runs", "--json"]).output().unwrap().stdout)
            .unwrap();
    let id = runs[0]["run_id"].as_str().unwrap().to_owned();
    let record: serde_json::Value = serde_json::from_slice(
        &lake(dir)
            .args(["runs", "show", &id, "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for step in record["steps"].as_array().unwrap() {
        let name = step["name"].as_str().unwrap();
        assert_eq!(
            sample(&first, "lake_step_last_rows", &[("step", name)]),
            step["rows"].as_u64().map(|r| r as f64),
            "{name}"
        );
        assert!(
            sample(&first, "lake_step_last_duration_seconds", &[("step", name)])
                .is_some_and(|d| d >= 0.0),
            "{name}"
        );
    }
    assert_eq!(
        sample(
            &first,
            "lake_dataset_stale",
            &[("dataset", "refined/credit_by_purpose")]
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &first,
            "lake_dataset_stale",
            &[("dataset", "trusted/credit")]
        ),
        None,
        "no limit, no staleness"
    );
    let age = |sc: &prometheus_parse::Scrape| {
        sample(
            sc,
            "lake_dataset_age_seconds",
            &[("dataset", "trusted/credit")],
        )
        .unwrap()
    };
    assert!((0.0..300.0).contains(&age(&first)));
    let started = sample(&first, "lake_last_run_timestamp_seconds", &[]).unwrap();

    run("2024-03-02");
    // Pages and scrapes share answers for a second.
    std::thread::sleep(Duration::from_millis(1100));
    let second = scrape();
    assert_eq!(sample(&second, "lake_runs_total", &ok), Some(2.0));
    assert!(sample(&second, "lake_last_run_timestamp_seconds", &[]).unwrap() >= started);
}
