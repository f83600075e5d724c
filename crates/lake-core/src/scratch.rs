//! Scratch folders: where a run keeps what it fetched before it is landed (an HTTP source's
//! pages, a database extract, an archive's members, a Spark step's code).
//!
//! A folder is removed when its owner drops it, as `tempfile` does; what `tempfile` cannot do
//! is clean up after a process killed with SIGKILL or a crash. So each folder holds a lock file,
//! locked (`flock`) while its owner lives; the kernel releases the lock when the process dies,
//! however it dies. Making a new folder sweeps the system's temporary folder of lake's scratch
//! folders whose lock nobody holds: the next run on the machine removes what a killed one
//! left.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The name every scratch folder starts with.
const PREFIX: &str = "lake-scratch-";
/// The lock file inside each.
const LOCK: &str = ".lake-owner.lock";

/// A scratch folder, removed when dropped (and by the next [`ScratchDir::new`] on the machine
/// after its process was killed).
#[derive(Debug)]
pub struct ScratchDir {
    // Field order: the folder is removed before the lock is released.
    dir: tempfile::TempDir,
    _lock: File,
}

impl ScratchDir {
    /// A new folder in the system's temporary folder, named `lake-scratch-<what>-…`, after
    /// sweeping the abandoned ones.
    pub fn new(what: &str) -> io::Result<Self> {
        Self::new_in(&std::env::temp_dir(), what)
    }

    /// As [`new`](Self::new), in `parent`.
    pub fn new_in(parent: &Path, what: &str) -> io::Result<Self> {
        sweep(parent);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{what}-"))
            .tempdir_in(parent)?;
        let lock = File::create(dir.path().join(LOCK))?;
        lock.lock()?;
        Ok(Self { dir, _lock: lock })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Remove the scratch folders in `parent` whose owner is gone (their lock is free). A folder
/// being made (no lock file yet) or owned is left; errors are ignored (another run may sweep
/// the same folder at once).
pub fn sweep(parent: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(lock) = File::open(path.join(LOCK)) else {
            continue;
        };
        if lock.try_lock().is_ok() && std::fs::remove_dir_all(&path).is_ok() {
            tracing::debug!("removed {}, left by a run that was killed", path.display());
            removed.push(path);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_removed_when_dropped_and_an_abandoned_one_by_the_next() {
        let parent = tempfile::tempdir().unwrap();
        let a = ScratchDir::new_in(parent.path(), "pages").unwrap();
        std::fs::write(a.path().join("p1.json"), "[]").unwrap();
        let a_path = a.path().to_owned();
        assert!(
            a_path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("lake-scratch-pages-")
        );
        // A live owner's folder is not swept.
        let b = ScratchDir::new_in(parent.path(), "extract").unwrap();
        assert!(a_path.exists());
        drop(a);
        assert!(!a_path.exists());

        // What a killed process leaves: the folder and a lock file nobody holds.
        let left = parent.path().join("lake-scratch-extract-killed");
        std::fs::create_dir(&left).unwrap();
        std::fs::write(left.join(LOCK), "").unwrap();
        std::fs::write(left.join("customers-00001.parquet"), "x").unwrap();
        // Not lake's: never touched.
        let other = parent.path().join("someone-else");
        std::fs::create_dir(&other).unwrap();
        let c = ScratchDir::new_in(parent.path(), "extract").unwrap();
        assert!(!left.exists());
        assert!(other.exists() && b.path().exists() && c.path().exists());
    }
}
