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
}

impl Lake {
    /// Load, validate (with `[env.<env>]` applied) and open the zones of a `lake.toml`.
    pub async fn open(config: impl AsRef<Path>, env: Option<&str>) -> Result<Self> {
        let file = ConfigFile::load(config)?;
        Self::from_pipeline(file.pipeline(env)?).await
    }

    /// Open the zones of an already validated pipeline.
    pub async fn from_pipeline(pipeline: Pipeline) -> Result<Self> {
        let (store, objects) = open_store(&pipeline).await?;
        let engine = Arc::new(Engine::new(
            objects,
            Arc::clone(&store),
            pipeline.engine.clone(),
        ));
        Ok(Self {
            pipeline: Arc::new(pipeline),
            store,
            engine,
        })
    }

    /// The backend, store and sources of a run.
    pub fn context(&self) -> Result<RunContext> {
        let backend = match self.pipeline.backend {
            Backend::Local => Arc::new(LocalBackend::with_engine(Arc::clone(&self.engine))),
            Backend::Emr => {
                return Err(Error::NotImplemented {
                    operation: "backend = \"emr\"",
                    implementer: "this build of lake".into(),
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
        lake_core::run::run(&self.context()?, opts).await
    }
}

/// The zone store of a pipeline's root, and the same zones as the object store the engine
/// reads and writes: a folder (object_store's local store), or an S3 prefix (lake-aws, with
/// the `[aws]` settings) seen through [`lake_local::ZoneObjectStore`].
pub async fn open_store(pipeline: &Pipeline) -> Result<(Arc<DynZoneStore>, Arc<dyn ObjectStore>)> {
    match &pipeline.root {
        Root::Local { path } => {
            let zones = ObjectZoneStore::filesystem(path)?;
            let objects = zones.object_store();
            Ok((Arc::new(zones), objects))
        }
        #[cfg(feature = "aws")]
        Root::S3 { bucket, prefix } => {
            let aws = lake_aws::Aws::load(&pipeline.aws).await;
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
