//! Manifests: how a batch of objects becomes visible at once, on any [`ZoneStore`].
//!
//! A dataset (`trusted/credit`) or a raw window (`raw/credit/ingest_date=2024-01-01`) is the set
//! of objects listed in its `_manifest.json`. Writers put objects first and the manifest last,
//! so the manifest write is the commit point; readers go through the manifest and never see
//! part of a batch. Raw windows commit with put-if-absent (exactly once); step outputs replace
//! their manifest and then delete the objects that the previous one listed and the new one does
//! not, so a failed step (which never reaches its publish) leaves the previous output intact.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{WriteMode, Zone, ZoneRef};
use futures::{StreamExt, TryStreamExt};

use crate::source::{Source, Window};
use crate::zone::{DynZoneStore, Key, PutOutcome, ZoneStoreExt, json_bytes, put_hashed};
use crate::{Error, Result};

/// The manifest file name inside a dataset or window folder.
pub const MANIFEST: &str = "_manifest.json";
/// The counts a `sql` step leaves in its staging folder.
pub const STEP_METRICS: &str = "_metrics.json";
/// The staging subfolder of a `sql` step's rejected rows.
pub const REJECTED: &str = "_rejected";

/// What a `sql` step counted, read from `<staging>/_metrics.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepMetrics {
    /// Rows written to the output.
    pub rows: u64,
    /// Rows set aside.
    pub rejected: u64,
    /// Rejected rows by their first failed check (the expectation, or the CAST).
    #[serde(default)]
    pub reasons: std::collections::BTreeMap<String, u64>,
    /// With `mode = "merge"`: what the batch changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergeCounts>,
}

/// What a merge changed: keys inserted, updated and deleted, and the dataset's files it
/// rewrote and kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeCounts {
    /// Keys the batch added.
    pub inserted: u64,
    /// Keys whose row the batch replaced.
    pub updated: u64,
    /// Keys the batch removed (`delete_when`).
    pub deleted: u64,
    /// Files of the dataset rewritten (those that held a touched key).
    pub rewritten_files: u64,
    /// Files of the dataset kept as they were.
    pub kept_files: u64,
}

/// The hidden object of a merge's staging that names the dataset's objects it replaces.
pub const REPLACES: &str = "_replaces.json";

/// What a merge replaces: the keys of the dataset's objects its staged files rewrite.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replaces {
    /// Object keys, relative to the root.
    pub keys: Vec<String>,
}

/// True for keys Hadoop-style tools treat as hidden (`_SUCCESS`, `.part.crc`, `_rejected/…`):
/// any path segment starting with `_` or `.`.
pub fn is_hidden(rel: &str) -> bool {
    rel.split('/').any(|seg| seg.starts_with(['_', '.']))
}

/// The key prefix where the rejected rows of `step` (writing to `zone`) are kept.
pub fn rejected_prefix(zone: Zone, step: &str) -> String {
    format!("{}/{REJECTED}/{step}", zone.as_str())
}

/// A committed batch of objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version (1).
    pub version: u32,
    /// The folder the manifest commits (`raw/credit/ingest_date=2024-01-01`, `refined/report`).
    pub prefix: String,
    /// The run that wrote it.
    pub run_id: String,
    /// When it was committed.
    pub committed: DateTime<Utc>,
    /// For step outputs: what produced it (step definition, date and input hashes), so a rerun
    /// with the same inputs can skip the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// For raw windows of a `dedup = "content"` source: the window whose bytes this one
    /// repeated; nothing was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_of: Option<String>,
    /// For datasets a step merges into (`mode = "merge"` or `"history"`): the run date of each
    /// batch the dataset holds, with that batch's fingerprint. A rerun of a date whose batch is
    /// held is up to date; a batch merged for an earlier date is followed by the later ones
    /// again, in order.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub batches: std::collections::BTreeMap<chrono::NaiveDate, String>,
    /// The objects, by key relative to the lake root.
    pub objects: Vec<ObjectEntry>,
}

/// What produced a step's output, recorded in its manifest by [`publish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Produced {
    /// The step definition, date and input hashes (see [`Manifest::fingerprint`]).
    pub fingerprint: String,
    /// For a merge: the run date of the batch. The dataset's batches of later dates are
    /// dropped from [`Manifest::batches`] (they are merged again after it, each adding itself).
    pub batch: Option<chrono::NaiveDate>,
}

impl Manifest {
    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.size).sum()
    }
}

/// One object of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Key relative to the lake root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Where it came from (raw objects: the source path or URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The store's entity tag of the object when it was committed (an S3 ETag; a local file's
    /// inode, mtime and size): a reader that does not hash what it reads (Spark, EMR, a
    /// command) is given the object only while its tag is still this one, or its bytes were
    /// read back and hashed (see [`tags_match`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

/// Copy the committed objects of a `copy` step's input under its output prefix, keeping their
/// paths below the dataset's prefix. Returns the objects and bytes copied.
pub async fn copy_objects(
    store: &DynZoneStore,
    work: &crate::cluster::CopyWork,
) -> Result<(usize, u64)> {
    let base = format!("{}/", work.input.prefix);
    let mut bytes = 0;
    for o in &work.input.objects {
        let rel = o.key.strip_prefix(&base).unwrap_or(&o.key);
        store
            .copy(
                &Key::new(o.key.clone())?,
                &Key::new(format!("{}/{rel}", work.output))?,
            )
            .await?;
        bytes += o.size;
    }
    Ok((work.input.objects.len(), bytes))
}

fn manifest_key(prefix: &str) -> Result<Key> {
    Key::new(format!("{prefix}/{MANIFEST}"))
}

/// The key prefix of a source's raw window.
pub fn raw_window_prefix(source: &str, date: chrono::NaiveDate) -> String {
    format!("raw/{source}/ingest_date={date}")
}

