//! The EMR Serverless backend: `sql` and `spark` steps as job runs of an application lake
//! creates for the run (or one it is pointed at), watched, diagnosed from the driver's log,
//! and an application lake created always stopped and deleted.
//!
//! `command` and `copy` steps run as they do on the embedded backend (a process on this
//! machine; object copies in the zones): EMR Serverless runs Spark jobs only.

mod api;
mod config;
mod plugin;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use lake_core::cluster::{
    ClusterBackend, ClusterHandle, ClusterSpec, StepHandle, StepLogs, StepRequest, StepState,
    StepWork, left_by_another_run,
};
use lake_core::config::SparkApp;
use lake_core::zone::DynZoneStore;
use lake_core::{Error, Result};
use sha2::{Digest, Sha256};

#[cfg(any(test, feature = "testing"))]
pub use api::MockServerlessApi;
pub use api::{
    ApplicationStatus, AutoStart, AutoStop, Capacity, Classification, ConfigurationOverrides,
    CreateApplication, JobDriver, JobRunStatus, Monitoring, S3Logs, SdkServerless, ServerlessApi,
    SparkSubmit, StartJobRun,
};
pub use config::{DEFAULT_PRICE, Estimate, Price, ServerlessConfig, ServerlessDef};
pub use plugin::{EmrServerlessConfig, EmrServerlessKind};

pub use crate::calls::ApiError;
use crate::calls::plain_env;

/// The application id a plan shows for the one a run would create.
pub const NEW_APPLICATION: &str = "<new application>";

/// Timing of the backend's waits (shortened in tests).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// First wait after a throttled call; it doubles.
    pub throttle_backoff: Duration,
    /// Attempts of a throttled call.
    pub throttle_attempts: u32,
    /// Between looks for a failed job's log.
    pub log_poll: Duration,
    /// The first poll of a job comes no sooner than this; the interval doubles up to
    /// `max_poll`.
    pub poll: Duration,
    /// The longest interval between polls.
    pub max_poll: Duration,
    /// Between looks at an application that is being created, stopped or deleted.
    pub settle_poll: Duration,
    /// How long an application may take to be created, or to stop and be deleted.
    pub settle_wait: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            throttle_backoff: Duration::from_secs(2),
            throttle_attempts: 8,
            log_poll: Duration::from_secs(15),
            poll: Duration::from_secs(2),
            max_poll: Duration::from_secs(30),
            settle_poll: Duration::from_secs(5),
            settle_wait: Duration::from_secs(600),
        }
    }
}

/// Runs steps on EMR Serverless. See [`ClusterBackend`] for the contract.
#[derive(Debug)]
pub struct ServerlessBackend {
    api: Arc<dyn ServerlessApi>,
    def: ServerlessDef,
    store: Arc<DynZoneStore>,
    pipeline: String,
    embedded: Option<Arc<dyn ClusterBackend>>,
    timing: Timing,
    state: Mutex<Watch>,
}

#[derive(Debug, Default)]
struct Watch {
    /// The run's tags and id (from `start`).
    spec: Option<ClusterSpec>,
    /// The embedded backend's handle, for the steps it runs.
    local: Option<ClusterHandle>,
    /// Steps handed to the embedded backend.
    delegated: HashSet<String>,
    /// Job runs lake started that have not finished.
    open: HashSet<String>,
    /// Why finished job runs failed.
    details: HashMap<String, String>,
    /// Submissions per step (a retried step gets a new idempotency token).
    attempts: HashMap<String, u32>,
    /// Applications already deleted.
    deleted: HashSet<String>,
}

impl ServerlessBackend {
    /// A backend making `api` calls for a pipeline's `[serverless]`, uploading step code to
    /// `<root>/_lake/code/` of `store`, and handing `command` and `copy` steps to `embedded`.
    pub fn new(
        api: Arc<dyn ServerlessApi>,
        def: ServerlessDef,
        store: Arc<DynZoneStore>,
        pipeline: &str,
        embedded: Option<Arc<dyn ClusterBackend>>,
    ) -> Self {
        Self {
            api,
            def,
            store,
            pipeline: pipeline.to_owned(),
            embedded,
            timing: Timing::default(),
            state: Mutex::new(Watch::default()),
        }
    }

