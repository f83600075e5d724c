//! # lake-postgres
//!
//! `[sinks.<name>]` with `kind = "postgres"`: a committed dataset loaded into a PostgreSQL
//! table by binary COPY, streamed batch by batch from the zone (memory stays bounded whatever
//! the dataset's size), in one transaction:
//!
//! - `replace` copies into a new table beside the old one and swaps it in, so readers see the
//!   old table or the new one, never a half-loaded one;
//! - `append` copies into the table;
//! - `upsert` copies into a temporary table, then `INSERT … ON CONFLICT (key) DO UPDATE`; from a
//!   dataset a `mode = "merge"` step writes, it then deletes the rows whose key is gone.
//!
//! The same transaction records, in `<schema>._lake_loads`, which committed data the table
//! holds: a rerun with nothing new is skipped, and an append is never done twice. A kill at
//! any point leaves the table as it was. The URL's password is never shown.
//!
//! `[sources.<name>]` with `kind = "postgres"` (`SqlSourceKind::new(PostgresDriver)`, see [`sql`]): a table or a query
//! extracted by binary COPY in one snapshot into Parquet files of raw, optionally only the
//! rows whose cursor column falls in the window.

mod config;
mod connect;
mod error;
mod extract;
mod source;
pub mod sql;
mod types;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use lake_core::config::SinkSpec;
use lake_core::doctor::Check;
use lake_core::run::EnvLookup;
use lake_core::sink::{Sink, SinkLoad, SinkOutcome};
use lake_core::{Error, Result};
use lake_local::Engine;
use lake_local::engine::datafusion::common::TableReference;
use tokio_postgres::Transaction;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use crate::config::Spec;
pub use crate::config::{PostgresConfig, PostgresKind, SinkMode, TableName};
use crate::connect::{connect, explain, sink_error, sink_error_caused, sink_failed};
pub use crate::error::PgError;
pub use crate::source::PostgresDriver;
pub use crate::sql::{Extracted, SqlCx, SqlDriver, SqlSource, SqlSourceConfig, SqlSourceKind};
use crate::types::Column;

/// The table where each schema with a sink's table records what that table holds.
const LOADS: &str = "_lake_loads";

/// A `[sinks.<name>]` of kind `postgres`.
pub struct PostgresSink {
    core: SinkSpec,
    spec: Spec,
    engine: Arc<Engine>,
    env: EnvLookup,
}

impl PostgresSink {
    pub(crate) fn new(core: SinkSpec, spec: Spec, engine: Arc<Engine>, env: EnvLookup) -> Self {
        Self {
            core,
            spec,
            engine,
            env,
        }
    }
}

impl std::fmt::Debug for PostgresSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSink")
            .field("name", &self.spec.name)
            .field("table", &self.spec.table.to_string())
            .finish_non_exhaustive()
    }
}

/// `"schema"."table"`.
pub(crate) fn quoted(t: &TableName) -> String {
    format!("{}.{}", ident(&t.schema), ident(&t.name))
}

/// A quoted identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[async_trait]
impl Sink for PostgresSink {
    fn spec(&self) -> &SinkSpec {
        &self.core
    }

    async fn load(&self, load: &SinkLoad) -> Result<SinkOutcome> {
        let spec = &self.spec;
        let fail = |e: tokio_postgres::Error| {
            sink_failed(
                spec,
                "loading",
                PgError::server(&e, &spec.table.to_string()),
            )
        };
        let fingerprint = lake_core::sink::fingerprint(spec.mode.as_str(), &load.manifest);
        let (mut conn, _) = connect(spec, &*self.env).await?;
        let tx = conn.client.transaction().await.map_err(fail)?;
        // One load of a table at a time, whichever lake runs it.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            &[&format!("lake sink {}", spec.table)],
        )
        .await
        .map_err(fail)?;
        let existing = table_columns(&tx, &spec.table).await.map_err(fail)?;
        if !load.force
            && existing.is_some()
            && held(&tx, &spec.table).await.map_err(fail)?.as_deref() == Some(&*fingerprint)
        {
            return Ok(SinkOutcome::UpToDate);
        }

