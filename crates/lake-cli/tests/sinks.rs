//! `[sinks.*]` of kind postgres against a real PostgreSQL server (the one `.ci/run` starts),
//! read back with `psql`.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use lake_testing::postgres::{fresh_database, psql, server, try_psql, with_database};

fn lake(dir: &Path, pg_url: &str) -> Command {
    let mut c = Command::cargo_bin("lake").unwrap();
    c.current_dir(dir)
        .env_remove("RUST_LOG")
        .env("PG_URL", pg_url);
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `lake ARGS` in `dir` with `PG_URL`, which must succeed: what it printed (stdout, stderr).
fn lake_ok(dir: &Path, pg_url: &str, args: &[&str]) -> String {
    let o = lake(dir, pg_url).args(args).output().unwrap();
    assert!(o.status.success(), "lake {args:?}: {}", text(&o));
    text(&o)
}

/// The password of a `postgres://user:password@host/db` URL.
fn password(url: &str) -> &str {
    let auth = url.split_once("://").unwrap().1.split_once('@').unwrap().0;
    auth.split_once(':').unwrap().1
}

/// Rows of a query as lake prints them in CSV (header dropped), numbers as PostgreSQL
/// prints them (`4158.04`, `1498`), so both sides compare as text.
fn lake_rows(dir: &Path, url: &str, sql: &str) -> Vec<String> {
    let out = lake(dir, url)
        .args(["query", sql, "--format", "csv"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .map(|f| match f.parse::<f64>() {
                    Ok(n) => n.to_string(),
                    Err(_) => f.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

fn pg_rows(url: &str, sql: &str) -> Vec<String> {
    psql(url, sql)
        .lines()
        .map(|l| {
            l.split('|')
                .map(|f| match f.parse::<f64>() {
                    Ok(n) => n.to_string(),
                    Err(_) => f.to_owned(),
                })
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect()
}

#[test]
fn the_credit_example_loads_its_table_skips_a_rerun_replaces_after_a_change_and_keeps_lineage() {
    let Some(server) = server() else { return };
    let url = fresh_database(&server, "credit");
    let tmp = lake_testing::example("credit");
    let dir = tmp.path();

    let first = lake_ok(dir, &url, &["run", "--date", "2024-03-01"]);
    assert!(
        first.contains(
            "sink credit_pg: loaded 8 rows from refined/credit_by_purpose into credit.by_purpose"
        ),
        "{}",
        first
    );
    // The table holds what `lake query` reads, typed as the dataset is.
    let cols = "purpose, n, avg_credit_amount, avg_duration";
    assert_eq!(
        pg_rows(
            &url,
            &format!("SELECT {cols} FROM credit.by_purpose ORDER BY purpose")
        ),
        lake_rows(
            dir,
            &url,
            &format!("SELECT {cols} FROM refined.credit_by_purpose ORDER BY purpose")
        )
    );
    assert_eq!(
        psql(
            &url,
            "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
             FROM information_schema.columns WHERE table_schema = 'credit' AND table_name = 'by_purpose'"
        ),
        "purpose text, n bigint, avg_credit_amount double precision, avg_duration double precision"
    );
    let loaded_at = "SELECT loaded_at FROM credit._lake_loads WHERE table_name = 'by_purpose'";
    let first_load = psql(&url, loaded_at);

    // Nothing changed: the sink is skipped, the table untouched.
    let again = lake_ok(dir, &url, &["run", "--date", "2024-03-01"]);
    assert!(
        again.contains(
            "sink credit_pg: skipped, credit.by_purpose holds refined/credit_by_purpose already"
        ),
        "{}",
        again
    );
    assert_eq!(psql(&url, loaded_at), first_load);

    // Half the loans on another day: the table is replaced by the new aggregate.
    let csv = std::fs::read_dir(dir.join("data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "csv"))
        .unwrap();
    let body = std::fs::read_to_string(&csv).unwrap();
    let half: Vec<&str> = body.lines().take(501).collect();
    std::fs::write(&csv, half.join("\n") + "\n").unwrap();
    let changed = lake_ok(dir, &url, &["run", "--date", "2024-03-02"]);
    assert_eq!(psql(&url, "SELECT sum(n) FROM credit.by_purpose"), "500");
    assert_eq!(
        pg_rows(
            &url,
            &format!("SELECT {cols} FROM credit.by_purpose ORDER BY purpose")
        ),
        lake_rows(
            dir,
            &url,
            &format!("SELECT {cols} FROM refined.credit_by_purpose ORDER BY purpose")
        )
    );

    // Lineage: one row per step of each run that made a loaded dataset, named by its batch.
    let runs: serde_json::Value = serde_json::from_slice(
        &lake(dir, &url)
            .args(["runs", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let made: Vec<String> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["steps"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["status"] == "succeeded"))
        })
        .map(|r| r["run_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(made.len(), 2, "{runs}");
    // As the query orders them: by batch id.
    let mut made = made;
    made.sort();
    let lineage = psql(
        &url,
        "SELECT batch, step, source, destination FROM credit.data_flow ORDER BY batch, step",
    );
    let expected: Vec<String> = made
        .iter()
        .flat_map(|b| {
            [
                format!("{b}|credit|raw/credit|trusted/credit"),
                format!("{b}|credit_by_purpose|trusted/credit|refined/credit_by_purpose"),
            ]
        })
        .collect();
    assert_eq!(lineage, expected.join("\n"));

    // The ledger has the loads; neither it nor the plan holds the password.
    let ledger = String::from_utf8(
        lake(dir, &url)
            .args(["runs", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(ledger.contains("\"sinks\""), "{ledger}");
    assert!(
        ledger.contains("\"table\": \"credit.by_purpose\""),
        "{ledger}"
    );
    let plan = lake(dir, &url).args(["plan"]).output().unwrap();
    assert!(text(&plan).contains("${env:PG_URL}"), "{}", text(&plan));
    for out in [&ledger, &text(&plan), &first, &changed] {
        assert!(!out.contains(password(&url)), "the password leaked: {out}");
    }
}

/// A pipeline whose refined/items comes from data/items.csv (id, name, amount), with the given
/// sinks.
fn items_pipeline(dir: &Path, sinks: &str) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("lake.toml"),
        format!(
            r#"
[lake]
name = "items"

[sources.items]
kind = "file"
path = "data/items.csv"

[steps.items]
kind = "sql"
inputs = ["raw/items@date"]
output = "refined/items"
sql = "SELECT CAST(id AS INT) AS id, name, CAST(amount AS DECIMAL(10,2)) AS amount FROM items"
{sinks}
"#
        ),
    )
    .unwrap();
}

#[test]
fn append_adds_each_load_once_and_upsert_updates_by_key() {
    let Some(server) = server() else { return };
    let url = fresh_database(&server, "modes");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    items_pipeline(
        dir,
        r#"
[sinks.log]
kind = "postgres"
url = "${env:PG_URL}"
from = "refined/items"
table = "shop.items_log"
mode = "append"

[sinks.current]
kind = "postgres"
url = "${env:PG_URL}"
from = "refined/items"
table = "shop.items"
mode = "upsert"
key = ["id"]
"#,
    );
    let data = dir.join("data/items.csv");
    std::fs::write(
        &data,
        "id,name,amount\n1,apple,1.50\n2,pear,2.25\n3,plum,-0.75\n",
    )
    .unwrap();
    let run = |date: &str| lake_ok(dir, &url, &["run", "--date", date]);
    run("2024-03-01");
    std::fs::write(
        &data,
        "id,name,amount\n2,pear,9.99\n3,plum,3.00\n4,fig,10000.01\n",
    )
    .unwrap();
    run("2024-03-02");
    // The same data again: neither sink loads (an append is never done twice).
    let third = run("2024-03-02");
    assert!(third.contains("sink log: skipped"), "{third}");
    assert!(third.contains("sink current: skipped"), "{third}");

    assert_eq!(
        psql(
            &url,
            "SELECT id, name, amount FROM shop.items_log ORDER BY amount"
        ),
        "3|plum|-0.75\n1|apple|1.50\n2|pear|2.25\n3|plum|3.00\n2|pear|9.99\n4|fig|10000.01"
    );
    assert_eq!(
        psql(&url, "SELECT id, name, amount FROM shop.items ORDER BY id"),
        "1|apple|1.50\n2|pear|9.99\n3|plum|3.00\n4|fig|10000.01"
    );
    // The upsert's table was created with its key as primary key, the decimal as numeric.
    assert_eq!(
        psql(
            &url,
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
             WHERE a.attrelid = 'shop.items'::regclass AND a.attname = 'amount'"
        ),
        "numeric(10,2)"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'shop.items'::regclass AND contype = 'p'"
        ),
        "1"
    );
    // --force loads again: append adds the rows a second time, upsert changes nothing.
    lake_ok(dir, &url, &["sink", "--force"]);
    assert_eq!(psql(&url, "SELECT count(*) FROM shop.items_log"), "9");
    assert_eq!(psql(&url, "SELECT count(*) FROM shop.items"), "4");
}

#[test]
fn arrow_types_arrive_as_their_postgres_types_with_their_values() {
    let Some(server) = server() else { return };
    let url = fresh_database(&server, "types");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("data/t.csv"),
        "a,x,d,ts,name\n7,-12345.67,2024-02-29,2024-03-01 12:34:56.123456,it's <b>\n,,,,\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("lake.toml"),
        r#"
[lake]
name = "types"

[sources.t]
kind = "file"
path = "data/t.csv"

[steps.t]
kind = "sql"
inputs = ["raw/t@date"]
output = "refined/t"
sql = """
SELECT CAST(a AS SMALLINT) AS s, CAST(a AS INT) AS i, CAST(a AS BIGINT) AS b,
       CAST(a AS REAL) AS r, CAST(a AS DOUBLE) AS f, CAST(x AS DECIMAL(12,2)) AS dec,
       CAST(d AS DATE) AS day, CAST(ts AS TIMESTAMP) AS ts, CAST(a AS INT) > 1 AS flag,
       name, CASE WHEN a IS NULL THEN NULL ELSE named_struct('k', name, 'n', CAST(a AS INT)) END AS obj
FROM t
"""

[sinks.t]
kind = "postgres"
url = "${env:PG_URL}"
from = "refined/t"
table = "t"
"#,
    )
    .unwrap();
    lake_ok(dir, &url, &["run", "--date", "2024-03-01"]);
    assert_eq!(
        psql(
            &url,
            "SELECT string_agg(column_name || ' ' || data_type, ', ' ORDER BY ordinal_position)
             FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 't'"
        ),
        "s smallint, i integer, b bigint, r real, f double precision, dec numeric, day date, \
         ts timestamp without time zone, flag boolean, name text, obj jsonb"
    );
    assert_eq!(
        psql(
            &url,
            "SELECT s, i, b, r, f, dec, day, ts, flag, name, obj FROM t WHERE s IS NOT NULL"
        ),
        "7|7|7|7|7|-12345.67|2024-02-29|2024-03-01 12:34:56.123456|t|it's <b>|{\"k\": \"it's <b>\", \"n\": 7}"
    );
    // The row of empty fields: every column null.
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM t WHERE s IS NULL AND dec IS NULL AND day IS NULL AND ts IS NULL AND flag IS NULL AND obj IS NULL"
        ),
        "1"
    );
}

#[test]
fn an_incompatible_table_is_refused_untouched_and_connection_errors_are_clear_without_secrets() {
    let Some(server) = server() else { return };
    let url = fresh_database(&server, "refused");
    let tmp = lake_testing::example("credit");
    let dir = tmp.path();
    // A table whose `n` is an integer: the dataset's bigint does not fit.
    psql(
        &url,
        "CREATE SCHEMA credit; CREATE TABLE credit.by_purpose (purpose text, n integer, avg_credit_amount double precision, avg_duration double precision); INSERT INTO credit.by_purpose VALUES ('kept', 1, 1, 1)",
    );
    let o = lake(dir, &url)
        .args(["run", "--date", "2024-03-01"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("column \"n\"") && out.contains("bigint") && out.contains("integer"),
        "{out}"
    );
    assert_eq!(
        psql(&url, "SELECT purpose, n FROM credit.by_purpose"),
        "kept|1"
    );
    assert_eq!(
        psql(&url, "SELECT to_regclass('credit._lake_loads') IS NULL"),
        "t"
    );
    assert_eq!(
        psql(&url, "SELECT to_regclass('credit.data_flow') IS NULL"),
        "t"
    );
    // The ledger says the sink failed; the steps' outputs are published all the same.
    assert!(
        dir.join("lake/refined/credit_by_purpose/_manifest.json")
            .exists()
    );

    // A wrong password, a closed port, a missing database: each in words, exit 1, no secret.
    let wrong = url.replace(password(&url), "not-the-password-4711");
    let o = lake(dir, &wrong).args(["sink"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("password authentication failed"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains("not-the-password-4711"), "{}", text(&o));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = format!("postgres://lake:secret-4712@127.0.0.1:{port}/x");
    let o = lake(dir, &closed).args(["sink"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("connection refused"), "{}", text(&o));
    assert!(!text(&o).contains("secret-4712"), "{}", text(&o));

    let missing = with_database(&url, "no_such_db");
    let o = lake(dir, &missing).args(["sink"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("database \"no_such_db\" does not exist"),
        "{}",
        text(&o)
    );
    assert!(!text(&o).contains(password(&url)), "{}", text(&o));

    // doctor checks the connection and the rights, and says what is wrong.
    let o = lake(dir, &wrong).args(["doctor"]).output().unwrap();
    assert!(!o.status.success());
    assert!(text(&o).contains("sink credit_pg"), "{}", text(&o));
    assert!(!text(&o).contains("not-the-password-4711"), "{}", text(&o));
    let o = lake(dir, &url).args(["doctor"]).output().unwrap();
    assert!(
        text(&o).contains("can create and write the table"),
        "{}",
        text(&o)
    );
}

#[test]
fn kill_9_in_the_middle_of_a_million_row_replace_leaves_the_old_table_whole() {
    let Some(server) = server() else { return };
    let url = fresh_database(&server, "kill");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    items_pipeline(
        dir,
        r#"
[sinks.big]
kind = "postgres"
url = "${env:PG_URL}"
from = "refined/items"
table = "big"
"#,
    );
    let write = |offset: u64| {
        use std::io::Write;
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.join("data/items.csv")).unwrap());
        writeln!(f, "id,name,amount").unwrap();
        for i in 0..1_000_000u64 {
            writeln!(
                f,
                "{},item{},{}.{:02}",
                i + offset,
                i % 97,
                i % 1000,
                i % 100
            )
            .unwrap();
        }
    };
    write(0);
    lake_ok(dir, &url, &["run", "--date", "2024-03-01"]);
    let old = "SELECT count(*), sum(id) FROM big";
    assert_eq!(psql(&url, old), "1000000|499999500000");

    // New data; kill lake once PostgreSQL has received part of the new rows.
    write(5_000_000);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lake"))
        .current_dir(dir)
        .env("PG_URL", &url)
        .args(["run", "--date", "2024-03-02"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let progress = "SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let copied: u64 = psql(&url, progress).parse().unwrap_or(0);
        if copied > 50_000 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "lake finished before it could be killed mid-load"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the load never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The server ends the dead connection's transaction: the old table, whole.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while psql(
        &url,
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lake'",
    ) != "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the connection stayed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(psql(&url, old), "1000000|499999500000");
    assert_eq!(
        psql(
            &url,
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE '\\_lake\\_load\\_%'"
        ),
        "0"
    );

    // The next run takes over and loads the new rows.
    lake_ok(dir, &url, &["run", "--date", "2024-03-02"]);
    assert_eq!(psql(&url, old), "1000000|5499999500000");
    assert!(try_psql(&url, "SELECT 1").is_ok());
}

/// An upsert sink from a dataset a `mode = "merge"` step writes holds the dataset's current
/// rows: updated keys replaced, new keys added, and keys the merge deleted removed.
#[test]
fn an_upsert_sink_from_a_merged_dataset_loads_its_current_rows() {
    let Some(server) = server() else { return };
    let url = fresh_database(&server, "merged");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("lake.toml"),
        r#"
[lake]
name = "customers"

[sources.customers]
kind = "file"
path = "data/customers.csv"

[steps.customers]
kind = "sql"
inputs = ["raw/customers@date"]
output = "trusted/customers"
sql = "SELECT CAST(id AS BIGINT) AS id, name, tier FROM customers"
mode = "merge"
key = ["id"]
delete_when = "tier = 'deleted'"

[sinks.current]
kind = "postgres"
url = "${env:PG_URL}"
from = "trusted/customers"
table = "crm.customers"
mode = "upsert"
key = ["id"]
"#,
    )
    .unwrap();
    let data = dir.join("data/customers.csv");
    std::fs::write(&data, "id,name,tier\n1,ann,gold\n2,bob,silver\n3,cy,gold\n").unwrap();
    lake_ok(dir, &url, &["run", "--date", "2024-03-01"]);
    assert_eq!(
        psql(&url, "SELECT id, name, tier FROM crm.customers ORDER BY id"),
        "1|ann|gold\n2|bob|silver\n3|cy|gold"
    );
    // Day 2: bob is deleted, ann moves, dee arrives.
    std::fs::write(
        &data,
        "id,name,tier\n2,bob,deleted\n1,ann,platinum\n4,dee,silver\n",
    )
    .unwrap();
    lake_ok(dir, &url, &["run", "--date", "2024-03-02"]);
    let merged = lake_rows(
        dir,
        &url,
        "SELECT id, name, tier FROM trusted.customers ORDER BY id",
    );
    assert_eq!(merged, ["1|ann|platinum", "3|cy|gold", "4|dee|silver"]);
    assert_eq!(
        pg_rows(&url, "SELECT id, name, tier FROM crm.customers ORDER BY id"),
        merged
    );
}
