//! lake.toml test helpers: parse a text with a registry, and check its diagnostics by key and
//! line.

use lake_core::config::{ConfigFile, Diagnostic, Pipeline};
use lake_core::kinds::Kinds;
use lake_core::{Error, Result};

/// `text` as a lake.toml at `/project/lake.toml`, validated with `env` for `backends`.
pub fn pipeline(text: &str, env: Option<&str>, backends: &Kinds) -> Result<Pipeline> {
    ConfigFile::parse("lake.toml", "/project".into(), text.to_owned())?.pipeline(env, backends)
}

/// Every problem of an invalid `text`; panics when it is valid or fails otherwise.
pub fn diagnostics(text: &str, backends: &Kinds) -> Vec<Diagnostic> {
    match pipeline(text, None, backends) {
        Err(Error::Config { diagnostics }) => diagnostics.0,
        Err(other) => panic!("expected config diagnostics, got {other}"),
        Ok(_) => panic!("expected an invalid config"),
    }
}

/// The one diagnostic whose key is `key`.
pub fn find<'a>(d: &'a [Diagnostic], key: &str) -> &'a Diagnostic {
    d.iter()
        .find(|d| d.key == key)
        .unwrap_or_else(|| panic!("no diagnostic for {key} in {d:#?}"))
}

/// Each `(key, line, text)` is reported at that line with a message containing that text.
pub fn expect_each(d: &[Diagnostic], expect: &[(&str, usize, &str)]) {
    for (key, line, msg) in expect {
        let got = find(d, key);
        assert_eq!(got.line, *line, "line of {key}: {got}");
        assert!(
            got.message.contains(msg),
            "{key}: {:?} should contain {msg:?}",
            got.message
        );
    }
}
