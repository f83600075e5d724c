//! Arrow columns as PostgreSQL columns: the type a new table gets, whether an existing table's
//! column can take a dataset's, and the values in COPY's binary format.

use std::sync::Arc;

use bytes::BytesMut;
use lake_local::engine::datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions,
};
use lake_local::engine::datafusion::arrow::compute::cast;
use lake_local::engine::datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Schema, Time64MicrosecondType, TimeUnit, TimestampMicrosecondType,
};
use lake_local::engine::datafusion::arrow::error::ArrowError;
use postgres_protocol::types as pg;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// Days from 1970-01-01 (Arrow) to 2000-01-01 (PostgreSQL).
const PG_EPOCH_DAYS: i32 = 10_957;
/// Microseconds from 1970-01-01 to 2000-01-01.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// How one dataset column is loaded: its PostgreSQL type, and the Arrow type its values are
/// cast to before they are encoded.
#[derive(Debug, Clone)]
pub(crate) struct Column {
    /// The column name.
    pub(crate) name: String,
    /// The dataset's Arrow type.
    pub(crate) source: DataType,
    /// The PostgreSQL type COPY sends.
    pub(crate) pg: Type,
    /// The column's SQL type in a new table (`numeric(10,2)`).
    pub(crate) ddl: String,
}

impl Column {
    /// The Arrow type the values are cast to for `self.pg`.
    fn encoded(&self) -> DataType {
        encoded_type(&self.source, &self.pg)
    }
}

/// The PostgreSQL type and DDL of an Arrow type, or `None` when lake cannot load it.
pub(crate) fn pg_type(dt: &DataType) -> Option<(Type, String)> {
    use DataType as D;
    let t = |ty: Type, ddl: &str| Some((ty, ddl.to_owned()));
    match dt {
        D::Boolean => t(Type::BOOL, "boolean"),
        D::Int8 | D::Int16 | D::UInt8 => t(Type::INT2, "smallint"),
        D::Int32 | D::UInt16 => t(Type::INT4, "integer"),
        D::Int64 | D::UInt32 => t(Type::INT8, "bigint"),
        D::UInt64 => t(Type::NUMERIC, "numeric(20,0)"),
        D::Float16 | D::Float32 => t(Type::FLOAT4, "real"),
        D::Float64 => t(Type::FLOAT8, "double precision"),
        D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) if *s >= 0 => {
            Some((Type::NUMERIC, format!("numeric({p},{s})")))
        }
        D::Decimal256(p, s) if *p <= 38 && *s >= 0 => {
            Some((Type::NUMERIC, format!("numeric({p},{s})")))
        }
        D::Utf8 | D::LargeUtf8 | D::Utf8View | D::Null => t(Type::TEXT, "text"),
        D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => {
            t(Type::BYTEA, "bytea")
        }
        D::Date32 | D::Date64 => t(Type::DATE, "date"),
        D::Timestamp(_, None) => t(Type::TIMESTAMP, "timestamp"),
        D::Timestamp(_, Some(_)) => t(Type::TIMESTAMPTZ, "timestamptz"),
        D::Time32(_) | D::Time64(_) => t(Type::TIME, "time"),
        D::Dictionary(_, v) => pg_type(v),
        D::List(_)
        | D::LargeList(_)
        | D::FixedSizeList(..)
        | D::ListView(_)
        | D::LargeListView(_)
        | D::Struct(_)
        | D::Map(..) => t(Type::JSONB, "jsonb"),
        _ => None,
    }
}

/// True when a column of type `table` takes the values of an Arrow `dt` column without loss:
/// its own type, or a wider one (an integer into a wider integer or numeric, real into double
/// precision, text into varchar, a timestamp into timestamptz is not: the zone would be made up).
pub(crate) fn fits(dt: &DataType, table: &Type) -> bool {
    let Some((own, _)) = pg_type(dt) else {
        return false;
    };
    if own == *table {
        return true;
    }
    let wider: &[Type] = match own {
        Type::INT2 => &[Type::INT4, Type::INT8, Type::NUMERIC, Type::FLOAT8],
        Type::INT4 => &[Type::INT8, Type::NUMERIC, Type::FLOAT8],
        Type::INT8 => &[Type::NUMERIC],
        Type::FLOAT4 => &[Type::FLOAT8],
        Type::TEXT => &[Type::VARCHAR, Type::BPCHAR],
        Type::JSONB => &[Type::JSON],
        _ => &[],
    };
    wider.contains(table)
}

