//! The ledger's index: the questions asked often (newest run, last runs, a run by prefix,
//! every run's status) cost one small listing and one read whatever the number of runs; the
//! answers are the run documents' when the index is missing or broken, and a changed document
//! is found and mended by the checks `lake fsck` runs.

use std::sync::Arc;

use lake::core::DynZoneStore;
use lake::core::chrono::{Duration, NaiveDate, TimeZone, Utc};
use lake::core::ledger::{self, RunRecord, Status, StepRecord};
use lake::core::zone::{Key, ZoneStoreExt};
use lake::local::LocalZoneStore;
use lake_testing::counting::CountingStore;

fn record(i: usize, status: Status) -> RunRecord {
    let started = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap() + Duration::minutes(i as i64);
    RunRecord {
        run_id: format!("{}-{i:06x}", started.format("%Y%m%dT%H%M%SZ")),
        pipeline: "p".into(),
        env: None,
        date: NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + Duration::days((i % 30) as i64),
        root: "memory://".into(),
        backend: "local".into(),
        holder: "test".into(),
        started,
        ended: (status != Status::Running).then(|| started + Duration::seconds(3)),
        status,
        ingest: Vec::new(),
        steps: vec![StepRecord {
            name: "s".into(),
            kind: "sql".into(),
            status,
            inputs: Vec::new(),
            output: None,
            output_objects: Vec::new(),
            rows: Some(i as u64),
            rejected: None,
            merged: None,
            replayed: Vec::new(),
            bytes: None,
            started: Some(started),
            ended: None,
            duration_ms: None,
            error: None,
            attempts: 1,
            attempt_errors: Vec::new(),
        }],
        error: None,
        sinks: Vec::new(),
        catalog: Vec::new(),
    }
}

async fn ledger_of(n: usize) -> Arc<DynZoneStore> {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    for i in 0..n {
        let status = if i % 7 == 3 {
            Status::Failed
        } else {
            Status::Succeeded
        };
        ledger::write(&*store, &record(i, Status::Running))
            .await
            .unwrap();
        ledger::write(&*store, &record(i, status)).await.unwrap();
    }
    store
}

#[tokio::test]
async fn summaries_read_the_index_and_the_newest_run_only_the_head() {
    for n in [1, 100, 250] {
        let store = ledger_of(n).await;
        let counting = CountingStore::new(Arc::clone(&store));
        let got = ledger::summaries(&counting).await.unwrap();
        assert_eq!(
            got,
            ledger::from_documents(&*store, None).await.unwrap(),
            "{n} runs"
        );
        // One read per index object: the head, and a sealed segment per hundred-odd runs.
        let objects = store.list("_lake/runs.index").await.unwrap().len();
        assert!(objects <= 1 + n / 100, "{n} runs: {objects} index objects");
        let counts = counting.counts();
        assert_eq!(counts.of("get"), objects, "{n} runs: {counts:?}");
        assert_eq!(counts.of("list"), 1, "{n} runs: {counts:?}");
        assert_eq!(counts.total(), objects + 1, "{n} runs: {counts:?}");

        counting.reset();
        let newest = ledger::latest(&counting).await.unwrap().unwrap();
        assert_eq!(newest.run_id, got.last().unwrap().run_id);
        assert_eq!(
            counting.counts().of("get"),
            2,
            "the head and the newest run, however many runs are sealed"
        );

        counting.reset();
        let prefix = &newest.run_id[..newest.run_id.len() - 2];
        assert_eq!(ledger::find(&counting, prefix).await.unwrap(), newest);
        assert_eq!(
            counting.counts().of("get"),
            objects + 1,
            "a prefix is found in the index"
        );
        assert!(ledger::check_index(&*store).await.unwrap().is_empty());

        // The version `lake serve` polls: a listing, no read; it changes with every write.
        counting.reset();
        let before = ledger::index_version(&counting).await.unwrap().unwrap();
        assert_eq!(counting.counts().total(), 1, "one listing");
        ledger::write(&*store, &record(n, Status::Running))
            .await
            .unwrap();
        let after = ledger::index_version(&*store).await.unwrap().unwrap();
        assert_ne!(before, after);
    }
}

