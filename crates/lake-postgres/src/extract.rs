//! Rows of a binary COPY as Arrow: a column builder per PostgreSQL type, a record batch every
//! [`BATCH`] rows (a [`ParquetSpool`](lake_local::spool::ParquetSpool) makes the files).

use std::sync::Arc;

use lake_core::chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use lake_local::engine::datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, ListBuilder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use lake_local::engine::datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit,
};
use lake_local::engine::datafusion::arrow::record_batch::RecordBatch;
use tokio_postgres::Column;
use tokio_postgres::binary_copy::BinaryCopyOutRow;
use tokio_postgres::types::{FromSql, Type};

/// Rows per record batch.
const BATCH: usize = 8192;

/// How one column is read and built.
enum Builder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    /// `numeric(p, s)` with p ≤ 38: exact decimals.
    Decimal(Decimal128Builder, i8),
    /// Text, and the types kept as their exact text: unconstrained `numeric`, `json`, `jsonb`,
    /// `uuid`.
    Text(StringBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
    TimestampTz(TimestampMicrosecondBuilder),
    Bytes(BinaryBuilder),
    ListBool(ListBuilder<BooleanBuilder>),
    ListI32(ListBuilder<Int32Builder>),
    ListI64(ListBuilder<Int64Builder>),
    ListF64(ListBuilder<Float64Builder>),
    ListText(ListBuilder<StringBuilder>),
}

/// The Arrow type and builder of a column, or why it cannot be extracted.
fn builder(c: &Column) -> Result<(DataType, Builder), String> {
    let t = c.type_();
    let list = |inner: DataType| DataType::List(Arc::new(Field::new("item", inner, true)));
    Ok(match *t {
        Type::BOOL => (DataType::Boolean, Builder::Bool(BooleanBuilder::new())),
        Type::INT2 => (DataType::Int16, Builder::I16(Int16Builder::new())),
        Type::INT4 => (DataType::Int32, Builder::I32(Int32Builder::new())),
        Type::INT8 => (DataType::Int64, Builder::I64(Int64Builder::new())),
        Type::FLOAT4 => (DataType::Float32, Builder::F32(Float32Builder::new())),
        Type::FLOAT8 => (DataType::Float64, Builder::F64(Float64Builder::new())),
        Type::NUMERIC => match numeric_typmod(c.type_modifier()) {
            Some((p, s)) if p <= 38 => {
                let b = Decimal128Builder::new()
                    .with_precision_and_scale(p, s)
                    .map_err(|e| e.to_string())?;
                (DataType::Decimal128(p, s), Builder::Decimal(b, s))
            }
            _ => (DataType::Utf8, Builder::Text(StringBuilder::new())),
        },
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::JSON
        | Type::JSONB
        | Type::UUID => (DataType::Utf8, Builder::Text(StringBuilder::new())),
        Type::DATE => (DataType::Date32, Builder::Date(Date32Builder::new())),
        Type::TIMESTAMP => (
            DataType::Timestamp(TimeUnit::Microsecond, None),
            Builder::Timestamp(TimestampMicrosecondBuilder::new()),
        ),
        Type::TIMESTAMPTZ => (
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Builder::TimestampTz(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
        ),
        Type::BYTEA => (DataType::Binary, Builder::Bytes(BinaryBuilder::new())),
        Type::BOOL_ARRAY => (
            list(DataType::Boolean),
            Builder::ListBool(ListBuilder::new(BooleanBuilder::new())),
        ),
        Type::INT2_ARRAY | Type::INT4_ARRAY => (
            list(DataType::Int32),
            Builder::ListI32(ListBuilder::new(Int32Builder::new())),
        ),
        Type::INT8_ARRAY => (
            list(DataType::Int64),
            Builder::ListI64(ListBuilder::new(Int64Builder::new())),
        ),
        Type::FLOAT4_ARRAY | Type::FLOAT8_ARRAY => (
            list(DataType::Float64),
            Builder::ListF64(ListBuilder::new(Float64Builder::new())),
        ),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => (
            list(DataType::Utf8),
            Builder::ListText(ListBuilder::new(StringBuilder::new())),
        ),
        _ => {
            return Err(format!(
                "column {} has type {}, which lake does not extract yet: CAST it to text (or another type) in `query`",
                c.name(),
                t.name()
            ));
        }
    })
}

/// `numeric(p, s)` from a type modifier (`-1`: unconstrained).
fn numeric_typmod(m: i32) -> Option<(u8, i8)> {
    (m >= 4).then(|| {
        let m = m - 4;
        (((m >> 16) & 0xffff) as u8, (m & 0xffff) as i8)
    })
}

/// A value read as its exact text: `numeric` (PostgreSQL's own rendering), `json`, `jsonb`,
/// `uuid`, and the text types; borrowed from the row where the wire form is the text.
struct Exact<'a>(std::borrow::Cow<'a, str>);

