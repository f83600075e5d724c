//! The backends' own lake.toml tables, checked through the registry the facade builds:
//! `[cluster]` (emr) and `[spark]` (spark), each problem with its line and key.

use lake::aws::emr::EmrConfig;
use lake::core::Error;
use lake::core::config::{Diagnostic, Pipeline};
use lake::spark::SparkConfig;

use lake_testing::config::expect_each;

fn pipeline(text: &str, env: Option<&str>) -> Result<Pipeline, Error> {
    lake_testing::config::pipeline(text, env, &lake::kinds())
}

fn diagnostics(text: &str) -> Vec<Diagnostic> {
    lake_testing::config::diagnostics(text, &lake::kinds())
}

fn cluster(p: &Pipeline) -> &lake::aws::emr::ClusterDef {
    &EmrConfig::of(p).expect("emr").def
}

#[test]
fn emr_needs_an_s3_root() {
    let d = diagnostics(
        "[lake]\nname = \"x\"\nbackend = \"emr\"\n[steps.a]\nkind=\"command\"\ncommand=[\"true\"]\n",
    );
    assert_eq!((d[0].key.as_str(), d[0].line), ("lake.backend", 3));
    assert!(
        d[0].message.contains("needs zones in S3"),
        "{}",
        d[0].message
    );
}

const CLUSTER: &str = r#"[lake]
name = "c"
root = "s3://b/c"
backend = "emr"

[steps.a]
kind = "command"
command = ["true"]
timeout = "1h"

[cluster]
release = "emr-7.9.0"
master = { type = "m5.xlarge" }
core = { type = "r5.xlarge", count = 4, market = "SPOT", bid_price = "0.2", ebs = [{ size_gb = 100 }] }
idle_timeout = "20m"
step_concurrency = 2
tags = { team = "data" }
price_per_hour = { "m5.xlarge" = 0.25, "r5.xlarge" = 0.5 }
max_cost = 10.0
"#;

#[test]
fn cluster_defaults_and_estimate() {
    use lake::aws::emr::{Instances, NodeRole};
    let p = pipeline(CLUSTER, None).unwrap();
    let c = cluster(&p);
    assert_eq!(c.name, "lake-c");
    assert_eq!(c.applications, ["Spark"]);
    assert_eq!(c.log_uri.as_deref(), Some("s3://b/c/_lake/emr-logs/"));
    assert_eq!(c.service_role, "EMR_DefaultRole");
    assert_eq!(c.instance_profile, "EMR_EC2_DefaultRole");
    assert_eq!(c.idle_timeout, Some(std::time::Duration::from_secs(1200)));
    assert_eq!(c.step_concurrency, 2);
    let Instances::Groups(g) = &c.instances else {
        panic!("groups")
    };
    assert_eq!(g.len(), 2, "no task group without a count");
    assert_eq!(
        (g[0].role, g[0].count, g[0].spot.clone()),
        (NodeRole::Master, 1, None)
    );
    assert_eq!(
        (g[1].role, g[1].count, g[1].spot.clone()),
        (NodeRole::Core, 4, Some(Some("0.2".into())))
    );
    // 10m start-up + the step's 1h timeout, on 1 + 4 instances.
    let e = c.estimate(p.steps.values());
    assert!((e.hours - 70.0 / 60.0).abs() < 1e-9, "{e:?}");
    assert!((e.instance_hours - 5.0 * 70.0 / 60.0).abs() < 1e-9);
    let cost = (0.25 + 4.0 * 0.5) * 70.0 / 60.0;
    assert!((e.cost.unwrap() - cost).abs() < 1e-9, "{e:?}");
    // No [cluster] at all: a working default.
    let p = pipeline(
        "[lake]\nname = \"x\"\nroot = \"s3://b\"\nbackend = \"emr\"\n",
        None,
    )
    .unwrap();
    assert_eq!(cluster(&p).release, lake::aws::emr::DEFAULT_RELEASE);
    assert_eq!(
        cluster(&p).log_uri.as_deref(),
        Some("s3://b/_lake/emr-logs/")
    );
    assert_eq!(
        cluster(&p).idle_timeout,
        Some(std::time::Duration::from_secs(3600))
    );
}

