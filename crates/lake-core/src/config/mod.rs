//! `lake.toml`: the typed model, its validation, and the checked [`Pipeline`] that runs.
//!
//! Loading is two passes over the same text. serde reads it into [`model::LakeFile`]
//! (`deny_unknown_fields` everywhere), then [`validate`] checks what serde cannot (references,
//! outputs, cycles, names, durations, `${env:…}` templates) and reports **all** problems at once,
//! each with its file, line, column and dotted key, found through a span index of the text.

pub mod model;
mod spans;
mod template;
mod validate;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use model::{LakeFile, StepKind, WriteMode};
pub use template::{
    Redactor, Reference, STEP_VARS, Secret, Template, Value, WINDOW_VARS, is_env_name,
};
pub(crate) use validate::CORE_TABLES;
pub use validate::validate;

use crate::ValueError;
use crate::backend::BackendRef;
use crate::kinds::Kinds;
use crate::{Error, Result};
use spans::SpanIndex;

/// One problem in a `lake.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Dotted key, e.g. `steps.report.depends_on`.
    pub key: String,
    /// What is wrong and, where possible, what to do.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.key,
            self.message
        )
    }
}

/// Every problem found in a `lake.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        let file = self.0.first().map(|d| d.file.display().to_string());
        write!(
            f,
            "{} invalid: {n} problem{}",
            file.as_deref().unwrap_or("lake.toml"),
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.0 {
            write!(f, "\n  {d}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics with positions from the span index.
pub(crate) struct Reporter<'a> {
    file: &'a Path,
    spans: &'a SpanIndex,
    found: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    fn new(file: &'a Path, spans: &'a SpanIndex) -> Self {
        Self {
            file,
            spans,
            found: Vec::new(),
        }
    }

    fn push(&mut self, (line, column): (usize, usize), key: &str, message: String) {
        self.found.push(Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message,
        });
    }

    /// A problem with the value at `key`.
    pub(crate) fn value(&mut self, key: &str, message: impl Into<String>) {
        let pos = self.spans.value_pos(key);
        self.push(pos, key, message.into());
    }

    /// A problem with the key itself (or the table it opens).
    pub(crate) fn key(&mut self, key: &str, message: impl Into<String>) {
        let pos = self.spans.key_pos(key);
        self.push(pos, key, message.into());
    }

    pub(crate) fn line_of(&self, key: &str) -> usize {
        self.spans.key_pos(key).0
    }

    pub(crate) fn line_of_value(&self, key: &str) -> usize {
        self.spans.value_pos(key).0
    }

    fn finish(mut self) -> Result<()> {
        if self.found.is_empty() {
            return Ok(());
        }
        self.found.sort_by_key(|d| (d.line, d.column));
        Err(Error::Config {
            diagnostics: Diagnostics(self.found),
        })
    }
}

/// What a [`BackendKind`](crate::backend::BackendKind) checks its table with: the rest of the
/// pipeline, and a reporter that gives each problem its file, line and column.
pub struct ConfigCx<'r, 'a> {
    r: &'r mut Reporter<'a>,
    text: &'a str,
    /// `lake.name`.
    pub pipeline: &'a str,
    /// The root, when it parsed.
    pub root: Option<&'a Root>,
    /// The checked steps (empty when they had problems).
    pub steps: &'a BTreeMap<String, StepSpec>,
    /// The directory lake.toml's relative paths are resolved against.
    pub base_dir: &'a Path,
    selected: bool,
    backend_key: String,
    /// The plug-in's table (`sinks.<name>`) and the keys core reads there, for [`own`](Self::own).
    at: Option<(String, &'static [&'static str])>,
}

