//! `table_format = "iceberg"`: both examples' datasets are Iceberg tables that pyiceberg reads
//! from their file catalog (`metadata/version-hint.text`), and DuckDB through pyiceberg's Arrow
//! scan, with the rows `lake query` counts; a republish is a new snapshot and the old one
//! still reads as it was; a changed column type fails the step before anything is published.
//!
//! Needs `LAKE_PYSPARK_PYTHON`, a Python with pyiceberg, duckdb, pyarrow and pyspark (`.ci/run`
//! installs them); skips without it unless `LAKE_REQUIRE_PYSPARK` is set. The S3 and Glue tests
//! need the AWS emulator too.

mod common;

use std::path::Path;

use common::{lake, stderr, stdout};

fn python() -> Option<String> {
    common::python("pyiceberg, duckdb and pyarrow", "LAKE_REQUIRE_PYSPARK")
}

/// Prints, per table folder given: its name, the rows pyiceberg scans, the rows DuckDB counts
/// over that scan, the distinct values of an optional column, the snapshot count, and each
/// snapshot's operation, lake run id and rows (oldest first).
const READ: &str = r##"
import os, sys, json, duckdb
from pyiceberg.io import load_file_io
from pyiceberg.table import StaticTable
props = {}
if os.environ.get("AWS_ENDPOINT_URL"):
    props = {"s3.endpoint": os.environ["AWS_ENDPOINT_URL"], "s3.region": "us-east-1",
             "s3.access-key-id": os.environ.get("AWS_ACCESS_KEY_ID", "lake-ci"),
             "s3.secret-access-key": os.environ.get("AWS_SECRET_ACCESS_KEY", "lake-ci")}
for arg in sys.argv[1:]:
    folder, _, column = arg.partition("#")
    if "://" not in folder:
        folder = f"file://{folder}"
    io = load_file_io(props, folder)
    with io.new_input(f"{folder}/metadata/version-hint.text").open() as f:
        hint = f.read().decode().strip()
    t = StaticTable.from_metadata(f"{folder}/metadata/v{hint}.metadata.json", properties=props)
    scan = t.scan().to_arrow()
    duck = duckdb.connect()
    duck.register("scan", scan)
    rows = duck.execute("SELECT count(*) FROM scan").fetchone()[0]
    distinct = duck.execute(f'SELECT count(DISTINCT "{column}") FROM scan').fetchone()[0] if column else None
    snaps = sorted(t.snapshots(), key=lambda s: s.timestamp_ms)
    history = [
        {"op": s.summary.operation.value, "run": s.summary.additional_properties.get("lake.run-id"),
         "rows": t.scan(snapshot_id=s.snapshot_id).to_arrow().num_rows}
        for s in snaps
    ]
    print(json.dumps({"table": folder, "rows": scan.num_rows, "duckdb": rows, "distinct": distinct,
                      "history": history}))
"##;

