//! The embedded SQL engine: `sql` steps and `lake query` on Apache DataFusion.
//!
//! A step's inputs are tables over exactly the objects their manifests list (see
//! [`snapshot`]), read as CSV, NDJSON, JSON documents of columns or Parquet. Its query runs
//! once, streaming: each batch is split into the rows that pass the checks (written as
//! zstd Parquet to the step's staging folder, `key=value` folders for `partition_by`) and the
//! rows that fail (written to `_rejected/` with `_reason` and `_run_id`). Sorts, joins and
//! aggregates stay within the `[engine]` memory limit and spill to disk beyond it.

mod checks;
pub mod ddl;
mod guard;
mod json_doc;
mod ledger_tables;
mod merge;
mod snapshot;
mod tables;
mod verify;

pub use guard::QueryLimits;
pub use ledger_tables::{LEDGER_SCHEMA, register as register_ledger};
pub use verify::{Verification, scanned_tables};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::EngineSpec;
use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast, filter_record_batch, is_null};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::TableReference;
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{SendableRecordBatchStream, execute_stream_partitioned};
use datafusion::prelude::{SQLOptions, SessionConfig};
use futures::{FutureExt, StreamExt};
use lake_core::cluster::{SqlInput, SqlWork};
use lake_core::publish::{Dataset, REJECTED, STEP_METRICS, StepMetrics};
use lake_core::zone::{DynZoneStore, Key, ZoneStoreExt};
use lake_core::{Error, Result};
use object_store::ObjectStore;
use tokio::sync::mpsc;
use url::Url;

pub use datafusion;
pub use datafusion::prelude::SessionContext;

/// The object store URL the lake root is registered under in every session.
const ROOT_URL: &str = "lake://root";
/// Rows per batch. Four times DataFusion's 8,192: the weather benches (2 cores) ran about 10%
/// faster (a sort 15%), for 10–40% more peak memory, still under DuckDB's on the clean + daily
/// pipeline (BENCHMARKS.md, "SQL steps", 2026-11-30).
const BATCH_ROWS: usize = 32_768;
/// Files an output is written to at once, at most (DataFusion's default).
const MAX_FILES_AT_ONCE: usize = 4;
/// Batches in flight between the query and each writer.
const CHANNEL_DEPTH: usize = 4;

/// DataFusion over the zones of one lake.
#[derive(Debug, Clone)]
pub struct Engine {
    root: Arc<dyn ObjectStore>,
    zone: Arc<DynZoneStore>,
    spec: EngineSpec,
    /// For queries from a server: one memory pool for all sessions, and limits.
    guard: Option<Arc<guard::Guard>>,
}

impl Engine {
    /// An engine reading and writing `root` (the object store of the lake root) and `zone`
    /// (the same root as a [`ZoneStore`](lake_core::ZoneStore)), with the `[engine]` limits.
    pub fn new(root: Arc<dyn ObjectStore>, zone: Arc<DynZoneStore>, spec: EngineSpec) -> Self {
        Self {
            root,
            zone,
            spec,
            guard: None,
        }
    }

    /// This engine for queries that people type into a server: every session it makes shares
    /// one memory pool of `limits.memory` bytes (instead of a pool each), and
    /// [`check_sql`](Self::check_sql) and the growing functions (`repeat`, `lpad`, `replace`…)
    /// hold to `limits`.
    pub fn guarded(&self, limits: QueryLimits) -> Result<Self> {
        let guard = guard::Guard::new(limits, self.spec.spill_dir.as_deref());
        Ok(Self {
            guard: Some(Arc::new(guard)),
            ..self.clone()
        })
    }

    /// For a guarded engine, `sql` checked against its limits (length, nesting); always `Ok`
    /// otherwise.
    pub fn check_sql(&self, sql: &str) -> Result<()> {
        match &self.guard {
            Some(g) => guard::check_sql(sql, &g.limits)
                .map_err(|message| Error::query("lake query", message)),
            None => Ok(()),
        }
    }

    /// The lake's store.
    pub fn zone(&self) -> &Arc<DynZoneStore> {
        &self.zone
    }

    /// Start checking `objects` against their manifests, as `[engine] verify` says.
    pub fn verify(&self, objects: Vec<lake_core::publish::ObjectEntry>) -> Verification {
        Verification::start(Arc::clone(&self.zone), self.spec.verify, objects)
    }

