//! A 64 MiB object through the filesystem store with bounded memory.
//!
//! Its own test binary so no other test shares the process: the peak resident set size
//! (VmHWM) is reset through /proc/self/clear_refs before the transfer and read after it.

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "current_thread")]
async fn big_object_streams_with_bounded_memory() {
    use lake_local::LocalZoneStore;
    use lake_testing::conformance;

    /// A `kB` field of /proc/self/status (`VmHWM:`, `VmRSS:`).
    fn status_kib(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
    }

    let dir = tempfile::tempdir().unwrap();
    let store = LocalZoneStore::filesystem(dir.path()).unwrap();
    // Warm up allocator and runtime with a small transfer first.
    conformance::big_object(&store, 4 * 1024 * 1024).await;
    let reset = std::fs::write("/proc/self/clear_refs", "5");
    if lake_testing::skip_unless(
        "LAKE_REQUIRE_CLEAR_REFS",
        reset
            .err()
            .map(|e| format!("the peak RSS cannot be reset (/proc/self/clear_refs: {e})")),
    ) {
        return;
    }
    let before = status_kib("VmRSS:");
    conformance::big_object(&store, conformance::BIG_OBJECT).await;
    let peak = status_kib("VmHWM:");
    let grew_mib = peak.saturating_sub(before) / 1024;
    eprintln!("64 MiB put + get: peak RSS grew by {grew_mib} MiB");
    assert!(
        grew_mib < 32,
        "putting and reading back 64 MiB grew the peak RSS by {grew_mib} MiB; streaming should keep it to a few parts"
    );
}
