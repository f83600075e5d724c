//! `[serverless]`, checked: the EMR Serverless application a run creates (or uses), the role
//! its jobs run as, and what a run may cost.

use std::collections::BTreeMap;
use std::time::Duration;

use lake_core::config::{ConfigCx, Root, StepSpec, opt_secs, parse_duration, secs};
use serde::{Deserialize, Serialize};

use crate::emr::{DEFAULT_RELEASE, STEP_ESTIMATE};

/// USD per vCPU-hour and per GB-hour used when `[serverless] price` is not set (us-east-1,
/// x86, 2026).
pub const DEFAULT_PRICE: Price = Price {
    vcpu_hour: 0.052624,
    gb_hour: 0.0057785,
};

/// `[serverless]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerlessConfig {
    /// `"create"` (the default) or an existing application's id.
    #[serde(default)]
    pub application: Option<String>,
    /// The name of the application lake creates (default `lake-<pipeline>`).
    #[serde(default)]
    pub name: Option<String>,
    /// EMR release label.
    #[serde(default)]
    pub release: Option<String>,
    /// The IAM role ARN the jobs run as.
    #[serde(default)]
    pub execution_role: Option<String>,
    /// The application's most capacity: `{ cpu = "16 vCPU", memory = "64 GB" }`.
    #[serde(default)]
    pub max_capacity: Option<CapacityConfig>,
    /// The application's auto-stop after this idle time (`"15m"`, or `"off"`).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// Where job logs go (`s3://…/`); default `<root>/_lake/serverless-logs/`.
    #[serde(default)]
    pub log_uri: Option<String>,
    /// `spark-defaults` of every job.
    #[serde(default)]
    pub spark_conf: BTreeMap<String, String>,
    /// Prices for the estimate.
    #[serde(default)]
    pub price: Option<Price>,
    /// The highest estimated cost (USD) a run may have.
    #[serde(default)]
    pub max_cost: Option<f64>,
    /// The run time the estimate assumes, instead of the steps' timeouts.
    #[serde(default)]
    pub expected_runtime: Option<String>,
    /// How long to wait for a failed job's driver log.
    #[serde(default)]
    pub log_wait: Option<String>,
    /// Tags of the application and its job runs (lake adds `lake:*`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// `max_capacity` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityConfig {
    /// `"16 vCPU"`.
    pub cpu: String,
    /// `"64 GB"`.
    pub memory: String,
}

/// USD per vCPU-hour and per GB-hour.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// USD per vCPU-hour.
    pub vcpu_hour: f64,
    /// USD per GB-hour of memory.
    pub gb_hour: f64,
}

/// A checked `[serverless]` (defaults applied).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerlessDef {
    /// `None`: lake creates an application for each run; `Some(id)`: it uses this one and never
    /// stops or deletes it.
    pub attach: Option<String>,
    /// The name of an application lake creates.
    pub name: String,
    /// EMR release label.
    pub release: String,
    /// The jobs' IAM role (an ARN).
    pub execution_role: String,
    /// Most vCPUs, as EMR Serverless reads it (`"16 vCPU"`).
    pub max_cpu: String,
    /// Most memory (`"64 GB"`).
    pub max_memory: String,
    /// vCPUs of `max_cpu`, for the estimate.
    pub vcpus: f64,
    /// GB of `max_memory`, for the estimate.
    pub memory_gb: f64,
    /// The application's auto-stop; `None`: off.
    #[serde(with = "opt_secs")]
    pub idle_timeout: Option<Duration>,
    /// Where job logs go (ends in `/`); `None` on a local root.
    pub log_uri: Option<String>,
    /// `spark-defaults` of every job.
    pub spark_conf: BTreeMap<String, String>,
    /// Prices for the estimate.
    pub price: Price,
    /// The highest estimated cost a run may have.
    pub max_cost: Option<f64>,
    /// The run time the estimate assumes, when set.
    #[serde(with = "opt_secs")]
    pub expected_runtime: Option<Duration>,
    /// How long to wait for a failed job's driver log.
    #[serde(with = "secs")]
    pub log_wait: Duration,
    /// User tags.
    pub tags: BTreeMap<String, String>,
}

