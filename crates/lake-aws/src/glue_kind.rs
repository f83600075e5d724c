//! `[catalog] kind = "glue"`: its keys (the database, Athena's workgroup and result folder),
//! checked with their lines, and the catalog a run registers tables in.

use std::sync::Arc;

use async_trait::async_trait;
use lake_core::Result;
use lake_core::backend::BackendEnv;
use lake_core::catalog::{Catalog, CatalogConfig, CatalogKind, CatalogOutcome, TableReader};
use lake_core::config::{CatalogSpec, ConfigCx, Pipeline, Root};
use lake_core::doctor::Check;
use lake_core::publish::{Dataset, Manifest};
use serde::{Deserialize, Serialize};

use crate::{Aws, GlueCatalog};

/// The `glue` catalog kind: register it with `Kinds::catalog(GlueKind)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlueKind;

/// Its keys, as written (besides `kind` and `tables`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GlueKeys {
    /// The Glue database (created if missing); default: the pipeline's name.
    database: Option<String>,
    /// The Athena workgroup of `lake query --engine athena`; default `primary`.
    athena_workgroup: Option<String>,
    /// Where Athena writes query results (`s3://…/`); default `_lake/athena/` under the root.
    athena_output: Option<String>,
}

impl CatalogKind for GlueKind {
    fn name(&self) -> &'static str {
        "glue"
    }

    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<Arc<dyn CatalogConfig>> {
        let keys: GlueKeys = cx.own()?;
        let mut ok = true;
        let database = keys
            .database
            .clone()
            .unwrap_or_else(|| cx.pipeline.replace('-', "_").to_lowercase());
        let glue_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 255
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !glue_name(&database) {
            let key = if keys.database.is_some() {
                cx.key_of("database")
            } else {
                cx.at().to_owned()
            };
            cx.value(
                &key,
                format!(
                    "{database:?} is not a Glue database name: lowercase letters, digits and '_' (set catalog.database)"
                ),
            );
            ok = false;
        }
        if let Some(o) = &keys.athena_output
            && !o.starts_with("s3://")
        {
            cx.value(
                &cx.key_of("athena_output"),
                format!("{o:?} is not an s3:// URL; Athena writes results to S3"),
            );
            ok = false;
        }
        ok.then(|| {
            Arc::new(GlueConfig {
                database,
                athena_workgroup: keys.athena_workgroup.unwrap_or_else(|| "primary".into()),
                athena_output: keys.athena_output,
            }) as Arc<dyn CatalogConfig>
        })
    }
}

/// A checked `[catalog] kind = "glue"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GlueConfig {
    /// The Glue database.
    pub database: String,
    /// Athena's workgroup.
    pub athena_workgroup: String,
    /// Where Athena writes results; `None`: `_lake/athena/` under the root.
    pub athena_output: Option<String>,
}

#[async_trait]
impl CatalogConfig for GlueConfig {
    fn namespace(&self) -> String {
        self.database.clone()
    }

    fn json(&self) -> serde_json::Map<String, serde_json::Value> {
        lake_core::kinds::json_object(self)
    }

    async fn open(
        &self,
        _spec: &CatalogSpec,
        env: &BackendEnv,
    ) -> Result<Option<Arc<dyn Catalog>>> {
        let (Root::S3 { .. }, Some(aws), Some(reader)) = (
            &env.pipeline.root,
            env.extensions.get::<Aws>(),
            env.extensions.get::<Arc<dyn TableReader>>(),
        ) else {
            return Ok(None);
        };
        Ok(Some(Arc::new(GlueTables {
            database: self.database.clone(),
            glue: GlueCatalog::new(aws, self.database.clone()),
            aws: aws.clone(),
            reader: Arc::clone(reader),
        })))
    }

    fn unavailable(&self) -> String {
        "Glue tables point at S3, so [catalog] needs an s3:// root and the `aws` feature; `lake catalog ddl` prints tables for engines on a local root".into()
    }

    fn iam_statements(&self, _pipeline: &Pipeline) -> Vec<serde_json::Value> {
        crate::policy::catalog_statements(self)
    }
}

/// A Glue database's tables, each built from its dataset by the program's [`TableReader`].
struct GlueTables {
    database: String,
    glue: GlueCatalog,
    aws: Aws,
    reader: Arc<dyn TableReader>,
}

impl std::fmt::Debug for GlueTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlueTables")
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Catalog for GlueTables {
    async fn register(&self, dataset: &Dataset, manifest: &Manifest) -> Result<CatalogOutcome> {
        let table = self
            .reader
            .table(&self.database, dataset, Some(&manifest.run_id))
            .await?;
        self.glue.register(&table).await
    }

    async fn check_staged(&self, staged: &Dataset) -> Result<()> {
        // Only Parquet outputs get tables (register says so for the others).
        if staged.objects.is_empty() || !staged.objects.iter().all(|o| o.key.ends_with(".parquet"))
        {
            return Ok(());
        }
        let table = self.reader.table(&self.database, staged, None).await?;
        self.glue.check(&table).await
    }

    async fn doctor(&self) -> Vec<Check> {
        self.glue.doctor(&self.aws).await
    }
}
