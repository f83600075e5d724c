//! From a `lake.toml` to the stores, backend and sources of a run.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use lake_core::backend::{BackendEnv, BackendPlan, Extensions, Leftover};
use lake_core::config::{ConfigFile, Pipeline, Root};
use lake_core::doctor::Check;
use lake_core::kinds::Kinds;
use lake_core::ledger::RunRecord;
use lake_core::run::{EnvLookup, PLAN_RUN_ID, RunContext, RunOptions, StepContext};
use lake_core::{DynZoneStore, Error, Result, Source};
use lake_local::object_store::ObjectStore;
use lake_local::{Engine, LocalBackend, LocalZoneStore};

/// The kinds this build of lake offers: its backends, `local` first (the default of
/// `backend`), its source kinds and its sink kinds.
///
/// A kind is one crate implementing [`BackendKind`](lake_core::backend::BackendKind) or
/// [`SinkKind`](lake_core::sink::SinkKind); adding one is one line here. A program embedding
/// lake adds its own to this registry and opens its lake.toml with [`Lake::open_with`].
///
/// A kind this build leaves out is registered as absent: its table is accepted (so one
/// lake.toml serves every build), and using it is an error naming the feature it needs.
pub fn kinds() -> Kinds {
    let b = Kinds::new()
        .settings(lake_local::EngineSettings)
        .backend(lake_local::LocalKind)
        .source(lake_ingest::FileKind)
        .source(lake_ingest::HttpKind)
        .source(lake_ingest::KaggleKind)
        .source(ProgramKind);
    #[cfg(feature = "spark")]
    let b = b.backend(lake_spark::SparkKind);
    #[cfg(not(feature = "spark"))]
    let b = b.backend(Absent::new("spark", "spark", "spark"));
    #[cfg(feature = "aws")]
    let b = b.backend(lake_aws::emr::EmrKind);
    #[cfg(feature = "aws")]
    let b = b.backend(lake_aws::serverless::EmrServerlessKind);
    #[cfg(not(feature = "aws"))]
    let b = b
        .backend(Absent::new("emr", "cluster", "aws"))
        .backend(Absent::new("emr-serverless", "serverless", "aws"));
    #[cfg(feature = "aws")]
    let b = b
        .settings(lake_aws::AwsSettings)
        .catalog(lake_aws::GlueKind)
        .source(lake_aws::S3SourceKind);
    #[cfg(not(feature = "aws"))]
    let b = b
        .settings(lake_core::settings::AcceptAny("aws"))
        .catalog(AbsentCatalog);
    #[cfg(feature = "otel")]
    let b = b.settings(lake_otel::TelemetrySettings);
    #[cfg(not(feature = "otel"))]
    let b = b.settings(lake_core::settings::AcceptAny("telemetry"));
    #[cfg(feature = "iceberg")]
    let b = b
        .table_format(lake_iceberg::IcebergKind)
        .catalog(lake_iceberg::RestKind);
    #[cfg(feature = "postgres")]
    let b = b
        .sink(lake_postgres::PostgresKind)
        .source(lake_postgres::SqlSourceKind::new(
            lake_postgres::PostgresDriver,
        ));
    #[cfg(not(feature = "postgres"))]
    let b = b.sink(AbsentSink {
        name: "postgres",
        feature: "postgres",
    });
    b
}

/// `kind = "program"`: a source the program embedding lake provides under the source's name
/// ([`Lake::with_source`]), with lake's windows, manifests and ledger. It has no keys of its
/// own; the `lake` command cannot run it.
#[derive(Debug, Clone, Copy)]
pub struct ProgramKind;

/// `kind = "program"` takes no keys of its own.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoKeys {}

impl lake_core::source::SourceKind for ProgramKind {
    fn name(&self) -> &'static str {
        "program"
    }

    fn configure(
        &self,
        cx: &mut lake_core::config::ConfigCx<'_, '_>,
    ) -> Option<Arc<dyn lake_core::source::SourceConfig>> {
        let _: NoKeys = cx.own()?;
        Some(Arc::new(ProgramSource))
    }
}

/// A checked `kind = "program"` source: opened by the program, never by lake.
#[derive(Debug, Clone, Copy)]
pub struct ProgramSource;

#[async_trait::async_trait]
impl lake_core::source::SourceConfig for ProgramSource {
    fn describe(&self, spec: &lake_core::config::SourceSpec) -> String {
        format!(
            "(program, line {}): provided by the program running lake → raw/{}/ingest_date=<date>/",
            spec.line, spec.name
        )
    }

    async fn open(
        &self,
        spec: &lake_core::config::SourceSpec,
        env: &BackendEnv,
    ) -> Result<Arc<dyn Source>> {
        Err(Error::Invalid {
            what: format!("{} sources.{}", env.pipeline.file.display(), spec.name),
            message: "kind = \"program\": the program running lake provides this source (Lake::with_source); the lake command cannot".into(),
        })
    }
}

/// The `glue` catalog kind in a build without the `aws` feature: only its `database` is read
/// (records name tables in it), and it registers nothing (what it needs is said by
/// `lake doctor` and `lake catalog sync`).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "aws", allow(dead_code))]
struct AbsentCatalog;

/// The one key an absent `glue` catalog reads; the others are left unchecked.
#[derive(Debug, serde::Deserialize)]
#[cfg_attr(feature = "aws", allow(dead_code))]
struct AbsentCatalogKeys {
    database: Option<String>,
}

/// An absent `glue` catalog's database.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "aws", allow(dead_code))]
struct AbsentGlue {
    database: String,
}

impl lake_core::catalog::CatalogKind for AbsentCatalog {
    fn name(&self) -> &'static str {
        "glue"
    }

    fn configure(
        &self,
        cx: &mut lake_core::config::ConfigCx<'_, '_>,
    ) -> Option<Arc<dyn lake_core::catalog::CatalogConfig>> {
        let keys: AbsentCatalogKeys = cx.own()?;
        let database = keys
            .database
            .unwrap_or_else(|| cx.pipeline.replace('-', "_").to_lowercase());
        Some(Arc::new(AbsentGlue { database }))
    }
}

#[async_trait::async_trait]
impl lake_core::catalog::CatalogConfig for AbsentGlue {
    fn namespace(&self) -> String {
        self.database.clone()
    }

    async fn open(
        &self,
        _spec: &lake_core::config::CatalogSpec,
        _env: &BackendEnv,
    ) -> Result<Option<Arc<dyn lake_core::catalog::Catalog>>> {
        Ok(None)
    }

    fn unavailable(&self) -> String {
        "this build of lake has no Glue catalog: build it with the `aws` feature".into()
    }
}

/// A sink kind left out of this build: its keys are not checked, and running it is an error
/// naming the cargo feature that builds it in.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "postgres", allow(dead_code))]
struct AbsentSink {
    name: &'static str,
    feature: &'static str,
}

impl lake_core::sink::SinkKind for AbsentSink {
    fn name(&self) -> &'static str {
        self.name
    }

    fn configure(
        &self,
        _cx: &mut lake_core::config::ConfigCx<'_, '_>,
    ) -> Option<Arc<dyn lake_core::sink::SinkConfig>> {
        Some(Arc::new(*self))
    }
}

#[async_trait::async_trait]
impl lake_core::sink::SinkConfig for AbsentSink {
    fn destination(&self) -> String {
        format!("(a {} sink: not in this build)", self.name)
    }

