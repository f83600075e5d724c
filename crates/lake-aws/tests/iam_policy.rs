//! `lake iam-policy` read as IAM reads it: a small evaluator of the statements lake writes
//! (Allow, action and resource wildcards, the condition operators lake uses) answers a table of
//! requests a pipeline makes and requests it must not be able to make.

use std::collections::BTreeMap;

use lake::core::config::ConfigFile;
use serde_json::Value;

fn policy(toml: &str) -> Value {
    let file = ConfigFile::parse("lake.toml", "/tmp".into(), toml.to_owned()).unwrap();
    let pipeline = file.pipeline(None, &lake::kinds()).unwrap();
    lake::aws::iam_policy(&pipeline).expect("an S3 root needs a policy")
}

/// IAM's `*` and `?` in a string.
fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && go(p, &s[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), s.as_bytes())
}

fn strings(v: &Value) -> Vec<&str> {
    match v {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A request: its action, resource and condition keys (each with its values).
struct Request<'a> {
    action: &'a str,
    resource: &'a str,
    context: BTreeMap<&'a str, Vec<&'a str>>,
}

fn request<'a>(
    action: &'a str,
    resource: &'a str,
    context: &[(&'a str, &[&'a str])],
) -> Request<'a> {
    Request {
        action,
        resource,
        context: context.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
    }
}

fn conditions_hold(conditions: &Value, r: &Request<'_>) -> bool {
    let Some(ops) = conditions.as_object() else {
        return true;
    };
    ops.iter().all(|(op, keys)| {
        keys.as_object().unwrap().iter().all(|(key, allowed)| {
            let allowed = strings(allowed);
            let given = r.context.get(key.as_str());
            match op.as_str() {
                "StringEquals" => given.is_some_and(|g| g.iter().any(|v| allowed.contains(v))),
                "StringLike" => {
                    given.is_some_and(|g| g.iter().any(|v| allowed.iter().any(|a| glob(a, v))))
                }
                "ForAllValues:StringEquals" => {
                    given.is_none_or(|g| g.iter().all(|v| allowed.contains(v)))
                }
                other => panic!("the evaluator does not know {other}: teach it"),
            }
        })
    })
}

fn allows(policy: &Value, r: &Request<'_>) -> bool {
    policy["Statement"].as_array().unwrap().iter().any(|st| {
        assert_eq!(st["Effect"], "Allow", "lake writes Allow statements only");
        strings(&st["Action"])
            .iter()
            .any(|a| glob(&a.to_ascii_lowercase(), &r.action.to_ascii_lowercase()))
            && strings(&st["Resource"]).iter().any(|p| glob(p, r.resource))
            && conditions_hold(&st["Condition"], r)
    })
}

