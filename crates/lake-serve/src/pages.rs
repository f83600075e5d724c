//! The pages. Every value goes through maud, which escapes it: a dataset holding `<script>`
//! shows it as text.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lake::core::config::{ChartKind, ChartSpec, Zone};
use lake::core::freshness::{self, Freshness};
use lake::core::ledger::{self, RunRecord, RunSummary, Status, StepRecord};
use lake::core::publish::{self, Dataset};
use lake::local::engine::datafusion::arrow::array::RecordBatch;
use lake::local::engine::datafusion::arrow::datatypes::SchemaRef;
use lake::local::engine::datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use lake::core::human::{bytes, millis};

use crate::queries::{Lane, QueryError};
use crate::{App, chart, graph};

/// Rows per page of a dataset.
const PAGE_ROWS: usize = 100;

const STYLE: &str = r#"
body { font-family: system-ui, sans-serif; margin: 0; color: #222; }
nav { background: #1e3a5f; padding: 10px 20px; }
nav a { color: #fff; margin-right: 18px; text-decoration: none; font-weight: 600; }
nav span { color: #9fb3c8; float: right; }
main { padding: 16px 20px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f3f5f8; }
.status-succeeded { color: #1b5e20; } .status-failed { color: #b71c1c; font-weight: bold; }
.error { background: #fff0f0; border: 1px solid #e57373; padding: 8px; white-space: pre-wrap; font-family: monospace; }
.chart { display: inline-block; margin: 0 16px 16px 0; vertical-align: top; }
textarea { width: 100%; font-family: monospace; }
.muted { color: #777; }
.stale { color: #b00020; font-weight: bold; }
"#;

/// Reload the page when a run ends (the ledger's newest record changes), except where the
/// reader is typing. Served as a file: the pages' security policy allows no inline script.
const POLL: &str = r#"
(function () {
  if (location.pathname === '/query') return;
  var seen = null;
  function poll() {
    fetch('/api/version', { credentials: 'same-origin' }).then(function (r) { return r.text(); })
      .then(function (v) { if (seen !== null && v !== seen) location.reload(); seen = v; })
      .catch(function () {});
  }
  poll(); setInterval(poll, 3000);
})();
"#;

fn layout(app: &App, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · lake " (app.lake.pipeline.name) }
                link rel="stylesheet" href="/assets/lake.css";
            }
            body {
                nav {
                    a href="/" { "Home" }
                    a href="/pipeline" { "Pipeline" }
                    a href="/runs" { "Runs" }
                    a href="/datasets" { "Datasets" }
                    a href="/query" { "Query" }
                    span { "lake · " (app.lake.pipeline.name) " · " (app.lake.store.root_url()) }
                }
                main {
                    h1 { (title) }
                    (body)
                }
                script src="/assets/lake.js" {}
            }
        }
    }
}

/// A page that could not be made: its error in place, with a status.
fn failed(app: &App, status: StatusCode, title: &str, message: &str) -> Response {
    (
        status,
        layout(app, title, html! { div.error { (message) } }),
    )
        .into_response()
}

fn status_class(s: Status) -> String {
    format!(
        "status-{}",
        serde_json::to_value(s)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    )
}

/// Rows as an HTML table, every value escaped.
fn rows_table(schema: &SchemaRef, batches: &[RecordBatch]) -> Markup {
    let opts = FormatOptions::default().with_null("NULL");
    html! {
        table.rows {
            thead { tr { @for f in schema.fields() { th { (f.name()) } } } }
            tbody {
                @for b in batches {
                    @let formatters: Vec<_> = b.columns().iter().filter_map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).ok()).collect();
                    @for i in 0..b.num_rows() {
                        tr { @for f in &formatters { td { (f.value(i).to_string()) } } }
                    }
                }
            }
        }
    }
}

/// The pages' style sheet.
pub(crate) async fn css() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// The pages' one script.
pub(crate) async fn js() -> Response {
    asset("text/javascript; charset=utf-8", POLL)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A query's schema and rows.
pub(crate) type Rows = (SchemaRef, Vec<RecordBatch>);

/// A query's first `limit` rows, on the query threads in `lane`, within the server's limits.
/// A page's queries are answered from the last second's answer when there is one.
async fn rows(app: &App, lane: Lane, sql: &str, limit: usize) -> Result<Rows, QueryError> {
    let run = || {
        let lake = app.lake.clone();
        let sql = sql.to_owned();
        app.queries.run(lane, async move {
            lake.query_rows(&sql, limit)
                .await
                .map_err(|e| lake::core::run::error_chain(&e))
        })
    };
    match lane {
        Lane::Page => app.page_rows.get(&format!("{limit}\n{sql}"), run()).await,
        Lane::Visitor => run().await,
    }
}

/// The status of a query that gave no rows: 503 when the server was too busy to run it.
fn query_status(e: &QueryError) -> StatusCode {
    match e {
        QueryError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// A chart of the lake: its SVG, or its error in its place.
async fn chart_markup(app: &App, spec: &ChartSpec) -> Markup {
    let result = async {
        let (schema, batches) = rows(app, Lane::Page, &spec.sql, chart::MAX_POINTS)
            .await
            .map_err(|e| e.to_string())?;
        if spec.kind == ChartKind::Table {
            return Ok(rows_table(&schema, &batches));
        }
        let data = chart::series(spec, &batches)?;
        chart::svg(spec, &data, 640, 360).map(PreEscaped)
    }
    .await;
    html! {
        div.chart data-chart=(spec.name) {
            @match result {
                Ok(m) => (m),
                Err(e) => {
                    h3 { (spec.title) }
                    div.error { "chart " (spec.name) " (lake.toml line " (spec.line) "): " (e) }
                }
            }
        }
    }
}

/// Every run's summary from the ledger's index, oldest first (as read within the last second).
pub(crate) async fn ledger_summaries(app: &App) -> Result<Arc<Vec<RunSummary>>, String> {
    app.summaries
        .get("summaries", async {
            let chain = |e: lake::core::Error| lake::core::run::error_chain(&e);
            let store = &*app.lake.store;
            let version = ledger::index_version(store).await.map_err(chain)?;
            let kept = app
                .parsed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if let (Some(v), Some((was, runs))) = (&version, kept)
                && *v == was
            {
                return Ok(runs);
            }
            let runs = Arc::new(ledger::summaries(store).await.map_err(chain)?);
            if let Some(v) = version {
                *app.parsed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some((v, Arc::clone(&runs)));
            }
            Ok(runs)
        })
        .await
}

/// How many runs the runs page shows.
const RUNS_PAGE: usize = 100;

/// The newest `n` runs read whole, oldest first (as read within the last second).
async fn recent_runs(app: &App, n: usize) -> Result<Arc<Vec<RunRecord>>, String> {
    let all = ledger_summaries(app).await?;
    app.runs
        .get(&format!("recent-{n}"), async {
            ledger::newest(&*app.lake.store, &all, n)
                .await
                .map(Arc::new)
                .map_err(|e| lake::core::run::error_chain(&e))
        })
        .await
}

/// The newest runs back to the last one that ran each step and landed each source (every run
/// when one never did), oldest first: what the pipeline page draws from.
pub(crate) async fn covering_runs(app: &App) -> Result<Arc<Vec<RunRecord>>, String> {
    let all = ledger_summaries(app).await?;
    app.runs
        .get("covering", async {
            let p = &app.lake.pipeline;
            let mut steps: std::collections::BTreeSet<&str> =
                p.steps.keys().map(String::as_str).collect();
            let mut sources: std::collections::BTreeSet<&str> =
                p.sources.keys().map(String::as_str).collect();
            let mut out = Vec::new();
            for s in all.iter().rev() {
                if steps.is_empty() && sources.is_empty() {
                    break;
                }
                let r = ledger::get(&*app.lake.store, &s.run_id)
                    .await
                    .map_err(|e| lake::core::run::error_chain(&e))?;
                for st in r.steps.iter().filter(|st| st.status != Status::UpToDate) {
                    steps.remove(st.name.as_str());
                }
                for i in &r.ingest {
                    sources.remove(i.source.as_str());
                }
                out.push(r);
            }
            out.reverse();
            Ok(Arc::new(out))
        })
        .await
}

pub(crate) async fn home(State(app): State<Arc<App>>) -> Response {
    let mut charts = Vec::new();
    for spec in app.lake.pipeline.charts.values() {
        charts.push(chart_markup(&app, spec).await);
    }
    let runs = recent_runs(&app, 5).await.unwrap_or_default();
    let body = html! {
        @if charts.is_empty() {
            p.muted { "No charts yet: add a [charts.<name>] table to lake.toml (see docs/lake-toml.md)." }
        }
        @for c in &charts { (c) }
        h2 { "Latest runs" }
        (runs_table(runs.iter().rev().take(5)))
    };
    layout(&app, &app.lake.pipeline.name, body).into_response()
}

fn runs_table<'a>(runs: impl Iterator<Item = &'a RunRecord>) -> Markup {
    html! {
        table.runs {
            tr { th { "run" } th { "status" } th { "date" } th { "started" } th { "duration" } th { "steps (rows / rejected / bytes)" } th { "error" } }
            @for r in runs {
                tr data-run=(r.run_id) data-status=(r.status.to_string()) {
                    td { a href={"/runs/" (r.run_id)} { (r.run_id) } }
                    td class=(status_class(r.status)) { (r.status.to_string()) }
                    td { (r.date.to_string()) }
                    td { (r.started.format("%Y-%m-%d %H:%M:%S UTC").to_string()) }
                    td { (r.ended.map_or("-".into(), |e| format!("{:.1}s", (e - r.started).num_milliseconds() as f64 / 1000.0))) }
                    td {
                        @for s in &r.steps {
                            div {
                                span class=(status_class(s.status)) { (s.name) ": " (s.status.to_string()) }
                                @if s.status == Status::Succeeded {
                                    " · " (s.rows.map_or("-".into(), |n| n.to_string())) " / " (s.rejected.unwrap_or(0)) " / " (bytes(s.bytes.unwrap_or(0)))
                                }
                            }
                        }
                        @for s in &r.sinks {
                            div { span class=(status_class(s.status)) { "sink " (s.name) ": " (s.status.to_string()) } }
                        }
                    }
                    td {
                        @for s in r.steps.iter().filter(|s| s.status == Status::Failed) {
                            div.error { "step " (s.name) ": " (s.error.as_deref().unwrap_or("")) }
                        }
                        @for s in r.sinks.iter().filter(|s| s.status == Status::Failed) {
                            div.error { "sink " (s.name) ": " (s.error.as_deref().unwrap_or("")) }
                        }
                        @for i in r.ingest.iter().filter(|i| i.status == Status::Failed) {
                            div.error { "ingest " (i.source) " " (i.date.to_string()) ": " (i.error.as_deref().unwrap_or("")) }
                        }
                        @if let Some(e) = &r.error { div.error { (e) } }
                    }
                }
            }
        }
    }
}

/// Each step's newest record that did work (an up-to-date rerun did none), by step, from
/// `runs` oldest first: what the pipeline page and `/metrics` say of a step's last run.
pub(crate) fn last_steps(runs: &[RunRecord]) -> std::collections::BTreeMap<&str, &StepRecord> {
    let mut out = std::collections::BTreeMap::new();
    for r in runs {
        for s in r.steps.iter().filter(|s| s.status != Status::UpToDate) {
            out.insert(s.name.as_str(), s);
        }
    }
    out
}

pub(crate) async fn pipeline(State(app): State<Arc<App>>) -> Response {
    let runs = covering_runs(&app).await.unwrap_or_default();
    let p = &app.lake.pipeline;
    let (mut nodes, edges) = graph::nodes(p, &runs);
    let last_steps = last_steps(&runs);
    let last_step = |name: &str| last_steps.get(name).copied();
    let fresh = ages(&app).await;
    graph::mark_stale(&mut nodes, &fresh);
    let mark = |dataset: String| freshness_mark(fresh.iter().find(|f| f.dataset == dataset));
    let body = html! {
        (graph::svg(&nodes, &edges))
        h2 { "Sources" }
        table {
            tr { th { "source" } th { "kind" } th { "what it fetches" } th { "window" } th { "last window" } th { "schedule" } th { "freshness" } }
            @for (name, s) in &p.sources {
                tr {
                    td { (name) }
                    td { (s.kind) }
                    td { (s.config.describe(s)) }
                    td { (s.window.to_string()) }
                    td { (nodes.iter().find(|n| n.id == format!("source:{name}")).map_or(String::new(), |n| n.detail.clone())) }
                    td { (p.schedule.as_ref().map_or("none (lake run by hand)".into(), |s| format!("{} ({})", s.cron, s.timezone))) }
                    td { (mark(format!("raw/{name}"))) }
                }
            }
        }
        h2 { "Steps" }
        table {
            tr { th { "step" } th { "kind" } th { "inputs" } th { "output" } th { "last run" } th { "duration" } th { "rows" } th { "rejected" } th { "freshness" } }
            @for name in &p.order {
                @let spec = &p.steps[name];
                @let last = last_step(name);
                tr {
                    td { (name) }
                    td { (spec.kind_name()) }
                    td { (spec.inputs.iter().map(|i| i.dataset.to_string()).collect::<Vec<_>>().join(", ")) }
                    td { (spec.output.as_ref().map_or("-".into(), ToString::to_string)) }
                    td { (last.map_or("never".into(), |s| s.status.to_string())) }
                    td { (millis(last.and_then(|s| s.duration_ms))) }
                    td { (last.and_then(|s| s.rows).map_or("-".into(), |n| n.to_string())) }
                    td { (last.and_then(|s| s.rejected).map_or("-".into(), |n| n.to_string())) }
                    td { (spec.output.as_ref().map_or(html! {}, |o| mark(o.to_string()))) }
                }
            }
        }
    };
    layout(&app, "Pipeline", body).into_response()
}

pub(crate) async fn runs(State(app): State<Arc<App>>) -> Response {
    let total = ledger_summaries(&app).await.map(|s| s.len());
    match (total, recent_runs(&app, RUNS_PAGE).await) {
        (Ok(total), Ok(runs)) => {
            let earlier = total.saturating_sub(runs.len());
            let body = html! {
                (runs_table(runs.iter().rev()))
                @if earlier > 0 {
                    p.muted { (earlier) " earlier runs: " code { "lake runs --all" } }
                }
            };
            layout(&app, "Runs", body).into_response()
        }
        (Err(e), _) | (_, Err(e)) => failed(&app, StatusCode::INTERNAL_SERVER_ERROR, "Runs", &e),
    }
}

fn objects_table(objects: &[publish::ObjectEntry]) -> Markup {
    html! {
        table {
            tr { th { "object" } th { "size" } th { "sha256" } }
            @for o in objects { tr { td { (o.key) } td { (bytes(o.size)) } td { code { (o.sha256) } } } }
        }
    }
}

pub(crate) async fn run(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let r = match ledger::find(&*app.lake.store, &id).await {
        Ok(r) => r,
        Err(e) => {
            return failed(
                &app,
                StatusCode::NOT_FOUND,
                "Run",
                &lake::core::run::error_chain(&e),
            );
        }
    };
    let body = html! {
        p { "status " b class=(status_class(r.status)) { (r.status.to_string()) } " · date " (r.date.to_string()) " · backend " (r.backend) " · by " (r.holder) }
        @if let Some(e) = &r.error { div.error { (e) } }
        @for i in &r.ingest {
            h2 { "ingest " (i.source) " " (i.date.to_string()) ": " (i.status.to_string()) }
            @if let Some(e) = &i.error { div.error { (e) } }
            (objects_table(&i.objects))
        }
        @for s in &r.steps {
            h2 { "step " (s.name) ": " span class=(status_class(s.status)) { (s.status.to_string()) } }
            p { (millis(s.duration_ms)) " · rows " (s.rows.map_or("-".into(), |n| n.to_string())) " · rejected " (s.rejected.unwrap_or(0)) " · " (bytes(s.bytes.unwrap_or(0))) }
            @if let Some(e) = &s.error { div.error { (e) } }
            h3 { "inputs" } (objects_table(&s.inputs))
            h3 { "outputs" (s.output.as_ref().map(|o| format!(" → {o}")).unwrap_or_default()) } (objects_table(&s.output_objects))
        }
        @for s in &r.sinks {
            h2 { "sink " (s.name) ": " (s.status.to_string()) }
            p { (s.from) " → " (s.table) " · rows " (s.rows.map_or("-".into(), |n| n.to_string())) " · " (millis(Some(s.duration_ms))) }
            @if let Some(e) = &s.error { div.error { (e) } }
        }
    };
    layout(&app, &format!("Run {}", r.run_id), body).into_response()
}

/// The committed datasets, each with the run that wrote it (when one run did).
pub(crate) type Datasets = Arc<Vec<(Dataset, Option<String>)>>;

/// Every committed dataset with the run that wrote it (when one run did), as read within the
/// last second.
async fn all_datasets(app: &App) -> Result<Datasets, String> {
    app.datasets
        .get("datasets", async {
            let all = publish::list_datasets(&*app.lake.store)
                .await
                .map_err(|e| lake::core::run::error_chain(&e))?;
            let mut out = Vec::with_capacity(all.len());
            for d in all {
                let run = publish::read_manifest(&*app.lake.store, &d.prefix)
                    .await
                    .ok()
                    .flatten()
                    .map(|m| m.run_id);
                out.push((d, run));
            }
            Ok(Arc::new(out))
        })
        .await
}

pub(crate) async fn datasets(State(app): State<Arc<App>>) -> Response {
    let all = match all_datasets(&app).await {
        Ok(d) => d,
        Err(e) => return failed(&app, StatusCode::INTERNAL_SERVER_ERROR, "Datasets", &e),
    };
    let fresh = ages(&app).await;
    let body = html! {
        table.datasets {
            tr { th { "table" } th { "objects" } th { "size" } th { "written by run" } th { "freshness" } }
            @for (d, written) in all.iter() {
                tr {
                    td { a href={"/datasets/" (d.zone.as_str()) "/" (d.name)} { (d.zone.as_str()) "." (d.name) } }
                    td { (d.objects.len()) }
                    td { (bytes(d.objects.iter().map(|o| o.size).sum())) }
                    td { @if let Some(r) = written { a href={"/runs/" (r)} { (r) } } @else { span.muted { "(windows of several runs)" } } }
                    td { (freshness_mark(fresh.iter().find(|f| f.dataset == format!("{}/{}", d.zone.as_str(), d.name)))) }
                }
            }
        }
    };
    layout(&app, "Datasets", body).into_response()
}

/// Every dataset's age against its `freshness`, now (none when the lake cannot be read: the
/// page says so elsewhere).
/// Each dataset's age and freshness, checked at most once a second (one window-index read per
/// source, one manifest read per step), for every page and `/metrics`.
pub(crate) async fn ages(app: &App) -> Arc<Vec<Freshness>> {
    app.ages
        .get("ages", async {
            freshness::check(
                &app.lake.pipeline,
                &*app.lake.store,
                lake::core::chrono::Utc::now(),
            )
            .await
            .map(Arc::new)
        })
        .await
        .unwrap_or_default()
}

/// `stale: 27h00m old, freshness 26h`, `fresh: …`, or nothing without a limit.
fn freshness_mark(f: Option<&Freshness>) -> Markup {
    let Some(f) = f else {
        return html! {};
    };
    let (age, limit) = (f.age_text(), f.limit_text());
    html! {
        @match (f.status, limit) {
            (freshness::State::Stale, Some(l)) => span.stale { "stale: " (age) ", freshness " (l) },
            (freshness::State::Ok, Some(l)) => span { "fresh: " (age) ", freshness " (l) },
            _ => span.muted { "-" },
        }
    }
}

/// The committed dataset `zone`.`name`: a 400 for what is not a dataset name (`../x`), a 404
/// for one the lake does not have.
async fn find_dataset(app: &App, zone: &str, name: &str) -> Result<Dataset, (StatusCode, String)> {
    let zone_ok = Zone::ALL.iter().any(|z| z.as_str() == zone);
    let name_ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !zone_ok || !name_ok {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "{zone:?}/{name:?} is not a dataset name: zones are raw, trusted and refined; names are letters, digits, '_' and '-'"
            ),
        ));
    }
    all_datasets(app)
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e))?
        .iter()
        .map(|(d, _)| d)
        .find(|d| d.zone.as_str() == zone && d.name == name)
        .cloned()
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("the lake has no dataset {zone}.{name}"),
            )
        })
}