fn read(python: &str, tables: &[String]) -> Vec<serde_json::Value> {
    let args: Vec<&str> = tables.iter().map(String::as_str).collect();
    python_out(python, READ, &args)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The credit example with `table_format = "iceberg"` on a new bucket of the emulator at
/// `endpoint`, `edit` applied to its lake.toml; the folder and the bucket.
fn credit_on_s3(
    endpoint: &str,
    what: &str,
    edit: impl FnOnce(String) -> String,
) -> (tempfile::TempDir, String) {
    let bucket = format!("lake-iceberg-{what}-{}", std::process::id());
    assert_eq!(
        lake_testing::emulator::request(endpoint, "PUT", &format!("/{bucket}")).0,
        200
    );
    let dir = iceberg_example("credit");
    let toml = dir.path().join("lake.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replacen(
        "root = \"lake\"",
        &format!("root = \"s3://{bucket}/lake\""),
        1,
    );
    std::fs::write(&toml, edit(text)).unwrap();
    (dir, bucket)
}

/// `script` run by `python` with `args`: its stdout (it must succeed).
fn python_out(python: &str, script: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The example `name` in a new folder with `table_format = "iceberg"`.
fn iceberg_example(name: &str) -> tempfile::TempDir {
    let dir = lake_testing::example(name);
    let toml = dir.path().join("lake.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen("[lake]\n", "[lake]\ntable_format = \"iceberg\"\n", 1),
    )
    .unwrap();
    dir
}

fn run(dir: &Path, args: &[&str]) -> String {
    let out = lake(dir).args(args).output().unwrap();
    assert!(out.status.success(), "lake {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn count(dir: &Path, sql: &str) -> u64 {
    let out = run(dir, &["query", "--format", "csv", sql]);
    out.lines().nth(1).unwrap().parse().unwrap()
}

fn run_id(out: &str) -> String {
    out.split_whitespace()
        .skip_while(|w| *w != "run")
        .nth(1)
        .unwrap_or_else(|| panic!("no run id in {out}"))
        .to_owned()
}

#[test]
fn pyiceberg_and_duckdb_read_both_examples_tables() {
    let Some(python) = python() else { return };
    // Weather: partitioned by date, overwrite_partitions over two days of the same response
    // (the same hours), so its second snapshot replaces the date partitions' files.
    for (example, dates, tables) in [
        (
            "credit",
            &["2024-05-01"][..],
            &[
                ("trusted.credit", "trusted/credit", "purpose"),
                ("refined.credit_by_purpose", "refined/credit_by_purpose", ""),
            ][..],
        ),
        (
            "weather",
            &["2024-05-01", "2024-05-02"][..],
            &[
                ("trusted.weather_hourly", "trusted/weather_hourly", "date"),
                ("refined.weather_daily", "refined/weather_daily", ""),
            ][..],
        ),
    ] {
        let dir = iceberg_example(example);
        for date in dates {
            run(dir.path(), &["run", "--date", date]);
        }
        let root = dir.path().join("lake");
        let args: Vec<String> = tables
            .iter()
            .map(|(_, folder, col)| format!("{}#{col}", root.join(folder).display()))
            .collect();
        let read = read(&python, &args);
        for ((table, _, col), got) in tables.iter().zip(&read) {
            let n = count(dir.path(), &format!("SELECT count(*) FROM {table}"));
            assert!(n > 0, "{table}");
            assert_eq!(
                got["rows"], n,
                "{table}: pyiceberg's rows against lake's: {got}"
            );
            assert_eq!(
                got["duckdb"], n,
                "{table}: DuckDB's rows against lake's: {got}"
            );
            if !col.is_empty() {
                let d = count(
                    dir.path(),
                    &format!("SELECT count(DISTINCT {col}) FROM {table}"),
                );
                assert_eq!(got["distinct"], d, "{table}.{col}: {got}");
            }
        }
        if example == "weather" {
            let hourly = &read[0]["history"];
            assert_eq!(hourly.as_array().unwrap().len(), 2, "{hourly}");
            assert_eq!(hourly[0]["op"], "append", "{hourly}");
            assert_eq!(hourly[1]["op"], "overwrite", "{hourly}");
            assert_eq!(hourly[0]["rows"], hourly[1]["rows"], "{hourly}");
            assert_eq!(hourly[1]["rows"], read[0]["rows"], "{hourly}");
        }
        let fsck = run(dir.path(), &["fsck"]);
        assert!(fsck.contains("consistent"), "{fsck}");
    }
}

#[test]
fn a_republish_is_a_new_snapshot_and_the_old_one_reads_as_it_was() {
    let Some(python) = python() else { return };
    let dir = iceberg_example("credit");
    let first = run_id(&run(dir.path(), &["run", "--date", "2024-05-01"]));
    // The same inputs: up to date, no new snapshot.
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    // Fewer rows in the republish: the current snapshot has them, the first has all.
    let toml = dir.path().join("lake.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen(
            "FROM credit\n",
            "FROM credit WHERE CAST(age AS INT) >= 30\n",
            1,
        ),
    )
    .unwrap();
    let second = run_id(&run(dir.path(), &["run", "--date", "2024-05-01"]));
    let adults = count(dir.path(), "SELECT count(*) FROM trusted.credit");
    assert!(adults < 1000, "{adults}");
    let folder = dir.path().join("lake/trusted/credit");
    let got = &read(&python, &[format!("{}#", folder.display())])[0];
    assert_eq!(got["rows"], adults, "{got}");
    let history = got["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{got}");
    assert_eq!(history[0]["run"], first.as_str(), "{got}");
    assert_eq!(history[0]["rows"], 1000, "{got}");
    assert_eq!(history[1]["run"], second.as_str(), "{got}");
    assert_eq!(history[1]["op"], "overwrite", "{got}");
    assert_eq!(history[1]["rows"], adults, "{got}");
    // `lake query --as-of` reads the table as each run left it, and as of a time before
    // either, leaves it out, saying so.
    let as_of = |at: &str| {
        let out = lake(dir.path())
            .args([
                "query",
                "--format",
                "csv",
                "--as-of",
                at,
                "SELECT count(*) FROM trusted.credit",
            ])
            .output()
            .unwrap();
        (out.status.success(), stdout(&out), stderr(&out))
    };
    let (ok, out, _) = as_of(&first);
    assert!(ok && out.lines().nth(1) == Some("1000"), "{out}");
    let (ok, out, _) = as_of(&second);
    assert!(
        ok && out.lines().nth(1) == Some(adults.to_string().as_str()),
        "{out}"
    );
    let (ok, _, err) = as_of("2000-01-01T00:00:00Z");
    assert!(!ok);
    assert!(
        err.contains("trusted.credit has no snapshot at or before 2000-01-01"),
        "{err}"
    );
    let (ok, _, err) = as_of("yesterday");
    assert!(!ok);
    assert!(
        err.contains("--as-of \"yesterday\": neither a run in the ledger"),
        "{err}"
    );

    // `lake catalog ddl` reads the table by its current metadata file, not its folder (which
    // still holds the first snapshot's file).
    let duck = run(dir.path(), &["catalog", "ddl", "--dialect", "duckdb"]);
    assert!(
        duck.contains("iceberg_scan(") && duck.contains("trusted/credit/metadata/v2.metadata.json"),
        "{duck}"
    );
    assert!(!duck.contains("trusted/credit/*.parquet"), "{duck}");

    // `lake ls` shows both snapshots with their runs, the current one marked.
    let ls: serde_json::Value =
        serde_json::from_str(&run(dir.path(), &["ls", "trusted/credit", "--json"])).unwrap();
    assert_eq!(ls["table_format"], "iceberg", "{ls}");
    let snaps = ls["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{ls}");
    assert_eq!(snaps[0]["run_id"], second.as_str(), "{ls}");
    assert_eq!(snaps[0]["current"], true, "{ls}");
    assert_eq!(snaps[0]["rows"], adults, "{ls}");
    assert_eq!(snaps[1]["run_id"], first.as_str(), "{ls}");
    assert_eq!(snaps[1]["current"], false, "{ls}");
    // The first snapshot's file stays for its readers (retain_snapshots, 7 days).
    let fsck = run(dir.path(), &["fsck"]);
    assert!(fsck.contains("consistent"), "{fsck}");
}

#[test]
fn a_changed_column_type_fails_the_step_and_leaves_the_table() {
    let dir = iceberg_example("credit");
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    let hint = dir
        .path()
        .join("lake/trusted/credit/metadata/version-hint.text");
    assert_eq!(std::fs::read_to_string(&hint).unwrap().trim(), "1");
    let toml = dir.path().join("lake.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen(
            "CAST(age AS INT)              AS age",
            "CAST(age AS VARCHAR)          AS age",
            1,
        ),
    )
    .unwrap();
    let out = lake(dir.path())
        .args(["run", "--date", "2024-05-01"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        err.contains("column age is int in the table and string in this output"),
        "{err}"
    );
    assert!(err.contains("trusted/credit was left as it was"), "{err}");
    assert_eq!(std::fs::read_to_string(&hint).unwrap().trim(), "1");
    assert_eq!(
        count(
            dir.path(),
            "SELECT count(*) FROM trusted.credit WHERE age IS NOT NULL"
        ),
        1000
    );
}

/// Through Glue (on the emulator): the table's parameters, and the rows pyiceberg's Glue
/// catalog scans.
const GLUE: &str = r##"
import os, sys, json, boto3
from pyiceberg.catalog import load_catalog
ep = os.environ["AWS_ENDPOINT_URL"]
db, table = sys.argv[1], sys.argv[2]
glue = boto3.client("glue", endpoint_url=ep, region_name="us-east-1")
t = glue.get_table(DatabaseName=db, Name=table)["Table"]
cat = load_catalog("glue", **{"type": "glue", "glue.endpoint": ep, "glue.region": "us-east-1",
    "glue.access-key-id": "lake-ci", "glue.secret-access-key": "lake-ci",
    "s3.endpoint": ep, "s3.region": "us-east-1", "s3.access-key-id": "lake-ci",
    "s3.secret-access-key": "lake-ci"})
tab = cat.load_table(f"{db}.{table}")
if sys.argv[3:] == ["append"]:
    tab.append(tab.scan(limit=1).to_arrow())
    tab = cat.load_table(f"{db}.{table}")
    t = glue.get_table(DatabaseName=db, Name=table)["Table"]
rows = tab.scan().to_arrow().num_rows
print(json.dumps({"parameters": t.get("Parameters", {}), "rows": rows}))
"##;

#[test]
fn a_glue_catalog_registers_iceberg_tables_that_pyiceberg_reads_through_glue() {
    let (Some(endpoint), Some(python)) = (lake_testing::emulator::endpoint(), python()) else {
        return;
    };
    let db = format!("credit_iceberg_{}", std::process::id());
    let (dir, bucket) = credit_on_s3(&endpoint, "glue", |t| {
        t.replacen("database = \"credit\"", &format!("database = \"{db}\""), 1)
    });
    let toml = dir.path().join("lake.toml");
    let glue = |table: &str| -> serde_json::Value {
        serde_json::from_str(&python_out(&python, GLUE, &[&db, table])).unwrap()
    };
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    let v1 = format!("s3://{bucket}/lake/trusted/credit/metadata/v1.metadata.json");
    let got = glue("trusted_credit");
    assert_eq!(got["parameters"]["table_type"], "ICEBERG", "{got}");
    assert_eq!(got["parameters"]["metadata_location"], v1.as_str(), "{got}");
    assert_eq!(got["rows"], 1000, "{got}");
    assert_eq!(glue("refined_credit_by_purpose")["rows"], 8);

    // A republish: the table moves to the new metadata, the old one named as previous.
    std::fs::write(
        &toml,
        std::fs::read_to_string(&toml).unwrap().replacen(
            "FROM credit\n",
            "FROM credit WHERE CAST(age AS INT) >= 30\n",
            1,
        ),
    )
    .unwrap();
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    let adults = count(dir.path(), "SELECT count(*) FROM trusted.credit");
    let got = glue("trusted_credit");
    assert_eq!(
        got["parameters"]["metadata_location"],
        format!("s3://{bucket}/lake/trusted/credit/metadata/v2.metadata.json").as_str(),
        "{got}"
    );
    assert_eq!(
        got["parameters"]["previous_metadata_location"],
        v1.as_str(),
        "{got}"
    );
    assert_eq!(got["rows"], adults, "{got}");

    // Another writer appends through Glue: lake's next publish is refused before anything
    // is published, and Glue keeps that writer's snapshot.
    let theirs: serde_json::Value = serde_json::from_str(&python_out(
        &python,
        GLUE,
        &[&db, "trusted_credit", "append"],
    ))
    .unwrap();
    assert_eq!(theirs["rows"], adults + 1, "{theirs}");
    set_adults(dir.path(), false);
    let out = lake(dir.path())
        .args(["run", "--date", "2024-05-01"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("committed by another writer"),
        "{}",
        stderr(&out)
    );
    let got = glue("trusted_credit");
    assert_eq!(
        got["parameters"]["metadata_location"], theirs["parameters"]["metadata_location"],
        "{got}"
    );
    assert_eq!(got["rows"], adults + 1, "{got}");
    assert_eq!(
        count(dir.path(), "SELECT count(*) FROM trusted.credit"),
        adults
    );
}

#[test]
fn an_s3_root_holds_tables_pyiceberg_reads_from_s3() {
    let (Some(endpoint), Some(python)) = (lake_testing::emulator::endpoint(), python()) else {
        return;
    };
    let (dir, bucket) = credit_on_s3(&endpoint, "s3", |t| t);
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    let tables = [
        ("trusted.credit", "trusted/credit"),
        ("refined.credit_by_purpose", "refined/credit_by_purpose"),
    ];
    let args: Vec<String> = tables
        .iter()
        .map(|(_, f)| format!("s3://{bucket}/lake/{f}#"))
        .collect();
    let got = read(&python, &args);
    for ((table, _), got) in tables.iter().zip(&got) {
        let n = count(dir.path(), &format!("SELECT count(*) FROM {table}"));
        assert_eq!(got["rows"], n, "{table}: {got}");
        assert_eq!(got["duckdb"], n, "{table}: {got}");
    }
    let fsck = run(dir.path(), &["fsck"]);
    assert!(fsck.contains("consistent"), "{fsck}");
}

fn snapshots(dir: &Path, dataset: &str) -> Vec<serde_json::Value> {
    let ls: serde_json::Value =
        serde_json::from_str(&run(dir, &["ls", dataset, "--json"])).unwrap();
    ls["snapshots"].as_array().unwrap().clone()
}

fn metadata_files(dir: &Path, suffix: &str) -> usize {
    std::fs::read_dir(dir.join("lake/trusted/credit/metadata"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(suffix)
        })
        .count()
}

#[test]
fn expired_snapshots_go_with_their_manifests_and_a_lost_commit_is_caught_up() {
    let dir = iceberg_example("credit");
    let toml = dir.path().join("lake.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen("[lake]\n", "[lake]\nretain_snapshots = \"1s\"\n", 1),
    )
    .unwrap();
    let first = run_id(&run(dir.path(), &["run", "--date", "2024-05-01"]));
    assert_eq!(snapshots(dir.path(), "trusted/credit").len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let second = run_id(&run(
        dir.path(),
        &["run", "--date", "2024-05-01", "--force"],
    ));
    assert_ne!(first, second);
    // The first snapshot was older than retain_snapshots: it and its Avro files are gone.
    let snaps = snapshots(dir.path(), "trusted/credit");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["run_id"], second.as_str());
    assert_eq!(metadata_files(dir.path(), "-m0.avro"), 1);
    assert_eq!(
        std::fs::read_dir(dir.path().join("lake/trusted/credit/metadata"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("snap-"))
            .count(),
        1
    );
    assert_eq!(metadata_files(dir.path(), ".metadata.json"), 2);

    // A run killed between lake's manifest and the table's commit: the table is missing
    // (here, all of it). The next run finds the step up to date and commits it then.
    std::fs::remove_dir_all(dir.path().join("lake/trusted/credit/metadata")).unwrap();
    let out = run(dir.path(), &["run", "--date", "2024-05-01"]);
    assert!(out.contains("0 failed"), "{out}");
    let snaps = snapshots(dir.path(), "trusted/credit");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["run_id"], second.as_str(), "the publishing run");
    assert_eq!(snaps[0]["rows"], 1000);
    // And a run after that changes nothing.
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    assert_eq!(metadata_files(dir.path(), ".metadata.json"), 1);
}

/// Per table folder: `day,station,value` rows pyiceberg scans, sorted, as CSV lines.
const ROWS: &str = r##"
import sys
from pyiceberg.table import StaticTable
folder = sys.argv[1]
hint = open(f"{folder}/metadata/version-hint.text").read().strip()
t = StaticTable.from_metadata(f"file://{folder}/metadata/v{hint}.metadata.json")
rows = t.scan().to_arrow().to_pylist()
for r in sorted(rows, key=lambda r: (str(r["day"]), r["station"])):
    print(f"{r['day']},{r['station']},{r['value']}")
"##;

#[test]
fn a_merged_dataset_reads_the_same_through_iceberg() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("lake.toml"),
        r#"[lake]
name = "readings"
table_format = "iceberg"

[sources.readings]
kind = "file"
path = "data/readings.csv"

[steps.readings]
kind = "sql"
inputs = ["raw/readings@date"]
output = "trusted/readings"
sql = "SELECT day, CAST(station AS BIGINT) AS station, CAST(value AS DOUBLE) AS value FROM readings"
partition_by = ["day"]
mode = "merge"
key = ["day", "station"]
delete_when = "value < 0"
"#,
    )
    .unwrap();
    let csv = |rows: &[(&str, u32, f64)]| {
        let mut s = String::from("day,station,value\n");
        for (d, st, v) in rows {
            s.push_str(&format!("{d},{st},{v}\n"));
        }
        std::fs::write(dir.path().join("data/readings.csv"), s).unwrap();
    };
    csv(&[
        ("2024-05-01", 1, 1.5),
        ("2024-05-01", 2, 2.5),
        ("2024-05-02", 1, 3.5),
        ("2024-05-03", 7, 4.5),
    ]);
    run(dir.path(), &["run", "--date", "2024-06-01"]);
    // An update, a delete, an insert; 2024-05-03 untouched.
    csv(&[
        ("2024-05-01", 2, 20.0),
        ("2024-05-02", 1, -1.0),
        ("2024-05-02", 9, 9.0),
    ]);
    run(dir.path(), &["run", "--date", "2024-06-02"]);
    let ours = run(
        dir.path(),
        &[
            "query",
            "--format",
            "csv",
            "SELECT day, station, value FROM trusted.readings ORDER BY day, station",
        ],
    );
    let ours: Vec<String> = ours
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            format!("{},{},{:?}", f[0], f[1], f[2].parse::<f64>().unwrap())
        })
        .collect();
    assert_eq!(
        ours,
        [
            "2024-05-01,1,1.5",
            "2024-05-01,2,20.0",
            "2024-05-02,9,9.0",
            "2024-05-03,7,4.5"
        ]
    );
    let folder = dir.path().join("lake/trusted/readings");
    let theirs: Vec<String> = python_out(&python, ROWS, &[&folder.display().to_string()])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(theirs, ours, "pyiceberg against lake");
    let snaps = snapshots(dir.path(), "trusted/readings");
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert_eq!(snaps[0]["operation"], "overwrite", "{snaps:?}");
    assert_eq!(snaps[0]["rows"], 4, "{snaps:?}");
}

