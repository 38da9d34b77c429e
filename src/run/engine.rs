//! The executor: runs a command's blocks in order with their gates (DESIGN.md §2) —
//! prerequisites, steps, success criteria; confirmations; retries and timeouts; compensations
//! newest first, unbound rollback blocks, `always` blocks — and emits events for everything.
//! It prints nothing: renderers and the records are event sinks. One block on this machine
//! is `step`; on other hosts `fanout`; slash-command blocks `nested`.

use crate::command::{Block, Command, Phase};
use crate::event::{Event, EventKind, PlanItem, RunStatus, Sink, StepStatus, Troubleshooting, now};
use crate::exit::Exit;
use crate::process::Cancel;
use crate::run::approve::{Answer, Approver, GateRequest};
use crate::run::records::{Approval, History, Progress, RunDir, State, StepProgress};
use crate::run::redact::Redactor;
use crate::run::shield::Finishing;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Default per-attempt timeout when neither the block nor the frontmatter sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default base of the retry backoff.
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Lines of a failed step's log shown at the end of a run.
pub const TAIL_LINES: usize = 20;

/// Everything the engine needs besides the command.
pub struct Options {
    pub dir: PathBuf,
    pub dry_run: bool,
    pub yes: bool,
    pub approve: Vec<String>,
    /// The channel recorded for `--yes`/`--approve` approvals.
    pub approve_channel: String,
    /// `nixcmd resume --decline`: the gate of this block, which the run is paused at, is
    /// declined before anything runs.
    pub decline: Option<String>,
    pub only: Vec<String>,
    pub skip: Vec<String>,
    pub from: Option<String>,
    /// Environment from arguments and `--set`.
    pub env: Vec<(String, String)>,
    /// Time between SIGINT, SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Extra secret names (from the config file).
    pub secrets: Vec<String>,
    /// Looks up commands for nested runs (`/other-command` lines of guided files).
    pub resolve: Option<crate::run::nested::Resolver>,
    /// Warnings given as the run starts (the run of the command before was cut short).
    pub notices: Vec<String>,
    /// `nixcmd resume --force`: passed on to the nested run this run goes on with, whose
    /// command may have changed too.
    pub force: bool,
}

/// What a finished (or paused) run reports.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: RunStatus,
    pub exit: Exit,
    pub run_id: String,
}

/// How one block ended.
pub(super) struct BlockResult {
    pub(super) status: StepStatus,
    pub(super) tail: Vec<String>,
}

/// Numbers, redacts, records and fans out events. A field of its own so that a running
/// step's output callback can emit while the engine's other fields are borrowed.
pub(super) struct Emitter<'a> {
    seq: u64,
    run_id: String,
    pub(super) redactor: Redactor,
    /// `None` when `events.ndjson` could not be opened: the run goes on (its state and
    /// progress files and the sinks still see everything) and says so in a warning.
    events: Option<std::fs::File>,
    sinks: Vec<Box<dyn Sink + 'a>>,
    /// Event lines gathered while [`Emitter::hold`] is in force (the output lines of one read
    /// of a step's pipe), written to `events.ndjson` in one call by [`Emitter::release`].
    held: Option<Vec<u8>>,
    /// The buffer of the last hold, emptied.
    spare: Vec<u8>,
    /// The warning given when a write to the run's output records (`events.ndjson`, a step's
    /// log) first failed: given once, and listed again in the run's end.
    pub(super) lost: Option<String>,
    events_path: std::path::PathBuf,
    /// The ends of pieces of over-long lines held back, lest a secret across a cut show.
    straddles: crate::run::redact::Straddles,
}

impl Emitter<'_> {
    /// An output line or piece of one (`cut`, see [`crate::process::Observed::Cut`]) of a
    /// step, redacted: what to record and show of it, if anything.
    pub(super) fn output_text(
        &mut self,
        step_id: &str,
        host: Option<&str>,
        stream: crate::process::Stream,
        line: &str,
        cut: bool,
    ) -> Option<String> {
        self.straddles
            .piece(&self.redactor, step_id, host, stream, line, cut)
    }

    /// [`Emitter::progress`] of the newest part of a step's line on `stream`: a secret begun
    /// in a piece held back (see [`Emitter::output_text`]) does not show by its end.
    pub(super) fn stream_progress(
        &mut self,
        step_id: &str,
        host: Option<&str>,
        stream: crate::process::Stream,
        text: &str,
    ) {
        let text = self
            .straddles
            .progress(&self.redactor, step_id, host, stream, text);
        self.progress(step_id, host, &text);
    }

    /// From now on event lines are gathered instead of written one by one (the sinks still
    /// see each event at once, and are flushed at the release). A crash loses at most what
    /// was gathered, never part of a line: [`Emitter::release`] writes whole lines.
    pub(super) fn hold(&mut self) {
        if self.held.is_none() {
            self.held = Some(std::mem::take(&mut self.spare));
        }
    }

    /// Whether event lines are being gathered (see [`Emitter::hold`]).
    pub(super) fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// Says, once, that a file of the run's output records cannot be written (a full disk, a
    /// file size limit). The run goes on, since what `resume` needs is in `state.json` and
    /// `progress.json` (their failures stop the run, see `Engine::note_records`), but output
    /// missing from the records must not go unsaid.
    pub(super) fn record_failed(&mut self, path: &std::path::Path, e: &std::io::Error) {
        if self.lost.is_some() {
            return;
        }
        let message = format!(
            "{} cannot be written ({e}): the run's records miss output from here on; the run \
             goes on",
            path.display()
        );
        self.lost = Some(message.clone());
        self.emit(EventKind::Warning {
            step_id: None,
            message,
        });
    }

    /// Writes what [`Emitter::hold`] gathered, in one call, and writes each event again as
    /// it comes.
    pub(super) fn release(&mut self) {
        if let Some(mut held) = self.held.take() {
            if !held.is_empty()
                && let Some(events) = self.events.as_mut()
                && let Err(e) = events.write_all(&held)
            {
                let path = self.events_path.clone();
                self.record_failed(&path, &e);
            }
            // Kept for the next read: hundreds of kilobytes per read, otherwise mapped and
            // unmapped each time.
            held.clear();
            self.spare = held;
        }
        for sink in &mut self.sinks {
            sink.flush();
        }
    }

    /// Passes a progress segment (see [`Sink::progress`]) to the sinks, redacted; a secret
    /// being printed may be cut at its end, so a start of a secret there is cut off too.
    pub(super) fn progress(&mut self, step_id: &str, host: Option<&str>, text: &str) {
        let text = self.redactor.redact_progress(text);
        for sink in &mut self.sinks {
            sink.progress(step_id, host, &text);
        }
    }

    pub(super) fn emit(&mut self, kind: EventKind) {
        self.seq += 1;
        let event = Event {
            seq: self.seq,
            ts: now(),
            run_id: self.run_id.clone(),
            kind,
        };
        let line = serde_json::to_string(&event).unwrap_or_default();
        let mut line = self.redactor.redact_json(line);
        // One write per line: a crash leaves at most a torn last line, which readers skip.
        // The newline goes on the line itself (no second copy), and off again for the sinks.
        line.push('\n');
        let mut failed = None;
        match (self.events.as_mut(), self.held.as_mut()) {
            (Some(_), Some(held)) => held.extend_from_slice(line.as_bytes()),
            (Some(events), None) => failed = events.write_all(line.as_bytes()).err(),
            (None, _) => {}
        }
        line.pop();
        let held = self.held.is_some();
        for sink in &mut self.sinks {
            sink.event(&event, &line);
            if !held {
                sink.flush();
            }
        }
        if let Some(e) = failed {
            let path = self.events_path.clone();
            self.record_failed(&path, &e);
        }
    }
}

