//! `lake fsck`: every committed object against its manifest, and what no manifest lists.
//!
//! A lake is consistent when every object a manifest lists (raw windows, the window indexes,
//! trusted and refined datasets, rejected rows) is in the store with the manifest's size and
//! SHA-256, and the zones hold nothing else that a tool reading folders (Spark, Athena, DuckDB)
//! would count. [`check`] reports both; [`repair`] removes what no manifest lists and the
//! staging of runs that are gone. Damaged committed objects cannot be repaired from the lake
//! itself: the report says which step or source writes them again.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::Result;
use crate::config::Zone;
use crate::publish::{self, Manifest, ObjectEntry, WindowIndex};
use crate::zone::{DynZoneStore, Key, ZoneStoreExt};

/// What is wrong with one object (or staging folder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Problem {
    /// A manifest lists it; the store does not have it.
    Missing,
    /// Its size is not its manifest's.
    Size,
    /// Its SHA-256 is not its manifest's.
    Hash,
    /// In a zone, but no manifest lists it: a killed landing or publish left it.
    Orphan,
    /// The staging folder of a run that is not running.
    Staging,
    /// The pipeline's lock, held by a run whose process is gone (or that expired).
    Lock,
    /// A source's cursor (`_lake/state/<source>.json`) that cannot be read.
    State,
    /// A run the ledger's index (`_lake/runs.index/`) lacks, or describes otherwise than its
    /// document does (a ledger an older lake wrote, a document restored by hand).
    Index,
}

impl Problem {
    /// True for what `lake fsck --repair` removes or rebuilds.
    pub fn repairable(self) -> bool {
        matches!(
            self,
            Self::Orphan | Self::Staging | Self::Lock | Self::State | Self::Index
        )
    }
}

/// The pipeline's lock as fsck sees it: the run it keeps live (whose staging is not a
/// leftover), or a finding when its holder is gone or it expired.
pub async fn lock_state(
    store: &DynZoneStore,
    pipeline: &str,
) -> Result<(Option<String>, Option<Finding>)> {
    let Some(lock) = crate::lock::current(store, pipeline).await? else {
        return Ok((None, None));
    };
    if crate::lock::is_live(&lock) {
        return Ok((Some(lock.run_id), None));
    }
    let why = if lock.expires <= chrono::Utc::now() {
        format!("expired at {}", lock.expires.to_rfc3339())
    } else {
        "its process is gone (killed or crashed)".to_owned()
    };
    Ok((
        None,
        Some(Finding {
            problem: Problem::Lock,
            key: crate::lock::lock_key(pipeline)?.to_string(),
            detail: format!(
                "held by run {} ({}), which is not running: {why}; `lake fsck --repair` (or the next run) takes it over",
                lock.run_id, lock.holder
            ),
        }),
    ))
}

/// The cursors of `sources` (`_lake/state/<source>.json`) that cannot be read: every run of
/// the pipeline fails on them until they are rebuilt.
pub async fn state_findings(
    store: &DynZoneStore,
    sources: impl IntoIterator<Item = &str>,
) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    for source in sources {
        if let Err(e) = publish::cursor(store, source).await {
            out.push(Finding {
                problem: Problem::State,
                key: format!("_lake/state/{source}.json"),
                detail: format!(
                    "the cursor of source {source} cannot be read ({e}); `lake fsck --repair` rebuilds it from the source's committed window manifests"
                ),
            });
        }
    }
    Ok(out)
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What is wrong.
    pub problem: Problem,
    /// The object key (or staging prefix), relative to the root.
    pub key: String,
    /// In words, with what to do.
    pub detail: String,
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Manifests read (window indexes included).
    pub manifests: usize,
    /// Committed objects checked.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// True when SHA-256s were read back (else sizes only).
    pub hashed: bool,
    /// Problems, by kind then key.
    pub findings: Vec<Finding>,
}

