//! Checks that serde cannot make, all reported at once.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{InputConfig, SourceConfig, StepConfig, StepKind};
use super::{
    ConfigCx, ConfigFile, Expectation, FormatKind, InputFormat, Parts, Pipeline, Reference,
    Reporter, Root, SecretUse, ServeSpec, SourceSpec, SpanIndex, SparkApp, StepInput, StepSpec,
    StepSpecKind, Template, Zone, ZoneRef, is_env_name, is_name, parse_bytes, parse_duration,
};
use crate::backend::BackendRef;
use crate::kinds::Kinds;
use crate::{Error, Result};

/// `[lake] max_parallel_steps` when it is not set.
pub(crate) const DEFAULT_MAX_PARALLEL_STEPS: usize = 2;

/// The top-level tables lake-core reads; registered backends and settings kinds own the others.
pub(crate) const CORE_TABLES: [&str; 10] = [
    "lake", "env", "sources", "steps", "serve", "schedule", "notify", "sinks", "charts", "catalog",
];

/// Default lock validity when `lake.lock_ttl` is not set.
/// How long replaced table snapshots stay by default (`[lake] retain_snapshots`).
pub(crate) const DEFAULT_RETAIN_SNAPSHOTS: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);
pub(crate) const DEFAULT_LOCK_TTL: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// Check `file` with the overrides of `[env.<env>]` applied and build the [`Pipeline`].
///
/// Every problem is reported in one [`Error::Config`], sorted by line: the tables of every
/// registered backend are checked too, selected or not.
pub fn validate(file: &ConfigFile, env: Option<&str>, backends: &Kinds) -> Result<Pipeline> {
    let model = &file.model;
    let spans = SpanIndex::new(file.text());
    let mut r = Reporter::new(&file.path, &spans);

    for name in model.env.keys() {
        if !is_name(name) {
            r.key(
                &format!("env.{name}"),
                format!("{name:?} is not a valid environment name (letters, digits, '_' and '-', at most 255 bytes)"),
            );
        }
    }
    let overrides = match env {
        None => None,
        Some(name) => Some(model.env.get(name).ok_or_else(|| Error::Invalid {
            what: format!("environment {name:?}"),
            message: if model.env.is_empty() {
                format!("{} has no [env.*] tables", file.path.display())
            } else {
                format!(
                    "no [env.{name}] in {}; defined: {}",
                    file.path.display(),
                    model.env.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            },
        })?),
    };
    // The key a value came from: the env table when it overrides, else [lake].
    let origin = |key: &str, overridden: bool| match (env, overridden) {
        (Some(e), true) => format!("env.{e}.{key}"),
        _ => format!("lake.{key}"),
    };

    let lake = &model.lake;
    if !is_name(&lake.name) {
        r.value(
            "lake.name",
            format!(
                "{:?} is not a valid pipeline name (letters, digits, '_' and '-', at most 255 bytes)",
                lake.name
            ),
        );
    }
    let root_raw = overrides.and_then(|o| o.root.as_ref());
    let root = Root::parse(root_raw.unwrap_or(&lake.root), &file.base_dir)
        .map_err(|m| r.value(&origin("root", root_raw.is_some()), m))
        .ok();
    let backend_o = overrides.and_then(|o| o.backend.as_ref());
    let backend_key = origin("backend", backend_o.is_some());
    let backend = backend_o
        .or(lake.backend.as_ref())
        .map(String::as_str)
        .or(backends.default_name());
    if let Some(name) = backend
        && backends.get(name).is_none()
    {
        r.value(
            &backend_key,
            format!(
                "unknown backend {name:?}; this build of lake has: {}",
                backends.names()
            ),
        );
    }
    let max_parallel_steps = match lake.max_parallel_steps {
        None => DEFAULT_MAX_PARALLEL_STEPS,
        Some(0) => {
            r.value(
                "lake.max_parallel_steps",
                "at least 1 (1 runs the steps one by one)",
            );
            1
        }
        Some(n) => n,
    };
    // Top-level tables: lake's own, and those registered backends and settings kinds own.
    let settings_tables: Vec<&str> = backends.settings_kinds().map(|s| s.table()).collect();
    let mut stray: Vec<&str> = spans
        .top_keys()
        .filter(|k| {
            !CORE_TABLES.contains(k)
                && !settings_tables.contains(k)
                && backends.iter().all(|b| b.table() != Some(*k))
        })
        .collect();
    stray.sort_unstable();
    for k in stray {
        let owned: Vec<String> = backends
            .iter()
            .filter_map(|b| b.table().map(|t| format!("[{t}] ({})", b.name())))
            .collect();
        r.key(
            k,
            format!(
                "unknown table or key {k:?}: lake.toml has {}{}",
                CORE_TABLES
                    .iter()
                    .chain(&settings_tables)
                    .map(|t| format!("[{t}]"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if owned.is_empty() {
                    String::new()
                } else {
                    format!(", and the backends' {}", owned.join(", "))
                }
            ),
        );
    }
    let ttl_o = overrides.and_then(|o| o.lock_ttl.as_ref());
    let lock_ttl = match ttl_o.or(lake.lock_ttl.as_ref()) {
        None => DEFAULT_LOCK_TTL,
        Some(raw) => parse_duration(raw)
            .map_err(|m| r.value(&origin("lock_ttl", ttl_o.is_some()), m))
            .unwrap_or(DEFAULT_LOCK_TTL),
    };
    let retain_replaced = retain_key(
        &mut r,
        "lake.retain_replaced",
        &lake.retain_replaced,
        std::time::Duration::ZERO,
    );
    let retain_snapshots = retain_key(
        &mut r,
        "lake.retain_snapshots",
        &lake.retain_snapshots,
        DEFAULT_RETAIN_SNAPSHOTS,
    );
    let lake_format = table_format(&mut r, backends, "lake.table_format", &lake.table_format)
        .unwrap_or_else(|| crate::table_format::PARQUET.to_owned());

    // Sources are checked before the steps: their kinds see no steps.
    let no_steps = BTreeMap::new();
    let parts = Parts {
        pipeline: &lake.name,
        root: root.as_ref(),
        steps: &no_steps,
        base_dir: &file.base_dir,
    };
    let mut sources = BTreeMap::new();
    for (name, src) in &model.sources {
        let key = format!("sources.{name}");
        if !is_name(name) {
            r.key(
                &key,
                format!("{name:?} is not a valid source name (letters, digits, '_' and '-', at most 255 bytes)"),
            );
        }
        let Some(kind) = backends.source_kind(&src.kind) else {
            r.value(
                &format!("{key}.kind"),
                format!(
                    "unknown source kind {:?}; this build of lake has: {}",
                    src.kind,
                    backends.source_names()
                ),
            );
            continue;
        };
        let config = {
            let mut cx = ConfigCx::for_table(
                &mut r,
                file.text(),
                parts,
                key.clone(),
                crate::source::SHARED,
            );
            kind.configure(&mut cx)
        };
        let extract = extract_spec(&mut r, &key, src, kind.extracts_by_default());
        let window = src
            .window
            .as_deref()
            .and_then(|w| {
                crate::source::WindowSize::parse(w)
                    .map_err(|m| r.value(&format!("{key}.window"), m))
                    .ok()
            })
            .unwrap_or_default();
        let start = src.start.as_deref().and_then(|s| {
            chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|e| {
                    r.value(
                        &format!("{key}.start"),
                        format!("{s:?} is not a date (YYYY-MM-DD): {e}"),
                    )
                })
                .ok()
        });
        if let (crate::source::WindowSize::Months(_), Some(s)) = (window, start)
            && chrono::Datelike::day(&s) != 1
        {
            r.value(
                &format!("{key}.start"),
                format!("{s}: month windows start on the 1st"),
            );
        }
        let dedup_content = match src.dedup.as_deref() {
            None | Some("none") => false,
            Some("content") => true,
            Some(other) => {
                r.value(
                    &format!("{key}.dedup"),
                    format!("unknown dedup {other:?}: \"content\" (skip a window whose bytes equal the previous one's) or \"none\""),
                );
                false
            }
        };
        let (retries, retry_delay) = retry_keys(&mut r, &key, src.retries, &src.retry_delay);
        let freshness = freshness_key(&mut r, &key, &src.freshness);
        let Some(config) = config else {
            continue;
        };
        sources.insert(
            name.clone(),
            SourceSpec {
                name: name.clone(),
                line: r.line_of(&key),
                kind: src.kind.clone(),
                config: crate::kinds::Checked(config),
                window,
                start,
                dedup_content,
                extract,
                retries,
                retry_delay,
                freshness,
            },
        );
    }

    let mut steps = BTreeMap::new();
    let mut producers: BTreeMap<ZoneRef, String> = BTreeMap::new();
    for (name, step) in &model.steps {
        let key = format!("steps.{name}");
        if !is_name(name) {
            r.key(
                &key,
                format!("{name:?} is not a valid step name (letters, digits, '_' and '-', at most 255 bytes)"),
            );
        }
        let kind = step_kind(&mut r, &key, step, &file.base_dir);
        let inputs = step_inputs(&mut r, &key, step);
        let output = step.output.as_ref().and_then(|raw| {
            let okey = format!("{key}.output");
            let parsed = ZoneRef::parse(raw).map_err(|m| r.value(&okey, m)).ok()?;
            if parsed.zone == Zone::Raw {
                r.value(&okey, format!("{raw:?}: steps write to trusted/ or refined/; raw/ is written only by sources"));
                return None;
            }
            if let Some(other) = producers.get(&parsed) {
                r.value(&okey, format!("{parsed} is also written by step {other:?}; two steps cannot write one output"));
                return None;
            }
            producers.insert(parsed.clone(), name.clone());
            Some(parsed)
        });
        let mut env = BTreeMap::new();
        for (var, value) in &step.env {
            let vkey = format!("{key}.env.{var}");
            if !is_env_name(var) {
                r.key(
                    &vkey,
                    format!(
                        "{var:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
                    ),
                );
            } else if var.starts_with("LAKE_") {
                r.key(
                    &vkey,
                    format!("{var}: names starting with LAKE_ are set by lake itself"),
                );
            }
            match Template::parse(value) {
                Ok(t) => {
                    env.insert(var.clone(), t);
                }
                Err(m) => r.value(&vkey, m),
            }
        }
        let timeout = step.timeout.as_ref().and_then(|t| {
            parse_duration(t)
                .map_err(|m| r.value(&format!("{key}.timeout"), m))
                .ok()
        });
        let (retries, retry_delay) = retry_keys(&mut r, &key, step.retries, &step.retry_delay);
        let merge = merge_spec(&mut r, &key, step);
        let freshness = freshness_key(&mut r, &key, &step.freshness);
        let format = table_format(
            &mut r,
            backends,
            &format!("{key}.table_format"),
            &step.table_format,
        )
        .unwrap_or_else(|| lake_format.clone());
        steps.insert(
            name.clone(),
            StepSpec {
                name: name.clone(),
                line: r.line_of(&key),
                kind,
                inputs,
                output,
                depends_on: BTreeSet::new(),
                env,
                timeout,
                mode: step.mode.unwrap_or_default(),
                merge,
                retries,
                retry_delay,
                freshness,
                table_format: format,
            },
        );
    }

    // References: inputs must be produced by a source or a step; depends_on must name steps.
    let mut graph_ok = true;
    for (name, step) in &model.steps {
        let key = format!("steps.{name}");
        let mut deps = BTreeSet::new();
        for (i, dep) in step.depends_on.iter().enumerate() {
            let dkey = format!("{key}.depends_on[{i}]");
            if dep == name {
                r.value(&dkey, format!("step {name:?} cannot depend on itself"));
                graph_ok = false;
            } else if !model.steps.contains_key(dep) {
                r.value(&dkey, unknown("step", dep, model.steps.keys()));
                graph_ok = false;
            } else {
                deps.insert(dep.clone());
            }
        }
        let spec = &steps[name];
        for (i, input) in spec.inputs.iter().enumerate() {
            let ikey = format!("{key}.inputs[{i}]");
            let input = &input.dataset;
            match input.zone {
                Zone::Raw => {
                    if !model.sources.contains_key(&input.name) {
                        r.value(
                            &ikey,
                            format!(
                                "{input}: {}",
                                unknown("source", &input.name, model.sources.keys())
                            ),
                        );
                    }
                }
                _ => match producers.get(input) {
                    Some(p) if p == name => {
                        r.value(&ikey, format!("step {name:?} reads its own output {input}"));
                        graph_ok = false;
                    }
                    Some(p) => {
                        deps.insert(p.clone());
                    }
                    None => r.value(
                        &ikey,
                        format!("no step writes {input}; add a step with output = \"{input}\""),
                    ),
                },
            }
        }
        if let Some(s) = steps.get_mut(name) {
            s.depends_on = deps;
        }
    }

    let order = if graph_ok {
        match topo_order(&steps) {
            Ok(order) => order,
            Err(cycles) => {
                for cycle in cycles {
                    let path: Vec<String> = cycle
                        .iter()
                        .map(|s| format!("{s} (line {})", steps[s].line))
                        .collect();
                    r.key(
                        &format!("steps.{}", cycle[0]),
                        format!("dependency cycle: {}", path.join(" → ")),
                    );
                }
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };

    let serve = serve_spec(&mut r, file);
    let schedule = schedule_spec(&mut r, file);
    let notify = notify_spec(&mut r, file);
    let parts = Parts {
        pipeline: &lake.name,
        root: root.as_ref(),
        steps: &steps,
        base_dir: &file.base_dir,
    };
    let sinks = sink_specs(&mut r, file, &producers, backends, parts);
    let charts = chart_specs(&mut r, file);
    let catalog = catalog_spec(&mut r, file, backends, parts);
    let mut settings = crate::settings::Settings::default();
    for kind in backends.settings_kinds() {
        let table = kind.table();
        let mut cx = ConfigCx::for_table(&mut r, file.text(), parts, table.to_owned(), &[]);
        if let Some(value) = kind.configure(&mut cx) {
            settings.0.insert(table, value);
        }
    }
    let mut selected = None;
    for kind in backends.iter() {
        let is_selected = Some(kind.name()) == backend;
        let mut cx = ConfigCx {
            r: &mut r,
            text: file.text(),
            pipeline: &lake.name,
            root: root.as_ref(),
            steps: &steps,
            base_dir: &file.base_dir,
            selected: is_selected,
            backend_key: backend_key.clone(),
            at: None,
        };
        let config = kind.configure(&mut cx);
        if is_selected {
            selected = config;
        }
    }
    if backend.is_none() {
        r.value(&backend_key, "this program registers no backend");
    }
    r.finish()?;
    let Some(backend) = selected else {
        return Err(Error::Invalid {
            what: format!("{} {backend_key}", file.path.display()),
            message: "the backend gave no configuration and reported no problem".into(),
        });
    };
    Ok(Pipeline {
        name: lake.name.clone(),
        file: file.path.clone(),
        base_dir: file.base_dir.clone(),
        env: env.map(str::to_owned),
        root: root.expect("a root that failed to parse was reported"),
        backend: BackendRef(backend),
        max_parallel_steps,
        lock_ttl,
        retain_replaced,
        retain_snapshots,
        formats: steps
            .values()
            .filter_map(|s| {
                backends
                    .format_kind(&s.table_format)
                    .map(|k| (s.table_format.clone(), std::sync::Arc::clone(k)))
            })
            .collect(),
        sources,
        steps,
        order,
        serve,
        settings,
        schedule,
        notify,
        sinks,
        charts,
        catalog,
        secrets: managed_references(file, &spans),
    })
}

/// Every `${aws-secretsmanager:…}` and `${aws-ssm:…}` in the file's values (the `[env.*]`
/// tables hold none), each once, with the first key and line that holds it. The templates
/// themselves are checked where their kinds read them.
fn managed_references(file: &ConfigFile, spans: &SpanIndex) -> Vec<SecretUse> {
    fn walk(v: &toml::Value, path: String, out: &mut Vec<(String, Reference)>) {
        match v {
            toml::Value::String(s) if s.contains("${aws-") => {
                if let Ok(t) = Template::parse(s) {
                    out.extend(
                        t.references()
                            .filter(|r| r.is_managed())
                            .map(|r| (path.clone(), r.clone())),
                    );
                }
            }
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(v, key, out);
                }
            }
            toml::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let Ok(doc) = file.text().parse::<toml::Table>() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (k, v) in doc.iter().filter(|(k, _)| k.as_str() != "env") {
        walk(v, k.clone(), &mut found);
    }
    let mut out: Vec<SecretUse> = Vec::new();
    for (key, reference) in found {
        if out.iter().all(|u| u.reference != reference) {
            out.push(SecretUse {
                line: spans.value_pos(&key).0,
                reference,
                key,
            });
        }
    }
    out
}

/// The duration at `key`, or `default_secs` when it is not set or (reported) invalid.
/// A duration of how long something replaced is kept: zero is allowed (`"0s"`: not kept).
fn retain_key(
    r: &mut Reporter<'_>,
    key: &str,
    raw: &Option<String>,
    default: std::time::Duration,
) -> std::time::Duration {
    match raw {
        None => default,
        Some(raw)
            if raw
                .strip_suffix(['s', 'm', 'h', 'd'])
                .and_then(|n| n.parse::<u64>().ok())
                == Some(0) =>
        {
            std::time::Duration::ZERO
        }
        Some(raw) => parse_duration(raw)
            .map_err(|m| r.value(key, m))
            .unwrap_or(default),
    }
}

/// A `table_format` key: `parquet` or a registered format; `None` when absent or reported.
fn table_format(
    r: &mut Reporter<'_>,
    kinds: &Kinds,
    key: &str,
    name: &Option<String>,
) -> Option<String> {
    let name = name.as_ref()?;
    if name == crate::table_format::PARQUET || kinds.format_kind(name).is_some() {
        return Some(name.clone());
    }
    r.value(
        key,
        format!(
            "unknown table format {name:?}; this build of lake has: {}",
            kinds.format_names()
        ),
    );
    None
}

/// `freshness` of the table at `key` (a positive duration).
fn freshness_key(
    r: &mut Reporter<'_>,
    key: &str,
    raw: &Option<String>,
) -> Option<std::time::Duration> {
    parse_duration(raw.as_deref()?)
        .map_err(|m| r.value(&format!("{key}.freshness"), m))
        .ok()
}

fn duration_or(
    r: &mut Reporter<'_>,
    key: &str,
    raw: &Option<String>,
    default_secs: u64,
) -> std::time::Duration {
    raw.as_ref()
        .and_then(|t| parse_duration(t).map_err(|m| r.value(key, m)).ok())
        .unwrap_or(std::time::Duration::from_secs(default_secs))
}

/// A URL, query value or file name of an http source: its placeholders (`{start}`, `{end}`,
/// `{date}`, with a date format) and `${env:…}` references, parsed once; a problem is reported
/// at `key` and gives an empty template.
/// `extract` and its limits; the limits without `extract` are errors.
fn extract_spec(
    r: &mut Reporter<'_>,
    key: &str,
    src: &SourceConfig,
    by_default: bool,
) -> Option<super::ExtractSpec> {
    use super::ExtractSpec;
    let on = src.extract.unwrap_or(by_default);
    if !on {
        for (field, set) in [
            ("members", src.members.is_some()),
            ("max_extracted_bytes", src.max_extracted_bytes.is_some()),
            ("max_compression_ratio", src.max_compression_ratio.is_some()),
            ("max_members", src.max_members.is_some()),
        ] {
            if set {
                r.key(
                    &format!("{key}.{field}"),
                    format!("`{field}` applies only with extract = true"),
                );
            }
        }
        return None;
    }
    let members = src
        .members
        .as_ref()
        .map(|m| m.0.clone())
        .unwrap_or_default();
    for m in &members {
        if let Err(e) = glob::Pattern::new(m) {
            r.value(
                &format!("{key}.members"),
                format!("{m:?} is not a valid glob: {e}"),
            );
        }
    }
    let max_bytes = src.max_extracted_bytes.as_ref().and_then(|b| {
        parse_bytes(b)
            .map_err(|m| r.value(&format!("{key}.max_extracted_bytes"), m))
            .ok()
    });
    if src.max_compression_ratio == Some(0) {
        r.value(
            &format!("{key}.max_compression_ratio"),
            "the ratio of unpacked to packed size is at least 1",
        );
    }
    if src.max_members == Some(0) {
        r.value(
            &format!("{key}.max_members"),
            "an archive holds at least 1 member",
        );
    }
    Some(ExtractSpec {
        members,
        max_bytes: max_bytes.unwrap_or(ExtractSpec::DEFAULT_MAX_BYTES),
        max_ratio: src
            .max_compression_ratio
            .unwrap_or(ExtractSpec::DEFAULT_MAX_RATIO),
        max_members: src.max_members.unwrap_or(ExtractSpec::DEFAULT_MAX_MEMBERS),
    })
}

/// `retries` (0 to 10) and `retry_delay` (default 30s) of the table at `key`.
fn retry_keys(
    r: &mut Reporter<'_>,
    key: &str,
    retries: Option<u32>,
    delay: &Option<String>,
) -> (u32, std::time::Duration) {
    let retries = retries.unwrap_or(0);
    if retries > 10 {
        r.value(&format!("{key}.retries"), "at most 10");
    }
    let default = std::time::Duration::from_secs(30);
    let delay = match delay {
        None => default,
        Some(t) => parse_duration(t)
            .map_err(|m| r.value(&format!("{key}.retry_delay"), m))
            .unwrap_or(default),
    };
    (retries.min(10), delay)
}

fn chart_specs(r: &mut Reporter<'_>, file: &ConfigFile) -> BTreeMap<String, super::ChartSpec> {
    use super::ChartKind;
    let mut out = BTreeMap::new();
    for (name, c) in &file.model.charts {
        let key = format!("charts.{name}");
        if !is_name(name) {
            r.key(&key, format!("{name:?} is not a valid chart name (letters, digits, '_' and '-', at most 255 bytes)"));
        }
        let kind = match c.kind.as_deref() {
            None | Some("line") => ChartKind::Line,
            Some("bar") => ChartKind::Bar,
            Some("area") => ChartKind::Area,
            Some("scatter") => ChartKind::Scatter,
            Some("table") => ChartKind::Table,
            Some(other) => {
                r.value(
                    &format!("{key}.kind"),
                    format!("{other:?}: \"line\", \"bar\", \"area\", \"scatter\" or \"table\""),
                );
                ChartKind::Line
            }
        };
        let first = c
            .sql
            .trim_start()
            .split(|ch: char| !ch.is_ascii_alphabetic())
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !matches!(first.as_str(), "SELECT" | "WITH") {
            r.value(
                &format!("{key}.sql"),
                "a chart's sql is one SELECT (or WITH … SELECT) over the lake's tables",
            );
        }
        let y = c.y.clone().map(|l| l.0).unwrap_or_default();
        if kind == ChartKind::Table {
            for (field, set) in [("x", c.x.is_some()), ("y", c.y.is_some())] {
                if set {
                    r.value(
                        &format!("{key}.{field}"),
                        "a table shows every column: x and y apply to charts that draw",
                    );
                }
            }
        } else {
            if c.x.as_deref().is_none_or(str::is_empty) {
                r.key(
                    &key,
                    format!(
                        "a {} chart needs `x`: the column along the horizontal axis",
                        kind.as_str()
                    ),
                );
            }
            if y.is_empty() {
                r.key(
                    &key,
                    format!(
                        "a {} chart needs `y`: the column (or columns) drawn, e.g. y = [\"total\"]",
                        kind.as_str()
                    ),
                );
            }
        }
        out.insert(
            name.clone(),
            super::ChartSpec {
                name: name.clone(),
                sql: c.sql.clone(),
                kind,
                x: c.x.clone().unwrap_or_default(),
                y,
                title: c.title.clone().unwrap_or_else(|| name.clone()),
                line: r.line_of(&key),
            },
        );
    }
    out
}

fn sink_specs<'a>(
    r: &mut Reporter<'a>,
    file: &'a ConfigFile,
    producers: &BTreeMap<ZoneRef, String>,
    kinds: &Kinds,
    parts: Parts<'a>,
) -> BTreeMap<String, super::SinkSpec> {
    let mut out = BTreeMap::new();
    let mut exclusive: BTreeMap<String, String> = BTreeMap::new();
    for (name, c) in &file.model.sinks {
        let key = format!("sinks.{name}");
        if !is_name(name) {
            r.key(&key, format!("{name:?} is not a valid sink name (letters, digits, '_' and '-', at most 255 bytes)"));
        }
        let from = ZoneRef::parse(&c.from)
            .map_err(|m| r.value(&format!("{key}.from"), m))
            .ok()
            .and_then(|from| match producers.get(&from) {
                Some(step) => Some((from, step.clone())),
                None => {
                    r.value(
                        &format!("{key}.from"),
                        format!("no step writes {from}; a sink loads the output of a step (`output = \"{from}\"`)"),
                    );
                    None
                }
            });
        let Some(kind) = kinds.sink_kind(&c.kind) else {
            r.value(
                &format!("{key}.kind"),
                format!(
                    "unknown sink kind {:?}; this build of lake has: {}",
                    c.kind,
                    kinds.sink_names()
                ),
            );
            continue;
        };
        let mut cx = ConfigCx::for_table(r, file.text(), parts, key.clone(), crate::sink::SHARED);
        let config = kind.configure(&mut cx);
        if let Some((field, what)) = config.as_ref().and_then(|c| c.exclusive())
            && let Some(other) = exclusive.insert(what.clone(), name.clone())
        {
            r.value(
                &format!("{key}.{field}"),
                format!(
                    "{what} is also loaded by sink {other:?}; two sinks cannot load one destination"
                ),
            );
        }
        if let (Some(config), Some((from, step))) = (config, from) {
            out.insert(
                name.clone(),
                super::SinkSpec {
                    name: name.clone(),
                    kind: c.kind.clone(),
                    from,
                    step,
                    optional: c.optional.unwrap_or(false),
                    line: r.line_of(&key),
                    config: crate::kinds::Checked(config),
                },
            );
        }
    }
    out
}

fn catalog_spec<'a>(
    r: &mut Reporter<'a>,
    file: &'a ConfigFile,
    kinds: &Kinds,
    parts: Parts<'a>,
) -> Option<super::CatalogSpec> {
    let c = file.model.catalog.as_ref()?;
    let tables = c
        .tables
        .clone()
        .unwrap_or_else(|| vec!["trusted/*".into(), "refined/*".into()]);
    for t in &tables {
        let zone_ok = t
            .split_once('/')
            .is_some_and(|(z, _)| matches!(z, "trusted" | "refined" | "*"));
        if !zone_ok {
            r.value(
                "catalog.tables",
                format!("{t:?}: a pattern is <zone>/<glob> over trusted and refined datasets, such as \"refined/*\""),
            );
        } else if let Err(e) = glob::Pattern::new(t) {
            r.value("catalog.tables", format!("{t:?}: {e}"));
        }
    }
    let Some(kind) = kinds.catalog_kind(&c.kind) else {
        r.value(
            "catalog.kind",
            format!(
                "unknown catalog kind {:?}; this build of lake has: {}",
                c.kind,
                kinds.catalog_names()
            ),
        );
        return None;
    };
    let mut cx = ConfigCx::for_table(
        r,
        file.text(),
        parts,
        "catalog".into(),
        crate::catalog::SHARED,
    );
    let config = kind.configure(&mut cx)?;
    Some(super::CatalogSpec {
        kind: c.kind.clone(),
        tables,
        line: r.line_of("catalog"),
        config: crate::kinds::Checked(config),
    })
}

fn notify_spec(r: &mut Reporter<'_>, file: &ConfigFile) -> Option<super::NotifySpec> {
    let c = file.model.notify.as_ref()?;
    let on =
        c.on.clone()
            .unwrap_or_else(|| vec!["failure".into(), "stale".into()]);
    for o in &on {
        if !matches!(o.as_str(), "failure" | "success" | "recovered" | "stale") {
            r.value(
                "notify.on",
                format!("{o:?}: \"failure\", \"success\", \"recovered\" or \"stale\""),
            );
        }
    }
    let webhook = c.webhook.as_ref().and_then(|w| {
        Template::parse(w)
            .map_err(|m| r.value("notify.webhook", m))
            .ok()
    });
    if c.webhook.is_none() && c.command.as_ref().is_none_or(Vec::is_empty) {
        r.value("notify", "set webhook or command (or both)");
    }
    Some(super::NotifySpec {
        on_failure: on.iter().any(|o| o == "failure"),
        on_success: on.iter().any(|o| o == "success"),
        on_recovered: on.iter().any(|o| o == "recovered"),
        on_stale: on.iter().any(|o| o == "stale"),
        webhook,
        command: c.command.clone().unwrap_or_default(),
        // A command that hangs is killed past this: a notice never holds a run.
        timeout: duration_or(r, "notify.timeout", &c.timeout, 30),
    })
}

fn schedule_spec(r: &mut Reporter<'_>, file: &ConfigFile) -> Option<crate::schedule::Schedule> {
    let c = file.model.schedule.as_ref()?;
    let cron = crate::schedule::parse_cron(&c.cron)
        .map_err(|m| r.value("schedule.cron", m))
        .ok();
    let tz = match &c.timezone {
        None => Some(chrono_tz::UTC),
        Some(name) => name
            .parse::<chrono_tz::Tz>()
            .map_err(|_| {
                r.value(
                    "schedule.timezone",
                    format!(
                        "{name:?} is not an IANA time zone such as \"UTC\" or \"Europe/Berlin\""
                    ),
                )
            })
            .ok(),
    };
    let catchup = match c.catchup.as_deref() {
        None | Some("off") => Some(None),
        Some(raw) => parse_duration(raw)
            .map(Some)
            .map_err(|m| r.value("schedule.catchup", format!("{m}, or \"off\"")))
            .ok(),
    };
    Some(crate::schedule::Schedule {
        cron: c.cron.clone(),
        parsed: cron?,
        timezone: tz?,
        catchup: catchup?,
    })
}

fn serve_spec(r: &mut Reporter<'_>, file: &ConfigFile) -> ServeSpec {
    let mut spec = ServeSpec::default();
    let Some(s) = &file.model.serve else {
        return spec;
    };
    if let Some(m) = &s.query_memory {
        match parse_bytes(m) {
            Ok(b) if b >= 16 << 20 => spec.query_memory = b,
            Ok(_) => r.value("serve.query_memory", "query_memory must be at least 16MiB"),
            Err(msg) => r.value("serve.query_memory", msg),
        }
    }
    match s.max_queries {
        Some(0) => r.value("serve.max_queries", "max_queries must be at least 1"),
        Some(n) => spec.max_queries = n,
        None => {}
    }
    if let Some(t) = &s.query_timeout {
        match parse_duration(t) {
            Ok(d) if !d.is_zero() => spec.query_timeout = d,
            Ok(_) => r.value("serve.query_timeout", "query_timeout must be more than 0s"),
            Err(msg) => r.value("serve.query_timeout", msg),
        }
    }
    spec
}

/// True for identifiers that need no quoting in SQL: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The kind-specific part of a step, with keys that do not apply to its kind reported.
fn step_kind(
    r: &mut Reporter<'_>,
    key: &str,
    step: &StepConfig,
    base_dir: &std::path::Path,
) -> StepSpecKind {
    // Keys that belong to one kind only, each reported with its line when set on another.
    let owned: [(&str, bool, StepKind); 10] = [
        ("command", step.command.is_some(), StepKind::Command),
        ("sql", step.sql.is_some(), StepKind::Sql),
        ("partition_by", !step.partition_by.is_empty(), StepKind::Sql),
        ("expect", !step.expect.is_empty(), StepKind::Sql),
        ("max_rejected", step.max_rejected.is_some(), StepKind::Sql),
        ("script", step.script.is_some(), StepKind::Spark),
        ("jar", step.jar.is_some(), StepKind::Spark),
        ("class", step.class.is_some(), StepKind::Spark),
        ("args", !step.args.is_empty(), StepKind::Spark),
        ("spark_args", !step.spark_args.is_empty(), StepKind::Spark),
    ];
    for (field, set, kind) in owned {
        if set && kind != step.kind {
            r.key(
                &format!("{key}.{field}"),
                format!("`{field}` applies to kind = \"{kind}\" steps only"),
            );
        }
    }
    if let Some(m) = step.max_rejected
        && !(0.0..=1.0).contains(&m)
    {
        r.value(
            &format!("{key}.max_rejected"),
            format!("{m} is not a share of rows: use a number from 0.0 to 1.0 (0.05 = 5%)"),
        );
    }
    let needs_output = |r: &mut Reporter<'_>, example: &str| {
        if step.output.is_none() {
            r.key(
                key,
                format!(
                    "a {} step needs `output`: where its rows go, e.g. output = \"{example}\"",
                    step.kind
                ),
            );
        }
    };
    match step.kind {
        StepKind::Command => {
            let command = step.command.clone().unwrap_or_default();
            if command.is_empty() || command[0].trim().is_empty() {
                r.key(
                    &format!("{key}.command"),
                    "a command step needs `command`: the program and its arguments, e.g. [\"python3\", \"report.py\", \"{date}\"]",
                );
            }
            StepSpecKind::Command { command }
        }
        StepKind::Spark => {
            let locate = |p: &str| {
                if p.starts_with("s3://") {
                    p.to_owned()
                } else {
                    base_dir.join(p).to_string_lossy().into_owned()
                }
            };
            let app = match (&step.script, &step.jar) {
                (Some(script), None) => SparkApp::Script(locate(script)),
                (None, Some(jar)) => SparkApp::Jar {
                    path: locate(jar),
                    class: step.class.clone(),
                },
                (Some(_), Some(_)) => {
                    r.key(
                        &format!("{key}.jar"),
                        "a spark step runs a `script` or a `jar`, not both",
                    );
                    SparkApp::Script(String::new())
                }
                (None, None) => {
                    r.key(
                        key,
                        "a spark step needs `script` (a PySpark file, e.g. script = \"jobs/clean.py\") or `jar` (with `class`)",
                    );
                    SparkApp::Script(String::new())
                }
            };
            if step.class.is_some() && step.jar.is_none() {
                r.key(&format!("{key}.class"), "`class` goes with `jar`");
            }
            for (field, p) in [("script", &step.script), ("jar", &step.jar)] {
                if let Some(p) = p
                    && !p.starts_with("s3://")
                    && !base_dir.join(p).is_file()
                {
                    r.value(
                        &format!("{key}.{field}"),
                        format!("{p:?}: no such file (paths are relative to lake.toml; or use an s3:// URL)"),
                    );
                }
            }
            StepSpecKind::Spark {
                app,
                args: step.args.clone(),
                spark_args: step.spark_args.clone(),
            }
        }
        StepKind::Copy => {
            needs_output(r, "trusted/credit");
            if step.inputs.len() != 1 {
                r.key(
                    &format!("{key}.inputs"),
                    format!(
                        "a copy step copies one input to its output; it has {}",
                        step.inputs.len()
                    ),
                );
            }
            StepSpecKind::Copy
        }
        StepKind::Sql => {
            let sql = step.sql.clone().unwrap_or_default();
            if sql.trim().is_empty() {
                r.key(
                    key,
                    "a sql step needs `sql`: one SELECT over its inputs, e.g. sql = \"SELECT * FROM credit\"",
                );
            }
            needs_output(r, "trusted/credit");
            let mut seen = BTreeSet::new();
            for (i, col) in step.partition_by.iter().enumerate() {
                let pkey = format!("{key}.partition_by[{i}]");
                if !is_identifier(col) || col.to_lowercase() != *col {
                    r.value(&pkey, format!("{col:?}: partition columns are lowercase output column names ([a-z_][a-z0-9_]*), so the folders read back the same in Spark, Athena and DataFusion"));
                } else if !seen.insert(col) {
                    r.value(&pkey, format!("{col:?} is listed twice"));
                }
            }
            let mut expect = Vec::new();
            for (i, cond) in step.expect.iter().enumerate() {
                let ekey = format!("{key}.expect[{i}]");
                if cond.trim().is_empty() {
                    r.value(
                        &ekey,
                        "empty expectation: write a SQL condition such as \"age > 0\"",
                    );
                }
                expect.push(Expectation {
                    condition: cond.clone(),
                    line: r.line_of_value(&ekey),
                });
            }
            StepSpecKind::Sql {
                sql,
                sql_line: r.line_of_value(&format!("{key}.sql")),
                partition_by: step.partition_by.clone(),
                expect,
                max_rejected: step.max_rejected.unwrap_or(0.0),
            }
        }
    }
}

/// `mode = "merge"` or `"history"` and their keys, checked: `key` is required with them (and
/// `order_by` with `history`), and their keys are errors without them.
fn merge_spec(r: &mut Reporter<'_>, key: &str, step: &StepConfig) -> Option<super::MergeSpec> {
    let mode = match step.mode {
        Some(m @ (super::WriteMode::Merge | super::WriteMode::History)) => m,
        _ => {
            for (field, set) in [
                ("key", !step.key.is_empty()),
                ("order_by", step.order_by.is_some()),
                ("delete_when", step.delete_when.is_some()),
                ("on_tie", step.on_tie.is_some()),
                ("history_columns", step.history_columns.is_some()),
            ] {
                if set {
                    r.key(
                        &format!("{key}.{field}"),
                        format!("`{field}` goes with mode = \"merge\" or \"history\""),
                    );
                }
            }
            return None;
        }
    };
    let history = mode == super::WriteMode::History;
    if step.history_columns.is_some() && !history {
        r.key(
            &format!("{key}.history_columns"),
            "`history_columns` goes with mode = \"history\"",
        );
    }
    if history && step.order_by.is_none() {
        r.key(
            key,
            "mode = \"history\" needs `order_by`: the column a version is valid from, e.g. order_by = \"updated_at\"",
        );
    }
    if step.kind != StepKind::Sql {
        r.value(
            &format!("{key}.mode"),
            format!(
                "mode = \"{mode}\" applies to kind = \"sql\" steps (the engine merges the rows it writes); this step is kind = \"{}\"",
                step.kind
            ),
        );
    }
    if step.key.is_empty() {
        r.key(
            key,
            format!("mode = \"{mode}\" needs `key`: the columns that identify a row, e.g. key = [\"id\"]"),
        );
    }
    let mut seen = BTreeSet::new();
    for (i, col) in step.key.iter().enumerate() {
        if !is_identifier(col) {
            r.value(
                &format!("{key}.key[{i}]"),
                format!("{col:?} is not a column name"),
            );
        } else if !seen.insert(col) {
            r.value(
                &format!("{key}.key[{i}]"),
                format!("{col:?} is listed twice"),
            );
        }
    }
    if let Some(o) = &step.order_by
        && !is_identifier(o)
    {
        r.value(
            &format!("{key}.order_by"),
            format!("{o:?} is not a column name"),
        );
    }
    if let Some(d) = &step.delete_when
        && d.trim().is_empty()
    {
        r.value(
            &format!("{key}.delete_when"),
            "an empty condition: write a SQL condition such as \"tier = 'deleted'\"",
        );
    }
    let on_tie_any = match step.on_tie.as_deref() {
        None | Some("error") => false,
        Some("any") => true,
        Some(other) => {
            r.value(
                &format!("{key}.on_tie"),
                format!("on_tie is \"error\" or \"any\", not {other:?}"),
            );
            false
        }
    };
    let history = history.then(|| {
        let c = step.history_columns.clone().unwrap_or_default();
        let mut name = |field: &str, v: Option<String>| {
            let v = v.unwrap_or_else(|| field.to_owned());
            if !is_identifier(&v) {
                r.value(
                    &format!("{key}.history_columns.{field}"),
                    format!("{v:?} is not a column name"),
                );
            }
            v
        };
        super::HistoryColumns {
            valid_from: name("valid_from", c.valid_from),
            valid_to: name("valid_to", c.valid_to),
            is_current: name("is_current", c.is_current),
        }
    });
    Some(super::MergeSpec {
        key: step.key.clone(),
        order_by: step.order_by.clone(),
        delete_when: step.delete_when.clone(),
        on_tie_any,
        history,
    })
}

/// The checked inputs of a step; bad ones are reported and left out.
fn step_inputs(r: &mut Reporter<'_>, key: &str, step: &StepConfig) -> Vec<StepInput> {
    let mut out: Vec<StepInput> = Vec::new();
    for (i, input) in step.inputs.iter().enumerate() {
        let ikey = format!("{key}.inputs[{i}]");
        let (raw, table) = match input {
            InputConfig::Path(p) => (p.as_str(), None),
            InputConfig::Table(t) => (t.path.as_str(), Some(t)),
        };
        let pkey = if table.is_some() {
            format!("{ikey}.path")
        } else {
            ikey.clone()
        };
        let (path, at_date) = match raw.split_once('@') {
            None => (raw, false),
            Some((p, "date")) => (p, true),
            Some((_, other)) => {
                r.value(
                    &pkey,
                    format!("{raw:?}: unknown selector @{other}; the only one is @date (the run's window of a raw source)"),
                );
                continue;
            }
        };
        let dataset = match ZoneRef::parse(path) {
            Ok(d) => d,
            Err(m) => {
                r.value(&pkey, m);
                continue;
            }
        };
        if at_date && dataset.zone != Zone::Raw {
            r.value(
                &pkey,
                format!(
                    "{raw:?}: @date selects a raw window; {dataset} is one dataset, read whole"
                ),
            );
        }
        let mut format = InputFormat::defaults(dataset.zone);
        let mut name = dataset.name.replace('-', "_");
        if let Some(t) = table {
            if let Some(n) = &t.name {
                if is_identifier(n) {
                    name = n.clone();
                } else {
                    r.value(
                        &format!("{ikey}.name"),
                        format!("{n:?} is not a table name ([A-Za-z_][A-Za-z0-9_]*)"),
                    );
                }
            }
            if let Some(f) = &t.format {
                format.kind = FormatKind::parse(f);
                if format.kind.is_none() {
                    r.value(
                        &format!("{ikey}.format"),
                        format!("unknown format {f:?}; formats: csv, ndjson, json, parquet"),
                    );
                }
            }
            let is = |k: FormatKind| format.kind.is_none_or(|f| f == k);
            let only = |r: &mut Reporter<'_>, field: &str, set: bool, k: FormatKind| {
                if set && !is(k) {
                    r.key(
                        &format!("{ikey}.{field}"),
                        format!("`{field}` applies to format = \"{}\" only", k.as_str()),
                    );
                }
            };
            only(r, "header", t.header.is_some(), FormatKind::Csv);
            only(r, "delimiter", t.delimiter.is_some(), FormatKind::Csv);
            only(r, "null_values", t.null_values.is_some(), FormatKind::Csv);
            only(r, "infer_types", t.infer_types.is_some(), FormatKind::Csv);
            only(r, "json_path", t.json_path.is_some(), FormatKind::Json);
            format.header = t.header.unwrap_or(format.header);
            if let Some(d) = &t.delimiter {
                match d.as_bytes() {
                    [b] if b.is_ascii() && *b != b'\n' && *b != b'"' => format.delimiter = *b,
                    _ => r.value(
                        &format!("{ikey}.delimiter"),
                        format!("{d:?}: the delimiter is one ASCII character such as \",\", \";\" or \"\\t\""),
                    ),
                }
            }
            if let Some(n) = &t.null_values {
                format.null_values = n.clone();
            }
            format.infer_types = t.infer_types.unwrap_or(false);
            if format.infer_types && format.null_values.iter().any(|v| !v.is_empty()) {
                r.key(
                    &format!("{ikey}.infer_types"),
                    "null_values other than \"\" need text columns: drop infer_types and CAST in the SQL",
                );
            }
            format.json_path = t.json_path.clone();
            format.snake_case = t.snake_case.unwrap_or(format.snake_case);
            if step.kind == StepKind::Command
                && (t.format.is_some()
                    || t.header.is_some()
                    || t.delimiter.is_some()
                    || t.null_values.is_some()
                    || t.json_path.is_some())
            {
                r.key(
                    &ikey,
                    "format options apply to sql steps; a command reads the files itself",
                );
            }
        }
        if let Some(other) = out.iter().find(|o| o.table == name) {
            r.value(
                &pkey,
                format!("two inputs are both table {name:?} ({} and {raw}); give one a name: {{ name = \"…\", path = \"{raw}\" }}", other),
            );
            continue;
        }
        out.push(StepInput {
            table: name,
            dataset,
            at_date,
            format,
        });
    }
    out
}

