//! `backend = "emr"` as a plug-in: the `[cluster]` table, its plan and estimate, the
//! `max_cost` check, doctor checks, IAM statements and the clusters runs left behind.

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use lake_core::backend::{BackendConfig, BackendEnv, BackendKind, BackendPlan, Leftover};
use lake_core::cluster::{ClusterBackend, ClusterSpec, StepRequest};
use lake_core::config::{ConfigCx, Pipeline, Root, StepSpec};
use lake_core::doctor::Check;
use lake_core::run::PLAN_RUN_ID;
use lake_core::{Error, Result};

use super::config::{ClusterConfig, cluster_def};
use super::{ClusterDef, ClusterStatus, EmrBackend, RunJobFlow, SdkEmr};
use crate::Aws;

/// `backend = "emr"`: steps on an EMR cluster lake creates (or attaches to) from `[cluster]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmrKind;

impl BackendKind for EmrKind {
    fn name(&self) -> &'static str {
        "emr"
    }

    fn table(&self) -> Option<&'static str> {
        Some("cluster")
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn BackendConfig>> {
        let raw: Option<ClusterConfig> = cx.table("cluster");
        let (pipeline, root) = (cx.pipeline, cx.root);
        let def = cluster_def(cx, raw.as_ref(), pipeline, root);
        if !cx.selected() {
            return None;
        }
        if !crate::emr::needs_s3_root(
            cx,
            "backend = \"emr\" needs zones in S3 (root = \"s3://bucket/prefix\"): an EMR cluster cannot read this machine's folders",
        ) {
            return None;
        }
        Some(Arc::new(EmrConfig { def }))
    }
}

/// A checked `backend = "emr"`: the `[cluster]` a run creates or attaches to.
#[derive(Debug, Clone)]
pub struct EmrConfig {
    /// The checked `[cluster]`.
    pub def: ClusterDef,
}

impl EmrConfig {
    /// The EMR config of a pipeline whose backend is `emr`.
    pub fn of(pipeline: &lake_core::config::Pipeline) -> Option<&Self> {
        pipeline.backend.downcast()
    }
}

/// The AWS configuration the program loaded (the facade shares it), or one loaded now.
pub async fn aws_of(env: &BackendEnv) -> Aws {
    match env.extensions.get::<Aws>() {
        Some(aws) => aws.clone(),
        None => Aws::load(&crate::AwsSpec::of(&env.pipeline)).await,
    }
}

/// EMR's switch for Iceberg (`iceberg-defaults`: `iceberg.enabled = true`, EMR 6.5 and later),
/// added to a cluster lake creates when a step of `pipeline` writes an Iceberg table and the
/// user set no `iceberg-defaults` of their own: Spark on the cluster (a notebook, a step of
/// the user's) then reads the tables lake commits. lake's own steps need none of it (lake
/// commits the snapshot from the Parquet its Spark driver writes).
fn with_iceberg(mut def: ClusterDef, pipeline: &Pipeline) -> ClusterDef {
    const ICEBERG: &str = "iceberg-defaults";
    let iceberg = pipeline
        .steps
        .values()
        .any(|s| s.table_format != lake_core::table_format::PARQUET);
    if iceberg
        && !def
            .configurations
            .iter()
            .any(|c| c.classification == ICEBERG)
    {
        def.configurations.push(super::config::ConfigurationConfig {
            classification: ICEBERG.to_owned(),
            properties: [("iceberg.enabled".to_owned(), "true".to_owned())].into(),
            configurations: Vec::new(),
        });
    }
    def
}

impl EmrConfig {
    /// The backend over the SDK, for `env`'s pipeline and zones.
    pub async fn backend(&self, env: &BackendEnv) -> EmrBackend {
        let aws = aws_of(env).await;
        EmrBackend::new(
            Arc::new(SdkEmr::new(aws.emr(), aws.s3())),
            with_iceberg(self.def.clone(), &env.pipeline),
            Arc::clone(&env.store),
            &env.pipeline.name,
        )
    }

    fn estimate(&self, steps: &[&StepSpec]) -> super::config::Estimate {
        self.def.estimate(steps.iter().copied())
    }

