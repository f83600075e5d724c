//! Sizes and durations as people read them, the same in the CLI and `lake serve`.

/// `1.5 KiB`, `17 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `250ms`, `1.5s`, `-` when unknown.
pub fn millis(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_and_durations() {
        assert_eq!(super::bytes(17), "17 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::millis(Some(250)), "250ms");
        assert_eq!(super::millis(Some(1500)), "1.5s");
        assert_eq!(super::millis(None), "-");
    }
}