impl<'r, 'a> ConfigCx<'r, 'a> {
    /// The context of a plug-in's table: `at` is its dotted key (`sinks.hourly`, `catalog`),
    /// `shared` the keys core reads there itself (left out of [`own`](Self::own)).
    pub(crate) fn for_table(
        r: &'r mut Reporter<'a>,
        text: &'a str,
        parts: Parts<'a>,
        at: String,
        shared: &'static [&'static str],
    ) -> Self {
        Self {
            r,
            text,
            pipeline: parts.pipeline,
            root: parts.root,
            steps: parts.steps,
            base_dir: parts.base_dir,
            selected: true,
            backend_key: String::new(),
            at: Some((at, shared)),
        }
    }

    /// The dotted key of the plug-in's table (`sinks.hourly`); empty for a backend.
    pub fn at(&self) -> &str {
        self.at.as_ref().map_or("", |(a, _)| a.as_str())
    }

    /// The name of the plug-in's table (`hourly` of `sinks.hourly`).
    pub fn name(&self) -> &str {
        let at = self.at();
        at.rsplit_once('.').map_or(at, |(_, n)| n)
    }

    /// The dotted key of `field` in the plug-in's table (`sinks.hourly.table`).
    pub fn key_of(&self, field: &str) -> String {
        format!("{}.{field}", self.at())
    }

    /// The plug-in's own keys (its table without the keys core reads) as `T`: serde, with
    /// `deny_unknown_fields` as the kind's model says, its errors at their line and column.
    /// `None` when they do not fit (reported).
    pub fn own<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        let (at, shared) = self.at.clone()?;
        let path: Vec<&str> = at.split('.').collect();
        match table_at::<T>(self.text, &path, shared) {
            Ok(t) => t,
            Err(e) => {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                let pos = self.r.spans.line_col(offset);
                let key = self.r.spans.key_at(offset).unwrap_or(&at).to_owned();
                self.r.push(pos, &key, e.message().trim().to_owned());
                None
            }
        }
    }

    /// True when the pipeline runs on this backend (else only its table is checked).
    pub fn selected(&self) -> bool {
        self.selected
    }

    /// The dotted key that chose the backend (`lake.backend`, `env.aws.backend`).
    pub fn backend_key(&self) -> &str {
        &self.backend_key
    }

    /// A problem with the value at the dotted `key`.
    pub fn value(&mut self, key: &str, message: impl Into<String>) {
        self.r.value(key, message);
    }

    /// A problem with the key (or the table it opens) at the dotted `key`.
    pub fn key(&mut self, key: &str, message: impl Into<String>) {
        self.r.key(key, message);
    }

    /// The line of a key.
    pub fn line_of(&self, key: &str) -> usize {
        self.r.line_of(key)
    }

    /// True when the file has this top-level table.
    pub fn has_table(&self, name: &str) -> bool {
        self.r.spans.has_key(name)
    }

    /// The top-level table `name` read as `T` (serde, `deny_unknown_fields` as the backend's
    /// model says); `None` when it is absent, or when it does not fit (reported with its line).
    pub fn table<T: serde::de::DeserializeOwned>(&mut self, name: &str) -> Option<T> {
        match table_of::<T>(self.text, name) {
            Ok(t) => t,
            Err(e) => {
                let offset = e.span().map(|s| s.start).unwrap_or(0);
                let pos = self.r.spans.line_col(offset);
                let key = self.r.spans.key_at(offset).unwrap_or(name).to_owned();
                self.r.push(pos, &key, e.message().trim().to_owned());
                None
            }
        }
    }
}

/// What a plug-in's [`ConfigCx`] sees of the rest of the pipeline.
#[derive(Clone, Copy)]
pub(crate) struct Parts<'a> {
    pub(crate) pipeline: &'a str,
    pub(crate) root: Option<&'a Root>,
    pub(crate) steps: &'a BTreeMap<String, StepSpec>,
    pub(crate) base_dir: &'a Path,
}

/// Deserialize only the table at `path` (`["sinks", "hourly"]`) of `text` without its keys
/// in `skip`, keeping toml's spans in errors (an unknown key is reported at its own line).
fn table_at<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &[&str],
    skip: &[&str],
) -> std::result::Result<Option<T>, toml::de::Error> {
    use serde::de::{DeserializeSeed, IntoDeserializer, MapAccess, Visitor};
    use std::marker::PhantomData;

    /// Finds `path` level by level; at its end, reads `T` from the table without `skip`.
    struct Path<'p, T>(&'p [&'p str], &'p [&'p str], PhantomData<T>);
    impl<'de, T: serde::de::DeserializeOwned> DeserializeSeed<'de> for Path<'_, T> {
        type Value = Option<T>;
        fn deserialize<D: serde::Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de, T: serde::de::DeserializeOwned> Visitor<'de> for Path<'_, T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let Some((first, rest)) = self.0.split_first() else {
                let filtered = Filtered { map, skip: self.1 };
                return T::deserialize(serde::de::value::MapAccessDeserializer::new(filtered))
                    .map(Some);
            };
            let mut found = None;
            while let Some(key) = map.next_key::<String>()? {
                if key == *first {
                    found = map.next_value_seed(Path::<T>(rest, self.1, PhantomData))?;
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }

    /// A table's entries without the keys in `skip`.
    struct Filtered<'p, A> {
        map: A,
        skip: &'p [&'p str],
    }
    /// A key read once: kept (as the inner seed's value) or skipped (the seed handed back).
    enum Read<V, K> {
        Kept(V),
        Skipped(K),
    }
    /// Reads a key as text, then hands it to `seed` unless it is skipped: inside toml's own
    /// key read, so an error names the key's span.
    struct KeySeed<'p, K>(K, &'p [&'p str]);
    impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<'_, K> {
        type Value = Read<K::Value, K>;
        fn deserialize<D: serde::Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            let key = <String as serde::Deserialize>::deserialize(d)?;
            if self.1.contains(&key.as_str()) {
                return Ok(Read::Skipped(self.0));
            }
            self.0.deserialize(key.into_deserializer()).map(Read::Kept)
        }
    }
    impl<'de, A: MapAccess<'de>> MapAccess<'de> for Filtered<'_, A> {
        type Error = A::Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> std::result::Result<Option<K::Value>, A::Error> {
            // A skipped key's value is read past, and its seed serves the next key.
            let mut seed = seed;
            loop {
                match self.map.next_key_seed(KeySeed(seed, self.skip))? {
                    None => return Ok(None),
                    Some(Read::Kept(v)) => return Ok(Some(v)),
                    Some(Read::Skipped(k)) => {
                        self.map.next_value::<serde::de::IgnoredAny>()?;
                        seed = k;
                    }
                }
            }
        }
        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> std::result::Result<V::Value, A::Error> {
            self.map.next_value_seed(seed)
        }
    }
    Path::<T>(path, skip, PhantomData).deserialize(toml::Deserializer::parse(text)?)
}

