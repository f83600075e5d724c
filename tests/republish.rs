//! What a republish leaves in a dataset's folder, which tools that read folders (Spark, Athena,
//! DuckDB) see: only what the manifest lists, plus, with `retain_replaced`, the objects it
//! replaced for that long (readers that started before the switch).

use std::path::Path;

use lake::Lake;
use lake::core::chrono::NaiveDate;
use lake::core::ledger::Status;
use lake::core::publish;
use lake::core::run::RunOptions;

fn pipeline(dir: &Path, retain: Option<&str>) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/t.csv"), "a,b\n1,x\n2,y\n3,z\n").unwrap();
    let retain = retain.map_or(String::new(), |r| format!("retain_replaced = \"{r}\"\n"));
    std::fs::write(
        dir.join("lake.toml"),
        format!(
            r#"[lake]
name = "r"
root = "lake"
{retain}
[sources.t]
kind = "file"
path = "data/*.csv"

[steps.t]
kind = "sql"
inputs = ["raw/t@date"]
output = "trusted/t"
sql = "SELECT CAST(a AS INT) AS a, b FROM t"
"#
        ),
    )
    .unwrap();
}

async fn run(dir: &Path, force: bool) -> Vec<String> {
    let lake = Lake::open(dir.join("lake.toml"), None).await.unwrap();
    let mut opts = RunOptions::new(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap());
    opts.force = force;
    let r = lake.run(&opts).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    publish::read_manifest(&*lake.store, "trusted/t")
        .await
        .unwrap()
        .unwrap()
        .objects
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// Every file under the dataset's folder, hidden ones (`_manifest.json`) left out, as keys.
fn folder(dir: &Path) -> Vec<String> {
    let root = dir.join("lake");
    let mut out = Vec::new();
    let mut todo = vec![root.join("trusted/t")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if !e.file_name().to_string_lossy().starts_with(['_', '.']) {
                out.push(
                    p.strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republish_leaves_only_what_its_manifest_lists() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), None);
    let first = run(tmp.path(), false).await;
    assert_eq!(folder(tmp.path()), first);
    // What a publish killed half way leaves: a copied file no manifest lists, and an
    // unfinished upload.
    let out = tmp.path().join("lake/trusted/t");
    std::fs::write(out.join("killed-copy.parquet"), b"PAR1 not committed").unwrap();
    std::fs::write(out.join("other.parquet#1"), b"half").unwrap();
    let second = run(tmp.path(), true).await;
    assert_ne!(first, second, "the republish wrote new files");
    assert_eq!(
        folder(tmp.path()),
        second,
        "the folder holds exactly the new manifest's objects"
    );
    assert!(!out.join("other.parquet#1").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retain_replaced_keeps_the_previous_objects_for_readers_that_started_before() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), Some("1h"));
    let first = run(tmp.path(), false).await;
    let second = run(tmp.path(), true).await;
    let mut both: Vec<String> = first.iter().chain(&second).cloned().collect();
    both.sort();
    assert_eq!(
        folder(tmp.path()),
        both,
        "the replaced objects stay for an hour"
    );
    let replaced: serde_json::Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("lake/trusted/t/_replaced.json")).unwrap(),
    )
    .unwrap();
    let keys: Vec<&str> = replaced
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, first.iter().map(String::as_str).collect::<Vec<_>>());

    // Without it (the default), they go at once.
    pipeline(tmp.path(), None);
    let third = run(tmp.path(), true).await;
    assert_eq!(folder(tmp.path()), third);
    assert!(!tmp.path().join("lake/trusted/t/_replaced.json").exists());
}

#[test]
fn retain_replaced_is_a_duration() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), Some("soon"));
    let err = lake::load(tmp.path().join("lake.toml"), None).unwrap_err();
    let text = err.to_string() + &format!("{err:?}");
    assert!(text.contains("retain_replaced"), "{text}");
    assert!(text.contains(":4"), "names the line: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_input_object_changed_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    pipeline(tmp.path(), None);
    let toml = std::fs::read_to_string(tmp.path().join("lake.toml")).unwrap();
    std::fs::write(
        tmp.path().join("lake.toml"),
        toml + r#"
[steps.u]
kind = "sql"
inputs = ["trusted/t"]
output = "refined/u"
sql = "SELECT count(*) AS n FROM t"
"#,
    )
    .unwrap();
    let objects = run(tmp.path(), false).await;
    // A committed file is cut short by hand (a partial copy, a bad disk).
    let path = tmp.path().join("lake").join(&objects[0]);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

    let lake = Lake::open(tmp.path().join("lake.toml"), None)
        .await
        .unwrap();
    let before = publish::read_manifest(&*lake.store, "refined/u")
        .await
        .unwrap()
        .unwrap();
    let mut opts = RunOptions::new(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap());
    opts.force = true;
    opts.only = vec!["u".into()];
    let r = lake.run(&opts).await.unwrap();
    assert_eq!(r.status, Status::Failed);
    let err = r.steps[0].error.as_deref().unwrap_or_default();
    assert!(
        err.contains(&objects[0]) && err.contains("its manifest says"),
        "{err}"
    );
    let after = publish::read_manifest(&*lake.store, "refined/u")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        before, after,
        "nothing was published from the changed input"
    );
}

/// A listing of the zones that misses a dataset's manifest (one made while a republish renames
/// it into place, on some filesystems) still finds the dataset: its manifest is read by key.
#[tokio::test]
async fn a_listing_that_misses_a_manifest_still_finds_its_dataset() {
    use lake::core::publish::list_datasets;
    use lake::core::zone::{Key, ZoneStoreExt};
    use lake_testing::counting::CountingStore;
    let store: std::sync::Arc<lake::core::DynZoneStore> =
        std::sync::Arc::new(lake::local::LocalZoneStore::memory());
    let manifest = lake::core::publish::Manifest {
        version: 1,
        prefix: "refined/summary".into(),
        run_id: "r1".into(),
        committed: lake::core::chrono::Utc::now(),
        fingerprint: None,
        duplicate_of: None,
        batches: Default::default(),
        objects: vec![lake::core::publish::ObjectEntry {
            key: "refined/summary/part-0.parquet".into(),
            size: 3,
            sha256: "x".into(),
            origin: None,
            etag: None,
        }],
    };
    store
        .put_bytes(
            &Key::new("refined/summary/part-0.parquet").unwrap(),
            "abc".into(),
        )
        .await
        .unwrap();
    store
        .put_json(
            &Key::new("refined/summary/_manifest.json").unwrap(),
            &manifest,
        )
        .await
        .unwrap();
    let hiding = CountingStore::new(std::sync::Arc::clone(&store))
        .hiding(|k| k.ends_with("/_manifest.json"));
    let found = list_datasets(&hiding).await.unwrap();
    assert_eq!(
        found.iter().map(|d| d.prefix.as_str()).collect::<Vec<_>>(),
        ["refined/summary"]
    );
    assert_eq!(found[0].objects, manifest.objects);
    // A folder with no manifest at all is no dataset.
    store
        .put_bytes(
            &Key::new("refined/half/part-0.parquet").unwrap(),
            "abc".into(),
        )
        .await
        .unwrap();
    assert_eq!(list_datasets(&hiding).await.unwrap().len(), 1);
}
