//! The `spark` backend: each `sql` and `spark` step is one spark-submit process.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use lake_core::backend::BackendEnv;
use lake_core::cluster::{
    ClusterBackend, ClusterHandle, ClusterSpec, StepHandle, StepLogs, StepRequest, StepState,
    StepWork,
};
use lake_core::config::{Pipeline, Secret};
use lake_core::zone::DynZoneStore;
use lake_core::{Error, Result};

use crate::config::SparkConfig;
use crate::{SQL_DRIVER, SparkSubmit, sql_job};

/// Runs `sql` and `spark` steps with spark-submit on a Spark master, and everything else on
/// the embedded backend it wraps (which also runs the spark-submit processes: their output is
/// kept for diagnosis and cancelling a step stops its process group).
#[derive(Debug)]
pub struct SparkBackend {
    config: SparkConfig,
    embedded: Arc<dyn ClusterBackend>,
    store: Arc<DynZoneStore>,
    pipeline: Arc<Pipeline>,
    /// The driver and the steps' job files, removed with the backend.
    code: lake_core::scratch::ScratchDir,
    /// `lake_sql.py` in `code`, written once: steps running at once read it while others start.
    driver: PathBuf,
    submit: OnceLock<SparkSubmit>,
}

impl SparkBackend {
    /// A backend for `config` over `env`'s zones, handing processes to `embedded`.
    pub fn new(
        config: SparkConfig,
        embedded: Arc<dyn ClusterBackend>,
        env: &BackendEnv,
    ) -> Result<Self> {
        let code = lake_core::scratch::ScratchDir::new("spark").map_err(|source| Error::Io {
            action: "create a folder for",
            path: std::env::temp_dir().join("lake-scratch-spark-*"),
            source,
        })?;
        let driver = code.path().join("lake_sql.py");
        std::fs::write(&driver, SQL_DRIVER).map_err(|source| Error::Io {
            action: "write",
            path: driver.clone(),
            source,
        })?;
        Ok(Self {
            config,
            embedded,
            store: Arc::clone(&env.store),
            pipeline: Arc::clone(&env.pipeline),
            code,
            driver,
            submit: OnceLock::new(),
        })
    }

    fn submit_args(&self) -> Result<&SparkSubmit> {
        if let Some(s) = self.submit.get() {
            return Ok(s);
        }
        let program = self.config.program()?;
        Ok(self
            .submit
            .get_or_init(|| self.config.submit(&program, &self.pipeline)))
    }

    /// What Spark reads for a key of the lake: a local path, or `s3a://` for zones in S3.
    fn url_of(&self, key: &str) -> String {
        let at = self.store.location(key);
        match at.strip_prefix("s3://") {
            Some(rest) => format!("s3a://{rest}"),
            None => at,
        }
    }

    async fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.code.path().join(name);
        tokio::fs::write(&path, bytes)
            .await
            .map_err(|source| Error::Io {
                action: "write",
                path: path.clone(),
                source,
            })?;
        Ok(path)
    }

    fn python_env(&self) -> Vec<(String, Secret)> {
        ["PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON"]
            .into_iter()
            .map(|k| (k.to_owned(), Secret::plain(&self.config.python)))
            .collect()
    }

    /// The process that runs `step` on Spark, or `None` for a step the embedded backend runs
    /// as it is.
    async fn process(&self, step: &StepRequest) -> Result<Option<StepRequest>> {
        let (argv, env, workdir) = match &step.work {
            StepWork::Sql(work) => {
                let json = sql_job(work, &|k| self.url_of(k)).map_err(|e| Error::Invalid {
                    what: format!("step {}", step.name),
                    message: format!("cannot encode the job: {e}"),
                })?;
                let job = self.write(&format!("{}.json", step.name), &json).await?;
                let argv = self
                    .submit_args()?
                    .sql(&self.driver.to_string_lossy(), &job.to_string_lossy());
                (argv, self.python_env(), self.pipeline.base_dir.clone())
            }
            StepWork::Spark(work) => {
                let argv = self.submit_args()?.app(work, work.app.path());
                let mut env = self.python_env();
                env.extend(work.env.iter().cloned());
                (argv, env, work.workdir.clone())
            }
            _ => return Ok(None),
        };
        Ok(Some(StepRequest {
            name: step.name.clone(),
            work: StepWork::Command { argv, env, workdir },
            timeout: step.timeout,
        }))
    }
}

#[async_trait]
impl ClusterBackend for SparkBackend {
    fn name(&self) -> &str {
        "spark"
    }

    /// The driver merges as the embedded engine does (`lake_sql.py`'s `merge`).
    fn merges(&self) -> bool {
        true
    }

    async fn start(&self, spec: &ClusterSpec) -> Result<ClusterHandle> {
        let mut handle = self.embedded.start(spec).await?;
        handle.notes.push(format!(
            "spark: master {} (deploy mode {})",
            self.config.master, self.config.deploy_mode
        ));
        Ok(handle)
    }

    async fn submit(&self, cluster: &ClusterHandle, step: &StepRequest) -> Result<StepHandle> {
        match self.process(step).await? {
            Some(process) => self.embedded.submit(cluster, &process).await,
            None => self.embedded.submit(cluster, step).await,
        }
    }

    async fn poll(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<StepState> {
        self.embedded.poll(cluster, step).await
    }

    async fn wait(&self, cluster: &ClusterHandle, step: &StepHandle, timeout: Duration) {
        self.embedded.wait(cluster, step, timeout).await;
    }

    async fn logs(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<StepLogs> {
        self.embedded.logs(cluster, step).await
    }

    async fn cancel(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<()> {
        self.embedded.cancel(cluster, step).await
    }

    async fn terminate(&self, cluster: &ClusterHandle) -> Result<()> {
        self.embedded.terminate(cluster).await
    }
}
