//! The orchestrator against trait mocks (cluster backend, source) and a real memory store:
//! order, failure propagation, teardown and lock release on every path.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use lake::core::chrono::NaiveDate;
use lake::core::cluster::{ClusterHandle, StepHandle, StepLogs, StepState};
use lake::core::config::ConfigFile;
use lake::core::ledger::{self, Status};
use lake::core::lock;
use lake::core::run::{RunContext, RunOptions, run};
use lake::core::source::SourceObject;
use lake::core::zone::{Key, ZoneStoreExt};
use lake::core::{DynZoneStore, Error, Source, ZoneStore};
use lake::local::LocalZoneStore;
use lake_testing::{MockClusterBackend, MockSource};

// One step at a time: these tests assert the order of submissions (tests/parallel.rs runs
// steps at once).
const PIPELINE: &str = r#"
[lake]
name = "p"
max_parallel_steps = 1

[sources.s]
kind = "file"
path = "unused"

[steps.a]
kind = "command"
command = ["a"]
inputs = ["raw/s"]

[steps.b]
kind = "command"
command = ["b"]
depends_on = ["a"]

[steps.c]
kind = "command"
command = ["c", "{date}"]
depends_on = ["b"]

[steps.d]
kind = "command"
command = ["d"]
env = { TOKEN = "${env:ORCH_TOKEN}" }
"#;

fn date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
}

fn source() -> Arc<dyn Source> {
    let mut s = MockSource::new();
    s.expect_name().return_const("s".to_owned());
    s.expect_objects().returning(|_| {
        Ok(vec![SourceObject {
            name: "x.csv".into(),
            size: Some(3),
            content_type: None,
            origin: "mem".into(),
        }])
    });
    s.expect_open().returning(|_, _| {
        Ok(Box::pin(futures::stream::once(async {
            Ok(Bytes::from_static(b"a,b"))
        })))
    });
    Arc::new(s)
}

/// A backend whose steps end in `state(name)`; records submissions and counts teardowns.
struct Recorder {
    submitted: Arc<Mutex<Vec<String>>>,
    terminated: Arc<Mutex<usize>>,
    cancelled: Arc<Mutex<Vec<String>>>,
}

fn backend(state: fn(&str) -> StepState) -> (MockClusterBackend, Recorder) {
    let rec = Recorder {
        submitted: Arc::default(),
        terminated: Arc::default(),
        cancelled: Arc::default(),
    };
    let mut b = MockClusterBackend::new();
    b.expect_name().return_const("mock".to_owned());
    b.expect_start().times(1).returning(|spec| {
        assert_eq!(spec.tags["lake:pipeline"], "p");
        assert_eq!(spec.tags["lake:run-id"], spec.run_id);
        Ok(ClusterHandle {
            id: "c-1".into(),
            attached: false,
            notes: Vec::new(),
        })
    });
    let submitted = Arc::clone(&rec.submitted);
    b.expect_submit().returning(move |_, req| {
        submitted.lock().unwrap().push(req.name.clone());
        Ok(StepHandle {
            id: req.name.clone(),
            name: req.name.clone(),
        })
    });
    b.expect_poll().returning(move |_, h| Ok(state(&h.name)));
    b.expect_logs().returning(|_, h| {
        Ok(StepLogs {
            stdout_tail: String::new(),
            stderr_tail: format!("Traceback\nValueError: {} broke with s3cr3t-value", h.name),
        })
    });
    let cancelled = Arc::clone(&rec.cancelled);
    b.expect_cancel().returning(move |_, h| {
        cancelled.lock().unwrap().push(h.name.clone());
        Ok(())
    });
    let terminated = Arc::clone(&rec.terminated);
    b.expect_terminate().returning(move |_| {
        *terminated.lock().unwrap() += 1;
        Ok(())
    });
    (b, rec)
}

fn context(b: MockClusterBackend, store: Arc<DynZoneStore>) -> RunContext {
    let file = ConfigFile::parse("lake.toml", "/tmp".into(), PIPELINE.to_owned()).unwrap();
    RunContext {
        pipeline: Arc::new(file.pipeline(None, &lake::kinds()).unwrap()),
        store,
        backend: Arc::new(b),
        sources: [("s".to_owned(), source())].into(),
        sinks: Default::default(),
        catalog: None,
        formats: Default::default(),
    }
}

