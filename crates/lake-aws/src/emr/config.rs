//! `[cluster]`, checked: what an EMR cluster is made of, and what a run on it may cost.

use std::collections::BTreeMap;
use std::time::Duration;

use lake_core::config::{ConfigCx, Root, StepSpec, opt_secs, parse_duration, secs};
use serde::{Deserialize, Serialize};

/// The EMR release used when `[cluster] release` is not set.
pub const DEFAULT_RELEASE: &str = "emr-7.9.0";
/// The instance type used when an instance group does not name one.
pub const DEFAULT_INSTANCE_TYPE: &str = "m5.xlarge";
/// Time to start a cluster, counted in the cost estimate.
pub const STARTUP_ESTIMATE: Duration = Duration::from_secs(600);
/// Run time counted for a step without a `timeout`.
pub const STEP_ESTIMATE: Duration = Duration::from_secs(1800);

/// A checked `[cluster]` (defaults applied).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterDef {
    /// Cluster name.
    pub name: String,
    /// EMR release label.
    pub release: String,
    /// Applications.
    pub applications: Vec<String>,
    /// Instance groups or fleets.
    pub instances: Instances,
    /// Bootstrap actions.
    pub bootstrap: Vec<BootstrapConfig>,
    /// Application configurations.
    pub configurations: Vec<ConfigurationConfig>,
    /// Where EMR writes logs (an `s3://` URL ending in `/`); `None` for a local root.
    pub log_uri: Option<String>,
    /// EMR service role.
    pub service_role: String,
    /// EC2 instance profile.
    pub instance_profile: String,
    /// Subnet id.
    pub subnet: Option<String>,
    /// EC2 key pair.
    pub key_pair: Option<String>,
    /// Additional security groups of every node.
    pub security_groups: Vec<String>,
    /// User tags (lake adds its own when it creates the cluster).
    pub tags: BTreeMap<String, String>,
    /// Idle auto-termination; `None`: off.
    #[serde(with = "opt_secs")]
    pub idle_timeout: Option<Duration>,
    /// Steps run at once.
    pub step_concurrency: u32,
    /// Attach to a running cluster instead of creating one.
    pub attach: Option<Attach>,
    /// How long to wait for a failed step's logs.
    #[serde(with = "secs")]
    pub log_wait: Duration,
    /// The run time the estimate assumes, when set.
    #[serde(with = "opt_secs")]
    pub expected_runtime: Option<Duration>,
    /// USD per instance-hour by instance type.
    pub price_per_hour: BTreeMap<String, f64>,
    /// The highest estimated cost (USD) a run may have.
    pub max_cost: Option<f64>,
}

/// Which running cluster to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Attach {
    /// By id (`j-…`).
    Id(String),
    /// The one active cluster with this tag.
    Tag {
        /// Tag key.
        key: String,
        /// Tag value.
        value: String,
    },
}

/// Node roles of a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum NodeRole {
    /// The primary node.
    Master,
    /// Core nodes (HDFS).
    Core,
    /// Task nodes.
    Task,
}

impl NodeRole {
    /// EMR's name for it (`MASTER`, `CORE`, `TASK`).
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Master => "MASTER",
            Self::Core => "CORE",
            Self::Task => "TASK",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Self::Master => "master",
            Self::Core => "core",
            Self::Task => "task",
        }
    }
}

/// Instance groups or fleets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Instances {
    /// Uniform instance groups.
    Groups(Vec<Group>),
    /// Instance fleets.
    Fleets(Vec<Fleet>),
}

/// One instance group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// Its role.
    pub role: NodeRole,
    /// EC2 type.
    pub instance_type: String,
    /// Instances.
    pub count: u32,
    /// `None`: on demand; `Some(bid)`: spot with an optional highest price.
    pub spot: Option<Option<String>>,
    /// EBS volumes.
    pub ebs: Vec<EbsConfig>,
}

/// One instance fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fleet {
    /// Its role.
    pub role: NodeRole,
    /// Instance types to choose from.
    pub types: Vec<String>,
    /// On-demand capacity.
    pub on_demand: u32,
    /// Spot capacity.
    pub spot: u32,
    /// EBS volumes.
    pub ebs: Vec<EbsConfig>,
}

/// What a run is expected to cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// Hours the cluster is expected to run.
    pub hours: f64,
    /// Instances × hours.
    pub instance_hours: f64,
    /// USD, when every instance type has a price.
    pub cost: Option<f64>,
    /// Instance types without a price.
    pub unpriced: Vec<String>,
}

