//! The subcommands around runs: `run`, `resume`, `runs`, `log`, `stats`. Each turns command
//! line options into engine options, picks the sinks and the approver, and reports.

use crate::app::{Context, load_named};
use crate::cli::{ResumeArgs, RunArgs, TextOrJson, TextOrJsonRun};
use crate::command::Command;
use crate::diagnostic::Severity;
use crate::duration::display;
use crate::event::{RunStatus, Sink, StepStatus};
use crate::exit::{Exit, Failure};
use crate::process::{self, Cancel};
use crate::run::approve::{TerminalApprover, interactive};
use crate::run::engine::{Engine, Options};
use crate::run::records::{self, Lock, LockError, RunDir, State};
use crate::run::render::{JsonSink, TextRenderer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Time between SIGINT, SIGTERM and SIGKILL when a step is stopped.
pub const GRACE: Duration = Duration::from_secs(2);

pub fn run(cx: &Context, args: RunArgs) -> Result<Exit, Failure> {
    let heartbeat = crate::run::heartbeat::from_env()?;
    let loaded = load_named(cx, &args.name)?;
    refuse_invalid(&loaded)?;
    let cmd = &loaded.command;
    check_approvals(cmd, &args.gates.approve)?;
    let dir = working_dir(cx, args.dir.as_deref())?;
    let request = NewRun {
        args: args.args.clone(),
        set: args.set.clone(),
        dir,
        dry_run: args.dry_run,
        only: args.only.clone(),
        skip: args.skip.clone(),
        from: args.from.clone(),
        config: None,
    };
    let fleet = crate::run::fleet::from_cli(
        cx,
        cmd,
        &request.dir,
        args.hosts.as_deref(),
        &args.args,
        &args.set,
        args.dry_run,
    )?;
    let request = NewRun {
        config: fleet.config.as_ref().map(PathBuf::from),
        ..request
    };
    let mut prepared = prepare_new(cmd, request, resolver(cx))?;
    prepared.state.fleet = fleet;
    launch(cx, cmd, prepared, &args.gates, heartbeat)
}

/// Applies the gate flags and runs a prepared run (new or resumed); the lock is held until
/// the run ends.
fn launch(
    cx: &Context,
    cmd: &Command,
    mut prepared: Prepared,
    gates: &crate::cli::GateArgs,
    heartbeat: Option<Duration>,
) -> Result<Exit, Failure> {
    prepared.opts.yes = gates.yes;
    prepared.opts.approve = gates.approve.clone();
    let Prepared {
        run,
        state,
        progress,
        opts,
        mut lock,
    } = prepared;
    let (exit, status) = execute(
        cx,
        cmd,
        opts,
        run,
        state,
        progress,
        gates.format,
        gates.verbose,
        heartbeat,
    )?;
    if status == RunStatus::AwaitingConfirmation
        && let Some(lock) = lock.as_mut()
    {
        lock.leave_paused();
    }
    Ok(exit)
}

/// What the engine needs to start or continue a run, prepared the same way for the CLI and
/// the MCP server. Approvals (`opts.yes`, `opts.approve`) start empty: the caller sets them.
pub struct Prepared {
    pub run: RunDir,
    pub state: State,
    /// `None` for a new run; the saved progress when resuming.
    pub progress: Option<records::Progress>,
    pub opts: Options,
    /// The per-command lock (none for dry runs): hold it until the engine returns.
    pub lock: Option<Lock>,
}

/// What a new run is asked to do.
pub struct NewRun {
    pub args: Vec<String>,
    pub set: Vec<String>,
    /// The working directory of the steps (it exists).
    pub dir: PathBuf,
    pub dry_run: bool,
    pub only: Vec<String>,
    pub skip: Vec<String>,
    pub from: Option<String>,
    /// `--config FILE`, for the `secrets` it names (default: the project's `nixcmd.toml`,
    /// else the user's config).
    pub config: Option<PathBuf>,
}

/// Validates arguments, step selection and the config file, takes the lock (not for dry
/// runs) and creates the run folder.
pub fn prepare_new(
    cmd: &Command,
    req: NewRun,
    resolve: crate::run::nested::Resolver,
) -> Result<Prepared, Failure> {
    let bound = crate::run::args::bind(cmd, &req.args, &req.set)?;
    check_selection(cmd, &req.only, &req.skip, req.from.as_deref())?;
    let secrets = config_secrets_at(req.config.as_deref(), &req.dir)?;
    let run_id = records::new_run_id(&cmd.name);
    // Dry runs change nothing, so they may overlap a real run.
    let lock = if req.dry_run {
        None
    } else {
        Some(lock(&cmd.name, &run_id)?)
    };
    let run = RunDir::create(&run_id).map_err(|e| {
        records_failure(
            "create the run folder",
            &records::runs_dir().join(&run_id),
            &e,
        )
    })?;
    let mut state = State::new(&run_id, cmd, &req.args, &req.set, &req.dir, req.dry_run);
    state.git_commit = git_commit(&req.dir);
    state.only = req.only.clone();
    state.skip = req.skip.clone();
    state.from = req.from.clone();
    let opts = Options {
        dir: req.dir,
        dry_run: req.dry_run,
        yes: false,
        approve: Vec::new(),
        approve_channel: "flag".into(),
        decline: None,
        only: req.only,
        skip: req.skip,
        from: req.from,
        env: bound.env,
        grace: GRACE,
        secrets,
        resolve: Some(resolve),
        notices: Lock::notices(lock.as_ref(), &cmd.name, false),
        force: false,
    };
    Ok(Prepared {
        run,
        state,
        progress: None,
        opts,
        lock,
    })
}

#[allow(clippy::too_many_arguments)]
fn execute(
    cx: &Context,
    cmd: &Command,
    opts: Options,
    run: RunDir,
    state: State,
    progress: Option<records::Progress>,
    format: TextOrJsonRun,
    verbose: bool,
    heartbeat: Option<Duration>,
) -> Result<(Exit, RunStatus), Failure> {
    let cancel = Cancel::default();
    let _ = cancel.install_signal_handlers();
    let sudo = if opts.dry_run {
        None
    } else {
        match warm_sudo(cx, cmd) {
            Ok(flag) => flag,
            Err(e) => {
                // Nothing ran and nothing was recorded: a new run leaves no empty folder
                // (one that `runs` cannot show and nothing would ever remove).
                if progress.is_none() {
                    let _ = std::fs::remove_dir_all(&run.path);
                }
                return Err(e);
            }
        }
    };
    let sinks: Vec<Box<dyn Sink>> = match format {
        TextOrJsonRun::Json => vec![
            Box::new(JsonSink::new(cx.out)),
            Box::new(TextRenderer::stderr(cx.out, verbose).with_heartbeat(heartbeat)),
        ],
        TextOrJsonRun::Text => vec![Box::new(
            TextRenderer::new(cx.out, verbose).with_heartbeat(heartbeat),
        )],
    };
    let mut approver = TerminalApprover {
        out: cx.out,
        cancel: cancel.clone(),
    };
    let engine = Engine::new(
        cmd,
        opts,
        run,
        state,
        progress,
        sinks,
        &mut approver,
        cancel,
    );
    let outcome = engine.execute();
    if let Some(flag) = sudo {
        flag.store(true, Ordering::SeqCst);
    }
    Ok((outcome.exit, outcome.status))
}

/// The run records cannot be written: where, why, and what to do about it.
fn records_failure(action: &str, path: &std::path::Path, e: &std::io::Error) -> Failure {
    let why = crate::io_error::why(e, crate::io_error::Expected::FileOrFolder);
    Failure::usage(format!("cannot {action} {}: {why}", path.display())).with_hint(format!(
        "runs are recorded under {} ($XDG_STATE_HOME/nixcmd): make it writable, or set \
         XDG_STATE_HOME to a folder you can write",
        records::state_root().display()
    ))
}

/// `secrets` named in the config file (`nixcmd.toml`) of the run.
pub fn config_secrets(state: &State) -> Result<Vec<String>, Failure> {
    let explicit = state.fleet.config.as_ref().map(PathBuf::from);
    config_secrets_at(explicit.as_deref(), std::path::Path::new(&state.dir))
}

/// `secrets` named in the config file that applies to a run in `dir` (`--config FILE`, else
/// the project's `nixcmd.toml`, else the user's): a file that cannot be read or parsed
/// refuses the run (exit 2, its problems at `path:line:col`), since the values of the
/// secrets it names would be printed and recorded in clear.
pub fn config_secrets_at(
    explicit: Option<&std::path::Path>,
    dir: &std::path::Path,
) -> Result<Vec<String>, Failure> {
    crate::hosts::refuse_missing_config(explicit, dir)?;
    crate::hosts::inventory::config_secrets(explicit, dir).map_err(|inv| {
        let path = inv.path.clone().unwrap_or_default();
        let problems = inv.render_diagnostics();
        Failure::usage(format!(
            "the config file {path} cannot be used, so the secrets it names are unknown; \
             nothing was run:\n{}",
            problems.trim_end()
        ))
        .with_hint(format!(
            "fix {path} (`nixcmd hosts` shows what nixcmd reads of it), or name another \
             with --config FILE"
        ))
    })
}

/// Nested runs look commands up on the same search path as the parent run.
fn resolver(cx: &Context) -> crate::run::nested::Resolver {
    resolver_for(&cx.search)
}

/// A resolver of nested commands on this search path.
pub fn resolver_for(search: &crate::discovery::SearchPath) -> crate::run::nested::Resolver {
    let search = search.clone();
    std::sync::Arc::new(move |name: &str| {
        let found = search.find(name).ok()?;
        let loaded = crate::discovery::load(&found).ok()?;
        let ok = !loaded
            .command
            .diagnostics
            .iter()
            .any(|d| d.severity >= Severity::Error);
        ok.then_some(loaded.command)
    })
}

/// Commands with errors do not run: their diagnostics are printed and the exit is 2. Nor do
/// commands with nothing to run (a reference card written for Claude Code): a run that did
/// nothing would report success.
pub fn refuse_invalid(loaded: &crate::discovery::Loaded) -> Result<(), Failure> {
    let errors: Vec<_> = loaded
        .command
        .diagnostics
        .iter()
        .filter(|d| d.severity >= Severity::Error)
        .collect();
    if errors.is_empty() {
        return refuse_empty(&loaded.command);
    }
    let rendered: String = errors
        .iter()
        .map(|d| d.render(Some(&loaded.file), &loaded.file.name))
        .collect();
    Err(Failure::new(
        Exit::Usage,
        format!(
            "{}error: `{}` is not a valid runbook ({} error{}); nothing was run",
            rendered,
            loaded.command.name,
            errors.len(),
            if errors.len() == 1 { "" } else { "s" }
        ),
    )
    .with_hint(format!(
        "fix the file, then `nixcmd check {}`",
        loaded.file.name
    )))
}

/// A command none of whose prerequisites, steps or checks nixcmd can run.
fn refuse_empty(cmd: &Command) -> Result<(), Failure> {
    let runnable = cmd
        .blocks()
        .any(|b| b.runnable && b.phase != crate::command::Phase::Rollback);
    if runnable {
        return Ok(());
    }
    let shown = match cmd.other_blocks {
        0 => String::new(),
        1 => "its 1 code block is outside the runnable sections; ".to_string(),
        n => format!("its {n} code blocks are outside the runnable sections; "),
    };
    Err(Failure::usage(format!(
        "`{}` has nothing to run: no prerequisite, step or check is a shell block nixcmd runs; \
         nothing was run",
        cmd.name
    ))
    .with_hint(format!(
        "{shown}`nixcmd show {}` shows what the file holds",
        cmd.name
    )))
}

fn working_dir(cx: &Context, dir: Option<&std::path::Path>) -> Result<PathBuf, Failure> {
    let dir = match dir {
        Some(d) if d.is_absolute() => d.to_path_buf(),
        Some(d) => cx.cwd.join(d),
        None => cx.cwd.clone(),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => Ok(dir),
        Ok(_) => Err(
            Failure::usage(format!("--dir {}: not a folder", dir.display())).with_hint(DIR_HINT),
        ),
        Err(e) => Err(Failure::usage(format!(
            "--dir {}: {}",
            dir.display(),
            crate::io_error::why(&e, crate::io_error::Expected::Folder)
        ))
        .with_hint(DIR_HINT)),
    }
}

const DIR_HINT: &str = "`--dir` is the folder the blocks run in (the checkout of your flake, usually): \
     give one that exists, or leave it out to run here";

/// `--approve` must name a block that asks for confirmation: a mistyped id would otherwise
/// approve nothing, and the run would stop at the gate it was meant to pass.
fn check_approvals(cmd: &Command, approve: &[String]) -> Result<(), Failure> {
    let asking: Vec<&str> = cmd
        .blocks()
        .filter(|b| b.effective.asks)
        .map(|b| b.id.as_str())
        .collect();
    for id in approve {
        if asking.contains(&id.as_str()) {
            continue;
        }
        let what = match cmd.block(id) {
            Some(_) => format!(
                "step `{id}` of `{}` does not ask for confirmation",
                cmd.name
            ),
            None => format!("`{}` has no step `{id}`", cmd.name),
        };
        let hint = match crate::suggest::closest(id, asking.iter().copied()) {
            _ if asking.is_empty() => "no step of it asks: run it without --approve".to_string(),
            Some(s) => format!(
                "did you mean `{s}`? (steps that ask: {})",
                asking.join(", ")
            ),
            None => format!("steps that ask: {}", asking.join(", ")),
        };
        return Err(Failure::usage(format!("--approve {id}: {what}")).with_hint(hint));
    }
    Ok(())
}

/// `--only`, `--skip` and `--from` must name steps (or checks) that exist.
fn check_selection(
    cmd: &Command,
    only: &[String],
    skip: &[String],
    from: Option<&str>,
) -> Result<(), Failure> {
    let ids: Vec<&str> = cmd
        .steps
        .iter()
        .chain(&cmd.success_criteria.checks)
        .map(|b| b.id.as_str())
        .collect();
    for (flag, id) in only
        .iter()
        .map(|i| ("--only", i.as_str()))
        .chain(skip.iter().map(|i| ("--skip", i.as_str())))
        .chain(from.map(|i| ("--from", i)))
    {
        if !ids.contains(&id) {
            let hint = crate::suggest::closest(id, ids.iter().copied())
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("steps: {}", ids.join(", ")));
            return Err(
                Failure::usage(format!("{flag} {id}: `{}` has no such step", cmd.name))
                    .with_hint(hint),
            );
        }
    }
    // An `always` block runs at the end of every run that started: accepting `--skip` of
    // one and running it anyway said one thing and did another.
    if let Some(b) = (cmd.steps.iter().chain(&cmd.success_criteria.checks))
        .find(|b| b.attrs.always && skip.contains(&b.id))
    {
        return Err(Failure::usage(format!(
            "--skip {}: `{}` is an `always` block, which runs at the end of every run and is \
             never skipped",
            b.id, b.id
        ))
        .with_hint("leave it out of --skip; to change what it does, edit the command"));
    }
    let selection = crate::run::selection::Selection { only, skip, from };
    let runs = |b: &&crate::command::Block| {
        b.runnable && !b.attrs.always && selection.skips(cmd, b).is_none()
    };
    if selection.is_given()
        && !(cmd.steps.iter().chain(&cmd.success_criteria.checks)).any(|b| runs(&b))
    {
        return Err(Failure::usage(format!(
            "--only, --skip and --from together leave no step or success criterion of `{}` \
             to run",
            cmd.name
        ))
        .with_hint(
            "each leaves steps out: `--only` all but those it names, `--from` those before \
             it, `--skip` those it names; `nixcmd show NAME` lists the steps in order",
        ));
    }
    Ok(())
}

