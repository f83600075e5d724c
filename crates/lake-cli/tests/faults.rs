//! The fault suite (lake_testing::faults) in its bounded form: every experiment, a few trials
//! each. `cargo bench -p lake-cli --bench faults` runs it in full for RELIABILITY.md.

use lake_testing::faults::{self, Mode, Root, Suite};

fn suite() -> Suite {
    Suite {
        bin: env!("CARGO_BIN_EXE_lake").into(),
        kills: 3,
        reads: 20,
        flips: 24,
        configs: 150,
        disk_full: 3,
        seed: std::env::var("LAKE_FAULTS_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20261129),
    }
}

#[test]
fn kill_9_during_run_run_force_and_ingest_force_local() {
    for mode in [Mode::Run, Mode::RunForce, Mode::IngestForce] {
        faults::kills(&suite(), &Root::Local, mode).assert_clean();
    }
}

#[test]
fn kill_9_during_run_run_force_and_ingest_force_s3() {
    let Some(endpoint) = lake_testing::emulator::endpoint() else {
        return;
    };
    let s = Suite {
        kills: 2,
        ..suite()
    };
    for mode in [Mode::Run, Mode::RunForce, Mode::IngestForce] {
        faults::kills(&s, &Root::S3(endpoint.clone()), mode).assert_clean();
    }
}

#[test]
fn reads_during_republishes_all_answer() {
    faults::readers(&suite(), &Root::Local, None).assert_clean();
}

#[test]
fn byte_flips_are_detected_or_harmless() {
    faults::byte_flips(&suite()).assert_clean();
}

#[test]
fn mutated_configs_never_panic_and_name_their_line() {
    faults::mutated_configs(&suite()).assert_clean();
}

#[test]
fn malformed_inputs_fail_naming_object_and_line() {
    faults::malformed_inputs(&suite()).assert_clean();
}

#[test]
fn a_full_disk_fails_a_run_cleanly_and_the_next_recovers() {
    let o = faults::disk_full(&suite());
    if lake_testing::skip_unless(
        "LAKE_REQUIRE_TMPFS",
        (o.trials == 0).then(|| o.notes.join("; ")),
    ) {
        return;
    }
    o.assert_clean();
}

#[test]
fn secret_canaries_never_leave_on_failure_paths() {
    faults::canaries(&suite()).assert_clean();
}

#[test]
fn serve_answers_every_page_under_load_while_a_heavy_query_runs_and_a_republish_loops() {
    let o = faults::serve_load(&suite(), 50, 8);
    eprintln!("{}", o.notes.join("; "));
    o.assert_clean();
}

#[test]
fn serve_withstands_rebinding_cross_site_requests_sql_bombs_floods_and_sigterm() {
    faults::serve_attacks(&suite()).assert_clean();
}
