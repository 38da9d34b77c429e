//! Dispatch: parse the command line, run one small function per subcommand, print a failure
//! once, and return the exit code. The only caller of this is `main`.

use crate::check;
use crate::check_report;
use crate::cli::{CheckFormat, ClaudeCmd, Cli, Cmd, ListFormat, TextOrJson, normalize_args};
use crate::discovery::{self, SearchPath};
use crate::exit::{Exit, Failure};
use crate::output::Output;
use clap::{CommandFactory, Parser};
use std::ffi::OsString;
use std::path::PathBuf;

/// What every subcommand may need.
pub struct Context {
    pub out: Output,
    pub cwd: PathBuf,
    pub search: SearchPath,
    pub config: Option<PathBuf>,
}

/// Runs nixcmd with these arguments and returns the process exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli = match Cli::try_parse_from(normalize_args(args)) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage.code()
            } else {
                Exit::Success.code()
            };
            let _ = e.print();
            return code;
        }
    };
    let out = Output::new(cli.color);
    let cwd = match std::env::current_dir() {
        Ok(cwd) => cwd,
        Err(e) => {
            out.eprint(&format!(
                "error: the current directory cannot be read: {e}\n"
            ));
            return Exit::Usage.code();
        }
    };
    let commands_dir = cli.commands_dir.clone().or_else(|| {
        std::env::var_os("NIXCMD_COMMANDS_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let search = SearchPath::new(commands_dir.as_deref(), &cwd);
    let cx = Context {
        out,
        cwd,
        search,
        config: cli.config.clone(),
    };
    // A run's exit code says what happened to the machine, and stays so when only its
    // output was lost; every other command's output is its result.
    let runs = matches!(cli.command, Cmd::Run(_) | Cmd::Resume(_));
    let event_stream = match &cli.command {
        Cmd::Run(a) => a.gates.format == crate::cli::TextOrJsonRun::Json,
        Cmd::Resume(a) => a.gates.format == crate::cli::TextOrJsonRun::Json,
        _ => false,
    };
    let code = match dispatch(&cx, cli.command) {
        Ok(exit) => exit.code(),
        Err(failure) => {
            report(&cx.out, &failure);
            // A run that never started has no events: whoever reads the stream (Claude Code,
            // a script) gets one line that says why, instead of nothing at all. A run that
            // started ends with its own `run_finished` and never comes here.
            if event_stream {
                report_json(&cx.out, &failure);
            }
            failure.exit.code()
        }
    };
    let Some(why) = crate::output::stdout_failure() else {
        return code;
    };
    let message = format!("standard output did not take all of the output: {why}");
    if runs {
        let p = cx.out.err;
        cx.out.eprint(&format!(
            "{} {message}\n  {} the run was not affected by it: `nixcmd runs` and `nixcmd log RUN` show its records\n",
            p.yellow(&p.bold("warning:")),
            p.cyan("hint:"),
        ));
        return code;
    }
    report(
        &cx.out,
        &Failure::new(Exit::Failed, message).with_hint(
            "what was written is incomplete: make room on the device, or send the output elsewhere",
        ),
    );
    code.max(Exit::Failed.code())
}

/// Prints a failure once, with its hint.
pub fn report(out: &Output, failure: &Failure) {
    let p = out.err;
    let mut s = if failure.message.starts_with("error") {
        format!("{}\n", failure.message)
    } else {
        format!("{} {}\n", p.red(&p.bold("error:")), failure.message)
    };
    if let Some(h) = &failure.hint {
        s.push_str(&format!("  {} {h}\n", p.cyan("hint:")));
    }
    out.eprint(&s);
}

/// A failure before a run started, for `--format json`: one JSON line on stdout,
/// `{"type": "error", "exit_code", "message", "hint"?}` (no `seq` or `run_id`: there is no run).
fn report_json(out: &Output, failure: &Failure) {
    let mut line = serde_json::json!({
        "type": "error",
        "exit_code": failure.exit.code(),
        "message": failure.message.strip_prefix("error: ").unwrap_or(&failure.message),
    });
    if let Some(hint) = &failure.hint {
        line["hint"] = hint.clone().into();
    }
    out.print(&format!("{line}\n"));
}

fn dispatch(cx: &Context, cmd: Cmd) -> Result<Exit, Failure> {
    match cmd {
        Cmd::List { format } => crate::list::run(&cx.search, &cx.out, format == ListFormat::Json),
        Cmd::Show { name, format } => show(cx, &name, format),
        Cmd::Check {
            paths,
            format,
            strict,
        } => check(cx, &paths, format, strict),
        Cmd::New { name, dir, force } => new(cx, &name, dir, force),
        Cmd::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "nixcmd", &mut buf);
            cx.out.print(&String::from_utf8_lossy(&buf));
            Ok(Exit::Success)
        }
        Cmd::Run(args) => crate::run::commands::run(cx, args),
        Cmd::Resume(args) => crate::run::commands::resume(cx, args),
        Cmd::Runs {
            format,
            command,
            prune: true,
            keep,
            older_than,
            dry_run,
        } => crate::run::prune::prune(
            cx,
            crate::run::prune::Request {
                rules: crate::run::prune::Rules { keep, older_than },
                command: command.as_deref(),
                dry_run,
                json: format == TextOrJson::Json,
            },
        ),
        Cmd::Runs {
            format, command, ..
        } => crate::run::commands::runs(cx, format, command.as_deref()),
        Cmd::Log { run, step, follow } => match follow {
            true => crate::run::follow::follow(cx, &run, step.as_deref()),
            false => crate::run::commands::log(cx, &run, step.as_deref()),
        },
        Cmd::Stats { format } => crate::run::commands::stats(cx, format),
        Cmd::Hosts { format } => crate::hosts::command(cx, format),
        Cmd::Mcp { confirm } => crate::mcp::serve(cx, confirm),
        Cmd::Claude {
            action: ClaudeCmd::Export { dir, force },
        } => crate::claude_export::run(cx, &dir, force),
    }
}

