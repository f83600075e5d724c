//! The local command backend: environment, exit status, stderr tail, cancellation.

use std::time::{Duration, Instant};

use lake_core::ClusterBackend;
use lake_core::cluster::{ClusterSpec, StepRequest, StepState, StepWork};
use lake_core::config::Secret;
use lake_local::LocalBackend;

fn request(script: &str, dir: &std::path::Path) -> StepRequest {
    StepRequest {
        name: "s".into(),
        work: StepWork::Command {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec![
                ("LAKE_RUN_ID".into(), Secret::plain("run-1")),
                ("LAKE_DATE".into(), Secret::plain("2024-05-06")),
            ],
            workdir: dir.to_owned(),
        },
        timeout: None,
    }
}

async fn finish(
    b: &LocalBackend,
    c: &lake_core::cluster::ClusterHandle,
    h: &lake_core::cluster::StepHandle,
) -> StepState {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = b.poll(c, h).await.unwrap();
        if s.is_terminal() {
            return s;
        }
        assert!(Instant::now() < deadline, "step did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn spec() -> ClusterSpec {
    ClusterSpec {
        pipeline: "p".into(),
        run_id: "run-1".into(),
        tags: Default::default(),
    }
}

#[tokio::test]
async fn runs_with_env_in_workdir_and_keeps_output() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new();
    let c = b.start(&spec()).await.unwrap();
    let h = b
        .submit(
            &c,
            &request(
                "echo \"$LAKE_RUN_ID $LAKE_DATE $(basename \"$PWD\")\"",
                dir.path(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(finish(&b, &c, &h).await, StepState::Completed);
    let logs = b.logs(&c, &h).await.unwrap();
    let name = dir.path().file_name().unwrap().to_string_lossy();
    assert_eq!(logs.stdout_tail, format!("run-1 2024-05-06 {name}\n"));
    b.terminate(&c).await.unwrap();
}

#[tokio::test]
async fn non_zero_exit_fails_with_the_stderr_tail() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new();
    let c = b.start(&spec()).await.unwrap();
    let h = b
        .submit(
            &c,
            &request(
                "i=0; while [ $i -lt 5000 ]; do echo line $i >&2; i=$((i+1)); done; exit 4",
                dir.path(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        finish(&b, &c, &h).await,
        StepState::Failed {
            reason: "exit status 4".into()
        }
    );
    let logs = b.logs(&c, &h).await.unwrap();
    assert!(
        logs.stderr_tail.ends_with("line 4999\n"),
        "the tail is kept"
    );
    assert!(logs.stderr_tail.len() <= 64 * 1024, "only the tail is kept");
}

#[tokio::test]
async fn a_missing_program_fails_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let b = LocalBackend::new();
    let c = b.start(&spec()).await.unwrap();
    let mut r = request("", dir.path());
    r.work = StepWork::Command {
        argv: vec!["definitely-not-a-program-lake".into()],
        env: vec![],
        workdir: dir.path().to_owned(),
    };
    let h = b.submit(&c, &r).await.unwrap();
    match finish(&b, &c, &h).await {
        StepState::Failed { reason } => assert!(
            reason.contains("cannot start \"definitely-not-a-program-lake\""),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn cancel_and_terminate_stop_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("child-alive");
    let b = LocalBackend::new();
    let c = b.start(&spec()).await.unwrap();
    // The shell starts a grandchild that would write the marker after 2 s.
    let script = format!("(sleep 2; touch {}) & wait", marker.display());
    let h = b.submit(&c, &request(&script, dir.path())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    b.cancel(&c, &h).await.unwrap();
    assert_eq!(b.poll(&c, &h).await.unwrap(), StepState::Cancelled);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        !marker.exists(),
        "the grandchild was stopped with its group"
    );

    let h2 = b
        .submit(&c, &request("sleep 30", dir.path()))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    b.terminate(&c).await.unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "terminate does not wait for the step to end by itself"
    );
    let _ = h2;
}
