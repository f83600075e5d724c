//! Other engines read what lake writes, through `lake catalog ddl`: DuckDB runs the DuckDB DDL,
//! Spark the Spark DDL, pyarrow reads each dataset's folder; every table of both examples has
//! the rows `lake query` counts.
//!
//! Needs `LAKE_PYSPARK_PYTHON`, a Python with pyspark, duckdb and pyarrow (`.ci/run` installs
//! them); skips without it unless `LAKE_REQUIRE_PYSPARK` is set.

use std::path::Path;

use assert_cmd::Command;

fn python() -> Option<String> {
    match std::env::var("LAKE_PYSPARK_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("LAKE_REQUIRE_PYSPARK").is_some() => {
            panic!("LAKE_REQUIRE_PYSPARK is set but LAKE_PYSPARK_PYTHON is not")
        }
        Err(_) => {
            eprintln!(
                "skipped: set LAKE_PYSPARK_PYTHON to a Python with pyspark, duckdb and pyarrow"
            );
            None
        }
    }
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
