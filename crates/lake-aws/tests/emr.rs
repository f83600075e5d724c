//! Step lifecycles of the EMR backend through the orchestrator, against a mocked EMR API
//! (`MockEmrApi`) and a memory store: completed, failed with its log fetched and the cause
//! picked out, throttled then completed, cancelled, timed out, API errors; the cluster
//! terminated exactly once on every path, and never when it was not created.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lake::aws::emr::{
    ApiError, ClusterStatus, EmrBackend, FailureDetails, MockEmrApi, StepStatus, Timing,
};
use lake::core::chrono::NaiveDate;
use lake::core::config::ConfigFile;
use lake::core::ledger::Status;
use lake::core::run::{RunContext, RunOptions, run};
use lake::core::{DynZoneStore, lock};
use lake::local::LocalZoneStore;

const PIPELINE: &str = r#"
[lake]
name = "p"
root = "s3://bucket/p"
backend = "emr"

[cluster]
log_wait = "1s"
core = { type = "r5.2xlarge", count = 3, market = "SPOT", bid_price = "0.30" }
tags = { team = "data" }

[steps.clean]
kind = "command"
command = ["python3", "-c", "print(1)"]
timeout = "1s"

[steps.report]
kind = "command"
command = ["echo", "{date}"]
depends_on = ["clean"]
"#;

const CLUSTER: &str = "j-TEST";

fn cluster(state: &str) -> ClusterStatus {
    cluster_as(CLUSTER, state, &[])
}

/// Another cluster in the account: its id, state and tags.
fn cluster_as(id: &str, state: &str, tags: &[(&str, &str)]) -> ClusterStatus {
    ClusterStatus {
        id: id.into(),
        name: "lake-p".into(),
        state: state.into(),
        tags: tags
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..ClusterStatus::default()
    }
}

/// Every step the run asks about has completed.
fn steps_complete(api: &mut MockEmrApi) {
    api.expect_list_steps()
        .returning(|_, ids| Ok(ids.iter().map(|id| step(id, "COMPLETED", None)).collect()));
}

fn step(id: &str, state: &str, failure: Option<FailureDetails>) -> StepStatus {
    StepStatus {
        id: id.into(),
        state: state.into(),
        failure,
    }
}

/// What the mocked API saw.
#[derive(Default)]
struct Seen {
    terminated: Mutex<Vec<String>>,
    cancelled: Mutex<Vec<String>>,
    added: Mutex<Vec<Vec<String>>>,
    created: Mutex<usize>,
}

/// A mock that creates `j-TEST`, numbers steps s-1, s-2, …, answers ListSteps with
/// `steps(step id, poll number)`, and records what it is asked.
fn api(
    seen: &Arc<Seen>,
    steps: impl Fn(&str, usize) -> Result<StepStatus, ApiError> + Send + Sync + 'static,
) -> MockEmrApi {
    let mut m = MockEmrApi::new();
    m.expect_active_clusters().returning(|| Ok(Vec::new()));
    let s = Arc::clone(seen);
    m.expect_run_job_flow().returning(move |req| {
        let tags: Vec<(String, String)> = req
            .tags
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect();
        assert!(tags.contains(&("lake:pipeline".into(), "p".into())));
        assert!(tags.contains(&("team".into(), "data".into())));
        assert!(
            tags.iter()
                .any(|(k, v)| k == "lake:run-id" && !v.is_empty())
        );
        let core = &req.instances.instance_groups[1];
        assert_eq!(
            (core.instance_type.as_str(), core.instance_count),
            ("r5.2xlarge", 3)
        );
        assert_eq!(
            (core.market.as_str(), core.bid_price.as_deref()),
            ("SPOT", Some("0.30"))
        );
        *s.created.lock().unwrap() += 1;
        Ok(CLUSTER.into())
    });
    let s = Arc::clone(seen);
    m.expect_add_steps().returning(move |c, steps| {
        assert_eq!(c, CLUSTER);
        let mut added = s.added.lock().unwrap();
        added.push(steps[0].hadoop_jar_step.args.clone());
        Ok(vec![format!("s-{}", added.len())])
    });
    let polls = Arc::new(Mutex::new(0usize));
    m.expect_list_steps().returning(move |_, ids| {
        let mut n = polls.lock().unwrap();
        *n += 1;
        ids.iter().map(|id| steps(id, *n)).collect()
    });
    let s = Arc::clone(seen);
    m.expect_describe_cluster().returning(move |_| {
        Ok(cluster(if s.terminated.lock().unwrap().is_empty() {
            "RUNNING"
        } else {
            "TERMINATING"
        }))
    });
    let s = Arc::clone(seen);
    m.expect_cancel_steps().returning(move |_, ids| {
        s.cancelled.lock().unwrap().extend(ids.iter().cloned());
        Ok(())
    });
    let s = Arc::clone(seen);
    m.expect_terminate().returning(move |c| {
        s.terminated.lock().unwrap().push(c.to_owned());
        Ok(())
    });
    m
}