#[test]
fn cluster_keys_are_checked_with_their_lines() {
    let text = r#"[lake]
name = "c"
root = "s3://b/c"
backend = "emr"

[cluster]
release = "7.9"
master = { count = 2 }
core = { market = "CHEAP" }
task = { bid_price = "0.1", count = 1 }
idle_timeout = "10s"
step_concurrency = 0
attach = "cluster-1"
log_uri = "/var/log"
tags = { "lake:run-id" = "x" }
max_cost = 3.0
bootstrap = [{ name = "b", path = "http://x/b.sh" }]
"#;
    let d = diagnostics(text);
    expect_each(
        &d,
        &[
            ("cluster.release", 7, "not an EMR release label"),
            ("cluster.master.count", 8, "1 primary node"),
            ("cluster.core.market", 9, "unknown market"),
            ("cluster.task.bid_price", 10, "goes with market = \"SPOT\""),
            ("cluster.idle_timeout", 11, "1m to 7d"),
            ("cluster.step_concurrency", 12, "1 to 256"),
            ("cluster.attach", 13, "not a cluster id"),
            ("cluster.log_uri", 14, "logs go to S3"),
            ("cluster.tags.lake:run-id", 15, "set by lake"),
            ("cluster.bootstrap[0].path", 17, "a script in S3"),
        ],
    );
    // max_cost without prices for the types used.
    let text =
        "[lake]\nname = \"c\"\nroot = \"s3://b\"\nbackend = \"emr\"\n[cluster]\nmax_cost = 3.0\n";
    let d = diagnostics(text);
    expect_each(
        &d,
        &[("cluster.max_cost", 6, "\"m5.xlarge\" = <USD per hour>")],
    );
    // Groups and fleets are exclusive; the master fleet has one node.
    let text = "[lake]\nname = \"c\"\nroot = \"s3://b\"\n[cluster]\ncore = { count = 2 }\n[cluster.fleets.master]\ntypes = [\"m5.xlarge\"]\non_demand = 2\n";
    let d = diagnostics(text);
    expect_each(
        &d,
        &[
            ("cluster.fleets", 6, "not both"),
            ("cluster.fleets.master", 6, "one node"),
        ],
    );
}

#[test]
fn unknown_backends_and_tables_are_named_with_their_lines() {
    let d = diagnostics(
        "[lake]\nname = \"x\"\nbackend = \"flink\"\n\n[clustr]\nrelease = \"emr-7.9.0\"\n",
    );
    expect_each(
        &d,
        &[
            ("lake.backend", 3, "unknown backend \"flink\""),
            ("clustr", 5, "[cluster] (emr)"),
        ],
    );
    assert!(
        d.iter()
            .any(|d| d.key == "lake.backend" && d.message.contains("local, spark, emr")),
        "{d:#?}"
    );
}

#[test]
fn a_backend_table_is_checked_when_another_backend_runs() {
    // [cluster] is checked on a local run too, so `--env aws` finds no surprise.
    let d = diagnostics("[lake]\nname = \"x\"\n\n[cluster]\nrelease = \"7.9\"\nbogus = 1\n");
    assert!(
        d.iter().any(|d| d.line == 6 && d.message.contains("bogus")),
        "{d:#?}"
    );
}

#[test]
fn spark_table_defaults_and_problems() {
    let p = pipeline(
        "[lake]\nname = \"x\"\nbackend = \"spark\"\n[spark]\nmaster = \"local[2]\"\nconf = { \"spark.ui.enabled\" = \"false\" }\n",
        None,
    )
    .unwrap();
    let s = p.backend.downcast::<SparkConfig>().expect("spark");
    assert_eq!(s.master, "local[2]");
    assert_eq!(s.deploy_mode, "client");
    assert_eq!(s.python, "python3");
    assert_eq!(p.max_parallel_steps, 2);
    let d = diagnostics(
        "[lake]\nname = \"x\"\nbackend = \"spark\"\nmax_parallel_steps = 0\n[spark]\nmaster = \"local[2]\"\ndeploy_mode = \"cluster\"\nconf = { \"executor.memory\" = \"2g\", \"spark.x\" = \"${env:T}\" }\n",
    );
    expect_each(
        &d,
        &[
            ("lake.max_parallel_steps", 4, "at least 1"),
            ("spark.deploy_mode", 7, "client mode only"),
            ("spark.conf.executor.memory", 8, "not a Spark setting"),
            ("spark.conf.spark.x", 8, "secret"),
        ],
    );
    let d = diagnostics("[lake]\nname = \"x\"\n[spark]\nsparks = 1\n");
    expect_each(&d, &[("spark.sparks", 4, "unknown field `sparks`")]);
    let d = diagnostics("[lake]\nname = \"x\"\nbackend = \"spark\"\n[spark]\nmaster = \"mesa\"\n");
    expect_each(&d, &[("spark.master", 5, "not a Spark master")]);
}

