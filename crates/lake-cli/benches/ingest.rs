//! Ingest throughput, in two parts, each against a plain tool in the same run:
//!
//! 1. One large HTTP object: `lake run` (an http source streamed into a filesystem zone,
//!    SHA-256 on the way) against `curl -o` of the same URL, `LAKE_BENCH_RUNS` (default 3)
//!    runs of each taken in turn, medians reported; each lake run is checked first (the
//!    window's manifest holds the SHA-256 of what was served). `LAKE_BENCH_BYTES` sets the
//!    size (default 1 GiB), `LAKE_BIN` another `lake` to measure (such as the `dist` build).
//!    The server is a thread of this bench on 127.0.0.1 that sends a repeated 1 MiB block
//!    with a Content-Length.
//! 2. Many small files from a glob: `lake ingest` of `LAKE_BENCH_FILES` (default 1000) CSV
//!    files of about 2 KiB into one window, against `cp -r` of the folder; files per second.
//! 3. With `AWS_ENDPOINT_URL` set (a local S3 server): `lake ingest` of a file source into an
//!    S3 root, as a user runs it (SHA-256 and manifest included), against `s5cmd cp` and
//!    `aws s3 cp` of the same files (`S5CMD` and `AWS_CLI` name them, else PATH): one file of
//!    `LAKE_BENCH_S3_BYTES` (default 1 GiB), and `LAKE_BENCH_S3_FILES` (default 1000) files of
//!    10 KiB. The bucket `lake-bench-ingest` is made with s5cmd.
//!
//! ```sh
//! cargo bench -p lake-cli --bench ingest
//! AWS_ENDPOINT_URL=http://127.0.0.1:5055 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
//!   AWS_REGION=us-east-1 S5CMD=… AWS_CLI=… cargo bench -p lake-cli --bench ingest -- s3
//! ```
//!
//! 4. A paged API (`pages`): `lake ingest` of a cursor-paged http source of 10, 100 and 1,000
//!    pages (`LAKE_BENCH_PAGES`, comma-separated) of about 4 KiB of JSON records each, against
//!    one `curl` process fetching the same page URLs in turn (`curl -K`, a file of `url`/
//!    `output` lines: the URLs are known here, lake finds each from the page before); pages
//!    per second, and peak RSS as the pages grow.
//!
//! 5. With `AWS_ENDPOINT_URL` set (`s3src`): an S3 *source*: objects already in a bucket landed
//!    by `lake ingest` of a `kind = "s3"` source into a filesystem root, against `s5cmd cp`
//!    from the bucket to a folder; the same one large and many small objects as part 3.
//!
//! Arguments choose the parts: `http`, `files`, `s3`, `pages`, `s3src` (default: all). `LAKE_BIN` names the
//! `lake` every part measures (default: this bench's own build).
//!
//! Wall time and peak RSS come from GNU time (`/usr/bin/time -f "%e %M"`) around each process.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;

use lake_testing::measure::{self, lake_bin, median, setting};

/// The 1 MiB block [`serve`] repeats.
fn block() -> Vec<u8> {
    (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn serve(size: u64) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/big.bin", listener.local_addr().unwrap());
    let block = block();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let block = block.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
                );
                let mut left = size;
                while left > 0 {
                    let n = left.min(block.len() as u64) as usize;
                    if conn.write_all(&block[..n]).is_err() {
                        return;
                    }
                    left -= n as u64;
                }
            });
        }
    });
    url
}

fn main() {
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |p: &str| parts.is_empty() || parts.iter().any(|a| a == p);
    if want("http") {
        http_object();
    }
    if want("files") {
        small_files();
    }
    if want("s3") {
        s3_ingest();
    }
    if want("pages") {
        paged_api();
    }
    if want("s3src") {
        s3_source();
    }
}

/// A page of the bench's API: 40 records of about 100 bytes, and the next cursor (none after
/// page `pages`).
fn page_body(n: usize, pages: usize) -> String {
    let records: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"id":{},"customer":"c{:06}","amount":{}.{:02},"status":"shipped","note":"order {} of page {n}"}}"#,
                n * 40 + i,
                (n * 7919 + i * 104_729) % 1_000_000,
                (n * 31 + i * 17) % 1000,
                i % 100,
                i
            )
        })
        .collect();
    let next = if n < pages {
        format!(r#""c{}""#, n + 1)
    } else {
        "null".into()
    };
    format!(
        r#"{{"data":[{}],"meta":{{"next":{next}}}}}"#,
        records.join(",")
    )
}