/// Read the manifest committing `prefix`, if there is one.
pub async fn read_manifest(store: &DynZoneStore, prefix: &str) -> Result<Option<Manifest>> {
    store.get_json(&manifest_key(prefix)?).await
}

/// The committed objects of a dataset: for `raw/<source>`, every complete window, or only
/// the window of `date` when given (folders without a manifest are ignored); for `trusted/…`
/// and `refined/…`, the current manifest.
pub async fn dataset_objects(
    store: &DynZoneStore,
    dataset: &ZoneRef,
    date: Option<chrono::NaiveDate>,
) -> Result<Vec<ObjectEntry>> {
    if dataset.zone != Zone::Raw {
        return Ok(read_manifest(store, &dataset.prefix())
            .await?
            .map(|m| m.objects)
            .unwrap_or_default());
    }
    if let Some(date) = date {
        // A window that repeated an earlier one's bytes (dedup) reads as that window.
        return Ok(
            match read_manifest(store, &raw_window_prefix(&dataset.name, date)).await? {
                Some(Manifest {
                    duplicate_of: Some(original),
                    ..
                }) => read_manifest(store, &original)
                    .await?
                    .map(|m| m.objects)
                    .unwrap_or_default(),
                Some(m) => m.objects,
                None => Vec::new(),
            },
        );
    }
    Ok(raw_windows(store, &dataset.prefix())
        .await?
        .into_iter()
        .flat_map(|m| m.objects)
        .collect())
}

/// The manifests of the complete windows of the raw source at `prefix` (`raw/<source>`),
/// oldest first: from its [`WindowIndex`] (one read, whatever the number of windows), or, for
/// a source landed before lake kept an index, from a listing and one read per window.
async fn raw_windows(store: &DynZoneStore, prefix: &str) -> Result<Vec<Manifest>> {
    match store.get_json::<WindowIndex>(&index_key(prefix)?).await? {
        Some(index) => Ok(index.windows),
        None => listed_windows(store, prefix).await,
    }
}

/// The manifests of the complete windows under `prefix`, found by listing it.
async fn listed_windows(store: &DynZoneStore, prefix: &str) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    for meta in store.list(prefix).await? {
        let Some(rest) = meta.key.strip_prefix(prefix) else {
            continue;
        };
        if let Some(window) = rest.strip_suffix(&format!("/{MANIFEST}"))
            && !window.contains('/')
            && window.starts_with("ingest_date=")
            && let Some(m) = store.get_json::<Manifest>(&meta.key).await?
        {
            out.push(m);
        }
    }
    Ok(out)
}

/// Remove from `raw/<source>` every object that neither a window manifest nor the window index
/// lists: what a landing killed before its commit (or a refetch killed before its manifest
/// switch) left, which tools that read folders would count. Reads every window's manifest: run
/// it under the pipeline's lock after a run died, not on every run.
pub async fn tidy_source(store: &DynZoneStore, source: &str) -> Result<()> {
    let prefix = format!("raw/{source}");
    let mut keep: std::collections::HashSet<String> = listed_windows(store, &prefix)
        .await?
        .into_iter()
        .flat_map(|m| m.objects)
        .map(|o| o.key)
        .collect();
    if let Some(index) = store.get_json::<WindowIndex>(&index_key(&prefix)?).await? {
        keep.extend(
            index
                .windows
                .into_iter()
                .flat_map(|m| m.objects)
                .map(|o| o.key),
        );
    }
    let doomed: Vec<Key> = store
        .list(&prefix)
        .await?
        .into_iter()
        .filter(|m| !is_hidden(rel_key(m.key.as_str(), &prefix)) && !keep.contains(m.key.as_str()))
        .map(|m| m.key)
        .collect();
    store.delete_many(&doomed).await?;
    store.sweep(&prefix).await?;
    Ok(())
}

/// The index of a raw source's windows, in `raw/<source>/_windows.json`.
pub const WINDOW_INDEX: &str = "_windows.json";

fn index_key(source_prefix: &str) -> Result<Key> {
    Key::new(format!("{source_prefix}/{WINDOW_INDEX}"))
}

/// Every complete window of a raw source in one object, so that a step reading `raw/<source>`
/// reads one object however many windows have landed.
///
/// The window manifests stay the commit points (put-if-absent, exactly once); the index is
/// written after them, by the one run holding the pipeline's lock. A window committed by a run
/// that died before it saved the index is not in it, so it stays invisible to readers of the
/// whole source until the next landing of that window (which finds it complete) adds it: the
/// cursor never moves past a window before the index that lists it is saved. Objects that a
/// forced refetch replaced are deleted only after the index that no longer lists them is saved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowIndex {
    /// Format version (1).
    pub version: u32,
    /// `raw/<source>`.
    pub prefix: String,
    /// The manifests of the complete windows, oldest first.
    pub windows: Vec<Manifest>,
    /// Keys to delete once this index is saved (objects a refetch replaced).
    #[serde(skip)]
    obsolete: Vec<String>,
    /// Changed since it was read.
    #[serde(skip)]
    dirty: bool,
}

impl WindowIndex {
    /// The index of `source`: as saved, or (for a source landed before lake kept an index)
    /// built from its window manifests.
    pub async fn load(store: &DynZoneStore, source: &str) -> Result<Self> {
        let prefix = format!("raw/{source}");
        if let Some(index) = store.get_json::<Self>(&index_key(&prefix)?).await? {
            return Ok(index);
        }
        let windows = listed_windows(store, &prefix).await?;
        Ok(Self {
            version: 1,
            dirty: !windows.is_empty(),
            prefix,
            windows,
            obsolete: Vec::new(),
        })
    }

