//! Arrow types (as lake's Parquet files carry them) as Iceberg types, the widening rule, and
//! column bounds as Iceberg values.

use arrow_array::{Array, ArrayRef, cast::AsArray, types as at};
use arrow_schema::{DataType, TimeUnit};
use iceberg::spec::{Datum, PrimitiveType, Type};

/// The Iceberg type of column `name`; an error names a type Iceberg v2 tables cannot hold.
pub(crate) fn iceberg_type(name: &str, t: &DataType) -> Result<Type, String> {
    use PrimitiveType as P;
    let p = match t {
        DataType::Boolean => P::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 | DataType::UInt16 => {
            P::Int
        }
        DataType::Int64 | DataType::UInt32 => P::Long,
        DataType::Float16 | DataType::Float32 => P::Float,
        DataType::Float64 => P::Double,
        DataType::Decimal128(p, s) if *s >= 0 => P::Decimal {
            precision: u32::from(*p),
            scale: *s as u32,
        },
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => P::String,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => P::Binary,
        DataType::FixedSizeBinary(n) if *n >= 0 => P::Fixed(*n as u64),
        DataType::Date32 | DataType::Date64 => P::Date,
        DataType::Time64(TimeUnit::Microsecond) => P::Time,
        DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Millisecond, None) => P::Timestamp,
        DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Millisecond, Some(_)) => {
            P::Timestamptz
        }
        other => {
            return Err(format!(
                "column {name} is {other}, which lake does not write to Iceberg tables yet (flat columns of numbers, decimals, text, binary, dates, times and timestamps); cast it in the step's SQL or set table_format = \"parquet\" on the step"
            ));
        }
    };
    Ok(Type::Primitive(p))
}

/// Whether a column of type `old` in the table can hold `new`: the same type, or Iceberg's
/// allowed promotions (int to long, float to double, a decimal's precision up, same scale).
pub(crate) fn widens(old: &Type, new: &Type) -> bool {
    use PrimitiveType as P;
    match (old, new) {
        (Type::Primitive(o), Type::Primitive(n)) => {
            o == n
                || matches!((o, n), (P::Int, P::Long) | (P::Float, P::Double))
                || matches!(
                    (o, n),
                    (P::Decimal { precision: po, scale: so }, P::Decimal { precision: pn, scale: sn })
                        if so == sn && pn >= po
                )
        }
        _ => old == new,
    }
}

/// The smallest (`min`) or largest value of per-row-group bounds `a`, as an Iceberg value of
/// type `p`; `None` where a group has none or the type is not one lake bounds.
pub(crate) fn bound(a: &ArrayRef, p: &PrimitiveType, min: bool) -> Option<Datum> {
    if a.is_empty() || a.null_count() > 0 {
        return None;
    }
    fn pick<T: PartialOrd + Copy>(v: impl Iterator<Item = T>, min: bool) -> Option<T> {
        v.reduce(|x, y| if (y < x) == min { y } else { x })
    }
    use PrimitiveType as P;
    Some(match (p, a.data_type()) {
        (P::Boolean, DataType::Boolean) => Datum::bool(pick(a.as_boolean().iter().flatten(), min)?),
        (P::Int, DataType::Int32) => Datum::int(pick(
            a.as_primitive::<at::Int32Type>().values().iter().copied(),
            min,
        )?),
        (P::Int, DataType::Int16) => Datum::int(i32::from(pick(
            a.as_primitive::<at::Int16Type>().values().iter().copied(),
            min,
        )?)),
        (P::Int, DataType::Int8) => Datum::int(i32::from(pick(
            a.as_primitive::<at::Int8Type>().values().iter().copied(),
            min,
        )?)),
        (P::Long, DataType::Int64) => Datum::long(pick(
            a.as_primitive::<at::Int64Type>().values().iter().copied(),
            min,
        )?),
        (P::Float, DataType::Float32) => {
            let v = pick(
                a.as_primitive::<at::Float32Type>().values().iter().copied(),
                min,
            )?;
            if v.is_nan() {
                return None;
            }
            Datum::float(v)
        }
        (P::Double, DataType::Float64) => {
            let v = pick(
                a.as_primitive::<at::Float64Type>().values().iter().copied(),
                min,
            )?;
            if v.is_nan() {
                return None;
            }
            Datum::double(v)
        }
        (P::Date, DataType::Date32) => Datum::date(pick(
            a.as_primitive::<at::Date32Type>().values().iter().copied(),
            min,
        )?),
        (P::Timestamp | P::Timestamptz, DataType::Timestamp(unit, _)) => {
            let v = match unit {
                TimeUnit::Microsecond => pick(
                    a.as_primitive::<at::TimestampMicrosecondType>()
                        .values()
                        .iter()
                        .copied(),
                    min,
                )?,
                TimeUnit::Millisecond => pick(
                    a.as_primitive::<at::TimestampMillisecondType>()
                        .values()
                        .iter()
                        .copied(),
                    min,
                )?
                .checked_mul(1000)?,
                _ => return None,
            };
            if matches!(p, P::Timestamp) {
                Datum::timestamp_micros(v)
            } else {
                Datum::timestamptz_micros(v)
            }
        }
        (P::String, DataType::Utf8) => {
            let s = a.as_string::<i32>();
            let v = if min {
                s.iter().flatten().min()?
            } else {
                s.iter().flatten().max()?
            };
            Datum::string(v)
        }
        (P::String, DataType::Utf8View) => {
            let s = a.as_string_view();
            let v = if min {
                s.iter().flatten().min()?
            } else {
                s.iter().flatten().max()?
            };
            Datum::string(v)
        }
        _ => return None,
    })
}

/// A `key=value` folder's value as written (percent-escaped), decoded.
pub(crate) fn unescape(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotions_widen_and_others_do_not() {
        let p = |p| Type::Primitive(p);
        assert!(widens(&p(PrimitiveType::Int), &p(PrimitiveType::Long)));
        assert!(widens(&p(PrimitiveType::Float), &p(PrimitiveType::Double)));
        assert!(!widens(&p(PrimitiveType::Long), &p(PrimitiveType::Int)));
        assert!(!widens(&p(PrimitiveType::String), &p(PrimitiveType::Long)));
        let d = |precision, scale| p(PrimitiveType::Decimal { precision, scale });
        assert!(widens(&d(10, 2), &d(12, 2)));
        assert!(!widens(&d(12, 2), &d(10, 2)));
        assert!(!widens(&d(10, 2), &d(12, 3)));
    }

    #[test]
    fn folder_values_are_decoded() {
        assert_eq!(unescape("radio%2FTV"), "radio/TV");
        assert_eq!(unescape("a%"), "a%");
        assert_eq!(unescape("plain"), "plain");
    }
}
