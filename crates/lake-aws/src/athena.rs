//! Athena: `lake query --engine athena` runs a query over the catalog's tables
//! (StartQueryExecution, polls with backoff, pages of GetQueryResults) and stops it on Ctrl-C.

use async_trait::async_trait;
use aws_sdk_athena::types::{QueryExecutionContext, ResultConfiguration};
use lake_core::retry::Backoff;
use lake_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use crate::calls::{ApiError, api_error};

/// A query to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AthenaQuery {
    /// The SQL.
    pub sql: String,
    /// The database unqualified names are looked up in.
    pub database: String,
    /// The workgroup.
    pub workgroup: String,
    /// Where Athena writes the result (`s3://…/`).
    pub output: String,
}

/// A query's state as GetQueryExecution reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryStatus {
    /// `QUEUED`, `RUNNING`, `SUCCEEDED`, `FAILED`, `CANCELLED`.
    pub state: String,
    /// Why it failed or was cancelled.
    pub reason: Option<String>,
    /// Bytes scanned so far.
    pub scanned_bytes: u64,
}

/// One page of GetQueryResults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResultPage {
    /// The columns' names and Athena types (`bigint`, `varchar`, `decimal`).
    pub columns: Vec<Column>,
    /// Rows of values (`None`: NULL); the first page's first row of a SELECT is its header.
    pub rows: Vec<Vec<Option<String>>>,
    /// The token of the next page.
    pub next: Option<String>,
}

/// A result column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its Athena type.
    pub athena_type: String,
    /// Precision and scale, for decimals.
    pub precision: i32,
    /// Scale, for decimals.
    pub scale: i32,
}

/// The calls `lake query --engine athena` makes.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait AthenaApi: Send + Sync + std::fmt::Debug {
    /// StartQueryExecution: the query's id.
    async fn start(&self, query: &AthenaQuery) -> std::result::Result<String, ApiError>;
    /// GetQueryExecution.
    async fn status(&self, id: &str) -> std::result::Result<QueryStatus, ApiError>;
    /// GetQueryResults from `token` (the first page without one).
    async fn results(
        &self,
        id: &str,
        token: Option<String>,
    ) -> std::result::Result<ResultPage, ApiError>;
    /// StopQueryExecution.
    async fn stop(&self, id: &str) -> std::result::Result<(), ApiError>;
}

/// A finished query's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AthenaResult {
    /// Its id.
    pub query_id: String,
    /// Its columns.
    pub columns: Vec<Column>,
    /// Its rows, without the header.
    pub rows: Vec<Vec<Option<String>>>,
    /// Bytes Athena scanned.
    pub scanned_bytes: u64,
}

impl AthenaResult {
    /// What the query cost at $5 per TB scanned (bytes rounded up to the megabyte, at least
    /// 10 MB per query, as Athena bills).
    pub fn cost_usd(&self) -> f64 {
        const MB: u64 = 1 << 20;
        let billed = self.scanned_bytes.div_ceil(MB).max(10) * MB;
        billed as f64 / 1e12 * 5.0
    }
}

