//! CREATE statements that make the lake's Parquet datasets tables in other engines: DuckDB,
//! Spark SQL and Athena (Hive DDL), with their columns, partition keys and locations.

use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use lake_core::ValueError;

/// The SQL dialect of [`ddl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Views over `read_parquet` with hive partitioning.
    DuckDb,
    /// Spark SQL data source tables (`USING parquet`), partitions recovered.
    Spark,
    /// Athena / Hive external tables in one database, partitions added one by one.
    Athena,
}

/// One Parquet dataset as a table.
#[derive(Debug, Clone)]
pub struct TableDef<'a> {
    /// `trusted`, `refined`.
    pub zone: lake_core::config::Zone,
    /// The dataset name.
    pub name: &'a str,
    /// Its folder: a local path or an `s3://` URL, without a trailing slash.
    pub location: String,
    /// Its columns, partition columns last.
    pub schema: &'a Schema,
    /// Its `key=value` partition columns, outermost first.
    pub partition_by: Vec<String>,
    /// Its partitions, as the folders below `location` (`date=2024-05-01`).
    pub partitions: Vec<String>,
    /// The run that wrote it and its rows, for Athena's table properties.
    pub run_id: &'a str,
    /// For an Iceberg table (`table_format = "iceberg"`): its current metadata file, which
    /// engines read it by (its folder also holds files of older snapshots).
    pub metadata_location: Option<String>,
}