    async fn open(
        &self,
        _spec: &lake_core::config::SinkSpec,
        _env: &BackendEnv,
    ) -> Result<Arc<dyn lake_core::sink::Sink>> {
        Err(Error::NotImplemented {
            operation: "this kind of sink",
            implementer: format!(
                "this build of lake (no `{}` sinks: build it with the `{}` feature)",
                self.name, self.feature
            ),
        })
    }
}

/// A backend left out of this build: its table is not checked, and a pipeline that chooses it
/// is refused, naming the cargo feature that builds it in.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(all(feature = "spark", feature = "aws"), allow(dead_code))]
pub(crate) struct Absent {
    name: &'static str,
    table: &'static str,
    feature: &'static str,
}

#[cfg_attr(all(feature = "spark", feature = "aws"), allow(dead_code))]
impl Absent {
    /// `backend = "<name>"`, owning `[<table>]`, built with the feature `feature`.
    pub(crate) const fn new(
        name: &'static str,
        table: &'static str,
        feature: &'static str,
    ) -> Self {
        Self {
            name,
            table,
            feature,
        }
    }
}

impl lake_core::backend::BackendKind for Absent {
    fn name(&self) -> &'static str {
        self.name
    }

    fn table(&self) -> Option<&'static str> {
        Some(self.table)
    }

    fn configure(
        &self,
        cx: &mut lake_core::config::ConfigCx<'_, '_>,
    ) -> Option<Arc<dyn lake_core::backend::BackendConfig>> {
        if cx.selected() {
            let key = cx.backend_key().to_owned();
            cx.value(
                &key,
                format!(
                    "backend \"{}\" is not in this build of lake: it was built without the `{}` feature (cargo install --path crates/lake-cli --features {})",
                    self.name, self.feature, self.feature
                ),
            );
        }
        None
    }
}

/// Load and validate a `lake.toml` (with `[env.<env>]` applied) for this build's kinds.
pub fn load(config: impl AsRef<Path>, env: Option<&str>) -> Result<Pipeline> {
    load_with(config, env, &kinds())
}

/// Load and validate a `lake.toml` (with `[env.<env>]` applied) for the kinds `kinds` offers
/// (this build's [`kinds`] and a program's own).
pub fn load_with(config: impl AsRef<Path>, env: Option<&str>, kinds: &Kinds) -> Result<Pipeline> {
    ConfigFile::load(config)?.pipeline(env, kinds)
}

/// A validated pipeline with its zone store: what the CLI and library users run.
#[derive(Debug, Clone)]
pub struct Lake {
    /// The checked pipeline.
    pub pipeline: Arc<Pipeline>,
    /// Its zones.
    pub store: Arc<DynZoneStore>,
    /// The embedded SQL engine over the zones.
    pub engine: Arc<Engine>,
    /// AWS clients' configuration, loaded when the root is in S3.
    #[cfg(feature = "aws")]
    pub aws: Option<lake_aws::Aws>,
    /// Sources the program provides (`kind = "program"`), by name.
    programs: BTreeMap<String, Arc<dyn Source>>,
    /// Where each run's trace and metrics go (`[telemetry]`, `OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[cfg(feature = "otel")]
    telemetry: Option<Arc<lake_otel::Telemetry>>,
    /// With [`as_of`](Self::as_of): the datasets queries read, as of then.
    history: Option<Arc<Vec<lake_core::publish::Dataset>>>,
}

impl Lake {
    /// Load, validate (with `[env.<env>]` applied) and open the zones of a `lake.toml`.
    pub async fn open(config: impl AsRef<Path>, env: Option<&str>) -> Result<Self> {
        Self::from_pipeline(load(config, env)?).await
    }

    /// As [`open`](Self::open), with the kinds `kinds` offers: this build's ([`kinds`]) and
    /// the program's own (`lake::kinds().sink(MySinkKind)`).
    pub async fn open_with(
        config: impl AsRef<Path>,
        env: Option<&str>,
        kinds: &Kinds,
    ) -> Result<Self> {
        Self::from_pipeline(load_with(config, env, kinds)?).await
    }

    /// As [`open`](Self::open), for commands that make no request (`lake plan`): the AWS
    /// region is taken only from the configuration, the environment and the profile files,
    /// never from the network, and credentials are not resolved.
    pub async fn open_offline(config: impl AsRef<Path>, env: Option<&str>) -> Result<Self> {
        Self::with_aws(load(config, env)?, true).await
    }

    /// Open the zones of an already validated pipeline.
    pub async fn from_pipeline(pipeline: Pipeline) -> Result<Self> {
        Self::with_aws(pipeline, false).await
    }

    async fn with_aws(pipeline: Pipeline, offline: bool) -> Result<Self> {
        #[cfg(not(feature = "aws"))]
        let _ = offline;
        // The AWS configuration serves S3 zones, and every AWS backend and catalog (which
        // validation lets run on S3 zones only).
        #[cfg(feature = "aws")]
        let aws = match &pipeline.root {
            Root::S3 { .. } if offline => {
                Some(lake_aws::Aws::load_offline(&lake_aws::AwsSpec::of(&pipeline)).await)
            }
            Root::S3 { .. } => Some(lake_aws::Aws::load(&lake_aws::AwsSpec::of(&pipeline)).await),
            Root::Local { .. } => None,
        };
        let (store, objects) = open_store(
            &pipeline,
            #[cfg(feature = "aws")]
            aws.as_ref(),
        )?;
        let engine = Arc::new(Engine::new(
            objects,
            Arc::clone(&store),
            lake_local::EngineSpec::of(&pipeline),
        ));
        // Commands that make no request (`lake plan`) send no telemetry either.
        #[cfg(feature = "otel")]
        let telemetry = match offline {
            true => None,
            false => lake_otel::Telemetry::of(&pipeline)
                .unwrap_or_else(|e| {
                    tracing::warn!("telemetry: off: {e}");
                    None
                })
                .map(Arc::new),
        };
        Ok(Self {
            pipeline: Arc::new(pipeline),
            store,
            engine,
            #[cfg(feature = "aws")]
            aws,
            programs: BTreeMap::new(),
            #[cfg(feature = "otel")]
            telemetry,
            history: None,
        })
    }