fn options() -> RunOptions {
    let mut o = RunOptions::new(date());
    o.poll = Duration::from_millis(1);
    o.max_poll = Duration::from_millis(5);
    o.env = Arc::new(|v| (v == "ORCH_TOKEN").then(|| "s3cr3t-value".to_owned()));
    o
}

async fn lock_is_free(store: &DynZoneStore) -> bool {
    lock::current(store, "p").await.unwrap().is_none()
}

#[tokio::test]
async fn runs_in_dependency_order_and_tears_down() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let (b, rec) = backend(|_| StepState::Completed);
    let r = run(&context(b, Arc::clone(&store)), &options())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Succeeded);
    assert_eq!(*rec.submitted.lock().unwrap(), ["a", "b", "c", "d"]);
    assert_eq!(*rec.terminated.lock().unwrap(), 1, "terminate exactly once");
    assert!(lock_is_free(&*store).await, "lock released");
    // The raw window landed and is an input of a, with its hash, in the ledger.
    let stored = ledger::get(&*store, &r.run_id).await.unwrap();
    assert_eq!(stored, r);
    let a = &r.steps[0];
    assert_eq!(a.inputs.len(), 1);
    assert_eq!(a.inputs[0].key, "raw/s/ingest_date=2024-02-29/x.csv");
    assert_eq!(a.inputs[0].sha256, sha("a,b"));
    assert_eq!(r.ingest[0].status, Status::Succeeded);
}

fn sha(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[tokio::test]
async fn a_failed_step_skips_its_dependants_and_records_the_rest() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let (b, rec) = backend(|name| match name {
        "b" => StepState::Failed {
            reason: "exit status 3".into(),
        },
        _ => StepState::Completed,
    });
    let r = run(&context(b, Arc::clone(&store)), &options())
        .await
        .unwrap();
    assert_eq!(r.status, Status::Failed);
    let status: Vec<(&str, Status)> = r
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.status))
        .collect();
    assert_eq!(
        status,
        [
            ("a", Status::Succeeded),
            ("b", Status::Failed),
            ("c", Status::Skipped),
            ("d", Status::Succeeded)
        ]
    );
    assert_eq!(
        *rec.submitted.lock().unwrap(),
        ["a", "b", "d"],
        "c never submitted"
    );
    let err = r.steps[1].error.as_deref().unwrap();
    assert!(
        err.starts_with("exit status 3\ncause:\nValueError: b broke with ***\nstderr (last lines):\nTraceback\nValueError: b broke"),
        "{err}"
    );
    assert!(
        r.steps[2]
            .error
            .as_deref()
            .unwrap()
            .contains("dependency \"b\" did not succeed")
    );
    assert_eq!(*rec.terminated.lock().unwrap(), 1);
    assert!(lock_is_free(&*store).await);
}

#[tokio::test]
async fn secrets_are_redacted_from_step_errors_and_never_in_the_ledger() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let (b, _rec) = backend(|name| match name {
        "d" => StepState::Failed {
            reason: "exit status 1".into(),
        },
        _ => StepState::Completed,
    });
    let r = run(&context(b, Arc::clone(&store)), &options())
        .await
        .unwrap();
    let err = r.steps[3].error.as_deref().unwrap();
    assert!(err.contains("d broke with ***"), "{err}");
    let raw = store
        .get_bytes(&Key::new(format!("_lake/runs/{}.json", r.run_id)).unwrap())
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("s3cr3t-value"));
}

#[tokio::test]
async fn a_missing_secret_fails_before_anything_runs() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let mut b = MockClusterBackend::new();
    b.expect_start().never();
    b.expect_name().return_const("mock".to_owned());
    let mut o = options();
    o.env = Arc::new(|_| None);
    let err = run(&context(b, Arc::clone(&store)), &o).await.unwrap_err();
    assert!(
        matches!(&err, Error::MissingEnv { var, key } if var == "ORCH_TOKEN" && key == "steps.d.env.TOKEN"),
        "{err}"
    );
    assert!(store.list("").await.unwrap().is_empty(), "nothing written");
}

