//! Nested commands: a block of a guided file whose lines are `/other-command args` runs those
//! commands as nested runs, each with its own record, lock and gates. Their events reach the
//! parent run as output lines of the parent step.

use crate::command::{Block, Command};
use crate::event::{Event, EventKind, RunStatus, Sink, StepStatus, now};
use crate::exit::Exit;
use crate::records_io::LogFile;
use crate::run::engine::{BlockResult, Engine, Options, Outcome, step_started};
use crate::run::records::{NestedWait, RunDir};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// Finds a command by name for a nested run (the CLI passes the search path's lookup).
pub type Resolver = Arc<dyn Fn(&str) -> Option<Command> + Send + Sync>;

/// What a block asks for, when it is made of slash-command lines.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Not a nested block: run it as shell.
    Shell,
    /// Every line is a slash command, a comment or blank: run these in order.
    Nested(Vec<(String, Vec<String>)>),
    /// Cannot run as written; the reason says why.
    NotRunnable(String),
}

pub fn plan(block: &Block, resolve: Option<&Resolver>) -> Plan {
    if block.nested.is_empty() {
        return Plan::Shell;
    }
    let shell_lines = block
        .code
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('/'))
        .count();
    if shell_lines > 0 {
        return Plan::NotRunnable(
            "the block mixes shell lines with slash commands; split them into separate blocks"
                .into(),
        );
    }
    let Some(resolve) = resolve else {
        return Plan::NotRunnable("nested commands cannot be looked up here".into());
    };
    for n in &block.nested {
        if resolve(&n.name).is_none() {
            return Plan::NotRunnable(format!("`/{}` is not a command nixcmd can find", n.name));
        }
    }
    Plan::Nested(
        block
            .nested
            .iter()
            .map(|n| (n.name.clone(), n.args.clone()))
            .collect(),
    )
}

/// What the records hold of the nested run a parent goes on with (its `nested_wait`).
pub enum Recorded {
    /// Its folder and `state.json`: it is resumed.
    Run,
    /// Its folder holds nothing it recorded ([`crate::run::records::recorded_nothing`]): the
    /// parent's nixcmd stopped between recording it and its first record, so nothing of it
    /// ran and the parent's block starts the command anew.
    Nothing,
    /// Gone or unreadable (said after "whose"): what it did is unknown.
    Lost(String),
}