#[tokio::test]
async fn without_an_index_the_documents_answer_and_the_next_write_builds_it() {
    let store = ledger_of(20).await;
    let truth = ledger::from_documents(&*store, None).await.unwrap();
    // A ledger from before the index.
    store
        .delete(&Key::new(format!("{}/p.json", ledger::INDEX)).unwrap())
        .await
        .unwrap();
    assert_eq!(ledger::summaries(&*store).await.unwrap(), truth);
    assert_eq!(ledger::check_index(&*store).await.unwrap().len(), 20);
    ledger::write(&*store, &record(20, Status::Succeeded))
        .await
        .unwrap();
    let now = ledger::from_documents(&*store, None).await.unwrap();
    assert_eq!(now.len(), 21);
    assert_eq!(ledger::summaries(&*store).await.unwrap(), now);
    assert!(ledger::check_index(&*store).await.unwrap().is_empty());

    // A damaged index: the documents answer; a rebuild mends it.
    let index = Key::new(format!("{}/p.json", ledger::INDEX)).unwrap();
    store.put_bytes(&index, "{not json".into()).await.unwrap();
    assert_eq!(ledger::summaries(&*store).await.unwrap(), now);
    ledger::rebuild_index(&*store).await.unwrap();
    assert!(ledger::check_index(&*store).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_document_changed_behind_the_index_is_found_and_the_rebuild_mends_it() {
    let store = ledger_of(10).await;
    let mut changed = record(5, Status::Failed);
    changed.error = Some("restored from a backup".into());
    store
        .put_json(
            &Key::new(format!("{}/{}.json", ledger::RUNS, changed.run_id)).unwrap(),
            &changed,
        )
        .await
        .unwrap();
    assert_eq!(
        ledger::check_index(&*store).await.unwrap(),
        vec![changed.run_id.clone()]
    );
    ledger::rebuild_index(&*store).await.unwrap();
    assert!(ledger::check_index(&*store).await.unwrap().is_empty());
    let got = ledger::summaries(&*store).await.unwrap();
    assert!(
        got.iter()
            .any(|s| s.run_id == changed.run_id && s.status == Status::Failed)
    );
}

#[tokio::test]
async fn pipelines_sharing_a_root_keep_an_index_each_and_are_read_together() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    for i in 0..6 {
        let mut r = record(i, Status::Succeeded);
        r.pipeline = if i % 2 == 0 { "p".into() } else { "q".into() };
        ledger::write(&*store, &r).await.unwrap();
    }
    let indexes = store.list(ledger::INDEX).await.unwrap();
    assert_eq!(indexes.len(), 2);
    let got = ledger::summaries(&*store).await.unwrap();
    assert_eq!(got, ledger::from_documents(&*store, None).await.unwrap());
    assert_eq!(got.iter().filter(|s| s.pipeline == "q").count(), 3);
}

#[tokio::test]
async fn a_run_indexed_while_running_is_read_from_its_document() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    ledger::write(&*store, &record(0, Status::Running))
        .await
        .unwrap();
    let index = Key::new(format!("{}/p.json", ledger::INDEX)).unwrap();
    let index_before = store.get_bytes(&index).await.unwrap();
    // The run ends and its index line is not written (its process died in between).
    ledger::write(&*store, &record(0, Status::Succeeded))
        .await
        .unwrap();
    store.put_bytes(&index, index_before).await.unwrap();
    let got = ledger::summaries(&*store).await.unwrap();
    assert_eq!(got[0].status, Status::Succeeded);
}

#[tokio::test]
async fn a_line_left_running_by_a_killed_run_is_no_finding_and_the_next_run_mends_it() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let index = Key::new(format!("{}/p.json", ledger::INDEX)).unwrap();
    ledger::write(&*store, &record(0, Status::Running))
        .await
        .unwrap();
    let index_before = store.get_bytes(&index).await.unwrap();
    // Killed between its last document and its line.
    ledger::write(&*store, &record(0, Status::Failed))
        .await
        .unwrap();
    store.put_bytes(&index, index_before).await.unwrap();
    assert!(ledger::check_index(&*store).await.unwrap().is_empty());
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(text(&store.get_bytes(&index).await.unwrap()).contains("\"running\""));
    ledger::write(&*store, &record(1, Status::Succeeded))
        .await
        .unwrap();
    let mended = text(&store.get_bytes(&index).await.unwrap());
    assert!(!mended.contains("\"running\""), "{mended}");
    assert_eq!(
        ledger::summaries(&*store).await.unwrap(),
        ledger::from_documents(&*store, None).await.unwrap()
    );
}

