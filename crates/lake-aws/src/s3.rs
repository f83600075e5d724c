//! [`S3ZoneStore`]: zones under an S3 prefix, on aws-sdk-s3.

use std::path::Path;

use crate::Sse;
use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier, ServerSideEncryption,
};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use lake_core::zone::{
    ByteStream, Digested, Digester, FileWriter, GetResult, Key, ObjectMeta, PutOutcome, SMALL_FILE,
    ZoneStore,
};
use lake_core::{BoxError, Error, Result};
use tokio_util::task::AbortOnDropHandle;

/// The smallest part S3 accepts (all parts but the last).
pub const MIN_PART: usize = 5 << 20;
/// The largest object one CopyObject may copy; larger ones are copied in parts.
const MAX_COPY: u64 = 5 << 30;
/// Part size of multipart copies.
const COPY_PART: u64 = 512 << 20;
/// DeleteObjects takes at most this many keys.
const DELETE_BATCH: usize = 1000;

/// Zones under `s3://bucket/prefix`.
///
/// - `put` streams: a body shorter than one part is one PutObject; a longer one is a multipart
///   upload with `concurrency` parts in flight, so memory stays under
///   `part_size × (concurrency + 1)`. A failed, errored or dropped upload is aborted: no
///   orphaned parts, and the previous object stays.
/// - `put_if_absent` is a PutObject with `If-None-Match: *` (412 → already exists).
/// - `get` of an object over one read part fetches it in ranged parts (2 MiB, 8 at once by
///   default), in order, each `If-Match` the first part's ETag (a replaced object fails the
///   read). `download` to a file fetches parts of 16 MiB, 8 at once, each written at its
///   offset as it arrives.
/// - `list` pages through ListObjectsV2; `copy` uses CopyObject, in parts above 5 GiB;
///   `delete_many` batches DeleteObjects by 1000.
/// - Every write carries the configured server-side encryption.
#[derive(Clone)]
pub struct S3ZoneStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    part_size: usize,
    concurrency: usize,
    read_part: u64,
    read_concurrency: usize,
    download_part: u64,
    download_concurrency: usize,
    sse: Option<Sse>,
    /// Objects larger than this are copied in parts of `copy_part` bytes.
    max_copy: u64,
    copy_part: u64,
}

