//! The MCP tools: inputs, annotations and what each does with the registry. A failed runbook
//! is a successful call with `status: failed`; `isError` answers only calls that cannot be
//! carried out (unknown command or run, invalid arguments, wrong token), with a message the
//! model can act on. `run` has no way to approve a gate: only the human can (see approver).

use crate::mcp::approver::{CHANNEL_CONFIRM_GATE, Delivery, Reply};
use crate::mcp::catalog::{self, DescribeOut, ListOut, PlanOut};
use crate::mcp::registry::{self, Caller};
use crate::mcp::run_handle::RunHandle;
use crate::mcp::server::NixcmdServer;
use crate::mcp::status::{LogsOut, McpStatus, RunStatusOut};
use crate::mcp::wait::{self, Progress};
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

/// How long `run`, `run_status` and friends wait by default, and at most.
pub const DEFAULT_WAIT: u32 = 45;
pub const MAX_WAIT: u32 = 50;
const DEFAULT_LOG_LIMIT: u32 = 200;
const MAX_LOG_LIMIT: u32 = 2000;

fn refuse(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

fn wait_for(seconds: Option<u32>) -> Duration {
    Duration::from_secs(u64::from(seconds.unwrap_or(DEFAULT_WAIT).min(MAX_WAIT)))
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CommandInput {
    /// The command's name, as `list_commands` gives it (e.g. `flake-update`).
    pub command: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct PlanInput {
    /// The command's name.
    pub command: String,
    /// The command's arguments, as they would be typed after `nixcmd /NAME`.
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunInput {
    /// The command's name.
    pub command: String,
    /// The command's arguments, as they would be typed after `nixcmd /NAME`.
    #[serde(default)]
    pub args: Vec<String>,
    /// Execute only readonly blocks (the same as `plan`).
    #[serde(default)]
    pub dry_run: Option<bool>,
    /// Wait at most this many seconds for the run to end (default 45, at most 50); a longer
    /// run goes on in the server.
    #[serde(default)]
    pub wait_seconds: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunStatusInput {
    pub run_id: String,
    /// Wait at most this many seconds for the run to end or need the user (default 0: answer
    /// at once; at most 50).
    #[serde(default)]
    pub wait_seconds: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunLogsInput {
    pub run_id: String,
    /// Only this step's output.
    #[serde(default)]
    pub step_id: Option<String>,
    /// The first line to return (0-based); default: the last `limit` lines.
    #[serde(default)]
    pub offset: Option<u64>,
    /// Lines per page (default 200, at most 2000); fewer when they hold more than 64 KiB.
    #[serde(default)]
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RunIdInput {
    pub run_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ConfirmGateInput {
    pub run_id: String,
    /// `gate.gate_id` from the run's status.
    pub gate_id: String,
    /// `gate.token` from the run's status (one-time).
    pub token: String,
    /// The user's answer: true runs the step, false stops the run and rolls back.
    pub approve: bool,
    /// Wait at most this many seconds for the run to go on (default 45, at most 50).
    #[serde(default)]
    pub wait_seconds: Option<u32>,
}

fn progress_of(request: &RequestContext<RoleServer>) -> Option<Progress> {
    request
        .meta
        .get_progress_token()
        .map(|token| Progress::new(request.peer.clone(), token))
}

fn caller(request: &RequestContext<RoleServer>) -> Caller {
    Caller {
        peer: request.peer.clone(),
    }
}

impl NixcmdServer {
    async fn follow(
        &self,
        run: &RunHandle,
        seconds: Duration,
        request: &RequestContext<RoleServer>,
    ) -> RunStatusOut {
        wait::wait(run, seconds, request, progress_of(request)).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&registry::Registry) -> T + Send + 'static,
    ) -> Result<T, CallToolResult> {
        let reg = self.registry.clone();
        tokio::task::spawn_blocking(move || f(&reg))
            .await
            .map_err(|e| refuse(format!("internal error: {e}")))
    }
}

#[tool_router(vis = "pub(crate)")]
impl NixcmdServer {
    /// Every command nixcmd can find (name, description, arguments, how many steps need
    /// confirmation, where it comes from).
    #[tool(
        name = "list_commands",
        annotations(
            title = "List runbooks",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn list_commands(&self) -> Result<Json<ListOut>, CallToolResult> {
        let listed = self
            .blocking(|reg| {
                let listing = crate::list::listing(reg.search())?;
                let mut out = catalog::list(listing);
                // The listing reads files only far enough to count; the few it cannot call
                // runnable from that (errors, or no step) are checked as `run` checks them, so
                // `runnable` says what `run` does, and `error` says why not.
                let unsure = |c: &catalog::CommandSummary| {
                    c.error.is_none() && (!c.runnable || c.steps == 0)
                };
                let names: Vec<&str> = (out.commands.iter().filter(|c| unsure(c)))
                    .map(|c| c.name.as_str())
                    .collect();
                let mut loaded = reg.load_each(&names).into_iter();
                for c in out.commands.iter_mut().filter(|c| unsure(c)) {
                    match loaded.next() {
                        Some(Ok(_)) => c.runnable = true,
                        Some(Err(why)) => {
                            c.runnable = false;
                            c.error = Some(why);
                        }
                        None => {}
                    }
                }
                Ok::<_, crate::exit::Failure>(out)
            })
            .await?
            .map_err(|f| refuse(registry::failure_text(&f)))?;
        Ok(Json(listed))
    }

    /// One command as nixcmd understands it: overview, arguments, every block with its code
    /// and gates (which steps ask for confirmation), manual checks, troubleshooting, problems.
    #[tool(
        name = "describe_command",
        annotations(
            title = "Describe a runbook",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn describe_command(
        &self,
        Parameters(input): Parameters<CommandInput>,
    ) -> Result<Json<DescribeOut>, CallToolResult> {
        let loaded = self
            .blocking(move |reg| {
                let found = reg
                    .search()
                    .find_by_name(&input.command)
                    .map_err(|f| registry::failure_text(&f))?;
                crate::discovery::load(&found)
                    .map_err(|u| registry::failure_text(&crate::discovery::unreadable_failure(&u)))
            })
            .await?
            .map_err(refuse)?;
        Ok(Json(catalog::describe(&loaded.command)))
    }

    /// A dry run: executes only readonly blocks (prerequisites, checks, `readonly` steps),
    /// asks nothing, changes nothing, and returns the whole plan with the problems found.
    #[tool(
        name = "plan",
        annotations(
            title = "Plan a runbook (dry run)",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn plan(
        &self,
        Parameters(input): Parameters<PlanInput>,
        request: RequestContext<RoleServer>,
    ) -> Result<Json<PlanOut>, CallToolResult> {
        let name = input.command.clone();
        let (run, cmd) = self
            .blocking(move |reg| {
                let run = reg.start(&input.command, input.args, true, None)?;
                let found = reg
                    .search()
                    .find_by_name(&name)
                    .map_err(|f| registry::failure_text(&f))?;
                let loaded = crate::discovery::load(&found).map_err(|u| {
                    registry::failure_text(&crate::discovery::unreadable_failure(&u))
                })?;
                Ok::<_, String>((run, loaded.command))
            })
            .await?
            .map_err(refuse)?;
        let status = self.follow(&run, wait_for(None), &request).await;
        let (items, manual) = run.plan();
        Ok(Json(catalog::plan(&cmd, &items, manual, status)))
    }

    /// Starts a run in the server and waits at most `wait_seconds` for it. Steps that need
    /// confirmation are asked of the user (never of you): the status then says
    /// `awaiting_confirmation` with a `gate`. A failed runbook is `status: failed`, not an error.
    #[tool(
        name = "run",
        annotations(
            title = "Run a runbook",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn run(
        &self,
        Parameters(input): Parameters<RunInput>,
        request: RequestContext<RoleServer>,
    ) -> Result<Json<RunStatusOut>, CallToolResult> {
        let caller = caller(&request);
        let dry_run = input.dry_run.unwrap_or(false);
        let run = self
            .blocking(move |reg| reg.start(&input.command, input.args, dry_run, Some(&caller)))
            .await?
            .map_err(refuse)?;
        Ok(Json(
            self.follow(&run, wait_for(input.wait_seconds), &request)
                .await,
        ))
    }

    /// Where a run stands; with `wait_seconds`, waits (long-poll) until it ends or needs the
    /// user. Sends progress notifications while it waits.
    #[tool(
        name = "run_status",
        annotations(
            title = "Run status",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn run_status(
        &self,
        Parameters(input): Parameters<RunStatusInput>,
        request: RequestContext<RoleServer>,
    ) -> Result<Json<RunStatusOut>, CallToolResult> {
        let run = self.registry.get(&input.run_id).map_err(refuse)?;
        let wait = Duration::from_secs(u64::from(input.wait_seconds.unwrap_or(0).min(MAX_WAIT)));
        if run.external {
            // It runs in another process: its records tell how it goes on.
            return Ok(Json(
                wait::wait_records(&run, wait, &request, progress_of(&request)).await,
            ));
        }
        Ok(Json(self.follow(&run, wait, &request).await))
    }

    /// A page of a run's output (all steps, or one): by default the last 200 lines.
    #[tool(
        name = "run_logs",
        annotations(
            title = "Run logs",
            read_only_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn run_logs(
        &self,
        Parameters(input): Parameters<RunLogsInput>,
    ) -> Result<Json<LogsOut>, CallToolResult> {
        let run = self.registry.get(&input.run_id).map_err(refuse)?;
        let limit = u64::from(
            input
                .limit
                .unwrap_or(DEFAULT_LOG_LIMIT)
                .clamp(1, MAX_LOG_LIMIT),
        );
        if let Some(step) = &input.step_id {
            let known = run.report().steps.iter().any(|s| &s.id == step);
            if !known {
                return Err(refuse(format!(
                    "run {} has no step `{step}`; steps: {}",
                    run.run_id,
                    run.report()
                        .steps
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(Json(run.logs(
            input.step_id.as_deref(),
            input.offset,
            limit,
        )))
    }

    /// Stops a run as Ctrl-C does: the running step is interrupted and what ran is rolled
    /// back. A run waiting for confirmation is rolled back too. Waits up to 45 s for it.
    #[tool(
        name = "run_cancel",
        annotations(
            title = "Cancel a run",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn run_cancel(
        &self,
        Parameters(input): Parameters<RunIdInput>,
        request: RequestContext<RoleServer>,
    ) -> Result<Json<RunStatusOut>, CallToolResult> {
        let run = self.registry.get(&input.run_id).map_err(refuse)?;
        if run.external && !run.status().is_terminal() {
            return Err(refuse(format!(
                "run {} was {} outside this server; stop it where it runs (Ctrl-C), \
                 or roll a paused run back with `nixcmd resume {} --decline`",
                run.run_id,
                if run.taken_over {
                    "taken over (`nixcmd resume` from a terminal)"
                } else {
                    "started"
                },
                run.run_id
            )));
        }
        if run.status().is_terminal() {
            return Ok(Json(run.report()));
        }
        // One request only, however often it is called: a run that is rolling back (or
        // running its `always` blocks) holds it back and finishes them, and no second
        // request stops them at once. That "second Ctrl-C" is a person's call at the
        // terminal; a model repeating run_cancel must not leave a machine half restored.
        if run.cancel.level() == 0 {
            run.cancel.request();
        }
        run.gates.wake();
        self.registry.idle(&run).await;
        if !run.is_active() && run.status() == McpStatus::AwaitingConfirmation {
            // Paused at a gate: resume it so that what ran is rolled back.
            let reg = self.registry.clone();
            let handle = run.clone();
            let caller = caller(&request);
            self.blocking(move |_| reg.resume(&handle, Some(&caller)))
                .await?
                .map_err(refuse)?;
        }
        Ok(Json(self.follow(&run, wait_for(None), &request).await))
    }

    /// The user's answer to a confirmation gate. Call it only with the user's own decision:
    /// `approve: true` runs the destructive step. Needs the gate's one-time token.
    #[tool(
        name = "confirm_gate",
        annotations(
            title = "Confirm a destructive step (user only)",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn confirm_gate(
        &self,
        Parameters(input): Parameters<ConfirmGateInput>,
        request: RequestContext<RoleServer>,
    ) -> Result<Json<RunStatusOut>, CallToolResult> {
        let run = self.registry.get(&input.run_id).map_err(refuse)?;
        if run.taken_over {
            let status = serde_json::to_value(run.status())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            return Err(refuse(format!(
                "run {id} was taken over outside this server (`nixcmd resume {id}` from a \
                 terminal) and is `{status}` now: this server's gate and token for it no \
                 longer count. Its gates are answered where it runs (`nixcmd resume {id} \
                 --approve STEP` or `--decline`, by the person); run_status tells where it \
                 stands.",
                id = run.run_id
            )));
        }
        if run.external {
            return Err(refuse(format!(
                "run {} was started outside this server: its gates are answered where it \
                 runs (`nixcmd resume {} --approve STEP` by the person)",
                run.run_id, run.run_id
            )));
        }
        let reply = if input.approve {
            Reply::Approve {
                channel: CHANNEL_CONFIRM_GATE,
            }
        } else {
            Reply::Decline {
                channel: CHANNEL_CONFIRM_GATE,
            }
        };
        self.registry.idle(&run).await;
        let delivery = run
            .gates
            .answer(&input.gate_id, &input.token, reply)
            .map_err(|e| refuse(format!("{e} (run {})", run.run_id)))?;
        if delivery == Delivery::NeedsResume {
            let reg = self.registry.clone();
            let handle = run.clone();
            let caller = caller(&request);
            self.blocking(move |_| reg.resume(&handle, Some(&caller)))
                .await?
                .map_err(refuse)?;
        }
        Ok(Json(
            self.follow(&run, wait_for(input.wait_seconds), &request)
                .await,
        ))
    }
}
