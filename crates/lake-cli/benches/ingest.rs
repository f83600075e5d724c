//! Ingest throughput, in two parts, each against a plain tool in the same run:
//!
//! 1. One large HTTP object: `lake run` (an http source streamed into a filesystem zone,
//!    SHA-256 on the way) against `curl -o` of the same URL. `LAKE_BENCH_BYTES` sets the size
//!    (default 1 GiB). The server is a thread of this bench on 127.0.0.1 that sends a repeated
//!    1 MiB block with a Content-Length.
//! 2. Many small files from a glob: `lake ingest` of `LAKE_BENCH_FILES` (default 1000) CSV
//!    files of about 2 KiB into one window, against `cp -r` of the folder; files per second.
//!
//! ```sh
//! cargo bench -p lake-cli --bench ingest
//! ```
//!
//! Wall time and peak RSS come from GNU time (`/usr/bin/time -f "%e %M"`) around each process.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Command;

use lake_testing::measure;

fn serve(size: u64) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/big.bin", listener.local_addr().unwrap());
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
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
    http_object();
    small_files();
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
    let (wall, rss) = timed(
        Command::new(env!("CARGO_BIN_EXE_lake")).args(["-q", "ingest", "--date", "2024-01-01"]),
        dir,
    );
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
fn timed(cmd: &mut Command, dir: &Path) -> (f64, u64) {
    let m = measure::timed(cmd.current_dir(dir));
    (m.wall, m.rss_kib)
}

fn http_object() {
    let size: u64 = std::env::var("LAKE_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let url = serve(size);
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
    println!("http ingest: {mib:.0} MiB from 127.0.0.1 into a filesystem zone");
    let (wall, rss) = timed(
        Command::new(env!("CARGO_BIN_EXE_lake")).args(["-q", "run", "--date", "2024-01-01"]),
        dir,
    );
    let landed = dir.join("lake/raw/big/ingest_date=2024-01-01/big.bin");
    assert_eq!(
        std::fs::metadata(&landed).unwrap().len(),
        size,
        "landed whole"
    );
    println!(
        "  lake run   {wall:>6.2} s  {:>7.0} MB/s  peak RSS {:>6.1} MiB",
        size as f64 / 1e6 / wall,
        rss as f64 / 1024.0
    );
    std::fs::remove_file(&landed).unwrap();
    if Command::new("curl").arg("--version").output().is_ok() {
        let (wall, rss) = timed(
            Command::new("curl").args(["-s", "-o", "curl.bin", &url]),
            dir,
        );
        println!(
            "  curl -o    {wall:>6.2} s  {:>7.0} MB/s  peak RSS {:>6.1} MiB",
            size as f64 / 1e6 / wall,
            rss as f64 / 1024.0
        );
    } else {
        println!("  curl       skipped: not installed");
    }
}
