//! Filesystem zone store throughput and memory, against `cp` in the same run.
//!
//! `cargo bench --bench zone_store [-- SIZE_MIB]` (default 512). Prints MB/s for a streamed put
//! and a streamed get of one object, `cp` of the same bytes for comparison, and the peak RSS
//! growth during each transfer (Linux: VmHWM reset through /proc/self/clear_refs).

use std::time::Instant;

use futures::TryStreamExt;
use lake::core::ZoneStore;
use lake::core::zone::Key;
use lake::local::LocalZoneStore;
use lake_testing::conformance::generated;

fn status_kib(field: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn reset_peak() -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    status_kib("VmRSS:")
}

fn peak_growth_mib(base: Option<u64>) -> String {
    match (base, status_kib("VmHWM:")) {
        (Some(b), Some(p)) => format!("{} MiB", p.saturating_sub(b) / 1024),
        _ => "n/a".into(),
    }
}

fn main() {
    let mib: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(512);
    let size = mib * 1024 * 1024;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = LocalZoneStore::filesystem(dir.path().join("lake")).unwrap();
    let key = Key::new("raw/bench/ingest_date=2024-01-01/big.bin").unwrap();
    let mb = size as f64 / 1e6;

    rt.block_on(async {
        let base = reset_peak();
        let t = Instant::now();
        store.put(&key, generated(size, 256 * 1024)).await.unwrap();
        let put = t.elapsed();
        let put_rss = peak_growth_mib(base);

        let base = reset_peak();
        let t = Instant::now();
        let mut body = store.get(&key).await.unwrap().body;
        let mut n = 0u64;
        while let Some(c) = body.try_next().await.unwrap() {
            n += c.len() as u64;
        }
        assert_eq!(n, size);
        let get = t.elapsed();
        let get_rss = peak_growth_mib(base);

        let src = store.local_path(key.as_str()).unwrap();
        let dst = dir.path().join("copy.bin");
        let t = Instant::now();
        let ok = std::process::Command::new("cp")
            .arg(&src)
            .arg(&dst)
            .status()
            .unwrap()
            .success();
        let cp = t.elapsed();
        assert!(ok);

        println!(
            "zone_store bench: {mib} MiB object, filesystem store in {}",
            dir.path().display()
        );
        println!(
            "  lake put (stream): {:>8.1} MB/s  {:>6.2}s  peak RSS +{put_rss}",
            mb / put.as_secs_f64(),
            put.as_secs_f64()
        );
        println!(
            "  lake get (stream): {:>8.1} MB/s  {:>6.2}s  peak RSS +{get_rss}",
            mb / get.as_secs_f64(),
            get.as_secs_f64()
        );
        println!(
            "  cp (same file):    {:>8.1} MB/s  {:>6.2}s",
            mb / cp.as_secs_f64(),
            cp.as_secs_f64()
        );
    });
}
