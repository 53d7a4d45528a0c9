//! The long-running parts of a service (gRPC server, ops server, relay, consumers) and how they
//! stop together: on shutdown each drains; past the deadline the service gives up with an error.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("task {task} failed: {error}")]
    Task { task: &'static str, error: String },
    #[error("drain did not finish within {0:?}; still running: {1:?}")]
    DrainDeadline(Duration, Vec<&'static str>),
}

/// A set of named tasks that run until shutdown. "Late" tasks (the outbox relay) are told to
/// stop only once every other task has drained, so they can flush what those committed last.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<(&'static str, Result<(), String>)>,
    late: JoinSet<(&'static str, Result<(), String>)>,
    late_token: CancellationToken,
    running: Vec<&'static str>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("running", &self.running)
            .finish()
    }
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a task; it must return once the shared shutdown token fires.
    pub fn spawn<E, F>(&mut self, name: &'static str, task: F)
    where
        E: std::fmt::Display,
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.running.push(name);
        self.set
            .spawn(async move { (name, task.await.map_err(|e| e.to_string())) });
    }

    /// Adds a task that gets [`Tasks::late_token`] instead of the shutdown token.
    pub fn spawn_late<E, F>(&mut self, name: &'static str, task: F)
    where
        E: std::fmt::Display,
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        self.running.push(name);
        self.late
            .spawn(async move { (name, task.await.map_err(|e| e.to_string())) });
    }

    /// The token late tasks stop on.
    pub fn late_token(&self) -> CancellationToken {
        self.late_token.clone()
    }

    /// Waits for `shutdown` (or for a task to fail, which starts the shutdown), then gives every
    /// task `deadline` to finish.
    pub async fn run(
        mut self,
        shutdown: CancellationToken,
        deadline: Duration,
    ) -> Result<(), ServiceError> {
        let mut first_error = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                done = self.set.join_next() => match done {
                    None => break,
                    Some(result) => {
                        let (name, outcome) = flatten(result);
                        self.running.retain(|n| *n != name);
                        match outcome {
                            Ok(()) if !shutdown.is_cancelled() => {
                                tracing::error!(task = name, "task ended before shutdown");
                                first_error = Some(ServiceError::Task { task: name, error: "ended early".into() });
                            }
                            Ok(()) => {}
                            Err(error) => {
                                tracing::error!(task = name, error = %error, "task failed, shutting down");
                                first_error = Some(ServiceError::Task { task: name, error });
                            }
                        }
                        if first_error.is_some() {
                            shutdown.cancel();
                            break;
                        }
                    }
                },
            }
        }
        let started = tokio::time::Instant::now();
        let late_token = self.late_token.clone();
        let drained = tokio::time::timeout(deadline, async {
            for set in [&mut self.set, &mut self.late] {
                while let Some(result) = set.join_next().await {
                    let (name, outcome) = flatten(result);
                    self.running.retain(|n| *n != name);
                    if let Err(error) = outcome {
                        tracing::warn!(task = name, error = %error, "task failed while draining");
                        first_error.get_or_insert(ServiceError::Task { task: name, error });
                    }
                }
                late_token.cancel();
            }
        })
        .await;
        if drained.is_err() {
            self.set.abort_all();
            self.late.abort_all();
            return Err(ServiceError::DrainDeadline(deadline, self.running));
        }
        tracing::info!(drain_ms = started.elapsed().as_millis() as u64, "drained");
        first_error.map_or(Ok(()), Err)
    }
}

fn flatten(
    joined: Result<(&'static str, Result<(), String>), tokio::task::JoinError>,
) -> (&'static str, Result<(), String>) {
    match joined {
        Ok(v) => v,
        Err(e) => (
            "unknown",
            Err(format!("task panicked or was cancelled: {e}")),
        ),
    }
}
