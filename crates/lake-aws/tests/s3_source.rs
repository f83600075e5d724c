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
use lake::core::zone::{Key, ZoneStore, ZoneStoreExt};
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

/// An s3 source that counts the objects it downloaded into files and, with `replace`,
/// replaces one object in the bucket right after listing it: the landing then reads a version
/// the listing did not offer.
#[derive(Debug)]
struct Watched {
    inner: S3Source,
    client: aws_sdk_s3::Client,
    replace: bool,
    downloads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl lake::core::source::Source for Watched {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn objects(
        &self,
        window: &Window,
    ) -> lake::core::Result<Vec<lake::core::source::SourceObject>> {
        let listed = self.inner.objects(window).await?;
        if !self.replace {
            return Ok(listed);
        }
        self.client
            .put_object()
            .bucket("partner-bucket")
            .key("exports/big.csv.gz")
            .body(b"a newer version".to_vec().into())
            .send()
            .await
            .unwrap();
        Ok(listed)
    }
    async fn open(
        &self,
        window: &Window,
        object: &lake::core::source::SourceObject,
    ) -> lake::core::Result<lake::core::zone::ByteStream> {
        self.inner.open(window, object).await
    }
    fn at_once(&self) -> usize {
        self.inner.at_once()
    }
    async fn download(
        &self,
        window: &Window,
        object: &lake::core::source::SourceObject,
        path: &std::path::Path,
    ) -> lake::core::Result<Option<lake::core::zone::Digested>> {
        let done = self.inner.download(window, object, path).await?;
        if done.is_some() {
            self.downloads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(done)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_filesystem_root_objects_are_downloaded_in_parts_at_the_version_listed() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let _serial = common::SERIAL.lock().await;
    let bucket = common::fresh_store(&endpoint, "partner-bucket").await;
    let client = bucket.client().clone();
    // Three download parts (16 MiB each) and a small object beside it.
    let big: Vec<u8> = (0..40u32 << 20).map(|i| (i % 251) as u8).collect();
    for (key, body) in [
        ("exports/big.csv.gz", big.clone()),
        ("exports/small.csv.gz", b"small".to_vec()),
    ] {
        client
            .put_object()
            .bucket("partner-bucket")
            .key(key)
            .body(body.into())
            .send()
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let lake: Arc<DynZoneStore> = Arc::new(LocalZoneStore::filesystem(dir.path()).unwrap());
    let watched = |replace| Watched {
        inner: S3Source::new("drops", spec(), client.clone(), Arc::clone(&lake)),
        client: client.clone(),
        replace,
        downloads: Default::default(),
    };
    let src = watched(false);
    let landed = publish::land(&*lake, &src, &day(1), "run-1").await.unwrap();
    assert_eq!(
        src.downloads.into_inner(),
        2,
        "both objects were downloaded into files, not streamed"
    );
    let Landed::Fetched(manifest) = landed else {
        panic!("fetched: {landed:?}")
    };
    let folder = dir.path().join("raw/drops/ingest_date=2024-05-01");
    assert_eq!(std::fs::read(folder.join("big.csv.gz")).unwrap(), big);
    assert_eq!(
        std::fs::read(folder.join("small.csv.gz")).unwrap(),
        b"small"
    );
    let sizes: Vec<(String, u64)> = manifest
        .objects
        .iter()
        .map(|o| (o.key.rsplit('/').next().unwrap().to_owned(), o.size))
        .collect();
    assert_eq!(
        sizes,
        [("big.csv.gz".into(), 40 << 20), ("small.csv.gz".into(), 5)]
    );
    // What the manifest says is what landed: a reader that hashes finds no mismatch.
    for o in &manifest.objects {
        use futures::TryStreamExt;
        let got = lake.get(&Key::new(o.key.clone()).unwrap()).await.unwrap();
        let (body, digest) = lake::core::zone::hashing(got.body);
        body.try_for_each(|_| async { Ok(()) }).await.unwrap();
        let digest = digest.lock().unwrap().clone().expect("hashed");
        assert_eq!(digest.sha256, o.sha256, "{}", o.key);
    }
    assert!(
        lake_testing::faults::every_file(&dir.path().join("_lake/staging/run-1")).is_empty(),
        "the staged files were moved, not copied"
    );

    // An object replaced after the listing fails its window: nothing of it is committed and
    // no partial file is left where readers of the folder would see it.
    let replaced = watched(true);
    client
        .put_object()
        .bucket("partner-bucket")
        .key("exports/big.csv.gz")
        .body(big[..(20 << 20)].to_vec().into())
        .send()
        .await
        .unwrap();
    let err = publish::land(&*lake, &replaced, &day(2), "run-2")
        .await
        .expect_err("the version listed is gone");
    let text = format!("{err:#}");
    assert!(
        text.contains("s3://partner-bucket/exports/big.csv.gz"),
        "names the object: {text}"
    );
    let second = dir.path().join("raw/drops/ingest_date=2024-05-02");
    assert_eq!(
        lake_testing::faults::every_file(&second),
        Vec::<String>::new(),
        "nothing of day 2 in raw"
    );
}