fn lock(name: &str, run_id: &str) -> Result<Lock, Failure> {
    Lock::acquire(name, run_id).map_err(|e| match e {
        // The holder is this very run: another `resume` of it is under way.
        LockError::Held { holder } if holder.split_whitespace().next() == Some(run_id) => {
            Failure::usage(format!("run {run_id} is being resumed already: {holder}"))
                .with_hint(format!("follow it with `nixcmd log {run_id} --follow`"))
        }
        LockError::Held { holder } => {
            Failure::usage(format!("another run of `{name}` is in progress: {holder}"))
                .with_hint("wait for it to finish, or look at it with `nixcmd runs`")
        }
        LockError::Paused {
            run_id: other,
            step,
        } => Failure::usage(format!(
            "run {other} of `{name}` is paused at step `{step}`, waiting for a confirmation: \
             what it did so far is not finished or undone"
        ))
        .with_hint(format!(
            "finish it with `nixcmd resume {other} --approve {step}`, or end it with `nixcmd \
             resume {other} --decline` (what it did is rolled back); then run again"
        )),
        LockError::Io(path, e) => records_failure("take the run lock", &path, &e),
        LockError::NotAFile(path, what) => Failure::usage(format!(
            "cannot take the run lock {}: {what}",
            path.display()
        ))
        .with_hint(
            "nixcmd keeps each command's lock as a plain file and makes it again when it is \
             missing: move this one away (or remove it), then run again",
        ),
    })
}

