//! The data catalog: published datasets as tables other engines find (the Glue Data Catalog
//! that Athena, EMR and Redshift Spectrum read).
//!
//! The core decides *when* a dataset is registered (after the step that publishes it, and with
//! `lake catalog sync`) and records it in the ledger; a catalog crate decides *how*. What the
//! core defines is the table as the catalog sees it ([`CatalogTable`]: Hive types, partition
//! keys, locations) and the one rule every catalog applies before it changes a table
//! ([`check_evolution`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use crate::Result;
use crate::backend::{AsAny, BackendEnv};
use crate::config::{CatalogSpec, ConfigCx, Pipeline};
use crate::doctor::Check;
use crate::publish::{Dataset, Manifest};

/// A kind of catalog: `kind = "<name>"` in `[catalog]`, with keys of its own.
///
/// Core reads the keys every catalog has ([`SHARED`]: `kind` and `tables`); the kind reads the
/// rest with [`ConfigCx::own`], reporting each problem with its line.
pub trait CatalogKind: Send + Sync + fmt::Debug + 'static {
    /// The name users write in `kind = "…"`.
    fn name(&self) -> &'static str;

    /// Check the catalog's own keys; the checked config when they are right.
    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn CatalogConfig>>;
}

/// The keys of `[catalog]` that core reads.
pub const SHARED: &[&str] = &["kind", "tables"];

/// A checked catalog configuration (its kind's keys).
#[async_trait]
pub trait CatalogConfig: AsAny + Send + Sync + fmt::Debug + 'static {
    /// Where its tables live, as people read it (Glue's database): records name a table
    /// `<namespace>.<table>`.
    fn namespace(&self) -> String;

    /// The checked keys as JSON for `lake plan --json`.
    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }

    /// The catalog a run registers tables in, or `None` where it cannot work (a Glue catalog
    /// on a local root): then [`unavailable`](Self::unavailable) says why.
    async fn open(&self, spec: &CatalogSpec, env: &BackendEnv) -> Result<Option<Arc<dyn Catalog>>>;

    /// Why [`open`](Self::open) gave no catalog (what it needs).
    fn unavailable(&self) -> String {
        "this root".into()
    }

    /// IAM statements the catalog needs (added by `lake iam-policy`).
    fn iam_statements(&self, _pipeline: &Pipeline) -> Vec<serde_json::Value> {
        Vec::new()
    }
}

/// A checked catalog config, as the pipeline holds it (serialised as its kind's keys).
pub type CatalogRef = crate::kinds::Checked<dyn CatalogConfig>;

impl serde::Serialize for CatalogRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.0.json().serialize(s)
    }
}

/// What a catalog kind gets from the program to describe a table: a committed dataset (or a
/// step's staged output) read as a [`CatalogTable`] (the `lake` facade reads Parquet schemas
/// with its engine). Programs put it in [`BackendEnv::extensions`] as `Arc<dyn TableReader>`.
#[async_trait]
pub trait TableReader: Send + Sync {
    /// The table of `dataset` in `database`: committed by run `run_id` (its rows counted,
    /// the run recorded), or staged when `None` (only its columns and layout).
    async fn table(
        &self,
        database: &str,
        dataset: &Dataset,
        run_id: Option<&str>,
    ) -> Result<CatalogTable>;
}

/// A committed dataset as a catalog table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogTable {
    /// The database.
    pub database: String,
    /// The table (`refined_credit_by_purpose`).
    pub name: String,
    /// The dataset's folder, ending in `/` (`s3://bucket/lake/refined/credit_by_purpose/`).
    pub location: String,
    /// Data columns with their Hive types (`bigint`, `decimal(12,2)`, `array<string>`).
    pub columns: Vec<CatalogColumn>,
    /// Partition keys (`key=value` folders), outermost first; their type is `string`.
    pub partition_keys: Vec<String>,
    /// Each partition's values (in `partition_keys`' order) and folder, sorted.
    pub partitions: Vec<CatalogPartition>,
    /// Table parameters: the writing run, rows, the manifest's SHA-256 fingerprint.
    pub parameters: BTreeMap<String, String>,
    /// For a dataset kept in a table format (`table_format = "iceberg"`): its current
    /// metadata file, which the catalog registers the table by (Glue's `metadata_location`)
    /// instead of its folders and partitions.
    pub metadata_location: Option<String>,
}

/// A column and its Hive type, lowercase as Glue stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    /// The name.
    pub name: String,
    /// The Hive type.
    pub hive_type: String,
}

/// One partition of a table.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CatalogPartition {
    /// Its values, one per partition key.
    pub values: Vec<String>,
    /// Its folder, ending in `/`.
    pub location: String,
}

/// What registering a table did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CatalogOutcome {
    /// The table did not exist.
    pub created: bool,
    /// The table's columns, location or parameters were updated.
    pub updated: bool,
    /// Partitions added.
    pub partitions_added: usize,
    /// Partitions dropped (an overwrite removed their folders).
    pub partitions_dropped: usize,
}

impl CatalogOutcome {
    /// True when nothing changed (the table described this data already).
    pub fn unchanged(&self) -> bool {
        !self.created && !self.updated && self.partitions_added == 0 && self.partitions_dropped == 0
    }
}

