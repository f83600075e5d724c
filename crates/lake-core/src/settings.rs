//! Settings tables: a top-level table of lake.toml that the kinds of one crate share
//! (`[aws]` of lake-aws: how every AWS client is made; `[engine]` of lake-local: the embedded
//! engine's limits).
//!
//! lake-core does not know their keys. The crate that owns a table registers a
//! [`SettingsKind`] (`Kinds::settings`); validation hands it the table, with lines, and keeps
//! what it checked in the [`Pipeline`](crate::config::Pipeline) as JSON. The crate reads it back
//! as its own type with [`Pipeline::settings`](crate::config::Pipeline::settings); another
//! crate may read the keys it needs the same way, as its own narrower type, without depending
//! on the owner (Spark reads `[aws]`'s endpoint for s3a).

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::ConfigCx;

/// A top-level table a crate owns, checked when lake.toml is loaded.
pub trait SettingsKind: std::fmt::Debug + Send + Sync + 'static {
    /// The table's name (`aws`).
    fn table(&self) -> &'static str;

    /// Check the table (absent: its defaults) and give its checked form, serialised; `None`
    /// when a problem was reported through `cx` (its `own()` reads the table with lines).
    fn configure(&self, cx: &mut ConfigCx<'_, '_>) -> Option<serde_json::Value>;
}

/// The checked settings tables of a pipeline, by table name.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Settings(pub(crate) BTreeMap<&'static str, serde_json::Value>);

impl Settings {
    /// Table `table` as `T`; `None` when no registered kind owns it. Each reader's `T` is
    /// checked when its crate's tests run; a mismatch is a bug, logged and read as absent.
    pub fn get<T: DeserializeOwned>(&self, table: &str) -> Option<T> {
        let value = self.0.get(table)?;
        T::deserialize(value)
            .inspect_err(|e| {
                tracing::error!(
                    "the checked [{table}] does not read as {}: {e}",
                    std::any::type_name::<T>()
                );
            })
            .ok()
    }
}

/// A settings kind whose crate this build leaves out: it accepts any keys in its table, so one
/// lake.toml serves every build, and gives no settings.
#[derive(Debug, Clone, Copy)]
pub struct AcceptAny(pub &'static str);

impl SettingsKind for AcceptAny {
    fn table(&self) -> &'static str {
        self.0
    }

    fn configure(&self, _cx: &mut ConfigCx<'_, '_>) -> Option<serde_json::Value> {
        None
    }
}
