//! Where `lake serve`'s queries run: threads of their own (with large stacks), never the
//! threads that answer requests, so a page, `/api/version` and a signal are answered whatever a
//! query does. Queries typed by a visitor (the SQL box, downloads) and those of the pages
//! (charts, dataset pages) each have their own number of places, so a page never waits
//! behind a visitor's query; all of them share the engine's one memory pool. At its time
//! limit, or when its client leaves, a query's task is aborted: its plan is dropped and the
//! tasks it spawned stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Stack of each query thread: deep plans recurse (DataFusion grows its stack where it can;
/// what it cannot, such as dropping a deep expression, needs room).
const STACK_BYTES: usize = 32 << 20;

/// How long a query waits for a place before it is refused with a 503.
const WAIT_FOR_PLACE: Duration = Duration::from_secs(5);

/// Answers kept for a moment and shared: a page that 50 visitors open at once is read once,
/// not 50 times. One request at a time makes a key's answer; while it does, the others get the
/// previous answer (or, when there is none yet, wait for it). Errors are not kept.
#[derive(Debug)]
pub(crate) struct Recent<V> {
    ttl: Duration,
    slots: std::sync::Mutex<std::collections::HashMap<String, Arc<Slot<V>>>>,
}

#[derive(Debug)]
struct Slot<V> {
    value: std::sync::Mutex<Option<(std::time::Instant, V)>>,
    making: tokio::sync::Mutex<()>,
}

impl<V> Default for Slot<V> {
    fn default() -> Self {
        Self {
            value: std::sync::Mutex::new(None),
            making: tokio::sync::Mutex::new(()),
        }
    }
}

impl<V: Clone> Slot<V> {
    fn value(&self) -> Option<(std::time::Instant, V)> {
        self.value
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, v: V) {
        *self
            .value
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((std::time::Instant::now(), v));
    }
}

/// Keys kept at most; past it the table starts again.
const RECENT_KEYS: usize = 256;

impl<V: Clone> Recent<V> {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slots: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The answer for `key` made within the last `ttl`, else `make`'s (kept when it is `Ok`);
    /// while another request makes it, the previous answer.
    pub(crate) async fn get<E>(
        &self,
        key: &str,
        make: impl Future<Output = Result<V, E>>,
    ) -> Result<V, E> {
        let slot = {
            let mut slots = self
                .slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if slots.len() >= RECENT_KEYS && !slots.contains_key(key) {
                slots.clear();
            }
            Arc::clone(slots.entry(key.to_owned()).or_default())
        };
        let making = match slot.value() {
            Some((at, v)) if at.elapsed() < self.ttl => return Ok(v),
            // Stale: one request makes it again, the others take what there is.
            Some((_, v)) => match slot.making.try_lock() {
                Ok(m) => m,
                Err(_) => return Ok(v),
            },
            None => {
                let m = slot.making.lock().await;
                // Made by the request this one waited for.
                if let Some((at, v)) = slot.value()
                    && at.elapsed() < self.ttl
                {
                    return Ok(v);
                }
                m
            }
        };
        let v = make.await?;
        slot.set(v.clone());
        drop(making);
        Ok(v)
    }
}

/// Which places a query takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// A query a visitor typed or asked for (the SQL box, a download).
    Visitor,
    /// A page's own query (a chart, a dataset's rows and count).
    Page,
}

/// Why a query gave no rows.
#[derive(Debug)]
pub(crate) enum QueryError {
    /// Every place was taken for longer than [`WAIT_FOR_PLACE`].
    Busy,
    /// It ran past the time limit and was stopped.
    TimedOut(Duration),
    /// It failed: the error's text.
    Failed(String),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Busy => write!(
                f,
                "the server is running as many queries as it allows ([serve] max_queries); try again in a moment"
            ),
            Self::TimedOut(t) => write!(
                f,
                "the query ran longer than {}s and was stopped",
                t.as_secs()
            ),
            Self::Failed(e) => f.write_str(e),
        }
    }
}

/// The query threads and their places: each lane has threads of its own, so a visitor's
/// heavy query cannot hold the threads a page's query needs.
#[derive(Debug)]
pub(crate) struct Queries {
    visitor_threads: Option<tokio::runtime::Runtime>,
    page_threads: Option<tokio::runtime::Runtime>,
    visitor: Arc<Semaphore>,
    page: Arc<Semaphore>,
    timeout: Duration,
}