    /// A new session with the limits applied and the lake root registered.
    ///
    /// Batches are `BATCH_ROWS` rows, four times DataFusion's default. An output is written
    /// to at most `MAX_FILES_AT_ONCE` files at once, and to no more than there are threads:
    /// each file being written holds a row group in memory, and on 2 cores two files were
    /// faster than four (BENCHMARKS.md, "SQL steps", 2026-11-30).
    pub fn session(&self) -> std::result::Result<SessionContext, DataFusionError> {
        let threads = self
            .spec
            .threads
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(2)
            .max(1);
        let mut config = SessionConfig::new()
            .with_target_partitions(threads)
            .with_batch_size(BATCH_ROWS)
            .with_information_schema(true);
        config.options_mut().set(
            "datafusion.execution.minimum_parallel_output_files",
            &threads.min(MAX_FILES_AT_ONCE).to_string(),
        )?;
        let runtime = match &self.guard {
            Some(g) => g.runtime()?,
            None => {
                let mut runtime =
                    RuntimeEnvBuilder::new().with_memory_limit(self.memory_limit() as usize, 1.0);
                if let Some(dir) = &self.spec.spill_dir {
                    runtime = runtime.with_disk_manager_builder(
                        DiskManagerBuilder::default()
                            .with_mode(DiskManagerMode::Directories(vec![dir.clone()])),
                    );
                }
                runtime.build_arc()?
            }
        };
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        if let Some(g) = &self.guard {
            g.bound_functions(&ctx);
        }
        ctx.register_object_store(
            &Url::parse(ROOT_URL).expect("a valid URL"),
            Arc::clone(&self.root),
        );
        Ok(ctx)
    }

