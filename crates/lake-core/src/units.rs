//! What `lake schedule install` prints: a systemd service and timer, or a crontab line, that
//! run `lake schedule --once` in lake.toml's folder. Another program runs these as written, so
//! every path is quoted by that program's own rules (the shell's and cron's `%` for a crontab;
//! systemd's quoting and its `%` and `$` for a unit), a path no rule can carry (a newline) is
//! refused, and nothing runs as root unless asked: a user unit by default, and for a system
//! unit the `User=` and `Group=` of lake.toml's owner.

use crate::ValueError;
use std::path::{Path, PathBuf};

/// What the units run: `exe -c config [--env env] schedule --once` in `config`'s folder.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The pipeline's name (names the units).
    pub name: String,
    /// The `lake` binary, absolute.
    pub exe: PathBuf,
    /// lake.toml, absolute.
    pub config: PathBuf,
    /// `--env`, when one was given.
    pub env: Option<String>,
}

/// Where a systemd unit runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The user's own manager (`systemctl --user`): runs as that user.
    User,
    /// The system manager, as this user and group (numeric ids).
    System {
        /// `User=`.
        uid: u32,
        /// `Group=`.
        gid: u32,
    },
}

fn check_path(what: &str, p: &Path) -> Result<String, ValueError> {
    let s = p
        .to_str()
        .ok_or_else(|| format!("{what} {}: not UTF-8", p.display()))?;
    if s.chars().any(char::is_control) {
        return Err(format!(
            "{what} {s:?} holds a newline or another control character, which no unit or crontab can quote: move it to a folder without one"
        ).into());
    }
    Ok(s.to_owned())
}

/// `s` as one word for a POSIX shell, as cron passes it: single quotes, and `%` (a newline to
/// cron) escaped.
fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''")).replace('%', r"\%")
}