fn timing() -> Timing {
    Timing {
        throttle_backoff: Duration::from_millis(1),
        throttle_attempts: 5,
        log_poll: Duration::from_millis(50),
        terminate_attempts: 3,
        poll_reuse: Duration::ZERO,
        poll: Duration::from_millis(1),
        max_poll: Duration::from_millis(5),
    }
}

fn context(api: MockEmrApi, store: Arc<DynZoneStore>) -> RunContext {
    context_for(PIPELINE, api, store)
}

fn context_for(toml: &str, api: MockEmrApi, store: Arc<DynZoneStore>) -> RunContext {
    let file = ConfigFile::parse("lake.toml", "/tmp".into(), toml.to_owned()).unwrap();
    let pipeline = Arc::new(file.pipeline(None, &lake::kinds()).unwrap());
    let backend = EmrBackend::new(
        Arc::new(api),
        lake::aws::emr::EmrConfig::of(&pipeline)
            .unwrap()
            .def
            .clone(),
        Arc::clone(&store),
        "p",
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

#[tokio::test]
async fn completed_steps_run_in_order_and_the_cluster_is_terminated_once() {
    let seen = Arc::new(Seen::default());
    let api = api(&seen, |id, n| {
        Ok(step(
            id,
            if n % 2 == 1 { "RUNNING" } else { "COMPLETED" },
            None,
        ))
    });
    let store = store();
    let r = run(&context(api, Arc::clone(&store)), &options())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    assert_eq!(*seen.created.lock().unwrap(), 1);
    let added = seen.added.lock().unwrap().clone();
    assert_eq!(added[0][..2], ["env", "LAKE_ROOT=memory://"]);
    assert!(
        added[0].contains(&format!("LAKE_RUN_ID={}", r.run_id)),
        "{:?}",
        added[0]
    );
    assert!(added[0].ends_with(&["python3".into(), "-c".into(), "print(1)".into()]));
    assert!(
        added[1].ends_with(&["echo".into(), "2024-05-01".into()]),
        "{:?}",
        added[1]
    );
    assert_eq!(*seen.terminated.lock().unwrap(), [CLUSTER]);
    assert!(lock::current(&*store, "p").await.unwrap().is_none());
}

#[tokio::test]
async fn a_failed_step_prints_emr_details_and_the_cause_from_its_log() {
    let seen = Arc::new(Seen::default());
    let mut api = api(&seen, |id, _| {
        Ok(step(
            id,
            "FAILED",
            Some(FailureDetails {
                reason: Some("Unknown Error.".into()),
                message: None,
                log_file: None,
            }),
        ))
    });
    let log = "24/05/01 INFO SparkContext: Running Spark\n\
               Traceback (most recent call last):\n  File \"clean.py\", line 3, in <module>\n    \
               main()\nValueError: column 'age' has text 'abc'\n24/05/01 INFO ShutdownHookManager: done\n";
    let reads = Arc::new(Mutex::new(Vec::new()));
    let r2 = Arc::clone(&reads);
    let body = gz(log);
    let mut calls = 0;
    api.expect_read_object().returning(move |url| {
        r2.lock().unwrap().push(url.to_owned());
        calls += 1;
        // The log arrives late: absent on the first look.
        Ok((calls > 1).then(|| body.clone()))
    });
    let r = run(&context(api, store()), &options()).await.unwrap();
    assert_eq!(r.status, Status::Failed);
    let clean = &r.steps[0];
    assert_eq!(clean.status, Status::Failed);
    let err = clean.error.as_deref().unwrap();
    assert!(err.starts_with("Unknown Error."), "{err}");
    assert!(
        err.contains("cause:\nTraceback (most recent call last):"),
        "{err}"
    );
    assert!(
        err.contains("ValueError: column 'age' has text 'abc'"),
        "{err}"
    );
    assert!(
        !err[err.find("cause:").unwrap()..err.find("stderr").unwrap()].contains("INFO"),
        "{err}"
    );
    assert_eq!(r.steps[1].status, Status::Skipped);
    let reads = reads.lock().unwrap();
    assert_eq!(
        reads[0],
        "s3://bucket/p/_lake/emr-logs/j-TEST/steps/s-1/stderr.gz"
    );
    assert_eq!(*seen.terminated.lock().unwrap(), [CLUSTER]);
}

#[tokio::test]
async fn throttled_polls_are_retried() {
    let seen = Arc::new(Seen::default());
    let api = api(&seen, |id, n| match n {
        1 | 2 => Err(ApiError::new("ThrottlingException", "Rate exceeded")),
        _ => Ok(step(id, "COMPLETED", None)),
    });
    let r = run(&context(api, store()), &options()).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    assert_eq!(*seen.terminated.lock().unwrap(), [CLUSTER]);
}

#[tokio::test]
async fn a_cancelled_run_cancels_its_step_and_terminates() {
    let seen = Arc::new(Seen::default());
    let mut opts = options();
    let cancel = opts.cancel.clone();
    opts.poll = Duration::from_millis(50);
    let api = api(&seen, move |id, _| {
        cancel.cancel();
        Ok(step(id, "RUNNING", None))
    });
    let r = run(&context(api, store()), &opts).await.unwrap();
    assert_eq!(r.status, Status::Cancelled);
    assert_eq!(*seen.cancelled.lock().unwrap(), ["s-1"]);
    assert_eq!(*seen.terminated.lock().unwrap(), [CLUSTER]);
}

#[tokio::test]
async fn a_step_timeout_cancels_the_step_and_terminates() {
    let seen = Arc::new(Seen::default());
    let api = api(&seen, |id, _| Ok(step(id, "RUNNING", None)));
    let r = run(&context(api, store()), &options()).await.unwrap();
    assert_eq!(r.status, Status::Failed);
    assert!(
        r.steps[0].error.as_deref().unwrap().contains("timed out"),
        "{r:?}"
    );
    assert_eq!(*seen.cancelled.lock().unwrap(), ["s-1"]);
    assert_eq!(*seen.terminated.lock().unwrap(), [CLUSTER]);
}

#[tokio::test]
async fn an_api_error_fails_the_run_and_terminates() {
    let seen = Arc::new(Seen::default());
    let mut api = MockEmrApi::new();
    api.expect_active_clusters().returning(|| Ok(Vec::new()));
    api.expect_run_job_flow().returning(|_| Ok(CLUSTER.into()));
    api.expect_add_steps().returning(|_, _| {
        Err(ApiError::new(
            "AccessDeniedException",
            "User: arn:aws:iam::1:user/x is not authorized to perform: elasticmapreduce:AddJobFlowSteps",
        ))
    });
    let s = Arc::clone(&seen);
    api.expect_terminate().times(1).returning(move |c| {
        s.terminated.lock().unwrap().push(c.to_owned());
        Ok(())
    });
    api.expect_describe_cluster()
        .returning(|_| Ok(cluster("TERMINATING")));
    let r = run(&context(api, store()), &options()).await.unwrap();
    assert_eq!(r.status, Status::Failed);
    let err = r.steps[0].error.as_deref().unwrap();
    assert!(
        err.contains("AddJobFlowSteps") && err.contains("lake iam-policy"),
        "{err}"
    );
    assert_eq!(*seen.terminated.lock().unwrap(), [CLUSTER]);
}

#[tokio::test]
async fn a_denied_run_job_flow_explains_pass_role_and_terminates_nothing() {
    let mut api = MockEmrApi::new();
    api.expect_active_clusters().returning(|| Ok(Vec::new()));
    api.expect_run_job_flow().times(1).returning(|_| {
        Err(ApiError::new(
            "AccessDeniedException",
            "User: arn:aws:iam::1:user/x is not authorized to perform: iam:PassRole on resource: EMR_DefaultRole",
        ))
    });
    api.expect_terminate().never();
    let r = run(&context(api, store()), &options()).await.unwrap();
    assert_eq!(r.status, Status::Failed);
    let err = r.error.clone().unwrap();
    assert!(
        err.contains("iam:PassRole on the roles EMR_DefaultRole and EMR_EC2_DefaultRole"),
        "{err}"
    );
}

#[tokio::test]
async fn termination_is_retried_until_confirmed() {
    let seen = Arc::new(Seen::default());
    let mut api = MockEmrApi::new();
    api.expect_active_clusters().returning(|| Ok(Vec::new()));
    api.expect_run_job_flow().returning(|_| Ok(CLUSTER.into()));
    api.expect_add_steps()
        .returning(|_, _| Ok(vec!["s-1".into()]));
    steps_complete(&mut api);
    let s = Arc::clone(&seen);
    let mut n = 0;
    api.expect_terminate().times(2).returning(move |c| {
        n += 1;
        s.terminated.lock().unwrap().push(c.to_owned());
        if n == 1 {
            Err(ApiError::new("InternalServerError", "try again"))
        } else {
            Ok(())
        }
    });
    let s = Arc::clone(&seen);
    api.expect_describe_cluster().returning(move |_| {
        Ok(cluster(if s.terminated.lock().unwrap().len() < 2 {
            "WAITING"
        } else {
            "TERMINATING"
        }))
    });
    let r = run(&context(api, store()), &options()).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    assert_eq!(seen.terminated.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_run_reaps_clusters_left_by_dead_runs_of_its_pipeline() {
    let seen = Arc::new(Seen::default());
    let store = store();
    let root = store.root_url();
    let left = cluster_as(
        "j-OLD",
        "WAITING",
        &[
            ("lake:pipeline", "p"),
            ("lake:run-id", "old"),
            ("lake:root", &root),
        ],
    );
    let other = cluster_as(
        "j-OTHER",
        "WAITING",
        &[
            ("lake:pipeline", "q"),
            ("lake:run-id", "x"),
            ("lake:root", &root),
        ],
    );
    // The same pipeline name on another root (another bucket, another --env): not ours.
    let elsewhere = cluster_as(
        "j-ELSEWHERE",
        "WAITING",
        &[
            ("lake:pipeline", "p"),
            ("lake:run-id", "old"),
            ("lake:root", "s3://another-bucket/p"),
        ],
    );
    let mut api = MockEmrApi::new();
    let listed = vec![left, other, elsewhere];
    api.expect_active_clusters()
        .returning(move || Ok(listed.clone()));
    api.expect_run_job_flow().returning(|_| Ok(CLUSTER.into()));
    api.expect_add_steps()
        .returning(|_, _| Ok(vec!["s-1".into()]));
    steps_complete(&mut api);
    let s = Arc::clone(&seen);
    api.expect_terminate().returning(move |c| {
        s.terminated.lock().unwrap().push(c.to_owned());
        Ok(())
    });
    api.expect_describe_cluster()
        .returning(|id| Ok(cluster_as(id, "TERMINATING", &[])));
    let r = run(&context(api, store), &options()).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    assert_eq!(*seen.terminated.lock().unwrap(), ["j-OLD", CLUSTER]);
}

#[tokio::test]
async fn an_attached_cluster_runs_the_steps_and_is_never_terminated() {
    let seen = Arc::new(Seen::default());
    let mut api = MockEmrApi::new();
    let mine = cluster_as("j-SHARED", "WAITING", &[("team", "data")]);
    let other = cluster_as("j-OTHER", "WAITING", &[]);
    let listed = vec![other, mine];
    api.expect_active_clusters()
        .returning(move || Ok(listed.clone()));
    api.expect_run_job_flow().never();
    api.expect_terminate().never();
    let s = Arc::clone(&seen);
    api.expect_add_steps().returning(move |c, _| {
        assert_eq!(c, "j-SHARED");
        let mut added = s.added.lock().unwrap();
        added.push(Vec::new());
        Ok(vec![format!("s-{}", added.len())])
    });
    steps_complete(&mut api);
    api.expect_describe_cluster()
        .returning(|_| Ok(cluster_as("j-SHARED", "RUNNING", &[])));
    let toml = PIPELINE.replace(
        "[cluster]\n",
        "[cluster]\nattach = { tag = \"team=data\" }\n",
    );
    let r = run(&context_for(&toml, api, store()), &options())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Succeeded, "{r:?}");
    assert_eq!(seen.added.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn keep_cluster_leaves_it_running_and_says_so() {
    let seen = Arc::new(Seen::default());
    let api = api(&seen, |id, _| Ok(step(id, "COMPLETED", None)));
    let said = Arc::new(Mutex::new(Vec::new()));
    struct Said(Arc<Mutex<Vec<String>>>);
    impl lake::core::run::RunObserver for Said {
        fn event(&self, e: &lake::core::run::Event) {
            if let lake::core::run::Event::Cluster(line) = e {
                self.0.lock().unwrap().push(line.clone());
            }
        }
    }
    let mut opts = options();
    opts.keep_cluster = true;
    opts.observer = Some(Arc::new(Said(Arc::clone(&said))));
    let r = run(&context(api, store()), &opts).await.unwrap();
    assert_eq!(r.status, Status::Succeeded);
    assert!(seen.terminated.lock().unwrap().is_empty());
    let said = said.lock().unwrap();
    assert!(
        said[0].starts_with("created cluster j-TEST (emr-7.9.0"),
        "{said:?}"
    );
    assert!(
        said.iter()
            .any(|l| l.starts_with("kept cluster j-TEST running")),
        "{said:?}"
    );
}

#[tokio::test]
async fn spark_and_copy_steps_become_command_runner_steps() {
    use lake::core::cluster::{CopyWork, SparkWork, SqlInput, StepRequest, StepWork};
    use lake::core::config::{InputFormat, Secret, SparkApp, Zone};
    use lake::core::publish::ObjectEntry;
    use lake::core::zone::{Key, ZoneStoreExt};

    let store = store();
    let file = ConfigFile::parse("lake.toml", "/tmp".into(), PIPELINE.to_owned()).unwrap();
    let pipeline = file.pipeline(None, &lake::kinds()).unwrap();
    let backend = EmrBackend::new(
        Arc::new(MockEmrApi::new()),
        lake::aws::emr::EmrConfig::of(&pipeline)
            .unwrap()
            .def
            .clone(),
        Arc::clone(&store),
        "p",
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("clean.py");
    std::fs::write(&script, "print('clean')\n").unwrap();
    let spark = |env: Vec<(String, Secret)>| StepRequest {
        name: "clean".into(),
        timeout: None,
        work: StepWork::Spark(SparkWork {
            app: SparkApp::Script(script.to_string_lossy().into_owned()),
            args: vec!["--date".into(), "2024-05-01".into()],
            spark_args: vec!["--executor-memory".into(), "4g".into()],
            env,
            workdir: dir.path().to_owned(),
        }),
    };
    let req = backend
        .step_request(&spark(vec![("MODE".into(), Secret::plain("full"))]), true)
        .await
        .unwrap();
    assert_eq!(req.hadoop_jar_step.jar, "command-runner.jar");
    assert_eq!(req.action_on_failure, "CONTINUE");
    let args = &req.hadoop_jar_step.args;
    assert_eq!(
        args[..9],
        [
            "spark-submit",
            "--deploy-mode",
            "cluster",
            "--conf",
            "spark.yarn.appMasterEnv.MODE=full",
            "--conf",
            "spark.executorEnv.MODE=full",
            "--executor-memory",
            "4g"
        ]
    );
    assert!(args[9].ends_with("/clean.py"), "{args:?}");
    assert_eq!(args[10..], ["--date", "2024-05-01"]);
    // The script was uploaded where the step reads it.
    let key = &args[9][args[9].find("_lake/code/").unwrap()..];
    let uploaded = store.get_bytes(&Key::new(key).unwrap()).await.unwrap();
    assert_eq!(&uploaded[..], b"print('clean')\n");

    // A secret never goes into an EMR step's arguments.
    let mut lookup_env = std::collections::BTreeMap::new();
    lookup_env.insert("TOKEN", "s3cr3t");
    let secret = lake::core::config::Template::parse("${env:TOKEN}")
        .unwrap()
        .resolve("steps.clean.env.TOKEN", &|v| {
            lookup_env.get(v).map(|s| s.to_string())
        })
        .unwrap();
    let err = backend
        .step_request(&spark(vec![("TOKEN".into(), secret)]), true)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot be passed to an EMR or EMR Serverless step"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"));

    // copy: s3-dist-cp of exactly the committed objects.
    let objects: Vec<ObjectEntry> = [
        "raw/a/ingest_date=2024-05-01/x.csv",
        "raw/a/ingest_date=2024-05-02/y.csv",
    ]
    .iter()
    .map(|k| ObjectEntry {
        key: (*k).into(),
        size: 1,
        sha256: String::new(),
        origin: None,
        etag: None,
    })
    .collect();
    let copy = StepRequest {
        name: "copy".into(),
        timeout: None,
        work: StepWork::Copy(CopyWork {
            input: SqlInput {
                table: "a".into(),
                dataset: "raw/a".into(),
                prefix: "raw/a".into(),
                format: InputFormat::defaults(Zone::Raw),
                objects,
            },
            output: "_lake/staging/r/copy".into(),
        }),
    };
    let req = backend.step_request(&copy, true).await.unwrap();
    let args = &req.hadoop_jar_step.args;
    assert_eq!(args[0], "s3-dist-cp");
    assert_eq!(args[1], format!("--src={}", store.url_of("raw/a")));
    assert_eq!(
        args[2],
        format!("--dest={}", store.url_of("_lake/staging/r/copy"))
    );
    let list_url = args[3].strip_prefix("--srcPrefixesFile=").unwrap();
    let key = &list_url[list_url.find("_lake/code/").unwrap()..];
    let list = store.get_bytes(&Key::new(key).unwrap()).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&list).unwrap(),
        format!(
            "{}\n{}\n",
            store.url_of("raw/a/ingest_date=2024-05-01/x.csv"),
            store.url_of("raw/a/ingest_date=2024-05-02/y.csv")
        )
    );
}

/// `--deploy-mode cluster`: the step's own log only names its YARN application; the Python
/// traceback is in the driver container's log, where EMR copies it
/// (`<log_uri><cluster>/containers/<application>/container_…_01_000001/`). lake reads that too
/// and shows the cause (issue 15 #16).
#[tokio::test]
async fn a_cluster_mode_failure_shows_the_drivers_traceback() {
    let seen = Arc::new(Seen::default());
    let mut api = api(&seen, |id, _| Ok(step(id, "FAILED", None)));
    let step_log = gz(
        "24/05/01 INFO Client: Submitted application application_1714521600000_0007\n\
         Exception in thread \"main\" org.apache.spark.SparkException: Application application_1714521600000_0007 finished with failed status\n",
    );
    let driver_out = gz(
        "Traceback (most recent call last):\n  File \"lake_sql.py\", line 40, in <module>\n    main()\nValueError: column 'age' has text 'abc'\n",
    );
    let reads = Arc::new(Mutex::new(Vec::new()));
    let r2 = Arc::clone(&reads);
    api.expect_read_object().returning(move |url| {
        r2.lock().unwrap().push(url.to_owned());
        Ok(if url.ends_with("/steps/s-1/stderr.gz") {
            Some(step_log.clone())
        } else if url.ends_with(
            "/containers/application_1714521600000_0007/container_1714521600000_0007_01_000001/stdout.gz",
        ) {
            Some(driver_out.clone())
        } else {
            None
        })
    });
    let r = run(&context(api, store()), &options()).await.unwrap();
    let err = r.steps[0].error.as_deref().unwrap();
    assert!(
        err.contains("ValueError: column 'age' has text 'abc'"),
        "{err}"
    );
    assert!(
        reads.lock().unwrap().iter().any(|u| u
            == "s3://bucket/p/_lake/emr-logs/j-TEST/containers/application_1714521600000_0007/container_1714521600000_0007_01_000001/stdout.gz"),
        "{:?}",
        reads.lock().unwrap()
    );
}
