//! A 100 MiB streamed put to S3, then a read of it in concurrent ranged parts and a download
//! to a file, with bounded memory. Alone in its test binary, so the process's peak RSS
//! (VmHWM) measures these only.

mod common;

use lake_core::zone::{Key, ZoneStore, ZoneStoreExt};
use lake_testing::conformance;

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_100_mib_put_streams_in_bounded_memory() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let store = common::fresh_store(&endpoint, "memory").await;
    let size: u64 = 100 << 20;
    let k = Key::new("raw/big/ingest_date=2024-01-01/big.bin").unwrap();
    let before = peak_rss_kib();
    let meta = store
        .put(&k, conformance::generated(size, 256 << 10))
        .await
        .unwrap();
    let grew_mib = (peak_rss_kib() - before) / 1024;
    assert_eq!(meta.size, size);
    assert_eq!(store.head(&k).await.unwrap().size, size);
    // 5 MiB parts, 4 in flight, plus the one being filled: about 25 MiB, far below the body.
    assert!(
        grew_mib < 64,
        "peak RSS grew by {grew_mib} MiB for a 100 MiB put"
    );
    // The read comes back in order from parts fetched 8 at a time, byte for byte.
    let d = store.digest(&k).await.unwrap();
    assert_eq!(d.sha256, conformance::generated_sha256(size, 256 << 10));
    let grew_mib = (peak_rss_kib() - before) / 1024;
    assert!(
        grew_mib < 64,
        "peak RSS grew by {grew_mib} MiB for a 100 MiB put and get"
    );
    // A download to a file: 16 MiB parts, 8 at once, each written as it arrives.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    assert_eq!(store.download(&k, &path).await.unwrap(), size);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    let grew_mib = (peak_rss_kib() - before) / 1024;
    assert!(
        grew_mib < 64,
        "peak RSS grew by {grew_mib} MiB for a 100 MiB put, get and download"
    );
}
