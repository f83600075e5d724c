//! Damaged objects, damaged configuration and damaged inputs, and a disk that fills up.

use std::path::Path;

use super::{Lake, Outcome, Suite, loans_csv, loans_toml};

const DAY0: &str = "2024-01-01";

/// Flip 8 bytes of a random committed file (a window's CSV, a trusted or refined Parquet file,
/// a manifest, the window index) at a random offset, then query its table and run the step that
/// reads it: each must give the right answer, or fail naming the damaged dataset.
pub fn byte_flips(s: &Suite) -> Outcome {
    let mut out = Outcome::new(
        "8-byte flips in zone objects and manifests, then `query` and the reading step",
        "local",
    );
    fastrand::seed(s.seed ^ 0xf11);
    let lake = Lake::new(&s.bin);
    lake.write("lake.toml", loans_toml("lake", ""));
    lake.write("data/loans.csv", loans_csv(5_000, 0));
    if let Err(e) = lake.ok(&["run", "--date", DAY0]) {
        out.trials = 1;
        out.failures.push(format!("setup: {e}"));
        return out;
    }
    // (dataset folder, the table a query reads, the step that reads it)
    let targets = [
        (
            format!("raw/loans/ingest_date={DAY0}"),
            "raw.loans",
            Some("clean"),
        ),
        ("raw/loans".to_owned(), "raw.loans", None),
        ("trusted/loans".to_owned(), "trusted.loans", Some("summary")),
        ("refined/summary".to_owned(), "refined.summary", None),
    ];
    let answer = |table: &str| {
        format!("SELECT count(*) AS n, sum(CAST(amount AS BIGINT)) AS s FROM {table}")
    };
    let summary = "SELECT sum(n) AS n, sum(total) AS s FROM refined.summary";
    let mut truth = std::collections::BTreeMap::new();
    for (_, table, _) in &targets {
        let q = if *table == "refined.summary" {
            summary.to_owned()
        } else {
            answer(table)
        };
        truth.insert(
            *table,
            lake.ok(&["query", &q, "--format", "csv"])
                .unwrap_or_default(),
        );
    }
    let truth_summary = truth["refined.summary"].clone();
    let (mut detected, mut correct) = (0, 0);
    let root = lake.path().join("lake");
    for trial in 0..s.flips {
        out.trials += 1;
        let (folder, table, step) = &targets[fastrand::usize(..targets.len())];
        // The files of the dataset as committed now: its manifest (or index) and its objects.
        let dir = root.join(folder);
        let mut files = vec![if folder == "raw/loans" {
            dir.join("_windows.json")
        } else {
            dir.join("_manifest.json")
        }];
        if folder != "raw/loans" {
            files.extend(
                super::visible_files(&root, &dir)
                    .into_iter()
                    .map(|k| root.join(k)),
            );
        }
        let file = &files[fastrand::usize(..files.len())];
        let good = std::fs::read(file).expect("read a committed file");
        let at = fastrand::usize(..good.len().saturating_sub(8).max(1));
        let mut bad = good.clone();
        for b in bad.iter_mut().skip(at).take(8) {
            *b ^= fastrand::u8(1..);
        }
        std::fs::write(file, &bad).expect("flip");
        let what = format!(
            "trial {trial}: {} at {at}",
            file.strip_prefix(&root).unwrap_or(file).display()
        );
        let q = if *table == "refined.summary" {
            summary.to_owned()
        } else {
            answer(table)
        };
        let mut judge = |args: &[&str], expected: &str, check: Option<&str>| match lake.output(args)
        {
            Err(e) => out.failures.push(format!("{what}: {e}")),
            Ok(o) if o.status.code() == Some(101) => out
                .failures
                .push(format!("{what}: `lake {}` panicked", args.join(" "))),
            Ok(o) if o.status.success() => {
                let got = match check {
                    None => String::from_utf8_lossy(&o.stdout).into_owned(),
                    Some(q) => lake
                        .ok(&["query", q, "--format", "csv"])
                        .unwrap_or_default(),
                };
                if got == expected {
                    correct += 1;
                } else {
                    out.failures.push(format!(
                        "{what}: `lake {}` answered wrong, silently: {got:?} instead of {expected:?}",
                        args.join(" ")
                    ));
                }
            }
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr);
                if err.contains(folder.as_str()) {
                    detected += 1;
                } else {
                    out.failures.push(format!(
                        "{what}: `lake {}` failed without naming {folder}: {}",
                        args.join(" "),
                        err.trim()
                    ));
                }
            }
        };
        judge(&["query", &q, "--format", "csv"], &truth[table], None);
        if let Some(step) = step {
            judge(
                &["run", "--date", DAY0, "--force", "--only", step],
                &truth_summary,
                Some(summary),
            );
        }
        std::fs::write(file, &good).expect("restore");
    }
    out.notes.push(format!(
        "{detected} reads failed naming the damaged dataset, {correct} answered right"
    ));
    out
}

