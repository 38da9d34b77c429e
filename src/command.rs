//! The parsed command: what a command file means once read, with every element's location.
//! This is the contract shared by `show --format json`, the checker, the executor and the MCP
//! server. It holds no runtime state (no run ids, no argument values).

use crate::diagnostic::Diagnostic;
use serde::Serialize;
use std::time::Duration;

/// Annotated files were written for nixcmd (their frontmatter has a `nixcmd:` key); guided
/// files were written for Claude Code and every block in them asks before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Annotated,
    Guided,
}

/// Where a command was found, in discovery order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Origin {
    /// `--commands-dir` or `NIXCMD_COMMANDS_DIR`.
    CommandsDir { path: String },
    /// The project's `.nixcmd/commands/`.
    Project { path: String },
    /// The project's `.claude/commands/`.
    Claude { path: String },
    /// `$XDG_CONFIG_HOME/nixcmd/commands/`.
    User { path: String },
    /// Compiled into the binary from `commands/`.
    Builtin,
    /// A path given on the command line (`check FILE`, tests).
    File { path: String },
}

impl Origin {
    /// A short label for tables: `builtin`, `project`, …
    pub fn label(&self) -> &'static str {
        match self {
            Origin::CommandsDir { .. } => "commands-dir",
            Origin::Project { .. } => "project",
            Origin::Claude { .. } => "claude",
            Origin::User { .. } => "user",
            Origin::Builtin => "builtin",
            Origin::File { .. } => "file",
        }
    }

    pub fn path(&self) -> Option<&str> {
        match self {
            Origin::CommandsDir { path }
            | Origin::Project { path }
            | Origin::Claude { path }
            | Origin::User { path }
            | Origin::File { path } => Some(path),
            Origin::Builtin => None,
        }
    }
}

/// An argument declared under `nixcmd.args`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ArgSpec {
    pub name: String,
    /// The environment variable blocks read it from: `NIXCMD_ARG_<NAME>`.
    pub env: String,
    pub required: bool,
    pub variadic: bool,
    /// Given only as `NAME=VALUE`, never by position.
    pub named: bool,
    // Every key always (null or empty when not declared): the README lists them as the
    // contract, and a consumer should not need to guess which are optional.
    pub pattern: Option<String>,
    pub choices: Vec<String>,
    pub default: Option<String>,
    pub help: Option<String>,
}

/// What a failure of a block means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnFail {
    #[default]
    Stop,
    Continue,
}

/// The failure threshold of a fan-out: a count of hosts, or a percentage of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum MaxFail {
    Count(u32),
    Percent(u32),
}

/// A block's attributes, validated. Absent optional values mean "use the default".
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct Attrs {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
    pub on_fail: OnFail,
    pub readonly: bool,
    #[serde(
        with = "crate::duration::as_millis::option",
        rename = "timeout_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    pub retries: u32,
    #[serde(
        with = "crate::duration::as_millis::option",
        rename = "backoff_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff: Option<Duration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    pub always: bool,
    pub irreversible: bool,
    pub norun: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosts: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fail: Option<MaxFail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// `when=NAME`: runs only when the variable NAME is true as the block would start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// `unless=NAME`: runs only when the variable NAME is not true then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unless: Option<String>,
}

impl Attrs {
    /// `hosts=arg:NAME`: the argument whose value selects the hosts.
    pub fn hosts_arg(&self) -> Option<&str> {
        self.hosts.as_deref()?.strip_prefix("arg:")
    }
}

/// Which part of the command a block belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Prerequisite,
    Step,
    Check,
    Rollback,
}

/// A fenced code block that belongs to a phase (runnable or not).
#[derive(Debug, Clone, Serialize)]
pub struct Block {
    pub id: String,
    pub phase: Phase,
    /// The `###` heading that names it, if any (`null` in JSON: every block has the key).
    pub title: Option<String>,
    pub language: String,
    pub code: String,
    /// Line of the opening fence.
    pub line: usize,
    /// Line of the first line of code (the fence line + 1).
    pub code_line: usize,
    /// True when nixcmd would execute it: a shell language and not `norun`.
    pub runnable: bool,
    pub attrs: Attrs,
    /// Slash-command lines (`/other-command args`) found in a guided file's block.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nested: Vec<NestedCommand>,
    /// The gates a run applies, with the file's mode and the block's phase taken into
    /// account: what consumers of `show --format json` need not infer.
    pub effective: Effective,
}

