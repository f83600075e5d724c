//! Manifests: how a batch of objects becomes visible at once, on any [`ZoneStore`].
//!
//! A dataset (`trusted/credit`) or a raw window (`raw/credit/ingest_date=2024-01-01`) is the set
//! of objects listed in its `_manifest.json`. Writers put objects first and the manifest last,
//! so the manifest write is the commit point; readers go through the manifest and never see
//! part of a batch. Raw windows commit with put-if-absent (exactly once); step outputs replace
//! their manifest and then delete the objects that the previous one listed and the new one does
//! not, so a failed step (which never reaches its publish) leaves the previous output intact.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Zone, ZoneRef};
use crate::source::{Source, Window};
use crate::zone::{DynZoneStore, Key, PutOutcome, ZoneStoreExt, hashing, json_bytes};
use crate::{Error, Result};

/// The manifest file name inside a dataset or window folder.
pub const MANIFEST: &str = "_manifest.json";

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
    /// The objects, by key relative to the lake root.
    pub objects: Vec<ObjectEntry>,
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

/// The committed objects of a dataset: for `raw/<source>`, every complete window (folders
/// without a manifest are ignored); for `trusted/…` and `refined/…`, the current manifest.
pub async fn dataset_objects(store: &DynZoneStore, dataset: &ZoneRef) -> Result<Vec<ObjectEntry>> {
    let prefix = dataset.prefix();
    if dataset.zone != Zone::Raw {
        return Ok(read_manifest(store, &prefix)
            .await?
            .map(|m| m.objects)
            .unwrap_or_default());
    }
    let mut out = Vec::new();
    for meta in store.list(&prefix).await? {
        let Some(rest) = meta.key.strip_prefix(&prefix) else {
            continue;
        };
        if let Some(window) = rest.strip_suffix(&format!("/{MANIFEST}"))
            && !window.contains('/')
            && window.starts_with("ingest_date=")
            && let Some(m) = store.get_json::<Manifest>(&meta.key).await?
        {
            out.extend(m.objects);
        }
    }
    Ok(out)
}

/// What [`land`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landed {
    /// The window was fetched and committed by this call.
    Fetched(Manifest),
    /// The window was already complete; nothing was fetched.
    AlreadyComplete(Manifest),
}

/// Fetch one window of `source` into `raw/<source>/ingest_date=<date>/`, byte for byte, and
/// commit it with a put-if-absent manifest: a complete window is never fetched or changed again.
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
    let prefix = raw_window_prefix(source.name(), window.date());
    if let Some(m) = read_manifest(store, &prefix).await? {
        return Ok(Landed::AlreadyComplete(m));
    }
    let objects = source.objects(window).await?;
    let mut entries = Vec::with_capacity(objects.len());
    for obj in &objects {
        let key = Key::new(format!("{prefix}/{}", obj.name)).map_err(|e| Error::Source {
            source_name: source.name().to_owned(),
            message: format!("object name {:?} cannot be stored", obj.name),
            source: Some(Box::new(e)),
        })?;
        let body = source.open(window, obj).await?;
        let (body, digest) = hashing(body);
        store.put(&key, body).await?;
        let d = digest
            .lock()
            .expect("digest lock")
            .take()
            .unwrap_or_default();
        entries.push(ObjectEntry {
            key: key.to_string(),
            size: d.size,
            sha256: d.sha256,
            origin: Some(obj.origin.clone()),
        });
    }
    let manifest = Manifest {
        version: 1,
        prefix: prefix.clone(),
        run_id: run_id.to_owned(),
        committed: Utc::now(),
        fingerprint: None,
        objects: entries,
    };
    match store
        .put_if_absent(&manifest_key(&prefix)?, json_bytes(&manifest))
        .await?
    {
        PutOutcome::Created => Ok(Landed::Fetched(manifest)),
        PutOutcome::AlreadyExists => {
            let theirs = read_manifest(store, &prefix)
                .await?
                .ok_or_else(|| Error::NotFound {
                    key: format!("{prefix}/{MANIFEST}"),
                    store: store.root_url(),
                })?;
            Ok(Landed::AlreadyComplete(theirs))
        }
    }
}

/// Publish the objects under `staging` as the new content of `target`.
///
/// Objects keep their path relative to `staging`. The new manifest is the commit point; then
/// objects only the previous manifest listed are deleted, and the staging objects are removed.
/// Fails (publishing nothing) when `staging` is empty.
pub async fn publish(
    store: &DynZoneStore,
    staging: &str,
    target: &ZoneRef,
    run_id: &str,
    fingerprint: Option<String>,
) -> Result<Manifest> {
    let prefix = target.prefix();
    let staged = store.list(staging).await?;
    if staged.is_empty() {
        return Err(Error::Invalid {
            what: format!("output {target}"),
            message: format!(
                "the step wrote nothing to its output folder {}",
                store.url_of(staging)
            ),
        });
    }
    let previous = read_manifest(store, &prefix).await?;
    let mut objects = Vec::with_capacity(staged.len());
    for meta in &staged {
        let rel = meta.key.strip_prefix(staging).unwrap_or(meta.key.as_str());
        if rel == MANIFEST {
            continue;
        }
        let to = Key::new(format!("{prefix}/{rel}"))?;
        let digest = store.digest(&meta.key).await?;
        store.copy(&meta.key, &to).await?;
        objects.push(ObjectEntry {
            key: to.to_string(),
            size: digest.size,
            sha256: digest.sha256,
            origin: None,
        });
    }
    let manifest = Manifest {
        version: 1,
        prefix: prefix.clone(),
        run_id: run_id.to_owned(),
        committed: Utc::now(),
        fingerprint,
        objects,
    };
    store.put_json(&manifest_key(&prefix)?, &manifest).await?;
    if let Some(prev) = previous {
        for old in prev.objects {
            if !manifest.objects.iter().any(|o| o.key == old.key) {
                store.delete(&Key::new(old.key)?).await?;
            }
        }
    }
    store.delete_prefix(staging).await?;
    Ok(manifest)
}