/// Deserialize only the top-level table `name` of `text`, keeping toml's spans in errors.
fn table_of<T: serde::de::DeserializeOwned>(
    text: &str,
    name: &str,
) -> std::result::Result<Option<T>, toml::de::Error> {
    struct Seed<'n, T>(&'n str, std::marker::PhantomData<T>);
    impl<'de, T: serde::de::DeserializeOwned> serde::de::DeserializeSeed<'de> for Seed<'_, T> {
        type Value = Option<T>;
        fn deserialize<D: serde::Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de, T: serde::de::DeserializeOwned> serde::de::Visitor<'de> for Seed<'_, T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a TOML document")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<String>()? {
                if key == self.0 {
                    found = Some(map.next_value::<T>()?);
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    use serde::de::DeserializeSeed;
    Seed::<T>(name, std::marker::PhantomData).deserialize(toml::Deserializer::parse(text)?)
}

/// A `lake.toml` read from disk, not yet validated.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// The file's path as given.
    pub path: PathBuf,
    /// The directory relative paths are resolved against.
    pub base_dir: PathBuf,
    /// The parsed model.
    pub model: LakeFile,
    text: String,
}

impl ConfigFile {
    /// Read and parse `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        // A lake.toml that is missing or not text is a configuration error (exit 2), named.
        let bytes = std::fs::read(path).map_err(|source| Error::Invalid {
            what: path.display().to_string(),
            message: format!("cannot read the pipeline file: {source}"),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
            let column =
                valid.len() - valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) + 1;
            Error::Config {
                diagnostics: Diagnostics(vec![Diagnostic {
                    file: path.to_owned(),
                    line,
                    column,
                    key: "(file)".into(),
                    message: "not valid UTF-8: lake.toml is a UTF-8 text file".into(),
                }]),
            }
        })?;
        let base_dir = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(path, base_dir, text)
    }

    /// Parse `text` as if read from `path`, with relative paths resolved against `base_dir`.
    pub fn parse(path: impl Into<PathBuf>, base_dir: PathBuf, text: String) -> Result<Self> {
        let path = path.into();
        let model: LakeFile = toml::from_str(&text).map_err(|e| {
            let spans = SpanIndex::new(&text);
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            let (line, column) = spans.line_col(offset);
            let key = spans.key_at(offset).unwrap_or("(file)").to_owned();
            Error::Config {
                diagnostics: Diagnostics(vec![Diagnostic {
                    file: path.clone(),
                    line,
                    column,
                    key,
                    message: e.message().trim().to_owned(),
                }]),
            }
        })?;
        Ok(Self {
            path,
            base_dir,
            model,
            text,
        })
    }

    /// Validate the file with the `[env.<name>]` overrides of `env` applied, for a program
    /// offering `backends`.
    pub fn pipeline(&self, env: Option<&str>, backends: &Kinds) -> Result<Pipeline> {
        validate(self, env, backends)
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

/// Where the zones live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Root {
    /// A local directory (absolute).
    Local {
        /// The directory.
        path: PathBuf,
    },
    /// An S3 bucket and key prefix (no leading or trailing `/`).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix, possibly empty.
        prefix: String,
    },
}