    /// This lake as its queries see it at `at`: a run id (the state its run left, at its end)
    /// or a UTC time (`2024-05-01T12:00:00Z`). Each dataset kept in a table format with history
    /// (`table_format = "iceberg"`) is read from its newest snapshot at or before then, and left
    /// out when it has none; other datasets are read as they are now. Returns the lake and a
    /// note for each dataset not read as of then.
    pub async fn as_of(&self, at: &str) -> Result<(Self, Vec<String>)> {
        let when = match lake_core::chrono::DateTime::parse_from_rfc3339(at) {
            Ok(t) => t.with_timezone(&lake_core::chrono::Utc),
            Err(_) => match lake_core::ledger::get(&*self.store, at).await {
                Ok(run) => run.ended.unwrap_or(run.started),
                Err(e) if e.is_not_found() || matches!(e, Error::InvalidKey { .. }) => {
                    return Err(Error::Invalid {
                        what: format!("--as-of {at:?}"),
                        message: "neither a run in the ledger (as `lake runs` lists them) nor a UTC time such as 2024-05-01T12:00:00Z".into(),
                    });
                }
                Err(e) => return Err(e),
            },
        };
        let mut datasets = lake_core::publish::list_datasets(&*self.store).await?;
        let mut notes = Vec::new();
        let mut kept = Vec::with_capacity(datasets.len());
        for mut d in datasets.drain(..) {
            let Some(format) = self.format_of(&d.prefix)? else {
                if d.zone != lake_core::config::Zone::Raw {
                    notes.push(format!(
                        "{}.{} has no history (table_format = \"parquet\"): read as it is now",
                        d.zone.as_str(),
                        d.name
                    ));
                }
                kept.push(d);
                continue;
            };
            match format.files_as_of(&self.store, &d.prefix, when).await? {
                Some(files) => {
                    // Files the current manifest lists keep their SHA-256 for the check.
                    let current: BTreeMap<String, lake_core::publish::ObjectEntry> =
                        d.objects.drain(..).map(|o| (o.key.clone(), o)).collect();
                    d.objects = files
                        .into_iter()
                        .map(|f| current.get(&f.key).cloned().unwrap_or(f))
                        .collect();
                    kept.push(d);
                }
                None => notes.push(format!(
                    "{}.{} has no snapshot at or before {when} (not yet written, or expired: retain_snapshots): left out",
                    d.zone.as_str(),
                    d.name
                )),
            }
        }
        let mut lake = self.clone();
        lake.history = Some(Arc::new(kept));
        Ok((lake, notes))
    }

    /// The committed datasets queries read: as of [`as_of`](Self::as_of)'s time, or now.
    async fn datasets(&self) -> Result<Vec<lake_core::publish::Dataset>> {
        match &self.history {
            Some(h) => Ok((**h).clone()),
            None => lake_core::publish::list_datasets(&*self.store).await,
        }
    }

    /// This lake with its engine [guarded](Engine::guarded) for queries people type into a
    /// server (`lake serve`): all its queries share one memory pool of `limits.memory` bytes,
    /// and their SQL's length and nesting and their growing functions are bounded.
    pub fn guarded(mut self, limits: lake_local::engine::QueryLimits) -> Result<Self> {
        self.engine = Arc::new(self.engine.guarded(limits)?);
        Ok(self)
    }

    /// Provide the `[sources.<name>]` of `kind = "program"` named as `source` says: a
    /// [`Source`] of the embedding program's own (an API client, a queue, a generator). An
    /// error when lake.toml has no such source, or one of another kind.
    pub fn with_source(mut self, source: Arc<dyn Source>) -> Result<Self> {
        let name = source.name().to_owned();
        match self.pipeline.sources.get(&name) {
            Some(s) if s.config.downcast::<ProgramSource>().is_some() => {
                self.programs.insert(name, source);
                Ok(self)
            }
            _ => Err(Error::Invalid {
                what: format!("source {name}"),
                message: format!(
                    "{} has no [sources.{name}] with kind = \"program\" for this source",
                    self.pipeline.file.display()
                ),
            }),
        }
    }

    /// What the pipeline's backend works with: the pipeline, the zones, the embedded backend
    /// (for the steps a backend runs as `local` does) and the shared engine and AWS config;
    /// references are looked up in the process environment (managed secrets are read by
    /// [`run`](Self::run), see [`secret_lookup`](Self::secret_lookup)).
    pub fn backend_env(&self) -> BackendEnv {
        self.backend_env_with(Arc::new(|v: &str| std::env::var(v).ok()))
    }

    /// [`backend_env`](Self::backend_env) whose sources, sinks and backend look references up
    /// with `env`.
    pub fn backend_env_with(&self, env: EnvLookup) -> BackendEnv {
        let mut extensions = Extensions::default();
        extensions.insert(Arc::clone(&self.engine));
        let tables: Arc<dyn lake_core::catalog::TableReader> = Arc::new(LakeTables(self.clone()));
        extensions.insert(tables);
        extensions.insert(env);
        #[cfg(feature = "aws")]
        if let Some(aws) = &self.aws {
            extensions.insert(aws.clone());
        }
        BackendEnv {
            pipeline: Arc::clone(&self.pipeline),
            store: Arc::clone(&self.store),
            embedded: Some(Arc::new(LocalBackend::with_engine(Arc::clone(
                &self.engine,
            )))),
            extensions,
        }
    }

    /// The backend, store and sources of a run, references looked up in the process
    /// environment.
    pub async fn context(&self) -> Result<RunContext> {
        self.context_with(self.backend_env()).await
    }

    /// [`context`](Self::context) in `env`.
    async fn context_with(&self, env: BackendEnv) -> Result<RunContext> {
        // One environment for every kind the run opens.
        let backend = self.pipeline.backend.config().open(&env).await?;
        let mut sources = BTreeMap::new();
        for (name, spec) in &self.pipeline.sources {
            let source = match self.programs.get(name) {
                Some(given) if spec.config.downcast::<ProgramSource>().is_some() => {
                    Arc::clone(given)
                }
                _ => spec.config.open(spec, &env).await?,
            };
            let source = match &spec.extract {
                Some(x) => Arc::new(lake_ingest::Extracting::new(source, x.clone())?),
                None => source,
            };
            sources.insert(name.clone(), source);
        }
        Ok(RunContext {
            pipeline: Arc::clone(&self.pipeline),
            store: Arc::clone(&self.store),
            backend,
            sources,
            sinks: self.sinks_in(&env).await?,
            catalog: self.catalog_in(&env).await?,
            formats: self.formats_in(&env)?,
        })
    }

    /// The pipeline's sinks, opened by their kinds over this lake's zones and engine.
    pub async fn sinks(&self) -> Result<BTreeMap<String, Arc<dyn lake_core::sink::Sink>>> {
        self.sinks_in(&self.backend_env()).await
    }

    async fn sinks_in(
        &self,
        env: &BackendEnv,
    ) -> Result<BTreeMap<String, Arc<dyn lake_core::sink::Sink>>> {
        let mut out = BTreeMap::new();
        for (name, spec) in &self.pipeline.sinks {
            out.insert(name.clone(), spec.config.open(spec, env).await?);
        }
        Ok(out)
    }

    /// The table format of the dataset at `prefix` (a step's output), opened; `None` for
    /// `parquet` (or a prefix no step writes).
    fn format_of(
        &self,
        prefix: &str,
    ) -> Result<Option<Arc<dyn lake_core::table_format::TableFormat>>> {
        let kind = self
            .pipeline
            .steps
            .values()
            .find(|s| s.output.as_ref().is_some_and(|o| o.prefix() == prefix))
            .and_then(|s| self.pipeline.formats.get(&s.table_format));
        kind.map(|k| k.open(&self.backend_env())).transpose()
    }

    /// The snapshots of the table at `prefix` (a step's output, `trusted/credit`), newest
    /// first, with the format's name; `None` when the step's `table_format` is `parquet` (or no
    /// step writes `prefix`).
    pub async fn snapshots(
        &self,
        prefix: &str,
    ) -> Result<Option<(String, Vec<lake_core::table_format::SnapshotInfo>)>> {
        let Some(format) = self.format_of(prefix)? else {
            return Ok(None);
        };
        let snapshots = format.snapshots(&self.store, prefix).await?;
        Ok(Some((format.name().to_owned(), snapshots)))
    }

