//! # lake-local
//!
//! The backends that make `lake run` work with nothing but the binary:
//!
//! - [`LocalZoneStore`]: a [`ZoneStore`](lake_core::ZoneStore) on [object_store], as a folder
//!   ([`LocalZoneStore::filesystem`]) or in memory ([`LocalZoneStore::memory`]). Puts stream
//!   through a temporary file that is renamed into place, so they are atomic; put-if-absent is a
//!   hard link, so it holds between processes.
//! - [`LocalBackend`]: a [`ClusterBackend`](lake_core::ClusterBackend) that runs `command`
//!   steps as child processes of this machine and `sql` steps on the [`Engine`].
//! - [`Engine`]: Apache DataFusion over the lake's committed datasets, for `sql` steps and
//!   `lake query`.
//! - [`ZonesAsObjectStore`]: any zone store (S3 included) as the object store the engine reads
//!   and writes.

mod backend;
pub mod engine;
mod plugin;
mod settings;
pub mod spool;
mod store;
mod zones_as_object_store;

pub use backend::{LocalBackend, stop_group};
pub use engine::Engine;
pub use plugin::{LocalConfig, LocalKind};
pub use settings::{EngineConfig, EngineSettings, EngineSpec, Verify};
pub use store::LocalZoneStore;
pub use zones_as_object_store::ZonesAsObjectStore;

/// The object_store crate this crate is built on, for [`Engine::new`] callers.
pub use object_store;
