//! `lake doctor` on AWS: who am I, the region, and for EMR the service, the roles and
//! iam:PassRole.

use aws_sdk_iam::error::ProvideErrorMetadata;
use lake_core::config::Pipeline;
use lake_core::doctor::Check;

use crate::Aws;

/// The region, the credentials and who lake is on AWS (STS GetCallerIdentity), in that order:
/// a check that cannot run because an earlier one failed is skipped, saying what it needs.
pub async fn aws_checks(aws: &Aws, _pipeline: &Pipeline) -> Vec<Check> {
    aws_identity(aws).await.0
}

/// The region, credentials and identity checks, and the caller's ARN when STS answered.
pub(crate) async fn aws_identity(aws: &Aws) -> (Vec<Check>, Option<String>) {
    use aws_sdk_s3::config::ProvideCredentials;
    let mut out = Vec::new();
    let region = match aws.region() {
        Some(r) => {
            out.push(Check::pass("region", r.to_owned()));
            true
        }
        None => {
            out.push(Check::fail(
                "region",
                "no region: [aws] region, AWS_REGION and the profile name none",
                "set [aws] region in lake.toml, AWS_REGION, or `region` in the profile",
            ));
            false
        }
    };
    let profile = aws
        .spec()
        .profile
        .clone()
        .or_else(|| std::env::var("AWS_PROFILE").ok())
        .unwrap_or_else(|| "default".into());
    let credentials = match aws.sdk().credentials_provider() {
        None => false,
        Some(p) => match p.provide_credentials().await {
            Ok(c) => {
                out.push(Check::pass(
                    "credentials",
                    format!(
                        "access key {}…",
                        &c.access_key_id()[..c.access_key_id().len().min(4)]
                    ),
                ));
                true
            }
            Err(e) => {
                out.push(Check::fail(
                    "credentials",
                    format!(
                        "no AWS credentials: tried the environment (AWS_ACCESS_KEY_ID), profile `{profile}` in ~/.aws (SSO included), web identity, and the container and instance roles ({})",
                        lake_core::run::error_chain(&e).lines().next().unwrap_or_default()
                    ),
                    "set AWS_PROFILE to a profile with credentials (run `aws sso login` for an SSO profile), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                ));
                false
            }
        },
    };
    let mut caller = None;
    match (region, credentials) {
        (true, true) => match aws.sts().get_caller_identity().send().await {
            Ok(me) => out.push({
                caller = me.arn().map(str::to_owned);
                Check::pass(
                    "identity",
                    format!(
                        "account {}, {}",
                        me.account().unwrap_or("?"),
                        me.arn().unwrap_or("?")
                    ),
                )
            }),
            Err(e) => out.push(Check::fail(
                "identity",
                format!(
                    "STS GetCallerIdentity failed: {}",
                    crate::client::describe(&e)
                ),
                "check that the credentials are current (an SSO session expires: `aws sso login`) and that STS is reachable",
            )),
        },
        (r, c) => out.push(Check::skipped("identity", needs(r, c))),
    }
    (out, caller)
}

/// What a skipped check needs, from which of the region and credentials checks failed.
pub fn needs(region: bool, credentials: bool) -> &'static str {
    match (region, credentials) {
        (false, false) => "a region and credentials",
        (false, true) => "a region",
        _ => "credentials",
    }
}

/// The IAM role an identity ARN acts as: a role's own ARN for an assumed-role session.
fn principal_arn(caller: &str) -> String {
    // arn:aws:sts::123:assumed-role/Name/session → arn:aws:iam::123:role/Name
    match caller.split_once(":assumed-role/") {
        Some((head, rest)) => {
            let name = rest.split('/').next().unwrap_or(rest);
            format!("{}:role/{name}", head.replacen(":sts:", ":iam:", 1))
        }
        None => caller.to_owned(),
    }
}

/// With `backend = "emr"`: EMR reachable, the service role and instance profile present, the
/// EMR service-linked role, and iam:PassRole allowed on both roles.
pub(crate) async fn emr_checks(
    aws: &Aws,
    c: &crate::emr::ClusterDef,
    caller: Option<&str>,
) -> Vec<Check> {
    let mut out = Vec::new();
    match aws.emr().list_clusters().send().await {
        Ok(list) => out.push(Check::pass(
            "EMR reachable",
            format!(
                "ListClusters: {} cluster(s) on the first page in {}",
                list.clusters().len(),
                aws.region().unwrap_or("?")
            ),
        )),
        Err(e) => out.push(Check::fail(
            "EMR reachable",
            format!("ListClusters failed: {}", crate::client::describe(&e)),
            "allow elasticmapreduce:ListClusters (see `lake iam-policy`) and check the region",
        )),
    }
    if c.attach.is_some() {
        out.push(Check::pass(
            "EMR roles",
            "attach: lake uses a running cluster and creates none, so it passes no role",
        ));
        return out;
    }
    let iam = aws.iam();
    let mut role_arns = Vec::new();
    match iam.get_role().role_name(&c.service_role).send().await {
        Ok(r) => {
            let arn = r.role().map(|r| r.arn().to_owned()).unwrap_or_default();
            out.push(Check::pass("EMR service role", arn.clone()));
            role_arns.push(arn);
        }
        Err(e) => out.push(missing_or_unknown(
            "EMR service role",
            &c.service_role,
            e.code(),
            &e.to_string(),
            "create the default roles with `aws emr create-default-roles`, or set [cluster] service_role",
        )),
    }
    match iam
        .get_instance_profile()
        .instance_profile_name(&c.instance_profile)
        .send()
        .await
    {
        Ok(p) => {
            let roles: Vec<String> = p
                .instance_profile()
                .map(|p| p.roles().iter().map(|r| r.arn().to_owned()).collect())
                .unwrap_or_default();
            if roles.is_empty() {
                out.push(Check::fail(
                    "EMR instance profile",
                    format!("{} has no role", c.instance_profile),
                    "add a role to the instance profile (`aws emr create-default-roles` makes both)",
                ));
            } else {
                out.push(Check::pass(
                    "EMR instance profile",
                    format!("{} with {}", c.instance_profile, roles.join(", ")),
                ));
                role_arns.extend(roles);
            }
        }
        Err(e) => out.push(missing_or_unknown(
            "EMR instance profile",
            &c.instance_profile,
            e.code(),
            &e.to_string(),
            "create the default roles with `aws emr create-default-roles`, or set [cluster] instance_profile",
        )),
    }
    match iam
        .get_role()
        .role_name("AWSServiceRoleForEMRCleanup")
        .send()
        .await
    {
        Ok(_) => out.push(Check::pass(
            "EMR service-linked role",
            "AWSServiceRoleForEMRCleanup exists",
        )),
        Err(e) => out.push(missing_or_unknown(
            "EMR service-linked role",
            "AWSServiceRoleForEMRCleanup",
            e.code(),
            &e.to_string(),
            "create it: `aws iam create-service-linked-role --aws-service-name elasticmapreduce.amazonaws.com`",
        )),
    }
    let (Some(caller), false) = (caller, role_arns.is_empty()) else {
        return out;
    };
    out.push(
        simulate(
            aws,
            caller,
            "iam:PassRole",
            &["iam:PassRole"],
            &role_arns,
            "RunJobFlow would fail with AccessDenied: attach the policy `lake iam-policy` prints",
        )
        .await,
    );
    out
}

/// Whether the IAM policy of `caller` allows `actions` on `resources`
/// (iam:SimulatePrincipalPolicy): a check named `name` that fails naming each denied action
/// and resource, with `fix`.
pub(crate) async fn simulate(
    aws: &Aws,
    caller: &str,
    name: &str,
    actions: &[&str],
    resources: &[String],
    fix: &str,
) -> Check {
    let simulated = aws
        .iam()
        .simulate_principal_policy()
        .policy_source_arn(principal_arn(caller))
        .set_action_names(Some(actions.iter().map(|a| (*a).to_owned()).collect()))
        .set_resource_arns(Some(resources.to_vec()))
        .send()
        .await;
    match simulated {
        Ok(r) => {
            let denied: Vec<String> = r
                .evaluation_results()
                .iter()
                .filter(|e| e.eval_decision().as_str() != "allowed")
                .map(|e| {
                    format!(
                        "{} on {} ({})",
                        e.eval_action_name(),
                        e.eval_resource_name().unwrap_or("?"),
                        e.eval_decision().as_str()
                    )
                })
                .collect();
            if denied.is_empty() {
                Check::pass(name, format!("allowed on {}", resources.join(", ")))
            } else {
                Check::fail(name, format!("not allowed: {}", denied.join("; ")), fix)
            }
        }
        Err(e) => Check::unknown(
            name,
            format!(
                "could not simulate: {}",
                e.message().map_or_else(|| e.to_string(), str::to_owned)
            ),
            "allow iam:SimulatePrincipalPolicy to check this, or check the policy `lake iam-policy` prints",
        ),
    }
}

/// A role or profile that does not exist fails; any other error means it could not be checked.
fn missing_or_unknown(name: &str, what: &str, code: Option<&str>, error: &str, fix: &str) -> Check {
    if code == Some("NoSuchEntity") {
        Check::fail(name, format!("{what} does not exist"), fix)
    } else {
        Check::unknown(
            name,
            format!("could not check {what}: {}", code.unwrap_or(error)),
            "allow iam:GetRole and iam:GetInstanceProfile to check this (see `lake iam-policy`)",
        )
    }
}

/// With `backend = "emr-serverless"`: EMR Serverless reachable, an existing application
/// present, the execution role present and trusting emr-serverless.amazonaws.com, and
/// iam:PassRole allowed on it.
pub(crate) async fn serverless_checks(
    aws: &Aws,
    d: &crate::serverless::ServerlessDef,
    caller: Option<&str>,
) -> Vec<Check> {
    let mut out = Vec::new();
    let client = aws.emr_serverless();
    match client.list_applications().max_results(1).send().await {
        Ok(_) => out.push(Check::pass(
            "EMR Serverless reachable",
            format!("ListApplications in {}", aws.region().unwrap_or("?")),
        )),
        Err(e) => out.push(Check::fail(
            "EMR Serverless reachable",
            format!("ListApplications failed: {}", crate::client::describe(&e)),
            "allow emr-serverless:ListApplications (see `lake iam-policy`) and check the region",
        )),
    }
    if let Some(id) = &d.attach {
        match client.get_application().application_id(id).send().await {
            Ok(a) => {
                let state = a
                    .application()
                    .map(|a| a.state().as_str().to_owned())
                    .unwrap_or_default();
                if state == "TERMINATED" {
                    out.push(Check::fail(
                        "EMR Serverless application",
                        format!("{id} is TERMINATED"),
                        "set [serverless] application to a live application, or to \"create\"",
                    ));
                } else {
                    out.push(Check::pass(
                        "EMR Serverless application",
                        format!("{id} {state}"),
                    ));
                }
            }
            Err(e) => out.push(Check::fail(
                "EMR Serverless application",
                format!("GetApplication {id}: {}", crate::client::describe(&e)),
                "check [serverless] application and the region",
            )),
        }
    }
    let role = &d.execution_role;
    let name = role.rsplit('/').next().unwrap_or(role);
    match aws.iam().get_role().role_name(name).send().await {
        Ok(r) => {
            let doc = r
                .role()
                .and_then(|r| r.assume_role_policy_document())
                .unwrap_or_default();
            if trusts(doc, "emr-serverless.amazonaws.com") {
                out.push(Check::pass(
                    "execution role",
                    format!("{role} trusts emr-serverless.amazonaws.com"),
                ));
            } else {
                out.push(Check::fail(
                    "execution role",
                    format!("{role} does not trust emr-serverless.amazonaws.com: its jobs could not assume it"),
                    "add a trust statement: {\"Effect\": \"Allow\", \"Principal\": {\"Service\": \"emr-serverless.amazonaws.com\"}, \"Action\": \"sts:AssumeRole\"}",
                ));
            }
        }
        Err(e) => out.push(missing_or_unknown(
            "execution role",
            role,
            e.code(),
            &e.to_string(),
            "create the role (trusting emr-serverless.amazonaws.com) or set [serverless] execution_role",
        )),
    }
    if let Some(caller) = caller {
        out.push(
            simulate(
                aws,
                caller,
                "iam:PassRole",
                &["iam:PassRole"],
                std::slice::from_ref(role),
                "StartJobRun would fail with AccessDenied: attach the policy `lake iam-policy` prints",
            )
            .await,
        );
    }
    out
}

/// Whether a role's trust policy (as IAM returns it: URL-encoded JSON) lets `service` assume
/// the role.
fn trusts(doc: &str, service: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(doc).decode_utf8_lossy();
    let Ok(policy) = serde_json::from_str::<serde_json::Value>(&decoded) else {
        return false;
    };
    let statements = match &policy["Statement"] {
        serde_json::Value::Array(a) => a.clone(),
        s @ serde_json::Value::Object(_) => vec![s.clone()],
        _ => Vec::new(),
    };
    let names = |v: &serde_json::Value| -> Vec<String> {
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    statements.iter().any(|s| {
        s["Effect"] == "Allow"
            && names(&s["Principal"]["Service"])
                .iter()
                .any(|n| n == service)
            && names(&s["Action"])
                .iter()
                .any(|a| a == "sts:AssumeRole" || a == "sts:*" || a == "*")
    })
}

#[cfg(test)]
mod tests {
    use super::trusts;

    #[test]
    fn a_trust_policy_names_the_service_that_may_assume_the_role() {
        let ok = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":["ec2.amazonaws.com","emr-serverless.amazonaws.com"]},"Action":"sts:AssumeRole"}]}"#;
        assert!(trusts(ok, "emr-serverless.amazonaws.com"));
        let encoded = ok
            .replace('{', "%7B")
            .replace('}', "%7D")
            .replace('"', "%22");
        assert!(trusts(&encoded, "emr-serverless.amazonaws.com"));
        assert!(!trusts(ok, "elasticmapreduce.amazonaws.com"));
        let denied = ok.replace("Allow", "Deny");
        assert!(!trusts(&denied, "emr-serverless.amazonaws.com"));
        assert!(!trusts("not json", "emr-serverless.amazonaws.com"));
    }
}