    /// The catalog published datasets are registered in, opened by its kind (`None` without
    /// `[catalog]`, or where its kind cannot work: a Glue catalog on a local root).
    pub async fn catalog(&self) -> Result<Option<Arc<dyn lake_core::catalog::Catalog>>> {
        self.catalog_in(&self.backend_env()).await
    }

    /// The table formats the steps use, opened by their kinds.
    fn formats_in(
        &self,
        env: &BackendEnv,
    ) -> Result<BTreeMap<String, Arc<dyn lake_core::table_format::TableFormat>>> {
        self.pipeline
            .formats
            .iter()
            .map(|(name, kind)| Ok((name.clone(), kind.open(env)?)))
            .collect()
    }

    async fn catalog_in(
        &self,
        env: &BackendEnv,
    ) -> Result<Option<Arc<dyn lake_core::catalog::Catalog>>> {
        match &self.pipeline.catalog {
            Some(spec) => spec.config.open(spec, env).await,
            None => Ok(None),
        }
    }

    /// The catalog table of the committed dataset `d` (its manifest `m`): its columns with
    /// their Hive types from the Parquet schema, its partition keys and folders, and the
    /// writing run and row count as parameters.
    pub async fn catalog_table(
        &self,
        d: &lake_core::publish::Dataset,
        m: &lake_core::publish::Manifest,
    ) -> Result<lake_core::catalog::CatalogTable> {
        let database = self.catalog_namespace();
        self.catalog_table_of(&database, d, Some(&m.run_id)).await
    }

    /// The `[catalog]`'s namespace (Glue's database), else the pipeline's name.
    fn catalog_namespace(&self) -> String {
        self.pipeline
            .catalog
            .as_ref()
            .map_or_else(|| self.pipeline.name.clone(), |c| c.config.namespace())
    }

    /// [`catalog_table`](Self::catalog_table) of `d` in `database` as committed by run
    /// `run_id`; without a run, `d` is a step's staged output (see
    /// [`Engine::catalog_table`](lake_local::Engine::catalog_table)).
    async fn catalog_table_of(
        &self,
        database: &str,
        d: &lake_core::publish::Dataset,
        run_id: Option<&str>,
    ) -> Result<lake_core::catalog::CatalogTable> {
        self.engine
            .catalog_table(&self.pipeline.name, database, d, run_id)
            .await
    }

    /// `lake catalog sync`: register every committed dataset `[catalog] tables` names, then
    /// the run ledger's tables (`lake_runs`, `lake_steps`, `lake_objects`, `lake_lineage`, as
    /// `_lake.*` in `lake query`), written as Parquet under `_lake/tables/` and registered.
    pub async fn catalog_sync(
        &self,
        opts: &RunOptions,
    ) -> Result<Vec<lake_core::ledger::CatalogRecord>> {
        let catalog = self.catalog().await?;
        #[cfg_attr(not(feature = "aws"), allow(unused_mut))]
        let mut records =
            lake_core::run::catalog_sync(&self.pipeline, &*self.store, catalog.as_deref(), opts)
                .await?;
        // The ledger's tables are written for Glue (Athena reads them beside the datasets).
        #[cfg(feature = "aws")]
        let glue = self
            .pipeline
            .catalog
            .as_ref()
            .is_some_and(|c| c.config.downcast::<lake_aws::GlueConfig>().is_some());
        #[cfg(feature = "aws")]
        for table in LEDGER_TABLES.into_iter().filter(|_| glue) {
            if opts.cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let rec = self.register_ledger_table(table).await;
            opts.emit(lake_core::run::Event::CatalogFinished {
                record: rec.clone(),
            });
            records.push(rec);
        }
        Ok(records)
    }

    /// `opts` with its lookup answering the pipeline's managed references too.
    async fn with_secrets(&self, opts: &RunOptions) -> Result<RunOptions> {
        let mut opts = opts.clone();
        opts.env = self.secret_lookup(&opts.env).await?;
        Ok(opts)
    }

    /// `opts` observed for telemetry (when `[telemetry]` or the environment names a
    /// collector), `work` run with them, and its record's trace and metrics sent.
    async fn traced<F, Fut>(&self, opts: RunOptions, work: F) -> Result<RunRecord>
    where
        F: FnOnce(RunOptions) -> Fut,
        Fut: std::future::Future<Output = Result<RunRecord>>,
    {
        #[cfg(feature = "otel")]
        if let Some(t) = &self.telemetry {
            let recorder = t.recorder(opts.observer.clone());
            let mut opts = opts;
            opts.observer = Some(Arc::clone(&recorder) as Arc<dyn lake_core::run::RunObserver>);
            let record = work(opts).await?;
            t.export(&record, &recorder).await;
            return Ok(record);
        }
        work(opts).await
    }

    /// A lookup for a run: the `${aws-secretsmanager:…}` and `${aws-ssm:…}` references of
    /// lake.toml read now, once, through the AWS client factory (an error names the first
    /// that cannot be read and where it is written), and `${env:…}` from `base`. Without
    /// managed references, `base` itself.
    pub async fn secret_lookup(&self, base: &EnvLookup) -> Result<EnvLookup> {
        if self.pipeline.secrets.is_empty() {
            return Ok(Arc::clone(base));
        }
        #[cfg(feature = "aws")]
        {
            let aws = self.aws_config().await;
            let values = lake_aws::secrets::read(&aws, &self.pipeline).await?;
            let base = Arc::clone(base);
            Ok(Arc::new(move |k: &str| {
                values.get(k).cloned().or_else(|| base(k))
            }))
        }
        #[cfg(not(feature = "aws"))]
        {
            let u = &self.pipeline.secrets[0];
            Err(Error::Secret {
                reference: u.reference.to_string(),
                key: format!("{}:{}: {}", self.pipeline.file.display(), u.line, u.key),
                message: "needs a build of lake with the `aws` feature".into(),
            })
        }
    }

    /// The AWS configuration: the one the zones use, else (a local root) loaded now.
    #[cfg(feature = "aws")]
    async fn aws_config(&self) -> lake_aws::Aws {
        match &self.aws {
            Some(aws) => aws.clone(),
            None => lake_aws::Aws::load(&lake_aws::AwsSpec::of(&self.pipeline)).await,
        }
    }

    /// The backend's checks before a run of `only` (all steps when empty) takes its lock:
    /// the cost limit, a missing program.
    pub async fn preflight(&self, only: &[String]) -> Result<()> {
        let p = &self.pipeline;
        let names = lake_core::run::selected_steps(p, only)?;
        let steps: Vec<_> = names.iter().map(|n| &p.steps[n]).collect();
        p.backend.config().preflight(p, &steps).await
    }

