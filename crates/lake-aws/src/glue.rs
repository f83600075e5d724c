//! The Glue Data Catalog: a committed dataset's table and partitions, as Athena, EMR and
//! Redshift Spectrum read them.

use std::collections::BTreeMap;

use aws_sdk_glue::Client;
use aws_sdk_glue::error::ProvideErrorMetadata;
use aws_sdk_glue::types::{
    Column, DatabaseInput, PartitionError, PartitionInput, PartitionValueList, SerDeInfo,
    StorageDescriptor, TableInput,
};
use lake_core::catalog::{CatalogColumn, CatalogOutcome, CatalogTable, check_evolution};
use lake_core::doctor::Check;
use lake_core::{Error, Result};
use tokio::sync::OnceCell;

use crate::Aws;

const INPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
const OUTPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";
const SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";
/// BatchCreatePartition takes at most 100 partitions per call, BatchDeletePartition 25.
const CREATE_BATCH: usize = 100;
const DELETE_BATCH: usize = 25;

/// The metadata file of an Iceberg table that another writer committed last (pyiceberg,
/// Athena, Spark name theirs `00001-<uuid>.metadata.json`; lake `vN.metadata.json`).
fn foreign_iceberg(table: &aws_sdk_glue::types::Table) -> Option<&str> {
    let p = table.parameters()?;
    if !p
        .get("table_type")
        .is_some_and(|t| t.eq_ignore_ascii_case("ICEBERG"))
    {
        return None;
    }
    let location = p.get("metadata_location")?;
    let file = location.rsplit('/').next().unwrap_or(location);
    let lakes = file
        .strip_prefix('v')
        .and_then(|f| f.strip_suffix(".metadata.json"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (!lakes).then_some(location.as_str())
}

/// Tables of one Glue database.
#[derive(Debug)]
pub struct GlueCatalog {
    client: Client,
    database: String,
    /// The database exists (checked, or created, once per process).
    ready: OnceCell<()>,
}

impl GlueCatalog {
    /// The tables of `database`, through `aws`'s configuration.
    pub fn new(aws: &Aws, database: impl Into<String>) -> Self {
        Self {
            client: aws.glue(),
            database: database.into(),
            ready: OnceCell::new(),
        }
    }

    fn err<E>(&self, table: &str, what: &str, e: &E) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let mut message = match e.code() {
            Some(code) => format!("{what}: {code}: {}", e.message().unwrap_or("(no message)")),
            None => format!("{what}: {}", lake_core::run::error_chain(e)),
        };
        if e.code() == Some("AccessDeniedException") {
            message.push_str("; allow it with the policy `lake iam-policy` prints");
        }
        Error::catalog(format!("{}.{table}", self.database), message, None)
    }

    /// The partitions a batch call refused, other than those with the code `harmless`.
    fn refused(
        &self,
        t: &CatalogTable,
        call: &str,
        errors: &[PartitionError],
        harmless: &str,
    ) -> Result<()> {
        let failed: Vec<String> = errors
            .iter()
            .filter(|e| e.error_detail().and_then(|d| d.error_code()) != Some(harmless))
            .map(|e| {
                format!(
                    "{}: {}",
                    e.partition_values().join("/"),
                    e.error_detail()
                        .and_then(|d| d.error_message())
                        .unwrap_or("(no message)")
                )
            })
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        Err(Error::catalog(
            format!("{}.{}", self.database, t.name),
            format!("{call} refused: {}", failed.join("; ")),
            None,
        ))
    }

    /// Create the database if it does not exist.
    async fn database(&self, table: &str) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                match self.client.get_database().name(&self.database).send().await {
                    Ok(_) => return Ok(()),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_entity_not_found_exception()) => {}
                    Err(e) => {
                        return Err(self.err(table, "GetDatabase", &e));
                    }
                }
                let input = DatabaseInput::builder()
                    .name(&self.database)
                    .description("Datasets published by lake")
                    .build()
                    .expect("a name is set");
                match self
                    .client
                    .create_database()
                    .database_input(input)
                    .send()
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e)
                        if e.as_service_error()
                            .is_some_and(|s| s.is_already_exists_exception()) =>
                    {
                        Ok(())
                    }
                    Err(e) => Err(self.err(table, "CreateDatabase", &e)),
                }
            })
            .await
            .map(|_| ())
    }

    /// `t`'s table as Glue has it, `None` when there is none; a type change of a column that
    /// the old data cannot be read as is refused ([`check_evolution`]), before anything changes.
    async fn existing(&self, t: &CatalogTable) -> Result<Option<aws_sdk_glue::types::Table>> {
        let existing = match self
            .client
            .get_table()
            .database_name(&self.database)
            .name(&t.name)
            .send()
            .await
        {
            Ok(r) => r.table,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_not_found_exception()) =>
            {
                None
            }
            Err(e) => {
                return Err(self.err(&t.name, "GetTable", &e));
            }
        };
        if let Some(old) = &existing
            && let Some(foreign) = foreign_iceberg(old)
        {
            return Err(Error::catalog(
                format!("{}.{}", self.database, t.name),
                format!(
                    "the table's metadata_location {foreign} was committed by another writer (lake names its metadata files vN.metadata.json); lake writes this dataset from its own manifest and would drop that writer's snapshot. Point that writer at another table, or drop the table in Glue (lake registers it again on its next run)"
                ),
                None,
            ));
        }
        if let Some(old) = &existing {
            let (old_columns, old_keys) = columns_of(old);
            if old_keys == t.partition_keys {
                check_evolution(&old_columns, t).map_err(|message| {
                    Error::catalog(format!("{}.{}", self.database, t.name), message, None)
                })?;
            }
        }
        Ok(existing)
    }

    /// Whether `t` would register without a refused type change: what a step's staged output
    /// is checked with before it is published. Changes nothing.
    pub async fn check(&self, t: &CatalogTable) -> Result<()> {
        self.existing(t).await.map(|_| ())
    }

    /// Create or update `t`'s table, then add its new partitions and drop those it no longer
    /// has. A column whose type the old partitions cannot be read as is refused first.
    pub async fn register(&self, t: &CatalogTable) -> Result<CatalogOutcome> {
        self.database(&t.name).await?;
        let mut outcome = CatalogOutcome::default();
        let existing = self.existing(t).await?;
        if let Some(location) = &t.metadata_location {
            return self.register_iceberg(t, location, existing.as_ref()).await;
        }
        let input = table_input(t);
        match &existing {
            None => {
                self.create(&t.name, input).await?;
                outcome.created = true;
            }
            Some(old) => {
                let (old_columns, old_keys) = columns_of(old);
                let old_location = old.storage_descriptor().and_then(|sd| sd.location());
                let old_params: BTreeMap<String, String> = old
                    .parameters()
                    .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default();
                let same = old_columns == t.columns
                    && old_keys == t.partition_keys
                    && old_location == Some(t.location.as_str())
                    && t.parameters
                        .iter()
                        .all(|(k, v)| old_params.get(k) == Some(v));
                if !same {
                    self.client
                        .update_table()
                        .database_name(&self.database)
                        .table_input(input)
                        .send()
                        .await
                        .map_err(|e| self.err(&t.name, "UpdateTable", &e))?;
                    outcome.updated = true;
                }
            }
        }
        if t.partition_keys.is_empty() && existing.is_none() {
            return Ok(outcome);
        }
        let have = self.partitions(&t.name).await?;
        let want: BTreeMap<&Vec<String>, &str> = t
            .partitions
            .iter()
            .map(|p| (&p.values, p.location.as_str()))
            .collect();
        // A partition that moved (the root was copied elsewhere) is dropped and added again.
        let add: Vec<PartitionInput> = t
            .partitions
            .iter()
            .filter(|p| have.get(&p.values).is_none_or(|l| *l != p.location))
            .map(|p| {
                PartitionInput::builder()
                    .set_values(Some(p.values.clone()))
                    .storage_descriptor(storage(t, &p.location))
                    .parameters(
                        "lake.run_id",
                        t.parameters.get("lake.run_id").cloned().unwrap_or_default(),
                    )
                    .build()
            })
            .collect();
        let moved = |v: &Vec<String>, l: &String| want.get(v).is_some_and(|w| *w != l);
        let drop: Vec<PartitionValueList> = have
            .iter()
            .filter(|(v, l)| !want.contains_key(v) || moved(v, l))
            .map(|(v, _)| {
                PartitionValueList::builder()
                    .set_values(Some(v.clone()))
                    .build()
                    .expect("values are set")
            })
            .collect();
        let moved_count = have.iter().filter(|(v, l)| moved(v, l)).count();
        self.drop_partitions(t, &drop).await?;
        outcome.partitions_dropped = drop.len() - moved_count;
        for chunk in add.chunks(CREATE_BATCH) {
            let r = self
                .client
                .batch_create_partition()
                .database_name(&self.database)
                .table_name(&t.name)
                .set_partition_input_list(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.err(&t.name, "BatchCreatePartition", &e))?;
            self.refused(
                t,
                "BatchCreatePartition",
                r.errors(),
                "AlreadyExistsException",
            )?;
            outcome.partitions_added += chunk.len();
        }
        Ok(outcome)
    }

    /// Register `t` as a Glue Iceberg table whose current metadata file is `location`
    /// (`table_type = ICEBERG`, `metadata_location`, the one it replaces as
    /// `previous_metadata_location`), as Athena, EMR and pyiceberg's Glue catalog read it:
    /// no partitions (the table's metadata has them). An update names the table version it
    /// read (`VersionId`), so a concurrent writer's change fails it rather than being lost.
    async fn register_iceberg(
        &self,
        t: &CatalogTable,
        location: &str,
        existing: Option<&aws_sdk_glue::types::Table>,
    ) -> Result<CatalogOutcome> {
        let mut outcome = CatalogOutcome::default();
        let old = existing
            .and_then(|e| e.parameters())
            .and_then(|p| p.get("metadata_location"));
        if existing.is_some() && old.map(String::as_str) == Some(location) {
            return Ok(outcome);
        }
        let mut params = t.parameters.clone();
        params.insert("table_type".into(), "ICEBERG".into());
        params.insert("metadata_location".into(), location.to_owned());
        params.insert("EXTERNAL".into(), "TRUE".into());
        if let Some(old) = old {
            params.insert("previous_metadata_location".into(), old.clone());
        }
        let columns = t
            .columns
            .iter()
            .map(|c| column(&c.name, &c.hive_type))
            .chain(t.partition_keys.iter().map(|k| column(k, "string")))
            .collect();
        let input = TableInput::builder()
            .name(&t.name)
            .table_type("EXTERNAL_TABLE")
            .storage_descriptor(
                StorageDescriptor::builder()
                    .set_columns(Some(columns))
                    .location(&t.location)
                    .build(),
            )
            .set_parameters(Some(params.into_iter().collect()))
            .build()
            .expect("a name is set");
        match existing {
            None => {
                self.create(&t.name, input).await?;
                outcome.created = true;
            }
            Some(e) => {
                self.client
                    .update_table()
                    .database_name(&self.database)
                    .table_input(input)
                    .set_version_id(e.version_id().map(str::to_owned))
                    .send()
                    .await
                    .map_err(|e| self.err(&t.name, "UpdateTable", &e))?;
                outcome.updated = true;
            }
        }
        Ok(outcome)
    }

    /// CreateTable `input` (the table `name`).
    async fn create(&self, name: &str, input: TableInput) -> Result<()> {
        self.client
            .create_table()
            .database_name(&self.database)
            .table_input(input)
            .send()
            .await
            .map_err(|e| self.err(name, "CreateTable", &e))?;
        Ok(())
    }

    /// Drop these partitions of `t` (25 per call); one that is gone already is no error.
    async fn drop_partitions(&self, t: &CatalogTable, drop: &[PartitionValueList]) -> Result<()> {
        for chunk in drop.chunks(DELETE_BATCH) {
            let r = self
                .client
                .batch_delete_partition()
                .database_name(&self.database)
                .table_name(&t.name)
                .set_partitions_to_delete(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| self.err(&t.name, "BatchDeletePartition", &e))?;
            self.refused(
                t,
                "BatchDeletePartition",
                r.errors(),
                "EntityNotFoundException",
            )?;
        }
        Ok(())
    }

    /// Every partition's values of `table`, with its location.
    async fn partitions(&self, table: &str) -> Result<BTreeMap<Vec<String>, String>> {
        let mut out = BTreeMap::new();
        let mut pages = self
            .client
            .get_partitions()
            .database_name(&self.database)
            .table_name(table)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err(table, "GetPartitions", &e))?;
            for p in page.partitions() {
                out.insert(
                    p.values().to_vec(),
                    p.storage_descriptor()
                        .and_then(|sd| sd.location())
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
        Ok(out)
    }

    /// `lake doctor`'s checks: the database can be read (or does not exist yet and will be
    /// created), and the caller may create and update its tables and partitions
    /// (iam:SimulatePrincipalPolicy).
    pub async fn doctor(&self, aws: &Aws) -> Vec<Check> {
        let name = format!("Glue database {}", self.database);
        let mut out = vec![
            match self.client.get_database().name(&self.database).send().await {
                Ok(_) => Check::pass(name, "exists"),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_entity_not_found_exception()) =>
                {
                    Check::pass(name, "does not exist yet: the first publish creates it")
                }
                Err(e) => match e.code() {
                    Some(code) => Check::fail(
                        name,
                        format!("GetDatabase: {code}: {}", e.message().unwrap_or("")),
                        if code == "AccessDeniedException" {
                            "allow glue:GetDatabase (see `lake iam-policy`)"
                        } else {
                            "check [aws] region and the catalog's account"
                        },
                    ),
                    None => Check::fail(
                        name,
                        format!("GetDatabase: {}", lake_core::run::error_chain(&e)),
                        "check the network and the region",
                    ),
                },
            },
        ];
        let Ok(me) = aws.sts().get_caller_identity().send().await else {
            return out;
        };
        let (Some(caller), Some(account)) = (me.arn(), me.account()) else {
            return out;
        };
        let region = aws.region().unwrap_or("*");
        out.push(
            crate::doctor::simulate(
                aws,
                caller,
                "Glue table rights",
                GLUE_ACTIONS,
                &glue_arns(region, account, &self.database),
                "publishing would fail to register tables: attach the policy `lake iam-policy` prints",
            )
            .await,
        );
        out
    }
}

