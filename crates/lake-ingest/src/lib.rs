//! # lake-ingest
//!
//! Sources of raw data, each a [`Source`](lake_core::Source): [`FileSource`] for local paths and
//! globs. [`build_sources`] turns a pipeline's `[sources.*]` tables into sources. Landing a
//! window exactly once (manifest with put-if-absent) is written once in
//! [`lake_core::publish::land`], for every source and every store.

mod file;

use std::collections::BTreeMap;
use std::sync::Arc;

use lake_core::Source;
use lake_core::config::{Pipeline, SourceSpecKind};

pub use file::FileSource;

/// The pipeline's sources, by name.
pub fn build_sources(pipeline: &Pipeline) -> BTreeMap<String, Arc<dyn Source>> {
    pipeline
        .sources
        .values()
        .map(|spec| {
            let source: Arc<dyn Source> = match &spec.kind {
                SourceSpecKind::File { patterns } => {
                    Arc::new(FileSource::new(&spec.name, patterns.clone()))
                }
                #[allow(unreachable_patterns)]
                _ => unreachable!("every source kind has a builder"),
            };
            (spec.name.clone(), source)
        })
        .collect()
}
