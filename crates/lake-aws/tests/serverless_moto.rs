//! A pipeline with `backend = "emr-serverless"` against moto's server (started by `.ci/run`):
//! what EMR Serverless is asked for (the application's release, capacity, auto-stop and tags;
//! each job's driver, arguments, configuration overrides, role and tags; the uploaded driver
//! and job file) read back through the API, and the application stopped and deleted after the
//! run. moto runs no Spark: its job runs succeed at once without writing anything, so the step
//! fails when lake finds no output to publish, and the teardown must happen all the same.
//!
//! Without `AWS_ENDPOINT_URL` the test says so and skips (fails with `LAKE_REQUIRE_S3`).

use std::path::Path;
use std::time::Duration;

use lake::Lake;
use lake::core::chrono::NaiveDate;
use lake::core::ledger::Status;
use lake::core::run::RunOptions;
use lake::core::zone::{Key, ZoneStoreExt};
use lake_testing::emulator;

/// moto's account: an execution role must be in it.
const ROLE: &str = "arn:aws:iam::123456789012:role/lake-jobs";

fn toml() -> String {
    format!(
        r#"
[lake]
name = "credit-sls"
root = "s3://lake-sls/credit"
backend = "emr-serverless"

[sources.credit]
kind = "file"
path = "data/*.csv"

[steps.credit]
kind = "sql"
inputs = [{{ path = "raw/credit@date", null_values = ["NA", ""] }}]
output = "trusted/credit"
sql = "SELECT CAST(age AS INT) AS age, purpose FROM credit"
expect = ["age > 0"]
timeout = "20m"

[serverless]
release = "emr-7.9.0"
execution_role = "{ROLE}"
max_capacity = {{ cpu = "8 vCPU", memory = "32 GB" }}
idle_timeout = "20m"
spark_conf = {{ "spark.executor.memory" = "4g" }}
tags = {{ team = "data" }}
log_wait = "1s"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_emr_serverless_asks_for_the_application_and_jobs_and_always_deletes_it() {
    let Some(endpoint) = emulator::endpoint() else {
        return;
    };
    emulator::reset(&endpoint);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lake.toml"), toml()).unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/credit/data/german_credit_data.csv"),
        dir.path().join("data/credit.csv"),
    )
    .unwrap();
    let lake = Lake::open(dir.path().join("lake.toml"), None)
        .await
        .unwrap();
    let aws = lake.aws.clone().unwrap();
    aws.s3()
        .create_bucket()
        .bucket("lake-sls")
        .send()
        .await
        .unwrap();

    let mut opts = RunOptions::new(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap());
    opts.poll = Duration::from_millis(200);
    opts.max_poll = Duration::from_millis(500);
    let r = lake.run(&opts).await.unwrap();
    assert_eq!(r.status, Status::Failed, "{r:#?}");
    assert!(r.error.is_none(), "the teardown succeeded: {r:#?}");
    let err = r.steps[0].error.as_deref().unwrap();
    assert!(
        err.contains("the step wrote nothing to its output folder"),
        "{err}"
    );

    let sls = aws.emr_serverless();
    let apps = sls.list_applications().send().await.unwrap();
    assert_eq!(apps.applications().len(), 1, "one application was created");
    let id = apps.applications()[0].id().to_owned();
    let app = sls
        .get_application()
        .application_id(&id)
        .send()
        .await
        .unwrap();
    let app = app.application().unwrap();
    assert_eq!(
        app.state().as_str(),
        "TERMINATED",
        "stopped and deleted after the run"
    );
    assert_eq!(app.name(), Some("lake-credit-sls"));
    assert_eq!(app.release_label(), "emr-7.9.0");
    assert_eq!(app.r#type(), "Spark");
    let cap = app.maximum_capacity().unwrap();
    assert_eq!((cap.cpu(), cap.memory()), ("8 vCPU", "32 GB"));
    let stop = app.auto_stop_configuration().unwrap();
    assert_eq!(
        (stop.enabled(), stop.idle_timeout_minutes()),
        (Some(true), Some(20))
    );
    assert_eq!(
        app.auto_start_configuration().unwrap().enabled(),
        Some(true)
    );
    let tags = app.tags().unwrap();
    assert_eq!(tags["lake:pipeline"], "credit-sls");
    assert_eq!(tags["lake:run-id"], r.run_id);
    assert_eq!(tags["lake:root"], "s3://lake-sls/credit");
    assert_eq!(tags["team"], "data");

    let runs = sls
        .list_job_runs()
        .application_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(runs.job_runs().len(), 1, "one job run for the one sql step");
    let job_id = runs.job_runs()[0].id().to_owned();
    let job = sls
        .get_job_run()
        .application_id(&id)
        .job_run_id(&job_id)
        .send()
        .await
        .unwrap();
    let job = job.job_run().unwrap();
    assert_eq!(job.name(), Some("credit"));
    assert_eq!(job.execution_role(), ROLE);
    assert_eq!(job.execution_timeout_minutes(), Some(25), "20m + 5");
    let Some(driver) = job.job_driver() else {
        panic!("no job driver: {job:?}");
    };
    let submit = driver.as_spark_submit().unwrap();
    let driver_url = submit.entry_point().to_owned();
    assert!(
        driver_url.starts_with("s3://lake-sls/credit/_lake/code/")
            && driver_url.ends_with("/lake_sql.py"),
        "{driver_url}"
    );
    let job_url = submit.entry_point_arguments()[0].clone();
    assert!(job_url.ends_with("/job.json"), "{job_url}");
    let overrides = job.configuration_overrides().unwrap();
    let conf = &overrides.application_configuration()[0];
    assert_eq!(conf.classification(), "spark-defaults");
    assert_eq!(conf.properties().unwrap()["spark.executor.memory"], "4g");
    assert_eq!(
        overrides
            .monitoring_configuration()
            .unwrap()
            .s3_monitoring_configuration()
            .unwrap()
            .log_uri(),
        Some("s3://lake-sls/credit/_lake/serverless-logs/")
    );
    let tags = job.tags().unwrap();
    assert_eq!(tags["lake:step"], "credit");
    assert_eq!(tags["lake:run-id"], r.run_id);

    // The driver and the job were uploaded where the job reads them.
    let store = lake::aws::S3ZoneStore::new(aws.s3(), "lake-sls", "");
    let read = |url: String| {
        let store = store.clone();
        async move {
            let key = Key::new(url.trim_start_matches("s3://lake-sls/")).unwrap();
            store.get_bytes(&key).await.unwrap()
        }
    };
    assert_eq!(
        &read(driver_url).await[..],
        lake::aws::emr::SQL_DRIVER.as_bytes()
    );
    let job: serde_json::Value = serde_json::from_slice(&read(job_url).await).unwrap();
    assert_eq!(
        job["sql"],
        "SELECT CAST(age AS INT) AS age, purpose FROM credit"
    );
    assert_eq!(
        job["inputs"][0]["paths"],
        serde_json::json!(["s3://lake-sls/credit/raw/credit/ingest_date=2024-03-01/credit.csv"])
    );
    assert_eq!(
        job["output"],
        format!("s3://lake-sls/credit/_lake/staging/{}/credit", r.run_id)
    );

    // Nothing was published, and the lock is free.
    assert!(
        lake::core::lock::current(&*lake.store, "credit-sls")
            .await
            .unwrap()
            .is_none()
    );
    assert!(lake.store.list("trusted/").await.unwrap().is_empty());

    // `lake clusters --reap`: an application tagged with this pipeline, this root and a dead
    // run is stopped and deleted; one of another pipeline is left alone.
    let root = lake.store.root_url();
    let leftover = |pipeline: &str, run: &str| {
        let sls = sls.clone();
        let (pipeline, run, root) = (pipeline.to_owned(), run.to_owned(), root.clone());
        async move {
            sls.create_application()
                .name("left")
                .release_label("emr-7.9.0")
                .r#type("SPARK")
                .tags("lake:pipeline", pipeline)
                .tags("lake:run-id", run)
                .tags("lake:root", root)
                .send()
                .await
                .unwrap()
                .application_id()
                .to_owned()
        }
    };
    let dead = leftover("credit-sls", "dead-run").await;
    let other = leftover("another", "x").await;
    let listed: Vec<String> = lake
        .leftovers()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(
        listed.contains(&dead) && listed.contains(&other) && !listed.contains(&id),
        "{listed:?}"
    );
    let reaped: Vec<String> = lake
        .reap()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(reaped, std::slice::from_ref(&dead));
    let state = |id: String| {
        let sls = sls.clone();
        async move {
            sls.get_application()
                .application_id(id)
                .send()
                .await
                .unwrap()
                .application()
                .unwrap()
                .state()
                .as_str()
                .to_owned()
        }
    };
    assert_eq!(state(dead).await, "TERMINATED");
    assert_eq!(state(other).await, "STARTED");

    // doctor: the execution role is missing, then present but trusting another service, then
    // trusting EMR Serverless.
    let find = |checks: &[lake::core::doctor::Check], name: &str| {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} in {checks:?}"))
            .clone()
    };
    let checks = lake.doctor().await;
    assert_eq!(find(&checks, "EMR Serverless reachable").mark(), "✓");
    assert_eq!(find(&checks, "execution role").mark(), "✗");
    let iam = aws.iam();
    let trust = |service: &str| {
        format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"Service":"{service}"}},"Action":"sts:AssumeRole"}}]}}"#
        )
    };
    iam.create_role()
        .role_name("lake-jobs")
        .assume_role_policy_document(trust("ec2.amazonaws.com"))
        .send()
        .await
        .unwrap();
    let role = find(&lake.doctor().await, "execution role");
    assert_eq!(role.mark(), "✗", "{role:?}");
    assert!(
        role.detail.contains("does not trust emr-serverless"),
        "{role:?}"
    );
    iam.update_assume_role_policy()
        .role_name("lake-jobs")
        .policy_document(trust("emr-serverless.amazonaws.com"))
        .send()
        .await
        .unwrap();
    let role = find(&lake.doctor().await, "execution role");
    assert_eq!(role.mark(), "✓", "{role:?}");
}