#[tokio::test]
async fn one_pipelines_runs_are_read_from_its_own_index_alone() {
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    for i in 0..6 {
        let mut r = record(i, Status::Succeeded);
        r.pipeline = if i % 3 == 0 { "p".into() } else { "q".into() };
        ledger::write(&*store, &r).await.unwrap();
    }
    let counting = CountingStore::new(Arc::clone(&store));
    let p = ledger::pipeline_summaries(&counting, "p").await.unwrap();
    assert_eq!(
        p.iter().map(|s| s.run_id.as_str()).collect::<Vec<_>>(),
        [
            record(0, Status::Succeeded).run_id,
            record(3, Status::Succeeded).run_id
        ]
    );
    let counts = counting.counts();
    assert_eq!(
        (counts.of("get"), counts.of("list")),
        (1, 1),
        "its head, and a listing of its (no) segments: {counts:?}"
    );
}

/// The head of `p`'s index, as lines.
async fn head_lines(store: &DynZoneStore) -> Vec<serde_json::Value> {
    let head: serde_json::Value = store
        .get_json(&Key::new("_lake/runs.index/p.json").unwrap())
        .await
        .unwrap()
        .unwrap();
    head["runs"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_long_ledger_is_sealed_into_segments_so_a_run_and_its_notice_read_only_the_head() {
    let n = 450;
    let store = ledger_of(n).await;
    let truth = ledger::from_documents(&*store, None).await.unwrap();
    assert_eq!(truth.len(), n);
    let objects = store.list("_lake/runs.index").await.unwrap();
    assert!(objects.len() >= 3, "sealed segments: {objects:?}");
    let head = head_lines(&store).await;
    assert!((100..=200).contains(&head.len()), "{} lines", head.len());
    assert_eq!(
        head.last().unwrap()["run_id"],
        truth.last().unwrap().run_id.as_str(),
        "the head holds the newest runs"
    );

    // Every reader sees every run once, from heads and segments.
    assert_eq!(ledger::summaries(&*store).await.unwrap(), truth);
    assert_eq!(
        ledger::pipeline_summaries(&*store, "p").await.unwrap(),
        truth
    );
    assert!(ledger::check_index(&*store).await.unwrap().is_empty());

    // A run's write reads the head alone; the notice's question too.
    let counting = CountingStore::new(Arc::clone(&store));
    ledger::write(&counting, &record(n, Status::Succeeded))
        .await
        .unwrap();
    let counts = counting.counts();
    assert_eq!(counts.of("get"), 1, "{counts:?}");
    assert_eq!(counts.of("list"), 0, "{counts:?}");
    counting.reset();
    let recent = ledger::pipeline_recent(&counting, "p").await.unwrap();
    assert_eq!(counting.counts().total(), 1, "{:?}", counting.counts());
    assert_eq!(
        recent.last().unwrap().run_id,
        record(n, Status::Succeeded).run_id
    );
    assert!(recent.len() >= 100);

    // A crash between a segment and the head that drops its lines leaves them in both: each
    // run is still read once, and it is no finding.
    let first_segment = objects
        .iter()
        .find(|m| m.key.as_str().starts_with("_lake/runs.index/p/"))
        .unwrap();
    let sealed: serde_json::Value = store.get_json(&first_segment.key).await.unwrap().unwrap();
    let mut both = sealed["runs"].as_array().unwrap().clone();
    both.extend(head_lines(&store).await);
    store
        .put_json(
            &Key::new("_lake/runs.index/p.json").unwrap(),
            &serde_json::json!({ "runs": both }),
        )
        .await
        .unwrap();
    let truth = ledger::from_documents(&*store, None).await.unwrap();
    assert_eq!(ledger::summaries(&*store).await.unwrap(), truth);
    assert_eq!(
        ledger::pipeline_summaries(&*store, "p").await.unwrap(),
        truth
    );
    assert!(ledger::check_index(&*store).await.unwrap().is_empty());

    // The rebuild writes heads and segments again, and leaves no line twice.
    ledger::rebuild_index(&*store).await.unwrap();
    assert_eq!(ledger::summaries(&*store).await.unwrap(), truth);
    assert!(head_lines(&store).await.len() <= 200);
    let mut lines = 0;
    for m in store.list("_lake/runs.index").await.unwrap() {
        let doc: serde_json::Value = store.get_json(&m.key).await.unwrap().unwrap();
        lines += doc["runs"].as_array().unwrap().len();
    }
    assert_eq!(lines, truth.len());
}
