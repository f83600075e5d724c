//! [`ZoneStore`]: where zones live, and the helpers written once on top of it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A stream of byte chunks: how objects move without being held whole in memory.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// A [`ZoneStore`] behind a pointer: `Arc<DynZoneStore>`.
pub type DynZoneStore = dyn ZoneStore;

/// An object key relative to the lake root: `/`-separated, no empty, `.` or `..` segments,
/// no leading or trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Key(String);

impl Key {
    /// Check and wrap `key`.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let reason = if key.is_empty() {
            Some("empty key")
        } else if key.starts_with('/') || key.ends_with('/') {
            Some("a key has no leading or trailing '/'")
        } else if key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            Some("a key has no empty, '.' or '..' segments")
        } else if key.contains(['\\', '\0']) {
            Some("a key has no '\\' or NUL")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidKey { key, reason }),
            None => Ok(Self(key)),
        }
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This key followed by `/` and `rest` (which may contain `/`).
    pub fn join(&self, rest: &str) -> Result<Self> {
        Self::new(format!("{}/{rest}", self.0))
    }

    /// The part of this key after `prefix/`, if it is under `prefix`.
    pub fn strip_prefix(&self, prefix: &str) -> Option<&str> {
        if prefix.is_empty() {
            return Some(&self.0);
        }
        self.0.strip_prefix(prefix)?.strip_prefix('/')
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Key {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::new(s)
    }
}

impl From<Key> for String {
    fn from(k: Key) -> Self {
        k.0
    }
}

/// What a store knows about an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// The key.
    pub key: Key,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub last_modified: DateTime<Utc>,
    /// Opaque version tag, when the store has one.
    pub e_tag: Option<String>,
}

/// An object being read: its metadata and its bytes as a stream.
pub struct GetResult {
    /// Metadata at the time of the read.
    pub meta: ObjectMeta,
    /// The bytes.
    pub body: ByteStream,
}

impl fmt::Debug for GetResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// The result of [`ZoneStore::put_if_absent`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutOutcome {
    /// This call created the object.
    Created,
    /// An object already existed at the key; nothing was written.
    AlreadyExists,
}

