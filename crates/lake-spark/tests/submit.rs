//! spark-submit's arguments from `[spark]`: master, deploy mode, `--conf`s, and for zones in S3
//! the s3a settings from `[aws]` (which `conf` may override).

use lake_core::config::Pipeline;
use lake_core::kinds::Kinds;
use lake_spark::{SparkConfig, SparkKind};

fn pipeline(text: &str) -> Pipeline {
    lake_testing::config::pipeline(
        text,
        None,
        &Kinds::new()
            .backend(SparkKind)
            .settings(lake_aws::AwsSettings),
    )
    .unwrap()
}

#[test]
fn zones_in_s3_are_read_as_s3a_with_the_aws_settings() {
    let p = pipeline(
        "[lake]\nname = \"x\"\nroot = \"s3://bucket/lake\"\nbackend = \"spark\"\n\n[aws]\nendpoint_url = \"http://127.0.0.1:9000\"\nregion = \"eu-west-1\"\n\n[spark]\nmaster = \"spark://m:7077\"\nconf = { \"spark.hadoop.fs.s3a.path.style.access\" = \"false\" }\n",
    );
    let s: &SparkConfig = p.backend.downcast().unwrap();
    let argv = s
        .submit("/opt/spark/bin/spark-submit".as_ref(), &p)
        .sql("d.py", "j.json");
    assert_eq!(
        argv,
        [
            "/opt/spark/bin/spark-submit",
            "--master",
            "spark://m:7077",
            "--deploy-mode",
            "client",
            "--conf",
            "spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:9000",
            "--conf",
            "spark.hadoop.fs.s3a.endpoint.region=eu-west-1",
            // The user's conf wins over the default (path style with an endpoint).
            "--conf",
            "spark.hadoop.fs.s3a.path.style.access=false",
            "d.py",
            "j.json",
        ]
    );
}

#[test]
fn a_local_root_gets_no_s3a_settings_and_submit_is_resolved_against_lake_toml() {
    let p = pipeline(
        "[lake]\nname = \"x\"\nbackend = \"spark\"\n[spark]\nsubmit = \"tools/spark-submit\"\npython = \"/usr/bin/python3.11\"\n",
    );
    let s: &SparkConfig = p.backend.downcast().unwrap();
    assert_eq!(s.submit.as_deref(), Some("/project/tools/spark-submit"));
    assert_eq!(s.master, "local[*]");
    let argv = s.submit("spark-submit".as_ref(), &p).sql("d", "j");
    assert!(!argv.iter().any(|a| a.contains("s3a")), "{argv:?}");
    // The configured program is not there: the error says what was tried.
    let e = s.program().unwrap_err().to_string();
    assert!(
        e.contains("tried [spark] submit = \"/project/tools/spark-submit\""),
        "{e}"
    );
}