impl Root {
    /// Parse a `root` value, resolving relative paths against `base_dir`.
    pub fn parse(raw: &str, base_dir: &Path) -> std::result::Result<Self, ValueError> {
        if let Some(rest) = raw.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{raw:?} has no bucket: expected s3://bucket/prefix").into());
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if let Some(rest) = raw.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return Err(
                    format!("{raw:?}: a file:// root must be absolute (file:///abs/path)").into(),
                );
            }
            return Ok(Self::Local { path: rest.into() });
        }
        if raw.contains("://") {
            return Err(format!(
                "{raw:?}: unsupported scheme; use a path, file:///abs/path or s3://bucket/prefix"
            )
            .into());
        }
        if raw.is_empty() {
            return Err("root is empty".to_owned().into());
        }
        Ok(Self::Local {
            path: base_dir.join(raw),
        })
    }
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local { path } => write!(f, "{}", path.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// The three zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Zone {
    /// As fetched, byte for byte, append-only.
    Raw,
    /// Typed, validated, deduplicated.
    Trusted,
    /// Ready to query.
    Refined,
}

impl Zone {
    /// The zone's folder name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Trusted => "trusted",
            Self::Refined => "refined",
        }
    }

    /// All zones, in pipeline order.
    pub const ALL: [Zone; 3] = [Zone::Raw, Zone::Trusted, Zone::Refined];
}

/// A reference to a dataset in a zone: `raw/credit`, `trusted/credit`, `refined/report`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZoneRef {
    /// The zone.
    pub zone: Zone,
    /// The source (raw) or dataset name.
    pub name: String,
}

impl ZoneRef {
    /// Parse `zone/name`.
    pub fn parse(raw: &str) -> std::result::Result<Self, ValueError> {
        let (zone, name) = raw.split_once('/').ok_or_else(|| {
            format!("{raw:?} is not a zone reference: expected raw/<source>, trusted/<dataset> or refined/<dataset>")
        })?;
        let zone = match zone {
            "raw" => Zone::Raw,
            "trusted" => Zone::Trusted,
            "refined" => Zone::Refined,
            other => {
                return Err(format!(
                    "{raw:?}: unknown zone {other:?}; the zones are raw, trusted and refined"
                )
                .into());
            }
        };
        if !is_name(name) {
            return Err(format!(
                "{raw:?}: {name:?} is not a valid name (letters, digits, '_' and '-', at most 255 bytes)"
            ).into());
        }
        Ok(Self {
            zone,
            name: name.to_owned(),
        })
    }

    /// The object key prefix of the dataset, relative to the root (`trusted/credit`).
    pub fn prefix(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ZoneRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.zone.as_str(), self.name)
    }
}

impl Serialize for ZoneRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The longest name (a folder name on every filesystem and an S3 key segment).
pub const MAX_NAME: usize = 255;

/// True for names used in keys and tables: `[A-Za-z0-9_-]+`, not starting with `_` or `-`, at
/// most [`MAX_NAME`] bytes.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with(['_', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Parse a size such as `512MiB`, `4GiB`, `2GB`, `64KB` or a plain number of bytes.
pub fn parse_bytes(raw: &str) -> std::result::Result<u64, ValueError> {
    let err = || {
        format!(
            "{raw:?} is not a size: expected a number and KiB, MiB, GiB, KB, MB or GB (\"2GiB\")"
        )
    };
    let t = raw.trim();
    let unit_at = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..unit_at].parse().map_err(|_| err())?;
    let mult: u64 = match t[unit_at..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(err().into()),
    };
    n.checked_mul(mult)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{raw:?}: a size must be positive and below 16 EiB").into())
}

/// Parse a duration such as `90s`, `30m`, `6h` or `1d`.
pub fn parse_duration(raw: &str) -> std::result::Result<Duration, ValueError> {
    let err = || format!("{raw:?} is not a duration: expected a number and s, m, h or d (\"30m\")");
    let unit_at = raw.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let n: u64 = raw[..unit_at].parse().map_err(|_| err())?;
    let secs = match &raw[unit_at..] {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(err().into()),
    };
    if secs == 0 {
        return Err(format!("{raw:?}: a duration must be positive").into());
    }
    Ok(Duration::from_secs(secs))
}

