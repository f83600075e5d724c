//! The serde model of `lake.toml`, exactly as written by users.
//!
//! These types mirror the file one to one and reject unknown keys. They are turned into a
//! checked [`Pipeline`](super::Pipeline) by [`validate`](super::validate); nothing runs from
//! the raw model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole `lake.toml` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeFile {
    /// `[lake]`: the pipeline's name, root and backend.
    pub lake: LakeSection,
    /// `[env.<name>]`: overrides of `[lake]` keys selected with `lake --env <name>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvSection>,
    /// `[sources.<name>]`: where raw data comes from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, SourceConfig>,
    /// `[steps.<name>]`: what turns zones into zones.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub steps: BTreeMap<String, StepConfig>,
}

/// `[lake]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeSection {
    /// Pipeline name: names the lock, the ledger entries and cluster tags.
    pub name: String,
    /// Where the zones live: a path relative to lake.toml, `file:///abs/path` or `s3://bucket/prefix`.
    #[serde(default = "default_root")]
    pub root: String,
    /// Where steps run: `local` (embedded) or `emr`.
    #[serde(default)]
    pub backend: Backend,
    /// How long a run's lock stays valid without being released (`30m`, `6h`, `1d`); a later run
    /// takes over an expired lock with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_ttl: Option<String>,
}

fn default_root() -> String {
    "lake".to_owned()
}

/// `[env.<name>]`: each key, when set, replaces the `[lake]` key of the same name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvSection {
    /// Replaces `lake.root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Replaces `lake.backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<Backend>,
    /// Replaces `lake.lock_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_ttl: Option<String>,
}

/// Where steps run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// On this machine: command steps as processes (and SQL on the embedded engine).
    #[default]
    Local,
    /// On an AWS EMR cluster.
    Emr,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local => "local",
            Self::Emr => "emr",
        })
    }
}

/// `[sources.<name>]`.
///
/// One flat table for every kind, so a key that does not apply to a kind gets an error with its
/// line rather than a vague "data did not match any variant".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The kind of source.
    pub kind: SourceKind,
    /// `file`: a path or glob, or a list of them, relative to lake.toml.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<StringOrList>,
}

/// Kinds of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Local files matched by paths or globs.
    File,
}

/// `[steps.<name>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// The kind of step.
    pub kind: StepKind,
    /// `command`: the program and its arguments; `{date}`, `{run_id}`, `{output}` and `{root}`
    /// are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Zone references the step reads: `raw/<source>`, `trusted/<dataset>`, `refined/<dataset>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<String>,
    /// The zone reference the step writes: `trusted/<dataset>` or `refined/<dataset>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Steps that must succeed first (steps producing an input are added automatically).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Extra environment variables; values may use `${env:VAR}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Fail the step when it runs longer than this (`90s`, `30m`, `2h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Kinds of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Any program, run as a process (locally) or a command-runner step (EMR).
    Command,
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Command => "command",
        })
    }
}

/// A string or a list of strings (`path = "a.csv"` or `path = ["a.csv", "b/*.csv"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringOrList(pub Vec<String>);

impl Serialize for StringOrList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for StringOrList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringOrList;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringOrList(vec![v.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StringOrList(out))
            }
        }
        d.deserialize_any(V)
    }
}
