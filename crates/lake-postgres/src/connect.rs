//! Connecting to PostgreSQL: TLS as the URL's `sslmode` says, and errors in words that never
//! carry the password.

use std::sync::Arc;
use std::time::Duration;

use lake_core::config::redact_url;

use crate::config::Spec;
use crate::error::PgError;
use lake_core::{Cause, Error, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

/// A connection and the task that drives it (stopped when the client is dropped).
pub(crate) struct Connection {
    pub(crate) client: Client,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The sink's error: its name, table and `message`.
pub(crate) fn sink_error(spec: &Spec, message: impl Into<String>) -> Error {
    Error::sink(&spec.name, spec.table.to_string(), message, None)
}

/// The sink's error while `doing` something (`connecting`, `loading`): what the server said.
pub(crate) fn sink_failed(spec: &Spec, doing: &str, e: PgError) -> Error {
    sink_error_caused(spec, doing, Cause::new(e))
}

/// The sink's error while `doing` something, caused by `source`.
pub(crate) fn sink_error_caused(
    spec: &Spec,
    doing: impl Into<String>,
    source: impl Into<lake_core::BoxError>,
) -> Error {
    Error::sink(
        &spec.name,
        spec.table.to_string(),
        doing,
        Some(source.into()),
    )
}

/// Where the URL points, for messages: `user@host:port/db`, no password.
pub(crate) fn describe_target(config: &Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("(default user)"),
        config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("(default database)")
    )
}

/// Resolve the sink's URL with `env` and connect, TLS per its `sslmode` (`disable`: none;
/// `prefer`: TLS when the server offers it; `require`: TLS or nothing; without one, `prefer`
/// on loopback and `require` elsewhere), certificates checked against the system's roots. Errors say what to fix: the server down, the password, the database.
pub(crate) async fn connect(
    spec: &Spec,
    env: &(dyn Fn(&str) -> Option<String> + Send + Sync),
) -> Result<(Connection, Config)> {
    connect_to(&format!("sinks.{}.url", spec.name), &spec.url, env, &|e| {
        sink_failed(spec, "connecting", e)
    })
    .await
}

/// Connect with the URL `url` (the lake.toml key `key`, resolved with `env`); `fail` makes
/// the error of the sink or source that connects.
pub(crate) async fn connect_to(
    key: &str,
    url: &lake_core::config::Template,
    env: &(dyn Fn(&str) -> Option<String> + Send + Sync),
    fail: &(dyn Fn(PgError) -> Error + Send + Sync),
) -> Result<(Connection, Config)> {
    let url = url.resolve(key, &env)?;
    let mut config: Config = url.expose().parse().map_err(|_| {
        fail(PgError::Url(format!(
            "{key} ({}) is not a PostgreSQL URL: expected postgres://user:password@host:5432/database",
            redact_url(url.expose())
        )))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    default_ssl_mode(&mut config, url.expose());
    config.application_name("lake");
    let target = describe_target(&config);
    let failed = |e: tokio_postgres::Error| fail(PgError::server(&e, &target));
    let (client, driver) = match config.get_ssl_mode() {
        tokio_postgres::config::SslMode::Disable => {
            let (client, connection) = config.connect(NoTls).await.map_err(failed)?;
            (client, tokio::spawn(async move { drop(connection.await) }))
        }
        _ => {
            let tls = tls_config().map_err(|e| fail(PgError::Tls(e.to_string())))?;
            let (client, connection) = config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                .await
                .map_err(failed)?;
            (client, tokio::spawn(async move { drop(connection.await) }))
        }
    };
    Ok((Connection { client, driver }, config))
}

/// Without `sslmode` in the URL: `prefer` (TLS when the server offers it) only for a server on
/// this machine (loopback, or a Unix socket); `require` for any other host, so a password never
/// crosses a network in the clear because a server (or someone between) did not offer TLS.
fn default_ssl_mode(config: &mut Config, url: &str) {
    use tokio_postgres::config::{Host, SslMode};
    if url.contains("sslmode=") {
        return;
    }
    let local = config.get_hosts().iter().all(|h| match h {
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    });
    if !local {
        config.ssl_mode(SslMode::Require);
    }
}

fn tls_config() -> std::result::Result<rustls::ClientConfig, rustls::Error> {
    use rustls_platform_verifier::BuilderVerifierExt;
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_platform_verifier()?
    .with_no_client_auth())
}

/// A PostgreSQL error in words, with what to do: the server's message (which never holds the
/// password) and, for the usual first-contact failures, the fix.
pub(crate) fn explain(e: &tokio_postgres::Error, target: &str) -> String {
    if let Some(db) = e.as_db_error() {
        let mut m = db.message().to_owned();
        if let Some(detail) = db.detail() {
            m.push_str(&format!(" ({detail})"));
        }
        let code = db.code();
        let hint = if *code == SqlState::INVALID_PASSWORD {
            Some(format!(
                "connecting to {target}: check the user and password in the url"
            ))
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            Some(format!(
                "connecting to {target}: create the database (createdb) or fix the url"
            ))
        } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            Some(format!(
                "connecting to {target}: the server refused this user (pg_hba.conf, or no such role)"
            ))
        } else if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            Some(
                "grant the sink's user CREATE on the database (or the schema) and INSERT on the table; `lake doctor` checks them"
                    .into(),
            )
        } else {
            db.hint().map(str::to_owned)
        };
        return match hint {
            Some(h) => format!("{m}: {h}"),
            None => m,
        };
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => format!(
                    "cannot connect to {target}: connection refused (is PostgreSQL running there, on that port?)"
                ),
                std::io::ErrorKind::TimedOut => {
                    format!(
                        "cannot connect to {target}: timed out (a firewall, or the wrong host?)"
                    )
                }
                _ => format!("cannot connect to {target}: {io}"),
            };
        }
        source = s.source();
    }
    if e.to_string().contains("timed out") {
        return format!("cannot connect to {target}: timed out (a firewall, or the wrong host?)");
    }
    format!("{target}: {}", lake_core::run::error_chain(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::SslMode;

    #[test]
    fn tls_is_required_off_this_machine_unless_the_url_says() {
        for (url, want) in [
            ("postgres://u:p@127.0.0.1/x", SslMode::Prefer),
            ("postgres://u:p@localhost:5433/x", SslMode::Prefer),
            ("postgres://u:p@[::1]/x", SslMode::Prefer),
            ("postgres://u:p@db.internal/x", SslMode::Require),
            ("postgres://u:p@10.0.0.5/x", SslMode::Require),
            (
                "postgres://u:p@db.internal/x?sslmode=disable",
                SslMode::Disable,
            ),
            (
                "postgres://u:p@db.internal/x?sslmode=prefer",
                SslMode::Prefer,
            ),
        ] {
            let mut c: Config = url.parse().unwrap();
            default_ssl_mode(&mut c, url);
            assert_eq!(c.get_ssl_mode(), want, "{url}");
        }
    }
}
