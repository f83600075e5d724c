//! `[sinks.<name>] kind = "postgres"`: its keys checked by the kind, each problem at its line.

use lake_core::Error;
use lake_core::config::{Diagnostic, Pipeline, show_url};
use lake_postgres::{PostgresConfig, PostgresKind};
use lake_testing::config::expect_each;

fn kinds() -> lake_core::kinds::Kinds {
    lake_testing::backends().sink(PostgresKind)
}

fn pipeline(text: &str) -> Result<Pipeline, Error> {
    lake_testing::config::pipeline(text, None, &kinds())
}

fn diagnostics(text: &str) -> Vec<Diagnostic> {
    lake_testing::config::diagnostics(text, &kinds())
}

#[test]
fn sinks_are_checked_with_their_lines() {
    let text = r#"[lake]
name = "s"

[steps.agg]
kind = "command"
command = ["true"]
output = "refined/agg"

[sinks.a]
kind = "postgres"
url = "${env:PG_URL}"
from = "refined/agg"
table = "Credit.ByPurpose"
tabel = "typo"

[sinks.b]
kind = "postgres"
url = "${env:PG_URL"
from = "refined/nothing"
table = "t"
mode = "upsert"

[sinks.c]
kind = "postgres"
url = "postgres://u:hunter2@db/x"
from = "refined/agg"
table = "public.t"
mode = "append"
key = ["id"]
lineage_table = "a.b.c"
"#;
    let d = diagnostics(text);
    let expect = [
        ("sinks.a.tabel", 14, "unknown field `tabel`"),
        ("sinks.b.url", 18, "${env:"),
        ("sinks.b.from", 19, "no step writes refined/nothing"),
        ("sinks.b", 16, "needs `key`"),
        ("sinks.c.key", 29, "applies to mode = \"upsert\" only"),
        ("sinks.c.lineage_table", 30, "not a table name"),
    ];
    expect_each(&d, &expect);
    assert_eq!(d.len(), expect.len(), "{d:#?}");

    // Its own keys checked once the unknown one is gone; then two sinks of one table.
    let d = diagnostics(&text.replace("tabel = \"typo\"\n", ""));
    let expect = [
        ("sinks.a.table", 13, "lowercase SQL identifier"),
        ("sinks.b.url", 17, "${env:"),
        ("sinks.b.from", 18, "no step writes refined/nothing"),
        ("sinks.b", 15, "needs `key`"),
        ("sinks.c.key", 28, "applies to mode = \"upsert\" only"),
        ("sinks.c.lineage_table", 29, "not a table name"),
    ];
    expect_each(&d, &expect);
    assert_eq!(d.len(), expect.len(), "{d:#?}");
    let twice = r#"[lake]
name = "s"

[steps.agg]
kind = "command"
command = ["true"]
output = "refined/agg"

[sinks.a]
kind = "postgres"
url = "${env:PG_URL}"
from = "refined/agg"
table = "t"

[sinks.b]
kind = "postgres"
url = "${env:PG_URL}"
from = "refined/agg"
table = "public.t"
"#;
    let d = diagnostics(twice);
    expect_each(&d, &[("sinks.b.table", 19, "also loaded by sink \"a\"")]);
    assert_eq!(d.len(), 1, "{d:#?}");

    // A valid sink: its step, mode and table; a password written in the URL is not shown.
    let ok = text
        .replace("tabel = \"typo\"\n", "")
        .replace("Credit.ByPurpose", "credit.by_purpose")
        .replace("${env:PG_URL\"", "${env:PG_URL}\"")
        .replace("refined/nothing", "refined/agg")
        .replace("mode = \"upsert\"", "mode = \"upsert\"\nkey = [\"id\"]")
        .replace(
            "key = [\"id\"]\nlineage_table = \"a.b.c\"",
            "lineage_table = \"a.lineage\"",
        )
        .replace("table = \"t\"", "table = \"u\"");
    let p = pipeline(&ok).unwrap();
    let pg = |name: &str| {
        p.sinks[name]
            .config
            .downcast::<PostgresConfig>()
            .unwrap()
            .clone()
    };
    assert_eq!(p.sinks["a"].step, "agg");
    assert_eq!(pg("a").table.to_string(), "credit.by_purpose");
    assert_eq!(pg("b").table.to_string(), "public.u");
    assert_eq!(pg("b").key, ["id"]);
    assert_eq!(show_url(&pg("c").url), "postgres://u:***@db/x");
    assert_eq!(show_url(&pg("a").url), "${env:PG_URL}");
    assert_eq!(
        p.sinks["c"].config.describe(),
        "public.t (append) at postgres://u:***@db/x; lineage → a.lineage"
    );
    let json = serde_json::to_string(&p).unwrap();
    assert!(!json.contains("hunter2"), "{json}");
}
