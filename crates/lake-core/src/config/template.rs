//! The one placeholder language of lake.toml values, parsed once: references to secrets
//! (`${env:VAR}`, `${aws-secretsmanager:NAME}`, `${aws-secretsmanager:NAME#key}`,
//! `${aws-ssm:/path/name}`, resolved to [`Secret`]s), the run's `{date}`, `{run_id}`,
//! `{root}`, `{output}`, and a window's `{start}`, `{end}`, `{date}` with an optional date
//! format (`{start:%Y%m%d}`).

use std::fmt;

use serde::{Serialize, Serializer};

use crate::ValueError;
use crate::{Error, Result};

/// The placeholders a window of a source fills (HTTP URLs, query values, file names).
pub const WINDOW_VARS: &[&str] = &["start", "end", "date"];
/// The placeholders a step's command and arguments get.
pub const STEP_VARS: &[&str] = &["date", "run_id", "root", "output"];
/// Placeholders that are dates and take a format (`{start:%Y%m%d}`; default `%Y-%m-%d`).
const DATE_VARS: &[&str] = &["start", "end", "date"];

/// A configuration string with placeholders: [`Reference`]s (`${env:VAR}`,
/// `${aws-secretsmanager:…}`, `${aws-ssm:…}`) and `{name}` / `{name:%fmt}` values filled at
/// run time.
///
/// It displays and serializes as written (with the references, never their values), so it is
/// safe in plans, logs and the ledger. [`Template::render`] fills it; the result is a [`Secret`]
/// when a reference went into it. A referenced value is inserted as it is: braces in a token
/// are never read as placeholders.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    raw: String,
    parts: Vec<Part>,
}

#[derive(Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Ref(Reference),
    Var {
        name: String,
        format: Option<String>,
    },
}

impl Template {
    /// Parse `raw` leniently: `${env:…}` must be well formed; `{name}` of a known placeholder
    /// (`{date}`, `{start:%Y%m%d}`, `{run_id}`, …) is one, anything else in braces is text (a
    /// command's `awk '{print $1}'` stays as it is).
    pub fn parse(raw: &str) -> std::result::Result<Self, ValueError> {
        Self::parse_with(raw, None)
    }

    /// Parse `raw` where only `allowed` placeholders may appear: any other `{…}`, a `{` without
    /// its `}`, or a bad date format is an error saying so.
    pub fn parse_only(raw: &str, allowed: &[&str]) -> std::result::Result<Self, ValueError> {
        Self::parse_with(raw, Some(allowed))
    }

