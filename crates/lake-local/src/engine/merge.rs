//! `mode = "merge"`: a step's rows are a batch merged into the dataset, copy on write, file by
//! file.
//!
//! 1. The batch is the step's passing rows, written first to `<staging>/_batch/`.
//! 2. A tie (two batch rows of one key and one `order_by` value) fails the step, naming the key,
//!    unless `on_tie = "any"`.
//! 3. The dataset's files that may hold a batch key are found without reading their rows: by
//!    partition folder (when the key holds the partition columns), then by each row group's
//!    min/max statistics of the key columns, then by reading the key columns alone.
//! 4. Those files and the batch are merged: per key, the row with the largest `order_by` wins
//!    (the batch's on a tie with the stored row); a winning batch row that meets `delete_when`
//!    removes its key. The result is written sorted by key (so statistics prune the next
//!    merge), and `_replaces.json` names the files it replaces; the publish keeps every other
//!    file as it is.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::compute::kernels::cmp::{gt_eq, lt_eq};
use datafusion::arrow::compute::{and, cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::ExprSchemable;
use datafusion::prelude::{DataFrame, ParquetReadOptions, SessionContext, col, lit};
use futures::FutureExt;
use lake_core::cluster::{MergeWork, SqlWork};
use lake_core::publish::{MergeCounts, ObjectEntry, REPLACES, Replaces, is_hidden};
use lake_core::zone::{Key, ZoneStoreExt};
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::async_reader::MetadataFetch;
use parquet::file::metadata::ParquetMetaDataReader;

use super::{Engine, ROOT_URL, write_parquet};

type DfResult<T> = std::result::Result<T, DataFusionError>;

fn fail(message: String) -> DataFusionError {
    DataFusionError::Execution(message)
}

/// A quoted column name for SQL.
fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Merge the batch at `<output>/_batch/` into the dataset `m`, writing the merged files to
/// `<output>/` and naming the replaced ones in `<output>/_replaces.json`: the rows written,
/// what changed, and the columns the dataset stores.
pub(super) async fn merge(
    engine: &Engine,
    ctx: &SessionContext,
    work: &SqlWork,
    m: &MergeWork,
    schema: &SchemaRef,
) -> DfResult<(u64, MergeCounts, SchemaRef)> {
    let spec = &m.spec;
    let batch_url = format!("{ROOT_URL}/{}/_batch/", work.output);
    let batch = ctx
        .read_parquet(batch_url, ParquetReadOptions::default())
        .await?;
    ctx.register_table("__batch", batch.into_view())?;
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for c in spec.key.iter().chain(&spec.order_by) {
        if !names.contains(&c.as_str()) {
            return Err(fail(format!(
                "merge column {c:?} is not in the query's output (columns: {})",
                names.join(", ")
            )));
        }
    }
    let keys = spec.key.iter().map(|k| q(k)).collect::<Vec<_>>().join(", ");
    // One group-by of the batch's keys: without a repeated key there is no tie and no window.
    let repeated = keys_repeat(ctx, &keys).await?;
    if repeated {
        check_ties(ctx, spec).await?;
    }

    let touched = touched(engine, ctx, work, m, schema).await?;
    let stored = match &spec.history {
        Some(h) => history_schema(schema, spec, h)?,
        None => Arc::clone(schema),
    };
    let old = old_rows(ctx, &touched, &m.prefix, &work.partition_by, &stored).await?;
    ctx.register_table("__old", old.into_view())?;
    let (merged, counts) = match &spec.history {
        Some(h) => history(ctx, spec, h, &names, &keys)
            .await
            .map(|(m, c)| (m, Some(c)))?,
        // Nothing stored meets the batch (a first load): its rows, without the stored side.
        None if touched.is_empty() => (fresh(ctx, spec, &names, &keys, repeated).await?, None),
        None => latest(ctx, spec, &names, &keys, repeated)
            .await
            .map(|(m, c)| (m, Some(c)))?,
    };
    let out_url = format!("{ROOT_URL}/{}/", work.output);
    let rows = write_parquet(merged, &out_url, &work.partition_by, true).await?;
    // Without stored rows, every row written is a key inserted.
    let counts = counts.unwrap_or(MergeCounts {
        inserted: rows,
        ..MergeCounts::default()
    });
    let replaces = Replaces {
        keys: touched.iter().map(|o| o.key.clone()).collect(),
    };
    let key = Key::new(format!("{}/{REPLACES}", work.output)).map_err(|e| fail(e.to_string()))?;
    engine
        .zone
        .put_json(&key, &replaces)
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok((
        rows,
        MergeCounts {
            rewritten_files: touched.len() as u64,
            kept_files: data_files(&m.current).count() as u64 - touched.len() as u64,
            ..counts
        },
        stored,
    ))
}

/// The stored columns of a history dataset: the step's, then the version columns.
fn history_schema(
    schema: &SchemaRef,
    spec: &lake_core::config::MergeSpec,
    h: &lake_core::config::HistoryColumns,
) -> DfResult<SchemaRef> {
    let order = spec.order_by.as_deref().unwrap_or_default();
    let ty = schema.field_with_name(order)?.data_type().clone();
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (name, ty) in [
        (&h.valid_from, ty.clone()),
        (&h.valid_to, ty),
        (&h.is_current, DataType::Boolean),
    ] {
        if schema.field_with_name(name).is_ok() {
            return Err(fail(format!(
                "the query's output has a column {name:?}, which history keeps itself; name it otherwise, or choose other history_columns"
            )));
        }
        fields.push(Field::new(name, ty, true));
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// `merge`: per key, the latest row wins; the rows to write, and what changed.
///
/// The stored rows hold one row per key, so no window over every key is needed: the batch's
/// winner of each key (a window over the batch only when a key repeats) is joined with the
/// stored row of its key (a hash join, NULL keys equal), which decides it. The result is the
/// stored rows whose key no batch row won, and the winning batch rows that are not deletes.
async fn latest(
    ctx: &SessionContext,
    spec: &lake_core::config::MergeSpec,
    names: &[&str],
    keys: &str,
    repeated: bool,
) -> DfResult<(DataFrame, MergeCounts)> {
    let cols = names.iter().map(|n| q(n)).collect::<Vec<_>>().join(", ");
    let winners = batch_winners(spec, &cols, keys, repeated);
    // The key columns renamed apart (`__k0`, …), for the stored side and the won keys.
    let stored_keys = spec
        .key
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{} AS __k{i}", q(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let on = |left: &str| {
        spec.key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("({left}.{} IS NOT DISTINCT FROM s.__k{i})", q(k)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let (stored_order, wins) = match &spec.order_by {
        // The batch row wins unless the stored one is later (NULLs last; a tie goes to the batch).
        Some(o) => (
            format!(", {} AS __o", q(o)),
            format!(
                "s.__had IS NULL OR s.__o IS NULL OR (b.{o} IS NOT NULL AND b.{o} >= s.__o)",
                o = q(o)
            ),
        ),
        None => (String::new(), "true".to_owned()),
    };
    let decided = ctx
        .sql(&format!(
            "SELECT b.*, s.__had IS NOT NULL AS __had_old, ({wins}) AS __wins \
             FROM ({winners}) b LEFT JOIN (SELECT {stored_keys}{stored_order}, true AS __had FROM __old) s \
             ON {}",
            on("b")
        ))
        .await?
        .cache()
        .await?;
    ctx.register_table("__decided", decided.into_view())?;
    let counts = count3(
        ctx,
        "SELECT \
           CAST(count(*) FILTER (WHERE __wins AND NOT __del AND NOT __had_old) AS BIGINT), \
           CAST(count(*) FILTER (WHERE __wins AND NOT __del AND __had_old) AS BIGINT), \
           CAST(count(*) FILTER (WHERE __wins AND __del AND __had_old) AS BIGINT) \
         FROM __decided",
    )
    .await?;
    let merged = ctx
        .sql(&format!(
            "SELECT {cols} FROM __old o LEFT ANTI JOIN (SELECT {stored_keys} FROM __decided WHERE __wins) s ON {} \
             UNION ALL \
             SELECT {cols} FROM __decided WHERE __wins AND NOT __del \
             ORDER BY {keys}",
            on("o")
        ))
        .await?;
    Ok((merged, counts))
}

/// True when two rows of the batch share a key.
async fn keys_repeat(ctx: &SessionContext, keys: &str) -> DfResult<bool> {
    Ok(ctx
        .sql(&format!(
            "SELECT 1 FROM __batch GROUP BY {keys} HAVING count(*) > 1 LIMIT 1"
        ))
        .await?
        .collect()
        .await?
        .iter()
        .any(|b| b.num_rows() > 0))
}

/// The batch's winning row of each key, with `__del`: the batch as it is when no key repeats,
/// else the latest row of each key (`order_by` descending, NULLs last).
fn batch_winners(
    spec: &lake_core::config::MergeSpec,
    cols: &str,
    keys: &str,
    repeated: bool,
) -> String {
    let delete = delete_expr(spec);
    if repeated {
        let order = match &spec.order_by {
            Some(o) => format!("{} DESC NULLS LAST", q(o)),
            None => keys.to_owned(),
        };
        // A window, not DISTINCT ON: DataFusion's ordered `first_value` aggregate took 1.3-1.5x
        // the wall and 1.4x the memory here (BENCHMARKS.md, "Merge at the scale").
        format!(
            "SELECT {cols}, __del FROM (SELECT {cols}, {delete} AS __del, \
                    row_number() OVER (PARTITION BY {keys} ORDER BY {order}) AS __rn FROM __batch) \
             WHERE __rn = 1"
        )
    } else {
        format!("SELECT {cols}, {delete} AS __del FROM __batch")
    }
}

/// `merge` where no stored row meets the batch: the batch's winning rows, sorted by key.
async fn fresh(
    ctx: &SessionContext,
    spec: &lake_core::config::MergeSpec,
    names: &[&str],
    keys: &str,
    repeated: bool,
) -> DfResult<DataFrame> {
    let cols = names.iter().map(|n| q(n)).collect::<Vec<_>>().join(", ");
    let winners = batch_winners(spec, &cols, keys, repeated);
    ctx.sql(&format!(
        "SELECT {cols} FROM ({winners}) WHERE NOT __del ORDER BY {keys}"
    ))
    .await
}

fn delete_expr(spec: &lake_core::config::MergeSpec) -> String {
    spec.delete_when
        .as_deref()
        .map_or("false".to_owned(), |d| format!("coalesce(({d}), false)"))
}

/// `history`: every version of each key. A batch row opens a version when it differs from the
/// key's version before it (in every column but the key and `order_by`) and is later than the
/// key's current version (late rows do not rewrite history); the version before it closes at
/// its `order_by` value. A `delete_when` row closes the key's version and opens none. Closed
/// versions of the rewritten files stay as they were. Counts: versions opened (`inserted`),
/// current versions closed by a new one (`updated`), keys closed by a delete (`deleted`).
async fn history(
    ctx: &SessionContext,
    spec: &lake_core::config::MergeSpec,
    h: &lake_core::config::HistoryColumns,
    names: &[&str],
    keys: &str,
) -> DfResult<(DataFrame, MergeCounts)> {
    let order = q(spec.order_by.as_deref().unwrap_or_default());
    let cols = names.iter().map(|n| q(n)).collect::<Vec<_>>().join(", ");
    let (vf, vt, ic) = (q(&h.valid_from), q(&h.valid_to), q(&h.is_current));
    let delete = delete_expr(spec);
    let window = format!("PARTITION BY {keys} ORDER BY __from, __src DESC");
    let tracked: Vec<String> = names
        .iter()
        .filter(|n| !spec.key.iter().any(|k| k == *n) && Some(**n) != spec.order_by.as_deref())
        .map(|n| {
            format!(
                "({c} IS NOT DISTINCT FROM lag({c}) OVER ({window}))",
                c = q(n)
            )
        })
        .collect();
    let same = if tracked.is_empty() {
        "true".to_owned()
    } else {
        tracked.join(" AND ")
    };
    let kept = ctx
        .sql(&format!(
            "SELECT * FROM ( \
               SELECT *, {same} AS __same, \
                      lag(__src) OVER ({window}) IS NULL AS __first, \
                      coalesce(lag(__del) OVER ({window}), false) AS __prev_del \
               FROM ( \
                 SELECT * FROM ( \
                   SELECT *, max(CASE WHEN __src = 1 THEN __from END) OVER (PARTITION BY {keys}) AS __cur_from \
                   FROM (SELECT {cols}, {vf} AS __from, 1 AS __src, false AS __del FROM __old WHERE {ic} \
                         UNION ALL \
                         SELECT {cols}, {order} AS __from, 0 AS __src, {delete} AS __del FROM __batch)) \
                 WHERE __src = 1 OR __cur_from IS NULL OR __from > __cur_from)) \
             WHERE __src = 1 \
                OR (NOT __del AND (__first OR __prev_del OR NOT __same)) \
                OR (__del AND NOT __first AND NOT __prev_del)"
        ))
        .await?;
    ctx.register_table("__kept", kept.into_view())?;
    let versions = ctx
        .sql(&format!(
            "SELECT *, lead(__from) OVER ({window}) AS __to, \
                    coalesce(lead(__del) OVER ({window}), false) AS __to_del FROM __kept"
        ))
        .await?
        .cache()
        .await?;
    ctx.register_table("__versions", versions.into_view())?;
    let counts = count3(
        ctx,
        "SELECT \
           CAST(count(*) FILTER (WHERE __src = 0 AND NOT __del) AS BIGINT), \
           CAST(count(*) FILTER (WHERE __src = 1 AND __to IS NOT NULL AND NOT __to_del) AS BIGINT), \
           CAST(count(*) FILTER (WHERE __src = 0 AND __del) AS BIGINT) \
         FROM __versions",
    )
    .await?;
    let merged = ctx
        .sql(&format!(
            "SELECT {cols}, {vf}, {vt}, {ic} FROM ( \
               SELECT {cols}, __from AS {vf}, __to AS {vt}, __to IS NULL AS {ic} FROM __versions WHERE NOT __del \
               UNION ALL \
               SELECT {cols}, {vf}, {vt}, {ic} FROM __old WHERE NOT {ic}) \
             ORDER BY {keys}, {vf}"
        ))
        .await?;
    Ok((merged, counts))
}

/// Fail on two batch rows of one key (and one `order_by` value), naming the key.
async fn check_ties(ctx: &SessionContext, spec: &lake_core::config::MergeSpec) -> DfResult<()> {
    if spec.on_tie_any {
        return Ok(());
    }
    let cols: Vec<&String> = spec.key.iter().chain(&spec.order_by).collect();
    let group = cols.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
    // Shown as text: a timestamp reads as one, not as its count of microseconds.
    let shown = cols
        .iter()
        .map(|c| format!("CAST({} AS VARCHAR) AS {}", q(c), q(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let ties = ctx
        .sql(&format!(
            "SELECT {shown} FROM __batch GROUP BY {group} HAVING count(*) > 1 LIMIT 1"
        ))
        .await?
        .collect()
        .await?;
    let Some(b) = ties.iter().find(|b| b.num_rows() > 0) else {
        return Ok(());
    };
    let mut shown = Vec::new();
    for (i, f) in b.schema().fields().iter().enumerate() {
        let v = ScalarValue::try_from_array(b.column(i), 0)?;
        shown.push(format!("{} = {v}", f.name()));
    }
    Err(fail(format!(
        "two rows of the batch have the same key and order ({}): which one wins is not known. Make them distinct, or set on_tie = \"any\" to keep either",
        shown.join(", ")
    )))
}

/// The three counts `sql` gives: inserted, updated, deleted.
async fn count3(ctx: &SessionContext, sql: &str) -> DfResult<MergeCounts> {
    let b = ctx.sql(sql).await?.collect().await?;
    let b = concat_batches(&b[0].schema(), &b)?;
    let n = |i: usize| -> DfResult<u64> {
        match ScalarValue::try_from_array(b.column(i), 0)? {
            ScalarValue::Int64(Some(v)) => Ok(v as u64),
            _ => Ok(0),
        }
    };
    Ok(MergeCounts {
        inserted: n(0)?,
        updated: n(1)?,
        deleted: n(2)?,
        ..MergeCounts::default()
    })
}

/// The dataset's data files (not its hidden objects).
fn data_files(objects: &[ObjectEntry]) -> impl Iterator<Item = &ObjectEntry> {
    objects
        .iter()
        .filter(|o| o.key.ends_with(".parquet") && !is_hidden(&o.key))
}

/// The `key=value` folders of `key` below `prefix`.
fn partition_values<'a>(key: &'a str, prefix: &str) -> Vec<(&'a str, String)> {
    let rel = key
        .strip_prefix(prefix)
        .unwrap_or(key)
        .trim_start_matches('/');
    let mut out = Vec::new();
    let mut segs: Vec<&str> = rel.split('/').collect();
    segs.pop();
    for seg in segs {
        if let Some((k, v)) = seg.split_once('=') {
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            out.push((k, v));
        }
    }
    out
}

/// The dataset's files that hold a key of the batch.
async fn touched(
    engine: &Engine,
    ctx: &SessionContext,
    work: &SqlWork,
    m: &MergeWork,
    schema: &SchemaRef,
) -> DfResult<Vec<ObjectEntry>> {
    let files: Vec<&ObjectEntry> = data_files(&m.current).collect();
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let spec = &m.spec;
    // The key columns stored in the files (partition columns are folders, not columns).
    let stored: Vec<&String> = spec
        .key
        .iter()
        .filter(|k| !work.partition_by.contains(k))
        .collect();
    // Files are skipped by folder only where a value's text is its folder's for certain
    // (integers, text, dates): a pruned file that held a key would keep its old row beside the
    // merged one. Other partition types leave every file to the statistics and the key read.
    let parts_in_key = work.partition_by.iter().all(|p| {
        spec.key.contains(p)
            && schema.field_with_name(p).is_ok_and(|f| {
                f.data_type().is_integer()
                    || matches!(
                        f.data_type(),
                        DataType::Utf8
                            | DataType::Utf8View
                            | DataType::LargeUtf8
                            | DataType::Date32
                    )
            })
    });
    let select = |cols: &[&String]| cols.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
    // The batch's partitions, as their folders read.
    let batch_parts: Option<std::collections::HashSet<Vec<String>>> =
        if parts_in_key && !work.partition_by.is_empty() {
            let parts: Vec<&String> = work.partition_by.iter().collect();
            let casts = parts
                .iter()
                .map(|p| format!("CAST({} AS VARCHAR)", q(p)))
                .collect::<Vec<_>>()
                .join(", ");
            // Distinct values first, then cast: a date is formatted once, not once a row.
            let b = ctx
                .sql(&format!(
                    "SELECT {casts} FROM (SELECT DISTINCT {} FROM __batch)",
                    select(&parts)
                ))
                .await?
                .collect()
                .await?;
            let mut set = std::collections::HashSet::new();
            for b in &b {
                for row in 0..b.num_rows() {
                    let mut v = Vec::new();
                    for c in 0..b.num_columns() {
                        v.push(match ScalarValue::try_from_array(b.column(c), row)? {
                            ScalarValue::Utf8(Some(s))
                            | ScalarValue::Utf8View(Some(s))
                            | ScalarValue::LargeUtf8(Some(s)) => s,
                            _ => "__HIVE_DEFAULT_PARTITION__".to_owned(),
                        });
                    }
                    set.insert(v);
                }
            }
            Some(set)
        } else {
            None
        };
    let files: Vec<&ObjectEntry> = files
        .into_iter()
        .filter(|o| {
            let Some(set) = &batch_parts else {
                return true;
            };
            let vals = partition_values(&o.key, &m.prefix);
            if vals.is_empty() {
                // A file beside the partition folders (the empty file of a merge that left
                // the dataset no rows): it goes with any merge.
                return true;
            }
            let v: Vec<String> = work
                .partition_by
                .iter()
                .map(|p| {
                    vals.iter()
                        .find(|(k, _)| k == p)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                })
                .collect();
            set.contains(&v)
        })
        .collect();
    if stored.is_empty() {
        // The key is the partition columns: every file of a batch partition is touched.
        return Ok(files.into_iter().cloned().collect());
    }
    let batch_keys = ctx
        .sql(&format!("SELECT DISTINCT {} FROM __batch", select(&stored)))
        .await?
        .collect()
        .await?;
    let key_schema: SchemaRef = Arc::new(Schema::new(
        stored
            .iter()
            .map(|k| {
                schema
                    .field_with_name(k)
                    .map(|f| f.as_ref().clone())
                    .map_err(DataFusionError::from)
            })
            .collect::<DfResult<Vec<_>>>()?,
    ));
    let batch_keys = concat_batches(&key_schema, &batch_keys)?;
    // The distinct keys, read once, are what each candidate file is joined with.
    ctx.register_table(
        "__keys",
        Arc::new(MemTable::try_new(
            Arc::clone(&key_schema),
            vec![vec![batch_keys.clone()]],
        )?),
    )?;
    let mut touched = Vec::new();
    for o in files {
        let hit = match may_hold(&engine.root, o, &stored, &batch_keys).await? {
            Candidate::No => false,
            // An empty file (a merge that left no rows writes one) goes with any merge.
            Candidate::Empty => true,
            Candidate::Maybe => holds(ctx, o, &stored).await?,
        };
        if hit {
            touched.push(o.clone());
        }
    }
    Ok(touched)
}

/// What a file's footer says of the batch's keys.
enum Candidate {
    /// No row group's statistics admit a batch key.
    No,
    /// Some may hold one (or there are no statistics to say otherwise).
    Maybe,
    /// The file has no rows.
    Empty,
}

/// Whether a row group's min/max statistics of the key columns admit some batch key (or the
/// file has no statistics to say otherwise). Reads the footer only.
async fn may_hold(
    root: &Arc<dyn ObjectStore>,
    o: &ObjectEntry,
    stored: &[&String],
    batch_keys: &RecordBatch,
) -> DfResult<Candidate> {
    let fetch = Footer {
        store: Arc::clone(root),
        path: object_store::path::Path::from(o.key.as_str()),
    };
    let meta = ParquetMetaDataReader::new()
        .with_prefetch_hint(Some(64 << 10))
        .load_and_finish(fetch, o.size)
        .await?;
    if meta.file_metadata().num_rows() == 0 {
        return Ok(Candidate::Empty);
    }
    let arrow_schema = parquet::arrow::parquet_to_arrow_schema(
        meta.file_metadata().schema_descr(),
        meta.file_metadata().key_value_metadata(),
    )?;
    let arrow_schema = &arrow_schema;
    let groups = meta.row_groups();
    let mut ranges: Vec<(ArrayRef, ArrayRef)> = Vec::new();
    for k in stored {
        let Ok(conv) =
            StatisticsConverter::try_new(k, arrow_schema, meta.file_metadata().schema_descr())
        else {
            return Ok(Candidate::Maybe);
        };
        ranges.push((conv.row_group_mins(groups)?, conv.row_group_maxes(groups)?));
    }
    for g in 0..groups.len() {
        let mut mask: Option<BooleanArray> = None;
        for (i, (mins, maxes)) in ranges.iter().enumerate() {
            if mins.is_null(g) || maxes.is_null(g) {
                continue;
            }
            let Ok(keys) = cast(batch_keys.column(i), mins.data_type()) else {
                return Ok(Candidate::Maybe);
            };
            let lo = datafusion::arrow::array::Scalar::new(mins.slice(g, 1));
            let hi = datafusion::arrow::array::Scalar::new(maxes.slice(g, 1));
            let within = and(&gt_eq(&keys, &lo)?, &lt_eq(&keys, &hi)?)?;
            mask = Some(match mask {
                None => within,
                Some(m) => and(&m, &within)?,
            });
        }
        match mask {
            None => return Ok(Candidate::Maybe),
            Some(m) if m.true_count() > 0 => return Ok(Candidate::Maybe),
            Some(_) => {}
        }
    }
    Ok(Candidate::No)
}

/// Ranges of one object, for reading a Parquet footer.
struct Footer {
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
}

impl MetadataFetch for Footer {
    fn fetch(
        &mut self,
        range: std::ops::Range<u64>,
    ) -> futures::future::BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
        }
        .boxed()
    }
}

/// True when the file holds a batch key: its key columns alone are read.
async fn holds(ctx: &SessionContext, o: &ObjectEntry, stored: &[&String]) -> DfResult<bool> {
    let url = format!("{ROOT_URL}/{}", o.key);
    let file = ctx.read_parquet(url, ParquetReadOptions::default()).await?;
    let cols: Vec<&str> = stored.iter().map(|s| s.as_str()).collect();
    let file = file.select_columns(&cols)?;
    let keys = ctx.table("__keys").await?;
    let joined = file
        .join(
            keys,
            datafusion::logical_expr::JoinType::LeftSemi,
            &cols,
            &cols,
            None,
        )?
        .limit(0, Some(1))?
        .collect()
        .await?;
    Ok(joined.iter().any(|b| b.num_rows() > 0))
}

/// The rows of the touched files, with their partition columns from their folders, as the
/// batch's columns.
async fn old_rows(
    ctx: &SessionContext,
    touched: &[ObjectEntry],
    prefix: &str,
    partition_by: &[String],
    schema: &SchemaRef,
) -> DfResult<DataFrame> {
    let mut all: Option<DataFrame> = None;
    for o in touched {
        let url = format!("{ROOT_URL}/{}", o.key);
        let mut df = ctx.read_parquet(url, ParquetReadOptions::default()).await?;
        let vals = partition_values(&o.key, prefix);
        for p in partition_by {
            let ty = schema.field_with_name(p)?.data_type().clone();
            let v = vals
                .iter()
                .find(|(k, _)| k == p)
                .map(|(_, v)| v.clone())
                .filter(|v| v != "__HIVE_DEFAULT_PARTITION__");
            let value = lit(ScalarValue::Utf8(v)).cast_to(&ty, df.schema())?;
            df = df.with_column(p, value)?;
        }
        let cols: Vec<_> = schema.fields().iter().map(|f| col(q(f.name()))).collect();
        let df = df.select(cols)?;
        all = Some(match all {
            None => df,
            Some(a) => a.union(df)?,
        });
    }
    match all {
        Some(df) => Ok(df),
        None => ctx.read_table(Arc::new(MemTable::try_new(
            Arc::clone(schema),
            vec![vec![]],
        )?)),
    }
}
