//! [`ClusterBackend`]: where steps run.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use crate::Result;
use crate::config::{Expectation, InputFormat, Secret, SparkApp};
use crate::publish::ObjectEntry;

/// What the orchestrator asks a backend to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterSpec {
    /// The pipeline name.
    pub pipeline: String,
    /// The run id; backends tag what they create with it.
    pub run_id: String,
    /// Tags for what the backend creates (always with `lake:pipeline`, `lake:run-id` and
    /// `lake:root`).
    pub tags: BTreeMap<String, String>,
}

impl ClusterSpec {
    /// The spec of a run of `pipeline` on the zones at `root`: tagged `lake:pipeline`,
    /// `lake:run-id` and `lake:root`, so leftovers are matched to their own pipeline *and*
    /// root (two roots, or `--env`s, may share a pipeline name).
    pub fn new(pipeline: &str, run_id: &str, root: &str) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
            run_id: run_id.to_owned(),
            tags: BTreeMap::from([
                ("lake:pipeline".to_owned(), pipeline.to_owned()),
                ("lake:run-id".to_owned(), run_id.to_owned()),
                ("lake:root".to_owned(), root.to_owned()),
            ]),
        }
    }
}

/// True when `tags` (as [`ClusterSpec::new`] sets them) mark something a run of `pipeline` on
/// the zones at `root` started, and that run is not `live` (the run holding the lock, if any):
/// a leftover to reap. A pipeline of the same name on another root (another `--env`, another
/// bucket) is not this one.
pub fn left_by_another_run(
    tags: &BTreeMap<String, String>,
    pipeline: &str,
    root: &str,
    live: Option<&str>,
) -> bool {
    tags.get("lake:pipeline").map(String::as_str) == Some(pipeline)
        && tags.get("lake:root").map(String::as_str) == Some(root)
        && tags.get("lake:run-id").map(String::as_str) != live
}

/// A started (or attached) cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterHandle {
    /// The backend's id for it.
    pub id: String,
    /// True when lake attached to a cluster it did not create: it is never terminated by lake.
    pub attached: bool,
    /// What the user should know about how it was started (created, attached, leftovers
    /// terminated); the orchestrator reports each line.
    pub notes: Vec<String>,
}

/// One step to run.
#[derive(Debug, Clone)]
pub struct StepRequest {
    /// The step name.
    pub name: String,
    /// What to run.
    pub work: StepWork,
    /// Fail the step after this long.
    pub timeout: Option<Duration>,
}

/// What a step runs, fully resolved (placeholders expanded, secrets resolved).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StepWork {
    /// A process.
    Command {
        /// Program and arguments.
        argv: Vec<String>,
        /// Environment added to the process's (values may be secrets).
        env: Vec<(String, Secret)>,
        /// Working directory.
        workdir: PathBuf,
    },
    /// A SQL query over committed objects of the lake, written as Parquet to staging.
    Sql(SqlWork),
    /// A Spark application (`spark-submit`).
    Spark(SparkWork),
    /// Committed objects copied, as they are, to staging.
    Copy(CopyWork),
}

/// A `spark` step, resolved.
#[derive(Debug, Clone)]
pub struct SparkWork {
    /// The script or JAR.
    pub app: SparkApp,
    /// Application arguments (placeholders expanded).
    pub args: Vec<String>,
    /// `spark-submit` options.
    pub spark_args: Vec<String>,
    /// Environment of the application (values may be secrets).
    pub env: Vec<(String, Secret)>,
    /// Working directory when run locally.
    pub workdir: PathBuf,
}

impl SparkWork {
    /// `spark-submit [spark_args] [--class C] <app> [args]`, with the application at `app`
    /// (its local path, or where a backend uploaded it).
    pub fn spark_submit(&self, app: &str) -> Vec<String> {
        let mut argv = vec!["spark-submit".to_owned()];
        argv.extend(self.spark_args.iter().cloned());
        if let SparkApp::Jar {
            class: Some(class), ..
        } = &self.app
        {
            argv.extend(["--class".to_owned(), class.clone()]);
        }
        argv.push(app.to_owned());
        argv.extend(self.args.iter().cloned());
        argv
    }
}

/// A `copy` step, resolved: the objects of one dataset copied under `output`, keeping their
/// paths below the dataset's prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyWork {
    /// The dataset copied.
    pub input: SqlInput,
    /// The staging key prefix to write to.
    pub output: String,
}

