//! `sql` steps on the embedded engine, through the library API: inputs of every format,
//! checks and rejected rows, write modes, partitions, errors; and the two examples, whose
//! refined rows are checked against values computed here from the raw files.

use std::collections::BTreeMap;
use std::path::Path;

use lake::Lake;
use lake::core::chrono::NaiveDate;
use lake::core::ledger::{RunRecord, Status};
use lake::core::run::RunOptions;
use lake::local::engine::datafusion::arrow::array::RecordBatch;
use lake::local::engine::datafusion::arrow::util::display::array_value_to_string;

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

async fn run(dir: &Path, day: &str) -> (Lake, RunRecord) {
    let lake = Lake::open(dir.join("lake.toml"), None).await.unwrap();
    let record = lake.run(&RunOptions::new(date(day))).await.unwrap();
    (lake, record)
}

/// Rows of a query as strings, one `Vec` per row.
async fn rows(lake: &Lake, sql: &str) -> Vec<Vec<String>> {
    let ctx = lake.query_session().await.unwrap();
    let batches: Vec<RecordBatch> = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            out.push(
                b.columns()
                    .iter()
                    .map(|c| array_value_to_string(c, r).unwrap())
                    .collect(),
            );
        }
    }
    out
}

fn write(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn step<'a>(r: &'a RunRecord, name: &str) -> &'a lake::core::ledger::StepRecord {
    r.steps.iter().find(|s| s.name == name).unwrap()
}

const PEOPLE: &str = r#"
[lake]
name = "people"

[sources.people]
kind = "file"
path = "data/*.csv"

[steps.clean]
kind = "sql"
inputs = [{ path = "raw/people@date", null_values = ["NA", ""], name = "p" }]
output = "trusted/people"
sql = """
SELECT
  name,
  CAST(age AS INT) AS age,
  CAST(Score AS DOUBLE) AS score
FROM p
"""
expect = ["age BETWEEN 0 AND 120", "score >= 0"]
max_rejected = 0.7
"#;

#[tokio::test]
async fn failed_casts_and_expectations_reject_rows_with_their_reason() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "lake.toml", PEOPLE);
    write(
        tmp.path(),
        "data/people.csv",
        "Name,Age,Score\nann,34,1.5\nbob,abc,2\ncid,150,3\ndee,NA,4\neve,40,-1\nfay,41,7\n",
    );
    let (lake, r) = run(tmp.path(), "2024-01-01").await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    let s = step(&r, "clean");
    assert_eq!((s.rows, s.rejected), (Some(2), Some(4)));

    let good = rows(
        &lake,
        "SELECT name, age, score FROM trusted.people ORDER BY name",
    )
    .await;
    assert_eq!(good, [["ann", "34", "1.5"], ["fay", "41", "7.0"]]);
    let bad = rows(
        &lake,
        "SELECT name, _reason, _run_id FROM trusted._rejected_clean ORDER BY name",
    )
    .await;
    let reasons: BTreeMap<&str, &str> =
        bad.iter().map(|r| (r[0].as_str(), r[1].as_str())).collect();
    assert_eq!(
        reasons["bob"], "CAST(age AS Int32) failed on value 'abc'",
        "{bad:?}"
    );
    assert_eq!(reasons["cid"], "expect: age BETWEEN 0 AND 120");
    // A NULL from the source is not a failed cast, but NULL fails the expectation.
    assert_eq!(reasons["dee"], "expect: age BETWEEN 0 AND 120");
    assert_eq!(reasons["eve"], "expect: score >= 0");
    assert!(bad.iter().all(|row| row[2] == r.run_id), "{bad:?}");
}

