//! lake's datasets as Apache Iceberg v2 tables (`table_format = "iceberg"`).
//!
//! Each publish of a dataset commits one snapshot listing exactly the Parquet files lake's
//! manifest lists: files new to the table are `added` (with their row counts, sizes, null
//! counts and bounds from their footers, so other engines prune), files kept are `existing`,
//! files the publish replaced are `deleted`. The table's metadata lives in the dataset's
//! `metadata/` folder as a file catalog: `vN.metadata.json` is written with the store's
//! put-if-absent (two writers cannot both commit version N) and `version-hint.text` names the
//! newest, which is how pyiceberg's `StaticTable`, DuckDB's `iceberg_scan` and Spark's Hadoop
//! catalog find it.
//!
//! lake's Parquet files carry no Iceberg field ids, so the table carries a name mapping
//! (`schema.name-mapping.default`), as tables whose files were added rather than written by
//! an Iceberg writer do. Partition columns (`partition_by`, `key=value` folders) are identity
//! partitions of type string, as lake's own readers see them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures::future::BoxFuture;
use iceberg::io::FileIO;
use iceberg::spec::{
    DataContentType, DataFile, DataFileBuilder, DataFileFormat, FormatVersion, ManifestList,
    ManifestListWriter, ManifestWriterBuilder, NestedField, NestedFieldRef, Operation,
    PrimitiveType, Schema, Snapshot, SortOrder, Struct, Summary, TableMetadata,
    TableMetadataBuilder, Transform, Type, UnboundPartitionSpec,
};
use iceberg::{TableIdent, TableRequirement, TableUpdate};
use lake_core::backend::BackendEnv;
use lake_core::publish::Dataset;
use lake_core::table_format::{SnapshotInfo, SnapshotOf, TableFormat, TableFormatKind, Vacuumed};
use lake_core::zone::{DynZoneStore, Key, PutOutcome, ZoneStoreExt};
use lake_core::{Error, Result};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::async_reader::MetadataFetch;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

mod rest;
mod types;

pub use rest::{RestConfig, RestKind};

/// The format's name in lake.toml.
pub const NAME: &str = "iceberg";
/// Where a table's metadata lives, under its dataset.
const METADATA: &str = lake_core::table_format::METADATA;
/// The file naming the current metadata version.
const HINT: &str = "version-hint.text";
/// Snapshot summary keys lake adds.
pub(crate) const RUN_ID: &str = "lake.run-id";
const STEP: &str = "lake.step";
const FINGERPRINT: &str = "lake.input-hash";
const COMMITTED: &str = "lake.committed";
/// Commits a REST catalog refuses for a conflict that lake builds again.
const COMMIT_ATTEMPTS: u32 = 4;

/// The `iceberg` table format, registered with [`Kinds::table_format`](lake_core::kinds::Kinds::table_format).
#[derive(Debug, Clone, Copy, Default)]
pub struct IcebergKind;

impl TableFormatKind for IcebergKind {
    fn name(&self) -> &'static str {
        NAME
    }

    fn open(&self, env: &BackendEnv) -> Result<Arc<dyn TableFormat>> {
        Ok(Arc::new(Iceberg {
            rest: rest::Rest::of(env),
            store: Arc::clone(&env.store),
        }))
    }
}

/// Commits datasets as Iceberg tables: in a file catalog inside the lake, or through the
/// REST catalog of `[catalog] kind = "rest"` for the tables it holds.
#[derive(Debug, Clone)]
pub struct Iceberg {
    rest: Option<Arc<rest::Rest>>,
    /// The lake's store, owned: a REST commit builds its snapshot again on a retry.
    store: Arc<DynZoneStore>,
}

/// A table's current metadata and where it is.
struct Current {
    version: u64,
    /// The metadata file's URI (for the metadata log).
    uri: String,
    metadata: TableMetadata,
    /// The table was written at another location (the lake was copied or moved): Iceberg
    /// names files by absolute URI, so its snapshots' files are not where they say.
    moved: bool,
}

impl Current {
    /// The error of a table whose current snapshot another writer made: lake writes the
    /// dataset at `prefix` from its own manifest, so that writer's rows would be dropped.
    fn foreign(&self, prefix: &str) -> Option<Error> {
        let s = self.metadata.current_snapshot()?;
        if s.summary().additional_properties.contains_key(RUN_ID) {
            return None;
        }
        Some(Error::Mismatch {
            object: self.uri.clone(),
            message: format!(
                "the table's current snapshot {} ({}, {}) was committed by another writer, not by lake; lake writes {prefix} from its own manifest and would drop that snapshot's rows. Point that writer at another table; or, to give the table back to lake, drop it in its catalog (lake commits it again from its manifest)",
                s.snapshot_id(),
                s.summary().operation.as_str(),
                chrono::DateTime::from_timestamp_millis(s.timestamp_ms())
                    .unwrap_or_default()
                    .to_rfc3339(),
            ),
            missing: false,
        })
    }

    /// A table as loaded from a REST catalog (its metadata file and metadata), for a
    /// dataset at `location`.
    fn of((uri, metadata): (String, TableMetadata), location: &str) -> Self {
        Self {
            version: 0,
            uri,
            moved: metadata.location().trim_end_matches('/') != location,
            metadata,
        }
    }
}

/// A dataset's table: its prefix in the store, its location as engines name it, and the REST
/// catalog that holds it (`None`: the file catalog in its `metadata/` folder).
struct Table<'a> {
    store: &'a DynZoneStore,
    prefix: &'a str,
    location: String,
    rest: Option<(Arc<rest::Rest>, TableIdent)>,
}

fn fail(what: &str, message: impl std::fmt::Display) -> Error {
    Error::Invalid {
        what: format!("iceberg table {what}"),
        message: message.to_string(),
    }
}