/// The commit checked out where the run runs, for `state.json`: read from the repository's
/// files, or from `git rev-parse HEAD` when they are not plain enough (see `git_head`).
fn git_commit(dir: &std::path::Path) -> Option<String> {
    match crate::git_head::head(dir) {
        crate::git_head::Head::Commit(id) => Some(id),
        crate::git_head::Head::None => None,
        crate::git_head::Head::Ask => {
            let out = process::capture_in(Some(dir), "git", &["rev-parse", "HEAD"], "").ok()??;
            out.success().then(|| out.stdout.trim().to_string())
        }
    }
}

/// A runbook that calls `sudo` asks for the password once, before the first step, and keeps
/// the ticket fresh, instead of a step hanging on a prompt it cannot show.
fn warm_sudo(cx: &Context, cmd: &Command) -> Result<Option<Arc<AtomicBool>>, Failure> {
    let uses_sudo = cmd.blocks().any(|b| {
        b.runnable
            && b.code
                .split(|c: char| !c.is_alphanumeric() && c != '-')
                .any(|w| w == "sudo")
    });
    if !uses_sudo || !process::on_path("sudo") || !interactive() {
        return Ok(None);
    }
    if process::quiet("sudo", &["-n", "-v"]) {
        return Ok(keep_sudo_fresh());
    }
    cx.out
        .eprint("this runbook uses sudo: authenticate once now so no step waits for a password\n");
    match process::interactive("sudo", &["-v"]) {
        Ok(true) => Ok(keep_sudo_fresh()),
        _ => Err(Failure::new(
            Exit::Prerequisites,
            "sudo authentication failed; nothing was run",
        )),
    }
}

