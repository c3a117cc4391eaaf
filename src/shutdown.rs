//! The drain and cancellation primitive every task observes: a cancellation token that tells
//! sessions and accept loops to stop, and a task tracker to wait for them with a deadline.
//! Sessions are never kept in a `JoinSet`, whose drop would abort them mid-stanza.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Shared shutdown state. Clones are handles to the same state: one reference count each
/// (a cloned `CancellationToken` would take the token tree's lock on every BOSH request).
#[derive(Default, Clone)]
pub struct Shutdown(Arc<Inner>);

#[derive(Default)]
struct Inner {
    token: CancellationToken,
    tracker: TaskTracker,
    draining: AtomicBool,
}

impl Shutdown {
    /// Starts the drain: readiness fails, listeners stop accepting, sessions are told to leave.
    pub fn begin(&self) {
        self.mark_draining();
        self.0.token.cancel();
    }

    /// First step of a drain with a grace period: readiness fails so load balancers stop
    /// sending new clients, while everything keeps serving until [`begin`](Self::begin).
    pub fn mark_draining(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
        crate::metrics::METRICS.draining.set(1);
    }

    /// Whether a drain has begun (readiness fails from here on).
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
    }

    /// Whether sessions have been told to leave: no new session starts from here on.
    pub fn is_stopping(&self) -> bool {
        self.0.token.is_cancelled()
    }

    /// Completes when the drain begins.
    pub async fn cancelled(&self) {
        self.0.token.cancelled().await
    }

    /// Spawns a task the drain will wait for.
    pub fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.0.tracker.spawn(fut)
    }

    /// Tasks still running.
    pub fn tasks(&self) -> usize {
        self.0.tracker.len()
    }

    /// Waits for every tracked task, at most `deadline`. Returns whether all finished.
    pub async fn wait(&self, deadline: Duration) -> bool {
        self.0.tracker.close();
        tokio::time::timeout(deadline, self.0.tracker.wait())
            .await
            .is_ok()
    }
}
