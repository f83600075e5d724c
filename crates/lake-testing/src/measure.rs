//! Benchmark support: the wall time and peak RSS of one process, from GNU time.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// What one process cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measure {
    /// Wall-clock seconds.
    pub wall: f64,
    /// Peak resident set, KiB.
    pub rss_kib: u64,
}

impl Measure {
    /// Peak RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// Run `cmd` (its program, arguments, environment and working directory) under `/usr/bin/time -f "%e %M"`;
/// panics with its output if it fails.
pub fn timed(cmd: &mut Command) -> Measure {
    static N: AtomicU64 = AtomicU64::new(0);
    let report = std::env::temp_dir().join(format!(
        "lake-time-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let mut t = Command::new("/usr/bin/time");
    t.arg("-f")
        .arg("%e %M")
        .arg("-o")
        .arg(&report)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        t.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    let out = t.output().expect("run /usr/bin/time");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&report).expect("GNU time's report");
    let _ = std::fs::remove_file(&report);
    let mut parts = text.lines().last().unwrap_or_default().split_whitespace();
    Measure {
        wall: parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(f64::NAN),
        rss_kib: parts.next().and_then(|s| s.parse().ok()).unwrap_or(0),
    }
}

/// The median wall time of `v`, with the largest peak RSS of them.
pub fn median(mut v: Vec<Measure>) -> Measure {
    v.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    let rss = v.iter().map(|m| m.rss_kib).max().unwrap_or(0);
    let mid = v.swap_remove(v.len() / 2);
    Measure {
        wall: mid.wall,
        rss_kib: rss,
    }
}

/// A benchmark's setting from the environment (`LAKE_BENCH_ROWS`), else `default`.
pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The `lake` binary a benchmark measures: `LAKE_BIN` (another build, such as the `dist`
/// one), else `built` (the bench's own, `env!("CARGO_BIN_EXE_lake")`).
pub fn lake_bin(built: &str) -> std::path::PathBuf {
    std::env::var_os("LAKE_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| built.into())
}

/// The benches' seeded generator (SplitMix64): reproducible rows from a seed, the same
/// sequence on every machine and version (the figures in BENCHMARKS.md name their seeds).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
