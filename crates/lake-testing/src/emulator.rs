//! The AWS emulator tests run against: `bash .ci/run` starts moto's server on 127.0.0.1 and
//! sets `AWS_ENDPOINT_URL` (with dummy credentials) and `LAKE_REQUIRE_S3=1`. Without an
//! endpoint the tests skip and say why; with `LAKE_REQUIRE_S3` they fail instead.

use std::io::{Read, Write};

/// The emulator's URL, or `None` (after saying why) when the test should skip.
pub fn endpoint() -> Option<String> {
    match std::env::var("AWS_ENDPOINT_URL") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            assert!(
                std::env::var_os("LAKE_REQUIRE_S3").is_none(),
                "LAKE_REQUIRE_S3 is set but AWS_ENDPOINT_URL is not: the AWS emulator did not start"
            );
            eprintln!(
                "skipped: no AWS emulator (set AWS_ENDPOINT_URL, or run `bash .ci/run`, which starts moto)"
            );
            None
        }
    }
}

/// One bodiless HTTP/1.1 request to the emulator (its control API, `/moto-api/…`, or a bucket):
/// the status code and the body.
pub fn request(endpoint: &str, method: &str, path: &str) -> (u16, String) {
    exchange(endpoint, method, path, "", "")
}

/// One call of an AWS JSON-protocol API (Secrets Manager, Systems Manager…) on the emulator:
/// `target` is the `X-Amz-Target` (`secretsmanager.CreateSecret`), `service` the signing
/// name moto routes by (`secretsmanager`, `ssm`). The status code and the body.
pub fn call(
    endpoint: &str,
    service: &str,
    target: &str,
    body: &serde_json::Value,
) -> (u16, String) {
    let headers = format!(
        "Content-Type: application/x-amz-json-1.1\r\nX-Amz-Target: {target}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=lake-ci/20240101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0\r\n"
    );
    exchange(endpoint, "POST", "/", &headers, &body.to_string())
}

/// A request with extra header lines (each ending in CRLF) and a body: status and body.
fn exchange(endpoint: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(host).expect("connect to the emulator");
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send to the emulator");
    let mut reply = String::new();
    let _ = conn.read_to_string(&mut reply);
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Forget everything the emulator holds (`POST /moto-api/reset`).
pub fn reset(endpoint: &str) {
    let (status, body) = request(endpoint, "POST", "/moto-api/reset");
    assert_eq!(status, 200, "moto reset: {body}");
}
