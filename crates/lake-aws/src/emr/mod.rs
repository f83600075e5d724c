//! The EMR backend: steps as Spark steps on a cluster lake creates (or attaches to), watches,
//! diagnoses and always tears down.

pub(crate) mod api;
mod config;
mod plugin;
mod request;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use lake_core::cluster::{
    ClusterBackend, ClusterHandle, ClusterSpec, StepHandle, StepLogs, StepRequest, StepState,
    StepWork, left_by_another_run,
};
use lake_core::zone::DynZoneStore;
use lake_core::{Error, Result};

use crate::calls::plain_env;

#[cfg(any(test, feature = "testing"))]
pub use api::MockEmrApi;
pub use api::{ApiError, ClusterStatus, EmrApi, FailureDetails, SdkEmr, StepStatus};
/// SDK types, for callers (tests, tools) that make EMR requests of their own.
pub use aws_sdk_emr::types::{JobFlowInstancesConfig as JobFlowInstancesSdk, Tag as TagSdk};
pub use config::{
    Attach, ClusterConfig, ClusterDef, DEFAULT_INSTANCE_TYPE, DEFAULT_RELEASE, Estimate, Fleet,
    Group, Instances, NodeRole, STARTUP_ESTIMATE, STEP_ESTIMATE,
};
pub(crate) use config::{check_tags, is_release, log_uri_under, needs_s3_root};
pub use plugin::{EmrConfig, EmrKind, aws_of};
pub use request::{HadoopJarStep, RunJobFlow, Step};

pub use lake_spark::{SQL_DRIVER, sql_job};

/// Timing of the backend's waits (shortened in tests).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// First wait after a throttled call; it doubles.
    pub throttle_backoff: Duration,
    /// Attempts of a throttled call.
    pub throttle_attempts: u32,
    /// Between looks for a failed step's log.
    pub log_poll: Duration,
    /// Attempts to terminate a cluster (each confirmed with DescribeCluster).
    pub terminate_attempts: u32,
    /// A ListSteps/DescribeCluster answer is reused by polls this close together.
    pub poll_reuse: Duration,
    /// The first poll of a step comes no sooner than this; the interval doubles up to
    /// `max_poll` (so a run makes a few calls a minute).
    pub poll: Duration,
    /// The longest interval between polls.
    pub max_poll: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            throttle_backoff: Duration::from_secs(2),
            throttle_attempts: 8,
            log_poll: Duration::from_secs(15),
            terminate_attempts: 5,
            poll_reuse: Duration::from_secs(1),
            poll: Duration::from_secs(2),
            max_poll: Duration::from_secs(30),
        }
    }
}

/// Runs steps on EMR. See [`ClusterBackend`] for the contract.
#[derive(Debug)]
pub struct EmrBackend {
    api: Arc<dyn EmrApi>,
    def: ClusterDef,
    store: Arc<DynZoneStore>,
    pipeline: String,
    timing: Timing,
    state: Mutex<Watch>,
}

#[derive(Debug, Default)]
struct Watch {
    /// Steps lake submitted that have not finished, by cluster.
    open: HashMap<String, Vec<String>>,
    /// The last answer: when, the steps' states, and the cluster's.
    last: Option<(Instant, HashMap<String, StepStatus>, ClusterStatus)>,
    /// Failure details of finished steps.
    failures: HashMap<String, FailureDetails>,
    /// Clusters already terminated.
    terminated: HashSet<String>,
}

impl EmrBackend {
    /// A backend making `api` calls for a pipeline's `[cluster]`, uploading step code to
    /// `<root>/_lake/code/` of `store`.
    pub fn new(
        api: Arc<dyn EmrApi>,
        def: ClusterDef,
        store: Arc<DynZoneStore>,
        pipeline: &str,
    ) -> Self {
        Self {
            api,
            def,
            store,
            pipeline: pipeline.to_owned(),
            timing: Timing::default(),
            state: Mutex::new(Watch::default()),
        }
    }

