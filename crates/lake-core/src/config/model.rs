//! The serde model of `lake.toml`, exactly as written by users.
//!
//! These types mirror the file one to one and reject unknown keys. They are turned into a
//! checked [`Pipeline`](super::Pipeline) by [`validate`](super::validate); nothing runs from
//! the raw model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole `lake.toml` file.
///
/// Top-level tables other than these belong to backends (`[cluster]`, `[spark]`) and to
/// settings kinds (`[aws]`, `[engine]`): each reads its own, and validation reports a table
/// no registered kind owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// `[serve]`: what `lake serve` allows its queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serve: Option<ServeConfig>,
    /// `[schedule]`: when `lake schedule` runs the pipeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleConfig>,
    /// `[notify]`: who hears about a run's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyConfig>,
    /// `[sinks.<name>]`: where committed datasets are loaded after the steps that write them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// `[charts.<name>]`: charts `lake serve` shows on its home page and `lake chart` draws.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub charts: BTreeMap<String, ChartConfig>,
    /// `[catalog]`: the data catalog the published datasets are registered in (Glue), and
    /// Athena for `lake query --engine athena`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogConfig>,
}

/// `[catalog]`: where published datasets become tables. `kind` and `tables` are every
/// catalog's keys; the others are its kind's (read and checked by the registered
/// [`CatalogKind`](crate::catalog::CatalogKind) of that name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogConfig {
    /// The kind of catalog (`glue`).
    pub kind: String,
    /// Which datasets get tables: `zone/glob` patterns; default every trusted and refined one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// The kind's own keys.
    #[serde(flatten)]
    pub options: toml::Table,
}

/// `[charts.<name>]`: a chart of a query's rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartConfig {
    /// One SELECT over the lake's tables (as `lake query` sees them).
    pub sql: String,
    /// `line` (the default), `bar`, `area`, `scatter` or `table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The column along the horizontal axis (not for `table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// The column or columns drawn, one series each (not for `table`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<StringOrList>,
    /// The title (default: the chart's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}

/// `[sinks.<name>]`: a committed dataset loaded somewhere (a database table) after the step
/// that writes it. The keys every sink has are here; the others are its kind's (read and
/// checked by the registered [`SinkKind`](crate::sink::SinkKind) of that name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkConfig {
    /// The kind of sink (`postgres`).
    pub kind: String,
    /// The dataset loaded: `trusted/<dataset>` or `refined/<dataset>`, written by a step.
    pub from: String,
    /// When true, a value whose `${env:…}` variable is not set turns the sink off (it is not
    /// run) instead of failing it; default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
    /// The kind's own keys.
    #[serde(flatten)]
    pub options: toml::Table,
}

/// `[notify]`: when a run's summary is sent, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// `failure`, `success`, `recovered`; default `["failure"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<String>>,
    /// A URL the summary is POSTed to as JSON (Slack-compatible `text`); a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// A command that gets the summary as JSON on stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// How long the command may take (`30s`); killed past it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// `[schedule]`: a cron expression, its time zone and how far back missed ticks are run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Standard 5-field cron, or `@hourly`, `@daily`, `@weekly`.
    pub cron: String,
    /// IANA time zone name; default `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// How far back missed ticks are run (`7d`), or `off` (only the latest); default `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup: Option<String>,
}

/// `[serve]`: the limits of `lake serve`'s queries (the SQL box, charts, dataset pages).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Memory all of its queries share (`1GiB`, the default); past it a query spills or fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_memory: Option<String>,
    /// Queries that run at once (default 2); others wait a moment, then get a 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queries: Option<usize>,
    /// The longest a query runs before it is stopped (`30s`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_timeout: Option<String>,
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
    /// Where steps run: a registered backend's name (`local`, `spark`, `emr`); default: the
    /// program's first (`local`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Steps run at once at most, when their inputs are ready (default 2; 1 runs them one by
    /// one in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel_steps: Option<usize>,
    /// How long a run's lock stays valid without being released (`30m`, `6h`, `1d`); a later run
    /// takes over an expired lock with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_ttl: Option<String>,
    /// How long objects a republish replaced stay for readers that started before it
    /// (`"0s"`, the default: deleted at once; `"1h"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_replaced: Option<String>,
    /// How steps' datasets are kept: `parquet` (the default: folders with lake's manifests) or
    /// a registered format (`iceberg`); a step's `table_format` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_format: Option<String>,
    /// How long a table format keeps a replaced snapshot and its files (`"7d"`, the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_snapshots: Option<String>,
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
    pub backend: Option<String>,
    /// Replaces `lake.lock_ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_ttl: Option<String>,
}