    /// The memory limit in bytes: `[engine] memory_limit`, else half of this machine's memory
    /// (2 GiB where that cannot be read).
    pub fn memory_limit(&self) -> u64 {
        self.spec.memory_limit.unwrap_or_else(|| {
            std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find_map(|l| l.strip_prefix("MemTotal:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
                .map_or(2 << 30, |kib| kib * 1024 / 2)
        })
    }

    /// Register `input` in `ctx` as `name`; `slot` keeps its snapshot apart from other inputs.
    pub async fn register(
        &self,
        ctx: &SessionContext,
        name: TableReference,
        slot: usize,
        input: &SqlInput,
    ) -> Result<Arc<dyn TableProvider>> {
        let provider = tables::table(ctx, &self.root, &format!("in{slot}"), input)
            .await
            .map_err(|message| Error::query(format!("table {name}"), message))?;
        ctx.register_table(name.clone(), Arc::clone(&provider))
            .map_err(|e| Error::query_caused(format!("table {name}"), "registering it", e))?;
        Ok(provider)
    }

    /// Run a `sql` step: read its inputs, run its query with its checks, and write the passing
    /// rows, the rejected rows and the counts under `work.output` (see [`SqlWork`]).
    pub async fn run_step(&self, work: &SqlWork) -> Result<StepMetrics> {
        // Beside the step: every input object it did not commit itself, checked against its
        // manifest. The step succeeds only when that passes; when the step fails, a damaged
        // input (the likeliest cause of a decode or schema error) is what it reports.
        let verification = self.verify(
            work.inputs
                .iter()
                .flat_map(|i| &i.objects)
                .filter(|o| !work.committed.contains(&o.key))
                .cloned()
                .collect(),
        );
        // A reader that panics on a malformed input (a bug below lake) fails the step, named,
        // instead of taking the run down or leaving it waiting.
        let ran = match std::panic::AssertUnwindSafe(self.run_query(work))
            .catch_unwind()
            .await
        {
            Ok(ran) => ran,
            Err(panic) => Err(self
                .named(
                    work,
                    format!("the reader panicked: {}", panic_text(&*panic)),
                )
                .await),
        };
        verification.finish().await?;
        let metrics = ran?;
        let key = Key::new(format!("{}/{STEP_METRICS}", work.output))?;
        self.zone.put_json(&key, &metrics).await?;
        Ok(metrics)
    }

    async fn run_query(&self, work: &SqlWork) -> Result<StepMetrics> {
        let origin = &work.origin;
        let qerr = |message: String| Error::query(origin.clone(), message);
        let ctx = self.session().map_err(|e| qerr(e.to_string()))?;
        for (i, input) in work.inputs.iter().enumerate() {
            if let Err(e) = self
                .register(&ctx, TableReference::bare(input.table.as_str()), i, input)
                .await
            {
                // Reading the schema read the data: say which object failed.
                return Err(self.named(work, e.to_string()).await);
            }
        }
        let df = plan(&ctx, &work.sql)
            .await
            .and_then(portable)
            .map_err(|e| qerr(e.to_string()))?;
        let out_fields: Vec<String> = df
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        for col in &work.partition_by {
            if !out_fields.contains(col) {
                return Err(qerr(format!(
                    "partition_by column {col:?} is not in the query's output (columns: {})",
                    out_fields.join(", ")
                )));
            }
        }
        if let Some(dup) = out_fields
            .iter()
            .enumerate()
            .find(|(i, f)| out_fields[..*i].contains(f))
        {
            return Err(qerr(format!(
                "the query gives two columns named {:?}; name them apart with AS",
                dup.1
            )));
        }
        let checked = checks::checked(df, &work.expect).map_err(&qerr)?;
        let out_schema = checked
            .df
            .schema()
            .as_arrow()
            .project(&(0..checked.outputs).collect::<Vec<_>>())
            .map_err(|e| qerr(e.to_string()))?;
        // A merge writes its batch aside, then the merged files (see `merge`).
        let (data_url, partition_by) = match &work.merge {
            Some(_) => (format!("{ROOT_URL}/{}/_batch/", work.output), &[][..]),
            None => (
                format!("{ROOT_URL}/{}/", work.output),
                &work.partition_by[..],
            ),
        };
        let written = if checked.has_checks {
            self.write_split(&ctx, checked, work, &data_url, partition_by)
                .await
        } else {
            let ordered = ends_in_sort(checked.df.logical_plan());
            write_parquet(checked.df, &data_url, partition_by, ordered)
                .await
                .map(|rows| StepMetrics {
                    rows,
                    ..StepMetrics::default()
                })
        };
        let mut metrics = match written {
            Ok(m) => m,
            Err(e) => return Err(self.named(work, e.to_string()).await),
        };
        if let Some(m) = &work.merge {
            if metrics.rows == 0 {
                self.write_empty(&format!("{}/_batch", work.output), out_schema.clone())
                    .await?;
            }
            let schema = Arc::new(out_schema.clone());
            let (rows, counts, stored) = merge::merge(self, &ctx, work, m, &schema)
                .await
                .map_err(|e| qerr(e.to_string()))?;
            metrics.merged = Some(counts);
            if rows == 0 && counts.kept_files == 0 {
                // A dataset left with no file keeps its columns (a history's version columns
                // too) in an empty one, which the next merge replaces (see `merge::touched`).
                // Otherwise the rewritten files just go.
                self.write_empty(&work.output, stored.as_ref().clone())
                    .await?;
            }
            return Ok(metrics);
        }
        if metrics.rows == 0 {
            self.write_empty(&work.output, out_schema).await?;
        }
        Ok(metrics)
    }

    /// A step's error `message` with the input object it comes from: a reader's error
    /// ("incorrect number of fields for line 3") names no file, so the object that fails on its
    /// own is found and named (for NDJSON, with the line that does not parse).
    async fn named(&self, work: &SqlWork, message: String) -> Error {
        Error::query(
            work.origin.clone(),
            self.name_failing_object(&work.inputs, message).await,
        )
    }

    /// `message` (a reader's error) with the first object of `inputs` that fails to be read on
    /// its own, and for NDJSON the line that does not parse; as it was when every object reads.
    /// Reads the inputs one object at a time: for error paths only.
    pub async fn name_failing_object(&self, inputs: &[SqlInput], mut message: String) -> String {
        if let Some((key, why)) = self.failing_object(inputs).await {
            message.push_str(&format!("\n  in object {key}: {why}"));
            if let Some(line) = self.ndjson_bad_line(&key).await {
                message.push_str(&format!("\n  {key}: {line}"));
            }
        }
        message
    }

    /// For an NDJSON object, the first line that is not JSON: `line 7001: EOF while parsing…`.
    async fn ndjson_bad_line(&self, key: &str) -> Option<String> {
        use futures::TryStreamExt;
        if lake_core::config::FormatKind::from_extension(key)
            != Some(lake_core::config::FormatKind::Ndjson)
        {
            return None;
        }
        let mut body = self.zone.get(&Key::new(key).ok()?).await.ok()?.body;
        let (mut line, mut pending) = (0usize, Vec::new());
        let check = |line: usize, bytes: &[u8]| {
            let text = bytes.strip_suffix(b"\r").unwrap_or(bytes);
            if text.iter().all(u8::is_ascii_whitespace) {
                return None;
            }
            serde_json::from_slice::<serde_json::Value>(text)
                .err()
                .map(|e| format!("line {line} is not JSON: {e}"))
        };
        while let Some(chunk) = body.try_next().await.ok()? {
            pending.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(end) = pending[start..].iter().position(|b| *b == b'\n') {
                line += 1;
                if let Some(bad) = check(line, &pending[start..start + end]) {
                    return Some(bad);
                }
                start += end + 1;
            }
            pending.drain(..start);
        }
        check(line + 1, &pending)
    }

    /// The first input object of `work` that cannot be read on its own, with the reader's
    /// error: run only when a step has failed, to say which object a decode error came from.
    async fn failing_object(&self, inputs: &[SqlInput]) -> Option<(String, String)> {
        for (i, input) in inputs.iter().enumerate() {
            for object in &input.objects {
                let one = SqlInput {
                    objects: vec![object.clone()],
                    ..input.clone()
                };
                let Ok(ctx) = self.session() else {
                    return None;
                };
                let read = async {
                    self.register(&ctx, TableReference::bare("one"), i, &one)
                        .await
                        .map_err(|e| e.to_string())?;
                    ctx.sql("SELECT * FROM one")
                        .await
                        .map_err(|e| e.to_string())?
                        .collect()
                        .await
                        .map_err(|e| e.to_string())
                };
                let read = std::panic::AssertUnwindSafe(read).catch_unwind().await;
                match read {
                    Ok(Ok(_)) => {}
                    Ok(Err(why)) => return Some((object.key.clone(), why)),
                    Err(panic) => {
                        return Some((
                            object.key.clone(),
                            format!("the reader panicked: {}", panic_text(&*panic)),
                        ));
                    }
                }
            }
        }
        None
    }

    /// An output with no rows still has its schema: one empty Parquet file when the writer left
    /// no file at all (it writes none for an empty result).
    async fn write_empty(&self, staging: &str, schema: Schema) -> Result<()> {
        let written = self.zone.list(staging).await?;
        if written.iter().any(|m| {
            !lake_core::publish::is_hidden(m.key.strip_prefix(staging).unwrap_or_default())
        }) {
            return Ok(());
        }
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, Arc::new(schema), Some(props))
            .map_err(|e| {
            Error::query_caused("write an empty output", "starting its writer", e)
        })?;
        w.finish()
            .map_err(|e| Error::query_caused("write an empty output", "finishing it", e))?;
        drop(w);
        let key = Key::new(format!("{staging}/empty.parquet"))?;
        self.zone.put_bytes(&key, buf.into()).await?;
        Ok(())
    }

    /// Run the checked query once and route each batch: passing rows to the output writer,
    /// failing rows (started on the first one) to the rejected writer.
    async fn write_split(
        &self,
        ctx: &SessionContext,
        checked: checks::Checked,
        work: &SqlWork,
        data_url: &str,
        partition_by: &[String],
    ) -> std::result::Result<StepMetrics, DataFusionError> {
        let full: SchemaRef = Arc::new(checked.df.schema().as_arrow().clone());
        let outputs = checked.outputs;
        let reason_idx = full.index_of(checks::REASON)?;
        let out_schema = Arc::new(full.project(&(0..outputs).collect::<Vec<_>>())?);
        let mut rej_fields: Vec<Field> = out_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        rej_fields.push(Field::new("_reason", DataType::Utf8, true));
        rej_fields.push(Field::new("_run_id", DataType::Utf8, true));
        let rej_schema = Arc::new(Schema::new(rej_fields));

        let sorted = ends_in_sort(checked.df.logical_plan());
        let df = if sorted {
            in_order(checked.df)?
        } else {
            checked.df
        };
        let plan = df.create_physical_plan().await?;
        let streams = execute_stream_partitioned(plan, ctx.task_ctx())?;
        // One sorted stream stays one stream through the router, so the order holds.
        let ordered = sorted && streams.len() == 1;

        // The output writer reads one channel per query partition.
        let mut senders = Vec::new();
        let mut parts: Vec<Arc<dyn PartitionStream>> = Vec::new();
        for _ in &streams {
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            senders.push(tx);
            parts.push(Arc::new(ChannelPartition::new(Arc::clone(&out_schema), rx)));
        }
        let table = StreamingTable::try_new(Arc::clone(&out_schema), parts)?;
        let out_df = ctx.read_table(Arc::new(table))?;
        let partition_by = partition_by.to_vec();
        let data_url = data_url.to_owned();
        let out_writer =
            tokio::spawn(
                async move { write_parquet(out_df, &data_url, &partition_by, ordered).await },
            );

        let rejected = Arc::new(RejectedWriter::new(
            ctx.clone(),
            rej_schema,
            format!("{ROOT_URL}/{}/{REJECTED}/", work.output),
            work.run_id.clone(),
        ));
        let mut routers = Vec::new();
        for (stream, tx) in streams.into_iter().zip(senders) {
            let rejected = Arc::clone(&rejected);
            routers.push(tokio::spawn(route(
                stream, tx, rejected, outputs, reason_idx,
            )));
        }
        let mut metrics = StepMetrics::default();
        let mut failure = None;
        for r in routers {
            match r.await {
                Ok(Ok((rows, reasons))) => {
                    metrics.rows += rows;
                    for (k, v) in reasons {
                        metrics.rejected += v;
                        *metrics.reasons.entry(k).or_default() += v;
                    }
                }
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(e) => failure = failure.or(Some(DataFusionError::External(Box::new(e)))),
            }
        }
        // Every sender is dropped now, so the writers see the end of their input.
        let written = out_writer
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let rejected_done = rejected.finish().await;
        if let Some(e) = failure {
            return Err(e);
        }
        written?;
        rejected_done?;
        Ok(metrics)
    }

    /// The catalog table of the committed Parquet dataset `d` of pipeline `pipeline`, in
    /// `database`: its columns with their Hive types from the Parquet schema, its partition keys
    /// and folders, and (committed by run `run_id`) the writing run and row count as
    /// parameters. Without a run, `d` is a step's staged output (its prefix the staging
    /// folder), whose table is only checked: its rows are not counted and the run parameters
    /// are left out.
    pub async fn catalog_table(
        &self,
        pipeline: &str,
        database: &str,
        d: &lake_core::publish::Dataset,
        run_id: Option<&str>,
    ) -> Result<lake_core::catalog::CatalogTable> {
        use lake_core::catalog::{CatalogColumn, CatalogPartition, CatalogTable};
        use lake_core::config::CatalogSpec;
        let name = CatalogSpec::table_name(d.zone, &d.name);
        let fail = |message: String| Error::catalog(format!("{database}.{name}"), message, None);
        if d.objects.is_empty() || !d.objects.iter().all(|o| o.key.ends_with(".parquet")) {
            return Err(fail(format!(
                "{} is not a Parquet dataset; only Parquet outputs get tables",
                d.prefix
            )));
        }
        let ctx = self
            .lake_session(std::slice::from_ref(d), &BTreeMap::new())
            .await?;
        let table = TableReference::partial(d.zone.as_str(), d.name.as_str());
        let df = ctx
            .table(table)
            .await
            .map_err(|e| fail(format!("reading {}: {e}", self.zone.url_of(&d.prefix))))?;
        let schema = df.schema().as_arrow().clone();
        let mut parameters = BTreeMap::from([("lake.pipeline".to_owned(), pipeline.to_owned())]);
        if let Some(run_id) = run_id {
            let rows = df
                .count()
                .await
                .map_err(|e| fail(format!("counting rows: {e}")))?;
            parameters.insert("lake.run_id".to_owned(), run_id.to_owned());
            parameters.insert("lake.rows".to_owned(), rows.to_string());
        }
        let (partition_keys, folders) = ddl::layout(d);
        let columns = schema
            .fields()
            .iter()
            .filter(|f| !partition_keys.contains(f.name()))
            .map(|f| {
                ddl::hive_type(f.data_type())
                    .map(|hive_type| CatalogColumn {
                        name: f.name().clone(),
                        hive_type,
                    })
                    .map_err(|e| fail(format!("column {}: {e}", f.name())))
            })
            .collect::<Result<Vec<_>>>()?;
        let location = |rel: &str| {
            let prefix = if rel.is_empty() {
                d.prefix.clone()
            } else {
                format!("{}/{rel}", d.prefix)
            };
            format!("{}/", self.zone.url_of(&prefix).trim_end_matches('/'))
        };
        let partitions = folders
            .iter()
            .map(|f| CatalogPartition {
                values: f
                    .split('/')
                    .filter_map(|kv| kv.split_once('=').map(|(_, v)| v.to_owned()))
                    .collect(),
                location: location(f),
            })
            .collect();
        Ok(CatalogTable {
            database: database.to_owned(),
            name,
            location: location(""),
            columns,
            partition_keys,
            partitions,
            parameters,
            metadata_location: None,
        })
    }

    /// A session where every committed dataset is a table: `raw.<source>`,
    /// `trusted.<dataset>`, `refined.<dataset>` and `<zone>._rejected_<step>`. `formats`
    /// gives how to read a raw source (by source name); others use the defaults.
    pub async fn lake_session(
        &self,
        datasets: &[Dataset],
        formats: &BTreeMap<String, lake_core::config::InputFormat>,
    ) -> Result<SessionContext> {
        let ctx = self
            .session()
            .map_err(|e| Error::query_caused("lake query", "starting a session", e))?;
        let catalog = ctx.catalog("datafusion").expect("the default catalog");
        for zone in lake_core::config::Zone::ALL {
            catalog
                .register_schema(
                    zone.as_str(),
                    Arc::new(datafusion::catalog::MemorySchemaProvider::new()),
                )
                .map_err(|e| Error::query_caused("lake query", "registering the zones", e))?;
        }
        for (i, d) in datasets.iter().enumerate() {
            let input = dataset_input(d, formats);
            let name = TableReference::partial(d.zone.as_str(), d.name.as_str());
            // One unreadable dataset (an object deleted or damaged by hand) must not take the
            // others down: it is left out, saying why; a query of it finds no such table.
            if let Err(e) = self.register(&ctx, name.clone(), i, &input).await {
                // Unless a republish replaced it while it was read: then the read starts again
                // from the new manifests (publish::read_again), rather than miss the table.
                let now = lake_core::publish::read_manifest(&*self.zone, &d.prefix).await;
                if let Ok(Some(m)) = now
                    && m.objects != d.objects
                {
                    return Err(Error::Mismatch {
                        object: self.zone.url_of(&d.prefix),
                        message: format!("it was republished while it was read ({e})"),
                        missing: true,
                    });
                }
                tracing::warn!("{name} is left out of the query tables: {e}");
            }
        }
        Ok(ctx)
    }
}

/// A committed dataset as a table input of the lake's session: raw sources read with
/// `formats` (by source name), the other zones with their defaults.
pub fn dataset_input(
    d: &Dataset,
    formats: &BTreeMap<String, lake_core::config::InputFormat>,
) -> SqlInput {
    let format = match formats.get(&d.name) {
        Some(f) if d.zone == lake_core::config::Zone::Raw => f.clone(),
        _ => lake_core::config::InputFormat::defaults(d.zone),
    };
    SqlInput {
        table: d.name.clone(),
        dataset: d.prefix.clone(),
        prefix: d.prefix.clone(),
        format,
        objects: d.objects.clone(),
    }
}

/// The committed objects of the tables `plan` scans among `datasets` (as
/// [`Engine::lake_session`] names them: `trusted.credit`): what a query's rows come from.
pub fn scanned_objects(
    plan: &LogicalPlan,
    datasets: &[Dataset],
) -> Vec<lake_core::publish::ObjectEntry> {
    let scanned = scanned_tables(plan);
    datasets
        .iter()
        .filter(|d| scanned.contains(&format!("{}.{}", d.zone.as_str(), d.name)))
        .flat_map(|d| d.objects.iter().cloned())
        .collect()
}

/// The datasets whose table name (`trusted.credit`) appears in `sql`: a superset of what it
/// reads, for error paths where it could not be planned.
pub fn named_in<'a>(sql: &str, datasets: &'a [Dataset]) -> impl Iterator<Item = &'a Dataset> {
    let sql = sql.to_owned();
    datasets
        .iter()
        .filter(move |d| sql.contains(&format!("{}.{}", d.zone.as_str(), d.name)))
}