/// A checked, runnable pipeline: every reference resolved, steps in order.
#[derive(Debug, Clone, Serialize)]
pub struct Pipeline {
    /// `lake.name`.
    pub name: String,
    /// The lake.toml it came from.
    pub file: PathBuf,
    /// Relative paths and commands are resolved against this directory.
    pub base_dir: PathBuf,
    /// The `--env` applied, if any.
    pub env: Option<String>,
    /// Where the zones live.
    pub root: Root,
    /// Where steps run: the selected backend's checked config.
    pub backend: BackendRef,
    /// Steps run at once at most (`[lake] max_parallel_steps`).
    pub max_parallel_steps: usize,
    /// Lock validity.
    #[serde(with = "secs")]
    pub lock_ttl: Duration,
    /// How long a dataset's replaced objects stay after a republish (`[lake] retain_replaced`).
    #[serde(with = "secs")]
    pub retain_replaced: Duration,
    /// How long a table format keeps replaced snapshots (`[lake] retain_snapshots`).
    #[serde(with = "secs")]
    pub retain_snapshots: Duration,
    /// Sources by name.
    pub sources: BTreeMap<String, SourceSpec>,
    /// Steps by name.
    pub steps: BTreeMap<String, StepSpec>,
    /// Step names in a deterministic dependency order (ties broken by name).
    pub order: Vec<String>,
    /// `[serve]`, defaults applied.
    pub serve: ServeSpec,
    /// The settings tables registered kinds own (`[aws]`, `[engine]`), checked; read one
    /// with [`settings`](Self::settings).
    pub settings: crate::settings::Settings,
    /// When `lake schedule` runs the pipeline (`[schedule]`).
    pub schedule: Option<crate::schedule::Schedule>,
    /// Who hears about a run's end (`[notify]`).
    pub notify: Option<NotifySpec>,
    /// Where committed datasets are loaded (`[sinks.<name>]`), by name.
    pub sinks: BTreeMap<String, SinkSpec>,
    /// Charts of query results (`[charts.<name>]`), by name.
    pub charts: BTreeMap<String, ChartSpec>,
    /// The data catalog published datasets are registered in (`[catalog]`).
    pub catalog: Option<CatalogSpec>,
    /// The table formats the steps use other than `parquet`, by name, as the program offers
    /// them (a run opens each once).
    #[serde(skip)]
    pub formats: BTreeMap<String, std::sync::Arc<dyn crate::table_format::TableFormatKind>>,
    /// Every reference to a secrets manager in lake.toml (`${aws-secretsmanager:…}`,
    /// `${aws-ssm:…}`), where it is written: read once at the start of a run.
    pub secrets: Vec<SecretUse>,
}

/// A reference to a secrets manager and the first lake.toml key that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretUse {
    /// The reference.
    pub reference: Reference,
    /// The dotted key of the value (`sinks.pg.url`).
    pub key: String,
    /// Its line in lake.toml.
    pub line: usize,
}

/// A checked `[catalog]`: the keys every catalog has, and its kind's checked config.
#[derive(Debug, Clone, Serialize)]
pub struct CatalogSpec {
    /// Its kind (`kind = "…"`).
    pub kind: String,
    /// `zone/glob` patterns of the datasets that get tables.
    pub tables: Vec<String>,
    /// The line of `[catalog]` in lake.toml.
    pub line: usize,
    /// The kind's own keys, checked.
    #[serde(flatten)]
    pub config: crate::catalog::CatalogRef,
}

impl CatalogSpec {
    /// Whether the dataset `zone/name` gets a table. Raw zones and rejected rows never do
    /// (they are not Parquet tables of one schema).
    pub fn includes(&self, zone: Zone, name: &str) -> bool {
        if zone == Zone::Raw || name.starts_with('_') {
            return false;
        }
        let path = format!("{}/{name}", zone.as_str());
        self.tables
            .iter()
            .any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(&path)))
    }

    /// The table name of `zone/name`: `<zone>_<name>`, lowercase with `-` as `_` (Glue and
    /// Athena names), as `lake catalog ddl --dialect athena` names it.
    pub fn table_name(zone: Zone, name: &str) -> String {
        format!("{}_{}", zone.as_str(), name.replace('-', "_")).to_lowercase()
    }
}

/// A checked `[charts.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChartSpec {
    /// The chart's name.
    pub name: String,
    /// Its query: one SELECT (or WITH … SELECT).
    pub sql: String,
    /// How it is drawn.
    pub kind: ChartKind,
    /// The horizontal axis' column (empty for a table).
    pub x: String,
    /// The series' columns (empty for a table).
    pub y: Vec<String>,
    /// The title.
    pub title: String,
    /// The line of `[charts.<name>]` in lake.toml.
    pub line: usize,
}

/// How a chart is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChartKind {
    /// Points joined by lines, one line per series.
    Line,
    /// Bars side by side per x value.
    Bar,
    /// Lines with the area below them filled.
    Area,
    /// Points.
    Scatter,
    /// The rows as a table.
    Table,
}

impl ChartKind {
    /// Its name in lake.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Line => "line",
            Self::Bar => "bar",
            Self::Area => "area",
            Self::Scatter => "scatter",
            Self::Table => "table",
        }
    }
}

/// A checked `[sinks.<name>]`: the keys every sink has, and its kind's checked config.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// The sink's name.
    pub name: String,
    /// Its kind (`kind = "…"`).
    pub kind: String,
    /// The dataset it loads.
    pub from: ZoneRef,
    /// The step that writes `from`: the sink runs after it.
    pub step: String,
    /// Off, rather than failed, while a variable its kind requires is not set.
    pub optional: bool,
    /// The line of `[sinks.<name>]` in lake.toml.
    pub line: usize,
    /// The kind's own keys, checked.
    pub config: crate::sink::SinkRef,
}