/// Loads a command by name, or by path when NAME is a `.md` file.
pub fn load_named(cx: &Context, name: &str) -> Result<discovery::Loaded, Failure> {
    load_named_with(cx, name, crate::parser::Depth::Full)
}

/// [`load_named`] at a given depth.
fn load_named_with(
    cx: &Context,
    name: &str,
    depth: crate::parser::Depth,
) -> Result<discovery::Loaded, Failure> {
    let as_path = PathBuf::from(name);
    let result = if name.ends_with(".md") && as_path.exists() {
        let origin = crate::command::Origin::File {
            path: name.to_string(),
        };
        discovery::load_path_with(&as_path, &discovery::name_of(&as_path), origin, depth)
    } else {
        discovery::load_with(&cx.search.find(name)?, depth)
    };
    result.map_err(|u| discovery::unreadable_failure(&u))
}

fn show(cx: &Context, name: &str, format: TextOrJson) -> Result<Exit, Failure> {
    // The text form does not show the content hash, so it is not computed for it.
    let depth = match format {
        TextOrJson::Json => crate::parser::Depth::Full,
        TextOrJson::Text => crate::parser::Depth::Unhashed,
    };
    let loaded = load_named_with(cx, name, depth)?;
    if loaded
        .command
        .diagnostics
        .iter()
        .any(|d| d.severity == crate::diagnostic::Severity::Fatal)
    {
        let rendered: String = loaded
            .command
            .diagnostics
            .iter()
            .filter(|d| d.severity == crate::diagnostic::Severity::Fatal)
            .map(|d| d.render(Some(&loaded.file), &loaded.file.name))
            .collect();
        return Err(Failure::new(Exit::Usage, rendered.trim_end().to_string()));
    }
    match format {
        TextOrJson::Json => {
            cx.out.print_json(&loaded.command).map_err(Failure::usage)?;
        }
        TextOrJson::Text => cx.out.print(&crate::show::text(&loaded, cx.out.out)),
    }
    // `show` is the last thing the process does, and the exit returns the memory at once:
    // freeing a large command's thousands of allocations one by one first cost about 1 % of
    // the instructions of `show` of a 5 MB file.
    std::mem::forget(loaded);
    Ok(Exit::Success)
}