fn table_ref(d: &Dataset) -> String {
    format!(
        "\"{}\".\"{}\"",
        d.zone.as_str(),
        d.name.replace('"', "\"\"")
    )
}

#[derive(Deserialize)]
pub(crate) struct PageQuery {
    page: Option<usize>,
}

pub(crate) async fn dataset(
    State(app): State<Arc<App>>,
    Path((zone, name)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> Response {
    let d = match find_dataset(&app, &zone, &name).await {
        Ok(d) => d,
        Err((status, e)) => return failed(&app, status, "Dataset", &e),
    };
    let page = q.page.unwrap_or(0);
    let t = table_ref(&d);
    let count_sql = format!("SELECT count(*) AS n FROM {t}");
    let page_sql = format!(
        "SELECT * FROM {t} LIMIT {PAGE_ROWS} OFFSET {}",
        page * PAGE_ROWS
    );
    let (count, shown) = tokio::join!(
        rows(&app, Lane::Page, &count_sql, 1),
        rows(&app, Lane::Page, &page_sql, PAGE_ROWS)
    );
    let count: Option<u64> = count.ok().and_then(|(_, b)| {
        b.first().and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<lake::local::engine::datafusion::arrow::array::Int64Array>()
                .map(|a| a.value(0) as u64)
        })
    });
    let manifest = publish::read_manifest(&*app.lake.store, &d.prefix)
        .await
        .ok()
        .flatten();
    let mut partitions: Vec<String> = d
        .objects
        .iter()
        .filter_map(|o| {
            let rel = o.key.strip_prefix(&d.prefix)?.trim_start_matches('/');
            let dir = rel.rsplit_once('/')?.0;
            dir.split('/')
                .all(|s| s.contains('='))
                .then(|| dir.to_owned())
        })
        .collect();
    partitions.sort();
    partitions.dedup();
    // The rows its step set aside, when it set some aside.
    let mut rejected_of = None;
    if let Some(step) = app.lake.pipeline.steps.values().find(|s| {
        s.output
            .as_ref()
            .is_some_and(|o| o.zone == d.zone && o.name == d.name)
    }) && let Ok(Some(_)) = publish::read_manifest(
        &*app.lake.store,
        &publish::rejected_prefix(d.zone, &step.name),
    )
    .await
    {
        rejected_of = Some(format!("_rejected_{}", step.name));
    }
    // A merged dataset's last batch: what the run that wrote it changed.
    let mut merged = None;
    if let Some(m) = &manifest
        && let Ok(r) = ledger::get(&*app.lake.store, &m.run_id).await
    {
        merged = r
            .steps
            .iter()
            .find(|s| {
                s.merged.is_some()
                    && s.output
                        .as_deref()
                        .is_some_and(|o| o == format!("{}/{}", d.zone.as_str(), d.name))
            })
            .and_then(|s| s.merged);
    }
    let dataset = format!("{}/{}", d.zone.as_str(), d.name);
    let fresh = ages(&app)
        .await
        .iter()
        .find(|f| f.dataset == dataset)
        .cloned();
    let body = html! {
        @if let Some(f) = &fresh && f.status != freshness::State::Unchecked {
            p { (freshness_mark(Some(f))) }
        }
        @if let Some(c) = merged {
            p.merged {
                "last batch: " (c.inserted) " inserted · " (c.updated) " updated · " (c.deleted) " deleted · "
                (c.rewritten_files) " files rewritten, " (c.kept_files) " kept"
            }
        }
        p {
            (bytes(d.objects.iter().map(|o| o.size).sum())) " in " (d.objects.len()) " objects · "
            span.rowcount { (count.map_or("? rows".into(), |n| format!("{n} rows"))) }
            @if let Some(m) = &manifest { " · written by run " a href={"/runs/" (m.run_id)} { (m.run_id) } }
        }
        p {
            a href={"/datasets/" (zone) "/" (name) "/download?format=csv"} { "download CSV" } " · "
            a href={"/datasets/" (zone) "/" (name) "/download?format=parquet"} { "download Parquet" }
            @if let Some(r) = &rejected_of { " · " a href={"/datasets/" (zone) "/" (r)} { "rejected rows (with _reason)" } }
            @if let Some(step) = name.strip_prefix("_rejected_") { " · " span.muted { "rows step " (step) " set aside, each with its _reason" } }
        }
        @if !partitions.is_empty() {
            h2 { (partitions.len()) " partitions" }
            ul.partitions { @for p in &partitions { li { (p) } } }
        }
        @match &shown {
            Ok((schema, batches)) => {
                h2 { "Schema" }
                table.schema {
                    tr { th { "column" } th { "type" } th { "nullable" } }
                    @for f in schema.fields() { tr { td { (f.name()) } td { (f.data_type().to_string()) } td { (f.is_nullable()) } } }
                }
                h2 { "Rows " (page * PAGE_ROWS + 1) "–" (page * PAGE_ROWS + batches.iter().map(RecordBatch::num_rows).sum::<usize>()) }
                (rows_table(schema, batches))
                p {
                    @if page > 0 { a href={"?page=" (page - 1)} { "← previous" } " " }
                    @if count.is_none_or(|n| ((page + 1) * PAGE_ROWS) < n as usize) { a href={"?page=" (page + 1)} { "next →" } }
                }
            }
            Err(e) => div.error { (e.to_string()) },
        }
    };
    layout(&app, &format!("{zone}.{name}"), body).into_response()
}

