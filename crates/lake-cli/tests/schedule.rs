//! `lake schedule` and what a run does when something fails: the schedule's ticks and
//! catch-up, its units, step and window retries, and `[notify]` notices.

use predicates::prelude::*;

mod common;
use common::{Reply, http_server, lake, stderr, stdout};

/// `lake schedule --once` runs each due tick's date once, oldest first; nothing is due after;
/// status and install say so.
#[test]
fn schedule_once_catches_up_the_missed_days_then_nothing_is_due() {
    use chrono::{Duration, Timelike, Utc};
    let dir = lake_testing::example("credit");
    let toml = std::fs::read_to_string(dir.path().join("lake.toml")).unwrap();
    std::fs::write(
        dir.path().join("lake.toml"),
        toml + "\n[schedule]\ncron = \"0 7 * * *\"\ntimezone = \"UTC\"\ncatchup = \"3d\"\n",
    )
    .unwrap();
    let now = Utc::now();
    let latest = if now.hour() >= 7 {
        now.date_naive()
    } else {
        now.date_naive() - Duration::days(1)
    };
    let expected: Vec<String> = (0..3)
        .rev()
        .map(|i| (latest - Duration::days(i)).to_string())
        .collect();
    let out = lake(dir.path())
        .args(["schedule", "--once"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let runs: serde_json::Value = serde_json::from_slice(
        &lake(dir.path())
            .args(["runs", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mut dates: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["date"].as_str().unwrap().to_owned())
        .collect();
    dates.sort();
    assert_eq!(dates, expected);
    // Run in order, oldest first.
    let err = stderr(&out);
    let order: Vec<&str> = err
        .lines()
        .filter_map(|l| l.split("lake run --date ").nth(1))
        .collect();
    assert_eq!(
        order,
        expected.iter().map(String::as_str).collect::<Vec<_>>()
    );

    lake(dir.path())
        .args(["schedule", "--once"])
        .assert()
        .success()
        .stderr(predicate::str::contains("schedule: nothing due"));
    let status: serde_json::Value = serde_json::from_slice(
        &lake(dir.path())
            .args(["schedule", "status", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(status["due"], serde_json::json!([]));
    assert_eq!(status["schedule"]["timezone"], "UTC");
    assert_eq!(status["recent"].as_array().unwrap().len(), 3);
    assert!(
        status["recent"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "succeeded")
    );
    let next: chrono::DateTime<Utc> = status["next"][0]["at"].as_str().unwrap().parse().unwrap();
    assert!(next > now && next.hour() == 7, "{next}");

    let unit = stdout(
        &lake(dir.path())
            .args(["schedule", "install", "--systemd"])
            .output()
            .unwrap(),
    );
    assert!(
        unit.contains("schedule --once") && unit.contains("OnCalendar="),
        "{unit}"
    );
    assert!(
        unit.contains(&dir.path().join("lake.toml").display().to_string()),
        "{unit}"
    );
    let line = stdout(
        &lake(dir.path())
            .args(["schedule", "install", "--cron"])
            .output()
            .unwrap(),
    );
    assert!(line.contains("*/5 * * * * cd "), "{line}");
}

#[test]
fn a_bad_schedule_is_refused_with_its_lines() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        "[lake]\nname = \"s\"\n\n[schedule]\ncron = \"0 25 * * *\"\ntimezone = \"Mars/Olympus\"\ncatchup = \"soon\"\n",
    )
    .unwrap();
    let out = lake(tmp.path()).arg("validate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for (line, key) in [
        (5, "schedule.cron"),
        (6, "schedule.timezone"),
        (7, "schedule.catchup"),
    ] {
        assert!(
            err.contains(&format!("lake.toml:{line}")) && err.contains(key),
            "{key}: {err}"
        );
    }
    // No [schedule]: said, with what to add.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("lake.toml"), "[lake]\nname = \"s\"\n").unwrap();
    lake(tmp.path())
        .args(["schedule", "--once"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("has no [schedule]"));
}

/// `retries`: a step that fails once succeeds on attempt 2, with the first error in the
/// ledger; a SQL error is not retried.
#[test]
fn a_step_that_fails_once_succeeds_on_its_retry_and_a_sql_error_is_not_retried() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("data")).unwrap();
    std::fs::write(tmp.path().join("data/t.csv"), "a\n1\n2\n").unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        r#"[lake]
name = "retry"

[sources.t]
kind = "file"
path = "data/*.csv"

[steps.flaky]
kind = "command"
command = ["sh", "-c", "if [ -e once ]; then exit 0; fi; touch once; echo 'connection reset' >&2; exit 3"]
retries = 2
retry_delay = "1s"

[steps.bad_sql]
kind = "sql"
inputs = ["raw/t@date"]
output = "trusted/t"
sql = "SELECT nope FROM t"
retries = 3
retry_delay = "1s"
"#,
    )
    .unwrap();
    let out = lake(tmp.path())
        .args(["run", "--date", "2024-05-01"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "bad_sql fails the run");
    let text = stdout(&out) + &stderr(&out);
    assert!(
        text.contains("step flaky: succeeded on attempt 2"),
        "{text}"
    );
    let runs: serde_json::Value = serde_json::from_slice(
        &lake(tmp.path())
            .args(["runs", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let steps = runs[0]["steps"].as_array().unwrap();
    let flaky = steps.iter().find(|s| s["name"] == "flaky").unwrap();
    assert_eq!(flaky["attempts"], 2);
    assert!(
        flaky["attempt_errors"][0]
            .as_str()
            .unwrap()
            .contains("connection reset"),
        "{flaky}"
    );
    let bad = steps.iter().find(|s| s["name"] == "bad_sql").unwrap();
    assert_eq!(bad["status"], "failed");
    assert!(bad.get("attempts").is_none(), "not retried: {bad}");
}

/// `[notify]`: a failed run POSTs one notice with the failed step's cause and no secret; the
/// next, succeeding run sends `recovered`; the command gets the same JSON on stdin.
#[test]
fn a_failed_run_notifies_the_webhook_and_the_command_without_secrets() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = std::sync::Arc::clone(&bodies);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = Vec::new();
            // Read the headers and the body (Content-Length).
            loop {
                let n = conn.read(&mut buf).unwrap_or(0);
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        seen.lock().unwrap().push(text);
                        break;
                    }
                }
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    let toml = |fail: bool| {
        format!(
            r#"[lake]
name = "hooked"

[steps.report]
kind = "command"
command = ["sh", "-c", "{}"]
env = {{ TOKEN = "${{env:LAKE_TEST_TOKEN}}" }}

[notify]
on = ["failure", "recovered"]
webhook = "${{env:LAKE_TEST_HOOK}}"
command = ["sh", "-c", "cat > notice.json"]
"#,
            if fail {
                "echo using $TOKEN >&2; echo 'upstream said no' >&2; exit 4"
            } else {
                "exit 0"
            }
        )
    };
    let hook = format!("http://127.0.0.1:{port}/hook?key=hooksecret123");
    let run = |fail: bool| {
        std::fs::write(tmp.path().join("lake.toml"), toml(fail)).unwrap();
        lake(tmp.path())
            .args(["run", "--date", "2024-05-01"])
            .env("LAKE_TEST_TOKEN", "steptoken456")
            .env("LAKE_TEST_HOOK", &hook)
            .output()
            .unwrap()
    };
    let out = run(true);
    assert_eq!(out.status.code(), Some(1));
    let all = stdout(&out) + &stderr(&out);
    assert!(
        !all.contains("hooksecret123") && !all.contains("steptoken456"),
        "{all}"
    );
    let out = run(false);
    assert!(out.status.success(), "{}", stderr(&out));
    let posted = bodies.lock().unwrap().clone();
    assert_eq!(posted.len(), 2, "{posted:?}");
    assert!(
        posted[0].starts_with("POST /hook?key=hooksecret123"),
        "{}",
        posted[0]
    );
    let body = |p: &str| -> serde_json::Value {
        serde_json::from_str(p.split_once("\r\n\r\n").unwrap().1).unwrap()
    };
    let first = body(&posted[0]);
    assert_eq!(first["event"], "failure");
    assert!(
        first["text"]
            .as_str()
            .unwrap()
            .contains("step report failed"),
        "{first}"
    );
    assert!(first.to_string().contains("upstream said no"), "{first}");
    assert!(!first.to_string().contains("steptoken456"), "{first}");
    assert_eq!(body(&posted[1])["event"], "recovered");
    let notice: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("notice.json")).unwrap()).unwrap();
    assert_eq!(notice["event"], "recovered");
}

/// A source's `retries`: a window whose fetch fails once (the server's 500, with one HTTP
/// attempt) lands on its second fetch; the ledger has both.
#[test]
fn a_source_fetch_that_fails_once_lands_on_its_retry() {
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&calls);
    let (url, _) = http_server(move |_| {
        if counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            Reply {
                status: "500 Internal Server Error",
                body: b"busy".to_vec(),
                pause: std::time::Duration::ZERO,
            }
        } else {
            Reply::ok("a,b\n1,2\n")
        }
    });
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        format!(
            "[lake]\nname = \"r\"\n\n[sources.api]\nkind = \"http\"\nurl = \"{url}/data.csv\"\nmax_attempts = 1\nretries = 1\nretry_delay = \"1s\"\n"
        ),
    )
    .unwrap();
    let out = lake(tmp.path())
        .args(["ingest", "--date", "2024-01-01"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("attempt 1 failed; retrying"),
        "{}",
        stderr(&out)
    );
    let runs: serde_json::Value = serde_json::from_slice(
        &lake(tmp.path())
            .args(["runs", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let ingest = &runs[0]["ingest"][0];
    assert_eq!(ingest["status"], "succeeded", "{ingest}");
    assert_eq!(ingest["attempts"], 2, "{ingest}");
    assert!(
        ingest["attempt_errors"][0]
            .as_str()
            .unwrap()
            .contains("500"),
        "{ingest}"
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// The service and timer `lake schedule install --systemd` prints pass `systemd-analyze
/// verify` (where systemd-analyze is installed; skipped, saying so, elsewhere).
#[test]
fn the_systemd_units_pass_systemd_analyze_verify() {
    let found = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if lake_testing::skip_unless(
        "LAKE_REQUIRE_SYSTEMD_ANALYZE",
        found
            .err()
            .map(|e| format!("systemd-analyze cannot run: {e}")),
    ) {
        return;
    }
    let dir = lake_testing::example("weather");
    for (args, user) in [
        (&["schedule", "install", "--systemd"][..], true),
        (&["schedule", "install", "--systemd", "--system"][..], false),
    ] {
        let text = stdout(&lake(dir.path()).args(args).output().unwrap());
        assert_eq!(text.contains("User="), !user, "{text}");
        let mut files = Vec::new();
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if line.starts_with("# then:") {
                break;
            }
            let file = line
                .strip_prefix("# ")
                .filter(|l| l.ends_with(".service") || l.ends_with(".timer"));
            if let Some(f) = file {
                files.extend(current.take());
                current = Some((f.rsplit('/').next().unwrap().to_owned(), String::new()));
            } else if let Some((_, body)) = current.as_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        files.extend(current);
        assert_eq!(files.len(), 2, "a service and a timer: {text}");
        let paths: Vec<_> = files
            .iter()
            .map(|(name, body)| {
                let path = dir.path().join(name);
                std::fs::write(&path, body).unwrap();
                path
            })
            .collect();
        // Verified as system units (a user manager may not run here): the user units hold
        // nothing a system unit could not.
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .args(&paths)
            .env("SYSTEMD_LOG_LEVEL", "warning")
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `[notify] timeout`: a notice command that never ends (and a child it started) is killed past
/// its limit; the run ends with its own result and a warning says what happened.
#[test]
fn a_hanging_notice_command_is_killed_at_its_timeout_and_the_run_keeps_its_result() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        r#"[lake]
name = "hangs"

[steps.report]
kind = "command"
command = ["sh", "-c", "exit 0"]

[notify]
on = ["success"]
command = ["sh", "-c", "sleep 300 & echo $! > child.pid; cat > notice.json; sleep 300"]
timeout = "2s"
"#,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = lake(tmp.path())
        .args(["run", "--date", "2024-05-01"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        took < std::time::Duration::from_secs(60),
        "the run waited for the notice: {took:?}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("[notify] timeout") && err.contains("killed"),
        "{err}"
    );
    // The notice was handed over before the limit, and what the command started is gone too.
    let notice: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("notice.json")).unwrap()).unwrap();
    assert_eq!(notice["event"], "success");
    let pid = std::fs::read_to_string(tmp.path().join("child.pid")).unwrap();
    // A zombie waiting for its reaper counts as ended.
    let alive = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| !s.trim_start().starts_with('Z'))
    });
    assert!(!alive, "the command's child {} still runs", pid.trim());
}

/// `lake schedule status` shows the catch-up as lake.toml says it (`12h` was printed `0d`).
#[test]
fn schedule_status_shows_the_catch_up_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        "[lake]\nname = \"hourly\"\n\n[steps.report]\nkind = \"command\"\ncommand = [\"true\"]\n\n[schedule]\ncron = \"0 * * * *\"\ncatchup = \"12h\"\n",
    )
    .unwrap();
    let out = lake(tmp.path())
        .args(["schedule", "status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("catch-up 12h"), "{}", stdout(&out));
}
