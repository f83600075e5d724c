//! `[engine]`: lake-local's settings table, checked with lines when lake.toml is loaded and
//! read back as an [`EngineSpec`].

use std::path::PathBuf;

use lake_local::{EngineSettings, EngineSpec, Verify};
use lake_testing::config::{diagnostics, expect_each, pipeline};

fn kinds() -> lake_core::kinds::Kinds {
    lake_testing::bare().settings(EngineSettings)
}

#[test]
fn engine_limits_are_read_with_their_units_and_paths() {
    let text = "[lake]\nname = \"e\"\n\n[engine]\nmemory_limit = \"512MiB\"\nthreads = 2\nspill_dir = \"spill\"\nverify = \"size\"\n";
    let p = pipeline(text, None, &kinds()).unwrap();
    assert_eq!(
        EngineSpec::of(&p),
        EngineSpec {
            memory_limit: Some(512 << 20),
            threads: Some(2),
            spill_dir: Some(PathBuf::from("/project/spill")),
            verify: Verify::Size,
        }
    );
    // No table: the defaults.
    let p = pipeline("[lake]\nname = \"e\"\n", None, &kinds()).unwrap();
    assert_eq!(EngineSpec::of(&p), EngineSpec::default());
    assert_eq!(EngineSpec::of(&p).verify, Verify::Sha256);
}

#[test]
fn each_bad_engine_key_is_reported_at_its_line() {
    let text = "[lake]\nname = \"e\"\n\n[engine]\nmemory_limit = \"lots\"\nthreads = 0\nverify = \"md5\"\n";
    let d = diagnostics(text, &kinds());
    expect_each(
        &d,
        &[
            ("engine.memory_limit", 5, "lots"),
            ("engine.threads", 6, "at least 1"),
            ("engine.verify", 7, "\"md5\""),
        ],
    );
    let d = diagnostics("[lake]\nname = \"e\"\n[engine]\nthreds = 2\n", &kinds());
    expect_each(&d, &[("engine.threds", 4, "unknown field")]);
}

#[test]
fn a_program_without_the_engine_settings_reports_the_table() {
    let d = diagnostics(
        "[lake]\nname = \"e\"\n[engine]\nthreads = 2\n",
        &lake_testing::bare(),
    );
    expect_each(&d, &[("engine", 3, "unknown table")]);
}