/// Plan one read-only query on `ctx` (no DDL, DML or SET), with SQL's `TIMESTAMP` (no
/// precision given) as microseconds, as in Spark, DuckDB and PostgreSQL: the range those read
/// (years 1 to 9999, where nanoseconds span only 1677 to 2262), written as Parquet
/// `TIMESTAMP(MICROS)`, which every engine reads.
pub async fn plan(
    ctx: &SessionContext,
    sql: &str,
) -> std::result::Result<DataFrame, DataFusionError> {
    use datafusion::sql::parser::Statement;
    use datafusion::sql::sqlparser::ast::{DataType as SqlType, Expr, visit_expressions_mut};
    fn micros(t: &mut SqlType) {
        if let SqlType::Timestamp(p @ None, _) = t {
            *p = Some(6);
        }
    }
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let mut statement = state.sql_to_statement(sql, &dialect)?;
    if let Statement::Statement(s) = &mut statement {
        let _ = visit_expressions_mut(s.as_mut(), |e| {
            match e {
                Expr::Cast { data_type, .. } => micros(data_type),
                Expr::TypedString(t) => micros(&mut t.data_type),
                _ => {}
            }
            std::ops::ControlFlow::<()>::Continue(())
        });
    }
    let plan = state.statement_to_plan(statement).await?;
    read_only().verify_plan(&plan)?;
    ctx.execute_logical_plan(plan).await
}

