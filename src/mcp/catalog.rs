//! What the read-only tools answer about commands: `list_commands`, `describe_command`, and
//! the plan a dry run produced (`plan`). Shapes with JSON schemas, built from the parsed
//! [`Command`] and the listing; nothing here executes anything.

use crate::command::{ArgSpec, Block, Command, Mode, Origin};
use crate::diagnostic::{Diagnostic, Severity};
use crate::event::PlanItem;
use crate::mcp::status::{McpStatus, RunStatusOut, StepOut};
use schemars::JsonSchema;
use serde::Serialize;

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ArgOut {
    pub name: String,
    /// The environment variable the blocks read it from.
    pub env: String,
    pub required: bool,
    /// Takes any number of values.
    pub variadic: bool,
    pub pattern: Option<String>,
    pub choices: Vec<String>,
    pub default: Option<String>,
    pub help: Option<String>,
}

impl From<&ArgSpec> for ArgOut {
    fn from(a: &ArgSpec) -> Self {
        ArgOut {
            name: a.name.clone(),
            env: a.env.clone(),
            required: a.required,
            variadic: a.variadic,
            pattern: a.pattern.clone(),
            choices: a.choices.clone(),
            default: a.default.clone(),
            help: a.help.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct CommandSummary {
    pub name: String,
    pub description: String,
    /// Claude Code's hint for the arguments, e.g. `[input...]`.
    pub argument_hint: Option<String>,
    /// `commands-dir`, `project`, `claude`, `user` or `builtin`.
    pub source: String,
    pub path: Option<String>,
    /// `annotated` (written for nixcmd) or `guided` (written for Claude Code: every block
    /// asks before it runs).
    pub mode: Option<String>,
    pub args: Vec<ArgOut>,
    pub steps: usize,
    /// Steps that need the user's confirmation.
    pub confirm_steps: usize,
    /// False when `run` would refuse the file (it has errors, or nothing to run): see
    /// `error`, or describe_command.
    pub runnable: bool,
    /// Why the file cannot run, as `run` would say it; null when it can.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ListOut {
    pub commands: Vec<CommandSummary>,
}

fn mode_name(m: Mode) -> String {
    match m {
        Mode::Annotated => "annotated".into(),
        Mode::Guided => "guided".into(),
    }
}

pub fn list(listing: crate::list::Listing) -> ListOut {
    ListOut {
        commands: listing
            .commands
            .into_iter()
            .map(|r| CommandSummary {
                runnable: r.errors == 0 && r.error.is_none(),
                name: r.name,
                description: r.description,
                argument_hint: r.argument_hint,
                source: r.source.label().to_string(),
                path: r.source.path().map(str::to_string),
                mode: r.mode.map(mode_name),
                args: r.args.iter().map(ArgOut::from).collect(),
                steps: r.steps,
                confirm_steps: r.confirm_steps,
                error: r.error,
            })
            .collect(),
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct BlockOut {
    pub id: String,
    /// `prerequisite`, `step`, `check` or `rollback`.
    pub phase: String,
    pub title: Option<String>,
    pub language: String,
    pub code: String,
    /// Whether nixcmd executes it (shell, not `norun`).
    pub runnable: bool,
    /// The block's gates in words: `confirm "…"`, `readonly`, `retries 2`, `rollback=…` …
    pub gates: Vec<String>,
    /// The question asked before it runs, when it needs the user's confirmation.
    pub confirm: Option<String>,
    /// Executed by dry runs (`plan`).
    pub readonly: bool,
    pub line: usize,
    /// `when=NAME`: runs only when the variable NAME is true as the block would start
    /// (set, and not empty, `0`, `false`, `no` or `off`); skipped otherwise.
    pub when: Option<String>,
    /// `unless=NAME`: runs only when the variable NAME is not true as the block would start.
    pub unless: Option<String>,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProblemOut {
    /// `note`, `warning`, `error` or `fatal`.
    pub severity: String,
    pub code: String,
    pub message: String,
    pub line: Option<usize>,
    pub col: Option<usize>,
    pub hint: Option<String>,
}

impl From<&Diagnostic> for ProblemOut {
    fn from(d: &Diagnostic) -> Self {
        ProblemOut {
            severity: serde_json::to_value(d.severity)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            code: d.code.to_string(),
            message: d.message.clone(),
            line: d.position.map(|p| p.line),
            col: d.position.map(|p| p.col),
            hint: d.hint.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct EntryOut {
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DescribeOut {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub argument_hint: Option<String>,
    pub source: String,
    pub path: Option<String>,
    pub mode: String,
    /// The text before the first section: what the command does and when to use it.
    pub overview: String,
    pub args: Vec<ArgOut>,
    /// Every block in the order a run meets them.
    pub blocks: Vec<BlockOut>,
    /// Checks a person makes by hand after the run.
    pub manual_checks: Vec<String>,
    pub troubleshooting: Vec<EntryOut>,
    /// What `nixcmd check` reports about the file.
    pub problems: Vec<ProblemOut>,
}

fn block_out(cmd: &Command, b: &Block) -> BlockOut {
    let confirm = if b.runnable && b.phase != crate::command::Phase::Rollback {
        b.attrs.confirm.clone().or_else(|| {
            (cmd.mode == Mode::Guided).then(|| format!("Run step `{}` of a guided file?", b.id))
        })
    } else {
        None
    };
    BlockOut {
        id: b.id.clone(),
        phase: crate::run::engine::phase_name(b.phase).to_string(),
        title: b.title.clone(),
        language: b.language.clone(),
        code: b.code.clone(),
        runnable: b.runnable,
        gates: crate::show::gates(b),
        confirm,
        readonly: b.effective.readonly,
        line: b.line,
        when: b.attrs.when.clone(),
        unless: b.attrs.unless.clone(),
    }
}

fn source_label(o: &Origin) -> (String, Option<String>) {
    (o.label().to_string(), o.path().map(str::to_string))
}

pub fn describe(cmd: &Command) -> DescribeOut {
    let (source, path) = source_label(&cmd.source);
    DescribeOut {
        name: cmd.name.clone(),
        title: cmd.title.clone(),
        description: cmd.description.clone(),
        argument_hint: cmd.argument_hint.clone(),
        source,
        path,
        mode: mode_name(cmd.mode),
        overview: cmd.overview.trim().to_string(),
        args: cmd.args.iter().map(ArgOut::from).collect(),
        blocks: cmd.blocks().map(|b| block_out(cmd, b)).collect(),
        manual_checks: cmd
            .success_criteria
            .manual
            .iter()
            .map(|m| m.text.clone())
            .collect(),
        troubleshooting: cmd
            .troubleshooting
            .iter()
            .map(|e| EntryOut {
                title: e.title.clone(),
                text: e.text.clone(),
            })
            .collect(),
        problems: cmd.diagnostics.iter().map(ProblemOut::from).collect(),
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanStepOut {
    pub step_id: String,
    pub phase: String,
    pub title: Option<String>,
    /// Gates in words: `confirm "…"`, `readonly`, `retries 2`, `timeout 5m` …
    pub gates: Vec<String>,
    pub timeout_ms: u64,
    /// Whether a real run would execute it.
    pub will_run: bool,
    pub note: Option<String>,
    /// `when=NAME`: runs only when the variable NAME is true as the block would start; a plan
    /// cannot know that, so `will_run` does not count it.
    pub when: Option<String>,
    /// `unless=NAME`: runs only when the variable NAME is not true as the block would start.
    pub unless: Option<String>,
}

impl From<&PlanItem> for PlanStepOut {
    fn from(p: &PlanItem) -> Self {
        PlanStepOut {
            step_id: p.step_id.clone(),
            phase: p.phase.clone(),
            title: p.title.clone(),
            gates: p.gates.clone(),
            timeout_ms: p.timeout_ms,
            // In the dry run only readonly blocks run; `will_run` there says "in this dry
            // run". The plan answers for a real run.
            will_run: p.will_run || p.note.as_deref() == Some("dry run: not readonly"),
            note: p.note.clone().filter(|n| n != "dry run: not readonly"),
            when: p.when.clone(),
            unless: p.unless.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PlanOut {
    /// The dry run's id (its record is in the run folder).
    pub run_id: String,
    pub command: String,
    /// The dry run's status: `succeeded` when every readonly block passed.
    pub status: McpStatus,
    pub exit_code: Option<i32>,
    /// Every block in order, as a real run would meet it.
    pub plan: Vec<PlanStepOut>,
    /// The readonly blocks the dry run executed, and how they ended.
    pub executed: Vec<StepOut>,
    pub manual_checks: Vec<String>,
    /// Problems found: in the file, and by the readonly blocks.
    pub problems: Vec<String>,
    pub log_tail: String,
    pub next: String,
}

pub fn plan(
    cmd: &Command,
    items: &[PlanItem],
    manual_checks: Vec<String>,
    status: RunStatusOut,
) -> PlanOut {
    let mut problems: Vec<String> = cmd
        .diagnostics
        .iter()
        .filter(|d| d.severity >= Severity::Warning)
        .map(|d| match d.position {
            Some(p) => format!(
                "{}:{}: {}: {}",
                p.line,
                p.col,
                d.severity.label(),
                d.message
            ),
            None => format!("{}: {}", d.severity.label(), d.message),
        })
        .collect();
    for s in &status.steps {
        if matches!(s.status.as_str(), "failed" | "timed_out" | "not_runnable") {
            let exit = s
                .exit_code
                .map(|c| format!(" (exit {c})"))
                .unwrap_or_default();
            problems.push(format!("{} `{}` {}{exit}", s.phase, s.id, s.status));
        }
    }
    problems.extend(status.warnings.iter().cloned());
    let next = match status.status {
        McpStatus::Running => format!(
            "The readonly blocks are still running: call run_status {{\"run_id\": \"{}\"}}.",
            status.run_id
        ),
        McpStatus::Succeeded if problems.is_empty() => format!(
            "The plan looks runnable: start it with run {{\"command\": \"{}\"}} when the user wants it.",
            cmd.name
        ),
        _ => "Look at the problems before running it for real.".to_string(),
    };
    PlanOut {
        run_id: status.run_id,
        command: cmd.name.clone(),
        status: status.status,
        exit_code: status.exit_code,
        plan: items.iter().map(PlanStepOut::from).collect(),
        executed: status
            .steps
            .into_iter()
            .filter(|s| s.status != "skipped" && s.status != "pending")
            .collect(),
        manual_checks,
        problems,
        log_tail: status.log_tail,
        next,
    }
}