fn keep_sudo_fresh() -> Option<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            for _ in 0..600 {
                if flag.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            process::quiet("sudo", &["-n", "-v"]);
        }
    });
    Some(stop)
}

pub fn resume(cx: &Context, args: ResumeArgs) -> Result<Exit, Failure> {
    let heartbeat = crate::run::heartbeat::from_env()?;
    let (path, state) = records::find_run(&args.run).map_err(Failure::usage)?;
    refuse_ended(&state)?;
    let decline = match args.decline {
        true => Some(paused_gate(&state)?),
        false => None,
    };
    let loaded = load_for_resume(cx, &state)?;
    refuse_invalid(&loaded)?;
    let cmd = &loaded.command;
    // A run paused with its nested run: `--approve` names the nested run's gate, which is
    // passed on to it (run::nested), not a step of this command.
    let own: Vec<String> = args
        .gates
        .approve
        .iter()
        .filter(|a| {
            state
                .nested_wait
                .as_ref()
                .is_none_or(|w| w.gate.as_deref() != Some(a.as_str()))
        })
        .cloned()
        .collect();
    check_approvals(cmd, &own)?;
    if decline.is_some() && cmd.hash != state.command_hash && !args.force {
        // Not `--force --approve GATE`: that would run the step being declined.
        return Err(refuse_changed(&state, " --decline"));
    }
    let nested = resolver_for(&resume_search(cx, &state));
    if decline.is_some() && !args.force {
        refuse_changed_nested(&state, &nested, true)?;
    }
    let mut prepared = prepare_resume(cmd, state, &path, args.force, nested)?;
    if let Some(id) = decline {
        // A changed file (`--force`) may have lost the gate: declining nothing would run on.
        if !cmd.blocks().any(|b| b.id == id && b.effective.asks) {
            return Err(Failure::usage(format!(
                "--decline: step `{id}` of run {} no longer asks for confirmation in `{}`",
                prepared.state.run_id, cmd.name
            )));
        }
        prepared.opts.decline = Some(id);
    }
    launch(cx, cmd, prepared, &args.gates, heartbeat)
}

/// `resume --decline` answers the gate a run is paused at: the step it waits before. A run
/// that is not paused there has nothing to decline (a running or interrupted run, a failed
/// one whose hosts can be retried).
fn paused_gate(state: &State) -> Result<String, Failure> {
    let step = match (state.status, &state.current_step) {
        (RunStatus::AwaitingConfirmation, Some(step)) => return Ok(step.clone()),
        (RunStatus::AwaitingConfirmation, None) => "awaiting confirmation".to_string(),
        (status, _) => status.label().to_string(),
    };
    Err(Failure::usage(format!(
        "run {} is not paused at a confirmation ({step}); nothing to decline",
        state.run_id
    ))
    .with_hint(format!(
        "`nixcmd resume {}` continues it; `--decline` is for a run that ended with exit 3 \
         (paused for confirmation)",
        state.run_id
    )))
}

/// The command a run is resumed with. The file it started from comes first when it is
/// unchanged: the search path here may find another file of that name, or none (a run
/// started as `nixcmd run runbooks/deploy.md`, or with `--commands-dir`). Then the command of
/// that name, when it is the same text (the file moved). Otherwise the changed file, so that
/// the resume is refused as "changed" (see [`prepare_resume`]), not as "unknown".
fn load_for_resume(cx: &Context, state: &State) -> Result<crate::discovery::Loaded, Failure> {
    let source = recorded_source(state).and_then(|p| {
        let origin = crate::command::Origin::File {
            path: p.display().to_string(),
        };
        crate::discovery::load_path(&p, &state.command, origin).ok()
    });
    let same = |l: &crate::discovery::Loaded| l.command.hash == state.command_hash;
    if let Some(loaded) = source.as_ref().filter(|l| same(l)) {
        return Ok(loaded.clone());
    }
    match (load_named(cx, &state.command), source) {
        (Ok(by_name), _) if same(&by_name) => Ok(by_name),
        (_, Some(changed)) => Ok(changed),
        (Ok(by_name), None) => Ok(by_name),
        (Err(e), None) => Err(match state.command_source.as_str() {
            "builtin" => e,
            source => e.with_hint(format!(
                "run {} started from {source}, which is no longer there",
                state.run_id
            )),
        }),
    }
}

/// The file a run's command was read from, if it was a file that is still there. Runs
/// recorded before the path was made absolute name it relative to where they ran.
fn recorded_source(state: &State) -> Option<PathBuf> {
    if state.command_source == "builtin" {
        return None;
    }
    let path = PathBuf::from(&state.command_source);
    let path = match path.is_absolute() {
        true => path,
        false => PathBuf::from(&state.dir).join(path),
    };
    path.is_file().then_some(path)
}

/// Where a resumed run's nested commands (`/other` lines of a guided file) are looked for:
/// first the folder its command file is in, where they were most likely found when it
/// started (with `--commands-dir` there, or from another project), then this search path.
fn resume_search(cx: &Context, state: &State) -> crate::discovery::SearchPath {
    let mut search = cx.search.clone();
    let folder = recorded_source(state).and_then(|p| p.parent().map(PathBuf::from));
    if let Some(folder) = folder
        && !search.dirs.iter().any(|(d, _)| *d == folder)
    {
        search.dirs.insert(
            0,
            (folder, |path| crate::command::Origin::CommandsDir { path }),
        );
    }
    search
}

