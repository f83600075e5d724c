//! Steps in parallel: a diamond of sleeping command steps on the embedded backend. Steps whose
//! inputs are ready run at once up to `max_parallel_steps` (seen in the ledger's start and end
//! times, not by a wall-clock threshold); a failed step skips only its dependants.

use std::sync::Arc;

use lake::core::chrono::NaiveDate;
use lake::core::config::ConfigFile;
use lake::core::ledger::{RunRecord, Status, StepRecord};
use lake::core::run::{RunContext, RunOptions, run};
use lake::local::{LocalBackend, LocalZoneStore};

fn diamond(max_parallel: usize, b_fails: bool) -> String {
    let b = if b_fails { "exit 3" } else { "sleep 0.6" };
    format!(
        r#"
[lake]
name = "diamond"
max_parallel_steps = {max_parallel}

[steps.a]
kind = "command"
command = ["sh", "-c", "sleep 0.2"]

[steps.b]
kind = "command"
command = ["sh", "-c", "{b}"]
depends_on = ["a"]

[steps.c]
kind = "command"
command = ["sh", "-c", "sleep 0.6"]
depends_on = ["a"]

[steps.d]
kind = "command"
command = ["sh", "-c", "true"]
depends_on = ["b", "c"]

[steps.e]
kind = "command"
command = ["sh", "-c", "sleep 0.2"]
"#
    )
}

async fn run_diamond(max_parallel: usize, b_fails: bool) -> RunRecord {
    let dir = tempfile::tempdir().unwrap();
    let file = ConfigFile::parse(
        "lake.toml",
        dir.path().to_owned(),
        diamond(max_parallel, b_fails),
    )
    .unwrap();
    let pipeline = file.pipeline(None, &lake::kinds()).unwrap();
    let cx = RunContext {
        pipeline: Arc::new(pipeline),
        store: Arc::new(LocalZoneStore::memory()),
        backend: Arc::new(LocalBackend::new()),
        sources: Default::default(),
        sinks: Default::default(),
        catalog: None,
        formats: Default::default(),
    };
    let mut opts = RunOptions::new(NaiveDate::from_ymd_opt(2024, 5, 1).unwrap());
    opts.poll = std::time::Duration::from_millis(10);
    opts.max_poll = std::time::Duration::from_millis(20);
    run(&cx, &opts).await.unwrap()
}

fn step<'a>(r: &'a RunRecord, name: &str) -> &'a StepRecord {
    r.steps.iter().find(|s| s.name == name).unwrap()
}

/// True when the two steps ran at the same time at some point.
fn overlap(a: &StepRecord, b: &StepRecord) -> bool {
    let (sa, ea) = (a.started.unwrap(), a.ended.unwrap());
    let (sb, eb) = (b.started.unwrap(), b.ended.unwrap());
    sa < eb && sb < ea
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_steps_run_at_once_up_to_the_limit() {
    let r = run_diamond(2, false).await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    let (a, b, c, d) = (step(&r, "a"), step(&r, "b"), step(&r, "c"), step(&r, "d"));
    assert!(overlap(b, c), "b and c ran at once: {b:#?} {c:#?}");
    // Dependencies are kept: b and c start after a ends, d after both.
    assert!(b.started >= a.ended && c.started >= a.ended);
    assert!(d.started >= b.ended && d.started >= c.ended);
    // Never more than two at once: at every step's start, at most two are running.
    for s in &r.steps {
        let t = s.started.unwrap();
        let at_once = r
            .steps
            .iter()
            .filter(|o| o.started.unwrap() <= t && t < o.ended.unwrap())
            .count();
        assert!(at_once <= 2, "{at_once} steps ran at once at {t}: {r:#?}");
    }
    // The ledger lists steps in pipeline order.
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c", "d", "e"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_at_a_time_keeps_todays_order() {
    let r = run_diamond(1, false).await;
    assert_eq!(r.status, Status::Succeeded, "{r:#?}");
    for x in &r.steps {
        for y in &r.steps {
            assert!(x.name == y.name || !overlap(x, y), "{x:#?} {y:#?}");
        }
    }
    let mut by_start: Vec<&StepRecord> = r.steps.iter().collect();
    by_start.sort_by_key(|s| s.started);
    let order: Vec<&str> = by_start.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(order, ["a", "b", "c", "d", "e"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_skips_only_its_dependants() {
    let r = run_diamond(2, true).await;
    assert_eq!(r.status, Status::Failed);
    assert_eq!(step(&r, "b").status, Status::Failed);
    assert_eq!(step(&r, "c").status, Status::Succeeded);
    assert_eq!(step(&r, "e").status, Status::Succeeded);
    let d = step(&r, "d");
    assert_eq!(d.status, Status::Skipped);
    assert!(
        d.error.as_deref().unwrap().contains("dependency \"b\""),
        "{d:#?}"
    );
}

/// A failed step's staging folder goes with the run (issue 15 #14: empty
/// `_lake/staging/<run>/<step>/` folders were left on a local root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_leaves_no_staging_folder() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[lake]\nname = \"st\"\n\n[steps.out]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"exit 2\"]\noutput = \"refined/out\"\n";
    let file = ConfigFile::parse("lake.toml", dir.path().to_owned(), toml.into()).unwrap();
    let root = dir.path().join("lake");
    let cx = RunContext {
        pipeline: Arc::new(file.pipeline(None, &lake::kinds()).unwrap()),
        store: Arc::new(LocalZoneStore::filesystem(&root).unwrap()),
        backend: Arc::new(LocalBackend::new()),
        sources: Default::default(),
        sinks: Default::default(),
        catalog: None,
        formats: Default::default(),
    };
    let r = run(
        &cx,
        &RunOptions::new(NaiveDate::from_ymd_opt(2024, 5, 1).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(r.steps[0].status, Status::Failed, "{r:#?}");
    let staging = root.join("_lake/staging").join(&r.run_id);
    assert!(!staging.exists(), "{} is left", staging.display());
    assert!(!root.join("refined/out").exists());
}
