//! The kinds a program offers: backends, sources, sinks, catalogs and settings tables, each a
//! plug-in.
//!
//! lake-core names no concrete kind. A program registers the kinds it offers in a [`Kinds`]
//! (the `lake` facade registers those its features enable, and a program embedding lake adds
//! its own); validation then hands each kind's lake.toml table to that kind, with lines.

use std::sync::Arc;

use crate::backend::AsAny;

use crate::backend::BackendKind;
use crate::catalog::CatalogKind;
use crate::settings::SettingsKind;
use crate::sink::SinkKind;
use crate::source::SourceKind;
use crate::table_format::TableFormatKind;

/// The kinds a program offers, the first backend being the default of `backend`.
#[derive(Debug, Clone, Default)]
pub struct Kinds {
    backends: Vec<Arc<dyn BackendKind>>,
    sources: Vec<Arc<dyn SourceKind>>,
    sinks: Vec<Arc<dyn SinkKind>>,
    catalogs: Vec<Arc<dyn CatalogKind>>,
    settings: Vec<Arc<dyn SettingsKind>>,
    formats: Vec<Arc<dyn TableFormatKind>>,
}

/// Panics when `name` is registered twice: a mistake in the program, not in a lake.toml.
fn once<'a>(what: &str, name: &str, mut names: impl Iterator<Item = &'a str>) {
    assert!(
        names.all(|n| n != name),
        "{what} kind {name:?} registered twice"
    );
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

impl Kinds {
    /// No kind yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register a backend (the first registered is the default backend).
    ///
    /// # Panics
    ///
    /// When a backend of the same name, or owning the same table, is registered already.
    pub fn backend(mut self, kind: impl BackendKind) -> Self {
        once(
            "backend",
            kind.name(),
            self.backends.iter().map(|k| k.name()),
        );
        assert!(
            kind.table().is_none() || self.backends.iter().all(|k| k.table() != kind.table()),
            "two backends own the table {:?}",
            kind.table()
        );
        self.backends.push(Arc::new(kind));
        self
    }

    /// Register a source kind (`[sources.<name>] kind = "…"`).
    ///
    /// # Panics
    ///
    /// When a source kind of the same name is registered already.
    pub fn source(mut self, kind: impl SourceKind) -> Self {
        once("source", kind.name(), self.sources.iter().map(|k| k.name()));
        self.sources.push(Arc::new(kind));
        self
    }

    /// Register a sink kind (`[sinks.<name>] kind = "…"`).
    ///
    /// # Panics
    ///
    /// When a sink kind of the same name is registered already.
    pub fn sink(mut self, kind: impl SinkKind) -> Self {
        once("sink", kind.name(), self.sinks.iter().map(|k| k.name()));
        self.sinks.push(Arc::new(kind));
        self
    }

    /// Register a catalog kind (`[catalog] kind = "…"`).
    ///
    /// # Panics
    ///
    /// When a catalog kind of the same name is registered already.
    pub fn catalog(mut self, kind: impl CatalogKind) -> Self {
        once(
            "catalog",
            kind.name(),
            self.catalogs.iter().map(|k| k.name()),
        );
        self.catalogs.push(Arc::new(kind));
        self
    }

    /// Register a table format (`table_format = "…"`; `parquet` is built in).
    ///
    /// # Panics
    ///
    /// When a format of the same name (or `parquet`) is registered already.
    pub fn table_format(mut self, kind: impl TableFormatKind) -> Self {
        once(
            "table format",
            kind.name(),
            self.formats
                .iter()
                .map(|k| k.name())
                .chain([crate::table_format::PARQUET]),
        );
        self.formats.push(Arc::new(kind));
        self
    }

    /// The table format named `name`.
    pub fn format_kind(&self, name: &str) -> Option<&Arc<dyn TableFormatKind>> {
        self.formats.iter().find(|k| k.name() == name)
    }

    /// The table formats' names, `parquet` first, for messages.
    pub fn format_names(&self) -> String {
        names(
            [crate::table_format::PARQUET]
                .into_iter()
                .chain(self.formats.iter().map(|k| k.name())),
        )
    }

    /// Register a settings table (`[aws]`, `[engine]`): a top-level table the kinds of one
    /// crate share.
    ///
    /// # Panics
    ///
    /// When the table is registered already, or is one lake-core or a backend reads.
    pub fn settings(mut self, kind: impl SettingsKind) -> Self {
        once(
            "settings",
            kind.table(),
            self.settings
                .iter()
                .map(|k| k.table())
                .chain(crate::config::CORE_TABLES)
                .chain(self.backends.iter().filter_map(|b| b.table())),
        );
        self.settings.push(Arc::new(kind));
        self
    }

    /// Every settings table, in registration order.
    pub fn settings_kinds(&self) -> impl Iterator<Item = &Arc<dyn SettingsKind>> {
        self.settings.iter()
    }

    /// The backend named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn BackendKind>> {
        self.backends.iter().find(|k| k.name() == name)
    }

    /// Every backend, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn BackendKind>> {
        self.backends.iter()
    }

    /// The default backend's name.
    pub fn default_name(&self) -> Option<&'static str> {
        self.backends.first().map(|k| k.name())
    }

    /// The backends' names, for messages (`local, spark, emr`).
    pub fn names(&self) -> String {
        names(self.backends.iter().map(|k| k.name()))
    }

    /// The source kind named `name`.
    pub fn source_kind(&self, name: &str) -> Option<&Arc<dyn SourceKind>> {
        self.sources.iter().find(|k| k.name() == name)
    }

    /// The source kinds' names, for messages.
    pub fn source_names(&self) -> String {
        names(self.sources.iter().map(|k| k.name()))
    }

    /// The sink kind named `name`.
    pub fn sink_kind(&self, name: &str) -> Option<&Arc<dyn SinkKind>> {
        self.sinks.iter().find(|k| k.name() == name)
    }

    /// The sink kinds' names, for messages.
    pub fn sink_names(&self) -> String {
        names(self.sinks.iter().map(|k| k.name()))
    }

    /// The catalog kind named `name`.
    pub fn catalog_kind(&self, name: &str) -> Option<&Arc<dyn CatalogKind>> {
        self.catalogs.iter().find(|k| k.name() == name)
    }

    /// The catalog kinds' names, for messages.
    pub fn catalog_names(&self) -> String {
        names(self.catalogs.iter().map(|k| k.name()))
    }
}

/// A kind's checked config as the pipeline holds it (`Checked<dyn SinkConfig>`): readable as the
/// kind's own type with [`downcast`](Self::downcast), and as the trait through `Deref`.
#[derive(Debug)]
pub struct Checked<T: ?Sized>(pub Arc<T>);

impl<T: ?Sized> Clone for Checked<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: ?Sized + AsAny> Checked<T> {
    /// The checked config as the kind's own type (`PostgresConfig`, `HttpSpec`).
    pub fn downcast<U: 'static>(&self) -> Option<&U> {
        (*self.0).as_any().downcast_ref()
    }
}

impl<T: ?Sized> std::ops::Deref for Checked<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A kind's checked config as the JSON object `lake plan --json` shows (its fields); empty for
/// a value that does not serialise to an object.
pub fn json_object<T: serde::Serialize + ?Sized>(
    value: &T,
) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}
