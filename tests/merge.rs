//! `mode = "merge"` on the embedded engine: three daily batches of customers with updates,
//! deletes, an older row that loses to the stored one, in-batch duplicates and a tie; the
//! counts in the ledger; only the files that hold a touched key are rewritten.

use std::path::Path;

use lake::Lake;
use lake::core::chrono::NaiveDate;
use lake::core::ledger::{RunRecord, Status};
use lake::core::run::RunOptions;
use lake::local::engine::datafusion::arrow::util::display::array_value_to_string;

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

async fn run(dir: &Path, day: &str) -> RunRecord {
    let lake = Lake::open(dir.join("lake.toml"), None).await.unwrap();
    lake.run(&RunOptions::new(date(day))).await.unwrap()
}

/// The dataset's rows, `id|name|tier|updated_at`, by id.
async fn customers(dir: &Path) -> Vec<String> {
    rows(
        dir,
        "SELECT id, name, tier, CAST(updated_at AS VARCHAR) FROM trusted.customers ORDER BY id",
    )
    .await
}

/// The rows of `sql` over the lake, each as its cells joined by `|`.
async fn rows(dir: &Path, sql: &str) -> Vec<String> {
    let lake = Lake::open(dir.join("lake.toml"), None).await.unwrap();
    let ctx = lake.query_session().await.unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    let mut out = Vec::new();
    for b in &batches {
        for r in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .map(|c| array_value_to_string(c, r).unwrap())
                .collect();
            out.push(cells.join("|"));
        }
    }
    out
}

fn toml(on_tie: &str) -> String {
    format!(
        r#"[lake]
name = "shop"

[sources.customers]
kind = "file"
path = "data/customers.csv"

[steps.customers]
kind = "sql"
inputs = ["raw/customers@date"]
output = "trusted/customers"
sql = "SELECT CAST(id AS BIGINT) AS id, name, tier, CAST(updated_at AS TIMESTAMP) AS updated_at FROM customers"
mode = "merge"
key = ["id"]
order_by = "updated_at"
delete_when = "tier = 'deleted'"
{on_tie}
"#
    )
}

fn day(dir: &Path, rows: &str) {
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        dir.join("data/customers.csv"),
        format!("id,name,tier,updated_at\n{rows}"),
    )
    .unwrap();
}