    /// Use these waits.
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// The user's tags and the run's (`lake:pipeline`, `lake:run-id`, `lake:root`).
    fn tags(&self, spec: &ClusterSpec) -> BTreeMap<String, String> {
        let mut tags = self.def.tags.clone();
        tags.extend(spec.tags.clone());
        tags
    }

    /// The CreateApplication request of a run with these tags.
    pub fn create_request(&self, spec: &ClusterSpec) -> CreateApplication {
        let tags = self.tags(spec);
        CreateApplication {
            name: self.def.name.clone(),
            release_label: self.def.release.clone(),
            kind: "SPARK".into(),
            client_token: token(&[&spec.run_id]),
            maximum_capacity: Capacity {
                cpu: self.def.max_cpu.clone(),
                memory: self.def.max_memory.clone(),
            },
            auto_start_configuration: AutoStart { enabled: true },
            auto_stop_configuration: AutoStop {
                enabled: self.def.idle_timeout.is_some(),
                idle_timeout_minutes: self
                    .def
                    .idle_timeout
                    .map(|d| i32::try_from(d.as_secs() / 60).unwrap_or(i32::MAX)),
            },
            tags,
        }
    }

    /// The StartJobRun request of a step on `application`, uploading what it needs first (with
    /// `upload`; without, the request names where the uploads would go, for a plan). `None`
    /// for a step the embedded backend runs (`command`, `copy`).
    pub async fn job_request(
        &self,
        application: &str,
        spec: &ClusterSpec,
        step: &StepRequest,
        attempt: u32,
        upload: bool,
    ) -> Result<Option<StartJobRun>> {
        let (entry_point, entry_point_arguments, params) = match &step.work {
            StepWork::Sql(work) => {
                let driver = self
                    .upload(
                        "lake_sql.py",
                        Bytes::from_static(lake_spark::SQL_DRIVER.as_bytes()),
                        upload,
                    )
                    .await?;
                let json =
                    lake_spark::sql_job(work, &|key| self.store.url_of(key)).map_err(|e| {
                        Error::Invalid {
                            what: format!("step {}", step.name),
                            message: format!("cannot encode the job: {e}"),
                        }
                    })?;
                let job = self.upload("job.json", Bytes::from(json), upload).await?;
                (driver, vec![job], Vec::new())
            }
            StepWork::Spark(work) => {
                let app = self.upload_file(work.app.path(), upload).await?;
                let mut params = work.spark_args.clone();
                if let SparkApp::Jar {
                    class: Some(class), ..
                } = &work.app
                {
                    params.extend(["--class".to_owned(), class.clone()]);
                }
                for (k, v) in plain_env(&step.name, &work.env)? {
                    params.extend([
                        "--conf".to_owned(),
                        format!("spark.emr-serverless.driverEnv.{k}={v}"),
                        "--conf".to_owned(),
                        format!("spark.executorEnv.{k}={v}"),
                    ]);
                }
                (app, work.args.clone(), params)
            }
            StepWork::Command { .. } | StepWork::Copy(_) => return Ok(None),
            _ => {
                return Err(Error::NotImplemented {
                    operation: "this step kind",
                    implementer: "the emr-serverless backend".into(),
                });
            }
        };
        if params.iter().any(|p| p.contains(char::is_whitespace)) {
            return Err(Error::Invalid {
                what: format!("step {}: spark_args", step.name),
                message: "EMR Serverless takes spark-submit options as one space-separated string: an option or value with a space cannot be passed".into(),
            });
        }
        let mut tags = self.tags(spec);
        tags.insert("lake:step".into(), step.name.clone());
        let mut configuration_overrides = ConfigurationOverrides {
            application_configuration: Vec::new(),
            monitoring_configuration: self.def.log_uri.as_ref().map(|u| Monitoring {
                s3_monitoring_configuration: S3Logs { log_uri: u.clone() },
            }),
        };
        if !self.def.spark_conf.is_empty() {
            configuration_overrides
                .application_configuration
                .push(Classification {
                    classification: "spark-defaults".into(),
                    properties: self.def.spark_conf.clone(),
                });
        }
        Ok(Some(StartJobRun {
            application_id: application.to_owned(),
            client_token: token(&[&spec.run_id, &step.name, &attempt.to_string()]),
            name: step.name.clone(),
            execution_role_arn: self.def.execution_role.clone(),
            job_driver: JobDriver {
                spark_submit: SparkSubmit {
                    entry_point,
                    entry_point_arguments,
                    spark_submit_parameters: params.join(" "),
                },
            },
            configuration_overrides,
            execution_timeout_minutes: step.timeout.map_or(720, |t| {
                i64::try_from(t.as_secs().div_ceil(60)).unwrap_or(i64::MAX) + 5
            }),
            tags,
        }))
    }