/// A `sql` step, resolved: the exact objects to read and where to write.
///
/// The backend writes the output rows as Parquet under `output`, the rows that failed an
/// expectation (or a CAST) under `output/_rejected/` with `_reason` and `_run_id` columns, and
/// the counts to `output/_metrics.json` ([`StepMetrics`](crate::publish::StepMetrics)); the
/// orchestrator publishes them.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlWork {
    /// The query: one SELECT.
    pub sql: String,
    /// Where the query is written (`lake.toml:12 (steps.credit.sql)`), for error messages.
    pub origin: String,
    /// The tables the query reads.
    pub inputs: Vec<SqlInput>,
    /// The staging key prefix to write to.
    pub output: String,
    /// Output columns written as `key=value` folders.
    pub partition_by: Vec<String>,
    /// Conditions every output row must meet.
    pub expect: Vec<Expectation>,
    /// Written into the `_run_id` column of rejected rows.
    pub run_id: String,
    /// Input objects this run committed itself (landed or published), hashed as they were
    /// written: an engine that checks what it reads against the manifests need not read these
    /// back.
    pub committed: std::collections::BTreeSet<String>,
    /// With `mode = "merge"`: how to merge, and the dataset's current objects.
    pub merge: Option<Box<MergeWork>>,
}

/// A merge's work: the rows the query writes are a batch merged into the dataset's current
/// objects; the engine writes the merged files of the objects it rewrites, and names those in
/// [`REPLACES`](crate::publish::REPLACES).
#[derive(Debug, Clone, PartialEq)]
pub struct MergeWork {
    /// Keys, order and deletes.
    pub spec: crate::config::MergeSpec,
    /// The dataset's key prefix (`trusted/customers`); partition folders below it are columns.
    pub prefix: String,
    /// Its committed objects (none before its first publish).
    pub current: Vec<ObjectEntry>,
}

/// One table of a [`SqlWork`].
#[derive(Debug, Clone, PartialEq)]
pub struct SqlInput {
    /// The table name in the query.
    pub table: String,
    /// The dataset it comes from (`raw/credit`, `trusted/credit`), for messages.
    pub dataset: String,
    /// The key prefix of the dataset; partition folders (`ingest_date=…`) below it become columns.
    pub prefix: String,
    /// How to read the files.
    pub format: InputFormat,
    /// The committed objects to read (from the manifests), keys relative to the root.
    pub objects: Vec<ObjectEntry>,
}

/// A submitted step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct StepHandle {
    /// The backend's id for it.
    pub id: String,
    /// The step name.
    pub name: String,
}

/// Where a submitted step is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum StepState {
    /// Waiting to start.
    Pending,
    /// Running.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error.
    Failed {
        /// The backend's short reason (`exit status 2`, EMR's FailureDetails).
        reason: String,
    },
    /// Cancelled before it finished.
    Cancelled,
}

impl StepState {
    /// True once the step will not change state again.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed { .. } | Self::Cancelled
        )
    }
}

/// Lines of a step's log that say why it failed: Python tracebacks, Java `Caused by`, and
/// exception or error lines, at most `max` (the last ones), in order.
pub fn cause_lines(log: &str, max: usize) -> Vec<String> {
    let mut picked: Vec<String> = Vec::new();
    let mut in_traceback = false;
    for line in log.lines() {
        let t = line.trim();
        let keep = if t.starts_with("Traceback (most recent call last)") {
            in_traceback = true;
            true
        } else if in_traceback {
            // Keep where it happened (`File …, line …`), not the code and `^^^` lines; it
            // ends with its unindented exception line.
            if !line.starts_with([' ', '\t']) {
                in_traceback = false;
                true
            } else {
                t.starts_with("File ")
            }
        } else {
            t.starts_with("Caused by")
                || t.contains("Exception:")
                || t.contains("Error:")
                || t.starts_with("Exception in thread")
        };
        if keep && !t.is_empty() {
            picked.push(line.trim_end().to_owned());
        }
    }
    let start = picked.len().saturating_sub(max);
    picked.split_off(start)
}

#[cfg(test)]
mod tests {
    use super::cause_lines;

