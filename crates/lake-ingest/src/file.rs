//! `kind = "file"`: local files by path or glob.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use lake_core::source::{Source, SourceObject, Window};
use lake_core::zone::ByteStream;
use lake_core::{Error, Result};
use tokio_util::io::ReaderStream;

/// Files matched by paths or glob patterns. Every window gets the files as they are when it
/// is fetched; each lands under its file name.
#[derive(Debug, Clone)]
pub struct FileSource {
    name: String,
    patterns: Vec<String>,
    follow_symlinks: bool,
}

impl FileSource {
    /// A source named `name` reading the files that `patterns` (absolute paths or globs) match.
    /// A match that is a symbolic link to a file outside its pattern's folder is refused.
    pub fn new(name: impl Into<String>, patterns: Vec<String>) -> Self {
        Self {
            name: name.into(),
            patterns,
            follow_symlinks: false,
        }
    }

    /// Land links that lead outside their pattern's folder too (`follow_symlinks = true`).
    pub fn follow_symlinks(mut self, follow: bool) -> Self {
        self.follow_symlinks = follow;
        self
    }

    /// The folder a pattern names: its path up to the first component with a wildcard (for a
    /// plain path, its parent).
    fn folder_of(pattern: &str) -> PathBuf {
        let path = std::path::Path::new(pattern);
        let mut folder = PathBuf::new();
        for c in path.components() {
            if c.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
                return folder;
            }
            folder.push(c);
        }
        path.parent().map(PathBuf::from).unwrap_or_default()
    }

    /// Refuse `path` when what it leads to is outside `folder`: the match itself a link, or
    /// a folder on its way (`data/sub -> /etc` under `data/**`). Compared canonically (links
    /// and `..` resolved on both sides), so the pattern's own folder may be a link.
    fn check_link(&self, path: &std::path::Path, folder: &std::path::Path) -> Result<()> {
        if self.follow_symlinks {
            return Ok(());
        }
        let target = std::fs::canonicalize(path).map_err(|e| {
            self.err(
                format!("cannot resolve {}", path.display()),
                Some(Box::new(e)),
            )
        })?;
        let folder = std::fs::canonicalize(folder).unwrap_or_else(|_| folder.to_owned());
        if target.starts_with(&folder) {
            return Ok(());
        }
        Err(self.err(
            format!(
                "{} is a link to {}, outside {}: refused (set follow_symlinks = true to land it)",
                path.display(),
                target.display(),
                folder.display()
            ),
            None,
        ))
    }

    fn err(&self, message: String, source: Option<lake_core::BoxError>) -> Error {
        Error::Source {
            source_name: self.name.clone(),
            message,
            source,
        }
    }

    fn matches(&self) -> Result<BTreeMap<String, PathBuf>> {
        let mut found: BTreeMap<String, PathBuf> = BTreeMap::new();
        for pattern in &self.patterns {
            let paths = glob::glob(pattern).map_err(|e| {
                self.err(
                    format!("{pattern:?} is not a valid glob"),
                    Some(Box::new(e)),
                )
            })?;
            let mut any = false;
            for entry in paths {
                let path = entry.map_err(|e| {
                    self.err(
                        format!("cannot read a match of {pattern:?}"),
                        Some(Box::new(e)),
                    )
                })?;
                if !path.is_file() {
                    continue;
                }
                self.check_link(&path, &Self::folder_of(pattern))?;
                any = true;
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if let Some(other) = found.get(&name)
                    && other != &path
                {
                    return Err(self.err(
                        format!(
                            "{} and {} would both land as {name:?}; rename one",
                            other.display(),
                            path.display()
                        ),
                        None,
                    ));
                }
                found.insert(name, path);
            }
            if !any {
                return Err(self.err(format!("no file matches {pattern:?}"), None));
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn objects(&self, _window: &Window) -> Result<Vec<SourceObject>> {
        let this = self.clone();
        let found = tokio::task::spawn_blocking(move || this.matches())
            .await
            .map_err(|e| self.err("listing files failed".into(), Some(Box::new(e))))??;
        Ok(found
            .into_iter()
            .map(|(name, path)| SourceObject {
                size: std::fs::metadata(&path).ok().map(|m| m.len()),
                content_type: None,
                origin: path.display().to_string(),
                name,
            })
            .collect())
    }

    fn local_file(&self, _window: &Window, object: &SourceObject) -> Option<PathBuf> {
        Some(PathBuf::from(&object.origin))
    }

    async fn open(&self, _window: &Window, object: &SourceObject) -> Result<ByteStream> {
        let path = PathBuf::from(&object.origin);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.err(format!("cannot open {}", path.display()), Some(Box::new(e))))?;
        let name = self.name.clone();
        Ok(ReaderStream::with_capacity(file, 256 * 1024)
            .map_err(move |e| Error::Source {
                source_name: name.clone(),
                message: format!("reading {} failed", path.display()),
                source: Some(Box::new(e)),
            })
            .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lake_core::publish::{Landed, land};
    use lake_core::{ZoneStore, ZoneStoreExt};
    use lake_local::LocalZoneStore;

    #[tokio::test]
    async fn lands_files_byte_for_byte_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/a.csv"), "x,y\n1,2\n").unwrap();
        std::fs::write(dir.path().join("data/b.csv"), "x,y\n3,4\n").unwrap();
        std::fs::write(dir.path().join("data/skip.txt"), "no").unwrap();
        let src = FileSource::new(
            "s",
            vec![dir.path().join("data/*.csv").display().to_string()],
        );
        let store = LocalZoneStore::memory();
        let date = lake_core::chrono::NaiveDate::from_ymd_opt(2024, 1, 31).unwrap();
        let w = Window::day(date);
        let Landed::Fetched(m) = land(&store, &src, &w, "r1").await.unwrap() else {
            panic!("expected a fetch")
        };
        let keys: Vec<&str> = m.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "raw/s/ingest_date=2024-01-31/a.csv",
                "raw/s/ingest_date=2024-01-31/b.csv"
            ]
        );
        let k = lake_core::zone::Key::new("raw/s/ingest_date=2024-01-31/b.csv").unwrap();
        assert_eq!(store.get_bytes(&k).await.unwrap(), "x,y\n3,4\n");
        // A second landing of the same window fetches nothing, even if the files changed.
        std::fs::write(dir.path().join("data/b.csv"), "changed").unwrap();
        assert!(
            matches!(land(&store, &src, &w, "r2").await.unwrap(), Landed::AlreadyComplete(m2) if m2.run_id == "r1")
        );
        assert_eq!(store.get_bytes(&k).await.unwrap(), "x,y\n3,4\n");
    }

    #[tokio::test]
    async fn no_match_is_an_error_naming_the_source() {
        let src = FileSource::new("credit", vec!["/nonexistent/*.csv".into()]);
        let err = src
            .objects(&Window::day(lake_core::chrono::NaiveDate::MIN))
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("source \"credit\": no file matches"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_link_out_of_the_patterns_folder_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/a.csv"), "x\n1\n").unwrap();
        std::fs::write(outside.path().join("secret.csv"), "root:x:0:0\n").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.csv"),
            dir.path().join("data/zz_link.csv"),
        )
        .unwrap();
        // A link inside the folder is fine.
        std::os::unix::fs::symlink(dir.path().join("data/a.csv"), dir.path().join("data/b.csv"))
            .unwrap();
        let pattern = vec![dir.path().join("data/*.csv").display().to_string()];
        let w = Window::day(lake_core::chrono::NaiveDate::from_ymd_opt(2024, 1, 31).unwrap());
        let err = FileSource::new("s", pattern.clone())
            .objects(&w)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("zz_link.csv is a link to"), "{err}");
        assert!(err.contains("follow_symlinks = true"), "{err}");
        let store = LocalZoneStore::memory();
        assert!(
            land(&store, &FileSource::new("s", pattern.clone()), &w, "r1")
                .await
                .is_err()
        );
        assert!(
            store.list("raw").await.unwrap().is_empty(),
            "nothing landed"
        );
        let names: Vec<String> = FileSource::new("s", pattern)
            .follow_symlinks(true)
            .objects(&w)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["a.csv", "b.csv", "zz_link.csv"]);
    }

    #[tokio::test]
    async fn a_linked_folder_under_the_pattern_is_refused_too() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/a.csv"), "x\n1\n").unwrap();
        std::fs::write(outside.path().join("passwd"), "root:x:0:0\n").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("data/sub")).unwrap();
        let w = Window::day(lake_core::chrono::NaiveDate::from_ymd_opt(2024, 1, 31).unwrap());
        for pattern in ["data/*/*", "data/*/passwd"] {
            let p = vec![dir.path().join(pattern).display().to_string()];
            let err = FileSource::new("s", p)
                .objects(&w)
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("outside") && err.contains("refused"),
                "{pattern}: {err}"
            );
        }
        // The pattern's own folder may be a link: what it names is inside it.
        std::os::unix::fs::symlink(dir.path().join("data"), dir.path().join("linked")).unwrap();
        let p = vec![dir.path().join("linked/*.csv").display().to_string()];
        let names: Vec<String> = FileSource::new("s", p)
            .objects(&w)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["a.csv"]);
    }
}