    fn render(
        &self,
        create: Option<&RunJobFlow>,
        steps: &[super::Step],
        steps_of: &[&StepSpec],
    ) -> String {
        let c = &self.def;
        let mut out = String::new();
        match create {
            Some(req) => {
                let _ = writeln!(
                    out,
                    "emr: a new cluster, terminated when the run ends. RunJobFlow:"
                );
                let _ = writeln!(out, "{}", pretty(req));
            }
            None => {
                let _ = writeln!(
                    out,
                    "emr: attach to a running cluster ({:?}); lake will not terminate it",
                    c.attach
                );
            }
        }
        let _ = writeln!(
            out,
            "AddJobFlowSteps, one call per step ({PLAN_RUN_ID} is the run's id; code and job files go to content-addressed _lake/code/<hash>/):"
        );
        let _ = writeln!(out, "{}", pretty(&steps));
        if create.is_some() {
            let e = self.estimate(steps_of);
            let _ = write!(
                out,
                "estimate: {:.1} instance-hours ({:.2} h: 10m to start plus each step's timeout, 30m without one{})",
                e.instance_hours,
                e.hours,
                if c.expected_runtime.is_some() {
                    "; expected_runtime set"
                } else {
                    ""
                }
            );
            let _ = match (e.cost, c.max_cost) {
                (Some(cost), Some(max)) => writeln!(
                    out,
                    "; cost ${cost:.2}, max_cost ${max:.2}{}",
                    if cost > max {
                        " — a run would be REFUSED"
                    } else {
                        ""
                    }
                ),
                (Some(cost), None) => writeln!(out, "; cost ${cost:.2}"),
                (None, _) => writeln!(
                    out,
                    "; no cost: [cluster.price_per_hour] has no price for {}",
                    e.unpriced.join(", ")
                ),
            };
        }
        out
    }
}

fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn leftover(c: ClusterStatus) -> Leftover {
    Leftover {
        id: c.id,
        name: c.name,
        state: c.state,
        tags: c.tags.into_iter().collect(),
        created: c.created,
    }
}

#[async_trait]
impl BackendConfig for EmrConfig {
    fn name(&self) -> &'static str {
        "emr"
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.def).unwrap_or_default()
    }

    fn step_concurrency(&self) -> Option<usize> {
        Some(self.def.step_concurrency as usize)
    }

    async fn preflight(&self, pipeline: &Pipeline, steps: &[&StepSpec]) -> Result<()> {
        let (Some(max), None) = (self.def.max_cost, &self.def.attach) else {
            return Ok(());
        };
        let est = self.estimate(steps);
        match est.cost {
            Some(cost) if cost > max => Err(Error::Invalid {
                what: format!("{} [cluster] max_cost", pipeline.file.display()),
                message: format!(
                    "the run is estimated at ${cost:.2} ({:.1} instance-hours over {:.2} h), above max_cost = ${max:.2}; \
                     the plan shows the estimate. Raise max_cost, shorten step timeouts or set expected_runtime",
                    est.instance_hours, est.hours
                ),
            }),
            _ => Ok(()),
        }
    }

    async fn open(&self, env: &BackendEnv) -> Result<Arc<dyn ClusterBackend>> {
        Ok(Arc::new(self.backend(env).await))
    }

    async fn plan(&self, env: &BackendEnv, steps: &[StepRequest]) -> Result<Option<BackendPlan>> {
        let p = &env.pipeline;
        let spec = ClusterSpec::new(&p.name, PLAN_RUN_ID, &env.store.root_url());
        let backend = self.backend(env).await;
        let (create, requests) = backend.plan(&spec, steps).await?;
        let specs: Vec<&StepSpec> = steps.iter().filter_map(|s| p.steps.get(&s.name)).collect();
        let est = self.estimate(&specs);
        let text = self.render(create.as_ref(), &requests, &specs);
        Ok(Some(BackendPlan {
            json: serde_json::json!({
                "run_job_flow": create,
                "steps": requests,
                "estimate": est,
            }),
            text,
        }))
    }

    async fn doctor(&self, env: &BackendEnv) -> Vec<Check> {
        let aws = aws_of(env).await;
        let (_, caller) = crate::doctor::aws_identity(&aws).await;
        crate::doctor::emr_checks(&aws, &self.def, caller.as_deref()).await
    }

    fn iam_statements(&self, pipeline: &Pipeline) -> Vec<serde_json::Value> {
        match &pipeline.root {
            Root::S3 { bucket, prefix } => {
                crate::policy::emr_statements(pipeline, &self.def, bucket, prefix)
            }
            Root::Local { .. } => Vec::new(),
        }
    }

    async fn leftovers(&self, env: &BackendEnv) -> Result<Vec<Leftover>> {
        Ok(self
            .backend(env)
            .await
            .clusters()
            .await?
            .into_iter()
            .map(leftover)
            .collect())
    }

    async fn reap(&self, env: &BackendEnv, live: Option<&str>) -> Result<Vec<Leftover>> {
        Ok(self
            .backend(env)
            .await
            .reap(live)
            .await?
            .into_iter()
            .map(leftover)
            .collect())
    }
}