#[tokio::test]
async fn too_many_rejected_rows_fail_the_step_and_keep_the_previous_output() {
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "lake.toml", PEOPLE);
    write(
        tmp.path(),
        "data/people.csv",
        "Name,Age,Score\nann,34,1\nbob,35,2\n",
    );
    let (lake, r) = run(tmp.path(), "2024-01-01").await;
    assert_eq!(r.status, Status::Succeeded);
    write(
        tmp.path(),
        "data/people.csv",
        "Name,Age,Score\nx,abc,1\ny,def,2\nz,ghi,3\n",
    );
    let (_, r) = run(tmp.path(), "2024-01-02").await;
    assert_eq!(r.status, Status::Failed);
    let err = step(&r, "clean").error.clone().unwrap();
    assert!(
        err.contains("3 of 3 rows (100.0%) were rejected, more than max_rejected = 0.7")
            && err.contains("3 × CAST(age AS Int32) failed")
            && err.contains("trusted/_rejected/clean"),
        "{err}"
    );
    // The previous output is intact; the rejected rows are there to look at.
    let good = rows(&lake, "SELECT name FROM trusted.people ORDER BY name").await;
    assert_eq!(good, [["ann"], ["bob"]]);
    let bad = rows(
        &lake,
        "SELECT name FROM trusted._rejected_clean ORDER BY name",
    )
    .await;
    assert_eq!(bad, [["x"], ["y"], ["z"]]);
}

#[tokio::test]
async fn a_sql_error_names_the_step_and_the_line_of_its_sql() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "lake.toml",
        &PEOPLE.replace("CAST(Score AS DOUBLE) AS score", "no_such_column AS score"),
    );
    write(tmp.path(), "data/people.csv", "Name,Age,Score\nann,34,1\n");
    let (_, r) = run(tmp.path(), "2024-01-01").await;
    assert_eq!(r.status, Status::Failed);
    let err = step(&r, "clean").error.clone().unwrap();
    let line = PEOPLE
        .lines()
        .position(|l| l.starts_with("sql = "))
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!("lake.toml:{line} (steps.clean.sql)"))
            && err.contains("no_such_column"),
        "{err}"
    );
    assert!(!tmp.path().join("lake/trusted/people").exists());
}

#[tokio::test]
async fn formats_windows_partitions_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "lake.toml",
        r#"
[lake]
name = "f"

[sources.events]
kind = "file"
path = "data/events.jsonl"

[sources.doc]
kind = "file"
path = "data/doc.json"

[sources.sales]
kind = "file"
path = "data/sales.tsv"

# Every window (the default) vs. the run's window only.
[steps.all_events]
kind = "sql"
inputs = ["raw/events"]
output = "trusted/all_events"
sql = "SELECT kind, n, ingest_date FROM events"

[steps.today]
kind = "sql"
inputs = [{ path = "raw/events@date", name = "e" }]
output = "trusted/today"
sql = "SELECT kind, n FROM e"
mode = "append"

[steps.doc]
kind = "sql"
inputs = ["raw/doc@date"]
output = "trusted/doc"
sql = "SELECT day, CAST(v AS DOUBLE) AS v, site FROM doc"
partition_by = ["day"]
mode = "overwrite_partitions"

[steps.sales]
kind = "sql"
inputs = [{ path = "raw/sales@date", format = "csv", delimiter = "\t", infer_types = true }]
output = "refined/sales"
sql = "SELECT purpose, amount * 2 AS double_amount FROM sales"
partition_by = ["purpose"]

