//! `[sources.*] kind = "postgres"` against a real PostgreSQL server (the one `.ci/run`
//! starts): a cursor source lands each day's rows once, the types arrive as PostgreSQL holds
//! them (compared with `psql`), and the password never shows.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use lake_testing::postgres::{fresh_database, psql, server};

fn lake(dir: &Path, pg_url: &str) -> Command {
    let mut c = Command::cargo_bin("lake").unwrap();
    c.current_dir(dir)
        .env_remove("RUST_LOG")
        .env("SHOP_DB_URL", pg_url);
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn lake_ok(dir: &Path, url: &str, args: &[&str]) -> String {
    let o = lake(dir, url).args(args).output().unwrap();
    assert!(o.status.success(), "lake {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn password(url: &str) -> &str {
    let auth = url.split_once("://").unwrap().1.split_once('@').unwrap().0;
    auth.split_once(':').map_or("", |(_, p)| p)
}

const TOML: &str = r#"[lake]
name = "shop"
root = "lake"

[sources.customers]
kind = "postgres"
url = "${env:SHOP_DB_URL}"
table = "public.customers"
cursor = "updated_at"
max_file_rows = 2
"#;

#[test]
fn a_cursor_source_lands_each_days_rows_once_typed_as_postgres_holds_them() {
    let Some(server) = server() else { return };
    let url = fresh_database(&server, "pgsource");
    psql(
        &url,
        "CREATE TABLE customers (
            id bigint PRIMARY KEY, name text, tier varchar(10), balance numeric(12,2),
            ratio double precision, small smallint, active boolean, born date,
            updated_at timestamptz, seen timestamp, attrs jsonb, tags text[], scores int[],
            big numeric);
         INSERT INTO customers VALUES
          (1, 'Ana', 'gold', 1234.50, 0.25, 3, true, '1990-02-03', '2024-05-01 08:00:00+00', '2024-05-01 09:30:00', '{\"a\": 1}', '{x,y}', '{1,2}', 12345678901234567890.123456789),
          (2, 'Bo', NULL, -0.05, NULL, NULL, false, NULL, '2024-05-01 23:59:59.5+00', NULL, NULL, '{}', NULL, NULL),
          (3, 'Cy', 'basic', 7.00, 1e10, -2, NULL, '2001-01-01', '2024-05-01 12:00:00+00', NULL, '[1, \"b\"]', NULL, '{3}', 0),
          (4, 'Di', 'basic', 10.10, 2.5, 1, true, NULL, '2024-05-02 00:00:00+00', NULL, NULL, NULL, NULL, -1.5);",
    );
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("lake.toml"), TOML).unwrap();

    let plan = lake_ok(tmp.path(), &url, &["plan"]);
    assert!(
        plan.contains("(postgres, line 5") && plan.contains("updated_at falls in the window"),
        "{plan}"
    );
    assert!(
        !plan.contains(password(&url)) || password(&url).is_empty(),
        "{plan}"
    );

    let doctor = lake(tmp.path(), &url).arg("doctor").output().unwrap();
    assert!(
        text(&doctor).contains("source customers: postgres public.customers")
            && text(&doctor).contains("connected; SELECT allowed"),
        "{}",
        text(&doctor)
    );

    lake_ok(
        tmp.path(),
        &url,
        &["ingest", "customers", "--date", "2024-05-01"],
    );
    let window = tmp.path().join("lake/raw/customers/ingest_date=2024-05-01");
    // Three rows of the day, two per file.
    assert!(window.join("customers-00001.parquet").is_file());
    assert!(window.join("customers-00002.parquet").is_file());
    assert!(!window.join("customers-00003.parquet").exists());

    let q = |sql: &str| lake_ok(tmp.path(), &url, &["query", sql, "--format", "csv"]);
    // Exact types: decimal(12,2), microsecond timestamps with and without zone, lists.
    let types = q(
        "SELECT arrow_typeof(balance) AS b, arrow_typeof(updated_at) AS u, arrow_typeof(seen) AS s, arrow_typeof(tags) AS t, arrow_typeof(small) AS sm, arrow_typeof(big) AS bg FROM raw.customers LIMIT 1",
    );
    assert!(types.contains("Decimal128(12, 2)"), "{types}");
    assert!(
        types.contains("Timestamp(µs, \"\"UTC\"\")") && types.contains(",Timestamp(µs),"),
        "{types}"
    );
    assert!(
        types.contains("Int16") && types.contains("List("),
        "{types}"
    );
    assert!(
        types.contains("Utf8"),
        "unconstrained numeric as exact text: {types}"
    );

    // The values, as psql prints the same rows.
    let lake_rows = q(
        "SELECT id, name, tier, CAST(balance AS VARCHAR) AS balance, small, active, CAST(born AS VARCHAR) AS born, translate(attrs, '\",', '''$') AS attrs, big FROM raw.customers ORDER BY id",
    );
    let lake_rows: Vec<String> = lake_rows
        .lines()
        .skip(1)
        .map(|l| l.replace(',', "|"))
        .collect();
    let pg = psql(
        &url,
        "SELECT id, name, coalesce(tier, ''), balance, coalesce(small::text, ''), coalesce(active::text, ''), coalesce(born::text, ''), coalesce(translate(attrs::text, '\",', '''$'), ''), coalesce(big::text, '') FROM customers WHERE updated_at < '2024-05-02' ORDER BY id",
    );
    let pg: Vec<String> = pg
        .lines()
        .map(|l| {
            l.replace("|t|", "|true|")
                .replace("|f|", "|false|")
                .replace(',', "|")
        })
        .collect();
    assert_eq!(lake_rows, pg);

    // The next day lands only its own row; the first day is not fetched again.
    lake_ok(
        tmp.path(),
        &url,
        &["ingest", "customers", "--date", "2024-05-02"],
    );
    let per_day = q(
        "SELECT CAST(ingest_date AS VARCHAR) AS d, count(*) AS n, sum(id) AS ids FROM raw.customers GROUP BY ingest_date ORDER BY d",
    );
    assert_eq!(per_day, "d,n,ids\n2024-05-01,3,6\n2024-05-02,1,4\n");
    lake_ok(
        tmp.path(),
        &url,
        &["ingest", "customers", "--date", "2024-05-01"],
    );
    assert_eq!(
        q("SELECT count(*) AS n FROM raw.customers"),
        "n\n4\n",
        "a complete window is not extracted twice"
    );

    // A wrong password: a clear error that does not show it.
    let bad = url.replacen(password(&url), "not-the-password", 1);
    if !password(&url).is_empty() {
        let o = lake(tmp.path(), &bad)
            .args(["ingest", "customers", "--date", "2024-05-03"])
            .output()
            .unwrap();
        assert!(!o.status.success());
        let t = text(&o);
        assert!(
            t.contains("customers") && !t.contains("not-the-password"),
            "{t}"
        );
    }
}