/// Where zones live: a filesystem folder, memory, an S3 prefix.
///
/// Keys are relative to the lake root (see [`Key`]). Implementations hold no lake logic;
/// manifests, publishing, locks and the ledger are written once on top of this trait
/// ([`ZoneStoreExt`], [`crate::publish`], [`crate::lock`], [`crate::ledger`]).
///
/// # Contract
///
/// - **Atomic visibility.** [`put`](Self::put) streams its body and makes the object visible
///   whole or not at all: a reader never sees part of a put, and a put that fails (or whose
///   stream yields an error, or whose future is dropped) leaves the previous object, if any,
///   unchanged. An implementation must not buffer a whole body in memory unless it is an
///   in-memory store.
/// - **Put-if-absent.** [`put_if_absent`](Self::put_if_absent) is atomic against every other
///   writer, in this process or another one on any machine sharing the store: of N concurrent
///   calls for one key, exactly one returns [`PutOutcome::Created`]. This is the base of locks,
///   manifests and exactly-once ingest.
/// - **Not found.** [`get`](Self::get), [`head`](Self::head) and the source of
///   [`copy`](Self::copy) fail with [`Error::NotFound`] for a missing key.
///   [`delete`](Self::delete) of a missing key succeeds (deletes are idempotent).
/// - **List.** [`list`](Self::list) returns every object whose key is `prefix` or starts with
///   `prefix/` (whole segments: `raw/a` does not match `raw/ab/x`), **sorted by key**, with
///   objects from completed puts only. `""` lists everything.
/// - **Unsupported operations** fail with [`Error::NotImplemented`]; never a silent no-op.
#[async_trait]
pub trait ZoneStore: Send + Sync + fmt::Debug + 'static {
    /// The root's URL or path, for messages and for processes that read the lake themselves.
    fn root_url(&self) -> String;

    /// The URL or path of `key`, in the form tools outside lake use (a local path, `s3://…`).
    fn url_of(&self, key: &str) -> String {
        let root = self.root_url();
        if key.is_empty() {
            root
        } else {
            format!("{}/{key}", root.trim_end_matches('/'))
        }
    }

    /// The local filesystem path of `key`, for stores that are folders on this machine.
    fn local_path(&self, _key: &str) -> Option<PathBuf> {
        None
    }

    /// Where a program outside lake (a command step, spark-submit) reads or writes `prefix`:
    /// a folder on this machine for a filesystem store, else [`url_of`](Self::url_of).
    fn location(&self, prefix: &str) -> String {
        self.local_path(prefix)
            .map_or_else(|| self.url_of(prefix), |p| p.to_string_lossy().into_owned())
    }

    /// Make `prefix` ready for a program outside lake to write into (a step's staging: a
    /// folder is created on a filesystem store) and return its [`location`](Self::location).
    async fn prepare_for_writer(&self, prefix: &str) -> Result<String> {
        Ok(self.location(prefix))
    }

    /// True when a put that is killed half way can leave a partial file beside its key, where
    /// tools that read folders see it (a filesystem store's unfinished `name#N`): lake then
    /// streams a landing into staging and copies it in whole.
    fn killed_puts_leave_files(&self) -> bool {
        false
    }

    /// What a killed writer left under `prefix` that is not an object and that listings skip
    /// (a filesystem store's unfinished uploads), as keys under the root. None by default.
    async fn unfinished(&self, _prefix: &str) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Remove what [`unfinished`](Self::unfinished) finds under `prefix` (a key of one of
    /// them removes that one) and, on a filesystem, the folders left empty; returns how many
    /// unfinished writes it removed. Call it when no writer of `prefix` runs.
    async fn sweep(&self, _prefix: &str) -> Result<usize> {
        Ok(0)
    }

    /// Stream `body` into `key`, replacing any object there. See the contract.
    async fn put(&self, key: &Key, body: ByteStream) -> Result<ObjectMeta>;

    /// Write `body` to `key` only if no object exists there. See the contract.
    async fn put_if_absent(&self, key: &Key, body: Bytes) -> Result<PutOutcome>;

    /// Read `key` as a stream.
    async fn get(&self, key: &Key) -> Result<GetResult>;

    /// Metadata of `key`.
    async fn head(&self, key: &Key) -> Result<ObjectMeta>;

    /// Every object under `prefix`, sorted by key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Copy `from` to `to`, replacing `to`.
    async fn copy(&self, from: &Key, to: &Key) -> Result<()>;

    /// Delete `key`; a missing key is not an error.
    async fn delete(&self, key: &Key) -> Result<()>;

    /// Move `from` to `to`, replacing `to`. The default copies, then deletes `from`; the
    /// filesystem store renames (one directory operation, and no file deleted: on ext4 each
    /// file created after many deletes pays for skipping their inodes, see BENCHMARKS.md).
    async fn rename(&self, from: &Key, to: &Key) -> Result<()> {
        self.copy(from, to).await?;
        self.delete(from).await
    }

    /// The metadata of `key` and bytes `range` of it (clamped to its size), in one request
    /// where the store allows. Stores with ranged reads override this; the default streams the
    /// object and keeps the range.
    async fn get_range(
        &self,
        key: &Key,
        range: std::ops::Range<u64>,
    ) -> Result<(ObjectMeta, Bytes)> {
        let got = self.get(key).await?;
        let (meta, mut body) = (got.meta, got.body);
        let mut out =
            Vec::with_capacity(range.end.saturating_sub(range.start).min(1 << 26) as usize);
        let mut at = 0u64;
        while let Some(chunk) = body.try_next().await? {
            let end = at + chunk.len() as u64;
            if end > range.start && at < range.end {
                let from = range.start.saturating_sub(at) as usize;
                let to = (range.end.min(end) - at) as usize;
                out.extend_from_slice(&chunk[from..to]);
            }
            at = end;
            if at >= range.end {
                break;
            }
        }
        Ok((meta, out.into()))
    }

    /// Copy `key` to the local file `path` and return its size. The file appears complete or
    /// not at all (see [`FileWriter`]). Stores with ranged reads override this to fetch parts
    /// at once, each written at its offset; the default streams [`get`](Self::get).
    async fn download(&self, key: &Key, path: &Path) -> Result<u64> {
        let got = self.get(key).await?;
        if got.meta.size <= SMALL_FILE {
            let chunks: Vec<Bytes> = got.body.try_collect().await?;
            return FileWriter::whole(path, chunks).await;
        }
        let file = FileWriter::create(path);
        file.writes().stream(0, got.body).await?;
        file.finish(got.meta.size).await
    }

    /// Put the bytes of the local file `path` at `key` and return their size and SHA-256, as
    /// landed; `progress` hears the size of each piece. Atomic as [`put`](Self::put) is. The
    /// default streams the file through [`put`](Self::put), hashing on the way; the filesystem
    /// store copies it in the kernel and hashes the copy as it grows.
    async fn put_file(
        &self,
        key: &Key,
        path: &Path,
        progress: Option<ProgressFn>,
    ) -> Result<Digested> {
        put_file_streamed(self, key, path, progress).await
    }

    /// Delete `keys` (missing ones are not an error). Stores with a batch call (S3's
    /// DeleteObjects) override this; the default deletes one by one.
    async fn delete_many(&self, keys: &[Key]) -> Result<()> {
        for k in keys {
            self.delete(k).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl<T: ZoneStore + ?Sized> ZoneStore for Arc<T> {
    fn root_url(&self) -> String {
        (**self).root_url()
    }
    fn url_of(&self, key: &str) -> String {
        (**self).url_of(key)
    }
    fn local_path(&self, key: &str) -> Option<PathBuf> {
        (**self).local_path(key)
    }
    fn location(&self, prefix: &str) -> String {
        (**self).location(prefix)
    }
    async fn prepare_for_writer(&self, prefix: &str) -> Result<String> {
        (**self).prepare_for_writer(prefix).await
    }
    fn killed_puts_leave_files(&self) -> bool {
        (**self).killed_puts_leave_files()
    }
    async fn unfinished(&self, prefix: &str) -> Result<Vec<String>> {
        (**self).unfinished(prefix).await
    }
    async fn sweep(&self, prefix: &str) -> Result<usize> {
        (**self).sweep(prefix).await
    }
    async fn put(&self, key: &Key, body: ByteStream) -> Result<ObjectMeta> {
        (**self).put(key, body).await
    }
    async fn put_if_absent(&self, key: &Key, body: Bytes) -> Result<PutOutcome> {
        (**self).put_if_absent(key, body).await
    }
    async fn get(&self, key: &Key) -> Result<GetResult> {
        (**self).get(key).await
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        (**self).head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        (**self).list(prefix).await
    }
    async fn copy(&self, from: &Key, to: &Key) -> Result<()> {
        (**self).copy(from, to).await
    }
    async fn delete(&self, key: &Key) -> Result<()> {
        (**self).delete(key).await
    }
    async fn rename(&self, from: &Key, to: &Key) -> Result<()> {
        (**self).rename(from, to).await
    }
    async fn delete_many(&self, keys: &[Key]) -> Result<()> {
        (**self).delete_many(keys).await
    }
    async fn put_file(
        &self,
        key: &Key,
        path: &Path,
        progress: Option<ProgressFn>,
    ) -> Result<Digested> {
        (**self).put_file(key, path, progress).await
    }
    async fn download(&self, key: &Key, path: &Path) -> Result<u64> {
        (**self).download(key, path).await
    }
    async fn get_range(
        &self,
        key: &Key,
        range: std::ops::Range<u64>,
    ) -> Result<(ObjectMeta, Bytes)> {
        (**self).get_range(key, range).await
    }
}

/// The largest single `write` lake makes to a local file. On Linux 6.x with large folios in
/// the page cache, writes of 1 MiB and more sometimes cost several times what the same bytes
/// cost in 256 KiB writes (1 GiB: 0.3 s or 2.7 s of system time, from run to run; see
/// BENCHMARKS.md); at 256 KiB and below the cost stays steady, and the extra calls are few.
pub const MAX_WRITE: usize = 256 << 10;

/// `chunk` as slices of at most [`MAX_WRITE`] bytes (no copy), one `write` each.
pub fn write_pieces(chunk: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    (0..chunk.len())
        .step_by(MAX_WRITE)
        .map(|at| chunk.slice(at..(at + MAX_WRITE).min(chunk.len())))
}

/// Objects up to this size are downloaded into memory and written in one blocking call
/// ([`FileWriter::whole`]).
pub const SMALL_FILE: u64 = 256 << 10;

/// How many bytes a [`Writes`] hands the writer thread at once (one wake-up each).
const WRITE_BATCH: usize = 256 << 10;

/// Batches of chunks sent to a [`FileWriter`]'s thread, each with its file offset.
type Batch = (u64, Vec<Bytes>);

/// A local file written by one blocking thread from chunks sent to it with their offsets, so
/// the network side never waits on the disk and parts fetched at once can be written where
/// they belong. The bytes go to a temporary file beside the path (`.<name>.<pid>-<n>.lake-part`)
/// and are renamed onto it by [`finish`](Self::finish); dropped before that (an error, a
/// cancelled download), the temporary file is removed, so the path holds a complete file or
/// what it held before. Memory: at most about 512 KiB waiting for the disk, plus 256 KiB per
/// [`Writes::stream`].
#[derive(Debug)]
pub struct FileWriter {
    path: PathBuf,
    part: PartFile,
    tx: tokio::sync::mpsc::Sender<Batch>,
    writer: tokio::task::JoinHandle<std::io::Result<(u64, Option<Digested>)>>,
    /// Set by `finish`: the writer thread keeps its file. Without it, a writer left by a
    /// dropped `FileWriter` removes the file it made (it may have made it after the drop).
    finishing: Arc<std::sync::atomic::AtomicBool>,
}

/// Where the chunks of a [`FileWriter`] are sent; clone it for each part written at once.
#[derive(Debug, Clone)]
pub struct Writes(tokio::sync::mpsc::Sender<Batch>);

impl FileWriter {
    /// Write `chunks` (all of a small object, already read) to `path` the same way, complete
    /// or not at all, in one blocking call: no writer thread to start and feed.
    pub async fn whole(path: &Path, chunks: Vec<Bytes>) -> Result<u64> {
        let part = PartFile::beside(path);
        let to = path.to_owned();
        tokio::task::spawn_blocking(move || {
            let write = |e| io_error("write", &to, e);
            let mut file = std::fs::File::create(&part.path).map_err(write)?;
            let mut written = 0;
            for piece in chunks.iter().flat_map(write_pieces) {
                std::io::Write::write_all(&mut file, &piece).map_err(write)?;
                written += piece.len() as u64;
            }
            drop(file);
            std::fs::rename(&part.path, &to).map_err(|e| io_error("rename into place", &to, e))?;
            part.disarm();
            Ok(written)
        })
        .await
        .map_err(|e| io_error("write", path, std::io::Error::other(e)))?
    }

    /// Start writing the file `path` (its folder must exist). A file that cannot be created
    /// or written is reported by [`Writes::stream`] stopping early and by `finish`.
    pub fn create(path: &Path) -> Self {
        Self::start(path, false)
    }

    /// [`create`](Self::create), also hashing the file as it grows:
    /// [`finish_hashed`](Self::finish_hashed) returns its size and SHA-256 without reading it
    /// again. Bytes that arrive in order are hashed as they are written; a part written ahead
    /// of them is read back from the page cache once the bytes before it are in.
    pub fn create_hashed(path: &Path) -> Self {
        Self::start(path, true)
    }

    fn start(path: &Path, hash: bool) -> Self {
        let part = PartFile::beside(path);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Batch>(2);
        let finishing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = tokio::task::spawn_blocking({
            let (part, finishing) = (part.path.clone(), Arc::clone(&finishing));
            move || -> std::io::Result<(u64, Option<Digested>)> {
                use std::io::{Seek, SeekFrom, Write};
                let written = (|| {
                    let mut file = std::fs::File::create(&part)?;
                    let (mut at, mut written) = (0, 0);
                    let mut hashed = hash.then(|| InOrder::new(&part));
                    while let Some((offset, chunks)) = rx.blocking_recv() {
                        if offset != at {
                            file.seek(SeekFrom::Start(offset))?;
                            at = offset;
                        }
                        let start = at;
                        for piece in chunks.iter().flat_map(write_pieces) {
                            file.write_all(&piece)?;
                            at += piece.len() as u64;
                            written += piece.len() as u64;
                        }
                        if let Some(h) = &mut hashed {
                            h.wrote(start, &chunks)?;
                        }
                    }
                    Ok((written, hashed.map(InOrder::finish).transpose()?))
                })();
                if !finishing.load(std::sync::atomic::Ordering::Acquire) {
                    let _ = std::fs::remove_file(&part);
                }
                written
            }
        });
        Self {
            path: path.to_owned(),
            part,
            tx,
            writer,
            finishing,
        }
    }

    /// A sender of chunks to this file.
    pub fn writes(&self) -> Writes {
        Writes(self.tx.clone())
    }

    /// Wait for the writes, check that `size` bytes were written, and rename the file into
    /// place; returns `size`. Every [`Writes`] must have been dropped.
    pub async fn finish(self, size: u64) -> Result<u64> {
        self.done(size).await.map(|_| size)
    }

    /// [`finish`](Self::finish) of a writer made by [`create_hashed`](Self::create_hashed):
    /// the file's size and SHA-256.
    pub async fn finish_hashed(self, size: u64) -> Result<Digested> {
        let path = self.path.clone();
        self.done(size).await?.ok_or_else(|| {
            let e = std::io::Error::other("the file was not hashed (a bug: create_hashed)");
            io_error("hash", &path, e)
        })
    }

    async fn done(self, size: u64) -> Result<Option<Digested>> {
        let Self {
            path,
            part,
            tx,
            writer,
            finishing,
        } = self;
        finishing.store(true, std::sync::atomic::Ordering::Release);
        drop(tx);
        let (written, digest) = writer
            .await
            .map_err(|e| io_error("write", &path, std::io::Error::other(e)))?
            .map_err(|e| io_error("write", &path, e))?;
        if written != size || digest.as_ref().is_some_and(|d| d.size != size) {
            let short = std::io::Error::other(format!("{written} bytes written of {size}"));
            return Err(io_error("write", &path, short));
        }
        std::fs::rename(&part.path, &path).map_err(|e| io_error("rename into place", &path, e))?;
        part.disarm();
        Ok(digest)
    }
}

/// The SHA-256 of a file written in parts at their offsets, in order: what arrives right after
/// the bytes hashed so far is hashed from memory; a range written ahead waits, and is read back
/// from the file once the bytes before it are in.
struct InOrder {
    digest: Digester,
    /// Written ranges past the hashed prefix: start → end.
    ahead: BTreeMap<u64, u64>,
    path: PathBuf,
    reader: Option<std::fs::File>,
    /// Reused by each read-back (made at its first).
    buf: Vec<u8>,
}

impl InOrder {
    fn new(path: &Path) -> Self {
        Self {
            digest: Digester::default(),
            ahead: BTreeMap::new(),
            path: path.to_owned(),
            reader: None,
            buf: Vec::new(),
        }
    }

    /// `chunks` were written at `start`.
    fn wrote(&mut self, start: u64, chunks: &[Bytes]) -> std::io::Result<()> {
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        if start != self.digest.size {
            self.ahead.insert(start, start + len);
            return Ok(());
        }
        for c in chunks {
            self.digest.update(c);
        }
        // The ranges written ahead that now follow the prefix.
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() != self.digest.size {
                break;
            }
            let (from, to) = entry.remove_entry();
            self.read_back(from, to)?;
        }
        Ok(())
    }

    fn read_back(&mut self, from: u64, to: u64) -> std::io::Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let reader = match &mut self.reader {
            Some(r) => r,
            None => self.reader.insert(std::fs::File::open(&self.path)?),
        };
        reader.seek(SeekFrom::Start(from))?;
        if self.buf.is_empty() {
            self.buf = vec![0u8; 1 << 20];
        }
        let mut left = to - from;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            reader.read_exact(&mut self.buf[..want])?;
            self.digest.update(&self.buf[..want]);
            left -= want as u64;
        }
        Ok(())
    }

    fn finish(self) -> std::io::Result<Digested> {
        if let Some((from, _)) = self.ahead.first_key_value() {
            return Err(std::io::Error::other(format!(
                "bytes {}..{from} were never written",
                self.digest.size
            )));
        }
        Ok(self.digest.finish())
    }
}

