//! `backend = "emr-serverless"` as a plug-in: the `[serverless]` table, its plan and
//! estimate, the `max_cost` check, doctor checks, IAM statements and the applications runs
//! left behind.

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use lake_core::backend::{BackendConfig, BackendEnv, BackendKind, BackendPlan, Leftover};
use lake_core::cluster::{ClusterBackend, ClusterSpec, StepRequest};
use lake_core::config::{ConfigCx, Pipeline, Root, StepSpec};
use lake_core::doctor::Check;
use lake_core::run::PLAN_RUN_ID;
use lake_core::{Error, Result};

use super::config::{ServerlessConfig, serverless_def};
use super::{ApplicationStatus, SdkServerless, ServerlessBackend, ServerlessDef};
use crate::emr::aws_of;

/// `backend = "emr-serverless"`: `sql` and `spark` steps as job runs of an EMR Serverless
/// application from `[serverless]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmrServerlessKind;

impl BackendKind for EmrServerlessKind {
    fn name(&self) -> &'static str {
        "emr-serverless"
    }

    fn table(&self) -> Option<&'static str> {
        Some("serverless")
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn BackendConfig>> {
        let raw: Option<ServerlessConfig> = cx.table("serverless");
        let (pipeline, root) = (cx.pipeline, cx.root);
        let def = serverless_def(cx, raw.as_ref(), pipeline, root);
        if !cx.selected() {
            return None;
        }
        if !crate::emr::needs_s3_root(
            cx,
            "backend = \"emr-serverless\" needs zones in S3 (root = \"s3://bucket/prefix\"): its jobs cannot read this machine's folders",
        ) {
            return None;
        }
        Some(Arc::new(EmrServerlessConfig { def }))
    }
}

/// A checked `backend = "emr-serverless"`: the `[serverless]` application a run uses.
#[derive(Debug, Clone)]
pub struct EmrServerlessConfig {
    /// The checked `[serverless]`.
    pub def: ServerlessDef,
}

impl EmrServerlessConfig {
    /// The config of a pipeline whose backend is `emr-serverless`.
    pub fn of(pipeline: &Pipeline) -> Option<&Self> {
        pipeline.backend.downcast()
    }

    /// The backend over the SDK, for `env`'s pipeline and zones.
    pub async fn backend(&self, env: &BackendEnv) -> ServerlessBackend {
        let aws = aws_of(env).await;
        ServerlessBackend::new(
            Arc::new(SdkServerless::new(aws.emr_serverless(), aws.s3())),
            self.def.clone(),
            Arc::clone(&env.store),
            &env.pipeline.name,
            env.embedded.clone(),
        )
    }

    fn render(
        &self,
        create: Option<&super::CreateApplication>,
        jobs: &[(String, Option<super::StartJobRun>)],
        steps_of: &[&StepSpec],
    ) -> String {
        let d = &self.def;
        let mut out = String::new();
        match create {
            Some(req) => {
                let _ = writeln!(
                    out,
                    "emr-serverless: a new application, stopped and deleted when the run ends. CreateApplication:"
                );
                let _ = writeln!(out, "{}", pretty(req));
            }
            None => {
                let _ = writeln!(
                    out,
                    "emr-serverless: application {} (existing); lake will not stop or delete it",
                    d.attach.as_deref().unwrap_or("?")
                );
            }
        }
        let _ = writeln!(
            out,
            "StartJobRun, one call per sql or spark step ({PLAN_RUN_ID} is the run's id; code and job files go to content-addressed _lake/code/<hash>/):"
        );
        for (name, job) in jobs {
            match job {
                Some(job) => {
                    let _ = writeln!(out, "{name}:\n{}", pretty(job));
                }
                None => {
                    let _ = writeln!(out, "{name}: runs on this machine (command or copy step)");
                }
            }
        }
        let e = d.estimate(steps_of.iter().copied());
        let _ = write!(
            out,
            "estimate at most: {:.2} h of jobs ({}) at {} and {}: {:.1} vCPU-hours, {:.1} GB-hours, ${:.2}",
            e.hours,
            if d.expected_runtime.is_some() {
                "expected_runtime"
            } else {
                "each step's timeout, 30m without one"
            },
            d.max_cpu,
            d.max_memory,
            e.vcpu_hours,
            e.gb_hours,
            e.cost
        );
        let _ = match d.max_cost {
            Some(max) => writeln!(
                out,
                "; max_cost ${max:.2}{}",
                if e.cost > max {
                    " — a run would be REFUSED"
                } else {
                    ""
                }
            ),
            None => writeln!(out),
        };
        out
    }
}

fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn leftover(a: ApplicationStatus) -> Leftover {
    Leftover {
        id: a.id,
        name: a.name,
        state: a.state,
        tags: a.tags,
        created: a.created,
    }
}

#[async_trait]
impl BackendConfig for EmrServerlessConfig {
    fn name(&self) -> &'static str {
        "emr-serverless"
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::to_value(&self.def).unwrap_or_default()
    }

    async fn preflight(&self, pipeline: &Pipeline, steps: &[&StepSpec]) -> Result<()> {
        let Some(max) = self.def.max_cost else {
            return Ok(());
        };
        let est = self.def.estimate(steps.iter().copied());
        if est.cost > max {
            return Err(Error::Invalid {
                what: format!("{} [serverless] max_cost", pipeline.file.display()),
                message: format!(
                    "the run is estimated at up to ${:.2} ({:.1} vCPU-hours and {:.1} GB-hours over {:.2} h at max_capacity), above max_cost = ${max:.2}; \
                     the plan shows the estimate. Raise max_cost, lower max_capacity, shorten step timeouts or set expected_runtime",
                    est.cost, est.vcpu_hours, est.gb_hours, est.hours
                ),
            });
        }
        Ok(())
    }

    async fn open(&self, env: &BackendEnv) -> Result<Arc<dyn ClusterBackend>> {
        Ok(Arc::new(self.backend(env).await))
    }

    async fn plan(&self, env: &BackendEnv, steps: &[StepRequest]) -> Result<Option<BackendPlan>> {
        let p = &env.pipeline;
        let spec = ClusterSpec::new(&p.name, PLAN_RUN_ID, &env.store.root_url());
        let backend = self.backend(env).await;
        let (create, jobs) = backend.plan(&spec, steps).await?;
        let specs: Vec<&StepSpec> = steps.iter().filter_map(|s| p.steps.get(&s.name)).collect();
        let named: Vec<(String, Option<super::StartJobRun>)> =
            steps.iter().map(|s| s.name.clone()).zip(jobs).collect();
        let text = self.render(create.as_ref(), &named, &specs);
        Ok(Some(BackendPlan {
            json: serde_json::json!({
                "create_application": create,
                "start_job_runs": named.iter().map(|(name, job)| serde_json::json!({ "step": name, "request": job })).collect::<Vec<_>>(),
                "estimate": self.def.estimate(specs.iter().copied()),
            }),
            text,
        }))
    }

    async fn doctor(&self, env: &BackendEnv) -> Vec<Check> {
        let aws = aws_of(env).await;
        let (_, caller) = crate::doctor::aws_identity(&aws).await;
        crate::doctor::serverless_checks(&aws, &self.def, caller.as_deref()).await
    }

    fn iam_statements(&self, pipeline: &Pipeline) -> Vec<serde_json::Value> {
        match &pipeline.root {
            Root::S3 { bucket, prefix } => {
                crate::policy::serverless_statements(pipeline, &self.def, bucket, prefix)
            }
            Root::Local { .. } => Vec::new(),
        }
    }

    async fn leftovers(&self, env: &BackendEnv) -> Result<Vec<Leftover>> {
        Ok(self
            .backend(env)
            .await
            .applications()
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
