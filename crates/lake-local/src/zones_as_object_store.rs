//! [`ZonesAsObjectStore`]: any [`ZoneStore`] as an `object_store::ObjectStore`, so the embedded
//! engine reads and writes every kind of zone (S3 included) through the one store lake already
//! trusts, with its credentials, retries and encryption.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt, TryStreamExt};
use lake_core::zone::{DynZoneStore, Key, ObjectMeta as ZoneMeta, PutOutcome, ZoneStore};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, UploadPart,
};
use tokio::sync::{mpsc, oneshot};

const STORE: &str = "lake zone";

/// A [`ZoneStore`] seen as an [`ObjectStore`].
///
/// Multipart uploads stream their parts, in order, into one [`ZoneStore::put`]: a part's
/// future completes when the store has taken it, so the writer's own concurrency limit bounds
/// memory. An upload dropped or aborted before `complete` fails that put, so nothing partial
/// is ever visible.
#[derive(Debug, Clone)]
pub struct ZonesAsObjectStore {
    zone: Arc<DynZoneStore>,
}

impl ZonesAsObjectStore {
    /// `zone` as an object store.
    pub fn new(zone: Arc<DynZoneStore>) -> Self {
        Self { zone }
    }
}

impl fmt::Display for ZonesAsObjectStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZonesAsObjectStore({})", self.zone.root_url())
    }
}

fn key(path: &Path) -> object_store::Result<Key> {
    Key::new(path.as_ref()).map_err(|e| object_store::Error::Generic {
        store: STORE,
        source: Box::new(e),
    })
}

fn os_err(path: &str, e: lake_core::Error) -> object_store::Error {
    if e.is_not_found() {
        object_store::Error::NotFound {
            path: path.to_owned(),
            source: Box::new(e),
        }
    } else {
        object_store::Error::Generic {
            store: STORE,
            source: Box::new(e),
        }
    }
}

fn unsupported(what: &str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("{what} is not supported on lake zones").into(),
    }
}

fn meta(m: ZoneMeta) -> ObjectMeta {
    ObjectMeta {
        location: Path::parse(m.key.as_str()).unwrap_or_else(|_| Path::from(m.key.as_str())),
        last_modified: m.last_modified,
        size: m.size,
        e_tag: m.e_tag,
        version: None,
    }
}

/// A recursive listing under `prefix` (sorted by path) folded into one level: the objects
/// directly under it, and its sub-folders as common prefixes.
pub(crate) fn delimited(
    prefix: Option<&Path>,
    listing: impl IntoIterator<Item = ObjectMeta>,
) -> ListResult {
    let depth = prefix.map_or(0, |p| p.parts().count());
    let mut common_prefixes: Vec<Path> = Vec::new();
    let mut objects = Vec::new();
    for m in listing {
        let parts: Vec<_> = m.location.parts().collect();
        if parts.len() == depth + 1 {
            objects.push(m);
        } else {
            let dir = Path::from_iter(parts.into_iter().take(depth + 1));
            if common_prefixes.last() != Some(&dir) {
                common_prefixes.push(dir);
            }
        }
    }
    common_prefixes.dedup();
    ListResult {
        common_prefixes,
        objects,
    }
}

type Part = (lake_core::Result<Bytes>, Option<oneshot::Sender<()>>);

/// One multipart upload feeding one [`ZoneStore::put`].
struct Upload {
    tx: Option<mpsc::UnboundedSender<Part>>,
    task: Option<tokio::task::JoinHandle<lake_core::Result<ZoneMeta>>>,
}

impl fmt::Debug for Upload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upload").finish_non_exhaustive()
    }
}