/// A run that ended has nothing to resume: said before its command is looked for.
fn refuse_ended(state: &State) -> Result<(), Failure> {
    match state.status {
        RunStatus::AwaitingConfirmation | RunStatus::Running => Ok(()),
        // Stopped by failed hosts: those hosts (and the ones that never started) run again.
        // Also when a failed host's own rollback failed (exit 5): what is left on it was
        // printed; the hosts that succeeded and the local steps stay as they are.
        RunStatus::Failed | RunStatus::RollbackIncomplete
            if crate::run::fleet::resumable(state) =>
        {
            Ok(())
        }
        other => Err(Failure::usage(format!(
            "run {} already ended ({}); nothing to resume",
            state.run_id,
            other.label()
        ))
        .with_hint(format!("start a new run with `nixcmd /{}`", state.command))),
    }
}

/// Refuses to resume a run while processes of its steps still run: its nixcmd was killed
/// and left them. Resuming would start the interrupted step again beside itself (two
/// `nixos-rebuild switch` at once), and nothing would watch or stop the old one.
fn refuse_left_behind(run_id: &str) -> Result<(), Failure> {
    let mut left = process::left_behind(run_id);
    // Right after a `kill -9` the bash started ahead for the next step (process::prestart)
    // may still be on its way out: it ends on its own within milliseconds, having run
    // nothing. A step's process that really goes on is still there a second later.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while !left.is_empty() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(20));
        left = process::left_behind(run_id);
    }
    if left.is_empty() {
        return Ok(());
    }
    let mut steps: Vec<&str> = Vec::new();
    for p in &left {
        let rest = p.token.strip_prefix(run_id).unwrap_or(&p.token);
        let rest = rest.trim_start_matches('/');
        let step = rest.split(['/', '@']).next().unwrap_or(rest);
        if !steps.contains(&step) {
            steps.push(step);
        }
    }
    let named = steps
        .iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut message = format!(
        "run {run_id} still has processes of step {named} running, left behind when its nixcmd was stopped:"
    );
    for p in left.iter().take(10) {
        message.push_str(&format!("\n  pid {}: {}", p.pid, p.command));
    }
    if left.len() > 10 {
        message.push_str(&format!("\n  … and {} more", left.len() - 10));
    }
    let pids = left
        .iter()
        .map(|p| p.pid.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    Err(Failure::usage(message).with_hint(format!(
        "resuming now would run {named} again beside them; wait for them to end, or stop them \
         (`kill {pids}`), then `nixcmd resume {run_id}`"
    )))
}

/// Refuses to resume a run whose working folder is gone (a checkout removed, a disk not
/// mounted): every block would fail to start there, rollback included, and the run would
/// end for good; refused, it stays resumable once the folder is back.
fn refuse_missing_dir(state: &State) -> Result<(), Failure> {
    let why = match std::fs::metadata(&state.dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => "is no longer a folder".to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "is gone".to_string(),
        Err(e) => format!("cannot be used: {e}"),
    };
    Err(Failure::usage(format!(
        "run {} works in {}, which {why}; nothing was run",
        state.run_id, state.dir
    ))
    .with_hint("bring the folder back (a checkout, a mount), then resume again"))
}

/// The refusal to resume a run whose command file changed; `answer` is what the hint adds to
/// `--force` (` --approve GATE`, ` --decline`, or nothing).
fn refuse_changed(state: &State, answer: &str) -> Failure {
    Failure::usage(format!(
        "the command `{}` changed since run {} started; resuming could run steps that were \
         never planned",
        state.command, state.run_id
    ))
    .with_hint(format!(
        "review the change, then `nixcmd resume {} --force{answer}` to resume anyway",
        state.run_id
    ))
}

/// A run that goes on with a nested run (paused with it, or cut short inside it) resumes that
/// run too, so a change to the nested command's file is refused here, before anything runs,
/// as a change to the run's own file is; else the nested resume refuses in the middle of the
/// block and the parent fails and rolls back.
fn refuse_changed_nested(
    state: &State,
    resolve: &crate::run::nested::Resolver,
    declining: bool,
) -> Result<(), Failure> {
    let Some(wait) = &state.nested_wait else {
        return Ok(());
    };
    let Ok((_, nested)) = records::find_run(&wait.run_id) else {
        // Gone or unreadable: refused by `refuse_lost_nested`; one that recorded nothing
        // yet starts anew, and has no file to have changed.
        return Ok(());
    };
    let changed = match resolve(&wait.command) {
        Some(cmd) => cmd.hash != nested.command_hash,
        None => false,
    };
    if !changed || nested.status == RunStatus::Succeeded {
        return Ok(());
    }
    // Declining, the hint must not say `--approve`: that would run the step being declined.
    let approve = match (&state.status, state.gate_to_approve()) {
        _ if declining => " --decline".to_string(),
        (RunStatus::AwaitingConfirmation, Some(step)) => format!(" --approve {step}"),
        _ => String::new(),
    };
    Err(Failure::usage(format!(
        "the command `{}` changed since run {} started, which run {} goes on with; resuming \
         could run steps that were never planned",
        wait.command, wait.run_id, state.run_id
    ))
    .with_hint(format!(
        "review the change, then `nixcmd resume {} --force{approve}` to resume anyway",
        state.run_id
    )))
}

/// A run that goes on with a nested run whose records are gone or unreadable is refused
/// before anything runs: what that run did is unknown, and its block would fail and roll
/// the parent back. One that recorded nothing yet is started anew by the block.
fn refuse_lost_nested(state: &State, path: &std::path::Path) -> Result<(), Failure> {
    let Some(wait) = &state.nested_wait else {
        return Ok(());
    };
    let crate::run::nested::Recorded::Lost(why) = crate::run::nested::recorded(wait) else {
        return Ok(());
    };
    Err(Failure::usage(format!(
        "run {} goes on with its nested run {} (`/{}` in step `{}`), whose {why}: what that run \
         did is unknown, so nothing was run",
        state.run_id, wait.run_id, wait.command, wait.step_id
    ))
    .with_hint(format!(
        "put back the nested run's records to resume; or check by hand what `/{}` left, and move run {}'s \
         folder {} away to start over with `nixcmd run {}`",
        wait.command,
        state.run_id,
        path.display(),
        state.command
    )))
}