#[test]
fn on_spark_the_same_tables_are_committed_by_lake() {
    // Spark writes the Parquet files into staging as for any step, and lake commits the
    // snapshot: no Iceberg runtime in Spark.
    let Some(python) = python() else { return };
    let bin = Path::new(&python).parent().unwrap().to_owned();
    let dir = iceberg_example("weather");
    let path = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .unwrap();
    let out = lake(dir.path())
        .args(["--env", "spark", "run", "--date", "2024-05-01"])
        .env_remove("SPARK_HOME")
        .env("PATH", path)
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let root = dir.path().join("lake");
    let tables = [
        ("trusted.weather_hourly", "trusted/weather_hourly", "date"),
        ("refined.weather_daily", "refined/weather_daily", ""),
    ];
    let args: Vec<String> = tables
        .iter()
        .map(|(_, f, c)| format!("{}#{c}", root.join(f).display()))
        .collect();
    for ((table, _, col), got) in tables.iter().zip(read(&python, &args)) {
        let n = count(dir.path(), &format!("SELECT count(*) FROM {table}"));
        assert!(n > 0);
        assert_eq!(got["rows"], n, "{table}: {got}");
        if !col.is_empty() {
            let d = count(
                dir.path(),
                &format!("SELECT count(DISTINCT {col}) FROM {table}"),
            );
            assert_eq!(got["distinct"], d, "{table}: {got}");
        }
    }
}