impl<'a> FromSql<'a> for Exact<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        use std::borrow::Cow;
        Ok(Exact(match *ty {
            Type::NUMERIC => Cow::Owned(numeric_text(raw)?),
            // jsonb's binary form is a version byte, then the text.
            Type::JSONB => Cow::Borrowed(std::str::from_utf8(raw.get(1..).unwrap_or_default())?),
            Type::UUID => {
                let h: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                if h.len() != 32 {
                    return Err("a uuid is 16 bytes".into());
                }
                Cow::Owned(format!(
                    "{}-{}-{}-{}-{}",
                    &h[..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..]
                ))
            }
            _ => Cow::Borrowed(std::str::from_utf8(raw)?),
        }))
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::NUMERIC
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
                | Type::JSON
                | Type::JSONB
                | Type::UUID
        )
    }
}

/// The decimal text of a binary `numeric`: digit groups of base 10,000, a weight (the power
/// of 10,000 of the first group), a sign and the display scale.
fn numeric_text(
    raw: &[u8],
) -> std::result::Result<String, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> std::result::Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        Ok(u16::from_be_bytes(
            raw.get(i..i + 2).ok_or("a short numeric")?.try_into()?,
        ))
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    let dscale = word(6)? as usize;
    match sign {
        0xC000 => return Ok("NaN".into()),
        0xD000 => return Ok("Infinity".into()),
        0xF000 => return Ok("-Infinity".into()),
        _ => {}
    }
    let digits: Vec<u16> = (0..ndigits)
        .map(|i| word(8 + 2 * i))
        .collect::<std::result::Result<_, _>>()?;
    let group = |i: i32| -> u16 {
        usize::try_from(i)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    // Integer part: groups 0..=weight.
    let mut int = String::new();
    for g in 0..=weight.max(-1) {
        if g < 0 {
            break;
        }
        let d = group(g);
        if int.is_empty() {
            if d != 0 {
                int = d.to_string();
            }
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    if int.is_empty() {
        int.push('0');
    }
    // Fraction: the groups after `weight`, cut to the display scale.
    let mut frac = String::new();
    let mut g = weight + 1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", group(g)));
        g += 1;
    }
    frac.truncate(dscale);
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    out.push_str(&int);
    if dscale > 0 {
        out.push('.');
        out.push_str(&frac);
    }
    Ok(out)
}

/// The unscaled value of decimal text at `scale` (exact: the column's typmod fixes the
/// scale).
/// A `numeric` in its binary form (base-10000 digit groups) as an unscaled integer at `scale`
/// (12.50 at scale 2 is 1250), without going through text. A value with more fractional
/// digits than `scale` (impossible in a `numeric(p, s)` column) or out of i128 is an error, as
/// are NaN and the infinities.
fn numeric_unscaled(raw: &[u8], scale: i8) -> Result<i128, String> {
    let word = |i: usize| -> Result<u16, String> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "a short numeric".to_owned())
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(2)? as i16);
    let sign = word(4)?;
    let finite = || {
        format!(
            "{:?} is not a finite decimal",
            numeric_text(raw).unwrap_or_default()
        )
    };
    if sign != 0 && sign != 0x4000 {
        return Err(finite());
    }
    let overflow = || {
        format!(
            "{} does not fit a decimal",
            numeric_text(raw).unwrap_or_default()
        )
    };
    let mut acc: i128 = 0;
    for k in 0..ndigits {
        let group = i128::from(word(8 + 2 * k)?);
        acc = acc
            .checked_mul(10_000)
            .and_then(|a| a.checked_add(group))
            .ok_or_else(overflow)?;
    }
    // acc × 10000^(weight − ndigits + 1) is the value; × 10^scale is the unscaled integer.
    let exp = 4 * (weight - ndigits as i32 + 1) + i32::from(scale);
    let v = if exp >= 0 {
        10i128
            .checked_pow(exp as u32)
            .and_then(|p| acc.checked_mul(p))
            .ok_or_else(overflow)?
    } else {
        let p = 10i128.checked_pow(exp.unsigned_abs()).unwrap_or(i128::MAX);
        if acc % p != 0 {
            return Err(format!(
                "{} has more than {scale} decimal places",
                numeric_text(raw).unwrap_or_default()
            ));
        }
        acc / p
    };
    Ok(if sign == 0x4000 { -v } else { v })
}