/// Check every manifest of the lake at `store` and every object of its zones; `hash`: read
/// every committed object back and compare its SHA-256 (else sizes only). `live_run`: the run
/// holding the pipeline's lock, whose staging is not a leftover.
pub async fn check(store: &DynZoneStore, hash: bool, live_run: Option<&str>) -> Result<Report> {
    let mut report = Report {
        hashed: hash,
        ..Report::default()
    };
    // Every object a manifest lists (with its entry), and what a reader may still read
    // (replaced objects kept for `retain_replaced`).
    let mut committed: BTreeMap<String, ObjectEntry> = BTreeMap::new();
    let mut kept: BTreeSet<String> = BTreeSet::new();
    let mut listing = Vec::new();
    // Dataset prefixes: a table format's files under `<prefix>/metadata/` are its own.
    let mut datasets: BTreeSet<String> = BTreeSet::new();
    for zone in Zone::ALL {
        for meta in store.list(zone.as_str()).await? {
            let key = meta.key.as_str();
            let name = key.rsplit('/').next().unwrap_or(key);
            if name == publish::MANIFEST {
                if let Some(m) = store.get_json::<Manifest>(&meta.key).await? {
                    report.manifests += 1;
                    datasets.insert(m.prefix.clone());
                    committed.extend(m.objects.into_iter().map(|o| (o.key.clone(), o)));
                }
            } else if name == publish::WINDOW_INDEX {
                if let Some(index) = store.get_json::<WindowIndex>(&meta.key).await? {
                    report.manifests += 1;
                    for o in index.windows.into_iter().flat_map(|m| m.objects) {
                        committed.entry(o.key.clone()).or_insert(o);
                    }
                }
            } else if name == publish::REPLACED {
                if let Some(r) = store.get_json::<Vec<serde_json::Value>>(&meta.key).await? {
                    kept.extend(
                        r.iter()
                            .filter_map(|v| v["key"].as_str().map(str::to_owned)),
                    );
                }
            } else if !name.starts_with(['_', '.']) {
                listing.push((key.to_owned(), meta.size));
            }
        }
    }
    let sizes: BTreeMap<&str, u64> = listing.iter().map(|(k, s)| (k.as_str(), *s)).collect();
    let mut to_hash = Vec::new();
    for o in committed.values() {
        report.objects += 1;
        report.bytes += o.size;
        match sizes.get(o.key.as_str()) {
            None => report.findings.push(Finding {
                problem: Problem::Missing,
                key: o.key.clone(),
                detail: format!(
                    "listed by its manifest but not in the store; {}",
                    redo(&o.key)
                ),
            }),
            Some(size) if *size != o.size => report.findings.push(Finding {
                problem: Problem::Size,
                key: o.key.clone(),
                detail: format!(
                    "{size} bytes, its manifest says {}; {}",
                    o.size,
                    redo(&o.key)
                ),
            }),
            Some(_) if hash => to_hash.push(o.clone()),
            Some(_) => {}
        }
    }
    for (o, e) in publish::verify_each(store, &to_hash).await? {
        report.findings.push(Finding {
            problem: Problem::Hash,
            key: o.key.clone(),
            detail: format!("{e}; {}", redo(&o.key)),
        });
    }
    let format_file = |key: &str| {
        datasets.iter().any(|p| {
            key.strip_prefix(p.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(crate::table_format::is_format_file)
        })
    };
    for (key, _) in &listing {
        if !committed.contains_key(key) && !kept.contains(key) && !format_file(key) {
            report.findings.push(Finding {
                problem: Problem::Orphan,
                key: key.clone(),
                detail: "no manifest lists it (left by a landing or publish that did not finish); tools that read folders would count it".into(),
            });
        }
    }
    // Unfinished uploads (a filesystem root's `name#N`), which listings skip.
    for zone in Zone::ALL {
        for key in store.unfinished(zone.as_str()).await? {
            report.findings.push(Finding {
                problem: Problem::Orphan,
                key,
                detail: "an unfinished upload (a writer was killed)".into(),
            });
        }
    }
    let mut runs = BTreeSet::new();
    for meta in store.list(STAGING).await? {
        if let Some(run) = meta.key.as_str()[STAGING.len()..]
            .trim_start_matches('/')
            .split('/')
            .next()
        {
            runs.insert(run.to_owned());
        }
    }
    // A run killed while writing may have left only unfinished uploads in its staging.
    for key in store.unfinished(STAGING).await? {
        if let Some(run) = key[STAGING.len()..]
            .trim_start_matches('/')
            .split('/')
            .next()
        {
            runs.insert(run.to_owned());
        }
    }
    for run in runs {
        if Some(run.as_str()) != live_run {
            report.findings.push(Finding {
                problem: Problem::Staging,
                key: format!("{STAGING}/{run}"),
                detail: format!("staging of run {run}, which is not running"),
            });
        }
    }
    report
        .findings
        .sort_by(|a, b| (a.problem, &a.key).cmp(&(b.problem, &b.key)));
    Ok(report)
}

/// The runs whose line in the ledger's index is missing or differs from their document.
pub async fn index_findings(store: &DynZoneStore) -> Result<Vec<Finding>> {
    Ok(crate::ledger::check_index(store)
        .await?
        .into_iter()
        .map(|run| Finding {
            problem: Problem::Index,
            key: format!("{}/{run}.json", crate::ledger::RUNS),
            detail: "the ledger's index does not describe this run as its document does (--repair rebuilds the index)".into(),
        })
        .collect())
}

/// Remove what `report` found that can be removed: objects no manifest lists, unfinished
/// uploads and the staging of runs that are gone. Call it holding the pipeline's lock. Returns
/// how many were removed.
pub async fn repair(store: &DynZoneStore, report: &Report) -> Result<usize> {
    let mut removed = 0;
    let mut orphans = Vec::new();
    for f in &report.findings {
        match f.problem {
            Problem::Orphan => {
                // An unfinished upload is not an object of the store: the store sweeps it.
                if store.unfinished(&f.key).await?.contains(&f.key) {
                    removed += store.sweep(&f.key).await?;
                } else {
                    orphans.push(Key::new(f.key.as_str())?);
                }
            }
            Problem::Staging => {
                store.delete_prefix(&f.key).await?;
                store.sweep(&f.key).await?;
                removed += 1;
            }
            _ => {}
        }
    }
    if report.findings.iter().any(|f| f.problem == Problem::Index) {
        crate::ledger::rebuild_index(store).await?;
        removed += 1;
    }
    removed += orphans.len();
    store.delete_many(&orphans).await?;
    Ok(removed)
}

const STAGING: &str = "_lake/staging";

/// Rebuild the cursors of `sources` that cannot be read (`state_findings`) from their window
/// indexes: each the newest window of the contiguous indexed ones from its first (windows of
/// its `window` size laid from its `start`), or removed when it has none. The index, not a
/// listing of window manifests, because a cursor never moves past a window the saved index
/// lacks (see [`publish::WindowIndex`]). Call it holding the lock. Returns how many were
/// rebuilt.
pub async fn repair_states(
    store: &DynZoneStore,
    sources: &BTreeMap<String, crate::config::SourceSpec>,
    run_id: &str,
) -> Result<usize> {
    let mut rebuilt = 0;
    for (name, spec) in sources {
        if publish::cursor(store, name).await.is_ok() {
            continue;
        }
        let starts: BTreeSet<chrono::NaiveDate> = publish::WindowIndex::load(store, name)
            .await?
            .windows
            .iter()
            .filter_map(|m| {
                m.prefix
                    .rsplit_once("ingest_date=")
                    .and_then(|(_, d)| d.parse().ok())
            })
            .collect();
        let mut cursor = None;
        if let Some(first) = starts.first() {
            let mut w = spec.window.window_of(*first, spec.start);
            while starts.contains(&w.start) {
                cursor = Some(w.start);
                w = spec.window.window_of(w.end, spec.start);
            }
        }
        match cursor {
            Some(day) => publish::set_cursor(store, name, day, run_id).await?,
            None => {
                store
                    .delete(&Key::new(format!("_lake/state/{name}.json"))?)
                    .await?
            }
        }
        rebuilt += 1;
    }
    Ok(rebuilt)
}

/// What writes `key` again.
fn redo(key: &str) -> String {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        ["raw", source, window, ..] => format!(
            "land it again with `lake ingest {source} --force --date {}`",
            window.trim_start_matches("ingest_date=")
        ),
        [zone, "_rejected", step, ..] => format!(
            "write it again with `lake run --force --only {step}` (its rejected rows in {zone})"
        ),
        [zone, dataset, ..] => format!(
            "write it again with `lake run --force --only <step>`, the step whose output is {zone}/{dataset}"
        ),
        _ => "write it again with `lake run --force`".into(),
    }
}
