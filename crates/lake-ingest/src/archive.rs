//! `extract = true`: archives unpacked next to the archive, within limits.
//!
//! [`Extracting`] wraps a source. For a window, it fetches each archive the source offers
//! (`.zip`, `.tar.gz` / `.tgz`, `.gz`) into a private temporary folder and unpacks it there,
//! checking every member before anything is staged. The window then offers the archive as
//! fetched and its members beside it. A refused archive fails the window's listing, so nothing
//! of the window is staged or published.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use lake_core::config::ExtractSpec;
use lake_core::source::{ArchiveKind, Source, SourceObject, Window};
use lake_core::zone::ByteStream;
use lake_core::{Error, Result};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

/// Archives this small when unpacked are never refused for their compression ratio.
const RATIO_FLOOR: u64 = 1 << 20;

/// A source whose archives are unpacked: see the [module docs](self).
#[derive(Debug)]
pub struct Extracting {
    inner: Arc<dyn Source>,
    spec: ExtractSpec,
    members: Vec<glob::Pattern>,
    /// Per window being landed: its temporary folder and the files it serves by object name.
    prepared: Mutex<HashMap<Window, Prepared>>,
}

#[derive(Debug)]
struct Prepared {
    _dir: lake_core::scratch::ScratchDir,
    files: HashMap<String, PathBuf>,
}

impl Extracting {
    /// Unpack the archives of `inner` within `spec`'s limits.
    pub fn new(inner: Arc<dyn Source>, spec: ExtractSpec) -> Result<Self> {
        let members = spec
            .members
            .iter()
            .map(|m| {
                glob::Pattern::new(m).map_err(|e| Error::Source {
                    source_name: inner.name().to_owned(),
                    message: format!("members: {m:?} is not a valid glob"),
                    source: Some(Box::new(e)),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            inner,
            spec,
            members,
            prepared: Mutex::new(HashMap::new()),
        })
    }

    fn err(&self, message: String) -> Error {
        Error::Source {
            source_name: self.inner.name().to_owned(),
            message,
            source: None,
        }
    }

    /// Fetch `obj` whole into `path`.
    async fn download(&self, window: &Window, obj: &SourceObject, path: &Path) -> Result<u64> {
        let io_err = |e: io::Error| self.err(format!("cannot write {}: {e}", path.display()));
        let mut body = self.inner.open(window, obj).await?;
        let mut file = tokio::fs::File::create(path).await.map_err(io_err)?;
        let mut size = 0u64;
        while let Some(chunk) = body.try_next().await? {
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io_err)?;
        }
        file.flush().await.map_err(io_err)?;
        Ok(size)
    }
}

#[async_trait]
impl Source for Extracting {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn objects(&self, window: &Window) -> Result<Vec<SourceObject>> {
        let listed = self.inner.objects(window).await?;
        if !listed.iter().any(|o| ArchiveKind::of(&o.name).is_some()) {
            return Ok(listed);
        }
        let dir = lake_core::scratch::ScratchDir::new("archive")
            .map_err(|e| self.err(format!("cannot create a temporary folder: {e}")))?;
        let mut files = HashMap::new();
        let mut out = Vec::new();
        let mut origin_of: BTreeMap<String, String> = BTreeMap::new();
        let mut unpacked = 0u64;
        for (i, obj) in listed.into_iter().enumerate() {
            let Some(kind) = ArchiveKind::of(&obj.name) else {
                origin_of.insert(obj.name.clone(), obj.origin.clone());
                out.push(obj);
                continue;
            };
            let archive = dir.path().join(format!("{i}.archive"));
            let size = self.download(window, &obj, &archive).await?;
            let target = dir.path().join(format!("{i}.members"));
            let limits = Limits {
                spec: self.spec.clone(),
                members: self.members.clone(),
                archive_size: size,
                window_left: self.spec.max_bytes.saturating_sub(unpacked),
            };
            let name = obj.name.clone();
            let (a, t) = (archive.clone(), target.clone());
            let members = tokio::task::spawn_blocking(move || unpack(kind, &name, &a, &t, &limits))
                .await
                .map_err(|e| self.err(format!("unpacking {} failed: {e}", obj.name)))?
                .map_err(|m| {
                    self.err(format!(
                        "archive {}: {m}; nothing of window {window} is stored",
                        obj.name
                    ))
                })?;
            // Members land beside the archive, under its folder within the window.
            let folder = obj
                .name
                .rsplit_once('/')
                .map(|(d, _)| format!("{d}/"))
                .unwrap_or_default();
            files.insert(obj.name.clone(), archive);
            origin_of.insert(obj.name.clone(), obj.origin.clone());
            out.push(SourceObject {
                size: Some(size),
                ..obj.clone()
            });
            for m in members {
                unpacked += m.size;
                let name = format!("{folder}{}", m.name);
                if let Some(other) = origin_of.get(&name) {
                    return Err(self.err(format!(
                        "member {} of {} would land as {name:?}, which {other} already fills; \
                         choose members with `members = [...]`",
                        m.name, obj.name
                    )));
                }
                origin_of.insert(name.clone(), format!("{}!{}", obj.origin, m.name));
                files.insert(name.clone(), target.join(&m.name));
                out.push(SourceObject {
                    name,
                    size: Some(m.size),
                    content_type: None,
                    origin: format!("{}!{}", obj.origin, m.name),
                });
            }
        }
        self.prepared
            .lock()
            .expect("prepared lock")
            .insert(*window, Prepared { _dir: dir, files });
        Ok(out)
    }