#[derive(Deserialize)]
pub(crate) struct DownloadQuery {
    format: Option<String>,
}

pub(crate) async fn download(
    State(app): State<Arc<App>>,
    Path((zone, name)): Path<(String, String)>,
    Query(q): Query<DownloadQuery>,
) -> Response {
    let d = match find_dataset(&app, &zone, &name).await {
        Ok(d) => d,
        Err((status, e)) => return (status, e).into_response(),
    };
    let ext = match q.format.as_deref() {
        None | Some("csv") => "csv",
        Some("parquet") => "parquet",
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("format {other:?}: csv or parquet"),
            )
                .into_response();
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let file = dir.path().join(format!("{}.{ext}", d.name));
    let written = {
        let (lake, sql, file) = (
            app.lake.clone(),
            format!("SELECT * FROM {}", table_ref(&d)),
            file.clone(),
        );
        app.queries
            .run(Lane::Visitor, async move {
                lake.query_to_file(&sql, &file)
                    .await
                    .map_err(|e| lake::core::run::error_chain(&e))
            })
            .await
    };
    if let Err(e) = written {
        let status = match e {
            QueryError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        return (status, e.to_string()).into_response();
    }
    // Streamed from the file: an open file outlives its folder's removal.
    match tokio::fs::File::open(&file).await {
        Ok(f) => (
            [
                (
                    header::CONTENT_TYPE,
                    if ext == "csv" {
                        "text/csv"
                    } else {
                        "application/vnd.apache.parquet"
                    }
                    .to_owned(),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{zone}.{name}.{ext}\""),
                ),
            ],
            axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(f)),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub(crate) async fn chart_svg(State(app): State<Arc<App>>, Path(name): Path<String>) -> Response {
    let name = name.strip_suffix(".svg").unwrap_or(&name);
    let Some(spec) = app.lake.pipeline.charts.get(name) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no [charts.{name}] in lake.toml"),
        )
            .into_response();
    };
    let svg = async {
        let (_, batches) = rows(&app, Lane::Page, &spec.sql, chart::MAX_POINTS)
            .await
            .map_err(|e| (query_status(&e), e.to_string()))?;
        chart::svg(
            spec,
            &chart::series(spec, &batches).map_err(unprocessable)?,
            800,
            450,
        )
        .map_err(unprocessable)
    }
    .await;
    match svg {
        Ok(svg) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Err(e) => e.into_response(),
    }
}