fn ice(what: &str) -> impl Fn(iceberg::Error) -> Error + '_ {
    move |e| fail(what, e)
}

impl<'a> Table<'a> {
    fn new(store: &'a DynZoneStore, prefix: &'a str) -> Self {
        let url = store.url_of(prefix);
        let location = if url.starts_with('/') {
            format!("file://{url}")
        } else {
            url
        };
        Self {
            store,
            prefix,
            location: location.trim_end_matches('/').to_owned(),
            rest: None,
        }
    }

    /// The same table, held by the REST catalog `rest` when it holds it.
    fn with_rest(mut self, rest: Option<&Arc<rest::Rest>>) -> Self {
        self.rest = rest.and_then(|r| Some((Arc::clone(r), r.ident(self.prefix)?)));
        self
    }

    fn key(&self, rel: &str) -> Result<Key> {
        Key::new(format!("{}/{rel}", self.prefix))
    }

    fn uri(&self, rel: &str) -> String {
        format!("{}/{rel}", self.location)
    }

    /// The key of a file the table names by URI; `None` for a file outside the dataset.
    fn key_of(&self, uri: &str) -> Option<Result<Key>> {
        let rel = uri.strip_prefix(&self.location)?.strip_prefix('/')?;
        Some(self.key(rel))
    }

    async fn current(&self) -> Result<Option<Current>> {
        if let Some((rest, ident)) = &self.rest {
            return Ok(rest
                .load(ident)
                .await?
                .map(|t| Current::of(t, &self.location)));
        }
        let hint = self.key(&format!("{METADATA}/{HINT}"))?;
        let mut version = match self.store.get_bytes(&hint).await {
            Ok(b) => String::from_utf8_lossy(&b)
                .trim()
                .parse::<u64>()
                .map_err(|e| {
                    fail(
                        self.prefix,
                        format!("{}: {e}", self.store.url_of(hint.as_str())),
                    )
                })?,
            Err(e) if e.is_not_found() => 0,
            Err(e) => return Err(e),
        };
        // The hint is a hint (as in Iceberg's Hadoop catalog): a commit killed after its
        // metadata file and before the hint is the newest version all the same.
        loop {
            let next = self.key(&format!("{METADATA}/v{}.metadata.json", version + 1))?;
            match self.store.head(&next).await {
                Ok(_) => version += 1,
                Err(e) if e.is_not_found() => break,
                Err(e) => return Err(e),
            }
        }
        if version == 0 {
            return Ok(None);
        }
        let rel = format!("{METADATA}/v{version}.metadata.json");
        let key = self.key(&rel)?;
        let bytes = self.store.get_bytes(&key).await?;
        let metadata: TableMetadata = serde_json::from_slice(&bytes).map_err(|e| {
            fail(
                self.prefix,
                format!("{}: {e}", self.store.url_of(key.as_str())),
            )
        })?;
        let moved = metadata.location().trim_end_matches('/') != self.location;
        Ok(Some(Current {
            version,
            uri: self.uri(&rel),
            metadata,
            moved,
        }))
    }

    /// Copy the files `uris` names from the store into `io` (an in-memory FileIO), so
    /// iceberg's readers (which inherit sequence numbers) can load them.
    async fn stage(&self, io: &FileIO, uri: &str) -> Result<()> {
        let key = self.key_of(uri).ok_or_else(|| {
            fail(
                self.prefix,
                format!("{uri} is outside the table's location"),
            )
        })??;
        let bytes = self.store.get_bytes(&key).await?;
        io.new_output(uri)
            .map_err(ice(self.prefix))?
            .write(bytes)
            .await
            .map_err(ice(self.prefix))
    }

    /// Put what iceberg wrote to `io` at `uri` into the store.
    async fn publish(&self, io: &FileIO, uri: &str) -> Result<()> {
        let bytes = io
            .new_input(uri)
            .map_err(ice(self.prefix))?
            .read()
            .await
            .map_err(ice(self.prefix))?;
        let key = self.key_of(uri).ok_or_else(|| {
            fail(
                self.prefix,
                format!("{uri} is outside the table's location"),
            )
        })??;
        self.store.put_bytes(&key, bytes).await?;
        Ok(())
    }

    /// Commit `metadata` as version `version`: `vN.metadata.json` with put-if-absent (a
    /// concurrent commit of the same version fails this one), then the version hint.
    async fn write_version(&self, version: u64, metadata: &TableMetadata) -> Result<()> {
        let json = serde_json::to_vec(metadata).map_err(|e| fail(self.prefix, e))?;
        let key = self.key(&format!("{METADATA}/v{version}.metadata.json"))?;
        if self.store.put_if_absent(&key, Bytes::from(json)).await? == PutOutcome::AlreadyExists {
            return Err(Error::Mismatch {
                object: self.store.url_of(key.as_str()),
                message: format!(
                    "another writer committed version {version} of the table meanwhile; run again"
                ),
                missing: false,
            });
        }
        self.store
            .put_bytes(
                &self.key(&format!("{METADATA}/{HINT}"))?,
                Bytes::from(version.to_string()),
            )
            .await?;
        Ok(())
    }