    async fn open(&self, window: &Window, object: &SourceObject) -> Result<ByteStream> {
        let path = self
            .prepared
            .lock()
            .expect("prepared lock")
            .get(window)
            .and_then(|p| p.files.get(&object.name).cloned());
        let Some(path) = path else {
            return self.inner.open(window, object).await;
        };
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.err(format!("cannot read the unpacked {}: {e}", object.name)))?;
        let name = self.inner.name().to_owned();
        Ok(ReaderStream::with_capacity(file, 256 * 1024)
            .map_err(move |e| Error::Source {
                source_name: name.clone(),
                message: "reading an unpacked file failed".into(),
                source: Some(Box::new(e)),
            })
            .boxed())
    }

    fn at_once(&self) -> usize {
        self.inner.at_once()
    }

    async fn download(
        &self,
        window: &Window,
        object: &SourceObject,
        path: &std::path::Path,
    ) -> Result<Option<lake_core::zone::Digested>> {
        let unpacked = self
            .prepared
            .lock()
            .expect("prepared lock")
            .get(window)
            .is_some_and(|p| p.files.contains_key(&object.name));
        if unpacked {
            return Ok(None);
        }
        self.inner.download(window, object, path).await
    }

    async fn finish(&self, window: &Window) {
        // Dropping the temporary folder deletes it.
        let prepared = self.prepared.lock().expect("prepared lock").remove(window);
        drop(prepared);
        self.inner.finish(window).await;
    }
}

/// What one archive may do.
#[derive(Debug, Clone)]
struct Limits {
    spec: ExtractSpec,
    members: Vec<glob::Pattern>,
    archive_size: u64,
    /// What is left of `max_extracted_bytes` for this window.
    window_left: u64,
}

/// An unpacked member.
#[derive(Debug)]
struct Member {
    /// Its checked relative path.
    name: String,
    size: u64,
}

/// Unpack `archive` into `target`, refusing it (with the reason) when it breaks a limit.
fn unpack(
    kind: ArchiveKind,
    name: &str,
    archive: &Path,
    target: &Path,
    limits: &Limits,
) -> std::result::Result<Vec<Member>, String> {
    let budget = Budget::new(limits);
    std::fs::create_dir_all(target).map_err(|e| format!("cannot unpack: {e}"))?;
    let file = File::open(archive).map_err(|e| format!("cannot read it back: {e}"))?;
    let mut out = Vec::new();
    match kind {
        ArchiveKind::Zip => {
            let mut zip = zip::ZipArchive::new(BufReader::new(file))
                .map_err(|e| format!("not a readable zip: {e}"))?;
            if zip.len() as u64 > limits.spec.max_members {
                return Err(too_many(zip.len() as u64, limits));
            }
            for i in 0..zip.len() {
                let mut entry = zip
                    .by_index(i)
                    .map_err(|e| format!("member {i} cannot be read: {e}"))?;
                let raw = entry
                    .name()
                    .map_err(|e| format!("member {i} has no readable name: {e}"))?
                    .into_owned();
                let Some(path) = member_path(&raw)? else {
                    continue;
                };
                if entry.is_dir() || entry.is_symlink() || !limits.wanted(&path) {
                    continue;
                }
                let mut counted = Counting {
                    inner: &mut entry,
                    budget: &budget,
                };
                let size = write_member(&mut counted, target, &path)
                    .map_err(|e| format!("member {raw:?}: {e}"))?;
                out.push(Member { name: path, size });
            }
        }
        ArchiveKind::TarGz => {
            let gz = flate2::read::MultiGzDecoder::new(BufReader::new(file));
            let mut tar = tar::Archive::new(Counting {
                inner: gz,
                budget: &budget,
            });
            let entries = tar
                .entries()
                .map_err(|e| format!("not a readable tar.gz: {e}"))?;
            let mut seen = 0u64;
            for entry in entries {
                let mut entry = entry.map_err(|e| format!("not a readable tar.gz: {e}"))?;
                seen += 1;
                if seen > limits.spec.max_members {
                    return Err(too_many(seen, limits));
                }
                let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                let Some(path) = member_path(&raw)? else {
                    continue;
                };
                // Only regular files: links and devices are never created.
                if !entry.header().entry_type().is_file() || !limits.wanted(&path) {
                    continue;
                }
                // Already charged: the whole decompressed stream goes through `Counting`.
                let size = write_member(&mut entry, target, &path)
                    .map_err(|e| format!("member {raw:?}: {e}"))?;
                out.push(Member { name: path, size });
            }
        }
        ArchiveKind::Gz => {
            let base = name.rsplit('/').next().unwrap_or(name);
            let path = base[..base.len() - 3].to_owned();
            if limits.wanted(&path) {
                let mut gz = Counting {
                    inner: flate2::read::MultiGzDecoder::new(BufReader::new(file)),
                    budget: &budget,
                };
                let size = write_member(&mut gz, target, &path)?;
                out.push(Member { name: path, size });
            }
        }
    }
    Ok(out)
}