/// Serves `/orders?cursor=cN` (page 1 without a cursor) of `pages` pages.
fn serve_pages(pages: usize) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut first = String::new();
                let _ = reader.read_line(&mut first);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let n = first
                    .split_once("cursor=c")
                    .and_then(|(_, rest)| rest.split([' ', '&']).next()?.parse().ok())
                    .unwrap_or(1);
                let body = page_body(n, pages);
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    url
}

/// `lake ingest` of a paged API against curl fetching the same pages, at several page counts.
fn paged_api() {
    let counts: Vec<usize> = std::env::var("LAKE_BENCH_PAGES")
        .unwrap_or_else(|_| "10,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let runs = setting("LAKE_BENCH_RUNS", 3);
    let bin = lake_bin(env!("CARGO_BIN_EXE_lake"));
    println!("paged API: cursor pages of 40 records (~4 KiB), {runs} runs each, in turn");
    println!("| pages | lake ingest | pages/s | peak RSS | curl -K | pages/s | RSS | wall ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for pages in counts {
        let url = serve_pages(pages);
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("lake.toml"),
            format!(
                "[lake]\nname = \"pages\"\nroot = \"lake\"\n\n[sources.orders]\nkind = \"http\"\nurl = \"{url}/orders\"\npaginate = {{ kind = \"cursor\", cursor_path = \"meta.next\" }}\nrecords_path = \"data\"\n"
            ),
        )
        .unwrap();
        let mut config = String::new();
        for n in 1..=pages {
            let q = if n == 1 {
                String::new()
            } else {
                format!("?cursor=c{n}")
            };
            config.push_str(&format!(
                "url = \"{url}/orders{q}\"\noutput = \"curl/p{n:05}.json\"\n"
            ));
        }
        std::fs::write(tmp.path().join("curl.cfg"), config).unwrap();
        let (mut lake_m, mut curl_m) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let _ = std::fs::remove_dir_all(tmp.path().join("lake"));
            let _ = std::fs::remove_dir_all(tmp.path().join("curl"));
            lake_m.push(measure::timed(
                Command::new(&bin)
                    .current_dir(tmp.path())
                    .args(["ingest", "orders", "--date", "2024-05-01"])
                    .env_remove("RUST_LOG"),
            ));
            let landed =
                std::fs::read_dir(tmp.path().join("lake/raw/orders/ingest_date=2024-05-01"))
                    .unwrap()
                    .count();
            assert_eq!(landed, pages + 1, "every page and the manifest");
            curl_m.push(measure::timed(
                Command::new("curl").current_dir(tmp.path()).args([
                    "-sS",
                    "--fail",
                    "--create-dirs",
                    "-K",
                    "curl.cfg",
                ]),
            ));
        }
        let (l, c) = (median(lake_m), median(curl_m));
        println!(
            "| {pages} | {:.2} s | {:.0} | {:.1} MiB | {:.2} s | {:.0} | {:.1} MiB | {:.2}× |",
            l.wall,
            pages as f64 / l.wall,
            l.rss_mib(),
            c.wall,
            pages as f64 / c.wall,
            c.rss_mib(),
            l.wall / c.wall
        );
    }
}

const BUCKET: &str = "lake-bench-ingest";

