//! Helpers the `lake` binary's test files share: the binary in a folder, its output as text,
//! the credit example run once, an HTTP server on 127.0.0.1 and an OTLP/HTTP receiver.

#![allow(dead_code, unreachable_pub)]

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;

pub fn lake(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("lake").unwrap();
    c.current_dir(dir).env_remove("RUST_LOG");
    c
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `lake init` of the credit example in a new folder, run once for 2024-03-01: the folder's
/// guard and the pipeline's directory.
pub fn credit_run() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    lake(tmp.path()).args(["init", "demo"]).assert().success();
    lake(&dir)
        .args(["run", "--date", "2024-03-01"])
        .assert()
        .success();
    (tmp, dir)
}

/// What a test server sends back: a status line, a body (with its Content-Length), and a
/// pause after each MiB of it (a slow server).
pub struct Reply {
    pub status: &'static str,
    pub body: Vec<u8>,
    pub pause: std::time::Duration,
}

impl Reply {
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: "200 OK",
            body: body.into(),
            pause: std::time::Duration::ZERO,
        }
    }
}

/// An HTTP/1.1 server on 127.0.0.1 answering each GET with `respond(request line and
/// headers)`, a thread per connection; returns its URL and the request lines it saw.
pub fn http_server(
    respond: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    let respond = std::sync::Arc::new(respond);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let (log, respond) = (std::sync::Arc::clone(&log), std::sync::Arc::clone(&respond));
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                let mut head = first.clone();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let first = first.trim().to_owned();
                let reply = respond(&head);
                log.lock().unwrap().push(first);
                let _ = write!(
                    conn,
                    "HTTP/1.1 {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    reply.status,
                    reply.body.len()
                );
                for chunk in reply.body.chunks(1 << 20) {
                    if conn.write_all(chunk).is_err() {
                        return;
                    }
                    std::thread::sleep(reply.pause);
                }
            });
        }
    });
    (url, seen)
}

pub type Received = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// An OTLP/HTTP receiver: each POST's path and body, answered 200.
pub fn receiver() -> (String, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let got: Received = std::sync::Arc::default();
    let log = std::sync::Arc::clone(&got);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let log = std::sync::Arc::clone(&log);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut first = String::new();
                    if reader.read_line(&mut first).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let path = first.split_whitespace().nth(1).unwrap_or("").to_owned();
                    log.lock().unwrap().push((path, body));
                    let _ = conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n",
                    );
                }
            });
        }
    });
    (url, got)
}

/// The CI venv's Python (`LAKE_PYSPARK_PYTHON`), with `has` (what the test imports); `None`
/// (the test skips) without it, unless the environment variable `required_by` is set: then
/// missing it is a failure, so CI cannot skip the test silently.
pub fn python(has: &str, required_by: &str) -> Option<String> {
    match std::env::var("LAKE_PYSPARK_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os(required_by).is_some() => {
            panic!("{required_by} is set but LAKE_PYSPARK_PYTHON (a Python with {has}) is not")
        }
        Err(_) => {
            eprintln!("skipped: set LAKE_PYSPARK_PYTHON to a Python with {has}");
            None
        }
    }
}
