//! `${env:VAR}` references and the [`Secret`] values they resolve to.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::{Error, Result};

/// A configuration string that may refer to environment variables as `${env:VAR}`.
///
/// It displays and serializes as written (with the references, never their values), so it is
/// safe in plans, logs and the ledger. [`Template::resolve`] gives the value as a [`Secret`].
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    raw: String,
    parts: Vec<Part>,
}

#[derive(Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Env(String),
}

impl Template {
    /// Parse `raw`; the error says what is wrong with a reference.
    pub fn parse(raw: &str) -> std::result::Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = raw;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| {
                format!("unclosed reference in {raw:?}: expected `${{env:NAME}}`")
            })?;
            let inner = &after[..end];
            let var = inner.strip_prefix("env:").ok_or_else(|| {
                format!("unsupported reference `${{{inner}}}`: only `${{env:NAME}}` is supported")
            })?;
            if !is_env_name(var) {
                return Err(format!(
                    "`${{env:{var}}}`: {var:?} is not a valid environment variable name"
                ));
            }
            parts.push(Part::Env(var.to_owned()));
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self {
            raw: raw.to_owned(),
            parts,
        })
    }

    /// The text as written in lake.toml.
    pub fn as_written(&self) -> &str {
        &self.raw
    }

    /// True when the template refers to at least one environment variable.
    pub fn is_secret(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Env(_)))
    }

    /// Resolve the references with `lookup` (usually `std::env::var`); `key` names the
    /// lake.toml key in the error for a missing variable.
    pub fn resolve(&self, key: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Secret> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Env(var) => out.push_str(&lookup(var).ok_or_else(|| Error::MissingEnv {
                    var: var.clone(),
                    key: key.to_owned(),
                })?),
            }
        }
        Ok(Secret {
            value: out,
            sensitive: self.is_secret(),
        })
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.raw, f)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

/// A resolved value that may hold a secret. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    sensitive: bool,
}

impl Secret {
    /// A value that is not secret (it came from lake itself, not from `${env:…}`).
    pub fn plain(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            sensitive: false,
        }
    }

    /// The value, for handing to a process or a request. Never log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// True when the value came from an environment variable.
    pub fn is_sensitive(&self) -> bool {
        self.sensitive
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Replaces every occurrence of the given secret values in a text by `***`.
///
/// Used on everything a step prints before it is shown or stored, so a script that echoes its
/// token does not leak it into the terminal, an error or the ledger.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<Secret>,
}

impl Redactor {
    /// A redactor for the sensitive values among `values`.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a Secret>) -> Self {
        Self {
            secrets: values
                .into_iter()
                .filter(|s| s.sensitive && s.value.len() >= 3)
                .cloned()
                .collect(),
        }
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_owned(), |t, s| t.replace(&s.value, "***"))
    }
}

/// True for a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_and_never_displays() {
        let t = Template::parse("Bearer ${env:TOKEN}!").unwrap();
        assert!(t.is_secret());
        let s = t
            .resolve("steps.a.env.X", &|v| {
                (v == "TOKEN").then(|| "hunter2".into())
            })
            .unwrap();
        assert_eq!(s.expose(), "Bearer hunter2!");
        assert_eq!(
            format!("{s} {s:?} {t}"),
            "*** Secret(***) Bearer ${env:TOKEN}!"
        );
        let r = Redactor::new([&s]);
        assert_eq!(r.redact("got Bearer hunter2! ok"), "got *** ok");
    }

    #[test]
    fn missing_variable_names_the_key() {
        let t = Template::parse("${env:NOPE_NOT_SET}").unwrap();
        let err = t.resolve("steps.a.env.X", &|_| None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "steps.a.env.X: environment variable NOPE_NOT_SET is not set"
        );
    }

    #[test]
    fn bad_references() {
        assert!(
            Template::parse("${env:1X}")
                .unwrap_err()
                .contains("not a valid")
        );
        assert!(
            Template::parse("${HOME}")
                .unwrap_err()
                .contains("unsupported")
        );
        assert!(Template::parse("${env:X").unwrap_err().contains("unclosed"));
        assert!(!Template::parse("plain").unwrap().is_secret());
    }
}