    #[test]
    fn cause_lines_keep_the_traceback_frames_and_exceptions() {
        let log = "INFO starting\nTraceback (most recent call last):\n  File \"a.py\", line 3, in <module>\n    main()\n    ^^^^^^\nValueError: bad age\nINFO done\n\
                   Exception in thread \"main\" org.apache.spark.SparkException: job aborted\n\tat x.y(Z.java:1)\nCaused by: java.io.IOException: disk full\n";
        assert_eq!(
            cause_lines(log, 20),
            [
                "Traceback (most recent call last):",
                "  File \"a.py\", line 3, in <module>",
                "ValueError: bad age",
                "Exception in thread \"main\" org.apache.spark.SparkException: job aborted",
                "Caused by: java.io.IOException: disk full",
            ]
        );
        assert_eq!(cause_lines(log, 2).len(), 2);
        assert!(cause_lines("all fine\n", 20).is_empty());
    }
}

/// What a step printed, as far as the backend keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StepLogs {
    /// The end of its standard output.
    pub stdout_tail: String,
    /// The end of its standard error.
    pub stderr_tail: String,
}

/// Where steps run: this machine, an EMR cluster.
///
/// # Contract
///
/// - [`start`](Self::start) creates or attaches to a cluster. Whatever it creates is tagged
///   with the spec's tags so a later run can find it. If it fails, nothing is left running.
/// - [`submit`](Self::submit) queues a step and returns at once; [`poll`](Self::poll) reports
///   its state without blocking. A step's state only moves forward.
/// - [`logs`](Self::logs) may be called on a finished step; it returns what is available
///   (possibly empty, never an error because logs are late).
/// - [`cancel`](Self::cancel) stops a step; cancelling a finished step is not an error.
/// - [`terminate`](Self::terminate) stops everything the backend started for the handle and
///   is safe to call more than once. It never terminates an `attached` cluster.
/// - Unsupported work (a step kind the backend cannot run) fails at `submit` with
///   [`Error::NotImplemented`](crate::Error::NotImplemented).
#[async_trait]
pub trait ClusterBackend: Send + Sync + fmt::Debug + 'static {
    /// A short name for messages (`local`, `emr`).
    fn name(&self) -> &str;

    /// True when `sql` steps run on an embedded engine in this process: it hashes every
    /// input it reads (so inputs need no entity-tag check first), and its failures (SQL and
    /// data errors) would fail the same way again (so a failed `sql` step is not retried).
    fn embedded_sql(&self) -> bool {
        false
    }

    /// True when the backend runs a `sql` step's [`MergeWork`] (`mode = "merge"` or
    /// `"history"`): it writes the merged files and names the ones they replace in
    /// [`REPLACES`](crate::publish::REPLACES). A step with merge work on a backend that does
    /// not is refused before anything runs.
    fn merges(&self) -> bool {
        self.embedded_sql()
    }

    /// Start or attach to a cluster.
    async fn start(&self, spec: &ClusterSpec) -> Result<ClusterHandle>;

    /// Queue a step.
    async fn submit(&self, cluster: &ClusterHandle, step: &StepRequest) -> Result<StepHandle>;

    /// Current state of a step.
    async fn poll(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<StepState>;

    /// What a step printed.
    async fn logs(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<StepLogs>;

    /// Stop a step.
    async fn cancel(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<()>;

    /// Stop the cluster and everything on it (unless attached).
    async fn terminate(&self, cluster: &ClusterHandle) -> Result<()>;

    /// The slowest polling this backend wants at least: the first interval and the longest.
    /// The orchestrator polls no faster than this, whatever the run's options ask (EMR limits
    /// its API's request rate; a local process can be polled often).
    fn poll_floor(&self) -> (Duration, Duration) {
        (Duration::ZERO, Duration::ZERO)
    }

    /// Wait until `step`'s state may have changed, at most `timeout` (the poll schedule's next
    /// interval). The default sleeps `timeout`; a backend that knows when its steps end (a
    /// local process) returns as soon as one does, so a run sees the end of a step at once
    /// instead of up to a poll interval late.
    async fn wait(&self, _cluster: &ClusterHandle, _step: &StepHandle, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }

    /// A short line on the cluster's state as of the last poll (`cluster j-… RUNNING`), for
    /// progress output; `None` when there is nothing to say.
    async fn status(&self, _cluster: &ClusterHandle) -> Option<String> {
        None
    }
}