fn too_many(n: u64, limits: &Limits) -> String {
    format!(
        "holds {n} or more entries, more than max_members = {}",
        limits.spec.max_members
    )
}

impl Limits {
    fn wanted(&self, path: &str) -> bool {
        self.members.is_empty() || self.members.iter().any(|m| m.matches(path))
    }
}

/// A member's path inside the window folder, or `None` for entries that are skipped
/// (directories, `__MACOSX/` and dot files). A path that would leave the folder is refused.
fn member_path(raw: &str) -> std::result::Result<Option<String>, String> {
    let escapes = || {
        format!("member {raw:?} points outside the folder it unpacks to (a zip-slip path); refused")
    };
    if raw.starts_with(['/', '\\']) || raw.as_bytes().get(1) == Some(&b':') {
        return Err(escapes());
    }
    let mut parts = Vec::new();
    for part in raw.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(escapes()),
            p => parts.push(p),
        }
    }
    if raw.ends_with(['/', '\\'])
        || parts.is_empty()
        || parts[0] == "__MACOSX"
        || parts.iter().any(|p| p.starts_with('.'))
    {
        return Ok(None);
    }
    Ok(Some(parts.join("/")))
}

/// Copy one member to `target/path` (the reader charges the archive's budget).
fn write_member(
    from: &mut impl Read,
    target: &Path,
    path: &str,
) -> std::result::Result<u64, String> {
    let dest = target.join(path);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot unpack: {e}"))?;
    }
    let mut file = File::create(&dest).map_err(|e| format!("cannot unpack: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = from.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])
            .map_err(|e| format!("cannot unpack: {e}"))?;
        size += n as u64;
    }
    Ok(size)
}

/// Bytes unpacked so far from one archive, against its limits.
struct Budget {
    used: std::cell::Cell<u64>,
    /// `max_extracted_bytes` left for the window.
    total: u64,
    max_bytes: u64,
    /// `max_compression_ratio` × the archive's size (at least [`RATIO_FLOOR`]).
    by_ratio: u64,
    ratio: u32,
    archive_size: u64,
}

impl Budget {
    fn new(l: &Limits) -> Self {
        Self {
            used: std::cell::Cell::new(0),
            total: l.window_left,
            max_bytes: l.spec.max_bytes,
            by_ratio: l
                .archive_size
                .saturating_mul(u64::from(l.spec.max_ratio))
                .max(RATIO_FLOOR),
            ratio: l.spec.max_ratio,
            archive_size: l.archive_size,
        }
    }

    fn take(&self, n: usize) -> io::Result<()> {
        let used = self.used.get() + n as u64;
        self.used.set(used);
        if used > self.total {
            return Err(io::Error::other(format!(
                "unpacks to more than max_extracted_bytes = {} for the window; refused",
                self.max_bytes
            )));
        }
        if used > self.by_ratio {
            return Err(io::Error::other(format!(
                "unpacks to more than {}× its {} bytes (max_compression_ratio = {}): a \
                 decompression bomb?; refused",
                self.ratio, self.archive_size, self.ratio
            )));
        }
        Ok(())
    }
}

/// A reader that charges what it reads to a [`Budget`], failing once it is spent.
struct Counting<'a, R> {
    inner: R,
    budget: &'a Budget,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.budget.take(n)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_stay_inside() {
        assert_eq!(member_path("a/b.csv").unwrap().as_deref(), Some("a/b.csv"));
        assert_eq!(
            member_path("./a//b.csv").unwrap().as_deref(),
            Some("a/b.csv")
        );
        assert_eq!(member_path("a\\b.csv").unwrap().as_deref(), Some("a/b.csv"));
        for skipped in ["dir/", "__MACOSX/._a.csv", ".DS_Store", "a/.hidden"] {
            assert_eq!(member_path(skipped).unwrap(), None, "{skipped}");
        }
        for bad in ["../x", "a/../../x", "/etc/passwd", "C:\\x", "a\\..\\..\\x"] {
            let e = member_path(bad).unwrap_err();
            assert!(e.contains("zip-slip"), "{bad}: {e}");
        }
    }
}
