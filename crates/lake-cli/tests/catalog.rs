//! `[catalog]` on moto (the emulator `.ci/run` starts): the Glue tables a run registers, read
//! back with boto3 and compared with the Parquet files as pyarrow reads them from S3; partitions
//! that follow overwrites; a narrowed column refused; `lake query --engine athena`.
//!
//! Needs the emulator (`AWS_ENDPOINT_URL`) and `LAKE_PYSPARK_PYTHON`, the CI venv's Python (it
//! has boto3, which moto brings, and pyarrow); skips without them unless `LAKE_REQUIRE_S3` is
//! set. No test here resets the emulator: each uses buckets and databases of its own.

mod common;

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;
use lake_testing::emulator;
use serde_json::Value;

fn python() -> Option<String> {
    common::python("boto3 and pyarrow", "LAKE_REQUIRE_S3")
}

fn lake(dir: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("lake")
        .unwrap()
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn lake_ok(dir: &Path, args: &[&str]) -> String {
    let o = lake(dir, args);
    assert!(o.status.success(), "lake {args:?}: {}", text(&o));
    text(&o)
}

/// An example's folder with its root in a new bucket of the emulator.
fn example_on_s3(
    example: &str,
    bucket: &str,
    edit: impl FnOnce(String) -> String,
) -> tempfile::TempDir {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    assert_eq!(
        emulator::request(&endpoint, "PUT", &format!("/{bucket}")).0,
        200
    );
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(example);
    let toml = std::fs::read_to_string(src.join("lake.toml"))
        .unwrap()
        .replacen(
            "root = \"lake\"",
            &format!("root = \"s3://{bucket}/lake\""),
            1,
        );
    std::fs::write(tmp.path().join("lake.toml"), edit(toml)).unwrap();
    std::fs::create_dir(tmp.path().join("data")).unwrap();
    for f in std::fs::read_dir(src.join("data")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), tmp.path().join("data").join(f.file_name())).unwrap();
    }
    tmp
}

/// What boto3 finds in Glue database `db`, and what pyarrow finds in S3 for each table: the
/// Parquet schema of the table's files (as Hive types) and the `key=value` folders.
const GLUE_STATE: &str = r#"
import sys, json, boto3, pyarrow.fs as pfs, pyarrow.parquet as pq, pyarrow as pa
endpoint, db = sys.argv[1], sys.argv[2]
glue = boto3.client("glue", endpoint_url=endpoint, region_name="us-east-1")
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
fs = pfs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1",
                      access_key="lake-ci", secret_key="lake-ci")
def hive(t):
    if pa.types.is_int64(t): return "bigint"
    if pa.types.is_int32(t): return "int"
    if pa.types.is_int16(t): return "smallint"
    if pa.types.is_int8(t): return "tinyint"
    if pa.types.is_float64(t): return "double"
    if pa.types.is_float32(t): return "float"
    if pa.types.is_boolean(t): return "boolean"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t): return "string"
    if pa.types.is_date32(t): return "date"
    if pa.types.is_timestamp(t): return "timestamp"
    if pa.types.is_decimal(t): return f"decimal({t.precision},{t.scale})"
    return str(t)
out = {"database": glue.get_database(Name=db)["Database"]["Name"], "tables": {}}
for t in glue.get_paginator("get_tables").paginate(DatabaseName=db).build_full_result()["TableList"]:
    sd = t["StorageDescriptor"]
    parts = glue.get_paginator("get_partitions").paginate(DatabaseName=db, TableName=t["Name"]).build_full_result()["Partitions"]
    loc = sd["Location"]
    bucket, prefix = loc[len("s3://"):].split("/", 1)
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix) for o in p.get("Contents", [])]
    files = sorted(k for k in keys if k.endswith(".parquet"))
    schema = pq.read_schema(f"{bucket}/{files[0]}", filesystem=fs)
    folders = sorted({k[len(prefix):].rsplit("/", 1)[0] for k in files if "=" in k[len(prefix):]})
    out["tables"][t["Name"]] = {
        "columns": [[c["Name"], c["Type"]] for c in sd["Columns"]],
        "partition_keys": [k["Name"] for k in t.get("PartitionKeys", [])],
        "location": loc,
        "serde": sd["SerdeInfo"]["SerializationLibrary"],
        "parameters": t.get("Parameters", {}),
        "partitions": sorted([p["Values"], p["StorageDescriptor"]["Location"]] for p in parts),
        "parquet_columns": [[f.name, hive(f.type)] for f in schema],
        "folders": folders,
        "rows": sum(pq.read_metadata(f"{bucket}/{k}", filesystem=fs).num_rows for k in files),
    }