fn unknown<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<&str> = known.map(String::as_str).collect();
    if known.is_empty() {
        format!("unknown {what} {name:?}: lake.toml defines no {what}s")
    } else {
        format!("unknown {what} {name:?}; known: {}", known.join(", "))
    }
}

/// Kahn's algorithm, ready steps taken by name, so the order is the same on every run.
/// On a cycle, returns each cycle as a closed path (`[a, b, a]`).
fn topo_order(
    steps: &BTreeMap<String, StepSpec>,
) -> std::result::Result<Vec<String>, Vec<Vec<String>>> {
    let mut missing: BTreeMap<&str, usize> = steps
        .iter()
        .map(|(n, s)| (n.as_str(), s.depends_on.len()))
        .collect();
    let mut ready: BTreeSet<&str> = missing
        .iter()
        .filter(|(_, d)| **d == 0)
        .map(|(n, _)| *n)
        .collect();
    let mut order = Vec::new();
    while let Some(next) = ready.pop_first() {
        order.push(next.to_owned());
        for (name, step) in steps {
            if step.depends_on.contains(next) {
                let m = missing.get_mut(name.as_str()).expect("every step counted");
                *m -= 1;
                if *m == 0 {
                    ready.insert(name);
                }
            }
        }
    }
    if order.len() == steps.len() {
        return Ok(order);
    }
    // Find the cycles among the steps left over.
    let left: BTreeSet<&str> = missing
        .iter()
        .filter(|(_, d)| **d > 0)
        .map(|(n, _)| *n)
        .collect();
    let mut cycles: Vec<Vec<String>> = Vec::new();
    let mut seen_sets: BTreeSet<Vec<String>> = BTreeSet::new();
    for start in &left {
        if let Some(cycle) = find_cycle(steps, start, &left) {
            let mut key: Vec<String> = cycle[..cycle.len() - 1].to_vec();
            key.sort();
            if seen_sets.insert(key) {
                cycles.push(cycle);
            }
        }
    }
    Err(cycles)
}

