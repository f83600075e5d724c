//! Job lifecycles of the EMR Serverless backend through the orchestrator, against a mocked API
//! (`MockServerlessApi`) and a memory store: success, a failure with the cause from a late
//! driver log, cancelled on a step's timeout and on Ctrl-C, throttling, StartJobRun denied,
//! stop and delete retried until confirmed, an existing application never stopped or deleted,
//! and applications of dead runs reaped. An application lake created is deleted exactly once
//! on every path.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lake::aws::serverless::{
    ApiError, ApplicationStatus, CreateApplication, EmrServerlessConfig, JobRunStatus,
    MockServerlessApi, ServerlessBackend, StartJobRun, Timing,
};
use lake::core::chrono::NaiveDate;
use lake::core::config::ConfigFile;
use lake::core::ledger::Status;
use lake::core::run::{RunContext, RunOptions, run};
use lake::core::{DynZoneStore, lock};
use lake::local::{LocalBackend, LocalZoneStore};

const PIPELINE: &str = r#"
[lake]
name = "p"
root = "s3://bucket/p"
backend = "emr-serverless"

[serverless]
release = "emr-7.9.0"
execution_role = "arn:aws:iam::123456789012:role/lake-jobs"
max_capacity = { cpu = "8 vCPU", memory = "32 GB" }
idle_timeout = "15m"
spark_conf = { "spark.executor.memory" = "4g" }
tags = { team = "data" }
log_wait = "1s"

[steps.clean]
kind = "spark"
script = "s3://code/clean.py"
args = ["--date", "{date}"]
spark_args = ["--conf", "spark.sql.shuffle.partitions=8"]
timeout = "1s"

[steps.report]
kind = "command"
command = ["echo", "{date}"]
depends_on = ["clean"]
"#;

const APP: &str = "00fapp";

/// What the mocked API saw, in order.
#[derive(Default)]
struct Seen {
    calls: Mutex<Vec<String>>,
    created: Mutex<Vec<CreateApplication>>,
    started: Mutex<Vec<StartJobRun>>,
    cancelled: Mutex<Vec<String>>,
    /// The application's state, as GetApplication reports it.
    app: Mutex<String>,
    /// Client tokens of CreateApplication calls.
    tokens: Mutex<Vec<String>>,
    /// Faults to inject: CreateApplication throttled this many times, StopApplication refused
    /// this many times, StartJobRun denied.
    create_throttles: Mutex<usize>,
    stop_refusals: Mutex<usize>,
    deny_start: std::sync::atomic::AtomicBool,
}

impl Seen {
    fn calls(&self, name: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == name)
            .count()
    }

    fn log(&self, call: &str) {
        self.calls.lock().unwrap().push(call.to_owned());
    }
}

fn job(id: &str, state: &str, details: Option<&str>) -> JobRunStatus {
    JobRunStatus {
        id: id.into(),
        state: state.into(),
        details: details.map(str::to_owned),
    }
}

fn app(id: &str, state: &str, tags: &[(&str, &str)]) -> ApplicationStatus {
    ApplicationStatus {
        id: id.into(),
        name: "lake-p".into(),
        state: state.into(),
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..ApplicationStatus::default()
    }
}

