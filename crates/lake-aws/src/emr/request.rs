//! The RunJobFlow and AddJobFlowSteps requests lake sends, as data.
//!
//! One model serves both ends: serialized, it is the JSON `lake plan --env aws` prints (with
//! the API's field names); converted, it is the SDK request that is sent. So the plan shows
//! exactly what a run asks for.

use std::collections::BTreeMap;

use super::config::{ClusterDef, ConfigurationConfig, EbsConfig, Instances};
use aws_sdk_emr::types as t;
use serde::Serialize;

/// `RunJobFlow`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunJobFlow {
    /// Cluster name.
    pub name: String,
    /// Release label.
    pub release_label: String,
    /// Log location.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_uri: Option<String>,
    /// Applications.
    pub applications: Vec<Application>,
    /// Nodes and network.
    pub instances: JobFlowInstances,
    /// Bootstrap actions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bootstrap_actions: Vec<BootstrapAction>,
    /// Application configurations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configurations: Vec<Configuration>,
    /// EMR service role.
    pub service_role: String,
    /// EC2 instance profile.
    pub job_flow_role: String,
    /// Visible to every IAM user of the account.
    pub visible_to_all_users: bool,
    /// Tags.
    pub tags: Vec<Tag>,
    /// Idle auto-termination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_termination_policy: Option<AutoTerminationPolicy>,
    /// Steps run at once.
    pub step_concurrency_level: i32,
}

/// An application.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Application {
    /// `Spark`, `Hadoop`, …
    pub name: String,
}

/// `Instances`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JobFlowInstances {
    /// Instance groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instance_groups: Vec<InstanceGroup>,
    /// Instance fleets.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instance_fleets: Vec<InstanceFleet>,
    /// Subnet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ec2_subnet_id: Option<String>,
    /// Key pair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ec2_key_name: Option<String>,
    /// Extra security groups of the primary node.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub additional_master_security_groups: Vec<String>,
    /// Extra security groups of the other nodes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub additional_slave_security_groups: Vec<String>,
    /// The cluster waits for steps (lake terminates it; idle auto-termination backs that up).
    pub keep_job_flow_alive_when_no_steps: bool,
    /// Never protected: lake must be able to terminate it.
    pub termination_protected: bool,
}

/// An instance group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceGroup {
    /// Name.
    pub name: String,
    /// `MASTER`, `CORE`, `TASK`.
    pub instance_role: String,
    /// `ON_DEMAND` or `SPOT`.
    pub market: String,
    /// Spot price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bid_price: Option<String>,
    /// EC2 type.
    pub instance_type: String,
    /// Instances.
    pub instance_count: i32,
    /// Volumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ebs_configuration: Option<EbsConfiguration>,
}

/// An instance fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceFleet {
    /// Name.
    pub name: String,
    /// `MASTER`, `CORE`, `TASK`.
    pub instance_fleet_type: String,
    /// On-demand units.
    pub target_on_demand_capacity: i32,
    /// Spot units.
    pub target_spot_capacity: i32,
    /// Types.
    pub instance_type_configs: Vec<InstanceTypeConfig>,
}

/// One type of a fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InstanceTypeConfig {
    /// EC2 type.
    pub instance_type: String,
    /// Volumes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ebs_configuration: Option<EbsConfiguration>,
}

/// Volumes of an instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EbsConfiguration {
    /// Volume kinds.
    pub ebs_block_device_configs: Vec<EbsBlockDeviceConfig>,
}

/// One volume kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EbsBlockDeviceConfig {
    /// The volume.
    pub volume_specification: VolumeSpecification,
    /// Per instance.
    pub volumes_per_instance: i32,
}

/// A volume.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeSpecification {
    /// `gp3`, …
    pub volume_type: String,
    /// GiB.
    #[serde(rename = "SizeInGB")]
    pub size_in_gb: i32,
    /// IOPS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iops: Option<i32>,
    /// MiB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput: Option<i32>,
}

/// A bootstrap action.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BootstrapAction {
    /// Name.
    pub name: String,
    /// The script.
    pub script_bootstrap_action: ScriptBootstrapAction,
}

/// A bootstrap script.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScriptBootstrapAction {
    /// `s3://…`.
    pub path: String,
    /// Arguments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// An application configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Configuration {
    /// Classification.
    pub classification: String,
    /// Properties.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
    /// Nested.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configurations: Vec<Configuration>,
}

/// A tag.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// Idle auto-termination.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AutoTerminationPolicy {
    /// Seconds.
    pub idle_timeout: i64,
}

/// One step of `AddJobFlowSteps`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Step {
    /// Name.
    pub name: String,
    /// Always `CONTINUE`: lake decides what a failure means and terminates the cluster itself.
    pub action_on_failure: String,
    /// What runs.
    pub hadoop_jar_step: HadoopJarStep,
}

/// The program of a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HadoopJarStep {
    /// `command-runner.jar` or a JAR in S3.
    pub jar: String,
    /// Arguments.
    pub args: Vec<String>,
}

