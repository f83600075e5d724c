//! `lake iam-policy`: the least IAM policy a pipeline needs.

use lake_core::config::{Pipeline, Root, Sse};
use serde_json::{Value, json};

/// The IAM policy document `pipeline` needs, or `None` when its root is not on S3 (a local
/// lake needs no AWS permission).
///
/// - `s3:ListBucket` on the bucket, limited to the lake's prefix;
/// - `s3:GetObject`, `s3:PutObject`, `s3:DeleteObject` and `s3:AbortMultipartUpload` on the
///   objects under the prefix (zones, manifests, locks, the ledger and staging all live there);
/// - with `sse = "aws:kms"`, `kms:GenerateDataKey` and `kms:Decrypt` on the key.
pub fn iam_policy(pipeline: &Pipeline) -> Option<Value> {
    let Root::S3 { bucket, prefix } = &pipeline.root else {
        return None;
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
    if !prefix.is_empty() {
        list["Condition"] =
            json!({ "StringLike": { "s3:prefix": [prefix, format!("{prefix}/*")] } });
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
    if let Some(Sse::Kms(key)) = &pipeline.aws.sse {
        statements.push(json!({
            "Sid": "LakeEncryptZones",
            "Effect": "Allow",
            "Action": ["kms:GenerateDataKey", "kms:Decrypt"],
            "Resource": key.clone().unwrap_or_else(|| "*".into()),
        }));
    }
    Some(json!({ "Version": "2012-10-17", "Statement": statements }))
}
