//! lake.toml: round trips and every validation error, each naming its line and key.

use lake_core::Error;
use lake_core::config::{ConfigFile, Diagnostic, LakeFile, Pipeline};

use lake_testing::config::expect_each;

fn parse(text: &str) -> Result<ConfigFile, Error> {
    ConfigFile::parse("lake.toml", "/project".into(), text.to_owned())
}

fn pipeline(text: &str, env: Option<&str>) -> Result<Pipeline, Error> {
    lake_testing::config::pipeline(text, env, &lake_testing::backends())
}

fn diagnostics(text: &str) -> Vec<Diagnostic> {
    lake_testing::config::diagnostics(text, &lake_testing::backends())
}

const FULL: &str = r#"[lake]
name = "credit"
root = "lake"
backend = "local"
lock_ttl = "2h"

[env.aws]
root = "s3://my-bucket/credit"

[sources.credit]
kind = "file"
path = "data/*.csv"

[steps.clean]
kind = "command"
command = ["python3", "clean.py", "--date", "{date}"]
inputs = ["raw/credit"]
output = "trusted/credit"

[steps.report]
kind = "command"
command = ["python3", "report.py"]
inputs = ["trusted/credit"]
output = "refined/report"
depends_on = ["clean"]
env = { TOKEN = "${env:REPORT_TOKEN}" }
timeout = "30m"
"#;

#[test]
fn full_example_validates_in_order() {
    let p = pipeline(FULL, None).unwrap();
    assert_eq!(p.order, ["clean", "report"]);
    assert_eq!(p.steps["report"].line, 20);
    assert_eq!(
        p.steps["report"].depends_on.iter().collect::<Vec<_>>(),
        ["clean"]
    );
    assert_eq!(p.root.to_string(), "/project/lake");
    assert_eq!(p.lock_ttl.as_secs(), 7200);
    assert_eq!(p.steps["report"].timeout.unwrap().as_secs(), 1800);
}

#[test]
fn round_trips_through_toml() {
    let model = parse(FULL).unwrap().model;
    let again: LakeFile = toml::from_str(&toml::to_string(&model).unwrap()).unwrap();
    assert_eq!(model, again);
    // And the re-serialised text validates to the same pipeline.
    let p2 = pipeline(&toml::to_string(&model).unwrap(), None).unwrap();
    assert_eq!(p2.order, ["clean", "report"]);
}

#[test]
fn env_overrides_lake_keys() {
    let p = pipeline(FULL, Some("aws")).unwrap();
    assert_eq!(p.root.to_string(), "s3://my-bucket/credit");
    assert_eq!(p.env.as_deref(), Some("aws"));
    let err = pipeline(FULL, Some("gcp")).unwrap_err();
    assert!(err.is_usage());
    assert!(
        err.to_string().contains("no [env.gcp]") && err.to_string().contains("aws"),
        "{err}"
    );
}

#[test]
fn unknown_key_names_its_line_and_key() {
    let text = "[lake]\nname = \"x\"\n\n[steps.a]\nkind = \"command\"\ncommand = [\"true\"]\ncomand = [\"typo\"]\n";
    let d = diagnostics(text);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].line, 7, "{d:?}");
    assert_eq!(d[0].key, "steps.a.comand");
    assert!(
        d[0].message.contains("unknown field `comand`"),
        "{}",
        d[0].message
    );
    assert!(
        d[0].to_string()
            .starts_with("lake.toml:7:1: steps.a.comand: "),
        "{}",
        d[0]
    );
}

#[test]
fn unknown_kind_names_its_line() {
    let d = diagnostics("[lake]\nname = \"x\"\n[sources.s]\nkind = \"ftp\"\n");
    assert_eq!(
        (d[0].line, d[0].key.as_str()),
        (4, "sources.s.kind"),
        "{d:?}"
    );
    assert!(d[0].message.contains("ftp"));
}