#[test]
fn vacuum_expires_old_snapshots_and_deletes_the_files_only_they_listed() {
    let dir = iceberg_example("credit");
    let toml = dir.path().join("lake.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen("[lake]\n", "[lake]\nretain_snapshots = \"1s\"\n", 1),
    )
    .unwrap();
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    run(dir.path(), &["run", "--date", "2024-05-01", "--force"]);
    let parquet = || {
        std::fs::read_dir(dir.path().join("lake/trusted/credit"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".parquet")
            })
            .count()
    };
    // The replaced file stays for retain_snapshots after the republish.
    assert_eq!(parquet(), 2);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let out: serde_json::Value =
        serde_json::from_str(&run(dir.path(), &["vacuum", "--json"])).unwrap();
    let credit = out["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["dataset"] == "trusted/credit")
        .unwrap_or_else(|| panic!("{out}"))
        .clone();
    assert_eq!(credit["files"], 1, "{out}");
    assert_eq!(credit["snapshots"], 1, "{out}");
    assert_eq!(parquet(), 1);
    assert_eq!(snapshots(dir.path(), "trusted/credit").len(), 1);
    assert_eq!(
        count(dir.path(), "SELECT count(*) FROM trusted.credit"),
        1000
    );
    let fsck = run(dir.path(), &["fsck"]);
    assert!(fsck.contains("consistent"), "{fsck}");
    // Nothing left to do.
    let again = run(dir.path(), &["vacuum"]);
    assert!(
        again.contains("trusted/credit: 0 snapshots expired, 0 files deleted"),
        "{again}"
    );
}

