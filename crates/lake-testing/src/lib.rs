//! # lake-testing
//!
//! Test support, a dev-only crate (as delta-rs keeps its test crate): mockall mocks of the three
//! core traits, the [`ZoneStore`] conformance suite every store runs
//! ([`conformance::run_all`]), the AWS [`emulator`] helpers the S3 and EMR tests use, a test
//! backend kind for validating lake.toml files ([`backends`]), and [`measure`] for benchmarks.
//! Nothing here ships in lake's libraries or binary.

pub mod config;
pub mod conformance;
pub mod counting;
pub mod emulator;
mod examples;
pub mod faults;
pub mod measure;
pub mod postgres;
pub mod serve;
pub mod weather;

/// Skip a test whose tool or permission is missing, saying so on stderr, unless the variable
/// `require` is set (`.ci/run` sets each one, so CI fails instead of skipping); returns `true`
/// when the caller should return.
pub fn skip_unless(require: &str, missing: Option<String>) -> bool {
    let Some(why) = missing else {
        return false;
    };
    if std::env::var_os(require).is_some() {
        panic!("{require} is set, but {why}");
    }
    eprintln!("skipped: {why} (set {require} to make this a failure)");
    true
}

use std::path::PathBuf;

pub use examples::example;

use async_trait::async_trait;
use bytes::Bytes;

use lake_core::Result;
use lake_core::cluster::{
    ClusterBackend, ClusterHandle, ClusterSpec, StepHandle, StepLogs, StepRequest, StepState,
};
use lake_core::source::{Source, SourceObject, Window};
use lake_core::zone::{ByteStream, GetResult, Key, ObjectMeta, PutOutcome, ZoneStore};

mockall::mock! {
    /// A mock [`ZoneStore`].
    #[derive(Debug)]
    pub ZoneStore {}
    #[async_trait]
    impl ZoneStore for ZoneStore {
        fn root_url(&self) -> String;
        fn url_of(&self, key: &str) -> String;
        fn local_path(&self, key: &str) -> Option<PathBuf>;
        async fn put(&self, key: &Key, body: ByteStream) -> Result<ObjectMeta>;
        async fn put_if_absent(&self, key: &Key, body: Bytes) -> Result<PutOutcome>;
        async fn get(&self, key: &Key) -> Result<GetResult>;
        async fn head(&self, key: &Key) -> Result<ObjectMeta>;
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
        async fn copy(&self, from: &Key, to: &Key) -> Result<()>;
        async fn delete(&self, key: &Key) -> Result<()>;
    }
}

mockall::mock! {
    /// A mock [`Source`].
    #[derive(Debug)]
    pub Source {}
    #[async_trait]
    impl Source for Source {
        fn name(&self) -> &str;
        async fn objects(&self, window: &Window) -> Result<Vec<SourceObject>>;
        async fn open(&self, window: &Window, object: &SourceObject) -> Result<ByteStream>;
    }
}

mockall::mock! {
    /// A mock [`Catalog`](lake_core::catalog::Catalog).
    #[derive(Debug)]
    pub Catalog {}
    #[async_trait]
    impl lake_core::catalog::Catalog for Catalog {
        async fn register(
            &self,
            dataset: &lake_core::publish::Dataset,
            manifest: &lake_core::publish::Manifest,
        ) -> Result<lake_core::catalog::CatalogOutcome>;
        async fn doctor(&self) -> Vec<lake_core::doctor::Check>;
    }
}

mockall::mock! {
    /// A mock [`ClusterBackend`].
    #[derive(Debug)]
    pub ClusterBackend {}
    #[async_trait]
    impl ClusterBackend for ClusterBackend {
        fn name(&self) -> &str;
        async fn start(&self, spec: &ClusterSpec) -> Result<ClusterHandle>;
        async fn submit(&self, cluster: &ClusterHandle, step: &StepRequest) -> Result<StepHandle>;
        async fn poll(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<StepState>;
        async fn logs(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<StepLogs>;
        async fn cancel(&self, cluster: &ClusterHandle, step: &StepHandle) -> Result<()>;
        async fn terminate(&self, cluster: &ClusterHandle) -> Result<()>;
    }
}

/// A backend kind for tests of lake-core's own: `name`, no table, and a config whose backend
/// cannot be opened (tests give the orchestrator a mock [`ClusterBackend`] instead).
#[derive(Debug, Clone, Copy)]
pub struct TestKind(pub &'static str);

impl lake_core::backend::BackendKind for TestKind {
    fn name(&self) -> &'static str {
        self.0
    }

    fn configure(
        &self,
        cx: &mut lake_core::config::ConfigCx<'_, '_>,
    ) -> Option<std::sync::Arc<dyn lake_core::backend::BackendConfig>> {
        cx.selected().then(|| {
            std::sync::Arc::new(*self) as std::sync::Arc<dyn lake_core::backend::BackendConfig>
        })
    }
}

#[async_trait]
impl lake_core::backend::BackendConfig for TestKind {
    fn name(&self) -> &'static str {
        self.0
    }

    async fn open(
        &self,
        _env: &lake_core::backend::BackendEnv,
    ) -> Result<std::sync::Arc<dyn ClusterBackend>> {
        Err(lake_core::Error::NotImplemented {
            operation: "open",
            implementer: format!("the test backend {:?}", self.0),
        })
    }
}

/// A registry for validating lake.toml files in lake-core's tests: one test backend named
/// `local`, and source kinds `file`, `http`, `kaggle` and `program` that accept any keys (their
/// own checks are their crates' tests).
pub fn backends() -> lake_core::kinds::Kinds {
    ["file", "http", "kaggle", "program"]
        .into_iter()
        .fold(bare(), |k, name| k.source(TestSource(name)))
}

/// One test backend named `local` and nothing else: for a crate that registers its own kinds.
pub fn bare() -> lake_core::kinds::Kinds {
    lake_core::kinds::Kinds::new().backend(TestKind("local"))
}

/// A source kind for tests of lake-core's own: `name`, any keys, and a source that cannot be
/// opened (tests hand the orchestrator their own sources).
#[derive(Debug, Clone, Copy)]
pub struct TestSource(pub &'static str);

impl lake_core::source::SourceKind for TestSource {
    fn name(&self) -> &'static str {
        self.0
    }

    fn configure(
        &self,
        _cx: &mut lake_core::config::ConfigCx<'_, '_>,
    ) -> Option<std::sync::Arc<dyn lake_core::source::SourceConfig>> {
        Some(std::sync::Arc::new(*self))
    }
}

#[async_trait]
impl lake_core::source::SourceConfig for TestSource {
    fn describe(&self, spec: &lake_core::config::SourceSpec) -> String {
        format!("({}, line {})", self.0, spec.line)
    }

    async fn open(
        &self,
        _spec: &lake_core::config::SourceSpec,
        _env: &lake_core::backend::BackendEnv,
    ) -> Result<std::sync::Arc<dyn lake_core::Source>> {
        Err(lake_core::Error::NotImplemented {
            operation: "open",
            implementer: format!("the test source kind {:?}", self.0),
        })
    }
}

/// The files under `dir`, recursively (none when it does not exist).
pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
