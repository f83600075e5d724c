//! The catalog in a run: the table of each dataset a step of the run published (or found up
//! to date), and `lake catalog sync` over everything committed.

use std::time::Instant;

use super::{Event, RunOptions, Runner};
use crate::catalog::Catalog;
use crate::config::{CatalogSpec, Zone};
use crate::ledger::{CatalogRecord, RunRecord, Status};
use crate::publish::{self, Dataset};
use crate::{DynZoneStore, Result};

impl Runner<'_> {
    /// Register the outputs of this run's steps that succeeded or were up to date and that
    /// `[catalog] tables` names. A table that fails to register fails the run (its data stays
    /// committed; `lake catalog sync` registers it again).
    pub(super) async fn catalog_after_steps(&self, record: &mut RunRecord) {
        let (Some(catalog), Some(spec)) = (&self.ctx.catalog, &self.ctx.pipeline.catalog) else {
            return;
        };
        let p = &self.ctx.pipeline;
        let outputs: Vec<_> = record
            .steps
            .iter()
            .filter(|s| matches!(s.status, Status::Succeeded | Status::UpToDate))
            .filter_map(|s| p.steps.get(&s.name)?.output.clone())
            .filter(|o| spec.includes(o.zone, &o.name))
            .collect();
        for out in outputs {
            if self.opts.cancel.is_cancelled() {
                return;
            }
            let rec = register(&**catalog, spec, &*self.ctx.store, out.zone, &out.name).await;
            let rec = CatalogRecord {
                error: rec.error.map(|e| self.redactor.redact(&e)),
                ..rec
            };
            self.opts.emit(Event::CatalogFinished {
                record: rec.clone(),
            });
            record.catalog.push(rec);
        }
    }
}

/// `lake catalog sync`: register every committed dataset `[catalog] tables` names (data
/// published before `[catalog]` existed, or a table changed by hand). Each table's record is
/// emitted as it ends; one failing does not stop the others.
pub async fn catalog_sync(
    p: &crate::config::Pipeline,
    store: &DynZoneStore,
    catalog: Option<&dyn Catalog>,
    opts: &RunOptions,
) -> Result<Vec<CatalogRecord>> {
    let spec = p.catalog.as_ref().ok_or_else(|| crate::Error::Invalid {
        what: format!("{}", p.file.display()),
        message: "has no [catalog]: add one to register tables".into(),
    })?;
    let catalog = catalog.ok_or_else(|| crate::Error::NotImplemented {
        operation: "this catalog",
        implementer: format!(
            "this build of lake on this root ({}): {}",
            store.url_of(""),
            spec.config.unavailable()
        ),
    })?;
    let mut out = Vec::new();
    for d in publish::list_datasets(store).await? {
        if !spec.includes(d.zone, &d.name) {
            continue;
        }
        if opts.cancel.is_cancelled() {
            return Err(crate::Error::Cancelled);
        }
        let rec = register(catalog, spec, store, d.zone, &d.name).await;
        opts.emit(Event::CatalogFinished {
            record: rec.clone(),
        });
        out.push(rec);
    }
    Ok(out)
}

/// Register one dataset from its committed manifest.
async fn register(
    catalog: &dyn Catalog,
    spec: &CatalogSpec,
    store: &DynZoneStore,
    zone: Zone,
    name: &str,
) -> CatalogRecord {
    let started = Instant::now();
    let prefix = format!("{}/{name}", zone.as_str());
    let outcome = async {
        let manifest = publish::read_manifest(store, &prefix)
            .await?
            .ok_or_else(|| crate::Error::Invalid {
                what: format!("catalog table of {prefix}"),
                message: format!("nothing is committed at {}", store.url_of(&prefix)),
            })?;
        let dataset = Dataset {
            zone,
            name: name.to_owned(),
            prefix: prefix.clone(),
            objects: manifest.objects.clone(),
        };
        catalog.register(&dataset, &manifest).await
    }
    .await;
    CatalogRecord::new(
        prefix,
        format!(
            "{}.{}",
            spec.config.namespace(),
            CatalogSpec::table_name(zone, name)
        ),
        outcome,
        started,
    )
}
