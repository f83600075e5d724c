//! The fault suite: experiments that break `lake` the way machines and users do (kill -9 at
//! random points, byte flips, a full disk, mangled lake.toml files, malformed inputs, servers
//! that echo secrets) and check what it promises after each: nothing lost, duplicated,
//! half-visible or silently wrong, no secret out, no panic.
//!
//! Every experiment drives the `lake` binary as users do and checks the lake with other means
//! where it can (files walked and hashed here, counts through `lake query`, `lake fsck`).
//! `crates/lake-cli/tests/faults.rs` runs each in a bounded form in CI; the bench
//! `cargo bench -p lake-cli --bench faults` runs them in full and prints RELIABILITY.md's table.

mod inputs;
mod kills;
mod secrets;
mod serve;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use inputs::{byte_flips, disk_full, malformed_inputs, mutated_configs};
pub use kills::{Mode, kills, readers};
pub use secrets::canaries;
pub use serve::{serve_attacks, serve_load};

/// How much of each experiment to run.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The `lake` binary.
    pub bin: PathBuf,
    /// kill -9 trials per mode and root.
    pub kills: usize,
    /// Reads during republishes.
    pub reads: usize,
    /// Byte-flip offsets per object.
    pub flips: usize,
    /// Mutated lake.toml files.
    pub configs: usize,
    /// Disk-full trials.
    pub disk_full: usize,
    /// Seed of every random choice (kill delays, mutations, offsets).
    pub seed: u64,
}

/// Where an experiment's lake lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// A folder.
    Local,
    /// A prefix of a bucket on the AWS emulator at this endpoint.
    S3(String),
}

impl Root {
    /// `local` or `s3`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::S3(_) => "s3 (moto)",
        }
    }

    /// The `root` value of lake.toml for experiment `tag`.
    fn url(&self, tag: &str) -> String {
        match self {
            Self::Local => "lake".into(),
            Self::S3(endpoint) => {
                let (status, body) = crate::emulator::request(endpoint, "PUT", "/lake-faults");
                assert!(status == 200 || status == 409, "create the bucket: {body}");
                // Unique across runs (not from the seeded generator): the emulator keeps
                // what earlier runs wrote.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                format!("s3://lake-faults/{tag}-{}-{nanos}", std::process::id())
            }
        }
    }
}

/// What one experiment found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What was done.
    pub experiment: String,
    /// Where (`local`, `s3 (moto)`, or `-`).
    pub root: &'static str,
    /// Trials run.
    pub trials: usize,
    /// One line per trial that broke a promise.
    pub failures: Vec<String>,
    /// Figures worth reporting beside the count (`34 of 50 killed before the end`).
    pub notes: Vec<String>,
}

impl Outcome {
    fn new(experiment: impl Into<String>, root: &'static str) -> Self {
        Self {
            experiment: experiment.into(),
            root,
            trials: 0,
            failures: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Panics listing the failures, if any.
    pub fn assert_clean(&self) {
        assert!(
            self.failures.is_empty(),
            "{} on {}: {} of {} trials failed:\n{}",
            self.experiment,
            self.root,
            self.failures.len(),
            self.trials,
            self.failures.join("\n")
        );
        assert!(self.trials > 0, "{}: no trials ran", self.experiment);
    }
}

/// Today's date (UTC), for the report.
pub fn today() -> String {
    lake_core::chrono::Utc::now().date_naive().to_string()
}

/// RELIABILITY.md's table of `outcomes`.
pub fn markdown(outcomes: &[Outcome]) -> String {
    let mut s =
        String::from("| experiment | root | trials | failures | notes |\n|---|---|---|---|---|\n");
    for o in outcomes {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            o.experiment,
            o.root,
            o.trials,
            o.failures.len(),
            o.notes.join("; ")
        ));
    }
    s
}

/// A pipeline folder and the binary that runs it.
pub(crate) struct Lake<'a> {
    pub(crate) bin: &'a Path,
    pub(crate) dir: tempfile::TempDir,
}

