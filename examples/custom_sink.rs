//! A sink kind of your own: a tool built on lake adds `kind = "ndjson"` to `[sinks.*]` with one
//! registration call, and lake.toml uses it with keys of its own, checked with their lines.
//!
//! ```sh
//! cargo run --example custom_sink -- /tmp/ndjson-lake 2024-05-01
//! ```
//!
//! The kind reads its own keys (`path`, `columns`) with [`ConfigCx::own`]: serde with
//! `deny_unknown_fields`, so a typo is an error at its line of lake.toml, as for lake's own
//! kinds. lake keeps the keys every sink has (`kind`, `from`, `optional`), runs the sink after
//! the step that writes its dataset, and records it in the ledger. The sink writes the dataset
//! as JSON lines: to a temporary file renamed into place (a reader sees the old file or the new
//! one), then the fingerprint of what it holds beside it, so a rerun with nothing new is
//! skipped and a kill at any point at worst loads the same data again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use lake::Lake;
use lake::core::backend::BackendEnv;
use lake::core::chrono::{NaiveDate, Utc};
use lake::core::config::{ConfigCx, SinkSpec};
use lake::core::doctor::Check;
use lake::core::ledger::{RunRecord, Status};
use lake::core::run::RunOptions;
use lake::core::sink::{self, Sink, SinkConfig, SinkKind, SinkLoad, SinkOutcome};
use lake::core::{Error, Result};
use lake::local::Engine;
use lake::local::engine::datafusion::arrow::json::LineDelimitedWriter;
use lake::local::engine::datafusion::common::TableReference;
use serde::Deserialize;

/// `kind = "ndjson"`: a dataset written as one JSON object per line.
#[derive(Debug)]
struct NdjsonKind;

/// Its keys, as written in `[sinks.<name>]` (besides `kind`, `from`, `optional`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NdjsonKeys {
    /// The file, relative to lake.toml's folder.
    path: PathBuf,
    /// The columns written, in order; default all.
    #[serde(default)]
    columns: Vec<String>,
}

impl SinkKind for NdjsonKind {
    fn name(&self) -> &'static str {
        "ndjson"
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn SinkConfig>> {
        let keys: NdjsonKeys = cx.own()?;
        if keys.path.as_os_str().is_empty() || keys.path.is_dir() {
            cx.value(
                &cx.key_of("path"),
                "a file to write, such as \"out/report.ndjson\"",
            );
            return None;
        }
        if let Some(c) = keys.columns.iter().find(|c| c.contains('"')) {
            cx.value(&cx.key_of("columns"), format!("{c:?} is not a column name"));
            return None;
        }
        Some(Arc::new(NdjsonConfig {
            path: cx.base_dir.join(&keys.path),
            columns: keys.columns,
        }))
    }
}

/// A checked `ndjson` sink.
#[derive(Debug, Clone)]
struct NdjsonConfig {
    path: PathBuf,
    columns: Vec<String>,
}

#[async_trait]
impl SinkConfig for NdjsonConfig {
    fn destination(&self) -> String {
        self.path.display().to_string()
    }

    fn exclusive(&self) -> Option<(&'static str, String)> {
        Some(("path", format!("file {}", self.path.display())))
    }

    async fn open(&self, spec: &SinkSpec, env: &BackendEnv) -> Result<Arc<dyn Sink>> {
        let engine = env
            .extensions
            .get::<Arc<Engine>>()
            .cloned()
            .ok_or_else(|| Error::NotImplemented {
                operation: "ndjson sinks",
                implementer: "a lake with the embedded engine".into(),
            })?;
        Ok(Arc::new(NdjsonSink {
            spec: spec.clone(),
            config: self.clone(),
            engine,
        }))
    }
}

#[derive(Debug)]
struct NdjsonSink {
    spec: SinkSpec,
    config: NdjsonConfig,
    engine: Arc<Engine>,
}

impl NdjsonSink {
    fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::sink(
            &self.spec.name,
            self.config.destination(),
            message.to_string(),
            None,
        )
    }

    /// Where the fingerprint of what the file holds is kept.
    fn held_path(&self) -> PathBuf {
        let mut p = self.config.path.clone().into_os_string();
        p.push(".lake-fingerprint");
        p.into()
    }
}

#[async_trait]
impl Sink for NdjsonSink {
    fn spec(&self) -> &SinkSpec {
        &self.spec
    }

    async fn load(&self, load: &SinkLoad) -> Result<SinkOutcome> {
        let fingerprint = sink::fingerprint(&self.config.columns.join(","), &load.manifest);
        let held = tokio::fs::read_to_string(self.held_path()).await.ok();
        if !load.force && held.as_deref() == Some(&*fingerprint) && self.config.path.exists() {
            return Ok(SinkOutcome::UpToDate);
        }
        let ctx = self
            .engine
            .lake_session(std::slice::from_ref(&load.dataset), &Default::default())
            .await?;
        let mut df = ctx
            .table(TableReference::partial(
                load.dataset.zone.as_str(),
                load.dataset.name.as_str(),
            ))
            .await
            .map_err(|e| self.error(e))?;
        if !self.config.columns.is_empty() {
            let cols: Vec<&str> = self.config.columns.iter().map(String::as_str).collect();
            df = df.select_columns(&cols).map_err(|e| self.error(e))?;
        }
        let mut batches = df.execute_stream().await.map_err(|e| self.error(e))?;
        if let Some(dir) = self.config.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.error(e))?;
        }
        let tmp =
            tempfile::NamedTempFile::new_in(self.config.path.parent().unwrap_or(Path::new(".")))
                .map_err(|e| self.error(e))?;
        let mut writer = LineDelimitedWriter::new(std::io::BufWriter::new(tmp.as_file()));
        let mut rows = 0u64;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| self.error(e))?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).map_err(|e| self.error(e))?;
        }
        writer.finish().map_err(|e| self.error(e))?;
        drop(writer);
        tmp.as_file().sync_all().map_err(|e| self.error(e))?;
        tmp.persist(&self.config.path).map_err(|e| self.error(e))?;
        std::fs::write(self.held_path(), &fingerprint).map_err(|e| self.error(e))?;
        Ok(SinkOutcome::Loaded {
            rows,
            bytes: load.dataset.objects.iter().map(|o| o.size).sum(),
        })
    }

    async fn doctor(&self) -> Vec<Check> {
        let dir = self.config.path.parent().unwrap_or(Path::new("."));
        let name = format!("sink {}", self.spec.name);
        match std::fs::create_dir_all(dir).and_then(|_| tempfile::NamedTempFile::new_in(dir)) {
            Ok(_) => vec![Check::pass(name, format!("{} is writable", dir.display()))],
            Err(e) => vec![Check::fail(
                name,
                format!("cannot write in {}: {e}", dir.display()),
                "choose a path in a folder lake may write".to_owned(),
            )],
        }
    }
}

