//! Limits for queries that people type into a server (`lake serve`'s SQL box): one memory pool
//! that all of them share, a bound on the SQL's length and on how deep its expressions nest,
//! and the functions that make a large value from a small one (`repeat('x', 1e9)`) checked
//! before they allocate, since what a scalar function returns is outside DataFusion's pool.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::length::length;
use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result as DfResult;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr, Query, Visit, Visitor};

/// What a guarded engine allows one query, and all of them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Bytes all queries of the engine share for sorts, joins and aggregates.
    pub memory: u64,
    /// The longest SQL text, in bytes.
    pub max_sql_bytes: usize,
    /// How deep expressions and subqueries may nest.
    pub max_depth: usize,
    /// The most one call of a growing function (`repeat`, `lpad`, `replace`…) may return for
    /// one batch, in bytes.
    pub max_value_bytes: u64,
}

impl QueryLimits {
    /// Limits with `memory` shared by all queries: 64 KiB of SQL, nesting 128 deep, and a
    /// growing function's output at most an eighth of the memory per batch.
    pub fn with_memory(memory: u64) -> Self {
        Self {
            memory,
            max_sql_bytes: 64 << 10,
            max_depth: 128,
            max_value_bytes: (memory / 8).max(1 << 20),
        }
    }
}

/// The shared memory pool and the limits of a guarded engine.
#[derive(Debug)]
pub(crate) struct Guard {
    pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
    spill_dir: Option<std::path::PathBuf>,
    pub(crate) limits: QueryLimits,
}

impl Guard {
    pub(crate) fn new(limits: QueryLimits, spill_dir: Option<&std::path::Path>) -> Self {
        Self {
            pool: Arc::new(FairSpillPool::new(limits.memory as usize)),
            spill_dir: spill_dir.map(std::path::Path::to_owned),
            limits,
        }
    }

    /// A runtime for one session over the shared pool. Each session gets its own caches:
    /// DataFusion's listing cache, shared, would hand a new session the files of a manifest
    /// that a republish has replaced since.
    pub(crate) fn runtime(&self) -> DfResult<Arc<RuntimeEnv>> {
        use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        let mut runtime = RuntimeEnvBuilder::new().with_memory_pool(Arc::clone(&self.pool));
        if let Some(dir) = &self.spill_dir {
            runtime = runtime.with_disk_manager_builder(
                DiskManagerBuilder::default()
                    .with_mode(DiskManagerMode::Directories(vec![dir.clone()])),
            );
        }
        runtime.build_arc()
    }

    /// Replace the growing functions of `ctx` by checked ones.
    pub(crate) fn bound_functions(&self, ctx: &SessionContext) {
        let state = ctx.state();
        for name in GROWING {
            if let Some(f) = state.scalar_functions().get(*name) {
                ctx.register_udf(ScalarUDF::new_from_impl(Bounded {
                    inner: f.as_ref().clone(),
                    max_bytes: self.limits.max_value_bytes,
                }));
            }
        }
    }
}

/// Check `sql` against `limits` before it is parsed for planning: its length, then how deep
/// its expressions and subqueries nest.
pub(crate) fn check_sql(sql: &str, limits: &QueryLimits) -> Result<(), String> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    if sql.len() > limits.max_sql_bytes {
        return Err(format!(
            "the query is {} bytes long; this server takes at most {}",
            sql.len(),
            limits.max_sql_bytes
        ));
    }
    use datafusion::sql::sqlparser::parser::ParserError;
    let too_deep = || {
        format!(
            "the query's expressions nest more than {} deep; this server takes at most that",
            limits.max_depth
        )
    };
    // The planner's parser refuses what it cannot parse with a better message: only the depth
    // of what parses is checked here.
    let statements = match Parser::new(&GenericDialect {})
        .with_recursion_limit(limits.max_depth)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_statements())
    {
        Ok(s) => s,
        Err(ParserError::RecursionLimitExceeded) => return Err(too_deep()),
        Err(_) => return Ok(()),
    };
    let mut depth = Depth {
        now: 0,
        max: limits.max_depth,
    };
    if statements.visit(&mut depth).is_break() {
        return Err(too_deep());
    }
    Ok(())
}

/// Counts how deep expressions and queries nest, and stops past `max`.
struct Depth {
    now: usize,
    max: usize,
}

impl Depth {
    fn enter(&mut self) -> ControlFlow<()> {
        self.now += 1;
        if self.now > self.max {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Visitor for Depth {
    type Break = ();
    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.enter()
    }
    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.enter()
    }
    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}

/// The functions whose output can be far larger than their input.
const GROWING: &[&str] = &["repeat", "lpad", "rpad", "replace", "regexp_replace"];

/// A growing function whose output for one batch is estimated from its arguments, and refused
/// past `max_bytes`, before it allocates; what it returns is checked too.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    max_bytes: u64,
}

/// The arguments as arrays of `number_rows` rows.
fn arrays(args: &ScalarFunctionArgs) -> DfResult<Vec<ArrayRef>> {
    args.args
        .iter()
        .map(|a| a.to_array(args.number_rows))
        .collect()
}

/// Each row's byte length of a string argument (0 for NULL).
fn byte_lengths(a: &ArrayRef) -> DfResult<Vec<u64>> {
    let text = cast(a, &DataType::LargeUtf8)?;
    let lens = cast(&length(text.as_ref())?, &DataType::Int64)?;
    let lens = lens.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    Ok((0..lens.len())
        .map(|i| {
            if lens.is_null(i) {
                0
            } else {
                lens.value(i).max(0) as u64
            }
        })
        .collect())
}