/// A block's gates as a run applies them.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct Effective {
    /// Asks before running: `confirm`, or any block of a guided file but rollback and
    /// `always` blocks.
    pub asks: bool,
    /// Executes in a dry run: `readonly`, or a prerequisite or success criterion of an
    /// annotated file.
    pub readonly: bool,
    /// A failure stops the run: a prerequisite, step or criterion without `on-fail=continue`.
    pub critical: bool,
}

impl Block {
    /// A display name: the title when there is one, else the id.
    pub fn display_name(&self) -> &str {
        self.title.as_deref().unwrap_or(&self.id)
    }
}

/// A line `/name args` inside a block of a guided file: another command to run nested.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NestedCommand {
    pub name: String,
    pub args: Vec<String>,
    pub line: usize,
}

/// A `- [ ] …` item under success criteria: listed, never run.
#[derive(Debug, Clone, Serialize)]
pub struct ManualCheck {
    pub text: String,
    pub line: usize,
}

/// A `###` entry (or paragraph group) of troubleshooting, references or notes.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub title: String,
    pub text: String,
    pub line: usize,
}

/// A `##` section as written, and what nixcmd made of it.
#[derive(Debug, Clone, Serialize)]
pub struct SectionInfo {
    pub heading: String,
    pub kind: crate::sections::SectionKind,
    pub line: usize,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SuccessCriteria {
    pub checks: Vec<Block>,
    pub manual: Vec<ManualCheck>,
}

/// Settings from the `nixcmd:` key that are not arguments.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Settings {
    /// Default per-attempt timeout of every block.
    #[serde(
        with = "crate::duration::as_millis::option",
        rename = "timeout_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Extra names of variables whose values are redacted.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

/// A command file, read and interpreted.
#[derive(Debug, Clone, Serialize)]
pub struct Command {
    pub name: String,
    /// The `#` heading (`null` in JSON when there is none).
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argument_hint: Option<String>,
    pub source: Origin,
    pub mode: Mode,
    /// sha256 of the file's bytes: `resume` refuses a run whose command changed.
    pub hash: String,
    pub settings: Settings,
    pub args: Vec<ArgSpec>,
    pub overview: String,
    pub sections: Vec<SectionInfo>,
    pub prerequisites: Vec<Block>,
    pub steps: Vec<Block>,
    pub success_criteria: SuccessCriteria,
    pub rollback: Vec<Block>,
    pub troubleshooting: Vec<Entry>,
    pub references: Vec<Entry>,
    pub notes: Vec<Entry>,
    /// Blocks outside any runnable section (overview, notes, troubleshooting): shown, never run.
    pub other_blocks: usize,
    pub diagnostics: Vec<Diagnostic>,
}

impl Command {
    /// Every block that belongs to a phase, in the order a run meets them.
    pub fn blocks(&self) -> impl Iterator<Item = &Block> {
        self.prerequisites
            .iter()
            .chain(&self.steps)
            .chain(&self.success_criteria.checks)
            .chain(&self.rollback)
    }

    pub fn block(&self, id: &str) -> Option<&Block> {
        self.blocks().find(|b| b.id == id)
    }

    /// Steps that ask before running: `confirm` ones, or every runnable one in a guided file.
    pub fn confirm_count(&self) -> usize {
        self.steps.iter().filter(|b| b.effective.asks).count()
    }

    /// Works out every block's [`Effective`] gates; the parser calls it once the mode is known.
    pub fn settle_gates(&mut self) {
        let guided = self.mode == Mode::Guided;
        let all = self
            .prerequisites
            .iter_mut()
            .chain(&mut self.steps)
            .chain(&mut self.success_criteria.checks)
            .chain(&mut self.rollback);
        for b in all {
            // Rollback and `always` blocks never ask: they undo or clean up after a run that
            // may have no one left to answer (`check` says so of a `confirm` on them).
            let may_ask = b.phase != Phase::Rollback && !b.attrs.always;
            // A guided file's blocks are not known to be read-only, whatever their section
            // (`Verify: touch …` happens): each asks, and a dry run runs none unless marked.
            let readonly = b.attrs.readonly
                || (!guided && matches!(b.phase, Phase::Prerequisite | Phase::Check));
            b.effective = Effective {
                asks: b.runnable && may_ask && (b.attrs.confirm.is_some() || guided),
                readonly: b.runnable && readonly,
                critical: b.runnable
                    && b.phase != Phase::Rollback
                    && !b.attrs.always
                    && b.attrs.on_fail == OnFail::Stop,
            };
        }
    }

    pub fn runnable_steps(&self) -> usize {
        self.steps.iter().filter(|b| b.runnable).count()
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity >= crate::diagnostic::Severity::Error)
    }
}