/// Reopens a paused or interrupted run: refuses one that ended, or whose command changed
/// (unless `force`); takes the lock; the interrupted step runs again and a paused gate is
/// asked again.
pub fn prepare_resume(
    cmd: &Command,
    mut state: State,
    path: &std::path::Path,
    force: bool,
    resolve: crate::run::nested::Resolver,
) -> Result<Prepared, Failure> {
    refuse_ended(&state)?;
    // Rewriting a newer nixcmd's records would drop what this one does not know of them.
    if state.version > records::RECORD_VERSION {
        return Err(Failure::usage(format!(
            "run {} was recorded by a newer nixcmd (records version {}; this one writes {}): \
             resuming it here could lose what that version recorded",
            state.run_id,
            state.version,
            records::RECORD_VERSION
        ))
        .with_hint("resume it with the nixcmd that started it (`nixcmd --version`)"));
    }
    if cmd.hash != state.command_hash && !force {
        // A run paused at a gate needs its answer too, or resuming pauses it again.
        let approve = match (&state.status, state.gate_to_approve()) {
            (RunStatus::AwaitingConfirmation, Some(step)) => format!(" --approve {step}"),
            _ => String::new(),
        };
        return Err(refuse_changed(&state, &approve));
    }
    if !force {
        refuse_changed_nested(&state, &resolve, false)?;
    }
    refuse_lost_nested(&state, path)?;
    refuse_missing_dir(&state)?;
    let secrets = config_secrets(&state)?;
    let read_progress = || {
        records::read_progress(path).map_err(|e| {
            // As an unreadable state.json is told (see `records::find_run`): which file, why,
            // and what can still be done.
            let file = path.join("progress.json");
            Failure::usage(format!(
                "the records of run `{}` cannot be read ({}: {e}): which steps ran is unknown, \
             so nothing was run; its logs are in {}",
                state.run_id,
                file.display(),
                path.join("logs").display()
            ))
            .with_hint(format!(
                "`nixcmd log {}` shows what it printed; put back a readable {} to resume it, or \
             move its folder {} away to start over with `nixcmd run {}`",
                state.run_id,
                file.display(),
                path.display(),
                state.command
            ))
        })
    };
    // Looked at before the lock is taken too: a refusal leaves a paused run's lock line as
    // it was (a lock taken and released says the command is free).
    read_progress()?;
    let lock = if state.dry_run {
        None
    } else {
        Some(lock(&state.command, &state.run_id)?)
    };
    refuse_left_behind(&state.run_id)?;
    // The nested run it goes on with, too: resuming it beside its own orphaned step would
    // run that step twice at once.
    if let Some(nested) = &state.nested_wait {
        refuse_left_behind(&nested.run_id)?;
    }
    let run = RunDir::open(&state.run_id)
        .map_err(|e| Failure::usage(format!("cannot open {}: {e}", path.display())))?;
    let mut progress = read_progress()?;
    for step in &mut progress.steps {
        // The interrupted step runs again; a paused gate is asked again.
        if matches!(
            step.status,
            StepStatus::Running | StepStatus::AwaitingConfirmation
        ) {
            step.status = StepStatus::Pending;
        }
    }
    if cmd.hash != state.command_hash {
        // `--force` on a changed file: its steps now are the run's steps.
        progress.follow(cmd);
        state.total_steps = records::total_steps(cmd);
    }
    crate::run::fleet::reset_for_resume(&mut state, &mut progress);
    let bound = crate::run::args::bind(cmd, &state.args, &state.set)?;
    let dir = PathBuf::from(&state.dir);
    state.command_hash = cmd.hash.clone();
    let opts = Options {
        dir,
        dry_run: state.dry_run,
        yes: false,
        approve: Vec::new(),
        approve_channel: "resume".into(),
        decline: None,
        only: state.only.clone(),
        skip: state.skip.clone(),
        from: state.from.clone(),
        env: bound.env,
        grace: GRACE,
        secrets,
        resolve: Some(resolve),
        notices: Lock::notices(lock.as_ref(), &cmd.name, true),
        force,
    };
    Ok(Prepared {
        run,
        state,
        progress: Some(progress),
        opts,
        lock,
    })
}

pub fn runs(cx: &Context, format: TextOrJson, command: Option<&str>) -> Result<Exit, Failure> {
    let (runs, unreadable) = records::scan_runs();
    // On stderr, so that `--format json` stays a list of runs.
    for (path, why) in &unreadable {
        // Nothing else names such a folder (`runs --prune` leaves it): what to do with it.
        let next = if why == records::NO_STATE {
            format!(
                " (a run stopped before it recorded anything, or a folder put there by hand); \
                 see what its logs hold ({}), then remove the folder",
                path.join("logs").display()
            )
        } else {
            String::new()
        };
        cx.out.eprint(&format!(
            "warning: {} is not listed: its {why}{next}\n",
            path.display()
        ));
    }
    let runs: Vec<State> = runs
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| command.is_none_or(|c| s.command == c))
        .collect();
    // A run left `running` by a process that is gone (kill -9, crash, reboot) stopped for good:
    // say so rather than show it running forever.
    let gone = |s: &State| s.status == RunStatus::Running && !records::run_process_alive(s);
    // Processes a killed run's steps left running, by run: one look at /proc, and only when
    // some run was killed. `resume` refuses while they run (see `refuse_left_behind`).
    let mut left: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    if runs.iter().any(gone) {
        let processes = process::step_processes();
        for r in runs.iter().filter(|r| gone(r)) {
            let pids: Vec<i32> = process::of_run(&processes, &r.run_id)
                .map(|p| p.pid)
                .collect();
            if !pids.is_empty() {
                left.insert(&r.run_id, pids);
            }
        }
    }
    if format == TextOrJson::Json {
        let listed: Vec<serde_json::Value> = runs
            .iter()
            .map(|s| {
                let mut v = s.listed();
                if s.status == RunStatus::Running
                    && let Some(o) = v.as_object_mut()
                {
                    o.insert("process_alive".into(), (!gone(s)).into());
                    if gone(s) {
                        let pids = left.get(s.run_id.as_str()).cloned().unwrap_or_default();
                        o.insert("left_running".into(), pids.into());
                    }
                }
                v
            })
            .collect();
        let text =
            serde_json::to_string_pretty(&listed).map_err(|e| Failure::usage(e.to_string()))?;
        cx.out.print(&format!("{text}\n"));
        return Ok(Exit::Success);
    }
    if runs.is_empty() {
        cx.out.print(&match command {
            Some(c) => format!("No runs of `{c}` recorded.\n"),
            None => "No runs recorded yet.\n".to_string(),
        });
        return Ok(Exit::Success);
    }
    let status_of = |r: &State| status_label(r, gone(r));
    let w = runs.iter().map(|s| s.run_id.len()).max().unwrap_or(6);
    // At least the width of the usual labels, so columns stay put from one listing to the
    // next; wider when a label needs it ("prerequisites not met (dry run)").
    let sw = runs
        .iter()
        .map(|r| status_of(r).chars().count())
        .max()
        .unwrap_or(0)
        .max(22);
    let mut s = cx.out.out.bold(&format!(
        "{:<w$}  {:<sw$}  {:<24}  STEP",
        "RUN", "STATUS", "STARTED"
    ));
    s.push('\n');
    for r in &runs {
        let status = status_of(r);
        // Running or paused runs name their current step; finished ones the error, if any.
        let mut step = r
            .current_step
            .clone()
            .or_else(|| r.errors.first().cloned())
            .unwrap_or_default();
        // Paused with a nested run: the gate `--approve` names is that run's.
        if let Some(w) = &r.nested_wait
            && let Some(gate) = &w.gate
            && r.status == RunStatus::AwaitingConfirmation
        {
            step = format!("{step} (/{} {} waits at {gate})", w.command, w.run_id);
        }
        if gone(r) {
            let pids = left.get(r.run_id.as_str()).map_or(&[][..], Vec::as_slice);
            step = format!("{step} {}", killed_note(&r.run_id, pids))
                .trim_start()
                .to_string();
        }
        let line = format!(
            "{:<w$}  {:<sw$}  {:<24}  {step}",
            r.run_id, status, r.started
        );
        s.push_str(line.trim_end());
        s.push('\n');
    }
    cx.out.print(&s);
    Ok(Exit::Success)
}

