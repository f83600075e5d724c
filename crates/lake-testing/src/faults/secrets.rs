//! Secret canaries: values that must never be seen outside the request they authenticate.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use super::{Lake, Outcome, Suite, kill_after};

const CANARIES: [(&str, &str); 7] = [
    ("LAKE_CANARY_BEARER", "canaryBearer7Qx2"),
    ("LAKE_CANARY_KEY", "canaryApiKey9Zr4"),
    ("LAKE_CANARY_QUERY", "canaryQuery3Wm8"),
    ("LAKE_CANARY_STEP", "canaryStepEnv5Tn1"),
    // A password with the characters that change when encoded.
    ("LAKE_CANARY_PASS", "cAnary+Pass/6=z&"),
    ("LAKE_CANARY_USER", "canaryUser4Kd"),
    // A webhook URL (a secret as a whole).
    (
        "LAKE_CANARY_HOOK",
        "http://127.0.0.1:9/redirect?key=canaryHook8Lp3",
    ),
];

/// The forms a secret may be echoed in: as written (and all but its first 2 characters, what a
/// cut could leave), percent-encoded, base64; and base64 of `user:password`.
fn forms() -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let mut out = Vec::new();
    for (var, value) in CANARIES {
        let pct: String = value
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        out.push((var, value[2..].to_owned()));
        out.push((var, pct));
        out.push((var, b64(value)));
    }
    out.push((
        "LAKE_CANARY_USER:LAKE_CANARY_PASS",
        b64(&format!("{}:{}", CANARIES[5].1, CANARIES[4].1)),
    ));
    out
}