fn unprocessable(e: lake::core::ValueError) -> (StatusCode, String) {
    (StatusCode::UNPROCESSABLE_ENTITY, e.into())
}

#[derive(Deserialize)]
pub(crate) struct SqlQuery {
    sql: Option<String>,
}

pub(crate) async fn query(State(app): State<Arc<App>>, Query(q): Query<SqlQuery>) -> Response {
    let sql = q.sql.unwrap_or_default();
    let result = if sql.trim().is_empty() {
        None
    } else {
        Some(rows(&app, Lane::Visitor, &sql, app.opts.query_rows).await)
    };
    let status = match &result {
        Some(Err(e)) => query_status(e),
        _ => StatusCode::OK,
    };
    let body = html! {
        form method="get" action="/query" {
            textarea name="sql" rows="5" placeholder="SELECT * FROM refined.… (read-only; tables as in `lake query`)" { (sql) }
            p { button type="submit" { "Run" } " " span.muted { "at most " (app.opts.query_rows) " rows, " (app.opts.query_timeout.as_secs()) "s" } }
        }
        @match &result {
            Some(Ok((schema, batches))) => {
                p.result { (batches.iter().map(RecordBatch::num_rows).sum::<usize>()) " rows" }
                (rows_table(schema, batches))
            }
            Some(Err(e)) => div.error { (e.to_string()) },
            None => {}
        }
    };
    (status, layout(&app, "Query", body)).into_response()
}

/// What changes when a run starts or ends: the newest run's id, status and end.
pub(crate) async fn version(State(app): State<Arc<App>>) -> Response {
    // A run written rewrites its pipeline's index: its listing is the version (hashed: the
    // page only compares it).
    if let Ok(Some(v)) = ledger::index_version(&*app.lake.store).await {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        v.hash(&mut h);
        let v = format!("{:016x}", h.finish());
        return ([(header::CACHE_CONTROL, "no-store")], v).into_response();
    }
    let runs = ledger_summaries(&app).await.unwrap_or_default();
    let v = runs.last().map_or_else(String::new, |r| {
        format!(
            "{} {} {}",
            r.run_id,
            r.status,
            r.ended.map(|e| e.to_rfc3339()).unwrap_or_default()
        )
    });
    ([(header::CACHE_CONTROL, "no-store")], v).into_response()
}
