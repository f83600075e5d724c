//! What the engine reads, checked against its manifests before the result is used.
//!
//! A table's objects are read back and hashed beside the query (two at a time), and the
//! check is awaited before anything leaves the engine: a step's output is published, or a
//! query's rows are shown, only when every object it scanned is what its manifest says. The
//! objects a run committed itself were hashed as they were written and are not read again.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::Verify;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use lake_core::Result;
use lake_core::publish::{self, ObjectEntry};
use lake_core::zone::DynZoneStore;
use tokio::task::JoinHandle;

/// A check of objects against their manifests, running until [`finish`](Self::finish)ed;
/// dropped, it stops.
#[derive(Debug)]
pub struct Verification(Option<JoinHandle<Result<()>>>);

impl Verification {
    /// Start checking `objects` in `zone` (`mode`: sizes only, or sizes and SHA-256).
    pub fn start(zone: Arc<DynZoneStore>, mode: Verify, objects: Vec<ObjectEntry>) -> Self {
        if objects.is_empty() {
            return Self(None);
        }
        Self(Some(tokio::spawn(async move {
            match mode {
                Verify::Size => {
                    let all: Vec<&ObjectEntry> = objects.iter().collect();
                    publish::check_sizes(&*zone, &all).await
                }
                Verify::Sha256 => publish::verify(&*zone, &objects).await,
            }
        })))
    }

    /// Wait for the check: the first object that differs from its manifest, as
    /// [`lake_core::Error::Mismatch`].
    pub async fn finish(mut self) -> Result<()> {
        match self.0.take() {
            None => Ok(()),
            Some(task) => task.await.map_err(|e| lake_core::Error::Internal {
                what: "checking inputs against their manifests".into(),
                message: e.to_string(),
            })?,
        }
    }
}

impl Drop for Verification {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// The tables `plan` scans (subqueries included), as written in it (`trusted.credit`); a
/// table that is a view (raw sources: their `ingest_date` typed) by the alias it is inlined as.
pub fn scanned_tables(plan: &LogicalPlan) -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) => {
                tables.insert(scan.table_name.to_string());
            }
            LogicalPlan::SubqueryAlias(alias) => {
                tables.insert(alias.alias.to_string());
            }
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    tables
}