    /// Commit the change `stage` builds on the table as it is: in a file catalog, as the next
    /// version (put-if-absent); in a REST catalog, as a transaction it retries on a conflict.
    /// Afterwards, the expired snapshots' files go. `None`: nothing changed.
    async fn apply(&self, stage: Stager) -> Result<Option<Staged>> {
        let staged = match &self.rest {
            None => {
                let cur = self.current().await?;
                // A table written elsewhere (a copied lake) starts a new history here: its
                // snapshots name files by their old location. Its versions go on.
                let version = cur.as_ref().map_or(0, |c| c.version);
                let Some(staged) = stage(cur.filter(|c| !c.moved)).await? else {
                    return Ok(None);
                };
                self.write_version(version + 1, &staged.metadata).await?;
                for log in &staged.expired_logs {
                    if let Some(Ok(k)) = self.key_of(log) {
                        let _ = self.store.delete(&k).await;
                    }
                }
                staged
            }
            Some((rest, ident)) => {
                // A requirement that fails (another writer moved the table meanwhile) is
                // answered by building the change again on the table as it is then.
                let mut attempt = 0;
                loop {
                    let Some(loaded) = rest.load(ident).await? else {
                        return Ok(None);
                    };
                    let cur = Current::of(loaded, &self.location);
                    if cur.moved {
                        return Err(rest.fail(
                            Some(ident),
                            "committing",
                            format!(
                                "the catalog's table is at {}, not at this dataset's location {}; drop it in the catalog or set another catalog.namespace",
                                cur.metadata.location(),
                                self.location
                            ),
                        ));
                    }
                    let requirements = requirements(&cur.metadata);
                    let Some(staged) = stage(Some(cur)).await? else {
                        return Ok(None);
                    };
                    match rest
                        .commit(ident, requirements, staged.changes.clone())
                        .await?
                    {
                        rest::Committed::Done => break staged,
                        rest::Committed::Conflict if attempt < COMMIT_ATTEMPTS => attempt += 1,
                        rest::Committed::Conflict => {
                            return Err(rest.fail(
                                Some(ident),
                                "committing",
                                format!("other writers moved the table {COMMIT_ATTEMPTS} times while lake committed; run again"),
                            ));
                        }
                    }
                }
            }
        };
        // The manifest lists (and their manifests) of expired snapshots: no snapshot names them.
        for uri in &staged.expired_lists {
            self.delete_snapshot_files(uri).await;
        }
        Ok(Some(staged))
    }

    /// Create the table in its REST catalog (the namespace too), with the schema, spec and
    /// properties of `job`'s newest file, when the catalog has no such table.
    async fn create(&self, job: &Job) -> Result<()> {
        let Some((rest, ident)) = &self.rest else {
            return Ok(());
        };
        if rest.load(ident).await?.is_some() {
            return Ok(());
        }
        rest.namespace().await?;
        let prefix = self.prefix;
        let schema = match job
            .dataset
            .objects
            .iter()
            .rev()
            .find(|o| o.key.ends_with(".parquet"))
        {
            Some(o) => {
                let f = footer(self.store, &o.key, o.size).await?;
                schema_for(prefix, &f.arrow, &job.partition_by, None)?
            }
            None => Schema::builder().build().map_err(ice(prefix))?,
        };
        let request = iceberg_catalog_rest::CreateTableRequest {
            name: ident.name().to_owned(),
            location: Some(self.location.clone()),
            partition_spec: Some(unbound(prefix, &schema, &job.partition_by)?),
            // Optional in the protocol, required by some servers (pyiceberg's model).
            write_order: Some(SortOrder::unsorted_order()),
            stage_create: None,
            properties: properties(&schema, &job.dataset),
            schema,
        };
        rest.create(ident, &request).await
    }

    /// Delete an expired snapshot's manifest list and the manifests it lists (each snapshot
    /// lake commits writes manifests of its own). Best effort: what is left is only space.
    async fn delete_snapshot_files(&self, list_uri: &str) {
        let Some(Ok(list_key)) = self.key_of(list_uri) else {
            return;
        };
        if let Ok(bytes) = self.store.get_bytes(&list_key).await
            && let Ok(list) = ManifestList::parse_with_version(&bytes, FormatVersion::V2)
        {
            for mf in list.entries() {
                if let Some(Ok(k)) = self.key_of(&mf.manifest_path) {
                    let _ = self.store.delete(&k).await;
                }
            }
        }
        let _ = self.store.delete(&list_key).await;
    }

    /// The live data files of the current snapshot, by path, with their snapshot and
    /// sequence numbers.
    async fn live_files(&self, io: &FileIO, cur: &Current) -> Result<BTreeMap<String, Live>> {
        match cur.metadata.current_snapshot() {
            Some(snapshot) => self.files_of(io, &cur.metadata, snapshot).await,
            None => Ok(BTreeMap::new()),
        }
    }

    /// The live data files of `snapshot`.
    async fn files_of(
        &self,
        io: &FileIO,
        metadata: &TableMetadata,
        snapshot: &Snapshot,
    ) -> Result<BTreeMap<String, Live>> {
        let mut live = BTreeMap::new();
        let list_key = self.key_of(snapshot.manifest_list()).ok_or_else(|| {
            fail(
                self.prefix,
                format!(
                    "{} is outside the table's location",
                    snapshot.manifest_list()
                ),
            )
        })??;
        let list = ManifestList::parse_with_version(
            &self.store.get_bytes(&list_key).await?,
            metadata.format_version(),
        )
        .map_err(ice(self.prefix))?;
        for mf in list.entries() {
            self.stage(io, &mf.manifest_path).await?;
            let manifest = mf.load_manifest(io).await.map_err(ice(self.prefix))?;
            for entry in manifest.entries() {
                if !entry.is_alive() {
                    continue;
                }
                let file = entry.data_file().clone();
                live.insert(
                    file.file_path().to_owned(),
                    Live {
                        snapshot_id: entry.snapshot_id().unwrap_or(mf.added_snapshot_id),
                        sequence_number: entry.sequence_number().unwrap_or(mf.sequence_number),
                        file_sequence_number: entry
                            .file_sequence_number
                            .unwrap_or(mf.sequence_number),
                        file,
                    },
                );
            }
        }
        Ok(live)
    }
}

