//! SQL sources: a table or a query of a database server extracted as Parquet into raw, split
//! into files of `max_file_rows`, optionally only the rows whose cursor falls in the window.
//!
//! Everything that is the same for every server is here: the keys (`url`, `table` or `query`,
//! `cursor`, `max_file_rows`), the window's SELECT, the files, landing each window once, the
//! plan and the doctor check. What differs is a [`SqlDriver`]: how to connect, how to read one
//! consistent snapshot of rows as Arrow, how names are quoted. PostgreSQL is one
//! ([`PostgresDriver`](crate::PostgresDriver)); a MySQL kind is a driver and one registration
//! line, `SqlSourceKind::new(MysqlDriver)`.
//!
//! The extract is made by `objects` into local files (so a window's files are complete
//! before any lands, and the snapshot is short), which `open` streams and `finish` removes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use lake_core::backend::BackendEnv;
use lake_core::config::{ConfigCx, SourceSpec, Template, Value as TemplateValue};
use lake_core::doctor::Check;
use lake_core::run::EnvLookup;
use lake_core::source::{Source, SourceConfig, SourceKind, SourceObject, Window};
use lake_core::zone::ByteStream;
use lake_core::{Cause, Classify, Error, Result};
use lake_local::engine::datafusion::arrow::datatypes::SchemaRef;
use lake_local::spool::ParquetSpool;
use serde::Deserialize;

use crate::config::TableName;

/// What differs between database servers for a SQL source.
#[async_trait]
pub trait SqlDriver: std::fmt::Debug + Send + Sync + 'static {
    /// The kind's name (`postgres`), as lake.toml's `kind` and in messages.
    fn kind(&self) -> &'static str;

    /// `schema.table`, quoted for this server's SQL.
    fn quote_table(&self, table: &TableName) -> String;

    /// A column name, quoted.
    fn quote_column(&self, column: &str) -> String;

    /// Connect as `cx` says and write the rows of `select`, read in one consistent snapshot,
    /// into the spool [`SqlCx::spool`] makes for their schema; its errors come from
    /// [`SqlCx::failed`].
    async fn extract(&self, cx: &SqlCx<'_>, select: &str) -> Result<ParquetSpool>;

    /// Connect and check that `select` may run, reading no row (`lake doctor`).
    async fn check(&self, cx: &SqlCx<'_>, select: &str) -> Result<()>;
}

/// What a driver gets for one extract: where to connect, and how its errors and files are made.
pub struct SqlCx<'a> {
    /// The source's name.
    pub source: &'a str,
    /// The URL (a template: its secrets resolved with `env`, never shown).
    pub url: &'a Template,
    /// Resolves `${env:…}`.
    pub env: &'a EnvLookup,
    max_file_rows: u64,
}

impl SqlCx<'_> {
    /// The lake.toml key of the URL (`sources.<name>.url`), for messages.
    pub fn url_key(&self) -> String {
        format!("sources.{}.url", self.source)
    }

    /// The source's error while `doing` something (`connecting`, `extracting`), caused by the
    /// driver's classified error.
    pub fn failed(&self, doing: &str, e: impl Classify) -> Error {
        Error::Source {
            source_name: self.source.to_owned(),
            message: doing.to_owned(),
            source: Some(Box::new(Cause::new(e))),
        }
    }

    /// The spool of the extract's rows: files `<source>-00001.parquet`… of `max_file_rows`.
    pub fn spool(&self, what: &str, schema: SchemaRef) -> Result<ParquetSpool> {
        ParquetSpool::new(what, self.source, schema, self.max_file_rows).map_err(|e| {
            Error::Source {
                source_name: self.source.to_owned(),
                message: "cannot write the extract".into(),
                source: Some(Box::new(e)),
            }
        })
    }
}

/// A SQL source kind: the shared keys, checked, and its driver. Register it with
/// `Kinds::source(SqlSourceKind::new(driver))`.
#[derive(Debug, Clone)]
pub struct SqlSourceKind(Arc<dyn SqlDriver>);