        // The dataset, streamed from its committed objects; each object read is checked
        // against its manifest before the load commits.
        let ctx = self
            .engine
            .lake_session(std::slice::from_ref(&load.dataset), &BTreeMap::new())
            .await?;
        let query_err = |e: lake_local::engine::datafusion::error::DataFusionError| {
            sink_error_caused(spec, format!("reading {}", spec.from), e)
        };
        let df = ctx
            .table(TableReference::partial(
                load.dataset.zone.as_str(),
                load.dataset.name.as_str(),
            ))
            .await
            .map_err(query_err)?;
        let df = lake_local::engine::portable(df).map_err(query_err)?;
        let check = self.engine.verify(load.dataset.objects.clone());
        let mut columns =
            types::columns(df.schema().as_arrow()).map_err(|m| sink_error(spec, m))?;
        for k in &spec.key {
            if !columns.iter().any(|c| c.name == *k) {
                return Err(sink_error(
                    spec,
                    format!(
                        "key column {k:?} is not in {}: its columns are {}",
                        spec.from,
                        names(&columns)
                    ),
                ));
            }
        }
        if let Some(table) = &existing {
            fit(spec, &mut columns, table)?;
        }

        ensure_schema(&tx, &spec.table.schema).await.map_err(fail)?;
        let table = quoted(&spec.table);
        let target = match (spec.mode, &existing) {
            (SinkMode::Replace, _) => {
                let new = TableName {
                    schema: spec.table.schema.clone(),
                    name: format!("_lake_load_{}", &fingerprint[..12]),
                };
                tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", quoted(&new)))
                    .await
                    .map_err(fail)?;
                create(
                    &tx,
                    &new,
                    &columns,
                    existing.is_some().then_some(&spec.table),
                    &[],
                )
                .await
                .map_err(fail)?;
                quoted(&new)
            }
            (SinkMode::Append, _) | (SinkMode::Upsert, Some(_)) => {
                if existing.is_none() {
                    create(&tx, &spec.table, &columns, None, &[])
                        .await
                        .map_err(fail)?;
                }
                if spec.mode == SinkMode::Upsert {
                    stage(&tx, &spec.table).await.map_err(fail)?
                } else {
                    table.clone()
                }
            }
            (SinkMode::Upsert, None) => {
                create(&tx, &spec.table, &columns, None, &spec.key)
                    .await
                    .map_err(fail)?;
                stage(&tx, &spec.table).await.map_err(fail)?
            }
        };