/// A mock that creates `00fapp` (CREATED), numbers job runs j-1, j-2, …, answers GetJobRun
/// with `jobs(job id, poll number)`, stops (STARTED → STOPPED) and deletes (→ TERMINATED), and
/// records what it is asked.
fn api(
    seen: &Arc<Seen>,
    jobs: impl Fn(&str, usize) -> Result<JobRunStatus, ApiError> + Send + Sync + 'static,
) -> MockServerlessApi {
    let mut m = MockServerlessApi::new();
    let s = Arc::clone(seen);
    m.expect_live_applications().returning(move || {
        s.log("ListApplications");
        Ok(Vec::new())
    });
    let s = Arc::clone(seen);
    m.expect_create_application().returning(move |req| {
        s.log("CreateApplication");
        s.tokens.lock().unwrap().push(req.client_token.clone());
        let mut throttles = s.create_throttles.lock().unwrap();
        if *throttles > 0 {
            *throttles -= 1;
            return Err(ApiError::new("ThrottlingException", "Rate exceeded"));
        }
        s.created.lock().unwrap().push(req.clone());
        *s.app.lock().unwrap() = "CREATED".into();
        Ok(APP.into())
    });
    let s = Arc::clone(seen);
    m.expect_get_application().returning(move |id| {
        s.log("GetApplication");
        let mut state = s.app.lock().unwrap();
        let now = state.clone();
        if now == "STOPPING" {
            *state = "STOPPED".into();
        }
        Ok(app(id, &now, &[]))
    });
    let s = Arc::clone(seen);
    m.expect_start_job_run().returning(move |req| {
        s.log("StartJobRun");
        if s.deny_start.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(ApiError::new(
                "AccessDeniedException",
                "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: iam:PassRole",
            ));
        }
        let mut started = s.started.lock().unwrap();
        started.push(req.clone());
        *s.app.lock().unwrap() = "STARTED".into();
        Ok(format!("j-{}", started.len()))
    });
    let polls = Arc::new(Mutex::new(0usize));
    let s = Arc::clone(seen);
    m.expect_get_job_run().returning(move |a, id| {
        s.log("GetJobRun");
        assert_eq!(a, APP);
        let mut n = polls.lock().unwrap();
        *n += 1;
        jobs(id, *n)
    });
    let s = Arc::clone(seen);
    m.expect_cancel_job_run().returning(move |_, id| {
        s.log("CancelJobRun");
        s.cancelled.lock().unwrap().push(id.to_owned());
        Ok(())
    });
    let s = Arc::clone(seen);
    m.expect_stop_application().returning(move |id| {
        s.log("StopApplication");
        assert_eq!(id, APP);
        let mut refusals = s.stop_refusals.lock().unwrap();
        if *refusals > 0 {
            *refusals -= 1;
            return Err(ApiError::new(
                "ValidationException",
                "Application has running jobs: cancel them before stopping it",
            ));
        }
        *s.app.lock().unwrap() = "STOPPING".into();
        Ok(())
    });
    let s = Arc::clone(seen);
    m.expect_delete_application().returning(move |id| {
        s.log("DeleteApplication");
        assert_eq!(id, APP);
        *s.app.lock().unwrap() = "TERMINATED".into();
        Ok(())
    });
    m
}

fn timing() -> Timing {
    Timing {
        throttle_backoff: Duration::from_millis(1),
        throttle_attempts: 5,
        log_poll: Duration::from_millis(50),
        poll: Duration::from_millis(1),
        max_poll: Duration::from_millis(5),
        settle_poll: Duration::from_millis(1),
        settle_wait: Duration::from_millis(500),
    }
}

fn context(toml: &str, api: MockServerlessApi, store: Arc<DynZoneStore>) -> RunContext {
    let file = ConfigFile::parse("lake.toml", "/tmp".into(), toml.to_owned()).unwrap();
    let pipeline = Arc::new(file.pipeline(None, &lake::kinds()).unwrap());
    let backend = ServerlessBackend::new(
        Arc::new(api),
        EmrServerlessConfig::of(&pipeline).unwrap().def.clone(),
        Arc::clone(&store),
        "p",
        Some(Arc::new(LocalBackend::new())),
    )
    .with_timing(timing());
    RunContext {
        pipeline,
        store,
        backend: Arc::new(backend),
        sources: Default::default(),
        sinks: Default::default(),
        catalog: None,
        formats: Default::default(),
    }
}

/// The pipeline with time for its spark step to finish (its 1s timeout is for the tests of
/// timeouts).
fn roomy() -> String {
    PIPELINE.replace("timeout = \"1s\"", "timeout = \"30s\"")
}

/// A run of `toml` whose job runs succeed at once, on the mock of `seen`.
async fn succeeding_run(seen: &Arc<Seen>, toml: &str) -> lake::core::ledger::RunRecord {
    let api = api(seen, |id, _| Ok(job(id, "SUCCESS", None)));
    run(&context(toml, api, store()), &options()).await.unwrap()
}