    /// What a run would ask its backend for (`None` for a backend with nothing to show), with
    /// [`PLAN_RUN_ID`] where the run id goes and `${env:…}` values as written. Nothing is
    /// created, uploaded or called.
    pub async fn plan(&self) -> Result<Option<BackendPlan>> {
        let p = &self.pipeline;
        let cx = StepContext {
            pipeline: p,
            store: &*self.store,
            date: lake_core::chrono::Utc::now().date_naive(),
            run_id: PLAN_RUN_ID,
        };
        let requests: Vec<_> = p
            .order
            .iter()
            .map(|name| {
                let spec = &p.steps[name];
                let staging = lake_core::run::staging_prefix(PLAN_RUN_ID, name);
                let output = spec.output.as_ref().map(|_| self.store.url_of(&staging));
                let env = spec
                    .env
                    .iter()
                    .map(|(k, t)| (k.clone(), lake_core::config::Secret::plain(t.as_written())))
                    .collect();
                cx.request(
                    spec,
                    &staging,
                    output.as_deref(),
                    vec![Vec::new(); spec.inputs.len()],
                    env,
                )
            })
            .collect();
        p.backend
            .config()
            .plan(&self.backend_env(), &requests)
            .await
    }

    /// `lake doctor`'s checks after lake.toml's: on AWS who lake is and the region, the root
    /// reachable and writable, then the backend's own.
    pub async fn doctor(&self) -> Vec<Check> {
        let mut checks = Vec::new();
        #[cfg(feature = "aws")]
        if let Some(aws) = &self.aws {
            let found = lake_aws::aws_checks(aws, &self.pipeline).await;
            let failed = |name: &str| found.iter().any(|c| c.name == name && !c.ok());
            let blocked = (failed("region") || failed("credentials"))
                .then(|| lake_aws::doctor::needs(!failed("region"), !failed("credentials")));
            checks.extend(found);
            // Without a region or credentials nothing below can be asked: said once, not as
            // a cascade of failures.
            if let Some(needs) = blocked {
                checks.push(Check::skipped("root reachable", needs));
                checks.push(Check::skipped(
                    format!("backend {}", self.pipeline.backend),
                    needs,
                ));
                return checks;
            }
        }
        let (fix_read, fix_write) = match self.pipeline.root {
            Root::S3 { .. } => (
                "check that the bucket exists in this account and region, and attach the policy `lake iam-policy` prints",
                "allow s3:PutObject (conditional writes) and s3:DeleteObject on the prefix: see `lake iam-policy`",
            ),
            Root::Local { .. } => (
                "check that the root folder can be read",
                "check that the root folder can be written",
            ),
        };
        checks.extend(lake_core::doctor::store_checks(&*self.store, fix_read, fix_write).await);
        // The kinds are checked with the secrets a run would read; those that cannot be read
        // fail their own checks below.
        let process: EnvLookup = Arc::new(|v: &str| std::env::var(v).ok());
        let lookup = self
            .secret_lookup(&process)
            .await
            .unwrap_or_else(|_| Arc::clone(&process));
        let backend_env = self.backend_env_with(Arc::clone(&lookup));
        checks.extend(self.pipeline.backend.config().doctor(&backend_env).await);
        if let Some(spec) = &self.pipeline.catalog {
            match self.catalog_in(&backend_env).await {
                Ok(Some(c)) => checks.extend(c.doctor().await),
                Ok(None) => checks.push(Check::skipped(
                    format!("{} catalog", spec.kind),
                    spec.config.unavailable(),
                )),
                Err(e) => checks.push(Check::fail(
                    format!("{} catalog", spec.kind),
                    e.to_string(),
                    "check [catalog]".to_owned(),
                )),
            }
        }
        for spec in self.pipeline.sources.values() {
            checks.extend(spec.config.doctor(spec, &backend_env).await);
        }
        #[cfg(feature = "aws")]
        if !self.pipeline.secrets.is_empty() {
            checks
                .extend(lake_aws::secrets::checks(&self.aws_config().await, &self.pipeline).await);
        }
        #[cfg(not(feature = "aws"))]
        for u in &self.pipeline.secrets {
            checks.push(Check::fail(
                format!("secret {}", u.reference),
                format!(
                    "{}, line {}: this build of lake has no AWS SDK",
                    u.key, u.line
                ),
                "build lake with the `aws` feature",
            ));
        }
        for spec in self.pipeline.sinks.values() {
            match spec.config.open(spec, &backend_env).await {
                Ok(sink) if spec.is_on(&*lookup) => checks.extend(sink.doctor().await),
                Ok(_) => checks.push(Check::skipped(
                    format!("sink {}", spec.name),
                    "its url's environment variable (optional = true: the sink is off)",
                )),
                Err(e) => checks.push(Check::fail(
                    format!("sink {}", spec.name),
                    e.to_string(),
                    format!("build lake with the `{}` feature", spec.kind),
                )),
            }
        }
        checks
    }

    /// What the backend started that is still running, of every pipeline.
    pub async fn leftovers(&self) -> Result<Vec<Leftover>> {
        self.pipeline
            .backend
            .config()
            .leftovers(&self.backend_env())
            .await
    }

    /// Stop this pipeline's leftovers on this root, except those of the run holding the lock
    /// (unexpired: that run is live). Returns what was stopped.
    pub async fn reap(&self) -> Result<Vec<Leftover>> {
        let live = lake_core::lock::current(&*self.store, &self.pipeline.name)
            .await?
            .filter(|l| l.expires > lake_core::chrono::Utc::now())
            .map(|l| l.run_id);
        self.pipeline
            .backend
            .config()
            .reap(&self.backend_env(), live.as_deref())
            .await
    }

    /// A DataFusion session where every committed dataset of the lake is a table:
    /// `raw.<source>`, `trusted.<dataset>`, `refined.<dataset>`, `<zone>._rejected_<step>`.
    /// Raw sources are read with the format options of the first step input that reads them.
    pub async fn query_session(&self) -> Result<lake_local::engine::SessionContext> {
        let datasets = self.datasets().await?;
        let ctx = self.session_over(&datasets).await?;
        self.with_ledger(&ctx).await?;
        Ok(ctx)
    }

    /// Register the ledger's tables (`_lake.runs`, `_lake.steps`, `_lake.objects`,
    /// `_lake.lineage`) in `ctx`, from every run document.
    async fn with_ledger(&self, ctx: &lake_local::engine::SessionContext) -> Result<()> {
        let runs = lake_core::ledger::list(&*self.store).await?;
        lake_local::engine::register_ledger(ctx, &runs)
            .map_err(|e| Error::query_caused("lake query", "registering the ledger's tables", e))
    }

    async fn session_over(
        &self,
        datasets: &[lake_core::publish::Dataset],
    ) -> Result<lake_local::engine::SessionContext> {
        self.engine
            .lake_session(datasets, &self.raw_formats())
            .await
    }

    /// How each raw source is read: the format options of the first step input that reads it.
    fn raw_formats(&self) -> std::collections::BTreeMap<String, lake_core::config::InputFormat> {
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
        formats
    }

    /// `message`, the error of a query of `sql`, with the object of the tables it names that
    /// fails to be read on its own (and the NDJSON line): decode errors name no file.
    pub async fn name_failing_object(&self, sql: &str, message: String) -> String {
        let Ok(datasets) = self.datasets().await else {
            return message;
        };
        let formats = self.raw_formats();
        let inputs: Vec<_> = lake_local::engine::named_in(sql, &datasets)
            .map(|d| lake_local::engine::dataset_input(d, &formats))
            .collect();
        self.engine.name_failing_object(&inputs, message).await
    }