    async fn upload(&self, name: &str, bytes: Bytes, upload: bool) -> Result<String> {
        crate::calls::upload_code(&self.store, name, bytes, upload).await
    }

    async fn upload_file(&self, path: &str, upload: bool) -> Result<String> {
        crate::calls::upload_app(&self.store, path, upload).await
    }

    /// What a run would ask for: the CreateApplication request (`None` with an existing
    /// application) and each step's StartJobRun (`None` for a step run on this machine).
    /// Nothing is uploaded or called.
    pub async fn plan(
        &self,
        spec: &ClusterSpec,
        steps: &[StepRequest],
    ) -> Result<(Option<CreateApplication>, Vec<Option<StartJobRun>>)> {
        let application = self.def.attach.as_deref().unwrap_or(NEW_APPLICATION);
        let mut out = Vec::new();
        for s in steps {
            out.push(self.job_request(application, spec, s, 1, false).await?);
        }
        let create = self.def.attach.is_none().then(|| self.create_request(spec));
        Ok((create, out))
    }

    /// Applications lake created (tagged `lake:pipeline`) that are not terminated, of every
    /// pipeline.
    pub async fn applications(&self) -> Result<Vec<ApplicationStatus>> {
        let all = self
            .call("list applications", || self.api.live_applications())
            .await?;
        Ok(all
            .into_iter()
            .filter(|a| a.tags.contains_key("lake:pipeline"))
            .collect())
    }

    /// Stop and delete this pipeline's applications on this root whose run is not `live`.
    /// Returns them.
    pub async fn reap(&self, live: Option<&str>) -> Result<Vec<ApplicationStatus>> {
        let mut reaped = Vec::new();
        for a in self.applications().await? {
            if left_by_another_run(&a.tags, &self.pipeline, &self.store.root_url(), live) {
                self.delete(&a.id).await?;
                reaped.push(a);
            }
        }
        Ok(reaped)
    }