impl ClusterDef {
    /// The expected cost of running `steps` on a cluster lake creates: instances × (start-up +
    /// the steps' timeouts, or `expected_runtime`), priced with `price_per_hour`. Fleets count
    /// their capacity units as instances of their first type.
    pub fn estimate<'a>(&self, steps: impl IntoIterator<Item = &'a StepSpec>) -> Estimate {
        let runtime = self.expected_runtime.unwrap_or_else(|| {
            STARTUP_ESTIMATE
                + steps
                    .into_iter()
                    .map(|s| s.timeout.unwrap_or(STEP_ESTIMATE))
                    .sum::<Duration>()
        });
        let hours = runtime.as_secs_f64() / 3600.0;
        let nodes: Vec<(&str, u32)> = match &self.instances {
            Instances::Groups(g) => g.iter().map(|g| (&*g.instance_type, g.count)).collect(),
            Instances::Fleets(f) => f
                .iter()
                .map(|f| (&*f.types[0], f.on_demand + f.spot))
                .collect(),
        };
        let mut cost = 0.0;
        let mut unpriced = Vec::new();
        let mut instances = 0u32;
        for (ty, n) in nodes {
            instances += n;
            match self.price_per_hour.get(ty) {
                Some(p) => cost += p * f64::from(n) * hours,
                None if n > 0 && !unpriced.iter().any(|u| u == ty) => unpriced.push(ty.to_owned()),
                None => {}
            }
        }
        Estimate {
            hours,
            instance_hours: f64::from(instances) * hours,
            cost: unpriced.is_empty().then_some(cost),
            unpriced,
        }
    }
}