impl Writes {
    /// Write `body` at `offset`, in batches of about 256 KiB; returns the bytes sent. A read
    /// error is returned; if the writer has stopped (its error comes from
    /// [`FileWriter::finish`]) this returns early.
    pub async fn stream(
        &self,
        mut offset: u64,
        mut body: impl futures::Stream<Item = Result<Bytes>> + Unpin,
    ) -> Result<u64> {
        let start = offset;
        let (mut batch, mut batched) = (Vec::new(), 0);
        loop {
            let end = match body.try_next().await? {
                Some(chunk) => {
                    batched += chunk.len();
                    batch.push(chunk);
                    false
                }
                None => true,
            };
            if (end && !batch.is_empty()) || batched >= WRITE_BATCH {
                let sent = std::mem::take(&mut batch);
                if self.0.send((offset, sent)).await.is_err() {
                    break;
                }
                offset += std::mem::take(&mut batched) as u64;
            }
            if end {
                break;
            }
        }
        Ok(offset - start)
    }
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// A file's temporary name while it is written (downloads, kernel copies into a filesystem
/// root): hidden, so tools that read folders skip it, and removed when dropped unless
/// [`disarm`](Self::disarm)ed once it was renamed into place.
#[derive(Debug)]
pub struct PartFile {
    path: PathBuf,
    keep: bool,
}

impl PartFile {
    /// `.<name>.<pid>-<n>.lake-part` beside `path`: writers of one path at once (in this
    /// process or another) never share a temporary file; the last rename wins.
    pub fn beside(path: &Path) -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            path: path.with_file_name(format!(".{name}.{}-{n}.lake-part", std::process::id())),
            keep: false,
        }
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// It was renamed into place: keep it.
    pub fn disarm(mut self) {
        self.keep = true;
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Size and SHA-256 of bytes that went through a [`hashing`] stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digested {
    /// Bytes seen.
    pub size: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

/// Bytes an object is hashed inline before [`hashing`] moves its hash to a thread of its own.
const HASH_INLINE_MAX: u64 = 4 << 20;

/// Pieces in flight to the hashing thread. Each is a reference to a piece the stream passes
/// on anyway, so this bounds how far the hash may lag, not a copy.
const HASH_QUEUE: usize = 8;

/// Where [`hashing`] is in an object.
enum HashState {
    /// Small so far: hashed on the stream's own task.
    Inline(Digester),
    /// Large: pieces go to a blocking thread, so that hashing runs beside the receive and the
    /// write instead of between them (on a network source, SHA-256 is then off the path that
    /// asks the socket for more).
    Offloaded {
        pieces: tokio::sync::mpsc::Sender<Bytes>,
        digest: tokio::task::JoinHandle<Digester>,
    },
    /// The stream failed or ended.
    Done,
}

impl HashState {
    async fn feed(&mut self, chunk: &Bytes) {
        if let HashState::Inline(d) = self {
            // Outside a Tokio runtime (a caller on another executor) everything stays inline.
            let runtime = match tokio::runtime::Handle::try_current() {
                Ok(r) if d.size + chunk.len() as u64 > HASH_INLINE_MAX => r,
                _ => {
                    d.update(chunk);
                    return;
                }
            };
            let d = std::mem::take(d);
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(HASH_QUEUE);
            let digest = runtime.spawn_blocking(move || {
                let mut d = d;
                while let Some(piece) = rx.blocking_recv() {
                    d.update(&piece);
                }
                d
            });
            *self = HashState::Offloaded { pieces: tx, digest };
        }
        if let HashState::Offloaded { pieces, .. } = self {
            // Only fails if the hashing thread panicked; `finish` then reports nothing.
            let _ = pieces.send(chunk.clone()).await;
        }
    }

    async fn finish(&mut self) -> Option<Digested> {
        match std::mem::replace(self, HashState::Done) {
            HashState::Inline(d) => Some(d.finish()),
            HashState::Offloaded { pieces, digest } => {
                drop(pieces);
                digest.await.ok().map(Digester::finish)
            }
            HashState::Done => None,
        }
    }
}

/// Wrap `body` so that its size and SHA-256 are computed as it streams; the result is
/// available from the returned handle once the stream has been consumed to its end. Past
/// 4 MiB, inside a Tokio runtime, the hashing runs on a blocking thread beside the stream.
pub fn hashing(body: ByteStream) -> (ByteStream, Arc<std::sync::Mutex<Option<Digested>>>) {
    let out = Arc::new(std::sync::Mutex::new(None));
    let slot = Arc::clone(&out);
    let state = HashState::Inline(Digester::default());
    let stream = futures::stream::unfold(
        (body, state, slot),
        |(mut body, mut state, slot)| async move {
            match body.next().await {
                Some(Ok(chunk)) => {
                    state.feed(&chunk).await;
                    Some((Ok(chunk), (body, state, slot)))
                }
                Some(Err(e)) => Some((Err(e), (body, HashState::Done, slot))),
                None => {
                    if let Some(d) = state.finish().await {
                        *slot.lock().expect("digest lock") = Some(d);
                    }
                    None
                }
            }
        },
    );
    (stream.boxed(), out)
}

/// [`ZoneStore::put_file`] by streaming the file through [`ZoneStore::put`], hashing on the way
/// (the trait's default, for stores that override it for some roots only).
pub async fn put_file_streamed<S: ZoneStore + ?Sized>(
    store: &S,
    key: &Key,
    path: &Path,
    progress: Option<ProgressFn>,
) -> Result<Digested> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| Error::Io {
            action: "open",
            path: path.to_owned(),
            source,
        })?;
    let owned = path.to_owned();
    let body: ByteStream = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10)
        .map_err(move |source| Error::Io {
            action: "read",
            path: owned.clone(),
            source,
        })
        .boxed();
    put_hashed(store, key, body, progress).await
}