/// `lake ingest` into an S3 root against s5cmd and aws s3 cp, for one large file and many
/// small ones.
fn s3_ingest() {
    let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") else {
        println!("s3 ingest: skipped (set AWS_ENDPOINT_URL to a local S3 server)");
        return;
    };
    let s5cmd = std::env::var("S5CMD").unwrap_or_else(|_| "s5cmd".into());
    let aws = std::env::var("AWS_CLI").unwrap_or_else(|_| "aws".into());
    let have = |tool: &str, arg: &str| {
        Command::new(tool)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let (have_s5, have_aws) = (have(&s5cmd, "version"), have(&aws, "--version"));
    assert!(
        have_s5,
        "s3 ingest needs s5cmd (S5CMD=…) to make its bucket"
    );
    let _ = Command::new(&s5cmd)
        .args(["--endpoint-url", &endpoint, "mb", &format!("s3://{BUCKET}")])
        .output();
    let bytes: u64 = std::env::var("LAKE_BENCH_S3_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let files: usize = std::env::var("LAKE_BENCH_S3_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_s3_files(dir, bytes, files);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (label, glob, count, size) in [
        ("one large file", "big/*.bin", 1usize, bytes),
        ("many small files", "small/*.csv", files, 0),
    ] {
        let root = format!("s3://{BUCKET}/lake-{stamp}-{}", count);
        std::fs::write(
            dir.join("lake.toml"),
            format!(
                "[lake]\nname = \"bench\"\nroot = \"{root}\"\n[sources.s]\nkind = \"file\"\npath = \"{glob}\"\n"
            ),
        )
        .unwrap();
        let total: u64 = if size > 0 {
            size
        } else {
            std::fs::read_dir(dir.join("small"))
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum()
        };
        println!(
            "s3 ingest, {label}: {count} × {:.1} MiB into {endpoint}",
            total as f64 / count as f64 / (1 << 20) as f64
        );
        let line = |tool: &str, (wall, rss): (f64, u64)| {
            println!(
                "  {tool:<12} {wall:>7.2} s  {:>7.1} MB/s  {:>7.0} files/s  peak RSS {:>6.1} MiB",
                total as f64 / wall / 1e6,
                count as f64 / wall,
                rss as f64 / 1024.0
            );
        };
        let lake = timed(&mut lake_ingest(), dir);
        // Checked before it is reported: the manifest lists every file.
        let out = Command::new(&s5cmd)
            .args([
                "--endpoint-url",
                &endpoint,
                "cat",
                &format!("{root}/raw/s/ingest_date=2024-01-01/_manifest.json"),
            ])
            .output()
            .unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("no manifest after lake ingest: {e}"));
        let listed = manifest["objects"].as_array().map_or(0, Vec::len);
        let landed: u64 = manifest["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["size"].as_u64())
            .sum();
        assert_eq!(
            (listed, landed),
            (count, total),
            "lake ingest landed everything"
        );
        line("lake ingest", lake);
        let src = if count == 1 { "big/big.bin" } else { "small/*" };
        let s5 = timed(
            Command::new(&s5cmd).args([
                "--endpoint-url",
                &endpoint,
                "cp",
                src,
                &format!("s3://{BUCKET}/s5-{stamp}-{count}/"),
            ]),
            dir,
        );
        line("s5cmd cp", s5);
        if have_aws {
            let mut cmd = Command::new(&aws);
            cmd.args(["--endpoint-url", &endpoint, "s3", "cp", "--quiet"]);
            if count == 1 {
                cmd.args([
                    "big/big.bin",
                    &format!("s3://{BUCKET}/aws-{stamp}-1/big.bin"),
                ]);
            } else {
                cmd.args([
                    "--recursive",
                    "small",
                    &format!("s3://{BUCKET}/aws-{stamp}-{count}/"),
                ]);
            }
            line("aws s3 cp", timed(&mut cmd, dir));
        } else {
            println!("  aws s3 cp    skipped: no awscli (AWS_CLI=…)");
        }
    }
}

/// One large file of incompressible-looking bytes (`big/big.bin`, `bytes` long) and `files`
/// CSV files of 10 KiB (`small/part-NNNNN.csv`) under `dir`.
fn make_s3_files(dir: &Path, bytes: u64, files: usize) {
    std::fs::create_dir_all(dir.join("big")).unwrap();
    {
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(dir.join("big/big.bin")).unwrap());
        let block: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let mut left = bytes;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            f.write_all(&block[..n]).unwrap();
            left -= n as u64;
        }
    }
    std::fs::create_dir_all(dir.join("small")).unwrap();
    for i in 0..files {
        let row = format!("{i},{}\n", "x".repeat(60));
        std::fs::write(
            dir.join(format!("small/part-{i:05}.csv")),
            format!("a,b\n{}", row.repeat(10240 / row.len())),
        )
        .unwrap();
    }
}

