//! `backend = "spark"` and its `[spark]` table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lake_core::backend::{BackendConfig, BackendEnv, BackendKind, BackendPlan};
use lake_core::cluster::{ClusterBackend, StepRequest, StepWork};
use lake_core::config::{ConfigCx, Pipeline, Root, StepSpec, StepSpecKind};
use lake_core::doctor::Check;
use lake_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::SparkSubmit;
use crate::backend::SparkBackend;

/// `[spark]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkModel {
    /// `local[2]` (default `local[*]`), `spark://host:7077`, `k8s://https://…`, `yarn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// The spark-submit program (default: `$SPARK_HOME/bin/spark-submit`, else on PATH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit: Option<String>,
    /// `client` (default) or `cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_mode: Option<String>,
    /// `--conf` settings of every application.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conf: BTreeMap<String, String>,
    /// The Python of `sql` steps and PySpark scripts (`PYSPARK_PYTHON`; default `python3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
}

/// `backend = "spark"`: steps on any Spark cluster through `spark-submit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SparkKind;

impl BackendKind for SparkKind {
    fn name(&self) -> &'static str {
        "spark"
    }

    fn table(&self) -> Option<&'static str> {
        Some("spark")
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn BackendConfig>> {
        let raw: SparkModel = cx.table("spark").unwrap_or_default();
        let master = raw.master.clone().unwrap_or_else(|| "local[*]".into());
        let known = ["local", "spark://", "k8s://", "yarn", "mesos://"];
        if !known.iter().any(|k| master.starts_with(k)) {
            cx.value(
                "spark.master",
                format!(
                    "{master:?} is not a Spark master: expected local[N], spark://host:port, k8s://https://…, or yarn"
                ),
            );
        }
        let deploy_mode = raw.deploy_mode.clone().unwrap_or_else(|| "client".into());
        if deploy_mode != "client" && deploy_mode != "cluster" {
            cx.value(
                "spark.deploy_mode",
                format!("{deploy_mode:?}: expected \"client\" or \"cluster\""),
            );
        }
        if deploy_mode == "cluster" && master.starts_with("local") {
            cx.value(
                "spark.deploy_mode",
                "a local master runs in client mode only",
            );
        }
        for (k, v) in &raw.conf {
            if !k.starts_with("spark.") {
                cx.key(
                    &format!("spark.conf.{k}"),
                    format!("{k:?} is not a Spark setting (they start with \"spark.\")"),
                );
            }
            if v.contains("${env:") {
                cx.value(
                    &format!("spark.conf.{k}"),
                    "a secret cannot go in a --conf (it is visible in the process list and the Spark UI); use the step's env",
                );
            }
        }
        if raw.submit.as_deref().is_some_and(str::is_empty) {
            cx.value("spark.submit", "empty: name the spark-submit program");
        }
        if !cx.selected() {
            return None;
        }
        let submit = raw.submit.clone().map(|s| {
            // A path relative to lake.toml stays relative to it; a bare name is looked up.
            if s.contains('/') {
                cx.base_dir.join(s).to_string_lossy().into_owned()
            } else {
                s
            }
        });
        Some(Arc::new(SparkConfig {
            master,
            submit,
            deploy_mode,
            conf: raw.conf,
            python: raw.python.unwrap_or_else(|| "python3".into()),
            root_is_s3: matches!(cx.root, Some(Root::S3 { .. })),
        }))
    }
}

/// A checked `[spark]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SparkConfig {
    /// The master URL.
    pub master: String,
    /// The spark-submit program as configured (`None`: found at run time).
    pub submit: Option<String>,
    /// `client` or `cluster`.
    pub deploy_mode: String,
    /// `--conf`s of every application.
    pub conf: BTreeMap<String, String>,
    /// `PYSPARK_PYTHON`.
    pub python: String,
    /// Zones in S3: Spark reads them as `s3a://`.
    pub root_is_s3: bool,
}

/// `name` as a program to run: itself when it is a path, else found on `PATH`.
fn find_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| name.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl SparkConfig {
    /// The spark-submit to run: `submit`, else `$SPARK_HOME/bin/spark-submit`, else the one on
    /// PATH; an error saying what was tried when there is none.
    pub fn program(&self) -> Result<PathBuf> {
        let tried = match &self.submit {
            Some(s) => {
                return find_program(s).ok_or_else(|| missing(&format!("[spark] submit = {s:?}")));
            }
            None => match std::env::var_os("SPARK_HOME") {
                Some(home) => {
                    let p = Path::new(&home).join("bin/spark-submit");
                    if p.is_file() {
                        return Ok(p);
                    }
                    format!("{} and spark-submit on PATH", p.display())
                }
                None => "SPARK_HOME (not set) and spark-submit on PATH".to_owned(),
            },
        };
        find_program("spark-submit").ok_or_else(|| missing(&tried))
    }

    /// spark-submit with this backend's master, deploy mode and `--conf`s (and, for zones in
    /// S3, the s3a settings from `[aws]`).
    pub fn submit(&self, program: &Path, pipeline: &Pipeline) -> SparkSubmit {
        let mut s = SparkSubmit::new(program.to_string_lossy())
            .option("master", &self.master)
            .option("deploy-mode", &self.deploy_mode);
        let mut conf = self.conf.clone();
        if self.root_is_s3 {
            let aws: S3aView = pipeline.settings("aws").unwrap_or_default();
            let mut add = |k: &str, v: String| {
                conf.entry(format!("spark.hadoop.fs.s3a.{k}")).or_insert(v);
            };
            if let Some(e) = &aws.endpoint_url {
                add("endpoint", e.clone());
            }
            if let Some(r) = &aws.region {
                add("endpoint.region", r.clone());
            }
            let path_style = aws.force_path_style.unwrap_or(aws.endpoint_url.is_some());
            add("path.style.access", path_style.to_string());
        }
        for (k, v) in &conf {
            s = s.conf(k, v);
        }
        s
    }

    fn needs_spark(steps: &[&StepSpec]) -> bool {
        steps.iter().any(|s| {
            matches!(
                s.kind,
                StepSpecKind::Sql { .. } | StepSpecKind::Spark { .. }
            )
        })
    }
}