/// `s.configs` mutations of the credit example's lake.toml (a byte replaced, a line deleted,
/// duplicated or swapped, the file cut, a value replaced by another type, invalid UTF-8), each
/// checked with `lake validate`: valid, or exit 2 with an error naming `lake.toml:<line>`;
/// never a panic.
pub fn mutated_configs(s: &Suite) -> Outcome {
    let mut out = Outcome::new("mutated lake.toml files through `lake validate`", "-");
    let base = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/credit/lake.toml"),
    )
    .expect("the credit example");
    fastrand::seed(s.seed ^ 0x70e1);
    let mutants: Vec<Vec<u8>> = (0..s.configs).map(|_| mutate(&base)).collect();
    let (mut valid, mut panics) = (0, 0);
    let per = mutants.len().div_ceil(2).max(1);
    let mutants_ref = &mutants;
    let results: Vec<(usize, Result<Option<String>, String>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..2)
            .map(|c| {
                let bin = &s.bin;
                scope.spawn(move || {
                    let lake = Lake::new(bin);
                    mutants_ref
                        .iter()
                        .enumerate()
                        .skip(c * per)
                        .take(per)
                        .map(|(n, m)| {
                            lake.write("lake.toml", m);
                            (n, judge_config(&lake))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|h| h.join().expect("a worker"))
            .collect()
    });
    for (n, r) in results {
        out.trials += 1;
        match r {
            Ok(None) => valid += 1,
            Ok(Some(_)) => {}
            Err(e) => {
                if e.contains("panicked") {
                    panics += 1;
                }
                out.failures.push(format!(
                    "mutant {n}: {e}\n--- lake.toml ---\n{}",
                    String::from_utf8_lossy(&mutants[n])
                ));
            }
        }
    }
    out.notes.push(format!(
        "{valid} still valid, {} refused with file:line, {panics} panics",
        out.trials - valid - out.failures.len()
    ));
    out
}

/// `Ok(None)`: valid; `Ok(Some(error))`: refused as it should be; `Err`: a broken promise.
fn judge_config(lake: &Lake<'_>) -> Result<Option<String>, String> {
    let o = lake.output(&["validate"])?;
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    match o.status.code() {
        Some(0) => Ok(None),
        Some(2) => {
            let named = err
                .match_indices("lake.toml:")
                .any(|(i, m)| err[i + m.len()..].starts_with(|c: char| c.is_ascii_digit()));
            if named {
                Ok(Some(err))
            } else {
                Err(format!("refused without lake.toml:<line>: {}", err.trim()))
            }
        }
        Some(101) => Err(format!("panicked: {}", err.trim())),
        other => Err(format!("exit {other:?}: {}", err.trim())),
    }
}

fn mutate(base: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(base).into_owned();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let pick = |n: usize| fastrand::usize(..n.max(1));
    match fastrand::u8(..7) {
        0 => {
            let mut b = base.to_vec();
            let i = pick(b.len());
            b[i] = *fastrand::choice(b"\"=[]{},#\n0a.\\\x00\xff '").expect("a byte");
            return b;
        }
        1 => {
            let i = pick(lines.len());
            lines.remove(i);
        }
        2 => {
            let i = pick(lines.len());
            let l = lines[i].clone();
            lines.insert(i, l);
        }
        3 => {
            let mut b = base.to_vec();
            b.truncate(pick(b.len()));
            return b;
        }
        4 => {
            let (i, j) = (pick(lines.len()), pick(lines.len()));
            lines.swap(i, j);
        }
        5 => {
            let values = [
                "42",
                "\"x\"",
                "true",
                "[1, 2]",
                "{ a = 1 }",
                "-1",
                "\"\"",
                "\"${env:LAKE_NOPE}\"",
                "1e99",
                "\"2024-13-45\"",
                "\"../../etc\"",
            ];
            let long = format!("\"{}\"", "a".repeat(300));
            let candidates: Vec<usize> = (0..lines.len())
                .filter(|&i| lines[i].contains('='))
                .collect();
            if let Some(&i) = fastrand::choice(&candidates) {
                let key = lines[i].split('=').next().unwrap_or_default().to_owned();
                let v = if fastrand::bool() {
                    long
                } else {
                    (*fastrand::choice(&values).expect("a value")).to_owned()
                };
                lines[i] = format!("{key}= {v}");
            }
        }
        _ => {
            let mut b = base.to_vec();
            let i = pick(b.len());
            b.splice(i..i, [0xc3, 0x28, 0xff]);
            return b;
        }
    }
    (lines.join("\n") + "\n").into_bytes()
}

/// Inputs no reader can take: each run must fail (not panic), naming the raw object, and the
/// line where the format has lines.
pub fn malformed_inputs(s: &Suite) -> Outcome {
    let mut out = Outcome::new(
        "malformed inputs (CSV, NDJSON, JSON, Parquet, archives)",
        "local",
    );
    let mut ndjson_7001 = String::new();
    for i in 0..7000 {
        ndjson_7001.push_str(&format!("{{\"a\": {i}, \"b\": \"x\"}}\n"));
    }
    ndjson_7001.push_str("{\"a\": 7001, \"b\": \n");
    // (what, file name, bytes, source options, the line to name)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, &'a str, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        (
            "a ragged CSV",
            "bad.csv",
            b"a,b\n1,2\n3\n4,5\n".to_vec(),
            "",
            Some("3"),
        ),
        (
            "a CSV with invalid UTF-8",
            "bad.csv",
            b"a,b\n1,2\n3,\xff\xfe\n".to_vec(),
            "",
            Some("3"),
        ),
        (
            "NDJSON with a bad line 3",
            "bad.ndjson",
            b"{\"a\": 1}\n{\"a\": 2}\n{\"a\": \n{\"a\": 4}\n".to_vec(),
            "",
            Some("3"),
        ),
        (
            "NDJSON with a bad line 7001",
            "bad.ndjson",
            ndjson_7001.into_bytes(),
            "",
            Some("7001"),
        ),
        (
            "a JSON document cut short",
            "bad.json",
            b"{\"data\": [1, 2, ".to_vec(),
            "",
            None,
        ),
        (
            "a truncated Parquet file",
            "bad.parquet",
            b"PAR1\x15\x04\x15\x10\x15\x14L\x15\x02\x15\x00PAR1".to_vec(),
            "",
            None,
        ),
        (
            "a zip archive of garbage",
            "bad.zip",
            b"PK\x03\x04 this is no zip at all".to_vec(),
            "extract = true\n",
            None,
        ),
        (
            "a gzip file cut short",
            "bad.csv.gz",
            vec![
                0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x4b, 0x4c,
            ],
            "extract = true\n",
            None,
        ),
    ];
    for (what, name, bytes, source_opts, line) in cases {
        out.trials += 1;
        let lake = Lake::new(&s.bin);
        lake.write(&format!("data/{name}"), &bytes);
        lake.write(
            "lake.toml",
            format!(
                r#"[lake]
name = "bad"

[sources.bad]
kind = "file"
path = "data/{name}"
{source_opts}
[steps.read]
kind = "sql"
inputs = ["raw/bad@date"]
output = "trusted/bad"
sql = "SELECT * FROM bad"
"#
            ),
        );
        match lake.output(&["run", "--date", DAY0]) {
            Err(e) => out.failures.push(format!("{what}: {e}")),
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr).into_owned();
                let stem = name.split('.').next().unwrap_or(name);
                let problem = match o.status.code() {
                    Some(0) => Some("the run succeeded".to_owned()),
                    Some(101) => Some("panicked".to_owned()),
                    Some(1) if !err.contains(stem) => {
                        Some("the error does not name the object".to_owned())
                    }
                    Some(1) if line.is_some_and(|l| !err.contains(&format!("line {l}"))) => Some(
                        format!("the error does not name line {}", line.unwrap_or_default()),
                    ),
                    Some(1) => None,
                    other => Some(format!("exit {other:?}")),
                };
                if let Some(p) = problem {
                    out.failures.push(format!("{what}: {p}: {}", err.trim()));
                }
            }
        }
    }
    out
}