/// [`ZoneStore::put`] of `body`, telling `progress` the size of each piece, and the size and
/// SHA-256 of what was put.
pub async fn put_hashed<S: ZoneStore + ?Sized>(
    store: &S,
    key: &Key,
    mut body: ByteStream,
    progress: Option<ProgressFn>,
) -> Result<Digested> {
    if let Some(p) = progress {
        body = body.inspect_ok(move |b| p(b.len() as u64)).boxed();
    }
    let (body, digest) = hashing(body);
    store.put(key, body).await?;
    digest_of(|| store.root_url(), "put", key, &digest)
}

/// What [`hashing`] left once its stream ended. Missing only if its hashing thread died: an
/// error, never an empty digest in a manifest.
fn digest_of(
    root_url: impl FnOnce() -> String,
    operation: &'static str,
    key: &Key,
    slot: &std::sync::Mutex<Option<Digested>>,
) -> Result<Digested> {
    slot.lock().expect("digest lock").take().ok_or_else(|| {
        Error::store(
            operation,
            key.as_str(),
            root_url(),
            "the object's SHA-256 could not be computed (its hashing thread stopped)",
        )
    })
}

/// Size and SHA-256 of bytes fed to it piece by piece.
#[derive(Debug, Clone, Default)]
pub struct Digester {
    hash: Sha256,
    size: u64,
}