/// The table's current schema (name:type, in order) and the rows of each snapshot.
const SCHEMA: &str = r##"
import sys, json
from pyiceberg.table import StaticTable
folder = sys.argv[1]
hint = open(f"{folder}/metadata/version-hint.text").read().strip()
t = StaticTable.from_metadata(f"file://{folder}/metadata/v{hint}.metadata.json")
rows = t.scan().to_arrow()
print(json.dumps({
    "schema": [f"{f.field_id}:{f.name}:{f.field_type}" for f in t.schema().fields],
    "rows": rows.num_rows,
    "nulls": {c: rows.column(c).null_count for c in rows.column_names},
}))
"##;

#[test]
fn added_and_widened_columns_evolve_the_table_by_field_id() {
    let Some(python) = python() else { return };
    let dir = iceberg_example("credit");
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    let folder = dir.path().join("lake/refined/credit_by_purpose");
    let before: serde_json::Value = serde_json::from_str(&python_out(
        &python,
        SCHEMA,
        &[&folder.display().to_string()],
    ))
    .unwrap();
    // A new column, and `n` (a count: long already) kept; `avg_duration` narrowed would fail,
    // so widen what can be widened: the rounded averages stay doubles, a new int column comes.
    let toml = dir.path().join("lake.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen(
            "  ROUND(AVG(duration), 2)         AS avg_duration\n",
            "  ROUND(AVG(duration), 2)         AS avg_duration,\n  CAST(MAX(duration) AS INT)      AS max_duration\n",
            1,
        ),
    )
    .unwrap();
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    let after: serde_json::Value = serde_json::from_str(&python_out(
        &python,
        SCHEMA,
        &[&folder.display().to_string()],
    ))
    .unwrap();
    let was: Vec<&str> = before["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let now: Vec<&str> = after["schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    // The old columns keep their ids; the new one gets the next.
    assert_eq!(&now[..was.len()], &was[..], "{after}");
    assert_eq!(now.len(), was.len() + 1, "{after}");
    assert_eq!(
        now[was.len()],
        format!("{}:max_duration:int", was.len() + 1)
    );
    assert_eq!(after["rows"], 8, "{after}");
    assert_eq!(after["nulls"]["max_duration"], 0, "{after}");
}

