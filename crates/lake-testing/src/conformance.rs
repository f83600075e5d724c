//! The [`ZoneStore`] conformance suite: every store runs all of it.
//!
//! Each check works under its own prefix (`conformance/<check>/…`) and cleans up after itself,
//! so the suite can run on a shared bucket. Checks panic with a message saying which part of
//! the contract was broken.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use lake_core::Error;
use lake_core::zone::{ByteStream, DynZoneStore, Key, PutOutcome, ZoneStore, ZoneStoreExt};

/// Size of the large-object check: 64 MiB.
pub const BIG_OBJECT: u64 = 64 * 1024 * 1024;

fn key(s: &str) -> Key {
    Key::new(s).expect("test key")
}

/// A deterministic stream of `total` bytes in `chunk`-sized pieces, generated as it is read
/// (it never holds more than one chunk).
pub fn generated(total: u64, chunk: usize) -> ByteStream {
    let chunks = total.div_ceil(chunk as u64);
    futures::stream::iter(0..chunks)
        .map(move |i| {
            let len = (total - i * chunk as u64).min(chunk as u64) as usize;
            let byte = (i % 251) as u8;
            Ok(Bytes::from(vec![byte; len]))
        })
        .boxed()
}

/// SHA-256 of [`generated`]'s bytes, computed without materialising them.
pub fn generated_sha256(total: u64, chunk: usize) -> String {
    let mut h = Sha256::new();
    let chunks = total.div_ceil(chunk as u64);
    for i in 0..chunks {
        let len = (total - i * chunk as u64).min(chunk as u64) as usize;
        h.update(vec![(i % 251) as u8; len]);
    }
    hex::encode(h.finalize())
}

/// Run every check.
pub async fn run_all(store: Arc<DynZoneStore>) {
    put_get_head(&*store).await;
    ranged_get(&*store).await;
    streaming_put(&*store).await;
    failed_put_leaves_previous(&*store).await;
    list_by_prefix(&*store).await;
    not_found(&*store).await;
    copy_and_delete(&*store).await;
    put_if_absent(&*store).await;
    put_if_absent_concurrent(Arc::clone(&store), 16).await;
    big_object(&*store, BIG_OBJECT).await;
    download(&*store).await;
    put_file(&*store).await;
}

/// A local file put with `put_file` lands byte for byte, replacing what was there, with the
/// size and SHA-256 of what landed; a missing file fails and leaves the previous object.
pub async fn put_file(store: &DynZoneStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Several of the filesystem store's 8 MiB copy pieces, and not a multiple of one.
    let total: u64 = 20 * 1024 * 1024 + 5;
    let path = dir.path().join("big.bin");
    let mut bytes = Vec::with_capacity(total as usize);
    let mut body = generated(total, 64 * 1024);
    while let Some(chunk) = body.try_next().await.expect("generated") {
        bytes.extend_from_slice(&chunk);
    }
    std::fs::write(&path, &bytes).expect("write the file");
    let k = key("conformance/put_file/big.bin");
    store
        .put_bytes(&k, Bytes::from_static(b"old"))
        .await
        .expect("put");
    let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&seen);
    let d = store
        .put_file(
            &k,
            &path,
            Some(Arc::new(move |n| {
                counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            })),
        )
        .await
        .expect("put_file");
    let expected = generated_sha256(total, 64 * 1024);
    assert_eq!(
        (d.size, d.sha256.as_str()),
        (total, expected.as_str()),
        "digest of what landed"
    );
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::Relaxed),
        total,
        "progress saw every byte"
    );
    let stored = store.digest(&k).await.expect("digest");
    assert_eq!(
        (stored.size, stored.sha256),
        (total, expected),
        "the object is the file"
    );
    let listed: Vec<String> = store
        .list("conformance/put_file")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(
        listed,
        ["conformance/put_file/big.bin"],
        "nothing else is left"
    );
    if let Some(folder) = store.local_path("conformance/put_file") {
        let names: Vec<_> = std::fs::read_dir(&folder)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file is left: {names:?}");
    }
    let missing = store
        .put_file(&k, &dir.path().join("missing.bin"), None)
        .await;
    assert!(missing.is_err(), "a missing file is an error");
    assert_eq!(
        store.digest(&k).await.expect("digest").size,
        total,
        "a failed put_file leaves the previous object"
    );
    store.delete(&k).await.expect("cleanup");
}

