//! `[sinks.<name>] kind = "postgres"`: its keys, checked with their lines.

use std::fmt;

use lake_core::ValueError;
use std::sync::Arc;

use async_trait::async_trait;
use lake_core::Result;
use lake_core::backend::BackendEnv;
use lake_core::config::{ConfigCx, SinkSpec, Template, ZoneRef, show_url};
use lake_core::run::EnvLookup;
use lake_core::sink::{Sink, SinkConfig, SinkKind};
use lake_local::Engine;
use serde::Deserialize;

/// The `postgres` sink kind: register it with `Kinds::sink(PostgresKind)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresKind;

/// The keys of a `postgres` sink, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    /// Where to connect (`postgres://user:pass@host:5432/db?sslmode=require`); a secret.
    url: String,
    /// `schema.table` or `table` (`public`).
    table: String,
    /// `replace` (the default), `append` or `upsert`.
    mode: Option<String>,
    /// With `mode = "upsert"`: the columns that identify a row.
    key: Option<Vec<String>>,
    /// A table that gets one row per step of the run with each load.
    lineage_table: Option<String>,
}

impl SinkKind for PostgresKind {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn SinkConfig>> {
        let keys: Keys = cx.own()?;
        let url = Template::parse(&keys.url)
            .map_err(|m| cx.value(&cx.key_of("url"), m))
            .ok();
        let table = TableName::parse(&keys.table)
            .map_err(|m| cx.value(&cx.key_of("table"), m))
            .ok();
        let mode = match keys.mode.as_deref() {
            None | Some("replace") => SinkMode::Replace,
            Some("append") => SinkMode::Append,
            Some("upsert") => SinkMode::Upsert,
            Some(other) => {
                cx.value(
                    &cx.key_of("mode"),
                    format!("{other:?}: \"replace\", \"append\" or \"upsert\""),
                );
                SinkMode::Replace
            }
        };
        let key = keys.key.unwrap_or_default();
        match (mode, key.is_empty()) {
            (SinkMode::Upsert, true) => {
                let at = cx.at().to_owned();
                cx.key(
                    &at,
                    "mode = \"upsert\" needs `key`: the columns that identify a row, e.g. key = [\"id\"]",
                );
            }
            (SinkMode::Replace | SinkMode::Append, false) => {
                cx.value(&cx.key_of("key"), "`key` applies to mode = \"upsert\" only")
            }
            _ => {}
        }
        let lineage_table = match keys.lineage_table {
            None => Some(None),
            Some(raw) => TableName::parse(&raw)
                .map_err(|m| cx.value(&cx.key_of("lineage_table"), m))
                .ok()
                .map(Some),
        };
        let ok = !(mode == SinkMode::Upsert && key.is_empty());
        match (url, table, lineage_table) {
            (Some(url), Some(table), Some(lineage_table)) if ok => Some(Arc::new(PostgresConfig {
                url,
                table,
                mode,
                key,
                lineage_table,
            })),
            _ => None,
        }
    }
}

/// A checked `postgres` sink.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// Where to connect; resolved when the sink runs, shown only as [`show_url`].
    pub url: Template,
    /// The table.
    pub table: TableName,
    /// How the table gets the rows.
    pub mode: SinkMode,
    /// With [`SinkMode::Upsert`]: the columns that identify a row.
    pub key: Vec<String>,
    /// The table that gets one row per step of the run with each load.
    pub lineage_table: Option<TableName>,
}

#[async_trait]
impl SinkConfig for PostgresConfig {
    fn destination(&self) -> String {
        self.table.to_string()
    }