/// Reads the table at argv[1] argv[2] times through its version hint, printing each scan's
/// row count (a republish may commit between any two reads).
const READ_LOOP: &str = r##"
import sys
from pyiceberg.table import StaticTable
folder, times = sys.argv[1], int(sys.argv[2])
for _ in range(times):
    hint = open(f"{folder}/metadata/version-hint.text").read().strip()
    t = StaticTable.from_metadata(f"file://{folder}/metadata/v{hint}.metadata.json")
    print(t.scan().to_arrow().num_rows, flush=True)
"##;

/// The credit example's `credit` step keeping only borrowers of 30 and over (`adults`), or
/// everyone.
fn set_adults(dir: &Path, adults: bool) {
    let toml = dir.join("lake.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    let (all, some) = (
        "FROM credit\n",
        "FROM credit WHERE CAST(age AS INT) >= 30\n",
    );
    let text = if adults {
        text.replacen(all, some, 1)
    } else {
        text.replacen(some, all, 1)
    };
    std::fs::write(&toml, text).unwrap();
}

#[test]
fn readers_during_republishes_see_one_whole_snapshot_each_time() {
    let Some(python) = python() else { return };
    let dir = iceberg_example("credit");
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    set_adults(dir.path(), true);
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    let adults = count(dir.path(), "SELECT count(*) FROM trusted.credit");
    let folder = dir.path().join("lake/trusted/credit");
    let mut reader = std::process::Command::new(&python)
        .arg("-c")
        .arg(READ_LOOP)
        .arg(&folder)
        .arg("200")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Republish, alternating the two versions, while the reader reads.
    let mut republished = 0;
    while reader.try_wait().unwrap().is_none() && republished < 60 {
        set_adults(dir.path(), republished % 2 == 1);
        run(dir.path(), &["run", "--date", "2024-05-01"]);
        republished += 1;
    }
    let out = reader.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(seen.len(), 200);
    assert!(
        republished >= 2,
        "the reader finished before two republishes"
    );
    assert!(
        seen.iter().all(|n| *n == 1000 || *n == adults),
        "a read showed neither version (1000 or {adults} rows): {seen:?}"
    );
}