impl SqlSourceKind {
    /// The kind of `driver`.
    pub fn new(driver: impl SqlDriver) -> Self {
        Self(Arc::new(driver))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Keys {
    url: Option<String>,
    table: Option<String>,
    query: Option<String>,
    cursor: Option<String>,
    max_file_rows: Option<u64>,
}

/// The placeholders a `query` may hold: the window's days, quoted by the user as SQL dates.
const QUERY_VARS: &[&str] = &["start", "end", "end_exclusive", "date"];

impl SourceKind for SqlSourceKind {
    fn name(&self) -> &'static str {
        self.0.kind()
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn SourceConfig>> {
        let k: Keys = cx.own()?;
        let at = cx.at().to_owned();
        let mut ok = true;
        let url = match &k.url {
            None => {
                cx.key(
                    &at,
                    format!(
                        "a {} source needs `url`, e.g. url = \"${{env:SHOP_DB_URL}}\"",
                        self.0.kind()
                    ),
                );
                ok = false;
                None
            }
            Some(u) => Template::parse(u)
                .map_err(|m| {
                    cx.value(&cx.key_of("url"), m);
                    ok = false;
                })
                .ok(),
        };
        let what = match (&k.table, &k.query) {
            (Some(t), None) => match TableName::parse(t) {
                Ok(t) => Some(Extracted::Table(t)),
                Err(m) => {
                    cx.value(&cx.key_of("table"), m);
                    ok = false;
                    None
                }
            },
            (None, Some(q)) => match Template::parse_only(q, QUERY_VARS) {
                Ok(t) if !q.trim().is_empty() => Some(Extracted::Query(t)),
                Ok(_) => {
                    cx.value(&cx.key_of("query"), "an empty query");
                    ok = false;
                    None
                }
                Err(m) => {
                    cx.value(&cx.key_of("query"), m);
                    ok = false;
                    None
                }
            },
            _ => {
                cx.key(
                    &at,
                    format!("a {} source takes `table = \"schema.table\"` or `query = \"SELECT …\"` (one of them)", self.0.kind()),
                );
                ok = false;
                None
            }
        };
        if let Some(c) = &k.cursor
            && !is_identifier(c)
        {
            cx.value(
                &cx.key_of("cursor"),
                format!("{c:?} is not a column name (lowercase letters, digits and '_')"),
            );
            ok = false;
        }
        if k.max_file_rows == Some(0) {
            cx.value(
                &cx.key_of("max_file_rows"),
                "max_file_rows must be at least 1",
            );
            ok = false;
        }
        match (url, what) {
            (Some(url), Some(what)) if ok => Some(Arc::new(SqlSourceConfig {
                driver: Arc::clone(&self.0),
                url,
                what,
                cursor: k.cursor,
                max_file_rows: k.max_file_rows.unwrap_or(1_000_000),
            })),
            _ => None,
        }
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

/// What a source extracts.
#[derive(Debug, Clone)]
pub enum Extracted {
    /// Every column of a table.
    Table(TableName),
    /// A query (window placeholders rendered as dates).
    Query(Template),
}

/// A checked SQL source. The URL is a template whose secrets are resolved for a run and never
/// shown.
#[derive(Debug, Clone)]
pub struct SqlSourceConfig {
    /// The server's driver.
    pub driver: Arc<dyn SqlDriver>,
    /// Where to connect.
    pub url: Template,
    /// The table or the query.
    pub what: Extracted,
    /// The column whose value picks the window's rows; `None`: every row each window.
    pub cursor: Option<String>,
    /// Rows per Parquet file.
    pub max_file_rows: u64,
}

impl SqlSourceConfig {
    /// The SELECT a window extracts.
    fn select(&self, window: &Window) -> Result<String> {
        let base = match &self.what {
            Extracted::Table(t) => format!("SELECT * FROM {}", self.driver.quote_table(t)),
            Extracted::Query(q) => {
                let v = q.render(
                    "query",
                    &|n| match n {
                        "end_exclusive" => Some(TemplateValue::Date(window.end)),
                        other => window.value(other),
                    },
                    &|_| None,
                )?;
                v.expose().to_owned()
            }
        };
        Ok(match &self.cursor {
            None => base,
            Some(c) => {
                let c = self.driver.quote_column(c);
                format!(
                    "SELECT * FROM ({base}) AS lake_extract WHERE {c} >= DATE '{}' AND {c} < DATE '{}'",
                    window.start, window.end
                )
            }
        })
    }

    fn what(&self) -> String {
        match &self.what {
            Extracted::Table(t) => t.to_string(),
            Extracted::Query(_) => "its query".into(),
        }
    }
}

#[async_trait]
impl SourceConfig for SqlSourceConfig {
    fn describe(&self, spec: &SourceSpec) -> String {
        let rows = match &self.cursor {
            Some(c) => format!("the rows whose {c} falls in the window"),
            None => "every row".into(),
        };
        // A `${env:…}` reference as written; a literal URL without its password.
        format!(
            "({}, line {}, window {}): {rows} of {} at {} → raw/{}/ingest_date=<date>/{}-NNNNN.parquet",
            self.driver.kind(),
            spec.line,
            spec.window,
            self.what(),
            lake_core::config::show_url(&self.url),
            spec.name,
            spec.name
        )
    }

    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("url".into(), lake_core::config::show_url(&self.url).into());
        match &self.what {
            Extracted::Table(t) => m.insert("table".into(), t.to_string().into()),
            Extracted::Query(q) => m.insert("query".into(), q.as_written().into()),
        };
        if let Some(c) = &self.cursor {
            m.insert("cursor".into(), c.clone().into());
        }
        m.insert("max_file_rows".into(), self.max_file_rows.into());
        m
    }

    async fn open(&self, spec: &SourceSpec, env: &BackendEnv) -> Result<Arc<dyn Source>> {
        Ok(Arc::new(SqlSource::new(
            &spec.name,
            self.clone(),
            env_of(env),
        )))
    }

    async fn doctor(&self, spec: &SourceSpec, env: &BackendEnv) -> Vec<Check> {
        let name = format!(
            "source {}: {} {}",
            spec.name,
            self.driver.kind(),
            self.what()
        );
        let src = SqlSource::new(&spec.name, self.clone(), env_of(env));
        let window = Window::day(lake_core::chrono::Utc::now().date_naive());
        let checked = async {
            let select = self.select(&window)?;
            self.driver.check(&src.cx(), &select).await
        };
        vec![match checked.await {
            Ok(()) => Check::pass(name, "connected; SELECT allowed"),
            Err(e) => Check::fail(
                name,
                lake_core::run::error_chain(&e),
                "check the url (`lake plan` shows it without its secrets) and grant the user SELECT on the table",
            ),
        }]
    }
}

fn env_of(env: &BackendEnv) -> EnvLookup {
    env.extensions
        .get::<EnvLookup>()
        .cloned()
        .unwrap_or_else(|| Arc::new(|v: &str| std::env::var(v).ok()))
}

/// Extracts a window into local Parquet files, then lands them.
pub struct SqlSource {
    name: String,
    config: SqlSourceConfig,
    env: EnvLookup,
    files: Mutex<HashMap<Window, ParquetSpool>>,
}

impl std::fmt::Debug for SqlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSource")
            .field("name", &self.name)
            .field("kind", &self.config.driver.kind())
            .finish_non_exhaustive()
    }
}

impl SqlSource {
    /// The source `name` extracting as `config` says; `env` resolves its `${env:…}` values.
    pub fn new(name: &str, config: SqlSourceConfig, env: EnvLookup) -> Self {
        Self {
            name: name.to_owned(),
            config,
            env,
            files: Mutex::default(),
        }
    }

