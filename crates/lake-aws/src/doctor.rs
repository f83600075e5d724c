//! `lake doctor` on AWS: who am I, and the region.

use lake_core::doctor::Check;

use crate::Aws;

/// Who lake is on AWS (STS GetCallerIdentity) and the region.
pub async fn aws_checks(aws: &Aws) -> Vec<Check> {
    let mut out = Vec::new();
    match aws.sts().get_caller_identity().send().await {
        Ok(me) => out.push(Check::pass(
            "identity",
            format!(
                "account {}, {}",
                me.account().unwrap_or("?"),
                me.arn().unwrap_or("?")
            ),
        )),
        Err(e) => out.push(Check::fail(
            "identity",
            format!(
                "STS GetCallerIdentity failed: {}",
                aws_sdk_sts::error::DisplayErrorContext(e)
            ),
            "give lake credentials: AWS_PROFILE (after `aws sso login` for SSO profiles), \
             AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an instance or container role",
        )),
    }
    match aws.region() {
        Some(r) => out.push(Check::pass("region", r.to_owned())),
        None => out.push(Check::fail(
            "region",
            "no region found",
            "set [aws] region in lake.toml, AWS_REGION, or the profile's region",
        )),
    }
    out
}
