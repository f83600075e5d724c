//! Raw windows as they pile up: a step reading `raw/<source>` reads one index, not one manifest
//! per window; a window a dead run committed but did not index stays invisible until the next
//! landing of it; a forced refetch never writes over the bytes its committed manifest lists.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use lake::Lake;
use lake::core::chrono::{Days, NaiveDate};
use lake::core::config::{Zone, ZoneRef};
use lake::core::ledger::Status;
use lake::core::publish::{self, LandOptions, Landed, WindowIndex};
use lake::core::run::{RunOptions, run};
use lake::core::source::{SourceObject, Window, WindowSize};
use lake::core::zone::{ByteStream, ZoneStoreExt};
use lake::core::{DynZoneStore, Result, Source};
use lake::local::LocalZoneStore;
use lake_testing::counting::CountingStore;

/// Two small CSV objects per window, `a.csv` and `b.csv`, whose rows carry `version`.
#[derive(Debug)]
struct Daily {
    version: u32,
}

#[async_trait]
impl Source for Daily {
    fn name(&self) -> &str {
        "s"
    }

    async fn objects(&self, _window: &Window) -> Result<Vec<SourceObject>> {
        Ok(["a.csv", "b.csv"]
            .map(|name| SourceObject {
                name: name.into(),
                size: Some(32),
                content_type: None,
                origin: format!("gen://{name}"),
            })
            .into())
    }

    async fn open(&self, window: &Window, object: &SourceObject) -> Result<ByteStream> {
        let text = format!(
            "day,v,o\n{},{},{}\n",
            window.start, self.version, object.name
        );
        Ok(Box::pin(futures::stream::once(async move {
            Ok(Bytes::from(text))
        })))
    }
}

const LAKE_TOML: &str = r#"
[lake]
name = "w"
root = "lake"

[sources.s]
kind = "program"
window = "1d"
start = "2024-01-01"

[steps.total]
kind = "sql"
inputs = ["raw/s"]
output = "refined/total"
sql = "SELECT count(*) AS n FROM s"
"#;

fn day(n: u64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + Days::new(n)
}