    fn describe(&self) -> String {
        format!(
            "{} ({}{}) at {}{}",
            self.table,
            self.mode.as_str(),
            if self.key.is_empty() {
                String::new()
            } else {
                format!(" on {}", self.key.join(", "))
            },
            show_url(&self.url),
            self.lineage_table
                .as_ref()
                .map(|t| format!("; lineage → {t}"))
                .unwrap_or_default()
        )
    }

    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("url".into(), show_url(&self.url).into());
        m.insert("table".into(), self.table.to_string().into());
        m.insert("mode".into(), self.mode.as_str().into());
        m.insert("key".into(), self.key.clone().into());
        m.insert(
            "lineage_table".into(),
            self.lineage_table.as_ref().map(ToString::to_string).into(),
        );
        m
    }

    fn exclusive(&self) -> Option<(&'static str, String)> {
        Some(("table", format!("table {}", self.table)))
    }

    fn required(&self) -> Vec<&Template> {
        vec![&self.url]
    }

    async fn open(&self, spec: &SinkSpec, env: &BackendEnv) -> Result<Arc<dyn Sink>> {
        let engine = env
            .extensions
            .get::<Arc<Engine>>()
            .cloned()
            .ok_or_else(|| lake_core::Error::NotImplemented {
                operation: "postgres sinks",
                implementer: "a program that shares lake-local's engine (BackendEnv::extensions)"
                    .into(),
            })?;
        let lookup: EnvLookup = env
            .extensions
            .get::<EnvLookup>()
            .cloned()
            .unwrap_or_else(|| Arc::new(|v: &str| std::env::var(v).ok()));
        Ok(Arc::new(crate::PostgresSink::new(
            spec.clone(),
            Spec::new(spec, self, &env.pipeline),
            engine,
            lookup,
        )))
    }
}

/// A `postgres` sink's keys with its name and dataset: what loading it reads.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub(crate) name: String,
    pub(crate) from: ZoneRef,
    pub(crate) url: Template,
    pub(crate) table: TableName,
    pub(crate) mode: SinkMode,
    pub(crate) key: Vec<String>,
    pub(crate) lineage_table: Option<TableName>,
    /// An upsert also deletes the table's rows whose key the dataset no longer holds: true
    /// when `from` is written by a `mode = "merge"` step (it holds each key's current row).
    pub(crate) delete_missing: bool,
}

impl Spec {
    fn new(spec: &SinkSpec, c: &PostgresConfig, pipeline: &lake_core::config::Pipeline) -> Self {
        let merged = pipeline.steps.values().any(|s| {
            s.output.as_ref() == Some(&spec.from) && s.mode == lake_core::config::WriteMode::Merge
        });
        Self {
            name: spec.name.clone(),
            from: spec.from.clone(),
            url: c.url.clone(),
            table: c.table.clone(),
            mode: c.mode,
            key: c.key.clone(),
            lineage_table: c.lineage_table.clone(),
            delete_missing: c.mode == SinkMode::Upsert && merged,
        }
    }
}

/// How a sink's table gets a dataset's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkMode {
    /// The table becomes the dataset: loaded beside it, swapped in within one transaction.
    Replace,
    /// The rows are added, in one transaction.
    Append,
    /// Rows whose key is in the table are updated, the others added, in one transaction.
    Upsert,
}

impl SinkMode {
    /// Its name in lake.toml.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Append => "append",
            Self::Upsert => "upsert",
        }
    }
}

/// A database table: `schema.name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// The schema (`public` when lake.toml names none).
    pub schema: String,
    /// The table.
    pub name: String,
}

impl TableName {
    /// Parse `schema.table` or `table`: lowercase SQL identifiers (`[a-z_][a-z0-9_]*`, at most
    /// 63 bytes), so the name reads the same quoted and unquoted.
    pub fn parse(raw: &str) -> std::result::Result<Self, ValueError> {
        let ident = |part: &str| {
            let mut chars = part.chars();
            part.len() <= 63
                && chars
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        };
        let (schema, name) = raw.split_once('.').unwrap_or(("public", raw));
        if !ident(schema) || !ident(name) {
            return Err(format!(
                "{raw:?} is not a table name: expected schema.table (or table), each a lowercase SQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes)"
            ).into());
        }
        Ok(Self {
            schema: schema.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}
