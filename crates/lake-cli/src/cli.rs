//! Arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use lake::core::chrono::NaiveDate;

/// Run a batch data-lake pipeline described in one file, lake.toml.
#[derive(Debug, Parser)]
#[command(
    name = "lake",
    version,
    about = "Run a batch data-lake pipeline described in one file, lake.toml",
    long_about = "Run a batch data-lake pipeline described in one file, lake.toml: sources land in a raw \
zone, steps turn it into trusted and refined zones, every run is recorded.\n\n\
Start with `lake init`, then `lake run`; `lake plan` shows what a run would do, `lake query` \
reads what it made. The same file runs on this machine, on a Spark cluster (backend = \"spark\") \
and on AWS EMR (backend = \"emr\").",
    after_help = "Every lake.toml key: docs/lake-toml.md. Exit codes: 0 ok, 1 the run failed, 2 bad usage or configuration, 130 cancelled.",
    propagate_version = true
)]
pub(crate) struct Args {
    /// The pipeline file.
    #[arg(
        short,
        long,
        global = true,
        default_value = "lake.toml",
        value_name = "FILE"
    )]
    pub(crate) config: PathBuf,
    /// Apply the `[env.NAME]` overrides of lake.toml.
    #[arg(long, global = true, value_name = "NAME")]
    pub(crate) env: Option<String>,
    /// More output (-v: step output, -vv: debug logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Only errors and results.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// Color in logs: auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    pub(crate) color: Color,
    /// What stderr's lines are: text for people, or one JSON object per line (with the run id,
    /// a timestamp and the event) for CloudWatch, Loki or Datadog. Also LAKE_LOG_FORMAT.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "LAKE_LOG_FORMAT",
        default_value = "text",
        value_name = "FORMAT"
    )]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Write a working example pipeline (a commented lake.toml and its data) into DIR.
    Init {
        /// Where to write it (created if missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Which example: the German credit CSV, or an Open-Meteo hourly weather response.
        #[arg(long, value_enum, default_value = "credit")]
        example: Example,
    },
    /// Print lake's man page (roff), e.g. `lake man > ~/.local/share/man/man1/lake.1`.
    Man,
    /// Print the shell completions of lake, e.g. `lake completions bash > ~/.local/share/bash-completion/completions/lake`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Check lake.toml and report every problem with its line.
    Validate {
        /// Print JSON: `valid`, and the pipeline or every problem with its file, line, column
        /// and key.
        #[arg(long)]
        json: bool,
    },
    /// Show what a run would do, in order, without running anything.
    Plan {
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ingest the sources the steps read, then run the steps.
    Run {
        /// The logical date (default: today, UTC).
        #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD")]
        date: Option<NaiveDate>,
        /// Run only this step (repeatable); its inputs must exist already.
        #[arg(long, value_name = "STEP")]
        only: Vec<String>,
        /// Rerun steps whose output is up to date.
        #[arg(long)]
        force: bool,
        /// Wait this long for another run of the pipeline to finish (default: fail at once).
        #[arg(long, value_parser = parse_wait, value_name = "DURATION", default_value = "0s")]
        wait: std::time::Duration,
        /// EMR: leave the cluster running at the end (the next run or `lake clusters --reap`
        /// terminates it).
        #[arg(long)]
        keep_cluster: bool,
    },
    /// Fetch sources into raw/ without running steps. Without dates: catch up from each
    /// source's cursor (else its `start`) to today, window by window, oldest first.
    Ingest {
        /// Sources to fetch (default: all).
        sources: Vec<String>,
        /// Fetch the window holding this day.
        #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD", conflicts_with_all = ["from", "to"])]
        date: Option<NaiveDate>,
        /// First day of a range (with --to).
        #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD", requires = "to")]
        from: Option<NaiveDate>,
        /// Last day of a range, inclusive; alone: catch up to this day instead of today.
        #[arg(long, value_parser = parse_date, value_name = "YYYY-MM-DD")]
        to: Option<NaiveDate>,
        /// Fetch complete windows again and replace them.
        #[arg(long)]
        force: bool,
        /// Wait this long for another run of the pipeline to finish; then the windows it
        /// landed are skipped ("0s": fail at once).
        #[arg(long, value_parser = parse_wait, value_name = "DURATION", default_value = "10m")]
        wait: std::time::Duration,
    },
    /// Load committed datasets into their `[sinks.*]` tables (PostgreSQL), without running
    /// steps. A sink whose table holds the dataset's current data is skipped.
    Sink {
        /// Sinks to run (default: all that are on).
        sinks: Vec<String>,
        /// Load again even when the table holds the dataset's current data.
        #[arg(long)]
        force: bool,
        /// Wait this long for another run of the pipeline to finish ("0s": fail at once).
        #[arg(long, value_parser = parse_wait, value_name = "DURATION", default_value = "10m")]
        wait: std::time::Duration,
    },
    /// List runs from the ledger, or show one.
    Runs {
        #[command(subcommand)]
        show: Option<RunsCommand>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// How many of the newest runs to list.
        #[arg(long, short = 'n', default_value_t = 50, conflicts_with = "all")]
        last: usize,
        /// List every run.
        #[arg(long)]
        all: bool,
    },
    /// Query the lake with SQL: tables raw.<source>, trusted.<dataset>, refined.<dataset>.
    /// Without SQL, list the tables and their columns.
    Query {
        /// One SELECT, e.g. "SELECT * FROM refined.credit_by_purpose".
        sql: Option<String>,
        /// How to print rows (default: table on a terminal, csv otherwise).
        #[arg(long, value_enum)]
        format: Option<QueryFormat>,
        /// Write the rows to FILE (.parquet or .csv) instead of printing them.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Where the query runs: the embedded engine over the committed data, or Athena over
        /// the `[catalog]` database's tables (it prints the data scanned and its cost).
        #[arg(long, value_enum, default_value = "embedded")]
        engine: QueryEngine,
        /// Read each Iceberg table (`table_format = "iceberg"`) as it was after run RUN_ID,
        /// or at TIME (UTC, `2024-05-01T12:00:00Z`): its newest snapshot then.
        #[arg(long, value_name = "RUN_ID|TIME")]
        as_of: Option<String>,
    },
    /// Check that this lake.toml can run here: the file, AWS credentials and region (for an
    /// s3:// root), the root reachable and writable. Exits 1 when a check fails.
    Doctor {
        /// Print JSON: `ok` and every check with its name, result, detail and fix.
        #[arg(long)]
        json: bool,
    },
    /// Check every committed object against its manifest (size and SHA-256) and find what no
    /// manifest lists (left by a killed run). Exits 1 when anything is wrong.
    Fsck {
        /// Remove what no manifest lists and the staging of runs that are gone (takes the
        /// pipeline's lock).
        #[arg(long)]
        repair: bool,
        /// Compare sizes only; do not read objects back.
        #[arg(long)]
        quick: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the least IAM policy (JSON) this lake.toml needs on AWS.
    IamPolicy,
    /// List the EMR clusters lake started that are still active (tagged lake:pipeline).
    Clusters {
        /// Terminate this pipeline's clusters whose run is no longer live.
        #[arg(long)]
        reap: bool,
        /// Print JSON: `active` (and with --reap, `reaped`), each with id, name, state, tags
        /// and creation time.
        #[arg(long)]
        json: bool,
    },
    /// Run the pipeline on its `[schedule]`, in the foreground: at each tick, `lake run` for
    /// the tick's date; on start, the ticks missed within `catchup`. One run at a time;
    /// Ctrl-C or SIGTERM lets the current run tear down, then exits.
    Schedule {
        #[command(subcommand)]
        command: Option<ScheduleCommand>,
        /// Run what is due now and exit (for a system cron or a CI job).
        #[arg(long)]
        once: bool,
    },
    /// The pipeline, its runs, datasets and charts in a browser (a local web app).
    Serve {
        /// The address to listen on; another than 127.0.0.1 needs --token.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
        /// A token every request must carry, 16 characters or more (default:
        /// $LAKE_SERVE_TOKEN, which the process list does not show).
        #[arg(long, value_name = "TOKEN")]
        token: Option<String>,
        /// A host name requests may use besides the bound address (the name of a proxy in
        /// front): NAME for any port, or NAME:PORT. Repeat for several.
        #[arg(long = "allow-host", value_name = "NAME")]
        allow_hosts: Vec<String>,
    },
    /// Draw a `[charts.<name>]` of lake.toml to an SVG or PNG file.
    Chart {
        /// The chart's name.
        name: String,
        /// The file to write (`.svg` or `.png`).
        #[arg(long, short, value_name = "FILE")]
        output: std::path::PathBuf,
    },
    /// The lake as tables for other engines.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Every dataset's age against its `freshness`: `ok`, `stale` or `-` (no limit); exits 1
    /// when any is stale.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Expire table snapshots older than `[lake] retain_snapshots` and delete the files no
    /// snapshot and no manifest needs (Iceberg tables; takes the pipeline's lock).
    Vacuum {
        /// Print JSON: each table's expired snapshots, deleted files and bytes.
        #[arg(long)]
        json: bool,
    },
    /// List zones, datasets and objects.
    Ls {
        /// A zone (raw, trusted, refined), a dataset (raw/credit) or any path below.
        path: Option<String>,
        /// Print JSON: the zones' folders, or the objects under PATH.
        #[arg(long)]
        json: bool,
    },
}

/// What stderr's lines are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Lines for people (live lines on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// When logs are colored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Color {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The example `lake init` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Example {
    /// 1,000 loans: typed and checked into trusted/credit, summarised per purpose.
    Credit,
    /// An hourly forecast: one typed row per hour, summarised per day.
    Weather,
}

