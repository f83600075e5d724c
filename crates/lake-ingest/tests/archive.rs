//! `extract = true`: zip, tar.gz and gz archives unpacked beside the archive, member filters,
//! and the refusals (zip-slip, bombs, size and member limits) that leave nothing behind.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use lake_core::DynZoneStore;
use lake_core::chrono::NaiveDate;
use lake_core::config::ConfigFile;
use lake_core::publish::{self, Landed};
use lake_core::source::Window;
use lake_core::zone::{Key, ZoneStoreExt};
use lake_local::LocalZoneStore;

fn kinds() -> lake_core::kinds::Kinds {
    lake_testing::bare().source(lake_ingest::FileKind)
}

const CREDIT: &[u8] = include_bytes!("../../../examples/credit/data/german_credit_data.csv");

fn day() -> Window {
    Window::day(NaiveDate::from_ymd_opt(2024, 3, 1).unwrap())
}

/// A zip of `(name, bytes)` members, deflated.
fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn gz_of(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn tar_gz_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in members {
        let mut h = tar::Header::new_old();
        // The name's bytes as given: tar's own setters refuse `..`, as a hostile archive would not.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, *bytes).unwrap();
    }
    gz_of(&b.into_inner().unwrap())
}

/// Land `file` (written into a fresh folder) through a file source with `extra` keys.
async fn land(
    file: &str,
    bytes: &[u8],
    extra: &str,
) -> (Arc<DynZoneStore>, lake_core::Result<Landed>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(file), bytes).unwrap();
    let text = format!(
        "[lake]\nname = \"t\"\n[sources.credit]\nkind = \"file\"\npath = \"{file}\"\n{extra}\n"
    );
    let cfg = ConfigFile::parse("lake.toml", dir.path().to_path_buf(), text).unwrap();
    let p = cfg.pipeline(None, &kinds()).unwrap();
    let store: Arc<DynZoneStore> = Arc::new(LocalZoneStore::memory());
    let spec = &p.sources["credit"];
    let env = lake_core::backend::BackendEnv {
        pipeline: Arc::new(p.clone()),
        store: Arc::clone(&store),
        embedded: None,
        extensions: Default::default(),
    };
    let mut source = spec.config.open(spec, &env).await.unwrap();
    if let Some(x) = &spec.extract {
        source = Arc::new(lake_ingest::Extracting::new(source, x.clone()).unwrap());
    }
    let sources = std::collections::BTreeMap::from([("credit".to_owned(), source)]);
    let landed = publish::land(&*store, sources["credit"].as_ref(), &day(), "run-1").await;
    (store, landed)
}

fn keys(landed: &Landed) -> Vec<String> {
    let Landed::Fetched(m) = landed else {
        panic!("expected a fetch: {landed:?}")
    };
    m.objects
        .iter()
        .map(|o| {
            o.key
                .trim_start_matches("raw/credit/ingest_date=2024-03-01/")
                .to_owned()
        })
        .collect()
}

async fn get(store: &DynZoneStore, name: &str) -> Vec<u8> {
    let k = Key::new(format!("raw/credit/ingest_date=2024-03-01/{name}")).unwrap();
    store.get_bytes(&k).await.unwrap().to_vec()
}

/// A refused window leaves nothing: no manifest, no object, no staging.
async fn assert_nothing_landed(store: &DynZoneStore) {
    let all = store.list("").await.unwrap();
    assert!(all.is_empty(), "{all:?}");
}

#[tokio::test]
async fn zip_members_land_beside_the_archive_kept_as_fetched() {
    let zip = zip_of(&[
        ("german_credit_data.csv", CREDIT),
        ("docs/readme.txt", b"about"),
        ("__MACOSX/._german_credit_data.csv", b"junk"),
        ("notes.md", b"skip me"),
    ]);
    let (store, landed) = land(
        "german-credit.zip",
        &zip,
        "extract = true\nmembers = [\"*.csv\", \"docs/*\"]",
    )
    .await;
    let landed = landed.unwrap();
    assert_eq!(
        keys(&landed),
        [
            "german-credit.zip",
            "german_credit_data.csv",
            "docs/readme.txt"
        ]
    );
    assert_eq!(get(&store, "german-credit.zip").await, zip);
    assert_eq!(get(&store, "german_credit_data.csv").await, CREDIT);
    assert_eq!(get(&store, "docs/readme.txt").await, b"about");
    let Landed::Fetched(m) = &landed else {
        unreachable!()
    };
    let member = &m.objects[1];
    assert_eq!(member.size, CREDIT.len() as u64);
    assert!(
        member
            .origin
            .as_deref()
            .unwrap()
            .ends_with("german-credit.zip!german_credit_data.csv"),
        "{member:?}"
    );
}