/// The Arrow type a `dt` column is cast to before its values go out as `pg`.
fn encoded_type(dt: &DataType, pg: &Type) -> DataType {
    use DataType as D;
    match *pg {
        Type::BOOL => D::Boolean,
        Type::INT2 => D::Int16,
        Type::INT4 => D::Int32,
        Type::INT8 => D::Int64,
        Type::FLOAT4 => D::Float32,
        Type::FLOAT8 => D::Float64,
        Type::NUMERIC => match dt {
            D::Decimal32(_, s) | D::Decimal64(_, s) | D::Decimal128(_, s) | D::Decimal256(_, s) => {
                D::Decimal128(38, *s)
            }
            _ => D::Decimal128(38, 0),
        },
        Type::BYTEA => D::Binary,
        Type::DATE => D::Date32,
        Type::TIMESTAMP => D::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => D::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        Type::TIME => D::Time64(TimeUnit::Microsecond),
        // Text, and JSON (written by lake from the nested values).
        _ => D::Utf8,
    }
}

/// The columns of `schema` as PostgreSQL columns; an error names each column lake cannot load.
pub(crate) fn columns(schema: &Schema) -> Result<Vec<Column>, String> {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for f in schema.fields() {
        match pg_type(f.data_type()) {
            Some((pg, ddl)) => out.push(Column {
                name: f.name().clone(),
                source: f.data_type().clone(),
                pg,
                ddl,
            }),
            None => bad.push(format!("{} ({})", f.name(), f.data_type())),
        }
    }
    if bad.is_empty() {
        Ok(out)
    } else {
        Err(format!(
            "no PostgreSQL type for column {}: cast it in the step's SQL",
            bad.join(", ")
        ))
    }
}

/// `batch`'s columns cast to what `columns` send, nested ones as JSON text.
pub(crate) fn encode_batch(batch: &RecordBatch, columns: &[Column]) -> Result<Encoded, ArrowError> {
    let mut arrays = Vec::with_capacity(columns.len());
    for (c, array) in columns.iter().zip(batch.columns()) {
        let array = if matches!(c.pg, Type::JSONB | Type::JSON) {
            json_column(&c.name, array)?
        } else {
            let target = c.encoded();
            if array.data_type() == &target {
                Arc::clone(array)
            } else {
                cast(array, &target)?
            }
        };
        arrays.push(array);
    }
    Ok(Encoded {
        arrays,
        types: columns.iter().map(|c| c.pg.clone()).collect(),
        rows: batch.num_rows(),
    })
}

/// Nested values as JSON text, one per row (null stays null).
fn json_column(name: &str, array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    use lake_local::engine::datafusion::arrow::array::StringArray;
    use lake_local::engine::datafusion::arrow::json::LineDelimitedWriter;
    let schema = Arc::new(Schema::new(vec![Field::new(
        name,
        array.data_type().clone(),
        true,
    )]));
    let one = RecordBatch::try_new_with_options(
        schema,
        vec![Arc::clone(array)],
        &RecordBatchOptions::new().with_row_count(Some(array.len())),
    )?;
    let mut buf = Vec::new();
    {
        let mut w = LineDelimitedWriter::new(&mut buf);
        w.write(&one)?;
        w.finish()?;
    }
    let text = String::from_utf8(buf).map_err(|e| ArrowError::JsonError(e.to_string()))?;
    let mut values = Vec::with_capacity(array.len());
    for (i, line) in text.lines().enumerate() {
        if array.is_null(i) {
            values.push(None);
            continue;
        }
        let mut row: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| ArrowError::JsonError(e.to_string()))?;
        values.push(row.remove(name).map(|v| v.to_string()));
    }
    Ok(Arc::new(StringArray::from(values)))
}

/// A batch ready to be written row by row.
pub(crate) struct Encoded {
    arrays: Vec<ArrayRef>,
    types: Vec<Type>,
    /// Rows in the batch.
    pub(crate) rows: usize,
}

impl Encoded {
    /// Row `i`'s values.
    pub(crate) fn row(&self, i: usize) -> impl ExactSizeIterator<Item = Cell<'_>> {
        self.arrays
            .iter()
            .zip(&self.types)
            .map(move |(a, ty)| Cell::of(a, ty, i))
    }
}