    /// Record `manifest` as its window's committed manifest; objects of the one it replaces
    /// that it does not list are deleted after the next [`save`](Self::save).
    pub fn commit(&mut self, manifest: &Manifest) {
        match self
            .windows
            .binary_search_by(|w| w.prefix.as_str().cmp(&manifest.prefix))
        {
            Ok(i) if self.windows[i] == *manifest => {}
            Ok(i) => {
                let old = std::mem::replace(&mut self.windows[i], manifest.clone());
                self.obsolete.extend(
                    old.objects
                        .into_iter()
                        .filter(|o| !manifest.objects.iter().any(|n| n.key == o.key))
                        .map(|o| o.key),
                );
                self.dirty = true;
            }
            Err(i) => {
                self.windows.insert(i, manifest.clone());
                self.dirty = true;
            }
        }
    }

    /// Write the index if it changed, then delete the objects replaced windows no longer list.
    pub async fn save(&mut self, store: &DynZoneStore) -> Result<()> {
        if self.dirty {
            store.put_json(&index_key(&self.prefix)?, &*self).await?;
            self.dirty = false;
        }
        let keys = std::mem::take(&mut self.obsolete)
            .into_iter()
            .map(Key::new)
            .collect::<Result<Vec<_>>>()?;
        store.delete_many(&keys).await
    }
}

/// A committed dataset of the lake, as `lake query` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// Its zone.
    pub zone: Zone,
    /// Its table name in the zone's schema: the source or dataset name, or `_rejected_<step>`.
    pub name: String,
    /// Its key prefix.
    pub prefix: String,
    /// Its committed objects.
    pub objects: Vec<ObjectEntry>,
}

/// Reads of committed datasets tried at most, when a republish replaces what they read.
pub const READ_ATTEMPTS: usize = 3;

/// Run `read` (a read of committed datasets: `lake query`, a page of `lake serve`, a chart)
/// again, from the manifests as they are then, while it fails because a republish removed an
/// object that the manifests it read listed ([`Error::is_gone`]); at most [`READ_ATTEMPTS`]
/// times. Every reader of the lake goes through here, so none of them shows such a race to
/// its user.
pub async fn read_again<T, F, Fut>(mut read: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 1;
    loop {
        match read().await {
            Err(e) if e.is_gone() && attempt < READ_ATTEMPTS => attempt += 1,
            done => return done,
        }
    }
}

/// Every committed dataset of the lake: raw sources (all complete windows), trusted and refined
/// datasets, and the rejected rows of steps; sorted by zone and name.
pub async fn list_datasets(store: &DynZoneStore) -> Result<Vec<Dataset>> {
    let mut out = Vec::new();
    for zone in Zone::ALL {
        let zp = zone.as_str();
        let mut raw_sources = std::collections::BTreeSet::new();
        let listed: Vec<String> = store
            .list(zp)
            .await?
            .into_iter()
            .map(|m| m.key.to_string())
            .collect();
        let suffix = format!("/{MANIFEST}");
        let mut manifests: Vec<String> = listed
            .iter()
            .filter(|k| k.ends_with(&suffix))
            .cloned()
            .collect();
        // A listing made while a republish renames a manifest into place may miss it on some
        // filesystems: a dataset folder listed without its manifest has it read by key (no
        // such manifest: no dataset).
        if zone != Zone::Raw {
            let folders: std::collections::BTreeSet<String> = listed
                .iter()
                .filter_map(|k| {
                    let mut parts = k.splitn(3, '/');
                    let (_, name, _) = (parts.next()?, parts.next()?, parts.next()?);
                    (!name.starts_with(['_', '.'])).then(|| format!("{zp}/{name}{suffix}"))
                })
                .collect();
            let unlisted: Vec<String> = folders
                .into_iter()
                .filter(|m| !manifests.contains(m))
                .collect();
            manifests.extend(unlisted);
        }
        for key in &manifests {
            let Some(dir) = key.strip_suffix(&suffix) else {
                continue;
            };
            let parts: Vec<&str> = dir.split('/').collect();
            match (zone, parts.as_slice()) {
                (Zone::Raw, [_, source, window]) if window.starts_with("ingest_date=") => {
                    raw_sources.insert((*source).to_owned());
                }
                (Zone::Raw, _) => {}
                (_, [_, name]) if !name.starts_with(['_', '.']) => {
                    if let Some(m) = store.get_json::<Manifest>(&Key::new(key.as_str())?).await? {
                        out.push(Dataset {
                            zone,
                            name: (*name).to_owned(),
                            prefix: dir.to_owned(),
                            objects: m.objects,
                        });
                    }
                }
                (_, [_, REJECTED, step]) => {
                    if let Some(m) = store.get_json::<Manifest>(&Key::new(key.as_str())?).await? {
                        out.push(Dataset {
                            zone,
                            name: format!("{REJECTED}_{step}"),
                            prefix: dir.to_owned(),
                            objects: m.objects,
                        });
                    }
                }
                _ => {}
            }
        }
        for source in raw_sources {
            let prefix = format!("raw/{source}");
            let objects = raw_windows(store, &prefix)
                .await?
                .into_iter()
                .flat_map(|m| m.objects)
                .collect();
            out.push(Dataset {
                zone,
                name: source,
                prefix,
                objects,
            });
        }
    }
    out.sort_by(|a, b| (a.zone, &a.name).cmp(&(b.zone, &b.name)));
    Ok(out)
}

/// What [`land`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landed {
    /// The window was fetched and committed by this call.
    Fetched(Manifest),
    /// The window was already complete; nothing was fetched.
    AlreadyComplete(Manifest),
    /// The window's bytes equal the previous window's (`dedup = "content"`): committed empty,
    /// with `duplicate_of` naming that window.
    Duplicate(Manifest),
}