/// A path from `start` back to `start` through dependencies, if there is one.
fn find_cycle(
    steps: &BTreeMap<String, StepSpec>,
    start: &str,
    within: &BTreeSet<&str>,
) -> Option<Vec<String>> {
    // Iterative DFS recording the path; dependency edges point from a step to what it needs.
    let mut path: Vec<(String, Vec<String>)> =
        vec![(start.to_owned(), deps_of(steps, start, within))];
    let mut visited = BTreeSet::new();
    visited.insert(start.to_owned());
    while let Some((_, pending)) = path.last_mut() {
        match pending.pop() {
            None => {
                path.pop();
            }
            Some(next) if next == start => {
                let mut cycle: Vec<String> = path.iter().map(|(n, _)| n.clone()).collect();
                cycle.push(start.to_owned());
                return Some(cycle);
            }
            Some(next) => {
                if visited.insert(next.clone()) {
                    let deps = deps_of(steps, &next, within);
                    path.push((next, deps));
                }
            }
        }
    }
    None
}

fn deps_of(steps: &BTreeMap<String, StepSpec>, name: &str, within: &BTreeSet<&str>) -> Vec<String> {
    // Reverse order so that popping visits dependencies by name.
    steps[name]
        .depends_on
        .iter()
        .rev()
        .filter(|d| within.contains(d.as_str()))
        .cloned()
        .collect()
}
