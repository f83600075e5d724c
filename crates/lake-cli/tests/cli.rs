//! The `lake` binary end to end, in temporary folders.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

mod common;
use common::{Reply, credit_run, http_server, lake, stderr, stdout};

#[test]
fn init_validate_run_runs_ls_and_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    lake(tmp.path())
        .args(["init", "demo"])
        .assert()
        .success()
        .stdout(predicate::str::contains("next: cd demo && lake run"));
    lake(tmp.path())
        .args(["init", "demo"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("already exists"));
    lake(&dir)
        .arg("validate")
        .assert()
        .success()
        .stdout(predicate::str::contains("is valid"));

    let out = lake(&dir)
        .args(["run", "--date", "2024-03-01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ingest credit 2024-03-01: fetched 1 object"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(&format!(
            "output refined/credit_by_purpose: {}",
            dir.join("lake/refined/credit_by_purpose").display()
        )),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("step credit: succeeded") && stderr(&out).contains("1000 rows"),
        "{}",
        stderr(&out)
    );

    // The refined rows, checked against sums computed here from the raw CSV.
    let raw = std::fs::read_to_string(dir.join("data/german_credit_data.csv")).unwrap();
    let mut expected: std::collections::BTreeMap<String, (u64, f64, f64)> = Default::default();
    for line in raw.lines().skip(1) {
        let f: Vec<&str> = line.trim_end_matches('\r').split(',').collect();
        let e = expected.entry(f[9].to_owned()).or_default();
        e.0 += 1;
        e.1 += f[7].parse::<f64>().unwrap();
        e.2 += f[8].parse::<f64>().unwrap();
    }
    let out = lake(&dir)
        .args([
            "query",
            "SELECT purpose, n, avg_credit_amount, avg_duration FROM refined.credit_by_purpose ORDER BY purpose",
            "--format",
            "csv",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = stdout(&out);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("purpose,n,avg_credit_amount,avg_duration")
    );
    let got: Vec<&str> = lines.collect();
    assert_eq!(got.len(), expected.len(), "one row per purpose: {csv}");
    for (row, (purpose, (n, amount, duration))) in got.iter().zip(&expected) {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[0], purpose);
        assert_eq!(f[1], n.to_string());
        let close = |s: &str, want: f64| (s.parse::<f64>().unwrap() - want).abs() < 0.0051;
        assert!(close(f[2], amount / *n as f64), "{row}");
        assert!(close(f[3], duration / *n as f64), "{row}");
    }
    let refined = dir.join("lake/refined/credit_by_purpose");
    let csv_path = std::fs::read_dir(&refined)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a parquet file");
    // Raw lands byte for byte.
    assert_eq!(
        std::fs::read(dir.join("lake/raw/credit/ingest_date=2024-03-01/german_credit_data.csv"))
            .unwrap(),
        raw.as_bytes()
    );

    let out = lake(&dir).args(["runs", "--json"]).output().unwrap();
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let first = &runs[0];
    assert_eq!(first["status"], "succeeded");
    assert_eq!(first["date"], "2024-03-01");
    assert_eq!(
        first["steps"][0]["inputs"][0]["key"],
        "raw/credit/ingest_date=2024-03-01/german_credit_data.csv"
    );
    assert_eq!(first["steps"][0]["inputs"][0]["size"], raw.len() as u64);
    assert_eq!(
        first["steps"][0]["inputs"][0]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    assert_eq!(first["steps"][0]["name"], "credit");
    assert_eq!(first["steps"][0]["rows"], 1000);
    assert_eq!(first["steps"][0]["rejected"], 0);
    let published = first["steps"][1]["output_objects"][0]["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(published.starts_with("refined/credit_by_purpose/") && published.ends_with(".parquet"));

    lake(&dir).arg("ls").assert().success().stdout(
        predicate::str::contains("raw/credit")
            .and(predicate::str::contains("refined/credit_by_purpose")),
    );
    lake(&dir)
        .args(["ls", "refined/credit_by_purpose"])
        .assert()
        .success()
        .stdout(predicate::str::contains(published.as_str()));

    // The same date again: nothing fetched, the step is up to date; the output is unchanged.
    let before = std::fs::read(&csv_path).unwrap();
    let out = lake(&dir)
        .args(["run", "--date", "2024-03-01"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("ingest credit 2024-03-01: skipped, window already complete"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("step credit_by_purpose: skipped")
            && stderr(&out).contains("up to date"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&csv_path).unwrap(), before);
    let id = first["run_id"].as_str().unwrap();
    lake(&dir)
        .args(["runs", "show", &id[..20]])
        .assert()
        .success()
        .stdout(predicate::str::contains("sha256").and(predicate::str::contains(id)));
}

const STEP_PIPELINE: &str = r#"
[lake]
name = "t"

[steps.out]
kind = "command"
command = ["sh", "-c", "echo $1 > \"$LAKE_OUTPUT/v.txt\"; if [ -n \"$FAIL\" ]; then echo \"boom with $TOKEN\" >&2; exit 3; fi", "sh", "{date}"]
output = "refined/v"
env = { TOKEN = "${env:LAKE_TEST_TOKEN}", FAIL = "${env:LAKE_TEST_FAIL}" }
"#;

#[test]
fn a_failed_step_leaves_the_previous_output_and_never_shows_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("lake.toml"), STEP_PIPELINE).unwrap();
    let ok = lake(tmp.path())
        .args(["run", "--date", "2024-01-01"])
        .env("LAKE_TEST_TOKEN", "tok-12345")
        .env("LAKE_TEST_FAIL", "")
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    let v = tmp.path().join("lake/refined/v/v.txt");
    assert_eq!(std::fs::read_to_string(&v).unwrap(), "2024-01-01\n");

    let failed = lake(tmp.path())
        .args(["run", "--date", "2024-01-02"])
        .env("LAKE_TEST_TOKEN", "tok-12345")
        .env("LAKE_TEST_FAIL", "yes")
        .output()
        .unwrap();
    assert_eq!(failed.status.code(), Some(1));
    let err = stderr(&failed);
    assert!(
        err.contains("step out: FAILED")
            && err.contains("exit status 3")
            && err.contains("boom with ***"),
        "{err}"
    );
    assert!(!err.contains("tok-12345") && !stdout(&failed).contains("tok-12345"));
    assert_eq!(
        std::fs::read_to_string(&v).unwrap(),
        "2024-01-01\n",
        "previous output intact"
    );
    assert!(
        !tmp.path().join("lake/_lake/staging").exists()
            || std::fs::read_dir(tmp.path().join("lake/_lake/staging"))
                .unwrap()
                .count()
                == 0
    );
    assert!(
        !tmp.path().join("lake/_lake/locks/t").exists(),
        "lock released"
    );

    // The secret is in no file of the lake, and not in the plan.
    for entry in walk(&tmp.path().join("lake")) {
        let text = std::fs::read_to_string(&entry).unwrap_or_default();
        assert!(!text.contains("tok-12345"), "secret in {}", entry.display());
    }
    let plan = lake(tmp.path())
        .args(["plan"])
        .env("LAKE_TEST_TOKEN", "tok-12345")
        .output()
        .unwrap();
    assert!(
        stdout(&plan).contains("TOKEN = ${env:LAKE_TEST_TOKEN}")
            && !stdout(&plan).contains("tok-12345"),
        "{}",
        stdout(&plan)
    );
    let plan = lake(tmp.path())
        .args(["plan", "--json"])
        .env("LAKE_TEST_TOKEN", "tok-12345")
        .output()
        .unwrap();
    assert!(!stdout(&plan).contains("tok-12345"));
    let json: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(json["order"][0], "out");

    // A missing variable: exit 2, naming the key, before anything runs.
    lake(tmp.path())
        .args(["run", "--date", "2024-01-03"])
        .env_remove("LAKE_TEST_TOKEN")
        .env("LAKE_TEST_FAIL", "")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "steps.out.env.TOKEN: environment variable LAKE_TEST_TOKEN is not set",
        ));
}

#[test]
fn a_cycle_exits_2_naming_both_steps() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        "[lake]\nname = \"c\"\n\n[steps.first]\nkind = \"command\"\ncommand = [\"true\"]\ndepends_on = [\"second\"]\n\n[steps.second]\nkind = \"command\"\ncommand = [\"true\"]\ndepends_on = [\"first\"]\n",
    )
    .unwrap();
    for cmd in ["validate", "plan", "run"] {
        lake(tmp.path())
            .arg(cmd)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(
                "dependency cycle: first (line 4) → second (line 9) → first (line 4)",
            ));
    }
}