pub struct Engine<'a> {
    pub(super) cmd: &'a Command,
    pub(super) opts: Options,
    pub(super) run: RunDir,
    pub state: State,
    pub(super) progress: Progress,
    pub(super) approver: &'a mut dyn Approver,
    pub(super) cancel: Cancel,
    pub(super) em: Emitter<'a>,
    pub(super) history: History,
    pub(super) warnings: Vec<String>,
    pub(super) started: Instant,
    pub(super) resumed: bool,
    pub(super) fleet: crate::run::fanout::Fleet,
    /// Why the run's records could not be written, from the first failure on. No block
    /// starts after that: `resume` decides from those records what ran, and a run that cannot
    /// keep them goes on blind.
    pub(super) records_error: Option<String>,
    /// Whether the run said that its terminal hung up (see [`crate::process::hung_up`]).
    hangup_noted: bool,
    /// The `$NIXCMD_ENV` problems already warned about, with their host (`None`: this
    /// machine): the file is read after every step, and each bad line is told once.
    pub(super) env_warned: std::collections::HashSet<(Option<String>, String)>,
    /// Set while rollback or `always` blocks run (see [`crate::run::shield`]).
    pub(super) finishing: Option<Finishing>,
    /// The step that comes after the one about to run, when nothing but that one's failure
    /// can keep it from running: its script is written while the one before runs.
    pub(super) up_next: Option<&'a Block>,
    /// The step made ready ahead (see `up_next`) that has not run yet.
    pub(super) ahead: Option<crate::run::step::Ahead>,
    /// The step recorded as started in the same progress.json write as the end of the step
    /// before it (see [`Engine::pre_start`]), with its entry as it was before: put back if the
    /// step does not start after all.
    pub(super) pre_started: Option<crate::run::records::StepProgress>,
}