#[tokio::test]
async fn three_daily_batches_merge_by_key_latest_wins_and_deletes_remove() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("lake.toml"), toml("")).unwrap();

    // Day 1: Ana twice (the later row wins), Bo and Cy.
    day(
        dir,
        "1,Ana,silver,2024-05-01T08:00:00\n2,Bo,basic,2024-05-01T09:00:00\n3,Cy,basic,2024-05-01T09:30:00\n1,Ana,gold,2024-05-01T10:00:00\n",
    );
    let r = run(dir, "2024-05-01").await;
    assert_eq!(
        r.status,
        Status::Succeeded,
        "{:?} {:?}",
        r.error,
        r.steps.iter().map(|s| s.error.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        customers(dir).await,
        [
            "1|Ana|gold|2024-05-01T10:00:00",
            "2|Bo|basic|2024-05-01T09:00:00",
            "3|Cy|basic|2024-05-01T09:30:00"
        ]
    );
    let m = r.steps[0].merged.expect("merge counts");
    assert_eq!((m.inserted, m.updated, m.deleted), (3, 0, 0));

    // Day 2: Bo updated, Cy deleted, Di new, and an older Ana that loses to the stored row.
    day(
        dir,
        "2,Bo,gold,2024-05-02T09:00:00\n3,Cy,deleted,2024-05-02T09:00:00\n4,Di,basic,2024-05-02T10:00:00\n1,Ana,bronze,2024-04-30T00:00:00\n",
    );
    let r = run(dir, "2024-05-02").await;
    assert_eq!(
        r.status,
        Status::Succeeded,
        "{:?} {:?}",
        r.error,
        r.steps.iter().map(|s| s.error.clone()).collect::<Vec<_>>()
    );
    let day2 = [
        "1|Ana|gold|2024-05-01T10:00:00",
        "2|Bo|gold|2024-05-02T09:00:00",
        "4|Di|basic|2024-05-02T10:00:00",
    ];
    assert_eq!(customers(dir).await, day2);
    let m = r.steps[0].merged.expect("merge counts");
    assert_eq!((m.inserted, m.updated, m.deleted), (1, 1, 1));
    assert_eq!(m.rewritten_files, 1, "{m:?}");

    // Day 3: two rows of Di with one updated_at: a tie fails the step and changes nothing.
    day(
        dir,
        "4,Di,gold,2024-05-03T10:00:00\n4,Di,silver,2024-05-03T10:00:00\n",
    );
    let r = run(dir, "2024-05-03").await;
    assert_eq!(r.status, Status::Failed);
    let err = r.steps[0].error.clone().unwrap();
    assert!(err.contains("id = 4") && err.contains("on_tie"), "{err}");
    assert_eq!(customers(dir).await, day2);
    // With on_tie = "any", one of them wins.
    std::fs::write(dir.join("lake.toml"), toml("on_tie = \"any\"")).unwrap();
    let r = run(dir, "2024-05-03").await;
    assert_eq!(
        r.status,
        Status::Succeeded,
        "{:?} {:?}",
        r.error,
        r.steps.iter().map(|s| s.error.clone()).collect::<Vec<_>>()
    );
    let rows = customers(dir).await;
    assert_eq!(rows.len(), 3);
    assert!(
        rows[2] == "4|Di|gold|2024-05-03T10:00:00" || rows[2] == "4|Di|silver|2024-05-03T10:00:00",
        "{rows:?}"
    );
    let day3 = rows;

    // Day 2 again, with its rows: every row of it is older than or equal to what is stored.
    day(
        dir,
        "2,Bo,gold,2024-05-02T09:00:00\n3,Cy,deleted,2024-05-02T09:00:00\n4,Di,basic,2024-05-02T10:00:00\n1,Ana,bronze,2024-04-30T00:00:00\n",
    );
    let mut opts = RunOptions::new(date("2024-05-02"));
    opts.force = true;
    let lake = Lake::open(dir.join("lake.toml"), None).await.unwrap();
    let r = lake.run(&opts).await.unwrap();
    assert_eq!(
        r.status,
        Status::Succeeded,
        "{:?} {:?}",
        r.error,
        r.steps.iter().map(|s| s.error.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        r.steps[0].replayed,
        [date("2024-05-03")],
        "day 3's batch is merged again after it"
    );
    // Every row of day 2 is older than or equal to what day 3 left; day 3's tie may go
    // either way again.
    let rows = customers(dir).await;
    assert_eq!(rows[..2], day3[..2], "an older batch changes nothing");
    assert!(rows[2].starts_with("4|Di|"), "{rows:?}");
}

/// A merge into a partitioned dataset whose key holds the partition column: a batch that
/// touches one partition rewrites that partition's file only.
#[tokio::test]
async fn a_merge_rewrites_only_the_files_of_touched_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("lake.toml"),
        r#"[lake]
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
"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let mut rows = String::from("day,station,value\n");
    for d in 1..=5 {
        for s in 0..100 {
            rows.push_str(&format!("2024-05-0{d},{s},{}\n", d * 1000 + s));
        }
    }
    std::fs::write(dir.join("data/readings.csv"), &rows).unwrap();
    let r = run(dir, "2024-05-01").await;
    assert_eq!(
        r.status,
        Status::Succeeded,
        "{:?} {:?}",
        r.error,
        r.steps.iter().map(|s| s.error.clone()).collect::<Vec<_>>()
    );
    let files = r.steps[0].output_objects.len();
    assert_eq!(files, 5, "one file per day");

    // A correction of two stations of one day, and a new station on another.
    std::fs::write(
        dir.join("data/readings.csv"),
        "day,station,value\n2024-05-03,7,-1\n2024-05-03,8,-2\n2024-05-05,100,5100\n",
    )
    .unwrap();
    let r = run(dir, "2024-05-02").await;
    assert_eq!(
        r.status,
        Status::Succeeded,
        "{:?} {:?}",
        r.error,
        r.steps.iter().map(|s| s.error.clone()).collect::<Vec<_>>()
    );
    let m = r.steps[0].merged.expect("merge counts");
    assert_eq!((m.inserted, m.updated, m.deleted), (1, 2, 0));
    assert_eq!((m.rewritten_files, m.kept_files), (2, 3), "{m:?}");

    let lake = Lake::open(dir.join("lake.toml"), None).await.unwrap();
    let ctx = lake.query_session().await.unwrap();
    let b = ctx
        .sql("SELECT count(*), sum(value) FROM trusted.readings")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let total: f64 = (1..=5)
        .flat_map(|d| (0..100).map(move |s| (d * 1000 + s) as f64))
        .sum::<f64>()
        - (3007.0 + 3008.0)
        + (-1.0 - 2.0)
        + 5100.0;
    assert_eq!(array_value_to_string(b[0].column(0), 0).unwrap(), "501");
    assert_eq!(
        array_value_to_string(b[0].column(1), 0).unwrap(),
        format!("{total:.1}")
    );
}

/// `mode = "history"` over three days: a changed row closes its version and opens one, an
/// unchanged row (only `order_by` moved) and a late row change nothing, a delete closes the key.
#[tokio::test]
async fn history_keeps_every_version_with_its_validity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("lake.toml"),
        r#"[lake]
name = "shop"

[sources.customers]
kind = "file"
path = "data/customers.csv"

