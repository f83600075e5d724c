//! Requests: a step's definition, date and inputs turned into what a backend runs.

use chrono::NaiveDate;

use crate::cluster::{CopyWork, SparkWork, SqlInput, SqlWork, StepRequest, StepWork};
use crate::config::{Pipeline, Secret, StepSpec, StepSpecKind, Template, Value};
use crate::publish::ObjectEntry;
use crate::zone::DynZoneStore;

/// What a step request is made from besides the step: for the orchestrator, and for plans that
/// show a run's requests before it runs (with a placeholder run id).
#[derive(Clone, Copy)]
pub struct StepContext<'a> {
    /// The pipeline.
    pub pipeline: &'a Pipeline,
    /// Its zones.
    pub store: &'a DynZoneStore,
    /// The logical date.
    pub date: NaiveDate,
    /// The run id.
    pub run_id: &'a str,
}

impl StepContext<'_> {
    /// The request for `spec`: placeholders expanded, the `LAKE_*` environment and `secrets`
    /// (the step's resolved `env`) added, inputs resolved to `objects`.
    pub fn request(
        &self,
        spec: &StepSpec,
        staging: &str,
        output: Option<&str>,
        objects: Vec<Vec<ObjectEntry>>,
        secrets: Vec<(String, Secret)>,
    ) -> StepRequest {
        let p = self.pipeline;
        let date = self.date.to_string();
        let root = self.store.root_url();
        // The step's placeholders, through the one template language (a command's other
        // braces stay as written).
        let vars = |name: &str| match name {
            "date" => Some(Value::Date(self.date)),
            "run_id" => Some(Value::Text(self.run_id.to_owned())),
            "root" => Some(Value::Text(root.clone())),
            "output" => Some(Value::Text(output.unwrap_or("").to_owned())),
            _ => None,
        };
        let expand = |arg: &str| match Template::parse(arg) {
            Ok(t) => t
                .render("", &vars, &|_| None)
                .map(|s| s.expose().to_owned())
                .unwrap_or_else(|_| arg.to_owned()),
            Err(_) => arg.to_owned(),
        };
        let mut env: Vec<(String, Secret)> = vec![
            ("LAKE_ROOT".into(), plain(&root)),
            ("LAKE_RUN_ID".into(), plain(self.run_id)),
            ("LAKE_DATE".into(), plain(&date)),
            ("LAKE_STEP".into(), plain(&spec.name)),
            ("LAKE_PIPELINE".into(), plain(&p.name)),
        ];
        if let Some(out) = output {
            env.push(("LAKE_OUTPUT".into(), plain(out)));
        }
        for input in &spec.inputs {
            let var = format!(
                "LAKE_INPUT_{}_{}",
                input.dataset.zone.as_str().to_uppercase(),
                input.dataset.name.to_uppercase().replace('-', "_")
            );
            let prefix = input.dataset.prefix();
            let loc = self.store.location(&prefix);
            env.push((var, plain(&loc)));
        }
        env.extend(secrets);
        let inputs: Vec<SqlInput> = spec
            .inputs
            .iter()
            .zip(objects)
            .map(|(i, objects)| SqlInput {
                table: i.table.clone(),
                dataset: i.to_string(),
                prefix: i.dataset.prefix(),
                format: i.format.clone(),
                objects,
            })
            .collect();
        let work = match &spec.kind {
            StepSpecKind::Command { command } => StepWork::Command {
                argv: command.iter().map(|a| expand(a)).collect(),
                env,
                workdir: p.base_dir.clone(),
            },
            StepSpecKind::Spark {
                app,
                args,
                spark_args,
            } => StepWork::Spark(SparkWork {
                app: app.clone(),
                args: args.iter().map(|a| expand(a)).collect(),
                spark_args: spark_args.clone(),
                env,
                workdir: p.base_dir.clone(),
            }),
            StepSpecKind::Copy => StepWork::Copy(CopyWork {
                input: inputs.into_iter().next().expect("validated: one input"),
                output: staging.to_owned(),
            }),
            StepSpecKind::Sql {
                sql,
                sql_line,
                partition_by,
                expect,
                ..
            } => StepWork::Sql(SqlWork {
                sql: sql.clone(),
                origin: format!("{}:{sql_line} (steps.{}.sql)", p.file.display(), spec.name),
                inputs,
                output: staging.to_owned(),
                partition_by: partition_by.clone(),
                expect: expect.clone(),
                run_id: self.run_id.to_owned(),
                committed: Default::default(),
                merge: None,
            }),
        };
        StepRequest {
            name: spec.name.clone(),
            work,
            timeout: spec.timeout,
        }
    }
}

fn plain(s: &str) -> Secret {
    Secret::plain(s)
}
