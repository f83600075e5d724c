//! `[catalog]` in a run, through the library with a mock catalog: which datasets get tables,
//! what a registration is given, the ledger's records, and a failed registration failing the
//! run while its data stays committed.

use std::path::Path;
use std::sync::{Arc, Mutex};

use lake::Lake;
use lake::core::catalog::CatalogOutcome;
use lake::core::chrono::NaiveDate;
use lake::core::ledger::{self, Status};
use lake::core::run::{RunOptions, run};
use lake_testing::MockCatalog;

const PIPELINE: &str = r#"
[lake]
name = "people"

[sources.people]
kind = "file"
path = "data/people.csv"

[steps.clean]
kind = "sql"
inputs = ["raw/people@date"]
output = "trusted/people"
sql = "SELECT name, CAST(age AS INT) AS age, city FROM people"
partition_by = ["city"]

[steps.by_city]
kind = "sql"
inputs = ["trusted/people"]
output = "refined/by_city"
sql = "SELECT city, COUNT(*) AS n FROM people GROUP BY city"

[catalog]
kind = "glue"
tables = ["refined/*"]
"#;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lake.toml"), PIPELINE).unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/people.csv"),
        "name,age,city\nana,31,Lisbon\nbo,42,Oslo\ncy,27,Lisbon\n",
    )
    .unwrap();
    dir
}

async fn run_with(dir: &Path, catalog: MockCatalog) -> (Lake, lake::core::ledger::RunRecord) {
    let lake = Lake::open(dir.join("lake.toml"), None).await.unwrap();
    let mut cx = lake.context().await.unwrap();
    // On a local root the build registers nothing: Glue tables point at S3.
    assert!(cx.catalog.is_none());
    cx.catalog = Some(Arc::new(catalog));
    let date = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
    let record = run(&cx, &RunOptions::new(date)).await.unwrap();
    (lake, record)
}

#[tokio::test]
async fn the_datasets_tables_names_are_registered_after_their_step() {
    let dir = setup();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    let mut catalog = MockCatalog::new();
    catalog.expect_register().returning(move |d, m| {
        s.lock()
            .unwrap()
            .push((d.prefix.clone(), d.objects.len(), m.run_id.clone()));
        Ok(CatalogOutcome {
            created: true,
            ..Default::default()
        })
    });
    let (lake, r) = run_with(dir.path(), catalog).await;
    assert_eq!(r.status, Status::Succeeded);
    // Only refined/* (tables = ["refined/*"]), with its committed objects and the run.
    assert_eq!(
        *seen.lock().unwrap(),
        [("refined/by_city".to_owned(), 1, r.run_id.clone())]
    );
    assert_eq!(r.catalog.len(), 1);
    assert_eq!(r.catalog[0].table, "people.refined_by_city");
    assert_eq!(r.catalog[0].status, Status::Succeeded);
    assert!(r.catalog[0].created);
    let stored = ledger::get(&*lake.store, &r.run_id).await.unwrap();
    assert_eq!(stored.catalog, r.catalog);

    // The table the catalog is given for the partitioned dataset: Hive types, the partition
    // key out of the columns, one partition per folder, the writing run and its rows.
    let d = lake::core::publish::list_datasets(&*lake.store)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.prefix == "trusted/people")
        .unwrap();
    let m = lake::core::publish::read_manifest(&*lake.store, "trusted/people")
        .await
        .unwrap()
        .unwrap();
    let t = lake.catalog_table(&d, &m).await.unwrap();
    assert_eq!(t.name, "trusted_people");
    assert_eq!(t.database, "people");
    let cols: Vec<(&str, &str)> = t
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.hive_type.as_str()))
        .collect();
    assert_eq!(cols, [("name", "string"), ("age", "int")]);
    assert_eq!(t.partition_keys, ["city"]);
    let parts: Vec<(Vec<String>, bool)> = t
        .partitions
        .iter()
        .map(|p| {
            (
                p.values.clone(),
                p.location
                    .ends_with(&format!("trusted/people/city={}/", p.values[0])),
            )
        })
        .collect();
    assert_eq!(
        parts,
        [
            (vec!["Lisbon".to_owned()], true),
            (vec!["Oslo".to_owned()], true)
        ]
    );
    assert_eq!(t.parameters["lake.rows"], "3");
    assert_eq!(t.parameters["lake.run_id"], r.run_id);
}