/// The snapshots of `metadata` committed more than `retain` before `now_ms`, and their
/// manifest lists. `keep`: a snapshot that stays whatever its age (the current one, when no
/// new snapshot replaces it).
fn expired_of(
    metadata: &TableMetadata,
    now_ms: i64,
    retain: std::time::Duration,
    keep: Option<i64>,
) -> (Vec<i64>, Vec<String>) {
    let retain_ms = i64::try_from(retain.as_millis()).unwrap_or(i64::MAX);
    let current = keep;
    metadata
        .snapshots()
        .filter(|s| {
            Some(s.snapshot_id()) != current && now_ms.saturating_sub(s.timestamp_ms()) > retain_ms
        })
        .map(|s| (s.snapshot_id(), s.manifest_list().to_owned()))
        .unzip()
}

/// The partition spec of a table partitioned by `partition_by` (identity fields).
fn unbound(prefix: &str, schema: &Schema, partition_by: &[String]) -> Result<UnboundPartitionSpec> {
    let mut b = UnboundPartitionSpec::builder();
    for p in partition_by {
        let id = schema
            .field_by_name(p)
            .map(|f| f.id)
            .ok_or_else(|| fail(prefix, format!("partition column {p} is not in the schema")))?;
        b = b
            .add_partition_field(id, p, Transform::Identity)
            .map_err(ice(prefix))?;
    }
    Ok(b.build())
}

/// The table properties lake sets on every commit.
fn properties(schema: &Schema, dataset: &Dataset) -> HashMap<String, String> {
    HashMap::from([
        (
            "schema.name-mapping.default".to_owned(),
            name_mapping(schema),
        ),
        ("write.format.default".to_owned(), "parquet".to_owned()),
        (
            "write.metadata.delete-after-commit.enabled".to_owned(),
            "true".to_owned(),
        ),
        (
            "write.metadata.previous-versions-max".to_owned(),
            "100".to_owned(),
        ),
        (
            "lake.dataset".to_owned(),
            format!("{}.{}", dataset.zone.as_str(), dataset.name),
        ),
    ])
}

/// Builds a change on the table as it is read (`None`: no table, or one written elsewhere);
/// `None` when there is nothing to change.
type Stager =
    Arc<dyn Fn(Option<Current>) -> BoxFuture<'static, Result<Option<Staged>>> + Send + Sync>;

/// The table as the change read it, as requirements: its UUID, its `main` branch, schema,
/// spec and last field id.
fn requirements(m: &TableMetadata) -> Vec<TableRequirement> {
    vec![
        TableRequirement::UuidMatch { uuid: m.uuid() },
        TableRequirement::RefSnapshotIdMatch {
            r#ref: "main".to_owned(),
            snapshot_id: m.current_snapshot_id(),
        },
        TableRequirement::CurrentSchemaIdMatch {
            current_schema_id: m.current_schema_id(),
        },
        TableRequirement::DefaultSpecIdMatch {
            default_spec_id: m.default_partition_spec_id(),
        },
        TableRequirement::LastAssignedFieldIdMatch {
            last_assigned_field_id: m.last_column_id(),
        },
    ]
}

/// One publish to commit as a snapshot, owned: a REST commit refused for a conflict is built
/// again on the table as it is then.
struct Job {
    dataset: Dataset,
    run_id: String,
    committed: String,
    step: String,
    fingerprint: Option<String>,
    partition_by: Vec<String>,
    retain: std::time::Duration,
}

/// A commit built on the table as it was read: the metadata after it, the updates that make
/// it (what a REST catalog is sent), and what to delete once it is committed.
struct Staged {
    metadata: TableMetadata,
    changes: Vec<TableUpdate>,
    /// Manifest lists of the snapshots it expires.
    expired_lists: Vec<String>,
    /// Metadata files that left the log (a file catalog's own).
    expired_logs: Vec<String>,
}

impl Job {
    fn of(of: &SnapshotOf<'_>) -> Self {
        Self {
            dataset: of.dataset.clone(),
            run_id: of.manifest.run_id.clone(),
            committed: of.manifest.committed.to_rfc3339(),
            step: of.step.to_owned(),
            fingerprint: of.manifest.fingerprint.clone(),
            partition_by: of.partition_by.to_vec(),
            retain: of.retain,
        }
    }

    /// The table's current snapshot describes this publish already.
    fn done(&self, cur: Option<&Current>) -> bool {
        cur.and_then(|c| c.metadata.current_snapshot())
            .is_some_and(|s| {
                let p = &s.summary().additional_properties;
                p.get(COMMITTED) == Some(&self.committed) && p.get(RUN_ID) == Some(&self.run_id)
            })
    }

