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

/// Bytes of a name written as they are in a resource URI: RFC 3986's unreserved characters
/// (letters, digits, `-`, `.`, `_`, `~`); every other byte is percent-encoded, so a name with
/// a space, `#` (which would start a fragment), `%` or a non-ASCII letter gives a URI that
/// names it.
const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The resource URI of the command `name`.
pub fn resource_uri(name: &str) -> String {
    format!(
        "{RESOURCE_PREFIX}{}",
        percent_encoding::utf8_percent_encode(name, ENCODED)
    )
}

/// The command name a resource URI names: percent-decoded. A URI whose decoding is not UTF-8
/// names the text as it is (no command file has such a name).
fn name_in(rest: &str) -> std::borrow::Cow<'_, str> {
    percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .unwrap_or(std::borrow::Cow::Borrowed(rest))
}

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
        .find_by_name(name)
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
            let mut res = Resource::new(resource_uri(&r.name), r.name.clone())
                .with_mime_type("text/markdown");
            if !r.description.is_empty() {
                res = res.with_description(r.description.clone());
            }
            res
        })
        .collect()
}

pub fn read(search: &SearchPath, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let Some(name) = uri.strip_prefix(RESOURCE_PREFIX).map(name_in) else {
        return Err(ErrorData::resource_not_found(
            format!("unknown resource {uri}: command files are {RESOURCE_PREFIX}NAME"),
            None,
        ));
    };
    let found = search
        .find_by_name(&name)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_uris_name_any_command_and_read_back() {
        assert_eq!(
            resource_uri("flake-update"),
            "nixcmd://commands/flake-update"
        );
        assert_eq!(resource_uri("a_b.c~d"), "nixcmd://commands/a_b.c~d");
        let odd = "deploy now #2 100% été/x?";
        let uri = resource_uri(odd);
        assert_eq!(
            uri,
            "nixcmd://commands/deploy%20now%20%232%20100%25%20%C3%A9t%C3%A9%2Fx%3F"
        );
        let rest = uri.strip_prefix(RESOURCE_PREFIX).expect("prefix");
        assert_eq!(name_in(rest), odd);
        // Names sent unencoded by a client read as they are.
        assert_eq!(name_in("gated"), "gated");
        assert_eq!(name_in("%ff"), "%ff");
    }
}
