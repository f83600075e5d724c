//! Tables over committed objects: CSV, NDJSON, JSON documents and Parquet, with their
//! `key=value` folders as columns.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::Column;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::logical_expr::{Expr, cast, lit, when};
use datafusion::prelude::SessionContext;
use lake_core::cluster::SqlInput;
use lake_core::config::{FormatKind, InputFormat};
use lake_core::publish::{ObjectEntry, is_hidden};
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use super::json_doc;
use super::snapshot::{SnapshotStore, object_path};

/// Bytes read from the first `.json` file to tell a document from NDJSON.
const SNIFF_BYTES: u64 = 64 * 1024;

/// A table provider for `input`, its columns renamed and typed as the input's format says.
///
/// `slot` names the object store URL (`lake://in<slot>`) of the input's snapshot; each input
/// of a session needs its own. Errors are messages for the user, naming the dataset.
pub(crate) async fn table(
    ctx: &SessionContext,
    root: &Arc<dyn ObjectStore>,
    slot: &str,
    input: &SqlInput,
) -> Result<Arc<dyn TableProvider>, String> {
    let what = &input.dataset;
    let rel = |o: &ObjectEntry| -> String {
        o.key
            .strip_prefix(&input.prefix)
            .map(|r| r.trim_start_matches('/').to_owned())
            .unwrap_or_else(|| o.key.clone())
    };
    let data: Vec<&ObjectEntry> = input
        .objects
        .iter()
        .filter(|o| !is_hidden(&rel(o)))
        .collect();
    if data.is_empty() {
        return Err(format!(
            "{what} has no committed data (no complete window or published output) to read"
        ));
    }
    let kind = match input.format.kind {
        Some(k) => k,
        None => {
            let kinds: BTreeSet<&str> = data
                .iter()
                .filter_map(|o| FormatKind::from_extension(&o.key))
                .map(FormatKind::as_str)
                .collect();
            match kinds.iter().next() {
                Some(k) if kinds.len() == 1 => FormatKind::parse(k).expect("a known format"),
                Some(_) => {
                    return Err(format!(
                        "{what} holds files of several formats ({}); choose one with {{ path = \"{what}\", format = \"…\" }}",
                        kinds.into_iter().collect::<Vec<_>>().join(", ")
                    ));
                }
                None => {
                    return Err(format!(
                        "{what}: cannot tell the format from the file names (e.g. {}); set format = \"csv\", \"ndjson\", \"json\" or \"parquet\"",
                        data[0].key
                    ));
                }
            }
        }
    };
    // Only the files of that format (an archive kept beside its extracted members is not read).
    let files: Vec<ObjectEntry> = data
        .into_iter()
        .filter(|o| {
            lake_core::source::ArchiveKind::of(&o.key).is_none()
                && FormatKind::from_extension(&o.key).is_none_or(|k| {
                    k == kind || (kind == FormatKind::Ndjson && k == FormatKind::Json)
                })
        })
        .cloned()
        .collect();
    if files.is_empty() {
        return Err(format!("{what} has no {} files", kind.as_str()));
    }
    let parts = partition_columns(&files.iter().map(&rel).collect::<Vec<_>>())
        .map_err(|m| format!("{what}: {m}"))?;
    let kind = match kind {
        FormatKind::Json if input.format.kind.is_none() => sniff_json(root, &files[0]).await?,
        k => k,
    };
    let provider: Arc<dyn TableProvider> = match kind {
        FormatKind::Json => json_table(root, input, &files, &parts, &rel)
            .await
            .map_err(|m| format!("{what}: {m}"))?,
        _ => listing_table(ctx, root, slot, input, &files, kind, &parts)
            .await
            .map_err(|m| format!("{what}: {m}"))?,
    };
    // Empty fields are NULL already; other markers are applied to the text columns here.
    let markers: Vec<String> = input
        .format
        .null_values
        .iter()
        .filter(|v| !v.is_empty())
        .cloned()
        .collect();
    let markers = (kind == FormatKind::Csv && !markers.is_empty()).then_some(markers);
    normalize(ctx, provider, &input.format, &parts, markers.as_deref())
        .map_err(|m| format!("{what}: {m}"))
}

/// A `key=value` folder level below the dataset prefix, and the type its values read as.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PartCol {
    name: String,
    data_type: DataType,
}

/// The partition columns of files at `rel` paths: the same `key=value` levels for every file.
fn partition_columns(rel: &[String]) -> Result<Vec<PartCol>, String> {
    let mut names: Option<Vec<String>> = None;
    let mut values: Vec<Vec<String>> = Vec::new();
    for path in rel {
        let dirs: Vec<&str> = path.split('/').collect();
        let dirs = &dirs[..dirs.len() - 1];
        let mut these = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            let Some((k, v)) = d.split_once('=') else {
                return Err(format!(
                    "{path}: folder {d:?} is not a key=value partition; datasets hold files or key=value folders of files"
                ));
            };
            these.push(k.to_owned());
            if values.len() <= i {
                values.push(Vec::new());
            }
            values[i].push(percent_decode(v));
        }
        match &names {
            None => names = Some(these),
            Some(n) if *n != these => {
                return Err(format!(
                    "files are at different partition levels ({} and {})",
                    n.join("/"),
                    these.join("/")
                ));
            }
            Some(_) => {}
        }
    }
    Ok(names
        .unwrap_or_default()
        .into_iter()
        .zip(values)
        .map(|(name, vals)| PartCol {
            name,
            data_type: value_type(&vals),
        })
        .collect())
}