/// get_range returns the bytes asked for, clamped to the object; a missing key is not found.
pub async fn ranged_get(store: &DynZoneStore) {
    let k = key("conformance/range/digits");
    store
        .put_bytes(&k, Bytes::from("0123456789"))
        .await
        .unwrap();
    let r = |a: u64, b: u64| {
        let k = &k;
        async move { store.get_range(k, a..b).await.map(|(_, b)| b) }
    };
    let (meta, bytes) = store.get_range(&k, 2..5).await.unwrap();
    assert_eq!(
        (meta.size, meta.key.as_str()),
        (10, k.as_str()),
        "get_range returns the whole object's metadata"
    );
    assert_eq!(bytes, "234", "get_range 2..5 with its metadata");
    assert_eq!(r(2, 5).await.unwrap(), "234", "get_range 2..5");
    assert_eq!(r(0, 1).await.unwrap(), "0", "get_range 0..1");
    assert_eq!(
        r(8, 20).await.unwrap(),
        "89",
        "get_range past the end is clamped"
    );
    assert!(
        r(20, 30).await.unwrap().is_empty(),
        "get_range after the end is empty"
    );
    let missing = store.get_range(&key("conformance/range/none"), 0..4).await;
    assert!(
        missing.as_ref().is_err_and(Error::is_not_found),
        "get_range of a missing key: {missing:?}"
    );
    store.delete(&k).await.unwrap();
}

/// put, then get and head see the same bytes and size; put replaces.
pub async fn put_get_head(store: &DynZoneStore) {
    let k = key("conformance/basic/a.txt");
    let meta = store
        .put_bytes(&k, Bytes::from_static(b"hello"))
        .await
        .expect("put");
    assert_eq!(meta.size, 5, "put returns the size written");
    assert_eq!(meta.key, k);
    assert_eq!(store.get_bytes(&k).await.expect("get"), "hello");
    assert_eq!(
        store.head(&k).await.expect("head").size,
        5,
        "head gives the size"
    );
    store
        .put_bytes(&k, Bytes::from_static(b"bye"))
        .await
        .expect("overwrite");
    assert_eq!(
        store.get_bytes(&k).await.expect("get"),
        "bye",
        "put replaces"
    );
    let got = store.get(&k).await.expect("get");
    assert_eq!(got.meta.size, 3, "get's meta matches");
    store
        .delete_prefix("conformance/basic")
        .await
        .expect("cleanup");
}

/// A body of many chunks arrives whole and in order.
pub async fn streaming_put(store: &DynZoneStore) {
    let k = key("conformance/stream/many.bin");
    let total = 3 * 1024 * 1024 + 17;
    store
        .put(&k, generated(total, 64 * 1024))
        .await
        .expect("streaming put");
    let d = store.digest(&k).await.expect("digest");
    assert_eq!(d.size, total, "all bytes stored");
    assert_eq!(
        d.sha256,
        generated_sha256(total, 64 * 1024),
        "bytes stored in order"
    );
    store.delete(&k).await.expect("cleanup");
}

/// A put whose body fails midway leaves the previous object as it was.
pub async fn failed_put_leaves_previous(store: &DynZoneStore) {
    let k = key("conformance/failed/x.bin");
    store
        .put_bytes(&k, Bytes::from_static(b"previous"))
        .await
        .expect("put");
    let failing = futures::stream::iter(vec![
        Ok(Bytes::from(vec![1u8; 1024])),
        Err(Error::Invalid {
            what: "body".into(),
            message: "broken on purpose".into(),
        }),
    ])
    .boxed();
    assert!(
        store.put(&k, failing).await.is_err(),
        "a put whose body fails must fail"
    );
    assert_eq!(
        store.get_bytes(&k).await.expect("get"),
        "previous",
        "a failed put must not change the object"
    );
    let k2 = key("conformance/failed/new.bin");
    let failing = futures::stream::iter(vec![Err(Error::Cancelled)]).boxed();
    assert!(store.put(&k2, failing).await.is_err());
    assert!(
        store.head(&k2).await.is_err_and(|e| e.is_not_found()),
        "a failed put must not create the object"
    );
    store
        .delete_prefix("conformance/failed")
        .await
        .expect("cleanup");
}

