//! Zone stores on object_store: a local folder or memory.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use lake_core::zone::{
    ByteStream, Digested, Digester, GetResult, Key, ObjectMeta, PartFile, ProgressFn, PutOutcome,
    ZoneStore, put_file_streamed, write_pieces,
};
use lake_core::{Error, Result};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetResultPayload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, WriteMultipart,
};
use tokio_util::io::ReaderStream;

/// Chunk size of streamed puts: memory per put is bounded by a few of these.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Read size of streamed gets from files.
const READ_CHUNK: usize = 1024 * 1024;
/// Parts in flight per put.
const PART_CONCURRENCY: usize = 2;

/// A [`ZoneStore`] backed by an [`ObjectStore`].
#[derive(Clone)]
pub struct LocalZoneStore {
    inner: Arc<dyn ObjectStore>,
    url: String,
    local_root: Option<PathBuf>,
}

impl fmt::Debug for LocalZoneStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalZoneStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl LocalZoneStore {
    /// A store in the folder `root`, created if missing.
    pub fn filesystem(root: impl Into<PathBuf>) -> Result<Self> {
        let root = std::path::absolute(root.into()).map_err(|source| Error::Io {
            action: "resolve",
            path: PathBuf::from("."),
            source,
        })?;
        std::fs::create_dir_all(&root).map_err(|source| Error::Io {
            action: "create directory",
            path: root.clone(),
            source,
        })?;
        let fs = LocalFileSystem::new_with_prefix(&root)
            .map_err(|e| Error::store("open", "", root.display().to_string(), e))?
            .with_automatic_cleanup(true);
        Ok(Self {
            inner: Arc::new(fs),
            url: root.display().to_string(),
            local_root: Some(root),
        })
    }

    /// An empty store in memory (tests, dry runs).
    pub fn memory() -> Self {
        Self {
            inner: Arc::new(InMemory::new()),
            url: "memory://".to_owned(),
            local_root: None,
        }
    }

    /// The underlying object store (to hand to an engine that reads object_store directly).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.inner)
    }

    fn err(&self, operation: &'static str, key: &str, e: object_store::Error) -> Error {
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                key: key.to_owned(),
                store: self.url.clone(),
            },
            other => Error::store(operation, key, self.url.clone(), other),
        }
    }

    fn path(key: &Key) -> Path {
        // Keys are object paths as listed (`purpose=radio%2FTV`): parse keeps them byte for
        // byte, where `From` would encode the `%` again.
        Path::parse(key.as_str()).unwrap_or_else(|_| Path::from(key.as_str()))
    }

    fn meta(&self, m: object_store::ObjectMeta) -> Result<ObjectMeta> {
        Ok(ObjectMeta {
            key: Key::new(m.location.to_string())?,
            size: m.size,
            last_modified: m.last_modified,
            e_tag: m.e_tag,
        })
    }
}