/// A backend over `api` outside a run (no embedded backend), for reaping.
fn backend(api: MockServerlessApi) -> ServerlessBackend {
    let file = ConfigFile::parse("lake.toml", "/tmp".into(), PIPELINE.to_owned()).unwrap();
    let pipeline = file.pipeline(None, &lake::kinds()).unwrap();
    ServerlessBackend::new(
        Arc::new(api),
        EmrServerlessConfig::of(&pipeline).unwrap().def.clone(),
        store(),
        "p",
        None,
    )
    .with_timing(timing())
}

fn options() -> RunOptions {
    let mut o = RunOptions::new(NaiveDate::from_ymd_opt(2024, 5, 1).unwrap());
    o.poll = Duration::from_millis(5);
    o.max_poll = Duration::from_millis(20);
    o
}

fn store() -> Arc<DynZoneStore> {
    Arc::new(LocalZoneStore::memory())
}

fn gz(text: &str) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(text.as_bytes()).unwrap();
    e.finish().unwrap()
}

/// The application was stopped, then deleted, once each, and nothing was called after.
fn assert_deleted_once(seen: &Seen) {
    let calls = seen.calls.lock().unwrap().clone();
    assert_eq!(seen.calls("StopApplication"), 1, "{calls:?}");
    assert_eq!(seen.calls("DeleteApplication"), 1, "{calls:?}");
    let stop = calls.iter().position(|c| c == "StopApplication").unwrap();
    let delete = calls.iter().position(|c| c == "DeleteApplication").unwrap();
    assert!(stop < delete, "{calls:?}");
    assert_eq!(*seen.app.lock().unwrap(), "TERMINATED");
    assert_eq!(
        calls.last().unwrap(),
        "GetApplication",
        "confirmed: {calls:?}"
    );
}

#[tokio::test]
async fn a_run_creates_an_application_runs_its_jobs_and_deletes_it() {
    let seen = Arc::new(Seen::default());
    let api = api(&seen, |id, n| {
        Ok(job(id, if n < 3 { "RUNNING" } else { "SUCCESS" }, None))
    });
    let store = store();
    let mut opts = options();
    opts.poll = Duration::from_millis(1);
    let toml = roomy();
    let r = run(&context(&toml, api, Arc::clone(&store)), &opts)
        .await
        .unwrap();
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    assert_eq!(r.steps[1].status, Status::Succeeded, "the command ran here");

    let created = seen.created.lock().unwrap().clone();
    assert_eq!(created.len(), 1);
    let c = &created[0];
    assert_eq!(
        (c.name.as_str(), c.release_label.as_str(), c.kind.as_str()),
        ("lake-p", "emr-7.9.0", "SPARK")
    );
    assert_eq!(
        (
            c.maximum_capacity.cpu.as_str(),
            c.maximum_capacity.memory.as_str()
        ),
        ("8 vCPU", "32 GB")
    );
    assert!(c.auto_start_configuration.enabled);
    assert_eq!(c.auto_stop_configuration.idle_timeout_minutes, Some(15));
    assert_eq!(c.tags["lake:pipeline"], "p");
    assert_eq!(c.tags["lake:run-id"], r.run_id);
    assert_eq!(c.tags["lake:root"], "memory://");
    assert_eq!(c.tags["team"], "data");
    assert_eq!(c.client_token.len(), 32);

    let started = seen.started.lock().unwrap().clone();
    assert_eq!(started.len(), 1, "only the spark step is a job run");
    let j = &started[0];
    assert_eq!(j.application_id, APP);
    assert_eq!(j.name, "clean");
    assert_eq!(
        j.execution_role_arn,
        "arn:aws:iam::123456789012:role/lake-jobs"
    );
    let submit = &j.job_driver.spark_submit;
    assert_eq!(submit.entry_point, "s3://code/clean.py");
    assert_eq!(submit.entry_point_arguments, ["--date", "2024-05-01"]);
    // The step's options, then its environment for the driver and the executors.
    let params = &submit.spark_submit_parameters;
    assert!(
        params.starts_with(
            "--conf spark.sql.shuffle.partitions=8 --conf spark.emr-serverless.driverEnv."
        ),
        "{params}"
    );
    assert!(
        params.contains(&format!("--conf spark.emr-serverless.driverEnv.LAKE_RUN_ID={} --conf spark.executorEnv.LAKE_RUN_ID={}", r.run_id, r.run_id)),
        "{params}"
    );
    let conf = &j.configuration_overrides.application_configuration[0];
    assert_eq!(conf.classification, "spark-defaults");
    assert_eq!(conf.properties["spark.executor.memory"], "4g");
    assert_eq!(
        j.configuration_overrides
            .monitoring_configuration
            .as_ref()
            .unwrap()
            .s3_monitoring_configuration
            .log_uri,
        "s3://bucket/p/_lake/serverless-logs/"
    );
    assert_eq!(
        j.execution_timeout_minutes,
        1 + 5,
        "30s rounds up to a minute, plus 5"
    );
    assert_eq!(j.tags["lake:step"], "clean");
    assert_eq!(j.tags["lake:run-id"], r.run_id);
    assert_ne!(j.client_token, c.client_token);
    assert_eq!(seen.calls("GetJobRun"), 3, "polled until SUCCESS");
    assert!(seen.cancelled.lock().unwrap().is_empty());
    assert_deleted_once(&seen);
    assert!(lock::current(&*store, "p").await.unwrap().is_none());
}