#[tokio::test]
async fn cancellation_cancels_the_step_tears_down_and_releases_the_lock() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let (b, rec) = backend(|_| StepState::Running);
    let o = options();
    let cancel = o.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cancel.cancel();
    });
    let r = run(&context(b, Arc::clone(&store)), &o).await.unwrap();
    assert_eq!(r.status, Status::Cancelled);
    assert_eq!(
        *rec.cancelled.lock().unwrap(),
        ["a"],
        "the running step is cancelled"
    );
    assert_eq!(
        *rec.submitted.lock().unwrap(),
        ["a"],
        "nothing else is submitted"
    );
    assert_eq!(*rec.terminated.lock().unwrap(), 1);
    assert!(lock_is_free(&*store).await);
    assert_eq!(
        ledger::get(&*store, &r.run_id).await.unwrap().status,
        Status::Cancelled
    );
}

#[tokio::test]
async fn a_step_timeout_cancels_it_and_fails_it() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let (b, rec) = backend(|_| StepState::Running);
    let mut ctx = context(b, Arc::clone(&store));
    let mut p = (*ctx.pipeline).clone();
    for s in p.steps.values_mut() {
        s.timeout = Some(Duration::from_millis(30));
    }
    ctx.pipeline = Arc::new(p);
    let mut o = options();
    o.only = vec!["a".into()];
    let r = run(&ctx, &o).await.unwrap();
    assert_eq!(r.status, Status::Failed);
    assert!(r.steps[0].error.as_deref().unwrap().contains("timed out"));
    assert_eq!(*rec.cancelled.lock().unwrap(), ["a"]);
    assert_eq!(*rec.terminated.lock().unwrap(), 1);
    assert!(lock_is_free(&*store).await);
}

#[tokio::test]
async fn a_held_lock_refuses_the_run_and_names_the_holder() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    lock::acquire(
        &*store,
        "p",
        "other-run",
        "alice@box pid 7",
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    let mut b = MockClusterBackend::new();
    b.expect_start().never();
    b.expect_name().return_const("mock".to_owned());
    let err = run(&context(b, Arc::clone(&store)), &options())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("locked by run other-run (alice@box pid 7)"),
        "{msg}"
    );
    assert_eq!(
        lock::current(&*store, "p").await.unwrap().unwrap().run_id,
        "other-run",
        "the holder keeps it"
    );
}

#[tokio::test]
async fn an_expired_lock_is_taken_over_once_with_a_warning() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let mut old = lock::acquire(
        &*store,
        "p",
        "dead-run",
        "bob@box pid 9",
        Duration::from_secs(60),
    )
    .await
    .unwrap()
    .info;
    old.expires = old.acquired - lake::core::chrono::Duration::seconds(1);
    store
        .put_json(&lock::lock_key("p").unwrap(), &old)
        .await
        .unwrap();

    let warnings = Arc::new(Mutex::new(Vec::new()));
    struct Obs(Arc<Mutex<Vec<String>>>);
    impl lake::core::run::RunObserver for Obs {
        fn event(&self, e: &lake::core::run::Event) {
            if let lake::core::run::Event::Warning(w) = e {
                self.0.lock().unwrap().push(w.clone());
            }
        }
    }
    let (b, _rec) = backend(|_| StepState::Completed);
    let mut o = options();
    o.observer = Some(Arc::new(Obs(Arc::clone(&warnings))));
    let r = run(&context(b, Arc::clone(&store)), &o).await.unwrap();
    assert_eq!(r.status, Status::Succeeded);
    let w = warnings.lock().unwrap().clone();
    assert!(
        w.iter()
            .any(|w| w.contains("took over the lock of run dead-run")),
        "{w:?}"
    );
    assert!(lock_is_free(&*store).await);
    // The dead run had written no record yet: the ledger gets one, failed, from its lock.
    let dead = ledger::get(&*store, "dead-run").await.unwrap();
    assert_eq!(dead.status, Status::Failed);
    assert_eq!(dead.holder, "bob@box pid 9");
    assert!(dead.error.unwrap().contains("abandoned"));

    // Two takers racing for one expired lock: exactly one wins.
    store
        .put_json(&lock::lock_key("p").unwrap(), &old)
        .await
        .unwrap();
    let a = lock::acquire(&*store, "p", "r1", "x", Duration::from_secs(60)).await;
    let b = lock::acquire(&*store, "p", "r2", "y", Duration::from_secs(60)).await;
    assert!(a.is_ok() != b.is_ok(), "one taker wins: {a:?} {b:?}");
}