fn threads(n: usize, name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(n.max(1))
        .thread_name(name)
        .thread_stack_size(STACK_BYTES)
        .enable_all()
        .build()
}

impl Queries {
    /// `threads` query threads, `max` queries of each lane at once, each stopped after
    /// `timeout`.
    pub(crate) fn new(n: usize, max: usize, timeout: Duration) -> std::io::Result<Self> {
        Ok(Self {
            visitor_threads: Some(threads(n, "lake-query")?),
            page_threads: Some(threads(n, "lake-page-query")?),
            visitor: Arc::new(Semaphore::new(max.max(1))),
            page: Arc::new(Semaphore::new(max.max(1))),
            timeout,
        })
    }

    /// Run `work` on a query thread when `lane` has a place, within the time limit. Dropping
    /// the returned future (the client left) aborts it.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        lane: Lane,
        work: impl Future<Output = Result<T, String>> + Send + 'static,
    ) -> Result<T, QueryError> {
        let (places, runtime) = match lane {
            Lane::Visitor => (&self.visitor, &self.visitor_threads),
            Lane::Page => (&self.page, &self.page_threads),
        };
        let place = tokio::time::timeout(WAIT_FOR_PLACE, Arc::clone(places).acquire_owned())
            .await
            .map_err(|_| QueryError::Busy)?
            .map_err(|_| QueryError::Busy)?;
        let runtime = runtime.as_ref().ok_or(QueryError::Busy)?;
        // A JoinSet aborts its task when dropped: on the time limit, and when the request's
        // future is dropped because its client left.
        let mut task = JoinSet::new();
        task.spawn_on(
            async move {
                let out = work.await;
                drop(place);
                out
            },
            runtime.handle(),
        );
        match tokio::time::timeout(self.timeout, task.join_next()).await {
            Ok(Some(Ok(out))) => out.map_err(QueryError::Failed),
            Ok(Some(Err(e))) if e.is_panic() => Err(QueryError::Failed(format!(
                "the query failed inside the engine: {}",
                panic_text(e.into_panic())
            ))),
            Ok(_) => Err(QueryError::Failed("the query was stopped".into())),
            Err(_) => {
                task.abort_all();
                Err(QueryError::TimedOut(self.timeout))
            }
        }
    }
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}

impl Drop for Queries {
    /// The server is stopping: queries still running are left to end with the process, never
    /// waited for.
    fn drop(&mut self) {
        for rt in [self.visitor_threads.take(), self.page_threads.take()]
            .into_iter()
            .flatten()
        {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_query_past_its_time_is_stopped_and_its_place_given_back() {
        let q = Queries::new(1, 1, Duration::from_millis(200)).unwrap();
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flag = Arc::clone(&stopped);
        let started = std::time::Instant::now();
        let r = q
            .run(Lane::Visitor, async move {
                // Yields like an operator between batches; never ends by itself.
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    flag.store(false, std::sync::atomic::Ordering::SeqCst);
                }
                #[allow(unreachable_code)]
                Ok::<(), String>(())
            })
            .await;
        assert!(matches!(r, Err(QueryError::TimedOut(_))), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // Aborted: it no longer runs, and the one place is free again.
        stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(stopped.load(std::sync::atomic::Ordering::SeqCst));
        let again = q.run(Lane::Visitor, async { Ok::<_, String>(7) }).await;
        assert_eq!(again.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_full_lane_refuses_and_the_other_lane_still_runs() {
        let q = Arc::new(Queries::new(2, 1, Duration::from_secs(30)).unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let busy = {
            let q = Arc::clone(&q);
            tokio::spawn(async move {
                q.run(Lane::Visitor, async move {
                    let _ = rx.await;
                    Ok::<_, String>(())
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let page = q.run(Lane::Page, async { Ok::<_, String>("page") }).await;
        assert_eq!(page.unwrap(), "page");
        let started = std::time::Instant::now();
        let refused = q.run(Lane::Visitor, async { Ok::<_, String>(()) }).await;
        assert!(matches!(refused, Err(QueryError::Busy)), "{refused:?}");
        assert!(started.elapsed() >= WAIT_FOR_PLACE - Duration::from_millis(100));
        tx.send(()).unwrap();
        busy.await.unwrap().unwrap();
    }
}
