//! A [`ZoneStore`] that counts the requests made to the store it wraps (for tests and
//! benchmarks that bound how many requests a run makes) and can fail chosen writes (for tests
//! of what a failure half way leaves).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use lake_core::zone::{
    ByteStream, DynZoneStore, GetResult, Key, ObjectMeta, PutOutcome, ZoneStore,
};
use lake_core::{Error, Result};

/// Decides whether a write (`put`, `put_if_absent`, `copy` to, `delete`) of a key fails.
pub type Fault = Arc<dyn Fn(&'static str, &str) -> bool + Send + Sync>;

/// Which keys listings leave out ([`CountingStore::hiding`]).
pub type Hide = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Wraps a store; every call is counted by operation, and reads by key.
#[derive(Clone)]
pub struct CountingStore {
    inner: Arc<DynZoneStore>,
    counts: Arc<Mutex<Counts>>,
    fault: Option<Fault>,
    hidden: Option<Hide>,
}

impl std::fmt::Debug for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CountingStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// What a [`CountingStore`] saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls by operation (`get`, `put`, `list`, …).
    pub ops: BTreeMap<&'static str, usize>,
    /// Keys read by `get`, `head` or `get_range`, in order.
    pub reads: Vec<String>,
}

impl Counts {
    /// All calls.
    pub fn total(&self) -> usize {
        self.ops.values().sum()
    }

    /// Calls of `op`.
    pub fn of(&self, op: &str) -> usize {
        self.ops.get(op).copied().unwrap_or(0)
    }

    /// Reads of keys whose file name is `name` (`_manifest.json`).
    pub fn reads_of(&self, name: &str) -> usize {
        self.reads
            .iter()
            .filter(|k| k.rsplit('/').next() == Some(name))
            .count()
    }
}

impl CountingStore {
    /// Count the calls made to `inner`.
    pub fn new(inner: Arc<DynZoneStore>) -> Self {
        Self {
            inner,
            counts: Arc::default(),
            fault: None,
            hidden: None,
        }
    }

    /// Leave the keys for which `hide(key)` is true out of listings (as a listing made while
    /// an object is renamed into place may), while reads by key still find them.
    pub fn hiding(mut self, hide: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.hidden = Some(Arc::new(hide));
        self
    }

    /// Fail the writes for which `fault(operation, key)` is true, as a store error.
    pub fn failing(
        mut self,
        fault: impl Fn(&'static str, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.fault = Some(Arc::new(fault));
        self
    }

    fn write(&self, op: &'static str, key: &Key) -> Result<()> {
        self.count(op, None);
        match &self.fault {
            Some(f) if f(op, key.as_str()) => Err(Error::Store {
                operation: op,
                key: key.to_string(),
                store: self.inner.root_url(),
                source: "injected fault".into(),
            }),
            _ => Ok(()),
        }
    }

    /// What was counted so far.
    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }

    /// Start counting from zero.
    pub fn reset(&self) {
        *self.counts.lock().unwrap() = Counts::default();
    }

    fn count(&self, op: &'static str, read: Option<&Key>) {
        let mut c = self.counts.lock().unwrap();
        *c.ops.entry(op).or_default() += 1;
        if let Some(k) = read {
            c.reads.push(k.to_string());
        }
    }
}

#[async_trait]
impl ZoneStore for CountingStore {
    fn root_url(&self) -> String {
        self.inner.root_url()
    }
    fn url_of(&self, key: &str) -> String {
        self.inner.url_of(key)
    }
    fn local_path(&self, key: &str) -> Option<PathBuf> {
        self.inner.local_path(key)
    }
    fn location(&self, prefix: &str) -> String {
        self.inner.location(prefix)
    }
    async fn prepare_for_writer(&self, prefix: &str) -> Result<String> {
        self.inner.prepare_for_writer(prefix).await
    }
    fn killed_puts_leave_files(&self) -> bool {
        self.inner.killed_puts_leave_files()
    }
    async fn unfinished(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner.unfinished(prefix).await
    }
    async fn sweep(&self, prefix: &str) -> Result<usize> {
        self.inner.sweep(prefix).await
    }
    async fn put(&self, key: &Key, body: ByteStream) -> Result<ObjectMeta> {
        self.write("put", key)?;
        self.inner.put(key, body).await
    }
    async fn put_if_absent(&self, key: &Key, body: Bytes) -> Result<PutOutcome> {
        self.write("put_if_absent", key)?;
        self.inner.put_if_absent(key, body).await
    }
    async fn get(&self, key: &Key) -> Result<GetResult> {
        self.count("get", Some(key));
        self.inner.get(key).await
    }
    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        self.count("head", Some(key));
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.count("list", None);
        let mut found = self.inner.list(prefix).await?;
        if let Some(hide) = &self.hidden {
            found.retain(|m| !hide(m.key.as_str()));
        }
        Ok(found)
    }
    async fn copy(&self, from: &Key, to: &Key) -> Result<()> {
        self.write("copy", to)?;
        self.inner.copy(from, to).await
    }
    async fn delete(&self, key: &Key) -> Result<()> {
        self.write("delete", key)?;
        self.inner.delete(key).await
    }
    async fn delete_many(&self, keys: &[Key]) -> Result<()> {
        self.count("delete_many", None);
        self.inner.delete_many(keys).await
    }
    async fn download(&self, key: &Key, path: &Path) -> Result<u64> {
        self.count("download", Some(key));
        self.inner.download(key, path).await
    }
    async fn get_range(
        &self,
        key: &Key,
        range: std::ops::Range<u64>,
    ) -> Result<(ObjectMeta, Bytes)> {
        self.count("get_range", Some(key));
        self.inner.get_range(key, range).await
    }
}