/// Any error, boxed: this example's error type.
type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const LAKE_TOML: &str = r#"
[lake]
name = "loans"
root = "lake"

[sources.loans]
kind = "file"
path = "data/loans.csv"

[steps.by_purpose]
kind = "sql"
inputs = ["raw/loans@date"]
output = "refined/by_purpose"
sql = """
SELECT purpose, COUNT(*) AS n, SUM(CAST(amount AS BIGINT)) AS amount
FROM loans GROUP BY purpose
"""

[sinks.export]
kind = "ndjson"                  # registered by this program
from = "refined/by_purpose"
path = "exports/by_purpose.ndjson"
columns = ["purpose", "n", "amount"]
"#;

const LOANS: &str =
    "id,purpose,amount\n1,car,1200\n2,car,800\n3,tv,300\n4,education,2500\n5,tv,450\n";

/// The kinds this program offers: lake's and its own.
fn kinds() -> lake::core::kinds::Kinds {
    lake::kinds().sink(NdjsonKind)
}

/// Write the lake.toml (with `toml` as given) and data into `dir`, run it for `date`, and
/// return the run's record and the exported lines.
async fn run(dir: &Path, toml: &str, date: NaiveDate) -> AnyResult<(RunRecord, Vec<String>)> {
    std::fs::create_dir_all(dir.join("data"))?;
    std::fs::write(dir.join("data/loans.csv"), LOANS)?;
    let config = dir.join("lake.toml");
    std::fs::write(&config, toml)?;
    let lake = Lake::open_with(&config, None, &kinds()).await?;
    let record = lake.run(&RunOptions::new(date)).await?;
    let out = std::fs::read_to_string(dir.join("exports/by_purpose.ndjson")).unwrap_or_default();
    let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
    lines.sort();
    Ok((record, lines))
}

#[tokio::main]
#[cfg_attr(test, allow(dead_code))]
async fn main() -> AnyResult<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .unwrap_or_else(|| "target/ndjson-lake".to_owned());
    let date = match args.next() {
        Some(d) => NaiveDate::parse_from_str(&d, "%Y-%m-%d")?,
        None => Utc::now().date_naive(),
    };
    let (record, lines) = run(Path::new(&dir), LAKE_TOML, date).await?;
    println!("run {}: {:?}", record.run_id, record.status);
    for s in &record.sinks {
        println!("sink {} → {}: {:?}", s.name, s.table, s.status);
    }
    for l in lines {
        println!("{l}");
    }
    if record.status != Status::Succeeded {
        std::process::exit(1);
    }
    Ok(())
}

/// `cargo test` runs this example (Cargo.toml: `test = true`).
#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_registered_sink_kind_loads_after_its_step_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let date = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let (record, lines) = run(dir.path(), LAKE_TOML, date).await.unwrap();
        assert_eq!(record.status, Status::Succeeded, "{record:#?}");
        assert_eq!(record.sinks.len(), 1, "{record:#?}");
        assert_eq!(record.sinks[0].status, Status::Succeeded);
        assert_eq!(record.sinks[0].rows, Some(3));
        // Each line a JSON object of the chosen columns, as serde_json reads it.
        let rows: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let want = serde_json::json!([
            {"purpose": "car", "n": 2, "amount": 2000},
            {"purpose": "education", "n": 1, "amount": 2500},
            {"purpose": "tv", "n": 2, "amount": 750},
        ]);
        assert_eq!(serde_json::Value::Array(rows), want);
        // Nothing new: the file holds this content already.
        let (again, _) = run(dir.path(), LAKE_TOML, date).await.unwrap();
        assert_eq!(again.sinks[0].status, Status::UpToDate, "{again:#?}");
    }

    #[tokio::test]
    async fn the_kinds_keys_are_checked_at_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let date = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let typo = LAKE_TOML.replace("path = \"exports/", "paht = \"exports/");
        let err = run(dir.path(), &typo, date).await.unwrap_err().to_string();
        let line = typo.lines().position(|l| l.starts_with("paht")).unwrap() + 1;
        assert!(err.contains(&format!("lake.toml:{line}")), "{err}");
        assert!(err.contains("sinks.export.paht"), "{err}");
        assert!(err.contains("unknown field `paht`"), "{err}");
        // Without the registration, the kind is unknown, named at its line.
        std::fs::write(dir.path().join("lake.toml"), LAKE_TOML).unwrap();
        let err = Lake::open(dir.path().join("lake.toml"), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown sink kind \"ndjson\""), "{err}");
    }
}
