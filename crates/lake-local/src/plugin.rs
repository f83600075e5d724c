//! `backend = "local"` as a plug-in: steps on this machine, no table of its own.

use std::sync::Arc;

use async_trait::async_trait;
use lake_core::Result;
use lake_core::backend::{BackendConfig, BackendEnv, BackendKind};
use lake_core::cluster::ClusterBackend;
use lake_core::config::ConfigCx;
use lake_core::doctor::Check;

use crate::{Engine, LocalBackend};

/// `backend = "local"`: command steps as processes of this machine, sql steps on the embedded
/// engine (shared through [`BackendEnv::extensions`] as an `Arc<Engine>`).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalKind;

impl BackendKind for LocalKind {
    fn name(&self) -> &'static str {
        "local"
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn BackendConfig>> {
        cx.selected()
            .then(|| Arc::new(LocalConfig) as Arc<dyn BackendConfig>)
    }
}

/// The checked `backend = "local"` (it has no settings).
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalConfig;

#[async_trait]
impl BackendConfig for LocalConfig {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn open(&self, env: &BackendEnv) -> Result<Arc<dyn ClusterBackend>> {
        Ok(match env.extensions.get::<Arc<Engine>>() {
            Some(engine) => Arc::new(LocalBackend::with_engine(Arc::clone(engine))),
            None => Arc::new(LocalBackend::new()),
        })
    }

    async fn doctor(&self, _env: &BackendEnv) -> Vec<Check> {
        vec![Check::pass(
            "backend",
            "local: steps run on this machine (SQL on the embedded engine)",
        )]
    }
}