#[test]
fn an_unknown_key_exits_2_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        "[lake]\nname = \"u\"\nrooot = \"x\"\n",
    )
    .unwrap();
    lake(tmp.path())
        .arg("validate")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "lake.toml:3:1: lake.rooot: unknown field `rooot`",
        ));
    lake(tmp.path())
        .args(["run", "--date", "2024-13-01"])
        .assert()
        .code(2);
    // A missing lake.toml is a configuration error (issue 15 #10: it was exit 1).
    lake(tmp.path())
        .args(["-c", "missing.toml", "validate"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("missing.toml"));
}

#[test]
fn a_second_concurrent_run_is_refused_by_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        "[lake]\nname = \"slow\"\n\n[steps.wait]\nkind = \"command\"\ncommand = [\"sleep\", \"3\"]\n",
    )
    .unwrap();
    let mut first = std::process::Command::new(assert_cmd::cargo::cargo_bin("lake"))
        .current_dir(tmp.path())
        .args(["-q", "run"])
        .spawn()
        .unwrap();
    let lock = tmp.path().join("lake/_lake/locks/slow");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !lock.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "first run never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    lake(tmp.path()).arg("run").assert().code(1).stderr(
        predicate::str::contains("pipeline \"slow\" is locked by run")
            .and(predicate::str::contains("pid")),
    );
    assert!(first.wait().unwrap().success());
    assert!(!lock.exists(), "released after the first run");
    lake(tmp.path()).arg("run").assert().success();
}

