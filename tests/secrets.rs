//! Secrets never leave a run through a failed step's output, even when the kept tail of that
//! output begins in the middle of one.

use std::sync::Arc;

use lake::core::chrono::NaiveDate;
use lake::core::config::ConfigFile;
use lake::core::ledger::Status;
use lake::core::run::{RunContext, RunOptions, run};
use lake::local::{LocalBackend, LocalZoneStore};

const SECRET: &str = "abcdefghijklmnopqrstuvwxyz0";

#[tokio::test]
async fn a_tail_cut_through_a_secret_leaks_none_of_it() {
    // The step prints the secret, then enough bytes that the 64 KiB tail the backend keeps
    // starts 2 bytes into it, and fails.
    let filler = 64 * 1024 + 2 - SECRET.len();
    let toml = format!(
        r#"
[lake]
name = "leak"

[steps.s]
kind = "command"
command = ["sh", "-c", "printf '%s' \"$TOKEN\" >&2; head -c {filler} /dev/zero | tr '\\0' x >&2; exit 1"]
env = {{ TOKEN = "${{env:LEAK_TOKEN}}" }}
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let file = ConfigFile::parse("lake.toml", dir.path().to_owned(), toml).unwrap();
    let cx = RunContext {
        pipeline: Arc::new(file.pipeline(None, &lake::kinds()).unwrap()),
        store: Arc::new(LocalZoneStore::memory()),
        backend: Arc::new(LocalBackend::new()),
        sources: Default::default(),
        sinks: Default::default(),
        catalog: None,
        formats: Default::default(),
    };
    let mut opts = RunOptions::new(NaiveDate::from_ymd_opt(2024, 5, 1).unwrap());
    opts.env = Arc::new(|v| (v == "LEAK_TOKEN").then(|| SECRET.to_owned()));
    let r = run(&cx, &opts).await.unwrap();
    assert_eq!(r.status, Status::Failed);
    let error = r.steps[0].error.clone().unwrap();
    assert!(
        error.contains("xxxx"),
        "the tail is shown: {}",
        &error[..200]
    );
    // Not the secret, nor the 25 characters the cut left of it.
    assert!(!error.contains(&SECRET[2..]), "leaked: {}", &error[..200]);
    let ledger = serde_json::to_string(&r).unwrap();
    assert!(!ledger.contains(&SECRET[2..]));
}
