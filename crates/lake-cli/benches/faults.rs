//! The fault suite in full (see lake_testing::faults): `cargo bench -p lake-cli --bench faults`.
//! Prints RELIABILITY.md's table, then every failure. The AWS emulator at `AWS_ENDPOINT_URL`
//! (as `bash .ci/run` starts it) adds the S3 kill trials; `LAKE_FAULTS_SEED` picks another seed,
//! `LAKE_FAULTS_ONLY` (kills, readers, flips, configs, inputs, disk, secrets) one experiment,
//! `LAKE_BIN` another `lake` binary to try (the `dist` one users install).

use lake_testing::faults::{self, Mode, Root, Suite};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let suite = Suite {
        bin: lake_testing::measure::lake_bin(env!("CARGO_BIN_EXE_lake")),
        kills: 50,
        reads: 200,
        flips: 300,
        configs: 2000,
        disk_full: 20,
        seed: std::env::var("LAKE_FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20261129),
    };
    let only = std::env::var("LAKE_FAULTS_ONLY").ok();
    let want = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut roots = vec![Root::Local];
    if let Ok(e) = std::env::var("AWS_ENDPOINT_URL") {
        roots.push(Root::S3(e));
    }
    let mut outcomes = Vec::new();
    let mut record = |o: faults::Outcome| {
        eprintln!(
            "{} on {}: {} trials, {} failures",
            o.experiment,
            o.root,
            o.trials,
            o.failures.len()
        );
        outcomes.push(o);
    };
    if want("kills") {
        for root in &roots {
            for mode in [Mode::Run, Mode::RunForce, Mode::IngestForce] {
                record(faults::kills(&suite, root, mode));
            }
        }
    }
    if want("readers") {
        for root in &roots {
            record(faults::readers(&suite, root, None));
            record(faults::readers(&suite, root, Some("1h")));
        }
    }
    if want("flips") {
        record(faults::byte_flips(&suite));
    }
    if want("disk") {
        record(faults::disk_full(&suite));
    }
    if want("configs") {
        record(faults::mutated_configs(&suite));
    }
    if want("inputs") {
        record(faults::malformed_inputs(&suite));
    }
    if want("secrets") {
        record(faults::canaries(&suite));
    }
    if want("serve") {
        record(faults::serve_load(&suite, 50, 60));
        record(faults::serve_attacks(&suite));
    }
    println!(
        "`cargo bench -p lake-cli --bench faults`, {}, seed {}\n",
        lake_testing::faults::today(),
        suite.seed
    );
    println!("{}", faults::markdown(&outcomes));
    for o in &outcomes {
        for f in &o.failures {
            println!("- {} ({}): {f}", o.experiment, o.root);
        }
    }
}
