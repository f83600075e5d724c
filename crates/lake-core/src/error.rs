//! The one error type of `lake-core`.

use std::path::PathBuf;

use crate::config::Diagnostics;

/// A boxed error from a backend or a library below `lake`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as its default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `lake-core` and in the backends that implement its traits.
///
/// Variants carry the context a user needs (the object key, the step, the source) and the
/// underlying cause as `source`, so the CLI can print the whole chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `lake.toml` is invalid; every problem found is listed.
    #[error("{diagnostics}")]
    Config {
        /// All problems, each with its file, line, column and key.
        diagnostics: Diagnostics,
    },

    /// An object that was asked for does not exist.
    #[error("object not found: {key} (in {store})")]
    NotFound {
        /// The object key, relative to the lake root.
        key: String,
        /// The store's root URL.
        store: String,
    },

    /// A key is not a valid object key.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },

    /// A store operation failed.
    #[error("{operation} {key} failed (in {store})")]
    Store {
        /// The operation: `put`, `get`, `list`, …
        operation: &'static str,
        /// The object key or prefix.
        key: String,
        /// The store's root URL.
        store: String,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// An implementation does not support an operation. Never a silent no-op.
    #[error("{operation} is not implemented by {implementer}")]
    NotImplemented {
        /// The operation.
        operation: &'static str,
        /// The implementation that lacks it.
        implementer: String,
    },

    /// Another run holds the pipeline's lock.
    #[error(
        "pipeline {pipeline:?} is locked by run {run_id} ({holder}) until {expires}; wait for it to finish or remove {key} if that run is gone"
    )]
    Locked {
        /// The pipeline name.
        pipeline: String,
        /// The run holding the lock.
        run_id: String,
        /// Who holds it (user@host pid N).
        holder: String,
        /// When the lock expires (RFC 3339).
        expires: String,
        /// The lock object's key.
        key: String,
    },

    /// A source failed while listing or fetching its objects.
    #[error("source {source_name:?}: {message}")]
    Source {
        /// The source name (the `[sources.<name>]` table).
        source_name: String,
        /// What failed.
        message: String,
        /// The cause, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A sink failed to load its table (the table is as it was).
    #[error("sink {sink:?} ({table}): {message}")]
    Sink {
        /// The sink name (the `[sinks.<name>]` table).
        sink: String,
        /// Its table (`schema.table`).
        table: String,
        /// What failed, in words (never the connection's password).
        message: String,
        /// The cause, if any (a driver's or a service's error).
        #[source]
        source: Option<BoxError>,
    },

    /// A catalog (Glue) call failed or refused a table change.
    #[error("catalog table {table}: {message}")]
    Catalog {
        /// `database.table`.
        table: String,
        /// What failed, in words.
        message: String,
        /// The cause, if any (the catalog service's error).
        #[source]
        source: Option<BoxError>,
    },

    /// A cluster backend operation failed.
    #[error("{backend}: {operation} failed")]
    Cluster {
        /// The backend's name.
        backend: String,
        /// The operation (`start`, `submit step x`, `terminate`, …).
        operation: String,
        /// The cause.
        #[source]
        source: BoxError,
    },

    /// A `${env:VAR}` reference names a variable that is not set.
    #[error("{key}: environment variable {var} is not set")]
    MissingEnv {
        /// The variable name.
        var: String,
        /// The lake.toml key that refers to it (for example `steps.report.env.TOKEN`).
        key: String,
    },

    /// A `${aws-secretsmanager:…}` or `${aws-ssm:…}` reference could not be read.
    #[error("{key}: {reference} {message}")]
    Secret {
        /// The reference as written.
        reference: String,
        /// The lake.toml key that refers to it (`sinks.pg.url`).
        key: String,
        /// What went wrong, in words (never the value).
        message: String,
    },

    /// Reading or writing a local file failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `create directory`).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// A JSON document written by lake (manifest, ledger, lock, state) could not be read.
    #[error("{key} is not a valid lake document")]
    Corrupt {
        /// The object key.
        key: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },

    /// A committed object is not what its manifest says: missing, another size, or other bytes
    /// (changed or damaged since it was committed).
    #[error("object {object} does not match its manifest: {message}")]
    Mismatch {
        /// The object, as a URL or path a user can open.
        object: String,
        /// What differs.
        message: String,
        /// The object is not in the store at all (deleted by hand, or by a republish that
        /// replaced the manifest a reader read).
        missing: bool,
    },

    /// A query failed: a `sql` step's SQL, an expectation, `lake query`, or reading its input.
    #[error("{origin}: {message}")]
    Query {
        /// What ran it: `step credit (lake.toml:12, steps.credit.sql)`, `lake query`.
        origin: String,
        /// What failed: the engine's message, or what was being done when `source` holds the
        /// engine's error.
        message: String,
        /// The engine's error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// A value given on the command line or through the API is invalid.
    #[error("{what}: {message}")]
    Invalid {
        /// Which value.
        what: String,
        /// Why.
        message: String,
    },

    /// A fault in lake itself (a panicked thread or task): a bug to report, not a problem of
    /// the input or the environment.
    #[error("{what}: {message}")]
    Internal {
        /// What was being done.
        what: String,
        /// What went wrong.
        message: String,
    },

    /// The run was cancelled (Ctrl-C, SIGTERM or the caller's token).
    #[error("the run was cancelled")]
    Cancelled,
}

impl Error {
    /// A [`Error::Store`] with its context.
    pub fn store(
        operation: &'static str,
        key: impl Into<String>,
        store: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Store {
            operation,
            key: key.into(),
            store: store.into(),
            source: source.into(),
        }
    }

    /// A [`Error::Query`] run by `origin` that failed with `message` alone.
    pub fn query(origin: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Query {
            origin: origin.into(),
            message: message.into(),
            source: None,
        }
    }

    /// A [`Error::Query`] run by `origin` that failed `doing` something, caused by `source`.
    pub fn query_caused(
        origin: impl Into<String>,
        doing: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::Query {
            origin: origin.into(),
            message: doing.into(),
            source: Some(source.into()),
        }
    }

    /// A [`Error::Catalog`] about `table` (`database.table`): `message`, and its cause if any.
    pub fn catalog(
        table: impl Into<String>,
        message: impl Into<String>,
        source: Option<BoxError>,
    ) -> Self {
        Self::Catalog {
            table: table.into(),
            message: message.into(),
            source,
        }
    }

    /// A [`Error::Sink`] of sink `sink` loading `table`: `message`, and its cause if any.
    pub fn sink(
        sink: impl Into<String>,
        table: impl Into<String>,
        message: impl Into<String>,
        source: Option<BoxError>,
    ) -> Self {
        Self::Sink {
            sink: sink.into(),
            table: table.into(),
            message: message.into(),
            source,
        }
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// True for an object a manifest lists that is not in the store: deleted by hand, or (for
    /// a reader that read a manifest just before a republish replaced it) deleted by that
    /// republish, when reading again from the new manifest succeeds.
    pub fn is_gone(&self) -> bool {
        matches!(self, Self::Mismatch { missing: true, .. })
    }

    /// [`Error::Mismatch`]'s message for an object that is not in the store.
    pub const NOT_IN_STORE: &str = "it is listed by its manifest but is not in the store";

    /// True when the error comes from the user's configuration, arguments or build (CLI exit
    /// code 2) rather than from a run (exit code 1): [`ErrorKind::Usage`] but a cancel.
    pub fn is_usage(&self) -> bool {
        self.kind() == ErrorKind::Usage && !matches!(self, Self::Cancelled)
    }

    /// What kind of failure this is: what the CLI's exit code, step and window retries and
    /// re-reads decide from. A failure of the environment (a store, a source, a cluster…)
    /// whose cause is a crate's [`Classify`] error (wrapped in a [`Cause`]) takes its kind
    /// from that error: an access denial is not worth a retry.
    pub fn kind(&self) -> ErrorKind {
        let kind = self.own_kind();
        if kind != ErrorKind::Transient {
            return kind;
        }
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            if let Some(cause) = e.downcast_ref::<Cause>() {
                return cause.kind;
            }
            next = e.source();
        }
        kind
    }

    /// The variant's own kind.
    fn own_kind(&self) -> ErrorKind {
        match self {
            Self::Config { .. }
            | Self::Invalid { .. }
            | Self::MissingEnv { .. }
            | Self::Secret { .. }
            | Self::NotImplemented { .. }
            | Self::InvalidKey { .. }
            | Self::Cancelled => ErrorKind::Usage,
            Self::Store { .. }
            | Self::Locked { .. }
            | Self::Source { .. }
            | Self::Sink { .. }
            | Self::Catalog { .. }
            | Self::Cluster { .. }
            | Self::Io { .. } => ErrorKind::Transient,
            Self::NotFound { .. }
            | Self::Corrupt { .. }
            | Self::Mismatch { .. }
            | Self::Query { .. } => ErrorKind::Data,
            Self::Internal { .. } => ErrorKind::Internal,
        }
    }
}

/// A value that does not parse or cannot be used (a size, a duration, a template, a cron
/// expression, a table name, a type): what is wrong with it, in words, for a message that says
/// where the value was written (`lake.toml:12: sinks.pg.table: …`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

impl From<String> for ValueError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for ValueError {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::ops::Deref for ValueError {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<ValueError> for String {
    fn from(e: ValueError) -> Self {
        e.0
    }
}

/// The kinds of [`Error`], by what helps: fixing the command or lake.toml, trying again, fixing
/// the data, or reporting a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The configuration, the arguments or the build (CLI exit code 2; never retried). A
    /// cancelled run is one too (never retried: that would undo the cancel), though its exit
    /// code stays 1.
    Usage,
    /// The environment: a network, a service, a lock, a cluster (step and window retries
    /// apply).
    Transient,
    /// The environment refused: credentials, rights, a missing database or bucket. Fixed
    /// outside lake (an IAM policy, a grant, a password), so never retried; exit code 1.
    Refused,
    /// The data: a missing, damaged or changed object, a query that its data fails.
    Data,
    /// lake itself: a bug.
    Internal,
}

/// An error of a crate below lake-core's traits (lake-aws's `AwsError`, lake-postgres's
/// `PgError`) that knows what kind of failure it is.
pub trait Classify: std::error::Error + Send + Sync + 'static {
    /// What kind of failure this is.
    fn kind(&self) -> ErrorKind;
}

/// A [`Classify`] error as the `source` of an [`Error`]: shown as that error (its message and
/// its causes), and [`Error::kind`] takes its kind from it. The crate's error is reached with
/// [`get_ref`](Self::get_ref) and `downcast_ref`.
#[derive(Debug)]
pub struct Cause {
    kind: ErrorKind,
    inner: BoxError,
}

impl Cause {
    /// `error`, with its kind.
    pub fn new(error: impl Classify) -> Self {
        Self {
            kind: error.kind(),
            inner: Box::new(error),
        }
    }

    /// The kind `error` gave.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The crate's error.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.inner
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

impl<E: Classify> From<E> for Cause {
    fn from(error: E) -> Self {
        Self::new(error)
    }
}