/// Fetch one window of `source` into `raw/<source>/ingest_date=<date>/`, byte for byte, and
/// commit it with a put-if-absent manifest: a complete window is never fetched or changed again.
/// The source's [`WindowIndex`] is read before and saved after.
///
/// Objects are streamed; each one's size and SHA-256 go into the manifest. A failure before the
/// commit leaves no manifest, so readers ignore the partial window and the next run fetches it
/// again.
pub async fn land(
    store: &DynZoneStore,
    source: &dyn Source,
    window: &Window,
    run_id: &str,
) -> Result<Landed> {
    let mut index = WindowIndex::load(store, source.name()).await?;
    let landed = land_with(
        store,
        source,
        window,
        run_id,
        &LandOptions::default(),
        &mut index,
    )
    .await;
    index.save(store).await?;
    landed
}

pub use crate::zone::ProgressFn;

/// How [`land_with`] lands a window.
#[derive(Clone, Default)]
pub struct LandOptions<'a> {
    /// Fetch a complete window again and replace it.
    pub force: bool,
    /// `dedup = "content"`: the previous window with content; equal bytes commit an empty
    /// window naming it.
    pub dedup_against: Option<&'a Manifest>,
    /// Told the size of every chunk fetched, as it arrives.
    pub progress: Option<ProgressFn>,
}

/// What objects being landed at once may hold in memory, in KiB: an S3 upload of a large
/// object holds up to 3 parts of 8 MiB (2 uploading and the one filling), so a large object
/// (or one of unknown size) takes the whole budget and lands alone, and small ones land many
/// at a time.
const LANDING_BUDGET_KIB: u32 = 32 << 10;
/// Objects landing at once, at most.
const LANDING_MOST_AT_ONCE: usize = 256;
/// Outputs hashed and copied in at once when a step publishes.
const PUBLISH_AT_ONCE: usize = 4;

/// [`land`] with options, committing into `index` (which the caller saves: a run saves it once
/// for all the windows it lands, before it moves the source's cursor).
///
/// Objects are written straight to their keys in the window's folder, several small ones at
/// once, hashed on the way. With `force`, a complete window is fetched again and replaced;
/// a key its committed manifest lists is never written again (a refetched object whose name
/// is taken lands as `<stem>.<run id>.<ext>`), so until the new manifest replaces the old one
/// (the commit point) the old window is whole, and the objects only the old one listed are
/// deleted after the index that no longer lists them is saved. A failed fetch deletes what it
/// wrote and leaves the old window as it was.
pub async fn land_with(
    store: &DynZoneStore,
    source: &dyn Source,
    window: &Window,
    run_id: &str,
    opts: &LandOptions<'_>,
    index: &mut WindowIndex,
) -> Result<Landed> {
    let dedup_against = opts.dedup_against;
    let prefix = raw_window_prefix(source.name(), window.date());
    let previous = read_manifest(store, &prefix).await?;
    if let Some(m) = &previous
        && !opts.force
    {
        // Complete; also a window a run committed and died before indexing.
        index.commit(m);
        return Ok(Landed::AlreadyComplete(m.clone()));
    }
    let landed = match source.objects(window).await {
        Ok(objects) => {
            let committed = previous.as_ref();
            land_objects(
                store, source, window, run_id, &prefix, &objects, committed, opts,
            )
            .await
        }
        Err(e) => Err(e),
    };
    source.finish(window).await;
    let window_manifest = |duplicate_of: Option<String>, objects| Manifest {
        version: 1,
        prefix: prefix.clone(),
        run_id: run_id.to_owned(),
        committed: Utc::now(),
        fingerprint: None,
        duplicate_of,
        batches: Default::default(),
        objects,
    };
    let Some(entries) = landed? else {
        // Same bytes as the previous window: commit an empty window that says so.
        let manifest = window_manifest(dedup_against.map(|m| m.prefix.clone()), Vec::new());
        store.put_json(&manifest_key(&prefix)?, &manifest).await?;
        index.commit(&manifest);
        return Ok(Landed::Duplicate(manifest));
    };
    let mut entries = entries;
    record_tags(store, &prefix, &mut entries).await?;
    let manifest = window_manifest(None, entries);
    if previous.is_some() {
        store.put_json(&manifest_key(&prefix)?, &manifest).await?;
        index.commit(&manifest);
        return Ok(Landed::Fetched(manifest));
    }
    match store
        .put_if_absent(&manifest_key(&prefix)?, json_bytes(&manifest))
        .await?
    {
        PutOutcome::Created => {
            index.commit(&manifest);
            Ok(Landed::Fetched(manifest))
        }
        PutOutcome::AlreadyExists => {
            let theirs = read_manifest(store, &prefix)
                .await?
                .ok_or_else(|| Error::NotFound {
                    key: format!("{prefix}/{MANIFEST}"),
                    store: store.root_url(),
                })?;
            index.commit(&theirs);
            Ok(Landed::AlreadyComplete(theirs))
        }
    }
}

/// `object` fetched by the source itself into the local file `path`
/// ([`Source::download`]), with the size and SHA-256 of what it wrote; `None` when the source
/// does not download.
async fn downloaded(
    source: &dyn Source,
    window: &Window,
    object: &crate::source::SourceObject,
    path: &std::path::Path,
) -> Result<Option<crate::zone::Digested>> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| Error::Io {
                action: "create directory",
                path: dir.to_owned(),
                source: e,
            })?;
    }
    source.download(window, object, path).await
}

/// `name` with `tag` before its extensions: `a/b.csv.gz` → `a/b.<tag>.csv.gz`.
fn tagged(name: &str, tag: &str) -> String {
    let (dir, file) = match name.rsplit_once('/') {
        Some((d, f)) => (format!("{d}/"), f),
        None => (String::new(), name),
    };
    match file[1.min(file.len())..].find('.') {
        Some(i) => format!("{dir}{}.{tag}{}", &file[..=i], &file[i + 1..]),
        None => format!("{dir}{file}.{tag}"),
    }
}