/// Each row's value of an integer argument (0 for NULL or negative).
fn counts(a: &ArrayRef) -> DfResult<Vec<u64>> {
    let n = cast(a, &DataType::Int64)?;
    let n = n.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    Ok((0..n.len())
        .map(|i| {
            if n.is_null(i) {
                0
            } else {
                n.value(i).max(0) as u64
            }
        })
        .collect())
}

impl Bounded {
    /// The most bytes the call can return, from its arguments.
    fn estimate(&self, args: &ScalarFunctionArgs) -> DfResult<u64> {
        let a = arrays(args)?;
        let rows = args.number_rows;
        let total = |per_row: &dyn Fn(usize) -> u64| {
            (0..rows).fold(0u64, |sum, i| sum.saturating_add(per_row(i)))
        };
        Ok(match (self.inner.name(), a.as_slice()) {
            ("repeat", [s, n, ..]) => {
                let (s, n) = (byte_lengths(s)?, counts(n)?);
                total(&|i| s[i].saturating_mul(n[i]))
            }
            // At most four bytes a character.
            ("lpad" | "rpad", [s, n, ..]) => {
                let (s, n) = (byte_lengths(s)?, counts(n)?);
                total(&|i| n[i].saturating_mul(4).max(s[i]))
            }
            ("replace", [s, from, to, ..]) => {
                let (s, from, to) = (byte_lengths(s)?, byte_lengths(from)?, byte_lengths(to)?);
                total(&|i| {
                    (s[i] / from[i].max(1) + 1)
                        .saturating_mul(to[i])
                        .saturating_add(s[i])
                })
            }
            // Every position can match (with the `g` flag), and a replacement's group
            // references can each repeat the whole value.
            ("regexp_replace", [s, _, repl, ..]) => {
                let (s, repl) = (byte_lengths(s)?, byte_lengths(repl)?);
                total(&|i| {
                    (s[i] + 1)
                        .saturating_mul(repl[i])
                        .saturating_mul(s[i].max(1))
                        .saturating_add(s[i])
                })
            }
            _ => 0,
        })
    }

    fn refused(&self, bytes: u64) -> DataFusionError {
        DataFusionError::ResourcesExhausted(format!(
            "{}() would make {bytes} bytes for one batch; this server allows {} (a query's values are bounded by [serve] query_memory)",
            self.inner.name(),
            self.max_bytes
        ))
    }
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }
    fn schema_name(&self, args: &[datafusion::logical_expr::Expr]) -> DfResult<String> {
        self.inner.inner().schema_name(args)
    }
    fn signature(&self) -> &Signature {
        self.inner.signature()
    }
    fn return_type(&self, arg_types: &[DataType]) -> DfResult<DataType> {
        self.inner.inner().return_type(arg_types)
    }
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> DfResult<FieldRef> {
        self.inner.return_field_from_args(args)
    }
    fn is_strict(&self) -> bool {
        self.inner.inner().is_strict()
    }
    fn coerce_types(&self, arg_types: &[DataType]) -> DfResult<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }
    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let estimate = self.estimate(&args)?;
        if estimate > self.max_bytes {
            return Err(self.refused(estimate));
        }
        let out = self.inner.invoke_with_args(args)?;
        let made = match &out {
            ColumnarValue::Array(a) => a.get_array_memory_size() as u64,
            ColumnarValue::Scalar(s) => s.size() as u64,
        };
        if made > self.max_bytes {
            return Err(self.refused(made));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> QueryLimits {
        QueryLimits::with_memory(64 << 20)
    }

    #[test]
    fn long_and_deep_sql_is_refused_and_ordinary_sql_is_not() {
        let l = limits();
        assert!(check_sql("SELECT 1 + 1 FROM t WHERE a IN (SELECT b FROM u)", &l).is_ok());
        let terms = vec!["1"; 2000].join("+");
        let deep = check_sql(&format!("SELECT {terms}"), &l).unwrap_err();
        assert!(deep.contains("nest more than 128"), "{deep}");
        let long = format!("SELECT '{}'", "x".repeat(70_000));
        assert!(check_sql(&long, &l).unwrap_err().contains("70009 bytes"));
        let nested = format!("SELECT {}1{}", "(".repeat(200), ")".repeat(200));
        assert!(
            check_sql(&nested, &l)
                .unwrap_err()
                .contains("nest more than 128")
        );
    }

    #[tokio::test]
    async fn growing_functions_are_refused_before_they_allocate() {
        let guard = Guard::new(limits(), None);
        let ctx = SessionContext::new_with_config_rt(
            datafusion::prelude::SessionConfig::new(),
            guard.runtime().unwrap(),
        );
        guard.bound_functions(&ctx);
        for sql in [
            "SELECT repeat('x', 1000000000)",
            "SELECT lpad('x', 1000000000)",
            "SELECT replace(repeat('a', 100000), 'a', repeat('b', 100000))",
            "SELECT length(repeat(v, 1000000)) FROM (VALUES ('abcdefgh'), ('ijklmnop'), ('q')) AS t(v)",
        ] {
            let e = match ctx.sql(sql).await {
                Ok(df) => df.collect().await.unwrap_err(),
                Err(e) => e,
            };
            assert!(e.to_string().contains("this server allows"), "{sql}: {e}");
        }
        let ok = ctx
            .sql("SELECT repeat('ab', 3) AS r, lpad('7', 3, '0') AS p, replace('aXa', 'X', 'y') AS q")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let row = datafusion::arrow::util::pretty::pretty_format_batches(&ok)
            .unwrap()
            .to_string();
        assert!(
            row.contains("ababab") && row.contains("007") && row.contains("aya"),
            "{row}"
        );
    }
}