/// list: whole-segment prefixes, sorted by key, nested keys included.
pub async fn list_by_prefix(store: &DynZoneStore) {
    for k in [
        "conformance/list/b/2",
        "conformance/list/a",
        "conformance/list/b/1",
        "conformance/listx/c",
        "conformance/list/b/10",
    ] {
        store
            .put_bytes(&key(k), Bytes::from_static(b"x"))
            .await
            .expect("put");
    }
    let keys: Vec<String> = store
        .list("conformance/list")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(
        keys,
        [
            "conformance/list/a",
            "conformance/list/b/1",
            "conformance/list/b/10",
            "conformance/list/b/2"
        ],
        "list is sorted by key and matches whole segments"
    );
    let sub = store.list("conformance/list/b").await.expect("list");
    assert_eq!(sub.len(), 3);
    assert!(
        store
            .list("conformance/nothing-here")
            .await
            .expect("empty list")
            .is_empty()
    );
    let all = store.list("").await.expect("list all");
    assert!(
        all.iter().any(|m| m.key.as_str() == "conformance/listx/c"),
        "\"\" lists everything"
    );
    store
        .delete_prefix("conformance/list")
        .await
        .expect("cleanup");
    store
        .delete_prefix("conformance/listx")
        .await
        .expect("cleanup");
    assert!(
        store
            .list("conformance/list")
            .await
            .expect("list")
            .is_empty(),
        "delete_prefix removes all"
    );
}

/// Missing keys: get, head and copy fail with NotFound; delete succeeds.
pub async fn not_found(store: &DynZoneStore) {
    let k = key("conformance/missing/nope");
    assert!(
        store.get(&k).await.is_err_and(|e| e.is_not_found()),
        "get of a missing key is NotFound"
    );
    assert!(
        store.head(&k).await.is_err_and(|e| e.is_not_found()),
        "head of a missing key is NotFound"
    );
    assert!(
        store
            .copy(&k, &key("conformance/missing/to"))
            .await
            .is_err_and(|e| e.is_not_found()),
        "copy from a missing key is NotFound"
    );
    store
        .delete(&k)
        .await
        .expect("delete of a missing key succeeds");
}

/// copy duplicates and replaces; rename moves and replaces; delete removes.
pub async fn copy_and_delete(store: &DynZoneStore) {
    let a = key("conformance/copy/a");
    let b = key("conformance/copy/sub/b");
    store
        .put_bytes(&a, Bytes::from_static(b"one"))
        .await
        .expect("put");
    store
        .put_bytes(&b, Bytes::from_static(b"old"))
        .await
        .expect("put");
    store.copy(&a, &b).await.expect("copy");
    assert_eq!(
        store.get_bytes(&b).await.expect("get"),
        "one",
        "copy replaces the target"
    );
    assert_eq!(
        store.get_bytes(&a).await.expect("get"),
        "one",
        "copy keeps the source"
    );
    store.delete(&a).await.expect("delete");
    assert!(
        store.head(&a).await.is_err_and(|e| e.is_not_found()),
        "deleted"
    );
    store
        .put_bytes(&a, Bytes::from_static(b"two"))
        .await
        .expect("put");
    store.rename(&a, &b).await.expect("rename");
    assert_eq!(
        store.get_bytes(&b).await.expect("get"),
        "two",
        "rename replaces the target"
    );
    assert!(
        store.head(&a).await.is_err_and(|e| e.is_not_found()),
        "rename removes the source"
    );
    let c = key("conformance/copy/other/c");
    store.rename(&b, &c).await.expect("rename to a new folder");
    assert_eq!(store.get_bytes(&c).await.expect("get"), "two");
    assert!(
        store.rename(&b, &a).await.is_err_and(|e| e.is_not_found()),
        "rename of a missing key is NotFound"
    );
    store.delete(&c).await.expect("delete");
}