print(json.dumps(out))
"#;

fn glue_state(python: &str, db: &str) -> Value {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let out = std::process::Command::new(python)
        .args(["-c", GLUE_STATE, &endpoint, db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "boto3/pyarrow: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Every table of `state` matches its Parquet files: the same columns with their Hive types
/// (the partition columns as keys), one partition per `key=value` folder at that folder, Hive's
/// Parquet SerDe, and the row count as a parameter.
fn assert_tables_match_parquet(state: &Value) {
    for (name, t) in state["tables"].as_object().unwrap() {
        let keys = t["partition_keys"].as_array().unwrap();
        let parquet: Vec<&Value> = t["parquet_columns"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| !keys.contains(&c[0]))
            .collect();
        let glue: Vec<&Value> = t["columns"].as_array().unwrap().iter().collect();
        assert_eq!(
            glue, parquet,
            "{name}: Glue columns against the Parquet schema"
        );
        assert_eq!(
            t["serde"], "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
            "{name}"
        );
        assert_eq!(
            t["parameters"]["lake.rows"].as_str().unwrap(),
            t["rows"].to_string(),
            "{name}"
        );
        let location = t["location"].as_str().unwrap();
        let expected: Vec<Value> = t["folders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                let f = f.as_str().unwrap();
                let values: Vec<&str> = f
                    .split('/')
                    .map(|kv| kv.split_once('=').unwrap().1)
                    .collect();
                serde_json::json!([values, format!("{location}{f}/")])
            })
            .collect();
        assert_eq!(t["partitions"].as_array().unwrap(), &expected, "{name}");
    }
}

fn partition_values(state: &Value, table: &str) -> Vec<String> {
    state["tables"][table]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0][0].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_examples_glue_tables_match_their_parquet_schemas_and_partitions() {
    let (Some(_), Some(py)) = (emulator::endpoint(), python()) else {
        return;
    };
    let bucket = format!("lake-catalog-credit-{}", std::process::id());
    let db = format!("credit_glue_{}", std::process::id());
    let credit = example_on_s3("credit", &bucket, |t| {
        t.replace("database = \"credit\"", &format!("database = \"{db}\""))
    });
    let out = lake_ok(credit.path(), &["run", "--date", "2024-03-01"]);
    assert!(
        out.contains(&format!("catalog {db}.trusted_credit: created"))
            && out.contains(&format!("catalog {db}.refined_credit_by_purpose: created")),
        "{out}"
    );
    let state = glue_state(&py, &db);
    let mut tables: Vec<&String> = state["tables"].as_object().unwrap().keys().collect();
    tables.sort();
    assert_eq!(tables, ["refined_credit_by_purpose", "trusted_credit"]);
    assert_eq!(state["tables"]["trusted_credit"]["rows"], 1000);
    assert_tables_match_parquet(&state);
    // The rerun is up to date, and so are its tables.
    let out = lake_ok(credit.path(), &["run", "--date", "2024-03-01"]);
    assert!(
        out.contains(&format!("catalog {db}.trusted_credit: up to date")),
        "{out}"
    );

    let bucket = format!("lake-catalog-weather-{}", std::process::id());
    let db = format!("weather_glue_{}", std::process::id());
    let weather = example_on_s3("weather", &bucket, |t| {
        t.replace("database = \"weather\"", &format!("database = \"{db}\""))
    });
    // Data published before [catalog] existed: `lake catalog sync` registers it.
    let toml = weather.path().join("lake.toml");
    let with_catalog = std::fs::read_to_string(&toml).unwrap();
    let start = with_catalog.find("[catalog]").unwrap();
    let end = start + with_catalog[start..].find("\n\n").unwrap();
    std::fs::write(
        &toml,
        format!("{}{}", &with_catalog[..start], &with_catalog[end..]),
    )
    .unwrap();
    let out = lake_ok(weather.path(), &["run", "--date", "2024-05-01"]);
    assert!(!out.contains("catalog "), "{out}");
    std::fs::write(&toml, &with_catalog).unwrap();
    let out = lake_ok(weather.path(), &["catalog", "sync"]);
    assert!(
        out.contains(&format!(
            "catalog {db}.trusted_weather_hourly: created, 7 partitions added"
        )) && out.contains("catalog sync: 6 registered, 0 up to date, 0 failed"),
        "{out}"
    );
    let state = glue_state(&py, &db);
    let hourly = &state["tables"]["trusted_weather_hourly"];
    assert_eq!(hourly["partition_keys"], serde_json::json!(["date"]));
    assert_eq!(hourly["rows"], 168);
    assert_eq!(
        partition_values(&state, "trusted_weather_hourly"),
        (9..=15)
            .map(|d| format!("2023-08-{d:02}"))
            .collect::<Vec<_>>()
    );
    assert_tables_match_parquet(&state);
    // The run ledger's tables too, as `lake query` shows them under _lake.
    for (table, rows) in [("lake_runs", 1), ("lake_steps", 2), ("lake_lineage", 3)] {
        assert_eq!(state["tables"][table]["rows"], rows, "{table}: {state}");
    }
    let lineage: Vec<&str> = state["tables"]["lake_lineage"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect();
    assert_eq!(
        lineage,
        ["run_id", "step", "source", "destination", "timestamp"]
    );
    let out = lake(weather.path(), &["catalog", "sync", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let statuses: Vec<&str> = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["up_to_date"; 6], "{v}");
}

/// The weather response moved `days` days later (a new forecast).
fn shift_weather(dir: &Path, days: i64) {
    let path = dir.join("data/open_meteo_hourly.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for t in doc["hourly"]["time"].as_array_mut().unwrap() {
        let when =
            chrono::NaiveDateTime::parse_from_str(t.as_str().unwrap(), "%Y-%m-%dT%H:%M").unwrap();
        *t = Value::String(
            (when + chrono::Duration::days(days))
                .format("%Y-%m-%dT%H:%M")
                .to_string(),
        );
    }
    std::fs::write(&path, doc.to_string()).unwrap();
}

#[test]
fn partitions_follow_overwrites_and_a_narrowed_column_is_refused() {
    let (Some(_), Some(py)) = (emulator::endpoint(), python()) else {
        return;
    };
    let bucket = format!("lake-catalog-parts-{}", std::process::id());
    let db = format!("weather_parts_{}", std::process::id());
    let dir = example_on_s3("weather", &bucket, |t| {
        t.replace("database = \"weather\"", &format!("database = \"{db}\""))
    });
    lake_ok(dir.path(), &["run", "--date", "2024-05-01"]);
    let days = |from: u32, to: u32| {
        (from..=to)
            .map(|d| format!("2023-08-{d:02}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        partition_values(&glue_state(&py, &db), "trusted_weather_hourly"),
        days(9, 15)
    );

    // A new forecast three days later: overwrite_partitions replaces 4 days and adds 3.
    shift_weather(dir.path(), 3);
    let out = lake_ok(dir.path(), &["run", "--date", "2024-05-02"]);
    assert!(
        out.contains(&format!(
            "catalog {db}.trusted_weather_hourly: updated, 3 partitions added"
        )),
        "{out}"
    );
    let state = glue_state(&py, &db);
    assert_eq!(
        partition_values(&state, "trusted_weather_hourly"),
        days(9, 18)
    );
    assert_tables_match_parquet(&state);

    // mode = "overwrite": the dataset is the new forecast only; the 3 old days are dropped.
    let toml = dir.path().join("lake.toml");
    let original = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        original.replace("mode = \"overwrite_partitions\"", "mode = \"overwrite\""),
    )
    .unwrap();
    let out = lake_ok(dir.path(), &["run", "--date", "2024-05-02", "--force"]);
    assert!(out.contains("3 partitions dropped"), "{out}");
    let state = glue_state(&py, &db);
    assert_eq!(
        partition_values(&state, "trusted_weather_hourly"),
        days(12, 18)
    );
    assert_tables_match_parquet(&state);

    // A column narrowed (double → float) while old partitions stay: refused before the step
    // publishes, naming it; the table keeps its type and the dataset its files, so the two
    // still agree.
    std::fs::write(
        &toml,
        original.replace(
            "  temperature_2m,\n",
            "  CAST(temperature_2m AS FLOAT) AS temperature_2m,\n",
        ),
    )
    .unwrap();
    let out = lake(dir.path(), &["run", "--date", "2024-05-02", "--force"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("column temperature_2m was double and is now float"),
        "{said}"
    );
    assert!(
        said.contains("trusted/weather_hourly was left as it was"),
        "{said}"
    );
    let state = glue_state(&py, &db);
    let columns = &state["tables"]["trusted_weather_hourly"]["columns"];
    assert!(
        columns
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["temperature_2m", "double"])),
        "{columns}"
    );
    assert_tables_match_parquet(&state);
}

#[test]
fn athena_queries_run_on_the_catalogs_database_and_print_like_the_embedded_engine() {
    let (Some(endpoint), Some(py)) = (emulator::endpoint(), python()) else {
        return;
    };
    let bucket = format!("lake-catalog-athena-{}", std::process::id());
    let dir = example_on_s3("credit", &bucket, |t| t);
    // moto answers Athena queries with results given to it beforehand.
    let canned = serde_json::json!({
        "account_id": "123456789012",
        "region": "us-east-1",
        "results": [{
            "rows": [
                {"Data": [{"VarCharValue": "purpose"}, {"VarCharValue": "n"}, {"VarCharValue": "mean_amount"}]},
                {"Data": [{"VarCharValue": "car"}, {"VarCharValue": "337"}, {"VarCharValue": "3768.19"}]},
                {"Data": [{"VarCharValue": "radio/TV"}, {"VarCharValue": "280"}, {}]}
            ],
            "column_info": [
                {"Name": "purpose", "Label": "purpose", "Type": "varchar", "Precision": 2147483647, "Scale": 0, "Nullable": "UNKNOWN", "CaseSensitive": true, "CatalogName": "hive", "SchemaName": "", "TableName": ""},
                {"Name": "n", "Label": "n", "Type": "bigint", "Precision": 19, "Scale": 0, "Nullable": "UNKNOWN", "CaseSensitive": false, "CatalogName": "hive", "SchemaName": "", "TableName": ""},
                {"Name": "mean_amount", "Label": "mean_amount", "Type": "decimal", "Precision": 12, "Scale": 2, "Nullable": "UNKNOWN", "CaseSensitive": false, "CatalogName": "hive", "SchemaName": "", "TableName": ""}
            ]
        }]
    });
    let post = "import urllib.request, sys\nr = urllib.request.Request(sys.argv[1] + '/moto-api/static/athena/query-results', data=sys.argv[2].encode(), method='POST', headers={'Content-Type': 'application/json'})\nurllib.request.urlopen(r)";
    let ok = std::process::Command::new(&py)
        .args(["-c", post, &endpoint, &canned.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());

    let sql = "SELECT purpose, n, mean_amount FROM refined_credit_by_purpose ORDER BY n DESC";
    let out = lake(
        dir.path(),
        &["query", "--engine", "athena", "--format", "json", sql],
    );
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Typed as Athena typed them (n a bigint, mean_amount a decimal(12,2)), written as the
    // embedded engine writes JSON: numbers as numbers, NULL left out.
    assert_eq!(
        rows,
        [
            serde_json::json!({"purpose": "car", "n": 337, "mean_amount": 3768.19}),
            serde_json::json!({"purpose": "radio/TV", "n": 280}),
        ],
        "{said}"
    );
    assert!(said.contains("2 rows · Athena query "), "{said}");
    assert!(said.contains("at $5/TB"), "{said}");

    // The request, read back from the emulator: the SQL, the catalog's database, the
    // workgroup, and the result location under the root.
    let id = said
        .split("Athena query ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let check = "import sys, json, boto3\na = boto3.client('athena', endpoint_url=sys.argv[1], region_name='us-east-1')\nq = a.get_query_execution(QueryExecutionId=sys.argv[2])['QueryExecution']\nprint(json.dumps([q['Query'], q['QueryExecutionContext']['Database'], q['WorkGroup'], q['ResultConfiguration']['OutputLocation']]))";
    let out = std::process::Command::new(&py)
        .args(["-c", check, &endpoint, id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(q[0], sql);
    assert_eq!(q[1], "credit");
    assert_eq!(q[2], "primary");
    assert!(
        q[3].starts_with(&format!("s3://{bucket}/lake/_lake/athena/")),
        "{q:?}"
    );

    // Without [catalog], --engine athena says what is missing.
    let toml = dir.path().join("lake.toml");
    let t = std::fs::read_to_string(&toml).unwrap();
    let start = t.find("[catalog]").unwrap();
    let end = start + t[start..].find("\n\n").unwrap();
    std::fs::write(&toml, format!("{}{}", &t[..start], &t[end..])).unwrap();
    let out = lake(dir.path(), &["query", "--engine", "athena", sql]);
    assert!(!out.status.success());
    assert!(text(&out).contains("has no [catalog]"), "{}", text(&out));
}