    /// Call `op`, waiting and retrying while it is throttled.
    async fn call<T, F, Fut>(&self, operation: &str, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = std::result::Result<T, ApiError>>,
    {
        crate::calls::retrying(
            self.timing.throttle_attempts,
            self.timing.throttle_backoff,
            operation,
            op,
        )
        .await
        .map_err(|e| self.error(operation, e))
    }

    fn error(&self, operation: &str, e: ApiError) -> Error {
        let needs = (operation.starts_with("start job")).then(|| {
            format!(
                "emr-serverless:StartJobRun on the application and iam:PassRole on {}",
                self.def.execution_role
            )
        });
        crate::calls::backend_error("emr-serverless", operation, e, needs)
    }

    /// Wait until a new application can take jobs (`CREATED`, or already starting).
    async fn created(&self, id: &str) -> Result<()> {
        let deadline = Instant::now() + self.timing.settle_wait;
        let mut waits = self.settle_waits();
        loop {
            let a = self
                .call("get application", || self.api.get_application(id))
                .await?;
            match a.state.as_str() {
                "CREATED" | "STARTING" | "STARTED" => return Ok(()),
                "CREATING" if Instant::now() < deadline => {
                    tokio::time::sleep(waits.next().unwrap_or(self.timing.settle_poll)).await;
                }
                state => {
                    return Err(Error::Cluster {
                        backend: "emr-serverless".into(),
                        operation: format!("create application {id}"),
                        source: format!(
                            "it is {state}{}",
                            a.details.map(|d| format!(": {d}")).unwrap_or_default()
                        )
                        .into(),
                    });
                }
            }
        }
    }

    /// Stop and delete an application, until GetApplication shows it `TERMINATED`: it is
    /// stopped first when started (once its jobs are cancelled), then deleted.
    async fn delete(&self, id: &str) -> Result<()> {
        let deadline = Instant::now() + self.timing.settle_wait;
        let mut waits = self.settle_waits();
        let mut last = String::new();
        loop {
            let state = match crate::calls::retrying(
                self.timing.throttle_attempts,
                self.timing.throttle_backoff,
                "get application",
                || self.api.get_application(id),
            )
            .await
            {
                Ok(a) => a.state,
                // Already gone (deleted by hand, or by another `lake clusters --reap`).
                Err(e) if e.code.as_deref() == Some("ResourceNotFoundException") => {
                    "TERMINATED".into()
                }
                Err(e) => {
                    last = lake_core::run::error_chain(&self.error("get application", e));
                    String::new()
                }
            };
            let step = match state.as_str() {
                "TERMINATED" => {
                    self.state
                        .lock()
                        .expect("watch")
                        .deleted
                        .insert(id.to_owned());
                    return Ok(());
                }
                "CREATED" | "STOPPED" => {
                    self.call("delete application", || self.api.delete_application(id))
                        .await
                }
                "STARTED" | "STARTING" => {
                    self.call("stop application", || self.api.stop_application(id))
                        .await
                }
                _ => Ok(()),
            };
            if let Err(e) = step {
                last = lake_core::run::error_chain(&e);
            } else if !state.is_empty() {
                last = format!("it is {state}");
            }
            if Instant::now() >= deadline {
                return Err(Error::Cluster {
                    backend: "emr-serverless".into(),
                    operation: format!("delete application {id}"),
                    source: format!(
                        "not confirmed after {:?}: {last}. Delete it in the EMR Studio console or with `lake clusters --reap`",
                        self.timing.settle_wait
                    )
                    .into(),
                });
            }
            tokio::time::sleep(waits.next().unwrap_or(self.timing.settle_poll)).await;
        }
    }

    /// Waits between looks at a settling application: a tenth of `settle_poll` first,
    /// doubling up to it (a stop or a delete is often seen done at the first look).
    fn settle_waits(&self) -> impl Iterator<Item = Duration> + use<> {
        lake_core::retry::Backoff::polls(self.timing.settle_poll / 10, self.timing.settle_poll)
            .delays()
    }

    fn delegated(&self, step: &StepHandle) -> Option<(Arc<dyn ClusterBackend>, ClusterHandle)> {
        let w = self.state.lock().expect("watch");
        if !w.delegated.contains(&step.id) {
            return None;
        }
        Some((self.embedded.clone()?, w.local.clone()?))
    }

    fn log_urls(&self, application: &str, job: &str) -> Option<(String, String)> {
        self.def.log_uri.as_ref().map(|base| {
            let dir = format!("{base}applications/{application}/jobs/{job}/SPARK_DRIVER/");
            (format!("{dir}stderr.gz"), format!("{dir}stdout.gz"))
        })
    }

    async fn read_log(&self, url: &str) -> Result<Option<String>> {
        match self.call("read log", || self.api.read_object(url)).await? {
            Some(raw) => crate::calls::log_tail(url, raw).map(Some),
            None => Ok(None),
        }
    }
}

/// An idempotency token of these parts (32 hex characters).
fn token(parts: &[&str]) -> String {
    hex::encode(&Sha256::digest(parts.join("/").as_bytes())[..16])
}

/// A failed job's reason when EMR Serverless says nothing about it.
const NO_DETAILS: &str = "the job run failed (EMR Serverless gave no details)";

#[async_trait]
impl ClusterBackend for ServerlessBackend {
    fn name(&self) -> &str {
        "emr-serverless"
    }

