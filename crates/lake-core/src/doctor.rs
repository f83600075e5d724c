//! Checks `lake doctor` runs, each with what was found and what to do when it fails.

use crate::zone::{DynZoneStore, Key, PutOutcome};

/// How a check came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckState {
    /// It passed.
    Pass,
    /// It failed; `fix` says what to do.
    Fail {
        /// What to do.
        fix: String,
    },
    /// It could not be made (the answer is unknown, not wrong): it does not fail the doctor,
    /// and `fix` says how to find out.
    Unknown {
        /// What to do.
        fix: String,
    },
    /// Not made because an earlier check failed or a setting is off: `needs` says what it
    /// needs, so one missing credential does not show as a cascade of failures.
    Skipped {
        /// What it needs.
        needs: String,
    },
}

/// One check: what was checked, what was found, and how it came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// What was found (or the error).
    pub detail: String,
    /// How it came out.
    pub state: CheckState,
}

impl Check {
    /// A passed check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            detail: detail.into(),
            state: CheckState::Pass,
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
            name: name.into(),
            detail: detail.into(),
            state: CheckState::Unknown { fix: fix.into() },
        }
    }

    /// A check not made because `needs` is missing (an earlier check failed, a setting is
    /// off): neither passed nor failed.
    pub fn skipped(name: impl Into<String>, needs: impl Into<String>) -> Self {
        let needs = needs.into();
        Self {
            name: name.into(),
            detail: format!("skipped: needs {needs}"),
            state: CheckState::Skipped { needs },
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
            detail: detail.into(),
            state: CheckState::Fail { fix: fix.into() },
        }
    }

    /// False only for a failed check (what fails `lake doctor`).
    pub fn ok(&self) -> bool {
        !matches!(self.state, CheckState::Fail { .. })
    }

    /// What to do, for a failed check or one that could not be made.
    pub fn fix(&self) -> Option<&str> {
        match &self.state {
            CheckState::Fail { fix } | CheckState::Unknown { fix } => Some(fix),
            CheckState::Pass | CheckState::Skipped { .. } => None,
        }
    }

    /// True for a [`skipped`](Self::skipped) check.
    pub fn is_skipped(&self) -> bool {
        matches!(self.state, CheckState::Skipped { .. })
    }

    /// `✓`, `✗`, `?` for a check that could not be made, `-` for one skipped.
    pub fn mark(&self) -> &'static str {
        match self.state {
            CheckState::Pass => "✓",
            CheckState::Fail { .. } => "✗",
            CheckState::Unknown { .. } => "?",
            CheckState::Skipped { .. } => "-",
        }
    }

    /// Its state's name: `pass`, `fail`, `unknown` or `skipped`.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            CheckState::Pass => "pass",
            CheckState::Fail { .. } => "fail",
            CheckState::Unknown { .. } => "unknown",
            CheckState::Skipped { .. } => "skipped",
        }
    }
}

/// As `lake doctor --json` prints it: `name`, `ok`, `detail`, `fix` (as before the states),
/// and `state`.
impl serde::Serialize for Check {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Check", 5)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("ok", &self.ok())?;
        st.serialize_field("detail", &self.detail)?;
        st.serialize_field("fix", &self.fix())?;
        st.serialize_field("state", self.state_name())?;
        st.end()
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