/// `df` with the columns whose types Spark, Athena/Trino or Hive cannot read as Parquet cast
/// to ones they can: nanosecond timestamps to microseconds, unsigned integers to the signed
/// type that holds them (`UInt64` to `DECIMAL(20,0)`), half floats to floats, nanosecond times
/// to microseconds.
pub fn portable(df: DataFrame) -> std::result::Result<DataFrame, DataFusionError> {
    use datafusion::arrow::datatypes::TimeUnit;
    use datafusion::common::Column;
    use datafusion::logical_expr::{Expr, cast};
    let wanted = |t: &DataType| -> Option<DataType> {
        Some(match t {
            DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
                DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
            }
            DataType::Time64(TimeUnit::Nanosecond) => DataType::Time64(TimeUnit::Microsecond),
            DataType::UInt8 => DataType::Int16,
            DataType::UInt16 => DataType::Int32,
            DataType::UInt32 => DataType::Int64,
            DataType::UInt64 => DataType::Decimal128(20, 0),
            DataType::Float16 => DataType::Float32,
            _ => return None,
        })
    };
    if df
        .schema()
        .fields()
        .iter()
        .all(|f| wanted(f.data_type()).is_none())
    {
        return Ok(df);
    }
    let exprs: Vec<Expr> = df
        .schema()
        .iter()
        .map(|(qualifier, f)| {
            let c = Expr::Column(Column::new(qualifier.cloned(), f.name()));
            match wanted(f.data_type()) {
                Some(t) => cast(c, t).alias(f.name()),
                None => c,
            }
        })
        .collect();
    df.select(exprs)
}

