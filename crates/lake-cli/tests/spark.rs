//! `backend = "spark"` end to end: the credit and weather examples run through the `lake`
//! binary on a real Spark (`master = "local[2]"`, spark-submit of the pip `pyspark` package),
//! and every trusted and refined row, and each step's row and rejected counts, equal the
//! embedded engine's.
//!
//! Needs `LAKE_PYSPARK_PYTHON` (a Python with pyspark; `.ci/run` sets it); skips without it
//! unless `LAKE_REQUIRE_PYSPARK` is set.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// The pip pyspark's bin folder (spark-submit) beside the Python that has it.
fn spark_bin() -> Option<PathBuf> {
    match std::env::var_os("LAKE_PYSPARK_PYTHON") {
        Some(p) => Some(Path::new(&p).parent().expect("a python path").to_owned()),
        None if std::env::var_os("LAKE_REQUIRE_PYSPARK").is_some() => {
            panic!("LAKE_REQUIRE_PYSPARK is set but LAKE_PYSPARK_PYTHON is not")
        }
        None => {
            eprintln!("skipped: set LAKE_PYSPARK_PYTHON to a Python with pyspark to run this test");
            None
        }
    }
}

/// `lake` in `dir`, with the Spark of `bin` first on PATH (spark-submit, and python3 for
/// PySpark) and SPARK_HOME unset so that one is used.
fn lake(dir: &Path, bin: &Path) -> Command {
    let mut c = Command::cargo_bin("lake").unwrap();
    let path = std::env::join_paths(std::iter::once(bin.to_owned()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    c.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("SPARK_HOME")
        .env("PATH", path)
        .env("SPARK_LOCAL_IP", "127.0.0.1");
    c
}

fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?} failed:\n{}\n{}",
        c,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Each step's (name, backend, status, rows, rejected) from the newest run's ledger record.
fn steps(dir: &Path, bin: &Path) -> Vec<(String, String, String, u64, u64)> {
    let runs: serde_json::Value =
        serde_json::from_str(&ok(lake(dir, bin).args(["runs", "--json"]))).unwrap();
    let id = runs[0]["run_id"].as_str().unwrap().to_owned();
    let run: serde_json::Value =
        serde_json::from_str(&ok(lake(dir, bin).args(["runs", "show", &id, "--json"]))).unwrap();
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                run["backend"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
                s["rows"].as_u64().unwrap(),
                s["rejected"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn same_rows(name: &str, queries: &[&str]) {
    let Some(bin) = spark_bin() else { return };
    let embedded = lake_testing::example(name);
    let spark = lake_testing::example(name);
    ok(lake(embedded.path(), &bin).args(["run", "--date", "2024-05-01"]));
    let out = lake(spark.path(), &bin)
        .args(["--env", "spark", "run", "--date", "2024-05-01"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "spark run failed:\n{stderr}");
    assert!(stderr.contains("spark: master local[2]"), "{stderr}");

    let (e, s) = (steps(embedded.path(), &bin), steps(spark.path(), &bin));
    assert_eq!(e.len(), s.len());
    for (a, b) in e.iter().zip(&s) {
        assert_eq!((&a.1[..], &b.1[..]), ("local", "spark"));
        assert_eq!(
            (&a.2[..], &b.2[..]),
            ("succeeded", "succeeded"),
            "{a:?} {b:?}"
        );
        assert_eq!(
            (&a.0, a.3, a.4),
            (&b.0, b.3, b.4),
            "step, rows and rejected rows"
        );
    }
    for q in queries {
        let want = ok(lake(embedded.path(), &bin).args(["query", "--format", "csv", q]));
        assert!(want.lines().count() > 2, "{q} gives rows: {want}");
        let got = ok(lake(spark.path(), &bin).args(["query", "--format", "csv", q]));
        assert_eq!(got, want, "{q}");
    }
}

#[test]
fn credit_on_spark_gives_the_embedded_engines_rows() {
    same_rows(
        "credit",
        &[
            "SELECT * FROM trusted.credit ORDER BY id",
            "SELECT * FROM refined.credit_by_purpose ORDER BY purpose",
        ],
    );
}

#[test]
fn weather_on_spark_gives_the_embedded_engines_rows() {
    same_rows(
        "weather",
        &[
            "SELECT time, date, temperature_2m, relative_humidity_2m, wind_speed_10m, latitude, longitude FROM trusted.weather_hourly ORDER BY time",
            "SELECT * FROM refined.weather_daily ORDER BY date",
        ],
    );
}

/// Without spark-submit the run stops before it takes its lock, saying what it tried; doctor
/// says the same. With it, doctor reports the Spark version.
#[test]
fn pages_of_records_read_on_spark_give_the_embedded_engines_rows() {
    let Some(bin) = spark_bin() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    // Pages as a paged API answers them: records under `data`, members missing in some.
    std::fs::write(
        data.join("orders-p00001.json"),
        r#"{"page": 1, "data": [{"id": 1, "amount": 10.5, "tier": "gold"}, {"id": 2, "amount": 20}]}"#,
    )
    .unwrap();
    std::fs::write(
        data.join("orders-p00002.json"),
        r#"{"page": 2, "data": [{"id": 3, "amount": 7.25, "tier": "basic"}]}"#,
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        r#"[lake]
name = "pages"
root = "lake"

[env.spark]
backend = "spark"

[spark]
master = "local[2]"
conf = { "spark.sql.shuffle.partitions" = "2", "spark.ui.enabled" = "false" }

[sources.orders]
kind = "file"
path = "data/orders-p*.json"

[steps.orders]
kind = "sql"
inputs = [{ path = "raw/orders@date", format = "json", json_path = "data" }]
output = "trusted/orders"
sql = "SELECT CAST(id AS BIGINT) AS id, CAST(amount AS DOUBLE) AS amount, tier, CAST(page AS BIGINT) AS page FROM orders"
"#,
    )
    .unwrap();
    let q = "SELECT id, amount, tier, page FROM trusted.orders ORDER BY id";
    ok(lake(tmp.path(), &bin).args(["run", "--date", "2024-05-01"]));
    let want = ok(lake(tmp.path(), &bin).args(["query", "--format", "csv", q]));
    assert_eq!(
        want,
        "id,amount,tier,page\n1,10.5,gold,1\n2,20.0,,1\n3,7.25,basic,2\n"
    );
    ok(lake(tmp.path(), &bin).args(["--env", "spark", "run", "--date", "2024-05-01", "--force"]));
    let got = ok(lake(tmp.path(), &bin).args(["query", "--format", "csv", q]));
    assert_eq!(got, want);
    let runs: serde_json::Value =
        serde_json::from_str(&ok(lake(tmp.path(), &bin).args(["runs", "--json"]))).unwrap();
    assert_eq!(runs.as_array().unwrap().last().unwrap()["backend"], "spark");
}

#[test]
fn a_missing_spark_is_named_before_the_run_and_doctor_reports_the_version() {
    let dir = lake_testing::example("credit");
    let empty = tempfile::tempdir().unwrap();
    let mut c = Command::cargo_bin("lake").unwrap();
    let out = c
        .current_dir(dir.path())
        .env_remove("SPARK_HOME")
        .env("PATH", empty.path())
        .args(["--env", "spark", "run", "--date", "2024-05-01"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no spark-submit: tried SPARK_HOME (not set) and spark-submit on PATH"),
        "{stderr}"
    );
    // Nothing ran: no lock, no ledger, no raw window.
    for left in ["lake/_lake/locks", "lake/_lake/runs", "lake/raw"] {
        assert!(!dir.path().join(left).exists(), "{left}");
    }

    let Some(bin) = spark_bin() else { return };
    let out = ok(lake(dir.path(), &bin).args(["--env", "spark", "doctor"]));
    assert!(out.contains("✓ spark-submit"), "{out}");
    assert!(out.contains("Spark 4."), "{out}");
}

/// A failing PySpark step: the run fails, says why from the application's output (the Python
/// traceback's exception), and publishes nothing.
#[test]
fn a_failed_application_shows_its_traceback() {
    let Some(bin) = spark_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("boom.py"),
        "from pyspark.sql import SparkSession\nSparkSession.builder.getOrCreate()\nraise ValueError('the input has no rows for 2024-05-01')\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lake.toml"),
        "[lake]\nname = \"boom\"\nbackend = \"spark\"\n\n[spark]\nmaster = \"local[1]\"\nconf = { \"spark.ui.enabled\" = \"false\" }\n\n[steps.boom]\nkind = \"spark\"\nscript = \"boom.py\"\noutput = \"refined/boom\"\n",
    )
    .unwrap();
    let out = lake(dir.path(), &bin)
        .args(["run", "--date", "2024-05-01"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Traceback (most recent call last)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("ValueError: the input has no rows for 2024-05-01"),
        "{stderr}"
    );
    assert!(!dir.path().join("lake/refined/boom").exists());
}

/// `lake plan` with `backend = "spark"` shows each step's spark-submit without running Spark
/// (no spark-submit needed), and `--json` carries the same under "spark".
#[test]
fn plan_shows_each_steps_spark_submit() {
    let dir = lake_testing::example("credit");
    let empty = tempfile::tempdir().unwrap();
    let mut c = Command::cargo_bin("lake").unwrap();
    c.current_dir(dir.path())
        .env_remove("SPARK_HOME")
        .env("PATH", empty.path());
    let text = ok(c.args(["--env", "spark", "plan"]));
    assert!(text.contains("backend: spark"), "{text}");
    assert!(
        text.contains("spark: master local[2], deploy mode client"),
        "{text}"
    );
    assert!(
        text.contains("credit: spark-submit --master local[2] --deploy-mode client --conf spark.sql.shuffle.partitions=2 --conf spark.ui.enabled=false <code>/lake_sql.py <code>/credit.json"),
        "{text}"
    );
    let mut c = Command::cargo_bin("lake").unwrap();
    c.current_dir(dir.path())
        .env_remove("SPARK_HOME")
        .env("PATH", empty.path());
    let json: serde_json::Value =
        serde_json::from_str(&ok(c.args(["--env", "spark", "plan", "--json"]))).unwrap();
    assert_eq!(json["backend"], "spark");
    assert_eq!(json["backend_config"]["master"], "local[2]");
    assert_eq!(json["spark"]["submit"][1]["step"], "credit_by_purpose");
    assert_eq!(json["max_parallel_steps"], 2);
}

/// Each step's merge counts (inserted, updated, deleted, rewritten, kept) in the newest run.
fn merge_counts(dir: &Path, bin: &Path) -> Vec<(String, serde_json::Value)> {
    let runs: serde_json::Value =
        serde_json::from_str(&ok(lake(dir, bin).args(["runs", "--json"]))).unwrap();
    let newest = runs.as_array().unwrap().last().unwrap();
    let id = newest["run_id"].as_str().unwrap().to_owned();
    let run: serde_json::Value =
        serde_json::from_str(&ok(lake(dir, bin).args(["runs", "show", &id, "--json"]))).unwrap();
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap().to_owned(), s["merged"].clone()))
        .collect()
}

/// `mode = "merge"` (partitioned, the key holding the partition column) and `mode = "history"`
/// over four daily batches with updates, deletes, in-batch duplicates, a late row and a
/// partition left empty: Spark's driver keeps the same rows as the embedded engine, and counts
/// the same changes and files.
#[test]
fn merge_and_history_on_spark_give_the_embedded_engines_rows() {
    let Some(bin) = spark_bin() else { return };
    let toml = r#"[lake]
name = "shop"
root = "lake"

[env.spark]
backend = "spark"

[spark]
master = "local[2]"
conf = { "spark.sql.shuffle.partitions" = "2", "spark.ui.enabled" = "false" }

[sources.customers]
kind = "file"
path = "data/customers.csv"

[steps.customers]
kind = "sql"
inputs = ["raw/customers@date"]
output = "trusted/customers"
sql = "SELECT region, CAST(id AS BIGINT) AS id, name, tier, CAST(updated_at AS TIMESTAMP) AS updated_at FROM customers"
partition_by = ["region"]
mode = "merge"
key = ["region", "id"]
order_by = "updated_at"
delete_when = "tier = 'deleted'"

[steps.customer_history]
kind = "sql"
inputs = ["raw/customers@date"]
output = "trusted/customer_history"
sql = "SELECT CAST(id AS BIGINT) AS id, name, tier, CAST(updated_at AS TIMESTAMP) AS updated_at FROM customers"
mode = "history"
key = ["id"]
order_by = "updated_at"
delete_when = "tier = 'deleted'"
"#;
    let days = [
        (
            "2024-05-01",
            "eu,1,Ana,silver,2024-05-01T08:00:00\neu,2,Bo,basic,2024-05-01T09:00:00\nus,3,Cy,basic,2024-05-01T09:30:00\neu,1,Ana,gold,2024-05-01T10:00:00\nus,5,Ed,basic,2024-05-01T11:00:00\n",
        ),
        (
            "2024-05-02",
            "eu,2,Bo,gold,2024-05-02T09:00:00\nus,3,Cy,deleted,2024-05-02T09:00:00\nap,4,Di,basic,2024-05-02T10:00:00\neu,1,Ana,bronze,2024-04-30T00:00:00\n",
        ),
        (
            "2024-05-03",
            "ap,4,Di,gold,2024-05-03T10:00:00\nap,4,Di,silver,2024-05-03T11:00:00\neu,2,Bo,gold,2024-05-03T09:00:00\nus,6,Fy,basic,2024-05-03T12:00:00\n",
        ),
        // The only key of its partition deleted: the merge leaves no rows in the file it
        // rewrites.
        ("2024-05-04", "ap,4,Di,deleted,2024-05-04T00:00:00\n"),
    ];
    let embedded = tempfile::tempdir().unwrap();
    let spark = tempfile::tempdir().unwrap();
    for d in [embedded.path(), spark.path()] {
        std::fs::write(d.join("lake.toml"), toml).unwrap();
        std::fs::create_dir_all(d.join("data")).unwrap();
    }
    let queries = [
        "SELECT region, id, name, tier, updated_at FROM trusted.customers ORDER BY id",
        "SELECT id, name, tier, valid_from, coalesce(CAST(valid_to AS VARCHAR), '-') AS valid_to, is_current FROM trusted.customer_history ORDER BY id, valid_from",
    ];
    for (date, rows) in days {
        let mut counts = Vec::new();
        for (d, env) in [(embedded.path(), None), (spark.path(), Some("spark"))] {
            std::fs::write(
                d.join("data/customers.csv"),
                format!("region,id,name,tier,updated_at\n{rows}"),
            )
            .unwrap();
            let mut c = lake(d, &bin);
            if let Some(env) = env {
                c.args(["--env", env]);
            }
            ok(c.args(["run", "--date", date]));
            let runs: serde_json::Value =
                serde_json::from_str(&ok(lake(d, &bin).args(["runs", "--json"]))).unwrap();
            assert_eq!(
                runs.as_array().unwrap().last().unwrap()["backend"],
                env.unwrap_or("local")
            );
            counts.push(merge_counts(d, &bin));
        }
        assert_eq!(counts[0], counts[1], "{date}: merge counts");
        assert!(counts[0].iter().all(|(_, m)| m.is_object()), "{counts:?}");
        for q in queries {
            let want = ok(lake(embedded.path(), &bin).args(["query", "--format", "csv", q]));
            let got = ok(lake(spark.path(), &bin).args(["query", "--format", "csv", q]));
            assert_eq!(got, want, "{date}: {q}");
        }
    }
    // After day 4: Cy and Di deleted, Ana's late row lost.
    let got = ok(lake(spark.path(), &bin).args(["query", "--format", "csv", queries[0]]));
    assert_eq!(
        got,
        "region,id,name,tier,updated_at\neu,1,Ana,gold,2024-05-01T10:00:00\neu,2,Bo,gold,2024-05-03T09:00:00\nus,5,Ed,basic,2024-05-01T11:00:00\nus,6,Fy,basic,2024-05-03T12:00:00\n"
    );
}
