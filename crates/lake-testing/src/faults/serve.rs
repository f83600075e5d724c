//! `lake serve` as the world finds it: many clients while a heavy query runs and a republish
//! loops; a page that rebinds its own name to 127.0.0.1; SQL written to take the server down;
//! a flood of silent connections; a signal while a query runs.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Lake, Outcome, Suite, loans_csv, loans_toml};
use crate::serve::Served;

/// `lake serve` on 127.0.0.1, any free port, in `lake`'s folder.
fn start(lake: &Lake<'_>) -> Served {
    Served::start(lake.cmd(&["serve", "--bind", "127.0.0.1:0"]))
}

/// One GET: status and body.
fn get(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    limit: Duration,
) -> Result<(u16, String), String> {
    crate::serve::get(addr, path, headers, limit).map(|r| (r.status, r.body))
}

fn enc(sql: &str) -> String {
    sql.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A lake of `rows` loans, run once, with `[serve]` limits for the experiments; `None` when
/// that failed, recorded in `out` as its one trial.
fn served_lake<'a>(s: &'a Suite, rows: usize, out: &mut Outcome) -> Option<Lake<'a>> {
    match made_lake(s, rows) {
        Ok(l) => Some(l),
        Err(e) => {
            out.trials = 1;
            out.failures.push(e);
            None
        }
    }
}

fn made_lake<'a>(s: &'a Suite, rows: usize) -> Result<Lake<'a>, String> {
    let lake = Lake::new(&s.bin);
    lake.write(
        "lake.toml",
        loans_toml(
            "lake",
            "\n[serve]\nquery_memory = \"256MiB\"\nquery_timeout = \"3s\"\n",
        ),
    );
    lake.write("data/loans.csv", loans_csv(rows, 0));
    lake.ok(&["run", "--date", "2024-01-01"])?;
    Ok(lake)
}

/// A query that runs for ever: a cross join of the loans with themselves, five times (with a
/// filter, so no statistic answers it).
fn cross_join() -> String {
    enc(
        "SELECT count(*) FROM trusted.loans a, trusted.loans b, trusted.loans c, trusted.loans d, trusted.loans e WHERE a.amount + b.amount + c.amount + d.amount + e.amount = -1",
    )
}

const PAGES: &[&str] = &[
    "/",
    "/pipeline",
    "/runs",
    "/datasets",
    "/datasets/trusted/loans",
    "/datasets/refined/summary",
    "/api/version",
];

