//! The EMR (and S3 log) calls the backend makes, behind a trait so the step lifecycles can be
//! tested with mocks; [`SdkEmr`] makes them with the AWS SDK.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use aws_sdk_emr::types as t;
use chrono::{DateTime, Utc};

use super::request::{RunJobFlow, Step};
pub use crate::calls::ApiError;
use crate::calls::api_error;

/// A step as EMR reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepStatus {
    /// Step id (`s-…`).
    pub id: String,
    /// `PENDING`, `CANCEL_PENDING`, `RUNNING`, `COMPLETED`, `CANCELLED`, `FAILED`, `INTERRUPTED`.
    pub state: String,
    /// Why it failed, when it did.
    pub failure: Option<FailureDetails>,
}

/// EMR's `FailureDetails` of a step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailureDetails {
    /// Short reason.
    pub reason: Option<String>,
    /// Longer message.
    pub message: Option<String>,
    /// The log file EMR found the cause in.
    pub log_file: Option<String>,
}

/// A cluster as EMR reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Cluster id (`j-…`).
    pub id: String,
    /// Name.
    pub name: String,
    /// `STARTING`, `BOOTSTRAPPING`, `RUNNING`, `WAITING`, `TERMINATING`, `TERMINATED`,
    /// `TERMINATED_WITH_ERRORS`.
    pub state: String,
    /// The state change reason (code and message), if any.
    pub reason: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Log location.
    pub log_uri: Option<String>,
    /// When it was created.
    pub created: Option<DateTime<Utc>>,
}

impl ClusterStatus {
    /// Terminating or terminated.
    pub fn is_ending(&self) -> bool {
        self.state.starts_with("TERMINAT")
    }

    /// Able to run steps (or about to be).
    pub fn is_active(&self) -> bool {
        matches!(
            self.state.as_str(),
            "STARTING" | "BOOTSTRAPPING" | "RUNNING" | "WAITING"
        )
    }
}

/// The calls the EMR backend makes.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait EmrApi: Send + Sync + fmt::Debug {
    /// RunJobFlow: the new cluster's id.
    async fn run_job_flow(&self, request: &RunJobFlow) -> Result<String, ApiError>;
    /// AddJobFlowSteps: the new steps' ids.
    async fn add_steps(&self, cluster: &str, steps: &[Step]) -> Result<Vec<String>, ApiError>;
    /// ListSteps for these step ids (all pages).
    async fn list_steps(&self, cluster: &str, ids: &[String]) -> Result<Vec<StepStatus>, ApiError>;
    /// DescribeCluster.
    async fn describe_cluster(&self, cluster: &str) -> Result<ClusterStatus, ApiError>;
    /// CancelSteps (the step's process is stopped).
    async fn cancel_steps(&self, cluster: &str, ids: &[String]) -> Result<(), ApiError>;
    /// TerminateJobFlows.
    async fn terminate(&self, cluster: &str) -> Result<(), ApiError>;
    /// Clusters that are starting, running or waiting, with their tags.
    async fn active_clusters(&self) -> Result<Vec<ClusterStatus>, ApiError>;
    /// An S3 object (a log file), or `None` when it does not exist (yet).
    async fn read_object(&self, url: &str) -> Result<Option<Vec<u8>>, ApiError>;
}

/// [`EmrApi`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct SdkEmr {
    emr: aws_sdk_emr::Client,
    s3: aws_sdk_s3::Client,
}

impl SdkEmr {
    /// Calls through these clients (from [`Aws`](crate::Aws)).
    pub fn new(emr: aws_sdk_emr::Client, s3: aws_sdk_s3::Client) -> Self {
        Self { emr, s3 }
    }
}

