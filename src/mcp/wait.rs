//! Waiting for a run on behalf of one tool call: long-poll until the run ends or needs the
//! caller, at most the asked time, with progress notifications (at most one a second) when the
//! request carries a progress token. A cancelled request stops the wait, never the run.

use crate::mcp::run_handle::RunHandle;
use crate::mcp::status::{McpStatus, RunStatusOut};
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::{Peer, RoleServer};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the records of a run in another process are read while waiting for it.
const RECORDS_POLL: Duration = Duration::from_millis(250);

/// Sends progress notifications for one waiting request: at most one a second, only when
/// the run moved on.
pub struct Progress {
    pub peer: Peer<RoleServer>,
    pub token: ProgressToken,
    last_value: f64,
    last_sent: Option<Instant>,
}

impl Progress {
    pub fn new(peer: Peer<RoleServer>, token: ProgressToken) -> Progress {
        Progress {
            peer,
            token,
            last_value: -1.0,
            last_sent: None,
        }
    }

    async fn tick(&mut self, run: &RunHandle) {
        if self
            .last_sent
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        let (value, total, message) = run.progress();
        if value <= self.last_value {
            return;
        }
        let mut param =
            ProgressNotificationParam::new(self.token.clone(), value).with_message(message);
        if total > 0 {
            param = param.with_total(total as f64);
        }
        if self.peer.notify_progress(param).await.is_ok() {
            self.last_value = value;
            self.last_sent = Some(Instant::now());
        }
    }
}

/// Waits at most `wait` for the run to settle (end, or need the caller), sending progress.
/// A cancelled request stops the wait, not the run.
pub async fn wait(
    run: &RunHandle,
    wait: Duration,
    request: &rmcp::service::RequestContext<RoleServer>,
    mut progress: Option<Progress>,
) -> RunStatusOut {
    let deadline = tokio::time::Instant::now() + wait;
    let mut rx = run.changed.subscribe();
    loop {
        if run.settled() {
            break;
        }
        if let Some(p) = progress.as_mut() {
            p.tick(run).await;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        // Wake on a change, or each second to send progress that was held back.
        let step = (deadline - now).min(Duration::from_secs(1));
        tokio::select! {
            _ = rx.changed() => {}
            _ = tokio::time::sleep(step) => {}
            _ = request.ct.cancelled() => break,
        }
    }
    run.report()
}

/// [`wait`] for a run in another process (`nixcmd run` in a terminal, CI, another server, or
/// a run of this server taken over by `nixcmd resume`): its records are read again every
/// quarter second until it ends or pauses at a gate (which only the user answers, there),
/// at most `wait`. A cancelled request stops the wait.
pub async fn wait_records(
    run: &Arc<RunHandle>,
    wait: Duration,
    request: &rmcp::service::RequestContext<RoleServer>,
    mut progress: Option<Progress>,
) -> RunStatusOut {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if run.status() != McpStatus::Running {
            break;
        }
        if let Some(p) = progress.as_mut() {
            p.tick(run).await;
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep((deadline - now).min(RECORDS_POLL)) => {}
            _ = request.ct.cancelled() => break,
        }
        let reading = run.clone();
        let _ = tokio::task::spawn_blocking(move || reading.refresh()).await;
    }
    run.report()
}