#[test]
fn a_publish_killed_at_any_point_leaves_a_whole_snapshot_and_the_rerun_completes_it() {
    let Some(python) = python() else { return };
    let base = iceberg_example("credit");
    run(base.path(), &["run", "--date", "2024-05-01"]);
    set_adults(base.path(), true);
    // How long an unkilled republish takes.
    let unkilled = tempfile::tempdir().unwrap();
    let copy = |to: &Path| {
        let s = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", base.path().display()))
            .arg(to)
            .status()
            .unwrap();
        assert!(s.success());
    };
    copy(unkilled.path());
    let t = std::time::Instant::now();
    run(unkilled.path(), &["run", "--date", "2024-05-01"]);
    let took = t.elapsed();
    let adults = count(unkilled.path(), "SELECT count(*) FROM trusted.credit");
    let folder = |d: &Path| d.join("lake/trusted/credit").display().to_string();
    let mut killed = 0;
    for (i, at) in [0.2, 0.4, 0.6, 0.8, 0.95].into_iter().enumerate() {
        let trial = tempfile::tempdir().unwrap();
        copy(trial.path());
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("lake"));
        c.current_dir(trial.path())
            .env_remove("RUST_LOG")
            .args(["run", "--date", "2024-05-01"]);
        if lake_testing::faults::kill_after(c, took.mul_f64(at)) {
            killed += 1;
        }
        // Whatever was killed, the table is one whole snapshot: the old or the new.
        let got = &read(&python, &[format!("{}#", folder(trial.path()))])[0];
        assert!(
            got["rows"] == 1000 || got["rows"] == adults,
            "trial {i} (killed at {at} of {took:?}): {got}"
        );
        // The rerun (after fsck --repair removes what the killed run left) completes it.
        lake(trial.path())
            .args(["fsck", "--repair"])
            .output()
            .unwrap();
        run(trial.path(), &["run", "--date", "2024-05-01"]);
        let got = &read(&python, &[format!("{}#", folder(trial.path()))])[0];
        assert_eq!(got["rows"], adults, "trial {i}: {got}");
        let fsck = run(trial.path(), &["fsck"]);
        assert!(fsck.contains("consistent"), "trial {i}: {fsck}");
    }
    // The trials killed runs (an unkilled run every time would test nothing).
    assert!(killed >= 3, "only {killed} of 5 trials were killed");
}

#[test]
fn with_retain_snapshots_0s_ten_runs_keep_only_the_current_snapshots_files() {
    let dir = iceberg_example("credit");
    let toml = dir.path().join("lake.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen("[lake]\n", "[lake]\nretain_snapshots = \"0s\"\n", 1),
    )
    .unwrap();
    for _ in 0..10 {
        run(dir.path(), &["run", "--date", "2024-05-01", "--force"]);
    }
    run(dir.path(), &["vacuum"]);
    let snaps = snapshots(dir.path(), "trusted/credit");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    let files: Vec<String> = std::fs::read_dir(dir.path().join("lake/trusted/credit"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".parquet"))
        .collect();
    assert_eq!(
        files.len(),
        snaps[0]["files"].as_u64().unwrap() as usize,
        "{files:?}"
    );
    assert_eq!(metadata_files(dir.path(), "-m0.avro"), 1);
    assert_eq!(
        count(dir.path(), "SELECT count(*) FROM trusted.credit"),
        1000
    );
}

#[test]
fn an_unknown_table_format_is_refused_at_its_line() {
    let dir = lake_testing::example("credit");
    let toml = dir.path().join("lake.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen("[lake]\n", "[lake]\ntable_format = \"delta\"\n", 1),
    )
    .unwrap();
    let out = lake(dir.path()).args(["plan"]).output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("lake.toml:") && err.contains("lake.table_format"),
        "{err}"
    );
    assert!(
        err.contains("unknown table format \"delta\"; this build of lake has: parquet, iceberg"),
        "{err}"
    );
}

/// The REST catalog of `tests/rest_catalog.py` on 127.0.0.1, killed when dropped.
struct RestCatalog {
    child: std::process::Child,
    uri: String,
}

