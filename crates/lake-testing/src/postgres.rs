//! The PostgreSQL server of the sink tests: the one `.ci/run` starts (`LAKE_TEST_PG_URL`, a
//! superuser's URL), a fresh database per test, and `psql` to read what lake wrote.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server's URL (its `postgres` database), or `None` (the test is skipped, saying so)
/// when no server was started. `LAKE_REQUIRE_PG` makes a missing server a failure.
pub fn server() -> Option<String> {
    match std::env::var("LAKE_TEST_PG_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert!(
                std::env::var_os("LAKE_REQUIRE_PG").is_none(),
                "LAKE_REQUIRE_PG is set but LAKE_TEST_PG_URL is not: PostgreSQL did not start"
            );
            eprintln!(
                "skipped: no PostgreSQL (set LAKE_TEST_PG_URL, or run `bash .ci/run`, which starts one)"
            );
            None
        }
    }
}

/// A new, empty database on `server` for one test: its URL.
pub fn fresh_database(server: &str, test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "lake_{}_{}_{}",
        test,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    psql(server, &format!("CREATE DATABASE {name}"));
    with_database(server, &name)
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    format!("{base}/{db}{query}")
}

/// Run `sql` with `psql` (unaligned, tuples only, `|` between fields, stop at the first
/// error): what it printed. Panics with psql's error when it fails.
pub fn psql(url: &str, sql: &str) -> String {
    let out = try_psql(url, sql);
    match out {
        Ok(text) => text,
        Err(e) => panic!("psql failed on {sql:?}: {e}"),
    }
}

/// As [`psql`], the error (psql's stderr) returned.
pub fn try_psql(url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args([
            url,
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .expect("run psql (PostgreSQL's client, on PATH)");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