        let cols = columns
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let sink = tx
            .copy_in(&format!(
                "COPY {target} ({cols}) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(fail)?;
        let types: Vec<Type> = columns.iter().map(|c| c.pg.clone()).collect();
        let writer = BinaryCopyInWriter::new(sink, &types);
        futures::pin_mut!(writer);
        let mut stream = df.execute_stream().await.map_err(query_err)?;
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(query_err)?;
            let encoded = types::encode_batch(&batch, &columns)
                .map_err(|e| sink_error_caused(spec, format!("encoding {}", spec.from), e))?;
            for i in 0..encoded.rows {
                writer
                    .as_mut()
                    .write_raw(encoded.row(i))
                    .await
                    .map_err(fail)?;
            }
        }
        let copied = writer.as_mut().finish().await.map_err(fail)?;
        // Nothing commits from an object that is not what its manifest says.
        check.finish().await?;

        let rows = match spec.mode {
            SinkMode::Replace => {
                tx.batch_execute(&format!(
                    "DROP TABLE IF EXISTS {table}; ALTER TABLE {target} RENAME TO {}",
                    ident(&spec.table.name)
                ))
                .await
                .map_err(fail)?;
                copied
            }
            SinkMode::Append => copied,
            SinkMode::Upsert => {
                let keys = spec.key.iter().map(|k| ident(k)).collect::<Vec<_>>();
                let updates: Vec<String> = columns
                    .iter()
                    .filter(|c| !spec.key.contains(&c.name))
                    .map(|c| format!("{0} = EXCLUDED.{0}", ident(&c.name)))
                    .collect();
                let action = if updates.is_empty() {
                    "NOTHING".to_owned()
                } else {
                    format!("UPDATE SET {}", updates.join(", "))
                };
                let upserted = tx.execute(
                    &format!(
                        "INSERT INTO {table} ({cols}) SELECT {cols} FROM {target} ON CONFLICT ({}) DO {action}",
                        keys.join(", ")
                    ),
                    &[],
                )
                .await
                .map_err(|e| {
                    let mut pg = PgError::server(&e, &spec.table.to_string());
                    if let PgError::Server { message, .. } = &mut pg
                        && e.code() == Some(&tokio_postgres::error::SqlState::INVALID_COLUMN_REFERENCE)
                    {
                        message.push_str(&format!(
                            ": upsert needs a unique index or primary key on ({}) of {}",
                            spec.key.join(", "),
                            spec.table
                        ));
                    }
                    sink_failed(spec, "loading", pg)
                })?;
                // A merged dataset holds each key's current row: a key it no longer holds
                // was deleted by a merge, and goes from the table too.
                if spec.delete_missing {
                    let matched = keys
                        .iter()
                        .map(|k| format!("s.{k} = t.{k}"))
                        .collect::<Vec<_>>()
                        .join(" AND ");
                    tx.execute(
                        &format!(
                            "DELETE FROM {table} t WHERE NOT EXISTS (SELECT 1 FROM {target} s WHERE {matched})"
                        ),
                        &[],
                    )
                    .await
                    .map_err(fail)?;
                }
                upserted
            }
        };
        if let Some(lineage) = &spec.lineage_table {
            write_lineage(&tx, lineage, &spec.name, load)
                .await
                .map_err(fail)?;
        }
        record(&tx, spec, load, &fingerprint, rows)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(SinkOutcome::Loaded {
            rows,
            bytes: load.dataset.objects.iter().map(|o| o.size).sum(),
        })
    }