#[tokio::test]
async fn a_failed_job_prints_its_details_and_the_cause_from_a_late_log() {
    let seen = Arc::new(Seen::default());
    let mut api = api(&seen, |id, _| {
        Ok(job(
            id,
            "FAILED",
            Some(
                "Job failed, please check complete logs in configured logging destination. ExitCode: 1.",
            ),
        ))
    });
    let log = "24/05/01 INFO SparkContext: Running Spark\n\
               Traceback (most recent call last):\n  File \"clean.py\", line 3, in <module>\n    \
               main()\nValueError: column 'age' has text 'abc'\n24/05/01 INFO ShutdownHookManager: done\n";
    let reads = Arc::new(Mutex::new(Vec::new()));
    let r2 = Arc::clone(&reads);
    let body = gz(log);
    api.expect_read_object().returning(move |url| {
        let mut reads = r2.lock().unwrap();
        reads.push(url.to_owned());
        // The log arrives late: absent on the first look.
        Ok((reads.len() > 1 && url.ends_with("stderr.gz")).then(|| body.clone()))
    });
    let r = run(&context(PIPELINE, api, store()), &options())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Failed);
    let err = r.steps[0].error.as_deref().unwrap();
    assert!(
        err.starts_with("Job failed, please check complete logs"),
        "{err}"
    );
    assert!(
        err.contains("cause:\nTraceback (most recent call last):"),
        "{err}"
    );
    assert!(
        err.contains("ValueError: column 'age' has text 'abc'"),
        "{err}"
    );
    assert_eq!(r.steps[1].status, Status::Skipped);
    assert_eq!(
        reads.lock().unwrap()[0],
        "s3://bucket/p/_lake/serverless-logs/applications/00fapp/jobs/j-1/SPARK_DRIVER/stderr.gz"
    );
    assert_deleted_once(&seen);
}

#[tokio::test]
async fn a_step_timeout_cancels_the_job_and_deletes_the_application() {
    let seen = Arc::new(Seen::default());
    let api = api(&seen, |id, _| Ok(job(id, "RUNNING", None)));
    let r = run(&context(PIPELINE, api, store()), &options())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Failed);
    assert!(
        r.steps[0].error.as_deref().unwrap().contains("timed out"),
        "{r:?}"
    );
    assert_eq!(*seen.cancelled.lock().unwrap(), ["j-1"]);
    assert_deleted_once(&seen);
}