impl<'a> Engine<'a> {
    /// Prepares a run: `state`/`progress` are new, or loaded from the run folder to resume.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cmd: &'a Command,
        opts: Options,
        run: RunDir,
        mut state: State,
        progress: Option<Progress>,
        sinks: Vec<Box<dyn Sink + 'a>>,
        approver: &'a mut dyn Approver,
        cancel: Cancel,
    ) -> Self {
        let resumed = progress.is_some();
        let progress = progress.unwrap_or_else(|| Progress {
            steps: cmd
                .blocks()
                .filter(|b| b.phase != Phase::Rollback)
                .map(|b| StepProgress::pending(&b.id, phase_name(b.phase)))
                .collect(),
        });
        let mut redactor = Redactor::default();
        let mut extra = cmd.settings.secrets.clone();
        extra.extend(opts.secrets.iter().cloned());
        let inherited: Vec<(String, String)> = std::env::vars().collect();
        redactor.add(
            inherited.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &extra,
        );
        redactor.add(
            opts.env.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &extra,
        );
        // A resumed run's `$NIXCMD_ENV` already holds what earlier sessions' steps exported:
        // its secrets are secrets from the first line this session prints.
        if resumed {
            let exported = run.env_vars();
            redactor.add(
                exported.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                &extra,
            );
        }
        // Which values given to the run are secrets, for the listings of the run.
        let secret = |v: &str| !v.is_empty() && redactor.redact(v) != v;
        state.secret_args = (state.args.iter().enumerate())
            .filter(|(_, a)| secret(a))
            .map(|(i, _)| i)
            .collect();
        state.secret_set = (state.set.iter().enumerate())
            .filter(|(_, kv)| kv.split_once('=').is_some_and(|(_, v)| secret(v)))
            .map(|(i, _)| i)
            .collect();
        let history = History::load(&cmd.name);
        let (events, events_error) = match run.events_file() {
            Ok(f) => (Some(f), None),
            Err(e) => (None, Some(format!("events.ndjson cannot be written: {e}"))),
        };
        let seq = if resumed {
            crate::run::records::last_seq(&run.path)
        } else {
            0
        };
        let em = Emitter {
            seq,
            run_id: state.run_id.clone(),
            redactor,
            events,
            sinks,
            held: None,
            spare: Vec::new(),
            lost: None,
            events_path: run.path.join("events.ndjson"),
            straddles: Default::default(),
        };
        Engine {
            cmd,
            opts,
            run,
            state,
            progress,
            approver,
            cancel,
            em,
            history,
            warnings: events_error.into_iter().collect(),
            started: Instant::now(),
            resumed,
            fleet: Default::default(),
            records_error: None,
            hangup_noted: false,
            env_warned: Default::default(),
            finishing: None,
            up_next: None,
            ahead: None,
            pre_started: None,
        }
    }

    pub(super) fn emit(&mut self, kind: EventKind) {
        self.em.emit(kind);
    }

    pub(super) fn save(&mut self) {
        self.state.updated = now();
        // Progress first: a `kill -9` between the two writes must not leave a state.json
        // without its progress.json.
        let progress = self.run.write_progress(&self.progress);
        let state = self.run.write_state(&self.state);
        self.note_records(progress.and(state));
    }

    /// At a step's end: progress.json, which resume reads to know what is done, must be
    /// written before anything else starts. state.json (status, current step, time of the
    /// last update) changes nothing resume decides, so it waits for the next step's start
    /// (written while bash starts up) or the next [`Engine::save`] (the end of the run, a
    /// pause, an approval): one record write less between two steps.
    pub(super) fn save_step_end(&mut self) {
        let written = self.run.write_progress(&self.progress);
        self.note_records(written);
    }

    /// Remembers the first failure to write the records (a full disk, a folder made
    /// read-only), and says so at once.
    fn note_records(&mut self, written: std::io::Result<()>) {
        if let Err(e) = written
            && self.records_error.is_none()
        {
            let why = format!(
                "the run's records in {} cannot be written: {e}",
                self.run.path.display()
            );
            self.records_error = Some(why.clone());
            self.emit(EventKind::Warning {
                step_id: None,
                message: format!("{why}; no further step starts"),
            });
        }
    }

    /// Says once, as a warning in the records and to whatever still reads the output, that
    /// nixcmd's terminal hung up and the run goes on without it. Called where the run moves
    /// on (a block starts, a gate, the end), so a hangup during a step is told at its end.
    pub(super) fn note_hangup(&mut self) {
        if self.hangup_noted || !crate::process::hung_up() {
            return;
        }
        self.hangup_noted = true;
        let message = format!(
            "nixcmd's terminal hung up (SIGHUP): the run goes on without it, and a step that \
             asks for confirmation pauses it; follow it with `nixcmd log {} --follow`",
            self.state.run_id
        );
        self.warnings.push(message.clone());
        self.emit(EventKind::Warning {
            step_id: None,
            message,
        });
    }

    /// Warns, once per run and host, about a line of `$NIXCMD_ENV` that set nothing, naming
    /// the step (or the steps of a group) after which it was found.
    pub(super) fn env_problem(&mut self, steps: &[&str], host: Option<&str>, problem: String) {
        if !self
            .env_warned
            .insert((host.map(str::to_string), problem.clone()))
        {
            return;
        }
        let names = steps
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let who = if steps.len() == 1 {
            format!("step {names}")
        } else {
            format!("steps {names}")
        };
        let message = match host {
            Some(h) => format!("{who} on {h}: {problem}"),
            None => format!("{who}: {problem}"),
        };
        self.warnings.push(message.clone());
        self.emit(EventKind::Warning {
            step_id: (steps.len() == 1).then(|| steps[0].to_string()),
            message,
        });
    }

    /// Lists among the run's warnings, for its end, that output is missing from the records.
    fn note_lost(&mut self) {
        if let Some(lost) = &self.em.lost
            && !self.warnings.contains(lost)
        {
            self.warnings.push(lost.clone());
        }
    }

    /// A block must not start once the records cannot be kept: the run stops there as failed
    /// (and rolls back what it did, as after any failure).
    fn records_stop(&mut self, block: &Block) -> Option<(String, Vec<String>)> {
        let why = self.records_error.clone()?;
        let message = format!("`{}` was not started: {why}", block.id);
        self.state.errors.push(message);
        Some((block.id.clone(), Vec::new()))
    }

    pub(super) fn extra_secrets(&self) -> Vec<String> {
        let mut extra = self.cmd.settings.secrets.clone();
        extra.extend(self.opts.secrets.iter().cloned());
        extra
    }

    /// Runs the command to the end, or to a gate that nobody can answer now.
    pub fn execute(mut self) -> Outcome {
        let plan = self.plan();
        let manual: Vec<String> = self
            .cmd
            .success_criteria
            .manual
            .iter()
            .map(|m| m.text.clone())
            .collect();
        self.state.status = RunStatus::Running;
        self.state.pid = std::process::id();
        if self.resumed {
            self.run.remove_ahead_leftovers();
        }
        self.save();
        self.emit(EventKind::RunStarted {
            command: self.cmd.name.clone(),
            args: self
                .state
                .args
                .iter()
                .map(|a| self.em.redactor.redact(a))
                .collect(),
            dry_run: self.opts.dry_run,
            resumed: self.resumed,
            total_steps: self.state.total_steps,
            plan,
            manual_checks: manual.clone(),
            run_dir: self.run.path.display().to_string(),
        });
        for notice in std::mem::take(&mut self.opts.notices) {
            self.warnings.push(notice.clone());
            self.emit(EventKind::Warning {
                step_id: None,
                message: notice,
            });
        }

        // Before the first block: the hosts of the run, for the blocks on this machine.
        self.write_hosts_file();
        // Before the first block too: on resume, what the hosts exported before the pause.
        self.learn_host_secrets();

        let mut failed: Option<(String, Vec<String>)> = None;
        let mut status = RunStatus::Succeeded;
        let mut anything_started = self
            .progress
            .steps
            .iter()
            .any(|s| s.attempts > 0 && s.phase != "prerequisite");

        // Nothing runs before a declined gate, prerequisites included.
        let declined = self.decline_paused_gate();

        // Prerequisites: one failure stops the run; nothing changed, nothing to roll back.
        let prereqs: Vec<&Block> = self
            .cmd
            .prerequisites
            .iter()
            .filter(|b| b.runnable && declined.is_none())
            .collect();
        for block in prereqs {
            if self.done(&block.id) {
                continue;
            }
            if let Some(stop) = self.records_stop(block) {
                status = RunStatus::Failed;
                failed = Some(stop);
                break;
            }
            // A guided file's prerequisite is not known to be read-only: a dry run skips it
            // (no option skips an annotated file's prerequisites).
            if self.opts.dry_run && !block.effective.readonly {
                self.mark_skipped(block, "dry run: not readonly");
                continue;
            }
            if self.skip_by_condition(block) {
                continue;
            }
            match self.gate(block) {
                GateResult::Go => {}
                GateResult::Pause => return self.pause(block),
                GateResult::Declined => {
                    status = self.declined_status();
                    failed = Some((block.id.clone(), Vec::new()));
                    break;
                }
            }
            let result = self.run_block(block, false);
            if result.status.is_failure() {
                status = if matches!(result.status, StepStatus::Interrupted) {
                    RunStatus::Interrupted
                } else {
                    RunStatus::PrerequisitesFailed
                };
                failed = Some((block.id.clone(), result.tail));
                break;
            }
        }
        if failed.is_some() {
            return self.finish(status, failed, Vec::new(), manual);
        }
        // Then as after a "no" at its prompt: at a prerequisite the run ends there; at a step,
        // what ran is rolled back and the `always` blocks run.
        if let Some((id, prerequisite)) = declined {
            status = RunStatus::Declined;
            failed = Some((id, Vec::new()));
            if prerequisite {
                return self.finish(status, failed, Vec::new(), manual);
            }
        }

        // A resumed run that had failed and was rolling back when its nixcmd died: the
        // failure stands (running the step again could pass over a half-undone machine), and
        // its rollback runs again, whole, since which of its blocks ended is not recorded.
        if failed.is_none()
            && let Some((id, step_status)) = self.failed_earlier()
        {
            status = match step_status {
                StepStatus::Interrupted => RunStatus::Interrupted,
                StepStatus::Declined => RunStatus::Declined,
                _ => RunStatus::Failed,
            };
            failed = Some((id, Vec::new()));
        }

        // Steps, then success criteria. `always` blocks wait for the end.
        let main: Vec<&Block> = self
            .cmd
            .steps
            .iter()
            .chain(&self.cmd.success_criteria.checks)
            .filter(|b| b.runnable && !b.attrs.always && failed.is_none())
            .collect();
        for (i, &block) in main.iter().enumerate() {
            if self.done(&block.id) {
                continue;
            }
            self.up_next = main.get(i + 1).copied().filter(|b| self.sure_to_follow(b));
            if let Some(reason) = self.skip_reason(block) {
                self.mark_skipped(block, &reason);
                continue;
            }
            if self.cancel.level() > 0 {
                status = RunStatus::Interrupted;
                failed = Some((block.id.clone(), Vec::new()));
                break;
            }
            if let Some(stop) = self.records_stop(block) {
                status = RunStatus::Failed;
                failed = Some(stop);
                break;
            }
            // Before its gate and its compensation: a block with nothing to do asks nothing.
            if self.skip_by_condition(block) {
                continue;
            }
            // Consecutive `group=NAME` steps run together (run::group).
            if let Some(flow) = self.group_hook(block) {
                use crate::run::group::Flow;
                // Its gates are asked before any member starts: a pause or a "no" started
                // nothing.
                anything_started |= matches!(flow, Flow::Done | Flow::Failed(..));
                match flow {
                    Flow::Pause(b) => return self.pause(b),
                    Flow::Declined(id) => {
                        status = self.declined_status();
                        failed = Some((id, Vec::new()));
                        break;
                    }
                    Flow::Done => continue,
                    Flow::Failed(s, id, tail) => {
                        status = s;
                        failed = Some((id, tail));
                        break;
                    }
                }
            }
            match self.gate(block) {
                GateResult::Go => {}
                GateResult::Pause => return self.pause(block),
                GateResult::Declined => {
                    status = self.declined_status();
                    failed = Some((block.id.clone(), Vec::new()));
                    break;
                }
            }
            if let Some(comp) = &block.attrs.rollback
                && !self.opts.dry_run
                && !self.state.compensations.contains(comp)
            {
                self.state.compensations.push(comp.clone());
            }
            anything_started = true;
            // In a dry run the steps did not happen, so a failing check is only a warning.
            let lenient = self.opts.dry_run && block.phase == Phase::Check;
            let result = self.run_block(block, lenient);
            match result.status {
                // A nested run stopped at a gate nobody could answer (run::nested).
                StepStatus::AwaitingConfirmation => return self.pause_for_nested(block),
                // A nested run's gate was answered "no".
                StepStatus::Declined => {
                    status = self.declined_status();
                    failed = Some((block.id.clone(), result.tail));
                    break;
                }
                StepStatus::Interrupted => {
                    status = RunStatus::Interrupted;
                    failed = Some((block.id.clone(), result.tail));
                    break;
                }
                s if s.is_failure() => {
                    status = RunStatus::Failed;
                    failed = Some((block.id.clone(), result.tail));
                    break;
                }
                _ => {}
            }
        }

        self.up_next = None;
        self.undo_pre_start();
        self.drop_unused_script();
        // The end of the last step that ran, if it waited for a next start that did not come.
        self.em.release();

        // Host failures that stopped the run were rolled back host by host (run::fanout);
        // the hosts that succeeded stay as they are, so `resume` can retry the failed ones.
        let mut left = std::mem::take(&mut self.fleet.left);
        // Nothing started (a "no" or a Ctrl-C at the first gate): nothing to undo. The
        // unbound rollback blocks (a switch to the previous generation) would change a
        // machine the run never touched.
        let rolling_back = failed.is_some()
            && anything_started
            && !self.opts.dry_run
            && self.cancel.level() < 2
            && !self.fleet.stop_without_rollback;
        if rolling_back {
            left.extend(self.rollback(
                &failed.as_ref().map(|f| f.0.clone()).unwrap_or_default(),
                status,
            ));
        }
        if anything_started && self.cancel.level() < 2 {
            left.extend(self.always_blocks(failed.is_some()));
        } else if anything_started && !self.opts.dry_run {
            // A rollback cut short lists its own blocks as left by hand.
            let skipped_rollback =
                failed.is_some() && !rolling_back && !self.fleet.stop_without_rollback;
            left.extend(self.note_not_undone(skipped_rollback));
        }
        if !left.is_empty() {
            status = RunStatus::RollbackIncomplete;
        }
        self.finish(status, failed, left, manual)
    }

    /// Whether `next`, coming right after the step about to run, will run as a plain shell
    /// step unless that step fails: not done, not skipped by an option, no condition, no gate,
    /// not part of a group, a fan-out or a nested command. Its script is then written while
    /// the step before it runs, instead of between the two (creating a file was the costliest
    /// call there).
    fn sure_to_follow(&self, next: &Block) -> bool {
        !self.done(&next.id)
            && self.skip_reason(next).is_none()
            && next.attrs.when.is_none()
            && next.attrs.unless.is_none()
            && !next.effective.asks
            && next.attrs.group.is_none()
            && self.effective_selector(&next.attrs).is_none()
            && crate::run::nested::plan(next, self.opts.resolve.as_ref())
                == crate::run::nested::Plan::Shell
    }

    /// Records `next` as started (running, first attempt) in the in-memory progress, so that
    /// the write that records the end of the step before it records its start too: one
    /// progress.json write between two steps instead of two. Called only when `next`'s script
    /// was written ahead and the step before succeeded, so only a Ctrl-C (or records that
    /// cannot be written) can keep it from starting; [`Engine::undo_pre_start`] then puts its
    /// entry back. A `kill -9` after the write leaves it recorded as running, and resume
    /// runs it again, as for any step that was running.
    pub(super) fn pre_start(&mut self, next: &str) {
        if let Some(p) = self.progress.get_mut(next) {
            self.pre_started = Some(p.clone());
            p.status = StepStatus::Running;
            p.attempts = 1;
            p.started.get_or_insert_with(crate::event::now);
        }
    }

    /// Puts back the progress entry of a step recorded as started by [`Engine::pre_start`]
    /// that did not start. Written with the run's end.
    pub(super) fn undo_pre_start(&mut self) {
        if let Some(before) = self.pre_started.take()
            && let Some(p) = self.progress.get_mut(&before.id)
        {
            *p = before;
        }
    }

    /// Undoes what was made ready for a step that did not run (the step before it failed or
    /// was interrupted): its bash started ahead is killed (it ran nothing), its script
    /// removed — `scripts/` holds the scripts that ran.
    pub(super) fn drop_unused_script(&mut self) {
        if let Some(ahead) = self.ahead.take() {
            if let Some((bash, held)) = ahead.bash {
                drop(bash);
                let _ = std::fs::remove_file(held);
            }
            let _ = std::fs::remove_file(self.run.script_path(&ahead.id));
        }
    }

    /// In a resumed run, the step or check an earlier session recorded as failed, and how:
    /// that session had decided to roll back when it died (on a failure it saves progress
    /// before its rollback starts). Failed hosts are not in it: `resume` sets their steps
    /// back to pending to run them again (`fleet::reset_for_resume`).
    fn failed_earlier(&self) -> Option<(String, StepStatus)> {
        if !self.resumed {
            return None;
        }
        self.progress
            .steps
            .iter()
            .find(|p| {
                p.phase != "prerequisite"
                    && (p.status.is_failure() || p.status == StepStatus::Declined)
            })
            .map(|p| (p.id.clone(), p.status))
    }

    /// Whether block `id` was started (its first attempt recorded in progress).
    fn progress_started(&self, id: &str) -> bool {
        self.progress.get(id).is_some_and(|p| p.attempts > 0)
    }

    pub(super) fn done(&self, id: &str) -> bool {
        self.progress.get(id).is_some_and(|p| p.status.is_done())
    }

    /// Why a step is not run in this invocation, if it is not.
    pub(super) fn skip_reason(&self, block: &Block) -> Option<String> {
        let o = &self.opts;
        let selection = crate::run::selection::Selection {
            only: &o.only,
            skip: &o.skip,
            from: o.from.as_deref(),
        };
        if let Some(reason) = selection.skips(self.cmd, block) {
            return Some(reason);
        }
        if o.dry_run && !block.effective.readonly {
            return Some("dry run: not readonly".into());
        }
        None
    }

    /// Whether `block`'s `when=`/`unless=` does not hold now; it is then recorded as skipped
    /// (for good: `resume` does not run it). The variable is looked up in the environment the
    /// block would get: nixcmd's own, then the run's variables, arguments, `--set` values and
    /// `$NIXCMD_ENV` exports on top (see `step_env`). For a `hosts=` step this is on this
    /// machine, once, before the fan-out.
    pub(super) fn skip_by_condition(&mut self, block: &Block) -> bool {
        if block.attrs.when.is_none() && block.attrs.unless.is_none() {
            return false;
        }
        let env = self.step_env();
        let lookup = |name: &str| match env.iter().rev().find(|(k, _)| k == name) {
            Some((_, v)) => Some(v.clone()),
            None => std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()),
        };
        let Some(reason) = crate::condition::skip_reason(&block.attrs, lookup) else {
            return false;
        };
        self.mark_skipped(block, &reason);
        self.save_step_end();
        true
    }

    pub(super) fn mark_skipped(&mut self, block: &Block, reason: &str) {
        if let Some(p) = self.progress.get_mut(&block.id) {
            p.status = StepStatus::Skipped;
            p.reason = Some(reason.to_string());
        }
        self.emit(EventKind::StepFinished {
            step_id: block.id.clone(),
            host: None,
            status: StepStatus::Skipped,
            exit_code: None,
            duration_ms: 0,
            attempts: 0,
            reason: Some(reason.to_string()),
        });
    }

    /// The plan: every block in order with its gates, for `run_started` and `--dry-run`.
    fn plan(&self) -> Vec<PlanItem> {
        let mut items = Vec::new();
        let failed_earlier = self.failed_earlier().map(|(id, _)| id);
        for b in self.cmd.blocks() {
            let timeout = b
                .attrs
                .timeout
                .or(self.cmd.settings.timeout)
                .unwrap_or(DEFAULT_TIMEOUT);
            let (will_run, note) = if !b.runnable {
                (
                    false,
                    Some("not runnable (example or not shell)".to_string()),
                )
            } else if b.phase == Phase::Rollback {
                let users: Vec<&str> = self
                    .cmd
                    .blocks()
                    .filter(|s| s.attrs.rollback.as_deref() == Some(&b.id))
                    .map(|s| s.id.as_str())
                    .collect();
                let note = if users.is_empty() {
                    "runs on failure (unbound rollback block)".to_string()
                } else {
                    format!("compensates {} on failure", users.join(", "))
                };
                (false, Some(note))
            } else if self.done(&b.id) {
                (false, Some("done in an earlier session".into()))
            } else if let Some(id) = failed_earlier.as_deref()
                && b.phase != Phase::Prerequisite
                && !b.attrs.always
            {
                let note = match id == b.id {
                    true => "failed in an earlier session: rolled back now".to_string(),
                    false => format!("not run: the run failed at `{id}`"),
                };
                (false, Some(note))
            } else if b.phase == Phase::Prerequisite && self.opts.dry_run && !b.effective.readonly {
                // A guided file's: not known to be read-only.
                (false, Some("dry run: not readonly".into()))
            } else if b.phase == Phase::Prerequisite {
                let conditional = b.attrs.when.is_some() || b.attrs.unless.is_some();
                (
                    true,
                    conditional.then(|| "if its condition holds as it starts".to_string()),
                )
            } else if let Some(reason) = self.skip_reason(b) {
                (false, Some(reason))
            } else if b.attrs.always {
                (
                    true,
                    Some("always: runs at the end whatever happened".into()),
                )
            } else if b.attrs.when.is_some() || b.attrs.unless.is_some() {
                // Not guessed here: earlier blocks may export the variable.
                (true, Some("if its condition holds as it starts".into()))
            } else {
                (true, None)
            };
            let mut gates = crate::show::gates(b);
            if let Some(arg) = b.attrs.hosts_arg() {
                // The plan names the hosts this run will use, not the declaration.
                let resolved = match self.effective_selector(&b.attrs) {
                    Some(sel) => format!("hosts {sel} (from argument `{arg}`)"),
                    None => format!("this machine (argument `{arg}` is empty)"),
                };
                for g in gates
                    .iter_mut()
                    .filter(|g| g.starts_with("hosts from argument"))
                {
                    *g = resolved.clone();
                }
            }
            items.push(PlanItem {
                step_id: b.id.clone(),
                phase: phase_name(b.phase).into(),
                title: b.title.clone(),
                gates,
                timeout_ms: timeout.as_millis() as u64,
                will_run,
                note,
                when: b.attrs.when.clone(),
                unless: b.attrs.unless.clone(),
            });
        }
        items
    }

    /// Confirmation: approved by flag, by an earlier approval, or by whoever the approver asks.
    pub(super) fn gate(&mut self, block: &Block) -> GateResult {
        self.note_hangup();
        let needs = block.effective.asks;
        if !needs || self.opts.dry_run {
            return GateResult::Go;
        }
        let flagged = self.opts.yes || self.opts.approve.iter().any(|a| a == &block.id);
        if flagged {
            self.record_approval(&block.id, self.opts.approve_channel.clone(), None);
            return GateResult::Go;
        }
        if self
            .state
            .approvals
            .iter()
            .any(|a| a.step_id == block.id && !a.declined)
        {
            return GateResult::Go;
        }
        let message = block
            .attrs
            .confirm
            .clone()
            .unwrap_or_else(|| format!("Run step `{}` of a guided file?", block.id));
        let request = GateRequest {
            run_id: self.state.run_id.clone(),
            step_id: block.id.clone(),
            message: message.clone(),
            code: block.code.clone(),
        };
        match self.approver.ask(&request) {
            Answer::Approve { channel, client } => {
                self.record_approval(&block.id, channel, client);
                GateResult::Go
            }
            Answer::Decline { channel, client } => {
                // Ctrl-C at the prompt ends it too: that is an interruption, not a "no".
                let (status, reason) = if self.cancel.level() > 0 {
                    (StepStatus::Interrupted, "interrupted at the confirmation")
                } else {
                    // Who said no, and where, is kept as an approval is.
                    self.state.approvals.push(Approval {
                        step_id: block.id.clone(),
                        channel,
                        client,
                        declined: true,
                        at: now(),
                    });
                    (StepStatus::Declined, "declined at the confirmation")
                };
                self.mark_declined(&block.id, status, reason);
                GateResult::Declined
            }
            Answer::Unavailable => GateResult::Pause,
        }
    }

    /// Records a gate's "no" (or Ctrl-C at its prompt) as the end of its block.
    fn mark_declined(&mut self, id: &str, status: StepStatus, reason: &str) {
        if let Some(p) = self.progress.get_mut(id) {
            p.status = status;
        }
        self.emit(EventKind::StepFinished {
            step_id: id.to_string(),
            host: None,
            status,
            exit_code: None,
            duration_ms: 0,
            attempts: 0,
            reason: Some(reason.into()),
        });
    }

    /// `nixcmd resume --decline`: the gate the run is paused at is answered "no" before
    /// anything runs, as at its prompt; the decision is recorded with the approvals.
    /// Returns the block and whether it is a prerequisite.
    fn decline_paused_gate(&mut self) -> Option<(String, bool)> {
        let id = self.opts.decline.clone()?;
        // The gate is a nested run's: the "no" is passed on to it when its block comes
        // (run::nested), and its rollback runs before this run's.
        if self
            .state
            .nested_wait
            .as_ref()
            .is_some_and(|w| w.step_id == id)
        {
            return None;
        }
        self.state.approvals.push(Approval {
            step_id: id.clone(),
            channel: "cli".into(),
            client: None,
            declined: true,
            at: now(),
        });
        self.save();
        self.mark_declined(
            &id,
            StepStatus::Declined,
            "declined with `nixcmd resume --decline`",
        );
        let prerequisite = self.cmd.prerequisites.iter().any(|b| b.id == id);
        Some((id, prerequisite))
    }

    /// A gate answered "no", or left by Ctrl-C at its prompt.
    fn declined_status(&self) -> RunStatus {
        if self.cancel.level() > 0 {
            RunStatus::Interrupted
        } else {
            RunStatus::Declined
        }
    }

    fn record_approval(&mut self, step: &str, channel: String, client: Option<String>) {
        if self
            .state
            .approvals
            .iter()
            .any(|a| a.step_id == step && !a.declined)
        {
            return;
        }
        self.state.approvals.push(Approval {
            step_id: step.to_string(),
            channel,
            client,
            declined: false,
            at: now(),
        });
        self.save();
    }

    /// Stops before a gate nobody can answer: saved, exit 3, resumable.
    fn pause(self, block: &Block) -> Outcome {
        let resume = format!("nixcmd resume {} --approve {}", self.state.run_id, block.id);
        let message = block
            .attrs
            .confirm
            .clone()
            .unwrap_or_else(|| format!("Run step `{}` of a guided file?", block.id));
        self.pause_at(block, block.id.clone(), message, resume)
    }

    /// Stops because a nested run that `block` started stopped at a gate nobody could answer
    /// (see [`State::nested_wait`]): the gate named is the nested run's, and so is the
    /// answer `resume` passes on to it.
    fn pause_for_nested(self, block: &Block) -> Outcome {
        let Some((wait, gate)) = self
            .state
            .nested_wait
            .clone()
            .and_then(|w| w.gate.clone().map(|g| (w, g)))
        else {
            return self.pause(block);
        };
        let resume = format!("nixcmd resume {} --approve {gate}", self.state.run_id);
        let message = format!(
            "/{} (run {}) asks: {}",
            wait.command,
            wait.run_id,
            wait.message.as_deref().unwrap_or_default()
        );
        self.pause_at(block, gate, message, resume)
    }

    fn pause_at(
        mut self,
        block: &Block,
        gate_id: String,
        message: String,
        resume: String,
    ) -> Outcome {
        crate::process::close_deferred();
        self.undo_pre_start();
        self.drop_unused_script();
        self.note_hangup();
        self.note_lost();
        if let Some(p) = self.progress.get_mut(&block.id) {
            p.status = StepStatus::AwaitingConfirmation;
        }
        self.state.status = RunStatus::AwaitingConfirmation;
        self.state.current_step = Some(block.id.clone());
        self.state.exit_code = Some(Exit::NeedsConfirmation.code());
        self.save();
        self.emit(EventKind::Gate {
            step_id: block.id.clone(),
            gate_id,
            message,
            code: block.code.clone(),
            resume: resume.clone(),
            token: None,
        });
        let manual: Vec<String> = self
            .cmd
            .success_criteria
            .manual
            .iter()
            .map(|m| m.text.clone())
            .collect();
        self.emit(EventKind::RunFinished {
            status: RunStatus::AwaitingConfirmation,
            exit_code: Exit::NeedsConfirmation.code(),
            duration_ms: self.started.elapsed().as_millis() as u64,
            failed_step: None,
            warnings: self.warnings.clone(),
            manual_checks: manual,
            left_to_do: Vec::new(),
            troubleshooting: None,
            log_tail: Vec::new(),
            resume: Some(resume),
            run_dir: self.run.path.display().to_string(),
        });
        Outcome {
            status: RunStatus::AwaitingConfirmation,
            exit: Exit::NeedsConfirmation,
            run_id: self.state.run_id.clone(),
        }
    }

    /// Rollback after a failure: compensations of started steps newest first, then the
    /// unbound rollback blocks in file order. Returns the blocks that failed.
    fn rollback(&mut self, failed_step: &str, status: RunStatus) -> Vec<String> {
        let order = self.rollback_order();
        if order.is_empty() {
            return Vec::new();
        }
        self.rollback_blocks(order, failed_step, status)
    }

    /// The rollback a failure runs: compensations of started steps newest first, then the
    /// unbound rollback blocks in file order (runnable ones only, less those that already
    /// finished in this run: see [`State::rolled_back`]).
    fn rollback_order(&self) -> Vec<&'a Block> {
        let bound: Vec<&str> = self
            .cmd
            .blocks()
            .filter_map(|b| b.attrs.rollback.as_deref())
            .collect();
        let mut order: Vec<&Block> = Vec::new();
        for id in self.state.compensations.iter().rev() {
            if let Some(b) = self.cmd.rollback.iter().find(|b| &b.id == id)
                && !order.iter().any(|o| o.id == b.id)
            {
                order.push(b);
            }
        }
        for b in &self.cmd.rollback {
            if !bound.contains(&b.id.as_str()) && !b.attrs.always {
                order.push(b);
            }
        }
        order
            .into_iter()
            .filter(|b| b.runnable && !self.state.rolled_back.contains(&b.id))
            .collect()
    }

    fn rollback_blocks(
        &mut self,
        order: Vec<&'a Block>,
        failed_step: &str,
        status: RunStatus,
    ) -> Vec<String> {
        let reason = match status {
            RunStatus::Interrupted => "interrupted".to_string(),
            RunStatus::Declined => format!("confirmation of `{failed_step}` declined"),
            _ if self.records_error.is_some() && !self.progress_started(failed_step) => {
                "the run's records cannot be written".to_string()
            }
            _ => format!("step `{failed_step}` failed"),
        };
        self.emit(EventKind::RollbackStarted {
            reason,
            blocks: order.iter().map(|b| b.id.clone()).collect(),
        });
        self.shielded(Finishing::RollingBack, |engine| {
            let mut left = Vec::new();
            for block in order {
                if engine.cancel.level() >= 2 {
                    left.push(format!("{} (not run: stopped at once)", block.id));
                    continue;
                }
                engine.fleet.take_last_failed();
                let result = engine.run_block(block, false);
                let hosts = engine.fleet.take_last_failed();
                if result.status.is_failure() && !hosts.is_empty() {
                    // A host compensation: what is left is on those hosts, named as a
                    // host's own rollback names it (run::fanout).
                    for h in hosts {
                        left.push(crate::run::fanout::left_on_host(block, &h));
                    }
                } else if result.status.is_failure() {
                    left.push(block.id.clone());
                } else if !engine.opts.dry_run {
                    engine.state.rolled_back.push(block.id.clone());
                    engine.save();
                }
            }
            left
        })
    }

    /// Stopped at once (a second Ctrl-C, Ctrl-\\): the person chose not to wait for the
    /// rollback and the `always` blocks, but must know what they leave as it is, in the
    /// run's words (a warning in the summary and the records). Returns them as left to do by
    /// hand: the run then ends "rollback incomplete" (exit 5), as one stopped at once during
    /// its rollback does, not "interrupted" with nothing listed.
    fn note_not_undone(&mut self, failed: bool) -> Vec<String> {
        let mut left = Vec::new();
        let mut skipped: Vec<String> = Vec::new();
        if failed {
            for b in self.rollback_order() {
                skipped.push(format!("`{}`", b.id));
                left.push(format!("{} (not run: stopped at once)", b.id));
            }
        }
        let mut always: Vec<String> = Vec::new();
        for b in self.always_list() {
            always.push(format!("`{}`", b.id));
            left.push(format!(
                "{} (`always` block, not run: stopped at once)",
                b.id
            ));
        }
        let mut parts = Vec::new();
        if !skipped.is_empty() {
            parts.push(format!("not rolled back: {}", skipped.join(", ")));
        }
        if !always.is_empty() {
            parts.push(format!("`always` blocks not run: {}", always.join(", ")));
        }
        if parts.is_empty() {
            return left;
        }
        let message = format!(
            "stopped at once: {}; check the machine by hand",
            parts.join("; ")
        );
        self.warnings.push(message.clone());
        self.emit(EventKind::Warning {
            step_id: None,
            message,
        });
        left
    }

    /// The runnable `always` blocks, from any section, in file order.
    fn always_list(&self) -> Vec<&'a Block> {
        self.cmd
            .blocks()
            .filter(|b| b.attrs.always && b.runnable)
            .collect()
    }

    /// `always` blocks run at the end whatever happened. On success a failing one is a
    /// warning; after a failure it is left for a person.
    fn always_blocks(&mut self, after_failure: bool) -> Vec<String> {
        let blocks = self.always_list();
        if blocks.is_empty() {
            return Vec::new();
        }
        self.shielded(Finishing::Always, |engine| {
            let mut left = Vec::new();
            for block in blocks {
                if engine.opts.dry_run && !block.effective.readonly {
                    engine.mark_skipped(block, "dry run: not readonly");
                    continue;
                }
                let result = engine.run_block(block, !after_failure);
                if result.status.is_failure() {
                    left.push(block.id.clone());
                }
            }
            left
        })
    }

    fn finish(
        mut self,
        status: RunStatus,
        failed: Option<(String, Vec<String>)>,
        left: Vec<String>,
        manual: Vec<String>,
    ) -> Outcome {
        crate::process::close_deferred();
        self.note_hangup();
        self.note_lost();
        let exit = status.exit();
        let (failed_step, tail) = failed
            .map(|(s, t)| (Some(s), t))
            .unwrap_or((None, Vec::new()));
        let troubleshooting = failed_step
            .as_deref()
            .and_then(|s| self.best_troubleshooting(s, &tail));
        let left_to_do: Vec<String> = left
            .iter()
            .map(|id| match self.cmd.block(id) {
                Some(b) => format!("{id}: run by hand:\n{}", b.code.trim_end()),
                None => id.clone(),
            })
            .collect();
        self.state.status = status;
        self.state.completed = Some(now());
        self.state.current_step = None;
        self.state.exit_code = Some(exit.code());
        if let Some(s) = &failed_step
            && status != RunStatus::Succeeded
        {
            self.state
                .errors
                .push(format!("{} at step {s}", status.label()));
        }
        for id in &left {
            self.state
                .errors
                .push(format!("rollback block {id} failed"));
        }
        self.save();
        if status == RunStatus::Succeeded && !self.opts.dry_run {
            for p in &self.progress.steps {
                if p.status == StepStatus::Succeeded
                    && let Some(d) = p.duration_ms
                {
                    self.history.record(&p.id, d);
                }
            }
            let _ = self.history.save(&self.cmd.name);
        }
        self.emit(EventKind::RunFinished {
            status,
            exit_code: exit.code(),
            duration_ms: self.started.elapsed().as_millis() as u64,
            failed_step,
            warnings: self.warnings.clone(),
            manual_checks: manual,
            left_to_do,
            troubleshooting,
            log_tail: tail,
            resume: None,
            run_dir: self.run.path.display().to_string(),
        });
        Outcome {
            status,
            exit,
            run_id: self.state.run_id.clone(),
        }
    }

    /// The troubleshooting entry that fits the failed step and its output, if one does.
    fn best_troubleshooting(&self, step: &str, tail: &[String]) -> Option<Troubleshooting> {
        let title = self.cmd.block(step).and_then(|b| b.title.as_deref());
        let entries = &self.cmd.troubleshooting;
        crate::run::troubleshoot::best(entries, &self.cmd.name, step, title.unwrap_or(""), tail)
            .map(|e| Troubleshooting {
                title: e.title.clone(),
                text: e.text.clone(),
            })
    }

    pub fn run_dir(&self) -> PathBuf {
        self.run.path.clone()
    }
}

pub(super) enum GateResult {
    Go,
    Pause,
    Declined,
}

/// The `step_started` event of `block` (on `host`, for a fan-out).
pub(super) fn step_started(
    block: &Block,
    attempt: u32,
    host: Option<&str>,
    eta_ms: Option<u64>,
) -> EventKind {
    EventKind::StepStarted {
        step_id: block.id.clone(),
        phase: phase_name(block.phase).into(),
        title: block.title.clone(),
        attempt,
        host: host.map(str::to_string),
        eta_ms,
    }
}

pub fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Prerequisite => "prerequisite",
        Phase::Step => "step",
        Phase::Check => "check",
        Phase::Rollback => "rollback",
    }
}