/// DATE when every value is `YYYY-MM-DD`, BIGINT when every value is an integer, else VARCHAR.
fn value_type(values: &[String]) -> DataType {
    if values
        .iter()
        .all(|v| v.len() == 10 && NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok())
    {
        DataType::Date32
    } else if values.iter().all(|v| v.parse::<i64>().is_ok()) {
        DataType::Int64
    } else {
        DataType::Utf8
    }
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| v.to_owned())
}

/// `.json` holding one value is a document of columns; more than one value is NDJSON.
async fn sniff_json(
    root: &Arc<dyn ObjectStore>,
    first: &ObjectEntry,
) -> Result<FormatKind, String> {
    let end = first.size.min(SNIFF_BYTES);
    let head = root
        .get_range(&object_path(&first.key), 0..end)
        .await
        .map_err(|e| format!("read {}: {e}", first.key))?;
    let mut values = serde_json::Deserializer::from_slice(&head).into_iter::<serde_json::Value>();
    let one = values.next();
    let two = values.next();
    Ok(match (one, two) {
        (Some(Ok(serde_json::Value::Object(_))), Some(_)) => FormatKind::Ndjson,
        (Some(Ok(serde_json::Value::Object(o))), None) if !has_arrays(&o) => FormatKind::Ndjson,
        _ => FormatKind::Json,
    })
}

fn has_arrays(o: &serde_json::Map<String, serde_json::Value>) -> bool {
    o.values().any(|v| match v {
        serde_json::Value::Array(_) => true,
        serde_json::Value::Object(o) => has_arrays(o),
        _ => false,
    })
}

fn csv_format(f: &InputFormat) -> CsvFormat {
    let csv = CsvFormat::default()
        .with_has_header(f.header)
        .with_delimiter(f.delimiter);
    if f.infer_types {
        csv
    } else {
        // Header names only: every column is text.
        csv.with_schema_infer_max_rec(0)
    }
}

async fn listing_table(
    ctx: &SessionContext,
    root: &Arc<dyn ObjectStore>,
    slot: &str,
    input: &SqlInput,
    files: &[ObjectEntry],
    kind: FormatKind,
    parts: &[PartCol],
) -> Result<Arc<dyn TableProvider>, String> {
    let store_url = format!("lake://{slot}");
    ctx.register_object_store(
        &Url::parse(&store_url).map_err(|e| e.to_string())?,
        Arc::new(SnapshotStore::new(Arc::clone(root), files)),
    );
    let table_url = ListingTableUrl::parse(format!("{store_url}/{}/", input.prefix))
        .map_err(|e| e.to_string())?;
    let format: Arc<dyn FileFormat> = match kind {
        FormatKind::Csv => Arc::new(csv_format(&input.format)),
        FormatKind::Ndjson => Arc::new(JsonFormat::default()),
        FormatKind::Parquet => Arc::new(ParquetFormat::default()),
        FormatKind::Json => unreachable!("JSON documents are read into memory"),
    };
    let options = ListingOptions::new(format)
        .with_file_extension("")
        .with_table_partition_cols(
            parts
                .iter()
                .map(|p| (p.name.clone(), DataType::Utf8))
                .collect(),
        );
    let state = ctx.state();
    let mut schema = options
        .infer_schema(&state, &table_url)
        .await
        .map_err(|e| e.to_string())?;
    if kind == FormatKind::Csv && !input.format.infer_types {
        // Text columns: every value arrives as written; the step's SQL casts it (a failed CAST
        // rejects the row instead of failing the read).
        schema = Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), DataType::Utf8, true))
                .collect::<Vec<_>>(),
        ));
    }
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(
        ListingTable::try_new(config).map_err(|e| e.to_string())?,
    ))
}

async fn json_table(
    root: &Arc<dyn ObjectStore>,
    input: &SqlInput,
    files: &[ObjectEntry],
    parts: &[PartCol],
    rel: &impl Fn(&ObjectEntry) -> String,
) -> Result<Arc<dyn TableProvider>, String> {
    let mut docs = Vec::with_capacity(files.len());
    for f in files {
        let bytes = root
            .get(&object_path(&f.key))
            .await
            .map_err(|e| format!("read {}: {e}", f.key))?
            .bytes()
            .await
            .map_err(|e| format!("read {}: {e}", f.key))?;
        docs.push(
            json_doc::columns(&bytes, input.format.json_path.as_deref())
                .map_err(|m| format!("{}: {m}", f.key))?,
        );
    }
    let (schema, batches) = json_doc::to_batches(docs)?;
    // Partition folders become text columns, typed in `normalize` like listing tables'.
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| (**f).clone()).collect();
    fields.extend(
        parts
            .iter()
            .map(|p| Field::new(&p.name, DataType::Utf8, true)),
    );
    let full = Arc::new(Schema::new(fields));
    let mut out = Vec::with_capacity(batches.len());
    for (batch, file) in batches.into_iter().zip(files) {
        let r = rel(file);
        let dirs: Vec<&str> = r.split('/').collect();
        let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
        for d in &dirs[..dirs.len() - 1] {
            let v = percent_decode(d.split_once('=').map_or("", |(_, v)| v));
            cols.push(Arc::new(StringArray::from(vec![
                v.as_str();
                batch.num_rows()
            ])));
        }
        out.push(RecordBatch::try_new(Arc::clone(&full), cols).map_err(|e| e.to_string())?);
    }
    Ok(Arc::new(
        MemTable::try_new(full, vec![out]).map_err(|e| e.to_string())?,
    ))
}

