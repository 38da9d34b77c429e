//! The command line as typed (clap), before interpretation. `nixcmd /NAME …` is rewritten to
//! `nixcmd run NAME …` by [`normalize_args`] before clap sees it.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "nixcmd",
    version,
    about = "Markdown runbooks as safe, repeatable operations for NixOS fleets",
    long_about = None,
    after_help = "Run a command with `nixcmd /NAME [ARGS…]` (the same as `nixcmd run NAME`).\nExit codes: 0 ok, 1 failed (rolled back), 2 usage/invalid runbook, 3 confirmation needed, 4 prerequisites not met, 5 rollback incomplete, 130 interrupted."
)]
pub struct Cli {
    /// Look for commands in DIR first [env: NIXCMD_COMMANDS_DIR=]
    // The variable is read by `app::main`, not by clap: clap refused an empty one ("a value
    // is required for '--commands-dir'", an option nobody typed); empty means unset there.
    #[arg(long, global = true, value_name = "DIR")]
    pub commands_dir: Option<PathBuf>,
    /// When to use colors.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub color: ColorWhen,
    /// The configuration file (hosts, secrets); default: ./nixcmd.toml, then $XDG_CONFIG_HOME/nixcmd/config.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TextOrJson {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CheckFormat {
    Text,
    Json,
    Github,
    Junit,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List the commands nixcmd can find, and where each comes from.
    List {
        #[arg(long, default_value = "table")]
        format: ListFormat,
    },
    /// Show a command as nixcmd understands it.
    Show {
        name: String,
        #[arg(long, default_value = "text")]
        format: TextOrJson,
    },
    /// Run a command (also: `nixcmd /NAME`).
    Run(RunArgs),
    /// Validate command files: every problem at once, with positions.
    Check {
        /// Files or folders (default: every command nixcmd can find, except built-ins).
        paths: Vec<PathBuf>,
        #[arg(long, default_value = "text")]
        format: CheckFormat,
        /// Treat warnings as errors.
        #[arg(long)]
        strict: bool,
    },
    /// List recorded runs, newest first.
    ///
    /// With --prune, remove old run folders instead: those beyond the newest N of each command
    /// (--keep), and/or those that finished longer ago than DURATION (--older-than); with both,
    /// only runs both select. A run in progress or paused at a confirmation gate is never
    /// removed. The duration history behind ETAs stays, but `nixcmd stats` counts the run
    /// folders, so it counts only the runs that remain.
    Runs {
        #[arg(long, default_value = "text")]
        format: TextOrJson,
        /// Only runs of this command.
        #[arg(long)]
        command: Option<String>,
        /// Remove old run folders (needs --keep and/or --older-than).
        #[arg(long)]
        prune: bool,
        /// With --prune: keep the newest N runs of each command.
        #[arg(long, value_name = "N", requires = "prune")]
        keep: Option<usize>,
        /// With --prune: remove runs that finished longer ago than DURATION (90m, 12h, 30d).
        #[arg(long, value_name = "DURATION", requires = "prune", value_parser = crate::duration::parse_age)]
        older_than: Option<std::time::Duration>,
        /// With --prune: list what would be removed; remove nothing.
        #[arg(long, requires = "prune")]
        dry_run: bool,
    },
    /// Print the log of a run, or of one of its steps.
    Log {
        run: String,
        step: Option<String>,
        /// Keep printing new output as the run writes it, until the run is no longer in
        /// progress; then say how it ended.
        #[arg(long, short)]
        follow: bool,
    },
    /// Continue a paused or interrupted run.
    Resume(ResumeArgs),
    /// Runs, success rate and mean durations per command and step.
    Stats {
        #[arg(long, default_value = "text")]
        format: TextOrJson,
    },
    /// List the hosts of the inventory.
    Hosts {
        #[arg(long, default_value = "text")]
        format: TextOrJson,
    },
    /// Serve MCP over stdio for Claude Code.
    Mcp {
        /// How confirmation gates are answered: asked of the human, or always refused.
        #[arg(long, default_value = "ask")]
        confirm: McpConfirm,
    },
    /// Claude Code integration.
    Claude {
        #[command(subcommand)]
        action: ClaudeCmd,
    },
    /// Write a new annotated command file.
    New {
        name: String,
        /// Folder to write into (default: --commands-dir if given, else .nixcmd/commands).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum McpConfirm {
    Ask,
    Deny,
}

#[derive(Debug, Subcommand)]
pub enum ClaudeCmd {
    /// Write .claude/commands wrappers and an .mcp.json entry.
    Export {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Replace wrappers edited since nixcmd wrote them, too.
        #[arg(long)]
        force: bool,
    },
}

/// Options shared by `run` and `resume`.
#[derive(Debug, Args, Clone, Default)]
pub struct GateArgs {
    /// Answer yes to every confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Approve the confirmation of step ID (repeatable).
    #[arg(long = "approve", value_name = "ID")]
    pub approve: Vec<String>,
    /// Output: human text, or one JSON event per line.
    #[arg(long, default_value = "text")]
    pub format: TextOrJsonRun,
    /// Stream every output line of every step.
    #[arg(long, short)]
    pub verbose: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum TextOrJsonRun {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    pub name: String,
    /// Arguments of the command (put `--` before values that start with `-`).
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,
    /// Run only `readonly` blocks and print the plan.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub gates: GateArgs,
    /// Working directory of the steps.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Fill a placeholder of a guided file (KEY=VALUE, repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Run only these steps (repeatable).
    #[arg(long, value_name = "ID")]
    pub only: Vec<String>,
    /// Skip these steps (repeatable).
    #[arg(long, value_name = "ID")]
    pub skip: Vec<String>,
    /// Start at this step.
    #[arg(long, value_name = "ID")]
    pub from: Option<String>,
    /// Narrow host fan-out to SELECTOR (all, @tag, a,b).
    #[arg(long, value_name = "SELECTOR")]
    pub hosts: Option<String>,
}

#[derive(Debug, Args, Clone)]
pub struct ResumeArgs {
    pub run: String,
    #[command(flatten)]
    pub gates: GateArgs,
    /// Resume even though the command file changed since the run started.
    #[arg(long)]
    pub force: bool,
    /// Decline the confirmation the run is paused at, as answering "no" would: nothing past
    /// it runs, what ran is rolled back, `always` blocks run.
    #[arg(long, conflicts_with_all = ["yes", "approve"])]
    pub decline: bool,
}

/// Rewrites `nixcmd [globals] /NAME args…` into `nixcmd [globals] run NAME args…`.
pub fn normalize_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut out: Vec<OsString> = args.into_iter().collect();
    let takes_value = ["--commands-dir", "--color", "--config"];
    let mut i = 1;
    while i < out.len() {
        let Some(arg) = out[i].to_str() else { break };
        if takes_value.contains(&arg) {
            i += 2;
            continue;
        }
        if arg.starts_with("--") {
            i += 1;
            continue;
        }
        if let Some(name) = arg.strip_prefix('/') {
            // `/x/y` and a bare `/` go to `run` as written, which says what is wrong with
            // them (a path, no name) instead of clap's "unrecognized subcommand".
            let name = match name.is_empty() || name.contains('/') {
                true => OsString::from(arg),
                false => OsString::from(name),
            };
            out[i] = OsString::from("run");
            out.insert(i + 1, name);
        }
        break;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn slash_names_become_run() {
        assert_eq!(
            norm(&["nixcmd", "/flake-update", "nixpkgs"]),
            ["nixcmd", "run", "flake-update", "nixpkgs"]
        );
        assert_eq!(
            norm(&["nixcmd", "--commands-dir", "/x", "/deploy-all", "--dry-run"]),
            [
                "nixcmd",
                "--commands-dir",
                "/x",
                "run",
                "deploy-all",
                "--dry-run"
            ]
        );
        assert_eq!(norm(&["nixcmd", "list"]), ["nixcmd", "list"]);
        assert_eq!(norm(&["nixcmd", "/etc/x"]), ["nixcmd", "run", "/etc/x"]);
        assert_eq!(norm(&["nixcmd", "/"]), ["nixcmd", "run", "/"]);
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
