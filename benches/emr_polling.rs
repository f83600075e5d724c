//! How many EMR API calls a run makes while it watches its steps, with the EMR backend's poll
//! schedule (2s, doubling to 30s), for steps of 1 minute to 2 hours. The EMR API is `MockEmrApi`
//! counting calls; time runs 100 times faster (the schedule and the step lengths are both
//! divided by 100), so the bench takes about two minutes and the counts are those of real time
//! give or take one poll.
//!
//! `cargo test --bench emr_polling --features aws` (a debug build is enough: the counts depend
//! on the schedule, not on the code's speed)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lake::aws::emr::{ClusterStatus, EmrBackend, MockEmrApi, StepStatus, Timing};
use lake::core::DynZoneStore;
use lake::core::chrono::NaiveDate;
use lake::core::config::ConfigFile;
use lake::core::ledger::Status;
use lake::core::run::{RunContext, RunOptions, run};
use lake::local::LocalZoneStore;

const PIPELINE: &str = r#"
[lake]
name = "p"
root = "s3://bucket/p"
backend = "emr"

[steps.a]
kind = "command"
command = ["true"]
"#;

#[derive(Default)]
struct Calls {
    list_steps: AtomicUsize,
    describe: AtomicUsize,
    other: AtomicUsize,
    terminated: std::sync::atomic::AtomicBool,
}

/// Real time is divided by this.
const SPEED: u32 = 100;

fn api(calls: &Arc<Calls>, step_secs: u64, start: std::time::Instant) -> MockEmrApi {
    let mut m = MockEmrApi::new();
    let c = Arc::clone(calls);
    m.expect_active_clusters().returning(move || {
        c.other.fetch_add(1, Ordering::Relaxed);
        Ok(Vec::new())
    });
    let c = Arc::clone(calls);
    m.expect_run_job_flow().returning(move |_| {
        c.other.fetch_add(1, Ordering::Relaxed);
        Ok("j-1".into())
    });
    let c = Arc::clone(calls);
    m.expect_add_steps().returning(move |_, _| {
        c.other.fetch_add(1, Ordering::Relaxed);
        Ok(vec!["s-1".into()])
    });
    let c = Arc::clone(calls);
    m.expect_list_steps().returning(move |_, ids| {
        c.list_steps.fetch_add(1, Ordering::Relaxed);
        let done = start.elapsed() >= Duration::from_secs(step_secs) / SPEED;
        Ok(ids
            .iter()
            .map(|id| StepStatus {
                id: id.clone(),
                state: if done { "COMPLETED" } else { "RUNNING" }.into(),
                failure: None,
            })
            .collect())
    });
    let c = Arc::clone(calls);
    m.expect_describe_cluster().returning(move |_| {
        c.describe.fetch_add(1, Ordering::Relaxed);
        Ok(ClusterStatus {
            id: "j-1".into(),
            state: if c.terminated.load(Ordering::Relaxed) {
                "TERMINATING"
            } else {
                "RUNNING"
            }
            .into(),
            ..ClusterStatus::default()
        })
    });
    let c = Arc::clone(calls);
    m.expect_terminate().returning(move |_| {
        c.other.fetch_add(1, Ordering::Relaxed);
        c.terminated.store(true, Ordering::Relaxed);
        Ok(())
    });
    m
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "step length | polls (ListSteps) | DescribeCluster | other calls | calls per step-minute"
    );
    for step_secs in [60u64, 600, 1800, 3600, 7200] {
        let calls = Arc::new(Calls::default());
        rt.block_on(async {
            let file = ConfigFile::parse("lake.toml", "/tmp".into(), PIPELINE.into()).unwrap();
            let pipeline = Arc::new(file.pipeline(None, &lake::kinds()).unwrap());
            let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
            let backend = EmrBackend::new(
                Arc::new(api(&calls, step_secs, std::time::Instant::now())),
                lake::aws::emr::EmrConfig::of(&pipeline)
                    .unwrap()
                    .def
                    .clone(),
                Arc::clone(&store),
                "p",
            )
            .with_timing(Timing {
                poll_reuse: Timing::default().poll_reuse / SPEED,
                poll: Timing::default().poll / SPEED,
                max_poll: Timing::default().max_poll / SPEED,
                ..Timing::default()
            });
            let cx = RunContext {
                pipeline,
                store,
                backend: Arc::new(backend),
                sources: Default::default(),
                sinks: Default::default(),
                catalog: None,
                formats: Default::default(),
            };
            // Options that ask for no wait at all: the backend's floor (2s doubling to 30s)
            // sets the schedule.
            let mut opts = RunOptions::new(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap());
            opts.poll = Duration::ZERO;
            opts.max_poll = Duration::ZERO;
            let r = run(&cx, &opts).await.unwrap();
            assert_eq!(r.status, Status::Succeeded);
        });
        let (l, d, o) = (
            calls.list_steps.load(Ordering::Relaxed),
            calls.describe.load(Ordering::Relaxed),
            calls.other.load(Ordering::Relaxed),
        );
        println!(
            "{:>8} min | {l:>17} | {d:>15} | {o:>11} | {:.2}",
            step_secs / 60,
            (l + d + o) as f64 / (step_secs as f64 / 60.0)
        );
    }
}