/// What is recorded of the nested run `wait` names.
pub fn recorded(wait: &NestedWait) -> Recorded {
    use crate::run::records::{read_state, recorded_nothing, runs_dir};
    // A hand-edited id must not name a folder outside the runs.
    let path = runs_dir().join(&wait.run_id);
    if wait.run_id.is_empty() || wait.run_id.contains('/') || wait.run_id.starts_with('.') {
        return Recorded::Lost(format!("id `{}` names no run folder", wait.run_id));
    }
    match read_state(&path) {
        Ok(_) => Recorded::Run,
        Err(_) if recorded_nothing(&path) => Recorded::Nothing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.exists() => {
            Recorded::Lost(format!("folder {} is gone", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Recorded::Lost(format!("folder {} has no state.json", path.display()))
        }
        Err(e) => Recorded::Lost(format!(
            "records cannot be read ({}: {e})",
            path.join("state.json").display()
        )),
    }
}

/// What a nested run passes up to the parent step.
pub enum Forwarded {
    /// An output line of the parent step (an event of the nested run, told as a line).
    Line(String),
    /// The newest state of a line a nested step is still printing (see [`Sink::progress`]):
    /// the parent's live line and heartbeat show it as they show the nested run's lines.
    Progress(String),
    /// The nested run stopped at this gate (its step id and question), nobody could answer.
    Gate { gate_id: String, message: String },
}

/// Passes a nested run's events to the parent as output lines of the parent step.
pub struct Forward<F: FnMut(Forwarded) + Send> {
    pub name: String,
    pub push: F,
}

impl<F: FnMut(Forwarded) + Send> Sink for Forward<F> {
    /// As its output lines are told (the host left out as there).
    fn progress(&mut self, step_id: &str, _: Option<&str>, text: &str) {
        let n = &self.name;
        (self.push)(Forwarded::Progress(format!("[/{n}] {step_id} │ {text}")));
    }

    fn event(&mut self, event: &Event, _: &str) {
        let n = &self.name;
        let line = match &event.kind {
            EventKind::RunStarted { .. } => format!("[/{n}] started as run {}", event.run_id),
            EventKind::StepFinished {
                step_id, status, ..
            } => format!("[/{n}] {step_id}: {}", status.label()),
            EventKind::Output { step_id, line, .. } => format!("[/{n}] {step_id} │ {line}"),
            EventKind::Warning { message, .. } => format!("[/{n}] warning: {message}"),
            EventKind::Gate {
                gate_id,
                message,
                resume,
                ..
            } => {
                (self.push)(Forwarded::Line(format!(
                    "[/{n}] paused: {message} ({resume})"
                )));
                (self.push)(Forwarded::Gate {
                    gate_id: gate_id.clone(),
                    message: message.clone(),
                });
                return;
            }
            EventKind::RollbackStarted { reason, .. } => format!("[/{n}] rolling back: {reason}"),
            EventKind::RunFinished {
                status, exit_code, ..
            } => {
                format!("[/{n}] {} (exit {exit_code})", status.label())
            }
            EventKind::StepStarted { .. } => return,
        };
        (self.push)(Forwarded::Line(line));
    }
}

/// How a nested run ended, with the gate it stopped at when it paused (its id and question).
struct NestedEnd {
    outcome: Outcome,
    gate: Option<(String, String)>,
}

impl Engine<'_> {
    /// Runs the slash commands of a guided block as nested runs, one after the other. A
    /// nested run that stops at a gate nobody can answer pauses this run too (the block ends
    /// `AwaitingConfirmation`, see [`crate::run::records::State::nested_wait`]); resumed, the
    /// block goes on from that nested run, resumed where it stopped.
    pub(super) fn run_nested(
        &mut self,
        block: &Block,
        list: &[(String, Vec<String>)],
        lenient: bool,
    ) -> BlockResult {
        let started_at = Instant::now();
        // The nested run this block was in when this run paused or its nixcmd died: it goes
        // on from there. Kept in the records until a nested run ends, and replaced by each
        // one that starts, so a `kill -9` at any moment leaves the one to resume.
        let waiting = self
            .state
            .nested_wait
            .clone()
            .filter(|w| w.step_id == block.id);
        if waiting.is_none() {
            self.state.nested_wait = None;
        }
        self.emit(step_started(block, 1, None, None));
        if let Some(p) = self.progress.get_mut(&block.id) {
            p.status = StepStatus::Running;
            p.attempts = 1;
            p.started.get_or_insert_with(now);
        }
        self.save();
        // The lines the nested runs tell (their events as the parent's output) are this
        // block's log, as a shell block's output is its log.
        let log_path = self.run.log_path(&block.id);
        let mut log = match self.run.open_log(&log_path) {
            Ok(f) => Some(LogFile::new(f)),
            Err(e) => {
                self.em.record_failed(&log_path, &e);
                None
            }
        };
        if let Some(log) = log.as_mut() {
            let _ = writeln!(log, "── {} attempt 1/1 at {} ──", block.id, now());
        }
        let mut tail = Vec::new();
        let mut status = StepStatus::Succeeded;
        let mut reason = None;
        for (i, (name, args)) in list.iter().enumerate() {
            let resumed = match &waiting {
                Some(w) if i < w.line => {
                    tail.push(format!("/{name}: succeeded before the pause"));
                    continue;
                }
                // The same line and the same command: after `resume --force` of a changed
                // file, that line may call another command, which must start anew.
                Some(w) if i == w.line && w.command == *name => Some(w),
                _ => None,
            };
            // Recorded, but this run's nixcmd stopped before the nested run's first record:
            // nothing of it ran, and it starts anew (its empty folder goes).
            let resumed = match resumed.map(|w| (w, recorded(w))) {
                Some((w, Recorded::Nothing)) => {
                    crate::run::records::remove_recorded_nothing(
                        &crate::run::records::runs_dir().join(&w.run_id),
                    );
                    let line = format!(
                        "[/{name}] run {} recorded nothing before this run's nixcmd stopped: \
                         /{name} starts anew",
                        w.run_id
                    );
                    if let Some(log) = log.as_mut() {
                        let _ = writeln!(log, "{line}");
                    }
                    self.emit(EventKind::Output {
                        step_id: block.id.clone(),
                        host: None,
                        stream: "stdout".into(),
                        line,
                    });
                    None
                }
                other => other.map(|(w, _)| w),
            };
            let Some(cmd) = self.opts.resolve.as_ref().and_then(|r| r(name)) else {
                status = StepStatus::NotRunnable;
                reason = Some(format!("`/{name}` is not a command nixcmd can find"));
                break;
            };
            let ended = match resumed {
                Some(w) => {
                    // Its gate is being answered now.
                    if let Some(current) = self.state.nested_wait.as_mut() {
                        current.gate = None;
                        current.message = None;
                    }
                    self.save();
                    self.resume_nested(block, &cmd, w, &mut log)
                }
                None => self.nested_run(block, i, &cmd, args, &mut log),
            };
            let paused = matches!(&ended, Ok(e) if e.outcome.status == RunStatus::AwaitingConfirmation
                && e.gate.is_some()
                && self.finishing.is_none());
            if !paused {
                self.state.nested_wait = None;
            }
            match ended {
                Ok(e) if e.outcome.exit == Exit::Success => {
                    tail.push(format!("/{name}: succeeded (run {})", e.outcome.run_id))
                }
                // Rollback and `always` blocks do not pause: there the nested run's pause
                // ends the block as failed, as any block that cannot finish.
                Ok(NestedEnd {
                    outcome,
                    gate: Some((gate, message)),
                }) if paused => {
                    tail.push(format!(
                        "/{name}: paused at `{gate}` (run {})",
                        outcome.run_id
                    ));
                    self.close_nested_log(&log_path, log);
                    self.state.nested_wait = Some(NestedWait {
                        step_id: block.id.clone(),
                        line: i,
                        command: name.clone(),
                        run_id: outcome.run_id,
                        gate: Some(gate),
                        message: Some(message),
                    });
                    return BlockResult {
                        status: StepStatus::AwaitingConfirmation,
                        tail,
                    };
                }
                Ok(e) => {
                    let o = e.outcome;
                    status = match o.status {
                        RunStatus::Declined => StepStatus::Declined,
                        _ if o.exit == Exit::Interrupted => StepStatus::Interrupted,
                        _ => StepStatus::Failed,
                    };
                    reason = Some(format!(
                        "nested run /{name} ended {} (exit {}, run {})",
                        o.status.label(),
                        o.exit.code(),
                        o.run_id
                    ));
                    break;
                }
                Err(e) => {
                    status = StepStatus::NotRunnable;
                    reason = Some(format!("/{name}: {e}"));
                    break;
                }
            }
        }
        if let Some(r) = &reason {
            tail.push(r.clone());
            if let Some(log) = log.as_mut() {
                let _ = writeln!(log, "{r}");
            }
        }
        self.close_nested_log(&log_path, log);
        let status = self.finish_block(
            block,
            status,
            None,
            reason,
            1,
            started_at.elapsed(),
            lenient,
            None,
        );
        BlockResult { status, tail }
    }

    /// One nested run: its own record and lock (so `/a` calling `/a` is refused), the parent's
    /// approver (so its gates ask the same person), events forwarded as the step's output.
    fn nested_run(
        &mut self,
        block: &Block,
        line: usize,
        cmd: &Command,
        args: &[String],
        log: &mut Option<LogFile>,
    ) -> Result<NestedEnd, String> {
        use crate::run::records::{Lock, State, new_run_id};
        let bound = crate::run::args::bind(cmd, args, &[]).map_err(|f| f.message)?;
        let run_id = new_run_id(&cmd.name);
        let lock = Lock::acquire(&cmd.name, &run_id).map_err(|e| lock_refusal(cmd, e))?;
        let run = RunDir::create(&run_id).map_err(|e| e.to_string())?;
        let state = State::new(&run_id, cmd, args, &[], &self.opts.dir, self.opts.dry_run);
        // Recorded before it starts: a resume after this run's nixcmd died goes on with it.
        self.state.nested_wait = Some(NestedWait {
            step_id: block.id.clone(),
            line,
            command: cmd.name.clone(),
            run_id: run_id.clone(),
            gate: None,
            message: None,
        });
        self.save();
        let opts = Options {
            dir: self.opts.dir.clone(),
            dry_run: self.opts.dry_run,
            yes: self.opts.yes,
            approve: Vec::new(),
            approve_channel: self.opts.approve_channel.clone(),
            decline: None,
            only: Vec::new(),
            skip: Vec::new(),
            from: None,
            env: bound.env,
            grace: self.opts.grace,
            secrets: self.opts.secrets.clone(),
            resolve: self.opts.resolve.clone(),
            notices: Lock::notices(Some(&lock), &cmd.name, false),
            force: false,
        };
        Ok(self.nested_engine(block, cmd, opts, run, state, None, Some(lock), log))
    }

    /// Resumes the nested run this run paused with, passing on the answer `resume` was given
    /// for its gate (`--approve GATE`, or `--decline`). A nested run that was resumed by hand
    /// in between and succeeded counts as done; one that ended otherwise ends the block.
    fn resume_nested(
        &mut self,
        block: &Block,
        cmd: &Command,
        wait: &NestedWait,
        log: &mut Option<LogFile>,
    ) -> Result<NestedEnd, String> {
        let (path, state) = crate::run::records::find_run(&wait.run_id)?;
        if state.status == RunStatus::Succeeded {
            return Ok(NestedEnd {
                outcome: Outcome {
                    status: RunStatus::Succeeded,
                    exit: Exit::Success,
                    run_id: wait.run_id.clone(),
                },
                gate: None,
            });
        }
        let resolve = self
            .opts
            .resolve
            .clone()
            .ok_or("nested commands cannot be looked up here")?;
        let mut prepared =
            crate::run::commands::prepare_resume(cmd, state, &path, self.opts.force, resolve)
                .map_err(|f| match f.hint {
                    Some(hint) => format!("{} ({hint})", f.message),
                    None => f.message,
                })?;
        prepared.opts.yes = self.opts.yes;
        prepared.opts.approve = self.opts.approve.clone();
        prepared.opts.approve_channel = self.opts.approve_channel.clone();
        if self.opts.decline.as_deref() == Some(wait.step_id.as_str()) {
            prepared.opts.decline = wait.gate.clone();
        }
        Ok(self.nested_engine(
            block,
            cmd,
            prepared.opts,
            prepared.run,
            prepared.state,
            prepared.progress,
            prepared.lock,
            log,
        ))
    }

    /// Runs a nested engine to its end with this run's approver and cancel, its events told
    /// as output lines of `block`. A nested run that pauses leaves its lock saying so, as a
    /// paused top-level run does: no other run of that command starts in between.
    #[allow(clippy::too_many_arguments)]
    fn nested_engine(
        &mut self,
        block: &Block,
        cmd: &Command,
        opts: Options,
        run: RunDir,
        state: crate::run::records::State,
        progress: Option<crate::run::records::Progress>,
        mut lock: Option<crate::run::records::Lock>,
        log: &mut Option<LogFile>,
    ) -> NestedEnd {
        let Engine {
            em,
            approver,
            cancel,
            ..
        } = self;
        let step_id = block.id.clone();
        let mut gate = None;
        let forward = Forward {
            name: cmd.name.clone(),
            push: |forwarded| match forwarded {
                Forwarded::Line(line) => {
                    // Redacted with this run's secrets too (its exports, its settings): the
                    // nested run redacts only those it knows. The events are redacted as
                    // they are emitted; the log line was written as it came.
                    let line = em.redactor.redact_owned(line);
                    if let Some(log) = log.as_mut() {
                        let _ = writeln!(log, "{line}");
                    }
                    em.emit(EventKind::Output {
                        step_id: step_id.clone(),
                        host: None,
                        stream: "stdout".into(),
                        line,
                    })
                }
                Forwarded::Progress(text) => em.progress(&step_id, None, &text),
                Forwarded::Gate { gate_id, message } => gate = Some((gate_id, message)),
            },
        };
        let nested = Engine::new(
            cmd,
            opts,
            run,
            state,
            progress,
            vec![Box::new(forward)],
            &mut **approver,
            cancel.clone(),
        );
        let outcome = nested.execute();
        if outcome.status == RunStatus::AwaitingConfirmation
            && let Some(lock) = lock.as_mut()
        {
            lock.leave_paused();
        }
        drop(lock);
        NestedEnd { outcome, gate }
    }
}

impl Engine<'_> {
    /// Closes a nested block's log, saying once if a write to it failed.
    fn close_nested_log(&mut self, path: &std::path::Path, log: Option<LogFile>) {
        if let Some(mut log) = log
            && let Some(e) = log.take_error()
        {
            self.em.record_failed(path, &e);
        }
    }
}

fn lock_refusal(cmd: &Command, e: crate::run::records::LockError) -> String {
    use crate::run::records::LockError;
    match e {
        LockError::Held { holder } => {
            format!("another run of `{}` is in progress: {holder}", cmd.name)
        }
        LockError::Paused { run_id, step } => format!(
            "run {run_id} of `{}` is paused at step `{step}`: resume it (`--approve` or \
             `--decline`) first",
            cmd.name
        ),
        LockError::Io(path, e) | LockError::NotAFile(path, e) => {
            format!("{}: {e}", path.display())
        }
    }
}