/// What a run is expected to cost at most: the application's whole capacity for the steps'
/// timeouts (30 minutes for a step without one), or for `expected_runtime`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// Hours the jobs are expected to run, one after another.
    pub hours: f64,
    /// vCPU-hours at the most capacity.
    pub vcpu_hours: f64,
    /// GB-hours at the most capacity.
    pub gb_hours: f64,
    /// USD.
    pub cost: f64,
}

impl ServerlessDef {
    /// The highest cost of running `steps`: EMR Serverless bills the vCPU and memory the jobs
    /// use, which the application's `max_capacity` bounds.
    pub fn estimate<'a>(&self, steps: impl IntoIterator<Item = &'a StepSpec>) -> Estimate {
        let runtime = self.expected_runtime.unwrap_or_else(|| {
            steps
                .into_iter()
                .map(|s| s.timeout.unwrap_or(STEP_ESTIMATE))
                .sum()
        });
        let hours = runtime.as_secs_f64() / 3600.0;
        let (vcpu_hours, gb_hours) = (self.vcpus * hours, self.memory_gb * hours);
        Estimate {
            hours,
            vcpu_hours,
            gb_hours,
            cost: vcpu_hours * self.price.vcpu_hour + gb_hours * self.price.gb_hour,
        }
    }
}

/// The number of a capacity (`"16 vCPU"`, `"64 GB"`, `"16"`) in `unit`.
fn capacity(raw: &str, unit: &str) -> Option<f64> {
    let t = raw.trim();
    let n = t
        .strip_suffix(unit)
        .or_else(|| t.strip_suffix(&unit.to_lowercase()))
        .unwrap_or(t)
        .trim();
    n.parse::<f64>().ok().filter(|v| v.is_finite() && *v > 0.0)
}