[steps.from_parquet]
kind = "sql"
inputs = ["refined/sales"]
output = "refined/sales_total"
sql = "SELECT purpose, SUM(double_amount) AS total FROM sales GROUP BY purpose"
"#,
    );
    let day1 = r#"{"site": "a", "data": {"day": ["2024-01-01", "2024-01-02"], "v": [1, 2]}}"#;
    let day2 = r#"{"site": "b", "data": {"day": ["2024-01-02", "2024-01-03"], "v": [20, 30]}}"#;
    write(
        tmp.path(),
        "data/events.jsonl",
        "{\"kind\":\"a\",\"n\":1}\n{\"kind\":\"b\",\"n\":2}\n",
    );
    write(tmp.path(), "data/doc.json", day1);
    write(
        tmp.path(),
        "data/sales.tsv",
        "purpose\tamount\nradio/TV\t10\ncar\t5\n",
    );
    let (lake, r) = run(tmp.path(), "2024-01-01").await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    write(tmp.path(), "data/doc.json", day2);
    let (_, r) = run(tmp.path(), "2024-01-02").await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");

    // Every window: two dates × two events, with the window's date as a DATE column.
    let all = rows(
        &lake,
        "SELECT kind, n, CAST(ingest_date AS VARCHAR) AS d, arrow_typeof(ingest_date) AS t FROM trusted.all_events ORDER BY ingest_date, kind",
    )
    .await;
    assert_eq!(all.len(), 4);
    assert_eq!(all[0], ["a", "1", "2024-01-01", "Date32"]);
    assert_eq!(all[3][2], "2024-01-02");
    // The run's window, appended run after run.
    let today = rows(&lake, "SELECT count(*) FROM trusted.today").await;
    assert_eq!(today, [["4"]]);
    // A JSON document of columns, partitioned by day; the second run replaced 2024-01-02 only.
    let doc = rows(
        &lake,
        "SELECT CAST(day AS VARCHAR) AS d, v, site FROM trusted.doc ORDER BY day",
    )
    .await;
    assert_eq!(
        doc,
        [
            ["2024-01-01", "1.0", "a"],
            ["2024-01-02", "20.0", "b"],
            ["2024-01-03", "30.0", "b"]
        ]
    );
    assert!(tmp.path().join("lake/trusted/doc/day=2024-01-03").is_dir());
    // A partition value with a slash is escaped in the folder name and read back as written.
    assert!(
        tmp.path()
            .join("lake/refined/sales/purpose=radio%2FTV")
            .is_dir()
    );
    let totals = rows(
        &lake,
        "SELECT purpose, total FROM refined.sales_total ORDER BY purpose",
    )
    .await;
    assert_eq!(totals, [["car", "10"], ["radio/TV", "20"]]);
}

#[tokio::test]
async fn a_window_without_a_manifest_is_never_read() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "lake.toml",
        r#"
[lake]
name = "w"
[sources.s]
kind = "file"
path = "data/s.csv"
[steps.t]
kind = "sql"
inputs = ["raw/s"]
output = "trusted/t"
sql = "SELECT x FROM s"
"#,
    );
    write(tmp.path(), "data/s.csv", "x\n1\n");
    // A partial window (a crashed fetch) and a stray file next to a complete one.
    write(
        tmp.path(),
        "lake/raw/s/ingest_date=2023-12-31/s.csv",
        "x\n99\n",
    );
    write(
        tmp.path(),
        "lake/raw/s/ingest_date=2024-01-01/stray.csv",
        "x\n98\n",
    );
    let (lake, r) = run(tmp.path(), "2024-01-01").await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    assert_eq!(rows(&lake, "SELECT x FROM trusted.t").await, [["1"]]);
    assert_eq!(rows(&lake, "SELECT x FROM raw.s").await, [["1"]]);
}

fn examples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Copy an example without its lake folder.
fn copy_example(name: &str, to: &Path) {
    let from = examples().join(name);
    for entry in ["lake.toml", "data"] {
        let src = from.join(entry);
        if src.is_dir() {
            std::fs::create_dir_all(to.join(entry)).unwrap();
            for f in std::fs::read_dir(&src).unwrap() {
                let f = f.unwrap();
                std::fs::copy(f.path(), to.join(entry).join(f.file_name())).unwrap();
            }
        } else {
            std::fs::copy(&src, to.join(entry)).unwrap();
        }
    }
}