/// Rename columns to snake_case (when asked) and type the partition columns.
fn normalize(
    ctx: &SessionContext,
    provider: Arc<dyn TableProvider>,
    format: &InputFormat,
    parts: &[PartCol],
    null_markers: Option<&[String]>,
) -> Result<Arc<dyn TableProvider>, String> {
    let schema = provider.schema();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut exprs = Vec::with_capacity(schema.fields().len());
    let mut changed = false;
    for (i, f) in schema.fields().iter().enumerate() {
        let mut e = Expr::Column(Column::new_unqualified(f.name()));
        let part = parts.iter().find(|p| &p.name == f.name());
        if let Some(p) = part
            && p.data_type != DataType::Utf8
        {
            e = cast(e, p.data_type.clone());
            changed = true;
        }
        if let Some(markers) = null_markers
            && part.is_none()
            && matches!(
                f.data_type(),
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
            )
        {
            let list = markers.iter().map(|m| lit(m.as_str())).collect();
            e = when(e.clone().in_list(list, false), lit(ScalarValue::Utf8(None)))
                .otherwise(e)
                .map_err(|err| err.to_string())?;
            changed = true;
        }
        let name = if format.snake_case {
            snake_case(f.name(), i)
        } else {
            f.name().clone()
        };
        if !seen.insert(name.clone()) {
            return Err(format!(
                "two columns are both named {name:?} (after renaming to snake_case); rename one in the file or set snake_case = false"
            ));
        }
        changed |= name != *f.name();
        exprs.push(e.alias(name));
    }
    if !changed {
        return Ok(provider);
    }
    let df = ctx
        .read_table(provider)
        .and_then(|df| df.select(exprs))
        .map_err(|e| e.to_string())?;
    Ok(df.into_view())
}

/// `Saving accounts` → `saving_accounts`, `windSpeed10m` → `wind_speed10m`, `` → `_c<i>`.
pub(crate) fn snake_case(name: &str, index: usize) -> String {
    let mut out = String::with_capacity(name.len());
    let mut prev_lower = false;
    for c in name.trim().chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && prev_lower && !out.ends_with('_') {
                out.push('_');
            }
            prev_lower = c.is_lowercase() || c.is_ascii_digit();
            out.extend(c.to_lowercase());
        } else {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            prev_lower = false;
        }
    }
    let out = out.trim_end_matches('_').to_owned();
    if out.is_empty() {
        format!("_c{index}")
    } else if out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_names() {
        assert_eq!(snake_case("Saving accounts", 0), "saving_accounts");
        assert_eq!(snake_case("Credit amount", 0), "credit_amount");
        assert_eq!(snake_case("temperature_2m", 0), "temperature_2m");
        assert_eq!(snake_case("windSpeed", 0), "wind_speed");
        assert_eq!(snake_case("", 3), "_c3");
        assert_eq!(snake_case("  Age  ", 0), "age");
        assert_eq!(snake_case("2nd try", 0), "_2nd_try");
        assert_eq!(snake_case("a--b", 0), "a_b");
    }

    #[test]
    fn partition_columns_are_typed_from_their_values() {
        let rel: Vec<String> = [
            "ingest_date=2024-01-01/a.csv",
            "ingest_date=2024-01-02/b.csv",
        ]
        .map(String::from)
        .to_vec();
        let p = partition_columns(&rel).unwrap();
        assert_eq!(p[0].name, "ingest_date");
        assert_eq!(p[0].data_type, DataType::Date32);
        let rel = vec![
            "purpose=radio%2FTV/x.parquet".to_owned(),
            "purpose=car/y.parquet".into(),
        ];
        assert_eq!(
            partition_columns(&rel).unwrap()[0].data_type,
            DataType::Utf8
        );
        assert_eq!(percent_decode("radio%2FTV"), "radio/TV");
        let rel = vec!["year=2024/x.parquet".to_owned()];
        assert_eq!(
            partition_columns(&rel).unwrap()[0].data_type,
            DataType::Int64
        );
        let bad = vec!["a=1/x.csv".to_owned(), "x.csv".into()];
        assert!(
            partition_columns(&bad)
                .unwrap_err()
                .contains("different partition levels")
        );
        let bad = vec!["plain/x.csv".to_owned()];
        assert!(
            partition_columns(&bad)
                .unwrap_err()
                .contains("not a key=value")
        );
    }
}