impl Step {
    /// A step that runs `args` through command-runner.jar.
    pub fn command_runner(name: &str, args: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            action_on_failure: "CONTINUE".into(),
            hadoop_jar_step: HadoopJarStep {
                jar: "command-runner.jar".into(),
                args,
            },
        }
    }

    pub(crate) fn to_sdk(&self) -> t::StepConfig {
        t::StepConfig::builder()
            .name(&self.name)
            .action_on_failure(t::ActionOnFailure::from(self.action_on_failure.as_str()))
            .hadoop_jar_step(
                t::HadoopJarStepConfig::builder()
                    .jar(&self.hadoop_jar_step.jar)
                    .set_args(Some(self.hadoop_jar_step.args.clone()))
                    .build(),
            )
            .build()
    }
}

impl RunJobFlow {
    /// The request for a cluster of `def`, with `tags` (lake's own included).
    pub fn new(def: &ClusterDef, tags: &BTreeMap<String, String>) -> Self {
        let mut all_tags = def.tags.clone();
        all_tags.extend(tags.clone());
        let (instance_groups, instance_fleets) = match &def.instances {
            Instances::Groups(groups) => (
                groups
                    .iter()
                    .map(|g| InstanceGroup {
                        name: g.role.api_name().to_lowercase(),
                        instance_role: g.role.api_name().into(),
                        market: if g.spot.is_some() {
                            "SPOT"
                        } else {
                            "ON_DEMAND"
                        }
                        .into(),
                        bid_price: g.spot.clone().flatten(),
                        instance_type: g.instance_type.clone(),
                        instance_count: g.count as i32,
                        ebs_configuration: ebs(&g.ebs),
                    })
                    .collect(),
                Vec::new(),
            ),
            Instances::Fleets(fleets) => (
                Vec::new(),
                fleets
                    .iter()
                    .map(|f| InstanceFleet {
                        name: f.role.api_name().to_lowercase(),
                        instance_fleet_type: f.role.api_name().into(),
                        target_on_demand_capacity: f.on_demand as i32,
                        target_spot_capacity: f.spot as i32,
                        instance_type_configs: f
                            .types
                            .iter()
                            .map(|ty| InstanceTypeConfig {
                                instance_type: ty.clone(),
                                ebs_configuration: ebs(&f.ebs),
                            })
                            .collect(),
                    })
                    .collect(),
            ),
        };
        Self {
            name: def.name.clone(),
            release_label: def.release.clone(),
            log_uri: def.log_uri.clone(),
            applications: def
                .applications
                .iter()
                .map(|a| Application { name: a.clone() })
                .collect(),
            instances: JobFlowInstances {
                instance_groups,
                instance_fleets,
                ec2_subnet_id: def.subnet.clone(),
                ec2_key_name: def.key_pair.clone(),
                additional_master_security_groups: def.security_groups.clone(),
                additional_slave_security_groups: def.security_groups.clone(),
                keep_job_flow_alive_when_no_steps: true,
                termination_protected: false,
            },
            bootstrap_actions: def
                .bootstrap
                .iter()
                .map(|b| BootstrapAction {
                    name: b.name.clone(),
                    script_bootstrap_action: ScriptBootstrapAction {
                        path: b.path.clone(),
                        args: b.args.clone(),
                    },
                })
                .collect(),
            configurations: def.configurations.iter().map(configuration).collect(),
            service_role: def.service_role.clone(),
            job_flow_role: def.instance_profile.clone(),
            visible_to_all_users: true,
            tags: all_tags
                .into_iter()
                .map(|(key, value)| Tag { key, value })
                .collect(),
            auto_termination_policy: def.idle_timeout.map(|d| AutoTerminationPolicy {
                idle_timeout: d.as_secs() as i64,
            }),
            step_concurrency_level: def.step_concurrency as i32,
        }
    }