/// Run `query` and read every page of its result. Polls from `poll.first` doubling to
/// `poll.max`; a throttled call is retried on the same schedule. When `cancel` fires, the
/// query is stopped (StopQueryExecution) and the result is [`Error::Cancelled`]; a FAILED
/// query is an error with Athena's reason.
pub async fn run(
    api: &dyn AthenaApi,
    query: &AthenaQuery,
    poll: Backoff,
    cancel: &CancellationToken,
) -> Result<AthenaResult> {
    let fail = |what: &str, e: ApiError| {
        Error::query(
            "lake query --engine athena",
            format!(
                "{what}: {}{}",
                e.code.map(|c| format!("{c}: ")).unwrap_or_default(),
                e.message
            ),
        )
    };
    let id = retry_throttled(poll, || api.start(query))
        .await
        .map_err(|e| fail("StartQueryExecution", e))?;
    let mut delays = poll.delays();
    let status = loop {
        let wait = delays.next().unwrap_or(poll.max);
        tokio::select! {
            () = cancel.cancelled() => {
                let stopped = retry_throttled(poll, || api.stop(&id)).await;
                return match stopped {
                    Ok(()) => Err(Error::Cancelled),
                    Err(e) => Err(fail(&format!("StopQueryExecution of {id} (the query may still run)"), e)),
                };
            }
            () = tokio::time::sleep(wait) => {}
        }
        let s = retry_throttled(poll, || api.status(&id))
            .await
            .map_err(|e| fail("GetQueryExecution", e))?;
        match s.state.as_str() {
            "SUCCEEDED" => break s,
            "FAILED" | "CANCELLED" => {
                return Err(Error::query(
                    format!("Athena query {id}"),
                    format!(
                        "{}: {}",
                        s.state,
                        s.reason.as_deref().unwrap_or("Athena gave no reason")
                    ),
                ));
            }
            _ => {}
        }
    };
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    let mut token = None;
    let mut first = true;
    loop {
        let page = retry_throttled(poll, || api.results(&id, token.clone()))
            .await
            .map_err(|e| fail("GetQueryResults", e))?;
        let mut page_rows = page.rows.into_iter();
        if first {
            columns = page.columns;
            // A SELECT's first row repeats the column names.
            let mut peek = page_rows.clone();
            if let Some(h) = peek.next()
                && h.len() == columns.len()
                && h.iter()
                    .zip(&columns)
                    .all(|(v, c)| v.as_deref() == Some(&c.name))
            {
                page_rows = peek;
            }
            first = false;
        }
        rows.extend(page_rows);
        match page.next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    Ok(AthenaResult {
        query_id: id,
        columns,
        rows,
        scanned_bytes: status.scanned_bytes,
    })
}

/// A call retried while Athena throttles it or fails transiently: lake's one retry layer (the
/// SDK client retries nothing, [`Aws::athena`](crate::Aws::athena)).
async fn retry_throttled<T, F, Fut>(poll: Backoff, call: F) -> std::result::Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, ApiError>>,
{
    crate::calls::retrying(6, poll.first, "athena", call).await
}

/// [`AthenaApi`] over the AWS SDK.
#[derive(Debug, Clone)]
pub struct SdkAthena(aws_sdk_athena::Client);

impl SdkAthena {
    /// Calls through this client (from [`Aws::athena`](crate::Aws::athena)).
    pub fn new(client: aws_sdk_athena::Client) -> Self {
        Self(client)
    }
}

#[async_trait]
impl AthenaApi for SdkAthena {
    async fn start(&self, q: &AthenaQuery) -> std::result::Result<String, ApiError> {
        let out = self
            .0
            .start_query_execution()
            .query_string(&q.sql)
            .query_execution_context(
                QueryExecutionContext::builder()
                    .database(&q.database)
                    .build(),
            )
            .work_group(&q.workgroup)
            .result_configuration(
                ResultConfiguration::builder()
                    .output_location(&q.output)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        out.query_execution_id()
            .map(str::to_owned)
            .ok_or_else(|| ApiError::new("InvalidResponse", "StartQueryExecution returned no id"))
    }

    async fn status(&self, id: &str) -> std::result::Result<QueryStatus, ApiError> {
        let out = self
            .0
            .get_query_execution()
            .query_execution_id(id)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        let q = out.query_execution();
        let status = q.and_then(|q| q.status());
        Ok(QueryStatus {
            state: status
                .and_then(|s| s.state())
                .map(|s| s.as_str().to_owned())
                .unwrap_or_else(|| "QUEUED".into()),
            reason: status
                .and_then(|s| s.state_change_reason())
                .map(str::to_owned),
            scanned_bytes: q
                .and_then(|q| q.statistics())
                .and_then(|s| s.data_scanned_in_bytes())
                .map_or(0, |b| u64::try_from(b).unwrap_or(0)),
        })
    }

    async fn results(
        &self,
        id: &str,
        token: Option<String>,
    ) -> std::result::Result<ResultPage, ApiError> {
        let out = self
            .0
            .get_query_results()
            .query_execution_id(id)
            .set_next_token(token)
            .max_results(1000)
            .send()
            .await
            .map_err(|e| api_error(&e))?;
        let set = out.result_set();
        Ok(ResultPage {
            columns: set
                .and_then(|s| s.result_set_metadata())
                .map(|m| m.column_info())
                .unwrap_or_default()
                .iter()
                .map(|c| Column {
                    name: c.name().to_owned(),
                    athena_type: c.r#type().to_owned(),
                    precision: c.precision(),
                    scale: c.scale(),
                })
                .collect(),
            rows: set
                .map(|s| s.rows())
                .unwrap_or_default()
                .iter()
                .map(|r| {
                    r.data()
                        .iter()
                        .map(|d| d.var_char_value().map(str::to_owned))
                        .collect()
                })
                .collect(),
            next: out.next_token().map(str::to_owned),
        })
    }

    async fn stop(&self, id: &str) -> std::result::Result<(), ApiError> {
        self.0
            .stop_query_execution()
            .query_execution_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| api_error(&e))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn query() -> AthenaQuery {
        AthenaQuery {
            sql: "SELECT purpose, n FROM refined_credit_by_purpose".into(),
            database: "credit".into(),
            workgroup: "primary".into(),
            output: "s3://b/lake/_lake/athena/".into(),
        }
    }

    fn col(name: &str, t: &str) -> Column {
        Column {
            name: name.into(),
            athena_type: t.into(),
            precision: 0,
            scale: 0,
        }
    }

    fn row(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some((*s).to_owned())).collect()
    }

    fn poll() -> Backoff {
        Backoff::polls(Duration::from_millis(1), Duration::from_millis(4))
    }

    fn status(state: &str, reason: Option<&str>) -> QueryStatus {
        QueryStatus {
            state: state.into(),
            reason: reason.map(str::to_owned),
            scanned_bytes: 3 << 20,
        }
    }

    #[tokio::test]
    async fn a_query_is_started_as_asked_polled_and_read_page_by_page_without_its_header() {
        let mut api = MockAthenaApi::new();
        let throttled = Arc::new(AtomicUsize::new(0));
        let t = Arc::clone(&throttled);
        api.expect_start()
            .withf(|q| *q == query())
            .times(2)
            .returning(move |_| {
                if t.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(ApiError::new("ThrottlingException", "Rate exceeded"))
                } else {
                    Ok("q-1".into())
                }
            });
        let polls = Arc::new(AtomicUsize::new(0));
        let p = Arc::clone(&polls);
        api.expect_status().returning(move |id| {
            assert_eq!(id, "q-1");
            Ok(if p.fetch_add(1, Ordering::SeqCst) < 2 {
                status("RUNNING", None)
            } else {
                status("SUCCEEDED", None)
            })
        });
        api.expect_results()
            .withf(|id, token| id == "q-1" && token.is_none())
            .times(1)
            .returning(|_, _| {
                Ok(ResultPage {
                    columns: vec![col("purpose", "varchar"), col("n", "bigint")],
                    rows: vec![
                        row(&["purpose", "n"]),
                        row(&["car", "337"]),
                        row(&["radio/TV", "280"]),
                    ],
                    next: Some("page-2".into()),
                })
            });
        api.expect_results()
            .withf(|_, token| token.as_deref() == Some("page-2"))
            .times(1)
            .returning(|_, _| {
                Ok(ResultPage {
                    columns: vec![col("purpose", "varchar"), col("n", "bigint")],
                    rows: vec![vec![Some("education".into()), None]],
                    next: None,
                })
            });
        api.expect_stop().never();
        let r = run(&api, &query(), poll(), &CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(r.query_id, "q-1");
        assert_eq!(r.columns[1], col("n", "bigint"));
        assert_eq!(
            r.rows,
            vec![
                row(&["car", "337"]),
                row(&["radio/TV", "280"]),
                vec![Some("education".into()), None]
            ]
        );
        assert_eq!(polls.load(Ordering::SeqCst), 3);
        // 3 MiB scanned is billed as the 10 MB minimum.
        assert!((r.cost_usd() - 10.0 * 1048576.0 / 1e12 * 5.0).abs() < 1e-12);
    }

    #[tokio::test]
    async fn a_failed_query_is_an_error_with_athenas_reason() {
        let mut api = MockAthenaApi::new();
        api.expect_start().returning(|_| Ok("q-2".into()));
        api.expect_status().returning(|_| {
            Ok(status(
                "FAILED",
                Some("COLUMN_NOT_FOUND: line 1:8: Column 'x' cannot be resolved"),
            ))
        });
        api.expect_results().never();
        let e = run(&api, &query(), poll(), &CancellationToken::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("q-2") && e.contains("Column 'x' cannot be resolved"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn ctrl_c_stops_the_query() {
        let mut api = MockAthenaApi::new();
        api.expect_start().returning(|_| Ok("q-3".into()));
        api.expect_status()
            .returning(|_| Ok(status("RUNNING", None)));
        api.expect_stop()
            .withf(|id| id == "q-3")
            .times(1)
            .returning(|_| Ok(()));
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            c.cancel();
        });
        let e = run(&api, &query(), poll(), &cancel).await.unwrap_err();
        assert!(matches!(e, Error::Cancelled), "{e}");
    }
}
