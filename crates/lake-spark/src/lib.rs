//! # lake-spark
//!
//! What every Spark-based backend of lake shares, and the `spark` backend itself.
//!
//! - [`SQL_DRIVER`] and [`sql_job`]: the PySpark program that runs a `sql` step on Spark the
//!   way the embedded engine runs it (same inputs, same CASTs and expectations, same rejected
//!   rows), and the `job.json` that tells it what to read and write. EMR uploads both to S3;
//!   the `spark` backend writes them to a folder of this machine.
//! - [`SparkSubmit`]: `spark-submit`'s arguments for a `sql` or `spark` step, from a master,
//!   a deploy mode and `--conf`s.
//! - [`SparkKind`] (`backend = "spark"`, table `[spark]`): steps on any Spark cluster
//!   (`local[*]`, `spark://`, `k8s://`, `yarn`) through `spark-submit` on this machine. `sql`
//!   and `spark` steps become spark-submit processes; `command` and `copy` steps run as on
//!   `local`. Each step is a process of the embedded backend, so its output is kept, its
//!   failure cause picked from it, and Ctrl-C stops its process group.
//!
//! The crate depends on lake-core only: a backend here never names a store or a cloud.

mod backend;
mod config;

use lake_core::cluster::{SparkWork, SqlWork};
use lake_core::config::SparkApp;
use serde::Serialize;

pub use backend::SparkBackend;
pub use config::{SparkConfig, SparkKind, SparkModel};

/// The PySpark program that runs `sql` steps (`spark-submit lake_sql.py <job.json>`).
pub const SQL_DRIVER: &str = include_str!("lake_sql.py");

/// What a `sql` step's driver is told (`job.json`).
#[derive(Debug, Serialize)]
struct SqlJob<'a> {
    sql: &'a str,
    origin: &'a str,
    inputs: Vec<SqlJobInput<'a>>,
    output: String,
    partition_by: &'a [String],
    expect: Vec<&'a str>,
    run_id: &'a str,
    /// With `mode = "merge"` or `"history"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    merge: Option<SqlJobMerge<'a>>,
}

/// How the batch meets the dataset: the spec's keys, the dataset's folder and its data files.
#[derive(Debug, Serialize)]
struct SqlJobMerge<'a> {
    #[serde(flatten)]
    spec: &'a lake_core::config::MergeSpec,
    prefix: String,
    current: Vec<SqlJobObject>,
}

#[derive(Debug, Serialize)]
struct SqlJobObject {
    key: String,
    url: String,
}

#[derive(Debug, Serialize)]
struct SqlJobInput<'a> {
    table: &'a str,
    dataset: &'a str,
    prefix: String,
    format: &'a lake_core::config::InputFormat,
    paths: Vec<String>,
}

/// The `job.json` of a `sql` step for [`SQL_DRIVER`]: the query, each input's format and the
/// URLs of its committed objects, the output URL, partitions, expectations and run id.
/// `url_of` turns a key of the lake into what Spark reads (`s3://…`, `s3a://…`, or a local
/// path).
pub fn sql_job(
    work: &SqlWork,
    url_of: &dyn Fn(&str) -> String,
) -> std::result::Result<Vec<u8>, serde_json::Error> {
    let job = SqlJob {
        sql: &work.sql,
        origin: &work.origin,
        inputs: work
            .inputs
            .iter()
            .map(|i| SqlJobInput {
                table: &i.table,
                dataset: &i.dataset,
                prefix: url_of(&i.prefix),
                format: &i.format,
                paths: i.objects.iter().map(|o| url_of(&o.key)).collect(),
            })
            .collect(),
        output: url_of(&work.output),
        partition_by: &work.partition_by,
        expect: work.expect.iter().map(|e| e.condition.as_str()).collect(),
        run_id: &work.run_id,
        merge: work.merge.as_deref().map(|m| SqlJobMerge {
            spec: &m.spec,
            prefix: url_of(&m.prefix),
            current: m
                .current
                .iter()
                .filter(|o| o.key.ends_with(".parquet") && !lake_core::publish::is_hidden(&o.key))
                .map(|o| SqlJobObject {
                    key: o.key.clone(),
                    url: url_of(&o.key),
                })
                .collect(),
        }),
    };
    serde_json::to_vec_pretty(&job)
}

/// `spark-submit`'s arguments: the program, then the options every application of a backend
/// gets (master, deploy mode, `--conf`s), then the application's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparkSubmit {
    /// The program (`spark-submit`, or its path).
    pub program: String,
    /// Options before the application, in order (`--master`, `--deploy-mode`, `--conf k=v`).
    pub options: Vec<String>,
}

impl SparkSubmit {
    /// `program` with no options.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            options: Vec::new(),
        }
    }

    /// Add `--<name> <value>`.
    pub fn option(mut self, name: &str, value: impl Into<String>) -> Self {
        self.options.push(format!("--{name}"));
        self.options.push(value.into());
        self
    }

    /// Add `--conf key=value`.
    pub fn conf(self, key: &str, value: &str) -> Self {
        self.option("conf", format!("{key}={value}"))
    }

    /// The argv of the `sql` driver at `driver` reading the job at `job`.
    pub fn sql(&self, driver: &str, job: &str) -> Vec<String> {
        let mut argv = vec![self.program.clone()];
        argv.extend(self.options.iter().cloned());
        argv.extend([driver.to_owned(), job.to_owned()]);
        argv
    }

    /// The argv of a `spark` step whose application is at `app` (its local path, or where a
    /// backend uploaded it): these options, the step's `spark_args`, `--class` for a JAR, the
    /// application and its arguments.
    pub fn app(&self, work: &SparkWork, app: &str) -> Vec<String> {
        let mut argv = vec![self.program.clone()];
        argv.extend(self.options.iter().cloned());
        argv.extend(work.spark_args.iter().cloned());
        if let SparkApp::Jar {
            class: Some(class), ..
        } = &work.app
        {
            argv.extend(["--class".to_owned(), class.clone()]);
        }
        argv.push(app.to_owned());
        argv.extend(work.args.iter().cloned());
        argv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_puts_backend_options_before_the_steps_own() {
        let work = SparkWork {
            app: SparkApp::Jar {
                path: "app.jar".into(),
                class: Some("x.Main".into()),
            },
            args: vec!["2024-05-01".into()],
            spark_args: vec!["--executor-memory".into(), "2g".into()],
            env: Vec::new(),
            workdir: ".".into(),
        };
        let s = SparkSubmit::new("spark-submit")
            .option("master", "local[2]")
            .conf("spark.ui.enabled", "false");
        assert_eq!(
            s.app(&work, "/tmp/app.jar"),
            [
                "spark-submit",
                "--master",
                "local[2]",
                "--conf",
                "spark.ui.enabled=false",
                "--executor-memory",
                "2g",
                "--class",
                "x.Main",
                "/tmp/app.jar",
                "2024-05-01"
            ]
        );
        assert_eq!(
            s.sql("d.py", "j.json")[5..],
            ["d.py".to_owned(), "j.json".to_owned()]
        );
    }
}