#[tokio::test]
async fn the_weather_example_gives_the_daily_summary_of_the_hourly_response() {
    let tmp = tempfile::tempdir().unwrap();
    copy_example("weather", tmp.path());
    let (lake, r) = run(tmp.path(), "2024-05-01").await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    assert_eq!(step(&r, "weather_hourly").rows, Some(168));

    // Independently: group the response's hours by their date prefix.
    let doc: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("data/open_meteo_hourly.json")).unwrap(),
    )
    .unwrap();
    let times = doc["hourly"]["time"].as_array().unwrap();
    let temps = doc["hourly"]["temperature_2m"].as_array().unwrap();
    let mut days: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (t, v) in times.iter().zip(temps) {
        days.entry(t.as_str().unwrap()[..10].to_owned())
            .or_default()
            .push(v.as_f64().unwrap());
    }
    let got = rows(
        &lake,
        "SELECT CAST(date AS VARCHAR) AS d, temp_min, temp_max, temp_mean FROM refined.weather_daily ORDER BY date",
    )
    .await;
    assert_eq!(got.len(), days.len());
    for (row, (day, vals)) in got.iter().zip(&days) {
        let min = vals.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        assert_eq!(&row[0], day);
        assert_eq!(row[1].parse::<f64>().unwrap(), min, "{row:?}");
        assert_eq!(row[2].parse::<f64>().unwrap(), max, "{row:?}");
        assert!(
            (row[3].parse::<f64>().unwrap() - mean).abs() < 0.0051,
            "{row:?} vs {mean}"
        );
    }
    // One row per hour with a real timestamp, in a folder per date.
    let hourly = rows(
        &lake,
        "SELECT count(*), arrow_typeof(min(time)) FROM trusted.weather_hourly",
    )
    .await;
    assert_eq!(hourly[0][0], "168");
    assert!(hourly[0][1].starts_with("Timestamp"), "{hourly:?}");
    assert_eq!(
        std::fs::read_dir(tmp.path().join("lake/trusted/weather_hourly"))
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("date="))
            .count(),
        days.len()
    );
}

#[tokio::test]
async fn the_credit_example_types_checks_and_summarises_every_loan() {
    let tmp = tempfile::tempdir().unwrap();
    copy_example("credit", tmp.path());
    let (lake, r) = run(tmp.path(), "2024-05-01").await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    let raw = std::fs::read_to_string(tmp.path().join("data/german_credit_data.csv")).unwrap();
    let mut nulls = 0;
    let mut by_purpose: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for line in raw.lines().skip(1) {
        let f: Vec<&str> = line.trim_end_matches('\r').split(',').collect();
        nulls += usize::from(f[5] == "NA");
        let e = by_purpose.entry(f[9].to_owned()).or_default();
        e.0 += 1;
        e.1 += f[7].parse::<f64>().unwrap();
    }
    let t = rows(
        &lake,
        "SELECT count(*), count(*) - count(saving_accounts), arrow_typeof(max(age)), arrow_typeof(max(credit_amount)) FROM trusted.credit",
    )
    .await;
    assert_eq!(t[0], ["1000", &nulls.to_string(), "Int32", "Int64"]);
    let refined = rows(
        &lake,
        "SELECT purpose, n, avg_credit_amount FROM refined.credit_by_purpose ORDER BY purpose",
    )
    .await;
    assert_eq!(refined.len(), by_purpose.len());
    for (row, (purpose, (n, sum))) in refined.iter().zip(&by_purpose) {
        assert_eq!(&row[0], purpose);
        assert_eq!(row[1], n.to_string());
        assert!((row[2].parse::<f64>().unwrap() - sum / *n as f64).abs() < 0.0051);
    }
}

#[tokio::test]
async fn an_empty_result_is_published_with_its_schema() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "lake.toml",
        r#"
[lake]
name = "e"
[sources.x]
kind = "file"
path = "data/x.csv"
[steps.none]
kind = "sql"
inputs = ["raw/x"]
output = "trusted/none"
sql = "SELECT CAST(a AS INT) AS a, b FROM x WHERE b = 'zzz'"
[steps.after]
kind = "sql"
inputs = ["trusted/none"]
output = "refined/after"
sql = "SELECT count(*) AS n, arrow_typeof(max(a)) AS t FROM none"
"#,
    );
    write(tmp.path(), "data/x.csv", "a,b\n1,2\n");
    let (lake, r) = run(tmp.path(), "2024-01-01").await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    assert_eq!(step(&r, "none").rows, Some(0));
    assert_eq!(
        rows(&lake, "SELECT n, t FROM refined.after").await,
        [["0", "Int32"]]
    );
}

#[tokio::test]
async fn dedup_content_skips_a_window_that_repeats_the_previous_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "lake.toml",
        r#"