fn check(
    cx: &Context,
    paths: &[PathBuf],
    format: CheckFormat,
    strict: bool,
) -> Result<Exit, Failure> {
    let targets = check::targets(paths, &cx.search)?;
    if targets.is_empty() {
        cx.out
            .eprint("no command files found (give paths, or add commands to .nixcmd/commands/)\n");
        // A machine reader (a CI step parsing the JSON, a JUnit uploader) gets an empty
        // report it can read rather than an empty file.
        match format {
            CheckFormat::Json => cx.out.print(&check_report::json(&[], strict)),
            CheckFormat::Junit => cx.out.print(&check_report::junit(&[], strict)),
            CheckFormat::Text | CheckFormat::Github => {}
        }
        return Ok(Exit::Success);
    }
    let reports: Vec<_> = targets.iter().map(check::check_target).collect();
    let text = match format {
        CheckFormat::Text => check_report::text(&reports, strict),
        CheckFormat::Json => check_report::json(&reports, strict),
        CheckFormat::Github => check_report::github(&reports, strict),
        CheckFormat::Junit => check_report::junit(&reports, strict),
    };
    cx.out.print(&text);
    Ok(check::exit_for(&reports, strict))
}

fn new(cx: &Context, name: &str, dir: Option<PathBuf>, force: bool) -> Result<Exit, Failure> {
    // `new deploy.md` names the file: the command is `deploy`, as `nixcmd /deploy.md` finds
    // it (a file `deploy.md.md` would be listed as `deploy.md`).
    let name = name.strip_suffix(".md").unwrap_or(name);
    if !crate::attrs::is_valid_id(name) {
        return Err(
            Failure::usage(format!("`{name}` is not a valid command name"))
                .with_hint("use letters, digits, `-`, `_` and `.`, e.g. `rotate-keys`"),
        );
    }
    // The folder the user pointed nixcmd at (`--commands-dir`, `NIXCMD_COMMANDS_DIR`) is
    // where they keep commands: a new one goes there, first on the search path.
    let dir = dir
        .or_else(|| cx.search.commands_dir().map(std::path::Path::to_path_buf))
        .unwrap_or_else(|| discovery::project_root(&cx.cwd).join(".nixcmd/commands"));
    let path = dir.join(format!("{name}.md"));
    // A dangling symlink is something the user put there too (`exists` follows links).
    if std::fs::symlink_metadata(&path).is_ok() && !force {
        return Err(Failure::usage(format!("{} already exists", path.display()))
            .with_hint("pick another name, or pass --force to overwrite it"));
    }
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::usage(format!("cannot create {}: {e}", dir.display())))?;
    crate::records_io::write_atomic(&path, crate::skeleton::text(name).as_bytes(), 0o644)
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", path.display())))?;
    // `/NAME` finds this file only when it is the one the search path picks: `--dir` may name
    // a folder off the path, and a command of that name earlier on the path shadows it.
    let same = |found: &std::path::Path| {
        let (a, b) = (std::fs::canonicalize(found), std::fs::canonicalize(&path));
        matches!((a, b), (Ok(a), Ok(b)) if a == b)
    };
    let found = cx.search.find(name).ok().and_then(|f| f.path);
    // Found through `--commands-dir`, `/NAME` works only with that option again: the path
    // works as it is.
    let through_option = cx
        .search
        .commands_dir()
        .is_some_and(|d| path.starts_with(d));
    let try_it = match found {
        Some(found) if same(&found) && !through_option => format!("nixcmd /{name} --dry-run"),
        _ => format!("nixcmd run {} --dry-run", path.display()),
    };
    cx.out.print(&format!(
        "wrote {}\nnext: edit it, then `nixcmd check {}` and `{try_it}`\n",
        path.display(),
        path.display()
    ));
    Ok(Exit::Success)
}
