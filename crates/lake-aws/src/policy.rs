//! `lake iam-policy`: the least IAM policy a pipeline needs.

use crate::{AwsSpec, Sse};
use lake_core::config::{Pipeline, Root};
use serde_json::{Value, json};

/// The IAM policy document `pipeline` needs, or `None` when its root is not on S3 (a local
/// lake needs no AWS permission).
///
/// - `s3:ListBucket` on the bucket, limited to the lake's prefix;
/// - `s3:GetObject`, `s3:PutObject`, `s3:DeleteObject` and `s3:AbortMultipartUpload` on the
///   objects under the prefix (zones, manifests, locks, the ledger and staging all live there);
/// - with `sse = "aws:kms"`, `kms:GenerateDataKey` and `kms:Decrypt` on the key;
/// - `secretsmanager:GetSecretValue` and `ssm:GetParameter` on the secrets lake.toml names
///   (and `kms:Decrypt` on `[aws] secrets_kms_key_id`);
/// - the statements of the pipeline's backend
///   ([`BackendConfig::iam_statements`](lake_core::backend::BackendConfig::iam_statements)).
///
/// With a local root the policy holds the backend's and the secrets' statements only, and is
/// `None` when there are none.
pub fn iam_policy(pipeline: &Pipeline) -> Option<Value> {
    let mut backend = pipeline.backend.config().iam_statements(pipeline);
    // The secrets lake.toml names are read wherever the zones are.
    backend.extend(crate::secrets::statements(pipeline));
    let Root::S3 { bucket, prefix } = &pipeline.root else {
        return (!backend.is_empty())
            .then(|| json!({ "Version": "2012-10-17", "Statement": backend }));
    };
    let objects = if prefix.is_empty() {
        format!("arn:aws:s3:::{bucket}/*")
    } else {
        format!("arn:aws:s3:::{bucket}/{prefix}/*")
    };
    let mut list = json!({
        "Sid": "LakeListZones",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": format!("arn:aws:s3:::{bucket}"),
    });
    // Ends with `/`: `lakes/weather` must not also list `lakes/weather-prod`.
    if !prefix.is_empty() {
        list["Condition"] =
            json!({ "StringLike": { "s3:prefix": [format!("{prefix}/"), format!("{prefix}/*")] } });
    }
    let mut statements = vec![
        list,
        json!({
            "Sid": "LakeReadWriteZones",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
            "Resource": objects,
        }),
    ];
    if let Some(Sse::Kms(key)) = &AwsSpec::of(pipeline).sse {
        statements.push(json!({
            "Sid": "LakeEncryptZones",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": key.clone().unwrap_or_else(|| "*".into()),
        }));
    }
    statements.extend(backend);
    // Glue tables point at S3: on a local root [catalog] is off and needs nothing.
    if let Some(c) = &pipeline.catalog {
        statements.extend(c.config.iam_statements(pipeline));
    }
    // Each source and sink kind adds what it calls (none of lake's own kinds calls AWS).
    for s in pipeline.sources.values() {
        statements.extend(s.config.iam_statements(s));
    }
    for s in pipeline.sinks.values() {
        statements.extend(s.config.iam_statements(s));
    }
    Some(json!({ "Version": "2012-10-17", "Statement": statements }))
}

/// The tag keys lake puts on what it creates, and the user's own from the configuration.
fn tag_keys<'a>(user: impl Iterator<Item = &'a String>) -> Vec<String> {
    ["lake:pipeline", "lake:run-id", "lake:root"]
        .into_iter()
        .map(str::to_owned)
        .chain(user.cloned())
        .collect()
}

/// The condition of a call that creates (and tags) a resource: this pipeline's
/// `lake:pipeline` tag in the request, and no tag keys but `keys`.
fn tagged_on_create(pipeline: &Pipeline, keys: Vec<String>) -> Value {
    json!({
        "StringEquals": { "aws:RequestTag/lake:pipeline": pipeline.name },
        "ForAllValues:StringEquals": { "aws:TagKeys": keys },
    })
}