    async fn doctor(&self) -> Vec<Check> {
        let spec = &self.spec;
        let name = format!("sink {}", spec.name);
        let (conn, config) = match connect(spec, &*self.env).await {
            Ok(c) => c,
            Err(Error::MissingEnv { key, var }) => {
                return vec![Check::fail(
                    name,
                    format!("{key}: environment variable {var} is not set"),
                    format!("export {var}=postgres://user:password@host:5432/database"),
                )];
            }
            Err(e) => {
                return vec![Check::fail(
                    name,
                    e.to_string(),
                    "check the server, the url and the user's password".to_owned(),
                )];
            }
        };
        let target = connect::describe_target(&config);
        let rights = conn
            .client
            .query_one(
                "SELECT n.oid IS NOT NULL,
                        CASE WHEN n.oid IS NULL THEN has_database_privilege(current_database(), 'CREATE')
                             ELSE has_schema_privilege(n.oid, 'CREATE') END,
                        to_regclass($3) IS NOT NULL,
                        CASE WHEN to_regclass($3) IS NULL THEN true
                             ELSE has_table_privilege(to_regclass($3), 'INSERT') END,
                        CASE WHEN to_regclass($3) IS NULL THEN true
                             ELSE pg_has_role((SELECT relowner FROM pg_class WHERE oid = to_regclass($3)), 'USAGE') END
                 FROM (SELECT $1::text AS s) q LEFT JOIN pg_namespace n ON n.nspname = q.s
                 WHERE $2::text IS NOT NULL",
                &[
                    &spec.table.schema,
                    &spec.table.name,
                    &quoted(&spec.table),
                ],
            )
            .await;
        let row = match rights {
            Ok(row) => row,
            Err(e) => {
                return vec![Check::fail(
                    name,
                    explain(&e, &target),
                    "check the user's rights".to_owned(),
                )];
            }
        };
        let (schema_exists, create, table_exists, insert, owner): (bool, bool, bool, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let mut checks = vec![Check::pass(name.clone(), format!("connected to {target}"))];
        let what = format!("sink {} rights on {}", spec.name, spec.table);
        let missing: Vec<String> = [
            (!create).then(|| {
                if schema_exists {
                    format!("GRANT CREATE ON SCHEMA {} TO <user>", spec.table.schema)
                } else {
                    "GRANT CREATE ON DATABASE <database> TO <user>".to_owned()
                }
            }),
            (table_exists && !insert).then(|| format!("GRANT INSERT ON {} TO <user>", spec.table)),
            (table_exists && spec.mode == SinkMode::Replace && !owner).then(|| {
                format!(
                    "ALTER TABLE {} OWNER TO <user> (replace drops and renames the table)",
                    spec.table
                )
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        checks.push(if missing.is_empty() {
            Check::pass(
                what,
                format!(
                    "can create and write the table ({})",
                    if table_exists {
                        "it exists"
                    } else {
                        "it will be created"
                    }
                ),
            )
        } else {
            Check::fail(
                what,
                "the user cannot create or write the table".to_owned(),
                missing.join("; "),
            )
        });
        checks
    }
}

fn names(columns: &[Column]) -> String {
    columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An existing table's columns: name, type and its SQL name (`numeric(10,2)`); `None` when
/// there is no such table.
async fn table_columns(
    tx: &Transaction<'_>,
    table: &TableName,
) -> std::result::Result<Option<Vec<(String, Type, String)>>, tokio_postgres::Error> {
    let rows = tx
        .query(
            "SELECT a.attname::text, a.atttypid, format_type(a.atttypid, a.atttypmod)
             FROM pg_attribute a
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&quoted(table)],
        )
        .await?;
    if rows.is_empty() {
        let exists: bool = tx
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&quoted(table)])
            .await?
            .get(0);
        return Ok(exists.then(Vec::new));
    }
    Ok(Some(
        rows.iter()
            .map(|r| {
                let oid: u32 = r.get(1);
                (
                    r.get(0),
                    Type::from_oid(oid).unwrap_or(Type::UNKNOWN),
                    r.get(2),
                )
            })
            .collect(),
    ))
}

/// Check the dataset's columns against an existing table's, before anything is written: each
/// must be a column of the table, of a type that takes its values. The types COPY sends are
/// the table's.
fn fit(spec: &Spec, columns: &mut [Column], table: &[(String, Type, String)]) -> Result<()> {
    for c in columns.iter_mut() {
        let Some((_, ty, shown)) = table.iter().find(|(n, ..)| *n == c.name) else {
            return Err(sink_error(
                spec,
                format!(
                    "column {:?} of {} ({}) is not in table {}, whose columns are {}: add it (ALTER TABLE … ADD COLUMN) or drop the table",
                    c.name,
                    spec.from,
                    c.ddl,
                    spec.table,
                    table
                        .iter()
                        .map(|(n, ..)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        if !types::fits(&c.source, ty) {
            return Err(sink_error(
                spec,
                format!(
                    "column {:?}: {} has {} ({}), table {} has {shown}, which does not take it: change the column's type or drop the table",
                    c.name, spec.from, c.ddl, c.source, spec.table
                ),
            ));
        }
        c.pg = ty.clone();
    }
    Ok(())
}

async fn ensure_schema(
    tx: &Transaction<'_>,
    schema: &str,
) -> std::result::Result<(), tokio_postgres::Error> {
    // CREATE SCHEMA IF NOT EXISTS needs the right to create even when the schema exists.
    let exists: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await?
        .get(0);
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", ident(schema)))
            .await?;
    }
    Ok(())
}

/// Create `table`: like `like` (its columns, defaults, constraints and indexes), or from the
/// dataset's columns, with `key` as its primary key.
async fn create(
    tx: &Transaction<'_>,
    table: &TableName,
    columns: &[Column],
    like: Option<&TableName>,
    key: &[String],
) -> std::result::Result<(), tokio_postgres::Error> {
    let body = match like {
        Some(old) => format!("LIKE {} INCLUDING ALL", quoted(old)),
        None => {
            let mut defs: Vec<String> = columns
                .iter()
                .map(|c| format!("{} {}", ident(&c.name), c.ddl))
                .collect();
            if !key.is_empty() {
                defs.push(format!(
                    "PRIMARY KEY ({})",
                    key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ")
                ));
            }
            defs.join(", ")
        }
    };
    tx.batch_execute(&format!("CREATE TABLE {} ({body})", quoted(table)))
        .await
}

/// A temporary table shaped like `table`, dropped at commit: where an upsert's rows land first.
async fn stage(
    tx: &Transaction<'_>,
    table: &TableName,
) -> std::result::Result<String, tokio_postgres::Error> {
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE _lake_upsert (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP",
        quoted(table)
    ))
    .await?;
    Ok("_lake_upsert".to_owned())
}

/// The fingerprint of what `table` holds, from its schema's `_lake_loads`.
async fn held(
    tx: &Transaction<'_>,
    table: &TableName,
) -> std::result::Result<Option<String>, tokio_postgres::Error> {
    let loads = TableName {
        schema: table.schema.clone(),
        name: LOADS.into(),
    };
    let present: bool = tx
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&quoted(&loads)])
        .await?
        .get(0);
    if !present {
        return Ok(None);
    }
    Ok(tx
        .query_opt(
            &format!(
                "SELECT fingerprint FROM {} WHERE table_name = $1",
                quoted(&loads)
            ),
            &[&table.name],
        )
        .await?
        .map(|r| r.get(0)))
}

/// Record in the schema's `_lake_loads` what `spec.table` now holds.
async fn record(
    tx: &Transaction<'_>,
    spec: &Spec,
    load: &SinkLoad,
    fingerprint: &str,
    rows: u64,
) -> std::result::Result<(), tokio_postgres::Error> {
    let loads = quoted(&TableName {
        schema: spec.table.schema.clone(),
        name: LOADS.into(),
    });
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {loads} (
            table_name text PRIMARY KEY,
            sink text NOT NULL,
            dataset text NOT NULL,
            fingerprint text NOT NULL,
            run_id text NOT NULL,
            mode text NOT NULL,
            rows bigint NOT NULL,
            loaded_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await?;
    let rows = i64::try_from(rows).unwrap_or(i64::MAX);
    tx.execute(
        &format!(
            "INSERT INTO {loads} (table_name, sink, dataset, fingerprint, run_id, mode, rows)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (table_name) DO UPDATE SET sink = EXCLUDED.sink,
                dataset = EXCLUDED.dataset, fingerprint = EXCLUDED.fingerprint,
                run_id = EXCLUDED.run_id, mode = EXCLUDED.mode, rows = EXCLUDED.rows,
                loaded_at = now()"
        ),
        &[
            &spec.table.name,
            &spec.name,
            &spec.from.to_string(),
            &fingerprint,
            &load.run_id,
            &spec.mode.as_str(),
            &rows,
        ],
    )
    .await?;
    Ok(())
}

/// Append the load's lineage rows (one per step of the run that made the data).
async fn write_lineage(
    tx: &Transaction<'_>,
    table: &TableName,
    sink: &str,
    load: &SinkLoad,
) -> std::result::Result<(), tokio_postgres::Error> {
    ensure_schema(tx, &table.schema).await?;
    let t = quoted(table);
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {t} (
            batch text NOT NULL,
            \"timestamp\" timestamptz NOT NULL,
            step text NOT NULL,
            source text NOT NULL,
            destination text NOT NULL,
            status text NOT NULL,
            sink text NOT NULL,
            loaded_by text NOT NULL)"
    ))
    .await?;
    let insert = tx
        .prepare_typed(
            &format!(
                "INSERT INTO {t} (batch, \"timestamp\", step, source, destination, status, sink, loaded_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ),
            &[
                Type::TEXT,
                Type::TIMESTAMPTZ,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
                Type::TEXT,
            ],
        )
        .await?;
    for row in &load.lineage {
        let status = if row.status == lake_core::ledger::Status::Succeeded {
            "succeeded"
        } else {
            "up_to_date"
        };
        tx.execute(
            &insert,
            &[
                &row.batch,
                &row.timestamp,
                &row.step,
                &row.source,
                &row.destination.as_deref().unwrap_or_default(),
                &status,
                &sink,
                &load.run_id,
            ],
        )
        .await?;
    }
    Ok(())
}