/// `s` as one argument of `ExecStart=`: double quotes with C escapes, `%` and `$` doubled so
/// systemd expands neither.
fn exec_word(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `s` as a path setting of a unit (`WorkingDirectory=`): `%` doubled; surrounding spaces
/// and a trailing `\` (a continued line) cannot be written.
fn unit_path(what: &str, s: &str) -> Result<String, ValueError> {
    if s.trim() != s || s.ends_with('\\') {
        return Err(format!(
            "{what} {s:?} begins or ends with a space or ends with '\\', which a systemd unit cannot hold"
        ).into());
    }
    Ok(s.replace('%', "%%"))
}

struct Checked {
    exe: String,
    config: String,
    dir: String,
    env: Option<String>,
}

fn checked(inv: &Invocation) -> Result<Checked, ValueError> {
    let exe = check_path("the lake binary", &inv.exe)?;
    let config = check_path("lake.toml", &inv.config)?;
    let dir = inv
        .config
        .parent()
        .map_or(Ok("/".to_owned()), |d| check_path("lake.toml's folder", d))?;
    let env = match &inv.env {
        Some(e) if e.chars().any(char::is_control) => {
            return Err(format!("--env {e:?}: holds a control character").into());
        }
        e => e.clone(),
    };
    Ok(Checked {
        exe,
        config,
        dir,
        env,
    })
}

/// The crontab line: every 5 minutes, in lake.toml's folder, output appended to
/// `lake-schedule.log` there. It runs as whoever installs it in their crontab.
pub fn crontab(inv: &Invocation) -> Result<String, ValueError> {
    let c = checked(inv)?;
    let mut command = format!(
        "cd {} && {} -c {}",
        shell_word(&c.dir),
        shell_word(&c.exe),
        shell_word(&c.config)
    );
    if let Some(e) = &c.env {
        command.push_str(&format!(" --env {}", shell_word(e)));
    }
    let log = shell_word(&format!(
        "{}/lake-schedule.log",
        c.dir.trim_end_matches('/')
    ));
    Ok(format!(
        "# lake pipeline {name}: every 5 minutes, lake runs what its [schedule] says is due\n\
         */5 * * * * {command} schedule --once >> {log} 2>&1\n",
        name = inv.name
    ))
}

/// The systemd service and timer, with where to put them and how to enable them.
pub fn systemd(inv: &Invocation, scope: &Scope) -> Result<String, ValueError> {
    let c = checked(inv)?;
    let mut exec = format!("{} -c {}", exec_word(&c.exe), exec_word(&c.config));
    if let Some(e) = &c.env {
        exec.push_str(&format!(" --env {}", exec_word(e)));
    }
    exec.push_str(" schedule --once");
    let dir = unit_path("lake.toml's folder", &c.dir)?;
    let env_file = unit_path(
        "the .env file",
        &format!("{}/.env", c.dir.trim_end_matches('/')),
    )?;
    let name = &inv.name;
    let (folder, user, enable) = match scope {
        Scope::User => (
            "~/.config/systemd/user",
            String::new(),
            format!(
                "# then: systemctl --user daemon-reload && systemctl --user enable --now lake-{name}.timer\n\
                 # and, so it runs while you are logged out: loginctl enable-linger \"$USER\"\n"
            ),
        ),
        Scope::System { uid, gid } => (
            "/etc/systemd/system",
            format!(
                "# As the owner of lake.toml, never root by default.\nUser={uid}\nGroup={gid}\n"
            ),
            format!(
                "# then: systemctl daemon-reload && systemctl enable --now lake-{name}.timer\n"
            ),
        ),
    };
    Ok(format!(
        "# {folder}/lake-{name}.service\n\
         [Unit]\n\
         Description=lake pipeline {name}: what its [schedule] says is due\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         {user}\
         WorkingDirectory={dir}\n\
         # Secrets for ${{env:…}} values, one VAR=value per line (optional).\n\
         EnvironmentFile=-{env_file}\n\
         ExecStart={exec}\n\
         # Ctrl-C semantics: the run tears down (EMR clusters terminated) before it exits.\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=15min\n\
         \n\
         # {folder}/lake-{name}.timer\n\
         [Unit]\n\
         Description=Run lake pipeline {name} when its schedule says\n\
         \n\
         [Timer]\n\
         OnCalendar=*:0/5\n\
         Persistent=true\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n\
         \n\
         {enable}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(dir: &str) -> Invocation {
        Invocation {
            name: "weather".into(),
            exe: "/usr/local/bin/lake".into(),
            config: PathBuf::from(dir).join("lake.toml"),
            env: Some("prod".into()),
        }
    }

    #[test]
    fn a_hostile_folder_name_stays_one_word() {
        let line = crontab(&inv("/srv/x;touch PWNED $(id) 'q' 50%")).unwrap();
        assert!(
            line.contains(r"cd '/srv/x;touch PWNED $(id) '\''q'\'' 50\%' && '/usr/local/bin/lake'"),
            "{line}"
        );
        let unit = systemd(&inv("/srv/x;touch \"$HOME\" 50%"), &Scope::User).unwrap();
        assert!(
            unit.contains(r#"ExecStart="/usr/local/bin/lake" -c "/srv/x;touch \"$$HOME\" 50%%/lake.toml" --env "prod" schedule --once"#),
            "{unit}"
        );
        assert!(
            unit.contains("WorkingDirectory=/srv/x;touch \"$HOME\" 50%%\n"),
            "{unit}"
        );
        for bad in ["/srv/a\nExecStartPre=/bin/sh", "/srv/tab\u{1b}"] {
            let e = crontab(&inv(bad)).unwrap_err();
            assert!(e.contains("control character"), "{e}");
            assert!(systemd(&inv(bad), &Scope::User).is_err());
        }
        assert!(systemd(&inv("/srv/ends-with\\"), &Scope::User).is_err());
    }

    #[test]
    fn units_never_run_as_root_unless_asked() {
        let user = systemd(&inv("/srv/w"), &Scope::User).unwrap();
        assert!(!user.contains("User="), "{user}");
        assert!(user.contains("systemctl --user enable --now lake-weather.timer"));
        assert!(user.contains("loginctl enable-linger"));
        let system = systemd(
            &inv("/srv/w"),
            &Scope::System {
                uid: 1000,
                gid: 100,
            },
        )
        .unwrap();
        assert!(system.contains("\nUser=1000\nGroup=100\n"), "{system}");
        assert!(system.contains("# /etc/systemd/system/lake-weather.service"));
    }
}