impl Digester {
    /// Add `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hash.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// What was fed.
    pub fn finish(self) -> Digested {
        Digested {
            size: self.size,
            sha256: hex::encode(self.hash.finalize()),
        }
    }
}

/// Calls back with the byte count of each piece of an object as it moves.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// Conveniences for every [`ZoneStore`].
#[async_trait]
pub trait ZoneStoreExt: ZoneStore {
    /// Put a whole in-memory value.
    async fn put_bytes(&self, key: &Key, bytes: Bytes) -> Result<ObjectMeta> {
        self.put(key, futures::stream::once(async move { Ok(bytes) }).boxed())
            .await
    }

    /// Read a whole object into memory. For small objects (manifests, ledgers, locks).
    async fn get_bytes(&self, key: &Key) -> Result<Bytes> {
        let got = self.get(key).await?;
        let chunks: Vec<Bytes> = got.body.try_collect().await?;
        Ok(chunks.concat().into())
    }

    /// Put a value as pretty JSON.
    async fn put_json<T: Serialize + Sync>(&self, key: &Key, value: &T) -> Result<ObjectMeta> {
        self.put_bytes(key, json_bytes(value)).await
    }

    /// Read a JSON document written by lake; `None` when it does not exist.
    async fn get_json<T: DeserializeOwned>(&self, key: &Key) -> Result<Option<T>> {
        Ok(self.get_json_sized(key).await?.map(|(doc, _)| doc))
    }