/// Write `objects` of a window to their keys under `prefix` (never one `committed` lists),
/// small ones several at once; `None` when their bytes equal `dedup_against`'s. On failure,
/// and for a duplicate, what was written is deleted.
#[allow(clippy::too_many_arguments)]
async fn land_objects(
    store: &DynZoneStore,
    source: &dyn Source,
    window: &Window,
    run_id: &str,
    prefix: &str,
    objects: &[crate::source::SourceObject],
    committed: Option<&Manifest>,
    opts: &LandOptions<'_>,
) -> Result<Option<Vec<ObjectEntry>>> {
    let taken: std::collections::HashSet<&str> = committed
        .map(|m| m.objects.iter().map(|o| o.key.as_str()).collect())
        .unwrap_or_default();
    let mut keys = Vec::with_capacity(objects.len());
    for obj in objects {
        let name_err = |e: Error| Error::Source {
            source_name: source.name().to_owned(),
            message: format!("object name {:?} cannot be stored", obj.name),
            source: Some(Box::new(e)),
        };
        let mut key = Key::new(format!("{prefix}/{}", obj.name)).map_err(name_err)?;
        if taken.contains(key.as_str()) {
            key = Key::new(format!("{prefix}/{}", tagged(&obj.name, run_id))).map_err(name_err)?;
        }
        keys.push(key);
    }
    let budget = tokio::sync::Semaphore::new(LANDING_BUDGET_KIB as usize);
    let written = std::sync::Mutex::new(Vec::new());
    let (budget, written) = (&budget, &written);
    let jobs = objects.iter().zip(&keys).map(|(obj, key)| {
        async move {
            let kib = obj.size.map_or(LANDING_BUDGET_KIB, |s| {
                u32::try_from(s.div_ceil(1024))
                    .unwrap_or(u32::MAX)
                    .clamp(64, LANDING_BUDGET_KIB)
            });
            let _permit = budget
                .acquire_many(kib)
                .await
                .expect("the landing budget is never closed");
            // Recorded first: a put that fails half way may leave an object to delete.
            written.lock().expect("landing lock").push(key.clone());
            let d = match source.local_file(window, obj) {
                Some(path) => store.put_file(key, &path, opts.progress.clone()).await?,
                None if store.killed_puts_leave_files() => {
                    // On a filesystem root an object is written in staging and moved in whole:
                    // a killed download leaves its partial file there, not in the window's
                    // folder where tools that read folders would see it. Moved, not linked and
                    // deleted: no deleted inode for the next file's create to skip.
                    let staged = Key::new(format!(
                        "_lake/staging/{run_id}/ingest/{}",
                        key.as_str().strip_prefix("raw/").unwrap_or(key.as_str())
                    ))?;
                    let d = match store.local_path(staged.as_str()) {
                        Some(path) => downloaded(source, window, obj, &path).await?,
                        None => None,
                    };
                    let d = match d {
                        Some(d) => {
                            if let Some(p) = &opts.progress {
                                p(d.size);
                            }
                            d
                        }
                        None => {
                            let body = source.open(window, obj).await?;
                            put_hashed(store, &staged, body, opts.progress.clone()).await?
                        }
                    };
                    store.rename(&staged, key).await?;
                    d
                }
                None => {
                    let body = source.open(window, obj).await?;
                    put_hashed(store, key, body, opts.progress.clone()).await?
                }
            };
            Ok::<_, Error>(ObjectEntry {
                key: key.to_string(),
                size: d.size,
                sha256: d.sha256,
                origin: Some(obj.origin.clone()),
                etag: None,
            })
        }
    });
    let landed: Result<Vec<ObjectEntry>> = futures::stream::iter(jobs)
        .buffered(source.at_once().clamp(1, LANDING_MOST_AT_ONCE))
        .try_collect()
        .await;
    let written = std::mem::take(&mut *written.lock().expect("landing lock"));
    let entries = match landed {
        Ok(entries) => entries,
        Err(e) => {
            let _ = store.delete_many(&written).await;
            return Err(e);
        }
    };
    if let Some(prev) = opts.dedup_against {
        let mut new: Vec<&str> = entries.iter().map(|e| e.sha256.as_str()).collect();
        let mut old: Vec<&str> = prev.objects.iter().map(|o| o.sha256.as_str()).collect();
        new.sort_unstable();
        old.sort_unstable();
        if !new.is_empty() && new == old {
            store.delete_many(&written).await?;
            return Ok(None);
        }
    }
    Ok(Some(entries))
}

