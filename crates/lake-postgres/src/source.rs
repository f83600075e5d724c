//! `[sources.<name>] kind = "postgres"`: the PostgreSQL driver of a [SQL source](crate::sql):
//! rows streamed with binary COPY inside one REPEATABLE READ snapshot (times in UTC), typed
//! exactly where Parquet can hold the type.

use async_trait::async_trait;
use futures::StreamExt;
use lake_core::Result;
use lake_local::spool::ParquetSpool;
use tokio_postgres::binary_copy::BinaryCopyOutStream;

use crate::config::TableName;
use crate::connect::{Connection, connect_to};
use crate::error::PgError;
use crate::extract::Extract;
use crate::sql::{SqlCx, SqlDriver};

/// PostgreSQL as a SQL source's server: the `postgres` source kind is
/// `SqlSourceKind::new(PostgresDriver)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresDriver;

impl PostgresDriver {
    async fn connect(&self, cx: &SqlCx<'_>) -> Result<Connection> {
        let env = std::sync::Arc::clone(cx.env);
        connect_to(&cx.url_key(), cx.url, &move |v| env(v), &|e| {
            cx.failed("connecting", e)
        })
        .await
        .map(|(c, _)| c)
    }
}

#[async_trait]
impl SqlDriver for PostgresDriver {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn quote_table(&self, table: &TableName) -> String {
        crate::quoted(table)
    }

    fn quote_column(&self, column: &str) -> String {
        format!("\"{}\"", column.replace('"', "\"\""))
    }

    async fn extract(&self, cx: &SqlCx<'_>, select: &str) -> Result<ParquetSpool> {
        let conn = self.connect(cx).await?;
        let fail =
            |e: tokio_postgres::Error| cx.failed("extracting", PgError::server(&e, "the server"));
        let bad = |m: String| cx.failed("extracting", PgError::Extract(m));
        let io = |e: std::io::Error| cx.failed("extracting", PgError::Extract(e.to_string()));
        conn.client
            .batch_execute(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL TIME ZONE 'UTC'",
            )
            .await
            .map_err(fail)?;
        let statement = conn.client.prepare(select).await.map_err(fail)?;
        let mut extract = Extract::new(statement.columns()).map_err(bad)?;
        let mut spool = cx.spool("postgres", extract.schema())?;
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
            if let Some(batch) = extract.push(&row).map_err(bad)? {
                spool.write(&batch).map_err(io)?;
            }
        }
        conn.client.batch_execute("COMMIT").await.map_err(fail)?;
        let last = extract.batch().map_err(bad)?;
        if last.num_rows() > 0 {
            spool.write(&last).map_err(io)?;
        }
        Ok(spool)
    }

    async fn check(&self, cx: &SqlCx<'_>, select: &str) -> Result<()> {
        let conn = self.connect(cx).await?;
        conn.client
            .prepare(&format!("SELECT * FROM ({select}) AS lake_check LIMIT 0"))
            .await
            .map_err(|e| cx.failed("checking the query", PgError::server(&e, "the server")))?;
        Ok(())
    }
}