/// `clients` clients fetch the pages in turn for `secs` seconds while one client keeps a
/// heavy query running in the SQL box and another process republishes with `run --force`:
/// every page answers 200 without an error on it, p99 of the pages' times under 500 ms, and
/// the server's memory stays within bounds.
pub fn serve_load(s: &Suite, clients: usize, secs: u64) -> Outcome {
    let mut out = Outcome::new(
        format!(
            "`lake serve` under {clients} clients while a heavy query runs and a republish loops"
        ),
        "local",
    );
    let Some(lake) = served_lake(s, 20_000, &mut out) else {
        return out;
    };
    let server = start(&lake);
    let stop = Arc::new(AtomicBool::new(false));
    let times = Arc::new(Mutex::new(Vec::<(Duration, &str)>::new()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    std::thread::scope(|scope| {
        // The republish loop.
        let republishes = scope.spawn(|| {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                if lake.ok(&["run", "--force", "--date", "2024-01-01"]).is_ok() {
                    n += 1;
                }
            }
            n
        });
        // The heavy query, again and again.
        let heavy = scope.spawn(|| {
            let mut stopped = 0;
            while !stop.load(Ordering::SeqCst) {
                if let Ok((_, body)) = get(
                    &server.addr,
                    &format!("/query?sql={}", cross_join()),
                    &[],
                    Duration::from_secs(30),
                ) && (body.contains("was stopped") || body.contains("try again"))
                {
                    stopped += 1;
                }
            }
            stopped
        });
        let peak = scope.spawn(|| {
            let mut peak = 0;
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(server.rss_mib());
                std::thread::sleep(Duration::from_millis(100));
            }
            peak
        });
        let start = Instant::now();
        let mut handles = Vec::new();
        for c in 0..clients {
            let (addr, times, failures) = (&server.addr, &times, &failures);
            handles.push(scope.spawn(move || {
                let mut i = c;
                while start.elapsed() < Duration::from_secs(secs) {
                    let page = PAGES[i % PAGES.len()];
                    i += 1;
                    let t = Instant::now();
                    let answered = get(addr, page, &[], Duration::from_secs(30));
                    let took = t.elapsed();
                    times.lock().expect("times").push((took, page));
                    match answered {
                        Ok((200, body)) if !body.contains("class=\"error\"") => {}
                        Ok((status, body)) => failures.lock().expect("failures").push(format!(
                            "{page}: {status}: {}",
                            body.split("class=\"error\"")
                                .nth(1)
                                .unwrap_or(&body)
                                .chars()
                                .take(300)
                                .collect::<String>()
                        )),
                        Err(e) => failures
                            .lock()
                            .expect("failures")
                            .push(format!("{page}: {e}")),
                    }
                }
            }));
        }
        for h in handles {
            let _ = h.join();
        }
        stop.store(true, Ordering::SeqCst);
        let republished = republishes.join().unwrap_or(0);
        let stopped = heavy.join().unwrap_or(0);
        let peak = peak.join().unwrap_or(0);
        let all = times.lock().expect("times").clone();
        let p99_of = |page: Option<&str>| {
            let mut t: Vec<Duration> = all
                .iter()
                .filter(|(_, p)| page.is_none_or(|page| *p == page))
                .map(|(d, _)| *d)
                .collect();
            t.sort();
            let at = |q: f64| {
                t.get(((t.len() as f64 * q) as usize).min(t.len().saturating_sub(1)))
                    .copied()
                    .unwrap_or_default()
            };
            (at(0.5), at(0.99), t.len())
        };
        let (p50, p99, _) = p99_of(None);
        let slowest = PAGES
            .iter()
            .map(|p| (p99_of(Some(p)).1, *p))
            .max()
            .unwrap_or_default();
        let t = all;
        out.trials = t.len();
        out.failures
            .extend(failures.lock().expect("failures").iter().take(20).cloned());
        if p99 > Duration::from_millis(500) {
            out.failures.push(format!(
                "p99 of the pages {} ms (over 500 ms)",
                p99.as_millis()
            ));
        }
        if peak > 1024 {
            out.failures.push(format!("the server reached {peak} MiB"));
        }
        out.notes.push(format!(
            "{} pages in {secs} s: p50 {} ms, p99 {} ms (slowest: {} at p99 {} ms); {republished} republishes, {stopped} heavy queries stopped at the limit; peak RSS {peak} MiB",
            t.len(),
            p50.as_millis(),
            p99.as_millis(),
            slowest.1,
            slowest.0.as_millis()
        ));
    });
    out
}