[lake]
name = "d"
[sources.s]
kind = "file"
path = "data/s.csv"
dedup = "content"
[steps.t]
kind = "sql"
inputs = ["raw/s"]
output = "trusted/t"
sql = "SELECT x, CAST(ingest_date AS VARCHAR) AS day FROM s"
"#,
    );
    write(tmp.path(), "data/s.csv", "x\n1\n");
    run(tmp.path(), "2024-01-01").await;
    let (_, r) = run(tmp.path(), "2024-01-02").await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    assert_eq!(r.ingest[0].objects.len(), 0, "same bytes: nothing stored");
    write(tmp.path(), "data/s.csv", "x\n2\n");
    let (lake, r) = run(tmp.path(), "2024-01-03").await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    assert_eq!(
        rows(&lake, "SELECT x, day FROM trusted.t ORDER BY day").await,
        [["1", "2024-01-01"], ["2", "2024-01-03"]]
    );
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            tmp.path()
                .join("lake/raw/s/ingest_date=2024-01-02/_manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(m["duplicate_of"], "raw/s/ingest_date=2024-01-01");
    // Read by date, a repeated window reads as the window it repeated.
    let objects = lake::core::publish::dataset_objects(
        &*lake.store,
        &lake::core::config::ZoneRef::parse("raw/s").unwrap(),
        Some(date("2024-01-02")),
    )
    .await
    .unwrap();
    assert_eq!(objects[0].key, "raw/s/ingest_date=2024-01-01/s.csv");
}

/// A reader's error names no file ("incorrect number of fields"): the step's error names the
/// raw object it came from (issue 15 #9).
#[tokio::test]
async fn a_decode_error_names_the_object_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "lake.toml",
        "[lake]\nname = \"rag\"\n\n[sources.s]\nkind = \"file\"\npath = \"data/*.csv\"\n\n[steps.clean]\nkind = \"sql\"\ninputs = [\"raw/s@date\"]\noutput = \"trusted/clean\"\nsql = \"SELECT a, b FROM s\"\n",
    );
    write(dir.path(), "data/a_good.csv", "a,b\n1,2\n3,4\n");
    write(dir.path(), "data/b_ragged.csv", "a,b\n1,2\n3,4,5,6\n7,8\n");
    let (_, r) = run(dir.path(), "2024-05-01").await;
    let s = step(&r, "clean");
    assert_eq!(s.status, Status::Failed, "{r:#?}");
    let e = s.error.as_deref().unwrap();
    assert!(
        e.contains("in object raw/s/ingest_date=2024-05-01/b_ragged.csv"),
        "{e}"
    );
    assert!(!e.contains("a_good.csv"), "{e}");
}

/// SQL's `TIMESTAMP` is microseconds, as in Spark, DuckDB and PostgreSQL: years 1 to 9999 cast
/// (nanoseconds span only 1677 to 2262 and would reject the rest), written as Parquet
/// TIMESTAMP(MICROS), and unsigned integers are written as signed types Spark reads.
#[tokio::test]
async fn timestamps_are_microseconds_over_the_whole_calendar_and_types_are_portable() {
    use lake::local::engine::datafusion::arrow::datatypes::{DataType, TimeUnit};
    use lake::local::engine::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "data/t.csv",
        "t\n1650-03-01 00:00:00\n1910-01-01 06:00:00\n2024-05-01 12:30:00\n2400-12-31 23:59:59\n",
    );
    write(
        tmp.path(),
        "lake.toml",
        r#"[lake]
name = "ts"

[sources.t]
kind = "file"
path = "data/*.csv"

[steps.typed]
kind = "sql"
inputs = ["raw/t@date"]
output = "trusted/t"
sql = "SELECT CAST(t AS TIMESTAMP) AS t, CAST(1 AS INT UNSIGNED) AS u, TIMESTAMP '1800-01-01 00:00:00' AS lit FROM t"
"#,
    );
    let (lake, record) = run(tmp.path(), "2024-05-01").await;
    let typed = step(&record, "typed");
    assert_eq!(typed.status, Status::Succeeded, "{typed:#?}");
    assert_eq!((typed.rows, typed.rejected), (Some(4), Some(0)));
    assert_eq!(
        rows(
            &lake,
            "SELECT CAST(t AS VARCHAR) AS s FROM trusted.t ORDER BY s"
        )
        .await,
        vec![
            vec!["1650-03-01T00:00:00".to_owned()],
            vec!["1910-01-01T06:00:00".to_owned()],
            vec!["2024-05-01T12:30:00".to_owned()],
            vec!["2400-12-31T23:59:59".to_owned()],
        ]
    );
    let m = lake::core::publish::read_manifest(&*lake.store, "trusted/t")
        .await
        .unwrap()
        .unwrap();
    let file = std::fs::File::open(tmp.path().join("lake").join(&m.objects[0].key)).unwrap();
    let schema = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .schema()
        .clone();
    let types: Vec<DataType> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(
        types,
        vec![
            DataType::Timestamp(TimeUnit::Microsecond, None),
            DataType::Int64,
            DataType::Timestamp(TimeUnit::Microsecond, None),
        ]
    );
}