    /// Use these waits.
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// The AddJobFlowSteps request of a step, uploading what it needs first (with `upload`;
    /// without, the request names where the uploads would go, for a plan).
    pub async fn step_request(&self, step: &StepRequest, upload: bool) -> Result<Step> {
        let args = match &step.work {
            StepWork::Command { argv, env, .. } => {
                let mut args = Vec::new();
                let env = plain_env(&step.name, env)?;
                if !env.is_empty() {
                    args.push("env".to_owned());
                    args.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
                }
                args.extend(argv.iter().cloned());
                args
            }
            StepWork::Spark(work) => {
                let app = self.upload_file(work.app.path(), upload).await?;
                let mut submit =
                    lake_spark::SparkSubmit::new("spark-submit").option("deploy-mode", "cluster");
                for (k, v) in plain_env(&step.name, &work.env)? {
                    submit = submit
                        .conf(&format!("spark.yarn.appMasterEnv.{k}"), &v)
                        .conf(&format!("spark.executorEnv.{k}"), &v);
                }
                submit.app(work, &app)
            }
            StepWork::Sql(work) => {
                let driver = self
                    .upload(
                        "lake_sql.py",
                        Bytes::from_static(SQL_DRIVER.as_bytes()),
                        upload,
                    )
                    .await?;
                let json =
                    sql_job(work, &|key| self.store.url_of(key)).map_err(|e| Error::Invalid {
                        what: format!("step {}", step.name),
                        message: format!("cannot encode the job: {e}"),
                    })?;
                let job_url = self.upload("job.json", Bytes::from(json), upload).await?;
                lake_spark::SparkSubmit::new("spark-submit")
                    .option("deploy-mode", "cluster")
                    .sql(&driver, &job_url)
            }
            StepWork::Copy(work) => {
                let list: String = work
                    .input
                    .objects
                    .iter()
                    .map(|o| format!("{}\n", self.store.url_of(&o.key)))
                    .collect();
                let sources = self
                    .upload("sources.txt", Bytes::from(list), upload)
                    .await?;
                vec![
                    "s3-dist-cp".into(),
                    format!("--src={}", self.store.url_of(&work.input.prefix)),
                    format!("--dest={}", self.store.url_of(&work.output)),
                    format!("--srcPrefixesFile={sources}"),
                ]
            }
            _ => {
                return Err(Error::NotImplemented {
                    operation: "this step kind",
                    implementer: "the emr backend".into(),
                });
            }
        };
        Ok(Step::command_runner(&step.name, args))
    }

    async fn upload(&self, name: &str, bytes: Bytes, upload: bool) -> Result<String> {
        crate::calls::upload_code(&self.store, name, bytes, upload).await
    }

    async fn upload_file(&self, path: &str, upload: bool) -> Result<String> {
        crate::calls::upload_app(&self.store, path, upload).await
    }

    /// What a run would ask EMR for: the RunJobFlow request (for the spec's tags) and, per
    /// step, the AddJobFlowSteps request (nothing is uploaded or called).
    pub async fn plan(
        &self,
        spec: &ClusterSpec,
        steps: &[StepRequest],
    ) -> Result<(Option<RunJobFlow>, Vec<Step>)> {
        let mut out = Vec::new();
        for s in steps {
            out.push(self.step_request(s, false).await?);
        }
        let create = self
            .def
            .attach
            .is_none()
            .then(|| RunJobFlow::new(&self.def, &spec.tags));
        Ok((create, out))
    }

    /// Clusters lake created (tagged `lake:pipeline`) that are still active, of every pipeline.
    pub async fn clusters(&self) -> Result<Vec<ClusterStatus>> {
        let all = self
            .call("list clusters", || self.api.active_clusters())
            .await?;
        Ok(all
            .into_iter()
            .filter(|c| c.tags.contains_key("lake:pipeline"))
            .collect())
    }

