//! Byte flips in committed objects: every one is detected (the step fails naming the object,
//! nothing is published; `lake query` shows no rows) or the answer is right.

use std::path::{Path, PathBuf};

use lake::Lake;
use lake::core::chrono::NaiveDate;
use lake::core::ledger::Status;
use lake::core::publish;
use lake::core::run::RunOptions;

const ROWS: usize = 2_000;

fn pipeline(dir: &Path, verify: &str) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut csv = String::from("id,amount,purpose\n");
    for i in 0..ROWS {
        csv.push_str(&format!(
            "{i},{},{}\n",
            i * 7 % 1000,
            ["car", "tv", "radio"][i % 3]
        ));
    }
    std::fs::write(dir.join("data/loans.csv"), csv).unwrap();
    std::fs::write(
        dir.join("lake.toml"),
        format!(
            r#"[lake]
name = "v"

[engine]
verify = "{verify}"

[sources.loans]
kind = "file"
path = "data/*.csv"

[steps.clean]
kind = "sql"
inputs = ["raw/loans@date"]
output = "trusted/loans"
sql = "SELECT CAST(id AS BIGINT) AS id, CAST(amount AS BIGINT) AS amount, purpose FROM loans"

[steps.by_purpose]
kind = "sql"
inputs = ["trusted/loans"]
output = "refined/by_purpose"
sql = "SELECT purpose, count(*) AS n, sum(amount) AS total FROM loans GROUP BY purpose"
"#
        ),
    )
    .unwrap();
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, 1).unwrap()
}

async fn open(dir: &Path) -> Lake {
    Lake::open(dir.join("lake.toml"), None).await.unwrap()
}

/// The path of the one object a dataset's manifest lists.
async fn object_of(lake: &Lake, dir: &Path, prefix: &str) -> (String, PathBuf) {
    let m = publish::read_manifest(&*lake.store, prefix)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.objects.len(), 1, "{m:?}");
    let key = m.objects[0].key.clone();
    let path = dir.join("lake").join(&key);
    (key, path)
}

async fn run_only(lake: &Lake, step: &str) -> lake::core::ledger::RunRecord {
    let mut opts = RunOptions::new(day());
    opts.force = true;
    opts.only = vec![step.into()];
    lake.run(&opts).await.unwrap()
}

/// A copy of the lake in `dir` (a backup restored): every file new, every byte the same.
fn copy_of(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(dir.join("."))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

/// Flip 8 bytes at `at` (same size: the size check cannot see it).
fn flip(path: &Path, at: usize) -> Vec<u8> {
    let good = std::fs::read(path).unwrap();
    let mut bad = good.clone();
    for b in &mut bad[at..(at + 8).min(good.len())] {
        *b ^= 0x5a;
    }
    std::fs::write(path, &bad).unwrap();
    good
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flip_in_a_steps_input_fails_the_step_naming_the_object() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), "sha256");
    let lake = open(tmp.path()).await;
    let first = lake.run(&RunOptions::new(day())).await.unwrap();
    assert_eq!(first.status, Status::Succeeded, "{first:#?}");
    let refined = publish::read_manifest(&*lake.store, "refined/by_purpose")
        .await
        .unwrap()
        .unwrap();

    for (dataset, step) in [
        ("raw/loans/ingest_date=2024-01-01", "clean"),
        ("trusted/loans", "by_purpose"),
    ] {
        let (key, path) = object_of(&lake, tmp.path(), dataset).await;
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        let offsets: Vec<usize> = (0..10).map(|i| i * (len - 8) / 9).collect();
        for at in offsets {
            let good = flip(&path, at);
            let r = run_only(&lake, step).await;
            std::fs::write(&path, &good).unwrap();
            assert_eq!(
                r.status,
                Status::Failed,
                "flip at {at} of {key} went unseen"
            );
            let err = r.steps[0].error.as_deref().unwrap_or_default();
            assert!(
                err.contains(&key) && err.contains("SHA-256"),
                "flip at {at}: {err}"
            );
        }
    }
    assert_eq!(
        publish::read_manifest(&*lake.store, "refined/by_purpose")
            .await
            .unwrap()
            .unwrap(),
        refined,
        "nothing was published from a damaged input"
    );
    // Restored, the same runs succeed.
    assert_eq!(
        run_only(&lake, "by_purpose").await.status,
        Status::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_over_a_damaged_object_shows_no_rows_and_other_tables_still_answer() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), "sha256");
    let lake = open(tmp.path()).await;
    assert_eq!(
        lake.run(&RunOptions::new(day())).await.unwrap().status,
        Status::Succeeded
    );
    let (key, path) = object_of(&lake, tmp.path(), "trusted/loans").await;
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip(&path, len / 2);

    let (df, check) = lake
        .query("SELECT count(*) AS n, sum(amount) AS s FROM trusted.loans")
        .await
        .unwrap();
    let _ = df.collect().await;
    let err = check.finish().await.unwrap_err().to_string();
    assert!(err.contains(&key) && err.contains("SHA-256"), "{err}");

    // A subquery scans it too.
    let (df, check) = lake
        .query("SELECT * FROM refined.by_purpose WHERE n > (SELECT count(*) FROM trusted.loans)")
        .await
        .unwrap();
    let _ = df.collect().await;
    assert!(check.finish().await.is_err());

    let (df, check) = lake
        .query("SELECT sum(n) AS n FROM refined.by_purpose")
        .await
        .unwrap();
    let rows = df.collect().await.unwrap();
    check.finish().await.unwrap();
    let n = rows[0]
        .column(0)
        .as_any()
        .downcast_ref::<lake::local::engine::datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, ROWS as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_size_reads_nothing_back_and_still_sees_a_cut() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), "size");
    let lake = open(tmp.path()).await;
    assert_eq!(
        lake.run(&RunOptions::new(day())).await.unwrap().status,
        Status::Succeeded
    );
    let (key, path) = object_of(&lake, tmp.path(), "raw/loans/ingest_date=2024-01-01").await;
    // A flip in a CSV's digits reads as other numbers: with sizes only, nothing sees it.
    let bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - 10;
    let mut changed = bytes.clone();
    changed[at] = if bytes[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(&path, &changed).unwrap();
    let (df, check) = lake.query("SELECT count(*) FROM raw.loans").await.unwrap();
    df.collect().await.unwrap();
    check.finish().await.unwrap();
    // A cut is seen without reading a byte.
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let (df, check) = lake.query("SELECT count(*) FROM raw.loans").await.unwrap();
    let _ = df.collect().await;
    let err = check.finish().await.unwrap_err().to_string();
    assert!(err.contains(&key) && err.contains("bytes"), "{err}");
}