impl SinkSpec {
    /// True when the sink is on: not `optional`, or the variables of every value its kind
    /// requires are set in `env`.
    pub fn is_on(&self, env: &dyn Fn(&str) -> Option<String>) -> bool {
        !self.optional
            || self
                .config
                .required()
                .iter()
                .all(|t| t.resolve("", env).is_ok())
    }
}

/// As `lake plan --json` shows it: the shared keys and the kind's, flat.
impl Serialize for SinkSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let own = self.config.json();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("kind", &self.kind)?;
        m.serialize_entry("from", &self.from)?;
        m.serialize_entry("step", &self.step)?;
        for (k, v) in &own {
            m.serialize_entry(k, v)?;
        }
        m.serialize_entry("optional", &self.optional)?;
        m.serialize_entry("line", &self.line)?;
        m.end()
    }
}

/// The text to show of a URL lake.toml gives (a secret): a URL with its password as `***`, a
/// lone reference (`${env:NAME}`, `${aws-ssm:/path}`) as written, anything else as `***`.
pub fn show_url(url: &Template) -> String {
    let raw = url.as_written();
    if raw.contains("://") {
        redact_url(raw)
    } else if url
        .references()
        .next()
        .is_some_and(|r| r.to_string() == raw)
    {
        raw.to_owned()
    } else {
        "***".into()
    }
}

/// A connection URL to show: its password (and the query's `password=`) replaced by `***`.
/// Text that is not a URL is shown as `***` whole, as it may be a key/value string with one.
/// The user information runs from `://` to the last `@` (a password may hold `?`, `/`, `#` or
/// `@` that its writer did not percent-encode).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let (user, after) = match rest.rsplit_once('@') {
        Some((user, after)) => (Some(user), after),
        None => (None, rest),
    };
    let (host, query) = match after.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (after, None),
    };
    let shown = match user {
        Some(u) => match u.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{u}@{host}"),
        },
        None => host.to_owned(),
    };
    let query = query.map(|q| {
        q.split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    });
    match query {
        Some(q) => format!("{scheme}://{shown}?{q}"),
        None => format!("{scheme}://{shown}"),
    }
}

/// A checked `[notify]`.
#[derive(Debug, Clone, Serialize)]
pub struct NotifySpec {
    /// On a failed run.
    pub on_failure: bool,
    /// On a succeeded run.
    pub on_success: bool,
    /// On a succeeded run after a failed one.
    pub on_recovered: bool,
    /// When `lake schedule` finds a dataset older than its `freshness` (once per staleness).
    pub on_stale: bool,
    /// The webhook URL (resolved when a notice is sent; never shown).
    pub webhook: Option<Template>,
    /// The command, run in lake.toml's folder with the summary on stdin.
    pub command: Vec<String>,
    /// How long the command may run before it is killed (`timeout`, default 30 s).
    pub timeout: Duration,
}

/// A checked `[serve]`: what `lake serve` allows its queries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServeSpec {
    /// Bytes all queries share (default 1 GiB).
    pub query_memory: u64,
    /// Queries at once (default 2).
    pub max_queries: usize,
    /// The longest a query runs (default 30 s).
    pub query_timeout: Duration,
}

impl Default for ServeSpec {
    fn default() -> Self {
        Self {
            query_memory: 1 << 30,
            max_queries: 2,
            query_timeout: Duration::from_secs(30),
        }
    }
}

/// A checked `[sources.<name>]`.
#[derive(Debug, Clone, Serialize)]
pub struct SourceSpec {
    /// The name.
    pub name: String,
    /// Its line in lake.toml.
    pub line: usize,
    /// Its kind (`kind = "…"`).
    pub kind: String,
    /// What it fetches: its kind's keys, checked.
    #[serde(flatten)]
    pub config: crate::source::SourceRef,
    /// How long its windows are.
    pub window: crate::source::WindowSize,
    /// The first window's first day, if set.
    pub start: Option<chrono::NaiveDate>,
    /// `dedup = "content"`: skip windows whose bytes repeat the previous window's.
    pub dedup_content: bool,
    /// `extract = true`: unpack fetched archives, within these limits.
    pub extract: Option<ExtractSpec>,
    /// Fetches of a window again after it failed (`retries`).
    pub retries: u32,
    /// The wait before the first retry, doubling with jitter (`retry_delay`).
    #[serde(with = "secs")]
    pub retry_delay: Duration,
    /// How old its dataset may get (`freshness`, in seconds); none: no limit.
    #[serde(default, with = "opt_secs", skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Duration>,
}