#[test]
fn query_lists_tables_prints_rows_writes_files_and_reports_sql_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    lake(tmp.path()).args(["init", "demo"]).assert().success();
    lake(&dir)
        .arg("query")
        .assert()
        .success()
        .stderr(predicate::str::contains("no datasets yet"));
    lake(&dir)
        .args(["-q", "run", "--date", "2024-03-01"])
        .assert()
        .success();
    lake(&dir).arg("query").assert().success().stdout(
        predicate::str::contains("raw.credit")
            .and(predicate::str::contains(
                "  credit_amount            VARCHAR",
            ))
            .and(predicate::str::contains("trusted.credit"))
            .and(predicate::str::contains(
                "  credit_amount            BIGINT",
            ))
            .and(predicate::str::contains("refined.credit_by_purpose")),
    );
    let out = lake(&dir)
        .args([
            "query",
            "SELECT purpose, n FROM refined.credit_by_purpose WHERE purpose = 'car'",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let row: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(row["purpose"], "car");
    assert_eq!(row["n"], 337);
    // A join across zones, written to a file.
    lake(&dir)
        .args([
            "query",
            "SELECT t.purpose, count(*) AS loans, max(r.n) AS n FROM trusted.credit t JOIN refined.credit_by_purpose r ON t.purpose = r.purpose GROUP BY t.purpose",
            "--output",
            "out.csv",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("8 rows written"));
    let csv = std::fs::read_to_string(dir.join("out.csv")).unwrap();
    assert_eq!(csv.lines().count(), 9, "{csv}");
    assert!(csv.lines().any(|l| l == "car,337,337"), "{csv}");
    // Errors: bad SQL is exit 1 with the engine's message; a bad --output name is usage.
    lake(&dir)
        .args(["query", "SELECT nope FROM trusted.credit"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("lake query").and(predicate::str::contains("nope")));
    lake(&dir)
        .args(["query", "SELECT 1", "--output", "x.txt"])
        .assert()
        .code(2);
    lake(&dir)
        .args(["query", "DROP TABLE trusted.credit"])
        .assert()
        .code(1);

    // A SQL error in a step fails the run (exit 1) and names the line of its sql key.
    let toml = std::fs::read_to_string(dir.join("lake.toml")).unwrap();
    std::fs::write(
        dir.join("lake.toml"),
        toml.replace("ROUND(AVG(duration), 2)", "ROUND(AVG(duratoin), 2)"),
    )
    .unwrap();
    let line = toml
        .lines()
        .position(|l| l.starts_with("sql = ") && toml.contains("AVG(duration)"))
        .map(|_| {
            let start = toml.find("[steps.credit_by_purpose]").unwrap();
            toml[..start].lines().count()
                + toml[start..]
                    .lines()
                    .position(|l| l.starts_with("sql = "))
                    .unwrap()
                + 1
        })
        .unwrap();
    let out = lake(&dir)
        .args(["run", "--date", "2024-03-02"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("step credit_by_purpose: FAILED")
            && err.contains(&format!("lake.toml:{line} (steps.credit_by_purpose.sql)"))
            && err.contains("duratoin"),
        "{err}"
    );
}

#[test]
fn an_http_source_feeds_the_weather_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, seen) = meteo_server();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/weather/lake.toml"),
    )
    .unwrap();
    let toml = example.replace(
        "kind = \"file\"\npath = \"data/open_meteo_hourly.json\"",
        &format!(
            "kind = \"http\"\nurl = \"{url}/v1/forecast\"\nquery = {{ latitude = \"6.25\", longitude = \"-75.56\", start_date = \"{{start}}\", end_date = \"{{end}}\" }}\nfilename = \"meteo_{{start:%Y%m%d}}.json\""
        ),
    );
    assert_ne!(toml, example, "the source table was replaced");
    std::fs::write(tmp.path().join("lake.toml"), toml).unwrap();
    let out = lake(tmp.path())
        .args(["run", "--date", "2024-05-01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        tmp.path()
            .join("lake/raw/weather/ingest_date=2024-05-01/meteo_20240501.json")
            .is_file()
    );
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            "GET /v1/forecast?end_date=2024-05-01&latitude=6.25&longitude=-75.56&start_date=2024-05-01 HTTP/1.1"
        ]
    );
    lake(tmp.path())
        .args([
            "query",
            "SELECT count(*) AS days FROM refined.weather_daily",
            "--format",
            "csv",
        ])
        .assert()
        .success()
        .stdout("days\n7\n");
    // The same date again: the window is complete, nothing is fetched.
    lake(tmp.path())
        .args(["run", "--date", "2024-05-01"])
        .assert()
        .success();
    assert_eq!(seen.lock().unwrap().len(), 1);

    // `lake ingest` over a range across a month boundary: oldest first, complete ones skipped.
    let out = lake(tmp.path())
        .args([
            "ingest",
            "weather",
            "--from",
            "2024-04-29",
            "--to",
            "2024-05-02",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("3 windows fetched")
            && stdout(&out).contains("1 already complete, 0 failed"),
        "{}",
        stdout(&out)
    );
    let err = stderr(&out);
    let order: Vec<usize> = [
        "2024-04-29: fetched",
        "2024-04-30: fetched",
        "2024-05-01: skipped",
        "2024-05-02: fetched",
    ]
    .iter()
    .map(|l| err.find(l).unwrap_or_else(|| panic!("{l} in {err}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 4);
    lake(tmp.path())
        .args(["ingest", "nope"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no [sources.nope]"));
}

#[test]
fn kill_9_during_a_download_then_a_rerun_gives_one_complete_copy() {
    let tmp = tempfile::tempdir().unwrap();
    // Puts stream in 8 MiB parts: 24 MiB at 10 MiB/s has bytes in staging well before the end.
    let size = 24 << 20;
    let (url, _) = http_server(move |_| Reply {
        pause: std::time::Duration::from_millis(100),
        ..Reply::ok(vec![b'x'; size])
    });
    let url = format!("{url}/big.bin");
    std::fs::write(
        tmp.path().join("lake.toml"),
        format!("[lake]\nname = \"k\"\n[sources.big]\nkind = \"http\"\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("lake"))
        .args(["-q", "ingest", "--date", "2024-01-01"])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once bytes are arriving in staging.
    let staging = tmp.path().join("lake/_lake/staging");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !walk(&staging)
        .iter()
        .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the download never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let window = tmp.path().join("lake/raw/big/ingest_date=2024-01-01");
    assert!(
        walk(&window).is_empty(),
        "nothing visible in the window: {:?}",
        walk(&window)
    );

    let out = lake(tmp.path())
        .args(["ingest", "--date", "2024-01-01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("took over the lock"),
        "{}",
        stderr(&out)
    );
    let files = walk(&window);
    assert_eq!(files.len(), 2, "{files:?}"); // big.bin and _manifest.json
    assert_eq!(
        std::fs::metadata(window.join("big.bin")).unwrap().len(),
        size as u64
    );
    assert!(
        walk(&staging).is_empty(),
        "staging cleaned: {:?}",
        walk(&staging)
    );
    let runs: serde_json::Value = serde_json::from_slice(
        &lake(tmp.path())
            .args(["runs", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let abandoned = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "failed")
        .expect("the killed run is closed in the ledger");
    assert!(abandoned["error"].as_str().unwrap().contains("abandoned"));
}

use lake_testing::walk;

#[test]
fn ingest_catches_up_from_its_cursor_and_stops_at_the_first_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, seen) = window_server("start=2024-02-06");
    std::fs::write(
        tmp.path().join("lake.toml"),
        format!(
            "[lake]\nname = \"c\"\n[sources.daily]\nkind = \"http\"\nurl = \"{url}/d?start={{start}}&end={{end}}\"\nstart = \"2024-01-30\"\nfilename = \"d.json\"\n\
             [sources.monthly]\nkind = \"http\"\nurl = \"{url}/m?start={{start}}&end={{end}}\"\nwindow = \"1mo\"\nstart = \"2024-01-01\"\nfilename = \"m.json\"\n"
        ),
    )
    .unwrap();
    let requests = |prefix: &str| -> Vec<String> {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .cloned()
            .collect()
    };
    // From `start` across the month boundary.
    let out = lake(tmp.path())
        .args(["ingest", "--to", "2024-02-02"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        requests("GET /d"),
        [
            "GET /d?start=2024-01-30&end=2024-01-30 HTTP/1.1",
            "GET /d?start=2024-01-31&end=2024-01-31 HTTP/1.1",
            "GET /d?start=2024-02-01&end=2024-02-01 HTTP/1.1",
            "GET /d?start=2024-02-02&end=2024-02-02 HTTP/1.1",
        ]
    );
    // Month windows end on the month's last day.
    assert_eq!(
        requests("GET /m"),
        [
            "GET /m?start=2024-01-01&end=2024-01-31 HTTP/1.1",
            "GET /m?start=2024-02-01&end=2024-02-29 HTTP/1.1",
        ]
    );
    assert!(
        tmp.path()
            .join("lake/raw/monthly/ingest_date=2024-02-01/m.json")
            .is_file()
    );
    let cursor: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("lake/_lake/state/daily.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cursor["last_complete"], "2024-02-02");

    // From the cursor on; a failed window stops the source there, exit 1.
    seen.lock().unwrap().clear();
    let out = lake(tmp.path())
        .args(["ingest", "daily", "--to", "2024-02-08"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        requests("GET /d"),
        [
            "GET /d?start=2024-02-03&end=2024-02-03 HTTP/1.1",
            "GET /d?start=2024-02-04&end=2024-02-04 HTTP/1.1",
            "GET /d?start=2024-02-05&end=2024-02-05 HTTP/1.1",
            "GET /d?start=2024-02-06&end=2024-02-06 HTTP/1.1",
        ]
    );
    assert!(
        stderr(&out).contains("ingest daily 2024-02-06: FAILED")
            && stderr(&out).contains("404")
            && stderr(&out).contains("no data for that day"),
        "{}",
        stderr(&out)
    );
    let cursor: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("lake/_lake/state/daily.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cursor["last_complete"], "2024-02-05");
    assert!(
        !tmp.path()
            .join("lake/raw/daily/ingest_date=2024-02-06")
            .exists()
    );

    // A complete window: a no-op that says so; --force fetches it again and replaces it.
    seen.lock().unwrap().clear();
    let manifest = tmp
        .path()
        .join("lake/raw/daily/ingest_date=2024-01-31/_manifest.json");
    let before: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let out = lake(tmp.path())
        .args(["ingest", "daily", "--date", "2024-01-31"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(stderr(&out).contains("ingest daily 2024-01-31: skipped, window already complete"));
    assert!(requests("GET /d").is_empty());
    let out = lake(tmp.path())
        .args(["ingest", "daily", "--date", "2024-01-31", "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(requests("GET /d").len(), 1);
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_ne!(before["run_id"], after["run_id"]);
    // The refetch never wrote over the committed object: it landed under a new key, and the
    // old object went once the new manifest and the window index were saved.
    let key = after["objects"][0]["key"].as_str().unwrap();
    let run_id = after["run_id"].as_str().unwrap();
    assert_eq!(
        key,
        format!("raw/daily/ingest_date=2024-01-31/d.{run_id}.json")
    );
    assert!(tmp.path().join("lake").join(key).is_file());
    assert!(
        !tmp.path()
            .join("lake/raw/daily/ingest_date=2024-01-31/d.json")
            .exists()
    );
}

#[test]
fn a_window_fetched_out_of_order_does_not_move_the_cursor_past_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let (url, seen) = window_server("never");
    std::fs::write(
        tmp.path().join("lake.toml"),
        format!(
            "[lake]\nname = \"g\"\n[sources.daily]\nkind = \"http\"\nurl = \"{url}/d?start={{start}}\"\nstart = \"2024-01-01\"\nfilename = \"d.json\"\n"
        ),
    )
    .unwrap();
    lake(tmp.path())
        .args(["-q", "ingest", "--to", "2024-01-02"])
        .assert()
        .success();
    lake(tmp.path())
        .args(["-q", "ingest", "--date", "2024-01-05"])
        .assert()
        .success();
    seen.lock().unwrap().clear();
    lake(tmp.path())
        .args(["-q", "ingest", "--to", "2024-01-05"])
        .assert()
        .success();
    // The gap is fetched; the window fetched ahead is found complete.
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        [
            "GET /d?start=2024-01-03 HTTP/1.1",
            "GET /d?start=2024-01-04 HTTP/1.1"
        ]
    );
}

#[test]
fn a_paged_api_lands_its_pages_once_and_a_step_reads_them_as_one_table() {
    let tmp = tempfile::tempdir().unwrap();
    // Three cursor pages of orders, the last without a cursor.
    let (url, seen) = http_server(|head| {
        let target = head.split(' ').nth(1).unwrap_or_default();
        let body = if target.contains("cursor=b") {
            r#"{"data":[{"id":3,"amount":30.5,"tier":"gold"}],"meta":{"next":null}}"#
        } else if target.contains("cursor=a") {
            r#"{"data":[{"id":2,"amount":20}],"meta":{"next":"b"}}"#
        } else {
            r#"{"data":[{"id":1,"amount":10}],"meta":{"next":"a"}}"#
        };
        Reply::ok(body)
    });
    std::fs::write(
        tmp.path().join("lake.toml"),
        format!(
            r#"[lake]
name = "shop"
root = "lake"

[sources.orders]
kind = "http"
url = "{url}/v2/orders"
query = {{ updated_since = "{{start}}", limit = "500" }}
paginate = {{ kind = "cursor", cursor_path = "meta.next", param = "cursor" }}
records_path = "data"
max_pages = 100

[steps.orders]
kind = "sql"
inputs = [{{ path = "raw/orders@date", format = "json", json_path = "data" }}]
output = "trusted/orders"
sql = "SELECT CAST(id AS BIGINT) AS id, CAST(amount AS DOUBLE) AS amount, tier FROM orders"
"#
        ),
    )
    .unwrap();
    let plan = lake(tmp.path()).arg("plan").output().unwrap();
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(
        stdout(&plan).contains("paged by cursor up to 100 pages")
            && stdout(&plan).contains("orders-pNNNNN.json"),
        "{}",
        stdout(&plan)
    );
    let out = lake(tmp.path())
        .args(["run", "--date", "2024-05-01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let window = tmp.path().join("lake/raw/orders/ingest_date=2024-05-01");
    for n in 1..=3 {
        assert!(
            window.join(format!("orders-p0000{n}.json")).is_file(),
            "page {n}"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(window.join("_manifest.json")).unwrap()).unwrap();
    let keys: Vec<&str> = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap().rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "orders-p00001.json",
            "orders-p00002.json",
            "orders-p00003.json"
        ]
    );
    lake(tmp.path())
        .args([
            "query",
            "SELECT count(*) AS n, sum(amount) AS total, max(tier) AS tier FROM trusted.orders",
            "--format",
            "csv",
        ])
        .assert()
        .success()
        .stdout("n,total,tier\n3,60.5,gold\n");
    // The window is complete: the same date again fetches nothing.
    lake(tmp.path())
        .args(["run", "--date", "2024-05-01"])
        .assert()
        .success();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[0].contains("updated_since=2024-05-01") && !seen[0].contains("cursor="));
    assert!(seen[2].contains("cursor=b") && seen[2].contains("limit=500"));
}

/// Answers every GET with the Open-Meteo sample.
fn meteo_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let body = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/weather/data/open_meteo_hourly.json"),
    )
    .unwrap();
    http_server(move |_| Reply::ok(body.clone()))
}

/// Answers `{}`, except 404 when the request line contains `fail`.
fn window_server(fail: &'static str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    http_server(move |line| {
        if line.contains(fail) {
            Reply {
                status: "404 Not Found",
                ..Reply::ok("no data for that day")
            }
        } else {
            Reply::ok("{}")
        }
    })
}

/// A zip of the credit CSV, as Kaggle serves a dataset.
fn credit_zip() -> Vec<u8> {
    use std::io::Write;
    let csv = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/credit/data/german_credit_data.csv"),
    )
    .unwrap();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    w.start_file("german_credit_data.csv", opts).unwrap();
    w.write_all(&csv).unwrap();
    w.start_file("LICENSE.txt", opts).unwrap();
    w.write_all(b"CC0").unwrap();
    w.finish().unwrap().into_inner()
}

/// The credit example with its source replaced by a Kaggle dataset at `endpoint`.
fn kaggle_credit(dir: &Path, endpoint: &str) {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/credit/lake.toml"),
    )
    .unwrap();
    let toml = example.replace(
        "kind = \"file\"\npath = \"data/*.csv\"",
        &format!(
            "kind = \"kaggle\"\ndataset = \"uciml/german-credit\"\nendpoint = \"{endpoint}/api/v1\"\nmembers = [\"*.csv\"]\nmax_attempts = 1"
        ),
    );
    assert_ne!(toml, example, "the source table was replaced");
    std::fs::write(dir.join("lake.toml"), toml).unwrap();
}

#[test]
fn a_kaggle_dataset_lands_unzipped_and_feeds_the_credit_steps() {
    let zip = credit_zip();
    let served = zip.clone();
    // Basic auth of ann:s3cret-key.
    let (url, seen) = http_server(move |head| {
        let auth = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("authorization: Basic YW5uOnMzY3JldC1rZXk="));
        if !head.starts_with("GET /api/v1/datasets/download/uciml/german-credit HTTP/1.1") {
            Reply {
                status: "404 Not Found",
                ..Reply::ok("no such dataset")
            }
        } else if !auth {
            Reply {
                status: "401 Unauthorized",
                ..Reply::ok("{\"code\":401,\"message\":\"Unauthenticated\"}")
            }
        } else {
            Reply::ok(served.clone())
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    kaggle_credit(tmp.path(), &url);

    // Wrong key: the status and a hint, never the key; nothing lands.
    let out = lake(tmp.path())
        .env("KAGGLE_USERNAME", "ann")
        .env("KAGGLE_KEY", "wrong-key-123")
        .args(["ingest", "--date", "2024-03-01"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("401 Unauthorized") && err.contains("check the Kaggle credentials"),
        "{err}"
    );
    assert!(!err.contains("wrong-key-123") && !stdout(&out).contains("wrong-key-123"));
    let window = tmp.path().join("lake/raw/credit/ingest_date=2024-03-01");
    assert!(!window.exists());

    // Credentials from kaggle.json in KAGGLE_CONFIG_DIR.
    let cfg = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg.path().join("kaggle.json"),
        r#"{"username": "ann", "key": "s3cret-key"}"#,
    )
    .unwrap();
    let out = lake(tmp.path())
        .env_remove("KAGGLE_USERNAME")
        .env_remove("KAGGLE_KEY")
        .env("KAGGLE_CONFIG_DIR", cfg.path())
        .args(["run", "--date", "2024-03-01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(window.join("german-credit.zip")).unwrap(),
        zip,
        "the archive is kept as fetched"
    );
    assert!(window.join("german_credit_data.csv").is_file());
    assert!(!window.join("LICENSE.txt").exists(), "members filter");
    let out = lake(tmp.path())
        .args([
            "query",
            "--format",
            "csv",
            "SELECT SUM(n) AS n FROM refined.credit_by_purpose",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "n\n1000\n");
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "one refused and one good download"
    );
}

#[test]
fn two_concurrent_ingests_fetch_each_window_once() {
    // 4 MiB in 1 MiB chunks, 300 ms apart: the first ingest holds the lock for about a second.
    let (url, seen) = http_server(|_| Reply {
        pause: std::time::Duration::from_millis(300),
        ..Reply::ok(vec![b'x'; 4 << 20])
    });
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        format!(
            "[lake]\nname = \"c\"\n[sources.daily]\nkind = \"http\"\nurl = \"{url}/d?day={{date}}\"\nstart = \"2024-03-01\"\nfilename = \"d.bin\"\n"
        ),
    )
    .unwrap();
    let spawn = || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("lake"))
            .current_dir(tmp.path())
            .args(["ingest", "--to", "2024-03-02"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(b.status.success(), "{}", stderr(&b));
    let mut requests = seen.lock().unwrap().clone();
    requests.sort();
    assert_eq!(
        requests,
        [
            "GET /d?day=2024-03-01 HTTP/1.1",
            "GET /d?day=2024-03-02 HTTP/1.1"
        ],
        "each window fetched once"
    );
    let both = format!("{}{}", stderr(&a), stderr(&b));
    assert!(
        both.contains("waiting for run") && both.contains("skipped, window already complete"),
        "{both}"
    );
    for day in ["2024-03-01", "2024-03-02"] {
        let f = tmp
            .path()
            .join(format!("lake/raw/daily/ingest_date={day}/d.bin"));
        assert_eq!(std::fs::metadata(f).unwrap().len(), 4 << 20);
    }
}

use lake_testing::emulator;

#[test]
fn the_credit_example_runs_on_an_s3_root() {
    let Some(endpoint) = emulator::endpoint() else {
        return;
    };
    emulator::reset(&endpoint);
    assert_eq!(
        emulator::request(&endpoint, "PUT", "/lake-cli-credit").0,
        200
    );
    let tmp = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/credit");
    let toml = std::fs::read_to_string(example.join("lake.toml"))
        .unwrap()
        .replacen(
            "root = \"lake\"",
            "root = \"s3://lake-cli-credit/credit\"",
            1,
        );
    assert!(toml.contains("s3://lake-cli-credit/credit"));
    std::fs::write(tmp.path().join("lake.toml"), toml).unwrap();
    std::fs::create_dir(tmp.path().join("data")).unwrap();
    std::fs::copy(
        example.join("data/german_credit_data.csv"),
        tmp.path().join("data/german_credit_data.csv"),
    )
    .unwrap();

    let out = lake(tmp.path())
        .args(["run", "--date", "2024-03-01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("s3://lake-cli-credit/credit/refined/credit_by_purpose"),
        "{}",
        stdout(&out)
    );
    assert!(!tmp.path().join("lake").exists(), "nothing written locally");

    let out = lake(tmp.path()).args(["ls", "refined"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("credit_by_purpose"),
        "{}",
        stdout(&out)
    );

    let out = lake(tmp.path()).arg("runs").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("succeeded"), "{}", stdout(&out));

    let out = lake(tmp.path())
        .args([
            "query",
            "--format",
            "csv",
            "SELECT SUM(n) AS n, COUNT(*) AS purposes FROM refined.credit_by_purpose",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "n,purposes\n1000,8\n");

    // A rerun finds everything up to date, on S3 as locally.
    let out = lake(tmp.path())
        .args(["run", "--date", "2024-03-01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 up to date"), "{}", stdout(&out));

    // doctor: who, where, reachable and writable (the probe is cleaned up).
    let out = lake(tmp.path()).arg("doctor").output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}{}", stderr(&out));
    for line in [
        "✓ identity: account 123456789012",
        "✓ region: us-east-1",
        "✓ root reachable: s3://lake-cli-credit/credit can be listed",
        "✓ root writable",
        "✓ Glue database credit: exists",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    let out = lake(tmp.path())
        .args(["ls", "_lake/doctor"])
        .output()
        .unwrap();
    assert!(!stdout(&out).contains("probe"), "{}", stdout(&out));

    // iam-policy: exactly this bucket and prefix.
    let out = lake(tmp.path()).arg("iam-policy").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = &policy["Statement"];
    assert_eq!(st[0]["Action"], "s3:ListBucket");
    assert_eq!(st[0]["Resource"], "arn:aws:s3:::lake-cli-credit");
    assert_eq!(
        st[0]["Condition"]["StringLike"]["s3:prefix"],
        serde_json::json!(["credit/", "credit/*"])
    );
    assert_eq!(st[1]["Resource"], "arn:aws:s3:::lake-cli-credit/credit/*");
    // [catalog]: the Glue calls on its database and tables only, Athena on its workgroup.
    let glue = st
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "LakeGlueTables")
        .expect("a Glue statement");
    assert_eq!(
        glue["Resource"],
        serde_json::json!([
            "arn:aws:glue:*:*:catalog",
            "arn:aws:glue:*:*:database/credit",
            "arn:aws:glue:*:*:table/credit/*"
        ])
    );
    for action in [
        "glue:CreateTable",
        "glue:BatchCreatePartition",
        "glue:GetDatabase",
    ] {
        assert!(
            glue["Action"]
                .as_array()
                .unwrap()
                .contains(&serde_json::json!(action)),
            "{action}"
        );
    }

    // A bucket that does not exist: doctor says so and exits 1.
    let toml = std::fs::read_to_string(tmp.path().join("lake.toml"))
        .unwrap()
        .replace(
            "s3://lake-cli-credit/credit",
            "s3://lake-cli-missing/credit",
        );
    std::fs::write(tmp.path().join("lake.toml"), toml).unwrap();
    let out = lake(tmp.path()).arg("doctor").output().unwrap();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("✗ root reachable") && text.contains("NoSuchBucket"),
        "{text}"
    );
    assert!(text.contains("→ check that the bucket exists"), "{text}");
}

#[test]
fn doctor_checks_a_local_lake_and_iam_policy_says_none_is_needed() {
    let tmp = tempfile::tempdir().unwrap();
    lake(tmp.path()).arg("init").assert().success();
    let out = lake(tmp.path()).arg("doctor").output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("✓ lake.toml") && text.contains("✓ root writable"),
        "{text}"
    );
    assert!(
        !text.contains("identity"),
        "no AWS checks for a local root: {text}"
    );
    let out = lake(tmp.path()).arg("iam-policy").output().unwrap();
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("needs no AWS permission"),
        "{}",
        stderr(&out)
    );
    // A broken lake.toml is a failed check, not a crash.
    std::fs::write(tmp.path().join("lake.toml"), "[lake]\nname = 1\n").unwrap();
    let out = lake(tmp.path()).arg("doctor").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("✗ lake.toml"), "{}", stdout(&out));
}

/// The credit example with `--env aws` (backend = "emr"), offline: the plan shows the exact
/// requests and the cost, `max_cost` refuses a run before anything happens, and the IAM policy
/// has the EMR statements.
#[test]
fn emr_plan_cost_refusal_and_policy_without_aws() {
    let tmp = tempfile::tempdir().unwrap();
    lake(tmp.path()).arg("init").assert().success();
    // No credentials or network are needed for any of this.
    let offline = |c: &mut Command| {
        c.env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    };
    let mut c = lake(tmp.path());
    offline(&mut c);
    let out = c.args(["--env", "aws", "plan"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "\"ReleaseLabel\": \"emr-7.9.0\"",
        "\"InstanceCount\": 2",
        "\"IdleTimeout\": 1800",
        "\"Key\": \"lake:run-id\"",
        "\"Value\": \"<run-id>\"",
        "\"LogUri\": \"s3://my-bucket/credit/_lake/emr-logs/\"",
        "/lake_sql.py",
        // 3 × m5.xlarge for 10m + 2 steps × 30m = 70m, at $0.24.
        "estimate: 3.5 instance-hours (1.17 h",
        "cost $0.84, max_cost $5.00",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }

    let mut c = lake(tmp.path());
    offline(&mut c);
    let out = c.args(["--env", "aws", "plan", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["emr"]["run_job_flow"]["Instances"]["InstanceGroups"][1]["InstanceRole"],
        "CORE"
    );
    assert_eq!(v["emr"]["steps"][1]["Name"], "credit_by_purpose");
    assert_eq!(
        v["emr"]["steps"][0]["HadoopJarStep"]["Jar"],
        "command-runner.jar"
    );
    let iceberg = |v: &serde_json::Value| {
        v["emr"]["run_job_flow"]["Configurations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["Classification"] == "iceberg-defaults")
            .cloned()
    };
    assert_eq!(iceberg(&v), None, "{v}");
    // Iceberg tables: the cluster is created with EMR's Iceberg switch.
    let toml = std::fs::read_to_string(tmp.path().join("lake.toml")).unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        toml.replacen("[lake]\n", "[lake]\ntable_format = \"iceberg\"\n", 1),
    )
    .unwrap();
    let mut c = lake(tmp.path());
    offline(&mut c);
    let out = c.args(["--env", "aws", "plan", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        iceberg(&v),
        Some(serde_json::json!({
            "Classification": "iceberg-defaults",
            "Properties": {"iceberg.enabled": "true"}
        })),
        "{v}"
    );
    std::fs::write(tmp.path().join("lake.toml"), &toml).unwrap();

    // A max_cost below the estimate: refused before the lock, ingest or any AWS call.
    let toml = std::fs::read_to_string(tmp.path().join("lake.toml")).unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        toml.replace("max_cost = 5.0", "max_cost = 0.5"),
    )
    .unwrap();
    let mut c = lake(tmp.path());
    offline(&mut c);
    let out = c.args(["--env", "aws", "run"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("estimated at $0.84") && err.contains("above max_cost = $0.50"),
        "{err}"
    );
    let mut c = lake(tmp.path());
    offline(&mut c);
    let text = stdout(&c.args(["--env", "aws", "plan"]).output().unwrap());
    assert!(text.contains("a run would be REFUSED"), "{text}");

    let mut c = lake(tmp.path());
    offline(&mut c);
    let out = c.args(["--env", "aws", "iam-policy"]).output().unwrap();
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = policy["Statement"].as_array().unwrap();
    let sid = |s: &str| st.iter().find(|x| x["Sid"] == s).unwrap().clone();
    assert_eq!(
        sid("LakeEmrClusterSteps")["Condition"]["StringEquals"]["elasticmapreduce:ResourceTag/lake:pipeline"],
        "credit"
    );
    assert_eq!(
        sid("LakeEmrPassRoles")["Resource"],
        serde_json::json!([
            "arn:aws:iam::*:role/EMR_DefaultRole",
            "arn:aws:iam::*:role/EMR_EC2_DefaultRole"
        ])
    );
    assert_eq!(
        sid("LakeEmrCreate")["Action"],
        "elasticmapreduce:RunJobFlow"
    );
}

/// The credit example with `--env serverless` (backend = "emr-serverless"), offline: the plan
/// shows the CreateApplication and StartJobRun requests and the estimate, `max_cost` refuses a
/// run before anything happens, and the IAM policy has the EMR Serverless statements.
#[test]
fn serverless_plan_cost_refusal_and_policy_without_aws() {
    let tmp = tempfile::tempdir().unwrap();
    lake(tmp.path()).arg("init").assert().success();
    let offline = |c: &mut Command| {
        c.env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "x")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    };
    let mut c = lake(tmp.path());
    offline(&mut c);
    let out = c.args(["--env", "serverless", "plan"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "emr-serverless: a new application, stopped and deleted when the run ends",
        "\"releaseLabel\": \"emr-7.9.0\"",
        "\"cpu\": \"16 vCPU\"",
        "\"idleTimeoutMinutes\": 15",
        "\"lake:run-id\": \"<run-id>\"",
        "\"executionRoleArn\": \"arn:aws:iam::123456789012:role/lake-jobs\"",
        "\"applicationId\": \"<new application>\"",
        "/lake_sql.py",
        "\"logUri\": \"s3://my-bucket/credit/_lake/serverless-logs/\"",
        // 2 steps × 30m at 16 vCPU and 64 GB: 16 vCPU-h × $0.052624 + 64 GB-h × $0.0057785.
        "estimate at most: 1.00 h of jobs",
        "16.0 vCPU-hours, 64.0 GB-hours, $1.21; max_cost $5.00",
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    let mut c = lake(tmp.path());
    offline(&mut c);
    let out = c
        .args(["--env", "serverless", "plan", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan = &v["emr-serverless"];
    assert_eq!(plan["create_application"]["type"], "SPARK");
    assert_eq!(plan["start_job_runs"][1]["step"], "credit_by_purpose");
    assert_eq!(
        plan["start_job_runs"][1]["request"]["jobDriver"]["sparkSubmit"]["entryPointArguments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let toml = std::fs::read_to_string(tmp.path().join("lake.toml")).unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        toml.replacen(
            "max_cost = 5.0           # refuse a run estimated above $5 (at",
            "max_cost = 0.5           # refuse a run estimated above $5 (at",
            1,
        ),
    )
    .unwrap();
    let mut c = lake(tmp.path());
    offline(&mut c);
    let out = c.args(["--env", "serverless", "run"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("estimated at up to $1.21") && err.contains("above max_cost = $0.50"),
        "{err}"
    );

    let mut c = lake(tmp.path());
    offline(&mut c);
    let out = c
        .args(["--env", "serverless", "iam-policy"])
        .output()
        .unwrap();
    let policy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let st = policy["Statement"].as_array().unwrap();
    let sid = |s: &str| st.iter().find(|x| x["Sid"] == s).unwrap().clone();
    assert_eq!(
        sid("LakeServerlessJobs")["Condition"]["StringEquals"]["aws:ResourceTag/lake:pipeline"],
        "credit"
    );
    assert_eq!(
        sid("LakeServerlessCreate")["Condition"]["StringEquals"]["aws:RequestTag/lake:pipeline"],
        "credit"
    );
    let pass = sid("LakeServerlessPassRole");
    assert_eq!(pass["Resource"], "arn:aws:iam::123456789012:role/lake-jobs");
    assert_eq!(
        pass["Condition"]["StringLike"]["iam:PassedToService"],
        "emr-serverless.amazonaws.com"
    );
    assert!(
        !st.iter().any(|x| x["Sid"] == "LakeEmrCreate"),
        "no EMR calls"
    );
}

#[test]
fn help_speaks_to_users() {
    let tmp = tempfile::tempdir().unwrap();
    let out = lake(tmp.path()).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.starts_with("Run a batch data-lake pipeline described in one file, lake.toml"),
        "{text}"
    );
    assert!(text.contains("docs/lake-toml.md"), "{text}");
    assert!(
        !text.contains("every decision lives in the libraries"),
        "{text}"
    );
}

/// A reader that goes away (`lake runs --json | head -1`) ends the output; it is not an
/// error, whatever writer (JSON, CSV) met the closed pipe.
#[test]
fn a_closed_pipe_is_not_an_error() {
    let (_tmp, dir) = credit_run();
    for args in [
        &["runs", "--json"][..],
        &["query", "--format", "csv", "SELECT * FROM trusted.credit"][..],
        &["query", "--format", "json", "SELECT * FROM trusted.credit"][..],
    ] {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("lake"))
            .current_dir(&dir)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before lake writes its first byte.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("error"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}

/// A lake.toml that is missing or not UTF-8 is a configuration error (exit 2) naming the file,
/// and for bad bytes their line.
#[test]
fn an_unreadable_lake_toml_is_a_configuration_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = lake(tmp.path()).arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lake.toml: cannot read the pipeline file"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        tmp.path().join("lake.toml"),
        b"[lake]\nname = \"x\"\n# caf\xe9\n".as_slice(),
    )
    .unwrap();
    let out = lake(tmp.path()).arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("lake.toml:3:6: (file): not valid UTF-8"),
        "{}",
        stderr(&out)
    );
}

/// A second Ctrl-C (SIGINT) during teardown is answered, not obeyed: the run still records
/// itself as cancelled and releases its lock. (It used to exit at once, leaving the lock and,
/// on EMR, the cluster.)
#[cfg(unix)]
#[test]
fn a_second_interrupt_does_not_cut_teardown_short() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        // The step ignores SIGTERM, so stopping it takes the backend's grace period before
        // SIGKILL: the second interrupt arrives during teardown.
        "[lake]\nname = \"t\"\n\n[steps.slow]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"trap '' TERM; sleep 30\"]\n",
    )
    .unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("lake"))
        .args(["run", "--date", "2024-01-01"])
        .current_dir(tmp.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the step runs (its ledger record exists), then interrupt twice.
    let runs = tmp.path().join("lake/_lake/runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(&runs).map_or(0, |d| d.count()) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id().to_string();
    for _ in 0..2 {
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("still tearing down"), "{err}");
    assert!(
        !tmp.path().join("lake/_lake/locks/t").exists(),
        "lock released: {err}"
    );
    let entry = std::fs::read_dir(&runs).unwrap().next().unwrap().unwrap();
    let record = std::fs::read_to_string(entry.path()).unwrap();
    assert!(
        record.contains("\"status\": \"cancelled\"") || record.contains("\"status\":\"cancelled\""),
        "{record}"
    );
}

/// One bad object (a raw file deleted by hand) leaves its dataset out of `lake query`, saying
/// so; queries of the others, and of no table, still work (issue 15 #5: all of them failed).
#[test]
fn one_unreadable_dataset_does_not_break_every_query() {
    let (_tmp, dir) = credit_run();
    let raw = dir.join("lake/raw/credit/ingest_date=2024-03-01/german_credit_data.csv");
    std::fs::remove_file(&raw).unwrap();
    let out = lake(&dir)
        .args(["query", "SELECT 1 AS one"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("raw.credit is left out of the query tables"),
        "{}",
        stderr(&out)
    );
    let out = lake(&dir)
        .args([
            "query",
            "--format",
            "csv",
            "SELECT COUNT(*) AS n FROM trusted.credit",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "n\n1000\n");
}

/// A plain `lake run` whose output (or input) objects were deleted or changed by hand does not
/// say "up to date": it runs the step again (issue 15 #2).
#[test]
fn a_missing_output_object_is_not_up_to_date() {
    let (_tmp, dir) = credit_run();
    let refined = dir.join("lake/refined/credit_by_purpose");
    let parquet: Vec<std::path::PathBuf> = std::fs::read_dir(&refined)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert!(!parquet.is_empty());
    for p in &parquet {
        std::fs::remove_file(p).unwrap();
    }
    let out = lake(&dir)
        .args(["run", "--date", "2024-03-01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("step credit: skipped")
            && stderr(&out).contains("step credit_by_purpose: succeeded"),
        "{}",
        stderr(&out)
    );
    let out = lake(&dir)
        .args([
            "query",
            "--format",
            "csv",
            "SELECT COUNT(*) AS n FROM refined.credit_by_purpose",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "n\n8\n", "{}", stderr(&out));
}

#[test]
fn query_of_a_damaged_object_prints_no_rows_and_names_it() {
    let (_tmp, dir) = credit_run();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("lake/trusted/credit/_manifest.json")).unwrap(),
    )
    .unwrap();
    let key = manifest["objects"][0]["key"].as_str().unwrap().to_owned();
    let path = dir.join("lake").join(&key);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8] {
        *b ^= 0xff;
    }
    std::fs::write(&path, &bytes).unwrap();
    for format in ["csv", "json", "table"] {
        let out = lake(&dir)
            .args(["query", "SELECT * FROM trusted.credit", "--format", format])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{format}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{format}: {}", stdout(&out));
        assert!(
            stderr(&out).contains(&key) && stderr(&out).contains("SHA-256"),
            "{format}: {}",
            stderr(&out)
        );
    }
    // The other tables still answer.
    lake(&dir)
        .args([
            "query",
            "SELECT count(*) AS n FROM refined.credit_by_purpose",
        ])
        .assert()
        .success();
}

#[test]
fn fsck_finds_damage_and_leftovers_and_repairs_the_leftovers() {
    let (_tmp, dir) = credit_run();
    lake(&dir)
        .arg("fsck")
        .assert()
        .success()
        .stdout(predicate::str::contains("with SHA-256: consistent"));
    // What a killed publish leaves, a killed upload, a dead run's staging, and a damaged object.
    let trusted = dir.join("lake/trusted/credit");
    std::fs::write(trusted.join("part-killed.parquet"), b"PAR1").unwrap();
    std::fs::write(trusted.join("part-0.parquet#3"), b"half").unwrap();
    std::fs::create_dir_all(dir.join("lake/_lake/staging/20240101T000000Z-dead00/credit")).unwrap();
    std::fs::write(
        dir.join("lake/_lake/staging/20240101T000000Z-dead00/credit/x.parquet"),
        b"x",
    )
    .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("lake/refined/credit_by_purpose/_manifest.json")).unwrap(),
    )
    .unwrap();
    let damaged = manifest["objects"][0]["key"].as_str().unwrap().to_owned();
    let path = dir.join("lake").join(&damaged);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&path, &bytes).unwrap();

    let out = lake(&dir).args(["fsck", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["problem"].as_str().unwrap().to_owned(),
                f["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![
            ("hash".to_owned(), damaged.clone()),
            (
                "orphan".to_owned(),
                "trusted/credit/part-0.parquet#3".to_owned()
            ),
            (
                "orphan".to_owned(),
                "trusted/credit/part-killed.parquet".to_owned()
            ),
            (
                "staging".to_owned(),
                "_lake/staging/20240101T000000Z-dead00".to_owned()
            ),
        ]
    );
    // Sizes only: the damage is not seen, the leftovers are.
    let out = lake(&dir)
        .args(["fsck", "--quick", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["findings"].as_array().unwrap().len(), 3);

    let out = lake(&dir).args(["fsck", "--repair"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "the damage is left: {}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("removed 3 leftovers"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("lake run --force --only"),
        "{}",
        stdout(&out)
    );
    assert!(!trusted.join("part-killed.parquet").exists());
    assert!(!trusted.join("part-0.parquet#3").exists());
    assert!(
        !dir.join("lake/_lake/staging/20240101T000000Z-dead00")
            .exists()
    );
    // Written again, the lake is consistent.
    lake(&dir)
        .args([
            "run",
            "--date",
            "2024-03-01",
            "--force",
            "--only",
            "credit_by_purpose",
        ])
        .assert()
        .success();
    lake(&dir).arg("fsck").assert().success();
}

/// What a kill -9 leaves: the lock of a run whose process is gone and its staging, both
/// reported as leftovers (exit 1) and cleared by `--repair`; and a damaged cursor, which fails
/// every run until `--repair` rebuilds it from the window manifests.
#[test]
fn fsck_reports_a_dead_runs_lock_and_staging_and_a_damaged_cursor() {
    let (_tmp, dir) = credit_run();
    // A process that has ended: its pid names no process.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let host = lake::core::run::this_host();
    let now = chrono::Utc::now();
    let lock = serde_json::json!({
        "pipeline": "credit",
        "run_id": "20240101T000000Z-killed",
        "holder": format!("ci@{host} pid {pid}"),
        "acquired": now.to_rfc3339(),
        "expires": (now + chrono::Duration::hours(6)).to_rfc3339(),
    });
    std::fs::create_dir_all(dir.join("lake/_lake/locks")).unwrap();
    std::fs::write(dir.join("lake/_lake/locks/credit"), lock.to_string()).unwrap();
    let staging = dir.join("lake/_lake/staging/20240101T000000Z-killed/credit");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("part-0.parquet"), b"PAR1").unwrap();
    let cursor = dir.join("lake/_lake/state/credit.json");
    let kept = std::fs::read(&cursor).unwrap();
    std::fs::write(&cursor, b"{\"source\": \"credit\", \"last_comp").unwrap();

    let out = lake(&dir).args(["fsck", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["problem"].as_str().unwrap().to_owned(),
                f["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("staging", "_lake/staging/20240101T000000Z-killed"),
            ("lock", "_lake/locks/credit"),
            ("state", "_lake/state/credit.json"),
        ]
        .map(|(p, k)| (p.to_owned(), k.to_owned())),
        "{report:#}"
    );
    let out = lake(&dir).args(["fsck", "--repair"]).output().unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("removed 3 leftovers"),
        "{}",
        stdout(&out)
    );
    assert!(!dir.join("lake/_lake/locks/credit").exists());
    assert!(!staging.exists());
    let rebuilt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cursor).unwrap()).unwrap();
    let before: serde_json::Value = serde_json::from_slice(&kept).unwrap();
    assert_eq!(rebuilt["last_complete"], before["last_complete"]);

    // A damaged cursor fails a run, naming it; `--repair` makes the next one run.
    std::fs::write(&cursor, b"{\"source\": \"cre").unwrap();
    let out = lake(&dir)
        .args(["run", "--date", "2024-03-02"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("_lake/state/credit.json"), "{said}");
    let out = lake(&dir).args(["fsck", "--repair"]).output().unwrap();
    assert!(
        stdout(&out).contains("removed 1 leftover"),
        "{}",
        stdout(&out)
    );
    lake(&dir)
        .args(["run", "--date", "2024-03-02"])
        .assert()
        .success();
    lake(&dir).arg("fsck").assert().success();
}

/// Escape sequences from a step's output and from data reach the terminal as text: a step
/// that prints one and fails, and a CSV cell holding one in `lake query`'s table.
#[test]
fn control_characters_from_steps_and_data_are_shown_not_obeyed() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("data")).unwrap();
    std::fs::write(
        tmp.path().join("data/x.csv"),
        "id,note\n1,a\u{1b}[2Jb\u{7}\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        "[lake]\nname = \"esc\"\n\n[sources.x]\nkind = \"file\"\npath = \"data/x.csv\"\n\n[steps.bad]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"printf 'boom\\\\033[2J\\\\033]0;owned\\\\007' >&2; exit 3\"]\n",
    )
    .unwrap();
    let out = lake(tmp.path())
        .args(["run", "--date", "2024-01-01"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("boom\\x1b[2J"), "{said}");
    assert!(
        !said.contains('\u{1b}') && !said.contains('\u{7}'),
        "{said:?}"
    );
    lake(tmp.path())
        .args(["ingest", "x", "--date", "2024-01-01"])
        .assert()
        .success();
    let out = lake(tmp.path())
        .args(["query", "SELECT note FROM raw.x", "--format", "table"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("a\\x1b[2Jb\\x07"), "{table}");
    assert!(!table.contains('\u{1b}'), "{table:?}");
}

#[test]
fn a_query_that_fails_reading_names_the_object_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("data")).unwrap();
    std::fs::write(tmp.path().join("data/bad.csv"), "a,b\n1,2\n3\n4,5\n").unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        "[lake]\nname = \"q\"\n\n[sources.bad]\nkind = \"file\"\npath = \"data/*.csv\"\n",
    )
    .unwrap();
    lake(tmp.path())
        .args(["ingest", "--date", "2024-01-01"])
        .assert()
        .success();
    let out = lake(tmp.path())
        .args(["query", "SELECT * FROM raw.bad", "--format", "csv"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("in object raw/bad/ingest_date=2024-01-01/bad.csv") && err.contains("line 3"),
        "{err}"
    );
    // A mistake in the SQL is said as it is, without reading every object.
    let out = lake(tmp.path())
        .args(["query", "SELECT nope FROM raw.bad"])
        .output()
        .unwrap();
    assert!(!stderr(&out).contains("in object"), "{}", stderr(&out));
}

#[test]
fn the_ledger_and_lineage_are_tables_under_lake() {
    let (_tmp, dir) = credit_run();
    lake(&dir)
        .args(["run", "--date", "2024-03-02"])
        .assert()
        .success();
    let q = |sql: &str| {
        let out = lake(&dir)
            .args(["query", sql, "--format", "csv"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(
        q("SELECT count(*) AS n, min(status) AS s FROM _lake.runs"),
        "n,s\n2,succeeded\n"
    );
    assert_eq!(
        q(
            "SELECT step, source, destination FROM _lake.lineage WHERE run_id = (SELECT min(run_id) FROM _lake.runs) ORDER BY step"
        ),
        "step,source,destination\ncredit,raw/credit,trusted/credit\ncredit_by_purpose,trusted/credit,refined/credit_by_purpose\ningest credit,source credit,raw/credit\n"
    );
    // Every output object the ledger names is the one the manifest lists, byte for byte.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("lake/refined/credit_by_purpose/_manifest.json")).unwrap(),
    )
    .unwrap();
    let sha = manifest["objects"][0]["sha256"].as_str().unwrap();
    let out = q(&format!(
        "SELECT count(*) AS n FROM _lake.objects WHERE role = 'output' AND dataset = 'credit_by_purpose' AND sha256 = '{sha}'"
    ));
    assert_ne!(out, "n\n0\n", "{out}");
    assert!(
        q("SELECT step, rows FROM _lake.steps WHERE status = 'succeeded' ORDER BY started LIMIT 1")
            .contains("credit,")
    );
    // Listed with the other tables.
    lake(&dir)
        .arg("query")
        .assert()
        .success()
        .stdout(predicate::str::contains("_lake.lineage"));
}

#[test]
fn an_s3_error_is_said_in_words_not_as_a_debug_dump() {
    let Some(_endpoint) = emulator::endpoint() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        "[lake]\nname = \"nb\"\nroot = \"s3://lake-cli-no-such-bucket/p\"\n",
    )
    .unwrap();
    let out = lake(tmp.path()).arg("ls").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("caused by: NoSuchBucket: The specified bucket does not exist (request id "),
        "{err}"
    );
    for dump in ["ServiceError", "Response {", "SdkBody", "extensions"] {
        assert!(!err.contains(dump), "{dump} in {err}");
    }
}

/// `cmd` as on a machine with no AWS set up: no credentials, region, profile or endpoint in
/// the environment, no ~/.aws files, and the instance metadata service at 127.0.0.1:`imds`.
fn without_aws(mut cmd: Command, dir: &Path, imds: u16) -> Command {
    for var in [
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AWS_EC2_METADATA_DISABLED",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_CONFIG_FILE", dir.join("no-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-credentials"))
        .env(
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{imds}"),
        );
    cmd
}

/// `lake plan` asks nothing of the network: with no AWS configuration at all and the instance
/// metadata endpoint pointed at a listener here, the EMR plan prints with no warning and the
/// listener sees no connection.
#[test]
fn plan_on_aws_without_credentials_makes_no_connection_and_no_warning() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let dir = lake_testing::example("credit");
    let out = without_aws(lake(dir.path()), dir.path(), port)
        .args(["--env", "aws", "plan"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("RunJobFlow"), "{}", stdout(&out));
    assert!(
        !stderr(&out).contains("WARN") && !stderr(&out).contains("{ source:"),
        "{}",
        stderr(&out)
    );
    assert!(
        listener.accept().is_err(),
        "lake plan connected to the instance metadata endpoint"
    );
}

#[test]
fn init_writes_either_example_and_completions_cover_four_shells() {
    let tmp = tempfile::tempdir().unwrap();
    lake(tmp.path())
        .args(["init", "--example", "weather", "w"])
        .assert()
        .success();
    let dir = tmp.path().join("w");
    assert!(dir.join("data/open_meteo_hourly.json").exists());
    lake(&dir)
        .args(["run", "--date", "2024-05-01"])
        .assert()
        .success();
    let out = lake(&dir)
        .args([
            "query",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM refined.weather_daily",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "n\n7\n");
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let out = lake(tmp.path())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        let text = stdout(&out);
        for sub in ["fsck", "query", "catalog"] {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
    }
    lake(tmp.path())
        .args(["completions", "tcsh"])
        .assert()
        .code(2);
    let man = stdout(&lake(tmp.path()).arg("man").output().unwrap());
    assert!(
        man.starts_with(".ie") || man.contains(".TH lake"),
        "{}",
        &man[..200.min(man.len())]
    );
    assert!(
        man.contains("schedule") && man.contains("fsck"),
        "the man page lists the commands"
    );
}

/// Every command that prints data has `--json`, one document with the fields docs/cli.md lists.
#[test]
fn validate_ls_doctor_and_clusters_print_json() {
    let (_tmp, dir) = credit_run();
    let json = |args: &[&str]| -> (Option<i32>, serde_json::Value) {
        let out = lake(&dir).args(args).output().unwrap();
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", stdout(&out)));
        (out.status.code(), v)
    };
    let (code, v) = json(&["validate", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["valid"], true);
    assert_eq!(v["pipeline"], "credit");
    assert_eq!(
        v["steps"],
        serde_json::json!(["credit", "credit_by_purpose"])
    );

    let (code, v) = json(&["ls", "--json"]);
    assert_eq!(code, Some(0));
    let zones: Vec<&str> = v["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["zone"].as_str().unwrap())
        .collect();
    assert_eq!(zones, ["raw", "trusted", "refined"]);
    assert_eq!(
        v["zones"][2]["folders"][0]["path"],
        "refined/credit_by_purpose"
    );
    let (_, v) = json(&["ls", "refined/credit_by_purpose", "--json"]);
    assert!(
        v["objects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["key"] == "refined/credit_by_purpose/_manifest.json"
                && o["size"].as_u64() > Some(0))
    );

    let (code, v) = json(&["doctor", "--json"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["ok"], true);
    assert_eq!(v["checks"][0]["name"], "lake.toml");
    assert!(
        v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ok"] == true)
    );

    let (code, v) = json(&["clusters", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["active"], serde_json::json!([]));

    // Problems, each with its file, line, column and key; exit 2.
    let toml = std::fs::read_to_string(dir.join("lake.toml")).unwrap();
    std::fs::write(
        dir.join("lake.toml"),
        toml.replacen("kind = \"sql\"", "kind = \"sql\"\ncomand = \"x\"", 1),
    )
    .unwrap();
    let (code, v) = json(&["validate", "--json"]);
    assert_eq!(code, Some(2));
    assert_eq!(v["valid"], false);
    let p = &v["problems"][0];
    assert!(p["file"].as_str().unwrap().ends_with("lake.toml"), "{p}");
    assert!(
        p["line"].as_u64().unwrap() > 1 && p["column"].as_u64().is_some(),
        "{p}"
    );
    assert!(p["key"].as_str().unwrap().ends_with("comand"), "{p}");
    let (code, v) = json(&["doctor", "--json"]);
    assert_eq!(code, Some(1));
    assert_eq!(v["ok"], false);
}

/// `lake doctor` without AWS set up: the region and credentials say what is missing and what
/// to do, once; what needs them is skipped, not failed; no SDK Debug dump anywhere.
#[test]
fn doctor_without_aws_says_what_is_missing_once_and_skips_the_rest() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = lake_testing::example("credit");
    let out = without_aws(lake(dir.path()), dir.path(), port)
        .args(["--env", "aws", "doctor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out) + &stderr(&out);
    assert!(text.contains("✗ region: no region"), "{text}");
    assert!(
        text.contains("✗ credentials: no AWS credentials: tried"),
        "{text}"
    );
    assert!(text.contains("aws sso login"), "{text}");
    assert!(
        text.contains("- identity: skipped: needs a region and credentials"),
        "{text}"
    );
    assert!(text.contains("- root reachable: skipped"), "{text}");
    assert!(text.contains("- backend emr: skipped"), "{text}");
    assert_eq!(text.matches('✗').count(), 2, "{text}");
    for dump in [
        "{ source:",
        "DispatchFailure(",
        "ServiceError(",
        "Response {",
    ] {
        assert!(!text.contains(dump), "{dump} in {text}");
    }
}

/// Logs are colored only on a terminal (not when piped, as here) or with `--color always`.
#[test]
fn logs_have_no_color_codes_when_piped_unless_asked() {
    let (_tmp, dir) = credit_run();
    // A missing object leaves its table out of the query tables, with a warning.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("lake/trusted/credit/_manifest.json")).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(
        dir.join("lake")
            .join(manifest["objects"][0]["key"].as_str().unwrap()),
    )
    .unwrap();
    let warn = |extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend(["query", "SELECT count(*) FROM refined.credit_by_purpose"]);
        stderr(&lake(&dir).args(&args).output().unwrap())
    };
    let plain = warn(&[]);
    assert!(
        plain.contains("WARN") && !plain.contains('\u{1b}'),
        "{plain:?}"
    );
    assert!(warn(&["--color", "always"]).contains('\u{1b}'));
    assert!(!warn(&["--color", "never"]).contains('\u{1b}'));
}

/// On a terminal (a pseudo-terminal from util-linux's `script`), a step's live line updates in
/// place through its states to "publishing"; colors follow `--color` and `NO_COLOR`. Piped,
/// no live line is printed.
#[test]
fn progress_lines_update_on_a_terminal_follow_color_and_stay_off_when_piped() {
    let found = std::process::Command::new("script")
        .arg("--version")
        .output();
    if lake_testing::skip_unless(
        "LAKE_REQUIRE_SCRIPT",
        found
            .err()
            .map(|e| format!("`script` (util-linux) cannot give lake a terminal: {e}")),
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    lake(tmp.path()).args(["init", "."]).assert().success();
    let exe = assert_cmd::cargo::cargo_bin("lake");
    let on_terminal = |args: &str, no_color: bool| {
        let mut c = std::process::Command::new("script");
        c.current_dir(tmp.path()).env_remove("RUST_LOG").args([
            "-qec",
            &format!("{} {args}", exe.display()),
            "/dev/null",
        ]);
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let colored = |s: &str| s.contains("\u{1b}[36m");
    let text = on_terminal("run --date 2024-03-01", false);
    assert!(
        text.contains("step credit: publishing → trusted/credit") && text.contains("\u{1b}[2K"),
        "{text}"
    );
    assert!(colored(&text), "{text}");
    let text = on_terminal("--color never run --date 2024-03-02", false);
    assert!(text.contains("publishing →") && !colored(&text), "{text}");
    let text = on_terminal("run --date 2024-03-03", true);
    assert!(text.contains("publishing →") && !colored(&text), "{text}");
    let out = lake(tmp.path())
        .args(["run", "--date", "2024-03-04"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let piped = stderr(&out);
    assert!(
        !piped.contains("publishing") && !piped.contains('\u{1b}'),
        "{piped}"
    );
    assert!(
        piped.contains("step credit: succeeded"),
        "the step's end is still said: {piped}"
    );
}