#[tokio::test]
async fn ctrl_c_cancels_the_job_and_deletes_the_application() {
    let seen = Arc::new(Seen::default());
    let mut opts = options();
    let cancel = opts.cancel.clone();
    opts.poll = Duration::from_millis(50);
    let api = api(&seen, move |id, _| {
        cancel.cancel();
        Ok(job(id, "RUNNING", None))
    });
    let r = run(&context(PIPELINE, api, store()), &opts).await.unwrap();
    assert_eq!(r.status, Status::Cancelled);
    assert_eq!(*seen.cancelled.lock().unwrap(), ["j-1"]);
    assert_deleted_once(&seen);
}

#[tokio::test]
async fn throttled_calls_are_retried_without_a_second_application() {
    let seen = Arc::new(Seen::default());
    *seen.create_throttles.lock().unwrap() = 1;
    let api = api(&seen, |id, n| match n {
        1 | 2 => Err(ApiError::new("ThrottlingException", "Rate exceeded")),
        _ => Ok(job(id, "SUCCESS", None)),
    });
    let toml = roomy();
    let r = run(&context(&toml, api, store()), &options())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    let tokens = seen.tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 2, "throttled once, then created");
    assert_eq!(
        tokens[0], tokens[1],
        "the retry carries the same client token"
    );
    assert_eq!(seen.created.lock().unwrap().len(), 1);
    assert_eq!(seen.calls("GetJobRun"), 3);
    assert_deleted_once(&seen);
}

#[tokio::test]
async fn a_denied_start_job_run_explains_pass_role_and_deletes_the_application() {
    let seen = Arc::new(Seen::default());
    seen.deny_start
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = succeeding_run(&seen, PIPELINE).await;
    assert_eq!(r.status, Status::Failed);
    let err = r.steps[0].error.as_deref().unwrap();
    assert!(err.contains("AccessDeniedException"), "{err}");
    assert!(
        err.contains("iam:PassRole on arn:aws:iam::123456789012:role/lake-jobs"),
        "{err}"
    );
    assert!(err.contains("lake iam-policy"), "{err}");
    assert_eq!(seen.calls("StartJobRun"), 1, "a denial is not retried");
    // Never started, so never stopped: deleted from CREATED.
    assert_eq!(seen.calls("StopApplication"), 0);
    assert_eq!(seen.calls("DeleteApplication"), 1);
    assert_eq!(*seen.app.lock().unwrap(), "TERMINATED");
}

#[tokio::test]
async fn stop_and_delete_are_retried_until_confirmed() {
    let seen = Arc::new(Seen::default());
    *seen.stop_refusals.lock().unwrap() = 2;
    let r = succeeding_run(&seen, &roomy()).await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    let calls = seen.calls.lock().unwrap().clone();
    let from = calls.iter().position(|c| c == "StopApplication").unwrap();
    assert_eq!(
        calls[from..],
        [
            "StopApplication",
            "GetApplication",
            "StopApplication",
            "GetApplication",
            "StopApplication",
            "GetApplication",
            "GetApplication",
            "DeleteApplication",
            "GetApplication",
        ],
        "refused twice, stopping, stopped, deleted, confirmed"
    );
    assert_eq!(*seen.app.lock().unwrap(), "TERMINATED");
}

#[tokio::test]
async fn a_teardown_that_is_never_confirmed_fails_the_run_naming_the_application() {
    let seen = Arc::new(Seen::default());
    *seen.stop_refusals.lock().unwrap() = usize::MAX;
    let r = succeeding_run(&seen, &roomy()).await;
    assert_eq!(r.status, Status::Failed, "{r:#?}");
    let err = r.error.as_deref().unwrap();
    assert!(err.contains("delete application 00fapp"), "{err}");
    assert!(
        err.contains("Application has running jobs"),
        "the last refusal: {err}"
    );
    assert!(err.contains("lake clusters --reap"), "{err}");
    assert!(seen.calls("StopApplication") > 2);
    assert_eq!(seen.calls("DeleteApplication"), 0);
}

