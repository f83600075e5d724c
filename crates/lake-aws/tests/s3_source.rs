//! `kind = "s3"` against a real S3 API (moto's server, started by `.ci/run`): a new object
//! lands, an unchanged one does not, a changed one lands again; keys outside the pattern
//! never land; `lake iam-policy` grants exactly the bucket and prefix.

mod common;

use std::sync::Arc;

use lake::core::DynZoneStore;
use lake::core::chrono::NaiveDate;
use lake::core::config::ConfigFile;
use lake::core::publish::{self, Landed};
use lake::core::source::Window;
use lake::core::zone::{Key, ZoneStoreExt};
use lake::local::LocalZoneStore;
use lake_aws::{S3Source, S3SourceSpec};

const TOML: &str = r#"[lake]
name = "drops"
root = "s3://lake-bucket/lake"

[sources.drops]
kind = "s3"
url = "s3://partner-bucket/exports/*.csv.gz"
"#;

fn spec() -> S3SourceSpec {
    let file = ConfigFile::parse("lake.toml", "/tmp".into(), TOML.to_owned()).unwrap();
    let p = file.pipeline(None, &lake::kinds()).unwrap();
    p.sources["drops"]
        .config
        .downcast::<S3SourceSpec>()
        .expect("an s3 source")
        .clone()
}

fn day(d: u32) -> Window {
    Window::day(NaiveDate::from_ymd_opt(2024, 5, d).unwrap())
}

/// Land `window`; the names and bodies the window's manifest commits.
async fn land(src: &S3Source, lake: &DynZoneStore, window: &Window) -> Vec<(String, String)> {
    let landed = publish::land(lake, src, window, "run-1").await.unwrap();
    let manifest = match landed {
        Landed::Fetched(m) | Landed::AlreadyComplete(m) | Landed::Duplicate(m) => m,
    };
    let mut out = Vec::new();
    for o in &manifest.objects {
        let body = lake
            .get_bytes(&Key::new(o.key.clone()).unwrap())
            .await
            .unwrap();
        let name = o.key.rsplit('/').next().unwrap().to_owned();
        assert!(
            o.origin.as_deref().is_some_and(
                |s| s.starts_with("s3://partner-bucket/exports/") && s.contains("#etag=")
            ),
            "{o:?}"
        );
        out.push((name, String::from_utf8(body.to_vec()).unwrap()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_and_changed_objects_land_once_each() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let _serial = common::SERIAL.lock().await;
    let bucket = common::fresh_store(&endpoint, "partner-bucket").await;
    let client = bucket.client().clone();
    let put = |key: &'static str, body: &'static str| {
        let client = client.clone();
        async move {
            client
                .put_object()
                .bucket("partner-bucket")
                .key(key)
                .body(body.as_bytes().to_vec().into())
                .send()
                .await
                .unwrap();
        }
    };
    put("exports/a.csv.gz", "a, first version").await;
    put("exports/notes.txt", "not matched").await;
    put("exports/sub/deep.csv.gz", "not in the pattern's folder").await;
    put("elsewhere/b.csv.gz", "outside the prefix").await;

    let lake: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let src = S3Source::new("drops", spec(), client.clone(), Arc::clone(&lake));

    assert_eq!(
        land(&src, &lake, &day(1)).await,
        [("a.csv.gz".to_owned(), "a, first version".to_owned())]
    );
    // Nothing new: the next window lands nothing.
    assert_eq!(land(&src, &lake, &day(2)).await, []);
    // A changed object and a new one land; the first window keeps the first version.
    put("exports/a.csv.gz", "a, second version").await;
    put("exports/c.csv.gz", "c").await;
    assert_eq!(
        land(&src, &lake, &day(3)).await,
        [
            ("a.csv.gz".to_owned(), "a, second version".to_owned()),
            ("c.csv.gz".to_owned(), "c".to_owned())
        ]
    );
    assert_eq!(
        land(&src, &lake, &day(1)).await,
        [("a.csv.gz".to_owned(), "a, first version".to_owned())],
        "a complete window is never fetched again"
    );
    assert_eq!(land(&src, &lake, &day(4)).await, []);
}

#[tokio::test]
async fn iam_policy_grants_listing_and_reading_of_the_prefix_only() {
    let file = ConfigFile::parse("lake.toml", "/tmp".into(), TOML.to_owned()).unwrap();
    let p = file.pipeline(None, &lake::kinds()).unwrap();
    let policy = lake::aws::iam_policy(&p).unwrap();
    let statements = policy["Statement"].as_array().unwrap();
    let list = statements
        .iter()
        .find(|s| s["Resource"] == "arn:aws:s3:::partner-bucket")
        .expect("a listing statement on the source's bucket");
    assert_eq!(list["Action"], "s3:ListBucket");
    assert_eq!(list["Condition"]["StringLike"]["s3:prefix"][0], "exports/*");
    let read = statements
        .iter()
        .find(|s| s["Resource"] == "arn:aws:s3:::partner-bucket/exports/*")
        .expect("a read statement on the source's prefix");
    assert_eq!(read["Action"], "s3:GetObject");
    assert!(
        !statements
            .iter()
            .any(|s| s["Resource"].to_string().contains("partner-bucket/*")),
        "nothing wider than the prefix"
    );
}

#[test]
fn s3_source_keys_are_checked_at_their_lines() {
    let text = "[lake]\nname = \"x\"\n\n[sources.a]\nkind = \"s3\"\nurl = \"https://b/x\"\n\n[sources.b]\nkind = \"s3\"\n\n[sources.c]\nkind = \"s3\"\nurl = \"s3://bkt/x/\"\nbucket = \"y\"\n";
    let d = lake_testing::config::diagnostics(text, &lake::kinds());
    lake_testing::config::expect_each(
        &d,
        &[
            ("sources.a.url", 6, "not an s3:// URL"),
            ("sources.b", 8, "needs `url`"),
            ("sources.c.bucket", 14, "unknown field"),
        ],
    );
}
