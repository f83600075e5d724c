//! A run's trace, built from its record and the times its events were seen.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use lake_core::ledger::{RunRecord, Status};
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status as SpanStatus, TraceFlags, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SpanData, SpanEvents, SpanLinks};

use crate::Seen;

/// The spans of `record`: the run, then its windows, steps (each with its publish), catalog
/// tables and sinks, each a child of the run.
pub(crate) fn of_run(
    record: &RunRecord,
    seen: &[(SystemTime, Seen)],
    backend: &str,
) -> Vec<SpanData> {
    let ids = RandomIdGenerator::default();
    let trace = ids.new_trace_id();
    let run_start: SystemTime = record.started.into();
    let run_end: SystemTime = record.ended.map(Into::into).unwrap_or_else(SystemTime::now);
    let root = ids.new_span_id();
    let scope = InstrumentationScope::builder("lake")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let span = |id: SpanId,
                parent: SpanId,
                name: String,
                (start, end): (SystemTime, SystemTime),
                attributes: Vec<KeyValue>,
                status: Status,
                error: Option<&str>| SpanData {
        span_context: SpanContext::new(
            trace,
            id,
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        ),
        parent_span_id: parent,
        parent_span_is_remote: false,
        span_kind: SpanKind::Internal,
        name: Cow::Owned(name),
        start_time: start,
        end_time: end.max(start),
        attributes: {
            let mut a = attributes;
            a.push(KeyValue::new("lake.status", status.to_string()));
            a
        },
        dropped_attributes_count: 0,
        events: error.map_or_else(SpanEvents::default, |e| {
            let mut events = SpanEvents::default();
            events.events.push(opentelemetry::trace::Event::new(
                "exception",
                end,
                vec![KeyValue::new("exception.message", e.to_owned())],
                0,
            ));
            events
        }),
        links: SpanLinks::default(),
        status: match (status, error) {
            (Status::Failed, e) => SpanStatus::error(e.unwrap_or("failed").to_owned()),
            (Status::Succeeded | Status::UpToDate, _) => SpanStatus::Ok,
            _ => SpanStatus::Unset,
        },
        instrumentation_scope: scope.clone(),
    };
    let at = |want: &dyn Fn(&Seen) -> bool| {
        seen.iter()
            .filter(|(_, s)| want(s))
            .map(|(t, _)| *t)
            .next_back()
    };
    let mut out = Vec::new();
    out.push(span(
        root,
        SpanId::INVALID,
        "lake run".into(),
        (run_start, run_end),
        vec![
            KeyValue::new("lake.pipeline", record.pipeline.clone()),
            KeyValue::new("lake.run_id", record.run_id.clone()),
            KeyValue::new("lake.date", record.date.to_string()),
            KeyValue::new("lake.backend", backend.to_owned()),
            KeyValue::new("lake.root", record.root.clone()),
        ],
        record.status,
        record.error.as_deref(),
    ));
    // Windows of a source land one after the other: each starts when the previous one (or
    // the source's catch-up) was seen.
    for w in &record.ingest {
        let end = seen
            .iter()
            .find(|(_, s)| matches!(s, Seen::Ingested(src, d) if *src == w.source && *d == w.date))
            .map(|(t, _)| *t)
            .unwrap_or(run_end);
        let start = seen
            .iter()
            .filter(|(t, s)| {
                *t < end
                    && matches!(s, Seen::Catching(src) | Seen::Ingested(src, _) if *src == w.source)
            })
            .map(|(t, _)| *t)
            .next_back()
            .unwrap_or(run_start);
        out.push(span(
            ids.new_span_id(),
            root,
            format!("ingest {}", w.source),
            (start, end),
            vec![
                KeyValue::new("lake.source", w.source.clone()),
                KeyValue::new("lake.window", w.date.to_string()),
                KeyValue::new("lake.objects", w.objects.len() as i64),
                KeyValue::new("lake.bytes", w.bytes as i64),
                KeyValue::new("lake.attempts", i64::from(w.attempts)),
            ],
            w.status,
            w.error.as_deref(),
        ));
    }
    for s in &record.steps {
        let finished = at(&|e| matches!(e, Seen::StepFinished(n) if *n == s.name));
        let end = s.ended.map(Into::into).or(finished).unwrap_or(run_end);
        let start = s.started.map(Into::into).unwrap_or(end);
        let mut attrs = vec![
            KeyValue::new("lake.step", s.name.clone()),
            KeyValue::new("lake.step.kind", s.kind.clone()),
            KeyValue::new("lake.backend", backend.to_owned()),
            KeyValue::new("lake.attempts", i64::from(s.attempts)),
        ];
        if let Some(o) = &s.output {
            attrs.push(KeyValue::new("lake.output", o.clone()));
        }
        for (key, v) in [
            ("lake.rows", s.rows),
            ("lake.rejected", s.rejected),
            ("lake.bytes", s.bytes),
        ] {
            if let Some(v) = v {
                attrs.push(KeyValue::new(key, v as i64));
            }
        }
        let cluster = seen
            .iter()
            .filter_map(|(_, e)| match e {
                Seen::Cluster(n, c) if *n == s.name => Some(c.clone()),
                _ => None,
            })
            .next_back();
        if let Some(c) = cluster {
            attrs.push(KeyValue::new("lake.cluster", c));
        }
        let id = ids.new_span_id();
        out.push(span(
            id,
            root,
            format!("step {}", s.name),
            (start, end),
            attrs,
            s.status,
            s.error.as_deref(),
        ));
        if let (Some(p), Some(output)) = (
            at(&|e| matches!(e, Seen::Publishing(n) if *n == s.name)),
            &s.output,
        ) {
            out.push(span(
                ids.new_span_id(),
                id,
                format!("publish {output}"),
                (p, finished.unwrap_or(end)),
                vec![
                    KeyValue::new("lake.step", s.name.clone()),
                    KeyValue::new("lake.output", output.clone()),
                    KeyValue::new("lake.objects", s.output_objects.len() as i64),
                ],
                s.status,
                s.error.as_deref(),
            ));
        }
    }
    for c in &record.catalog {
        let end = at(&|e| matches!(e, Seen::Catalog(t) if *t == c.table)).unwrap_or(run_end);
        out.push(span(
            ids.new_span_id(),
            root,
            format!("catalog {}", c.table),
            (end - Duration::from_millis(c.duration_ms), end),
            vec![
                KeyValue::new("lake.dataset", c.dataset.clone()),
                KeyValue::new("lake.table", c.table.clone()),
                KeyValue::new("lake.partitions_added", c.partitions_added as i64),
            ],
            c.status,
            c.error.as_deref(),
        ));
    }
    for k in &record.sinks {
        let end = at(&|e| matches!(e, Seen::Sink(n) if *n == k.name)).unwrap_or(run_end);
        let mut attrs = vec![
            KeyValue::new("lake.sink", k.name.clone()),
            KeyValue::new("lake.from", k.from.clone()),
            KeyValue::new("lake.table", k.table.clone()),
        ];
        for (key, v) in [("lake.rows", k.rows), ("lake.bytes", k.bytes)] {
            if let Some(v) = v {
                attrs.push(KeyValue::new(key, v as i64));
            }
        }
        out.push(span(
            ids.new_span_id(),
            root,
            format!("sink {}", k.name),
            (end - Duration::from_millis(k.duration_ms), end),
            attrs,
            k.status,
            k.error.as_deref(),
        ));
    }
    out
}