fn serverless(p: &Pipeline) -> &lake::aws::serverless::ServerlessDef {
    &lake::aws::serverless::EmrServerlessConfig::of(p)
        .expect("emr-serverless")
        .def
}

const SERVERLESS: &str = r#"[lake]
name = "s"
root = "s3://b/s"
backend = "emr-serverless"

[steps.a]
kind = "command"
command = ["true"]
timeout = "1h"

[steps.b]
kind = "command"
command = ["true"]

[serverless]
execution_role = "arn:aws:iam::123456789012:role/lake-jobs"
"#;

#[tokio::test]
async fn serverless_defaults_estimate_and_max_cost() {
    let p = pipeline(SERVERLESS, None).unwrap();
    let d = serverless(&p);
    assert_eq!(d.attach, None);
    assert_eq!(d.name, "lake-s");
    assert_eq!(d.release, lake::aws::emr::DEFAULT_RELEASE);
    assert_eq!(
        (d.max_cpu.as_str(), d.max_memory.as_str()),
        ("16 vCPU", "64 GB")
    );
    assert_eq!(
        d.idle_timeout,
        Some(std::time::Duration::from_secs(15 * 60))
    );
    assert_eq!(
        d.log_uri.as_deref(),
        Some("s3://b/s/_lake/serverless-logs/")
    );
    assert_eq!(d.price, lake::aws::serverless::DEFAULT_PRICE);
    // 1h for a, 30m for b without a timeout: 1.5 h at 16 vCPU and 64 GB.
    let steps: Vec<_> = p.steps.values().collect();
    let e = d.estimate(steps.iter().copied());
    assert!((e.hours - 1.5).abs() < 1e-9, "{e:?}");
    assert!((e.vcpu_hours - 24.0).abs() < 1e-9, "{e:?}");
    assert!((e.gb_hours - 96.0).abs() < 1e-9, "{e:?}");
    let cost = 24.0 * 0.052624 + 96.0 * 0.0057785;
    assert!((e.cost - cost).abs() < 1e-9, "{e:?}");

    // max_cost refuses a run estimated above it before anything starts.
    let text = SERVERLESS.replace(
        "[serverless]\n",
        "[serverless]\nmax_cost = 1.0\nprice = { vcpu_hour = 0.05, gb_hour = 0.005 }\n",
    );
    let p = pipeline(&text, None).unwrap();
    let steps: Vec<_> = p.steps.values().collect();
    let err = p
        .backend
        .config()
        .preflight(&p, &steps)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("[serverless] max_cost"), "{err}");
    let text = text.replace("max_cost = 1.0", "max_cost = 5.0");
    let p = pipeline(&text, None).unwrap();
    let steps: Vec<_> = p.steps.values().collect();
    assert!(p.backend.config().preflight(&p, &steps).await.is_ok());
}

#[test]
fn serverless_keys_are_checked_with_their_lines() {
    let text = r#"[lake]
name = "s"
root = "s3://b/s"
backend = "emr-serverless"

[serverless]
application = "app-1"
release = "7.9"
execution_role = "lake-jobs"
max_capacity = { cpu = "many", memory = "64 GB" }
idle_timeout = "30s"
log_uri = "/var/log"
spark_conf = { "executor.memory" = "4g" }
tags = { "lake:pipeline" = "x" }
max_cost = -1.0
"#;
    expect_each(
        &diagnostics(text),
        &[
            ("serverless.application", 7, "an existing application's id"),
            ("serverless.release", 8, "not an EMR release label"),
            ("serverless.execution_role", 9, "not an IAM role ARN"),
            ("serverless.max_capacity.cpu", 10, "a number of vCPUs"),
            ("serverless.idle_timeout", 11, "whole minutes, 1m to 7d"),
            ("serverless.log_uri", 12, "logs go to S3"),
            (
                "serverless.spark_conf.executor.memory",
                13,
                "starts with `spark.`",
            ),
            ("serverless.tags.lake:pipeline", 14, "set by lake"),
            ("serverless.max_cost", 15, "above 0"),
        ],
    );
    // The execution role is required when the backend runs; a local root cannot be used.
    let d = diagnostics(
        "[lake]\nname = \"s\"\nroot = \"s3://b\"\nbackend = \"emr-serverless\"\n[serverless]\nrelease = \"emr-7.9.0\"\n",
    );
    expect_each(
        &d,
        &[("serverless", 5, "needs [serverless] execution_role")],
    );
    let d = diagnostics(
        "[lake]\nname = \"s\"\nbackend = \"emr-serverless\"\n[serverless]\nexecution_role = \"arn:aws:iam::1:role/r\"\n",
    );
    expect_each(&d, &[("lake.backend", 3, "needs zones in S3")]);
    // Another backend runs: the table is still checked, the role is not required.
    let d = diagnostics("[lake]\nname = \"s\"\n[serverless]\nidle_timeout = \"90s\"\n");
    expect_each(&d, &[("serverless.idle_timeout", 4, "whole minutes")]);
}