/// A lake on a small tmpfs that fills up at a random point of a run: the run fails saying so
/// (or succeeds), and once space is freed the next run succeeds and `lake fsck` is clean, with
/// the right counts. Needs root (to mount the tmpfs); skipped, said in the notes, without it.
pub fn disk_full(s: &Suite) -> Outcome {
    let mut out = Outcome::new(
        "disk full (a 24 MiB tmpfs root filled at random points)",
        "local",
    );
    let lake = Lake::new(&s.bin);
    let root = lake.path().join("lake");
    std::fs::create_dir_all(&root).expect("the root folder");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&root)
        .output();
    if !mounted.is_ok_and(|o| o.status.success()) {
        out.notes
            .push("skipped: cannot mount a tmpfs here (needs root)".into());
        return out;
    }
    fastrand::seed(s.seed ^ 0xd15c);
    const ROWS: usize = 150_000;
    lake.write("lake.toml", loans_toml("lake", ""));
    lake.write("data/loans.csv", loans_csv(ROWS, 0));
    let capacity: u64 = 24 << 20;
    let (mut refused, mut fit) = (0, 0);
    for trial in 0..s.disk_full {
        out.trials += 1;
        let day = (lake_core::chrono::NaiveDate::from_ymd_opt(2024, 1, 1).expect("a date")
            + lake_core::chrono::Duration::days(trial as i64))
        .to_string();
        // Leave between 0 and 6 MiB free: the raw file is 2.6 MiB, its outputs less.
        let used = du(&root);
        let free = fastrand::u64(..6 << 20);
        let filler = root.join("filler");
        let size = capacity.saturating_sub(used + free);
        let _ = std::fs::write(&filler, vec![0u8; size as usize]);
        match lake.output(&["run", "--date", &day]) {
            Err(e) => out.failures.push(format!("trial {trial}: {e}")),
            Ok(o) if o.status.success() => fit += 1,
            Ok(o) => {
                let err = String::from_utf8_lossy(&o.stderr).into_owned();
                if o.status.code() == Some(1) && err.contains("No space left") {
                    refused += 1;
                } else {
                    out.failures.push(format!(
                        "trial {trial} ({free} bytes free): exit {:?}: {}",
                        o.status.code(),
                        err.trim()
                    ));
                }
            }
        }
        let _ = std::fs::remove_file(&filler);
        // Windows pile up; keep only this one's bytes by dropping older windows' space need:
        // each trial's date is new, so the lake grows by one window per trial.
        let recovered = lake
            .ok(&["run", "--date", &day])
            .and_then(|_| lake.fsck())
            .and_then(|_| {
                let t = lake.number("SELECT count(*) FROM trusted.loans")?;
                let r = lake.number("SELECT sum(n) FROM refined.summary")?;
                if t == ROWS as i64 && r == t {
                    Ok(())
                } else {
                    Err(format!("trusted {t} rows, refined {r}, expected {ROWS}"))
                }
            });
        if let Err(e) = recovered {
            out.failures.push(format!(
                "trial {trial} ({free} bytes free), after freeing space: {e}"
            ));
        }
        if du(&root) > capacity / 2 {
            // Make room for the next trials: forget the oldest windows by starting over.
            let _ = std::fs::remove_dir_all(root.join("raw"));
            let _ = std::fs::remove_dir_all(root.join("trusted"));
            let _ = std::fs::remove_dir_all(root.join("refined"));
            let _ = std::fs::remove_dir_all(root.join("_lake"));
        }
    }
    let _ = std::process::Command::new("umount").arg(&root).status();
    out.notes.push(format!(
        "{refused} runs refused with \"No space left on device\", {fit} fit"
    ));
    out
}

/// Bytes of the files under `dir`.
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => todo.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}
