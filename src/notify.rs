//! `[notify]`: a run's summary, sent to a webhook and/or a command when the run ends as the
//! table asks. A notice that cannot be sent is logged; it never changes the run's result.

use lake_core::ledger::{RunRecord, Status};
use lake_core::run::EnvLookup;

use crate::Lake;

/// Send `record`'s notice, if `[notify]` asks for one for how it ended.
pub(crate) async fn notify(lake: &Lake, record: &RunRecord, env: &EnvLookup) {
    let Some(n) = &lake.pipeline.notify else {
        return;
    };
    let failed = matches!(record.status, Status::Failed | Status::Cancelled);
    // The previous run of this pipeline: its index's head only (its newest runs).
    let previous_failed = lake_core::ledger::pipeline_recent(&*lake.store, &record.pipeline)
        .await
        .ok()
        .and_then(|runs| {
            runs.into_iter()
                .filter(|r| r.run_id != record.run_id && r.started < record.started)
                .max_by_key(|r| r.started)
        })
        .is_some_and(|r| matches!(r.status, Status::Failed | Status::Cancelled));
    let event = match (failed, record.status == Status::Succeeded, previous_failed) {
        (true, _, _) => "failure",
        (false, true, true) => "recovered",
        (false, true, false) => "success",
        _ => return,
    };
    let wanted = match event {
        "failure" => n.on_failure,
        "recovered" => n.on_recovered || n.on_success,
        _ => n.on_success,
    };
    if !wanted {
        return;
    }
    send(lake, n, &summary(record, event), env).await;
}

/// Where `lake schedule` keeps the datasets it sent a stale notice about, with the commit time
/// each had then: one notice per staleness, not one per tick.
fn stale_key(pipeline: &str) -> lake_core::Result<lake_core::zone::Key> {
    lake_core::zone::Key::new(format!("_lake/notices/{pipeline}/stale.json"))
}

/// Send one `event = "stale"` notice for the datasets that became stale since the last check
/// (`[notify] on` holds `"stale"`, the default with `"failure"`). A dataset that is fresh
/// again leaves the record, so its next staleness is sent again. Nothing is sent or kept
/// when the lake cannot be read; the schedule goes on.
pub(crate) async fn notify_stale(
    lake: &Lake,
    now: lake_core::chrono::DateTime<lake_core::chrono::Utc>,
) {
    use lake_core::ZoneStoreExt;
    type Noticed = std::collections::BTreeMap<
        String,
        Option<lake_core::chrono::DateTime<lake_core::chrono::Utc>>,
    >;
    let Some(n) = lake.pipeline.notify.as_ref().filter(|n| n.on_stale) else {
        return;
    };
    let store = &*lake.store;
    let checked = match lake_core::freshness::check(&lake.pipeline, store, now).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("notify: freshness: {}", lake_core::run::error_chain(&e));
            return;
        }
    };
    let Ok(key) = stale_key(&lake.pipeline.name) else {
        return;
    };
    let noticed: Noticed = store
        .get_json(&key)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let stale: Noticed = checked
        .iter()
        .filter(|f| f.is_stale())
        .map(|f| (f.dataset.clone(), f.last))
        .collect();
    let new: Vec<&lake_core::freshness::Freshness> = checked
        .iter()
        .filter(|f| f.is_stale() && noticed.get(&f.dataset) != Some(&f.last))
        .collect();
    if stale != noticed
        && let Err(e) = store.put_json(&key, &stale).await
    {
        tracing::warn!("notify: {}", lake_core::run::error_chain(&e));
        return;
    }
    if new.is_empty() {
        return;
    }
    let mut text = format!("lake: pipeline {}: stale data", lake.pipeline.name);
    for f in &new {
        let (age, limit) = (f.age_text(), f.limit_text().unwrap_or_default());
        text.push_str(&format!(
            "\n{} ({}): {age}, freshness {limit}",
            f.dataset, f.writer
        ));
    }
    let summary = serde_json::json!({
        "event": "stale",
        "pipeline": lake.pipeline.name,
        "checked_at": now,
        "datasets": new,
        "text": text,
    });
    // No run read the secrets: the webhook's are read for this notice.
    let process: EnvLookup = std::sync::Arc::new(|v: &str| std::env::var(v).ok());
    match lake.secret_lookup(&process).await {
        Ok(env) => send(lake, n, &summary, &env).await,
        Err(e) => tracing::warn!("notify: {e}"),
    }
}