    /// CREATE statements for every committed Parquet dataset (trusted, refined, rejected rows)
    /// in `dialect`, so other engines read the same tables (see
    /// [`lake_local::engine::ddl`]); raw datasets are named in comments. Athena's tables go into
    /// a database named after the pipeline.
    pub async fn catalog_ddl(&self, dialect: lake_local::engine::ddl::Dialect) -> Result<String> {
        use lake_local::engine::datafusion::common::TableReference;
        use lake_local::engine::ddl::{TableDef, ddl};
        let datasets = lake_core::publish::list_datasets(&*self.store).await?;
        let ctx = self.session_over(&datasets).await?;
        let mut notes = String::new();
        let mut found = Vec::new();
        for d in &datasets {
            let parquet =
                !d.objects.is_empty() && d.objects.iter().all(|o| o.key.ends_with(".parquet"));
            if d.zone == lake_core::config::Zone::Raw || !parquet {
                notes.push_str(&format!(
                    "-- {}: not Parquet (objects as fetched); read it with `lake query`\n",
                    d.prefix
                ));
                continue;
            }
            let table = TableReference::partial(d.zone.as_str(), d.name.as_str());
            let Ok(provider) = ctx.table_provider(table).await else {
                notes.push_str(&format!("-- {}: unreadable, left out\n", d.prefix));
                continue;
            };
            let (partition_by, partitions) = lake_local::engine::ddl::layout(d);
            let run_id = lake_core::publish::read_manifest(&*self.store, &d.prefix)
                .await?
                .map(|m| m.run_id)
                .unwrap_or_default();
            let location = self.store.location(&d.prefix);
            let metadata = match self.format_of(&d.prefix)? {
                Some(f) => f.metadata_location(&self.store, &d.prefix).await?,
                None => None,
            };
            found.push((
                d,
                provider.schema(),
                partition_by,
                partitions,
                run_id,
                location,
                metadata,
            ));
        }
        let defs: Vec<TableDef<'_>> = found
            .iter()
            .map(
                |(d, schema, partition_by, partitions, run_id, location, metadata)| TableDef {
                    zone: d.zone,
                    name: &d.name,
                    location: location.clone(),
                    schema,
                    partition_by: partition_by.clone(),
                    partitions: partitions.clone(),
                    run_id,
                    metadata_location: metadata.clone(),
                },
            )
            .collect();
        let database = self.catalog_namespace();
        let sql = ddl(dialect, &database, &defs).map_err(|message| Error::Invalid {
            what: "lake catalog ddl".into(),
            message: message.into(),
        })?;
        Ok(notes + &sql)
    }

    /// A read-only `sql` over the lake's tables (as [`query_session`](Self::query_session)),
    /// planned, and the check of what it scans against the manifests (`[engine] verify`),
    /// started: finish it before using the rows.
    pub async fn query(
        &self,
        sql: &str,
    ) -> Result<(
        lake_local::engine::datafusion::dataframe::DataFrame,
        lake_local::engine::Verification,
    )> {
        self.query_scanning(sql)
            .await
            .map(|(df, check, _)| (df, check))
    }

    /// As [`query`](Self::query), with the committed objects of the tables it scans.
    async fn query_scanning(
        &self,
        sql: &str,
    ) -> Result<(
        lake_local::engine::datafusion::dataframe::DataFrame,
        lake_local::engine::Verification,
        Vec<lake_core::publish::ObjectEntry>,
    )> {
        self.engine.check_sql(sql)?;
        let datasets = self.datasets().await?;
        let ctx = self.session_over(&datasets).await?;
        if sql.contains(lake_local::engine::LEDGER_SCHEMA) {
            self.with_ledger(&ctx).await?;
        }
        let planned = lake_local::engine::plan(&ctx, sql).await;
        let df = match planned {
            Ok(df) => df,
            Err(e) => {
                // A damaged object can fail the planning itself (a CSV header flipped): the
                // tables the SQL names are checked, and a mismatch is the error to report.
                let named: Vec<_> = lake_local::engine::named_in(sql, &datasets)
                    .flat_map(|d| d.objects.iter().cloned())
                    .collect();
                self.engine.verify(named).finish().await?;
                return Err(Error::query("lake query", e.to_string()));
            }
        };
        let objects = lake_local::engine::scanned_objects(df.logical_plan(), &datasets);
        let check = self.engine.verify(objects.clone());
        Ok((df, check, objects))
    }

    /// The first `limit` rows of a read-only `sql` over the lake (as [`query`](Self::query)),
    /// each object it read checked against its manifest, with their schema.
    pub async fn query_rows(
        &self,
        sql: &str,
        limit: usize,
    ) -> Result<(
        lake_local::engine::datafusion::arrow::datatypes::SchemaRef,
        Vec<lake_local::engine::datafusion::arrow::array::RecordBatch>,
    )> {
        use futures::StreamExt;
        let failed = |e: lake_local::engine::datafusion::error::DataFusionError| {
            Error::query("lake query", e.to_string())
        };
        // Objects a republish replaced meanwhile are read again from the new manifests.
        lake_core::publish::read_again(|| async {
            let (df, check, objects) = self.query_scanning(sql).await?;
            let df = df.limit(0, Some(limit)).map_err(failed)?;
            let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
            let mut batches = Vec::new();
            let mut failure = None;
            match df.execute_stream().await {
                Ok(mut stream) => {
                    while let Some(b) = stream.next().await {
                        match b {
                            Ok(b) => batches.push(b),
                            Err(e) => {
                                failure = Some(e);
                                break;
                            }
                        }
                    }
                }
                Err(e) => failure = Some(e),
            }
            // What the rows come from is checked before a reader's error is reported: an
            // object a republish removed meanwhile is why it failed, and is read again (the
            // check may have read it before it went: its size is looked up once more).
            check.finish().await?;
            match failure {
                Some(e) => {
                    let scanned: Vec<_> = objects.iter().collect();
                    lake_core::publish::check_sizes(&*self.store, &scanned).await?;
                    Err(failed(e))
                }
                None => Ok((schema, batches)),
            }
        })
        .await
    }

