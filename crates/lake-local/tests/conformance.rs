//! The ZoneStore conformance suite on the memory and filesystem stores.

use std::sync::Arc;

use lake_core::DynZoneStore;
use lake_local::LocalZoneStore;
use lake_testing::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_conforms() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filesystem_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::filesystem(dir.path()).unwrap());
    conformance::run_all(store).await;
}

/// Through a double indirection (`Arc<Arc<dyn ZoneStore>>` is itself a `ZoneStore`), so
/// wrappers forward every method.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filesystem_store_conforms_through_arc_wrapper() {
    let dir = tempfile::tempdir().unwrap();
    let inner: Arc<DynZoneStore> = Arc::new(LocalZoneStore::filesystem(dir.path()).unwrap());
    let outer: Arc<DynZoneStore> = Arc::new(inner);
    conformance::put_get_head(&*outer).await;
    conformance::list_by_prefix(&*outer).await;
    conformance::not_found(&*outer).await;
    conformance::put_if_absent_concurrent(outer, 8).await;
}

/// Two independent store instances on one folder (as two processes would have) see one
/// put-if-absent winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filesystem_put_if_absent_holds_across_instances() {
    use bytes::Bytes;
    use lake_core::ZoneStore;
    use lake_core::zone::{Key, PutOutcome};
    let dir = tempfile::tempdir().unwrap();
    let k = Key::new("_lake/locks/p").unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let root = dir.path().to_owned();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let s = LocalZoneStore::filesystem(root).unwrap();
            s.put_if_absent(&k, Bytes::from(format!("{i}")))
                .await
                .unwrap()
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() == PutOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
}