#[tokio::test]
async fn a_failed_registration_fails_the_run_and_keeps_its_data() {
    let dir = setup();
    let mut catalog = MockCatalog::new();
    catalog.expect_register().returning(|_, _| {
        Err(lake::core::Error::catalog(
            "people.refined_by_city",
            "CreateTable: AccessDeniedException: not allowed",
            None,
        ))
    });
    let (lake, r) = run_with(dir.path(), catalog).await;
    assert_eq!(r.status, Status::Failed);
    assert_eq!(r.catalog[0].status, Status::Failed);
    assert!(
        r.catalog[0]
            .error
            .as_deref()
            .unwrap()
            .contains("AccessDeniedException"),
        "{:?}",
        r.catalog[0]
    );
    // The steps succeeded and their output is committed.
    assert!(r.steps.iter().all(|s| s.status == Status::Succeeded));
    assert!(
        lake::core::publish::read_manifest(&*lake.store, "refined/by_city")
            .await
            .unwrap()
            .is_some()
    );
}

/// A catalog whose table of `refined/by_city` would refuse the staged output (a narrowed
/// column), and that records what it was asked.
#[derive(Debug, Default)]
struct Refusing {
    checked: Mutex<Vec<(String, String, Vec<String>)>>,
    registered: Mutex<Vec<String>>,
}

#[lake::core::async_trait]
impl lake::core::catalog::Catalog for Refusing {
    async fn register(
        &self,
        dataset: &lake::core::publish::Dataset,
        _manifest: &lake::core::publish::Manifest,
    ) -> lake::core::Result<CatalogOutcome> {
        self.registered.lock().unwrap().push(dataset.prefix.clone());
        Ok(CatalogOutcome::default())
    }

    async fn check_staged(&self, staged: &lake::core::publish::Dataset) -> lake::core::Result<()> {
        self.checked.lock().unwrap().push((
            format!("{}/{}", staged.zone.as_str(), staged.name),
            staged.prefix.clone(),
            staged.objects.iter().map(|o| o.key.clone()).collect(),
        ));
        Err(lake::core::Error::catalog(
            "people.refined_by_city",
            "column n was bigint and is now int: data written as bigint cannot be read as int",
            None,
        ))
    }

    async fn doctor(&self) -> Vec<lake::core::doctor::Check> {
        Vec::new()
    }
}

/// A narrowed column is refused before the step publishes: the step fails naming the column,
/// and the dataset is not touched (here: never published), so the table and the data agree.
#[tokio::test]
async fn a_table_the_catalog_would_refuse_fails_the_step_before_it_publishes() {
    let dir = setup();
    let lake = Lake::open(dir.path().join("lake.toml"), None)
        .await
        .unwrap();
    let mut cx = lake.context().await.unwrap();
    let catalog = Arc::new(Refusing::default());
    cx.catalog = Some(Arc::clone(&catalog) as Arc<dyn lake::core::catalog::Catalog>);
    let date = NaiveDate::from_ymd_opt(2024, 3, 1).unwrap();
    let r = run(&cx, &RunOptions::new(date)).await.unwrap();
    assert_eq!(r.status, Status::Failed);
    let by_city = r.steps.iter().find(|s| s.name == "by_city").unwrap();
    assert_eq!(by_city.status, Status::Failed);
    let err = by_city.error.as_deref().unwrap();
    assert!(err.contains("column n was bigint and is now int"), "{err}");
    assert!(err.contains("refined/by_city was left as it was"), "{err}");
    // Only the dataset [catalog] tables names was checked, from its staging folder.
    let checked = catalog.checked.lock().unwrap().clone();
    assert_eq!(checked.len(), 1, "{checked:?}");
    let (dataset, prefix, objects) = &checked[0];
    assert_eq!(dataset, "refined/by_city");
    assert!(prefix.starts_with("_lake/staging/"), "{prefix}");
    assert!(
        !objects.is_empty()
            && objects
                .iter()
                .all(|k| k.starts_with(prefix.as_str()) && k.ends_with(".parquet")),
        "{objects:?}"
    );
    assert!(
        lake::core::publish::read_manifest(&*lake.store, "refined/by_city")
            .await
            .unwrap()
            .is_none(),
        "nothing was published"
    );
    assert!(catalog.registered.lock().unwrap().is_empty());
    // The step before it, whose dataset has no table, published.
    assert!(
        lake::core::publish::read_manifest(&*lake.store, "trusted/people")
            .await
            .unwrap()
            .is_some()
    );
}