#[test]
fn verify_is_sha256_or_size() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), "md5");
    let err = lake::load(tmp.path().join("lake.toml"), None).unwrap_err();
    let text = format!("{err}");
    assert!(
        text.contains("engine.verify") && text.contains(":5"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_run_after_an_input_changed_in_place_is_not_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), "sha256");
    let lake = open(tmp.path()).await;
    let first = lake.run(&RunOptions::new(day())).await.unwrap();
    assert_eq!(first.status, Status::Succeeded, "{first:#?}");
    let again = lake.run(&RunOptions::new(day())).await.unwrap();
    assert!(
        again.steps.iter().all(|s| s.status == Status::UpToDate),
        "{again:#?}"
    );
    // Same size, other bytes: the sizes alone cannot tell.
    let (key, path) = object_of(&lake, tmp.path(), "trusted/loans").await;
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip(&path, len / 3);
    let r = lake.run(&RunOptions::new(day())).await.unwrap();
    let summary = r.steps.iter().find(|s| s.name == "by_purpose").unwrap();
    assert_eq!(summary.status, Status::Failed, "{r:#?}");
    let err = summary.error.as_deref().unwrap_or_default();
    assert!(err.contains(&key) && err.contains("SHA-256"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_lake_runs_its_steps_once_then_is_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), "sha256");
    let lake = open(tmp.path()).await;
    assert_eq!(
        lake.run(&RunOptions::new(day())).await.unwrap().status,
        Status::Succeeded
    );
    drop(lake);
    // A copy (a backup restored): every file new, every byte the same.
    let copy = copy_of(tmp.path());
    let lake = open(copy.path()).await;
    let r = lake.run(&RunOptions::new(day())).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    let r = lake.run(&RunOptions::new(day())).await.unwrap();
    assert!(
        r.steps.iter().all(|s| s.status == Status::UpToDate),
        "{r:#?}"
    );
}

/// A step whose reader does not hash what it reads (a command here; Spark and EMR alike): the
/// input's entity tag recorded at its commit is compared before the step runs. Changed in place
/// with the same size, the step fails naming the object and the command never runs; in a copy
/// of the lake (new tags, same bytes) the inputs are read back, pass, and the step runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_of_readers_that_do_not_hash_are_checked_by_their_entity_tags() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), "sha256");
    let ran = tmp.path().join("ran");
    let toml = std::fs::read_to_string(tmp.path().join("lake.toml")).unwrap()
        + &format!(
            "\n[steps.export]\nkind = \"command\"\ninputs = [\"trusted/loans\"]\ncommand = [\"sh\", \"-c\", \"echo x >> '{}'\"]\n",
            ran.display()
        );
    std::fs::write(tmp.path().join("lake.toml"), toml).unwrap();
    let lake = open(tmp.path()).await;
    let first = lake.run(&RunOptions::new(day())).await.unwrap();
    assert_eq!(first.status, Status::Succeeded, "{first:#?}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "x\n");
    // The committed objects carry their entity tags.
    let m = publish::read_manifest(&*lake.store, "trusted/loans")
        .await
        .unwrap()
        .unwrap();
    assert!(m.objects.iter().all(|o| o.etag.is_some()), "{m:#?}");
    drop(lake);

    // A copy: new tags, same bytes. The command runs, after the inputs were read back.
    let copy = copy_of(tmp.path());
    let lake = open(copy.path()).await;
    let r = run_only(&lake, "export").await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "x\nx\n");
    drop(lake);

    // Changed in place, same size: refused before the command runs, naming the object.
    let lake = open(tmp.path()).await;
    let (key, path) = object_of(&lake, tmp.path(), "trusted/loans").await;
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    flip(&path, len / 2);
    let r = run_only(&lake, "export").await;
    let export = r.steps.iter().find(|s| s.name == "export").unwrap();
    assert_eq!(export.status, Status::Failed, "{r:#?}");
    let err = export.error.as_deref().unwrap_or_default();
    assert!(err.contains(&key) && err.contains("SHA-256"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&ran).unwrap(),
        "x\nx\n",
        "the command did not run"
    );
}