pub fn log(cx: &Context, run: &str, step: Option<&str>) -> Result<Exit, Failure> {
    let (run_path, state) = records::find_run(run).map_err(Failure::usage)?;
    // Messages name the run, not what it was called by (`last`, a prefix).
    let run = state.run_id.as_str();
    let logs = run_path.join("logs");
    refuse_unreadable_logs(&logs)?;
    let present = present_logs(&run_path);
    // Logs are streamed, not read whole: a chatty step's log can be gigabytes.
    let copy = |file: &mut std::fs::File, path: &std::path::Path| {
        cx.out
            .print_from(file)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
    };
    // A log that cannot be read (a FIFO in its place) is said once the others are printed.
    let mut unreadable: Option<Failure> = None;
    let mut print_all = |names: &mut dyn Iterator<Item = &String>| -> Result<(), Failure> {
        for n in names {
            let path = logs.join(format!("{n}.log"));
            let mut file = match crate::records_io::open_record(&path) {
                Ok(file) => file,
                // Removed since the listing.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    unreadable.get_or_insert(unreadable_log(&path, &e));
                    continue;
                }
            };
            cx.out.print(&log_header(cx, n));
            copy(&mut file, &path)?;
        }
        Ok(())
    };
    match step {
        Some(step) if present.iter().any(|n| n == step) => {
            let path = logs.join(format!("{step}.log"));
            let mut file = crate::records_io::open_record(&path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    no_log(&run_path, run, step, &present)
                } else {
                    unreadable_log(&path, &e)
                }
            })?;
            copy(&mut file, &path)?;
        }
        // A fan-out step has a log per host (`<step>@<host>`) and none of its own: its hosts'
        // logs, each after its header.
        Some(step) if present.iter().any(|n| is_host_log_of(n, step)) => {
            print_all(&mut present.iter().filter(|n| is_host_log_of(n, step)))?;
        }
        Some(step) => return Err(no_log(&run_path, run, step, &present)),
        // Paused at its first gate, or ended before any step: said, instead of nothing.
        None if present.is_empty() && state.status != RunStatus::Running => {
            let ending = crate::run::follow::ending(&state, &run_path);
            cx.out
                .eprint(&format!("no step of run {run} has a log; {ending}\n"));
        }
        None => print_all(&mut present.iter())?,
    }
    match unreadable {
        Some(failure) => Err(failure),
        None => Ok(Exit::Success),
    }
}

/// A step's log that exists but cannot be read as one (a FIFO or a folder in its place, no
/// permission): which file, why, and what to do.
pub fn unreadable_log(path: &std::path::Path, e: &std::io::Error) -> Failure {
    Failure::usage(format!("cannot read {}: {e}", path.display())).with_hint(
        "nixcmd writes each step's log as a plain file: move this one away to see the others, \
         or read it as the user who ran the command",
    )
}

/// A `logs` folder that cannot be read: said, with why, rather than "no log" or nothing at
/// all (it was printed as an empty run). A missing one is a run with no logs yet.
pub fn refuse_unreadable_logs(logs: &std::path::Path) -> Result<(), Failure> {
    match std::fs::read_dir(logs) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            let why = crate::io_error::why(&e, crate::io_error::Expected::Folder);
            Err(
                Failure::usage(format!("cannot read {}: {why}", logs.display())).with_hint(
                    "run nixcmd as the user who ran the command, or give that user read access \
                     to the run folder",
                ),
            )
        }
        _ => Ok(()),
    }
}

/// What to do about a run whose nixcmd was killed, `(…)`: resume it, or first wait for the
/// processes `pids` its step left running (`resume` refuses while they run).
pub fn killed_note(run_id: &str, pids: &[i32]) -> String {
    if pids.is_empty() {
        return format!("(nixcmd was killed: `nixcmd resume {run_id}`)");
    }
    let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
    format!(
        "(nixcmd was killed; its step still runs: pid {}; `nixcmd resume {run_id}` once it ends)",
        pids.join(" ")
    )
}