/// put_if_absent creates once, then reports AlreadyExists without writing.
pub async fn put_if_absent(store: &DynZoneStore) {
    let k = key("conformance/pia/one");
    store.delete(&k).await.expect("clean");
    assert_eq!(
        store
            .put_if_absent(&k, Bytes::from_static(b"first"))
            .await
            .expect("pia"),
        PutOutcome::Created
    );
    assert_eq!(
        store
            .put_if_absent(&k, Bytes::from_static(b"second"))
            .await
            .expect("pia"),
        PutOutcome::AlreadyExists
    );
    assert_eq!(
        store.get_bytes(&k).await.expect("get"),
        "first",
        "a losing put_if_absent writes nothing"
    );
    store.delete(&k).await.expect("cleanup");
}

/// Of `n` concurrent put_if_absent calls for one key, exactly one wins.
pub async fn put_if_absent_concurrent(store: Arc<DynZoneStore>, n: usize) {
    let k = key("conformance/pia/race");
    store.delete(&k).await.expect("clean");
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = Arc::clone(&store);
            let k = k.clone();
            tokio::spawn(async move {
                (
                    i,
                    store
                        .put_if_absent(&k, Bytes::from(format!("writer {i}")))
                        .await,
                )
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let (i, r) = t.await.expect("task");
        if r.expect("put_if_absent") == PutOutcome::Created {
            winners.push(i);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {n} concurrent writers wins, got {winners:?}"
    );
    assert_eq!(
        store.get_bytes(&k).await.expect("get"),
        format!("writer {}", winners[0]),
        "the stored object is the winner's"
    );
    store.delete(&k).await.expect("cleanup");
}

/// A large object streams in and out intact, chunk by chunk.
pub async fn big_object(store: &DynZoneStore, size: u64) {
    let k = key("conformance/big/object.bin");
    let chunk = 1024 * 1024;
    let meta = store
        .put(&k, generated(size, chunk))
        .await
        .expect("big put");
    assert_eq!(meta.size, size);
    let got = store.get(&k).await.expect("big get");
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut body = got.body;
    while let Some(c) = body.try_next().await.expect("big read") {
        n += c.len() as u64;
        h.update(&c);
    }
    assert_eq!(n, size, "every byte read back");
    assert_eq!(
        hex::encode(h.finalize()),
        generated_sha256(size, chunk),
        "the bytes read back are the bytes written"
    );
    store.delete(&k).await.expect("cleanup");
}

/// `download` writes the object to a file (large, small, empty); a missing object leaves no
/// file and an existing file as it was.
pub async fn download(store: &DynZoneStore) {
    let k = key("conformance/download/object.bin");
    let size = 9 * 1024 * 1024 + 7;
    let chunk = 1024 * 1024;
    store
        .put(&k, generated(size, chunk))
        .await
        .expect("download put");
    let dir = std::env::temp_dir().join(format!(
        "lake-conformance-download-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("object.bin");
    let n = store.download(&k, &path).await.expect("download");
    assert_eq!(n, size, "download returns the size");
    let bytes = std::fs::read(&path).expect("downloaded file");
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        generated_sha256(size, chunk),
        "the file holds the object's bytes"
    );
    // Small objects (written in one call) and an empty one.
    for (name, body) in [
        ("small.bin", &b"a small object"[..]),
        ("empty.bin", &b""[..]),
    ] {
        let k = key(&format!("conformance/download/{name}"));
        store
            .put_bytes(&k, Bytes::copy_from_slice(body))
            .await
            .expect("small put");
        let to = dir.join(name);
        assert_eq!(
            store.download(&k, &to).await.expect("small download"),
            body.len() as u64
        );
        assert_eq!(std::fs::read(&to).expect("small file"), body, "{name}");
        std::fs::remove_file(&to).expect("cleanup");
        store.delete(&k).await.expect("cleanup");
    }
    let missing = key("conformance/download/missing.bin");
    let err = store
        .download(&missing, &path)
        .await
        .expect_err("a missing object is an error");
    assert!(err.is_not_found(), "missing object: {err}");
    assert_eq!(
        std::fs::read(&path).expect("still there").len() as u64,
        size,
        "a failed download leaves the existing file as it was"
    );
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("temp dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left.len(), 1, "no temporary file is left: {left:?}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
    store.delete(&k).await.expect("cleanup");
}