/// Send `summary` to the webhook and the command of `[notify]`; a failure is logged.
async fn send(
    lake: &Lake,
    n: &lake_core::config::NotifySpec,
    summary: &serde_json::Value,
    env: &EnvLookup,
) {
    if let Some(t) = &n.webhook {
        match t.resolve("notify.webhook", &**env) {
            Ok(url) => {
                if let Err(e) = lake_ingest::post_json(url.expose(), summary).await {
                    let redactor = lake_core::config::Redactor::new([&url]);
                    tracing::warn!(
                        "notify: the webhook failed: {}",
                        redactor.redact(&lake_core::run::error_chain(&e))
                    );
                }
            }
            Err(e) => tracing::warn!("notify: {e}"),
        }
    }
    if let Some((program, args)) = n.command.split_first() {
        let body = summary.to_string();
        match command(program, args, &lake.pipeline.base_dir, body, n.timeout).await {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::warn!("notify: {program} exited with {s}"),
            Err(e) => tracing::warn!("notify: {program}: {e}"),
        }
    }
}

/// Run the notice command with `body` on stdin; past `timeout` it is killed (with what it
/// started in its process group on Unix) and an error says so.
async fn command(
    program: &str,
    args: &[String],
    dir: &std::path::Path,
    body: String,
    timeout: std::time::Duration,
) -> std::io::Result<std::process::ExitStatus> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run it: {e}")))?;
    let stdin = child.stdin.take();
    let talk = async {
        if let Some(mut stdin) = stdin {
            // A command that does not read its stdin is not an error.
            let _ = stdin.write_all(body.as_bytes()).await;
            drop(stdin);
        }
        child.wait().await
    };
    match tokio::time::timeout(timeout, talk).await {
        Ok(status) => status,
        Err(_) => {
            lake_local::stop_group(&mut child, std::time::Duration::ZERO).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "still running after {} s ([notify] timeout): killed; the run's result is unchanged",
                    timeout.as_secs_f64()
                ),
            ))
        }
    }
}

/// The notice: pipeline, date, run id, how it ended, and the failed steps and windows with
/// their cause lines (as the ledger has them: secrets already scrubbed).
fn summary(r: &RunRecord, event: &str) -> serde_json::Value {
    let failed_steps: Vec<_> = r
        .steps
        .iter()
        .filter(|s| s.status == Status::Failed)
        .map(|s| serde_json::json!({ "step": s.name, "error": s.error }))
        .collect();
    let failed_ingest: Vec<_> = r
        .ingest
        .iter()
        .filter(|i| i.status == Status::Failed)
        .map(|i| serde_json::json!({ "source": i.source, "date": i.date, "error": i.error }))
        .collect();
    let mut text = format!(
        "lake: pipeline {} for {}: run {} {}",
        r.pipeline, r.date, r.run_id, r.status
    );
    for s in r.steps.iter().filter(|s| s.status == Status::Failed) {
        let cause = s
            .error
            .as_deref()
            .and_then(|e| e.lines().next())
            .unwrap_or("");
        text.push_str(&format!("\nstep {} failed: {cause}", s.name));
    }
    for i in r.ingest.iter().filter(|i| i.status == Status::Failed) {
        let cause = i
            .error
            .as_deref()
            .and_then(|e| e.lines().next())
            .unwrap_or("");
        text.push_str(&format!("\ningest {} {} failed: {cause}", i.source, i.date));
    }
    // Slack and its kin read `<!channel>` and `<https://…|link>` in `text`: what servers and
    // data put in error lines is shown as it is.
    let text = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    serde_json::json!({
        "text": text,
        "event": event,
        "pipeline": r.pipeline,
        "date": r.date,
        "run_id": r.run_id,
        "status": r.status,
        "failed_steps": failed_steps,
        "failed_ingest": failed_ingest,
    })
}