/// With `backend = "emr"`: the EMR calls lake makes. Creating a cluster (RunJobFlow) only with
/// this pipeline's `lake:pipeline` tag and lake's and the configured tag keys in the request;
/// no AddTags (lake tags a cluster only when it creates it, so no cluster of another team can
/// be tagged into this policy's reach); the step and teardown calls only on clusters tagged
/// `lake:pipeline` = this pipeline, or, attached, only on the configured cluster (by id, or
/// by its tag); ListClusters; `iam:PassRole` on the service role and the instance profile's
/// role; read access to a log URI outside the root; and the read-only IAM calls `lake doctor`
/// checks the roles with.
pub(crate) fn emr_statements(
    pipeline: &Pipeline,
    c: &crate::emr::ClusterDef,
    bucket: &str,
    prefix: &str,
) -> Vec<Value> {
    use crate::emr::Attach;
    let mut steps = json!({
        "Sid": "LakeEmrClusterSteps",
        "Effect": "Allow",
        "Action": [
            "elasticmapreduce:AddJobFlowSteps",
            "elasticmapreduce:ListSteps",
            "elasticmapreduce:DescribeCluster",
            "elasticmapreduce:CancelSteps",
            "elasticmapreduce:TerminateJobFlows",
        ],
        "Resource": "arn:aws:elasticmapreduce:*:*:cluster/*",
        "Condition": { "StringEquals": { "elasticmapreduce:ResourceTag/lake:pipeline": pipeline.name } },
    });
    match &c.attach {
        // An attached cluster is not tagged by lake: it is the one configured.
        Some(Attach::Id(id)) => {
            steps["Resource"] = json!(format!("arn:aws:elasticmapreduce:*:*:cluster/{id}"));
            steps
                .as_object_mut()
                .expect("an object")
                .remove("Condition");
        }
        Some(Attach::Tag { key, value }) => {
            steps["Condition"] = json!({ "StringEquals": {
                format!("elasticmapreduce:ResourceTag/{key}"): value
            } });
        }
        None => {}
    }
    let mut out = vec![
        steps,
        json!({
            "Sid": "LakeEmrList",
            "Effect": "Allow",
            "Action": ["elasticmapreduce:ListClusters"],
            "Resource": "*",
        }),
    ];
    if c.attach.is_none() {
        out.push(json!({
            "Sid": "LakeEmrCreate",
            "Effect": "Allow",
            "Action": "elasticmapreduce:RunJobFlow",
            "Resource": "*",
            "Condition": tagged_on_create(pipeline, tag_keys(c.tags.keys())),
        }));
        out.push(json!({
            "Sid": "LakeEmrPassRoles",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": [
                format!("arn:aws:iam::*:role/{}", c.service_role),
                format!("arn:aws:iam::*:role/{}", c.instance_profile),
            ],
            "Condition": { "StringLike": { "iam:PassedToService": ["elasticmapreduce.amazonaws.com", "ec2.amazonaws.com"] } },
        }));
        out.push(json!({
            "Sid": "LakeDoctorRoles",
            "Effect": "Allow",
            "Action": ["iam:GetRole", "iam:GetInstanceProfile"],
            "Resource": [
                format!("arn:aws:iam::*:role/{}", c.service_role),
                format!("arn:aws:iam::*:instance-profile/{}", c.instance_profile),
                "arn:aws:iam::*:role/aws-service-role/elasticmapreduce.amazonaws.com/AWSServiceRoleForEMRCleanup",
            ],
        }));
    }
    out.extend(log_statement(
        c.log_uri.as_deref(),
        bucket,
        prefix,
        "LakeEmrLogs",
    ));
    out
}

/// Read access to a log URI outside the root (lake reads a failed step's logs); under the root
/// it is already covered.
fn log_statement(log: Option<&str>, bucket: &str, prefix: &str, sid: &str) -> Option<Value> {
    let log = log?;
    let under_root = format!(
        "s3://{bucket}/{}",
        if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        }
    );
    if log.starts_with(&under_root) {
        return None;
    }
    let path = log.trim_start_matches("s3://");
    let (log_bucket, _) = path.split_once('/').unwrap_or((path, ""));
    Some(json!({
        "Sid": sid,
        "Effect": "Allow",
        "Action": ["s3:GetObject", "s3:ListBucket"],
        "Resource": [format!("arn:aws:s3:::{log_bucket}"), format!("arn:aws:s3:::{path}*")],
    }))
}

