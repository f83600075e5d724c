//! `[sources.<name>] kind = "postgres"`: a table or a query extracted as Parquet into raw,
//! streamed with binary COPY inside one REPEATABLE READ snapshot, typed exactly where Parquet
//! can hold the type, split into files of `max_file_rows`.
//!
//! The extract is made by `objects` into local files (so a window's files are complete
//! before any lands, and the transaction is short), which `open` streams and `finish` removes.

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
use lake_core::{Error, Result};
use serde::Deserialize;
use tokio_postgres::binary_copy::BinaryCopyOutStream;

use crate::config::TableName;
use crate::connect::{connect_to, explain};
use crate::extract::Extract;

/// The `postgres` source kind: register it with `Kinds::source(PostgresSourceKind)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresSourceKind;

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

impl SourceKind for PostgresSourceKind {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn SourceConfig>> {
        let k: Keys = cx.own()?;
        let at = cx.at().to_owned();
        let mut ok = true;
        let url = match &k.url {
            None => {
                cx.key(
                    &at,
                    "a postgres source needs `url`, e.g. url = \"${env:SHOP_DB_URL}\"",
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
                    "a postgres source takes `table = \"schema.table\"` or `query = \"SELECT …\"` (one of them)",
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
            (Some(url), Some(what)) if ok => Some(Arc::new(PostgresSourceConfig {
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

/// A checked `kind = "postgres"` source. The URL is a template whose secrets are resolved for
/// a run and never shown.
#[derive(Debug, Clone)]
pub struct PostgresSourceConfig {
    /// Where to connect.
    pub url: Template,
    /// The table or the query.
    pub what: Extracted,
    /// The column whose value picks the window's rows; `None`: every row each window.
    pub cursor: Option<String>,
    /// Rows per Parquet file.
    pub max_file_rows: u64,
}

impl PostgresSourceConfig {
    /// The SELECT a window extracts.
    fn select(&self, window: &Window) -> Result<String> {
        let base = match &self.what {
            Extracted::Table(t) => format!("SELECT * FROM {}", crate::quoted(t)),
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
            Some(c) => format!(
                "SELECT * FROM ({base}) AS lake_extract WHERE \"{c}\" >= DATE '{}' AND \"{c}\" < DATE '{}'",
                window.start, window.end
            ),
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
impl SourceConfig for PostgresSourceConfig {
    fn describe(&self, spec: &SourceSpec) -> String {
        let rows = match &self.cursor {
            Some(c) => format!("the rows whose {c} falls in the window"),
            None => "every row".into(),
        };
        // A `${env:…}` reference as written; a literal URL without its password.
        format!(
            "(postgres, line {}, window {}): {rows} of {} at {} → raw/{}/ingest_date=<date>/{}-NNNNN.parquet",
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
        Ok(Arc::new(PostgresSource::new(
            &spec.name,
            self.clone(),
            env_of(env),
        )))
    }

    async fn doctor(&self, spec: &SourceSpec, env: &BackendEnv) -> Vec<Check> {
        let name = format!("source {}: postgres {}", spec.name, self.what());
        let src = PostgresSource::new(&spec.name, self.clone(), env_of(env));
        let window = Window::day(lake_core::chrono::Utc::now().date_naive());
        let checked = async {
            let conn = src.connect().await?;
            let select = self.select(&window)?;
            conn.client
                .prepare(&format!("SELECT * FROM ({select}) AS lake_check LIMIT 0"))
                .await
                .map_err(|e| src.err(explain(&e, "the server")))?;
            Ok::<_, Error>(())
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
pub struct PostgresSource {
    name: String,
    config: PostgresSourceConfig,
    env: EnvLookup,
    files: Mutex<HashMap<Window, Extract>>,
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PostgresSource {
    /// The source `name` extracting as `config` says; `env` resolves its `${env:…}` values.
    pub fn new(name: &str, config: PostgresSourceConfig, env: EnvLookup) -> Self {
        Self {
            name: name.to_owned(),
            config,
            env,
            files: Mutex::default(),
        }
    }

    fn err(&self, message: String) -> Error {
        Error::Source {
            source_name: self.name.clone(),
            message,
            source: None,
        }
    }

    async fn connect(&self) -> Result<crate::connect::Connection> {
        let env = Arc::clone(&self.env);
        connect_to(
            &format!("sources.{}.url", self.name),
            &self.config.url,
            &move |v| env(v),
            &|m| self.err(m),
        )
        .await
        .map(|(c, _)| c)
    }
}

#[async_trait]
impl Source for PostgresSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn objects(&self, window: &Window) -> Result<Vec<SourceObject>> {
        let select = self.config.select(window)?;
        let conn = self.connect().await?;
        let fail = |e: tokio_postgres::Error| self.err(explain(&e, "the server"));
        conn.client
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL TIME ZONE 'UTC'",
            )
            .await
            .map_err(fail)?;
        let statement = conn.client.prepare(&select).await.map_err(fail)?;
        let mut extract = Extract::new(&self.name, statement.columns(), self.config.max_file_rows)
            .map_err(|m| self.err(m))?;
        let types: Vec<_> = statement
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        let copy = conn
            .client
            .copy_out(&format!("COPY ({select}) TO STDOUT (FORMAT binary)"))
            .await
            .map_err(fail)?;
        let rows = BinaryCopyOutStream::new(copy, &types);
        futures::pin_mut!(rows);
        while let Some(row) = rows.next().await {
            let row = row.map_err(fail)?;
            extract.push(&row).map_err(|m| self.err(m))?;
        }
        conn.client.batch_execute("COMMIT").await.map_err(fail)?;
        let objects = extract.finish().map_err(|m| self.err(m))?;
        let out = objects
            .iter()
            .map(|(name, _, size)| SourceObject {
                name: name.clone(),
                size: Some(*size),
                content_type: Some("application/vnd.apache.parquet".into()),
                origin: format!("postgres {}", self.config.what()),
            })
            .collect();
        self.files
            .lock()
            .expect("files lock")
            .insert(*window, extract);
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
