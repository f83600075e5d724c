//! A pipeline with `backend = "emr"` against moto's server (started by `.ci/run`): what EMR
//! is asked for (release, instance groups, tags, auto-termination, the steps' arguments, the
//! uploaded driver and job) read back with DescribeCluster, ListInstanceGroups and ListSteps.
//! moto never moves a step past RUNNING, so the step's timeout ends the run, and the cluster
//! must be TERMINATED afterwards.
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

/// A request to moto that must succeed: its body.
fn moto(endpoint: &str, method: &str, path: &str) -> String {
    let (status, body) = emulator::request(endpoint, method, path);
    assert_eq!(status, 200, "{method} {path}: {body}");
    body
}

/// The requests moto recorded with this `X-Amz-Target`, their JSON bodies.
fn recorded(recording: &str, target: &str) -> Vec<serde_json::Value> {
    recording
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["headers"]["X-Amz-Target"] == target)
        .map(|e| {
            let body = e["body"].as_str().unwrap_or_default();
            let raw = if e["body_encoded"] == true {
                base64_decode(body)
            } else {
                body.as_bytes().to_vec()
            };
            serde_json::from_slice(&raw).unwrap()
        })
        .collect()
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    bytes
        .chunks(4)
        .flat_map(|c| {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &v)| n | u32::from(v) << (18 - 6 * i));
            let out = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.into_iter().take(c.len() - 1)
        })
        .collect()
}

const TOML: &str = r#"
[lake]
name = "credit-emr"
root = "s3://lake-emr/credit"
backend = "emr"

[sources.credit]
kind = "file"
path = "data/*.csv"

[steps.credit]
kind = "sql"
inputs = [{ path = "raw/credit@date", null_values = ["NA", ""] }]
output = "trusted/credit"
sql = "SELECT CAST(age AS INT) AS age, purpose FROM credit"
expect = ["age > 0"]
timeout = "2s"