    fn parse_with(raw: &str, allowed: Option<&[&str]>) -> std::result::Result<Self, ValueError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = raw;
        while let Some(open) = rest.find(['$', '{']) {
            let (before, at) = rest.split_at(open);
            text.push_str(before);
            if let Some(after) = at.strip_prefix("${") {
                let end = after.find('}').ok_or_else(|| {
                    format!("unclosed reference in {raw:?}: expected `${{env:NAME}}`")
                })?;
                flush(&mut parts, &mut text);
                parts.push(Part::Ref(Reference::parse(&after[..end])?));
                rest = &after[end + 1..];
                continue;
            }
            if let Some(after) = at.strip_prefix('$') {
                text.push('$');
                rest = after;
                continue;
            }
            // `{`
            let Some(close) = at.find('}') else {
                if allowed.is_some() {
                    return Err(format!("{raw:?}: a `{{` without its `}}`").into());
                }
                text.push_str(at);
                rest = "";
                break;
            };
            let inner = &at[1..close];
            let (name, format) = match inner.split_once(':') {
                Some((n, f)) => (n, Some(f)),
                None => (inner, None),
            };
            let known = match allowed {
                Some(a) => a.contains(&name),
                None => STEP_VARS.contains(&name) || WINDOW_VARS.contains(&name),
            };
            let dated = DATE_VARS.contains(&name);
            if !known || (format.is_some() && !dated) {
                if let Some(a) = allowed {
                    let list: Vec<String> = a.iter().map(|n| format!("{{{n}}}")).collect();
                    return Err(format!(
                        "{raw:?}: unknown placeholder {{{inner}}}; use {}{}",
                        list.join(", "),
                        if a.iter().any(|n| DATE_VARS.contains(n)) {
                            " or a date format such as {start:%Y%m%d}"
                        } else {
                            ""
                        }
                    )
                    .into());
                }
                text.push_str(&at[..=close]);
                rest = &at[close + 1..];
                continue;
            }
            if let Some(f) = format
                && (f.is_empty()
                    || chrono::format::StrftimeItems::new(f)
                        .any(|i| matches!(i, chrono::format::Item::Error)))
            {
                return Err(
                    format!("{raw:?}: {f:?} is not a date format (%Y-%m-%d, %Y%m%d, …)").into(),
                );
            }
            flush(&mut parts, &mut text);
            parts.push(Part::Var {
                name: name.to_owned(),
                format: format.map(str::to_owned),
            });
            rest = &at[close + 1..];
        }
        text.push_str(rest);
        flush(&mut parts, &mut text);
        Ok(Self {
            raw: raw.to_owned(),
            parts,
        })
    }

    /// Fill the template: each `{name}` from `vars` (a date placeholder's value is a date,
    /// formatted with its format), each reference from `env` by its
    /// [`lookup_key`](Reference::lookup_key); `key` names the lake.toml key in the error for a
    /// missing value. A placeholder `vars` has no value for stays as written.
    pub fn render(
        &self,
        key: &str,
        vars: &dyn Fn(&str) -> Option<Value>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Secret> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Ref(r) => out.push_str(&env(&r.lookup_key()).ok_or_else(|| r.missing(key))?),
                Part::Var { name, format } => match (vars(name), format) {
                    (Some(Value::Date(d)), f) => {
                        out.push_str(&d.format(f.as_deref().unwrap_or("%Y-%m-%d")).to_string())
                    }
                    (Some(Value::Text(t)), _) => out.push_str(&t),
                    (None, None) => out.push_str(&format!("{{{name}}}")),
                    (None, Some(f)) => out.push_str(&format!("{{{name}:{f}}}")),
                },
            }
        }
        Ok(Secret {
            value: out,
            sensitive: self.is_secret(),
        })
    }

    /// The text as written in lake.toml.
    pub fn as_written(&self) -> &str {
        &self.raw
    }

    /// True when the template refers to at least one secret (an environment variable or a
    /// secrets manager's value).
    pub fn is_secret(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Ref(_)))
    }

    /// The references the template holds, in order.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            _ => None,
        })
    }

    /// Resolve the references with `lookup` (by their [`lookup_key`](Reference::lookup_key)),
    /// leaving `{…}` placeholders as written; `key` names the lake.toml key in the error for a
    /// missing value.
    pub fn resolve(&self, key: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Secret> {
        self.render(key, &|_| None, lookup)
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

/// Where a secret of lake.toml comes from: `${env:NAME}`, `${aws-secretsmanager:NAME}` (the
/// whole secret string), `${aws-secretsmanager:NAME#key}` (one key of a JSON secret) or
/// `${aws-ssm:/path/name}` (a Systems Manager parameter, SecureString decrypted).
///
/// A secret manager's `NAME` may be a name or an ARN. It displays as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Reference {
    /// An environment variable.
    Env {
        /// Its name.
        name: String,
    },
    /// A secret of AWS Secrets Manager.
    AwsSecretsmanager {
        /// Its name or ARN.
        secret: String,
        /// A key of its JSON object; `None`: the whole secret string.
        key: Option<String>,
    },
    /// A parameter of AWS Systems Manager Parameter Store.
    AwsSsm {
        /// Its name (`/path/name`) or ARN.
        name: String,
    },
}

impl Reference {
    /// Parse the text between `${` and `}`.
    pub fn parse(inner: &str) -> std::result::Result<Self, ValueError> {
        let bad = |what: &str| -> ValueError { format!("`${{{inner}}}`: {what}").into() };
        let (scheme, rest) = inner.split_once(':').ok_or_else(|| {
            bad("unsupported reference: use `${env:NAME}`, `${aws-secretsmanager:NAME}`, `${aws-secretsmanager:NAME#key}` or `${aws-ssm:/path/name}`")
        })?;
        match scheme {
            "env" if is_env_name(rest) => Ok(Self::Env {
                name: rest.to_owned(),
            }),
            "env" => Err(format!(
                "`${{env:{rest}}}`: {rest:?} is not a valid environment variable name"
            )
            .into()),
            "aws-secretsmanager" => {
                let (secret, key) = match rest.split_once('#') {
                    Some((s, "")) => {
                        return Err(bad(&format!("the key after `#` is empty (`{s}#field`)")));
                    }
                    Some((s, k)) => (s, Some(k.to_owned())),
                    None => (rest, None),
                };
                let name_ok = |c: char| c.is_ascii_alphanumeric() || "/_+=.@-:".contains(c);
                if secret.is_empty() || !secret.chars().all(name_ok) {
                    return Err(bad(
                        "a secret's name has letters, digits and /_+=.@- (or is its ARN)",
                    ));
                }
                Ok(Self::AwsSecretsmanager {
                    secret: secret.to_owned(),
                    key,
                })
            }
            "aws-ssm" => {
                let name_ok = |c: char| c.is_ascii_alphanumeric() || "/_.-:".contains(c);
                if rest.is_empty() || !rest.chars().all(name_ok) {
                    return Err(bad(
                        "a parameter's name has letters, digits and /_.- (`/path/name`, or its ARN)",
                    ));
                }
                Ok(Self::AwsSsm {
                    name: rest.to_owned(),
                })
            }
            _ => Err(bad(
                "unsupported reference: use `${env:NAME}`, `${aws-secretsmanager:NAME}`, `${aws-secretsmanager:NAME#key}` or `${aws-ssm:/path/name}`",
            )),
        }
    }

    /// The key an [`EnvLookup`](crate::run::EnvLookup) is asked for this reference's value:
    /// an environment variable's name, else the reference as written without `${` `}`
    /// (`aws-ssm:/path/name`), which no environment variable name can be.
    pub fn lookup_key(&self) -> String {
        match self {
            Self::Env { name } => name.clone(),
            other => {
                let shown = other.to_string();
                shown[2..shown.len() - 1].to_owned()
            }
        }
    }

    /// True for a reference to a secrets manager (not the environment): read once per run
    /// before anything else.
    pub fn is_managed(&self) -> bool {
        !matches!(self, Self::Env { .. })
    }

    /// The error for a lookup that found nothing, at lake.toml key `key`.
    fn missing(&self, key: &str) -> Error {
        match self {
            Self::Env { name } => Error::MissingEnv {
                var: name.clone(),
                key: key.to_owned(),
            },
            other => Error::Secret {
                reference: other.to_string(),
                key: key.to_owned(),
                message: "was not read before it was used (lake reads every secret of lake.toml once at the start of a run)".into(),
            },
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env { name } => write!(f, "${{env:{name}}}"),
            Self::AwsSecretsmanager { secret, key: None } => {
                write!(f, "${{aws-secretsmanager:{secret}}}")
            }
            Self::AwsSecretsmanager {
                secret,
                key: Some(k),
            } => write!(f, "${{aws-secretsmanager:{secret}#{k}}}"),
            Self::AwsSsm { name } => write!(f, "${{aws-ssm:{name}}}"),
        }
    }
}

/// The value of a `{name}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A date, formatted with the placeholder's format (default `%Y-%m-%d`).
    Date(chrono::NaiveDate),
    /// Text, inserted as it is.
    Text(String),
}