    /// Run a read-only `sql` over the lake (as [`query_session`](Self::query_session)) and
    /// write its rows to `path`, Parquet or CSV by the file's extension, in one file. Returns
    /// the rows written.
    pub async fn query_to_file(&self, sql: &str, path: &Path) -> Result<u64> {
        use lake_local::engine::datafusion::arrow::array::UInt64Array;
        use lake_local::engine::datafusion::dataframe::DataFrameWriteOptions;
        let failed = |e: lake_local::engine::datafusion::error::DataFusionError| {
            Error::query("lake query", e.to_string())
        };
        let abs = std::path::absolute(path).map_err(|source| Error::Io {
            action: "resolve",
            path: path.to_owned(),
            source,
        })?;
        let ext = abs.extension().and_then(|e| e.to_str()).unwrap_or_default();
        if !matches!(ext, "parquet" | "csv") {
            return Err(Error::Invalid {
                what: format!("output {}", path.display()),
                message: "the file name must end in .parquet or .csv".into(),
            });
        }
        let url = abs.to_string_lossy().into_owned();
        // Rows from an object that is not what its manifest says are not left behind; one that a
        // republish replaced meanwhile is read again from the new manifest.
        let counts = lake_core::publish::read_again(|| async {
            let (df, check) = self.query(sql).await?;
            let df = lake_local::engine::portable(df).map_err(failed)?;
            let opts = DataFrameWriteOptions::new().with_single_file_output(true);
            let counts = if ext == "parquet" {
                df.write_parquet(&url, opts, None).await
            } else {
                df.write_csv(&url, opts, None).await
            };
            match check.finish().await {
                Ok(()) => Ok(counts),
                Err(e) => {
                    let _ = std::fs::remove_file(&abs);
                    Err(e)
                }
            }
        })
        .await?;
        let counts = counts.map_err(failed)?;
        Ok(counts
            .iter()
            .filter_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .map(|c| c.iter().flatten().sum::<u64>())
            })
            .sum())
    }

    /// Check every committed object of the lake against its manifest (`hash`: its SHA-256
    /// too) and find what no manifest lists (see [`lake_core::fsck`]). With `repair`, holding
    /// the pipeline's lock, remove what can be removed and check again: the report is what is
    /// left, and the count what was removed.
    pub async fn fsck(&self, hash: bool, repair: bool) -> Result<(lake_core::fsck::Report, usize)> {
        use lake_core::{fsck, lock, run};
        let store = &*self.store;
        let sources = || self.pipeline.sources.keys().map(String::as_str);
        // Everything the lake's files say is wrong: objects, staging, cursors.
        let check = |live: Option<String>| async move {
            let mut report = fsck::check(store, hash, live.as_deref()).await?;
            report
                .findings
                .extend(fsck::state_findings(store, sources()).await?);
            report.findings.extend(fsck::index_findings(store).await?);
            Ok::<_, Error>(report)
        };
        if !repair {
            // A lock whose run is gone keeps nothing live: its staging is a leftover too.
            let (live, dead_lock) = fsck::lock_state(store, &self.pipeline.name).await?;
            let mut report = check(live).await?;
            report.findings.extend(dead_lock);
            report
                .findings
                .sort_by(|a, b| (a.problem, &a.key).cmp(&(b.problem, &b.key)));
            return Ok((report, 0));
        }
        // Taking the lock takes over one whose run is gone.
        let run_id = run::new_run_id();
        let guard = lock::acquire(
            store,
            &self.pipeline.name,
            &run_id,
            &run::default_holder(),
            self.pipeline.lock_ttl,
        )
        .await?;
        let repaired = async {
            let found = check(None).await?;
            let removed = fsck::repair(store, &found).await?
                + fsck::repair_states(store, &self.pipeline.sources, &run_id).await?;
            let left = check(None).await?;
            Ok::<_, Error>((left, removed + usize::from(guard.took_over.is_some())))
        }
        .await;
        let released = lock::release(store, &guard).await;
        let out = repaired?;
        released?;
        Ok(out)
    }

    /// `lake vacuum`: for each step's output kept in a table format (and its rejected rows),
    /// expire the snapshots older than `[lake] retain_snapshots` and delete the files no
    /// snapshot left and no manifest lists. Holds the pipeline's lock, so no publish runs.
    pub async fn vacuum(&self) -> Result<Vec<lake_core::table_format::Vacuumed>> {
        use lake_core::{lock, run};
        let store = &*self.store;
        let guard = lock::acquire(
            store,
            &self.pipeline.name,
            &run::new_run_id(),
            &run::default_holder(),
            self.pipeline.lock_ttl,
        )
        .await?;
        let done = async {
            let mut done = Vec::new();
            for step in self.pipeline.steps.values() {
                let Some(out) = &step.output else { continue };
                let Some(format) = self.format_of(&out.prefix())? else {
                    continue;
                };
                let rejected = lake_core::publish::rejected_prefix(out.zone, &step.name);
                for prefix in [out.prefix(), rejected] {
                    let keep = lake_core::publish::read_manifest(store, &prefix)
                        .await?
                        .map(|m| m.objects)
                        .unwrap_or_default();
                    done.push(
                        format
                            .vacuum(store, &prefix, &keep, self.pipeline.retain_snapshots)
                            .await?,
                    );
                }
            }
            Ok::<_, Error>(done)
        }
        .await;
        let released = lock::release(store, &guard).await;
        let done = done?;
        released?;
        Ok(done)
    }

    /// Run `names` (all sinks when empty) over the committed data (see
    /// [`lake_core::run::sink`]), after reading the secrets lake.toml names.
    pub async fn sink(&self, names: &[String], opts: &RunOptions) -> Result<RunRecord> {
        let opts = self.with_secrets(opts).await?;
        let cx = RunContext {
            pipeline: Arc::clone(&self.pipeline),
            store: Arc::clone(&self.store),
            backend: Arc::new(LocalBackend::with_engine(Arc::clone(&self.engine))),
            sources: BTreeMap::new(),
            sinks: self
                .sinks_in(&self.backend_env_with(opts.env.clone()))
                .await?,
            catalog: None,
            formats: BTreeMap::new(),
        };
        self.traced(opts, |opts| async move {
            lake_core::run::sink(&cx, names, &opts).await
        })
        .await
    }

    /// Ingest `sources` (all when empty) for `dates` (see [`lake_core::run::ingest`]), after
    /// reading the secrets lake.toml names.
    pub async fn ingest(
        &self,
        sources: &[String],
        dates: &[lake_core::chrono::NaiveDate],
        opts: &RunOptions,
    ) -> Result<RunRecord> {
        let opts = self.with_secrets(opts).await?;
        let cx = self
            .context_with(self.backend_env_with(opts.env.clone()))
            .await?;
        self.traced(opts, |opts| async move {
            lake_core::run::ingest(&cx, sources, dates, &opts).await
        })
        .await
    }

    /// Run the pipeline (see [`lake_core::run::run`]): the secrets lake.toml names are read
    /// (once, before the lock, so a missing one fails the run before anything starts), then
    /// the backend's preflight, then the run.
    pub async fn run(&self, opts: &RunOptions) -> Result<RunRecord> {
        let opts = self.with_secrets(opts).await?;
        self.preflight(&opts.only).await?;
        let cx = self
            .context_with(self.backend_env_with(opts.env.clone()))
            .await?;
        let env = opts.env.clone();
        let record = self
            .traced(
                opts,
                |opts| async move { lake_core::run::run(&cx, &opts).await },
            )
            .await?;
        // `[notify]`: best effort, after the run's own result is settled.
        crate::notify::notify(self, &record, &env).await;
        Ok(record)
    }
}

/// The zone store of a pipeline's root, and the same zones as the object store the engine
/// reads and writes: a folder (object_store's local store), or an S3 prefix (lake-aws, with
/// the `[aws]` settings) seen through [`lake_local::ZonesAsObjectStore`].
pub fn open_store(
    pipeline: &Pipeline,
    #[cfg(feature = "aws")] aws: Option<&lake_aws::Aws>,
) -> Result<(Arc<DynZoneStore>, Arc<dyn ObjectStore>)> {
    match &pipeline.root {
        Root::Local { path } => {
            let zones = LocalZoneStore::filesystem(path)?;
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
                    .with_sse(aws.spec().sse.clone()),
            );
            let objects: Arc<dyn ObjectStore> =
                Arc::new(lake_local::ZonesAsObjectStore::new(Arc::clone(&zones)));
            Ok((zones, objects))
        }
        #[cfg(not(feature = "aws"))]
        Root::S3 { .. } => Err(Error::NotImplemented {
            operation: "an s3:// root",
            implementer: "this build of lake (build it with the `aws` feature)".into(),
        }),
    }
}