/// The message of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// SQL options that allow queries only (no DDL, DML or SET statements).
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Whether the rows of `plan` come out in an order the query asked for: an `ORDER BY`,
/// under any projection, filter, alias or limit.
fn ends_in_sort(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Sort(_) => true,
        LogicalPlan::Projection(p) => ends_in_sort(&p.input),
        LogicalPlan::Filter(f) => ends_in_sort(&f.input),
        LogicalPlan::SubqueryAlias(a) => ends_in_sort(&a.input),
        LogicalPlan::Limit(l) => ends_in_sort(&l.input),
        _ => false,
    }
}

/// `df` planned and written so that its rows keep their order: in one stream (no round-robin
/// split after the final sort) into one file.
fn in_order(df: DataFrame) -> std::result::Result<DataFrame, DataFusionError> {
    let (mut state, plan) = df.into_parts();
    let options = state.config_mut().options_mut();
    options.set(
        "datafusion.optimizer.enable_round_robin_repartition",
        "false",
    )?;
    options.set("datafusion.execution.minimum_parallel_output_files", "1")?;
    options.set(
        "datafusion.execution.soft_max_rows_per_output_file",
        &usize::MAX.to_string(),
    )?;
    Ok(DataFrame::new(state, plan))
}

/// Write `df` as zstd Parquet files under `url` (a folder), `key=value` folders for
/// `partition_by`; returns the rows written.
///
/// DataFusion deals batches out to several files written at once; for `ordered` rows (the
/// query ends in `ORDER BY`) that would interleave the order across the files, so they are
/// written to one file (per partition folder), in which Parquet's writer still encodes the
/// columns in parallel.
async fn write_parquet(
    df: DataFrame,
    url: &str,
    partition_by: &[String],
    ordered: bool,
) -> std::result::Result<u64, DataFusionError> {
    let df = if ordered { in_order(df)? } else { df };
    let mut opts = datafusion::common::config::TableParquetOptions::default();
    opts.global.compression = Some("zstd(3)".into());
    let batches = df
        .write_parquet(
            url,
            DataFrameWriteOptions::new()
                .with_single_file_output(false)
                .with_partition_by(partition_by.to_vec()),
            Some(opts),
        )
        .await?;
    Ok(batches
        .iter()
        .filter_map(|b| {
            b.column(0)
                .as_primitive_opt::<datafusion::arrow::datatypes::UInt64Type>()
                .map(|c| c.iter().flatten().sum::<u64>())
        })
        .sum())
}

