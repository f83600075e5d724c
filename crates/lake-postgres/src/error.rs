//! lake-postgres's error: what the server answered (its SQLSTATE decides the kind), in words
//! that never carry the password.

use lake_core::{Classify, ErrorKind};

/// A PostgreSQL sink's or source's failure. It reaches lake-core's [`Error`](lake_core::Error)
/// as the [`Cause`](lake_core::Cause) of a sink or source error, which says what was being
/// done.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL is not a PostgreSQL URL.
    #[error("{0}")]
    Url(String),
    /// TLS could not be set up on this machine.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// The server answered with an error, or could not be reached: its message with the fix
    /// for the usual first-contact failures.
    #[error("{message}")]
    Server {
        /// In words.
        message: String,
        /// The SQLSTATE (`42501`), when the server answered.
        sqlstate: Option<String>,
    },
    /// A value or a file of an extract that could not be made.
    #[error("{0}")]
    Extract(String),
}

impl PgError {
    /// `e` in words (`target` says where the connection points, without its password).
    pub(crate) fn server(e: &tokio_postgres::Error, target: &str) -> Self {
        Self::Server {
            message: crate::connect::explain(e, target),
            sqlstate: e.code().map(|c| c.code().to_owned()),
        }
    }
}

impl Classify for PgError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Url(_) => ErrorKind::Usage,
            Self::Tls(_) => ErrorKind::Internal,
            Self::Extract(_) => ErrorKind::Data,
            // No answer (refused, timed out, cut): the network or the server, worth a retry.
            Self::Server { sqlstate: None, .. } => ErrorKind::Transient,
            Self::Server {
                sqlstate: Some(code),
                ..
            } => match &code[..2.min(code.len())] {
                // The password, the role, no such database, a missing grant: fixed in the URL
                // or the server's grants.
                _ if code == "42501" => ErrorKind::Refused,
                "28" | "3D" => ErrorKind::Refused,
                // Syntax, unknown names, features the server lacks: lake.toml's query.
                "3F" | "42" | "0A" => ErrorKind::Usage,
                // A value the table refuses: the data.
                "22" | "23" => ErrorKind::Data,
                _ => ErrorKind::Transient,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: Option<&str>) -> PgError {
        PgError::Server {
            message: "m".into(),
            sqlstate: code.map(str::to_owned),
        }
    }

    /// The SQLSTATE's class decides: a wrong password or a missing grant is refused (fixed,
    /// not retried), a syntax error is lake.toml's; a value the table refuses is the data's; no answer or a deadlock is retried.
    #[test]
    fn the_sqlstate_class_decides_the_kind() {
        assert_eq!(server(Some("28P01")).kind(), ErrorKind::Refused);
        assert_eq!(server(Some("42501")).kind(), ErrorKind::Refused);
        assert_eq!(server(Some("3D000")).kind(), ErrorKind::Refused);
        assert_eq!(server(Some("42601")).kind(), ErrorKind::Usage);
        assert_eq!(server(Some("22003")).kind(), ErrorKind::Data);
        assert_eq!(server(Some("23505")).kind(), ErrorKind::Data);
        assert_eq!(server(Some("40P01")).kind(), ErrorKind::Transient);
        assert_eq!(server(Some("57P01")).kind(), ErrorKind::Transient);
        assert_eq!(server(None).kind(), ErrorKind::Transient);
        assert_eq!(PgError::Url("x".into()).kind(), ErrorKind::Usage);
        // Through lake-core's error: the sink's kind is its cause's.
        let e = lake_core::Error::sink(
            "pg",
            "public.t",
            "loading",
            Some(Box::new(lake_core::Cause::new(server(Some("42501"))))),
        );
        assert_eq!(e.kind(), ErrorKind::Refused);
        assert_eq!(
            lake_core::run::error_chain(&e),
            "sink \"pg\" (public.t): loading: m"
        );
    }
}
