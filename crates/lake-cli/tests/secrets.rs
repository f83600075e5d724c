//! `${aws-secretsmanager:…}` and `${aws-ssm:…}` in lake.toml, against the AWS emulator
//! (`.ci/run` starts moto) and PostgreSQL: an HTTP source's bearer token from Secrets Manager,
//! a Postgres sink's URL from Parameter Store.

mod common;

use std::path::Path;

use common::{Reply, http_server, receiver, stderr, stdout};
use lake_testing::{emulator, postgres};
use serde_json::json;

/// `lake` with telemetry sent to `otlp`.
fn lake(dir: &Path, otlp: &str) -> assert_cmd::Command {
    let mut c = common::lake(dir);
    c.env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp);
    c
}

/// Every file under `dir` (relative path), sorted.
fn files(dir: &Path) -> Vec<String> {
    lake_testing::faults::every_file(dir)
}

/// The first file under `dir` that holds `needle`.
fn any_file_holds(dir: &Path, needle: &str) -> Option<String> {
    files(dir).into_iter().find(|f| {
        std::fs::read(dir.join(f))
            .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
    })
}

#[test]
fn secrets_manager_and_parameter_store_feed_a_source_and_a_sink_and_never_show() {
    let Some(endpoint) = emulator::endpoint() else {
        return;
    };
    let Some(server) = postgres::server() else {
        return;
    };
    let pg_url = postgres::fresh_database(&server, "secrets");
    let ns = format!("lake-secrets-{}", std::process::id());
    const TOKEN: &str = "tok-Zq81vXc4Lm2";
    let created = emulator::call(
        &endpoint,
        "secretsmanager",
        "secretsmanager.CreateSecret",
        &json!({ "Name": format!("{ns}/api"), "SecretString": json!({ "user": "ann", "token": TOKEN }).to_string() }),
    );
    assert_eq!(created.0, 200, "{}", created.1);
    let put = emulator::call(
        &endpoint,
        "ssm",
        "AmazonSSM.PutParameter",
        &json!({ "Name": format!("/{ns}/pg-url"), "Value": pg_url, "Type": "SecureString" }),
    );
    assert_eq!(put.0, 200, "{}", put.1);

    // The API answers only the right token; a wrong one gets an error that echoes it.
    let (url, seen) = http_server(|head| {
        if head.to_ascii_lowercase().contains(&format!(
            "authorization: bearer {}\r\n",
            TOKEN.to_ascii_lowercase()
        )) {
            Reply::ok("id,name\n1,ann\n2,bob\n3,cy\n")
        } else {
            Reply {
                status: "403 Forbidden",
                body: format!("bad credentials: {head}").into_bytes(),
                pause: std::time::Duration::ZERO,
            }
        }
    });
    let (otlp, sent) = receiver();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let toml = |secret: &str| {
        format!(
            r#"[lake]
name = "secrets"
root = "lake"

[sources.api]
kind = "http"
url = "{url}/people.csv"
auth = {{ bearer = "${{aws-secretsmanager:{secret}#token}}" }}

[steps.people]
kind = "sql"
inputs = ["raw/api@date"]
output = "trusted/people"
sql = "SELECT CAST(id AS INT) AS id, name FROM api"

[sinks.pg]
kind = "postgres"
url = "${{aws-ssm:/{ns}/pg-url}}"
from = "trusted/people"
table = "people"
"#
        )
    };
    std::fs::write(dir.join("lake.toml"), toml(&format!("{ns}/api"))).unwrap();

    // `lake plan` shows the references as written and reads nothing.
    let plan = lake(dir, &otlp).arg("plan").output().unwrap();
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(
        stdout(&plan).contains(&format!("${{aws-ssm:/{ns}/pg-url}}")),
        "{}",
        stdout(&plan)
    );

    // A run reads both, lands the API's rows and loads them.
    let run = lake(dir, &otlp)
        .args(["run", "--date", "2024-03-01", "-v"])
        .output()
        .unwrap();
    let shown = format!("{}{}", stdout(&run), stderr(&run));
    assert!(run.status.success(), "{shown}");
    assert_eq!(
        postgres::psql(&pg_url, "SELECT id, name FROM people ORDER BY id"),
        "1|ann\n2|bob\n3|cy"
    );
    let password = pg_url
        .split_once("://")
        .and_then(|(_, r)| r.split_once('@'))
        .and_then(|(auth, _)| auth.split_once(':'))
        .map(|(_, p)| p.to_owned())
        .expect("the test server's URL has a password");
    for secret in [TOKEN, password.as_str(), pg_url.as_str()] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
        assert_eq!(any_file_holds(&dir.join("lake"), secret), None, "{secret}");
    }

    // `lake doctor` reads each as a run does; `lake iam-policy` allows exactly those.
    let doctor = lake(dir, &otlp).arg("doctor").output().unwrap();
    let said = stdout(&doctor);
    for r in [
        format!("✓ secret ${{aws-secretsmanager:{ns}/api#token}}"),
        format!("✓ secret ${{aws-ssm:/{ns}/pg-url}}"),
    ] {
        assert!(said.contains(&r), "{r} in {said}");
    }
    assert!(!said.contains(TOKEN) && !said.contains(&password), "{said}");
    let policy = lake(dir, &otlp).arg("iam-policy").output().unwrap();
    assert!(policy.status.success(), "{}", stderr(&policy));
    let policy: serde_json::Value = serde_json::from_slice(&policy.stdout).unwrap();
    let statements = policy["Statement"].as_array().unwrap();
    let of = |action: &str| {
        statements
            .iter()
            .find(|s| s["Action"] == action)
            .unwrap_or_else(|| panic!("{action} in {policy}"))["Resource"]
            .clone()
    };
    assert_eq!(
        of("secretsmanager:GetSecretValue"),
        json!([format!("arn:aws:secretsmanager:*:*:secret:{ns}/api-??????")])
    );
    assert_eq!(
        of("ssm:GetParameter"),
        json!([format!("arn:aws:ssm:*:*:parameter/{ns}/pg-url")])
    );

    // The server echoes a wrong token in its error: the error shows `***`.
    let put = emulator::call(
        &endpoint,
        "secretsmanager",
        "secretsmanager.PutSecretValue",
        &json!({ "SecretId": format!("{ns}/api"), "SecretString": json!({ "token": "wrong-Kx93hh2" }).to_string() }),
    );
    assert_eq!(put.0, 200, "{}", put.1);
    let denied = lake(dir, &otlp)
        .args(["run", "--date", "2024-03-02"])
        .output()
        .unwrap();
    let shown = format!("{}{}", stdout(&denied), stderr(&denied));
    assert!(!denied.status.success(), "{shown}");
    assert!(shown.contains("403"), "{shown}");
    assert!(!shown.contains("wrong-Kx93hh2"), "{shown}");
    assert_eq!(any_file_holds(&dir.join("lake"), "wrong-Kx93hh2"), None);
    // Nor do the runs' traces and metrics hold any of them.
    let bodies = sent.lock().unwrap().clone();
    assert!(
        bodies.iter().any(|(p, _)| p == "/v1/traces"),
        "no trace was sent"
    );
    for secret in [TOKEN, password.as_str(), "wrong-Kx93hh2"] {
        assert!(
            bodies
                .iter()
                .all(|(_, b)| !b.windows(secret.len()).any(|w| w == secret.as_bytes())),
            "{secret} sent to the collector"
        );
    }

    // A secret that does not exist: an error naming it and where lake.toml writes it, before
    // the lock (nothing in the zones or the ledger changes, the API is not asked).
    std::fs::write(dir.join("lake.toml"), toml(&format!("{ns}/nope"))).unwrap();
    let before = files(&dir.join("lake"));
    let asked = seen.lock().unwrap().len();
    let missing = lake(dir, &otlp)
        .args(["run", "--date", "2024-03-03"])
        .output()
        .unwrap();
    let err = stderr(&missing);
    assert_eq!(missing.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "lake.toml:8: sources.api.auth.bearer: ${{aws-secretsmanager:{ns}/nope#token}} does not exist"
        )),
        "{err}"
    );
    assert_eq!(files(&dir.join("lake")), before);
    assert_eq!(seen.lock().unwrap().len(), asked);
}
