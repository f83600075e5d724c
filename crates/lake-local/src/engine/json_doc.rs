//! JSON documents of column arrays (`{"hourly": {"time": [...], "temperature_2m": [...]}}`,
//! as Open-Meteo and many other APIs answer) turned into rows.
//!
//! The object of columns is the one at `json_path` (dotted, `hourly` or `data.series`), or
//! else the only object in the document whose members are all arrays of one length. Element
//! `i` of every array makes row `i`. Scalars at the top level of the document (`latitude`,
//! `timezone`) are added to every row as constant columns unless a column has the same name.
//! A column's type is the narrowest of BIGINT, DOUBLE, BOOLEAN and VARCHAR that holds all of
//! its values across all documents; nested values become their JSON text.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use serde_json::Value;

/// The columns of one document, before types are settled across documents.
pub(crate) struct Columns {
    names: Vec<String>,
    values: Vec<Vec<Value>>,
    rows: usize,
}

/// Find and check the object of columns in `doc`.
pub(crate) fn columns(doc: &[u8], json_path: Option<&str>) -> Result<Columns, String> {
    let mut root: Value =
        serde_json::from_slice(doc).map_err(|e| format!("not a JSON document: {e}"))?;
    // An array of records: the document itself (a page of a paged API), or at json_path.
    if root.is_array() && json_path.is_none() {
        return records(root.take(), Vec::new(), "the document");
    }
    let Value::Object(top) = &root else {
        return Err("the document is not a JSON object".into());
    };
    // Top-level scalars, repeated on every row (the arrays are moved out, not copied).
    let scalars: Vec<(String, Value)> = top
        .iter()
        .filter(|(_, v)| !v.is_object() && !v.is_array())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let path = match json_path {
        Some(p) => {
            let mut cur = &root;
            for part in p.split('.') {
                cur = cur
                    .get(part)
                    .ok_or_else(|| format!("json_path {p:?}: no member {part:?}"))?;
            }
            if cur.is_array() {
                let Some(items) = root.pointer_mut(&pointer_of(p)).map(Value::take) else {
                    unreachable!("the path was just found");
                };
                return records(items, scalars, &format!("json_path {p:?}"));
            }
            if !cur.is_object() {
                return Err(format!(
                    "json_path {p:?} is neither an object of column arrays nor an array of records"
                ));
            }
            p.to_owned()
        }
        None => {
            let mut found = Vec::new();
            find_column_objects(&root, String::new(), &mut found);
            match found.as_slice() {
                [p] => p.clone(),
                [] => {
                    return Err(
                        "no object of column arrays (members that are arrays of one length) in the document; set json_path, or use format = \"ndjson\" for one object per line"
                            .into(),
                    );
                }
                many => {
                    return Err(format!(
                        "several objects of column arrays ({}); choose one with json_path",
                        many.join(", ")
                    ));
                }
            }
        }
    };
    let Some(Value::Object(object)) = root.pointer_mut(&pointer_of(&path)).map(Value::take) else {
        return Err(format!(
            "json_path {path:?} is not an object of column arrays"
        ));
    };
    let mut names = Vec::new();
    let mut values = Vec::new();
    let mut rows = None;
    for (name, v) in object {
        let Value::Array(items) = v else {
            return Err(format!("{path}.{name} is not an array"));
        };
        match rows {
            None => rows = Some(items.len()),
            Some(n) if n != items.len() => {
                return Err(format!(
                    "{path}.{name} has {} values, the columns before it {n}",
                    items.len()
                ));
            }
            Some(_) => {}
        }
        names.push(name);
        values.push(items);
    }
    Ok(with_scalars(names, values, rows.unwrap_or(0), scalars))
}

/// The columns `names`/`values` of `rows` rows, and each of the document's top-level
/// `scalars` no column is named after, repeated on every row.
fn with_scalars(
    mut names: Vec<String>,
    mut values: Vec<Vec<Value>>,
    rows: usize,
    scalars: Vec<(String, Value)>,
) -> Columns {
    for (name, v) in scalars {
        if !names.contains(&name) {
            names.push(name);
            values.push(vec![v; rows]);
        }
    }
    Columns {
        names,
        values,
        rows,
    }
}