#[tokio::test]
async fn tar_gz_and_gz_are_unpacked() {
    let tgz = tar_gz_of(&[("data/a.csv", b"x\n1\n"), ("data/b.csv", b"x\n2\n")]);
    let (store, landed) = land("batch.tar.gz", &tgz, "extract = true").await;
    assert_eq!(
        keys(&landed.unwrap()),
        ["batch.tar.gz", "data/a.csv", "data/b.csv"]
    );
    assert_eq!(get(&store, "data/b.csv").await, b"x\n2\n");

    let (store, landed) = land("credit.csv.gz", &gz_of(CREDIT), "extract = true").await;
    assert_eq!(keys(&landed.unwrap()), ["credit.csv.gz", "credit.csv"]);
    assert_eq!(get(&store, "credit.csv").await, CREDIT);
}

#[tokio::test]
async fn without_extract_an_archive_lands_as_is() {
    let zip = zip_of(&[("a.csv", b"x\n1\n")]);
    let (_, landed) = land("a.zip", &zip, "").await;
    assert_eq!(keys(&landed.unwrap()), ["a.zip"]);
}

#[tokio::test]
async fn zip_slip_is_refused_and_nothing_lands() {
    for evil in ["../../outside.csv", "/etc/cron.d/x", "ok/../../x.csv"] {
        let zip = zip_of(&[("fine.csv", b"x\n1\n"), (evil, b"pwned")]);
        let (store, landed) = land("evil.zip", &zip, "extract = true").await;
        let e = landed.unwrap_err().to_string();
        assert!(
            e.contains("source \"credit\": archive evil.zip")
                && e.contains("zip-slip")
                && e.contains("nothing of window 2024-03-01 is stored"),
            "{e}"
        );
        assert_nothing_landed(&store).await;
    }
    let tgz = tar_gz_of(&[("../x.csv", b"pwned")]);
    let (store, landed) = land("evil.tgz", &tgz, "extract = true").await;
    assert!(landed.unwrap_err().to_string().contains("zip-slip"));
    assert_nothing_landed(&store).await;
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_early() {
    // 16 MiB of zeros packs to about 16 KiB: a ratio near 1000.
    let zeros = vec![0u8; 16 << 20];
    for (file, bytes) in [
        ("bomb.zip", zip_of(&[("zeros.csv", &zeros)])),
        ("bomb.csv.gz", gz_of(&zeros)),
        ("bomb.tar.gz", tar_gz_of(&[("zeros.csv", &zeros)])),
    ] {
        assert!(bytes.len() < 1 << 20);
        let (store, landed) = land(file, &bytes, "extract = true").await;
        let e = landed.unwrap_err().to_string();
        assert!(
            e.contains("max_compression_ratio = 100") && e.contains("decompression bomb"),
            "{file}: {e}"
        );
        assert_nothing_landed(&store).await;
    }
    // A higher limit lets the same archive through.
    let (_, landed) = land(
        "bomb.csv.gz",
        &gz_of(&zeros),
        "extract = true\nmax_compression_ratio = 2000",
    )
    .await;
    assert_eq!(keys(&landed.unwrap()), ["bomb.csv.gz", "bomb.csv"]);
}

#[tokio::test]
async fn size_and_member_limits_are_enforced() {
    let zip = zip_of(&[("german_credit_data.csv", CREDIT)]);
    let (store, landed) = land(
        "c.zip",
        &zip,
        "extract = true\nmax_extracted_bytes = \"10KiB\"",
    )
    .await;
    let e = landed.unwrap_err().to_string();
    assert!(e.contains("more than max_extracted_bytes = 10240"), "{e}");
    assert_nothing_landed(&store).await;

    let many: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("part-{i}.csv"), b"x\n1\n".to_vec()))
        .collect();
    let refs: Vec<(&str, &[u8])> = many
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let (store, landed) = land(
        "many.zip",
        &zip_of(&refs),
        "extract = true\nmax_members = 10",
    )
    .await;
    let e = landed.unwrap_err().to_string();
    assert!(
        e.contains("20 or more entries, more than max_members = 10"),
        "{e}"
    );
    assert_nothing_landed(&store).await;
}

#[test]
fn extract_keys_are_validated() {
    let check = |extra: &str| {
        let text = format!(
            "[lake]\nname = \"t\"\n[sources.credit]\nkind = \"file\"\npath = \"a.zip\"\n{extra}\n"
        );
        ConfigFile::parse("lake.toml", Path::new("/x").into(), text)
            .unwrap()
            .pipeline(None, &kinds())
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let e = check("members = [\"*.csv\"]").unwrap_err();
    assert!(
        e.contains("lake.toml:6") && e.contains("`members` applies only with extract = true"),
        "{e}"
    );
    let e = check("extract = true\nmax_compression_ratio = 0").unwrap_err();
    assert!(e.contains("sources.credit.max_compression_ratio"), "{e}");
    let e = check("extract = true\nmax_extracted_bytes = \"lots\"").unwrap_err();
    assert!(e.contains("sources.credit.max_extracted_bytes"), "{e}");
    assert!(check("extract = true\nmembers = \"*.csv\"\nmax_members = 5").is_ok());
}