#[async_trait]
impl ZoneStore for LocalZoneStore {
    fn root_url(&self) -> String {
        self.url.clone()
    }

    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|r| {
            if key.is_empty() {
                r.clone()
            } else {
                r.join(key)
            }
        })
    }

    async fn prepare_for_writer(&self, prefix: &str) -> Result<String> {
        if let Some(path) = self.local_path(prefix) {
            tokio::fs::create_dir_all(&path)
                .await
                .map_err(|source| Error::Io {
                    action: "create directory",
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(self.location(prefix))
    }

    fn killed_puts_leave_files(&self) -> bool {
        self.local_root.is_some()
    }

    async fn unfinished(&self, prefix: &str) -> Result<Vec<String>> {
        let (Some(root), Some(at)) = (self.local_root.clone(), self.local_path(prefix)) else {
            return Ok(Vec::new());
        };
        tokio::task::spawn_blocking(move || {
            unfinished_files(&at)
                .into_iter()
                .map(|p| {
                    p.strip_prefix(&root)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        })
        .await
        .map_err(|e| Error::store("list", prefix, self.root_url(), e))
    }

    async fn sweep(&self, prefix: &str) -> Result<usize> {
        let Some(at) = self.local_path(prefix) else {
            return Ok(0);
        };
        tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            for p in unfinished_files(&at) {
                if std::fs::remove_file(&p).is_ok() {
                    removed += 1;
                }
            }
            remove_empty_dirs(&at);
            removed
        })
        .await
        .map_err(|e| Error::store("delete", prefix, self.root_url(), e))
    }

    async fn put_file(
        &self,
        key: &Key,
        path: &std::path::Path,
        progress: Option<ProgressFn>,
    ) -> Result<Digested> {
        match self.local_path(key.as_str()) {
            Some(to) => {
                let from = path.to_owned();
                tokio::task::spawn_blocking(move || copy_and_hash(&from, &to, progress))
                    .await
                    .map_err(|e| Error::store("put", key.as_str(), self.root_url(), e))?
            }
            None => put_file_streamed(self, key, path, progress).await,
        }
    }

    async fn put(&self, key: &Key, mut body: ByteStream) -> Result<ObjectMeta> {
        let path = Self::path(key);
        let upload = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(|e| self.err("put", key.as_str(), e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut size = 0u64;
        loop {
            let next = body.try_next().await;
            let chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            };
            size += chunk.len() as u64;
            if let Err(e) = writer.wait_for_capacity(PART_CONCURRENCY).await {
                return Err(self.err("put", key.as_str(), e));
            }
            // A part is written one payload piece per `write`: keep those small.
            write_pieces(&chunk).for_each(|piece| writer.put(piece));
        }
        let done = writer
            .finish()
            .await
            .map_err(|e| self.err("put", key.as_str(), e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            last_modified: chrono::Utc::now(),
            e_tag: done.e_tag,
        })
    }

    async fn put_if_absent(&self, key: &Key, body: Bytes) -> Result<PutOutcome> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .inner
            .put_opts(&Self::path(key), write_pieces(&body).collect(), opts)
            .await
        {
            Ok(_) => Ok(PutOutcome::Created),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.err("put_if_absent", key.as_str(), e)),
        }
    }

    async fn get(&self, key: &Key) -> Result<GetResult> {
        let got = self
            .inner
            .get(&Self::path(key))
            .await
            .map_err(|e| self.err("get", key.as_str(), e))?;
        let meta = self.meta(got.meta.clone())?;
        let url = self.url.clone();
        let k = key.to_string();
        let body = match got.payload {
            // object_store reads files in 8 KiB chunks; 1 MiB reads are ~1.5x faster here.
            GetResultPayload::File(file, _) => {
                ReaderStream::with_capacity(tokio::fs::File::from_std(file), READ_CHUNK)
                    .map_err(move |e| Error::store("get", k.clone(), url.clone(), e))
                    .boxed()
            }
            GetResultPayload::Stream(s) => s
                .map_err(move |e| Error::store("get", k.clone(), url.clone(), e))
                .boxed(),
        };
        Ok(GetResult { meta, body })
    }

    async fn get_range(
        &self,
        key: &Key,
        range: std::ops::Range<u64>,
    ) -> Result<(ObjectMeta, Bytes)> {
        // A local head is a stat; it clamps the range, which object_store refuses past the end.
        let meta = self.head(key).await?;
        let range = range.start.min(meta.size)..range.end.min(meta.size);
        if range.is_empty() {
            return Ok((meta, Bytes::new()));
        }
        let bytes = self
            .inner
            .get_range(&Self::path(key), range)
            .await
            .map_err(|e| self.err("get", key.as_str(), e))?;
        Ok((meta, bytes))
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let m = self
            .inner
            .head(&Self::path(key))
            .await
            .map_err(|e| self.err("head", key.as_str(), e))?;
        self.meta(m)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let p = (!prefix.is_empty()).then(|| Path::from(prefix));
        let found: Vec<object_store::ObjectMeta> = self
            .inner
            .list(p.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.err("list", prefix, e))?;
        let mut out = found
            .into_iter()
            .map(|m| self.meta(m))
            .collect::<Result<Vec<_>>>()?;
        // An exact-key match is under its own prefix too.
        if !prefix.is_empty()
            && let Ok(k) = Key::new(prefix)
            && let Ok(m) = self.head(&k).await
            && !out.iter().any(|o| o.key == k)
        {
            out.push(m);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn copy(&self, from: &Key, to: &Key) -> Result<()> {
        self.inner
            .copy(&Self::path(from), &Self::path(to))
            .await
            .map_err(|e| self.err("copy", from.as_str(), e))
    }

    async fn rename(&self, from: &Key, to: &Key) -> Result<()> {
        self.inner
            .rename(&Self::path(from), &Self::path(to))
            .await
            .map_err(|e| self.err("rename", from.as_str(), e))
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        match self.inner.delete(&Self::path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key.as_str(), e)),
        }
    }
}

/// Bytes copied between two reports to the hasher.
const COPY_PIECE: u64 = 8 << 20;

/// Copy the file `from` to `to` in the kernel (`copy_file_range`: no pass through user space)
/// while another thread hashes the copy as it grows, from the page cache; into a hidden
/// temporary file ([`PartFile`]) renamed into place, so `to` appears whole or not at all. What is hashed is
/// what landed, even if `from` changes meanwhile.
fn copy_and_hash(
    from: &std::path::Path,
    to: &std::path::Path,
    progress: Option<ProgressFn>,
) -> Result<Digested> {
    use std::io::{Read, Write};
    let io = |action: &'static str, path: &std::path::Path| {
        let path = path.to_owned();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    let dir = to.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    // Removed on every early return; kept once renamed into place.
    let part = PartFile::beside(to);
    let tmp = part.path().to_owned();
    let src = std::fs::File::open(from).map_err(io("open", from))?;
    let mut dst = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
    let mut reader = std::fs::File::open(&tmp).map_err(io("open", &tmp))?;
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let hashed = tmp.clone();
    let hasher = std::thread::spawn(move || {
        let mut d = Digester::default();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while let Ok(upto) = rx.recv() {
            while done < upto {
                let want = (upto - done).min(buf.len() as u64) as usize;
                let n = reader.read(&mut buf[..want]).map_err(io("read", &hashed))?;
                if n == 0 {
                    break;
                }
                d.update(&buf[..n]);
                done += n as u64;
            }
        }
        Ok::<_, Error>(d.finish())
    });
    let mut copied = 0u64;
    let copy = loop {
        match std::io::copy(&mut (&src).take(COPY_PIECE), &mut dst) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                copied += n;
                let _ = tx.send(copied);
                if let Some(p) = &progress {
                    p(n);
                }
            }
            Err(e) => break Err(io("copy", from)(e)),
        }
    };
    drop(tx);
    let digest = hasher.join().map_err(|_| Error::Internal {
        what: format!("landing {}", from.display()),
        message: "the hashing thread panicked (a bug: please report it)".into(),
    })?;
    copy?;
    dst.flush().map_err(io("write", &tmp))?;
    let digest = digest?;
    if digest.size != copied {
        return Err(Error::Invalid {
            what: format!("landing {}", from.display()),
            message: format!("copied {copied} bytes but hashed {}", digest.size),
        });
    }
    std::fs::rename(&tmp, to).map_err(io("rename", &tmp))?;
    part.disarm();
    Ok(digest)
}

/// The unfinished uploads (object_store's local `name#N` files, which listings skip) at `at`
/// (a file) or under it (a folder), at any depth.
fn unfinished_files(at: &std::path::Path) -> Vec<PathBuf> {
    let is_unfinished = |name: &std::ffi::OsStr| {
        name.to_string_lossy()
            .rsplit_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let mut found = Vec::new();
    if at.is_file() {
        if at.file_name().is_some_and(is_unfinished) {
            found.push(at.to_path_buf());
        }
        return found;
    }
    let mut todo = vec![at.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(e.path()),
                Ok(t) if t.is_file() && is_unfinished(&e.file_name()) => found.push(e.path()),
                _ => {}
            }
        }
    }
    found
}

/// Remove the folders under `dir` (and `dir` itself) that hold no file, deepest first.
fn remove_empty_dirs(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_dirs(&e.path());
            }
        }
    }
    // Fails (and is meant to) when something is left in it.
    let _ = std::fs::remove_dir(dir);
}