[cluster]
release = "emr-7.9.0"
master = { type = "m5.xlarge" }
core = { type = "r5.xlarge", count = 3, market = "SPOT", bid_price = "0.10", ebs = [{ size_gb = 64, type = "gp3" }] }
idle_timeout = "45m"
tags = { team = "data" }
configurations = [{ classification = "spark-defaults", properties = { "spark.sql.shuffle.partitions" = "64" } }]
log_wait = "1s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_on_emr_asks_for_the_cluster_and_steps_and_always_terminates() {
    let Some(endpoint) = emulator::endpoint() else {
        return;
    };
    emulator::reset(&endpoint);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lake.toml"), TOML).unwrap();
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
        .bucket("lake-emr")
        .send()
        .await
        .unwrap();

    let mut opts = RunOptions::new(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap());
    opts.poll = Duration::from_millis(200);
    opts.max_poll = Duration::from_millis(500);
    // moto records what it is asked: RunJobFlow has fields DescribeCluster does not show.
    moto(&endpoint, "POST", "/moto-api/recorder/reset-recording");
    moto(&endpoint, "POST", "/moto-api/recorder/start-recording");
    let r = lake.run(&opts).await.unwrap();
    moto(&endpoint, "POST", "/moto-api/recorder/stop-recording");
    let recording = moto(&endpoint, "GET", "/moto-api/recorder/download-recording");
    assert_eq!(r.status, Status::Failed, "{r:#?}");
    let err = r.steps[0].error.as_deref().unwrap();
    assert!(
        err.contains("timed out after") && err.contains("(timeout = 2s)"),
        "{err}"
    );

    let emr = aws.emr();
    let listed = emr.list_clusters().send().await.unwrap();
    assert_eq!(listed.clusters().len(), 1, "one cluster was created");
    let id = listed.clusters()[0].id().unwrap().to_owned();
    let out = emr.describe_cluster().cluster_id(&id).send().await.unwrap();
    let c = out.cluster().unwrap();
    assert_eq!(
        c.status().unwrap().state().unwrap().as_str(),
        "TERMINATED",
        "the cluster is terminated after the timeout"
    );
    assert_eq!(c.release_label(), Some("emr-7.9.0"));
    assert_eq!(c.name(), Some("lake-credit-emr"));
    assert_eq!(c.log_uri(), Some("s3://lake-emr/credit/_lake/emr-logs/"));
    assert_eq!(c.service_role(), Some("EMR_DefaultRole"));
    let apps: Vec<&str> = c.applications().iter().filter_map(|a| a.name()).collect();
    assert_eq!(apps, ["Spark"]);
    let tags: Vec<(&str, &str)> = c
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert!(tags.contains(&("lake:pipeline", "credit-emr")), "{tags:?}");
    assert!(
        tags.contains(&("lake:run-id", r.run_id.as_str())),
        "{tags:?}"
    );
    assert!(tags.contains(&("team", "data")), "{tags:?}");
    let conf = &c.configurations()[0];
    assert_eq!(conf.classification(), Some("spark-defaults"));
    assert_eq!(
        conf.properties().unwrap()["spark.sql.shuffle.partitions"],
        "64"
    );

    let groups = emr
        .list_instance_groups()
        .cluster_id(&id)
        .send()
        .await
        .unwrap();
    let mut seen: Vec<(String, String, i32, String)> = groups
        .instance_groups()
        .iter()
        .map(|g| {
            (
                g.instance_group_type().unwrap().as_str().to_owned(),
                g.instance_type().unwrap().to_owned(),
                g.requested_instance_count().unwrap(),
                g.market().unwrap().as_str().to_owned(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("CORE".into(), "r5.xlarge".into(), 3, "SPOT".into()),
            ("MASTER".into(), "m5.xlarge".into(), 1, "ON_DEMAND".into()),
        ]
    );
    let core = groups
        .instance_groups()
        .iter()
        .find(|g| g.instance_type() == Some("r5.xlarge"))
        .unwrap();
    assert_eq!(core.bid_price(), Some("0.10"));

    let runs = recorded(&recording, "ElasticMapReduce.RunJobFlow");
    assert_eq!(runs.len(), 1, "one RunJobFlow");
    let req = &runs[0];
    assert_eq!(req["AutoTerminationPolicy"]["IdleTimeout"], 45 * 60);
    assert_eq!(req["StepConcurrencyLevel"], 1);
    assert_eq!(req["Instances"]["KeepJobFlowAliveWhenNoSteps"], true);
    assert_eq!(req["Instances"]["TerminationProtected"], false);
    assert_eq!(
        req["Instances"]["InstanceGroups"][1]["EbsConfiguration"]["EbsBlockDeviceConfigs"][0],
        serde_json::json!({"VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": 64}, "VolumesPerInstance": 1})
    );
    assert_eq!(req["JobFlowRole"], "EMR_EC2_DefaultRole");
    let terminations = recorded(&recording, "ElasticMapReduce.TerminateJobFlows");
    assert_eq!(terminations.len(), 1, "terminated once");
    assert_eq!(terminations[0]["JobFlowIds"], serde_json::json!([id]));

    let steps = emr.list_steps().cluster_id(&id).send().await.unwrap();
    assert_eq!(steps.steps().len(), 1);
    let step = &steps.steps()[0];
    assert_eq!(step.name(), Some("credit"));
    let cfg = step.config().unwrap();
    assert_eq!(cfg.jar(), Some("command-runner.jar"));
    let args = cfg.args();
    assert_eq!(args[..3], ["spark-submit", "--deploy-mode", "cluster"]);
    assert!(
        args[3].starts_with("s3://lake-emr/credit/_lake/code/")
            && args[3].ends_with("/lake_sql.py")
    );
    assert!(args[4].ends_with("/job.json"), "{args:?}");

    // The driver and the job were uploaded where the step reads them.
    let store = lake::aws::S3ZoneStore::new(aws.s3(), "lake-emr", "");
    let read = |url: String| {
        let store = store.clone();
        async move {
            let key = Key::new(url.trim_start_matches("s3://lake-emr/")).unwrap();
            store.get_bytes(&key).await.unwrap()
        }
    };
    let driver = read(args[3].clone()).await;
    assert_eq!(&driver[..], lake::aws::emr::SQL_DRIVER.as_bytes());
    let job = read(args[4].clone()).await;
    let job: serde_json::Value = serde_json::from_slice(&job).unwrap();
    assert_eq!(
        job["sql"],
        "SELECT CAST(age AS INT) AS age, purpose FROM credit"
    );
    assert_eq!(job["expect"], serde_json::json!(["age > 0"]));
    assert_eq!(
        job["inputs"][0]["paths"],
        serde_json::json!(["s3://lake-emr/credit/raw/credit/ingest_date=2024-03-01/credit.csv"])
    );
    assert_eq!(
        job["output"],
        format!("s3://lake-emr/credit/_lake/staging/{}/credit", r.run_id)
    );

    // Nothing of the failed step was published, and the lock is free.
    assert!(
        lake::core::lock::current(&*lake.store, "credit-emr")
            .await
            .unwrap()
            .is_none()
    );
    let trusted = lake.store.list("trusted/").await.unwrap();
    assert!(trusted.is_empty(), "{trusted:?}");

    // `lake clusters --reap`: a cluster tagged with this pipeline, this root and a dead run is
    // terminated; one of another pipeline, and one of the same pipeline name on another root
    // (another bucket or --env), are left alone.
    let root = lake.store.root_url();
    let leftover = |pipeline: &str, run: &str, root: &str| {
        let emr = emr.clone();
        let (pipeline, run, root) = (pipeline.to_owned(), run.to_owned(), root.to_owned());
        async move {
            emr.run_job_flow()
                .name("left")
                .release_label("emr-7.9.0")
                .instances(
                    lake::aws::emr::JobFlowInstancesSdk::builder()
                        .instance_count(1)
                        .master_instance_type("m5.xlarge")
                        .keep_job_flow_alive_when_no_steps(true)
                        .build(),
                )
                .tags(
                    lake::aws::emr::TagSdk::builder()
                        .key("lake:pipeline")
                        .value(pipeline)
                        .build(),
                )
                .tags(
                    lake::aws::emr::TagSdk::builder()
                        .key("lake:run-id")
                        .value(run)
                        .build(),
                )
                .tags(
                    lake::aws::emr::TagSdk::builder()
                        .key("lake:root")
                        .value(root)
                        .build(),
                )
                .service_role("EMR_DefaultRole")
                .job_flow_role("EMR_EC2_DefaultRole")
                .send()
                .await
                .unwrap()
                .job_flow_id()
                .unwrap()
                .to_owned()
        }
    };
    let dead = leftover("credit-emr", "dead-run", &root).await;
    let other = leftover("another", "x", &root).await;
    let elsewhere = leftover("credit-emr", "dead-run", "s3://another-bucket/credit").await;
    let listed: Vec<String> = lake
        .leftovers()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(
        listed.contains(&dead) && listed.contains(&other),
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
        let emr = emr.clone();
        async move {
            emr.describe_cluster()
                .cluster_id(id)
                .send()
                .await
                .unwrap()
                .cluster()
                .unwrap()
                .status()
                .unwrap()
                .state()
                .unwrap()
                .as_str()
                .to_owned()
        }
    };
    assert_eq!(state(dead).await, "TERMINATED");
    assert_eq!(state(other).await, "WAITING");
    assert_eq!(state(elsewhere).await, "WAITING");

    // doctor's EMR checks: the roles are missing, then present.
    let checks = lake.doctor().await;
    let find = |checks: &[lake::core::doctor::Check], name: &str| {
        checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("{name} in {checks:?}"))
            .clone()
    };
    assert_eq!(find(&checks, "EMR reachable").mark(), "✓");
    let role = find(&checks, "EMR service role");
    assert_eq!(role.mark(), "✗", "{role:?}");
    assert!(role.fix().unwrap().contains("aws emr create-default-roles"));
    assert_eq!(find(&checks, "EMR service-linked role").mark(), "✗");
    let iam = aws.iam();
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"elasticmapreduce.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    for name in ["EMR_DefaultRole", "EMR_EC2_DefaultRole"] {
        iam.create_role()
            .role_name(name)
            .assume_role_policy_document(trust)
            .send()
            .await
            .unwrap();
    }
    iam.create_instance_profile()
        .instance_profile_name("EMR_EC2_DefaultRole")
        .send()
        .await
        .unwrap();
    iam.add_role_to_instance_profile()
        .instance_profile_name("EMR_EC2_DefaultRole")
        .role_name("EMR_EC2_DefaultRole")
        .send()
        .await
        .unwrap();
    // What `aws iam create-service-linked-role` makes on AWS (moto names its own differently).
    iam.create_role()
        .role_name("AWSServiceRoleForEMRCleanup")
        .path("/aws-service-role/elasticmapreduce.amazonaws.com/")
        .assume_role_policy_document(trust)
        .send()
        .await
        .unwrap();
    let checks = lake.doctor().await;
    for name in [
        "EMR service role",
        "EMR instance profile",
        "EMR service-linked role",
    ] {
        assert_eq!(find(&checks, name).mark(), "✓", "{:?}", find(&checks, name));
    }
    // moto cannot simulate policies: the PassRole check says it could not tell, without failing.
    let pass = find(&checks, "iam:PassRole");
    assert!(pass.ok(), "{pass:?}");
    assert_eq!(pass.mark(), "?", "{pass:?}");
    assert!(pass.detail.starts_with("could not simulate"), "{pass:?}");
}