/// The JSON pointer of a dotted path.
fn pointer_of(path: &str) -> String {
    path.split('.')
        .map(|part| format!("/{}", part.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The columns of an array of records (objects; a null is a row of nulls): one column per
/// member name, in the order names first appear, null where a record lacks it; the document's
/// top-level `scalars` repeated on every row.
fn records(items: Value, scalars: Vec<(String, Value)>, what: &str) -> Result<Columns, String> {
    let Value::Array(items) = items else {
        return Err(format!("{what} is not an array of records"));
    };
    let rows = items.len();
    let mut names: Vec<String> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = Default::default();
    let mut values: Vec<Vec<Value>> = Vec::new();
    for (row, item) in items.into_iter().enumerate() {
        let fields = match item {
            Value::Object(o) => o,
            Value::Null => continue,
            other => {
                return Err(format!(
                    "{what}: record {row} is not an object but {}",
                    other.to_string().chars().take(40).collect::<String>()
                ));
            }
        };
        for (name, v) in fields {
            let col = *index.entry(name.clone()).or_insert_with(|| {
                names.push(name);
                values.push(vec![Value::Null; rows]);
                values.len() - 1
            });
            values[col][row] = v;
        }
    }
    Ok(with_scalars(names, values, rows, scalars))
}

/// The dotted paths of the objects whose members are all arrays of one length.
fn find_column_objects(v: &Value, path: String, found: &mut Vec<String>) {
    let Value::Object(o) = v else { return };
    let mut lens = o.values().map(|m| m.as_array().map(Vec::len));
    if !o.is_empty()
        && let Some(Some(first)) = lens.next()
        && lens.all(|l| l == Some(first))
    {
        found.push(path);
        return;
    }
    for (k, m) in o {
        let p = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        find_column_objects(m, p, found);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Null,
    Bool,
    Int,
    Float,
    Text,
}

fn kind_of(v: &Value) -> Kind {
    match v {
        Value::Null => Kind::Null,
        Value::Bool(_) => Kind::Bool,
        Value::Number(n) if n.is_i64() => Kind::Int,
        Value::Number(_) => Kind::Float,
        _ => Kind::Text,
    }
}

fn join(a: Kind, b: Kind) -> Kind {
    match (a, b) {
        (Kind::Null, k) | (k, Kind::Null) => k,
        (x, y) if x == y => x,
        (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => Kind::Float,
        _ => Kind::Text,
    }
}

/// One schema for all documents and a batch per document.
pub(crate) fn to_batches(docs: Vec<Columns>) -> Result<(SchemaRef, Vec<RecordBatch>), String> {
    let mut names: Vec<String> = Vec::new();
    let mut kinds: Vec<Kind> = Vec::new();
    for d in &docs {
        for (name, vals) in d.names.iter().zip(&d.values) {
            let k = vals.iter().map(kind_of).fold(Kind::Null, join);
            match names.iter().position(|n| n == name) {
                Some(i) => kinds[i] = join(kinds[i], k),
                None => {
                    names.push(name.clone());
                    kinds.push(k);
                }
            }
        }
    }
    let fields: Vec<Field> = names
        .iter()
        .zip(&kinds)
        .map(|(n, k)| {
            let t = match k {
                Kind::Bool => DataType::Boolean,
                Kind::Int => DataType::Int64,
                Kind::Float => DataType::Float64,
                Kind::Null | Kind::Text => DataType::Utf8,
            };
            Field::new(n, t, true)
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let mut batches = Vec::with_capacity(docs.len());
    for d in docs {
        let cols: Vec<ArrayRef> = names
            .iter()
            .zip(&kinds)
            .map(|(name, kind)| {
                let vals = d.names.iter().position(|n| n == name).map(|i| &d.values[i]);
                build(*kind, vals, d.rows)
            })
            .collect();
        batches.push(RecordBatch::try_new(Arc::clone(&schema), cols).map_err(|e| e.to_string())?);
    }
    Ok((schema, batches))
}

fn build(kind: Kind, vals: Option<&Vec<Value>>, rows: usize) -> ArrayRef {
    let get = |i: usize| vals.map_or(&Value::Null, |v| &v[i]);
    match kind {
        Kind::Bool => {
            let mut b = BooleanBuilder::with_capacity(rows);
            (0..rows).for_each(|i| b.append_option(get(i).as_bool()));
            Arc::new(b.finish())
        }
        Kind::Int => {
            let mut b = Int64Builder::with_capacity(rows);
            (0..rows).for_each(|i| b.append_option(get(i).as_i64()));
            Arc::new(b.finish())
        }
        Kind::Float => {
            let mut b = Float64Builder::with_capacity(rows);
            (0..rows).for_each(|i| b.append_option(get(i).as_f64()));
            Arc::new(b.finish())
        }
        Kind::Null | Kind::Text => {
            let mut b = StringBuilder::with_capacity(rows, rows * 8);
            for i in 0..rows {
                match get(i) {
                    Value::Null => b.append_null(),
                    Value::String(s) => b.append_value(s),
                    other => b.append_value(other.to_string()),
                }
            }
            Arc::new(b.finish())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};

    #[test]
    fn finds_the_column_object_and_types_columns() {
        let doc = br#"{"latitude": 6.25, "timezone": "GMT", "hourly_units": {"time": "iso8601"},
            "hourly": {"time": ["2024-01-01T00:00", "2024-01-01T01:00"], "t": [1, 2.5], "n": [1, null]}}"#;
        let cols = columns(doc, None).unwrap();
        let (schema, batches) = to_batches(vec![cols]).unwrap();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["time", "t", "n", "latitude", "timezone"]);
        let b = &batches[0];
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(1).as_primitive::<Float64Type>().value(0), 1.0);
        assert_eq!(b.column(1).as_primitive::<Float64Type>().value(1), 2.5);
        assert!(b.column(2).as_primitive::<Int64Type>().is_null(1));
        assert_eq!(b.column(3).as_primitive::<Float64Type>().value(1), 6.25);
        assert_eq!(b.column(0).as_string::<i32>().value(1), "2024-01-01T01:00");
    }

    #[test]
    fn reads_arrays_of_records_at_the_path_or_as_the_document() {
        // A page of a paged API: records under `data`, a page number beside them.
        let page =
            br#"{"page": 2, "data": [{"id": 1, "name": "a"}, {"id": 2, "tier": "x"}, null]}"#;
        let cols = columns(page, Some("data")).unwrap();
        let whole = columns(br#"[{"id": 3, "name": "c", "extra": true}]"#, None).unwrap();
        let (schema, batches) = to_batches(vec![cols, whole]).unwrap();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "name", "tier", "page", "extra"]);
        let b = &batches[0];
        assert_eq!(b.num_rows(), 3);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(1), 2);
        assert!(b.column(1).is_null(1), "a member a record lacks is null");
        assert_eq!(b.column(2).as_string::<i32>().value(1), "x");
        assert!(b.column(0).is_null(2), "a null record is a row of nulls");
        assert_eq!(b.column(3).as_primitive::<Int64Type>().value(2), 2);
        assert_eq!(batches[1].column(1).as_string::<i32>().value(0), "c");
        let e = columns(br#"{"data": [1, 2]}"#, Some("data")).err().unwrap();
        assert!(e.contains("record 0 is not an object"), "{e}");
    }

    #[test]
    fn explains_what_is_wrong() {
        let e = columns(br#"{"a": {"x": [1, 2], "y": [1]}, "b": 1}"#, Some("a")).err();
        assert!(e.unwrap().contains("a.y has 1 values"));
        let e = columns(br#"{"a": {"x": [1]}, "b": {"y": [2]}}"#, None).err();
        assert!(e.unwrap().contains("several objects"));
        let e = columns(br#"{"a": 1}"#, None).err();
        assert!(e.unwrap().contains("no object of column arrays"));
        let e = columns(br#"{"a": 1}"#, Some("b.c")).err();
        assert!(e.unwrap().contains("no member \"b\""));
    }
}