/// Check `[cluster]` (absent: all defaults).
pub(crate) fn cluster_def(
    r: &mut ConfigCx<'_, '_>,
    raw: Option<&ClusterConfig>,
    pipeline: &str,
    root: Option<&Root>,
) -> ClusterDef {
    let c = raw.cloned().unwrap_or_default();
    let k = |s: &str| format!("cluster.{s}");
    let release = c.release.clone().unwrap_or_else(|| DEFAULT_RELEASE.into());
    if !is_release(&release) {
        r.value(
            &k("release"),
            format!("{release:?} is not an EMR release label such as \"{DEFAULT_RELEASE}\""),
        );
    }
    let applications = c
        .applications
        .clone()
        .unwrap_or_else(|| vec!["Spark".into()]);
    for (i, a) in applications.iter().enumerate() {
        if a.trim().is_empty() {
            r.value(
                &format!("cluster.applications[{i}]"),
                "empty application name",
            );
        }
    }
    let groups_set = c.master.is_some() || c.core.is_some() || c.task.is_some();
    let instances = if c.fleets.is_empty() {
        let mut groups = Vec::new();
        for (role, g, default_count) in [
            (NodeRole::Master, &c.master, 1),
            (NodeRole::Core, &c.core, 2),
            (NodeRole::Task, &c.task, 0),
        ] {
            let g = g.clone().unwrap_or_default();
            let group = group(r, role, &g, default_count);
            if group.count > 0 || role == NodeRole::Master {
                groups.push(group);
            }
        }
        Instances::Groups(groups)
    } else {
        if groups_set {
            r.key(
                "cluster.fleets",
                "use instance groups ([cluster.master], [cluster.core], [cluster.task]) or [cluster.fleets], not both",
            );
        }
        let mut fleets = Vec::new();
        for (name, f) in &c.fleets {
            let key = format!("cluster.fleets.{name}");
            let role = match name.as_str() {
                "master" => NodeRole::Master,
                "core" => NodeRole::Core,
                "task" => NodeRole::Task,
                _ => {
                    r.key(
                        &key,
                        format!("unknown fleet {name:?}: master, core or task"),
                    );
                    continue;
                }
            };
            if f.types.is_empty() {
                r.key(&key, "a fleet needs `types`: at least one instance type");
            }
            let (on_demand, spot) = (f.on_demand.unwrap_or(0), f.spot.unwrap_or(0));
            if role == NodeRole::Master && on_demand + spot != 1 {
                r.key(
                    &key,
                    "the master fleet has one node: on_demand = 1 or spot = 1",
                );
            } else if on_demand + spot == 0 && role != NodeRole::Task {
                r.key(&key, "a fleet needs capacity: on_demand or spot above 0");
            }
            ebs(r, &key, &f.ebs);
            fleets.push(Fleet {
                role,
                types: f.types.clone(),
                on_demand,
                spot,
                ebs: f.ebs.clone(),
            });
        }
        if !fleets.iter().any(|f| f.role == NodeRole::Master) {
            r.key("cluster.fleets", "[cluster.fleets] needs a master fleet");
        }
        fleets.sort_by_key(|f| f.role);
        Instances::Fleets(fleets)
    };
    for (i, b) in c.bootstrap.iter().enumerate() {
        if !b.path.starts_with("s3://") {
            r.value(
                &format!("cluster.bootstrap[{i}].path"),
                format!(
                    "{:?}: a bootstrap action is a script in S3 (s3://bucket/key)",
                    b.path
                ),
            );
        }
    }
    configurations(r, "cluster.configurations", &c.configurations);
    let log_uri = log_uri_under(r, &k("log_uri"), c.log_uri.as_deref(), root, "emr-logs");
    check_tags(r, "cluster.tags", &c.tags);
    let idle_timeout = match c.idle_timeout.as_deref() {
        None => Some(Duration::from_secs(3600)),
        Some("off") => None,
        Some(raw) => match parse_duration(raw) {
            Ok(d) if (60..=7 * 86_400).contains(&d.as_secs()) => Some(d),
            Ok(_) => {
                r.value(
                    &k("idle_timeout"),
                    format!("{raw:?}: EMR allows 1m to 7d of idle time (or \"off\")"),
                );
                None
            }
            Err(m) => {
                r.value(&k("idle_timeout"), format!("{m}, or \"off\""));
                None
            }
        },
    };
    let step_concurrency = c.step_concurrency.unwrap_or(1);
    if !(1..=256).contains(&step_concurrency) {
        r.value(&k("step_concurrency"), "EMR runs 1 to 256 steps at once");
    }
    let attach = c.attach.as_ref().and_then(|a| match a {
        AttachConfig::Id(id) if id.starts_with("j-") && id.len() > 2 => {
            Some(Attach::Id(id.clone()))
        }
        AttachConfig::Id(id) => {
            r.value(
                &k("attach"),
                format!("{id:?} is not a cluster id (j-…); or use {{ tag = \"key=value\" }}"),
            );
            None
        }
        AttachConfig::Tag { tag } => match tag.split_once('=') {
            Some((key, value)) if !key.is_empty() => Some(Attach::Tag {
                key: key.into(),
                value: value.into(),
            }),
            _ => {
                r.value(&k("attach.tag"), format!("{tag:?}: expected key=value"));
                None
            }
        },
    });
    let log_wait = match c.log_wait.as_deref() {
        None => Duration::from_secs(600),
        Some(raw) => parse_duration(raw)
            .map_err(|m| r.value(&k("log_wait"), m))
            .unwrap_or(Duration::from_secs(600)),
    };
    let expected_runtime = c.expected_runtime.as_deref().and_then(|raw| {
        parse_duration(raw)
            .map_err(|m| r.value(&k("expected_runtime"), m))
            .ok()
    });
    for (ty, p) in &c.price_per_hour {
        if !p.is_finite() || *p < 0.0 {
            r.value(
                &format!("cluster.price_per_hour.{ty}"),
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
    let def = ClusterDef {
        name: c.name.clone().unwrap_or_else(|| format!("lake-{pipeline}")),
        release,
        applications,
        instances,
        bootstrap: c.bootstrap.clone(),
        configurations: c.configurations.clone(),
        log_uri,
        service_role: c
            .service_role
            .clone()
            .unwrap_or_else(|| "EMR_DefaultRole".into()),
        instance_profile: c
            .instance_profile
            .clone()
            .unwrap_or_else(|| "EMR_EC2_DefaultRole".into()),
        subnet: c.subnet.clone(),
        key_pair: c.key_pair.clone(),
        security_groups: c.security_groups.clone(),
        tags: c.tags.clone(),
        idle_timeout,
        step_concurrency,
        attach,
        log_wait,
        expected_runtime,
        price_per_hour: c.price_per_hour.clone(),
        max_cost: c.max_cost,
    };
    if def.max_cost.is_some() && def.attach.is_none() {
        let unpriced = def.estimate([]).unpriced;
        if !unpriced.is_empty() {
            r.key(
                &k("max_cost"),
                format!(
                    "max_cost needs a price for every instance type: add {} to [cluster.price_per_hour]",
                    unpriced.iter().map(|t| format!("\"{t}\" = <USD per hour>")).collect::<Vec<_>>().join(", ")
                ),
            );
        }
    }
    def
}

fn group(
    r: &mut ConfigCx<'_, '_>,
    role: NodeRole,
    g: &InstanceGroupConfig,
    default_count: u32,
) -> Group {
    let key = format!("cluster.{}", role.key());
    let count = g.count.unwrap_or(default_count);
    if role == NodeRole::Master && !matches!(count, 1 | 3) {
        r.value(
            &format!("{key}.count"),
            "EMR runs 1 primary node (or 3 for high availability)",
        );
    }
    let spot = match (g.market.as_deref(), &g.bid_price) {
        (None | Some("ON_DEMAND"), None) => None,
        (Some("SPOT"), bid) => {
            if let Some(b) = bid
                && b.parse::<f64>().map_or(true, |p| p <= 0.0)
            {
                r.value(
                    &format!("{key}.bid_price"),
                    format!("{b:?}: a price in USD such as \"0.10\""),
                );
            }
            Some(bid.clone())
        }
        (None | Some("ON_DEMAND"), Some(_)) => {
            r.key(
                &format!("{key}.bid_price"),
                "bid_price goes with market = \"SPOT\"",
            );
            None
        }
        (Some(m), _) => {
            r.value(
                &format!("{key}.market"),
                format!("unknown market {m:?}: \"ON_DEMAND\" or \"SPOT\""),
            );
            None
        }
    };
    ebs(r, &key, &g.ebs);
    Group {
        role,
        instance_type: g
            .instance_type
            .clone()
            .unwrap_or_else(|| DEFAULT_INSTANCE_TYPE.into()),
        count,
        spot,
        ebs: g.ebs.clone(),
    }
}

fn ebs(r: &mut ConfigCx<'_, '_>, key: &str, volumes: &[EbsConfig]) {
    for (i, v) in volumes.iter().enumerate() {
        let vkey = format!("{key}.ebs[{i}]");
        if v.size_gb == 0 {
            r.value(&format!("{vkey}.size_gb"), "a volume needs at least 1 GiB");
        }
        if let Some(t) = &v.volume_type
            && !matches!(
                t.as_str(),
                "gp3" | "gp2" | "io1" | "io2" | "st1" | "sc1" | "standard"
            )
        {
            r.value(
                &format!("{vkey}.type"),
                format!("unknown volume type {t:?}: gp3, gp2, io1, io2, st1, sc1 or standard"),
            );
        }
    }
}

fn configurations(r: &mut ConfigCx<'_, '_>, key: &str, list: &[ConfigurationConfig]) {
    for (i, c) in list.iter().enumerate() {
        let ckey = format!("{key}[{i}]");
        if c.classification.trim().is_empty() {
            r.value(
                &format!("{ckey}.classification"),
                "empty classification (spark-defaults, spark-env, …)",
            );
        }
        configurations(r, &format!("{ckey}.configurations"), &c.configurations);
    }
}

/// A log URI as written (`key`), ending in `/`; by default `_lake/<folder>/` under an S3
/// root; `None` on a local root.
pub(crate) fn log_uri_under(
    r: &mut ConfigCx<'_, '_>,
    key: &str,
    written: Option<&str>,
    root: Option<&Root>,
    folder: &str,
) -> Option<String> {
    match (written, root) {
        (Some(u), _) if !u.starts_with("s3://") => {
            r.value(key, format!("{u:?}: logs go to S3 (s3://bucket/prefix/)"));
            None
        }
        (Some(u), _) => Some(if u.ends_with('/') {
            u.to_owned()
        } else {
            format!("{u}/")
        }),
        (None, Some(Root::S3 { bucket, prefix })) if prefix.is_empty() => {
            Some(format!("s3://{bucket}/_lake/{folder}/"))
        }
        (None, Some(Root::S3 { bucket, prefix })) => {
            Some(format!("s3://{bucket}/{prefix}/_lake/{folder}/"))
        }
        (None, _) => None,
    }
}

/// A backend that needs zones in S3: on a local root, the key that chose it gets `why`.
/// Returns whether the root is usable.
pub(crate) fn needs_s3_root(r: &mut ConfigCx<'_, '_>, why: &str) -> bool {
    if matches!(r.root, Some(Root::Local { .. })) {
        let key = r.backend_key().to_owned();
        r.value(&key, why);
        return false;
    }
    true
}

/// User tags (at `table`): no `lake:` keys (lake sets those), 1 to 128 characters.
pub(crate) fn check_tags(r: &mut ConfigCx<'_, '_>, table: &str, tags: &BTreeMap<String, String>) {
    for key in tags.keys() {
        if key.starts_with("lake:") {
            r.key(
                &format!("{table}.{key}"),
                "tags starting with `lake:` are set by lake (lake:pipeline, lake:run-id)",
            );
        } else if key.is_empty() || key.len() > 128 {
            r.key(
                &format!("{table}.{key}"),
                "a tag key has 1 to 128 characters",
            );
        }
    }
}

pub(crate) fn is_release(s: &str) -> bool {
    s.strip_prefix("emr-").is_some_and(|v| {
        let parts: Vec<&str> = v.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// `[cluster]`: what RunJobFlow is asked for (or which running cluster to attach to).
///
/// Every key is optional; the defaults make a small Spark cluster that terminates itself
/// when idle.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's name (default `lake-<pipeline>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The EMR release label (default: a current `emr-7.x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Applications to install (default `["Spark"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applications: Option<Vec<String>>,
    /// The primary node's instance group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<InstanceGroupConfig>,
    /// The core nodes' instance group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<InstanceGroupConfig>,
    /// Task nodes (no HDFS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<InstanceGroupConfig>,
    /// Instance fleets instead of groups: `master`, `core`, `task`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fleets: BTreeMap<String, InstanceFleetConfig>,
    /// Bootstrap actions, run on every node before applications start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootstrap: Vec<BootstrapConfig>,
    /// Application configurations (`spark-defaults`, `spark-env`, …), nested as EMR takes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configurations: Vec<ConfigurationConfig>,
    /// Where EMR writes logs (default `<root>/_lake/emr-logs/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_uri: Option<String>,
    /// The EMR service role (default `EMR_DefaultRole`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_role: Option<String>,
    /// The EC2 instance profile of the nodes (default `EMR_EC2_DefaultRole`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    /// The VPC subnet (default: the account's default VPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    /// An EC2 key pair for SSH to the primary node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pair: Option<String>,
    /// Additional security groups of every node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// Tags of the cluster (lake adds `lake:pipeline` and `lake:run-id`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The cluster terminates itself after this long idle (default `1h`; `"off"` disables).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Steps run at once on the cluster (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_concurrency: Option<u32>,
    /// Reuse a running cluster instead of creating one: `"j-…"` or `{ tag = "key=value" }`.
    /// lake never terminates an attached cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach: Option<AttachConfig>,
    /// How long to wait for a failed step's logs to reach `log_uri` (default `10m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_wait: Option<String>,
    /// The run time the cost estimate assumes (default: the sum of the steps' `timeout`,
    /// 30m for a step without one, plus 10m to start the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_runtime: Option<String>,
    /// USD per hour of each instance type (EC2 plus EMR price), for the cost estimate.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub price_per_hour: BTreeMap<String, f64>,
    /// Refuse to start a run whose estimated cost (USD) is higher.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
}

/// `[cluster.master]`, `[cluster.core]`, `[cluster.task]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceGroupConfig {
    /// EC2 instance type (default `m5.xlarge`).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub instance_type: Option<String>,
    /// Instances (default 1 for master; 2 for core; 0 for task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// `ON_DEMAND` (default) or `SPOT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub market: Option<String>,
    /// `SPOT`: the highest price per hour in USD (default: the on-demand price).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid_price: Option<String>,
    /// EBS volumes of each instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ebs: Vec<EbsConfig>,
}

/// One EBS volume specification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbsConfig {
    /// Size in GiB.
    pub size_gb: u32,
    /// `gp3` (default), `gp2`, `io1`, `st1`, `sc1`, `standard`.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub volume_type: Option<String>,
    /// Volumes of this kind per instance (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Provisioned IOPS (`io1`, `gp3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iops: Option<u32>,
    /// Throughput in MiB/s (`gp3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throughput: Option<u32>,
}

/// `[cluster.fleets.<master|core|task>]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFleetConfig {
    /// Instance types EMR may choose from.
    pub types: Vec<String>,
    /// On-demand capacity units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand: Option<u32>,
    /// Spot capacity units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot: Option<u32>,
    /// EBS volumes of each instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ebs: Vec<EbsConfig>,
}

/// One bootstrap action.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Its name.
    pub name: String,
    /// The script: an `s3://` URL.
    pub path: String,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// One application configuration (EMR's `Configuration`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigurationConfig {
    /// `spark-defaults`, `spark-env`, `export`, …
    pub classification: String,
    /// Its properties.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// Nested configurations (`spark-env` → `export`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configurations: Vec<ConfigurationConfig>,
}

/// `attach = "j-…"` or `attach = { tag = "key=value" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AttachConfig {
    /// A cluster id.
    Id(String),
    /// The one running cluster with this tag.
    Tag {
        /// `key=value`.
        tag: String,
    },
}
