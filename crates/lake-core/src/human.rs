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

/// A measured duration, to the minute past an hour: `45s`, `3m05s`, `27h02m`.
pub fn age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// A duration as lake.toml writes it, in its largest exact unit: `7d`, `12h`, `90m`, `45s`.
pub fn duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lake_toml_durations_print_as_written() {
        for written in ["7d", "12h", "36h", "90m", "45s"] {
            let d = crate::config::parse_duration(written).unwrap();
            assert_eq!(super::duration(d), written);
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(super::bytes(17), "17 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::millis(Some(250)), "250ms");
        assert_eq!(super::millis(Some(1500)), "1.5s");
        assert_eq!(super::millis(None), "-");
    }
}

/// `text` safe to print on a terminal: control characters (escape sequences from a server's
/// error page or from data, a carriage return that overwrites a line) written as `\x1b`, `\r`
/// and so on. Newlines and tabs stay.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\r' => out.push_str("\\r"),
            c if unsafe_char(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod printable_tests {
    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(
            super::printable("a\u{1b}[2Jb\rc\u{7}\u{9b}d\n\te"),
            "a\\x1b[2Jb\\rc\\x07\\x9bd\n\te"
        );
        assert!(matches!(
            super::printable("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