/// Where `lake query` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum QueryEngine {
    /// The embedded engine (DataFusion) over the committed data, on any root.
    Embedded,
    /// Amazon Athena over the Glue tables of `[catalog]`.
    Athena,
}

/// How `lake query` prints rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum QueryFormat {
    /// An aligned table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleCommand {
    /// The next ticks, the recent ones with their runs, and what is due.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a systemd service and timer, or a crontab line, that run `lake schedule --once`
    /// in this folder.
    Install {
        /// A systemd service and timer (a user unit, for `systemctl --user`).
        #[arg(long, conflicts_with = "cron", required_unless_present = "cron")]
        systemd: bool,
        /// With --systemd: a system unit instead, running as the owner of lake.toml
        /// (`User=`/`Group=`).
        #[arg(long, requires = "systemd")]
        system: bool,
        /// A crontab line.
        #[arg(long)]
        cron: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum CatalogCommand {
    /// Print CREATE statements for every committed Parquet dataset (columns, partitions,
    /// locations), for DuckDB, Spark SQL or Athena.
    Ddl {
        /// The engine the statements are for.
        #[arg(long, value_enum, default_value = "athena")]
        dialect: DdlDialect,
    },
    /// Register every committed dataset `[catalog] tables` names in Glue (tables, columns,
    /// partitions), for data published before `[catalog]` existed. Exits 1 when one fails.
    Sync {
        /// Print JSON: `tables`, each with its dataset, table, status, partitions added and
        /// dropped, and error.
        #[arg(long)]
        json: bool,
    },
}

/// The dialect of `lake catalog ddl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum DdlDialect {
    /// Athena (Hive DDL): external tables in a database named after the pipeline.
    Athena,
    /// Spark SQL: parquet tables, partitions recovered.
    Spark,
    /// DuckDB: views over read_parquet.
    Duckdb,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RunsCommand {
    /// Show one run: its inputs, steps, outputs and errors.
    Show {
        /// The run id (a unique prefix is enough).
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|e| format!("{s:?} is not a date in YYYY-MM-DD form ({e})"))
}

fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    if s.trim_end_matches(['s', 'm', 'h']) == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    lake::core::config::parse_duration(s).map_err(String::from)
}

/// An error in the arguments that clap could not catch (exit code 2).
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}