fn check(policy: &Value, table: &[(bool, Request<'_>)]) {
    for (want, r) in table {
        assert_eq!(
            allows(policy, r),
            *want,
            "{} on {} with {:?}\n{policy:#}",
            r.action,
            r.resource,
            r.context
        );
    }
}

const EMR: &str = r#"
[lake]
name = "weather"
root = "s3://bucket/lakes/weather"
backend = "emr"

[cluster]
tags = { team = "data" }
"#;

const LAKE_TAGS: &[&str] = &["lake:pipeline", "lake:run-id", "lake:root", "team"];

#[test]
fn the_s3_statements_stop_at_the_prefix() {
    let p = policy(EMR);
    let list = |prefix: &'static str| {
        request(
            "s3:ListBucket",
            "arn:aws:s3:::bucket",
            &[("s3:prefix", &[prefix][..])],
        )
    };
    check(
        &p,
        &[
            (true, list("lakes/weather/")),
            (true, list("lakes/weather/raw/credit/")),
            (false, list("lakes/weather-prod/")),
            (false, list("lakes/weather")),
            (false, list("lakes/")),
            (
                true,
                request(
                    "s3:GetObject",
                    "arn:aws:s3:::bucket/lakes/weather/raw/a.csv",
                    &[],
                ),
            ),
            (
                true,
                request(
                    "s3:PutObject",
                    "arn:aws:s3:::bucket/lakes/weather/_lake/runs/r.json",
                    &[],
                ),
            ),
            (
                false,
                request(
                    "s3:GetObject",
                    "arn:aws:s3:::bucket/lakes/weather-prod/raw/a.csv",
                    &[],
                ),
            ),
            (
                false,
                request(
                    "s3:GetObject",
                    "arn:aws:s3:::other/lakes/weather/a.csv",
                    &[],
                ),
            ),
        ],
    );
}

#[test]
fn emr_rights_reach_only_this_pipelines_clusters() {
    let p = policy(EMR);
    let cluster = "arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/j-1";
    let ours = [(
        "elasticmapreduce:ResourceTag/lake:pipeline",
        &["weather"][..],
    )];
    let theirs = [(
        "elasticmapreduce:ResourceTag/lake:pipeline",
        &["billing"][..],
    )];
    let create = |pipeline: &'static [&'static str], keys: &'static [&'static str]| {
        request(
            "elasticmapreduce:RunJobFlow",
            "*",
            &[
                ("aws:RequestTag/lake:pipeline", pipeline),
                ("aws:TagKeys", keys),
            ],
        )
    };
    check(
        &p,
        &[
            (true, create(&["weather"], LAKE_TAGS)),
            (false, create(&["billing"], LAKE_TAGS)),
            (false, create(&["weather"], &["lake:pipeline", "owner"])),
            (false, request("elasticmapreduce:RunJobFlow", "*", &[])),
            (
                true,
                request("elasticmapreduce:TerminateJobFlows", cluster, &ours),
            ),
            (
                true,
                request("elasticmapreduce:AddJobFlowSteps", cluster, &ours),
            ),
            (
                false,
                request("elasticmapreduce:TerminateJobFlows", cluster, &theirs),
            ),
            (
                false,
                request("elasticmapreduce:TerminateJobFlows", cluster, &[]),
            ),
            // No tagging of a cluster after it is created: another team's cannot be pulled in.
            (
                false,
                request(
                    "elasticmapreduce:AddTags",
                    cluster,
                    &[
                        ("aws:RequestTag/lake:pipeline", &["weather"]),
                        ("aws:TagKeys", &["lake:pipeline"]),
                    ],
                ),
            ),
            (
                false,
                request(
                    "iam:SimulatePrincipalPolicy",
                    "arn:aws:iam::123456789012:role/admin",
                    &[],
                ),
            ),
            (
                true,
                request(
                    "iam:PassRole",
                    "arn:aws:iam::123456789012:role/EMR_DefaultRole",
                    &[("iam:PassedToService", &["elasticmapreduce.amazonaws.com"])],
                ),
            ),
            (
                false,
                request(
                    "iam:PassRole",
                    "arn:aws:iam::123456789012:role/admin",
                    &[("iam:PassedToService", &["elasticmapreduce.amazonaws.com"])],
                ),
            ),
        ],
    );
}

#[test]
fn an_attached_cluster_is_the_only_one_reached() {
    let by_id = policy(&EMR.replace("[cluster]", "[cluster]\nattach = \"j-ATTACHED\""));
    let at = |id: &str| format!("arn:aws:elasticmapreduce:us-east-1:123456789012:cluster/{id}");
    let ours = [(
        "elasticmapreduce:ResourceTag/lake:pipeline",
        &["weather"][..],
    )];
    let (attached, other) = (at("j-ATTACHED"), at("j-OTHER"));
    check(
        &by_id,
        &[
            (
                true,
                request("elasticmapreduce:AddJobFlowSteps", &attached, &[]),
            ),
            (
                false,
                request("elasticmapreduce:AddJobFlowSteps", &other, &ours),
            ),
            (
                false,
                request("elasticmapreduce:TerminateJobFlows", &other, &[]),
            ),
            (
                false,
                request(
                    "elasticmapreduce:RunJobFlow",
                    "*",
                    &[("aws:RequestTag/lake:pipeline", &["weather"])],
                ),
            ),
        ],
    );
    let by_tag = policy(&EMR.replace("[cluster]", "[cluster]\nattach = { tag = \"role=etl\" }"));
    check(
        &by_tag,
        &[
            (
                true,
                request(
                    "elasticmapreduce:AddJobFlowSteps",
                    &other,
                    &[("elasticmapreduce:ResourceTag/role", &["etl"])],
                ),
            ),
            (
                false,
                request(
                    "elasticmapreduce:AddJobFlowSteps",
                    &other,
                    &[("elasticmapreduce:ResourceTag/role", &["web"])],
                ),
            ),
            (
                false,
                request("elasticmapreduce:AddJobFlowSteps", &other, &[]),
            ),
        ],
    );
}

const SERVERLESS: &str = r#"
[lake]
name = "weather"
root = "s3://bucket/lakes/weather"
backend = "emr-serverless"

[serverless]
execution_role = "arn:aws:iam::123456789012:role/lake-jobs"
tags = { team = "data" }
"#;