    /// Terminate this pipeline's clusters on this root whose run is not `live` (the run
    /// holding the lock, if any). Returns what was terminated. A cluster of the same pipeline
    /// name on another root (another `--env`, another bucket) is not this pipeline's.
    pub async fn reap(&self, live: Option<&str>) -> Result<Vec<ClusterStatus>> {
        let mut reaped = Vec::new();
        for c in self.clusters().await? {
            if left_by_another_run(&c.tags, &self.pipeline, &self.store.root_url(), live) {
                self.terminate_id(&c.id).await?;
                reaped.push(c);
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
        .map_err(|e| crate::calls::backend_error("emr", operation, e, None))
    }

    /// Terminate a cluster, retried until DescribeCluster shows it terminating.
    async fn terminate_id(&self, id: &str) -> Result<()> {
        let mut last = String::new();
        // The first attempt at once, then the shared backoff's waits.
        let waits = lake_core::retry::Backoff::retries(
            self.timing.terminate_attempts,
            self.timing.throttle_backoff,
            Duration::from_secs(60),
        )
        .delays();
        for wait in std::iter::once(Duration::ZERO).chain(waits) {
            tokio::time::sleep(wait).await;
            if let Err(e) = self.call("terminate", || self.api.terminate(id)).await {
                last = format!("{e:#}");
                continue;
            }
            match self
                .call("describe cluster", || self.api.describe_cluster(id))
                .await
            {
                Ok(c) if c.is_ending() => {
                    self.state
                        .lock()
                        .expect("watch")
                        .terminated
                        .insert(id.to_owned());
                    return Ok(());
                }
                Ok(c) => last = format!("{id} is still {} after TerminateJobFlows", c.state),
                Err(e) => last = format!("{e:#}"),
            }
        }
        Err(Error::Cluster {
            backend: "emr".into(),
            operation: format!("terminate {id}"),
            source: format!(
                "not confirmed after {} attempts: {last}. Terminate it in the EMR console or with `lake clusters --reap`",
                self.timing.terminate_attempts
            )
            .into(),
        })
    }

    async fn attach(&self, how: &Attach) -> Result<ClusterStatus> {
        let c = match how {
            Attach::Id(id) => {
                self.call("describe cluster", || self.api.describe_cluster(id))
                    .await?
            }
            Attach::Tag { key, value } => {
                let all = self
                    .call("list clusters", || self.api.active_clusters())
                    .await?;
                let mut found: Vec<ClusterStatus> = all
                    .into_iter()
                    .filter(|c| c.tags.get(key) == Some(value))
                    .collect();
                match found.len() {
                    1 => found.remove(0),
                    0 => {
                        return Err(Error::Invalid {
                            what: "[cluster] attach".into(),
                            message: format!("no running cluster is tagged {key}={value}"),
                        });
                    }
                    _ => {
                        return Err(Error::Invalid {
                            what: "[cluster] attach".into(),
                            message: format!(
                                "{} running clusters are tagged {key}={value} ({}); attach to one by id",
                                found.len(),
                                found
                                    .iter()
                                    .map(|c| c.id.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        });
                    }
                }
            }
        };
        if !c.is_active() {
            return Err(Error::Invalid {
                what: "[cluster] attach".into(),
                message: format!(
                    "cluster {} is {}; attach needs a running cluster",
                    c.id, c.state
                ),
            });
        }
        Ok(c)
    }

    /// The states of the open steps of `cluster` and the cluster's, from one ListSteps and one
    /// DescribeCluster (reused by polls less than `poll_reuse` apart).
    async fn snapshot(
        &self,
        cluster: &str,
    ) -> Result<(HashMap<String, StepStatus>, ClusterStatus)> {
        let ids = {
            let w = self.state.lock().expect("watch");
            if let Some((at, steps, c)) = &w.last
                && at.elapsed() < self.timing.poll_reuse
                && c.id == cluster
            {
                return Ok((steps.clone(), c.clone()));
            }
            w.open.get(cluster).cloned().unwrap_or_default()
        };
        let steps = if ids.is_empty() {
            Vec::new()
        } else {
            self.call("list steps", || self.api.list_steps(cluster, &ids))
                .await?
        };
        let c = self
            .call("describe cluster", || self.api.describe_cluster(cluster))
            .await?;
        let steps: HashMap<String, StepStatus> =
            steps.into_iter().map(|s| (s.id.clone(), s)).collect();
        let mut w = self.state.lock().expect("watch");
        for s in steps.values() {
            if matches!(
                s.state.as_str(),
                "COMPLETED" | "CANCELLED" | "FAILED" | "INTERRUPTED"
            ) {
                if let Some(open) = w.open.get_mut(cluster) {
                    open.retain(|id| id != &s.id);
                }
                if let Some(f) = &s.failure {
                    w.failures.insert(s.id.clone(), f.clone());
                }
            }
        }
        w.last = Some((Instant::now(), steps.clone(), c.clone()));
        Ok((steps, c))
    }

    /// Where EMR copies the driver container's logs of a YARN application (its first attempt's
    /// first container: `containers/application_X_Y/container_X_Y_01_000001/`).
    fn driver_log_dir(&self, cluster: &str, app: &str) -> Option<String> {
        let id = app.strip_prefix("application_")?;
        self.def
            .log_uri
            .as_ref()
            .map(|base| format!("{base}{cluster}/containers/{app}/container_{id}_01_000001/"))
    }

    fn log_url(&self, cluster: &str, step: &str, file: &str) -> Option<String> {
        self.def
            .log_uri
            .as_ref()
            .map(|base| format!("{base}{cluster}/steps/{step}/{file}"))
    }

    async fn read_log(&self, url: &str) -> Result<Option<String>> {
        match self.call("read log", || self.api.read_object(url)).await? {
            Some(raw) => crate::calls::log_tail(url, raw).map(Some),
            None => Ok(None),
        }
    }
}

/// The YARN application a step's log names (`application_1700000000000_0001`), the last one.
fn yarn_application(log: &str) -> Option<&str> {
    const PREFIX: &str = "application_";
    log.match_indices(PREFIX)
        .filter_map(|(i, _)| {
            let rest = &log[i + PREFIX.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            let id = rest[..end].trim_end_matches('_');
            let (a, b) = id.split_once('_')?;
            (!a.is_empty() && !b.is_empty() && !b.contains('_'))
                .then(|| &log[i..i + PREFIX.len() + id.len()])
        })
        .last()
}

/// A failed step's reason when EMR says nothing about it.
const NO_DETAILS: &str = "the step failed (EMR gave no details)";

fn failure_reason(f: &FailureDetails) -> String {
    let mut parts = Vec::new();
    if let Some(r) = &f.reason {
        parts.push(r.clone());
    }
    if let Some(m) = &f.message {
        parts.push(m.clone());
    }
    if let Some(l) = &f.log_file {
        parts.push(format!("(log: {l})"));
    }
    if parts.is_empty() {
        NO_DETAILS.into()
    } else {
        parts.join(" ")
    }
}

#[async_trait]
impl ClusterBackend for EmrBackend {
    fn name(&self) -> &str {
        "emr"
    }

    /// lake-spark's driver merges as the embedded engine does.
    fn merges(&self) -> bool {
        true
    }

    async fn start(&self, spec: &ClusterSpec) -> Result<ClusterHandle> {
        if let Some(how) = &self.def.attach {
            let c = self.attach(how).await?;
            return Ok(ClusterHandle {
                id: c.id.clone(),
                attached: true,
                notes: vec![format!(
                    "attached to cluster {} ({}, {}); it will be left running",
                    c.id, c.name, c.state
                )],
            });
        }
        let mut notes = Vec::new();
        for c in self.reap(Some(&spec.run_id)).await? {
            notes.push(format!(
                "terminated cluster {} ({}) left by run {} that is no longer live",
                c.id,
                c.state,
                c.tags.get("lake:run-id").map_or("?", String::as_str)
            ));
        }
        let request = RunJobFlow::new(&self.def, &spec.tags);
        // Not retried on throttling beyond the SDK's own retries: a second RunJobFlow could
        // make a second cluster.
        let id = self.api.run_job_flow(&request).await.map_err(|e| {
            let needs = format!(
                "elasticmapreduce:RunJobFlow and iam:PassRole on the roles {} and {}",
                self.def.service_role, self.def.instance_profile
            );
            crate::calls::backend_error("emr", "create cluster", e, Some(needs))
        })?;
        notes.push(format!(
            "created cluster {id} ({}, {})",
            request.release_label,
            match &self.def.log_uri {
                Some(l) => format!("logs in {l}{id}/"),
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
        let request = self.step_request(step, true).await?;
        let ids = self
            .call(&format!("add step {}", step.name), || {
                self.api
                    .add_steps(&cluster.id, std::slice::from_ref(&request))
            })
            .await?;
        let id = ids.into_iter().next().ok_or_else(|| Error::Cluster {
            backend: "emr".into(),
            operation: format!("add step {}", step.name),
            source: "AddJobFlowSteps returned no step id".into(),
        })?;
        let mut w = self.state.lock().expect("watch");
        w.open
            .entry(cluster.id.clone())
            .or_default()
            .push(id.clone());
        w.last = None;
        Ok(StepHandle {
            id,
            name: step.name.clone(),
        })
    }

    async fn poll(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<StepState> {
        let (steps, c) = self.snapshot(&cluster.id).await?;
        let status = steps.get(&step.id);
        let reason = || {
            status
                .and_then(|s| s.failure.as_ref())
                .map_or_else(|| NO_DETAILS.into(), failure_reason)
        };
        let state = match status.map(|s| s.state.as_str()) {
            Some("COMPLETED") => return Ok(StepState::Completed),
            Some("CANCELLED") => return Ok(StepState::Cancelled),
            Some("FAILED") => return Ok(StepState::Failed { reason: reason() }),
            Some("INTERRUPTED") => {
                return Ok(StepState::Failed {
                    reason: format!("interrupted: {}", reason()),
                });
            }
            Some("RUNNING") => StepState::Running,
            _ => StepState::Pending,
        };
        if c.is_ending() {
            return Ok(StepState::Failed {
                reason: format!(
                    "cluster {} is {}{}",
                    c.id,
                    c.state,
                    c.reason.map(|r| format!(": {r}")).unwrap_or_default()
                ),
            });
        }
        Ok(state)
    }

    fn poll_floor(&self) -> (Duration, Duration) {
        (self.timing.poll, self.timing.max_poll)
    }

    async fn status(&self, cluster: &ClusterHandle) -> Option<String> {
        let w = self.state.lock().expect("watch");
        let (_, _, c) = w.last.as_ref()?;
        (c.id == cluster.id).then(|| format!("cluster {} {}", c.id, c.state))
    }

    async fn logs(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<StepLogs> {
        let failure = self
            .state
            .lock()
            .expect("watch")
            .failures
            .get(&step.id)
            .cloned();
        let mut candidates: Vec<String> = Vec::new();
        if let Some(l) = failure.and_then(|f| f.log_file)
            && l.starts_with("s3://")
        {
            candidates.push(l);
        }
        candidates.extend(self.log_url(&cluster.id, &step.id, "stderr.gz"));
        if candidates.is_empty() {
            return Ok(StepLogs::default());
        }
        // EMR copies logs to S3 minutes after a step ends: look until `log_wait`.
        let started = Instant::now();
        loop {
            for url in &candidates {
                if let Ok(Some(mut text)) = self.read_log(url).await {
                    let mut stdout = match self.log_url(&cluster.id, &step.id, "stdout.gz") {
                        Some(u) => self.read_log(&u).await.ok().flatten().unwrap_or_default(),
                        None => String::new(),
                    };
                    // `--deploy-mode cluster`: the driver ran in a YARN container, whose logs
                    // hold the Python traceback or the `Caused by` lines; the step's own log
                    // only names its application.
                    if let Some(app) = yarn_application(&text)
                        && let Some(dir) = self.driver_log_dir(&cluster.id, app)
                    {
                        for (file, into) in [("stdout.gz", &mut stdout), ("stderr.gz", &mut text)] {
                            let url = format!("{dir}{file}");
                            if let Ok(Some(log)) = self.read_log(&url).await {
                                into.push_str(&format!("\n--- driver log {url} ---\n{log}"));
                            }
                        }
                    }
                    return Ok(StepLogs {
                        stdout_tail: stdout,
                        stderr_tail: text,
                    });
                }
            }
            if started.elapsed() + self.timing.log_poll > self.def.log_wait {
                return Ok(StepLogs {
                    stdout_tail: String::new(),
                    stderr_tail: format!(
                        "(no log in {} after {}s; EMR may still be copying it)",
                        candidates.join(" or "),
                        started.elapsed().as_secs()
                    ),
                });
            }
            tokio::time::sleep(self.timing.log_poll).await;
        }
    }

    async fn cancel(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<()> {
        let ids = vec![step.id.clone()];
        self.call("cancel step", || self.api.cancel_steps(&cluster.id, &ids))
            .await
    }

    async fn terminate(&self, cluster: &ClusterHandle) -> Result<()> {
        if cluster.attached
            || self
                .state
                .lock()
                .expect("watch")
                .terminated
                .contains(&cluster.id)
        {
            return Ok(());
        }
        self.terminate_id(&cluster.id).await
    }
}