/// The Glue calls a catalog makes.
pub(crate) const GLUE_ACTIONS: &[&str] = &[
    "glue:GetDatabase",
    "glue:CreateDatabase",
    "glue:GetTable",
    "glue:CreateTable",
    "glue:UpdateTable",
    "glue:GetPartitions",
    "glue:BatchCreatePartition",
    "glue:BatchDeletePartition",
];

/// The ARNs those calls need: the catalog, the database and its tables.
pub(crate) fn glue_arns(region: &str, account: &str, database: &str) -> Vec<String> {
    vec![
        format!("arn:aws:glue:{region}:{account}:catalog"),
        format!("arn:aws:glue:{region}:{account}:database/{database}"),
        format!("arn:aws:glue:{region}:{account}:table/{database}/*"),
    ]
}

/// The storage of `t`'s data (or one partition's) at `location`: Parquet, Hive's SerDe.
fn storage(t: &CatalogTable, location: &str) -> StorageDescriptor {
    StorageDescriptor::builder()
        .set_columns(Some(
            t.columns
                .iter()
                .map(|c| column(&c.name, &c.hive_type))
                .collect(),
        ))
        .location(location)
        .input_format(INPUT_FORMAT)
        .output_format(OUTPUT_FORMAT)
        .compressed(false)
        .serde_info(
            SerDeInfo::builder()
                .serialization_library(SERDE)
                .parameters("serialization.format", "1")
                .build(),
        )
        .build()
}