impl RestCatalog {
    fn start(python: &str) -> Self {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rest_catalog.py");
        let mut child = std::process::Command::new(python)
            .arg(script)
            .env("REST_CREDENTIAL", "lake:s3cret-client")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("{line:?}"));
        Self {
            child,
            uri: format!("http://127.0.0.1:{port}"),
        }
    }

    fn post(&self, path: &str) {
        let (status, _) = lake_testing::emulator::request(&self.uri, "POST", path);
        assert_eq!(status, 200, "POST {path}");
    }

    fn state(&self) -> serde_json::Value {
        let (status, body) = lake_testing::emulator::request(&self.uri, "GET", "/_test/state");
        assert_eq!(status, 200);
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for RestCatalog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads tables through a REST catalog with pyiceberg's RestCatalog (argv: uri, then
/// `namespace.table`s); per table: its rows and snapshots' lake run ids. With `--append`,
/// appends one row of the first table's own rows instead (another writer).
const REST_READ: &str = r##"
import sys, json
from pyiceberg.catalog.rest import RestCatalog
cat = RestCatalog("test", uri=sys.argv[1], credential="lake:s3cret-client")
if sys.argv[2] == "--append":
    t = cat.load_table(sys.argv[3])
    t.append(t.scan(limit=1).to_arrow())
    print(json.dumps({"metadata": t.metadata_location}))
    sys.exit(0)
for name in sys.argv[2:]:
    t = cat.load_table(name)
    snaps = sorted(t.snapshots(), key=lambda s: s.timestamp_ms)
    print(json.dumps({"table": name, "rows": t.scan().to_arrow().num_rows,
                      "location": t.metadata_location,
                      "runs": [s.summary.additional_properties.get("lake.run-id") for s in snaps]}))
"##;

#[test]
fn a_rest_catalog_commits_each_publish_and_pyiceberg_reads_through_it() {
    let Some(python) = python() else {
        return;
    };
    let rest = RestCatalog::start(&python);
    let dir = iceberg_example("credit");
    let toml = dir.path().join("lake.toml");
    let text = std::fs::read_to_string(&toml).unwrap().replacen(
        "kind = \"glue\"\ndatabase = \"credit\"",
        &format!(
            "kind = \"rest\"\nuri = \"{}\"\nnamespace = \"credit\"\ncredential = \"${{env:LAKE_TEST_REST_CREDENTIAL}}\"",
            rest.uri
        ),
        1,
    );
    std::fs::write(&toml, &text).unwrap();
    let lake_run = |args: &[&str]| {
        lake(dir.path())
            .env("LAKE_TEST_REST_CREDENTIAL", "lake:s3cret-client")
            .args(args)
            .output()
            .unwrap()
    };
    let tables = ["credit.trusted_credit", "credit.refined_credit_by_purpose"];
    let read = |names: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec![rest.uri.as_str()];
        args.extend(names);
        python_out(&python, REST_READ, &args)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };

    // A wrong credential: the run fails before anything is published, the secret unsaid.
    let out = lake(dir.path())
        .env("LAKE_TEST_REST_CREDENTIAL", "lake:wrong-secret")
        .args(["run", "--date", "2024-05-01"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("fetching a token") && err.contains("401"),
        "{err}"
    );
    assert!(!err.contains("wrong-secret"), "{err}");

    let out = lake_run(&["run", "--date", "2024-05-01"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = run_id(&stdout(&out));
    let got = read(&tables);
    assert_eq!(got[0]["rows"], 1000, "{got:?}");
    assert_eq!(got[1]["rows"], 8, "{got:?}");
    assert_eq!(got[0]["runs"], serde_json::json!([first]), "{got:?}");
    // The catalog wrote the metadata; lake wrote no file catalog of its own.
    assert!(
        !dir.path()
            .join("lake/trusted/credit/metadata/version-hint.text")
            .exists()
    );
    let location = got[0]["location"].as_str().unwrap().to_owned();
    assert!(
        location.contains("/lake/trusted/credit/metadata/00001-"),
        "{location}"
    );

    // A republish, after two commits lost their race: lake builds it again on the table
    // as it is and the catalog takes it; the first snapshot still reads 1000 rows.
    set_adults(dir.path(), true);
    rest.post("/_test/conflicts?n=2");
    let out = lake_run(&["run", "--date", "2024-05-01"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = run_id(&stdout(&out));
    assert_eq!(rest.state()["refused"], 2);
    let adults = count(dir.path(), "SELECT count(*) FROM trusted.credit");
    let got = read(&tables[..1]);
    assert_eq!(got[0]["rows"], adults, "{got:?}");
    assert_eq!(
        got[0]["runs"],
        serde_json::json!([first, second]),
        "{got:?}"
    );
    // `lake ls` and `--as-of` read the table through the catalog.
    let out = lake_run(&["ls", "trusted/credit", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ls: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(ls["snapshots"].as_array().map(Vec::len), Some(2), "{ls}");
    let out = lake_run(&[
        "query",
        "--format",
        "csv",
        "--as-of",
        &first,
        "SELECT count(*) FROM trusted.credit",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().nth(1), Some("1000"));

    // `lake vacuum` expires the first snapshot through the catalog (a commit of its own).
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replacen("[lake]\n", "[lake]\nretain_snapshots = \"0s\"\n", 1),
    )
    .unwrap();
    let commits = rest.state()["commits"].as_u64().unwrap();
    let out = lake_run(&["vacuum", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let vacuumed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let credit = vacuumed["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["dataset"] == "trusted/credit")
        .unwrap_or_else(|| panic!("{vacuumed}"))
        .clone();
    assert_eq!(credit["snapshots"], 1, "{vacuumed}");
    assert!(rest.state()["commits"].as_u64().unwrap() > commits);
    let got = read(&tables[..1]);
    assert_eq!(got[0]["runs"], serde_json::json!([second]), "{got:?}");
    assert_eq!(got[0]["rows"], adults, "{got:?}");
    // `lake doctor` reaches the catalog with the credentials.
    let out = lake_run(&["doctor"]);
    assert!(
        stdout(&out).contains(&format!("REST catalog {}", rest.uri)),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // Another writer appends through the catalog: lake refuses to commit over its snapshot,
    // before publishing, and the table keeps that writer's rows.
    python_out(
        &python,
        REST_READ,
        &[&rest.uri, "--append", "credit.trusted_credit"],
    );
    set_adults(dir.path(), false);
    let out = lake_run(&["run", "--date", "2024-05-01"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("committed by another writer"), "{err}");
    let got = read(&tables[..1]);
    assert_eq!(got[0]["rows"], adults + 1, "{got:?}");
    assert_eq!(
        count(dir.path(), "SELECT count(*) FROM trusted.credit"),
        adults
    );
}

#[test]
fn a_commit_killed_before_its_version_hint_is_the_current_version_all_the_same() {
    let dir = iceberg_example("credit");
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    let hint = dir
        .path()
        .join("lake/trusted/credit/metadata/version-hint.text");
    // As a run killed between `v1.metadata.json` and the hint leaves it.
    std::fs::remove_file(&hint).unwrap();
    assert_eq!(snapshots(dir.path(), "trusted/credit").len(), 1);
    set_adults(dir.path(), true);
    run(dir.path(), &["run", "--date", "2024-05-01"]);
    assert_eq!(std::fs::read_to_string(&hint).unwrap().trim(), "2");
    assert_eq!(snapshots(dir.path(), "trusted/credit").len(), 2);
}