#[async_trait]
impl EmrApi for SdkEmr {
    async fn run_job_flow(&self, request: &RunJobFlow) -> Result<String, ApiError> {
        let out = request
            .apply(self.emr.run_job_flow())
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        out.job_flow_id()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::new("InvalidResponse", "RunJobFlow returned no cluster id"))
    }

    async fn add_steps(&self, cluster: &str, steps: &[Step]) -> Result<Vec<String>, ApiError> {
        let out = self
            .emr
            .add_job_flow_steps()
            .job_flow_id(cluster)
            .set_steps(Some(steps.iter().map(Step::to_sdk).collect()))
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(out.step_ids().to_vec())
    }

    async fn list_steps(&self, cluster: &str, ids: &[String]) -> Result<Vec<StepStatus>, ApiError> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .emr
                .list_steps()
                .cluster_id(cluster)
                .set_step_ids(Some(ids.to_vec()))
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| api_error(&e))?;
            for s in page.steps() {
                let status = s.status();
                out.push(StepStatus {
                    id: s.id().unwrap_or_default().to_owned(),
                    state: status
                        .and_then(|st| st.state())
                        .map(|st| st.as_str().to_owned())
                        .unwrap_or_default(),
                    failure: status
                        .and_then(|st| st.failure_details())
                        .map(|f| FailureDetails {
                            reason: f.reason().map(str::to_owned),
                            message: f.message().map(str::to_owned),
                            log_file: f.log_file().map(str::to_owned),
                        }),
                });
            }
            marker = page.marker().map(str::to_owned);
            if marker.is_none() {
                return Ok(out);
            }
        }
    }

    async fn describe_cluster(&self, cluster: &str) -> Result<ClusterStatus, ApiError> {
        let out = self
            .emr
            .describe_cluster()
            .cluster_id(cluster)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        let c = out.cluster().ok_or_else(|| {
            ApiError::new("InvalidResponse", "DescribeCluster returned no cluster")
        })?;
        Ok(cluster_status(c))
    }

    async fn cancel_steps(&self, cluster: &str, ids: &[String]) -> Result<(), ApiError> {
        self.emr
            .cancel_steps()
            .cluster_id(cluster)
            .set_step_ids(Some(ids.to_vec()))
            .step_cancellation_option(t::StepCancellationOption::TerminateProcess)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(())
    }

    async fn terminate(&self, cluster: &str) -> Result<(), ApiError> {
        self.emr
            .terminate_job_flows()
            .job_flow_ids(cluster)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(())
    }

    async fn active_clusters(&self) -> Result<Vec<ClusterStatus>, ApiError> {
        let mut ids = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .emr
                .list_clusters()
                .set_cluster_states(Some(vec![
                    t::ClusterState::Starting,
                    t::ClusterState::Bootstrapping,
                    t::ClusterState::Running,
                    t::ClusterState::Waiting,
                ]))
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| api_error(&e))?;
            ids.extend(
                page.clusters()
                    .iter()
                    .filter_map(|c| c.id().map(str::to_owned)),
            );
            marker = page.marker().map(str::to_owned);
            if marker.is_none() {
                break;
            }
        }
        // ListClusters has no tags: one DescribeCluster each. A cluster lake may not describe
        // (the policy limits it to clusters tagged with its pipeline) is not one of lake's.
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.describe_cluster(&id).await {
                Ok(c) => out.push(c),
                Err(e) if e.is_access_denied() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn read_object(&self, url: &str) -> Result<Option<Vec<u8>>, ApiError> {
        crate::calls::read_s3_object(&self.s3, url).await
    }
}

fn cluster_status(c: &t::Cluster) -> ClusterStatus {
    let status = c.status();
    ClusterStatus {
        id: c.id().unwrap_or_default().to_owned(),
        name: c.name().unwrap_or_default().to_owned(),
        state: status
            .and_then(|s| s.state())
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        reason: status.and_then(|s| s.state_change_reason()).and_then(|r| {
            match (r.code().map(|c| c.as_str()), r.message()) {
                (None, None) => None,
                (Some(c), None) => Some(c.to_owned()),
                (None, Some(m)) => Some(m.to_owned()),
                (Some(c), Some(m)) => Some(format!("{c}: {m}")),
            }
        }),
        tags: c
            .tags()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                ))
            })
            .collect(),
        log_uri: c.log_uri().map(str::to_owned),
        created: status
            .and_then(|s| s.timeline())
            .and_then(|t| t.creation_date_time())
            .and_then(|d| DateTime::from_timestamp(d.secs(), d.subsec_nanos())),
    }
}
