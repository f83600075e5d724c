//! A read-only view of a store that shows only committed objects.
//!
//! DataFusion's listing tables list folders. A folder of the lake can hold objects that are not
//! part of its dataset: a window being fetched, files of an output being published, stale files
//! waiting for deletion. The engine therefore never lists the real store: each table reads a
//! [`SnapshotStore`] that lists exactly the objects of the manifests it was built from, with the
//! sizes the manifests recorded, and refuses anything else.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use lake_core::publish::ObjectEntry;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// The committed objects of one table, over the store that holds them.
#[derive(Debug)]
pub(crate) struct SnapshotStore {
    inner: Arc<dyn ObjectStore>,
    objects: BTreeMap<Path, ObjectMeta>,
}

impl SnapshotStore {
    /// A view of `inner` with exactly `objects`.
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, objects: &[ObjectEntry]) -> Self {
        let stamp = DateTime::<Utc>::UNIX_EPOCH;
        let objects = objects
            .iter()
            .map(|o| {
                let location = object_path(&o.key);
                let meta = ObjectMeta {
                    location: location.clone(),
                    last_modified: stamp,
                    size: o.size,
                    e_tag: Some(o.sha256.clone()),
                    version: None,
                };
                (location, meta)
            })
            .collect();
        Self { inner, objects }
    }

    fn visible(&self, location: &Path) -> object_store::Result<()> {
        if self.objects.contains_key(location) {
            Ok(())
        } else {
            Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: "not part of a committed dataset (no manifest lists it)".into(),
            })
        }
    }

    fn under<'a>(&'a self, prefix: Option<&'a Path>) -> impl Iterator<Item = &'a ObjectMeta> {
        self.objects
            .values()
            .filter(move |m| prefix.is_none_or(|p| m.location.prefix_matches(p)))
    }
}

/// The object path of a zone key, byte for byte (keys are paths as the store listed them).
pub(crate) fn object_path(key: &str) -> Path {
    Path::parse(key).unwrap_or_else(|_| Path::from(key))
}

impl fmt::Display for SnapshotStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Snapshot({} objects of {})",
            self.objects.len(),
            self.inner
        )
    }
}

fn read_only(op: &str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("{op}: a snapshot of committed objects is read-only").into(),
    }
}

#[async_trait]
impl ObjectStore for SnapshotStore {
    async fn put_opts(
        &self,
        _location: &Path,
        _payload: PutPayload,
        _opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(read_only("put"))
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(read_only("put"))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.visible(location)?;
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.visible(location)?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(read_only("delete"))).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let found: Vec<_> = self.under(prefix).cloned().map(Ok).collect();
        stream::iter(found).boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        Ok(crate::zones_as_object_store::delimited(
            prefix,
            self.under(prefix).cloned(),
        ))
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(read_only("copy"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    fn entry(key: &str, size: u64) -> ObjectEntry {
        ObjectEntry {
            key: key.into(),
            size,
            sha256: "x".into(),
            origin: None,
            etag: None,
        }
    }

    #[tokio::test]
    async fn lists_and_reads_only_committed_objects() {
        let inner = Arc::new(InMemory::new());
        for k in [
            "raw/s/ingest_date=2024-01-01/a.csv",
            "raw/s/ingest_date=2024-01-02/a.csv",
            "raw/s/ingest_date=2024-01-03/partial.csv",
        ] {
            inner.put(&Path::from(k), "x,y\n".into()).await.unwrap();
        }
        let snap = SnapshotStore::new(
            inner,
            &[
                entry("raw/s/ingest_date=2024-01-01/a.csv", 4),
                entry("raw/s/ingest_date=2024-01-02/a.csv", 4),
            ],
        );
        let all: Vec<_> = snap
            .list(Some(&Path::from("raw/s")))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
        let dirs = snap
            .list_with_delimiter(Some(&Path::from("raw/s")))
            .await
            .unwrap();
        assert_eq!(
            dirs.common_prefixes,
            vec![
                Path::from("raw/s/ingest_date=2024-01-01"),
                Path::from("raw/s/ingest_date=2024-01-02")
            ]
        );
        assert!(dirs.objects.is_empty());
        let leaf = snap
            .list_with_delimiter(Some(&Path::from("raw/s/ingest_date=2024-01-01")))
            .await
            .unwrap();
        assert_eq!(leaf.objects.len(), 1);
        assert!(
            snap.get(&Path::from("raw/s/ingest_date=2024-01-03/partial.csv"))
                .await
                .is_err()
        );
        let got = snap
            .get(&Path::from("raw/s/ingest_date=2024-01-01/a.csv"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(&got[..], b"x,y\n");
        assert!(snap.put(&Path::from("x"), "y".into()).await.is_err());
    }
}
