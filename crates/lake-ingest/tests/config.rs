//! The source kinds of lake-ingest check their own keys of `[sources.*]`, each problem at its
//! line and key.

use lake_core::Error;
use lake_core::config::{Diagnostic, Pipeline};
use lake_ingest::{FileKind, HttpKind, HttpSpec, KaggleKind};
use lake_testing::config::{expect_each, find};

fn kinds() -> lake_core::kinds::Kinds {
    lake_testing::bare()
        .source(FileKind)
        .source(HttpKind)
        .source(KaggleKind)
}

fn pipeline(text: &str, env: Option<&str>) -> Result<Pipeline, Error> {
    lake_testing::config::pipeline(text, env, &kinds())
}

fn diagnostics(text: &str) -> Vec<Diagnostic> {
    lake_testing::config::diagnostics(text, &kinds())
}

#[test]
fn a_file_source_needs_a_path_and_kaggle_a_dataset() {
    let d = diagnostics(
        "[lake]\nname = \"x\"\n\n[sources.s]\nkind = \"file\"\n\n[sources.k]\nkind = \"kaggle\"\ndataset = \"no-slash\"\nfiles = [\"../x\"]\n",
    );
    expect_each(
        &d,
        &[
            ("sources.s", 4, "needs `path`"),
            ("sources.k.dataset", 9, "not a Kaggle dataset"),
            ("sources.k.files[0]", 10, "not a file of the dataset"),
        ],
    );
    assert_eq!(d.len(), 3, "{d:#?}");
}

#[test]
fn http_sources_are_checked() {
    let ok = r#"[lake]
name = "h"

[sources.meteo]
kind = "http"
url = "https://archive-api.open-meteo.com/v1/archive"
query = { start_date = "{start}", end_date = "{end:%Y-%m-%d}", key = "${env:KEY}" }
headers = { X-Token = "${env:TOKEN}" }
auth = { username = "me", password = "${env:PW}" }
read_timeout = "30s"
"#;
    let p = pipeline(ok, None).unwrap();
    let h = p.sources["meteo"].config.downcast::<HttpSpec>().unwrap();
    assert_eq!(h.filename.as_written(), "meteo.json");
    assert_eq!(h.transfer.read_timeout.as_secs(), 30);
    assert_eq!(h.transfer.connect_timeout.as_secs(), 10);
    assert_eq!(h.transfer.max_attempts, 5);
    assert_eq!(h.transfer.max_bytes, 10 << 30);
    assert!(!h.transfer.allow_private_redirects);
    assert!(matches!(h.auth, Some(lake_ingest::HttpAuth::Basic { .. })));
    // Secrets stay templates in the plan.
    let json = serde_json::to_string(&p).unwrap();
    assert!(json.contains("${env:PW}") && json.contains("${env:TOKEN}"));

    let bad = r#"[lake]
name = "h"

[sources.a]
kind = "http"
url = "ftp://x/{day}"
path = "x"

[sources.b]
kind = "http"
url = "https://x/{start:%Q}?k=${env:K}"
auth = { bearer = "t", username = "u" }
max_attempts = 0
filename = "../up"

[sources.c]
kind = "file"
path = "x.csv"
url = "https://x"
"#;
    let d = diagnostics(bad);
    let expect = [
        ("sources.a.path", 7, "unknown field `path`"),
        ("sources.b.url", 11, "not in the URL"),
        ("sources.b.auth", 12, "auth is { bearer"),
        ("sources.b.max_attempts", 13, "at least 1"),
        ("sources.b.filename", 14, "not a file name"),
        ("sources.c.url", 19, "unknown field `url`"),
    ];
    expect_each(&d, &expect);
    // An unknown key stops its table's other checks: the others once it is gone.
    let d = diagnostics(&bad.replace("path = \"x\"\n\n[sources.b]", "\n[sources.b]"));
    expect_each(
        &d,
        &[("sources.a.url", 6, "not an http:// or https:// URL")],
    );
    let d = diagnostics(&bad.replace("?k=${env:K}", ""));
    assert!(
        find(&d, "sources.b.url")
            .message
            .contains("not a date format")
    );
    let d = diagnostics(
        &bad.replace("ftp://x/{day}", "https://x/{day}")
            .replace("path = \"x\"\n\n[sources.b]", "\n[sources.b]"),
    );
    assert!(
        find(&d, "sources.a.url")
            .message
            .contains("unknown placeholder {day}")
    );
}