/// The bucket side of an `s3` source: objects already in a bucket (put there with s5cmd) landed
/// by `lake ingest` of a `kind = "s3"` source into a filesystem root (listing, ETags, SHA-256,
/// manifest), against `s5cmd cp 's3://…/*' dir/` of the same objects.
fn s3_source() {
    let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") else {
        println!("s3 source: skipped (set AWS_ENDPOINT_URL to a local S3 server)");
        return;
    };
    let s5cmd = std::env::var("S5CMD").unwrap_or_else(|_| "s5cmd".into());
    let s5 = |args: &[&str], dir: &Path| {
        let o = Command::new(&s5cmd)
            .arg("--endpoint-url")
            .arg(&endpoint)
            .args(args)
            .current_dir(dir)
            .output()
            .expect("s3 source needs s5cmd (S5CMD=…)");
        assert!(
            o.status.success(),
            "s5cmd {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let _ = Command::new(&s5cmd)
        .args(["--endpoint-url", &endpoint, "mb", &format!("s3://{BUCKET}")])
        .output();
    let bytes = setting("LAKE_BENCH_S3_BYTES", 1 << 30) as u64;
    let files = setting("LAKE_BENCH_S3_FILES", 1000);
    make_s3_files(dir, bytes, files);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let prefix = format!("s3://{BUCKET}/src-{stamp}");
    s5(&["cp", "big/big.bin", &format!("{prefix}/big/")], dir);
    s5(&["cp", "small/*", &format!("{prefix}/small/")], dir);
    for (label, pattern, count) in [
        ("one large object", "big/*.bin", 1usize),
        ("many small objects", "small/*.csv", files),
    ] {
        let work = dir.join(format!("lake-{count}"));
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(
            work.join("lake.toml"),
            format!(
                "[lake]\nname = \"bench\"\nroot = \"lake\"\n[sources.s]\nkind = \"s3\"\nurl = \"{prefix}/{pattern}\"\n"
            ),
        )
        .unwrap();
        println!("s3 source, {label}: {count} objects from {endpoint}");
        let lake = timed(&mut lake_ingest(), &work);
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(work.join("lake/raw/s/ingest_date=2024-01-01/_manifest.json"))
                .expect("a manifest after lake ingest"),
        )
        .unwrap();
        let objects = manifest["objects"].as_array().expect("objects");
        let landed: u64 = objects.iter().filter_map(|o| o["size"].as_u64()).sum();
        assert_eq!(objects.len(), count, "lake ingest landed every object");
        let out = dir.join(format!("s5-{count}"));
        let s5cmd_run = timed(
            Command::new(&s5cmd).args([
                "--endpoint-url",
                &endpoint,
                "cp",
                &format!("{prefix}/{pattern}"),
                &format!("{}/", out.display()),
            ]),
            dir,
        );
        let copied: u64 = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(landed, copied, "both fetched the same bytes");
        let line = |tool: &str, (wall, rss): (f64, u64)| {
            println!(
                "  {tool:<12} {wall:>7.2} s  {:>7.1} MB/s  {:>7.0} objects/s  peak RSS {:>6.1} MiB",
                landed as f64 / wall / 1e6,
                count as f64 / wall,
                rss as f64 / 1024.0
            );
        };
        line("lake ingest", lake);
        line("s5cmd cp", s5cmd_run);
        println!("  ratio (wall) {:.2}×", lake.0 / s5cmd_run.0);
    }
}

fn small_files() {
    let n: usize = std::env::var("LAKE_BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir(dir.join("data")).unwrap();
    for i in 0..n {
        let rows: String = (0..64)
            .map(|r| format!("{i},{r},{}\n", i * 7919 + r))
            .collect();
        std::fs::write(
            dir.join(format!("data/part-{i:05}.csv")),
            format!("a,b,c\n{rows}"),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("lake.toml"),
        "[lake]\nname = \"bench\"\n[sources.many]\nkind = \"file\"\npath = \"data/*.csv\"\n",
    )
    .unwrap();
    println!("file ingest: {n} small files from a glob into a filesystem zone");
    let (wall, rss) = timed(&mut lake_ingest(), dir);
    let landed = std::fs::read_dir(dir.join("lake/raw/many/ingest_date=2024-01-01"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".csv"))
        })
        .count();
    assert_eq!(landed, n, "every file landed");
    println!(
        "  lake ingest {wall:>6.2} s  {:>7.0} files/s  peak RSS {:>6.1} MiB",
        n as f64 / wall,
        rss as f64 / 1024.0
    );
    let (wall, rss) = timed(Command::new("cp").args(["-r", "data", "copy"]), dir);
    println!(
        "  cp -r       {wall:>6.2} s  {:>7.0} files/s  peak RSS {:>6.1} MiB",
        n as f64 / wall,
        rss as f64 / 1024.0
    );
}