/// Check `[serverless]` (absent: all defaults, but `execution_role` is required when the
/// backend is selected).
pub(crate) fn serverless_def(
    r: &mut ConfigCx<'_, '_>,
    raw: Option<&ServerlessConfig>,
    pipeline: &str,
    root: Option<&Root>,
) -> ServerlessDef {
    let c = raw.cloned().unwrap_or_default();
    let k = |s: &str| format!("serverless.{s}");
    let attach = match c.application.as_deref() {
        None | Some("create") => None,
        Some(id) if !id.is_empty() && id.chars().all(|ch| ch.is_ascii_alphanumeric()) => {
            Some(id.to_owned())
        }
        Some(id) => {
            r.value(
                &k("application"),
                format!("{id:?}: \"create\", or an existing application's id (such as \"00fabcd1234efgh5\")"),
            );
            None
        }
    };
    let release = c.release.clone().unwrap_or_else(|| DEFAULT_RELEASE.into());
    if !crate::emr::is_release(&release) {
        r.value(
            &k("release"),
            format!("{release:?} is not an EMR release label such as \"{DEFAULT_RELEASE}\""),
        );
    }
    let execution_role = c.execution_role.clone().unwrap_or_default();
    if execution_role.is_empty() {
        if r.selected() {
            r.key(
                "serverless",
                "backend = \"emr-serverless\" needs [serverless] execution_role: the ARN of the IAM role the jobs run as (it must trust emr-serverless.amazonaws.com)",
            );
        }
    } else if !(execution_role.starts_with("arn:aws") && execution_role.contains(":role/")) {
        r.value(
            &k("execution_role"),
            format!(
                "{execution_role:?} is not an IAM role ARN (arn:aws:iam::123456789012:role/name)"
            ),
        );
    }
    let cap = c.max_capacity.clone().unwrap_or(CapacityConfig {
        cpu: "16 vCPU".into(),
        memory: "64 GB".into(),
    });
    let vcpus = capacity(&cap.cpu, "vCPU").unwrap_or_else(|| {
        r.value(
            &k("max_capacity.cpu"),
            format!("{:?}: a number of vCPUs such as \"16 vCPU\"", cap.cpu),
        );
        0.0
    });
    let memory_gb = capacity(&cap.memory, "GB").unwrap_or_else(|| {
        r.value(
            &k("max_capacity.memory"),
            format!("{:?}: a number of GB such as \"64 GB\"", cap.memory),
        );
        0.0
    });
    let idle_timeout = match c.idle_timeout.as_deref() {
        None => Some(Duration::from_secs(15 * 60)),
        Some("off") => None,
        Some(raw) => match parse_duration(raw) {
            Ok(d) if (60..=7 * 86_400).contains(&d.as_secs()) && d.as_secs() % 60 == 0 => Some(d),
            Ok(_) => {
                r.value(
                    &k("idle_timeout"),
                    format!("{raw:?}: EMR Serverless stops an idle application after whole minutes, 1m to 7d (or \"off\")"),
                );
                None
            }
            Err(m) => {
                r.value(&k("idle_timeout"), format!("{m}, or \"off\""));
                None
            }
        },
    };
    let log_uri = crate::emr::log_uri_under(
        r,
        &k("log_uri"),
        c.log_uri.as_deref(),
        root,
        "serverless-logs",
    );
    for key in c.spark_conf.keys() {
        if !key.starts_with("spark.") {
            r.key(
                &format!("serverless.spark_conf.{key}"),
                "a Spark property starts with `spark.`",
            );
        }
    }
    let price = c.price.unwrap_or(DEFAULT_PRICE);
    for (name, p) in [("vcpu_hour", price.vcpu_hour), ("gb_hour", price.gb_hour)] {
        if !p.is_finite() || p < 0.0 {
            r.value(
                &format!("serverless.price.{name}"),
                format!("{p}: a price is a number of USD ≥ 0"),
            );
        }
    }
    if let Some(m) = c.max_cost
        && (!m.is_finite() || m <= 0.0)
    {
        r.value(
            &k("max_cost"),
            format!("{m}: max_cost is a number of USD above 0"),
        );
    }
    let expected_runtime = c.expected_runtime.as_deref().and_then(|raw| {
        parse_duration(raw)
            .map_err(|m| r.value(&k("expected_runtime"), m))
            .ok()
    });
    let log_wait = match c.log_wait.as_deref() {
        None => Duration::from_secs(300),
        Some(raw) => parse_duration(raw)
            .map_err(|m| r.value(&k("log_wait"), m))
            .unwrap_or(Duration::from_secs(300)),
    };
    crate::emr::check_tags(r, "serverless.tags", &c.tags);
    ServerlessDef {
        attach,
        name: c.name.clone().unwrap_or_else(|| format!("lake-{pipeline}")),
        release,
        execution_role,
        max_cpu: cap.cpu.trim().to_owned(),
        max_memory: cap.memory.trim().to_owned(),
        vcpus,
        memory_gb,
        idle_timeout,
        log_uri,
        spark_conf: c.spark_conf,
        price,
        max_cost: c.max_cost,
        expected_runtime,
        log_wait,
        tags: c.tags,
    }
}

#[cfg(test)]
mod tests {
    use super::capacity;

    #[test]
    fn capacities_read_with_or_without_their_unit() {
        assert_eq!(capacity("16 vCPU", "vCPU"), Some(16.0));
        assert_eq!(capacity("4vcpu", "vCPU"), Some(4.0));
        assert_eq!(capacity("64 GB", "GB"), Some(64.0));
        assert_eq!(capacity("8", "GB"), Some(8.0));
        assert_eq!(capacity("lots", "GB"), None);
        assert_eq!(capacity("0 GB", "GB"), None);
    }
}
