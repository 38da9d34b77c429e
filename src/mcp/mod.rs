//! `nixcmd mcp`: an MCP server on stdio (DESIGN.md §7) built on the official Rust SDK. The
//! model can list, plan, run and watch runbooks; confirmations belong to the human
//! (elicitation, or the destructive-annotated `confirm_gate` tool). Runs go through the same
//! engine and records as `nixcmd run`, and the server consumes their events. Nothing but
//! protocol messages goes to stdout: diagnostics go to stderr. No signal handlers: the
//! client ends the server by closing stdin, and running runs are then cancelled (rolled
//! back) before it exits.

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
    let served = rt.block_on(async move {
        let running = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| format!("the MCP session did not start: {e}"))?;
        running
            .waiting()
            .await
            .map_err(|e| format!("the MCP session ended with an error: {e}"))?;
        Ok::<(), String>(())
    });
    // The client is gone: stop what still runs (rollback included) before exiting.
    registry.shutdown();
    // Tokio's stdin reader may still block on a read nobody will answer.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    served.map_err(Failure::usage)?;
    Ok(Exit::Success)
}