    /// lake-spark's driver merges as the embedded engine does.
    fn merges(&self) -> bool {
        true
    }

    async fn start(&self, spec: &ClusterSpec) -> Result<ClusterHandle> {
        let local = match &self.embedded {
            Some(e) => Some(e.start(spec).await?),
            None => None,
        };
        {
            let mut w = self.state.lock().expect("watch");
            w.spec = Some(spec.clone());
            w.local = local;
        }
        if let Some(id) = &self.def.attach {
            let a = self
                .call("get application", || self.api.get_application(id))
                .await?;
            if a.state == "TERMINATED" {
                return Err(Error::Invalid {
                    what: "[serverless] application".into(),
                    message: format!("application {id} is TERMINATED; use another, or \"create\""),
                });
            }
            return Ok(ClusterHandle {
                id: id.clone(),
                attached: true,
                notes: vec![format!(
                    "using application {id} ({}, {}); lake will not stop or delete it",
                    a.name, a.state
                )],
            });
        }
        let mut notes = Vec::new();
        for a in self.reap(Some(&spec.run_id)).await? {
            notes.push(format!(
                "deleted application {} ({}) left by run {} that is no longer live",
                a.id,
                a.state,
                a.tags.get("lake:run-id").map_or("?", String::as_str)
            ));
        }
        let request = self.create_request(spec);
        // The client token makes a retried CreateApplication return the same application.
        let id = self
            .call("create application", || {
                self.api.create_application(&request)
            })
            .await?;
        if let Err(e) = self.created(&id).await {
            if let Err(d) = self.delete(&id).await {
                tracing::error!("{d:#}");
            }
            return Err(e);
        }
        notes.push(format!(
            "created application {id} ({}, at most {} and {}, {})",
            request.release_label,
            request.maximum_capacity.cpu,
            request.maximum_capacity.memory,
            match &self.def.log_uri {
                Some(l) => format!("logs in {l}applications/{id}/"),
                None => "no log URI".into(),
            }
        ));
        Ok(ClusterHandle {
            id,
            attached: false,
            notes,
        })
    }

    async fn submit(&self, cluster: &ClusterHandle, step: &StepRequest) -> Result<StepHandle> {
        let (spec, attempt) = {
            let mut w = self.state.lock().expect("watch");
            let n = w.attempts.entry(step.name.clone()).or_insert(0);
            *n += 1;
            let n = *n;
            (
                w.spec.clone().unwrap_or_else(|| {
                    ClusterSpec::new(&self.pipeline, "", &self.store.root_url())
                }),
                n,
            )
        };
        let Some(request) = self
            .job_request(&cluster.id, &spec, step, attempt, true)
            .await?
        else {
            let (embedded, local) = {
                let w = self.state.lock().expect("watch");
                (self.embedded.clone(), w.local.clone())
            };
            let (Some(embedded), Some(local)) = (embedded, local) else {
                return Err(Error::NotImplemented {
                    operation: "command and copy steps",
                    implementer: "emr-serverless in a build without the embedded backend".into(),
                });
            };
            let handle = embedded.submit(&local, step).await?;
            self.state
                .lock()
                .expect("watch")
                .delegated
                .insert(handle.id.clone());
            return Ok(handle);
        };
        let id = self
            .call(&format!("start job {}", step.name), || {
                self.api.start_job_run(&request)
            })
            .await?;
        self.state.lock().expect("watch").open.insert(id.clone());
        Ok(StepHandle {
            id,
            name: step.name.clone(),
        })
    }