/// `[catalog] kind = "glue"`: its keys are the kind's, each problem at its line; `tables` is
/// every catalog's, checked by core.
#[test]
fn the_glue_catalogs_keys_are_checked_at_their_lines() {
    let text = "[lake]\nname = \"x\"\n\n[catalog]\nkind = \"glue\"\ndatabase = \"Bad-Name\"\nathena_output = \"/tmp/out\"\ntables = [\"raw/*\"]\n";
    let d = diagnostics(text);
    let expect = [
        ("catalog.database", 6, "not a Glue database name"),
        ("catalog.athena_output", 7, "not an s3:// URL"),
        ("catalog.tables", 8, "<zone>/<glob>"),
    ];
    expect_each(&d, &expect);
    assert_eq!(d.len(), expect.len(), "{d:#?}");
    let d = diagnostics(&text.replace("database = \"Bad-Name\"", "databse = \"x\""));
    expect_each(&d, &[("catalog.databse", 6, "unknown field `databse`")]);
    let d = diagnostics("[lake]\nname = \"x\"\n[catalog]\nkind = \"unity\"\n");
    expect_each(&d, &[("catalog.kind", 4, "unknown catalog kind \"unity\"")]);
    // The defaults: the pipeline's name as the database, Athena's primary workgroup.
    let p = pipeline(
        "[lake]\nname = \"my-lake\"\n[catalog]\nkind = \"glue\"\n",
        None,
    )
    .unwrap();
    let c = p.catalog.as_ref().unwrap();
    let glue = c.config.downcast::<lake::aws::GlueConfig>().unwrap();
    assert_eq!(glue.database, "my_lake");
    assert_eq!(glue.athena_workgroup, "primary");
    assert_eq!(c.tables, ["trusted/*", "refined/*"]);
}

/// `[aws]` is lake-aws's settings table: read with its defaults and units, each bad key at
/// its line, and Spark's s3a view reads the same checked keys.
#[test]
fn the_aws_table_is_checked_with_its_lines_and_read_back() {
    use lake::aws::{AwsSpec, Sse};
    let p = pipeline(
        "[lake]\nname = \"x\"\n[aws]\nregion = \"eu-west-1\"\nendpoint_url = \"http://127.0.0.1:9000\"\nmax_attempts = 5\noperation_timeout = \"2m\"\nsse = \"aws:kms\"\nkms_key_id = \"alias/lake\"\n",
        None,
    )
    .unwrap();
    let aws = AwsSpec::of(&p);
    assert_eq!(aws.region.as_deref(), Some("eu-west-1"));
    assert_eq!(aws.max_attempts, 5);
    assert_eq!(aws.operation_timeout, std::time::Duration::from_secs(120));
    assert_eq!(aws.connect_timeout, std::time::Duration::from_secs(5));
    assert_eq!(aws.sse, Some(Sse::Kms(Some("alias/lake".into()))));
    let none = pipeline("[lake]\nname = \"x\"\n", None).unwrap();
    assert_eq!(AwsSpec::of(&none), AwsSpec::default());
    assert_eq!(AwsSpec::default().max_attempts, 3);

    let d = diagnostics(
        "[lake]\nname = \"x\"\n[aws]\nendpoint_url = \"localhost:9000\"\nmax_attempts = 0\nconnect_timeout = \"soon\"\nsse = \"AES512\"\n",
    );
    expect_each(
        &d,
        &[
            ("aws.endpoint_url", 4, "not an http:// or https:// URL"),
            ("aws.max_attempts", 5, "at least 1"),
            ("aws.connect_timeout", 6, "soon"),
            ("aws.sse", 7, "unknown sse"),
        ],
    );
    let d = diagnostics("[lake]\nname = \"x\"\n[aws]\nkms_key_id = \"k\"\n");
    expect_each(&d, &[("aws.kms_key_id", 4, "goes with sse")]);
    let d = diagnostics("[lake]\nname = \"x\"\n[aws]\nregoin = \"eu-west-1\"\n");
    expect_each(&d, &[("aws.regoin", 4, "unknown field")]);
}
