//! The MCP server: identity and instructions, the tool router (see `tools`), prompts and
//! resources (see `prompts`). Arguments that do not fit a tool's input schema are answered
//! by the SDK's router with `isError` and the reason, so the model can correct the call.

use crate::mcp::registry::Registry;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool_handler};
use std::sync::Arc;

pub const INSTRUCTIONS: &str = "nixcmd runs Markdown runbooks for NixOS fleets with gates, logs and automatic rollback. \
Use list_commands and describe_command to find a runbook, plan for a dry run (only readonly blocks execute), \
then run. A run answers within wait_seconds; while its status is `running`, follow it with run_status. \
Destructive steps need the user's confirmation: the user is asked directly when the client supports elicitation; \
otherwise the status is `awaiting_confirmation` and only the user may decide, through confirm_gate. Never approve a gate yourself. \
run_cancel stops a run as Ctrl-C does (what ran is rolled back).";

#[derive(Clone)]
pub struct NixcmdServer {
    pub(crate) registry: Arc<Registry>,
    tool_router: ToolRouter<NixcmdServer>,
}

impl NixcmdServer {
    pub fn new(registry: Arc<Registry>) -> Self {
        NixcmdServer {
            registry,
            tool_router: Self::tool_router(),
        }
    }

    async fn listing(&self) -> Result<crate::list::Listing, ErrorData> {
        let reg = self.registry.clone();
        tokio::task::spawn_blocking(move || crate::list::listing(reg.search()))
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
            .map_err(|f| ErrorData::internal_error(crate::mcp::registry::failure_text(&f), None))
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for NixcmdServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new("nixcmd", env!("CARGO_PKG_VERSION")).with_title("nixcmd runbooks"),
        )
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let listing = self.listing().await?;
        Ok(ListPromptsResult::with_all_items(
            crate::mcp::prompts::prompts(&listing),
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let reg = self.registry.clone();
        let args = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("args"))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        tokio::task::spawn_blocking(move || {
            crate::mcp::prompts::prompt(reg.search(), &request.name, args.as_deref())
        })
        .await
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
        .map(GetPromptResponse::from)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let listing = self.listing().await?;
        Ok(ListResourcesResult::with_all_items(
            crate::mcp::prompts::resources(&listing),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let reg = self.registry.clone();
        tokio::task::spawn_blocking(move || crate::mcp::prompts::read(reg.search(), &request.uri))
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
            .map(ReadResourceResponse::from)
    }
}