    async fn poll(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<StepState> {
        if let Some((embedded, local)) = self.delegated(step) {
            return embedded.poll(&local, step).await;
        }
        let job = self
            .call("get job run", || {
                self.api.get_job_run(&cluster.id, &step.id)
            })
            .await?;
        if job.is_final() {
            let mut w = self.state.lock().expect("watch");
            w.open.remove(&step.id);
            if let Some(d) = &job.details {
                w.details.insert(step.id.clone(), d.clone());
            }
        }
        Ok(match job.state.as_str() {
            "SUCCESS" => StepState::Completed,
            "CANCELLED" => StepState::Cancelled,
            "FAILED" => StepState::Failed {
                reason: job.details.unwrap_or_else(|| NO_DETAILS.into()),
            },
            "RUNNING" | "CANCELLING" => StepState::Running,
            _ => StepState::Pending,
        })
    }

    fn poll_floor(&self) -> (Duration, Duration) {
        (self.timing.poll, self.timing.max_poll)
    }

    async fn wait(&self, _cluster: &ClusterHandle, step: &StepHandle, timeout: Duration) {
        match self.delegated(step) {
            Some((embedded, local)) => embedded.wait(&local, step, timeout).await,
            None => tokio::time::sleep(timeout).await,
        }
    }

    async fn logs(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<StepLogs> {
        if let Some((embedded, local)) = self.delegated(step) {
            return embedded.logs(&local, step).await;
        }
        let Some((stderr, stdout)) = self.log_urls(&cluster.id, &step.id) else {
            return Ok(StepLogs::default());
        };
        // The driver's logs reach S3 some time after the job ends: look until `log_wait`.
        let started = Instant::now();
        loop {
            if let Ok(Some(text)) = self.read_log(&stderr).await {
                let out = self.read_log(&stdout).await.ok().flatten();
                return Ok(StepLogs {
                    stdout_tail: out.unwrap_or_default(),
                    stderr_tail: format!("--- driver log {stderr} ---\n{text}"),
                });
            }
            if started.elapsed() + self.timing.log_poll > self.def.log_wait {
                return Ok(StepLogs {
                    stdout_tail: String::new(),
                    stderr_tail: format!(
                        "(no log in {stderr} after {}s; EMR Serverless may still be copying it)",
                        started.elapsed().as_secs()
                    ),
                });
            }
            tokio::time::sleep(self.timing.log_poll).await;
        }
    }

    async fn cancel(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<()> {
        if let Some((embedded, local)) = self.delegated(step) {
            return embedded.cancel(&local, step).await;
        }
        self.state.lock().expect("watch").open.remove(&step.id);
        match self
            .call("cancel job run", || {
                self.api.cancel_job_run(&cluster.id, &step.id)
            })
            .await
        {
            Ok(()) => Ok(()),
            // Cancelling a finished job is not an error.
            Err(e) => match self.api.get_job_run(&cluster.id, &step.id).await {
                Ok(j) if j.is_final() || j.state == "CANCELLING" => Ok(()),
                _ => Err(e),
            },
        }
    }

    async fn terminate(&self, cluster: &ClusterHandle) -> Result<()> {
        let (local, open, deleted) = {
            let w = self.state.lock().expect("watch");
            (
                w.local.clone(),
                w.open.iter().cloned().collect::<Vec<_>>(),
                w.deleted.contains(&cluster.id),
            )
        };
        let mut result = Ok(());
        if let (Some(embedded), Some(local)) = (&self.embedded, &local) {
            result = embedded.terminate(local).await;
        }
        // Jobs lake started and did not see finish: an application with running jobs cannot be
        // stopped, and an attached application keeps running after lake.
        for job in open {
            let handle = StepHandle {
                id: job.clone(),
                name: String::new(),
            };
            if let Err(e) = self.cancel(cluster, &handle).await {
                tracing::warn!("cancel job run {job}: {e:#}");
            }
        }
        if cluster.attached || deleted {
            return result;
        }
        self.delete(&cluster.id).await?;
        result
    }
}