fn column(name: &str, hive_type: &str) -> Column {
    Column::builder()
        .name(name)
        .r#type(hive_type)
        .build()
        .expect("a name is set")
}

fn table_input(t: &CatalogTable) -> TableInput {
    let mut params = t.parameters.clone();
    params.insert("classification".into(), "parquet".into());
    params.insert("EXTERNAL".into(), "TRUE".into());
    TableInput::builder()
        .name(&t.name)
        .table_type("EXTERNAL_TABLE")
        .storage_descriptor(storage(t, &t.location))
        .set_partition_keys(Some(
            t.partition_keys
                .iter()
                .map(|k| column(k, "string"))
                .collect(),
        ))
        .set_parameters(Some(params.into_iter().collect()))
        .build()
        .expect("a name is set")
}

/// A Glue table's columns (name and type) and partition key names.
fn columns_of(t: &aws_sdk_glue::types::Table) -> (Vec<CatalogColumn>, Vec<String>) {
    let columns = t
        .storage_descriptor()
        .map(|sd| sd.columns())
        .unwrap_or_default()
        .iter()
        .map(|c| CatalogColumn {
            name: c.name().to_owned(),
            hive_type: c.r#type().unwrap_or_default().to_owned(),
        })
        .collect();
    let keys = t
        .partition_keys()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    (columns, keys)
}
