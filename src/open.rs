//! From a `lake.toml` to the stores, backend and sources of a run.

use std::path::Path;
use std::sync::Arc;

use lake_core::config::{Backend, ConfigFile, Pipeline, Root};
use lake_core::ledger::RunRecord;
use lake_core::run::{RunContext, RunOptions};
use lake_core::{DynZoneStore, Error, Result};
use lake_local::object_store::ObjectStore;
use lake_local::{Engine, LocalBackend, ObjectZoneStore};

/// A validated pipeline with its zone store: what the CLI and library users run.
#[derive(Debug, Clone)]
pub struct Lake {
    /// The checked pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Its zones.
    pub store: Arc<DynZoneStore>,
    /// The embedded SQL engine over the zones.
    pub engine: Arc<Engine>,
    /// AWS clients' configuration, loaded when the root is in S3 or steps run on EMR.
    #[cfg(feature = "aws")]
    pub aws: Option<lake_aws::Aws>,
}

impl Lake {
    /// Load, validate (with `[env.<env>]` applied) and open the zones of a `lake.toml`.
    pub async fn open(config: impl AsRef<Path>, env: Option<&str>) -> Result<Self> {
        let file = ConfigFile::load(config)?;
        Self::from_pipeline(file.pipeline(env)?).await
    }

    /// Open the zones of an already validated pipeline.
    pub async fn from_pipeline(pipeline: Pipeline) -> Result<Self> {
        #[cfg(feature = "aws")]
        let aws = match (&pipeline.root, pipeline.backend) {
            (Root::S3 { .. }, _) | (_, Backend::Emr) => {
                Some(lake_aws::Aws::load(&pipeline.aws).await)
            }
            _ => None,
        };
        let (store, objects) = open_store(
            &pipeline,
            #[cfg(feature = "aws")]
            aws.as_ref(),
        )?;
        let engine = Arc::new(Engine::new(
            objects,
            Arc::clone(&store),
            pipeline.engine.clone(),
        ));
        Ok(Self {
            pipeline: Arc::new(pipeline),
            store,
            engine,
            #[cfg(feature = "aws")]
            aws,
        })
    }

    /// The backend, store and sources of a run.
    pub fn context(&self) -> Result<RunContext> {
        let backend: Arc<dyn lake_core::ClusterBackend> = match self.pipeline.backend {
            Backend::Local => Arc::new(LocalBackend::with_engine(Arc::clone(&self.engine))),
            #[cfg(feature = "aws")]
            Backend::Emr => Arc::new(self.emr()?),
            #[cfg(not(feature = "aws"))]
            Backend::Emr => {
                return Err(Error::NotImplemented {
                    operation: "backend = \"emr\"",
                    implementer: "this build of lake (build it with the `aws` feature)".into(),
                });
            }
        };
        Ok(RunContext {
            pipeline: Arc::clone(&self.pipeline),
            store: Arc::clone(&self.store),
            backend,
            sources: lake_ingest::build_sources(
                &self.pipeline,
                std::sync::Arc::new(|v: &str| std::env::var(v).ok()),
            )?,
        })
    }

    /// The EMR backend of this pipeline (whatever its `backend` says: `lake clusters` uses it).
    #[cfg(feature = "aws")]
    pub fn emr(&self) -> Result<lake_aws::EmrBackend> {
        let aws = match &self.aws {
            Some(a) => a.clone(),
            None => {
                return Err(Error::Invalid {
                    what: "backend = \"emr\"".into(),
                    message: "EMR needs zones in S3 (root = \"s3://bucket/prefix\")".into(),
                });
            }
        };
        Ok(lake_aws::EmrBackend::new(
            Arc::new(lake_aws::emr::SdkEmr::new(aws.emr(), aws.s3())),
            self.pipeline.cluster.clone(),
            Arc::clone(&self.store),
            &self.pipeline.name,
        ))
    }

    /// Refuse a run on EMR whose estimated cost is above `[cluster] max_cost`.
    pub fn check_cost(&self, steps: &[String]) -> Result<()> {
        let p = &self.pipeline;
        let (Backend::Emr, Some(max), None) = (p.backend, p.cluster.max_cost, &p.cluster.attach)
        else {
            return Ok(());
        };
        let names: Vec<&String> = if steps.is_empty() {
            p.order.iter().collect()
        } else {
            steps.iter().collect()
        };
        let est = p
            .cluster
            .estimate(names.iter().filter_map(|n| p.steps.get(*n)));
        match est.cost {
            Some(cost) if cost > max => Err(Error::Invalid {
                what: format!("{} [cluster] max_cost", p.file.display()),
                message: format!(
                    "the run is estimated at ${cost:.2} ({:.1} instance-hours over {:.2} h), above max_cost = ${max:.2}; \
                     `lake plan --env …` shows the estimate. Raise max_cost, shorten step timeouts or set expected_runtime",
                    est.instance_hours, est.hours
                ),
            }),
            _ => Ok(()),
        }
    }

    /// A DataFusion session where every committed dataset of the lake is a table:
    /// `raw.<source>`, `trusted.<dataset>`, `refined.<dataset>`, `<zone>._rejected_<step>`.
    /// Raw sources are read with the format options of the first step input that reads them.
    pub async fn query_session(&self) -> Result<lake_local::engine::SessionContext> {
        let datasets = lake_core::publish::list_datasets(&*self.store).await?;
        let mut formats = std::collections::BTreeMap::new();
        for name in &self.pipeline.order {
            for i in &self.pipeline.steps[name].inputs {
                if i.dataset.zone == lake_core::config::Zone::Raw {
                    formats
                        .entry(i.dataset.name.clone())
                        .or_insert_with(|| i.format.clone());
                }
            }
        }
        self.engine.lake_session(&datasets, &formats).await
    }

    /// Run the pipeline (see [`lake_core::run::run`]).
    pub async fn run(&self, opts: &RunOptions) -> Result<RunRecord> {
        self.check_cost(&opts.only)?;
        lake_core::run::run(&self.context()?, opts).await
    }
}

/// The zone store of a pipeline's root, and the same zones as the object store the engine
/// reads and writes: a folder (object_store's local store), or an S3 prefix (lake-aws, with
/// the `[aws]` settings) seen through [`lake_local::ZoneObjectStore`].
pub fn open_store(
    pipeline: &Pipeline,
    #[cfg(feature = "aws")] aws: Option<&lake_aws::Aws>,
) -> Result<(Arc<DynZoneStore>, Arc<dyn ObjectStore>)> {
    match &pipeline.root {
        Root::Local { path } => {
            let zones = ObjectZoneStore::filesystem(path)?;
            let objects = zones.object_store();
            Ok((Arc::new(zones), objects))
        }
        #[cfg(feature = "aws")]
        Root::S3 { bucket, prefix } => {
            let aws = aws.ok_or_else(|| Error::Invalid {
                what: "an s3:// root".into(),
                message: "no AWS configuration was loaded".into(),
            })?;
            let zones: Arc<DynZoneStore> = Arc::new(
                lake_aws::S3ZoneStore::new(aws.s3(), bucket, prefix)
                    .with_sse(pipeline.aws.sse.clone()),
            );
            let objects: Arc<dyn ObjectStore> =
                Arc::new(lake_local::ZoneObjectStore::new(Arc::clone(&zones)));
            Ok((zones, objects))
        }
        #[cfg(not(feature = "aws"))]
        Root::S3 { .. } => Err(Error::NotImplemented {
            operation: "an s3:// root",
            implementer: "this build of lake (build it with the `aws` feature)".into(),
        }),
    }
}