impl Upload {
    /// End the put with an error (the store then discards what it received).
    fn fail(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((Err(lake_core::Error::Cancelled), None));
        }
    }
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let Some(tx) = &self.tx else {
            return async { Err(unsupported("a part after complete or abort")) }.boxed();
        };
        let (ack, taken) = oneshot::channel();
        let mut chunks: Vec<Bytes> = data.into_iter().collect();
        let last = chunks.pop().unwrap_or_default();
        for c in chunks {
            let _ = tx.send((Ok(c), None));
        }
        let _ = tx.send((Ok(last), Some(ack)));
        async move {
            // Taken by the store; if the put ended first, `complete` reports why.
            let _ = taken.await;
            Ok(())
        }
        .boxed()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.tx.take();
        let task = self
            .task
            .take()
            .ok_or_else(|| unsupported("complete twice"))?;
        let m = task
            .await
            .map_err(|e| object_store::Error::Generic {
                store: STORE,
                source: Box::new(e),
            })?
            .map_err(|e| os_err("multipart upload", e))?;
        Ok(PutResult {
            e_tag: m.e_tag,
            version: None,
        })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.fail();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Never let a dropped upload end its stream cleanly: that would commit a partial object.
        self.fail();
    }
}

#[async_trait]
impl ObjectStore for ZonesAsObjectStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let k = key(location)?;
        match opts.mode {
            PutMode::Overwrite => {
                let body = stream::iter(payload.into_iter().map(Ok)).boxed();
                let m = self
                    .zone
                    .put(&k, body)
                    .await
                    .map_err(|e| os_err(location.as_ref(), e))?;
                Ok(PutResult {
                    e_tag: m.e_tag,
                    version: None,
                })
            }
            PutMode::Create => {
                let bytes: Bytes = payload.into_iter().flatten().collect::<Vec<u8>>().into();
                match self
                    .zone
                    .put_if_absent(&k, bytes)
                    .await
                    .map_err(|e| os_err(location.as_ref(), e))?
                {
                    PutOutcome::Created => Ok(PutResult {
                        e_tag: None,
                        version: None,
                    }),
                    PutOutcome::AlreadyExists => Err(object_store::Error::AlreadyExists {
                        path: location.to_string(),
                        source: "the object exists".into(),
                    }),
                }
            }
            PutMode::Update(_) => Err(unsupported("a conditional update")),
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let k = key(location)?;
        let (tx, rx) = mpsc::unbounded_channel::<Part>();
        let body = stream::unfold(rx, |mut rx| async move {
            let (item, ack) = rx.recv().await?;
            if let Some(ack) = ack {
                let _ = ack.send(());
            }
            Some((item, rx))
        })
        .boxed();
        let zone = Arc::clone(&self.zone);
        let task = tokio::spawn(async move { zone.put(&k, body).await });
        Ok(Box::new(Upload {
            tx: Some(tx),
            task: Some(task),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some()
        {
            return Err(unsupported("a conditional or versioned get"));
        }
        let k = key(location)?;
        let path = location.as_ref();
        let ranged = match &options.range {
            _ if options.head => None,
            None => None,
            // A bounded range is one ranged read that also brings the metadata.
            Some(GetRange::Bounded(r)) => Some(r.clone()),
            // Offsets from the start or the end need the size first.
            Some(r) => {
                let size = self.zone.head(&k).await.map_err(|e| os_err(path, e))?.size;
                Some(r.as_range(size).map_err(|e| object_store::Error::Generic {
                    store: STORE,
                    source: Box::new(e),
                })?)
            }
        };
        if let Some(range) = ranged {
            let (m, bytes) = self
                .zone
                .get_range(&k, range.clone())
                .await
                .map_err(|e| os_err(path, e))?;
            let range = range.start..range.start + bytes.len() as u64;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::once(async move { Ok(bytes) }).boxed()),
                meta: meta(m),
                range,
                attributes: Default::default(),
            });
        }
        if options.head {
            let m = self.zone.head(&k).await.map_err(|e| os_err(path, e))?;
            let size = m.size;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::empty().boxed()),
                meta: meta(m),
                range: 0..size,
                attributes: Default::default(),
            });
        }
        let got = self.zone.get(&k).await.map_err(|e| os_err(path, e))?;
        let size = got.meta.size;
        let owned = path.to_owned();
        Ok(GetResult {
            payload: GetResultPayload::Stream(got.body.map_err(move |e| os_err(&owned, e)).boxed()),
            meta: meta(got.meta),
            range: 0..size,
            attributes: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let zone = Arc::clone(&self.zone);
        locations
            .and_then(move |p| {
                let zone = Arc::clone(&zone);
                async move {
                    let k = key(&p)?;
                    zone.delete(&k).await.map_err(|e| os_err(p.as_ref(), e))?;
                    Ok(p)
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let zone = Arc::clone(&self.zone);
        let prefix = prefix.map(|p| p.as_ref().to_owned()).unwrap_or_default();
        stream::once(async move {
            zone.list(&prefix)
                .await
                .map_err(|e| os_err(&prefix, e))
                .map(|v| stream::iter(v.into_iter().map(|m| Ok(meta(m)))))
        })
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let all: Vec<ObjectMeta> = self.list(prefix).try_collect().await?;
        Ok(delimited(prefix, all))
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        if options.mode == CopyMode::Create {
            return Err(unsupported("copy if not exists"));
        }
        self.zone
            .copy(&key(from)?, &key(to)?)
            .await
            .map_err(|e| os_err(from.as_ref(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalZoneStore;
    use lake_core::zone::ZoneStoreExt;
    use object_store::ObjectStoreExt;

    fn store() -> (Arc<DynZoneStore>, ZonesAsObjectStore) {
        let zone: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
        (Arc::clone(&zone), ZonesAsObjectStore::new(zone))
    }

    #[tokio::test]
    async fn multipart_parts_land_in_order_and_only_on_complete() {
        let (zone, os) = store();
        let p = Path::from("trusted/t/part-0.parquet");
        let mut up = os.put_multipart(&p).await.unwrap();
        let a = up.put_part(Bytes::from("abc").into());
        let b = up.put_part(PutPayload::from_iter([Bytes::from("de"), Bytes::from("f")]));
        // Polled out of order: the bytes still land in call order.
        b.await.unwrap();
        a.await.unwrap();
        assert!(
            zone.list("trusted").await.unwrap().is_empty(),
            "nothing before complete"
        );
        up.complete().await.unwrap();
        let k = Key::new("trusted/t/part-0.parquet").unwrap();
        assert_eq!(zone.get_bytes(&k).await.unwrap(), "abcdef");
    }

    #[tokio::test]
    async fn an_aborted_or_dropped_upload_leaves_nothing() {
        let (zone, os) = store();
        let p = Path::from("trusted/t/x.parquet");
        let mut up = os.put_multipart(&p).await.unwrap();
        up.put_part(Bytes::from("partial").into()).await.unwrap();
        up.abort().await.unwrap();
        let mut up = os.put_multipart(&p).await.unwrap();
        up.put_part(Bytes::from("partial").into()).await.unwrap();
        drop(up);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(zone.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn ranges_heads_lists_and_create() {
        let (_zone, os) = store();
        os.put(&Path::from("a/b/c.csv"), Bytes::from("0123456789").into())
            .await
            .unwrap();
        os.put(&Path::from("a/d.csv"), Bytes::from("x").into())
            .await
            .unwrap();
        assert_eq!(
            os.get_range(&Path::from("a/b/c.csv"), 2..5).await.unwrap(),
            "234"
        );
        let r = os
            .get_ranges(&Path::from("a/b/c.csv"), &[0..1, 8..10])
            .await
            .unwrap();
        assert_eq!(r, [Bytes::from("0"), Bytes::from("89")]);
        assert_eq!(os.head(&Path::from("a/b/c.csv")).await.unwrap().size, 10);
        let l = os
            .list_with_delimiter(Some(&Path::from("a")))
            .await
            .unwrap();
        assert_eq!(l.common_prefixes, [Path::from("a/b")]);
        assert_eq!(l.objects.len(), 1);
        let e = os
            .put_opts(
                &Path::from("a/d.csv"),
                Bytes::from("y").into(),
                PutMode::Create.into(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, object_store::Error::AlreadyExists { .. }),
            "{e}"
        );
        assert!(matches!(
            os.get(&Path::from("nope")).await.unwrap_err(),
            object_store::Error::NotFound { .. }
        ));
    }
}
