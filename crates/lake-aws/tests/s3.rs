//! The S3 zone store against a real S3 API (moto's server, started by `.ci/run`): the
//! conformance suite, put-if-absent's 412, and multipart uploads that fail or are dropped
//! leaving nothing behind.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lake_core::zone::{ByteStream, Key, PutOutcome, ZoneStore, ZoneStoreExt};
use lake_core::{DynZoneStore, Error};
use lake_testing::conformance;

fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

/// Multipart uploads still open in `bucket`.
async fn open_uploads(store: &lake_aws::S3ZoneStore) -> usize {
    store
        .client()
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap()
        .uploads()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_store_conforms() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let _serial = common::SERIAL.lock().await;
    let store: Arc<DynZoneStore> = Arc::new(common::fresh_store(&endpoint, "conformance").await);
    conformance::run_all(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_if_absent_gets_412_and_keeps_the_first() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let _serial = common::SERIAL.lock().await;
    let store = common::fresh_store(&endpoint, "ifnonematch").await;
    let k = key("_lake/locks/p");
    assert_eq!(
        store.put_if_absent(&k, Bytes::from("first")).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        store
            .put_if_absent(&k, Bytes::from("second"))
            .await
            .unwrap(),
        PutOutcome::AlreadyExists
    );
    assert_eq!(store.get_bytes(&k).await.unwrap(), "first");
    // Keys land under the prefix.
    let listed = store
        .client()
        .list_objects_v2()
        .bucket("ifnonematch")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["lake/_lake/locks/p"]);
    assert_eq!(store.root_url(), "s3://ifnonematch/lake");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_carry_the_configured_encryption() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let _serial = common::SERIAL.lock().await;
    let store = common::fresh_store(&endpoint, "encrypted")
        .await
        .with_sse(Some(lake_aws::Sse::S3));
    let small = key("a/small.json");
    let big = key("a/big.bin");
    let copied = key("a/copy.json");
    store.put_bytes(&small, Bytes::from("{}")).await.unwrap();
    store
        .put(&big, conformance::generated(12 << 20, 1 << 20))
        .await
        .unwrap();
    store.copy(&small, &copied).await.unwrap();
    for k in [&small, &big, &copied] {
        let head = store
            .client()
            .head_object()
            .bucket("encrypted")
            .key(format!("lake/{k}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            head.server_side_encryption(),
            Some(&aws_sdk_s3::types::ServerSideEncryption::Aes256),
            "{k}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_objects_are_copied_in_parts() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let _serial = common::SERIAL.lock().await;
    // The 5 GiB threshold scaled down: 12 MiB copies as 5 + 5 + 2 MiB UploadPartCopy parts.
    let store = common::fresh_store(&endpoint, "copyparts")
        .await
        .with_copy_parts(6 << 20, 5 << 20);
    let (from, to) = (key("staging/big.bin"), key("raw/big.bin"));
    store
        .put(&from, conformance::generated(12 << 20, 1 << 20))
        .await
        .unwrap();
    store.copy(&from, &to).await.unwrap();
    assert_eq!(
        store.digest(&to).await.unwrap().sha256,
        conformance::generated_sha256(12 << 20, 1 << 20)
    );
    assert_eq!(open_uploads(&store).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_multipart_upload_is_aborted() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let _serial = common::SERIAL.lock().await;
    let store = common::fresh_store(&endpoint, "aborted").await;
    let k = key("raw/big/part.bin");
    store.put_bytes(&k, Bytes::from("old")).await.unwrap();
    // Three parts, then the source fails.
    let body: ByteStream = conformance::generated(16 << 20, 1 << 20)
        .chain(futures::stream::once(async {
            Err(Error::Source {
                source_name: "test".into(),
                message: "connection reset".into(),
                source: None,
            })
        }))
        .boxed();
    let e = store.put(&k, body).await.unwrap_err();
    assert!(
        e.to_string().contains("connection reset") || format!("{e:?}").contains("connection reset"),
        "{e:?}"
    );
    assert_eq!(open_uploads(&store).await, 0, "the upload was aborted");
    assert_eq!(
        store.get_bytes(&k).await.unwrap(),
        "old",
        "the previous object stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_multipart_upload_is_aborted() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let _serial = common::SERIAL.lock().await;
    let store = common::fresh_store(&endpoint, "dropped").await;
    let k = key("raw/big/part.bin");
    // Two parts' worth, then the source hangs: the put is cancelled once its upload is open.
    let body: ByteStream = conformance::generated(11 << 20, 1 << 20)
        .chain(futures::stream::pending())
        .boxed();
    let put = {
        let (store, k) = (store.clone(), k.clone());
        tokio::spawn(async move { store.put(&k, body).await })
    };
    let opened = std::time::Instant::now() + Duration::from_secs(20);
    while open_uploads(&store).await == 0 {
        assert!(
            std::time::Instant::now() < opened,
            "the put never opened a multipart upload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(1), async {
            while !put.is_finished() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .is_err(),
        "a put whose body hangs does not finish"
    );
    put.abort();
    assert!(put.await.unwrap_err().is_cancelled());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while open_uploads(&store).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped upload was never aborted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.head(&k).await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn a_large_read_is_fetched_in_parts_and_fails_if_the_object_is_replaced() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let _serial = common::SERIAL.lock().await;
    let store = common::fresh_store(&endpoint, "lake-replaced")
        .await
        .with_parts(lake_aws::MIN_PART, 1)
        .with_read_parts(1 << 20, 1);
    let k = Key::new("raw/x/big.bin").unwrap();
    let size = 3 * lake_aws::MIN_PART as u64 + 7;
    store
        .put(&k, conformance::generated(size, 64 << 10))
        .await
        .unwrap();
    // Whole and in order.
    let d = store.digest(&k).await.unwrap();
    assert_eq!(d.sha256, conformance::generated_sha256(size, 64 << 10));
    // Replaced after the first part was read: the next part is refused (If-Match), so the
    // reader never gets a mix of two versions.
    let mut got = store.get(&k).await.unwrap();
    let first = got.body.next().await.unwrap().unwrap();
    assert_eq!(first.len(), 1 << 20);
    store
        .put(&k, conformance::generated(size + 1, 64 << 10))
        .await
        .unwrap();
    let mut err = None;
    while let Some(chunk) = got.body.next().await {
        if let Err(e) = chunk {
            err = Some(e);
            break;
        }
    }
    let err = err.expect("the read fails");
    assert!(
        format!("{err:#}").contains("replaced while it was being read")
            || lake_core::run::error_chain(&err).contains("replaced while it was being read"),
        "{}",
        lake_core::run::error_chain(&err)
    );
}

#[tokio::test]
async fn a_download_writes_parts_at_their_offsets_and_leaves_nothing_on_failure() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let _serial = common::SERIAL.lock().await;
    let store = common::fresh_store(&endpoint, "lake-download")
        .await
        .with_download_parts(1 << 20, 3);
    let k = Key::new("raw/x/big.bin").unwrap();
    // Parts of 1 MiB, the last one short: written out of order by three GETs at once.
    let size = 5 * (1 << 20) + 7;
    store
        .put(&k, conformance::generated(size, 64 << 10))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    assert_eq!(store.download(&k, &path).await.unwrap(), size);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes)),
        conformance::generated_sha256(size, 64 << 10)
    );
    // The file cannot be created (its folder is missing): an error naming the path, and the
    // download leaves no file behind.
    let nowhere = dir.path().join("missing").join("big.bin");
    let err = store.download(&k, &nowhere).await.unwrap_err();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &nowhere),
        "{err:?}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("big.bin")]);
}

#[tokio::test]
async fn multipart_puts_split_chunks_of_any_size_into_parts() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let _serial = common::SERIAL.lock().await;
    let store = common::fresh_store(&endpoint, "lake-chunks")
        .await
        .with_parts(lake_aws::MIN_PART, 2);
    let part = lake_aws::MIN_PART as u64;
    // One chunk larger than two parts; chunks that straddle part boundaries; a body that is
    // exactly two parts.
    let one_chunk = 2 * part + 3;
    let cases = [
        (one_chunk, one_chunk as usize),
        (3 * part + 11, 3 << 20),
        (2 * part, 1 << 20),
    ];
    for (i, (size, chunk)) in cases.into_iter().enumerate() {
        let k = key(&format!("raw/x/case{i}.bin"));
        let meta = store
            .put(&k, conformance::generated(size, chunk))
            .await
            .unwrap();
        assert_eq!(meta.size, size, "case {i}");
        let d = store.digest(&k).await.unwrap();
        assert_eq!(d.size, size, "case {i}");
        assert_eq!(
            d.sha256,
            conformance::generated_sha256(size, chunk),
            "case {i}"
        );
    }
    assert_eq!(open_uploads(&store).await, 0);
}