[steps.customers]
kind = "sql"
inputs = ["raw/customers@date"]
output = "trusted/customers"
sql = "SELECT CAST(id AS BIGINT) AS id, name, tier, CAST(updated_at AS TIMESTAMP) AS updated_at FROM customers"
mode = "history"
key = ["id"]
order_by = "updated_at"
delete_when = "tier = 'deleted'"
history_columns = { valid_to = "until" }
"#,
    )
    .unwrap();
    day(
        dir,
        "1,Ana,gold,2024-05-01T08:00:00\n2,Bo,basic,2024-05-01T08:00:00\n",
    );
    let r = run(dir, "2024-05-01").await;
    assert_eq!(
        r.status,
        Status::Succeeded,
        "{:?} {:?}",
        r.error,
        r.steps.iter().map(|s| s.error.clone()).collect::<Vec<_>>()
    );
    day(
        dir,
        "1,Ana,gold,2024-05-02T08:00:00\n2,Bo,silver,2024-05-02T08:00:00\n3,Cy,basic,2024-05-02T08:00:00\n",
    );
    let r = run(dir, "2024-05-02").await;
    assert_eq!(
        r.status,
        Status::Succeeded,
        "{:?} {:?}",
        r.error,
        r.steps.iter().map(|s| s.error.clone()).collect::<Vec<_>>()
    );
    let m = r.steps[0].merged.expect("counts");
    assert_eq!((m.inserted, m.updated, m.deleted), (2, 1, 0), "{m:?}");
    day(
        dir,
        "2,Bo,silver,2024-05-03T08:00:00\n3,Cy,deleted,2024-05-03T08:00:00\n1,Ana,platinum,2024-05-03T08:00:00\n1,Ana,bronze,2024-04-01T00:00:00\n",
    );
    let r = run(dir, "2024-05-03").await;
    assert_eq!(
        r.status,
        Status::Succeeded,
        "{:?} {:?}",
        r.error,
        r.steps.iter().map(|s| s.error.clone()).collect::<Vec<_>>()
    );
    let m = r.steps[0].merged.expect("counts");
    assert_eq!((m.inserted, m.updated, m.deleted), (1, 1, 1), "{m:?}");

    let rows = rows(
        dir,
        "SELECT id, name, tier, CAST(valid_from AS VARCHAR) AS f, coalesce(CAST(until AS VARCHAR), '-') AS u, is_current \
         FROM trusted.customers ORDER BY id, valid_from",
    )
    .await;
    assert_eq!(
        rows,
        [
            "1|Ana|gold|2024-05-01T08:00:00|2024-05-03T08:00:00|false",
            "1|Ana|platinum|2024-05-03T08:00:00|-|true",
            "2|Bo|basic|2024-05-01T08:00:00|2024-05-02T08:00:00|false",
            "2|Bo|silver|2024-05-02T08:00:00|-|true",
            "3|Cy|basic|2024-05-02T08:00:00|2024-05-03T08:00:00|false",
        ]
    );
}

/// Without `order_by` the batch wins, so the order batches are merged in decides: a rerun of a
/// date whose batch the dataset holds changes nothing, and `--force` of the first date merges
/// its batch again and then the later dates' batches, in order, ending where day 3 ended.
#[tokio::test]
async fn a_rerun_is_a_no_op_and_force_of_an_older_date_merges_the_later_batches_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("lake.toml"),
        toml("").replace("order_by = \"updated_at\"\n", ""),
    )
    .unwrap();
    let days = [
        (
            "2024-05-01",
            "1,Ana,silver,2024-05-01T08:00:00\n2,Bo,basic,2024-05-01T08:00:00\n",
        ),
        (
            "2024-05-02",
            "1,Ana,gold,2024-05-02T08:00:00\n3,Cy,basic,2024-05-02T08:00:00\n",
        ),
        (
            "2024-05-03",
            "3,Cy,deleted,2024-05-03T08:00:00\n2,Bo,gold,2024-05-03T08:00:00\n",
        ),
    ];
    for (date, rows) in days {
        day(dir, rows);
        let r = run(dir, date).await;
        assert_eq!(
            r.status,
            Status::Succeeded,
            "{date}: {:?}",
            r.steps[0].error
        );
    }
    let day3 = [
        "1|Ana|gold|2024-05-02T08:00:00",
        "2|Bo|gold|2024-05-03T08:00:00",
    ];
    assert_eq!(customers(dir).await, day3);

    // Day 2 again: its batch is held, so nothing runs (and nothing moves back).
    let r = run(dir, "2024-05-02").await;
    assert_eq!(r.steps[0].status, Status::UpToDate, "{:?}", r.steps[0]);
    assert_eq!(customers(dir).await, day3);

    // Day 1 forced: merged again, then days 2 and 3 after it.
    let mut opts = RunOptions::new(date("2024-05-01"));
    opts.force = true;
    let lake = Lake::open(dir.join("lake.toml"), None).await.unwrap();
    let r = lake.run(&opts).await.unwrap();
    assert_eq!(r.status, Status::Succeeded, "{:?}", r.steps[0].error);
    assert_eq!(
        r.steps[0].replayed,
        [date("2024-05-02"), date("2024-05-03")]
    );
    assert_eq!(customers(dir).await, day3);
    // And every date's batch is held again: reruns are no-ops.
    for (d, _) in days {
        let r = run(dir, d).await;
        assert_eq!(r.steps[0].status, Status::UpToDate, "{d}");
    }
}