/// Split one partition of the checked query into passing and failing rows.
async fn route(
    mut stream: SendableRecordBatchStream,
    tx: mpsc::Sender<std::result::Result<RecordBatch, DataFusionError>>,
    rejected: Arc<RejectedWriter>,
    outputs: usize,
    reason_idx: usize,
) -> std::result::Result<(u64, HashMap<String, u64>), DataFusionError> {
    let mut rows = 0u64;
    let mut reasons: HashMap<String, u64> = HashMap::new();
    let projection: Vec<usize> = (0..outputs).collect();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let pass: BooleanArray = is_null(batch.column(reason_idx))?;
        let n_pass = pass.true_count();
        let data = batch.project(&projection)?;
        if n_pass == batch.num_rows() {
            rows += n_pass as u64;
            if tx.send(Ok(data)).await.is_err() {
                break;
            }
            continue;
        }
        if n_pass > 0 {
            rows += n_pass as u64;
            if tx
                .send(Ok(filter_record_batch(&data, &pass)?))
                .await
                .is_err()
            {
                break;
            }
        }
        let fail = datafusion::arrow::compute::not(&pass)?;
        let bad = filter_record_batch(&batch, &fail)?;
        let bad_reason = cast(bad.column(reason_idx), &DataType::Utf8)?;
        for r in bad_reason
            .as_string::<i32>()
            .iter()
            .flatten()
            .map(checks::check_of)
        {
            match reasons.get_mut(r) {
                Some(n) => *n += 1,
                None => {
                    reasons.insert(r.to_owned(), 1);
                }
            }
        }
        rejected.send(bad, outputs, reason_idx).await?;
    }
    Ok((rows, reasons))
}

