//! `${aws-secretsmanager:NAME}`, `${aws-secretsmanager:NAME#key}` and `${aws-ssm:/path/name}`
//! in lake.toml: read once at the start of a run through the one client factory, checked by
//! `lake doctor`, and allowed by `lake iam-policy` on exactly the secrets named.
//!
//! Values never leave this module but in the map [`read`] returns; errors name the reference
//! and where lake.toml writes it, never a value.

use std::collections::BTreeMap;

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use futures::future::join_all;
use lake_core::config::{Pipeline, Reference, SecretUse};
use lake_core::doctor::Check;
use lake_core::{Error, Result};
use serde_json::{Value, json};

use crate::{Aws, AwsSpec};

/// Every managed reference of `pipeline` read: values by [`Reference::lookup_key`]. The first
/// that cannot be read is the error, naming it and its place in lake.toml. Each secret is
/// asked for once, however many of its keys lake.toml names.
pub async fn read(aws: &Aws, pipeline: &Pipeline) -> Result<BTreeMap<String, String>> {
    let fetched = fetch_all(aws, &pipeline.secrets).await;
    let mut out = BTreeMap::new();
    for (u, value) in pipeline.secrets.iter().zip(fetched) {
        let value = value.map_err(|message| secret_error(pipeline, u, message))?;
        out.insert(u.reference.lookup_key(), value);
    }
    Ok(out)
}

/// `lake doctor`: one check per managed reference, read as a run reads it.
pub async fn checks(aws: &Aws, pipeline: &Pipeline) -> Vec<Check> {
    let fetched = fetch_all(aws, &pipeline.secrets).await;
    pipeline
        .secrets
        .iter()
        .zip(fetched)
        .map(|(u, got)| {
            let name = format!("secret {}", u.reference);
            match got {
                Ok(_) => Check::pass(name, format!("readable ({}, line {})", u.key, u.line)),
                Err(m) => Check::fail(
                    name,
                    format!("{}, line {}: {m}", u.key, u.line),
                    "check the name and region, and attach the statement `lake iam-policy` prints for it",
                ),
            }
        })
        .collect()
}

fn secret_error(pipeline: &Pipeline, u: &SecretUse, message: String) -> Error {
    Error::Secret {
        reference: u.reference.to_string(),
        key: format!("{}:{}: {}", pipeline.file.display(), u.line, u.key),
        message,
    }
}

/// The value of each use, or why it cannot be had; a secret named by several uses is fetched
/// once.
async fn fetch_all(aws: &Aws, uses: &[SecretUse]) -> Vec<std::result::Result<String, String>> {
    let mut secrets: Vec<&str> = uses
        .iter()
        .filter_map(|u| match &u.reference {
            Reference::AwsSecretsmanager { secret, .. } => Some(secret.as_str()),
            _ => None,
        })
        .collect();
    secrets.sort_unstable();
    secrets.dedup();
    let sm = aws.secretsmanager();
    let strings: BTreeMap<&str, std::result::Result<String, String>> = secrets
        .iter()
        .copied()
        .zip(join_all(secrets.iter().map(|s| secret_string(&sm, s))).await)
        .collect();
    let ssm = aws.ssm();
    join_all(uses.iter().map(|u| {
        let ssm = &ssm;
        let strings = &strings;
        async move {
            match &u.reference {
                Reference::AwsSecretsmanager { secret, key } => {
                    let whole = strings[secret.as_str()].clone()?;
                    match key {
                        None => Ok(whole),
                        Some(k) => json_key(&whole, k),
                    }
                }
                Reference::AwsSsm { name } => parameter(ssm, name).await,
                Reference::Env { name } => Err(format!(
                    "is the environment variable {name}, not a secret manager's"
                )),
            }
        }
    }))
    .await
}

async fn secret_string(
    sm: &aws_sdk_secretsmanager::Client,
    id: &str,
) -> std::result::Result<String, String> {
    match sm.get_secret_value().secret_id(id).send().await {
        Ok(out) => out.secret_string.ok_or_else(|| {
            "is a binary secret: lake reads a secret's text (SecretString)".to_owned()
        }),
        Err(e) => Err(cannot_read(
            e.code(),
            e.message(),
            &e,
            "ResourceNotFoundException",
        )),
    }
}