/// Wall seconds and peak RSS (KiB) of `cmd` run in `dir`.
/// `lake -q ingest --date 2024-01-01` of the measured binary (`LAKE_BIN`, else this bench's).
fn lake_ingest() -> Command {
    let mut c = Command::new(lake_bin(env!("CARGO_BIN_EXE_lake")));
    c.args(["-q", "ingest", "--date", "2024-01-01"]);
    c
}

fn timed(cmd: &mut Command, dir: &Path) -> (f64, u64) {
    let m = measure::timed(cmd.current_dir(dir));
    (m.wall, m.rss_kib)
}

fn http_object() {
    let size = setting("LAKE_BENCH_BYTES", 1 << 30) as u64;
    let runs = setting("LAKE_BENCH_RUNS", 3).max(1);
    let url = serve(size);
    let want = served_sha256(size);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("lake.toml"),
        format!(
            "[lake]\nname = \"bench\"\n[sources.big]\nkind = \"http\"\nurl = \"{url}\"\n\
             [steps.touch]\nkind = \"command\"\ncommand = [\"true\"]\ninputs = [\"raw/big\"]\n"
        ),
    )
    .unwrap();
    let mib = size as f64 / (1 << 20) as f64;
    let lake = lake_bin(env!("CARGO_BIN_EXE_lake"));
    let curl = Command::new("curl").arg("--version").output().is_ok();
    println!(
        "http ingest: {mib:.0} MiB from 127.0.0.1 into a filesystem zone, {runs} runs in turn \
         ({})",
        lake.display()
    );
    let window = dir.join("lake/raw/big/ingest_date=2024-01-01");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(dir.join("lake"));
        ours.push(measure::timed(
            Command::new(&lake)
                .args(["-q", "run", "--date", "2024-01-01"])
                .current_dir(dir),
        ));
        // What landed is what was served: its manifest's SHA-256, and its size on disk.
        let manifest = std::fs::read_to_string(window.join("_manifest.json")).unwrap();
        assert!(
            manifest.contains(&want),
            "the manifest does not hold the served bytes' SHA-256 {want}:\n{manifest}"
        );
        assert_eq!(
            std::fs::metadata(window.join("big.bin")).unwrap().len(),
            size
        );
        if curl {
            theirs.push(measure::timed(
                Command::new("curl")
                    .args(["-s", "-o", "curl.bin", &url])
                    .current_dir(dir),
            ));
            assert_eq!(std::fs::metadata(dir.join("curl.bin")).unwrap().len(), size);
            std::fs::remove_file(dir.join("curl.bin")).unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(dir.join("lake"));
    let line = |who: &str, m: measure::Measure| {
        println!(
            "  {who:<10} {:>6.2} s  {:>7.0} MB/s  peak RSS {:>6.1} MiB  (median)",
            m.wall,
            size as f64 / 1e6 / m.wall,
            m.rss_mib(),
        )
    };
    let walls = |v: &[measure::Measure]| {
        v.iter()
            .map(|m| format!("{:.2}", m.wall))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (ours_all, theirs_all) = (walls(&ours), walls(&theirs));
    let lake_m = median(ours);
    line("lake run", lake_m);
    println!("             runs: {ours_all}");
    if curl {
        let curl_m = median(theirs);
        line("curl -o", curl_m);
        println!("             runs: {theirs_all}");
        println!("  lake ÷ curl: {:.2}× MB/s", curl_m.wall / lake_m.wall);
    } else {
        println!("  curl       skipped: not installed");
    }
}

/// SHA-256 of what [`serve`] sends for `size` bytes.
fn served_sha256(size: u64) -> String {
    use sha2::{Digest, Sha256};
    let block = block();
    let mut h = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        h.update(&block[..n]);
        left -= n as u64;
    }
    hex::encode(h.finalize())
}
