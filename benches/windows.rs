//! The cost of a run as windows pile up: a daily source with 1,000 complete windows and a `sql`
//! step reading `raw/<source>` (every window), on a local root and on S3.
//!
//! ```sh
//! cargo bench --bench windows --features aws             # local root only
//! AWS_ENDPOINT_URL=http://127.0.0.1:5123 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
//!   AWS_REGION=us-east-1 cargo bench --bench windows --features aws   # and S3 (moto)
//! ```
//!
//! For each root it lands `LAKE_BENCH_WINDOWS` (default 1,000) windows in one run, then runs the
//! pipeline for the next day (one new window, then the step over every window) and reports the
//! time from the run's start to the step's start and the store requests the run made, by kind.
//! The same run again with the window index deleted (a lake landed before lake kept one) gives
//! the cost of reading every window's manifest, as runs did before the index. The step's
//! output (the row count of every window) is checked before anything is reported.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use lake::Lake;
use lake::core::chrono::{Days, NaiveDate};
use lake::core::ledger::{RunRecord, Status};
use lake::core::run::{Event, RunObserver, RunOptions, run};
use lake::core::source::{SourceObject, Window};
use lake::core::zone::{ByteStream, Key};
use lake::core::{Result, Source, ZoneStore};
use lake_testing::counting::{CountingStore, Counts};

/// One small CSV per daily window.
#[derive(Debug)]
struct Daily;

#[async_trait]
impl Source for Daily {
    fn name(&self) -> &str {
        "s"
    }
    async fn objects(&self, window: &Window) -> Result<Vec<SourceObject>> {
        Ok(vec![SourceObject {
            name: format!("{}.csv", window.start),
            size: Some(64),
            content_type: None,
            origin: "gen://daily".into(),
        }])
    }
    async fn open(&self, window: &Window, _object: &SourceObject) -> Result<ByteStream> {
        let text = format!("day,value\n{},1\n{},2\n", window.start, window.start);
        Ok(Box::pin(futures::stream::once(async move {
            Ok(Bytes::from(text))
        })))
    }
}

fn lake_toml(root: &str) -> String {
    format!(
        r#"[lake]
name = "windows"
root = "{root}"

[sources.s]
kind = "program"
window = "1d"
start = "2020-01-01"

[steps.total]
kind = "sql"
inputs = ["raw/s"]
output = "refined/total"
sql = "SELECT count(*) AS n FROM s"
"#
    )
}

fn day(n: u64) -> NaiveDate {
    NaiveDate::from_ymd_opt(2020, 1, 1).unwrap() + Days::new(n)
}

/// When the first step started.
struct FirstStep {
    start: Instant,
    at: Mutex<Option<Duration>>,
}

impl RunObserver for FirstStep {
    fn event(&self, event: &Event) {
        if let Event::StepStarted { .. } = event {
            self.at.lock().unwrap().get_or_insert(self.start.elapsed());
        }
    }
}

struct Measured {
    to_step: Duration,
    wall: Duration,
    counts: Counts,
    record: RunRecord,
}

async fn measured_run(lake: &Lake, date: NaiveDate) -> Measured {
    let mut ctx = lake.context().await.unwrap();
    let counting = CountingStore::new(Arc::clone(&ctx.store));
    ctx.store = Arc::new(counting.clone());
    let observer = Arc::new(FirstStep {
        start: Instant::now(),
        at: Mutex::new(None),
    });
    let mut opts = RunOptions::new(date);
    opts.observer = Some(observer.clone());
    let record = run(&ctx, &opts).await.unwrap();
    let wall = observer.start.elapsed();
    assert_eq!(record.status, Status::Succeeded, "{record:#?}");
    Measured {
        to_step: observer.at.lock().unwrap().expect("the step started"),
        wall,
        counts: counting.counts(),
        record,
    }
}

async fn check_total(lake: &Lake, windows: u64) {
    let session = lake.query_session().await.unwrap();
    let batches = session
        .sql("SELECT n FROM refined.total")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text =
        lake::local::engine::datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
    assert!(
        text.contains(&format!("| {} ", windows * 2)),
        "the step did not read every window: {text}"
    );
}

fn report(label: &str, m: &Measured) {
    let ops: Vec<String> = m
        .counts
        .ops
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "  {label:<34} to first step {:>7.3} s  run {:>7.3} s  requests {:>5} ({})  manifests read {}",
        m.to_step.as_secs_f64(),
        m.wall.as_secs_f64(),
        m.counts.total(),
        ops.join(", "),
        m.counts.reads_of(lake::core::publish::MANIFEST)
    );
}

async fn bench(root_label: &str, root: &str, windows: u64, dir: &std::path::Path) {
    std::fs::write(dir.join("lake.toml"), lake_toml(root)).unwrap();
    let lake = Lake::open(dir.join("lake.toml"), None)
        .await
        .unwrap()
        .with_source(Arc::new(Daily))
        .unwrap();
    #[cfg(feature = "aws")]
    if let (Some(aws), Some(bucket)) = (&lake.aws, root.strip_prefix("s3://")) {
        let bucket = bucket.split('/').next().unwrap();
        let _ = aws.s3().create_bucket().bucket(bucket).send().await;
    }
    println!("{root_label}: {windows} daily windows, a step reading raw/s (every window)");
    let clock = Instant::now();
    let landed = measured_run(&lake, day(windows - 1)).await;
    assert_eq!(landed.record.ingest.len() as u64, windows);
    println!(
        "  landing {windows} windows in one run: {:.1} s",
        clock.elapsed().as_secs_f64()
    );

    let next = measured_run(&lake, day(windows)).await;
    check_total(&lake, windows + 1).await;
    report("next day (index)", &next);

    // A lake landed before the index: the run reads every window's manifest once (and
    // writes the index for the next runs).
    lake.store
        .delete(&Key::new("raw/s/_windows.json").unwrap())
        .await
        .unwrap();
    let before = measured_run(&lake, day(windows + 1)).await;
    check_total(&lake, windows + 2).await;
    report("next day (no index, as before)", &before);
}

fn main() {
    let windows: u64 = std::env::var("LAKE_BENCH_WINDOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        bench("local root", "lake", windows, dir.path()).await;
        if std::env::var_os("AWS_ENDPOINT_URL").is_some() {
            let dir = tempfile::tempdir().unwrap();
            let prefix = format!(
                "s3://lake-bench-windows/run-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
            );
            bench("S3 root (AWS_ENDPOINT_URL)", &prefix, windows, dir.path()).await;
        } else {
            println!("S3 root: skipped (set AWS_ENDPOINT_URL to an S3 emulator)");
        }
    });
}