/// The statements for `tables` in `dialect`; Athena's tables go into `database`, named
/// `<zone>_<dataset>`.
pub fn ddl(
    dialect: Dialect,
    database: &str,
    tables: &[TableDef<'_>],
) -> Result<String, ValueError> {
    let mut out = String::new();
    match dialect {
        Dialect::DuckDb | Dialect::Spark => {
            let mut zones: Vec<&str> = tables.iter().map(|t| t.zone.as_str()).collect();
            zones.dedup();
            for z in zones {
                let kw = if dialect == Dialect::Spark {
                    "DATABASE"
                } else {
                    "SCHEMA"
                };
                out.push_str(&format!(
                    "CREATE {kw} IF NOT EXISTS {};\n",
                    quote(dialect, z)
                ));
            }
        }
        Dialect::Athena => out.push_str(&format!(
            "CREATE DATABASE IF NOT EXISTS {};\n",
            quote(dialect, database)
        )),
    }
    if dialect == Dialect::DuckDb && tables.iter().any(|t| t.metadata_location.is_some()) {
        out.push_str("INSTALL iceberg;\nLOAD iceberg;\n");
    }
    for t in tables {
        let name = match dialect {
            Dialect::Athena => format!(
                "{}.{}",
                quote(dialect, database),
                quote(
                    dialect,
                    &lake_core::config::CatalogSpec::table_name(t.zone, t.name)
                )
            ),
            _ => format!(
                "{}.{}",
                quote(dialect, t.zone.as_str()),
                quote(dialect, t.name)
            ),
        };
        let data_columns: Vec<String> = t
            .schema
            .fields()
            .iter()
            .filter(|f| !t.partition_by.contains(f.name()))
            .map(|f| {
                Ok(format!(
                    "{} {}",
                    quote(dialect, f.name()),
                    type_name(dialect, f.data_type()).map_err(|e| format!(
                        "{}/{} column {}: {e}",
                        t.zone.as_str(),
                        t.name,
                        f.name()
                    ))?
                ))
            })
            .collect::<Result<_, String>>()?;
        if let Some(metadata) = &t.metadata_location {
            out.push_str(&iceberg_ddl(dialect, &name, t, metadata));
            continue;
        }
        match dialect {
            Dialect::DuckDb => {
                let glob = if t.partition_by.is_empty() {
                    format!("{}/*.parquet", t.location)
                } else {
                    format!("{}/**/*.parquet", t.location)
                };
                out.push_str(&format!(
                    "CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({}, hive_partitioning = {});\n",
                    literal(&glob),
                    !t.partition_by.is_empty()
                ));
            }
            Dialect::Spark => {
                let parts: Vec<String> = t
                    .partition_by
                    .iter()
                    .map(|p| format!("{} STRING", quote(dialect, p)))
                    .collect();
                let all: Vec<String> = data_columns.iter().cloned().chain(parts).collect();
                out.push_str(&format!(
                    "CREATE TABLE IF NOT EXISTS {name} ({}) USING parquet{} LOCATION {};\n",
                    all.join(", "),
                    partitioned_by(dialect, &t.partition_by, ""),
                    literal(&t.location)
                ));
                if !t.partition_by.is_empty() {
                    out.push_str(&format!("MSCK REPAIR TABLE {name};\n"));
                }
            }
            Dialect::Athena => {
                out.push_str(&format!(
                    "CREATE EXTERNAL TABLE IF NOT EXISTS {name} ({}){} STORED AS PARQUET LOCATION {} TBLPROPERTIES ('lake.run_id' = {});\n",
                    data_columns.join(", "),
                    partitioned_by(dialect, &t.partition_by, " string"),
                    literal(&format!("{}/", t.location)),
                    literal(t.run_id)
                ));
                for p in &t.partitions {
                    let spec: Vec<String> = p
                        .split('/')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| format!("{} = {}", quote(dialect, k), literal(v)))
                        .collect();
                    out.push_str(&format!(
                        "ALTER TABLE {name} ADD IF NOT EXISTS PARTITION ({}) LOCATION {};\n",
                        spec.join(", "),
                        literal(&format!("{}/{p}/", t.location))
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// The statement that reads the Iceberg table `t` (named `name`) by its metadata file: a
/// view over DuckDB's `iceberg_scan`, Iceberg's `register_table` procedure in Spark (with
/// Iceberg's runtime and `spark_catalog` as its `SparkSessionCatalog`), and for Athena a
/// comment: Athena reads Iceberg tables registered in Glue (`[catalog] kind = "glue"`), and
/// its DDL cannot register an existing table's metadata.
fn iceberg_ddl(dialect: Dialect, name: &str, t: &TableDef<'_>, metadata: &str) -> String {
    match dialect {
        Dialect::DuckDb => format!(
            "CREATE OR REPLACE VIEW {name} AS SELECT * FROM iceberg_scan({});\n",
            literal(metadata)
        ),
        Dialect::Spark => format!(
            "-- {}/{}: an Iceberg table; needs the Iceberg runtime, spark.sql.extensions = org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions and spark.sql.catalog.spark_catalog = org.apache.iceberg.spark.SparkSessionCatalog\n\
             CALL spark_catalog.system.register_table(table => {}, metadata_file => {});\n",
            t.zone.as_str(),
            t.name,
            literal(&format!("{}.{}", t.zone.as_str(), t.name)),
            literal(metadata)
        ),
        Dialect::Athena => format!(
            "-- {name}: an Iceberg table ({metadata}); Athena reads it once it is in Glue: [catalog] kind = \"glue\" registers it at each run (or `lake catalog sync`)\n"
        ),
    }
}

/// The `key=value` partition columns of a dataset (from its first object's folders,
/// outermost first) and its partition folders relative to its prefix, sorted.
pub fn layout(d: &lake_core::publish::Dataset) -> (Vec<String>, Vec<String>) {
    let rel = |key: &str| {
        key.strip_prefix(&d.prefix)
            .unwrap_or(key)
            .trim_start_matches('/')
            .to_owned()
    };
    let Some(first) = d.objects.first() else {
        return (Vec::new(), Vec::new());
    };
    let first = rel(&first.key);
    let partition_by: Vec<String> = first
        .split('/')
        .filter_map(|seg| seg.split_once('=').map(|(k, _)| k.to_owned()))
        .collect();
    if partition_by.is_empty() {
        return (partition_by, Vec::new());
    }
    let mut partitions: Vec<String> = d
        .objects
        .iter()
        .filter_map(|o| rel(&o.key).rsplit_once('/').map(|(dir, _)| dir.to_owned()))
        .collect();
    partitions.sort();
    partitions.dedup();
    (partition_by, partitions)
}

/// The Hive type of `t` as the Glue Data Catalog stores it (`bigint`, `decimal(12,2)`,
/// `array<string>`, `struct<a:int,b:string>`).
pub fn hive_type(t: &DataType) -> Result<String, ValueError> {
    Ok(type_name(Dialect::Athena, t)?
        .replace('`', "")
        .replace(": ", ":")
        .replace(", ", ",")
        .to_lowercase())
}

/// ` PARTITIONED BY (a, b)`, each column followed by `typed` (Athena declares its type there,
/// Spark in the column list); empty when there are none.
fn partitioned_by(dialect: Dialect, columns: &[String], typed: &str) -> String {
    if columns.is_empty() {
        return String::new();
    }
    let cols: Vec<String> = columns
        .iter()
        .map(|p| format!("{}{typed}", quote(dialect, p)))
        .collect();
    format!(" PARTITIONED BY ({})", cols.join(", "))
}

fn quote(dialect: Dialect, ident: &str) -> String {
    match dialect {
        Dialect::DuckDb => format!("\"{}\"", ident.replace('"', "\"\"")),
        Dialect::Spark | Dialect::Athena => format!("`{}`", ident.replace('`', "``")),
    }
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The column type of `t` in `dialect`.
fn type_name(dialect: Dialect, t: &DataType) -> Result<String, ValueError> {
    let hive = dialect != Dialect::DuckDb;
    Ok(match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            if hive { "STRING" } else { "VARCHAR" }.into()
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            if hive { "BINARY" } else { "BLOB" }.into()
        }
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Millisecond, tz) => {
            match (dialect, tz) {
                (Dialect::Spark, None) => "TIMESTAMP_NTZ".into(),
                (Dialect::DuckDb, Some(_)) => "TIMESTAMPTZ".into(),
                _ => "TIMESTAMP".into(),
            }
        }
        DataType::List(f) | DataType::LargeList(f) => {
            let inner = type_name(dialect, f.data_type())?;
            if hive {
                format!("ARRAY<{inner}>")
            } else {
                format!("{inner}[]")
            }
        }
        DataType::Struct(fields) => {
            let members = fields
                .iter()
                .map(|f| {
                    type_name(dialect, f.data_type()).map(|t| {
                        if hive {
                            format!("{}: {t}", quote(dialect, f.name()))
                        } else {
                            format!("{} {t}", quote(dialect, f.name()))
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if hive {
                format!("STRUCT<{}>", members.join(", "))
            } else {
                format!("STRUCT({})", members.join(", "))
            }
        }
        DataType::Dictionary(_, v) => type_name(dialect, v)?,
        other => return Err(format!("{other} has no type in this dialect").into()),
    })
}

/// A column of rows another engine returned as text (Athena, Trino): its name and SQL type
/// (`bigint`, `decimal`…), with precision and scale for decimals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextColumn<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its SQL type, lower case (Trino's names).
    pub sql_type: &'a str,
    /// Precision, for decimals.
    pub precision: i32,
    /// Scale, for decimals.
    pub scale: i32,
}

/// Rows of text (`None`: NULL) as typed Arrow columns: integers, floats, decimals, booleans,
/// dates and timestamps as such, anything else as text. A value that does not parse as its
/// column's type is an error naming the column.
pub fn text_batch(
    columns: &[TextColumn<'_>],
    rows: &[Vec<Option<String>>],
) -> Result<datafusion::arrow::array::RecordBatch, ValueError> {
    use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
    use datafusion::arrow::compute::{CastOptions, cast_with_options};
    use datafusion::arrow::datatypes::Field;
    // Not "safe": a value that does not parse is an error, never a NULL in its place.
    let strict = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (i, c) in columns.iter().enumerate() {
        let ty = match c.sql_type {
            "tinyint" => DataType::Int8,
            "smallint" => DataType::Int16,
            "integer" | "int" => DataType::Int32,
            "bigint" => DataType::Int64,
            "real" | "float" => DataType::Float32,
            "double" => DataType::Float64,
            "boolean" => DataType::Boolean,
            "date" => DataType::Date32,
            "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
            "decimal" => {
                let p = u8::try_from(c.precision).unwrap_or(38).clamp(1, 38);
                let s = i8::try_from(c.scale).unwrap_or(0);
                DataType::Decimal128(p, s)
            }
            _ => DataType::Utf8,
        };
        let text: StringArray = rows
            .iter()
            .map(|row| row.get(i).cloned().flatten())
            .collect();
        let array = cast_with_options(&text, &ty, &strict)
            .map_err(|e| format!("column {} ({}): {e}", c.name, c.sql_type))?;
        fields.push(Field::new(c.name, ty, true));
        arrays.push(array);
    }
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| ValueError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;

    #[test]
    fn athena_tables_have_hive_types_partitions_and_their_locations() {
        let schema = Schema::new(vec![
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                true,
            ),
            Field::new("t", DataType::Float64, true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("date", DataType::Utf8, true),
        ]);
        let t = TableDef {
            zone: lake_core::config::Zone::Trusted,
            name: "weather_hourly",
            location: "s3://b/p/trusted/weather_hourly".into(),
            schema: &schema,
            partition_by: vec!["date".into()],
            partitions: vec!["date=2024-05-01".into()],
            run_id: "r1",
            metadata_location: None,
        };
        let sql = ddl(Dialect::Athena, "weather", &[t]).unwrap();
        assert_eq!(
            sql,
            "CREATE DATABASE IF NOT EXISTS `weather`;\n\
             CREATE EXTERNAL TABLE IF NOT EXISTS `weather`.`trusted_weather_hourly` (`time` TIMESTAMP, `t` DOUBLE, `amount` DECIMAL(12,2)) PARTITIONED BY (`date` string) STORED AS PARQUET LOCATION 's3://b/p/trusted/weather_hourly/' TBLPROPERTIES ('lake.run_id' = 'r1');\n\
             ALTER TABLE `weather`.`trusted_weather_hourly` ADD IF NOT EXISTS PARTITION (`date` = '2024-05-01') LOCATION 's3://b/p/trusted/weather_hourly/date=2024-05-01/';\n"
        );
        let bad = Schema::new(vec![Field::new(
            "d",
            DataType::Duration(TimeUnit::Second),
            true,
        )]);
        let t = TableDef {
            zone: lake_core::config::Zone::Refined,
            name: "x",
            location: "s3://b/p/refined/x".into(),
            schema: &bad,
            partition_by: vec![],
            partitions: vec![],
            run_id: "r1",
            metadata_location: None,
        };
        let err = ddl(Dialect::Athena, "w", &[t]).unwrap_err();
        assert!(err.contains("refined/x column d"), "{err}");
    }

    #[test]
    fn iceberg_tables_are_read_by_their_metadata_file_not_their_folder() {
        let schema = Schema::new(vec![Field::new("n", DataType::Int64, true)]);
        let t = |metadata: Option<&str>| TableDef {
            zone: lake_core::config::Zone::Trusted,
            name: "credit",
            location: "s3://b/p/trusted/credit".into(),
            schema: &schema,
            partition_by: vec![],
            partitions: vec![],
            run_id: "r1",
            metadata_location: metadata.map(str::to_owned),
        };
        let meta = "s3://b/p/trusted/credit/metadata/v3.metadata.json";
        let duck = ddl(Dialect::DuckDb, "w", &[t(Some(meta))]).unwrap();
        assert_eq!(
            duck,
            "CREATE SCHEMA IF NOT EXISTS \"trusted\";\nINSTALL iceberg;\nLOAD iceberg;\n\
             CREATE OR REPLACE VIEW \"trusted\".\"credit\" AS SELECT * FROM iceberg_scan('s3://b/p/trusted/credit/metadata/v3.metadata.json');\n"
        );
        let spark = ddl(Dialect::Spark, "w", &[t(Some(meta))]).unwrap();
        assert!(
            spark.contains("CALL spark_catalog.system.register_table(table => 'trusted.credit', metadata_file => 's3://b/p/trusted/credit/metadata/v3.metadata.json');"),
            "{spark}"
        );
        assert!(!spark.contains("USING parquet"), "{spark}");
        let athena = ddl(Dialect::Athena, "w", &[t(Some(meta))]).unwrap();
        assert!(!athena.contains("CREATE EXTERNAL TABLE"), "{athena}");
        assert!(athena.contains("an Iceberg table"), "{athena}");
        // Without a metadata file, the folder as before.
        let duck = ddl(Dialect::DuckDb, "w", &[t(None)]).unwrap();
        assert!(
            duck.contains("read_parquet('s3://b/p/trusted/credit/*.parquet'"),
            "{duck}"
        );
        assert!(!duck.contains("iceberg"), "{duck}");
    }

    #[test]
    fn text_rows_become_typed_columns_and_a_bad_value_names_its_column() {
        use datafusion::arrow::array::{Array, AsArray};
        use datafusion::arrow::datatypes::{Decimal128Type, Int64Type};
        let col = |name, sql_type, precision, scale| TextColumn {
            name,
            sql_type,
            precision,
            scale,
        };
        let columns = [
            col("n", "bigint", 0, 0),
            col("amount", "decimal", 10, 2),
            col("day", "date", 0, 0),
            col("purpose", "varchar", 0, 0),
        ];
        let rows = vec![
            vec![
                Some("7".into()),
                Some("12.50".into()),
                Some("2024-03-01".into()),
                Some("car".into()),
            ],
            vec![None, None, None, None],
        ];
        let b = text_batch(&columns, &rows).unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 7);
        assert!(b.column(0).is_null(1));
        assert_eq!(
            b.schema().field(1).data_type(),
            &DataType::Decimal128(10, 2)
        );
        assert_eq!(b.column(1).as_primitive::<Decimal128Type>().value(0), 1250);
        assert_eq!(b.schema().field(2).data_type(), &DataType::Date32);
        assert_eq!(b.column(3).as_string::<i32>().value(0), "car");
        let e = text_batch(&columns[..1], &[vec![Some("seven".into())]]).unwrap_err();
        assert!(e.contains("column n (bigint)"), "{e}");
    }
}