    /// Build the snapshot on `cur` (the table as read; `None`: a new table): write its
    /// manifest and manifest list to the store, and return the metadata that commits it.
    /// A table whose current snapshot another writer made is refused: lake's manifest lists
    /// the dataset's files, so that writer's rows would be dropped.
    async fn stage(&self, table: &Table<'_>, cur: Option<&Current>) -> Result<Staged> {
        let prefix = self.dataset.prefix.as_str();
        if let Some(e) = cur.and_then(|c| c.foreign(prefix)) {
            return Err(e);
        }
        let io = FileIO::new_with_memory();
        let live = match cur {
            Some(c) => table.live_files(&io, c).await?,
            None => BTreeMap::new(),
        };
        let footers = Iceberg::footers(table.store, &self.dataset, &live, table).await?;

        // Schema and spec: from the newest file, checked against the table.
        let current_schema = cur.map(|c| Arc::clone(c.metadata.current_schema()));
        let schema = match (footers.last(), &current_schema) {
            (Some(f), _) => schema_for(
                prefix,
                &f.arrow,
                &self.partition_by,
                current_schema.as_deref(),
            )?,
            (None, Some(s)) => (**s).clone(),
            (None, None) => Schema::builder().build().map_err(ice(prefix))?,
        };
        let unbound = |schema: &Schema| unbound(prefix, schema, &self.partition_by);
        let mut properties = properties(&schema, &self.dataset);
        // The table's definition (schema, spec, properties) for this snapshot: built first only
        // when it changes, so a republish of the same columns builds the metadata once.
        let builder = match cur {
            None => {
                // A new table: iceberg numbers the fields itself; the mapping follows.
                let fresh = TableMetadataBuilder::new(
                    schema.clone(),
                    unbound(&schema)?,
                    SortOrder::unsorted_order(),
                    table.location.clone(),
                    FormatVersion::V2,
                    properties.clone(),
                )
                .map_err(ice(prefix))?
                .build()
                .map_err(ice(prefix))?
                .metadata;
                properties.insert(
                    "schema.name-mapping.default".to_owned(),
                    name_mapping(fresh.current_schema()),
                );
                Some(
                    fresh
                        .into_builder(None)
                        .set_properties(properties)
                        .map_err(ice(prefix))?,
                )
            }
            Some(c) => {
                let new_schema =
                    current_schema.as_deref().map(|s| s.as_struct()) != Some(schema.as_struct());
                let spec = unbound(&schema)?;
                let old_spec = c.metadata.default_partition_spec();
                let new_spec = old_spec.fields().len() != spec.fields().len()
                    || old_spec
                        .fields()
                        .iter()
                        .zip(spec.fields())
                        .any(|(a, b)| a.source_id != b.source_id);
                let new_properties = properties
                    .iter()
                    .any(|(k, v)| c.metadata.properties().get(k) != Some(v));
                if new_schema || new_spec || new_properties {
                    let mut b = c.metadata.clone().into_builder(Some(c.uri.clone()));
                    if new_schema {
                        b = b.add_current_schema(schema.clone()).map_err(ice(prefix))?;
                    }
                    if new_spec {
                        b = b.add_default_partition_spec(spec).map_err(ice(prefix))?;
                    }
                    Some(b.set_properties(properties).map_err(ice(prefix))?)
                } else {
                    None
                }
            }
        };
        // The metadata the snapshot is added to, the metadata file it follows (when not built
        // already), the updates so far and the metadata files past
        // `write.metadata.previous-versions-max` (they leave the log, so they go).
        let (staged, previous, mut changes, mut expired_logs) = match (builder, cur) {
            (Some(b), _) => {
                let r = b.build().map_err(ice(prefix))?;
                (r.metadata, None, r.changes, r.expired_metadata_logs)
            }
            (None, Some(c)) => (
                c.metadata.clone(),
                Some(c.uri.clone()),
                Vec::new(),
                Vec::new(),
            ),
            (None, None) => return Err(fail(prefix, "a new table without a definition")),
        };
        let schema = Arc::clone(staged.current_schema());
        let spec = (**staged.default_partition_spec()).clone();
        let spec_id = spec.spec_id();

        let snapshot_id = (uuid::Uuid::new_v4().as_u64_pair().0 & (i64::MAX as u64)) as i64;
        let sequence = staged.last_sequence_number() + 1;
        let parent = staged.current_snapshot_id();
        let tag = uuid::Uuid::new_v4();
        let manifest_uri = table.uri(&format!("{METADATA}/{tag}-m0.avro"));
        let mut writer = ManifestWriterBuilder::new(
            io.new_output(&manifest_uri).map_err(ice(prefix))?,
            Some(snapshot_id),
            Arc::clone(&schema),
            spec.clone(),
        )
        .build_v2_data();
        let listed: std::collections::BTreeSet<String> = self
            .dataset
            .objects
            .iter()
            .map(|o| table.uri(rel_of(&o.key, prefix)))
            .collect();
        let (mut added, mut added_rows, mut added_bytes) = (0u64, 0u64, 0u64);
        for f in &footers {
            let rel = rel_of(&f.key, prefix);
            let file = data_file(
                prefix,
                f,
                table.uri(rel),
                partition_of(rel, &self.partition_by),
                &schema,
                spec_id,
            )?;
            added += 1;
            added_rows += file.record_count();
            added_bytes += file.file_size_in_bytes();
            writer.add_file(file, sequence).map_err(ice(prefix))?;
        }
        let (mut total, mut total_rows, mut total_bytes) = (added, added_rows, added_bytes);
        let (mut deleted, mut deleted_rows) = (0u64, 0u64);
        for (path, l) in live {
            if listed.contains(&path) {
                total += 1;
                total_rows += l.file.record_count();
                total_bytes += l.file.file_size_in_bytes();
                writer
                    .add_existing_file(
                        l.file,
                        l.snapshot_id,
                        l.sequence_number,
                        Some(l.file_sequence_number),
                    )
                    .map_err(ice(prefix))?;
            } else {
                deleted += 1;
                deleted_rows += l.file.record_count();
                writer
                    .add_delete_file(l.file, l.sequence_number, Some(l.file_sequence_number))
                    .map_err(ice(prefix))?;
            }
        }
        let manifest = writer.write_manifest_file().await.map_err(ice(prefix))?;
        let list_uri = table.uri(&format!("{METADATA}/snap-{snapshot_id}-1-{tag}.avro"));
        let mut list = ManifestListWriter::v2(
            io.new_output(&list_uri)
                .map_err(ice(prefix))?
                .writer()
                .await
                .map_err(ice(prefix))?,
            snapshot_id,
            parent,
            sequence,
        );
        list.add_manifests(std::iter::once(manifest))
            .map_err(ice(prefix))?;
        list.close().await.map_err(ice(prefix))?;

        let operation = if deleted == 0 {
            Operation::Append
        } else {
            Operation::Overwrite
        };
        let mut summary = HashMap::from([
            (RUN_ID.to_owned(), self.run_id.clone()),
            (STEP.to_owned(), self.step.clone()),
            (COMMITTED.to_owned(), self.committed.clone()),
            ("added-data-files".to_owned(), added.to_string()),
            ("added-records".to_owned(), added_rows.to_string()),
            ("added-files-size".to_owned(), added_bytes.to_string()),
            ("deleted-data-files".to_owned(), deleted.to_string()),
            ("deleted-records".to_owned(), deleted_rows.to_string()),
            ("total-data-files".to_owned(), total.to_string()),
            ("total-records".to_owned(), total_rows.to_string()),
            ("total-files-size".to_owned(), total_bytes.to_string()),
            ("total-delete-files".to_owned(), "0".to_owned()),
            ("total-position-deletes".to_owned(), "0".to_owned()),
            ("total-equality-deletes".to_owned(), "0".to_owned()),
        ]);
        if let Some(fp) = &self.fingerprint {
            summary.insert(FINGERPRINT.to_owned(), fp.clone());
        }
        let now = Utc::now().timestamp_millis();
        let snapshot = Snapshot::builder()
            .with_snapshot_id(snapshot_id)
            .with_parent_snapshot_id(parent)
            .with_sequence_number(sequence)
            .with_timestamp_ms(now.max(staged.last_updated_ms()))
            .with_manifest_list(list_uri.clone())
            .with_summary(Summary {
                operation,
                additional_properties: summary,
            })
            .with_schema_id(schema.schema_id())
            .build();
        // The snapshot this commit adds becomes the current one: the previous may expire.
        let (expired, expired_lists) = expired_of(&staged, now, self.retain, None);
        let built = staged
            .into_builder(previous)
            .set_branch_snapshot(snapshot, "main")
            .map_err(ice(prefix))?
            .remove_snapshots(&expired)
            .build()
            .map_err(ice(prefix))?;

        changes.extend(built.changes);
        expired_logs.extend(built.expired_metadata_logs);
        // Data and manifests first, the metadata last: it is the commit.
        table.publish(&io, &manifest_uri).await?;
        table.publish(&io, &list_uri).await?;
        Ok(Staged {
            metadata: built.metadata,
            changes,
            expired_lists,
            expired_logs: expired_logs.into_iter().map(|l| l.metadata_file).collect(),
        })
    }
}

