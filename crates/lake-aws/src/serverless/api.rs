//! The EMR Serverless (and S3 log) calls the backend makes, behind a trait so the job
//! lifecycles can be tested with mocks; [`SdkServerless`] makes them with the AWS SDK. The
//! requests are lake's own types, serialized as the API's JSON for `lake plan`.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use aws_sdk_emrserverless::types as t;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::calls::{ApiError, api_error};

/// CreateApplication, as lake asks for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateApplication {
    /// The application's name.
    pub name: String,
    /// EMR release label.
    pub release_label: String,
    /// Always `SPARK`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Idempotency token (the run's id): a retried call makes no second application.
    pub client_token: String,
    /// The most capacity its jobs may use together.
    pub maximum_capacity: Capacity,
    /// Started by the first job run.
    pub auto_start_configuration: AutoStart,
    /// Stopped after this idle time, even if lake cannot stop it.
    pub auto_stop_configuration: AutoStop,
    /// `lake:pipeline`, `lake:run-id`, `lake:root` and the user's.
    pub tags: BTreeMap<String, String>,
}

/// `maximumCapacity`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Capacity {
    /// `"16 vCPU"`.
    pub cpu: String,
    /// `"64 GB"`.
    pub memory: String,
}

/// `autoStartConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoStart {
    /// On.
    pub enabled: bool,
}

/// `autoStopConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoStop {
    /// On or off.
    pub enabled: bool,
    /// Idle minutes before it stops.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_timeout_minutes: Option<i32>,
}

/// StartJobRun, as lake asks for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartJobRun {
    /// The application.
    pub application_id: String,
    /// Idempotency token (run and step): a retried call starts no second job.
    pub client_token: String,
    /// The step's name.
    pub name: String,
    /// The role the job runs as.
    pub execution_role_arn: String,
    /// What it runs.
    pub job_driver: JobDriver,
    /// `spark-defaults` and where logs go.
    pub configuration_overrides: ConfigurationOverrides,
    /// EMR Serverless cancels the job after this, even if lake cannot (the step's timeout,
    /// rounded up, plus 5 minutes; 12 hours without one).
    pub execution_timeout_minutes: i64,
    /// The application's tags, and the step.
    pub tags: BTreeMap<String, String>,
}

/// `jobDriver` (Spark only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobDriver {
    /// `sparkSubmit`.
    pub spark_submit: SparkSubmit,
}

/// `jobDriver.sparkSubmit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SparkSubmit {
    /// The script or JAR (`s3://…`).
    pub entry_point: String,
    /// Its arguments.
    pub entry_point_arguments: Vec<String>,
    /// `spark-submit` options (`--class`, `--conf k=v`, …), space-separated.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub spark_submit_parameters: String,
}

/// `configurationOverrides`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationOverrides {
    /// `spark-defaults` properties, when any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub application_configuration: Vec<Classification>,
    /// Where the driver's and executors' logs go.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitoring_configuration: Option<Monitoring>,
}

/// One classification of `applicationConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Classification {
    /// `spark-defaults`.
    pub classification: String,
    /// Its properties.
    pub properties: BTreeMap<String, String>,
}

/// `monitoringConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Monitoring {
    /// `s3MonitoringConfiguration`.
    pub s3_monitoring_configuration: S3Logs,
}

/// `s3MonitoringConfiguration`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Logs {
    /// `s3://…/`.
    pub log_uri: String,
}

/// An application as EMR Serverless reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplicationStatus {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `CREATING`, `CREATED`, `STARTING`, `STARTED`, `STOPPING`, `STOPPED`, `TERMINATED`.
    pub state: String,
    /// Why it is in that state, when the service says.
    pub details: Option<String>,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// When it was created.
    pub created: Option<DateTime<Utc>>,
}

/// A job run as EMR Serverless reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobRunStatus {
    /// Its id.
    pub id: String,
    /// `SUBMITTED`, `PENDING`, `SCHEDULED`, `QUEUED`, `RUNNING`, `SUCCESS`, `FAILED`,
    /// `CANCELLING`, `CANCELLED`.
    pub state: String,
    /// `stateDetails`: why it failed, when it did.
    pub details: Option<String>,
}