/// Publish the objects under `staging` as the new content of the dataset at `prefix`.
///
/// Objects keep their path relative to `staging`; hidden ones ([`is_hidden`]: `_metrics.json`,
/// `_rejected/`, `_SUCCESS`, `.crc`) are not published. `mode` says what happens to the current
/// objects: [`Overwrite`](WriteMode::Overwrite) drops them all, [`Append`](WriteMode::Append)
/// keeps them all (a staged object may not replace one), and
/// [`OverwritePartitions`](WriteMode::OverwritePartitions) drops those in the folders the staging
/// writes. The new manifest is the commit point; then objects only the previous manifest listed
/// are deleted once `retain_replaced` has passed (see [`tidy`]), with any object under `prefix`
/// no manifest lists, and the staging objects are removed. With a table `format`, its
/// snapshot of the new manifest is committed between the two (see [`crate::table_format`]),
/// and replaced objects stay at least as long as its snapshots. Fails (publishing nothing)
/// when `staging` holds nothing to publish.
#[allow(clippy::too_many_arguments)]
pub async fn publish(
    store: &DynZoneStore,
    staging: &str,
    prefix: &str,
    mode: WriteMode,
    run_id: &str,
    produced: Option<Produced>,
    retain_replaced: std::time::Duration,
    format: Option<FormatCommit<'_>>,
) -> Result<Manifest> {
    let staged: Vec<_> = store
        .list(staging)
        .await?
        .into_iter()
        .filter(|m| !is_hidden(rel_key(m.key.as_str(), staging)))
        .collect();
    // A merge whose rewritten files kept no rows removes them and writes none.
    if staged.is_empty() && !matches!(mode, WriteMode::Merge | WriteMode::History) {
        return Err(Error::Invalid {
            what: format!("output {prefix}"),
            message: format!(
                "the step wrote nothing to its output folder {}",
                store.url_of(staging)
            ),
        });
    }
    let previous = read_manifest(store, prefix).await?;
    let new_dirs: std::collections::BTreeSet<&str> = staged
        .iter()
        .map(|m| parent_dir(rel_key(m.key.as_str(), staging)))
        .collect();
    let mut objects: Vec<ObjectEntry> = match (&previous, mode) {
        (None, _) | (_, WriteMode::Overwrite) => Vec::new(),
        (Some(prev), WriteMode::Append) => prev.objects.clone(),
        (Some(prev), WriteMode::OverwritePartitions) => prev
            .objects
            .iter()
            .filter(|o| !new_dirs.contains(parent_dir(rel_key(&o.key, prefix))))
            .cloned()
            .collect(),
        (Some(prev), WriteMode::Merge | WriteMode::History) => {
            let replaces: Replaces = store
                .get_json(&Key::new(format!("{staging}/{REPLACES}"))?)
                .await?
                .unwrap_or_default();
            if let Some(stale) = replaces
                .keys
                .iter()
                .find(|k| !prev.objects.iter().any(|o| &o.key == *k))
            {
                // Merged against another version than the current one: publishing would lose
                // rows (or keep replaced ones). The step runs again.
                return Err(Error::Mismatch {
                    object: store.url_of(stale),
                    message: "the merge replaces an object the dataset no longer lists (another run published it meanwhile)".into(),
                    missing: true,
                });
            }
            prev.objects
                .iter()
                .filter(|o| !replaces.keys.contains(&o.key))
                .cloned()
                .collect()
        }
    };
    let kept = objects.len();
    let mut moves = Vec::with_capacity(staged.len());
    for meta in &staged {
        let rel = rel_key(meta.key.as_str(), staging);
        let to = Key::new(format!("{prefix}/{rel}"))?;
        if objects[..kept].iter().any(|o| o.key == to.as_str()) {
            return Err(Error::Invalid {
                what: format!("output {prefix}"),
                message: format!(
                    "mode = \"append\" but {to} exists already; write new file names in each run (e.g. with {{run_id}})"
                ),
            });
        }
        moves.push((&meta.key, to));
    }
    // Hashed and copied a few at a time: an output of several files uses several cores.
    let published: Vec<ObjectEntry> =
        futures::stream::iter(moves.into_iter().map(|(from, to)| async move {
            let digest = store.digest(from).await?;
            store.copy(from, &to).await?;
            Ok::<_, Error>(ObjectEntry {
                key: to.to_string(),
                size: digest.size,
                sha256: digest.sha256,
                origin: None,
                etag: None,
            })
        }))
        .buffered(PUBLISH_AT_ONCE)
        .try_collect()
        .await?;
    objects.extend(published);
    record_tags(store, prefix, &mut objects).await?;
    let mut batches = std::collections::BTreeMap::new();
    if let (WriteMode::Merge | WriteMode::History, Some(p)) = (mode, &produced) {
        if let Some(prev) = &previous {
            batches = prev.batches.clone();
        }
        if let Some(date) = p.batch {
            batches.retain(|d, _| *d < date);
            batches.insert(date, p.fingerprint.clone());
        }
    }
    let manifest = Manifest {
        version: 1,
        prefix: prefix.to_owned(),
        run_id: run_id.to_owned(),
        committed: Utc::now(),
        fingerprint: produced.map(|p| p.fingerprint),
        duplicate_of: None,
        batches,
        objects,
    };
    store.put_json(&manifest_key(prefix)?, &manifest).await?;
    let mut retain_replaced = retain_replaced;
    if let Some(f) = format {
        f.commit(store, prefix, &manifest).await?;
        retain_replaced = retain_replaced.max(f.retain);
    }
    let replaced = previous
        .map(|p| p.objects)
        .unwrap_or_default()
        .into_iter()
        .filter(|o| !manifest.objects.iter().any(|n| n.key == o.key))
        .map(|o| o.key);
    tidy(store, prefix, &manifest.objects, replaced, retain_replaced).await?;
    store.delete_prefix(staging).await?;
    Ok(manifest)
}

/// A table format's commit within [`publish`]: which format, and what its snapshot records.
#[derive(Debug, Clone, Copy)]
pub struct FormatCommit<'a> {
    /// The format.
    pub format: &'a dyn crate::table_format::TableFormat,
    /// The step publishing.
    pub step: &'a str,
    /// The dataset's zone and name.
    pub dataset: &'a ZoneRef,
    /// Its partition columns.
    pub partition_by: &'a [String],
    /// How long replaced snapshots (and their files) stay.
    pub retain: std::time::Duration,
}

impl FormatCommit<'_> {
    /// Commit the snapshot of `manifest`, the dataset's manifest at `prefix`.
    pub async fn commit(
        &self,
        store: &DynZoneStore,
        prefix: &str,
        manifest: &Manifest,
    ) -> Result<()> {
        let dataset = Dataset {
            zone: self.dataset.zone,
            name: self.dataset.name.clone(),
            prefix: prefix.to_owned(),
            objects: manifest.objects.clone(),
        };
        let of = crate::table_format::SnapshotOf {
            dataset: &dataset,
            manifest,
            step: self.step,
            partition_by: self.partition_by,
            retain: self.retain,
        };
        self.format.commit(store, &of).await
    }
}