/// A data file of the current snapshot.
struct Live {
    file: DataFile,
    snapshot_id: i64,
    sequence_number: i64,
    file_sequence_number: i64,
}

/// A new data file's footer, read once.
struct Footer {
    key: String,
    size: u64,
    meta: Arc<ParquetMetaData>,
    arrow: parquet::arrow::arrow_reader::ArrowReaderMetadata,
}

/// Ranges of one object of the store, for reading a Parquet footer.
struct Fetch<'a> {
    store: &'a DynZoneStore,
    key: Key,
}

impl MetadataFetch for Fetch<'_> {
    fn fetch(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<Bytes>> {
        Box::pin(async move {
            self.store
                .get_range(&self.key, range)
                .await
                .map(|(_, b)| b)
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        })
    }
}

async fn footer(store: &DynZoneStore, key: &str, size: u64) -> Result<Footer> {
    let fetch = Fetch {
        store,
        key: Key::new(key)?,
    };
    let meta = ParquetMetaDataReader::new()
        .with_prefetch_hint(Some(64 << 10))
        .load_and_finish(fetch, size)
        .await
        .map_err(|e| {
            fail(
                key,
                format!("reading the Parquet footer of {}: {e}", store.url_of(key)),
            )
        })?;
    let meta = Arc::new(meta);
    let arrow = parquet::arrow::arrow_reader::ArrowReaderMetadata::try_new(
        Arc::clone(&meta),
        Default::default(),
    )
    .map_err(|e| fail(key, format!("the schema of {}: {e}", store.url_of(key))))?;
    Ok(Footer {
        key: key.to_owned(),
        size,
        meta,
        arrow,
    })
}

/// The table's schema for files whose Arrow schema is `arrow` plus the partition columns:
/// field ids kept by name from `current`, new columns numbered after its highest id. A column
/// whose type the table cannot widen to is an error naming it.
fn schema_for(
    what: &str,
    arrow: &parquet::arrow::arrow_reader::ArrowReaderMetadata,
    partition_by: &[String],
    current: Option<&Schema>,
) -> Result<Schema> {
    let mut next = current.map_or(0, |s| s.highest_field_id());
    let mut fields: Vec<NestedFieldRef> = Vec::new();
    let mut id_of = |name: &str| match current.and_then(|s| s.field_by_name(name)) {
        Some(f) => f.id,
        None => {
            next += 1;
            next
        }
    };
    let columns = arrow
        .schema()
        .fields()
        .iter()
        .map(|f| {
            Ok((
                f.name().clone(),
                types::iceberg_type(f.name(), f.data_type())?,
            ))
        })
        .chain(
            partition_by
                .iter()
                .map(|p| Ok((p.clone(), Type::Primitive(PrimitiveType::String)))),
        )
        .collect::<std::result::Result<Vec<_>, String>>()
        .map_err(|m| fail(what, m))?;
    for (name, ty) in columns {
        if let Some(old) = current.and_then(|s| s.field_by_name(&name))
            && !types::widens(&old.field_type, &ty)
        {
            return Err(fail(
                what,
                format!(
                    "column {name} is {} in the table and {ty} in this output: Iceberg can widen a column (int to long, float to double, a decimal's precision) but not change it; write it as {} or rename it",
                    old.field_type, old.field_type
                ),
            ));
        }
        fields.push(Arc::new(NestedField::optional(id_of(&name), name, ty)));
    }
    Schema::builder()
        .with_fields(fields)
        .build()
        .map_err(ice(what))
}

/// The Iceberg name mapping of `schema`: lake's files carry no field ids.
fn name_mapping(schema: &Schema) -> String {
    let fields: Vec<serde_json::Value> = schema
        .as_struct()
        .fields()
        .iter()
        .map(|f| serde_json::json!({"field-id": f.id, "names": [f.name]}))
        .collect();
    serde_json::Value::Array(fields).to_string()
}

