//! From a `lake.toml` to the stores, backend and sources of a run.

use std::path::Path;
use std::sync::Arc;

use lake_core::config::{Backend, ConfigFile, Pipeline, Root};
use lake_core::ledger::RunRecord;
use lake_core::run::{RunContext, RunOptions};
use lake_core::{DynZoneStore, Error, Result};
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
    pub fn open(config: impl AsRef<Path>, env: Option<&str>) -> Result<Self> {
        let file = ConfigFile::load(config)?;
        Self::from_pipeline(file.pipeline(env)?)
    }

    /// Open the zones of an already validated pipeline.
    pub fn from_pipeline(pipeline: Pipeline) -> Result<Self> {
        let zones = open_store(&pipeline.root)?;
        let store: Arc<DynZoneStore> = Arc::new(zones.clone());
        let engine = Arc::new(Engine::new(
            zones.object_store(),
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

/// The zone store of a root.
pub fn open_store(root: &Root) -> Result<ObjectZoneStore> {
    match root {
        Root::Local { path } => ObjectZoneStore::filesystem(path),
        Root::S3 { .. } => Err(Error::NotImplemented {
            operation: "an s3:// root",
            implementer: "this build of lake (S3 zones come with the lake-aws crate)".into(),
        }),
    }
}