/// The tables a catalog kind registers, read from the zones by this lake's engine.
#[derive(Debug, Clone)]
struct LakeTables(Lake);

#[lake_core::async_trait]
impl lake_core::catalog::TableReader for LakeTables {
    async fn table(
        &self,
        database: &str,
        dataset: &lake_core::publish::Dataset,
        run_id: Option<&str>,
    ) -> Result<lake_core::catalog::CatalogTable> {
        let mut table = self.0.catalog_table_of(database, dataset, run_id).await?;
        if run_id.is_some()
            && let Some(format) = self.0.format_of(&dataset.prefix)?
        {
            table.metadata_location = format
                .metadata_location(&self.0.store, &dataset.prefix)
                .await?;
        }
        Ok(table)
    }
}

/// The ledger's tables that `lake catalog sync` writes and registers.
#[cfg(feature = "aws")]
const LEDGER_TABLES: [&str; 4] = ["runs", "steps", "objects", "lineage"];

#[cfg(feature = "aws")]
impl Lake {
    /// Write `_lake.<table>` as one Parquet object under `_lake/tables/<table>/` and register
    /// it as `lake_<table>` in the `[catalog]` database.
    async fn register_ledger_table(&self, table: &str) -> lake_core::ledger::CatalogRecord {
        use lake_core::catalog::{CatalogColumn, CatalogTable};
        let started = std::time::Instant::now();
        let database = self.catalog_namespace();
        let name = format!("lake_{table}");
        let outcome = async {
            let aws = self.aws.as_ref().ok_or_else(|| Error::Invalid {
                what: "lake catalog sync".into(),
                message: "Glue tables point at S3: the root must be s3://".into(),
            })?;
            let dir = tempfile::tempdir().map_err(|source| Error::Io {
                action: "create a temporary directory",
                path: std::env::temp_dir(),
                source,
            })?;
            let file = dir.path().join(format!("{table}.parquet"));
            let sql = format!("SELECT * FROM _lake.{table}");
            let rows = self.query_to_file(&sql, &file).await?;
            let prefix = format!("_lake/tables/{table}");
            let key = lake_core::zone::Key::new(format!("{prefix}/{table}.parquet"))?;
            self.store.put_file(&key, &file, None).await?;
            drop(dir);
            let (df, _check) = self.query(&format!("{sql} LIMIT 0")).await?;
            let df = lake_local::engine::portable(df).map_err(|e| {
                Error::query_caused("lake catalog sync", "typing the table's columns", e)
            })?;
            let schema = df.schema().as_arrow().clone();
            let columns = schema
                .fields()
                .iter()
                .map(|f| {
                    lake_local::engine::ddl::hive_type(f.data_type())
                        .map(|hive_type| CatalogColumn {
                            name: f.name().clone(),
                            hive_type,
                        })
                        .map_err(|message| {
                            Error::catalog(format!("{database}.{name}"), message, None)
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            let t = CatalogTable {
                database: database.clone(),
                name: name.clone(),
                location: format!("{}/", self.store.url_of(&prefix).trim_end_matches('/')),
                columns,
                partition_keys: Vec::new(),
                partitions: Vec::new(),
                parameters: [
                    ("lake.pipeline".to_owned(), self.pipeline.name.clone()),
                    ("lake.rows".to_owned(), rows.to_string()),
                ]
                .into_iter()
                .collect(),
                metadata_location: None,
            };
            lake_aws::GlueCatalog::new(aws, database.clone())
                .register(&t)
                .await
        }
        .await;
        lake_core::ledger::CatalogRecord::new(
            format!("_lake.{table}"),
            format!("{database}.{name}"),
            outcome,
            started,
        )
    }

    /// Run `sql` on Athena over the `[catalog]` database (`lake query --engine athena`): the
    /// rows as one record batch with Athena's column types, and the finished query (id, bytes
    /// scanned, cost). `cancel` stops the query.
    pub async fn athena_query(
        &self,
        sql: &str,
        cancel: &lake_core::run::CancellationToken,
    ) -> Result<(
        lake_local::engine::datafusion::arrow::array::RecordBatch,
        lake_aws::athena::AthenaResult,
    )> {
        let spec = self
            .pipeline
            .catalog
            .as_ref()
            .ok_or_else(|| Error::Invalid {
                what: "lake query --engine athena".into(),
                message: format!(
                    "{} has no [catalog]: Athena queries the Glue database it names",
                    self.pipeline.file.display()
                ),
            })?;
        let (Some(aws), Root::S3 { .. }) = (&self.aws, &self.pipeline.root) else {
            return Err(Error::Invalid {
                what: "lake query --engine athena".into(),
                message: "Athena reads tables in S3: the root must be s3://; on a local root, query with the embedded engine (no --engine)".into(),
            });
        };
        let glue = spec
            .config
            .downcast::<lake_aws::GlueConfig>()
            .ok_or_else(|| Error::Invalid {
                what: "lake query --engine athena".into(),
                message: format!(
                    "Athena queries a Glue database: [catalog] is kind = {:?}",
                    spec.kind
                ),
            })?;
        let query = lake_aws::athena::AthenaQuery {
            sql: sql.to_owned(),
            database: glue.database.clone(),
            workgroup: glue.athena_workgroup.clone(),
            output: glue.athena_output.clone().unwrap_or_else(|| {
                format!(
                    "{}/",
                    self.store.url_of("_lake/athena").trim_end_matches('/')
                )
            }),
        };
        let api = lake_aws::athena::SdkAthena::new(aws.athena());
        let poll = lake_core::retry::Backoff::polls(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(5),
        );
        let result = lake_aws::athena::run(&api, &query, poll, cancel).await?;
        let columns: Vec<_> = result
            .columns
            .iter()
            .map(|c| lake_local::engine::ddl::TextColumn {
                name: &c.name,
                sql_type: &c.athena_type,
                precision: c.precision,
                scale: c.scale,
            })
            .collect();
        let batch = lake_local::engine::ddl::text_batch(&columns, &result.rows).map_err(|e| {
            Error::query(format!("Athena query {}", result.query_id), e.to_string())
        })?;
        Ok((batch, result))
    }
}

#[cfg(test)]
mod tests {
    use super::Absent;
    use lake_core::kinds::Kinds;

    /// A build without a backend still reads a lake.toml that configures it, and refuses to
    /// run on it, naming the feature.
    #[test]
    fn an_absent_backends_table_is_accepted_and_choosing_it_names_the_feature() {
        let b = Kinds::new()
            .backend(lake_local::LocalKind)
            .backend(Absent::new("emr", "cluster", "aws"));
        let text = "[lake]\nname = \"x\"\n[env.aws]\nroot = \"s3://b/x\"\nbackend = \"emr\"\n[cluster]\nrelease = \"emr-7.9.0\"\n";
        let p = lake_testing::config::pipeline(text, None, &b).unwrap();
        assert_eq!(p.backend.config().name(), "local");
        let d = match lake_testing::config::pipeline(text, Some("aws"), &b) {
            Err(lake_core::Error::Config { diagnostics }) => diagnostics.0,
            other => panic!("{other:?}"),
        };
        assert_eq!((d[0].key.as_str(), d[0].line), ("env.aws.backend", 5));
        assert!(
            d[0].message.contains("built without the `aws` feature"),
            "{}",
            d[0].message
        );
    }
}