#[test]
fn serverless_rights_reach_only_this_pipelines_applications() {
    let p = policy(SERVERLESS);
    let app = "arn:aws:emr-serverless:us-east-1:123456789012:/applications/00abc";
    let ours = [("aws:ResourceTag/lake:pipeline", &["weather"][..])];
    let tags_on_create = |pipeline: &'static [&'static str]| {
        vec![
            ("aws:RequestTag/lake:pipeline", pipeline),
            (
                "aws:TagKeys",
                &["lake:pipeline", "lake:run-id", "lake:root", "team"][..],
            ),
        ]
    };
    check(
        &p,
        &[
            (
                true,
                request(
                    "emr-serverless:CreateApplication",
                    app,
                    &tags_on_create(&["weather"]),
                ),
            ),
            (
                false,
                request(
                    "emr-serverless:CreateApplication",
                    app,
                    &tags_on_create(&["billing"]),
                ),
            ),
            (false, request("emr-serverless:CreateApplication", app, &[])),
            (
                true,
                request("emr-serverless:DeleteApplication", app, &ours),
            ),
            (
                false,
                request(
                    "emr-serverless:DeleteApplication",
                    app,
                    &[("aws:ResourceTag/lake:pipeline", &["billing"])],
                ),
            ),
            (false, request("emr-serverless:DeleteApplication", app, &[])),
            (
                false,
                request(
                    "emr-serverless:TagResource",
                    app,
                    &tags_on_create(&["billing"]),
                ),
            ),
            (
                false,
                request(
                    "emr-serverless:TagResource",
                    app,
                    &[("aws:TagKeys", &["owner"])],
                ),
            ),
            (false, request("emr-serverless:UntagResource", app, &ours)),
            (
                false,
                request(
                    "iam:SimulatePrincipalPolicy",
                    "arn:aws:iam::123456789012:user/x",
                    &[],
                ),
            ),
        ],
    );
}

/// A source kind of a program's own that reads a bucket: what it declares it calls is in the
/// policy, beside the zones'.
#[test]
fn a_registered_source_kinds_statements_are_in_the_policy() {
    #[derive(Debug)]
    struct Inbox;
    #[derive(Debug)]
    struct InboxConfig;
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Keys {
        bucket: String,
    }
    impl lake::core::source::SourceKind for Inbox {
        fn name(&self) -> &'static str {
            "inbox"
        }
        fn configure(
            &self,
            cx: &mut lake::core::config::ConfigCx<'_, '_>,
        ) -> Option<std::sync::Arc<dyn lake::core::source::SourceConfig>> {
            let keys: Keys = cx.own()?;
            assert_eq!(keys.bucket, "their-bucket");
            Some(std::sync::Arc::new(InboxConfig))
        }
    }
    #[lake::core::async_trait]
    impl lake::core::source::SourceConfig for InboxConfig {
        fn describe(&self, spec: &lake::core::config::SourceSpec) -> String {
            format!("(inbox, line {})", spec.line)
        }
        async fn open(
            &self,
            _spec: &lake::core::config::SourceSpec,
            _env: &lake::core::backend::BackendEnv,
        ) -> lake::core::Result<std::sync::Arc<dyn lake::core::Source>> {
            unreachable!("not run here")
        }
        fn iam_statements(&self, spec: &lake::core::config::SourceSpec) -> Vec<Value> {
            vec![serde_json::json!({
                "Sid": format!("LakeSource{}", spec.name),
                "Effect": "Allow",
                "Action": ["s3:GetObject"],
                "Resource": "arn:aws:s3:::their-bucket/*",
            })]
        }
    }
    let toml = "[lake]\nname = \"x\"\nroot = \"s3://b/lake\"\n[sources.mail]\nkind = \"inbox\"\nbucket = \"their-bucket\"\n";
    let file = ConfigFile::parse("lake.toml", "/tmp".into(), toml.to_owned()).unwrap();
    let pipeline = file.pipeline(None, &lake::kinds().source(Inbox)).unwrap();
    let policy = lake::aws::iam_policy(&pipeline).unwrap();
    let statements = policy["Statement"].as_array().unwrap();
    let mine = statements
        .iter()
        .find(|s| s["Sid"] == "LakeSourcemail")
        .expect("the source's statement");
    assert_eq!(mine["Resource"], "arn:aws:s3:::their-bucket/*");
    assert!(statements.iter().any(|s| s["Sid"] == "LakeReadWriteZones"));
}