/// `[sources.<name>]`: the keys every source has; the others are its kind's (read and
/// checked by the registered [`SourceKind`](crate::source::SourceKind) of that name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceConfig {
    /// The kind of source (`file`, `http`, `kaggle`, `program`).
    pub kind: String,
    /// The window length: `1d` (default), `7d`, `1mo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The first window's first day (YYYY-MM-DD): where catch-up starts, and the anchor of
    /// the windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// `"content"`: a window whose bytes equal the previous window's is committed empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<String>,
    /// Fetch a window again up to this many times after it failed (beyond an HTTP source's
    /// own `max_attempts` per request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The wait before the first retry, doubling with jitter; `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<String>,
    /// How old the source's landed data may get before it is stale (`26h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<String>,
    /// Unpack fetched `.zip`, `.gz`, `.tar.gz` / `.tgz` archives next to the archive (default:
    /// the kind's; true for `kaggle`, false otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<bool>,
    /// With `extract`: only members matching these globs (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<StringOrList>,
    /// With `extract`: the most bytes a window's archives may unpack to (`"10GiB"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_extracted_bytes: Option<String>,
    /// With `extract`: the largest unpacked size / archive size (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_compression_ratio: Option<u32>,
    /// With `extract`: the most entries an archive may hold (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_members: Option<u64>,
    /// The kind's own keys.
    #[serde(flatten)]
    pub options: toml::Table,
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
    /// What the step reads: zone references (`raw/<source>`, `raw/<source>@date`,
    /// `trusted/<dataset>`, `refined/<dataset>`) or tables with a name and format options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputConfig>,
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
    /// Run a failed step again up to this many times (failures a retry can fix only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The wait before the first retry, doubling (with jitter) for the next ones; `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<String>,
    /// How old the step's output may get before it is stale (`26h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<String>,
    /// Overrides `[lake] table_format` for this step's output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table_format: Option<String>,
    /// `sql`: one SELECT over the inputs (each a table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// `sql`: output columns written as `key=value` folders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partition_by: Vec<String>,
    /// How the output replaces what is there: `overwrite` (default), `append`,
    /// `overwrite_partitions`, `merge`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<WriteMode>,
    /// `merge`: the columns that identify a row.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// `merge`: the column whose largest value wins among rows of one key (in the batch, and
    /// against the stored row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_by: Option<String>,
    /// `merge`: a SQL condition; a batch row that meets it deletes its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_when: Option<String>,
    /// `merge`: two rows of one key and one `order_by` value in a batch are an error
    /// (`"error"`, the default) or one of them wins (`"any"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_tie: Option<String>,
    /// `history`: the names of the columns a version gets (`valid_from`, `valid_to`,
    /// `is_current`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_columns: Option<HistoryColumnsConfig>,
    /// `sql`: conditions every output row must meet; rows that fail are set aside.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect: Vec<String>,
    /// `sql`: the largest share of rejected rows (0.0–1.0) before the step fails; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rejected: Option<f64>,
    /// `spark`: a PySpark script, a path relative to lake.toml or an `s3://` URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    /// `spark`: a JAR, a path relative to lake.toml or an `s3://` URL (with `class`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jar: Option<String>,
    /// `spark`: the JAR's main class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// `spark`: the application's arguments (`{date}`, `{run_id}`, `{output}`, `{root}`
    /// are replaced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// `spark`: `spark-submit` options before the application (`--conf`, `--executor-memory`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spark_args: Vec<String>,
}

/// How a step's output replaces the dataset's current content.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteMode {
    /// The output replaces the whole dataset.
    #[default]
    Overwrite,
    /// The output's files are added to the dataset's.
    Append,
    /// The output replaces only the partitions (folders) it writes; others are kept.
    OverwritePartitions,
    /// The output's rows replace the dataset's rows of the same `key` (the latest by
    /// `order_by` wins), add new keys, and delete the keys of `delete_when` rows; only the files
    /// that hold a touched key are rewritten.
    Merge,
    /// Every version of each `key` is kept (slowly changing dimension, type 2): a changed row
    /// closes the current version and opens a new one, valid from its `order_by` value.
    History,
}

impl std::fmt::Display for WriteMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Overwrite => "overwrite",
            Self::Append => "append",
            Self::OverwritePartitions => "overwrite_partitions",
            Self::Merge => "merge",
            Self::History => "history",
        })
    }
}

/// `history_columns = { valid_from = "…", valid_to = "…", is_current = "…" }`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryColumnsConfig {
    /// When a version starts (its `order_by` value); default `valid_from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    /// When it ended (NULL while current); default `valid_to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<String>,
    /// True for the current version of a key; default `is_current`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_current: Option<String>,
}

/// One entry of `inputs`: `"raw/credit"` or `{ name = "c", path = "raw/credit", … }`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum InputConfig {
    /// A zone reference; the table is named after its last segment.
    Path(String),
    /// A zone reference with a table name and format options.
    Table(InputTable),
}

/// The table form of an input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputTable {
    /// The zone reference (`raw/credit`, `raw/credit@date`, `trusted/credit`).
    pub path: String,
    /// The table name in the step's SQL; default: the last segment of `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `csv`, `ndjson`, `json` (a document of column arrays) or `parquet`; default: from the
    /// file extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// CSV: the first line holds the column names (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<bool>,
    /// CSV: the field delimiter, one character (default `,`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// CSV: values read as null (default `[""]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_values: Option<Vec<String>>,
    /// CSV: infer column types instead of reading every column as text (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infer_types: Option<bool>,
    /// JSON documents: the dotted path of the object of column arrays (`hourly`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
    /// Rename columns to snake_case (default true for raw inputs, false otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snake_case: Option<bool>,
}

impl<'de> Deserialize<'de> for InputConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = InputConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a zone reference such as \"raw/credit\" or a table { path = \"raw/credit\", name = \"c\" }")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(InputConfig::Path(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                InputTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(InputConfig::Table)
            }
        }
        d.deserialize_any(V)
    }
}

/// Kinds of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepKind {
    /// Any program, run as a process (locally) or a command-runner step (EMR).
    Command,
    /// One SQL SELECT over the inputs, written as Parquet (embedded engine or Spark).
    Sql,
    /// A PySpark script or a JAR (`spark-submit` locally or on EMR).
    Spark,
    /// The committed objects of one input copied to the output (object copies locally,
    /// s3-dist-cp on EMR).
    Copy,
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Command => "command",
            Self::Sql => "sql",
            Self::Spark => "spark",
            Self::Copy => "copy",
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