fn flush(parts: &mut Vec<Part>, text: &mut String) {
    if !text.is_empty() {
        parts.push(Part::Text(std::mem::take(text)));
    }
}

/// A resolved value that may hold a secret. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    sensitive: bool,
}

impl Secret {
    /// A value that is not secret (it came from lake itself, not from a reference).
    pub fn plain(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            sensitive: false,
        }
    }

    /// A value that is secret though it came from no reference (a credential read from a
    /// file): redacted like one.
    pub fn sensitive(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            sensitive: true,
        }
    }

    /// The value, for handing to a process or a request. Never log it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// True when the value came from a reference (or is otherwise secret).
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

/// Replaces every occurrence of the given secret values in a text by `***`, in every form a
/// server or a program may echo them in: as written, percent-encoded (`%2B`, `%2b`, and a
/// form's `+` for a space) and base64 (standard and URL-safe, padded or not).
///
/// Used on everything a step prints before it is shown or stored, so a script that echoes its
/// token does not leak it into the terminal, an error or the ledger.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Every form of every secret, longest first.
    forms: Vec<String>,
}

/// The forms `value` may be echoed in.
fn forms_of(value: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    /// RFC 3986's unreserved characters stay as they are.
    const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    /// HTML forms (application/x-www-form-urlencoded) keep `*-._` and write a space as `+`.
    const FORM: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'*');
    let mut out = vec![value.to_owned()];
    for set in [NON_ALPHANUMERIC, COMPONENT, FORM] {
        let upper = utf8_percent_encode(value, set).to_string();
        out.push(upper.replace("%20", "+"));
        // The same with lowercase hex digits.
        let mut lower = String::with_capacity(upper.len());
        let mut hex_left = 0;
        for c in upper.chars() {
            if c == '%' {
                hex_left = 2;
                lower.push(c);
            } else if hex_left > 0 {
                hex_left -= 1;
                lower.push(c.to_ascii_lowercase());
            } else {
                lower.push(c);
            }
        }
        out.push(lower);
        out.push(upper);
    }
    for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        out.push(engine.encode(value));
    }
    out
}