/// The names of the step logs of the run at `path` (`logs/<name>.log`), in the order `log`
/// prints them: the steps in `progress.json` order, then the others (rollback blocks, fan-out
/// hosts' `<step>@<host>`) by name.
pub fn present_logs(path: &std::path::Path) -> Vec<String> {
    let progress = records::read_progress(path).unwrap_or_default();
    let logs = path.join("logs");
    let mut names: Vec<String> = progress.steps.iter().map(|s| s.id.clone()).collect();
    let mut extra: Vec<String> = log_names(&logs)
        .into_iter()
        .filter(|n| !names.contains(n))
        .collect();
    extra.sort();
    names.extend(extra);
    // Whatever is there, not only files: one that is not a log is said when it is read.
    names
        .into_iter()
        .filter(|n| logs.join(format!("{n}.log")).exists())
        .collect()
}

/// Whether the log `name` is one host's log of the fan-out step `step` (`<step>@<host>`).
pub fn is_host_log_of(name: &str, step: &str) -> bool {
    !step.contains('@')
        && name
            .strip_prefix(step)
            .is_some_and(|rest| rest.starts_with('@'))
}

/// The names of the `<name>.log` files in a run's `logs` folder, in directory order (none
/// when it cannot be read).
pub fn log_names(logs: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(logs) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".log")
                .map(str::to_string)
        })
        .collect()
}

/// `==> name <==`, the line before each step's log when `log` prints several.
pub fn log_header(cx: &Context, name: &str) -> String {
    format!("{}\n", cx.out.out.bold(&format!("==> {name} <==")))
}

/// The run at `path` has no log for `step` (`present`: the logs it has, for the hint). A step
/// it skipped has none: that is said, with why (`progress.json`), rather than left to guess.
pub fn no_log(path: &std::path::Path, run: &str, step: &str, present: &[String]) -> Failure {
    let hint = crate::suggest::closest(step, present.iter().map(String::as_str))
        .map(|s| format!("did you mean `{s}`?"))
        .unwrap_or_else(|| format!("logs: {}", present.join(", ")));
    let progress = records::read_progress(path).unwrap_or_default();
    let skipped = match progress.get(step) {
        Some(p) if p.status == StepStatus::Skipped => match &p.reason {
            Some(why) => format!(": it was skipped ({why})"),
            None => ": it was skipped".to_string(),
        },
        _ => String::new(),
    };
    Failure::usage(format!("run {run} has no log for step `{step}`{skipped}")).with_hint(hint)
}

/// A run's status as `runs` shows it: `stopped` for a run left `running` by a nixcmd that is
/// `gone`, and dry runs marked.
pub fn status_label(state: &State, gone: bool) -> String {
    let label = if gone {
        "stopped"
    } else {
        state.status.label()
    };
    if state.dry_run {
        format!("{label} (dry run)")
    } else {
        label.to_string()
    }
}

#[derive(serde::Serialize, Default)]
struct CommandStats {
    runs: usize,
    succeeded: usize,
    success_rate: f64,
    mean_duration_ms: u64,
    steps: BTreeMap<String, StepStats>,
}

#[derive(serde::Serialize, Default)]
struct StepStats {
    runs: usize,
    failures: usize,
    mean_duration_ms: u64,
}

pub fn stats(cx: &Context, format: TextOrJson) -> Result<Exit, Failure> {
    let mut by_command: BTreeMap<String, CommandStats> = BTreeMap::new();
    let mut durations: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut step_durations: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for (path, state) in records::all_runs() {
        if state.dry_run
            || state.status == RunStatus::Running
            || state.status == RunStatus::AwaitingConfirmation
        {
            continue;
        }
        let c = by_command.entry(state.command.clone()).or_default();
        c.runs += 1;
        if state.status == RunStatus::Succeeded {
            c.succeeded += 1;
        }
        if let (Ok(start), Some(Ok(end))) = (
            state.started.parse::<jiff::Timestamp>(),
            state
                .completed
                .as_deref()
                .map(str::parse::<jiff::Timestamp>),
        ) {
            let ms = end.duration_since(start).as_millis().max(0) as u64;
            durations.entry(state.command.clone()).or_default().push(ms);
        }
        for step in records::read_progress(&path).unwrap_or_default().steps {
            if step.attempts == 0 {
                continue;
            }
            let s = c.steps.entry(step.id.clone()).or_default();
            s.runs += 1;
            if step.status.is_failure() {
                s.failures += 1;
            }
            if let Some(d) = step.duration_ms {
                step_durations
                    .entry((state.command.clone(), step.id.clone()))
                    .or_default()
                    .push(d);
            }
        }
    }
    let mean = |v: &[u64]| {
        if v.is_empty() {
            0
        } else {
            v.iter().sum::<u64>() / v.len() as u64
        }
    };
    for (name, c) in &mut by_command {
        c.success_rate = if c.runs == 0 {
            0.0
        } else {
            c.succeeded as f64 / c.runs as f64
        };
        c.mean_duration_ms = mean(durations.get(name).map(Vec::as_slice).unwrap_or(&[]));
        for (step, s) in &mut c.steps {
            s.mean_duration_ms = mean(
                step_durations
                    .get(&(name.clone(), step.clone()))
                    .map(Vec::as_slice)
                    .unwrap_or(&[]),
            );
        }
    }
    if format == TextOrJson::Json {
        let text =
            serde_json::to_string_pretty(&by_command).map_err(|e| Failure::usage(e.to_string()))?;
        cx.out.print(&format!("{text}\n"));
        return Ok(Exit::Success);
    }
    if by_command.is_empty() {
        cx.out.print("No finished runs recorded yet.\n");
        return Ok(Exit::Success);
    }
    let p = cx.out.out;
    let mut s = String::new();
    for (name, c) in &by_command {
        s.push_str(&format!(
            "{}  {} run{}, {:.0}% succeeded, mean {}\n",
            p.bold(name),
            c.runs,
            if c.runs == 1 { "" } else { "s" },
            c.success_rate * 100.0,
            display(Duration::from_millis(c.mean_duration_ms))
        ));
        for (step, st) in &c.steps {
            s.push_str(&format!(
                "  {step:<24} {} run{}, {} failed, mean {}\n",
                st.runs,
                if st.runs == 1 { "" } else { "s" },
                st.failures,
                display(Duration::from_millis(st.mean_duration_ms))
            ));
        }
    }
    cx.out.print(&s);
    Ok(Exit::Success)
}