/// The partition tuple of a file at `rel` (its `key=value` folders).
fn partition_of(rel: &str, partition_by: &[String]) -> Struct {
    let folders: HashMap<&str, &str> = rel
        .split('/')
        .filter_map(|seg| seg.split_once('='))
        .collect();
    partition_by
        .iter()
        .map(|p| {
            folders.get(p.as_str()).and_then(|v| {
                let v = types::unescape(v);
                (v != "__HIVE_DEFAULT_PARTITION__").then(|| iceberg::spec::Literal::string(v))
            })
        })
        .collect()
}

/// A new file as an Iceberg data file: rows, size, and per column its size, value and null
/// counts and (where the footer has exact ones) its bounds.
fn data_file(
    what: &str,
    footer: &Footer,
    uri: String,
    partition: Struct,
    schema: &Schema,
    spec_id: i32,
) -> Result<DataFile> {
    let meta = &footer.meta;
    let groups = meta.row_groups();
    let rows: i64 = groups.iter().map(|g| g.num_rows()).sum();
    let mut column_sizes = HashMap::new();
    let mut value_counts = HashMap::new();
    let mut null_counts = HashMap::new();
    let mut lower = HashMap::new();
    let mut upper = HashMap::new();
    let descr = meta.file_metadata().schema_descr();
    for field in footer.arrow.schema().fields() {
        let Some(ice_field) = schema.field_by_name(field.name()) else {
            continue;
        };
        let id = ice_field.id;
        let Ok(conv) = StatisticsConverter::try_new(field.name(), footer.arrow.schema(), descr)
        else {
            continue;
        };
        let Some(leaf) = conv.parquet_column_index() else {
            continue;
        };
        let chunks = || groups.iter().map(|g| g.column(leaf));
        let size: i64 = chunks().map(|c| c.compressed_size()).sum();
        column_sizes.insert(id, size.max(0) as u64);
        value_counts.insert(id, rows.max(0) as u64);
        if let Ok(nulls) = conv.row_group_null_counts(groups)
            && arrow_array::Array::null_count(&nulls) == 0
        {
            null_counts.insert(id, nulls.values().iter().sum::<u64>());
        }
        let Type::Primitive(p) = &*ice_field.field_type else {
            continue;
        };
        // Bounds only where every row group's are exact (a truncated string max is not one).
        let exact = |f: fn(&parquet::file::statistics::Statistics) -> bool| {
            chunks().all(|c| c.statistics().is_some_and(f))
        };
        if exact(|s| s.min_is_exact())
            && let Ok(mins) = conv.row_group_mins(groups)
            && let Some(d) = types::bound(&mins, p, true)
        {
            lower.insert(id, d);
        }
        if exact(|s| s.max_is_exact())
            && let Ok(maxes) = conv.row_group_maxes(groups)
            && let Some(d) = types::bound(&maxes, p, false)
        {
            upper.insert(id, d);
        }
    }
    DataFileBuilder::default()
        .content(DataContentType::Data)
        .file_path(uri)
        .file_format(DataFileFormat::Parquet)
        .partition(partition)
        .partition_spec_id(spec_id)
        .record_count(rows.max(0) as u64)
        .file_size_in_bytes(footer.size)
        .column_sizes(column_sizes)
        .value_counts(value_counts)
        .null_value_counts(null_counts)
        .lower_bounds(lower)
        .upper_bounds(upper)
        .build()
        .map_err(|e| fail(what, format!("describing {}: {e}", footer.key)))
}

fn rel_of<'k>(key: &'k str, prefix: &str) -> &'k str {
    key.strip_prefix(prefix)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(key)
}

impl Iceberg {
    /// The table of the dataset at `prefix`: in the REST catalog when it holds it.
    fn table<'a>(&self, store: &'a DynZoneStore, prefix: &'a str) -> Table<'a> {
        Table::new(store, prefix).with_rest(self.rest.as_ref())
    }

    /// The table's schema and partition spec for `of`'s new files (checked against the
    /// current table) and their footers.
    async fn footers(
        store: &DynZoneStore,
        dataset: &Dataset,
        known: &BTreeMap<String, Live>,
        table: &Table<'_>,
    ) -> Result<Vec<Footer>> {
        let mut out = Vec::new();
        for o in &dataset.objects {
            if !o.key.ends_with(".parquet") {
                return Err(fail(
                    &dataset.prefix,
                    format!(
                        "{} is not a Parquet file: table_format = \"iceberg\" takes the Parquet output of sql steps; set table_format = \"parquet\" on this step",
                        store.url_of(&o.key)
                    ),
                ));
            }
            if known.contains_key(&table.uri(rel_of(&o.key, &dataset.prefix))) {
                continue;
            }
            out.push(footer(store, &o.key, o.size).await?);
        }
        Ok(out)
    }
}

#[async_trait]
impl TableFormat for Iceberg {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn check(
        &self,
        store: &DynZoneStore,
        staged: &Dataset,
        target: &str,
        partition_by: &[String],
    ) -> Result<()> {
        let Some(first) = staged.objects.iter().find(|o| o.key.ends_with(".parquet")) else {
            return Ok(());
        };
        let table = self.table(store, target);
        let cur = table.current().await?.filter(|c| !c.moved);
        if let Some(e) = cur.as_ref().and_then(|c| c.foreign(target)) {
            return Err(e);
        }
        let f = footer(store, &first.key, first.size).await?;
        schema_for(
            target,
            &f.arrow,
            partition_by,
            cur.as_ref().map(|c| &**c.metadata.current_schema()),
        )?;
        Ok(())
    }