/// The dataset file listing objects a republish replaced, kept for readers that started
/// before it: `<dataset>/_replaced.json`.
pub const REPLACED: &str = "_replaced.json";

/// One object a republish replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Replaced {
    key: String,
    since: DateTime<Utc>,
}

/// After a manifest listing `objects` was committed for the dataset at `prefix`: record the
/// keys it `replaced`, and delete every object under `prefix` that it does not list, unless it was replaced less
/// than `retain` ago (a reader that read the previous manifest may still be reading it).
/// Objects no manifest lists (the copies of a publish that was killed, or whose manifest write
/// failed) go too, and on a local root the unfinished uploads (`name#1`) that no listing shows.
pub async fn tidy(
    store: &DynZoneStore,
    prefix: &str,
    objects: &[ObjectEntry],
    replaced: impl IntoIterator<Item = String>,
    retain: std::time::Duration,
) -> Result<()> {
    let listed: std::collections::HashSet<&str> = objects.iter().map(|o| o.key.as_str()).collect();
    let record = Key::new(format!("{prefix}/{REPLACED}"))?;
    let now = Utc::now();
    // A record that cannot be read is started again: at worst objects go before their time.
    let recorded = store
        .get_json::<Vec<Replaced>>(&record)
        .await
        .ok()
        .flatten();
    let had_record = recorded.is_some();
    let mut kept = recorded.unwrap_or_default();
    kept.extend(replaced.into_iter().map(|key| Replaced { key, since: now }));
    let retain = chrono::Duration::from_std(retain).unwrap_or(chrono::Duration::MAX);
    kept.retain(|r| !listed.contains(r.key.as_str()) && now - r.since < retain);
    let young: std::collections::HashSet<&str> = kept.iter().map(|r| r.key.as_str()).collect();
    let doomed: Vec<Key> = store
        .list(prefix)
        .await?
        .into_iter()
        .filter(|m| {
            let rel = rel_key(m.key.as_str(), prefix);
            !is_hidden(rel)
                && !crate::table_format::is_format_file(rel)
                && !listed.contains(m.key.as_str())
                && !young.contains(m.key.as_str())
        })
        .map(|m| m.key)
        .collect();
    store.delete_many(&doomed).await?;
    if kept.is_empty() {
        if had_record {
            store.delete(&record).await?;
        }
    } else {
        store.put_json(&record, &kept).await?;
    }
    store.sweep(prefix).await?;
    Ok(())
}

pub(crate) fn rel_key<'a>(key: &'a str, prefix: &str) -> &'a str {
    key.strip_prefix(prefix)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(key)
}

fn parent_dir(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(d, _)| d)
}

/// Where a source's ingest has got to: `_lake/state/<source>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// The source.
    pub source: String,
    /// The first day of the newest complete window.
    pub last_complete: chrono::NaiveDate,
    /// The run that moved it.
    pub run_id: String,
    /// When.
    pub updated: DateTime<Utc>,
}

fn cursor_key(source: &str) -> Result<Key> {
    Key::new(format!("_lake/state/{source}.json"))
}

/// The cursor of `source`, if it has one.
pub async fn cursor(store: &DynZoneStore, source: &str) -> Result<Option<Cursor>> {
    store.get_json(&cursor_key(source)?).await
}

/// Set the cursor of `source` to the window starting `day`. Runs hold the pipeline's lock, so
/// there is one writer; it only moves the cursor forward.
pub async fn set_cursor(
    store: &DynZoneStore,
    source: &str,
    day: chrono::NaiveDate,
    run_id: &str,
) -> Result<()> {
    store
        .put_json(
            &cursor_key(source)?,
            &Cursor {
                source: source.to_owned(),
                last_complete: day,
                run_id: run_id.to_owned(),
                updated: Utc::now(),
            },
        )
        .await
        .map(|_| ())
}

/// Objects and bytes of one dataset folder of a zone, for listings (`lake ls`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FolderSummary {
    /// `zone/name`.
    pub path: String,
    /// Objects under it (manifests and rejected rows included).
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
}

/// Every folder directly under each zone, with its object count and bytes, in zone order.
pub async fn zone_summary(store: &DynZoneStore) -> Result<Vec<(Zone, Vec<FolderSummary>)>> {
    let mut out = Vec::new();
    for zone in Zone::ALL {
        let mut folders: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
        for o in store.list(zone.as_str()).await? {
            if let Some(rest) = o.key.strip_prefix(zone.as_str()) {
                let rest = rest.trim_start_matches('/');
                let name = rest.split('/').next().unwrap_or(rest).to_owned();
                let e = folders.entry(name).or_default();
                e.0 += 1;
                e.1 += o.size;
            }
        }
        out.push((
            zone,
            folders
                .into_iter()
                .map(|(name, (objects, bytes))| FolderSummary {
                    path: format!("{}/{name}", zone.as_str()),
                    objects,
                    bytes,
                })
                .collect(),
        ));
    }
    Ok(out)
}

/// What the store holds of `objects`: each key it lists with its size and entity tag (a
/// local file's inode, mtime and size; an S3 object's ETag), from one listing per dataset
/// folder (`zone/name`, all its windows and partitions), not a request per object.
pub async fn listing(store: &DynZoneStore, objects: &[&ObjectEntry]) -> Result<Listing> {
    let mut folders: BTreeMap<String, ()> = BTreeMap::new();
    let mut found = Listing::new();
    for o in objects {
        let folder = match o.key.match_indices('/').nth(1) {
            Some((i, _)) => &o.key[..i],
            None => o.key.rsplit_once('/').map_or("", |(f, _)| f),
        };
        if folders.insert(folder.to_owned(), ()).is_none() {
            for m in store.list(folder).await? {
                found.insert(m.key.as_str().to_owned(), (m.size, m.e_tag));
            }
        }
    }
    Ok(found)
}

