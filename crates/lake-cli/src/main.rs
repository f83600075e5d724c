//! `lake`: run a data-lake pipeline described in `lake.toml`.
//!
//! This binary parses arguments, prints progress and results, and maps errors to exit codes
//! (0 ok, 1 the run failed, 2 bad usage or config). Every decision lives in the libraries.

mod cli;
mod commands;
mod print;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // lake's own logs at the level asked; the libraries below it (the AWS SDK, hyper,
    // DataFusion) only with -vv, where everything is shown.
    let (ours, theirs) = match (args.quiet, args.verbose) {
        (true, _) => (LevelFilter::ERROR, LevelFilter::OFF),
        (false, 0) => (LevelFilter::WARN, LevelFilter::OFF),
        (false, 1) => (LevelFilter::INFO, LevelFilter::OFF),
        (false, _) => (LevelFilter::DEBUG, LevelFilter::DEBUG),
    };
    // Colors only where they render: a terminal, and not when NO_COLOR says otherwise.
    let ansi = match args.color {
        cli::Color::Always => true,
        cli::Color::Never => false,
        cli::Color::Auto => {
            use std::io::IsTerminal;
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    // The live progress lines (indicatif draws them with `console`) follow the same choice.
    // (indicatif's styles ask console about stdout's colors even when drawing on stderr).
    console::set_colors_enabled_stderr(ansi);
    console::set_colors_enabled(ansi);
    let filter = Targets::new()
        .with_target("lake", ours)
        .with_default(theirs);
    if args.log_format == cli::LogFormat::Json {
        print::set_json(true);
        tracing_subscriber::registry()
            .with(JsonLogs)
            .with(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_max_level(LevelFilter::DEBUG)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_target(false)
            .finish()
            .with(filter)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::dispatch(args)) {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`lake runs | head`) is not an error.
            if print::stdout_closed()
                || err.chain().any(|c| {
                    c.downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
                })
            {
                return ExitCode::SUCCESS;
            }
            if print::json() {
                let kind = err
                    .chain()
                    .find_map(|c| c.downcast_ref::<lake::core::Error>())
                    .map(lake::core::Error::kind);
                let chain: Vec<String> = err.chain().skip(1).map(ToString::to_string).collect();
                let fields = serde_json::json!({ "level": "error", "kind": kind, "chain": chain });
                eprintln!("{}", print::json_line("error", &err.to_string(), fields));
                return ExitCode::from(exit_code(&err));
            }
            let mut stderr = std::io::stderr().lock();
            // Errors quote servers and data: shown, never obeyed by the terminal.
            let shown = |t: String| lake::core::human::printable(&t).into_owned();
            let _ = writeln!(stderr, "error: {}", shown(err.to_string()));
            for cause in err.chain().skip(1) {
                let _ = writeln!(stderr, "caused by: {}", shown(cause.to_string()));
            }
            ExitCode::from(exit_code(&err))
        }
    }
}

/// 2 for bad usage or configuration, 1 for everything else.
fn exit_code(err: &anyhow::Error) -> u8 {
    let usage = err.chain().any(|c| {
        c.downcast_ref::<lake::core::Error>()
            .is_some_and(lake::core::Error::is_usage)
            || c.downcast_ref::<cli::UsageError>().is_some()
    });
    if usage { 2 } else { 1 }
}

/// `--log-format json`: each log event (a warning, `-v`'s info lines) as one JSON line with
/// `event = "log"`, its level, its message and its fields.
struct JsonLogs;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for JsonLogs {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Fields(serde_json::Map<String, serde_json::Value>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0
                    .insert(field.name().to_owned(), format!("{value:?}").into());
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.insert(field.name().to_owned(), value.into());
            }
        }
        let mut fields = Fields(serde_json::Map::new());
        event.record(&mut fields);
        let message = fields
            .0
            .remove("message")
            .and_then(|m| m.as_str().map(str::to_owned))
            .unwrap_or_default();
        fields.0.insert(
            "level".into(),
            event.metadata().level().as_str().to_lowercase().into(),
        );
        eprintln!(
            "{}",
            print::json_line("log", &message, serde_json::Value::Object(fields.0))
        );
    }
}