impl JobRunStatus {
    /// True once the job will not change state again.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "SUCCESS" | "FAILED" | "CANCELLED")
    }
}

/// The calls the EMR Serverless backend makes.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait ServerlessApi: Send + Sync + fmt::Debug {
    /// CreateApplication: the new application's id.
    async fn create_application(&self, request: &CreateApplication) -> Result<String, ApiError>;
    /// GetApplication.
    async fn get_application(&self, id: &str) -> Result<ApplicationStatus, ApiError>;
    /// StopApplication.
    async fn stop_application(&self, id: &str) -> Result<(), ApiError>;
    /// DeleteApplication.
    async fn delete_application(&self, id: &str) -> Result<(), ApiError>;
    /// Applications that are not terminated, with their tags.
    async fn live_applications(&self) -> Result<Vec<ApplicationStatus>, ApiError>;
    /// StartJobRun: the job run's id.
    async fn start_job_run(&self, request: &StartJobRun) -> Result<String, ApiError>;
    /// GetJobRun.
    async fn get_job_run(&self, application: &str, id: &str) -> Result<JobRunStatus, ApiError>;
    /// CancelJobRun.
    async fn cancel_job_run(&self, application: &str, id: &str) -> Result<(), ApiError>;
    /// An S3 object (a log file), or `None` when it does not exist (yet).
    async fn read_object(&self, url: &str) -> Result<Option<Vec<u8>>, ApiError>;
}

/// [`ServerlessApi`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct SdkServerless {
    client: aws_sdk_emrserverless::Client,
    s3: aws_sdk_s3::Client,
}

impl SdkServerless {
    /// Calls through these clients (from [`Aws`](crate::Aws)).
    pub fn new(client: aws_sdk_emrserverless::Client, s3: aws_sdk_s3::Client) -> Self {
        Self { client, s3 }
    }
}

fn invalid(what: &str, e: impl fmt::Display) -> ApiError {
    ApiError::new("InvalidRequest", format!("{what}: {e}"))
}

impl StartJobRun {
    fn driver(&self) -> Result<t::JobDriver, ApiError> {
        let s = &self.job_driver.spark_submit;
        let submit = t::SparkSubmit::builder()
            .entry_point(&s.entry_point)
            .set_entry_point_arguments(Some(s.entry_point_arguments.clone()))
            .set_spark_submit_parameters(
                (!s.spark_submit_parameters.is_empty()).then(|| s.spark_submit_parameters.clone()),
            )
            .build()
            .map_err(|e| invalid("sparkSubmit", e))?;
        Ok(t::JobDriver::SparkSubmit(submit))
    }

    fn overrides(&self) -> Result<t::ConfigurationOverrides, ApiError> {
        let o = &self.configuration_overrides;
        let mut b = t::ConfigurationOverrides::builder();
        for c in &o.application_configuration {
            b = b.application_configuration(
                t::Configuration::builder()
                    .classification(&c.classification)
                    .set_properties(Some(c.properties.clone().into_iter().collect()))
                    .build()
                    .map_err(|e| invalid("applicationConfiguration", e))?,
            );
        }
        if let Some(m) = &o.monitoring_configuration {
            b = b.monitoring_configuration(
                t::MonitoringConfiguration::builder()
                    .s3_monitoring_configuration(
                        t::S3MonitoringConfiguration::builder()
                            .log_uri(&m.s3_monitoring_configuration.log_uri)
                            .build(),
                    )
                    .build(),
            );
        }
        Ok(b.build())
    }
}

fn time(d: &aws_sdk_emrserverless::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(d.secs(), d.subsec_nanos())
}