    /// [`get_json`](Self::get_json) with the document's size in bytes.
    async fn get_json_sized<T: DeserializeOwned>(&self, key: &Key) -> Result<Option<(T, u64)>> {
        match self.get_bytes(key).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(|doc| Some((doc, bytes.len() as u64)))
                .map_err(|source| Error::Corrupt {
                    key: key.to_string(),
                    source,
                }),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// SHA-256 and size of an object, streaming.
    async fn digest(&self, key: &Key) -> Result<Digested> {
        let got = self.get(key).await?;
        let (mut body, out) = hashing(got.body);
        while body.try_next().await?.is_some() {}
        digest_of(|| self.root_url(), "digest", key, &out)
    }

    /// Delete every object under `prefix`; returns how many were deleted.
    async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let keys: Vec<Key> = self
            .list(prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect();
        self.delete_many(&keys).await?;
        Ok(keys.len())
    }
}

impl<T: ZoneStore + ?Sized> ZoneStoreExt for T {}

/// `value` as pretty JSON bytes with a trailing newline.
pub fn json_bytes<T: Serialize + ?Sized>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec_pretty(value).expect("lake documents serialize");
    v.push(b'\n');
    v.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dropped_file_writer_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("lake-file-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let listed = || std::fs::read_dir(&dir).unwrap().count();
        let file = FileWriter::create(&dir.join("out.bin"));
        let writes = file.writes();
        let body = futures::stream::iter([Ok(Bytes::from_static(b"some bytes"))]);
        assert_eq!(writes.stream(0, body).await.unwrap(), 10);
        // The writer has made its temporary file; then the download is abandoned.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while listed() == 0 && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(listed(), 1, "the temporary file exists while writing");
        drop((file, writes));
        while listed() > 0 && std::time::Instant::now() < until {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(listed(), 0, "nothing is left once the writer is dropped");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Parts written in any order are hashed as the whole file: what arrives after the hashed
    /// prefix from memory, what came ahead of it read back; a gap is an error, not a hash.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hashed_file_writer_hashes_parts_written_out_of_order() {
        let dir = tempfile_dir("hashed");
        let all: Vec<u8> = (0..1_000_003u32).map(|i| (i % 251) as u8).collect();
        let whole = {
            let mut d = Digester::default();
            d.update(&all);
            d.finish()
        };
        // Parts of 100,000 bytes, each sent as batches of 7,000 bytes, in this order.
        let parts = [3usize, 0, 9, 1, 2, 10, 5, 4, 8, 7, 6];
        let path = dir.join("out.bin");
        let file = FileWriter::create_hashed(&path);
        for p in parts {
            let (from, to) = (p * 100_000, ((p + 1) * 100_000).min(all.len()));
            let chunks: Vec<Result<Bytes>> = all[from..to]
                .chunks(7_000)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let writes = file.writes();
            writes
                .stream(from as u64, futures::stream::iter(chunks))
                .await
                .unwrap();
        }
        let d = file.finish_hashed(all.len() as u64).await.unwrap();
        assert_eq!(d, whole);
        assert_eq!(std::fs::read(&path).unwrap(), all);

        // A part never written: no hash is made up.
        let file = FileWriter::create_hashed(&dir.join("gap.bin"));
        let writes = file.writes();
        let tail = futures::stream::iter([Ok(Bytes::from_static(b"tail"))]);
        writes.stream(10, tail).await.unwrap();
        drop(writes);
        assert!(file.finish_hashed(4).await.is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lake-{what}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn write_pieces_cut_without_losing_a_byte() {
        for len in [
            0,
            1,
            MAX_WRITE - 1,
            MAX_WRITE,
            MAX_WRITE + 1,
            3 * MAX_WRITE + 5,
        ] {
            let chunk = Bytes::from((0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
            let pieces: Vec<Bytes> = write_pieces(&chunk).collect();
            assert!(pieces.iter().all(|p| !p.is_empty() && p.len() <= MAX_WRITE));
            assert_eq!(pieces.len(), len.div_ceil(MAX_WRITE), "{len}");
            assert_eq!(pieces.concat(), chunk.to_vec(), "{len}");
        }
    }

    #[test]
    fn keys() {
        assert!(Key::new("raw/a/b.csv").is_ok());
        for bad in ["", "/a", "a/", "a//b", "a/../b", "./a", "a\\b"] {
            assert!(Key::new(bad).is_err(), "{bad:?} accepted");
        }
        let k = Key::new("raw/a/b.csv").unwrap();
        assert_eq!(k.strip_prefix("raw/a"), Some("b.csv"));
        assert_eq!(k.strip_prefix("raw/"), None);
        assert_eq!(k.strip_prefix("raw/ab"), None);
        assert_eq!(k.file_name(), "b.csv");
    }

    #[tokio::test]
    async fn hashing_stream() {
        let body = futures::stream::iter(vec![Ok(Bytes::from("ab")), Ok(Bytes::from("c"))]).boxed();
        let (s, out) = hashing(body);
        let all: Vec<Bytes> = s.try_collect().await.unwrap();
        assert_eq!(all.concat(), b"abc");
        let d = out.lock().unwrap().clone().unwrap();
        assert_eq!(d.size, 3);
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    /// Outside a Tokio runtime a large stream is hashed inline, whole.
    #[test]
    fn hashing_outside_a_runtime_stays_inline() {
        let pieces: Vec<Bytes> = (0..20u8).map(|i| Bytes::from(vec![i; 300 << 10])).collect();
        let whole = pieces.concat();
        let body = futures::stream::iter(pieces.into_iter().map(Ok)).boxed();
        let (s, out) = hashing(body);
        let all: Vec<Bytes> = futures::executor::block_on(s.try_collect()).unwrap();
        assert_eq!(all.concat(), whole);
        let d = out.lock().unwrap().clone().unwrap();
        assert_eq!(d.sha256, hex::encode(Sha256::digest(&whole)));
    }

    /// A digest that never arrived (its hashing thread died) is an error naming the object and
    /// the store, never an empty SHA-256 in a manifest; one that did is taken exactly once.
    #[test]
    fn a_missing_digest_is_an_error_naming_the_object() {
        let key = Key::new("raw/weather/date=2024-01-01/part-0.csv").unwrap();
        let lost = std::sync::Mutex::new(None);
        let err = digest_of(|| "file:///lake".to_owned(), "put", &key, &lost).unwrap_err();
        let text = crate::run::error_chain(&err);
        assert!(text.contains(key.as_str()), "{text}");
        assert!(text.contains("file:///lake"), "{text}");
        assert!(text.contains("hashing thread stopped"), "{text}");

        let done = Digested {
            size: 3,
            sha256: hex::encode(Sha256::digest(b"abc")),
        };
        let slot = std::sync::Mutex::new(Some(done.clone()));
        let got = digest_of(
            || unreachable!("no store name without an error"),
            "put",
            &key,
            &slot,
        );
        assert_eq!(got.unwrap(), done);
        assert!(
            slot.lock().unwrap().is_none(),
            "the digest is taken, not copied"
        );
    }

    /// Past `HASH_INLINE_MAX` the hash moves to a thread: the digest must still cover every
    /// piece in order, including those hashed inline before the move.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashing_a_large_stream_on_its_own_thread_covers_every_piece() {
        let pieces: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; 300 << 10])).collect();
        let whole = pieces.concat();
        let body = futures::stream::iter(pieces.into_iter().map(Ok)).boxed();
        let (s, out) = hashing(body);
        let all: Vec<Bytes> = s.try_collect().await.unwrap();
        assert_eq!(all.concat(), whole);
        let d = out.lock().unwrap().clone().unwrap();
        assert_eq!(d.size, whole.len() as u64);
        assert!(d.size > HASH_INLINE_MAX);
        assert_eq!(d.sha256, hex::encode(Sha256::digest(&whole)));
    }
}