/// A `numeric` as its wire bytes, borrowed from the row.
struct RawNumeric<'a>(&'a [u8]);

impl<'a> FromSql<'a> for RawNumeric<'a> {
    fn from_sql(
        _: &Type,
        raw: &'a [u8],
    ) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawNumeric(raw))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

#[cfg(test)]
fn unscaled(text: &str, scale: i8) -> Result<i128, String> {
    let (neg, digits) = match text.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = usize::try_from(scale).unwrap_or(0);
    let mut s = int.to_owned();
    let mut f = frac.to_owned();
    f.truncate(scale);
    while f.len() < scale {
        f.push('0');
    }
    s.push_str(&f);
    let v: i128 = s
        .parse()
        .map_err(|_| format!("{text:?} is not a finite decimal"))?;
    Ok(if neg { -v } else { v })
}

fn get<'a, T: FromSql<'a>>(row: &'a BinaryCopyOutRow, i: usize) -> Result<Option<T>, String> {
    row.try_get::<Option<T>>(i).map_err(|e| e.to_string())
}

/// 1970-01-01, for Date32 days.
fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("a date")
}

impl Builder {
    fn push(&mut self, row: &BinaryCopyOutRow, i: usize) -> Result<(), String> {
        match self {
            Self::Bool(b) => b.append_option(get::<bool>(row, i)?),
            Self::I16(b) => b.append_option(get::<i16>(row, i)?),
            Self::I32(b) => b.append_option(get::<i32>(row, i)?),
            Self::I64(b) => b.append_option(get::<i64>(row, i)?),
            Self::F32(b) => b.append_option(get::<f32>(row, i)?),
            Self::F64(b) => b.append_option(get::<f64>(row, i)?),
            Self::Decimal(b, scale) => match get::<RawNumeric>(row, i)? {
                Some(RawNumeric(raw)) => b.append_value(numeric_unscaled(raw, *scale)?),
                None => b.append_null(),
            },
            Self::Text(b) => b.append_option(get::<Exact>(row, i)?.map(|e| e.0)),
            Self::Date(b) => b.append_option(
                get::<NaiveDate>(row, i)?
                    .map(|d| d.signed_duration_since(epoch()).num_days() as i32),
            ),
            Self::Timestamp(b) => b.append_option(
                get::<NaiveDateTime>(row, i)?.map(|t| t.and_utc().timestamp_micros()),
            ),
            Self::TimestampTz(b) => {
                b.append_option(get::<DateTime<Utc>>(row, i)?.map(|t| t.timestamp_micros()))
            }
            Self::Bytes(b) => b.append_option(get::<&[u8]>(row, i)?),
            Self::ListBool(b) => b.append_option(get::<Vec<Option<bool>>>(row, i)?),
            Self::ListI32(b) => {
                // int2[] and int4[] both land as 32-bit lists.
                let v = match row.try_get::<Option<Vec<Option<i32>>>>(i) {
                    Ok(v) => v,
                    Err(_) => get::<Vec<Option<i16>>>(row, i)?
                        .map(|v| v.into_iter().map(|x| x.map(i32::from)).collect()),
                };
                b.append_option(v)
            }
            Self::ListI64(b) => b.append_option(get::<Vec<Option<i64>>>(row, i)?),
            Self::ListF64(b) => {
                let v = match row.try_get::<Option<Vec<Option<f64>>>>(i) {
                    Ok(v) => v,
                    Err(_) => get::<Vec<Option<f32>>>(row, i)?
                        .map(|v| v.into_iter().map(|x| x.map(f64::from)).collect()),
                };
                b.append_option(v)
            }
            Self::ListText(b) => b.append_option(get::<Vec<Option<String>>>(row, i)?),
        }
        Ok(())
    }

    /// The builder behind the column, for what every builder does alike.
    fn array(&mut self) -> &mut dyn ArrayBuilder {
        match self {
            Self::Bool(b) => b,
            Self::I16(b) => b,
            Self::I32(b) => b,
            Self::I64(b) => b,
            Self::F32(b) => b,
            Self::F64(b) => b,
            Self::Decimal(b, _) => b,
            Self::Text(b) => b,
            Self::Date(b) => b,
            Self::Timestamp(b) | Self::TimestampTz(b) => b,
            Self::Bytes(b) => b,
            Self::ListBool(b) => b,
            Self::ListI32(b) => b,
            Self::ListI64(b) => b,
            Self::ListF64(b) => b,
            Self::ListText(b) => b,
        }
    }

