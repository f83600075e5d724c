//! The PySpark driver of `sql` steps on EMR (`lake_sql.py`), run with a local PySpark on the
//! credit and weather examples: the same rows as the embedded engine, the same counts of
//! rejected rows.
//!
//! Needs `LAKE_PYSPARK_PYTHON`: a Python with pyspark (and Java 17). `.ci/run` sets it to its
//! venv; without it the test says so and skips, unless `LAKE_REQUIRE_PYSPARK=1`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use lake::Lake;
use lake::core::chrono::NaiveDate;
use lake::core::cluster::{
    ClusterBackend, ClusterHandle, ClusterSpec, StepHandle, StepLogs, StepRequest, StepState,
    StepWork,
};
use lake::core::ledger::{RunRecord, Status};
use lake::core::run::{RunOptions, run};
use lake::core::{DynZoneStore, Result};

fn python() -> Option<PathBuf> {
    match std::env::var_os("LAKE_PYSPARK_PYTHON") {
        Some(p) => Some(p.into()),
        None if std::env::var_os("LAKE_REQUIRE_PYSPARK").is_some() => {
            panic!("LAKE_REQUIRE_PYSPARK is set but LAKE_PYSPARK_PYTHON is not")
        }
        None => {
            eprintln!("skipped: set LAKE_PYSPARK_PYTHON to a Python with pyspark to run this test");
            None
        }
    }
}

/// Runs `sql` steps with the EMR driver on a local Spark, one process per step.
#[derive(Debug)]
struct LocalSpark {
    python: PathBuf,
    driver: PathBuf,
    dir: PathBuf,
    store: Arc<DynZoneStore>,
    done: Mutex<HashMap<String, (StepState, String)>>,
}

#[async_trait]
impl ClusterBackend for LocalSpark {
    fn name(&self) -> &str {
        "spark-local"
    }

    async fn start(&self, _spec: &ClusterSpec) -> Result<ClusterHandle> {
        Ok(ClusterHandle {
            id: "local".into(),
            attached: false,
            notes: Vec::new(),
        })
    }

    async fn submit(&self, _c: &ClusterHandle, step: &StepRequest) -> Result<StepHandle> {
        let StepWork::Sql(work) = &step.work else {
            panic!("only sql steps here")
        };
        let store = Arc::clone(&self.store);
        let json = lake::aws::emr::sql_job(work, &|key| {
            store
                .local_path(key)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .unwrap();
        let job = self.dir.join(format!("{}.json", step.name));
        std::fs::write(&job, json).unwrap();
        let out = tokio::process::Command::new(&self.python)
            .arg(&self.driver)
            .arg(&job)
            .env("PYSPARK_PYTHON", &self.python)
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            .env(
                "PYSPARK_SUBMIT_ARGS",
                "--master local[2] --conf spark.ui.enabled=false --conf spark.sql.shuffle.partitions=2 pyspark-shell",
            )
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let state = if out.status.success() {
            StepState::Completed
        } else {
            StepState::Failed {
                reason: format!("driver exited with {}", out.status),
            }
        };
        self.done
            .lock()
            .unwrap()
            .insert(step.name.clone(), (state, stderr));
        Ok(StepHandle {
            id: step.name.clone(),
            name: step.name.clone(),
        })
    }

    async fn poll(&self, _c: &ClusterHandle, step: &StepHandle) -> Result<StepState> {
        Ok(self.done.lock().unwrap()[&step.id].0.clone())
    }

    async fn logs(&self, _c: &ClusterHandle, step: &StepHandle) -> Result<StepLogs> {
        Ok(StepLogs {
            stdout_tail: String::new(),
            stderr_tail: self.done.lock().unwrap()[&step.id].1.clone(),
        })
    }

    async fn cancel(&self, _c: &ClusterHandle, _s: &StepHandle) -> Result<()> {
        Ok(())
    }

    async fn terminate(&self, _c: &ClusterHandle) -> Result<()> {
        Ok(())
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            if e.file_name() != "lake" {
                copy_dir(&e.path(), &target);
            }
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Every row of `sql` as text, in order.
async fn rows(lake: &Lake, sql: &str) -> Vec<String> {
    use lake::local::engine::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let batches = lake
        .query_session()
        .await
        .unwrap()
        .sql(sql)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let fmts: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                fmts.iter()
                    .map(|f| f.value(r).to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            );
        }
    }
    out
}

async fn run_example(name: &str, spark: Option<&Path>) -> (Lake, RunRecord, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name),
        dir.path(),
    );
    let lake = Lake::open(dir.path().join("lake.toml"), None)
        .await
        .unwrap();
    let mut cx = lake.context().unwrap();
    if let Some(python) = spark {
        let driver = dir.path().join("lake_sql.py");
        std::fs::write(&driver, lake::aws::emr::SQL_DRIVER).unwrap();
        cx.backend = Arc::new(LocalSpark {
            python: python.to_owned(),
            driver,
            dir: dir.path().to_owned(),
            store: Arc::clone(&lake.store),
            done: Mutex::default(),
        });
    }
    let opts = RunOptions::new(NaiveDate::from_ymd_opt(2024, 5, 1).unwrap());
    let r = run(&cx, &opts).await.unwrap();
    assert_eq!(
        r.status,
        Status::Succeeded,
        "{name} on {}: {r:#?}",
        cx.backend.name()
    );
    (lake, r, dir)
}

async fn same_rows(example: &str, queries: &[&str]) {
    let Some(python) = python() else { return };
    let (embedded, re, _d1) = run_example(example, None).await;
    let (spark, rs, _d2) = run_example(example, Some(&python)).await;
    for (a, b) in re.steps.iter().zip(&rs.steps) {
        assert_eq!(a.name, b.name);
        assert_eq!(
            (a.rows, a.rejected),
            (b.rows, b.rejected),
            "step {}: rows and rejected rows",
            a.name
        );
    }
    for q in queries {
        let want = rows(&embedded, q).await;
        assert!(!want.is_empty(), "{q} gives rows");
        assert_eq!(rows(&spark, q).await, want, "{q}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_on_spark_gives_the_embedded_engines_rows() {
    same_rows(
        "credit",
        &[
            "SELECT * FROM trusted.credit ORDER BY id",
            "SELECT * FROM refined.credit_by_purpose ORDER BY purpose",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weather_on_spark_gives_the_embedded_engines_rows() {
    same_rows(
        "weather",
        &[
            "SELECT time, date, temperature_2m, relative_humidity_2m, wind_speed_10m, latitude, longitude FROM trusted.weather_hourly ORDER BY time",
            "SELECT * FROM refined.weather_daily ORDER BY date",
        ],
    )
    .await;
}