impl<'a> Lake<'a> {
    pub(crate) fn new(bin: &'a Path) -> Self {
        Self {
            bin,
            dir: tempfile::tempdir().expect("a temporary folder"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) {
        let p = self.path().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("create a folder");
        }
        std::fs::write(p, bytes).expect("write a file");
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin);
        c.current_dir(self.path())
            .env_remove("RUST_LOG")
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Run to the end (at most 5 minutes: a hang is a failure too).
    pub(crate) fn output(&self, args: &[&str]) -> Result<Output, String> {
        finish(self.cmd(args), Duration::from_secs(300))
            .ok_or_else(|| format!("`lake {}` did not finish in 5 minutes", args.join(" ")))
    }

    /// Run; an exit other than 0 is an error with its stderr.
    pub(crate) fn ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self.output(args)?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`lake {}` exited {:?}: {}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The one number a query gives (its CSV's second line).
    pub(crate) fn number(&self, sql: &str) -> Result<i64, String> {
        let out = self.ok(&["query", sql, "--format", "csv"])?;
        out.lines()
            .nth(1)
            .and_then(|l| l.split(',').next())
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("{sql}: no number in {out:?}"))
    }

    /// `lake fsck` finds nothing wrong (else its findings, which it prints on stdout).
    pub(crate) fn fsck(&self) -> Result<(), String> {
        let out = self.output(&["fsck"])?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "`lake fsck` exited {:?}: {} {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Run `cmd` to its end, or kill it after `limit` (then `None`).
pub(crate) fn finish(mut cmd: Command, limit: Duration) -> Option<Output> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lake");
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Some(out.expect("wait for lake")),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
            None
        }
    }
}

/// Start `cmd` and kill -9 it after `delay` unless it ended first; true when it was killed.
pub fn kill_after(mut cmd: Command, delay: Duration) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lake");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("poll lake").is_some() {
            return false;
        }
        if start.elapsed() >= delay {
            child.kill().expect("kill -9");
            let _ = child.wait();
            return true;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Every file under `dir` whose name does not start with `_` or `.` (what tools that read
/// folders read), as paths relative to `root`, sorted.
pub(crate) fn visible_files(root: &Path, dir: &Path) -> Vec<String> {
    files_where(root, dir, |name| !name.starts_with(['_', '.']))
}

/// Every file under `dir` (hidden ones too), as paths relative to `dir`, sorted; none when
/// `dir` does not exist.
pub fn every_file(dir: &Path) -> Vec<String> {
    files_where(dir, dir, |_| true)
}

fn files_where(root: &Path, dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                todo.push(e.path());
            } else if keep(&name) {
                out.push(
                    e.path()
                        .strip_prefix(root)
                        .unwrap_or(&e.path())
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}

/// On a local root, checked here rather than by lake: the folder of each dataset holds exactly
/// its manifest's objects, and each has the manifest's size and SHA-256.
pub(crate) fn folders_match_manifests(root: &Path, datasets: &[&str]) -> Result<(), String> {
    use sha2::{Digest, Sha256};
    for d in datasets {
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join(d).join("_manifest.json"))
                .map_err(|e| format!("{d}/_manifest.json: {e}"))?,
        )
        .map_err(|e| format!("{d}/_manifest.json: {e}"))?;
        let mut listed: Vec<String> = Vec::new();
        for o in manifest["objects"].as_array().into_iter().flatten() {
            let key = o["key"].as_str().unwrap_or_default().to_owned();
            let bytes = std::fs::read(root.join(&key)).map_err(|e| format!("{key}: {e}"))?;
            if bytes.len() as u64 != o["size"].as_u64().unwrap_or(u64::MAX)
                || hex::encode(Sha256::digest(&bytes)) != o["sha256"].as_str().unwrap_or_default()
            {
                return Err(format!("{key}: bytes differ from its manifest"));
            }
            listed.push(key);
        }
        listed.sort();
        let seen = visible_files(root, &root.join(d));
        if seen != listed {
            return Err(format!(
                "{d}: the folder holds {seen:?}, the manifest lists {listed:?}"
            ));
        }
    }
    Ok(())
}

/// `rows` rows of `id,amount,purpose` with a header.
pub(crate) fn loans_csv(rows: usize, salt: usize) -> String {
    let mut csv = String::from("id,amount,purpose\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "{i},{},{}\n",
            (i * 7 + salt) % 1000,
            ["car", "tv", "radio", "education"][i % 4]
        ));
    }
    csv
}

/// The pipeline the kill, reader and flip experiments run: a file source, a typed and
/// partitioned trusted dataset, and a summary.
pub(crate) fn loans_toml(root: &str, extra: &str) -> String {
    format!(
        r#"[lake]
name = "faults"
root = "{root}"
{extra}
[sources.loans]
kind = "file"
path = "data/*.csv"

[steps.clean]
kind = "sql"
inputs = ["raw/loans@date"]
output = "trusted/loans"
partition_by = ["purpose"]
sql = "SELECT CAST(id AS BIGINT) AS id, CAST(amount AS BIGINT) AS amount, purpose FROM loans"

[steps.summary]
kind = "sql"
inputs = ["trusted/loans"]
output = "refined/summary"
sql = "SELECT purpose, count(*) AS n, sum(amount) AS total FROM loans GROUP BY purpose"
"#
    )
}