/// The values of column `col` (Int64) across the Parquet files of `dir`, read file after file
/// in name order, as every reader of a folder does.
fn int_column_in_file_order(dir: &Path, col: &str) -> (usize, Vec<i64>) {
    use lake::local::engine::datafusion::arrow::array::AsArray;
    use lake::local::engine::datafusion::arrow::datatypes::Int64Type;
    use lake::local::engine::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    let mut values = Vec::new();
    for f in &files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let c = batch
                .column_by_name(col)
                .unwrap()
                .as_primitive::<Int64Type>();
            values.extend(c.iter().map(Option::unwrap));
        }
    }
    (files.len(), values)
}

/// Where `got` first departs from `want`, for a short failure message.
fn first_difference(got: &[i64], want: &[i64]) -> Option<(usize, Option<i64>, Option<i64>)> {
    (0..got.len().max(want.len()))
        .find(|&i| got.get(i) != want.get(i))
        .map(|i| (i, got.get(i).copied(), want.get(i).copied()))
}

/// A step that ends in `ORDER BY` publishes its rows in that order across its files, with or
/// without expectations (DataFusion deals batches out to several files written at once).
#[tokio::test]
async fn an_ordered_step_keeps_its_order_across_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "lake.toml",
        r#"
[lake]
name = "o"
[sources.x]
kind = "file"
path = "data/x.csv"
[steps.sorted]
kind = "sql"
inputs = ["raw/x"]
output = "trusted/sorted"
sql = "SELECT CAST(v AS BIGINT) AS v, k FROM x ORDER BY v"
[steps.checked]
kind = "sql"
inputs = ["raw/x"]
output = "trusted/checked"
sql = "SELECT CAST(v AS BIGINT) AS v, k FROM x ORDER BY v DESC"
expect = ["v % 7 <> 0"]
max_rejected = 0.5
[steps.plain]
kind = "sql"
inputs = ["trusted/sorted"]
output = "trusted/plain"
sql = "SELECT v, upper(k) AS k FROM sorted ORDER BY v DESC"
[steps.unordered]
kind = "sql"
inputs = ["raw/x"]
output = "trusted/unordered"
sql = "SELECT CAST(v AS BIGINT) AS v, k FROM x"
[engine]
threads = 2
"#,
    );
    // 200,000 rows in a scrambled order: many batches, so several would-be files.
    let n: i64 = 200_000;
    let mut csv = String::from("v,k\n");
    for i in 0..n {
        csv.push_str(&format!("{},k{}\n", (i * 7_919) % n, i % 13));
    }
    write(tmp.path(), "data/x.csv", &csv);
    let (_, r) = run(tmp.path(), "2024-01-01").await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");

    let zone = tmp.path().join("lake/trusted");
    let in_order = |step: &str, want: Vec<i64>| {
        let (files, got) = int_column_in_file_order(&zone.join(step), "v");
        assert_eq!(
            first_difference(&got, &want),
            None,
            "{step}: (index, got, want) across {files} file(s)"
        );
    };
    in_order("sorted", (0..n).collect());
    in_order("checked", (0..n).rev().filter(|v| v % 7 != 0).collect());
    // No CAST and no expectation: the step's query is written as it is.
    in_order("plain", (0..n).rev().collect());

    // Without ORDER BY the writer writes a file per thread at once (`threads = 2`; DataFusion
    // alone would write four).
    let (files, unordered) = int_column_in_file_order(&zone.join("unordered"), "v");
    assert_eq!(files, 2);
    assert_eq!(unordered.len(), n as usize);
}