#[tokio::test]
async fn an_existing_application_runs_the_jobs_and_is_never_stopped_or_deleted() {
    let seen = Arc::new(Seen::default());
    *seen.app.lock().unwrap() = "STOPPED".into();
    let toml = roomy().replace("[serverless]\n", "[serverless]\napplication = \"00fapp\"\n");
    let r = succeeding_run(&seen, &toml).await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    assert_eq!(seen.calls("CreateApplication"), 0);
    assert_eq!(
        seen.calls("ListApplications"),
        0,
        "no reap of an application lake did not make"
    );
    assert_eq!(seen.started.lock().unwrap()[0].application_id, APP);
    assert_eq!(seen.calls("StopApplication"), 0);
    assert_eq!(seen.calls("DeleteApplication"), 0);
}

#[tokio::test]
async fn a_run_reaps_applications_left_by_dead_runs_of_its_pipeline_and_root() {
    let deleted = Arc::new(Mutex::new(Vec::new()));
    let mut api = MockServerlessApi::new();
    api.expect_live_applications().returning(|| {
        let mine = [
            ("lake:pipeline", "p"),
            ("lake:run-id", "dead"),
            ("lake:root", "memory://"),
        ];
        Ok(vec![
            app("00fdead", "STOPPED", &mine),
            app(
                "00fother",
                "STARTED",
                &[
                    ("lake:pipeline", "q"),
                    ("lake:run-id", "x"),
                    ("lake:root", "memory://"),
                ],
            ),
            app(
                "00felsewhere",
                "STARTED",
                &[
                    ("lake:pipeline", "p"),
                    ("lake:run-id", "dead"),
                    ("lake:root", "s3://other/p"),
                ],
            ),
            app("00fnotlake", "STARTED", &[]),
        ])
    });
    let d = Arc::clone(&deleted);
    let states = Arc::new(Mutex::new(
        std::collections::HashMap::<String, String>::new(),
    ));
    let st = Arc::clone(&states);
    api.expect_get_application().returning(move |id| {
        Ok(app(
            id,
            st.lock().unwrap().get(id).map_or("STOPPED", String::as_str),
            &[],
        ))
    });
    let st = Arc::clone(&states);
    api.expect_delete_application().returning(move |id| {
        d.lock().unwrap().push(id.to_owned());
        st.lock()
            .unwrap()
            .insert(id.to_owned(), "TERMINATED".into());
        Ok(())
    });
    let backend = backend(api);
    let listed: Vec<String> = backend
        .applications()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(
        listed,
        ["00fdead", "00fother", "00felsewhere"],
        "lake's applications only"
    );
    let reaped: Vec<String> = backend
        .reap(Some("live"))
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(reaped, ["00fdead"]);
    assert_eq!(*deleted.lock().unwrap(), ["00fdead"]);
    // The live run's own application is not reaped.
    assert!(backend.reap(Some("dead")).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_api_error_while_watching_fails_the_run_and_deletes_the_application() {
    let seen = Arc::new(Seen::default());
    let api = api(&seen, |_, _| {
        Err(ApiError::new(
            "ResourceNotFoundException",
            "Job run j-1 does not exist",
        ))
    });
    let r = run(&context(PIPELINE, api, store()), &options())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Failed);
    let err = r.steps[0].error.as_deref().unwrap();
    assert!(err.contains("Job run j-1 does not exist"), "{err}");
    assert_eq!(seen.calls("GetJobRun"), 1, "not retried: {err}");
    assert_deleted_once(&seen);
}

#[tokio::test]
async fn an_application_deleted_by_hand_counts_as_deleted() {
    let mut api = MockServerlessApi::new();
    api.expect_live_applications().returning(|| {
        Ok(vec![app(
            "00fgone",
            "STOPPED",
            &[
                ("lake:pipeline", "p"),
                ("lake:run-id", "dead"),
                ("lake:root", "memory://"),
            ],
        )])
    });
    api.expect_get_application().returning(|id| {
        Err(ApiError::new(
            "ResourceNotFoundException",
            format!("Application {id} does not exist"),
        ))
    });
    api.expect_delete_application().never();
    let backend = backend(api);
    let reaped = backend.reap(None).await.unwrap();
    assert_eq!(reaped.len(), 1);
}