#[test]
fn postgres_source_keys_are_checked_at_their_lines() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        "[lake]\nname = \"x\"\n\n[sources.a]\nkind = \"postgres\"\nurl = \"${env:U}\"\n\n[sources.b]\nkind = \"postgres\"\nurl = \"${env:U}\"\ntable = \"Bad Name\"\ncursor = \"Updated At\"\nmax_file_rows = 0\n",
    )
    .unwrap();
    let o = lake(tmp.path(), "postgres://x@127.0.0.1/x")
        .arg("plan")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let t = text(&o);
    for want in [
        "lake.toml:4",
        "`table = \"schema.table\"` or `query",
        "lake.toml:11",
        "not a table name",
        "lake.toml:12",
        "not a column name",
        "lake.toml:13",
        "at least 1",
    ] {
        assert!(t.contains(want), "{want}: {t}");
    }
}

#[test]
fn a_url_written_with_its_password_is_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        "[lake]\nname = \"x\"\n\n[sources.a]\nkind = \"postgres\"\nurl = \"postgres://reader:hunter2-secret@127.0.0.1:1/shop\"\nquery = \"SELECT * FROM t WHERE d >= '{start}' AND d < '{end_exclusive}'\"\n",
    )
    .unwrap();
    for args in [&["plan"][..], &["plan", "--json"][..]] {
        let out = lake_ok(tmp.path(), "", args);
        assert!(out.contains("reader") && !out.contains("hunter2"), "{out}");
    }
    let o = lake(tmp.path(), "")
        .args(["ingest", "a", "--date", "2024-05-01"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("cannot connect") && !t.contains("hunter2"),
        "{t}"
    );
}

use lake_testing::walk;

/// kill -9 while a large extract is being written: no window is committed, the rerun takes
/// over the lock and lands the whole table (counted and summed against psql), and the
/// killed run's scratch folder is swept by the next run.
#[test]
fn a_killed_extract_commits_nothing_and_the_rerun_lands_it_whole() {
    let Some(server) = server() else { return };
    let url = fresh_database(&server, "pgkilled");
    psql(
        &url,
        "CREATE TABLE events AS SELECT g::bigint AS id, md5(g::text) AS note FROM generate_series(1, 1000000) g",
    );
    let tmp = tempfile::tempdir().unwrap();
    let scratch = tmp.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        "[lake]\nname = \"shop\"\nroot = \"lake\"\n\n[sources.events]\nkind = \"postgres\"\nurl = \"${env:SHOP_DB_URL}\"\ntable = \"public.events\"\nmax_file_rows = 100000\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("lake"))
        .args(["-q", "ingest", "--date", "2024-05-01"])
        .current_dir(tmp.path())
        .env("SHOP_DB_URL", &url)
        .env("TMPDIR", &scratch)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the extract has closed its first file.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !walk(&scratch).iter().any(|p| {
        p.to_string_lossy().contains("lake-scratch-postgres-")
            && p.to_string_lossy().ends_with("-00002.parquet")
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the extract never started writing"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the extract ended before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let window = tmp.path().join("lake/raw/events/ingest_date=2024-05-01");
    assert!(walk(&window).is_empty(), "{:?}", walk(&window));
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().flatten().collect();
    assert_eq!(left.len(), 1, "the killed run's scratch folder: {left:?}");

    let o = lake(tmp.path(), &url)
        .args(["ingest", "--date", "2024-05-01"])
        .env("TMPDIR", &scratch)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("took over the lock"), "{}", text(&o));
    assert_eq!(
        std::fs::read_dir(&scratch).unwrap().count(),
        0,
        "the killed run's scratch folder is swept and the rerun's removed"
    );
    let files = walk(&window);
    assert_eq!(
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
            .count(),
        10,
        "{files:?}"
    );
    let lake_sum = lake_ok(
        tmp.path(),
        &url,
        &[
            "query",
            "SELECT count(*) AS n, sum(id) AS ids, count(DISTINCT note) AS notes FROM raw.events",
            "--format",
            "csv",
        ],
    );
    let pg = psql(
        &url,
        "SELECT count(*), sum(id), count(DISTINCT note) FROM events",
    );
    assert_eq!(lake_sum.lines().nth(1).unwrap().replace(',', "|"), pg);
}