#[test]
fn toml_syntax_error_has_a_line() {
    let d = diagnostics("[lake]\nname = \"x\"\nroot = \n");
    assert_eq!(d[0].line, 3, "{d:?}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let text = r#"[lake]
name = "bad name"
root = "ftp://host/x"
lock_ttl = "soon"

[env."bad env"]
root = "x"

[sources.s]
kind = "file"

[steps.a]
kind = "command"
command = []
inputs = ["raw/nope", "trusted/nobody", "lake/x"]
output = "raw/a"
depends_on = ["ghost", "a"]
env = { "1BAD" = "x", LAKE_DATE = "y", OK = "${HOME}" }
timeout = "10 minutes"

[steps.b]
kind = "command"
command = ["true"]
output = "refined/same"

[steps.c]
kind = "command"
command = ["true"]
output = "refined/same"
"#;
    let d = diagnostics(text);
    let expect = [
        ("lake.name", 2, "not a valid pipeline name"),
        ("lake.root", 3, "unsupported scheme"),
        ("lake.lock_ttl", 4, "not a duration"),
        ("env.bad env", 6, "not a valid environment name"),
        ("steps.a.command", 14, "needs `command`"),
        ("steps.a.inputs[0]", 15, "unknown source \"nope\""),
        ("steps.a.inputs[1]", 15, "no step writes trusted/nobody"),
        ("steps.a.inputs[2]", 15, "unknown zone \"lake\""),
        ("steps.a.output", 16, "raw/ is written only by sources"),
        ("steps.a.depends_on[0]", 17, "unknown step \"ghost\""),
        ("steps.a.depends_on[1]", 17, "cannot depend on itself"),
        (
            "steps.a.env.1BAD",
            18,
            "not a valid environment variable name",
        ),
        ("steps.a.env.LAKE_DATE", 18, "set by lake itself"),
        (
            "steps.a.env.OK",
            18,
            "unsupported reference: use `${env:NAME}`",
        ),
        ("steps.a.timeout", 19, "not a duration"),
        ("steps.c.output", 29, "also written by step \"b\""),
    ];
    expect_each(&d, &expect);
    assert_eq!(d.len(), expect.len(), "{d:#?}");
    // Sorted by line, all in one error.
    assert!(d.windows(2).all(|w| w[0].line <= w[1].line));
}

#[test]
fn cycles_are_named_as_a_path_with_lines() {
    let text = r#"[lake]
name = "x"

[steps.a]
kind = "command"
command = ["true"]
inputs = ["trusted/b"]
output = "trusted/a"

[steps.b]
kind = "command"
command = ["true"]
depends_on = ["a"]
output = "trusted/b"

[steps.c]
kind = "command"
command = ["true"]
"#;
    let d = diagnostics(text);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(
        d[0].message,
        "dependency cycle: a (line 4) → b (line 10) → a (line 4)"
    );
    assert_eq!((d[0].line, d[0].key.as_str()), (4, "steps.a"));
}

#[test]
fn spark_and_copy_steps_are_checked() {
    let text = r#"[lake]
name = "c"

[steps.s]
kind = "spark"
args = ["{date}"]

[steps.j]
kind = "spark"
script = "s3://b/x.py"
jar = "s3://b/x.jar"

[steps.c]
kind = "copy"
inputs = ["raw/a", "raw/b"]
output = "trusted/a"
sql = "SELECT 1"
"#;
    let d = diagnostics(text);
    expect_each(
        &d,
        &[
            ("steps.s", 4, "needs `script`"),
            ("steps.j.jar", 11, "not both"),
            ("steps.c.inputs", 15, "copies one input"),
            ("steps.c.sql", 17, "applies to kind = \"sql\""),
        ],
    );
    let ok = "[lake]\nname = \"c\"\n[steps.s]\nkind = \"spark\"\njar = \"s3://b/x.jar\"\nclass = \"a.Main\"\nargs = [\"--date\", \"{date}\"]\nspark_args = [\"--executor-memory\", \"4g\"]\n";
    let p = pipeline(ok, None).unwrap();
    assert_eq!(p.steps["s"].kind_name(), "spark");
}

#[test]
fn roots() {
    use lake_core::config::Root;
    let base = std::path::Path::new("/p");
    assert_eq!(
        Root::parse("s3://b/x/y/", base).unwrap().to_string(),
        "s3://b/x/y"
    );
    assert_eq!(
        Root::parse("file:///abs", base).unwrap().to_string(),
        "/abs"
    );
    assert!(Root::parse("file://rel", base).is_err());
    assert!(Root::parse("s3://", base).is_err());
}

#[test]
fn sql_steps_and_their_inputs_are_checked() {
    let text = r#"[lake]
name = "s"

[sources.credit]
kind = "file"
path = "x.csv"

[steps.a]
kind = "sql"
inputs = [{ path = "raw/credit@date", name = "c", null_values = ["NA"] }, "raw/credit"]
output = "trusted/a"
sql = """
SELECT * FROM c
"""
partition_by = ["purpose"]
mode = "overwrite_partitions"
expect = ["age > 0"]
max_rejected = 0.1
"#;
    let p = pipeline(text, None).unwrap();
    let a = &p.steps["a"];
    assert_eq!(a.inputs[0].table, "c");
    assert!(a.inputs[0].at_date);
    assert_eq!(a.inputs[0].format.null_values, ["NA"]);
    assert!(a.inputs[0].format.snake_case);
    assert_eq!(a.inputs[1].table, "credit");
    assert!(!a.inputs[1].at_date);
    assert_eq!(a.mode, lake_core::config::WriteMode::OverwritePartitions);
    match &a.kind {
        lake_core::config::StepSpecKind::Sql {
            sql,
            sql_line,
            partition_by,
            expect,
            max_rejected,
        } => {
            assert_eq!(sql.trim(), "SELECT * FROM c");
            assert_eq!(*sql_line, 12);
            assert_eq!(partition_by, &["purpose"]);
            assert_eq!(expect[0].line, 17);
            assert_eq!(*max_rejected, 0.1);
        }
        other => panic!("{other:?}"),
    }

    let bad = r#"[lake]
name = "s"

[sources.credit]
kind = "file"
path = "x.csv"

[steps.a]
kind = "sql"
inputs = ["trusted/b@date", { path = "raw/credit", format = "csv", json_path = "x" }, "raw/credit@day", { path = "raw/credit", name = "z", format = "xml" }]
sql = ""
partition_by = ["Purpose"]
max_rejected = 5
command = ["x"]

[steps.b]
kind = "command"
command = ["true"]
output = "trusted/b"
expect = ["x > 1"]
mode = "sometimes"
"#;
    // An unknown mode is a serde error, reported alone; check it first.
    let e = pipeline(bad, None).unwrap_err().to_string();
    assert!(e.contains("steps.b.mode") && e.contains("sometimes"), "{e}");
    let d = diagnostics(&bad.replace("mode = \"sometimes\"\n", ""));
    let expect = [
        ("steps.a", 8, "needs `sql`"),
        ("steps.a.inputs[0]", 10, "@date selects a raw window"),
        ("steps.a.inputs[3].format", 10, "unknown format \"xml\""),
        (
            "steps.a.inputs[1].json_path",
            10,
            "applies to format = \"json\" only",
        ),
        ("steps.a.inputs[2]", 10, "unknown selector @day"),
        (
            "steps.a.partition_by[0]",
            12,
            "lowercase output column names",
        ),
        ("steps.a.max_rejected", 13, "not a share of rows"),
        (
            "steps.a.command",
            14,
            "applies to kind = \"command\" steps only",
        ),
        ("steps.b.expect", 20, "applies to kind = \"sql\" steps only"),
    ];
    expect_each(&d, &expect);
    // A sql step without output is reported on the step too.
    assert!(
        d.iter()
            .any(|x| x.key == "steps.a" && x.message.contains("needs `output`"))
    );
}

/// Names become folder names and key segments: more than 255 bytes is refused at validation,
/// not at run time with "File name too long".
#[test]
fn names_are_at_most_255_bytes() {
    let long = "s".repeat(256);
    let d = diagnostics(&format!(
        "[lake]\nname = \"x\"\n[steps.{long}]\nkind = \"command\"\ncommand = [\"true\"]\n"
    ));
    let k = format!("steps.{long}");
    expect_each(&d, &[(k.as_str(), 3, "at most 255 bytes")]);
    let ok = "s".repeat(255);
    pipeline(
        &format!("[lake]\nname = \"x\"\n[steps.{ok}]\nkind = \"command\"\ncommand = [\"true\"]\n"),
        None,
    )
    .unwrap();
}

#[test]
fn a_sink_of_an_unknown_kind_is_named_at_its_line() {
    let text = r#"[lake]
name = "s"

[steps.agg]
kind = "command"
command = ["true"]
output = "refined/agg"

[sinks.a]
kind = "mysql"
url = "${env:PG_URL}"
from = "refined/nothing"
"#;
    let d = diagnostics(text);
    let expect = [
        ("sinks.a.kind", 10, "unknown sink kind \"mysql\""),
        ("sinks.a.from", 12, "no step writes refined/nothing"),
    ];
    expect_each(&d, &expect);
    assert_eq!(d.len(), expect.len(), "{d:#?}");
}

/// A password holding the characters that end an authority elsewhere (`?`, `/`, `#`, `@`)
/// is masked whole: from `://` to the last `@`.
#[test]
fn a_password_with_url_characters_is_masked_whole() {
    use lake_core::config::redact_url;
    for (url, shown) in [
        ("postgres://u:pa?ss@db:5432/x", "postgres://u:***@db:5432/x"),
        (
            "postgres://u:p/a#s@s@db/x?sslmode=require",
            "postgres://u:***@db/x?sslmode=require",
        ),
        (
            "postgres://u:p@db/x?password=hunter2",
            "postgres://u:***@db/x?password=***",
        ),
        ("postgres://db/x", "postgres://db/x"),
        ("host=db password=hunter2", "***"),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

#[test]
fn charts_are_checked_with_their_lines() {
    let text = r#"[lake]
name = "c"

[charts.a]
sql = "DROP TABLE refined.x"
kind = "pie"
x = "day"
y = "n"

[charts.b]
sql = "SELECT 1"

[charts.c]
sql = "WITH t AS (SELECT 1 AS n) SELECT * FROM t"
kind = "table"
x = "n"
"#;
    let d = diagnostics(text);
    let expect = [
        ("charts.a.sql", 5, "one SELECT"),
        ("charts.a.kind", 6, "\"line\", \"bar\""),
        ("charts.b", 10, "needs `x`"),
        ("charts.b", 10, "needs `y`"),
        ("charts.c.x", 16, "x and y apply"),
    ];
    assert_eq!(d.len(), expect.len(), "{d:#?}");
    for (key, line, msg) in expect {
        assert!(
            d.iter()
                .any(|x| x.key == key && x.line == line && x.message.contains(msg)),
            "{key} {line} {msg}: {d:#?}"
        );
    }
    let ok = "[lake]\nname = \"c\"\n[charts.t]\nsql = \"SELECT day, n FROM refined.x\"\nx = \"day\"\ny = \"n\"\n";
    let p = pipeline(ok, None).unwrap();
    assert_eq!(p.charts["t"].y, ["n"]);
    assert_eq!(p.charts["t"].title, "t");
    assert_eq!(p.charts["t"].kind, lake_core::config::ChartKind::Line);
}

/// A settings kind owns a top-level table: validation hands it the table with lines, keeps
/// what it checked for readers of any type, and reports a table no kind owns.
#[test]
fn a_settings_kind_owns_its_table_and_an_unowned_table_is_reported() {
    use lake_core::config::ConfigCx;
    use lake_core::settings::SettingsKind;

    #[derive(Debug)]
    struct Limits;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Model {
        rows: u64,
    }
    impl SettingsKind for Limits {
        fn table(&self) -> &'static str {
            "limits"
        }
        fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<serde_json::Value> {
            let rows = cx.own::<Model>().map_or(10, |m| m.rows);
            if rows == 0 {
                cx.value("limits.rows", "at least 1");
            }
            Some(serde_json::json!({ "rows": rows }))
        }
    }
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct View {
        rows: u64,
    }
    let kinds = lake_testing::backends().settings(Limits);
    let text = "[lake]\nname = \"s\"\n\n[limits]\nrows = 7\n";
    let p = lake_testing::config::pipeline(text, None, &kinds).unwrap();
    assert_eq!(p.settings::<View>("limits"), Some(View { rows: 7 }));
    assert_eq!(p.settings::<View>("other"), None);
    let p = lake_testing::config::pipeline("[lake]\nname = \"s\"\n", None, &kinds).unwrap();
    assert_eq!(p.settings::<View>("limits"), Some(View { rows: 10 }));

    let d = lake_testing::config::diagnostics("[lake]\nname = \"s\"\n[limits]\nrows = 0\n", &kinds);
    expect_each(&d, &[("limits.rows", 4, "at least 1")]);
    let d = lake_testing::config::diagnostics("[lake]\nname = \"s\"\n[limits]\nrowz = 1\n", &kinds);
    expect_each(&d, &[("limits.rowz", 4, "unknown field")]);
    // Without the kind, the table is nobody's.
    let d = diagnostics(text);
    expect_each(&d, &[("limits", 4, "unknown table")]);
}

#[test]
#[should_panic(expected = "registered twice")]
fn a_settings_table_lake_core_reads_cannot_be_registered() {
    let _ = lake_testing::backends().settings(lake_core::settings::AcceptAny("steps"));
}

#[test]
fn merge_keys_are_checked_with_their_lines() {
    let base = "[lake]\nname = \"m\"\n\n[sources.c]\nkind = \"file\"\npath = \"c.csv\"\n\n";
    let ok = format!(
        "{base}[steps.c]\nkind = \"sql\"\ninputs = [\"raw/c@date\"]\noutput = \"trusted/c\"\nsql = \"SELECT * FROM c\"\nmode = \"merge\"\nkey = [\"id\"]\norder_by = \"updated_at\"\ndelete_when = \"tier = 'deleted'\"\non_tie = \"any\"\n"
    );
    let p = pipeline(&ok, None).unwrap();
    let m = p.steps["c"].merge.clone().unwrap();
    assert_eq!(m.key, ["id"]);
    assert_eq!(m.order_by.as_deref(), Some("updated_at"));
    assert!(m.on_tie_any);

    // No key; a bad order_by; an unknown on_tie.
    let d = diagnostics(&format!(
        "{base}[steps.c]\nkind = \"sql\"\ninputs = [\"raw/c\"]\noutput = \"trusted/c\"\nsql = \"SELECT * FROM c\"\nmode = \"merge\"\norder_by = \"Updated At\"\non_tie = \"first\"\n"
    ));
    expect_each(
        &d,
        &[
            ("steps.c", 8, "needs `key`"),
            ("steps.c.order_by", 14, "not a column name"),
            ("steps.c.on_tie", 15, "\"error\" or \"any\""),
        ],
    );
    // Merge keys without mode = "merge"; merge on a command step.
    let d = diagnostics(&format!(
        "{base}[steps.c]\nkind = \"sql\"\ninputs = [\"raw/c\"]\noutput = \"trusted/c\"\nsql = \"SELECT * FROM c\"\nkey = [\"id\"]\n\n[steps.d]\nkind = \"command\"\ncommand = [\"true\"]\noutput = \"trusted/d\"\nmode = \"merge\"\nkey = [\"id\"]\n"
    ));
    expect_each(
        &d,
        &[
            ("steps.c.key", 13, "goes with mode = \"merge\""),
            ("steps.d.mode", 19, "applies to kind = \"sql\""),
        ],
    );
}

#[test]
fn history_needs_order_by_and_takes_its_column_names() {
    let base = "[lake]\nname = \"m\"\n\n[sources.c]\nkind = \"file\"\npath = \"c.csv\"\n\n[steps.c]\nkind = \"sql\"\ninputs = [\"raw/c@date\"]\noutput = \"trusted/c\"\nsql = \"SELECT * FROM c\"\nmode = \"history\"\nkey = [\"id\"]\n";
    let p = pipeline(
        &format!("{base}order_by = \"updated_at\"\nhistory_columns = {{ valid_to = \"until\" }}\n"),
        None,
    )
    .unwrap();
    let h = p.steps["c"].merge.clone().unwrap().history.unwrap();
    assert_eq!(
        (
            h.valid_from.as_str(),
            h.valid_to.as_str(),
            h.is_current.as_str()
        ),
        ("valid_from", "until", "is_current")
    );
    let d = diagnostics(&format!(
        "{base}history_columns = {{ is_current = \"Is Current\" }}\n"
    ));
    expect_each(
        &d,
        &[
            ("steps.c", 8, "needs `order_by`"),
            (
                "steps.c.history_columns.is_current",
                15,
                "not a column name",
            ),
        ],
    );
}

#[test]
fn freshness_is_a_duration_over_zero_and_notify_takes_stale() {
    let text = r#"[lake]
name = "x"

[sources.a]
kind = "file"
path = "a.csv"
freshness = "soon"

[sources.b]
kind = "file"
path = "b.csv"
freshness = "2d"

[steps.s]
kind = "sql"
inputs = ["raw/a"]
output = "trusted/s"
sql = "SELECT * FROM a"
freshness = "0s"

[notify]
command = ["true"]
on = ["stale", "later"]
"#;
    let d = diagnostics(text);
    let expect = [
        ("sources.a.freshness", 7, "not a duration"),
        ("steps.s.freshness", 19, "must be positive"),
        ("notify.on", 23, "\"later\""),
    ];
    expect_each(&d, &expect);
    assert_eq!(d.len(), expect.len(), "{d:#?}");
    let ok = text
        .replace("freshness = \"soon\"", "freshness = \"26h\"")
        .replace("freshness = \"0s\"", "freshness = \"90m\"")
        .replace(", \"later\"", "");
    let p = pipeline(&ok, None).unwrap();
    let secs = |d: Option<std::time::Duration>| d.map(|d| d.as_secs());
    assert_eq!(secs(p.sources["a"].freshness), Some(26 * 3600));
    assert_eq!(secs(p.sources["b"].freshness), Some(2 * 86_400));
    assert_eq!(secs(p.steps["s"].freshness), Some(90 * 60));
    let n = p.notify.unwrap();
    assert!(n.on_stale && !n.on_failure, "on = [\"stale\"] only");
    let default = pipeline(
        "[lake]\nname = \"x\"\n\n[notify]\ncommand = [\"true\"]\n",
        None,
    )
    .unwrap()
    .notify
    .unwrap();
    assert!(default.on_failure && default.on_stale && !default.on_success);
}