fn missing(tried: &str) -> Error {
    Error::Invalid {
        what: "backend = \"spark\"".into(),
        message: format!(
            "no spark-submit: tried {tried}. Install Spark (or `pip install pyspark`) and set SPARK_HOME, put spark-submit on PATH, or set [spark] submit"
        ),
    }
}

/// Java for Spark: `$JAVA_HOME/bin/java`, else `java` on PATH.
fn java() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("JAVA_HOME") {
        let p = Path::new(&home).join("bin/java");
        if p.is_file() {
            return Ok(p);
        }
    }
    find_program("java").ok_or_else(|| Error::Invalid {
        what: "backend = \"spark\"".into(),
        message: "no Java: spark-submit needs a JVM (Java 17 or 21). Install one and put java on PATH or set JAVA_HOME".into(),
    })
}

/// The Spark version in `spark-submit --version`'s banner (`version 4.0.1`).
pub(crate) fn spark_version(banner: &str) -> Option<&str> {
    banner
        .lines()
        .filter_map(|l| l.split("version ").nth(1))
        .map(str::trim)
        .find(|v| v.starts_with(|c: char| c.is_ascii_digit()))
}

#[async_trait]
impl BackendConfig for SparkConfig {
    fn name(&self) -> &'static str {
        "spark"
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    async fn preflight(&self, _pipeline: &Pipeline, steps: &[&StepSpec]) -> Result<()> {
        if Self::needs_spark(steps) {
            self.program()?;
            java()?;
        }
        Ok(())
    }

    async fn open(&self, env: &BackendEnv) -> Result<Arc<dyn ClusterBackend>> {
        Ok(Arc::new(SparkBackend::new(
            self.clone(),
            env.embedded("the spark backend")?,
            env,
        )?))
    }

    async fn plan(&self, env: &BackendEnv, steps: &[StepRequest]) -> Result<Option<BackendPlan>> {
        let program = self
            .program()
            .unwrap_or_else(|_| PathBuf::from("spark-submit"));
        let submit = self.submit(&program, &env.pipeline);
        let mut lines = vec![format!(
            "spark: master {}, deploy mode {}; each sql and spark step is one spark-submit (command and copy steps run as on local):",
            self.master, self.deploy_mode
        )];
        let mut json = Vec::new();
        for s in steps {
            let argv = match &s.work {
                StepWork::Sql(_) => {
                    submit.sql("<code>/lake_sql.py", &format!("<code>/{}.json", s.name))
                }
                StepWork::Spark(w) => submit.app(w, w.app.path()),
                _ => continue,
            };
            lines.push(format!("  {}: {}", s.name, argv.join(" ")));
            json.push(serde_json::json!({ "step": s.name, "argv": argv }));
        }
        Ok(Some(BackendPlan {
            json: serde_json::json!({ "submit": json, "python": self.python }),
            text: lines.join("\n") + "\n",
        }))
    }

    async fn doctor(&self, _env: &BackendEnv) -> Vec<Check> {
        let mut out = Vec::new();
        let program = match self.program() {
            Ok(p) => p,
            Err(e) => {
                out.push(Check::fail(
                    "spark-submit",
                    e.to_string(),
                    "install Spark or `pip install pyspark`, then set SPARK_HOME or [spark] submit",
                ));
                return out;
            }
        };
        if let Err(e) = java() {
            out.push(Check::fail("java", e.to_string(), "install Java 17 or 21"));
            return out;
        }
        let run = tokio::process::Command::new(&program)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        match tokio::time::timeout(Duration::from_secs(120), run).await {
            Ok(Ok(o)) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stderr).into_owned()
                    + &String::from_utf8_lossy(&o.stdout);
                out.push(Check::pass(
                    "spark-submit",
                    format!(
                        "{} starts: Spark {}, master {}",
                        program.display(),
                        spark_version(&text).unwrap_or("(version not shown)"),
                        self.master
                    ),
                ));
            }
            Ok(Ok(o)) => out.push(Check::fail(
                "spark-submit",
                format!(
                    "{} --version exited with {}: {}",
                    program.display(),
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                "check the Spark installation (SPARK_HOME, JAVA_HOME)",
            )),
            Ok(Err(e)) => out.push(Check::fail(
                "spark-submit",
                format!("{} could not start: {e}", program.display()),
                "check that it is executable",
            )),
            Err(_) => out.push(Check::fail(
                "spark-submit",
                format!("{} --version did not answer within 120s", program.display()),
                "check the Spark installation",
            )),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_from_the_banner() {
        let banner = "Welcome to\n      ____\n   /__ / .__/\\_,_/_/ /_/\\_\\   version 4.0.1\n      /_/\n\nUsing Scala version 2.13.16";
        assert_eq!(super::spark_version(banner), Some("4.0.1"));
        assert_eq!(super::spark_version("nothing"), None);
    }
}

/// The keys of `[aws]` (checked by lake-aws, which owns the table) that s3a needs: the zone
/// store and Spark then reach the same endpoint.
#[derive(Debug, Default, serde::Deserialize)]
struct S3aView {
    endpoint_url: Option<String>,
    region: Option<String>,
    force_path_style: Option<bool>,
}