impl std::fmt::Debug for S3ZoneStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3ZoneStore")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl S3ZoneStore {
    /// Zones under `s3://bucket/prefix` (`prefix` may be empty), with 8 MiB parts, 2 uploading while a third fills (a whole `lake ingest` of a large file stays under 64 MiB, also when uploads fall behind; see BENCHMARKS.md).
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, prefix: &str) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            prefix: prefix.trim_matches('/').to_owned(),
            part_size: 8 << 20,
            // Two parts uploading and one filling: 24 MiB of buffers. With 3 uploading, a 1 GiB
            // `lake ingest` peaked at 69.5 MiB, over its 64 MiB budget, at the same MB/s
            // (BENCHMARKS.md, S3 ingest, 2026-11-30).
            concurrency: 2,
            read_part: 2 << 20,
            read_concurrency: 8,
            download_part: 16 << 20,
            download_concurrency: 8,
            sse: None,
            max_copy: MAX_COPY,
            copy_part: COPY_PART,
        }
    }

    /// Copy objects above `threshold` bytes (at most 5 GiB, S3's limit for one CopyObject) in
    /// parts of `part` bytes (at least 5 MiB).
    pub fn with_copy_parts(mut self, threshold: u64, part: u64) -> Self {
        self.max_copy = threshold.min(MAX_COPY);
        self.copy_part = part.max(MIN_PART as u64);
        self
    }

    /// A ranged GetObject (optionally `If-Match: etag`): the object's metadata (its size from
    /// Content-Range) and the bytes as they arrive. A range past the end gives no bytes.
    async fn open(
        &self,
        key: &Key,
        range: std::ops::Range<u64>,
        if_match: Option<&str>,
    ) -> Result<(ObjectMeta, ByteStream)> {
        let empty = || futures::stream::empty().boxed();
        if range.is_empty() {
            return Ok((self.head(key).await?, empty()));
        }
        let sent = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full(key.as_str()))
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .set_if_match(if_match.map(str::to_owned))
            .send()
            .await;
        let out = match sent {
            Ok(out) => out,
            // 416: the range starts past the end.
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                return Ok((self.head(key).await?, empty()));
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) => {
                return Err(self.fail(
                    "get",
                    key.as_str(),
                    "the object was replaced while it was being read (its ETag changed)".into(),
                ));
            }
            Err(e) => {
                return Err(match e.as_service_error() {
                    Some(se) if se.is_no_such_key() => self.not_found(key.as_str()),
                    _ => self.sdk_err("get", "s3:GetObject", key.as_str(), e),
                });
            }
        };
        // `Content-Range: bytes 2-4/10`: the object's size, without a HeadObject.
        let size = out
            .content_range()
            .and_then(|r| r.rsplit('/').next())
            .and_then(|total| total.parse().ok())
            .unwrap_or_default();
        let meta = ObjectMeta {
            key: key.clone(),
            size,
            last_modified: to_utc(out.last_modified()),
            e_tag: out.e_tag().map(str::to_owned),
        };
        let state = Some((out.body, self.clone(), key.clone()));
        let body = futures::stream::unfold(state, |state| async move {
            let (mut body, store, key) = state?;
            match body.try_next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some((body, store, key)))),
                Ok(None) => None,
                Err(e) => Some((Err(store.fail("get", key.as_str(), Box::new(e))), None)),
            }
        });
        Ok((meta, body.boxed()))
    }

    /// [`open`](Self::open), read whole into one exact allocation, filled as the body
    /// arrives (holding the body's own chunks instead costs about twice the memory: their
    /// buffers are larger than what they hold).
    async fn ranged(
        &self,
        key: &Key,
        range: std::ops::Range<u64>,
        if_match: Option<&str>,
    ) -> Result<(ObjectMeta, Bytes)> {
        let (meta, mut body) = self.open(key, range.clone(), if_match).await?;
        let len = range.end.min(meta.size).saturating_sub(range.start);
        let mut buf = BytesMut::with_capacity(len as usize);
        while let Some(chunk) = body.try_next().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok((meta, buf.freeze()))
    }

    /// `work` as its own task, so it progresses whether or not the returned future is being
    /// polled (a part in flight keeps reading or sending while the caller is busy); dropping
    /// the future aborts the task. A panic in it resumes here; an abort is a failed
    /// `operation` on `key`.
    fn task<T, F>(
        &self,
        operation: &'static str,
        key: &Key,
        work: F,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'static + use<T, F>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let task = AbortOnDropHandle::new(tokio::spawn(work));
        let (store, key) = (self.clone(), key.clone());
        async move {
            match task.await {
                Ok(done) => done,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => Err(store.fail(operation, key.as_str(), Box::new(e))),
            }
        }
    }

    /// [`get`](ZoneStore::get) of `key` at the version `if_match` (an ETag, quoted as S3 gives
    /// it), or at whatever version the first part finds when `None`.
    ///
    /// The first part is a ranged GET: its Content-Range gives the size. A larger object comes
    /// in parts, `read_concurrency` GETs in flight, handed on in order; each later part must
    /// have the first one's ETag (If-Match), so an object replaced during the read fails it
    /// instead of mixing two versions. Memory: about `read_part × read_concurrency`.
    pub async fn get_version(&self, key: &Key, if_match: Option<&str>) -> Result<GetResult> {
        let part = self.read_part;
        let (meta, first) = self.ranged(key, 0..part, if_match).await?;
        let size = meta.size;
        let first = futures::stream::once(async move { Ok(first) });
        if size <= part {
            return Ok(GetResult {
                meta,
                body: first.boxed(),
            });
        }
        // Each part is its own task, so the GETs in flight keep reading while the consumer is
        // busy with an earlier part (a `buffered` future only progresses when polled). A
        // dropped stream aborts them.
        let etag = meta.e_tag.clone().or_else(|| if_match.map(str::to_owned));
        let (store, key) = (self.clone(), key.clone());
        let rest = futures::stream::iter(1..size.div_ceil(part))
            .map(move |i| {
                let (s, k, etag) = (store.clone(), key.clone(), etag.clone());
                let range = i * part..((i + 1) * part).min(size);
                store.task("get", &key, async move {
                    s.ranged(&k, range, etag.as_deref()).await
                })
            })
            .buffered(self.read_concurrency)
            .map_ok(|(_, bytes)| bytes);
        Ok(GetResult {
            meta,
            body: first.chain(rest).boxed(),
        })
    }

    /// [`download`](ZoneStore::download) of `key` at the version `if_match` (an ETag, quoted
    /// as S3 gives it), or at whatever version the first part finds when `None`.
    ///
    /// Like s5cmd: parts of `download_part` bytes, `download_concurrency` GETs at once (the
    /// first one's Content-Range gives the size), each written at its offset as it arrives,
    /// so no part waits for another and memory does not grow with the part size. Later parts
    /// are If-Match the first one's ETag, as in [`get_version`](Self::get_version).
    pub async fn download_version(
        &self,
        key: &Key,
        path: &Path,
        if_match: Option<&str>,
    ) -> Result<u64> {
        self.fetch_to(key, path, if_match, false)
            .await
            .map(|(size, _)| size)
    }

    /// [`download_version`](Self::download_version), hashing the file as it is written
    /// ([`FileWriter::create_hashed`]): its size and SHA-256, without reading it again.
    pub async fn download_hashed(
        &self,
        key: &Key,
        path: &Path,
        if_match: Option<&str>,
    ) -> Result<Digested> {
        let (size, digest) = self.fetch_to(key, path, if_match, true).await?;
        digest.ok_or_else(|| {
            self.fail(
                "get",
                key.as_str(),
                format!("{size} bytes downloaded but not hashed (a bug)").into(),
            )
        })
    }

    async fn fetch_to(
        &self,
        key: &Key,
        path: &Path,
        if_match: Option<&str>,
        hash: bool,
    ) -> Result<(u64, Option<Digested>)> {
        let part = self.download_part;
        let (meta, first) = self.open(key, 0..part, if_match).await?;
        let size = meta.size;
        if size <= SMALL_FILE {
            let chunks: Vec<Bytes> = first.try_collect().await?;
            let digest = hash.then(|| {
                let mut d = Digester::default();
                chunks.iter().for_each(|c| d.update(c));
                d.finish()
            });
            return Ok((FileWriter::whole(path, chunks).await?, digest));
        }
        let file = if hash {
            FileWriter::create_hashed(path)
        } else {
            FileWriter::create(path)
        };
        let writes = file.writes();
        let etag = meta.e_tag.clone().or_else(|| if_match.map(str::to_owned));
        let (store, key) = (self.clone(), key.clone());
        let rest = futures::stream::iter(1..size.div_ceil(part))
            .map(move |i| {
                let (s, k, etag, writes) =
                    (store.clone(), key.clone(), etag.clone(), writes.clone());
                let range = i * part..((i + 1) * part).min(size);
                store.task("get", &key, async move {
                    let (_, body) = s.open(&k, range.clone(), etag.as_deref()).await?;
                    writes.stream(range.start, body).await
                })
            })
            .buffer_unordered(self.download_concurrency.saturating_sub(1).max(1))
            .try_for_each(|_| futures::future::ready(Ok(())));
        let writes = file.writes();
        tokio::try_join!(writes.stream(0, first), rest)?;
        drop(writes);
        if hash {
            let d = file.finish_hashed(size).await?;
            Ok((size, Some(d)))
        } else {
            Ok((file.finish(size).await?, None))
        }
    }

    /// Reads of objects larger than `size` bytes come in ranged parts of `size`, `concurrency`
    /// GETs at once (default 2 MiB × 8): memory about `size × concurrency`.
    pub fn with_read_parts(mut self, size: u64, concurrency: usize) -> Self {
        self.read_part = size.max(1 << 16);
        self.read_concurrency = concurrency.max(1);
        self
    }

    /// [`download`](ZoneStore::download)s come in ranged parts of `size` bytes, `concurrency`
    /// GETs at once (default 16 MiB × 8). Each part is written to the file as it arrives, so
    /// memory grows with `concurrency` (about 1.5 MiB each), not with `size`.
    pub fn with_download_parts(mut self, size: u64, concurrency: usize) -> Self {
        self.download_part = size.max(1 << 16);
        self.download_concurrency = concurrency.max(1);
        self
    }

    /// Parts of `size` bytes (at least 5 MiB, S3's minimum), `concurrency` uploaded at once.
    pub fn with_parts(mut self, size: usize, concurrency: usize) -> Self {
        self.part_size = size.max(MIN_PART);
        self.concurrency = concurrency.max(1);
        self
    }

    /// Encrypt what is written.
    pub fn with_sse(mut self, sse: Option<Sse>) -> Self {
        self.sse = sse;
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix (no leading or trailing `/`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The client.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// The S3 key of a lake key or prefix.
    fn full(&self, key: &str) -> String {
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{key}", self.prefix),
        }
    }

    /// The lake key of an S3 key under the prefix.
    fn relative<'a>(&self, s3_key: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(s3_key)
        } else {
            s3_key.strip_prefix(&self.prefix)?.strip_prefix('/')
        }
    }

    fn sse(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.sse {
            None => (None, None),
            Some(Sse::S3) => (Some(ServerSideEncryption::Aes256), None),
            Some(Sse::Kms(key)) => (Some(ServerSideEncryption::AwsKms), key.clone()),
        }
    }

    fn fail(&self, operation: &'static str, key: &str, source: BoxError) -> Error {
        Error::Store {
            operation,
            key: key.to_owned(),
            store: self.root_url(),
            source,
        }
    }

    /// An SDK error as a lake error; AccessDenied says what was needed and how to allow it.
    fn sdk_err<E>(
        &self,
        operation: &'static str,
        action: &'static str,
        key: &str,
        e: SdkError<E, HttpResponse>,
    ) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        if e.code() == Some("AccessDenied") {
            let resource = if action == "s3:ListBucket" {
                format!("arn:aws:s3:::{}", self.bucket)
            } else {
                format!("arn:aws:s3:::{}/{}", self.bucket, self.full(key))
            };
            let detail = e.message().unwrap_or("Access Denied").to_owned();
            return self.fail(
                operation,
                key,
                Box::new(lake_core::Cause::new(crate::AwsError::Denied {
                    action,
                    resource,
                    detail,
                })),
            );
        }
        // The service's code and message, or the chain of causes, in words (no Debug dump).
        self.fail(operation, key, crate::client::describe(&e).into())
    }

    fn not_found(&self, key: &str) -> Error {
        Error::NotFound {
            key: key.to_owned(),
            store: self.root_url(),
        }
    }

    /// The next part of `body`: `part_size` bytes (fewer at its end), and whether the body
    /// ended. A part is filled into a buffer from `spare` (parts come back there once
    /// uploaded, so a long upload allocates `concurrency + 1` buffers, not one per part); a
    /// body that ends within a chunk comes back as that chunk, uncopied (a small put
    /// allocates nothing).
    async fn next_part(
        &self,
        body: &mut ByteStream,
        carry: &mut Bytes,
        spare: &mut Vec<BytesMut>,
    ) -> Result<(Bytes, bool)> {
        if carry.is_empty() {
            match body.try_next().await? {
                Some(chunk) => *carry = chunk,
                None => return Ok((Bytes::new(), true)),
            }
        }
        if carry.len() >= self.part_size {
            return Ok((carry.split_to(self.part_size), false));
        }
        let Some(more) = body.try_next().await? else {
            return Ok((std::mem::take(carry), true));
        };
        let mut part = spare
            .pop()
            .unwrap_or_else(|| BytesMut::with_capacity(self.part_size));
        part.extend_from_slice(&std::mem::replace(carry, more));
        loop {
            let take = carry.len().min(self.part_size - part.len());
            part.extend_from_slice(&carry.split_to(take));
            if part.len() == self.part_size {
                return Ok((part.freeze(), false));
            }
            match body.try_next().await? {
                Some(chunk) => *carry = chunk,
                None => return Ok((part.freeze(), true)),
            }
        }
    }

    /// Start a multipart upload of `key` (with the configured encryption); the guard aborts it
    /// unless disarmed once the upload is complete.
    async fn create_upload(
        &self,
        operation: &'static str,
        key: &Key,
    ) -> Result<(String, AbortOnDrop)> {
        let (sse, kms) = self.sse();
        let full = self.full(key.as_str());
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .send()
            .await
            .map_err(|e| self.sdk_err(operation, "s3:PutObject", key.as_str(), e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_owned();
        let guard = AbortOnDrop::new(self, &full, &upload_id);
        Ok((upload_id, guard))
    }

    async fn put_one(&self, key: &Key, bytes: Bytes) -> Result<ObjectMeta> {
        let (sse, kms) = self.sse();
        let size = bytes.len() as u64;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full(key.as_str()))
            .body(SdkBody::from(bytes))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .send()
            .await
            .map_err(|e| self.sdk_err("put", "s3:PutObject", key.as_str(), e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            last_modified: Utc::now(),
            e_tag: out.e_tag().map(str::to_owned),
        })
    }

    /// The parts after `first`, uploaded with bounded concurrency; then the commit.
    async fn put_parts(
        &self,
        key: &Key,
        upload_id: &str,
        first: Bytes,
        mut body: ByteStream,
        mut carry: Bytes,
    ) -> Result<ObjectMeta> {
        let full = self.full(key.as_str());
        // Each part is its own task (aborted if this is dropped), so uploads progress while
        // the next part is read.
        let mut in_flight = FuturesUnordered::new();
        let mut spare = Vec::new();
        let mut done: Vec<CompletedPart> = Vec::new();
        let mut size = 0u64;
        let mut next = Some(first);
        let mut ended = false;
        let mut number = 0i32;
        loop {
            while in_flight.len() < self.concurrency
                && let Some(part) = next.take()
            {
                number += 1;
                size += part.len() as u64;
                let req = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(&full)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(SdkBody::from(part.clone()));
                let n = number;
                in_flight.push(self.task(
                    "put",
                    key,
                    async move { Ok((n, req.send().await, part)) },
                ));
                if !ended {
                    let (p, end) = self.next_part(&mut body, &mut carry, &mut spare).await?;
                    ended = end;
                    if !p.is_empty() {
                        next = Some(p);
                    }
                }
            }
            let Some(finished) = in_flight.next().await else {
                break;
            };
            let (n, sent, part) = finished?;
            let out = sent.map_err(|e| self.sdk_err("put", "s3:PutObject", key.as_str(), e))?;
            done.push(
                CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .build(),
            );
            // The request has let go of the part: its buffer fills a later one.
            if let Ok(mut buf) = part.try_into_mut() {
                buf.clear();
                spare.push(buf);
            }
        }
        done.sort_by_key(|p| p.part_number());
        let out = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&full)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.sdk_err("put", "s3:PutObject", key.as_str(), e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            last_modified: Utc::now(),
            e_tag: out.e_tag().map(str::to_owned),
        })
    }

    async fn copy_in_parts(&self, from: &Key, to: &Key, size: u64) -> Result<()> {
        let dest = self.full(to.as_str());
        let (upload_id, mut guard) = self.create_upload("copy", to).await?;
        let source = self.copy_source(from);
        let mut parts = Vec::new();
        let mut start = 0u64;
        let mut number = 0;
        while start < size {
            let end = (start + self.copy_part).min(size) - 1;
            number += 1;
            let out = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(&dest)
                .upload_id(&upload_id)
                .part_number(number)
                .copy_source(&source)
                .copy_source_range(format!("bytes={start}-{end}"))
                .send()
                .await
                .map_err(|e| self.sdk_err("copy", "s3:GetObject", from.as_str(), e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(
                        out.copy_part_result()
                            .and_then(|r| r.e_tag())
                            .map(str::to_owned),
                    )
                    .build(),
            );
            start = end + 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(&dest)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.sdk_err("copy", "s3:PutObject", to.as_str(), e))?;
        guard.disarm();
        Ok(())
    }

    /// `bucket/key` of a copy source, percent-encoded as S3 requires.
    fn copy_source(&self, key: &Key) -> String {
        let mut out = format!("{}/", self.bucket);
        for b in self.full(key.as_str()).bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
}

/// Aborts a multipart upload unless disarmed: on an error path and when the future that owns
/// it is dropped (Ctrl-C, a timeout), so no parts are left behind.
struct AbortOnDrop {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    upload_id: String,
    armed: bool,
}

impl AbortOnDrop {
    fn new(store: &S3ZoneStore, key: &str, upload_id: &str) -> Self {
        Self {
            client: store.client.clone(),
            bucket: store.bucket.clone(),
            key: key.to_owned(),
            upload_id: upload_id.to_owned(),
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }

    fn request(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let req = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(&self.upload_id);
        let key = self.key.clone();
        async move {
            if let Err(e) = req.send().await {
                tracing::warn!(
                    "aborting the multipart upload of {key} failed: {}",
                    crate::client::describe(&e)
                );
            }
        }
    }

    /// Abort now and wait for it.
    async fn abort(mut self) {
        self.armed = false;
        self.request().await;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if self.armed
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(self.request());
        }
    }
}

fn to_utc(t: Option<&aws_sdk_s3::primitives::DateTime>) -> DateTime<Utc> {
    t.and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
        .unwrap_or_else(Utc::now)
}

#[async_trait]
impl ZoneStore for S3ZoneStore {
    fn root_url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    async fn put(&self, key: &Key, mut body: ByteStream) -> Result<ObjectMeta> {
        let mut carry = Bytes::new();
        let (first, ended) = self
            .next_part(&mut body, &mut carry, &mut Vec::new())
            .await?;
        if ended {
            return self.put_one(key, first).await;
        }
        let (upload_id, mut guard) = self.create_upload("put", key).await?;
        match self.put_parts(key, &upload_id, first, body, carry).await {
            Ok(meta) => {
                guard.disarm();
                Ok(meta)
            }
            Err(e) => {
                guard.abort().await;
                Err(e)
            }
        }
    }

    async fn put_if_absent(&self, key: &Key, body: Bytes) -> Result<PutOutcome> {
        let (sse, kms) = self.sse();
        // 409 ConditionalRequestConflict: another conditional write of the key is in flight;
        // S3 asks to retry, and the retry then sees its result (lake's one backoff).
        let mut waits = lake_core::retry::Backoff::retries(
            5,
            std::time::Duration::from_millis(50),
            std::time::Duration::from_secs(1),
        )
        .delays();
        loop {
            let sent = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(self.full(key.as_str()))
                .if_none_match("*")
                .body(SdkBody::from(body.clone()))
                .set_server_side_encryption(sse.clone())
                .set_ssekms_key_id(kms.clone())
                .send()
                .await;
            match sent {
                Ok(_) => return Ok(PutOutcome::Created),
                Err(e) => match (e.raw_response().map(|r| r.status().as_u16()), waits.next()) {
                    (Some(412), _) => return Ok(PutOutcome::AlreadyExists),
                    (Some(409), Some(wait)) => tokio::time::sleep(wait).await,
                    _ => return Err(self.sdk_err("put", "s3:PutObject", key.as_str(), e)),
                },
            }
        }
    }

    async fn get(&self, key: &Key) -> Result<GetResult> {
        self.get_version(key, None).await
    }

    async fn download(&self, key: &Key, path: &Path) -> Result<u64> {
        self.download_version(key, path, None).await
    }

    async fn get_range(
        &self,
        key: &Key,
        range: std::ops::Range<u64>,
    ) -> Result<(ObjectMeta, Bytes)> {
        self.ranged(key, range, None).await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full(key.as_str()))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(se) if se.is_not_found() => self.not_found(key.as_str()),
                _ => self.sdk_err("head", "s3:GetObject", key.as_str(), e),
            })?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: out.content_length().unwrap_or_default().max(0) as u64,
            last_modified: to_utc(out.last_modified()),
            e_tag: out.e_tag().map(str::to_owned),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // The whole lake is listed as `prefix/`: the IAM policy allows listing under the
        // prefix's folder, never a sibling that begins like it (`lakes/weather-prod`).
        let full = match (prefix.is_empty(), self.prefix.is_empty()) {
            (true, false) => format!("{}/", self.prefix),
            _ => self.full(prefix),
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .set_prefix((!full.is_empty()).then(|| full.clone()))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.sdk_err("list", "s3:ListBucket", prefix, e))?;
            for o in page.contents() {
                let Some(rel) = o.key().and_then(|k| self.relative(k)) else {
                    continue;
                };
                // Whole segments: `raw/a` lists `raw/a` and `raw/a/…`, not `raw/ab`.
                if !(prefix.is_empty()
                    || rel == prefix
                    || rel.strip_prefix(prefix).is_some_and(|r| r.starts_with('/')))
                {
                    continue;
                }
                let Ok(key) = Key::new(rel) else {
                    tracing::warn!("skipping s3://{}/{rel}: not a lake key", self.bucket);
                    continue;
                };
                out.push(ObjectMeta {
                    key,
                    size: o.size().unwrap_or_default().max(0) as u64,
                    last_modified: to_utc(o.last_modified()),
                    e_tag: o.e_tag().map(str::to_owned),
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn copy(&self, from: &Key, to: &Key) -> Result<()> {
        let size = self.head(from).await?.size;
        if size > self.max_copy {
            return self.copy_in_parts(from, to, size).await;
        }
        let (sse, kms) = self.sse();
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .key(self.full(to.as_str()))
            .copy_source(self.copy_source(from))
            .set_server_side_encryption(sse)
            .set_ssekms_key_id(kms)
            .send()
            .await
            .map_err(|e| self.sdk_err("copy", "s3:PutObject", to.as_str(), e))?;
        Ok(())
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full(key.as_str()))
            .send()
            .await
            .map_err(|e| self.sdk_err("delete", "s3:DeleteObject", key.as_str(), e))?;
        Ok(())
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<()> {
        for batch in keys.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(self.full(k.as_str()))
                        .build()
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| self.fail("delete", batch[0].as_str(), Box::new(e)))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| self.fail("delete", batch[0].as_str(), Box::new(e)))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.sdk_err("delete", "s3:DeleteObject", batch[0].as_str(), e))?;
            if let Some(failed) = out.errors().first() {
                return Err(self.fail(
                    "delete",
                    failed.key().unwrap_or_default(),
                    format!(
                        "{} of {} keys not deleted: {} {}",
                        out.errors().len(),
                        batch.len(),
                        failed.code().unwrap_or_default(),
                        failed.message().unwrap_or_default()
                    )
                    .into(),
                ));
            }
        }
        Ok(())
    }
}
