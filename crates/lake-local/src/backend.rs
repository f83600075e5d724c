//! The local backend: command steps as child processes, sql steps on the embedded engine.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use lake_core::cluster::{
    ClusterBackend, ClusterHandle, ClusterSpec, CopyWork, SqlWork, StepHandle, StepLogs,
    StepRequest, StepState, StepWork,
};
use lake_core::{Error, Result};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// How much of each output stream a step keeps (the end of it).
const TAIL_BYTES: usize = 64 * 1024;

/// Runs `command` steps as processes on this machine.
///
/// Each step's process gets its own process group, so cancelling a step (or terminating the
/// "cluster") also stops what a shell started. Standard output and error are kept in full up
/// to their last 64 KiB for [`ClusterBackend::logs`].
#[derive(Debug, Default)]
pub struct LocalBackend {
    steps: Mutex<HashMap<String, Arc<Proc>>>,
    next: AtomicU64,
    engine: Option<Arc<crate::Engine>>,
}

#[derive(Debug, Default)]
struct Proc {
    state: Mutex<Option<StepState>>,
    stdout: Mutex<Vec<u8>>,
    stderr: Mutex<Vec<u8>>,
    cancel: CancellationToken,
    done: tokio::sync::Notify,
}

impl Proc {
    fn set(&self, s: StepState) {
        *self.state.lock().expect("state lock") = Some(s);
        self.done.notify_waiters();
    }

    fn finished(&self) -> bool {
        self.state
            .lock()
            .expect("state lock")
            .as_ref()
            .is_some_and(StepState::is_terminal)
    }

    /// Cancel the process (if still running) and wait until it is gone.
    async fn stop(&self) {
        let wait = self.done.notified();
        tokio::pin!(wait);
        wait.as_mut().enable();
        if self.finished() {
            return;
        }
        self.cancel.cancel();
        wait.await;
    }
}

impl LocalBackend {
    /// A backend for command steps only (sql steps fail with
    /// [`Error::NotImplemented`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A backend that runs sql steps on `engine` too.
    pub fn with_engine(engine: Arc<crate::Engine>) -> Self {
        Self {
            engine: Some(engine),
            ..Self::default()
        }
    }

    fn register(&self, step: &StepRequest) -> (StepHandle, Arc<Proc>) {
        let id = format!(
            "{}-{}",
            step.name,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let proc = Arc::new(Proc::default());
        self.steps
            .lock()
            .expect("steps lock")
            .insert(id.clone(), Arc::clone(&proc));
        *proc.state.lock().expect("state lock") = Some(StepState::Running);
        let handle = StepHandle {
            id,
            name: step.name.clone(),
        };
        (handle, proc)
    }

    /// Run a sql step as a task; cancelling it drops the query.
    fn submit_sql(&self, step: &StepRequest, work: &SqlWork) -> Result<StepHandle> {
        let engine = self.engine("sql steps")?;
        let work = work.clone();
        Ok(self.spawn_task(step, async move {
            let m = engine.run_step(&work).await?;
            Ok(format!(
                "{} rows written, {} rejected\n",
                m.rows, m.rejected
            ))
        }))
    }

    /// Run a copy step as a task: object copies within the lake's store.
    fn submit_copy(&self, step: &StepRequest, work: &CopyWork) -> Result<StepHandle> {
        let engine = self.engine("copy steps")?;
        let work = work.clone();
        Ok(self.spawn_task(step, async move {
            let (n, bytes) = lake_core::publish::copy_objects(&**engine.zone(), &work).await?;
            Ok(format!("{n} objects ({bytes} bytes) copied\n"))
        }))
    }

    fn engine(&self, what: &'static str) -> Result<Arc<crate::Engine>> {
        self.engine.clone().ok_or_else(|| Error::NotImplemented {
            operation: what,
            implementer: "a local backend without an engine (LocalBackend::with_engine)".into(),
        })
    }

    /// Run `task` as a step: its summary goes to stdout, its error to the failure reason;
    /// cancelling the step drops it.
    fn spawn_task(
        &self,
        step: &StepRequest,
        task: impl Future<Output = Result<String>> + Send + 'static,
    ) -> StepHandle {
        let (handle, proc) = self.register(step);
        let proc_name = step.name.clone();
        tokio::spawn(async move {
            // A panic inside the task fails the step: its waiter must not wait forever.
            let task = std::panic::AssertUnwindSafe(task).catch_unwind();
            let state = tokio::select! {
                r = task => match r.unwrap_or_else(|_| Err(Error::Internal {
                    what: format!("step {}", proc_name),
                    message: "panicked (a bug: please report it with the input that caused it)".into(),
                })) {
                    Ok(summary) => {
                        proc.stdout.lock().expect("tail lock").extend_from_slice(summary.as_bytes());
                        StepState::Completed
                    }
                    Err(e) => StepState::Failed {
                        reason: lake_core::run::error_chain(&e),
                    },
                },
                () = proc.cancel.cancelled() => StepState::Cancelled,
            };
            proc.set(state);
        });
        handle
    }

    fn get(&self, step: &StepHandle) -> Result<Arc<Proc>> {
        self.steps
            .lock()
            .expect("steps lock")
            .get(&step.id)
            .cloned()
            .ok_or_else(|| Error::Invalid {
                what: format!("step {}", step.name),
                message: format!("unknown local step id {}", step.id),
            })
    }
}

async fn keep_tail(mut r: impl AsyncRead + Unpin, into: &Mutex<Vec<u8>>) {
    let mut buf = vec![0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut t = into.lock().expect("tail lock");
        t.extend_from_slice(&buf[..n]);
        if t.len() > 2 * TAIL_BYTES {
            let cut = t.len() - TAIL_BYTES;
            t.drain(..cut);
        }
    }
}

fn tail(v: &Mutex<Vec<u8>>) -> String {
    let t = v.lock().expect("tail lock");
    let start = t.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&t[start..]).into_owned()
}

