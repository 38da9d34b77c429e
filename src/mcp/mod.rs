//! `nixcmd mcp`: an MCP server on stdio (DESIGN.md §7) built on the official Rust SDK. The
//! model can list, plan, run and watch runbooks; confirmations belong to the human
//! (elicitation, or the destructive-annotated `confirm_gate` tool). Runs go through the same
//! engine and records as `nixcmd run`, and the server consumes their events. Nothing but
//! protocol messages goes to stdout: diagnostics go to stderr. The client ends the server by
//! closing stdin, or with SIGTERM (the MCP stdio transport's way when stdin is not enough);
//! running runs are then cancelled (rolled back) before it exits; a SIGTERM during that
//! rollback stops it at once. SIGINT, SIGHUP and SIGQUIT do not end it (see
//! [`end_on_sigterm`]).

pub mod approver;
pub mod catalog;
pub mod prompts;
pub mod registry;
pub mod run_handle;
pub mod server;
pub mod status;
pub mod tools;
pub mod wait;

use crate::app::Context;
use crate::cli::McpConfirm;
use crate::exit::{Exit, Failure};
use approver::GatePolicy;
use registry::Registry;
use rmcp::ServiceExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Serves MCP on stdin/stdout until the client goes away.
pub fn serve(cx: &Context, confirm: McpConfirm) -> Result<Exit, Failure> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::usage(format!("cannot start the async runtime: {e}")))?;
    let policy = match confirm {
        McpConfirm::Ask => GatePolicy::Ask,
        McpConfirm::Deny => GatePolicy::Deny,
    };
    let registry = Arc::new(Registry::new(
        cx.search.clone(),
        cx.cwd.clone(),
        cx.config.as_ref().map(|p| cx.cwd.join(p)),
        policy,
        rt.handle().clone(),
    ));
    let server = server::NixcmdServer::new(registry.clone());
    let terminated = end_on_sigterm()
        .map_err(|e| Failure::usage(format!("cannot set up signal handling: {e}")))?;
    let watched = terminated.clone();
    let served = rt.block_on(async move {
        let running = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| format!("the MCP session did not start: {e}"))?;
        let session = running.cancellation_token();
        tokio::spawn(async move {
            while watched.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            session.cancel();
        });
        running
            .waiting()
            .await
            .map_err(|e| format!("the MCP session ended with an error: {e}"))?;
        Ok::<(), String>(())
    });
    // The client is gone: stop what still runs (rollback included) before exiting. A SIGTERM
    // from here on (after the client closed stdin; a second one after a first that ended the
    // session) means the client will not wait: SIGKILL follows within seconds (the MCP SDKs
    // give 2 s). Stopping at once then leaves records that say what is left by hand, and no
    // block running unwatched, instead of a run `running` for good.
    let at_shutdown = terminated.load(Ordering::SeqCst);
    registry.shutdown(&|| terminated.load(Ordering::SeqCst) > at_shutdown);
    // Tokio's stdin reader may still block on a read nobody will answer.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    served.map_err(Failure::usage)?;
    Ok(Exit::Success)
}

/// The count of SIGTERMs: the first ends the session as if the client had closed it (see
/// `serve` for later ones). SIGINT, SIGHUP and SIGQUIT are caught and dropped: the server
/// shares its client's terminal, so Ctrl-C (or Ctrl-\\) pressed to interrupt the model, or
/// the terminal closing, reaches the server too, and their default would kill it on the
/// spot, orphaning the steps of its runs unrecorded and not rolled back. The client decides
/// when the server ends (it closes stdin when it goes). Caught, not ignored: steps get the
/// default dispositions back at exec, so stopping them with SIGINT still works. What is
/// ignored already (`nohup`) stays ignored.
fn end_on_sigterm() -> std::io::Result<Arc<AtomicUsize>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
    let terminated = Arc::new(AtomicUsize::new(0));
    let count = terminated.clone();
    // SAFETY: the handler only performs an atomic increment, which is async-signal-safe.
    unsafe {
        signal_hook::low_level::register(SIGTERM, move || {
            count.fetch_add(1, Ordering::SeqCst);
        })?;
    }
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for sig in [SIGINT, SIGHUP, SIGQUIT] {
        if !crate::process::ignored(sig) {
            signal_hook::flag::register(sig, dropped.clone())?;
        }
    }
    crate::vfork::handlers_changed();
    Ok(terminated)
}
