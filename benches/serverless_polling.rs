//! How many EMR Serverless API calls a run makes while it watches a job, with the backend's
//! poll schedule (2s, doubling to 30s), for jobs of 1 minute to 2 hours. The API is
//! `MockServerlessApi` counting calls; time runs 100 times faster (the schedule, the job
//! lengths and the waits for the application to settle are all divided by 100), so the counts
//! are those of real time give or take one poll.
//!
//! `cargo test --bench serverless_polling --features aws` (a debug build is enough: the counts
//! depend on the schedule, not on the code's speed)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lake::aws::serverless::{
    ApplicationStatus, EmrServerlessConfig, JobRunStatus, MockServerlessApi, ServerlessBackend,
    Timing,
};
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
backend = "emr-serverless"

[serverless]
execution_role = "arn:aws:iam::123456789012:role/lake-jobs"

[steps.a]
kind = "spark"
script = "s3://code/a.py"
"#;

#[derive(Default)]
struct Calls {
    get_job_run: AtomicUsize,
    get_application: AtomicUsize,
    other: AtomicUsize,
    /// 0 created, 1 started, 2 stopped, 3 terminated.
    app: AtomicUsize,
}

/// Real time is divided by this.
const SPEED: u32 = 100;

fn api(calls: &Arc<Calls>, job_secs: u64, start: std::time::Instant) -> MockServerlessApi {
    let mut m = MockServerlessApi::new();
    let c = Arc::clone(calls);
    m.expect_live_applications().returning(move || {
        c.other.fetch_add(1, Ordering::Relaxed);
        Ok(Vec::new())
    });
    let c = Arc::clone(calls);
    m.expect_create_application().returning(move |_| {
        c.other.fetch_add(1, Ordering::Relaxed);
        Ok("00f1".into())
    });
    let c = Arc::clone(calls);
    m.expect_get_application().returning(move |id| {
        c.get_application.fetch_add(1, Ordering::Relaxed);
        let state = ["CREATED", "STARTED", "STOPPED", "TERMINATED"][c.app.load(Ordering::Relaxed)];
        Ok(ApplicationStatus {
            id: id.into(),
            state: state.into(),
            ..ApplicationStatus::default()
        })
    });
    let c = Arc::clone(calls);
    m.expect_start_job_run().returning(move |_| {
        c.other.fetch_add(1, Ordering::Relaxed);
        c.app.store(1, Ordering::Relaxed);
        Ok("j1".into())
    });
    let c = Arc::clone(calls);
    m.expect_get_job_run().returning(move |_, id| {
        c.get_job_run.fetch_add(1, Ordering::Relaxed);
        let done = start.elapsed() >= Duration::from_secs(job_secs) / SPEED;
        Ok(JobRunStatus {
            id: id.into(),
            state: if done { "SUCCESS" } else { "RUNNING" }.into(),
            details: None,
        })
    });
    let c = Arc::clone(calls);
    m.expect_stop_application().returning(move |_| {
        c.other.fetch_add(1, Ordering::Relaxed);
        c.app.store(2, Ordering::Relaxed);
        Ok(())
    });
    let c = Arc::clone(calls);
    m.expect_delete_application().returning(move |_| {
        c.other.fetch_add(1, Ordering::Relaxed);
        c.app.store(3, Ordering::Relaxed);
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
        "job length | polls (GetJobRun) | GetApplication | other calls | calls per step-minute"
    );
    for job_secs in [60u64, 600, 1800, 3600, 7200] {
        let calls = Arc::new(Calls::default());
        rt.block_on(async {
            let file = ConfigFile::parse("lake.toml", "/tmp".into(), PIPELINE.into()).unwrap();
            let pipeline = Arc::new(file.pipeline(None, &lake::kinds()).unwrap());
            let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
            let d = Timing::default();
            let backend = ServerlessBackend::new(
                Arc::new(api(&calls, job_secs, std::time::Instant::now())),
                EmrServerlessConfig::of(&pipeline).unwrap().def.clone(),
                Arc::clone(&store),
                "p",
                None,
            )
            .with_timing(Timing {
                poll: d.poll / SPEED,
                max_poll: d.max_poll / SPEED,
                settle_poll: d.settle_poll / SPEED,
                ..d
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
            // Options that ask for no wait at all: the backend's floor sets the schedule.
            let mut opts = RunOptions::new(NaiveDate::from_ymd_opt(2024, 1, 1).unwrap());
            opts.poll = Duration::ZERO;
            opts.max_poll = Duration::ZERO;
            let r = run(&cx, &opts).await.unwrap();
            assert_eq!(r.status, Status::Succeeded, "{r:#?}");
        });
        let (j, a, o) = (
            calls.get_job_run.load(Ordering::Relaxed),
            calls.get_application.load(Ordering::Relaxed),
            calls.other.load(Ordering::Relaxed),
        );
        println!(
            "{:>7} min | {j:>16} | {a:>14} | {o:>11} | {:.2}",
            job_secs / 60,
            (j + a + o) as f64 / (job_secs as f64 / 60.0)
        );
    }
}
