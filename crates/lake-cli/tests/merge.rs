//! `mode = "merge"` through the `lake` binary: a run killed with SIGKILL at any point of a
//! merge leaves the dataset's old version whole (readers and `lake fsck` see it), and the rerun
//! gives what an unkilled run gives.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use assert_cmd::cargo::CommandCargoExt;

fn lake(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("lake").unwrap();
    c.current_dir(dir).env_remove("RUST_LOG");
    c
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let out = lake(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "lake {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Per day: its rows, the sum of its values and of its stations.
fn summary(dir: &Path) -> String {
    ok(
        dir,
        &[
            "query",
            "--format",
            "csv",
            "SELECT day, count(*) AS n, sum(value) AS v, sum(station) AS s FROM trusted.readings GROUP BY day ORDER BY day",
        ],
    )
}

fn copy(from: &Path, to: &Path) {
    let s = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(s.success());
}

const TOML: &str = r#"[lake]
name = "readings"

[sources.readings]
kind = "file"
path = "data/readings.csv"

[steps.readings]
kind = "sql"
inputs = ["raw/readings@date"]
output = "trusted/readings"
sql = "SELECT CAST(day AS DATE) AS day, CAST(station AS BIGINT) AS station, CAST(value AS DOUBLE) AS value FROM readings"
partition_by = ["day"]
mode = "merge"
key = ["day", "station"]
"#;

#[test]
fn a_merge_killed_at_any_point_leaves_the_old_version_and_the_rerun_completes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    std::fs::create_dir_all(base.join("data")).unwrap();
    std::fs::write(base.join("lake.toml"), TOML).unwrap();
    // Day 1: 10 days of 5,000 stations.
    let mut rows = String::from("day,station,value\n");
    for d in 1..=10 {
        for s in 0..5_000 {
            rows.push_str(&format!("2024-05-{d:02},{s},{}\n", d * 100_000 + s));
        }
    }
    std::fs::write(base.join("data/readings.csv"), &rows).unwrap();
    ok(&base, &["run", "--date", "2024-06-01"]);
    let before = summary(&base);
    // Day 2's batch: updates in four days and new stations in one.
    let mut rows = String::from("day,station,value\n");
    for d in [3, 5, 7, 9] {
        for s in (0..5_000).step_by(3) {
            rows.push_str(&format!("2024-05-{d:02},{s},-{s}\n"));
        }
    }
    for s in 5_000..6_000 {
        rows.push_str(&format!("2024-05-10,{s},1\n"));
    }
    std::fs::write(base.join("data/readings.csv"), &rows).unwrap();

    let unkilled = tmp.path().join("unkilled");
    copy(&base, &unkilled);
    let t = Instant::now();
    ok(&unkilled, &["run", "--date", "2024-06-02"]);
    let took = t.elapsed();
    let after = summary(&unkilled);
    assert_ne!(before, after);

    let mut killed = 0;
    for (i, at) in [0.15, 0.35, 0.55, 0.75, 0.95].into_iter().enumerate() {
        let trial = tmp.path().join(format!("trial{i}"));
        copy(&base, &trial);
        let mut c = lake(&trial);
        c.args(["run", "--date", "2024-06-02"]);
        if lake_testing::faults::kill_after(c, took.mul_f64(at)) {
            killed += 1;
        }
        // Killed: readers see one whole version, and fsck finds only what the killed run
        // left beside it (its lock, its staging, and, killed while its publish copied, copies
        // in the dataset's folder that no manifest lists), every object of every manifest
        // whole. The rerun removes them all (its fsck below is clean).
        let seen = summary(&trial);
        assert!(
            seen == before || seen == after,
            "trial {i} (killed at {at}× of {took:?}) shows a mix:\n{seen}"
        );
        let fsck = lake(&trial).arg("fsck").output().unwrap();
        let said = String::from_utf8_lossy(&fsck.stdout);
        for line in said.lines().filter(|l| l.starts_with('✗')) {
            let copy_of_publish = line.starts_with("✗ orphan")
                && line.contains("/trusted/readings/")
                && line.contains(".parquet: no manifest lists it");
            assert!(
                line.starts_with("✗ staging") || line.starts_with("✗ lock") || copy_of_publish,
                "trial {i}: fsck after the kill:\n{said}"
            );
        }
        ok(&trial, &["run", "--date", "2024-06-02"]);
        assert_eq!(summary(&trial), after, "trial {i}: the rerun's rows");
        ok(&trial, &["fsck"]);
    }
    assert!(
        killed >= 3,
        "only {killed} of 5 runs were killed before their end"
    );
}

/// The merge counts of the newest run's step.
fn merged(dir: &Path) -> serde_json::Value {
    let runs: serde_json::Value = serde_json::from_str(&ok(dir, &["runs", "--json"])).unwrap();
    let newest = runs.as_array().unwrap().last().unwrap();
    let id = newest["run_id"].as_str().unwrap().to_owned();
    let run: serde_json::Value =
        serde_json::from_str(&ok(dir, &["runs", "show", &id, "--json"])).unwrap();
    run["steps"][0]["merged"].clone()
}

/// The same merges on an S3 root (the emulator) as on a local one: the same rows, the same
/// counts, the same files rewritten and kept, and fsck finds nothing.
#[test]
fn a_merge_on_an_s3_root_gives_the_local_roots_rows() {
    let Some(endpoint) = lake_testing::emulator::endpoint() else {
        return;
    };
    let (status, body) = lake_testing::emulator::request(&endpoint, "PUT", "/lake-merge-s3");
    assert!(status == 200 || status == 409, "create the bucket: {body}");
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    let s3 = tmp.path().join("s3");
    let run_id = std::process::id();
    for (d, root) in [
        (&local, "lake".to_owned()),
        (&s3, format!("s3://lake-merge-s3/{run_id}")),
    ] {
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(
            d.join("lake.toml"),
            TOML.replace(
                "name = \"readings\"\n",
                &format!("name = \"readings\"\nroot = \"{root}\"\n"),
            ),
        )
        .unwrap();
    }
    let mut day1 = String::from("day,station,value\n");
    for d in 1..=5 {
        for s in 0..100 {
            day1.push_str(&format!("2024-05-0{d},{s},{}\n", d * 1000 + s));
        }
    }
    let days = [
        ("2024-06-01", day1),
        (
            "2024-06-02",
            "day,station,value\n2024-05-02,7,-1\n2024-05-04,8,-2\n2024-05-05,100,5100\n".to_owned(),
        ),
    ];
    for (date, rows) in &days {
        for d in [&local, &s3] {
            std::fs::write(d.join("data/readings.csv"), rows).unwrap();
            ok(d, &["run", "--date", date]);
        }
        assert_eq!(summary(&s3), summary(&local), "{date}");
        assert_eq!(merged(&s3), merged(&local), "{date}");
    }
    let m = merged(&s3);
    assert_eq!(
        (
            &m["inserted"],
            &m["updated"],
            &m["rewritten_files"],
            &m["kept_files"]
        ),
        (&1.into(), &2.into(), &3.into(), &2.into()),
        "{m}"
    );
    ok(&s3, &["fsck"]);
}
