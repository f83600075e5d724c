//! `lake serve` as tests drive it: the process (started, its address read from its first
//! line, killed when dropped) and one plain HTTP/1.0 GET with the headers a test chooses.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `lake serve` running until dropped, and where it listens.
#[derive(Debug)]
pub struct Served {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:PORT`, as it printed it.
    pub addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Served {
    /// Start `cmd` (a `lake … serve …` command) and read the address it prints; its stderr
    /// is drained from then on so it never blocks on a full pipe.
    pub fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .env_remove("LAKE_SERVE_TOKEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start lake serve");
        let mut err = BufReader::new(child.stderr.take().expect("its stderr"));
        let mut line = String::new();
        err.read_line(&mut line).expect("its first line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|r| r.split('/').next())
            .unwrap_or_else(|| panic!("lake serve printed {line:?}"))
            .to_owned();
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Self { child, addr }
    }

    /// Its resident memory in MiB, from /proc (0 where there is none).
    pub fn rss_mib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kib| kib / 1024)
    }
}

/// What a GET got back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The value of header `name` (lowercase), or "".
    pub fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

/// One HTTP/1.0 GET of `path` at `addr` (the body arrives as it is, not in chunks), with
/// `headers` and a `Host` of `addr` unless they give one; waits at most `limit` for the reply.
pub fn get(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    limit: Duration,
) -> Result<Reply, String> {
    let mut conn = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(limit)).ok();
    let mut req = format!("GET {path} HTTP/1.0\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {:?}", &text[..text.len().min(200)]))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}