/// How fetched archives are unpacked (`extract = true`), and the limits that refuse one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtractSpec {
    /// Member globs to keep; empty: all.
    pub members: Vec<String>,
    /// Most bytes a window's archives may unpack to.
    pub max_bytes: u64,
    /// Largest unpacked size / archive size.
    pub max_ratio: u32,
    /// Most entries in one archive.
    pub max_members: u64,
}

impl ExtractSpec {
    /// Default [`max_bytes`](Self::max_bytes): 10 GiB.
    pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;
    /// Default [`max_ratio`](Self::max_ratio).
    pub const DEFAULT_MAX_RATIO: u32 = 100;
    /// Default [`max_members`](Self::max_members).
    pub const DEFAULT_MAX_MEMBERS: u64 = 10_000;
}

impl Default for ExtractSpec {
    fn default() -> Self {
        Self {
            members: Vec::new(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_ratio: Self::DEFAULT_MAX_RATIO,
            max_members: Self::DEFAULT_MAX_MEMBERS,
        }
    }
}

impl SourceSpec {
    /// The window holding `date`.
    pub fn window_of(&self, date: chrono::NaiveDate) -> crate::source::Window {
        self.window.window_of(date, self.start)
    }
}

/// A checked `[steps.<name>]`.
#[derive(Debug, Clone, Serialize)]
pub struct StepSpec {
    /// The name.
    pub name: String,
    /// The line of its table in lake.toml.
    pub line: usize,
    /// What it runs.
    pub kind: StepSpecKind,
    /// What it reads.
    pub inputs: Vec<StepInput>,
    /// What it writes.
    pub output: Option<ZoneRef>,
    /// Every step that must succeed first: `depends_on` plus the producers of its inputs.
    pub depends_on: BTreeSet<String>,
    /// Extra environment, unresolved (`${env:…}` as written).
    pub env: BTreeMap<String, Template>,
    /// Step timeout.
    #[serde(with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// How the output replaces the dataset.
    pub mode: WriteMode,
    /// With `mode = "merge"`: how rows are matched and which wins.
    pub merge: Option<MergeSpec>,
    /// Retries after a failure a retry can fix (`retries`).
    pub retries: u32,
    /// The wait before the first retry, doubling with jitter (`retry_delay`).
    #[serde(with = "secs")]
    pub retry_delay: Duration,
    /// How old its dataset may get (`freshness`, in seconds); none: no limit.
    #[serde(default, with = "opt_secs", skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Duration>,
    /// How its output is kept (`parquet`, `iceberg`): `table_format`, else `[lake]`'s.
    pub table_format: String,
}

impl StepSpec {
    /// The step's kind name.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            StepSpecKind::Command { .. } => "command",
            StepSpecKind::Sql { .. } => "sql",
            StepSpecKind::Spark { .. } => "spark",
            StepSpecKind::Copy => "copy",
        }
    }
}

/// A checked `mode = "merge"`: how a batch's rows meet the stored rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MergeSpec {
    /// The columns that identify a row (`key`).
    pub key: Vec<String>,
    /// The column whose largest value wins (`order_by`); without it, the batch's row wins
    /// over the stored one, and two batch rows of one key are a tie.
    pub order_by: Option<String>,
    /// A SQL condition: a batch row that meets it deletes its key (`delete_when`).
    pub delete_when: Option<String>,
    /// A tie in a batch is resolved by taking either row (`on_tie = "any"`) instead of failing.
    pub on_tie_any: bool,
    /// With `mode = "history"`: the version columns.
    pub history: Option<HistoryColumns>,
}

/// The version columns of a `mode = "history"` dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HistoryColumns {
    /// When a version starts.
    pub valid_from: String,
    /// When it ended; NULL while current.
    pub valid_to: String,
    /// True for the current version.
    pub is_current: String,
}

/// A checked input of a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepInput {
    /// The table name in the step's SQL.
    pub table: String,
    /// The dataset.
    pub dataset: ZoneRef,
    /// `raw/<source>@date`: only the window of the run's date (else every complete window).
    pub at_date: bool,
    /// How to read its files.
    pub format: InputFormat,
}

impl fmt::Display for StepInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dataset)?;
        if self.at_date {
            f.write_str("@date")?;
        }
        Ok(())
    }
}

/// File formats the engines read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatKind {
    /// Delimited text.
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// One JSON document per file whose object of column arrays becomes rows.
    Json,
    /// Apache Parquet.
    Parquet,
}