/// With `backend = "emr-serverless"`: CreateApplication, and the TagResource its tags need,
/// only with the pipeline's `lake:pipeline` tag and lake's and the configured tag keys in the
/// request; the application and job run calls only on resources tagged with it (or on the one
/// existing application named); no TagResource besides, so no application of another team
/// can be tagged into reach; ListApplications; `iam:PassRole` on the execution role, to EMR
/// Serverless only; read access to a log URI outside the root; and the read-only IAM call
/// `lake doctor` checks the role with.
pub(crate) fn serverless_statements(
    pipeline: &Pipeline,
    d: &crate::serverless::ServerlessDef,
    bucket: &str,
    prefix: &str,
) -> Vec<Value> {
    let apps = "arn:aws:emr-serverless:*:*:/applications/*";
    let mut run = json!({
        "Sid": "LakeServerlessJobs",
        "Effect": "Allow",
        "Action": [
            "emr-serverless:GetApplication",
            "emr-serverless:StartApplication",
            "emr-serverless:StopApplication",
            "emr-serverless:DeleteApplication",
            "emr-serverless:StartJobRun",
            "emr-serverless:GetJobRun",
            "emr-serverless:CancelJobRun",
        ],
        "Resource": [apps, format!("{apps}/jobruns/*")],
        "Condition": { "StringEquals": { "aws:ResourceTag/lake:pipeline": pipeline.name } },
    });
    if let Some(id) = &d.attach {
        // An existing application is not tagged by lake; the job runs lake starts are.
        run["Sid"] = json!("LakeServerlessJobsOnApplication");
        run["Action"] = json!([
            "emr-serverless:GetApplication",
            "emr-serverless:StartJobRun",
            "emr-serverless:GetJobRun",
            "emr-serverless:CancelJobRun",
        ]);
        run["Resource"] = json!([
            format!("arn:aws:emr-serverless:*:*:/applications/{id}"),
            format!("arn:aws:emr-serverless:*:*:/applications/{id}/jobruns/*"),
        ]);
        run.as_object_mut().expect("an object").remove("Condition");
    }
    let mut out = vec![
        run,
        json!({
            "Sid": "LakeServerlessList",
            "Effect": "Allow",
            "Action": "emr-serverless:ListApplications",
            "Resource": "*",
        }),
    ];
    // Tags go on what lake creates, in the create call itself (tag-on-create needs
    // TagResource): only with this pipeline's tag and known keys. Job runs carry `lake:step`.
    let create_with_tags = tagged_on_create(
        pipeline,
        tag_keys(d.tags.keys().chain(&["lake:step".to_owned()])),
    );
    let (created, runs) = match &d.attach {
        Some(id) => (
            None,
            format!("arn:aws:emr-serverless:*:*:/applications/{id}/jobruns/*"),
        ),
        None => (Some(apps), format!("{apps}/jobruns/*")),
    };
    let mut tag_resources = vec![json!(runs)];
    if let Some(apps) = created {
        tag_resources.push(json!(apps));
        out.push(json!({
            "Sid": "LakeServerlessCreate",
            "Effect": "Allow",
            "Action": "emr-serverless:CreateApplication",
            "Resource": apps,
            "Condition": create_with_tags.clone(),
        }));
    }
    out.push(json!({
        "Sid": "LakeServerlessTagOnCreate",
        "Effect": "Allow",
        "Action": "emr-serverless:TagResource",
        "Resource": tag_resources,
        "Condition": create_with_tags,
    }));
    out.push(json!({
        "Sid": "LakeServerlessPassRole",
        "Effect": "Allow",
        "Action": "iam:PassRole",
        "Resource": d.execution_role,
        "Condition": { "StringLike": { "iam:PassedToService": "emr-serverless.amazonaws.com" } },
    }));
    out.push(json!({
        "Sid": "LakeDoctorRoles",
        "Effect": "Allow",
        "Action": "iam:GetRole",
        "Resource": d.execution_role,
    }));
    out.extend(log_statement(
        d.log_uri.as_deref(),
        bucket,
        prefix,
        "LakeServerlessLogs",
    ));
    out
}

/// With `[catalog]`: the Glue calls that register tables, on the database and its tables; the
/// Athena calls of `lake query --engine athena` on its workgroup, and its result location
/// when that is outside the root.
pub(crate) fn catalog_statements(c: &crate::GlueConfig) -> Vec<Value> {
    let mut out = vec![
        json!({
            "Sid": "LakeGlueTables",
            "Effect": "Allow",
            "Action": crate::glue::GLUE_ACTIONS,
            "Resource": crate::glue::glue_arns("*", "*", &c.database),
        }),
        json!({
            "Sid": "LakeAthenaQueries",
            "Effect": "Allow",
            "Action": [
                "athena:StartQueryExecution",
                "athena:GetQueryExecution",
                "athena:GetQueryResults",
                "athena:StopQueryExecution",
            ],
            "Resource": format!("arn:aws:athena:*:*:workgroup/{}", c.athena_workgroup),
        }),
    ];
    if let Some(output) = &c.athena_output
        && let Some((bucket, prefix)) = output
            .strip_prefix("s3://")
            .map(|r| r.split_once('/').unwrap_or((r, "")))
    {
        let prefix = prefix.trim_end_matches('/');
        out.push(json!({
            "Sid": "LakeAthenaResults",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": if prefix.is_empty() {
                format!("arn:aws:s3:::{bucket}/*")
            } else {
                format!("arn:aws:s3:::{bucket}/{prefix}/*")
            },
        }));
        out.push(json!({
            "Sid": "LakeAthenaResultsBucket",
            "Effect": "Allow",
            "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
            "Resource": format!("arn:aws:s3:::{bucket}"),
        }));
    }
    out
}