#[async_trait]
impl ServerlessApi for SdkServerless {
    async fn create_application(&self, r: &CreateApplication) -> Result<String, ApiError> {
        let out = self
            .client
            .create_application()
            .name(&r.name)
            .release_label(&r.release_label)
            .r#type(&r.kind)
            .client_token(&r.client_token)
            .maximum_capacity(
                t::MaximumAllowedResources::builder()
                    .cpu(&r.maximum_capacity.cpu)
                    .memory(&r.maximum_capacity.memory)
                    .build()
                    .map_err(|e| invalid("maximumCapacity", e))?,
            )
            .auto_start_configuration(
                t::AutoStartConfig::builder()
                    .enabled(r.auto_start_configuration.enabled)
                    .build(),
            )
            .auto_stop_configuration(
                t::AutoStopConfig::builder()
                    .enabled(r.auto_stop_configuration.enabled)
                    .set_idle_timeout_minutes(r.auto_stop_configuration.idle_timeout_minutes)
                    .build(),
            )
            .set_tags(Some(r.tags.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(out.application_id().to_owned())
    }

    async fn get_application(&self, id: &str) -> Result<ApplicationStatus, ApiError> {
        let out = self
            .client
            .get_application()
            .application_id(id)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        let a = out.application().ok_or_else(|| {
            ApiError::new("InvalidResponse", "GetApplication returned no application")
        })?;
        Ok(ApplicationStatus {
            id: a.application_id().to_owned(),
            name: a.name().unwrap_or_default().to_owned(),
            state: a.state().as_str().to_owned(),
            details: a
                .state_details()
                .filter(|d| !d.is_empty())
                .map(str::to_owned),
            tags: a
                .tags()
                .map(|t| t.clone().into_iter().collect())
                .unwrap_or_default(),
            created: time(a.created_at()),
        })
    }

    async fn stop_application(&self, id: &str) -> Result<(), ApiError> {
        self.client
            .stop_application()
            .application_id(id)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(())
    }

    async fn delete_application(&self, id: &str) -> Result<(), ApiError> {
        self.client
            .delete_application()
            .application_id(id)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(())
    }

    async fn live_applications(&self) -> Result<Vec<ApplicationStatus>, ApiError> {
        let mut ids = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_applications()
                .set_states(Some(vec![
                    t::ApplicationState::Creating,
                    t::ApplicationState::Created,
                    t::ApplicationState::Starting,
                    t::ApplicationState::Started,
                    t::ApplicationState::Stopping,
                    t::ApplicationState::Stopped,
                ]))
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| api_error(&e))?;
            ids.extend(page.applications().iter().map(|a| a.id().to_owned()));
            token = page.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        // ListApplications has no tags: one GetApplication each. One lake may not read (the
        // policy limits it to applications tagged with its pipeline) is not one of lake's.
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.get_application(&id).await {
                Ok(a) => out.push(a),
                Err(e) if e.is_access_denied() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn start_job_run(&self, r: &StartJobRun) -> Result<String, ApiError> {
        let out = self
            .client
            .start_job_run()
            .application_id(&r.application_id)
            .client_token(&r.client_token)
            .name(&r.name)
            .execution_role_arn(&r.execution_role_arn)
            .job_driver(r.driver()?)
            .configuration_overrides(r.overrides()?)
            .execution_timeout_minutes(r.execution_timeout_minutes)
            .set_tags(Some(r.tags.clone().into_iter().collect()))
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(out.job_run_id().to_owned())
    }

    async fn get_job_run(&self, application: &str, id: &str) -> Result<JobRunStatus, ApiError> {
        let out = self
            .client
            .get_job_run()
            .application_id(application)
            .job_run_id(id)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        let j = out
            .job_run()
            .ok_or_else(|| ApiError::new("InvalidResponse", "GetJobRun returned no job run"))?;
        Ok(JobRunStatus {
            id: j.job_run_id().to_owned(),
            state: j.state().as_str().to_owned(),
            details: Some(j.state_details().trim().to_owned()).filter(|d| !d.is_empty()),
        })
    }

    async fn cancel_job_run(&self, application: &str, id: &str) -> Result<(), ApiError> {
        self.client
            .cancel_job_run()
            .application_id(application)
            .job_run_id(id)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        Ok(())
    }

    async fn read_object(&self, url: &str) -> Result<Option<Vec<u8>>, ApiError> {
        crate::calls::read_s3_object(&self.s3, url).await
    }
}
