//! Checks `lake doctor` runs, each with what was found and what to do when it fails.

use crate::zone::{DynZoneStore, Key, PutOutcome};

/// One check: what was checked, whether it passed, what was found, and what to do if not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found (or the error).
    pub detail: String,
    /// What to do when it failed.
    pub fix: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ok: true,
            detail: detail.into(),
            fix: None,
        }
    }

    /// A check that could not be made (the answer is unknown, not wrong): it does not fail
    /// the doctor, but says what to do.
    pub fn unknown(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            ok: true,
            ..Self::fail(name, detail, fix)
        }
    }

    /// A check not made because an earlier one failed (`needs` says which): neither passed
    /// nor failed, so one missing credential does not show as a cascade of failures.
    pub fn skipped(name: impl Into<String>, needs: &str) -> Self {
        Self {
            name: name.into(),
            ok: true,
            detail: format!("skipped: needs {needs}"),
            fix: None,
        }
    }

    /// True for a [`skipped`](Self::skipped) check.
    pub fn is_skipped(&self) -> bool {
        self.ok && self.fix.is_none() && self.detail.starts_with("skipped: needs ")
    }

    /// `✓`, `✗`, `?` for a check that could not be made, `-` for one skipped.
    pub fn mark(&self) -> &'static str {
        match (self.ok, &self.fix) {
            (false, _) => "✗",
            (true, Some(_)) => "?",
            (true, None) if self.is_skipped() => "-",
            (true, None) => "✓",
        }
    }

    /// A failed check and its fix.
    pub fn fail(
        name: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            ok: false,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// The zone store's checks: the root can be listed, and written with put-if-absent then
/// deleted (the probe is removed). `fix_read` and `fix_write` say what to do on failure.
pub async fn store_checks(store: &DynZoneStore, fix_read: &str, fix_write: &str) -> Vec<Check> {
    let mut out = Vec::new();
    let root = store.root_url();
    match store.list("_lake/locks").await {
        Ok(_) => out.push(Check::pass(
            "root reachable",
            format!("{root} can be listed"),
        )),
        Err(e) => out.push(Check::fail(
            "root reachable",
            crate::run::error_chain(&e),
            fix_read,
        )),
    }
    let probe = Key::new(format!(
        "_lake/doctor/probe-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    ))
    .expect("a valid key");
    let written = store.put_if_absent(&probe, "lake doctor\n".into()).await;
    match written {
        Ok(PutOutcome::Created) => {
            let cleaned = store.delete(&probe).await;
            match cleaned {
                Ok(()) => out.push(Check::pass(
                    "root writable",
                    format!("put-if-absent and delete under {root}/_lake/doctor/"),
                )),
                Err(e) => out.push(Check::fail(
                    "root writable",
                    format!(
                        "wrote {root}/{probe} but could not delete it: {}",
                        crate::run::error_chain(&e)
                    ),
                    fix_write,
                )),
            }
        }
        Ok(PutOutcome::AlreadyExists) => out.push(Check::fail(
            "root writable",
            format!("{root}/{probe} already exists"),
            "run lake doctor again",
        )),
        Err(e) => out.push(Check::fail(
            "root writable",
            crate::run::error_chain(&e),
            fix_write,
        )),
    }
    out
}
