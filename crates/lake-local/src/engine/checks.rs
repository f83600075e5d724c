//! Row checks of a `sql` step: failed CASTs and expectations.
//!
//! Every `CAST` of the query becomes a `TRY_CAST`, so a value that does not convert gives NULL
//! instead of failing the whole run. For the casts of the outermost SELECT list (where
//! cleaning queries convert their text columns), a hidden column records the failure: the
//! source was not NULL but the cast gave NULL. The step's expectations are then evaluated on
//! each output row; a row passes when every one is TRUE (NULL counts as a failure). The first
//! failed check becomes the row's `_reason`.

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::dataframe::DataFrame;
use datafusion::functions::string::expr_fn::concat;
use datafusion::logical_expr::expr::{Cast, TryCast};
use datafusion::logical_expr::{Expr, ExprSchemable, LogicalPlan, Projection, lit, try_cast, when};
use lake_core::config::Expectation;

/// Name of the column holding a row's first failed check (NULL when it passed).
pub(crate) const REASON: &str = "__lake_reason";
const CAST_FLAG: &str = "__lake_cast_";
/// Between a failed CAST's description and the value it failed on, in `_reason`.
const VALUE_SEP: &str = " on value '";

/// The check a `_reason` names, without the value a CAST failed on (to count by).
pub(crate) fn check_of(reason: &str) -> &str {
    reason
        .split_once(VALUE_SEP)
        .map_or(reason, |(check, _)| check)
}

/// A query with its checks: the output columns, then hidden cast flags and [`REASON`].
pub(crate) struct Checked {
    /// The query with the hidden columns.
    pub(crate) df: DataFrame,
    /// How many leading columns are the query's own output.
    pub(crate) outputs: usize,
    /// False when there is nothing to check (no casts found, no expectations).
    pub(crate) has_checks: bool,
}

/// Rewrite `df` (the step's query) with its checks. Errors name the expectation.
pub(crate) fn checked(df: DataFrame, expect: &[Expectation]) -> Result<Checked, String> {
    let outputs = df.schema().fields().len();
    let (state, plan) = df.into_parts();
    let (plan, flags) = add_cast_flags(plan).map_err(|e| e.to_string())?;
    let plan = casts_to_try_casts(plan).map_err(|e| e.to_string())?;
    let df = DataFrame::new(state, plan);
    let mut cases: Vec<(Expr, Expr)> = flags
        .iter()
        .map(|f| {
            let c = Expr::Column(datafusion::common::Column::new_unqualified(f));
            (c.clone().is_not_null(), c)
        })
        .collect();
    for e in expect {
        let cond = df
            .parse_sql_expr(&e.condition)
            .map_err(|err| format!("expectation {:?} (line {}): {err}", e.condition, e.line))?;
        let t = cond
            .get_type(df.schema())
            .map_err(|err| format!("expectation {:?} (line {}): {err}", e.condition, e.line))?;
        if t != DataType::Boolean {
            return Err(format!(
                "expectation {:?} (line {}) is not a condition: it gives {t}, not a boolean",
                e.condition, e.line
            ));
        }
        cases.push((cond.is_not_true(), lit(format!("expect: {}", e.condition))));
    }
    let Some(((first_when, first_then), rest)) = cases.split_first() else {
        return Ok(Checked {
            df,
            outputs,
            has_checks: false,
        });
    };
    let mut case = when(first_when.clone(), first_then.clone());
    for (w, t) in rest {
        case = case.when(w.clone(), t.clone());
    }
    let reason = case.end().map_err(|e| e.to_string())?;
    let df = df.with_column(REASON, reason).map_err(|e| e.to_string())?;
    Ok(Checked {
        df,
        outputs,
        has_checks: true,
    })
}

/// Add a flag column for each CAST in the outermost SELECT list (under ORDER BY / LIMIT).
fn add_cast_flags(plan: LogicalPlan) -> DfResult<(LogicalPlan, Vec<String>)> {
    match plan {
        LogicalPlan::Projection(p) => {
            let mut flags: Vec<Expr> = Vec::new();
            for e in &p.expr {
                e.apply(|node| {
                    if let Expr::Cast(c) = node {
                        flags.push(cast_flag(c));
                    }
                    Ok(TreeNodeRecursion::Continue)
                })?;
            }
            if flags.is_empty() {
                return Ok((LogicalPlan::Projection(p), Vec::new()));
            }
            let names: Vec<String> = (0..flags.len())
                .map(|i| format!("{CAST_FLAG}{i}"))
                .collect();
            let mut exprs = p.expr.clone();
            exprs.extend(flags.into_iter().zip(&names).map(|(f, n)| f.alias(n)));
            let plan = LogicalPlan::Projection(Projection::try_new(exprs, p.input)?);
            Ok((plan, names))
        }
        LogicalPlan::Sort(_) | LogicalPlan::Limit(_) => {
            let mut names = Vec::new();
            let plan = plan
                .map_children(|child| {
                    let (c, n) = add_cast_flags(child)?;
                    names = n;
                    Ok(Transformed::yes(c))
                })?
                .data
                .recompute_schema()?;
            Ok((plan, names))
        }
        other => Ok((other, Vec::new())),
    }
}

/// `CASE WHEN src IS NOT NULL AND TRY_CAST(src AS t) IS NULL THEN 'CAST(src AS t) failed: ' || src END`
fn cast_flag(c: &Cast) -> Expr {
    let src = (*c.expr).clone();
    let t = c.field.data_type().clone();
    // Shown unqualified (`age`, not `credit.age`), as the user wrote it.
    let shown = src
        .clone()
        .transform(|e| match e {
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(
                datafusion::common::Column::new_unqualified(c.name),
            ))),
            other => Ok(Transformed::no(other)),
        })
        .map(|t| t.data)
        .unwrap_or_else(|_| src.clone());
    let label = format!("CAST({} AS {t}) failed{VALUE_SEP}", shown.human_display());
    when(
        src.clone()
            .is_not_null()
            .and(try_cast(src.clone(), t).is_null()),
        concat(vec![lit(label), try_cast(src, DataType::Utf8), lit("'")]),
    )
    .end()
    .expect("a CASE with one branch")
}

/// Every CAST in the plan (and its subqueries) becomes a TRY_CAST.
fn casts_to_try_casts(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| {
        let t = node.map_expressions(|e| {
            e.transform_up(|e| match e {
                Expr::Cast(Cast { expr, field }) => {
                    Ok(Transformed::yes(Expr::TryCast(TryCast { expr, field })))
                }
                other => Ok(Transformed::no(other)),
            })
        })?;
        if t.transformed {
            Ok(Transformed::yes(t.data.recompute_schema()?))
        } else {
            Ok(t)
        }
    })
    .map(|t| t.data)
}