    async fn commit(&self, store: &DynZoneStore, of: &SnapshotOf<'_>) -> Result<()> {
        let job = Arc::new(Job::of(of));
        let table = self.table(store, &job.dataset.prefix);
        table.create(&job).await?;
        // A REST commit runs on a retry too, so the stager owns what it reads.
        let (owned, job) = (Arc::clone(&self.store), Arc::clone(&job));
        let stage: Stager = Arc::new(move |cur: Option<Current>| {
            let (store, job) = (Arc::clone(&owned), Arc::clone(&job));
            Box::pin(async move {
                if job.done(cur.as_ref()) {
                    return Ok(None);
                }
                let table = Table::new(&*store, &job.dataset.prefix);
                job.stage(&table, cur.as_ref()).await.map(Some)
            })
        });
        table.apply(stage).await?;
        Ok(())
    }

    async fn files_as_of(
        &self,
        store: &DynZoneStore,
        prefix: &str,
        at: chrono::DateTime<Utc>,
    ) -> Result<Option<Vec<lake_core::publish::ObjectEntry>>> {
        let table = self.table(store, prefix);
        let Some(cur) = table.current().await?.filter(|c| !c.moved) else {
            return Ok(None);
        };
        let at = at.timestamp_millis();
        let Some(snapshot) = cur
            .metadata
            .snapshots()
            .filter(|s| s.timestamp_ms() <= at)
            .max_by_key(|s| (s.timestamp_ms(), s.sequence_number()))
        else {
            return Ok(None);
        };
        let io = FileIO::new_with_memory();
        let files = table.files_of(&io, &cur.metadata, snapshot).await?;
        files
            .into_values()
            .map(|l| {
                let key = table.key_of(l.file.file_path()).ok_or_else(|| {
                    fail(
                        prefix,
                        format!("{} is outside the table's location", l.file.file_path()),
                    )
                })??;
                Ok(lake_core::publish::ObjectEntry {
                    key: key.as_str().to_owned(),
                    size: l.file.file_size_in_bytes(),
                    sha256: String::new(),
                    origin: None,
                    etag: None,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    async fn vacuum(
        &self,
        store: &DynZoneStore,
        prefix: &str,
        keep: &[lake_core::publish::ObjectEntry],
        retain: std::time::Duration,
    ) -> Result<Vacuumed> {
        let table = self.table(store, prefix);
        let mut done = Vacuumed {
            dataset: prefix.to_owned(),
            ..Vacuumed::default()
        };
        // A table written elsewhere waits for its first commit here.
        let Some(cur) = table.current().await?.filter(|c| !c.moved) else {
            return Ok(done);
        };
        let current = cur.metadata.current_snapshot_id();
        let stage: Stager = Arc::new(move |cur: Option<Current>| {
            Box::pin(async move {
                let Some(cur) = cur else { return Ok(None) };
                let now = Utc::now().timestamp_millis();
                let (expired, expired_lists) = expired_of(&cur.metadata, now, retain, current);
                if expired.is_empty() {
                    return Ok(None);
                }
                let built = cur
                    .metadata
                    .clone()
                    .into_builder(Some(cur.uri.clone()))
                    .remove_snapshots(&expired)
                    .build()
                    .map_err(|e| fail(cur.metadata.location(), e))?;
                Ok(Some(Staged {
                    metadata: built.metadata,
                    changes: built.changes,
                    expired_lists,
                    expired_logs: built
                        .expired_metadata_logs
                        .into_iter()
                        .map(|l| l.metadata_file)
                        .collect(),
                }))
            })
        });
        let before = cur.metadata.snapshots().len();
        let metadata = match table.apply(stage).await? {
            Some(staged) => staged.metadata,
            None => cur.metadata,
        };
        done.expired = before - metadata.snapshots().len();
        done.snapshots = metadata.snapshots().len();
        // Every file a remaining snapshot lists, and what lake's manifest lists.
        let io = FileIO::new_with_memory();
        let mut needed: std::collections::BTreeSet<String> =
            keep.iter().map(|o| o.key.clone()).collect();
        for snapshot in metadata.snapshots() {
            for uri in table.files_of(&io, &metadata, snapshot).await?.into_keys() {
                if let Some(key) = table.key_of(&uri) {
                    needed.insert(key?.as_str().to_owned());
                }
            }
        }
        let doomed: Vec<_> = store
            .list(prefix)
            .await?
            .into_iter()
            .filter(|m| {
                let rel = rel_of(m.key.as_str(), prefix);
                !lake_core::publish::is_hidden(rel)
                    && !lake_core::table_format::is_format_file(rel)
                    && !needed.contains(m.key.as_str())
            })
            .collect();
        done.files = doomed.len();
        done.bytes = doomed.iter().map(|m| m.size).sum();
        let keys: Vec<Key> = doomed.into_iter().map(|m| m.key).collect();
        store.delete_many(&keys).await?;
        Ok(done)
    }

    async fn metadata_location(
        &self,
        store: &DynZoneStore,
        prefix: &str,
    ) -> Result<Option<String>> {
        Ok(self.table(store, prefix).current().await?.map(|c| c.uri))
    }

    async fn snapshots(&self, store: &DynZoneStore, prefix: &str) -> Result<Vec<SnapshotInfo>> {
        let table = self.table(store, prefix);
        let Some(cur) = table.current().await? else {
            return Ok(Vec::new());
        };
        let current = cur.metadata.current_snapshot_id();
        let mut out: Vec<SnapshotInfo> = cur
            .metadata
            .snapshots()
            .map(|s| {
                let p = &s.summary().additional_properties;
                let num = |k: &str| p.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
                SnapshotInfo {
                    id: s.snapshot_id().to_string(),
                    committed: chrono::DateTime::from_timestamp_millis(s.timestamp_ms())
                        .unwrap_or_default(),
                    run_id: p.get(RUN_ID).cloned(),
                    operation: s.summary().operation.as_str().to_owned(),
                    files: num("total-data-files"),
                    rows: num("total-records"),
                    current: Some(s.snapshot_id()) == current,
                }
            })
            .collect();
        out.sort_by_key(|s| std::cmp::Reverse(s.committed));
        Ok(out)
    }
}