impl FormatKind {
    /// Parse a `format` value.
    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw {
            "csv" => Self::Csv,
            "ndjson" | "jsonl" => Self::Ndjson,
            "json" => Self::Json,
            "parquet" => Self::Parquet,
            _ => return None,
        })
    }

    /// The format of a file from its extension (`.csv`, `.tsv`, `.json`, `.jsonl`,
    /// `.ndjson`, `.parquet`); `None` for others.
    pub fn from_extension(key: &str) -> Option<Self> {
        let name = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
        let ext = name.rsplit_once('.')?.1;
        Some(match ext {
            "csv" | "tsv" | "txt" => Self::Csv,
            "json" => Self::Json,
            "jsonl" | "ndjson" => Self::Ndjson,
            "parquet" | "pq" => Self::Parquet,
            _ => return None,
        })
    }

    /// The name used in lake.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
            Self::Json => "json",
            Self::Parquet => "parquet",
        }
    }
}

/// How an input's files are read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InputFormat {
    /// The format; `None`: from the files' extension.
    pub kind: Option<FormatKind>,
    /// CSV: a header line names the columns.
    pub header: bool,
    /// CSV: the field delimiter.
    pub delimiter: u8,
    /// CSV: values read as null.
    pub null_values: Vec<String>,
    /// CSV: infer column types (else every column is text).
    pub infer_types: bool,
    /// JSON documents: dotted path of the object of column arrays; `None`: found automatically.
    pub json_path: Option<String>,
    /// Rename columns to snake_case.
    pub snake_case: bool,
}

impl InputFormat {
    /// The defaults for an input of `zone`: CSV with a header, `,`, `""` as null, text columns;
    /// snake_case column names for raw inputs.
    pub fn defaults(zone: Zone) -> Self {
        Self {
            kind: None,
            header: true,
            delimiter: b',',
            null_values: vec![String::new()],
            infer_types: false,
            json_path: None,
            snake_case: zone == Zone::Raw,
        }
    }
}

/// What a step runs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum StepSpecKind {
    /// A program and its arguments, placeholders unexpanded.
    Command {
        /// argv.
        command: Vec<String>,
    },
    /// One SELECT over the inputs, written as Parquet.
    Sql {
        /// The query.
        sql: String,
        /// The line of the `sql` key in lake.toml (for error messages).
        #[serde(skip)]
        sql_line: usize,
        /// Output columns written as `key=value` folders.
        partition_by: Vec<String>,
        /// Row conditions; failing rows are set aside.
        expect: Vec<Expectation>,
        /// The largest share of rejected rows before the step fails.
        max_rejected: f64,
    },
    /// A Spark application.
    Spark {
        /// The script or JAR.
        app: SparkApp,
        /// Application arguments, placeholders unexpanded.
        args: Vec<String>,
        /// `spark-submit` options.
        spark_args: Vec<String>,
    },
    /// The committed objects of the one input, copied to the output.
    Copy,
}

/// What a `spark` step submits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum SparkApp {
    /// A PySpark script: an absolute local path or an `s3://` URL.
    Script(String),
    /// A JAR (absolute local path or `s3://` URL) and its main class.
    Jar {
        /// The JAR.
        path: String,
        /// The main class.
        class: Option<String>,
    },
}

impl SparkApp {
    /// The script or JAR.
    pub fn path(&self) -> &str {
        match self {
            Self::Script(p) | Self::Jar { path: p, .. } => p,
        }
    }
}

/// One `expect` condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Expectation {
    /// The SQL condition as written.
    pub condition: String,
    /// Its line in lake.toml.
    #[serde(skip)]
    pub line: usize,
}

impl Pipeline {
    /// The checked settings table `table` (`[aws]`) as `T`: the owning crate's type, or
    /// another crate's narrower view of the keys it needs. `None` when this program registers
    /// no kind for the table.
    pub fn settings<T: serde::de::DeserializeOwned>(&self, table: &str) -> Option<T> {
        self.settings.get(table)
    }

    /// The sources that the given steps read, by name.
    pub fn sources_read_by<'a>(
        &self,
        steps: impl IntoIterator<Item = &'a str>,
    ) -> BTreeSet<String> {
        steps
            .into_iter()
            .filter_map(|s| self.steps.get(s))
            .flat_map(|s| s.inputs.iter())
            .filter(|i| i.dataset.zone == Zone::Raw)
            .map(|i| i.dataset.name.clone())
            .collect()
    }
}

pub mod secs {
    //! Serialise a `Duration` as whole seconds (`#[serde(with = "secs")]`).

    /// Whole seconds.
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    /// Whole seconds, as written by [`serialize`].
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<std::time::Duration, D::Error> {
        <u64 as serde::Deserialize>::deserialize(d).map(std::time::Duration::from_secs)
    }
}

pub mod opt_secs {
    //! Serialise an `Option<Duration>` as whole seconds or null.

    /// Whole seconds, or null.
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
}
