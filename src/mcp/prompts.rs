//! Each command as an MCP prompt (so `/mcp__nixcmd__flake-update` in Claude Code starts it
//! through the tools) and each command file as a resource (`nixcmd://commands/NAME`, the
//! Markdown as written). Reads files; runs nothing.

use crate::discovery::{self, SearchPath};
use crate::list::Listing;
use rmcp::ErrorData;
use rmcp::model::{
    GetPromptResult, Prompt, PromptArgument, PromptMessage, ReadResourceResult, Resource,
    ResourceContents, Role,
};

pub const RESOURCE_PREFIX: &str = "nixcmd://commands/";

pub fn prompts(listing: &Listing) -> Vec<Prompt> {
    listing
        .commands
        .iter()
        .filter(|r| r.errors == 0)
        .map(|r| {
            let arg = PromptArgument::new("args")
                .with_description(match &r.argument_hint {
                    Some(h) => format!("arguments of the command: {h}"),
                    None => "arguments of the command, space-separated".to_string(),
                })
                .with_required(r.args.iter().any(|a| a.required));
            Prompt::new(
                r.name.clone(),
                Some(r.description.clone()).filter(|d| !d.is_empty()),
                Some(vec![arg]),
            )
        })
        .collect()
}

/// The prompt of one command: plan, run and follow it with the tools; leave confirmations to
/// the user.
pub fn prompt(
    search: &SearchPath,
    name: &str,
    args: Option<&str>,
) -> Result<GetPromptResult, ErrorData> {
    let found = search
        .find(name)
        .map_err(|f| ErrorData::invalid_params(crate::mcp::registry::failure_text(&f), None))?;
    let loaded = discovery::load(&found).map_err(|u| {
        ErrorData::invalid_params(
            crate::mcp::registry::failure_text(&discovery::unreadable_failure(&u)),
            None,
        )
    })?;
    let cmd = &loaded.command;
    let args: Vec<String> = args
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let args_json = serde_json::to_string(&args).unwrap_or_else(|_| "[]".into());
    let mut text = format!(
        "Run the nixcmd runbook `{name}` with the nixcmd MCP tools.\n\n\
         1. Call `plan` {{\"command\": \"{name}\", \"args\": {args_json}}} and tell me what it will do and any problems.\n\
         2. Call `run` {{\"command\": \"{name}\", \"args\": {args_json}}}; while the status is `running`, follow it with `run_status` (wait_seconds 45).\n\
         3. If the status is `awaiting_confirmation`, stop and ask me, showing the gate's question and the step's code. Call `confirm_gate` only with my answer; never approve on my behalf.\n\
         4. At the end, report the status, the steps, warnings and manual checks; if it failed, read `run_logs` for the failed step and the troubleshooting advice.\n"
    );
    if let Some(d) = &cmd.description {
        text.push_str(&format!("\nWhat it does: {d}\n"));
    }
    let overview = cmd.overview.trim();
    if !overview.is_empty() {
        text.push_str(&format!("\n{overview}\n"));
    }
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description(cmd.description.clone().unwrap_or_else(|| name.to_string())),
    )
}

pub fn resources(listing: &Listing) -> Vec<Resource> {
    listing
        .commands
        .iter()
        .map(|r| {
            let mut res = Resource::new(format!("{RESOURCE_PREFIX}{}", r.name), r.name.clone())
                .with_mime_type("text/markdown");
            if !r.description.is_empty() {
                res = res.with_description(r.description.clone());
            }
            res
        })
        .collect()
}

pub fn read(search: &SearchPath, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let Some(name) = uri.strip_prefix(RESOURCE_PREFIX) else {
        return Err(ErrorData::resource_not_found(
            format!("unknown resource {uri}: command files are {RESOURCE_PREFIX}NAME"),
            None,
        ));
    };
    let found = search
        .find(name)
        .map_err(|f| ErrorData::resource_not_found(crate::mcp::registry::failure_text(&f), None))?;
    let loaded = discovery::load(&found).map_err(|u| {
        ErrorData::resource_not_found(
            crate::mcp::registry::failure_text(&discovery::unreadable_failure(&u)),
            None,
        )
    })?;
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(loaded.file.text.clone(), uri).with_mime_type("text/markdown"),
    ]))
}