/// Stop a process started with `process_group(0)` and everything it started: SIGTERM to its
/// group, then SIGKILL when it has not ended within `grace` (at once for a zero `grace`).
pub async fn stop_group(child: &mut tokio::process::Child, grace: std::time::Duration) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        use nix::sys::signal::{Signal, killpg};
        use nix::unistd::Pid;
        // The child leads its own group (process_group(0) at spawn), so this reaches what it
        // started too; never signal anything else.
        if pid > 1 {
            if !grace.is_zero() {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
                let _ = tokio::time::timeout(grace, child.wait()).await;
            }
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    let _ = child.kill().await;
}

#[async_trait]
impl ClusterBackend for LocalBackend {
    fn name(&self) -> &str {
        "local"
    }

    fn embedded_sql(&self) -> bool {
        true
    }

    async fn start(&self, spec: &ClusterSpec) -> Result<ClusterHandle> {
        Ok(ClusterHandle {
            id: format!("local-{}", spec.run_id),
            attached: false,
            notes: Vec::new(),
        })
    }

    async fn submit(&self, _cluster: &ClusterHandle, step: &StepRequest) -> Result<StepHandle> {
        let spark_argv;
        let (argv, env, workdir) = match &step.work {
            StepWork::Command { argv, env, workdir } => (argv, env, workdir),
            StepWork::Sql(work) => return self.submit_sql(step, work),
            StepWork::Copy(work) => return self.submit_copy(step, work),
            StepWork::Spark(work) => {
                spark_argv = work.spark_submit(work.app.path());
                (&spark_argv, &work.env, &work.workdir)
            }
            _ => {
                return Err(Error::NotImplemented {
                    operation: "this step kind",
                    implementer: "the local backend".into(),
                });
            }
        };
        let (handle, proc) = self.register(step);

        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        for (k, v) in env {
            cmd.env(k, v.expose());
        }
        match cmd.spawn() {
            Err(e) => proc.set(StepState::Failed {
                reason: format!("cannot start {:?} (in {}): {e}", argv[0], workdir.display()),
            }),
            Ok(mut child) => {
                let out = child.stdout.take();
                let err = child.stderr.take();
                tokio::spawn(async move {
                    let p = Arc::clone(&proc);
                    let readers = async {
                        tokio::join!(
                            async {
                                if let Some(o) = out {
                                    keep_tail(o, &p.stdout).await;
                                }
                            },
                            async {
                                if let Some(e) = err {
                                    keep_tail(e, &p.stderr).await;
                                }
                            }
                        )
                    };
                    let waited = tokio::select! {
                        (status, _) = async { tokio::join!(child.wait(), readers) } => Some(status),
                        () = proc.cancel.cancelled() => None,
                    };
                    let state = match waited {
                        None => {
                            stop_group(&mut child, std::time::Duration::from_secs(5)).await;
                            StepState::Cancelled
                        }
                        Some(Ok(s)) if s.success() => StepState::Completed,
                        Some(Ok(s)) => StepState::Failed {
                            reason: match s.code() {
                                Some(c) => format!("exit status {c}"),
                                None => format!("killed by a signal ({s})"),
                            },
                        },
                        Some(Err(e)) => StepState::Failed {
                            reason: format!("waiting for the process failed: {e}"),
                        },
                    };
                    proc.set(state);
                });
            }
        }
        Ok(handle)
    }

    async fn poll(&self, _cluster: &ClusterHandle, step: &StepHandle) -> Result<StepState> {
        let p = self.get(step)?;
        let s = p.state.lock().expect("state lock").clone();
        Ok(s.unwrap_or(StepState::Pending))
    }

    async fn wait(&self, _cluster: &ClusterHandle, step: &StepHandle, timeout: Duration) {
        let Ok(p) = self.get(step) else {
            return tokio::time::sleep(timeout).await;
        };
        let changed = p.done.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if !p.finished() {
            let _ = tokio::time::timeout(timeout, changed).await;
        }
    }

    async fn logs(&self, _cluster: &ClusterHandle, step: &StepHandle) -> Result<StepLogs> {
        let p = self.get(step)?;
        Ok(StepLogs {
            stdout_tail: tail(&p.stdout),
            stderr_tail: tail(&p.stderr),
        })
    }

    async fn cancel(&self, _cluster: &ClusterHandle, step: &StepHandle) -> Result<()> {
        self.get(step)?.stop().await;
        Ok(())
    }

    async fn terminate(&self, cluster: &ClusterHandle) -> Result<()> {
        let procs: Vec<Arc<Proc>> = self
            .steps
            .lock()
            .expect("steps lock")
            .drain()
            .map(|(_, p)| p)
            .collect();
        for p in procs {
            p.stop().await;
        }
        tracing::debug!(cluster = %cluster.id, "local backend terminated");
        Ok(())
    }
}
