//! One function per command.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use lake::Lake;
use lake::core::DynZoneStore;
use lake::core::config::{Pipeline, StepSpecKind, Zone};
use lake::core::ledger::{self, Status};
use lake::core::run::RunOptions;
use tokio_util::sync::CancellationToken;

use crate::cli::{
    Args, CatalogCommand, Command, DdlDialect, QueryEngine, QueryFormat, RunsCommand,
    ScheduleCommand, UsageError,
};
use crate::print;

pub(crate) async fn dispatch(args: Args) -> Result<ExitCode> {
    let env = args.env.as_deref();
    match &args.command {
        Command::Init { dir, example } => init(dir, *example),
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Args::command()).render(&mut print::out())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(*shell, &mut Args::command(), "lake", &mut print::out());
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { json } => validate(&args.config, env, *json),
        Command::Plan { json } => plan(&args.config, env, *json).await,
        Command::Clusters { reap, json } => {
            clusters(&Lake::open(&args.config, env).await?, *reap, *json).await
        }
        Command::Run {
            date,
            only,
            force,
            wait,
            keep_cluster,
        } => {
            let lake = Lake::open(&args.config, env).await?;
            let date = date.unwrap_or_else(|| lake::core::chrono::Utc::now().date_naive());
            let mut opts = run_options(date, &args);
            opts.only = only.clone();
            opts.force = *force;
            opts.lock_wait = *wait;
            opts.keep_cluster = *keep_cluster;
            run(&lake, &opts, &args).await
        }
        Command::Runs {
            show: None,
            json,
            last,
            all,
        } => {
            let last = if *all { usize::MAX } else { *last };
            runs(&*Lake::open(&args.config, env).await?.store, *json, last).await
        }
        Command::Runs {
            show: Some(RunsCommand::Show { id, json }),
            json: json2,
            ..
        } => {
            show_run(
                &*Lake::open(&args.config, env).await?.store,
                id,
                *json || *json2,
            )
            .await
        }
        Command::Ingest {
            sources,
            date,
            from,
            to,
            force,
            wait,
        } => {
            let lake = Lake::open(&args.config, env).await?;
            // No dates: catch up from each source's cursor to --to or today.
            let dates = lake::core::run::ingest_dates(*date, *from, *to)?;
            let today = lake::core::chrono::Utc::now().date_naive();
            let mut opts = run_options(dates.last().copied().or(*to).unwrap_or(today), &args);
            opts.force = *force;
            opts.lock_wait = *wait;
            ingest(&lake, sources, &dates, &opts, &args).await
        }
        #[cfg(feature = "serve")]
        Command::Serve {
            bind,
            token,
            allow_hosts,
        } => {
            let lake = Lake::open(&args.config, env).await?;
            let opts = lake_serve::ServeOptions {
                bind: *bind,
                token: token
                    .clone()
                    .or_else(|| std::env::var("LAKE_SERVE_TOKEN").ok())
                    .filter(|t| !t.is_empty()),
                allow_hosts: allow_hosts.clone(),
                ..lake_serve::ServeOptions::from_spec(&lake.pipeline.serve)
            };
            lake_serve::serve(
                lake,
                opts,
                |addr| {
                    print::note("serve_listening", &format!("lake serve: http://{addr}/ (Ctrl-C stops)"));
                },
                // A signal stops it within about a second, whatever queries run.
                async move {
                    wait_for_signal().await;
                    print::note("serve_stopping", "lake serve: stopping");
                },
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "serve")]
        Command::Chart { name, output } => {
            let lake = Lake::open(&args.config, env).await?;
            let ext = output
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default();
            if !matches!(ext, "svg" | "png") {
                anyhow::bail!(
                    "{}: lake chart writes .svg or .png: name the file so",
                    output.display()
                );
            }
            let svg = lake_serve::chart::render(&lake, name).await?;
            let bytes = if ext == "png" {
                lake_serve::chart::png(&svg).map_err(|e| anyhow::anyhow!("chart {name}: {e}"))?
            } else {
                svg.into_bytes()
            };
            std::fs::write(output, bytes)
                .map_err(|e| anyhow::anyhow!("write {}: {e}", output.display()))?;
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(not(feature = "serve"))]
        Command::Serve { .. } | Command::Chart { .. } => Err(crate::cli::UsageError(
            "this build of lake has no `lake serve` or `lake chart`: build it with the `serve` feature (on by default)".into(),
        )
        .into()),
        Command::Sink { sinks, force, wait } => {
            let lake = Lake::open(&args.config, env).await?;
            let mut opts = run_options(lake::core::chrono::Utc::now().date_naive(), &args);
            opts.force = *force;
            opts.lock_wait = *wait;
            let record = lake.sink(sinks, &opts).await?;
            println!("{}", shown(&print::sink_summary(&record)));
            Ok(match record.status {
                Status::Succeeded => ExitCode::SUCCESS,
                Status::Cancelled => ExitCode::from(130),
                _ => ExitCode::from(1),
            })
        }
        Command::Query {
            sql,
            format,
            output,
            engine: QueryEngine::Athena,
            as_of,
        } => {
            if as_of.is_some() {
                anyhow::bail!(
                    "--as-of is for the embedded engine (lake query without --engine athena)"
                );
            }
            let lake = Lake::open(&args.config, env).await?;
            let Some(sql) = sql else {
                anyhow::bail!(
                    "lake query --engine athena needs a query: lake query --engine athena \"SELECT …\""
                );
            };
            if output.is_some() {
                anyhow::bail!(
                    "--output is for the embedded engine; Athena writes its results to [catalog] athena_output"
                );
            }
            athena_query(&lake, sql, *format).await
        }
        Command::Query {
            sql,
            format,
            output,
            engine: QueryEngine::Embedded,
            as_of,
        } => {
            let mut lake = Lake::open(&args.config, env).await?;
            if let Some(at) = as_of {
                let (then, notes) = lake.as_of(at).await?;
                for n in notes {
                    print::note("as_of", &n);
                }
                lake = then;
            }
            query(&lake, sql.as_deref(), *format, output.as_deref()).await
        }
        Command::Doctor { json } => doctor(&args.config, env, *json).await,
        Command::IamPolicy => iam_policy(&args.config, env),
        Command::Fsck {
            repair,
            quick,
            json,
        } => {
            fsck(
                &Lake::open(&args.config, env).await?,
                *repair,
                *quick,
                *json,
            )
            .await
        }
        Command::Schedule { command, once } => {
            let lake = Lake::open(&args.config, env).await?;
            match command {
                None => schedule(&lake, *once, &args).await,
                Some(ScheduleCommand::Status { json }) => schedule_status(&lake, *json).await,
                Some(ScheduleCommand::Install {
                    systemd, system, ..
                }) => schedule_install(&lake, &args.config, env, *systemd, *system),
            }
        }
        Command::Catalog {
            command: CatalogCommand::Sync { json },
        } => {
            let lake = Lake::open(&args.config, env).await?;
            let mut opts = run_options(lake::core::chrono::Utc::now().date_naive(), &args);
            if *json {
                opts.observer = None;
            }
            let records = lake.catalog_sync(&opts).await?;
            let failed = records
                .iter()
                .filter(|r| r.status == Status::Failed)
                .count();
            if *json {
                let mut out = print::out();
                serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "tables": records }))?;
                writeln!(out)?;
            } else {
                println!("{}", shown(&print::catalog_summary(&records)));
            }
            Ok(if failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Catalog {
            command: CatalogCommand::Ddl { dialect },
        } => {
            use lake::local::engine::ddl::Dialect;
            let dialect = match dialect {
                DdlDialect::Athena => Dialect::Athena,
                DdlDialect::Spark => Dialect::Spark,
                DdlDialect::Duckdb => Dialect::DuckDb,
            };
            let sql = Lake::open(&args.config, env)
                .await?
                .catalog_ddl(dialect)
                .await?;
            print::out().write_all(sql.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { json } => status(&Lake::open(&args.config, env).await?, *json).await,
        Command::Vacuum { json } => {
            let done = Lake::open(&args.config, env).await?.vacuum().await?;
            let mut out = print::out();
            if *json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "tables": done }))?
                )?;
            } else if done.is_empty() {
                writeln!(out, "no step keeps its output as a table with snapshots")?;
            }
            for d in done.iter().filter(|_| !*json) {
                writeln!(
                    out,
                    "{}: {} snapshots expired, {} files deleted ({}), {} snapshots left",
                    d.dataset,
                    d.expired,
                    d.files,
                    print::bytes(d.bytes),
                    d.snapshots
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ls { path, json } => {
            ls(&Lake::open(&args.config, env).await?, path.as_deref(), *json).await
        }
    }
}