    /// Fill an SDK RunJobFlow call with this request.
    pub(crate) fn apply(
        &self,
        call: aws_sdk_emr::operation::run_job_flow::builders::RunJobFlowFluentBuilder,
    ) -> aws_sdk_emr::operation::run_job_flow::builders::RunJobFlowFluentBuilder {
        let i = &self.instances;
        let instances = t::JobFlowInstancesConfig::builder()
            .set_instance_groups(listed(&i.instance_groups, InstanceGroup::to_sdk))
            .set_instance_fleets(listed(&i.instance_fleets, InstanceFleet::to_sdk))
            .set_ec2_subnet_id(i.ec2_subnet_id.clone())
            .set_ec2_key_name(i.ec2_key_name.clone())
            .set_additional_master_security_groups(listed(
                &i.additional_master_security_groups,
                Clone::clone,
            ))
            .set_additional_slave_security_groups(listed(
                &i.additional_slave_security_groups,
                Clone::clone,
            ))
            .keep_job_flow_alive_when_no_steps(i.keep_job_flow_alive_when_no_steps)
            .termination_protected(i.termination_protected)
            .build();
        call.name(&self.name)
            .release_label(&self.release_label)
            .set_log_uri(self.log_uri.clone())
            .set_applications(Some(
                self.applications
                    .iter()
                    .map(|a| t::Application::builder().name(&a.name).build())
                    .collect(),
            ))
            .instances(instances)
            .set_bootstrap_actions(listed(&self.bootstrap_actions, |b| {
                t::BootstrapActionConfig::builder()
                    .name(&b.name)
                    .script_bootstrap_action(
                        t::ScriptBootstrapActionConfig::builder()
                            .path(&b.script_bootstrap_action.path)
                            .set_args(Some(b.script_bootstrap_action.args.clone()))
                            .build(),
                    )
                    .build()
            }))
            .set_configurations(listed(&self.configurations, Configuration::to_sdk))
            .service_role(&self.service_role)
            .job_flow_role(&self.job_flow_role)
            .visible_to_all_users(self.visible_to_all_users)
            .set_tags(Some(
                self.tags
                    .iter()
                    .map(|t| t::Tag::builder().key(&t.key).value(&t.value).build())
                    .collect(),
            ))
            .set_auto_termination_policy(self.auto_termination_policy.as_ref().map(|a| {
                t::AutoTerminationPolicy::builder()
                    .idle_timeout(a.idle_timeout)
                    .build()
            }))
            .step_concurrency_level(self.step_concurrency_level)
    }
}

impl InstanceGroup {
    fn to_sdk(&self) -> t::InstanceGroupConfig {
        t::InstanceGroupConfig::builder()
            .name(&self.name)
            .instance_role(t::InstanceRoleType::from(self.instance_role.as_str()))
            .market(t::MarketType::from(self.market.as_str()))
            .set_bid_price(self.bid_price.clone())
            .instance_type(&self.instance_type)
            .instance_count(self.instance_count)
            .set_ebs_configuration(
                self.ebs_configuration
                    .as_ref()
                    .map(EbsConfiguration::to_sdk),
            )
            .build()
    }
}

impl InstanceFleet {
    fn to_sdk(&self) -> t::InstanceFleetConfig {
        t::InstanceFleetConfig::builder()
            .name(&self.name)
            .instance_fleet_type(t::InstanceFleetType::from(
                self.instance_fleet_type.as_str(),
            ))
            .target_on_demand_capacity(self.target_on_demand_capacity)
            .target_spot_capacity(self.target_spot_capacity)
            .set_instance_type_configs(Some(
                self.instance_type_configs
                    .iter()
                    .map(|c| {
                        t::InstanceTypeConfig::builder()
                            .instance_type(&c.instance_type)
                            .set_ebs_configuration(
                                c.ebs_configuration.as_ref().map(EbsConfiguration::to_sdk),
                            )
                            .build()
                    })
                    .collect(),
            ))
            .build()
    }
}

impl EbsConfiguration {
    fn to_sdk(&self) -> t::EbsConfiguration {
        t::EbsConfiguration::builder()
            .set_ebs_block_device_configs(Some(
                self.ebs_block_device_configs
                    .iter()
                    .map(|d| {
                        let v = &d.volume_specification;
                        t::EbsBlockDeviceConfig::builder()
                            .volume_specification(
                                t::VolumeSpecification::builder()
                                    .volume_type(&v.volume_type)
                                    .size_in_gb(v.size_in_gb)
                                    .set_iops(v.iops)
                                    .set_throughput(v.throughput)
                                    .build(),
                            )
                            .volumes_per_instance(d.volumes_per_instance)
                            .build()
                    })
                    .collect(),
            ))
            .build()
    }
}

impl Configuration {
    fn to_sdk(&self) -> t::Configuration {
        t::Configuration::builder()
            .classification(&self.classification)
            .set_properties((!self.properties.is_empty()).then(|| {
                self.properties
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            }))
            .set_configurations(listed(&self.configurations, Configuration::to_sdk))
            .build()
    }
}

/// `None` for an empty list, as the JSON leaves empty lists out: the request sent is the one
/// printed.
fn listed<T, U>(items: &[T], f: impl Fn(&T) -> U) -> Option<Vec<U>> {
    (!items.is_empty()).then(|| items.iter().map(f).collect())
}

fn ebs(volumes: &[EbsConfig]) -> Option<EbsConfiguration> {
    (!volumes.is_empty()).then(|| EbsConfiguration {
        ebs_block_device_configs: volumes
            .iter()
            .map(|v| EbsBlockDeviceConfig {
                volume_specification: VolumeSpecification {
                    volume_type: v.volume_type.clone().unwrap_or_else(|| "gp3".into()),
                    size_in_gb: v.size_gb as i32,
                    iops: v.iops.map(|n| n as i32),
                    throughput: v.throughput.map(|n| n as i32),
                },
                volumes_per_instance: v.count.unwrap_or(1) as i32,
            })
            .collect(),
    })
}

fn configuration(c: &ConfigurationConfig) -> Configuration {
    Configuration {
        classification: c.classification.clone(),
        properties: c.properties.clone(),
        configurations: c.configurations.iter().map(configuration).collect(),
    }
}
