//! Other engines read what lake writes, through `lake catalog ddl`: DuckDB runs the DuckDB DDL,
//! Spark the Spark DDL, pyarrow reads each dataset's folder; every table of both examples has
//! the rows `lake query` counts.
//!
//! Needs `LAKE_PYSPARK_PYTHON`, a Python with pyspark, duckdb and pyarrow (`.ci/run` installs
//! them); skips without it unless `LAKE_REQUIRE_PYSPARK` is set.

mod common;

use std::path::Path;

use assert_cmd::Command;

fn python() -> Option<String> {
    common::python("pyspark, duckdb and pyarrow", "LAKE_REQUIRE_PYSPARK")
}

fn lake(dir: &Path, args: &[&str]) -> String {
    let out = Command::cargo_bin("lake")
        .unwrap()
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lake {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const SCRIPT: &str = r#"
import sys, duckdb, pyarrow.dataset as ds
from pyspark.sql import SparkSession
duck_sql, spark_sql, root = sys.argv[1], sys.argv[2], sys.argv[3]
tables = sys.argv[4:]
con = duckdb.connect()
con.execute(open(duck_sql).read())
spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
spark.sparkContext.setLogLevel("ERROR")
text = "\n".join(l for l in open(spark_sql).read().splitlines() if not l.startswith("--"))
for stmt in text.split(";\n"):
    if stmt.strip():
        spark.sql(stmt.strip().rstrip(";"))
for t in tables:
    zone, name = t.split(".", 1)
    d = con.execute(f'SELECT count(*) FROM "{zone}"."{name}"').fetchone()[0]
    s = spark.sql(f"SELECT count(*) FROM `{zone}`.`{name}`").collect()[0][0]
    a = ds.dataset(f"{root}/{zone}/{name}", format="parquet", partitioning="hive").count_rows()
    print(t, d, s, a)
"#;

fn every_engine_counts_lakes_rows(example: &str) {
    let Some(python) = python() else { return };
    let dir = lake_testing::example(example);
    lake(dir.path(), &["run", "--date", "2024-05-01"]);
    let duck = lake(dir.path(), &["catalog", "ddl", "--dialect", "duckdb"]);
    let spark = lake(dir.path(), &["catalog", "ddl", "--dialect", "spark"]);
    std::fs::write(dir.path().join("duck.sql"), &duck).unwrap();
    std::fs::write(dir.path().join("spark.sql"), &spark).unwrap();
    let tables: Vec<String> = duck
        .lines()
        .filter_map(|l| l.strip_prefix("CREATE OR REPLACE VIEW "))
        .filter_map(|l| l.split(" AS ").next())
        .map(|t| t.replace('"', ""))
        .filter(|t| !t.contains("._rejected"))
        .collect();
    assert!(tables.len() >= 2, "{duck}");
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(dir.path().join("duck.sql"))
        .arg(dir.path().join("spark.sql"))
        .arg(dir.path().join("lake"))
        .args(&tables)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .env_remove("SPARK_HOME")
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for t in &tables {
        let ours = lake(
            dir.path(),
            &[
                "query",
                "--format",
                "csv",
                &format!("SELECT count(*) FROM {t}"),
            ],
        );
        let n = ours.lines().nth(1).unwrap().to_owned();
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{t} ")))
            .unwrap_or_else(|| panic!("no counts for {t}: {stdout}"));
        assert_eq!(
            line,
            format!("{t} {n} {n} {n}"),
            "{t}: DuckDB, Spark and pyarrow against lake's {n}"
        );
    }
}

#[test]
fn duckdb_spark_and_pyarrow_read_the_credit_example() {
    every_engine_counts_lakes_rows("credit");
}

#[test]
fn duckdb_spark_and_pyarrow_read_the_weather_example() {
    every_engine_counts_lakes_rows("weather");
}

const MERGED: &str = r#"
import sys, duckdb, pyarrow.dataset as ds
duck_sql, root = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute(open(duck_sql).read())
def show(v):
    return str(v).lower() if isinstance(v, bool) else str(v)
for t, cols in [("trusted.customers", ["id", "tier"]),
                ("trusted.customer_versions", ["id", "tier", "is_current", "valid_to_null"])]:
    zone, name = t.split(".", 1)
    sel = ", ".join(c if c != "valid_to_null" else "valid_to IS NULL" for c in cols)
    for row in sorted(tuple(show(v) for v in r) for r in con.execute(f'SELECT {sel} FROM "{zone}"."{name}"').fetchall()):
        print("duckdb", t, ",".join(row))
    table = ds.dataset(f"{root}/{zone}/{name}", format="parquet", partitioning="hive").to_table()
    rows = []
    for r in table.to_pylist():
        r["valid_to_null"] = r.get("valid_to") is None
        rows.append(tuple(show(r[c]) for c in cols))
    for row in sorted(rows):
        print("pyarrow", t, ",".join(row))
"#;

/// A merged dataset and a history dataset after two days of updates and a delete: DuckDB (over
/// `lake catalog ddl`) and pyarrow (over the folders) read the rows lake's own engine reads.
#[test]
fn duckdb_and_pyarrow_read_merged_and_history_datasets_as_lake_does() {
    let Some(python) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let sql = "SELECT CAST(id AS BIGINT) AS id, tier, CAST(updated_at AS TIMESTAMP) AS updated_at FROM customers";
    std::fs::write(
        dir.join("lake.toml"),
        format!(
            r#"[lake]
name = "shop"

[sources.customers]
kind = "file"
path = "data/customers.csv"

[steps.latest]
kind = "sql"
inputs = ["raw/customers@date"]
output = "trusted/customers"
sql = "{sql}"
mode = "merge"
key = ["id"]
order_by = "updated_at"
delete_when = "tier = 'deleted'"

[steps.versions]
kind = "sql"
inputs = ["raw/customers@date"]
output = "trusted/customer_versions"
sql = "{sql}"
mode = "history"
key = ["id"]
order_by = "updated_at"
delete_when = "tier = 'deleted'"
"#
        ),
    )
    .unwrap();
    for (date, rows) in [
        (
            "2024-05-01",
            "1,gold,2024-05-01 08:00:00\n2,basic,2024-05-01 08:00:00\n3,basic,2024-05-01 08:00:00\n",
        ),
        (
            "2024-05-02",
            "2,gold,2024-05-02 08:00:00\n3,deleted,2024-05-02 08:00:00\n4,basic,2024-05-02 08:00:00\n",
        ),
    ] {
        std::fs::write(
            dir.join("data/customers.csv"),
            format!("id,tier,updated_at\n{rows}"),
        )
        .unwrap();
        lake(dir, &["-q", "run", "--date", date]);
    }
    let ours = |sql: &str| -> Vec<String> {
        let mut rows: Vec<String> = lake(dir, &["query", "--format", "csv", sql])
            .lines()
            .skip(1)
            .map(str::to_owned)
            .collect();
        rows.sort();
        rows
    };
    let merged = ours("SELECT id, tier FROM trusted.customers");
    assert_eq!(merged, ["1,gold", "2,gold", "4,basic"], "lake's own rows");
    let history =
        ours("SELECT id, tier, is_current, valid_to IS NULL FROM trusted.customer_versions");
    assert_eq!(
        history,
        [
            "1,gold,true,true",
            "2,basic,false,false",
            "2,gold,true,true",
            "3,basic,false,false",
            "4,basic,true,true"
        ],
        "lake's own rows"
    );
    let duck = lake(dir, &["catalog", "ddl", "--dialect", "duckdb"]);
    std::fs::write(dir.join("duck.sql"), &duck).unwrap();
    let out = std::process::Command::new(&python)
        .arg("-c")
        .arg(MERGED)
        .arg(dir.join("duck.sql"))
        .arg(dir.join("lake"))
        .current_dir(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for tool in ["duckdb", "pyarrow"] {
        for (table, want) in [
            ("trusted.customers", &merged),
            ("trusted.customer_versions", &history),
        ] {
            let got: Vec<&str> = stdout
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{tool} {table} ")))
                .collect();
            assert_eq!(&got, want, "{tool} reading {table}");
        }
    }
}