/// The writer of rejected rows, started on the first one.
struct RejectedWriter {
    ctx: SessionContext,
    schema: SchemaRef,
    url: String,
    run_id: String,
    state: tokio::sync::Mutex<Option<RejectedState>>,
}

struct RejectedState {
    tx: mpsc::Sender<std::result::Result<RecordBatch, DataFusionError>>,
    task: tokio::task::JoinHandle<std::result::Result<u64, DataFusionError>>,
}

impl RejectedWriter {
    fn new(ctx: SessionContext, schema: SchemaRef, url: String, run_id: String) -> Self {
        Self {
            ctx,
            schema,
            url,
            run_id,
            state: tokio::sync::Mutex::new(None),
        }
    }

    async fn send(
        &self,
        bad: RecordBatch,
        outputs: usize,
        reason_idx: usize,
    ) -> std::result::Result<(), DataFusionError> {
        let n = bad.num_rows();
        let mut cols: Vec<_> = bad.columns()[..outputs].to_vec();
        cols.push(cast(bad.column(reason_idx), &DataType::Utf8)?);
        cols.push(Arc::new(StringArray::from(vec![self.run_id.as_str(); n])));
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), cols)?;
        let mut state = self.state.lock().await;
        if state.is_none() {
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            let part: Arc<dyn PartitionStream> =
                Arc::new(ChannelPartition::new(Arc::clone(&self.schema), rx));
            let table = StreamingTable::try_new(Arc::clone(&self.schema), vec![part])?;
            let df = self.ctx.read_table(Arc::new(table))?;
            let url = self.url.clone();
            let task = tokio::spawn(async move { write_parquet(df, &url, &[], false).await });
            *state = Some(RejectedState { tx, task });
        }
        let tx = state.as_ref().expect("started above").tx.clone();
        drop(state);
        tx.send(Ok(batch))
            .await
            .map_err(|_| DataFusionError::Execution("the rejected-rows writer stopped".into()))
    }

    async fn finish(&self) -> std::result::Result<(), DataFusionError> {
        let state = self.state.lock().await.take();
        if let Some(RejectedState { tx, task }) = state {
            drop(tx);
            task.await
                .map_err(|e| DataFusionError::External(Box::new(e)))??;
        }
        Ok(())
    }
}

/// A one-shot partition fed by a channel.
#[derive(Debug)]
struct ChannelPartition {
    schema: SchemaRef,
    rx: Mutex<Option<mpsc::Receiver<std::result::Result<RecordBatch, DataFusionError>>>>,
}

impl ChannelPartition {
    fn new(
        schema: SchemaRef,
        rx: mpsc::Receiver<std::result::Result<RecordBatch, DataFusionError>>,
    ) -> Self {
        Self {
            schema,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl PartitionStream for ChannelPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let rx = self.rx.lock().expect("channel lock").take();
        let stream = futures::stream::unfold(rx, |rx| async move {
            let mut rx = rx?;
            let item = rx.recv().await?;
            Some((item, Some(rx)))
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        ))
    }
}
