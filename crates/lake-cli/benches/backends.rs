//! Backends and steps in parallel, whole `lake` processes:
//!
//! - the credit and weather examples on `backend = "local"` and on `backend = "spark"`
//!   (`lake --env spark run`, `master = "local[2]"`), each step rerun with `--force`;
//! - the reference: two bare `spark-submit`s of a one-line PySpark job (what any tool pays
//!   to start Spark for a two-step pipeline: two JVMs and Spark sessions), same master and conf;
//! - a four-step diamond of sleeping command steps (a → b, c → d, each `sleep 1`) with
//!   `max_parallel_steps` 1 and 2.
//!
//! ```sh
//! LAKE_PYSPARK_PYTHON=~/.cache/lake-ci-venv/bin/python cargo bench -p lake-cli --bench backends
//! ```
//!
//! `LAKE_BENCH_RUNS` sets the runs per row (default 3; the median, range and largest peak RSS
//! are reported). Spark is the pip `pyspark` beside `LAKE_PYSPARK_PYTHON` (its spark-submit);
//! without it the Spark rows are left out. `LAKE_BIN` names another `lake` binary to measure
//! (the `dist` one users install).

use std::path::{Path, PathBuf};
use std::process::Command;

use lake_testing::measure::{Measure, lake_bin, timed};

fn runs() -> usize {
    std::env::var("LAKE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

fn lake(dir: &Path, spark_bin: Option<&Path>, args: &[&str]) -> Command {
    let mut c = Command::new(lake_bin(env!("CARGO_BIN_EXE_lake")));
    c.current_dir(dir).args(args).arg("-q");
    if let Some(bin) = spark_bin {
        let path = std::env::join_paths(std::iter::once(bin.to_owned()).chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
        ))
        .unwrap();
        c.env("PATH", path)
            .env("SPARK_LOCAL_IP", "127.0.0.1")
            .env_remove("SPARK_HOME");
    }
    c
}

/// Median wall, min–max, and the largest peak RSS of `n` runs.
fn row(label: &str, m: &[Measure]) {
    let mut walls: Vec<f64> = m.iter().map(|m| m.wall).collect();
    walls.sort_by(f64::total_cmp);
    let rss = m.iter().map(Measure::rss_mib).fold(0.0, f64::max);
    println!(
        "| {label} | {:.2} s | {:.2}–{:.2} s | {rss:.0} MiB |",
        walls[walls.len() / 2],
        walls[0],
        walls[walls.len() - 1]
    );
}

fn example(name: &str, spark_bin: Option<&Path>) {
    let dir = lake_testing::example(name);
    // Land the raw window once; each measured run reruns every step (--force).
    timed(&mut lake(
        dir.path(),
        None,
        &["run", "--date", "2024-05-01"],
    ));
    let force = ["run", "--date", "2024-05-01", "--force"];
    let local: Vec<Measure> = (0..runs())
        .map(|_| timed(&mut lake(dir.path(), None, &force)))
        .collect();
    row(&format!("{name}, local"), &local);
    if let Some(bin) = spark_bin {
        let mut args = vec!["--env", "spark"];
        args.extend(force);
        let spark: Vec<Measure> = (0..runs())
            .map(|_| timed(&mut lake(dir.path(), Some(bin), &args)))
            .collect();
        row(&format!("{name}, spark (local[2])"), &spark);
    }
}

/// Two bare spark-submits of `spark.range(1000).count()`, one after the other, as one process
/// measured (a shell running both).
fn spark_reference(bin: &Path) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("job.py"),
        "from pyspark.sql import SparkSession\nSparkSession.builder.getOrCreate().range(1000).count()\n",
    )
    .unwrap();
    let submit = "spark-submit --master local[2] --conf spark.ui.enabled=false --conf spark.sql.shuffle.partitions=2 job.py 2>/dev/null";
    let m: Vec<Measure> = (0..runs())
        .map(|_| {
            let mut c = lake(dir.path(), Some(bin), &[]);
            let mut sh = Command::new("sh");
            sh.current_dir(dir.path())
                .arg("-c")
                .arg(format!("{submit} && {submit}"));
            for (k, v) in c.get_envs() {
                match v {
                    Some(v) => sh.env(k, v),
                    None => sh.env_remove(k),
                };
            }
            c = sh;
            timed(&mut c)
        })
        .collect();
    row("reference: 2 × bare spark-submit (local[2])", &m);
}

fn diamond(max_parallel: usize) {
    let dir = tempfile::tempdir().unwrap();
    let step = |name: &str, deps: &str| {
        format!(
            "[steps.{name}]\nkind = \"command\"\ncommand = [\"sleep\", \"1\"]\ndepends_on = [{deps}]\n"
        )
    };
    let toml = format!(
        "[lake]\nname = \"diamond\"\nmax_parallel_steps = {max_parallel}\n\n{}{}{}{}",
        step("a", ""),
        step("b", "\"a\""),
        step("c", "\"a\""),
        step("d", "\"b\", \"c\"")
    );
    std::fs::write(dir.path().join("lake.toml"), toml).unwrap();
    let m: Vec<Measure> = (0..runs())
        .map(|_| {
            timed(&mut lake(
                dir.path(),
                None,
                &["run", "--date", "2024-05-01"],
            ))
        })
        .collect();
    row(
        &format!("diamond of 4 × sleep 1, max_parallel_steps = {max_parallel}"),
        &m,
    );
}

fn main() {
    let spark_bin: Option<PathBuf> = std::env::var_os("LAKE_PYSPARK_PYTHON")
        .map(|p| Path::new(&p).parent().expect("a python path").to_owned());
    println!("| pipeline, backend | wall (median) | range | peak RSS |");
    println!("|---|---|---|---|");
    for name in ["credit", "weather"] {
        example(name, spark_bin.as_deref());
    }
    if let Some(bin) = &spark_bin {
        spark_reference(bin);
    }
    diamond(1);
    diamond(2);
}