/// One value in COPY's binary format.
#[derive(Debug)]
pub(crate) enum Cell<'a> {
    Null,
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    Text(&'a str),
    Json(&'a str),
    Bytes(&'a [u8]),
    Date(i32),
    Timestamp(i64),
    Time(i64),
    Numeric(i128, i8),
}

impl<'a> Cell<'a> {
    fn of(a: &'a ArrayRef, ty: &Type, i: usize) -> Self {
        if a.is_null(i) {
            return Cell::Null;
        }
        match *ty {
            Type::BOOL => Cell::Bool(a.as_boolean().value(i)),
            Type::INT2 => Cell::I16(a.as_primitive::<Int16Type>().value(i)),
            Type::INT4 => Cell::I32(a.as_primitive::<Int32Type>().value(i)),
            Type::INT8 => Cell::I64(a.as_primitive::<Int64Type>().value(i)),
            Type::FLOAT4 => Cell::F32(a.as_primitive::<Float32Type>().value(i)),
            Type::FLOAT8 => Cell::F64(a.as_primitive::<Float64Type>().value(i)),
            Type::NUMERIC => {
                let d = a.as_primitive::<Decimal128Type>();
                Cell::Numeric(d.value(i), d.scale())
            }
            Type::BYTEA => Cell::Bytes(a.as_binary::<i32>().value(i)),
            Type::DATE => Cell::Date(a.as_primitive::<Date32Type>().value(i)),
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                Cell::Timestamp(a.as_primitive::<TimestampMicrosecondType>().value(i))
            }
            Type::TIME => Cell::Time(a.as_primitive::<Time64MicrosecondType>().value(i)),
            Type::JSONB | Type::JSON => Cell::Json(a.as_string::<i32>().value(i)),
            _ => Cell::Text(a.as_string::<i32>().value(i)),
        }
    }
}

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Cell::Null => return Ok(IsNull::Yes),
            Cell::Bool(v) => pg::bool_to_sql(v, out),
            Cell::I16(v) => pg::int2_to_sql(v, out),
            Cell::I32(v) => pg::int4_to_sql(v, out),
            Cell::I64(v) => pg::int8_to_sql(v, out),
            Cell::F32(v) => pg::float4_to_sql(v, out),
            Cell::F64(v) => pg::float8_to_sql(v, out),
            Cell::Text(v) => pg::text_to_sql(v, out),
            Cell::Json(v) => {
                // jsonb's binary format is a version byte, then the text; json's is the text.
                if *ty == Type::JSONB {
                    out.extend_from_slice(&[1]);
                }
                pg::text_to_sql(v, out);
            }
            Cell::Bytes(v) => pg::bytea_to_sql(v, out),
            Cell::Date(days) => pg::date_to_sql(days - PG_EPOCH_DAYS, out),
            Cell::Timestamp(us) => pg::timestamp_to_sql(us - PG_EPOCH_MICROS, out),
            Cell::Time(us) => pg::time_to_sql(us, out),
            Cell::Numeric(v, scale) => numeric_to_sql(v, scale, out),
        }
        Ok(IsNull::No)
    }

    // The types were checked against the table before the first row.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// `v × 10^-scale` in `numeric`'s binary format: digit count, weight (of the first base-10000
/// digit), sign, display scale, then the base-10000 digits.
fn numeric_to_sql(v: i128, scale: i8, out: &mut BytesMut) {
    let scale = u32::try_from(scale).unwrap_or(0);
    let abs = v.unsigned_abs();
    let pow = 10u128.pow(scale);
    let (mut int, frac) = (abs / pow, abs % pow);
    let mut int_digits = Vec::new();
    while int > 0 {
        int_digits.push((int % 10_000) as i16);
        int /= 10_000;
    }
    int_digits.reverse();
    // The fraction, padded to whole base-10000 digits.
    let groups = scale.div_ceil(4);
    let mut frac = frac * 10u128.pow(groups * 4 - scale);
    let mut frac_digits = vec![0i16; groups as usize];
    for d in frac_digits.iter_mut().rev() {
        *d = (frac % 10_000) as i16;
        frac /= 10_000;
    }
    let mut weight = i16::try_from(int_digits.len()).unwrap_or(i16::MAX) - 1;
    let mut digits: Vec<i16> = int_digits.into_iter().chain(frac_digits).collect();
    // Leading zeros move the weight; trailing zeros are implied by the display scale.
    let lead = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..lead);
    weight -= i16::try_from(lead).unwrap_or(0);
    while digits.last() == Some(&0) {
        digits.pop();
    }
    if digits.is_empty() {
        weight = 0;
    }
    let sign: u16 = if v < 0 && !digits.is_empty() {
        0x4000
    } else {
        0
    };
    out.extend_from_slice(&(digits.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(scale as u16).to_be_bytes());
    for d in digits {
        out.extend_from_slice(&d.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(v: i128, scale: i8) -> Vec<i16> {
        let mut out = BytesMut::new();
        numeric_to_sql(v, scale, &mut out);
        out.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numerics_are_base_10000_digits_with_weight_sign_and_scale() {
        // 12345.67: digits 1 2345 6700, weight 1, scale 2.
        assert_eq!(numeric(1_234_567, 2), [3, 1, 0, 2, 1, 2345, 6700]);
        // -0.05: one digit 500 at weight -1.
        assert_eq!(numeric(-5, 2), [1, -1, 0x4000, 2, 500]);
        // 10000: digit 1 at weight 1, the zero digit implied.
        assert_eq!(numeric(10_000, 0), [1, 1, 0, 0, 1]);
        assert_eq!(numeric(0, 3), [0, 0, 0, 3]);
    }

    #[test]
    fn wider_columns_fit_and_narrower_or_other_ones_do_not() {
        assert!(fits(&DataType::Int32, &Type::INT8));
        assert!(fits(&DataType::Utf8View, &Type::VARCHAR));
        assert!(!fits(&DataType::Int64, &Type::INT4));
        assert!(!fits(&DataType::Float64, &Type::NUMERIC));
        assert!(!fits(
            &DataType::Timestamp(TimeUnit::Microsecond, None),
            &Type::TIMESTAMPTZ
        ));
    }
}