/// A catalog that committed datasets are registered in, configured by `[catalog]`.
#[async_trait]
pub trait Catalog: Send + Sync + std::fmt::Debug {
    /// Create or update the table of `dataset` (committed as `manifest`) and its partitions.
    /// A change of a column's type that readers of the old data cannot follow (see
    /// [`check_evolution`]) is an error naming the column, before anything changes.
    async fn register(&self, dataset: &Dataset, manifest: &Manifest) -> Result<CatalogOutcome>;

    /// Before a step publishes: would the table of `staged` (the dataset's zone and name, its
    /// staging prefix and the objects there) still register? A type change the table's readers
    /// cannot follow is an error naming the column, so the step fails and the dataset keeps
    /// its previous data. The default checks nothing.
    async fn check_staged(&self, _staged: &Dataset) -> Result<()> {
        Ok(())
    }

    /// `lake doctor`'s checks: the database reachable, and the rights to create tables and
    /// partitions in it.
    async fn doctor(&self) -> Vec<Check>;
}

/// The rank of an integer or float type in its widening chain, to tell widening from
/// narrowing: `tinyint < smallint < int < bigint`, `float < double`.
fn rank(hive: &str) -> Option<(u8, u8)> {
    Some(match hive {
        "tinyint" => (0, 0),
        "smallint" => (0, 1),
        "int" | "integer" => (0, 2),
        "bigint" => (0, 3),
        "float" => (1, 0),
        "double" => (1, 1),
        _ => return None,
    })
}

fn decimal(hive: &str) -> Option<(u32, u32)> {
    let inner = hive.strip_prefix("decimal(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// Whether data written as `old` reads as `new`: the same type, or a wider one of its family
/// (an integer as a wider integer, `float` as `double`, a decimal with more integer digits
/// and the same scale).
pub fn widens(old: &str, new: &str) -> bool {
    if old.eq_ignore_ascii_case(new) {
        return true;
    }
    let (old, new) = (old.to_ascii_lowercase(), new.to_ascii_lowercase());
    match (rank(&old), rank(&new)) {
        (Some((fo, ro)), Some((fn_, rn))) => return fo == fn_ && rn >= ro,
        (Some(_), None) | (None, Some(_)) => return false,
        (None, None) => {}
    }
    match (decimal(&old), decimal(&new)) {
        (Some((po, so)), Some((pn, sn))) => so == sn && pn >= po,
        _ => false,
    }
}

/// The rule before a table changes: when its old partitions stay readable through the new
/// table (a partitioned table keeps the partitions a run did not rewrite), every column kept
/// must keep its type or widen it. An error names each column and both types.
pub fn check_evolution(
    old_columns: &[CatalogColumn],
    new: &CatalogTable,
) -> std::result::Result<(), String> {
    if new.partition_keys.is_empty() {
        // The table's data is replaced as a whole: no old file is read with the new schema.
        return Ok(());
    }
    let mut bad = Vec::new();
    for c in &new.columns {
        if let Some(o) = old_columns.iter().find(|o| o.name == c.name)
            && !widens(&o.hive_type, &c.hive_type)
        {
            bad.push(format!(
                "column {} was {} and is now {}",
                c.name, o.hive_type, c.hive_type
            ));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}.{}: {}; Athena could not read the partitions written before. \
             Keep the column's type (CAST it in the step's SQL), or drop the table \
             (`aws glue delete-table --database-name {} --name {}`) and rewrite every partition \
             with `lake run --force`",
            new.database,
            new.name,
            bad.join("; "),
            new.database,
            new.name
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, t: &str) -> CatalogColumn {
        CatalogColumn {
            name: name.into(),
            hive_type: t.into(),
        }
    }

    #[test]
    fn widening_is_within_a_family_and_never_narrower() {
        assert!(widens("int", "bigint"));
        assert!(widens("float", "double"));
        assert!(widens("decimal(10,2)", "decimal(12,2)"));
        assert!(widens("STRING", "string"));
        assert!(!widens("bigint", "int"));
        assert!(!widens("double", "float"));
        assert!(!widens("int", "double"));
        assert!(!widens("decimal(12,2)", "decimal(10,2)"));
        assert!(!widens("decimal(12,2)", "decimal(12,3)"));
        assert!(!widens("string", "bigint"));
    }

    #[test]
    fn a_narrowed_column_of_a_partitioned_table_is_named() {
        let mut t = CatalogTable {
            database: "w".into(),
            name: "trusted_weather".into(),
            location: "s3://b/trusted/weather/".into(),
            columns: vec![col("t", "float"), col("n", "bigint")],
            partition_keys: vec!["date".into()],
            partitions: vec![],
            parameters: BTreeMap::new(),
            metadata_location: None,
        };
        let old = [col("t", "double"), col("n", "int"), col("gone", "string")];
        let err = check_evolution(&old, &t).unwrap_err();
        assert!(
            err.contains("column t was double and is now float"),
            "{err}"
        );
        assert!(!err.contains("column n"), "{err}");
        t.partition_keys.clear();
        assert_eq!(check_evolution(&old, &t), Ok(()));
    }
}