async fn fsck(lake: &Lake, repair: bool, quick: bool, json: bool) -> Result<ExitCode> {
    let (report, removed) = lake.fsck(!quick, repair).await?;
    let mut out = print::out();
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["removed"] = removed.into();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        for f in &report.findings {
            writeln!(
                out,
                "✗ {:<8} {}: {}",
                format!("{:?}", f.problem).to_lowercase(),
                lake.store.url_of(&f.key),
                f.detail
            )?;
        }
        if removed > 0 {
            writeln!(
                out,
                "removed {removed} leftover{}",
                if removed == 1 { "" } else { "s" }
            )?;
        }
        let fixable = report
            .findings
            .iter()
            .filter(|f| f.problem.repairable())
            .count();
        writeln!(
            out,
            "{} manifests, {} objects ({} bytes) checked{}: {}",
            report.manifests,
            report.objects,
            report.bytes,
            if report.hashed {
                " with SHA-256"
            } else {
                " by size"
            },
            match (report.findings.len(), fixable) {
                (0, _) => "consistent".to_owned(),
                (n, 0) => format!("{n} problem{}", if n == 1 { "" } else { "s" }),
                (n, k) => format!(
                    "{n} problem{}, {k} removable with `lake fsck --repair`",
                    if n == 1 { "" } else { "s" }
                ),
            }
        )?;
    }
    Ok(if report.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn doctor(config: &Path, env: Option<&str>, json: bool) -> Result<ExitCode> {
    use lake::core::doctor::Check;
    let checks = match lake::load(config, env) {
        Ok(pipeline) => {
            let mut checks = vec![Check::pass(
                "lake.toml",
                format!(
                    "{}: pipeline {:?}, root {}, backend {}",
                    pipeline.file.display(),
                    pipeline.name,
                    pipeline.root,
                    pipeline.backend
                ),
            )];
            checks.extend(Lake::from_pipeline(pipeline).await?.doctor().await);
            checks
        }
        Err(e) => vec![Check::fail(
            "lake.toml",
            e.to_string(),
            "fix what it says; `lake validate` lists every problem",
        )],
    };
    let failed = checks.iter().filter(|c| !c.ok()).count();
    let mut out = print::out();
    if json {
        let v = serde_json::json!({ "ok": failed == 0, "checks": checks });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        for c in &checks {
            writeln!(out, "{} {}: {}", c.mark(), c.name, c.detail)?;
            if let Some(fix) = c.fix() {
                writeln!(out, "    → {fix}")?;
            }
        }
        if failed > 0 {
            writeln!(out, "{failed} check(s) failed")?;
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(feature = "aws")]
async fn athena_query(lake: &Lake, sql: &str, format: Option<QueryFormat>) -> Result<ExitCode> {
    let (batch, result) = lake.athena_query(sql, &cancel_on_signal()).await?;
    print_rows(std::slice::from_ref(&batch), format_or_default(format))?;
    print::note(
        "athena_query",
        &format!(
            "{} · Athena query {} scanned {} (${:.6} at $5/TB)",
            print::plural(batch.num_rows(), "row"),
            result.query_id,
            lake::core::human::bytes(result.scanned_bytes),
            result.cost_usd()
        ),
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "aws"))]
async fn athena_query(_lake: &Lake, _sql: &str, _format: Option<QueryFormat>) -> Result<ExitCode> {
    anyhow::bail!(
        "this build of lake has no AWS support (built without the `aws` feature): query with the embedded engine"
    )
}

#[cfg(not(feature = "aws"))]
fn iam_policy(_config: &Path, _env: Option<&str>) -> Result<ExitCode> {
    anyhow::bail!("this build of lake has no AWS support (built without the `aws` feature)")
}

#[cfg(feature = "aws")]
fn iam_policy(config: &Path, env: Option<&str>) -> Result<ExitCode> {
    let pipeline = lake::load(config, env)?;
    match lake::aws::iam_policy(&pipeline) {
        Some(policy) => {
            println!("{}", serde_json::to_string_pretty(&policy)?);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            print::note(
                "iam_policy",
                &format!(
                    "root {} is local: this lake.toml needs no AWS permission",
                    pipeline.root
                ),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The examples `lake init` writes: (lake.toml, its data file's path and text).
const CREDIT: (&str, &str, &str) = (
    include_str!("../../../examples/credit/lake.toml"),
    "data/german_credit_data.csv",
    include_str!("../../../examples/credit/data/german_credit_data.csv"),
);
const WEATHER: (&str, &str, &str) = (
    include_str!("../../../examples/weather/lake.toml"),
    "data/open_meteo_hourly.json",
    include_str!("../../../examples/weather/data/open_meteo_hourly.json"),
);

fn init(dir: &Path, example: crate::cli::Example) -> Result<ExitCode> {
    let config = dir.join("lake.toml");
    if config.exists() {
        return Err(UsageError(format!(
            "{} already exists; not overwriting it",
            config.display()
        ))
        .into());
    }
    let (toml, data_path, data) = match example {
        crate::cli::Example::Credit => CREDIT,
        crate::cli::Example::Weather => WEATHER,
    };
    std::fs::create_dir_all(dir.join("data"))
        .with_context(|| format!("create {}", dir.display()))?;
    for (name, text) in [("lake.toml", toml), (data_path, data)] {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    }
    let shown = if dir == Path::new(".") {
        String::new()
    } else {
        format!("cd {} && ", dir.display())
    };
    println!(
        "wrote {} with sample data and two SQL steps",
        config.display()
    );
    println!("next: {shown}lake run");
    Ok(ExitCode::SUCCESS)
}

fn validate(config: &Path, env: Option<&str>, json: bool) -> Result<ExitCode> {
    let loaded = lake::load(config, env);
    if !json {
        let p = loaded?;
        println!(
            "{} is valid: pipeline {:?}, {} source(s), {} step(s): {}",
            config.display(),
            p.name,
            p.sources.len(),
            p.steps.len(),
            p.order.join(" → ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (v, code) = match loaded {
        Ok(p) => (
            serde_json::json!({
                "valid": true,
                "file": p.file,
                "pipeline": p.name,
                "sources": p.sources.keys().collect::<Vec<_>>(),
                "steps": p.order,
            }),
            ExitCode::SUCCESS,
        ),
        Err(lake::core::Error::Config { diagnostics }) => (
            serde_json::json!({ "valid": false, "file": config, "problems": diagnostics.0 }),
            ExitCode::from(2),
        ),
        Err(e) => return Err(e.into()),
    };
    writeln!(print::out(), "{}", serde_json::to_string_pretty(&v)?)?;
    Ok(code)
}

async fn plan(config: &Path, env: Option<&str>, json: bool) -> Result<ExitCode> {
    // A plan asks nothing of the network (no region lookup, no credentials).
    let lake = Lake::open_offline(config, env).await?;
    let p = &lake.pipeline;
    let backend = lake.plan().await?;
    let mut out = print::out();
    if json {
        let mut v = serde_json::to_value(&**p)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("backend_config".into(), p.backend.config().describe());
            if let Some(plan) = &backend {
                obj.insert(p.backend.name().into(), plan.json.clone());
            }
        }
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    write_plan(&mut out, p)?;
    if let Some(plan) = &backend {
        write!(out, "{}", plan.text)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `lake clusters [--reap]`.
async fn clusters(lake: &Lake, reap: bool, json: bool) -> Result<ExitCode> {
    let all = lake.leftovers().await?;
    let reaped = if reap { Some(lake.reap().await?) } else { None };
    let mut out = print::out();
    if json {
        let mut v = serde_json::json!({ "active": all });
        if let Some(r) = &reaped {
            v["reaped"] = serde_json::to_value(r)?;
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        writeln!(
            out,
            "no active cluster or application was started by lake on backend {}",
            lake.pipeline.backend
        )?;
    }
    for c in &all {
        writeln!(
            out,
            "{}  {:<13} {}  pipeline {}  run {}  created {}",
            c.id,
            c.state,
            c.name,
            c.tags.get("lake:pipeline").map_or("?", String::as_str),
            c.tags.get("lake:run-id").map_or("?", String::as_str),
            c.created
                .map_or("?".into(), |d| d.format("%Y-%m-%d %H:%M UTC").to_string())
        )?;
    }
    if let Some(reaped) = reaped {
        for c in &reaped {
            writeln!(
                out,
                "terminated {} (run {} is not live)",
                c.id,
                c.tags.get("lake:run-id").map_or("?", String::as_str)
            )?;
        }
        if reaped.is_empty() {
            writeln!(out, "nothing to reap for pipeline {}", lake.pipeline.name)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_plan(out: &mut impl Write, p: &Pipeline) -> std::io::Result<()> {
    writeln!(out, "pipeline {} ({})", p.name, p.file.display())?;
    writeln!(out, "  env:     {}", p.env.as_deref().unwrap_or("(none)"))?;
    writeln!(out, "  root:    {}", p.root)?;
    writeln!(out, "  backend: {}", p.backend)?;
    writeln!(out, "sources:")?;
    for s in p.sources.values() {
        writeln!(out, "  {} {}", s.name, s.config.describe(s))?;
        if let Some(f) = s.freshness {
            writeln!(
                out,
                "    freshness: stale past {}",
                lake::core::human::duration(f)
            )?;
        }
        if let Some(x) = &s.extract {
            writeln!(
                out,
                "    archives unpacked beside them{} (at most {}, {}× their size, {} entries)",
                if x.members.is_empty() {
                    String::new()
                } else {
                    format!(", members {}", x.members.join(", "))
                },
                crate::print::bytes(x.max_bytes),
                x.max_ratio,
                x.max_members
            )?;
        }
    }
    writeln!(out, "steps, in order:")?;
    for (i, name) in p.order.iter().enumerate() {
        let s = &p.steps[name];
        writeln!(
            out,
            "  {}. {} ({}, line {})",
            i + 1,
            s.name,
            s.kind_name(),
            s.line
        )?;
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(", ")
            }
        };
        writeln!(
            out,
            "     inputs:     {}",
            list(s.inputs.iter().map(ToString::to_string).collect())
        )?;
        writeln!(
            out,
            "     output:     {}",
            s.output.as_ref().map_or("-".into(), ToString::to_string)
        )?;
        writeln!(
            out,
            "     depends on: {}",
            list(s.depends_on.iter().cloned().collect())
        )?;
        match &s.kind {
            StepSpecKind::Command { command } => {
                writeln!(out, "     command:    {}", command.join(" "))?;
            }
            StepSpecKind::Sql {
                sql,
                partition_by,
                expect,
                max_rejected,
                ..
            } => {
                let sql: Vec<&str> = sql.split_whitespace().collect();
                writeln!(out, "     sql:        {}", sql.join(" "))?;
                if !partition_by.is_empty() {
                    writeln!(out, "     partitions: {}", partition_by.join(", "))?;
                }
                for e in expect {
                    writeln!(out, "     expect:     {}", e.condition)?;
                }
                if !expect.is_empty() {
                    writeln!(out, "     rejected:   at most {}%", max_rejected * 100.0)?;
                }
            }
            _ => {}
        }
        writeln!(out, "     mode:       {}", s.mode)?;
        for (k, v) in &s.env {
            writeln!(out, "     env:        {k} = {v}")?;
        }
        if let Some(t) = s.timeout {
            writeln!(out, "     timeout:    {}s", t.as_secs())?;
        }
        if let Some(f) = s.freshness {
            writeln!(
                out,
                "     freshness:  stale past {}",
                lake::core::human::duration(f)
            )?;
        }
    }
    if !p.sinks.is_empty() {
        writeln!(out, "sinks, each after the step writing its dataset:")?;
        for s in p.sinks.values() {
            writeln!(
                out,
                "  {} ({}, line {}): {} → {}",
                s.name,
                s.kind,
                s.line,
                s.from,
                s.config.describe()
            )?;
        }
    }
    Ok(())
}

/// Options for a run or an ingest on `date`: Ctrl-C cancels; progress unless `-q`.
fn run_options(date: lake::core::chrono::NaiveDate, args: &Args) -> RunOptions {
    run_options_with(date, args, cancel_on_signal())
}

fn run_options_with(
    date: lake::core::chrono::NaiveDate,
    args: &Args,
    cancel: CancellationToken,
) -> RunOptions {
    let mut opts = RunOptions::new(date);
    opts.cancel = cancel;
    if !args.quiet {
        opts.observer = Some(Arc::new(print::Progress::new(args.verbose > 0)));
    }
    opts
}

async fn run(lake: &Lake, opts: &RunOptions, args: &Args) -> Result<ExitCode> {
    let record = lake.run(opts).await?;
    print_run(lake, &record, args);
    Ok(match record.status {
        Status::Succeeded => ExitCode::SUCCESS,
        Status::Cancelled => ExitCode::from(130),
        _ => ExitCode::from(1),
    })
}

/// A run's summary and where its outputs are (and, with `-q`, why a step failed).
fn print_run(lake: &Lake, record: &lake::core::ledger::RunRecord, args: &Args) {
    if args.quiet {
        // Quiet still says why a step failed.
        for s in record.steps.iter().filter(|s| s.status == Status::Failed) {
            print::note("step_finished", &shown(&print::step_line(s)));
        }
    }
    let outputs: Vec<(String, String)> = record
        .steps
        .iter()
        .filter(|s| matches!(s.status, Status::Succeeded | Status::UpToDate))
        .filter_map(|s| {
            s.output
                .as_ref()
                .map(|o| (o.clone(), lake.store.location(o)))
        })
        .collect();
    println!("{}", shown(&print::summary(record, &outputs)));
}

/// `lake schedule [--once]`: the library's scheduler, each tick's run printed as `lake run`
/// prints it.
async fn schedule(lake: &Lake, once: bool, args: &Args) -> Result<ExitCode> {
    use lake::schedule::{ScheduleEnd, ScheduleEvent};
    let s = lake.schedule()?;
    let cancel = cancel_on_signal();
    let end = lake
        .run_schedule(
            once,
            &cancel,
            |date| run_options_with(date, args, cancel.clone()),
            |event| match event {
                ScheduleEvent::NothingDue => print::note(
                    "schedule_nothing_due",
                    &format!(
                        "schedule: nothing due ({} in {})",
                        s.cron,
                        s.timezone.name()
                    ),
                ),
                ScheduleEvent::Tick(tick) => print::note(
                    "schedule_tick",
                    &format!(
                        "schedule: the tick of {} → lake run --date {}",
                        tick.at.format("%Y-%m-%d %H:%M:%S UTC"),
                        tick.date
                    ),
                ),
                ScheduleEvent::Ran(record) => print_run(lake, record, args),
                ScheduleEvent::Waiting(next) => print::note(
                    "schedule_waiting",
                    &format!(
                        "schedule: next tick {} (for {})",
                        next.at.format("%Y-%m-%d %H:%M:%S UTC"),
                        next.date
                    ),
                ),
            },
        )
        .await?;
    Ok(match end {
        ScheduleEnd::Succeeded => ExitCode::SUCCESS,
        ScheduleEnd::Failed => ExitCode::from(1),
        ScheduleEnd::Cancelled => ExitCode::from(130),
    })
}

/// `lake schedule status [--json]`.
/// `lake status`: each dataset's age, its freshness limit and whether it is stale; exit 1
/// when any is.
async fn status(lake: &Lake, json: bool) -> Result<ExitCode> {
    let now = lake::core::chrono::Utc::now();
    let all = lake::core::freshness::check(&lake.pipeline, &*lake.store, now).await?;
    let stale = all.iter().filter(|f| f.is_stale()).count();
    let mut out = print::out();
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pipeline": lake.pipeline.name,
                "checked_at": now,
                "stale": stale,
                "datasets": all,
            }))?
        )?;
    } else {
        let secs = |s: Option<u64>| s.map(std::time::Duration::from_secs);
        let rows: Vec<[String; 5]> = all
            .iter()
            .map(|f| {
                [
                    f.dataset.clone(),
                    f.writer.clone(),
                    secs(f.age_secs).map_or("never".into(), print::duration),
                    secs(f.limit_secs).map_or("-".into(), lake::core::human::duration),
                    match f.status {
                        lake::core::freshness::State::Ok => "ok".into(),
                        lake::core::freshness::State::Stale => "stale".into(),
                        lake::core::freshness::State::Unchecked => "-".into(),
                    },
                ]
            })
            .collect();
        let head = ["dataset", "written by", "age", "freshness", "status"].map(String::from);
        let mut width = [0usize; 5];
        for row in std::iter::once(&head).chain(&rows) {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in std::iter::once(&head).chain(&rows) {
            let cells: Vec<String> = row
                .iter()
                .zip(width)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            writeln!(out, "{}", cells.join("  ").trim_end())?;
        }
    }
    Ok(if stale > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn schedule_status(lake: &Lake, json: bool) -> Result<ExitCode> {
    let st = lake.schedule_status(lake::core::chrono::Utc::now()).await?;
    let mut out = print::out();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&st)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let s = &st.schedule;
    writeln!(
        out,
        "schedule {:?} in {}, catch-up {}",
        s.cron,
        s.timezone.name(),
        s.catchup
            .map_or("off".to_owned(), lake::core::human::duration)
    )?;
    for t in &st.next {
        writeln!(
            out,
            "next   {}  for {}",
            t.at.format("%Y-%m-%d %H:%M UTC"),
            t.date
        )?;
    }
    for r in &st.recent {
        writeln!(
            out,
            "recent {}  for {}  {}",
            r.at.to_rfc3339_opts(lake::core::chrono::SecondsFormat::Secs, true),
            r.date,
            r.status
        )?;
    }
    if st.due.is_empty() {
        writeln!(out, "nothing due")?;
    } else {
        let dates: Vec<String> = st.due.iter().map(ToString::to_string).collect();
        writeln!(
            out,
            "due: {} (`lake schedule --once` runs them)",
            dates.join(", ")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `lake schedule install --systemd [--system] | --cron`: units that run `lake schedule --once`
/// every 5 minutes in lake.toml's folder; lake itself decides what is due (see
/// [`lake::core::units`]).
fn schedule_install(
    lake: &Lake,
    config: &Path,
    env: Option<&str>,
    systemd: bool,
    system: bool,
) -> Result<ExitCode> {
    use lake::core::units;
    lake.schedule()?;
    let inv = units::Invocation {
        name: lake.pipeline.name.clone(),
        exe: std::env::current_exe().context("the path of this lake binary")?,
        config: std::path::absolute(config).context("the path of lake.toml")?,
        env: env.map(str::to_owned),
    };
    let text = if !systemd {
        units::crontab(&inv)
    } else if system {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&inv.config)
            .with_context(|| format!("the owner of {}", inv.config.display()))?;
        units::systemd(
            &inv,
            &units::Scope::System {
                uid: meta.uid(),
                gid: meta.gid(),
            },
        )
    } else {
        units::systemd(&inv, &units::Scope::User)
    };
    let text = text.map_err(|m| UsageError(format!("lake schedule install: {m}")))?;
    write!(print::out(), "{text}")?;
    Ok(ExitCode::SUCCESS)
}

async fn ingest(
    lake: &Lake,
    sources: &[String],
    dates: &[lake::core::chrono::NaiveDate],
    opts: &RunOptions,
    args: &Args,
) -> Result<ExitCode> {
    let record = lake.ingest(sources, dates, opts).await?;
    if args.quiet {
        for i in record.ingest.iter().filter(|i| i.status == Status::Failed) {
            print::note(
                "ingest_window",
                &format!(
                    "ingest {} {}: FAILED: {}",
                    i.source,
                    i.date,
                    i.error.as_deref().unwrap_or("")
                ),
            );
        }
    }
    println!("{}", shown(&print::ingest_summary(&record)));
    Ok(match record.status {
        Status::Succeeded => ExitCode::SUCCESS,
        Status::Cancelled => ExitCode::from(130),
        _ => ExitCode::from(1),
    })
}

/// A token cancelled by Ctrl-C or SIGTERM; a second signal exits at once (130).
fn cancel_on_signal() -> CancellationToken {
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        print::note(
            "interrupted",
            "interrupted: cancelling the steps, terminating what the run started, writing the ledger and releasing the lock",
        );
        on_signal.cancel();
        // A second Ctrl-C must not cut the teardown short (a cluster would be left running,
        // billed): it is answered, not obeyed. A third one exits at once.
        wait_for_signal().await;
        print::note(
            "interrupted",
            "still tearing down: wait for it to finish (Ctrl-C once more exits now and may leave a cluster running)",
        );
        wait_for_signal().await;
        print::note(
            "interrupted",
            "exiting before teardown finished: `lake clusters --reap` terminates what this run left, and the next run takes over its lock",
        );
        std::process::exit(130);
    });
    cancel
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `lake runs`: the newest `last` runs, oldest first; a line says how many earlier runs there
/// are. The table comes from the ledger's index (one listing and one read); `--json` reads the
/// listed runs' documents.
async fn runs(store: &DynZoneStore, json: bool, last: usize) -> Result<ExitCode> {
    let all = ledger::summaries(store).await?;
    let earlier = all.len().saturating_sub(last);
    let shown = &all[earlier..];
    let mut out = print::out();
    if json {
        let records = ledger::newest(store, &all, last).await?;
        serde_json::to_writer_pretty(&mut out, &records)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        writeln!(out, "no runs yet in {}", store.location(""))?;
        return Ok(ExitCode::SUCCESS);
    }
    if earlier > 0 {
        writeln!(
            out,
            "{earlier} earlier run{} not shown (lake runs --last N, or --all)",
            if earlier == 1 { "" } else { "s" }
        )?;
    }
    writeln!(
        out,
        "{:<24} {:<10} {:<10} {:<20} {:>9}  STEPS",
        "RUN", "DATE", "STATUS", "STARTED (UTC)", "DURATION"
    )?;
    for r in shown {
        let dur = r
            .ended
            .map(|e| (e - r.started).num_milliseconds().max(0) as u64);
        writeln!(
            out,
            "{:<24} {:<10} {:<10} {:<20} {:>9}  {}/{} ok",
            r.run_id,
            r.date.to_string(),
            r.status.to_string(),
            r.started.format("%Y-%m-%d %H:%M:%S").to_string(),
            print::millis(dur),
            r.steps_ok,
            r.steps
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn show_run(store: &DynZoneStore, id: &str, json: bool) -> Result<ExitCode> {
    let r = ledger::find(store, id).await?;
    let mut out = print::out();
    if json {
        serde_json::to_writer_pretty(&mut out, &r)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "run {} · pipeline {} · date {} · {}",
        r.run_id, r.pipeline, r.date, r.status
    )?;
    writeln!(
        out,
        "  root {} · backend {} · env {} · by {}",
        r.root,
        r.backend,
        r.env.as_deref().unwrap_or("-"),
        r.holder
    )?;
    writeln!(
        out,
        "  started {} · ended {}",
        r.started.to_rfc3339(),
        r.ended.map_or("-".into(), |e| e.to_rfc3339())
    )?;
    if let Some(e) = &r.error {
        writeln!(out, "  error: {e}")?;
    }
    for i in &r.ingest {
        writeln!(
            out,
            "ingest {} for {}: {} ({} objects, {})",
            i.source,
            i.date,
            i.status,
            i.objects.len(),
            print::bytes(i.bytes)
        )?;
        write_objects(&mut out, "", &i.objects)?;
        if let Some(e) = &i.error {
            writeln!(out, "    error: {e}")?;
        }
    }
    for s in &r.steps {
        writeln!(out, "{}", shown(&print::step_line(s)))?;
        write_objects(&mut out, "in   ", &s.inputs)?;
        write_objects(&mut out, "out  ", &s.output_objects)?;
    }
    for s in &r.sinks {
        writeln!(out, "{}", shown(&print::sink_line(s)))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn write_objects(
    out: &mut impl Write,
    label: &str,
    objects: &[lake::core::publish::ObjectEntry],
) -> std::io::Result<()> {
    for o in objects {
        writeln!(
            out,
            "    {label}{}  {:>10}  sha256 {}",
            o.key,
            print::bytes(o.size),
            o.sha256
        )?;
    }
    Ok(())
}

async fn ls(lake: &Lake, path: Option<&str>, json: bool) -> Result<ExitCode> {
    let store = &*lake.store;
    let mut out = print::out();
    let Some(path) = path.map(|p| p.trim_matches('/')).filter(|p| !p.is_empty()) else {
        let zones = lake::core::publish::zone_summary(store).await?;
        if json {
            let v: Vec<_> = zones
                .iter()
                .map(|(zone, folders)| serde_json::json!({ "zone": zone.as_str(), "folders": folders }))
                .collect();
            writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "root": store.root_url(), "zones": v })
                )?
            )?;
            return Ok(ExitCode::SUCCESS);
        }
        for (zone, folders) in zones {
            writeln!(out, "{}/", zone.as_str())?;
            for f in folders {
                writeln!(
                    out,
                    "  {}  {} objects, {}",
                    f.path,
                    f.objects,
                    print::bytes(f.bytes)
                )?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    };
    let first = path.split('/').next().unwrap_or(path);
    if !matches!(first, "raw" | "trusted" | "refined" | "_lake") {
        bail!(UsageError(format!(
            "{path:?}: start with a zone: raw, trusted or refined"
        )));
    }
    let objects = store.list(path).await?;
    let snapshots = lake.snapshots(path).await?;
    if json {
        let v: Vec<_> = objects
            .iter()
            .map(|o| {
                serde_json::json!({
                    "key": o.key.as_str(),
                    "url": store.url_of(o.key.as_str()),
                    "size": o.size,
                    "last_modified": o.last_modified,
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&match &snapshots {
                Some((format, s)) => serde_json::json!({
                    "path": path, "objects": v, "table_format": format, "snapshots": s
                }),
                None => serde_json::json!({ "path": path, "objects": v }),
            })?
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if objects.is_empty() {
        writeln!(out, "nothing under {}", store.location(path))?;
    }
    for o in objects {
        writeln!(
            out,
            "{:>10}  {}  {}",
            print::bytes(o.size),
            o.last_modified.format("%Y-%m-%d %H:%M:%S"),
            o.key
        )?;
    }
    if let Some((format, snapshots)) = snapshots {
        writeln!(out, "{format} snapshots of {path}, newest first:")?;
        for s in snapshots {
            writeln!(
                out,
                "  {}  {}  {:<9}  {} files, {} rows  run {}{}",
                s.id,
                s.committed.format("%Y-%m-%d %H:%M:%S"),
                s.operation,
                s.files,
                s.rows,
                s.run_id.as_deref().unwrap_or("-"),
                if s.current { "  (current)" } else { "" }
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn query(
    lake: &Lake,
    sql: Option<&str>,
    format: Option<QueryFormat>,
    output: Option<&Path>,
) -> Result<ExitCode> {
    if let (Some(sql), Some(path)) = (sql, output) {
        let rows = lake.query_to_file(sql, path).await?;
        print::note(
            "query_written",
            &format!("{rows} rows written to {}", path.display()),
        );
        return Ok(ExitCode::SUCCESS);
    }
    let Some(sql) = sql else {
        return list_tables(&lake.query_session().await?).await;
    };
    let format = format_or_default(format);
    // A republish can delete what the manifests read a moment ago listed: nothing was shown
    // yet (rows are shown only once what they come from is checked), so read again from the
    // new manifests.
    lake::core::publish::read_again(|| query_once(lake, sql, format)).await?;
    Ok(ExitCode::SUCCESS)
}

/// A line of results as a terminal may print it: errors quote servers and data, whose control
/// characters are shown, never obeyed.
fn shown(line: &str) -> std::borrow::Cow<'_, str> {
    lake::core::human::printable(line)
}

/// `--format`, or a table on a terminal and CSV otherwise.
fn format_or_default(format: Option<QueryFormat>) -> QueryFormat {
    use std::io::IsTerminal;
    format.unwrap_or(if std::io::stdout().is_terminal() {
        QueryFormat::Table
    } else {
        QueryFormat::Csv
    })
}

/// Print whole batches as `lake query` prints rows: an aligned table, CSV with a header, or
/// one JSON object per line.
#[cfg(feature = "aws")]
fn print_rows(
    batches: &[lake::local::engine::datafusion::arrow::array::RecordBatch],
    format: QueryFormat,
) -> Result<()> {
    use lake::local::engine::datafusion::arrow;
    let mut out = print::out();
    match format {
        QueryFormat::Table => {
            let table = arrow::util::pretty::pretty_format_batches(batches)?.to_string();
            writeln!(out, "{}", lake::core::human::printable(&table))?;
        }
        QueryFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for b in batches {
                w.write(b)?;
            }
        }
        QueryFormat::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}

/// Run `sql` and print its rows; errors before the first row is printed are returned as they
/// are, so that the caller can tell a replaced object from other failures. A reader's error
/// names no file: the object it comes from is named.
async fn query_once(lake: &Lake, sql: &str, format: QueryFormat) -> lake::core::Result<()> {
    let (df, check) = lake.query(sql).await?;
    match print_query(df, check, format).await {
        Err(lake::core::Error::Query {
            origin,
            message,
            source,
        }) => Err(lake::core::Error::Query {
            origin,
            message: lake.name_failing_object(sql, message).await,
            source,
        }),
        done => done,
    }
}

async fn print_query(
    df: lake::local::engine::datafusion::dataframe::DataFrame,
    check: lake::local::engine::Verification,
    format: QueryFormat,
) -> lake::core::Result<()> {
    use lake::local::engine::datafusion::arrow;
    let out_err = |e: std::io::Error| query_error(e.to_string());
    let mut out = print::out();
    match format {
        QueryFormat::Table => {
            let batches = df.collect().await;
            // Nothing is shown from objects that are not what their manifests say.
            check.finish().await?;
            let batches = batches.map_err(|e| query_error(e.to_string()))?;
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let table = arrow::util::pretty::pretty_format_batches(&batches)
                .map_err(|e| query_error(e.to_string()))?;
            // Cells hold whatever the data holds: escape sequences are shown, not obeyed.
            let table = table.to_string();
            writeln!(out, "{}", lake::core::human::printable(&table)).map_err(out_err)?;
            print::note(
                "query_rows",
                &format!("{rows} row{}", if rows == 1 { "" } else { "s" }),
            );
        }
        QueryFormat::Csv | QueryFormat::Json => {
            use futures::StreamExt as _;
            let mut stream = df
                .execute_stream()
                .await
                .map_err(|e| query_error(e.to_string()))?;
            // Rows stream out: the check of what they come from passes before the first.
            check.finish().await?;
            let mut csv = (format == QueryFormat::Csv).then(|| {
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out)
            });
            let mut json = (format == QueryFormat::Json)
                .then(|| arrow::json::LineDelimitedWriter::new(print::out()));
            let write_err = |e: arrow::error::ArrowError| query_error(e.to_string());
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| query_error(e.to_string()))?;
                if let Some(w) = csv.as_mut() {
                    w.write(&batch).map_err(write_err)?;
                }
                if let Some(w) = json.as_mut() {
                    w.write(&batch).map_err(write_err)?;
                }
            }
            if let Some(mut w) = json {
                w.finish().map_err(write_err)?;
            }
        }
    }
    Ok(())
}

fn query_error(message: String) -> lake::core::Error {
    lake::core::Error::query("lake query", message)
}

/// `lake query` without SQL: every table and its columns.
async fn list_tables(ctx: &lake::local::engine::SessionContext) -> Result<ExitCode> {
    let catalog = ctx.catalog("datafusion").context("the default catalog")?;
    let mut out = print::out();
    let mut n = 0;
    let schemas = Zone::ALL
        .iter()
        .map(|z| z.as_str())
        .chain([lake::local::engine::LEDGER_SCHEMA]);
    for zone in schemas {
        let Some(schema) = catalog.schema(zone) else {
            continue;
        };
        let mut names = schema.table_names();
        names.sort();
        for name in names {
            let Some(table) = schema.table(&name).await? else {
                continue;
            };
            n += usize::from(zone != lake::local::engine::LEDGER_SCHEMA);
            writeln!(out, "{zone}.{name}")?;
            for f in table.schema().fields() {
                writeln!(out, "  {:<24} {}", f.name(), sql_type(f.data_type()))?;
            }
        }
    }
    if n == 0 {
        print::note(
            "no_datasets",
            "no datasets yet: `lake run` lands and builds them",
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The SQL name of an Arrow type, as users write it in CASTs.
fn sql_type(t: &lake::local::engine::datafusion::arrow::datatypes::DataType) -> String {
    use lake::local::engine::datafusion::arrow::datatypes::DataType as T;
    match t {
        T::Utf8 | T::Utf8View | T::LargeUtf8 => "VARCHAR".into(),
        T::Boolean => "BOOLEAN".into(),
        T::Int8 => "TINYINT".into(),
        T::Int16 => "SMALLINT".into(),
        T::Int32 => "INT".into(),
        T::Int64 => "BIGINT".into(),
        T::UInt8 | T::UInt16 | T::UInt32 | T::UInt64 => format!("{t} (unsigned)"),
        T::Float32 => "FLOAT".into(),
        T::Float64 => "DOUBLE".into(),
        T::Date32 | T::Date64 => "DATE".into(),
        T::Timestamp(_, None) => "TIMESTAMP".into(),
        T::Timestamp(_, Some(tz)) => format!("TIMESTAMP WITH TIME ZONE ({tz})"),
        T::Decimal128(p, s) | T::Decimal256(p, s) => format!("DECIMAL({p}, {s})"),
        T::Dictionary(_, v) => sql_type(v),
        other => other.to_string(),
    }
}