impl Redactor {
    /// A redactor for the sensitive values among `values`.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut r = Self::default();
        for s in values {
            if s.sensitive && s.value.len() >= 3 {
                r.add(&s.value);
            }
        }
        r
    }

    fn add(&mut self, value: &str) {
        for f in forms_of(value) {
            if !self.forms.contains(&f) {
                self.forms.push(f);
            }
        }
        self.forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    }

    /// Also scrub HTTP Basic credentials as sent (`base64(user:password)`), when either part
    /// is secret.
    pub fn with_basic_auth(mut self, user: &Secret, password: &Secret) -> Self {
        if user.sensitive || password.sensitive {
            self.add(&format!("{}:{}", user.value, password.value));
        }
        self
    }

    /// `text` with every secret replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        self.forms
            .iter()
            .fold(text.to_owned(), |t, f| t.replace(f.as_str(), "***"))
    }

    /// The same for the end of a longer output (a step's log tail), which may begin in the
    /// middle of a secret: a secret's last 3 or more bytes at the very start are replaced too,
    /// so a cut through a secret does not leak the rest of it.
    pub fn redact_tail(&self, text: &str) -> String {
        let mut t = self.redact(text);
        for v in &self.forms {
            let fragment = (1..v.len().saturating_sub(2))
                .filter(|i| v.is_char_boundary(*i))
                .map(|i| &v[i..])
                .find(|end| t.starts_with(end));
            if let Some(end) = fragment {
                t = format!("***{}", &t[end.len()..]);
            }
        }
        t
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
    fn a_tail_cut_through_a_secret_leaks_none_of_it() {
        let secret = Template::parse("${env:T}")
            .unwrap()
            .resolve("k", &|_| Some("abcdefghijklmnopqrstuvwxyz0".to_owned()))
            .unwrap();
        let r = Redactor::new([&secret]);
        // The tail starts 2 bytes into the secret: 25 of its 27 characters.
        let tail = "cdefghijklmnopqrstuvwxyz0 rest abcdefghijklmnopqrstuvwxyz0 end";
        assert_eq!(r.redact(tail), "cdefghijklmnopqrstuvwxyz0 rest *** end");
        assert_eq!(r.redact_tail(tail), "*** rest *** end");
        // Text that merely starts like the secret's end by chance of 2 bytes is kept.
        assert_eq!(r.redact_tail("z0 fine"), "z0 fine");
    }

    #[test]
    fn every_encoding_of_a_secret_is_scrubbed() {
        use base64::Engine as _;
        let pass = Secret::sensitive("p+a/s=s w?&");
        let user = Secret::plain("ann");
        let r = Redactor::new([&pass]).with_basic_auth(&user, &pass);
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        for echoed in [
            "p+a/s=s w?&".to_owned(),
            "p%2Ba%2Fs%3Ds%20w%3F%26".to_owned(),
            "p%2ba%2fs%3ds%20w%3f%26".to_owned(),
            "p%2Ba%2Fs%3Ds+w%3F%26".to_owned(),
            b64("p+a/s=s w?&"),
            format!("Basic {}", b64("ann:p+a/s=s w?&")),
            format!("Bearer {}", "p+a/s=s w?&"),
        ] {
            let shown = r.redact(&format!("server said: {echoed}."));
            assert_eq!(shown.matches("***").count(), 1, "{echoed} -> {shown}");
            assert!(!shown.contains("s=s") && !shown.contains("s%3D"), "{shown}");
        }
        // Plain values are not scrubbed, nor are short ones.
        assert_eq!(Redactor::new([&user]).redact("ann"), "ann");
    }

    #[test]
    fn one_language_for_env_window_and_step_placeholders() {
        let d = chrono::NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        let t = Template::parse_only(
            "https://x/{start:%Y%m%d}/{end}?k=${env:K}&d={date}",
            WINDOW_VARS,
        )
        .unwrap();
        let vars = |n: &str| match n {
            "start" | "date" => Some(Value::Date(d)),
            "end" => Some(Value::Date(d.succ_opt().unwrap())),
            _ => None,
        };
        // An environment value is inserted as it is, braces and all.
        let env = |_: &str| Some("a{date}b".to_owned());
        let s = t.render("k", &vars, &env).unwrap();
        assert_eq!(
            s.expose(),
            "https://x/20240501/2024-05-02?k=a{date}b&d=2024-05-01"
        );
        assert!(s.is_sensitive());
        // Lenient: unknown braces are text; a step's placeholders are filled.
        let c = Template::parse("awk '{print $1}' {output}/x-{run_id}").unwrap();
        let step = |n: &str| (n == "output" || n == "run_id").then(|| Value::Text("O".into()));
        assert_eq!(
            c.render("k", &step, &|_| None).unwrap().expose(),
            "awk '{print $1}' O/x-O"
        );
        // Strict: what a window value may not hold is named.
        let e = Template::parse_only("{run_id}", WINDOW_VARS).unwrap_err();
        assert!(e.contains("unknown placeholder {run_id}"), "{e}");
        assert!(
            Template::parse_only("{start:%Q}", WINDOW_VARS)
                .unwrap_err()
                .contains("not a date format")
        );
        assert!(
            Template::parse_only("{start", WINDOW_VARS)
                .unwrap_err()
                .contains("without")
        );
    }

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
        for bad in [
            "${aws-secretsmanager:}",
            "${aws-secretsmanager:db#}",
            "${aws-secretsmanager:a b}",
            "${aws-ssm:}",
            "${aws-ssm:/a b}",
            "${vault:x}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_manager_and_parameter_store_references() {
        let t = Template::parse(
            "postgres://u:${aws-secretsmanager:prod/db#password}@h/${aws-ssm:/lake/db-name}?x=${env:X}",
        )
        .unwrap();
        let refs: Vec<String> = t.references().map(ToString::to_string).collect();
        assert_eq!(
            refs,
            [
                "${aws-secretsmanager:prod/db#password}",
                "${aws-ssm:/lake/db-name}",
                "${env:X}"
            ]
        );
        let keys: Vec<String> = t.references().map(Reference::lookup_key).collect();
        assert_eq!(
            keys,
            [
                "aws-secretsmanager:prod/db#password",
                "aws-ssm:/lake/db-name",
                "X"
            ]
        );
        assert!(t.references().take(2).all(Reference::is_managed));
        let env = |k: &str| match k {
            "aws-secretsmanager:prod/db#password" => Some("s3cr3t".to_owned()),
            "aws-ssm:/lake/db-name" => Some("sales".to_owned()),
            "X" => Some("1".to_owned()),
            _ => None,
        };
        let s = t.resolve("sinks.pg.url", &env).unwrap();
        assert_eq!(s.expose(), "postgres://u:s3cr3t@h/sales?x=1");
        assert!(s.is_sensitive());
        assert_eq!(t.to_string(), t.as_written());
        // A managed reference nobody read is an error naming it and the key.
        let e = t
            .resolve("sinks.pg.url", &|k| (k == "X").then(|| "1".into()))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("sinks.pg.url: ${aws-secretsmanager:prod/db#password} was not read"),
            "{e}"
        );
        // An ARN is a name too.
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf";
        let r = Reference::parse(&format!("aws-secretsmanager:{arn}#user")).unwrap();
        assert_eq!(
            r,
            Reference::AwsSecretsmanager {
                secret: arn.into(),
                key: Some("user".into())
            }
        );
    }
}
