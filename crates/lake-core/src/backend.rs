//! Backends as plug-ins: what a backend brings besides running steps.
//!
//! A backend is one [`BackendKind`] (its name in `backend = "…"`, its lake.toml table and the
//! validation of that table) whose [`configure`](BackendKind::configure) gives a checked
//! [`BackendConfig`]: the backend's plan, cost check, `lake doctor` checks, IAM statements,
//! leftovers and reap, and the [`ClusterBackend`] a run uses. lake-core names no backend; a
//! program lists the kinds it offers in a [`Kinds`](crate::kinds::Kinds) registry (the `lake`
//! facade registers those its features enable), and adding a backend touches its own crate and
//! one line there.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::cluster::{ClusterBackend, StepRequest};
use crate::config::{ConfigCx, Pipeline, StepSpec};
use crate::doctor::Check;
use crate::zone::DynZoneStore;
use crate::{Error, Result};

/// A kind of backend: `backend = "<name>"` and its own lake.toml table.
///
/// # Contract
///
/// - [`configure`](Self::configure) is called for every registered kind on every validation,
///   selected or not, so a mistake in a backend's table is reported before anyone switches to
///   it (`--env`). It reports every problem through the [`ConfigCx`] (with line numbers) and
///   returns the checked config only when it is the selected backend and nothing was wrong.
/// - It never touches the network or the filesystem beyond what the lake.toml names.
pub trait BackendKind: Send + Sync + fmt::Debug + 'static {
    /// The name users write in `backend = "…"`.
    fn name(&self) -> &'static str;

    /// The top-level lake.toml table this backend owns (`cluster`, `spark`), if any.
    fn table(&self) -> Option<&'static str> {
        None
    }

    /// Check the backend's table; when `cx.selected()`, build the checked config.
    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn BackendConfig>>;
}

/// A checked backend configuration: everything lake does with a backend besides the steps.
///
/// Every method but [`open`](Self::open) has a default that does nothing, for a backend that
/// starts nothing, costs nothing and needs no permission.
#[async_trait]
pub trait BackendConfig: AsAny + Send + Sync + fmt::Debug + 'static {
    /// The backend's name (`backend = "…"`).
    fn name(&self) -> &'static str;

    /// The checked table as JSON, for `lake plan --json`.
    fn describe(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// The most steps this backend runs at once (EMR's `step_concurrency`); `None`: no limit
    /// of its own beyond `[lake] max_parallel_steps`.
    fn step_concurrency(&self) -> Option<usize> {
        None
    }

    /// Checks made before a run takes its lock (the cost limit, a missing program): an error
    /// here costs nothing.
    async fn preflight(&self, _pipeline: &Pipeline, _steps: &[&StepSpec]) -> Result<()> {
        Ok(())
    }

    /// The backend a run submits its steps to.
    async fn open(&self, env: &BackendEnv) -> Result<Arc<dyn ClusterBackend>>;

    /// What a run would ask for, before it runs (`lake plan`): nothing is created or called.
    async fn plan(&self, _env: &BackendEnv, _steps: &[StepRequest]) -> Result<Option<BackendPlan>> {
        Ok(None)
    }

    /// `lake doctor`'s checks of this backend.
    async fn doctor(&self, _env: &BackendEnv) -> Vec<Check> {
        vec![Check::pass("backend", self.name())]
    }

    /// IAM policy statements this backend needs (added to the zones' by `lake iam-policy`).
    fn iam_statements(&self, _pipeline: &Pipeline) -> Vec<serde_json::Value> {
        Vec::new()
    }

    /// What lake started on this backend that is still running (of every pipeline).
    async fn leftovers(&self, _env: &BackendEnv) -> Result<Vec<Leftover>> {
        Ok(Vec::new())
    }

    /// Stop this pipeline's and this root's leftovers whose run is not `live`; returns them.
    async fn reap(&self, _env: &BackendEnv, _live: Option<&str>) -> Result<Vec<Leftover>> {
        Ok(Vec::new())
    }
}

/// Any value as [`Any`], so a [`BackendConfig`] can be read as its own type
/// ([`BackendRef::downcast`]).
pub trait AsAny {
    /// `self` as `Any`.
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// What `lake plan` shows of a backend: the exact requests, and the estimate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackendPlan {
    /// The requests as JSON (`lake plan --json` puts it under the backend's name).
    pub json: serde_json::Value,
    /// The same for people, with the estimate and whether `max_cost` would refuse the run.
    pub text: String,
}

/// Something lake started (a cluster, an application) that is still there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Leftover {
    /// The backend's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its state as the backend says it.
    pub state: String,
    /// Its tags (`lake:pipeline`, `lake:run-id`, `lake:root`).
    pub tags: std::collections::BTreeMap<String, String>,
    /// When it was created.
    pub created: Option<DateTime<Utc>>,
}

/// What a backend gets to work with: the pipeline, its zones, and what the program shares.
#[derive(Debug, Clone)]
pub struct BackendEnv {
    /// The checked pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Its zones.
    pub store: Arc<DynZoneStore>,
    /// The embedded backend (processes and object copies on this machine), when the program
    /// has one: a backend may hand it the steps it runs the same way (`command`, `copy`).
    pub embedded: Option<Arc<dyn ClusterBackend>>,
    /// Shared resources by type (the SQL engine, AWS clients' configuration).
    pub extensions: Extensions,
}

impl BackendEnv {
    /// The embedded backend, or an error naming what needs it.
    pub fn embedded(&self, who: &str) -> Result<Arc<dyn ClusterBackend>> {
        self.embedded.clone().ok_or_else(|| Error::NotImplemented {
            operation: "command and copy steps",
            implementer: format!("{who} in a build without the embedded backend"),
        })
    }
}

/// A map of shared values by type (as `http::Extensions`), cheap to clone.
#[derive(Clone, Default)]
pub struct Extensions(HashMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl Extensions {
    /// Add (or replace) the value of type `T`.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was added.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref()
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Extensions({} values)", self.0.len())
    }
}

/// The checked config of a pipeline's backend: serialised as its name.
#[derive(Debug, Clone)]
pub struct BackendRef(pub Arc<dyn BackendConfig>);

impl BackendRef {
    /// The backend's name.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    /// The checked config.
    pub fn config(&self) -> &Arc<dyn BackendConfig> {
        &self.0
    }

    /// The checked config as the backend's own type (`EmrConfig`, `SparkConfig`).
    pub fn downcast<T: BackendConfig>(&self) -> Option<&T> {
        (*self.0).as_any().downcast_ref()
    }
}

impl fmt::Display for BackendRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for BackendRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}