/// The attacks, one trial each: a DNS-rebinding request, cross-site requests, SQL bombs, a
/// flood of silent connections, and SIGTERM while a query runs.
pub fn serve_attacks(s: &Suite) -> Outcome {
    let mut out = Outcome::new(
        "`lake serve` attacked: DNS rebinding, cross-site requests, SQL bombs, 1,000 silent connections, SIGTERM during a query",
        "local",
    );
    let Some(lake) = served_lake(s, 2_000, &mut out) else {
        return out;
    };
    let server = start(&lake);
    let addr = server.addr.clone();
    let port = addr.rsplit(':').next().unwrap_or_default().to_owned();
    let alive = |what: &str, out: &mut Outcome| match get(
        &addr,
        "/api/version",
        &[],
        Duration::from_secs(5),
    ) {
        Ok((200, _)) => {}
        other => out
            .failures
            .push(format!("after {what}: /api/version answered {other:?}")),
    };
    let limit = Duration::from_secs(30);
    let trial = |out: &mut Outcome,
                 what: &str,
                 path: String,
                 headers: &[(&str, &str)],
                 want: u16,
                 says: &str| {
        out.trials += 1;
        match get(&addr, &path, headers, limit) {
            Ok((status, body)) if status == want && body.contains(says) => {}
            other => out.failures.push(format!(
                "{what}: wanted {want} saying {says:?}, got {:?}",
                other.map(|(s, b)| (s, b.chars().take(300).collect::<String>()))
            )),
        }
        alive(what, out);
    };
    let evil_host = format!("rebind.attacker.example:{port}");
    trial(
        &mut out,
        "a rebinding page's request",
        "/datasets/trusted/loans".into(),
        &[("Host", evil_host.as_str())],
        421,
        "--allow-host",
    );
    trial(
        &mut out,
        "a rebinding page's query",
        format!("/query?sql={}", enc("SELECT 1")),
        &[("Host", evil_host.as_str())],
        421,
        "not this server",
    );
    trial(
        &mut out,
        "a cross-site fetch of a query",
        format!("/query?sql={}", enc("SELECT 1")),
        &[
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Mode", "cors"),
        ],
        403,
        "other sites",
    );
    trial(
        &mut out,
        "a cross-site link to a download",
        "/datasets/trusted/loans/download".into(),
        &[
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Mode", "navigate"),
        ],
        403,
        "other sites",
    );
    trial(
        &mut out,
        "a link from another site to a page",
        "/datasets".into(),
        &[
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Mode", "navigate"),
        ],
        200,
        "trusted.loans",
    );
    let terms = vec!["1"; 2000].join("+");
    trial(
        &mut out,
        "2,000 terms",
        format!("/query?sql={}", enc(&format!("SELECT {terms}"))),
        &[],
        400,
        "nest more than",
    );
    trial(
        &mut out,
        "repeat() of a gigabyte",
        format!(
            "/query?sql={}",
            enc("SELECT length(repeat('x', 1000000000))")
        ),
        &[],
        400,
        "this server allows",
    );
    trial(
        &mut out,
        "lpad() of a gigabyte per row",
        format!(
            "/query?sql={}",
            enc("SELECT max(length(lpad('x', 100000000))) FROM trusted.loans")
        ),
        &[],
        400,
        "this server allows",
    );
    // 100 KB of SQL: refused by the HTTP layer (414) before lake's own 64 KiB limit.
    out.trials += 1;
    let long = format!(
        "/query?sql={}",
        enc(&format!("SELECT '{}'", "x".repeat(100_000)))
    );
    match get(&addr, &long, &[], limit) {
        Ok((414, _)) => {}
        Ok((400, body)) if body.contains("at most") => {}
        other => out
            .failures
            .push(format!("100 KB of SQL: {:?}", other.map(|(s, _)| s))),
    }
    alive("100 KB of SQL", &mut out);

    // A cross join: stopped at the time limit, and pages answer meanwhile.
    out.trials += 1;
    std::thread::scope(|scope| {
        let heavy = scope.spawn(|| {
            let t = Instant::now();
            let r = get(&addr, &format!("/query?sql={}", cross_join()), &[], limit);
            (t.elapsed(), r)
        });
        std::thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        match get(&addr, "/", &[], Duration::from_secs(5)) {
            Ok((200, _)) if t.elapsed() < Duration::from_secs(1) => {}
            other => out.failures.push(format!(
                "a page during a cross join: {:?} in {} ms",
                other.map(|(s, _)| s),
                t.elapsed().as_millis()
            )),
        }
        let (took, r) = heavy.join().expect("the heavy query");
        match r {
            Ok((400, body)) if body.contains("was stopped") && took < Duration::from_secs(6) => {}
            other => out.failures.push(format!(
                "a cross join ({} ms): {:?}",
                took.as_millis(),
                other.map(|(s, b)| (s, b.chars().take(200).collect::<String>()))
            )),
        }
    });
    alive("a cross join", &mut out);

    // 1,000 connections that say nothing: a client still gets its page at once.
    out.trials += 1;
    let silent: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    match get(&addr, "/", &[], Duration::from_secs(10)) {
        Ok((200, _)) if t.elapsed() < Duration::from_secs(2) => {}
        other => out.failures.push(format!(
            "a page behind {} silent connections: {:?} in {} ms",
            silent.len(),
            other.map(|(s, _)| s),
            t.elapsed().as_millis()
        )),
    }
    out.notes.push(format!(
        "a page behind {} silent connections in {} ms",
        silent.len(),
        t.elapsed().as_millis()
    ));
    drop(silent);

    // SIGTERM while a query runs: gone within 2 s.
    out.trials += 1;
    let mut server = server;
    std::thread::scope(|scope| {
        let addr = addr.clone();
        scope.spawn(move || {
            let _ = get(
                &addr,
                &format!("/query?sql={}", cross_join()),
                &[],
                Duration::from_secs(10),
            );
        });
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &server.child.id().to_string()])
            .status();
        let t = Instant::now();
        let mut exited = false;
        while t.elapsed() < Duration::from_secs(5) {
            if server.child.try_wait().ok().flatten().is_some() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited || t.elapsed() > Duration::from_secs(2) {
            out.failures.push(format!(
                "SIGTERM during a query: {} after {} ms",
                if exited { "exited" } else { "still running" },
                t.elapsed().as_millis()
            ));
        }
        out.notes.push(format!(
            "SIGTERM during a query: exited in {} ms",
            t.elapsed().as_millis()
        ));
    });
    out
}
