//! `--log-format json` (or `LAKE_LOG_FORMAT=json`): every stderr line is one JSON object with
//! the run id, a timestamp and the event, for CloudWatch, Loki or Datadog.

use std::path::Path;

use assert_cmd::Command;

fn lake(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("lake").unwrap();
    c.current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("LAKE_LOG_FORMAT");
    c
}

/// Every stderr line of `o`, each parsed as a JSON object (a line that is not one fails).
fn lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

#[test]
fn a_run_with_a_failing_step_logs_one_json_object_per_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/orders.csv"), "id,amount\n1,10\n2,20\n").unwrap();
    std::fs::write(
        dir.join("lake.toml"),
        r#"[lake]
name = "shop"

[sources.orders]
kind = "file"
path = "data/orders.csv"

[steps.clean]
kind = "sql"
inputs = ["raw/orders"]
output = "trusted/orders"
sql = "SELECT CAST(id AS BIGINT) AS id, amount FROM orders"

[steps.broken]
kind = "sql"
inputs = ["trusted/orders"]
output = "refined/broken"
sql = "SELECT no_such_column FROM orders"
"#,
    )
    .unwrap();
    for (flag, env) in [(true, None), (false, Some("json"))] {
        let mut c = lake(dir);
        if flag {
            c.args(["--log-format", "json"]);
        }
        if let Some(v) = env {
            c.env("LAKE_LOG_FORMAT", v);
        }
        let o = c
            .args(["-v", "run", "--date", "2024-05-01", "--force"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "the step fails the run");
        let all = lines(&o);
        let run_id = all
            .iter()
            .find(|l| l["event"] == "run_started")
            .and_then(|l| l["run_id"].as_str())
            .expect("a run_started line with the run id")
            .to_owned();
        assert!(run_id.len() > 10, "{run_id}");
        for l in &all {
            assert!(
                l["ts"].as_str().is_some_and(|t| t.ends_with('Z'))
                    && l["event"].as_str().is_some_and(|e| !e.is_empty())
                    && l["message"].is_string(),
                "{l}"
            );
            if l["event"] != "log" {
                assert_eq!(l["run_id"], run_id.as_str(), "{l}");
            }
        }
        let events: Vec<&str> = all.iter().filter_map(|l| l["event"].as_str()).collect();
        assert!(events.contains(&"ingest_window"), "{events:?}");
        let failed = all
            .iter()
            .find(|l| l["event"] == "step_finished" && l["step"]["name"] == "broken")
            .expect("the failed step's line");
        assert_eq!(failed["step"]["status"], "failed");
        assert!(
            failed["step"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("no_such_column")),
            "{failed}"
        );
        let clean = all
            .iter()
            .find(|l| l["event"] == "step_finished" && l["step"]["name"] == "clean")
            .expect("the good step's line");
        assert_eq!(clean["step"]["rows"], 2);
    }

    // An error before any run: one JSON line with its kind and chain, exit 2.
    std::fs::write(dir.join("lake.toml"), "[lake]\nname = \"shop\"\nroot = 5\n").unwrap();
    let o = lake(dir)
        .args(["--log-format", "json", "run"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let all = lines(&o);
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["event"], "error");
    assert_eq!(all[0]["kind"], "usage");
    assert_eq!(all[0]["run_id"], serde_json::Value::Null);
    assert!(
        all[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("lake.toml")),
        "{all:?}"
    );
}
