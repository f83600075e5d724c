//! The pipeline drawn: sources and steps as boxes in columns by depth, arrows from what each
//! step reads, each box coloured by its last run's status.

use std::collections::BTreeMap;

use lake::core::config::{Pipeline, Zone};
use lake::core::ledger::{RunRecord, Status};
use maud::{Markup, html};

/// A box of the graph.
#[derive(Debug, Clone)]
pub struct Node {
    /// `source:<name>` or `step:<name>`.
    pub id: String,
    /// The name shown.
    pub name: String,
    /// `source` or the step's kind.
    pub kind: String,
    /// The line under the name (the dataset a step writes, a source's last window).
    pub detail: String,
    /// The last status, if any run had it.
    pub status: Option<Status>,
    /// Column (0: sources).
    pub depth: usize,
    /// Why its dataset is stale (`27h00m old, freshness 26h`), when it is older than its
    /// `freshness`.
    pub stale: Option<String>,
}

/// Mark the nodes whose dataset `fresh` finds stale (a source's raw dataset, a step's output).
pub fn mark_stale(nodes: &mut [Node], fresh: &[lake::core::freshness::Freshness]) {
    use lake::core::freshness::State;
    for f in fresh.iter().filter(|f| f.status == State::Stale) {
        let id = f.writer.replacen(' ', ":", 1);
        if let Some(n) = nodes.iter_mut().find(|n| n.id == id) {
            n.stale = Some(match f.limit_text() {
                Some(limit) => format!("{}, freshness {limit}", f.age_text()),
                None => f.age_text(),
            });
        }
    }
}

/// The nodes and edges (`from` id → `to` id) of `pipeline`, with the latest status of each
/// in `runs` (oldest first).
pub fn nodes(pipeline: &Pipeline, runs: &[RunRecord]) -> (Vec<Node>, Vec<(String, String)>) {
    let mut last_step: BTreeMap<&str, Status> = BTreeMap::new();
    let mut last_window: BTreeMap<&str, (Status, String)> = BTreeMap::new();
    for r in runs {
        for s in &r.steps {
            last_step.insert(&s.name, s.status);
        }
        for i in &r.ingest {
            last_window.insert(&i.source, (i.status, i.date.to_string()));
        }
    }
    let mut nodes = Vec::new();
    let mut edges = Vec::new();
    for name in pipeline.sources.keys() {
        let window = last_window.get(name.as_str());
        nodes.push(Node {
            id: format!("source:{name}"),
            name: name.clone(),
            kind: "source".into(),
            detail: window.map_or_else(
                || "no window landed yet".to_owned(),
                |(_, d)| format!("last window {d}"),
            ),
            status: window.map(|(s, _)| *s),
            depth: 0,
            stale: None,
        });
    }
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &pipeline.order {
        let spec = &pipeline.steps[name];
        let mut d = 1;
        for input in &spec.inputs {
            let from = if input.dataset.zone == Zone::Raw {
                format!("source:{}", input.dataset.name)
            } else {
                match pipeline
                    .steps
                    .values()
                    .find(|s| s.output.as_ref() == Some(&input.dataset))
                {
                    Some(p) => {
                        d = d.max(depth.get(p.name.as_str()).copied().unwrap_or(1) + 1);
                        format!("step:{}", p.name)
                    }
                    None => continue,
                }
            };
            edges.push((from, format!("step:{name}")));
        }
        for dep in &spec.depends_on {
            d = d.max(depth.get(dep.as_str()).copied().unwrap_or(1) + 1);
            let from = format!("step:{dep}");
            let to = format!("step:{name}");
            if !edges.contains(&(from.clone(), to.clone())) {
                edges.push((from, to));
            }
        }
        depth.insert(name, d);
        nodes.push(Node {
            id: format!("step:{name}"),
            name: name.clone(),
            kind: spec.kind_name().to_owned(),
            detail: spec
                .output
                .as_ref()
                .map_or_else(|| "no output".to_owned(), |o| format!("→ {o}")),
            status: last_step.get(name.as_str()).copied(),
            depth: d,
            stale: None,
        });
    }
    (nodes, edges)
}

/// The colour of a status.
pub fn colour(status: Option<Status>) -> &'static str {
    match status {
        Some(Status::Succeeded) => "#c8e6c9",
        Some(Status::UpToDate) => "#e3f2e1",
        Some(Status::Failed) => "#ffcdd2",
        Some(Status::Skipped | Status::Cancelled) => "#ffe0b2",
        Some(Status::Running) => "#bbdefb",
        None => "#eeeeee",
    }
}

const W: usize = 210;
const H: usize = 58;
const GAP_X: usize = 70;
const GAP_Y: usize = 24;

/// The graph as inline SVG: one `<g class="node" data-id=… data-status=…>` per node; a stale
/// node has `data-stale="true"`, a thick red border and says why in its title.
pub fn svg(nodes: &[Node], edges: &[(String, String)]) -> Markup {
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut at: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for n in nodes {
        let row = rows.entry(n.depth).or_default();
        at.insert(&n.id, (10 + n.depth * (W + GAP_X), 10 + *row * (H + GAP_Y)));
        *row += 1;
    }
    let width = 20 + (rows.keys().max().copied().unwrap_or(0) + 1) * (W + GAP_X);
    let height = 20 + rows.values().max().copied().unwrap_or(1) * (H + GAP_Y);
    html! {
        svg.graph xmlns="http://www.w3.org/2000/svg" width=(width) height=(height) viewBox={"0 0 " (width) " " (height)} {
            defs {
                marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto" {
                    path d="M0,0 L10,5 L0,10 z" fill="#555" {}
                }
            }
            @for (from, to) in edges {
                @if let (Some(a), Some(b)) = (at.get(from.as_str()), at.get(to.as_str())) {
                    line.edge x1=(a.0 + W) y1=(a.1 + H / 2) x2=(b.0) y2=(b.1 + H / 2) stroke="#555" stroke-width="1.5" marker-end="url(#arrow)" {}
                }
            }
            @for n in nodes {
                @let (x, y) = at[n.id.as_str()];
                g.node data-id=(n.id) data-status=(n.status.map_or("none".to_owned(), |s| s.to_string())) data-stale=[n.stale.as_ref().map(|_| "true")] {
                    title {
                        (n.kind) " " (n.name) ": " (n.status.map_or("never run".to_owned(), |s| s.to_string()))
                        @if let Some(why) = &n.stale { "; stale: " (why) }
                    }
                    @if n.stale.is_some() {
                        rect x=(x) y=(y) width=(W) height=(H) rx="8" fill=(colour(n.status)) stroke="#c62828" stroke-width="4" stroke-dasharray="8 4" {}
                    } @else {
                        rect x=(x) y=(y) width=(W) height=(H) rx="8" fill=(colour(n.status)) stroke="#666" {}
                    }
                    text x=(x + 10) y=(y + 22) font-family="sans-serif" font-size="14" font-weight="bold" { (n.name) }
                    text x=(x + 10) y=(y + 42) font-family="sans-serif" font-size="12" fill="#444" { (n.kind) " · " (n.detail) }
                }
            }
        }
    }
}