/// Land `windows` daily windows with one run, then run again (nothing to do) through a
/// counting store; returns what the second run asked of the store.
async fn second_run_requests(windows: u64) -> lake_testing::counting::Counts {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lake.toml"), LAKE_TOML).unwrap();
    let lake = Lake::open(dir.path().join("lake.toml"), None)
        .await
        .unwrap()
        .with_source(Arc::new(Daily { version: 1 }))
        .unwrap();
    let opts = RunOptions::new(day(windows - 1));
    let first = lake.run(&opts).await.unwrap();
    assert_eq!(first.status, Status::Succeeded);
    assert_eq!(first.ingest.len() as u64, windows, "every window landed");
    let rows = lake.query_session().await.unwrap();
    let n = rows
        .sql("SELECT n FROM refined.total")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n = lake::local::engine::datafusion::arrow::util::pretty::pretty_format_batches(&n)
        .unwrap()
        .to_string();
    assert!(
        n.contains(&format!("| {} ", windows * 2)),
        "the step read every window's two rows: {n}"
    );

    let mut ctx = lake.context().await.unwrap();
    let counting = CountingStore::new(Arc::clone(&ctx.store));
    ctx.store = Arc::new(counting.clone());
    let second = run(&ctx, &opts).await.unwrap();
    assert_eq!(second.status, Status::Succeeded);
    assert_eq!(second.steps[0].status, Status::UpToDate);
    assert_eq!(second.steps[0].inputs.len() as u64, windows * 2);
    counting.counts()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_over_every_window_makes_the_same_requests_for_5_or_80_windows() {
    let few = second_run_requests(5).await;
    let many = second_run_requests(80).await;
    assert_eq!(
        few.reads_of(publish::MANIFEST),
        many.reads_of(publish::MANIFEST),
        "manifests read: {:?} vs {:?}",
        few.reads,
        many.reads
    );
    assert_eq!(
        few.ops, many.ops,
        "store requests grow with the number of windows"
    );
    assert!(many.reads_of(publish::MANIFEST) <= 3, "{:?}", many.reads);
}

fn window(n: u64) -> Window {
    WindowSize::Days(1).window_of(day(n), None)
}

async fn raw_keys(store: &DynZoneStore) -> Vec<String> {
    let s = ZoneRef {
        zone: Zone::Raw,
        name: "s".into(),
    };
    publish::dataset_objects(store, &s, None)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

#[tokio::test]
async fn a_window_committed_but_not_indexed_stays_invisible_until_landed_again() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let src = Daily { version: 1 };
    for n in 0..2 {
        let landed = publish::land(&*store, &src, &window(n), "run-1").await;
        assert!(matches!(landed, Ok(Landed::Fetched(_))), "{landed:?}");
    }
    assert_eq!(raw_keys(&*store).await.len(), 4);

    // A run commits window 2 and dies before it saves the index.
    let mut index = WindowIndex::load(&*store, "s").await.unwrap();
    let landed = publish::land_with(
        &*store,
        &src,
        &window(2),
        "run-2",
        &LandOptions::default(),
        &mut index,
    )
    .await
    .unwrap();
    assert!(matches!(landed, Landed::Fetched(_)));
    drop(index);
    let visible = raw_keys(&*store).await;
    assert_eq!(
        visible.len(),
        4,
        "only indexed windows are read: {visible:?}"
    );
    assert!(visible.iter().all(|k| !k.contains("2024-01-03")));

    // The next landing of that window finds it complete and indexes it; nothing is fetched.
    let again = publish::land(&*store, &src, &window(2), "run-3")
        .await
        .unwrap();
    let Landed::AlreadyComplete(m) = again else {
        panic!("fetched again: {again:?}");
    };
    assert_eq!(m.run_id, "run-2");
    assert_eq!(raw_keys(&*store).await.len(), 6);
}

/// Every object a committed manifest lists has the size and SHA-256 the manifest says.
async fn manifest_matches_bytes(store: &DynZoneStore, n: u64) -> Vec<String> {
    let prefix = publish::raw_window_prefix("s", day(n));
    let m = publish::read_manifest(store, &prefix)
        .await
        .unwrap()
        .unwrap();
    let mut bad = Vec::new();
    for o in &m.objects {
        let d = store
            .digest(&lake::core::zone::Key::new(o.key.clone()).unwrap())
            .await
            .unwrap();
        if (d.size, d.sha256.as_str()) != (o.size, o.sha256.as_str()) {
            bad.push(o.key.clone());
        }
    }
    bad
}

#[tokio::test]
async fn a_forced_refetch_that_fails_half_way_leaves_the_committed_window_whole() {
    let memory: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let v1 = Daily { version: 1 };
    publish::land(&*memory, &v1, &window(0), "run-1")
        .await
        .unwrap();
    // The refetch gets new bytes; writing its second object into the window folder fails
    // (a kill, a full disk) after the first one was written.
    let store: Arc<DynZoneStore> =
        Arc::new(CountingStore::new(Arc::clone(&memory)).failing(|op, key| {
            op != "delete"
                && key.starts_with("raw/")
                && key.rsplit('/').next().is_some_and(|f| f.starts_with("b."))
        }));
    let v2 = Daily { version: 2 };
    let mut index = WindowIndex::load(&*store, "s").await.unwrap();
    let opts = LandOptions {
        force: true,
        ..LandOptions::default()
    };
    let failed = publish::land_with(&*store, &v2, &window(0), "run-2", &opts, &mut index).await;
    assert!(failed.is_err(), "{failed:?}");
    index.save(&*store).await.unwrap();
    assert_eq!(
        manifest_matches_bytes(&*memory, 0).await,
        Vec::<String>::new(),
        "committed objects were overwritten"
    );
    let text = memory
        .get_bytes(&lake::core::zone::Key::new("raw/s/ingest_date=2024-01-01/a.csv").unwrap())
        .await
        .unwrap();
    assert_eq!(&text[..], b"day,v,o\n2024-01-01,1,a.csv\n");
    // Nothing of the failed refetch is left in the window folder.
    let listed: Vec<String> = memory
        .list("raw/s/ingest_date=2024-01-01")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "raw/s/ingest_date=2024-01-01/_manifest.json",
            "raw/s/ingest_date=2024-01-01/a.csv",
            "raw/s/ingest_date=2024-01-01/b.csv"
        ]
    );

    // A refetch that succeeds lands under new keys, switches the manifest, and deletes the old
    // objects only once the index no longer lists them.
    let mut index = WindowIndex::load(&*memory, "s").await.unwrap();
    let landed = publish::land_with(&*memory, &v2, &window(0), "run-3", &opts, &mut index)
        .await
        .unwrap();
    let Landed::Fetched(m) = landed else {
        panic!("{landed:?}");
    };
    let keys: Vec<&str> = m.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "raw/s/ingest_date=2024-01-01/a.run-3.csv",
            "raw/s/ingest_date=2024-01-01/b.run-3.csv"
        ]
    );
    assert!(
        memory
            .head(&lake::core::zone::Key::new("raw/s/ingest_date=2024-01-01/a.csv").unwrap())
            .await
            .is_ok(),
        "the old objects stay until the index is saved"
    );
    index.save(&*memory).await.unwrap();
    assert_eq!(
        manifest_matches_bytes(&*memory, 0).await,
        Vec::<String>::new()
    );
    assert_eq!(raw_keys(&*memory).await, keys);
    assert_eq!(
        memory
            .list("raw/s/ingest_date=2024-01-01")
            .await
            .unwrap()
            .len(),
        3,
        "the replaced objects are gone"
    );
}