    fn finish(&mut self) -> ArrayRef {
        self.array().finish()
    }

    fn len(&mut self) -> usize {
        self.array().len()
    }
}

/// PostgreSQL's rows as Arrow record batches of [`BATCH`] rows, handed to a [`ParquetSpool`].
pub(crate) struct Extract {
    schema: SchemaRef,
    builders: Vec<Builder>,
}

impl Extract {
    /// An extract of `columns`: its schema, or why a column cannot be extracted.
    pub(crate) fn new(columns: &[Column]) -> Result<Self, String> {
        let mut fields = Vec::new();
        let mut builders = Vec::new();
        for c in columns {
            let (t, b) = builder(c)?;
            fields.push(Field::new(c.name(), t, true));
            builders.push(b);
        }
        Ok(Self {
            schema: Arc::new(Schema::new(fields)),
            builders,
        })
    }

    /// The Arrow schema of the rows.
    pub(crate) fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Add one row; every [`BATCH`] rows, the batch they make.
    pub(crate) fn push(&mut self, row: &BinaryCopyOutRow) -> Result<Option<RecordBatch>, String> {
        for (i, b) in self.builders.iter_mut().enumerate() {
            b.push(row, i)
                .map_err(|m| format!("column {}: {m}", self.schema.field(i).name()))?;
        }
        if self.builders.first_mut().map_or(0, Builder::len) >= BATCH {
            return self.batch().map(Some);
        }
        Ok(None)
    }

    /// The rows built since the last batch (maybe none).
    pub(crate) fn batch(&mut self) -> Result<RecordBatch, String> {
        if self.builders.is_empty() {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(Builder::finish).collect();
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits, weight as u16, sign, dscale] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numerics_are_read_exactly() {
        // 12345.6789 = groups [1, 2345, 6789], weight 1.
        assert_eq!(
            numeric_text(&numeric(3, 1, 0, 4, &[1, 2345, 6789])).unwrap(),
            "12345.6789"
        );
        // -0.05 = group [500] at weight -1, scale 2.
        assert_eq!(
            numeric_text(&numeric(1, -1, 0x4000, 2, &[500])).unwrap(),
            "-0.05"
        );
        // 100000000 = [1, 0, 0] weight 2, no trailing groups stored: [1] weight 2.
        assert_eq!(
            numeric_text(&numeric(1, 2, 0, 0, &[1])).unwrap(),
            "100000000"
        );
        assert_eq!(numeric_text(&numeric(0, 0, 0, 3, &[])).unwrap(), "0.000");
        assert_eq!(numeric_text(&numeric(0, 0, 0xC000, 0, &[])).unwrap(), "NaN");
        assert_eq!(unscaled("-12.5", 3), Ok(-12500));
        // Straight from the digit groups, as through the text.
        for (raw, scale) in [
            (numeric(3, 1, 0, 4, &[1, 2345, 6789]), 4),
            (numeric(3, 1, 0, 4, &[1, 2345, 6789]), 6),
            (numeric(1, -1, 0x4000, 2, &[500]), 2),
            (numeric(1, 2, 0, 0, &[1]), 0),
            (numeric(1, 2, 0, 0, &[1]), 3),
            (numeric(0, 0, 0, 3, &[]), 3),
            (numeric(2, 0, 0, 2, &[12, 5000]), 2),
            (numeric(1, -2, 0, 8, &[12]), 8),
        ] {
            let text = numeric_text(&raw).unwrap();
            assert_eq!(
                numeric_unscaled(&raw, scale),
                unscaled(&text, scale),
                "{text}"
            );
        }
        assert_eq!(
            numeric_unscaled(&numeric(2, 0, 0, 2, &[12, 5000]), 2),
            Ok(1250)
        );
        assert!(
            numeric_unscaled(&numeric(2, 0, 0, 4, &[12, 5001]), 2)
                .unwrap_err()
                .contains("more than 2 decimal places")
        );
        assert!(
            numeric_unscaled(&numeric(0, 0, 0xC000, 0, &[]), 2)
                .unwrap_err()
                .contains("not a finite decimal")
        );
        assert!(
            numeric_unscaled(&numeric(11, 10, 0, 0, &[9999; 11]), 2)
                .unwrap_err()
                .contains("does not fit")
        );
        assert_eq!(unscaled("7", 2), Ok(700));
        assert_eq!(numeric_typmod(-1), None);
        assert_eq!(numeric_typmod(((12 << 16) | 2) + 4), Some((12, 2)));
    }
}
