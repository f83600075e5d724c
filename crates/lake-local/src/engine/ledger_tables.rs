//! The run ledger as tables under `_lake`: `runs`, `steps`, `objects` and `lineage` (the
//! seeds' `data_flow` table), built from the ledger's run documents when a query names them.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemTable, MemorySchemaProvider, SchemaProvider};
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use lake_core::ledger::RunRecord;
use lake_core::publish::ObjectEntry;
use serde_json::{Value, json};

/// The schema the ledger's tables are registered under.
pub const LEDGER_SCHEMA: &str = "_lake";

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        fields
            .iter()
            .map(|(n, t)| Field::new(*n, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

/// `_lake.runs`, `_lake.steps`, `_lake.objects` and `_lake.lineage` over `runs`, in `ctx`.
pub fn register(ctx: &SessionContext, runs: &[RunRecord]) -> Result<(), DataFusionError> {
    let catalog = ctx
        .catalog("datafusion")
        .ok_or_else(|| DataFusionError::Plan("no default catalog".into()))?;
    let tables = Arc::new(MemorySchemaProvider::new());
    let text = DataType::Utf8;
    let mut run_rows = Vec::new();
    let mut step_rows = Vec::new();
    let mut object_rows = Vec::new();
    let mut lineage_rows = Vec::new();
    for r in runs {
        run_rows.push(json!({
            "run_id": r.run_id, "pipeline": r.pipeline, "env": r.env, "date": r.date,
            "status": r.status, "backend": r.backend, "root": r.root, "holder": r.holder,
            "started": r.started, "ended": r.ended, "error": r.error,
        }));
        let objects = |rows: &mut Vec<Value>, step: &str, role: &str, list: &[ObjectEntry]| {
            for o in list {
                let (zone, dataset) = lake_core::ledger::dataset_of(&o.key);
                rows.push(json!({
                    "run_id": r.run_id, "step": step, "role": role, "zone": zone,
                    "dataset": dataset, "key": o.key, "bytes": o.size, "sha256": o.sha256,
                }));
            }
        };
        for i in &r.ingest {
            let step = format!("ingest {}", i.source);
            objects(&mut object_rows, &step, "landed", &i.objects);
        }
        for s in &r.steps {
            step_rows.push(json!({
                "run_id": r.run_id, "step": s.name, "kind": s.kind, "status": s.status,
                "output": s.output, "rows": s.rows, "rejected": s.rejected, "bytes": s.bytes,
                "started": s.started, "ended": s.ended, "duration_ms": s.duration_ms,
                "error": s.error,
            }));
            objects(&mut object_rows, &s.name, "input", &s.inputs);
            objects(&mut object_rows, &s.name, "output", &s.output_objects);
        }
        for l in lake_core::ledger::lineage(r) {
            lineage_rows.push(json!({
                "run_id": l.batch, "step": l.step, "source": l.source,
                "destination": l.destination, "timestamp": l.timestamp,
            }));
        }
    }
    let u64t = DataType::Int64;
    let tables_of: [(&str, SchemaRef, Vec<Value>); 4] = [
        (
            "runs",
            schema(&[
                ("run_id", text.clone()),
                ("pipeline", text.clone()),
                ("env", text.clone()),
                ("date", DataType::Date32),
                ("status", text.clone()),
                ("backend", text.clone()),
                ("root", text.clone()),
                ("holder", text.clone()),
                ("started", utc()),
                ("ended", utc()),
                ("error", text.clone()),
            ]),
            run_rows,
        ),
        (
            "steps",
            schema(&[
                ("run_id", text.clone()),
                ("step", text.clone()),
                ("kind", text.clone()),
                ("status", text.clone()),
                ("output", text.clone()),
                ("rows", u64t.clone()),
                ("rejected", u64t.clone()),
                ("bytes", u64t.clone()),
                ("started", utc()),
                ("ended", utc()),
                ("duration_ms", u64t.clone()),
                ("error", text.clone()),
            ]),
            step_rows,
        ),
        (
            "objects",
            schema(&[
                ("run_id", text.clone()),
                ("step", text.clone()),
                ("role", text.clone()),
                ("zone", text.clone()),
                ("dataset", text.clone()),
                ("key", text.clone()),
                ("bytes", u64t.clone()),
                ("sha256", text.clone()),
            ]),
            object_rows,
        ),
        (
            "lineage",
            schema(&[
                ("run_id", text.clone()),
                ("step", text.clone()),
                ("source", text.clone()),
                ("destination", text.clone()),
                ("timestamp", utc()),
            ]),
            lineage_rows,
        ),
    ];
    for (name, schema, rows) in tables_of {
        let batch = batch(&schema, &rows)?;
        let table = MemTable::try_new(Arc::clone(&schema), vec![vec![batch]])?;
        tables.register_table(name.to_owned(), Arc::new(table))?;
    }
    catalog.register_schema(LEDGER_SCHEMA, tables)?;
    Ok(())
}

/// Rows of JSON objects as one batch of `schema`.
fn batch(schema: &SchemaRef, rows: &[Value]) -> Result<RecordBatch, DataFusionError> {
    let mut decoder =
        datafusion::arrow::json::ReaderBuilder::new(Arc::clone(schema)).build_decoder()?;
    decoder.serialize(rows)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(schema))))
}