/// Set each object's entity tag as the store lists it under `prefix` now (one listing), just
/// before its manifest commits it.
async fn record_tags(
    store: &DynZoneStore,
    prefix: &str,
    objects: &mut [ObjectEntry],
) -> Result<()> {
    let tags: BTreeMap<String, Option<String>> = store
        .list(prefix)
        .await?
        .into_iter()
        .map(|m| (m.key.as_str().to_owned(), m.e_tag))
        .collect();
    for o in objects {
        if let Some(tag) = tags.get(&o.key) {
            o.etag.clone_from(tag);
        }
    }
    Ok(())
}

/// For readers that do not hash what they read: the `objects` whose entity tag the store lists
/// now (`listed`) is not the one recorded at their commit are read back and hashed, and the
/// first whose bytes are not its manifest's fails with [`Error::Mismatch`], naming it. Returns
/// the keys that were read back because only their tag had changed (a copied or restored
/// lake); none in the common case, where nothing is read.
pub async fn tags_match(
    store: &DynZoneStore,
    listed: &Listing,
    objects: &[&ObjectEntry],
) -> Result<Vec<String>> {
    let changed: Vec<ObjectEntry> = objects
        .iter()
        .filter(|o| match (&o.etag, listed.get(&o.key)) {
            (Some(then), Some((_, Some(now)))) => then != now,
            _ => false,
        })
        .map(|o| (*o).clone())
        .collect();
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    verify(store, &changed).await?;
    Ok(changed.into_iter().map(|o| o.key).collect())
}

/// Keys with their listed size and entity tag (see [`listing`]).
pub type Listing = BTreeMap<String, (u64, Option<String>)>;

/// Fails with [`Error::Mismatch`] naming the first of `objects` that `listed` does not have, or
/// has with another size than its manifest's.
pub fn sizes_match(store: &DynZoneStore, listed: &Listing, objects: &[&ObjectEntry]) -> Result<()> {
    for o in objects {
        match listed.get(&o.key) {
            Some((size, _)) if *size == o.size => {}
            Some((size, _)) => return Err(mismatch(store, o, size_differs(*size, o.size))),
            None => return Err(missing(store, o)),
        }
    }
    Ok(())
}

/// Fails with [`Error::Mismatch`] naming the first of `objects` that is missing from the store
/// or whose size differs from its manifest's (one listing per dataset folder).
pub async fn check_sizes(store: &DynZoneStore, objects: &[&ObjectEntry]) -> Result<()> {
    sizes_match(store, &listing(store, objects).await?, objects)
}

/// Reads each of `objects` back (two at a time) and fails with [`Error::Mismatch`] naming the
/// first whose size or SHA-256 is not its manifest's: what a reader is about to trust is what
/// was committed, byte for byte.
pub async fn verify(store: &DynZoneStore, objects: &[ObjectEntry]) -> Result<()> {
    let checks: Vec<futures::future::BoxFuture<'_, Result<()>>> = objects
        .iter()
        .map(|o| Box::pin(verify_one(store, o)) as _)
        .collect();
    futures::stream::iter(checks)
        .buffer_unordered(2)
        .try_collect::<()>()
        .await
}

/// Reads each of `objects` back (two at a time) and returns those that are not what their
/// manifests say, each with its [`Error::Mismatch`]; other errors (the store unreachable) fail.
pub async fn verify_each<'a>(
    store: &DynZoneStore,
    objects: &'a [ObjectEntry],
) -> Result<Vec<(&'a ObjectEntry, Error)>> {
    let checks: Vec<futures::future::BoxFuture<'_, (&'a ObjectEntry, Result<()>)>> = objects
        .iter()
        .map(|o| Box::pin(async move { (o, verify_one(store, o).await) }) as _)
        .collect();
    let results: Vec<_> = futures::stream::iter(checks)
        .buffer_unordered(2)
        .collect()
        .await;
    let mut bad = Vec::new();
    for (o, r) in results {
        match r {
            Ok(()) => {}
            Err(e @ Error::Mismatch { .. }) => bad.push((o, e)),
            Err(e) => return Err(e),
        }
    }
    Ok(bad)
}

async fn verify_one(store: &DynZoneStore, o: &ObjectEntry) -> Result<()> {
    let got = match store.get(&Key::new(o.key.as_str())?).await {
        Ok(got) => got,
        Err(e) if e.is_not_found() => return Err(missing(store, o)),
        Err(e) => return Err(e),
    };
    let mut body = got.body;
    let mut digest = crate::zone::Digester::default();
    while let Some(chunk) = body.try_next().await? {
        digest.update(&chunk);
    }
    let read = digest.finish();
    if read.size != o.size {
        return Err(mismatch(store, o, size_differs(read.size, o.size)));
    }
    // An object known only from a table format's snapshot (`lake query --as-of`) has no
    // SHA-256 on record: its size is what is checked.
    if !o.sha256.is_empty() && read.sha256 != o.sha256 {
        return Err(mismatch(
            store,
            o,
            format!(
                "its SHA-256 is {} but its manifest says {} (its bytes changed since it was committed)",
                read.sha256, o.sha256
            ),
        ));
    }
    Ok(())
}

const NOT_IN_STORE: &str = Error::NOT_IN_STORE;

fn size_differs(actual: u64, committed: u64) -> String {
    format!(
        "it has {actual} bytes but its manifest says {committed} (changed since it was committed)"
    )
}

fn mismatch(store: &DynZoneStore, o: &ObjectEntry, message: String) -> Error {
    Error::Mismatch {
        object: store.url_of(&o.key),
        message,
        missing: false,
    }
}

/// `o` is listed by its manifest but not in the store.
fn missing(store: &DynZoneStore, o: &ObjectEntry) -> Error {
    Error::Mismatch {
        object: store.url_of(&o.key),
        message: NOT_IN_STORE.into(),
        missing: true,
    }
}