    fn cx(&self) -> SqlCx<'_> {
        SqlCx {
            source: &self.name,
            url: &self.config.url,
            env: &self.env,
            max_file_rows: self.config.max_file_rows,
        }
    }

    fn err(&self, message: String) -> Error {
        Error::Source {
            source_name: self.name.clone(),
            message,
            source: None,
        }
    }
}

#[async_trait]
impl Source for SqlSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn objects(&self, window: &Window) -> Result<Vec<SourceObject>> {
        let select = self.config.select(window)?;
        let mut spool = self.config.driver.extract(&self.cx(), &select).await?;
        let files = spool.finish().map_err(|e| Error::Source {
            source_name: self.name.clone(),
            message: "cannot write the extract".into(),
            source: Some(Box::new(e)),
        })?;
        let out = files
            .iter()
            .map(|f| SourceObject {
                name: f.name.clone(),
                size: Some(f.size),
                content_type: Some("application/vnd.apache.parquet".into()),
                origin: format!("{} {}", self.config.driver.kind(), self.config.what()),
            })
            .collect();
        self.files
            .lock()
            .expect("files lock")
            .insert(*window, spool);
        Ok(out)
    }

    async fn open(&self, window: &Window, object: &SourceObject) -> Result<ByteStream> {
        let path = self
            .local_file(window, object)
            .ok_or_else(|| self.err(format!("{} was not extracted", object.name)))?;
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.err(format!("cannot open {}: {e}", object.name)))?;
        let name = self.name.clone();
        Ok(
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024)
                .map(move |r| {
                    r.map_err(|e| Error::Source {
                        source_name: name.clone(),
                        message: "reading an extract failed".into(),
                        source: Some(Box::new(e)),
                    })
                })
                .boxed(),
        )
    }

    fn local_file(&self, window: &Window, object: &SourceObject) -> Option<std::path::PathBuf> {
        self.files
            .lock()
            .expect("files lock")
            .get(window)?
            .path_of(&object.name)
    }

    async fn finish(&self, window: &Window) {
        self.files.lock().expect("files lock").remove(window);
    }
}