/// A server on 127.0.0.1 that answers every request with 401 and the request itself as the body
/// (the worst server: it echoes credentials), or, under `/redirect`, with a redirect to
/// `redirect_to`. Every request it received is kept.
fn echo_server(redirect_to: Option<u16>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("an address").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = vec![0u8; 16 * 1024];
            let n = conn.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            log.lock().expect("the log").push(request.clone());
            let path = request.split_whitespace().nth(1).unwrap_or_default();
            let reply = match redirect_to {
                Some(to) if path.starts_with("/redirect") => format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{to}/echo\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
                _ => format!(
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{request}",
                    request.len()
                ),
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    (port, seen)
}

/// Every failure path that carries secrets, each followed by a search for the canaries in its
/// stdout and stderr, every file of the lake root (ledger, logs, manifests) and `lake runs
/// --json`; and in what a server on another origin received after a redirect.
pub fn canaries(s: &Suite) -> Outcome {
    let mut out = Outcome::new(
        "secret canaries on failure paths (4xx echo, basic auth and URL characters echoed, cross-origin redirects and Referer, a redirecting webhook, failing and killed steps, a cut log tail)",
        "local",
    );
    let (other, other_seen) = echo_server(None);
    let (port, _) = echo_server(Some(other));
    let hook = CANARIES[6].1.replace(":9/", &format!(":{port}/"));
    // An http source at `path` of the echoing server, with `secrets` (its query, headers
    // and auth lines).
    let api = |path: &str, secrets: &str| {
        format!(
            "[sources.api]\nkind = \"http\"\nurl = \"http://127.0.0.1:{port}{path}\"\n{secrets}\nmax_attempts = 1\n"
        )
    };
    let all_secrets = r#"query = { token = "${env:LAKE_CANARY_QUERY}" }
headers = { "X-Api-Key" = "${env:LAKE_CANARY_KEY}" }
auth = { bearer = "${env:LAKE_CANARY_BEARER}" }"#;
    let http = |path: &str| api(path, all_secrets);
    let step = |script: &str| {
        format!(
            r#"[steps.leak]
kind = "command"
command = ["sh", "-c", "{script}"]
env = {{ TOKEN = "${{env:LAKE_CANARY_STEP}}", KEY = "${{env:LAKE_CANARY_KEY}}" }}
"#
        )
    };
    let filler = 64 * 1024 + 2 - CANARIES[3].1.len();
    let paths: Vec<(&str, String, bool)> = vec![
        (
            "an HTTP 401 whose body echoes the request",
            http("/echo"),
            false,
        ),
        ("a redirect to another origin", http("/redirect"), false),
        (
            "an HTTP 401 echoing basic credentials and a query secret with URL characters",
            api(
                "/echo",
                r#"query = { token = "${env:LAKE_CANARY_PASS}" }
auth = { username = "${env:LAKE_CANARY_USER}", password = "${env:LAKE_CANARY_PASS}" }"#,
            ),
            false,
        ),
        (
            "a secret query redirected to another origin (its Referer)",
            api(
                "/redirect",
                r#"query = { token = "${env:LAKE_CANARY_QUERY}" }"#,
            ),
            false,
        ),
        (
            "a failure notice to a webhook that redirects",
            format!(
                "[notify]\nwebhook = \"${{env:LAKE_CANARY_HOOK}}\"\n\n{}",
                step("exit 3")
            ),
            false,
        ),
        (
            "a step that prints its secrets and fails",
            step("echo $TOKEN $KEY; echo $TOKEN $KEY >&2; exit 3"),
            false,
        ),
        (
            "a step whose kept log tail starts inside a secret",
            step(&format!(
                "printf '%s' $TOKEN >&2; head -c {filler} /dev/zero | tr '\\\\0' x >&2; exit 1"
            )),
            false,
        ),
        (
            "a run killed while its step prints secrets",
            step("while true; do echo $TOKEN $KEY; sleep 0.01; done"),
            true,
        ),
    ];
    for (what, table, kill) in paths {
        out.trials += 1;
        let lake = Lake::new(&s.bin);
        lake.write("lake.toml", format!("[lake]\nname = \"canary\"\n\n{table}"));
        let verb = if table.starts_with("[sources") {
            "ingest"
        } else {
            "run"
        };
        let mut cmd = lake.cmd(&[verb, "--date", "2024-01-01"]);
        for (var, value) in CANARIES {
            cmd.env(var, value);
        }
        cmd.env("LAKE_CANARY_HOOK", &hook);
        let mut seen = String::new();
        if kill {
            kill_after(cmd, std::time::Duration::from_millis(400));
            let mut again = lake.cmd(&["run", "--date", "2024-01-01"]);
            for (var, value) in CANARIES {
                again.env(var, value);
            }
            again.env("LAKE_CANARY_STEP", "x");
            if let Some(o) = super::finish(again, std::time::Duration::from_secs(5)) {
                seen.push_str(&String::from_utf8_lossy(&o.stdout));
                seen.push_str(&String::from_utf8_lossy(&o.stderr));
            }
        } else {
            match super::finish(cmd, std::time::Duration::from_secs(120)) {
                Some(o) => {
                    if o.status.success() {
                        out.failures.push(format!("{what}: the run succeeded"));
                    }
                    seen.push_str(&String::from_utf8_lossy(&o.stdout));
                    seen.push_str(&String::from_utf8_lossy(&o.stderr));
                }
                None => out.failures.push(format!("{what}: the run hung")),
            }
        }
        if let Ok(o) = lake.output(&["runs", "--json"]) {
            seen.push_str(&String::from_utf8_lossy(&o.stdout));
        }
        for file in all_files(&lake.path().join("lake")) {
            seen.push_str(&String::from_utf8_lossy(
                &std::fs::read(&file).unwrap_or_default(),
            ));
        }
        let hook_key = &hook[hook.find("canaryHook").unwrap_or(0)..];
        for (var, form) in forms()
            .into_iter()
            .chain([("LAKE_CANARY_HOOK", hook_key.to_owned())])
        {
            if seen.contains(&form) {
                out.failures
                    .push(format!("{what}: {var} leaked as {form:?}"));
            }
        }
    }
    for request in other_seen.lock().expect("the log").iter() {
        for (var, form) in forms() {
            if request.contains(&form) || request.contains("canaryHook") {
                out.failures.push(format!(
                    "a redirect to another origin: {var} was sent to it:\n{request}"
                ));
            }
        }
        if request.to_ascii_lowercase().contains("\nreferer:") {
            out.failures.push(format!(
                "a request to another origin carried a Referer:\n{request}"
            ));
        }
    }
    out
}

fn all_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