async fn parameter(ssm: &aws_sdk_ssm::Client, name: &str) -> std::result::Result<String, String> {
    match ssm
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
    {
        Ok(out) => out
            .parameter
            .and_then(|p| p.value)
            .ok_or_else(|| "has no value".to_owned()),
        Err(e) => Err(cannot_read(e.code(), e.message(), &e, "ParameterNotFound")),
    }
}

/// Why a read failed, in words: the service's code and message, or the cause of a request
/// that got no answer.
fn cannot_read(
    code: Option<&str>,
    message: Option<&str>,
    e: &(dyn std::error::Error + 'static),
    not_found: &str,
) -> String {
    match code {
        Some(c) if c == not_found => format!(
            "does not exist in this account and region ({c}: {})",
            message.unwrap_or("(no message)")
        ),
        Some(c) => format!(
            "cannot be read ({c}: {}); `lake iam-policy` prints the statement that allows it",
            message.unwrap_or("(no message)")
        ),
        None => format!("cannot be read: {}", lake_core::run::error_chain(e)),
    }
}

/// The value at `key` of a JSON object secret: text as it is, a number or a boolean as written.
fn json_key(whole: &str, key: &str) -> std::result::Result<String, String> {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(whole) else {
        return Err(format!(
            "is not a JSON object, so it has no key {key:?} (write the reference without `#{key}` for the whole secret)"
        ));
    };
    match map.get(key) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(v.to_string()),
        Some(_) => Err(format!(
            "key {key:?} holds an object, an array or null, not a value"
        )),
        None => Err(format!(
            "has no key {key:?}; its keys are {}",
            map.keys()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// `lake iam-policy`'s statements for the pipeline's managed references:
/// `secretsmanager:GetSecretValue` on each secret (by name its ARN ends with the six characters
/// Secrets Manager adds), `ssm:GetParameter` on each parameter, and `kms:Decrypt` on
/// `[aws] secrets_kms_key_id` when it names the key they are encrypted with.
pub(crate) fn statements(pipeline: &Pipeline) -> Vec<Value> {
    let spec = AwsSpec::of(pipeline);
    let region = spec.region.as_deref().unwrap_or("*");
    let mut secrets = Vec::new();
    let mut parameters = Vec::new();
    for u in &pipeline.secrets {
        match &u.reference {
            Reference::AwsSecretsmanager { secret, .. } => {
                let arn = if secret.starts_with("arn:") {
                    secret.clone()
                } else {
                    format!("arn:aws:secretsmanager:{region}:*:secret:{secret}-??????")
                };
                if !secrets.contains(&arn) {
                    secrets.push(arn);
                }
            }
            Reference::AwsSsm { name } => {
                let arn = if name.starts_with("arn:") {
                    name.clone()
                } else {
                    format!(
                        "arn:aws:ssm:{region}:*:parameter/{}",
                        name.trim_start_matches('/')
                    )
                };
                if !parameters.contains(&arn) {
                    parameters.push(arn);
                }
            }
            Reference::Env { .. } => {}
        }
    }
    let mut out = Vec::new();
    if !secrets.is_empty() {
        out.push(json!({
            "Sid": "LakeReadSecrets",
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": secrets,
        }));
    }
    if !parameters.is_empty() {
        out.push(json!({
            "Sid": "LakeReadParameters",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": parameters,
        }));
    }
    if let Some(key) = spec.secrets_kms_key_id.as_ref().filter(|_| !out.is_empty()) {
        out.push(json!({
            "Sid": "LakeDecryptSecrets",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": key,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::json_key;

    #[test]
    fn a_json_key_is_read_and_a_missing_one_names_the_keys_never_the_values() {
        let s = r#"{"user":"ann","password":"hunter2","port":5432}"#;
        assert_eq!(json_key(s, "password").unwrap(), "hunter2");
        assert_eq!(json_key(s, "port").unwrap(), "5432");
        let e = json_key(s, "pass").unwrap_err();
        assert!(e.contains(r#""password""#) && !e.contains("hunter2"), "{e}");
        let e = json_key("hunter2", "password").unwrap_err();
        assert!(
            e.contains("not a JSON object") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
