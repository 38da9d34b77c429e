//! One block of a run on this machine: its script, bash in its own process group, retries
//! and timeouts, its log and records, and the environment it gets (DESIGN.md §2). Blocks for
//! other hosts go through `fanout`, slash-command blocks through `nested`.

use crate::command::{Block, OnFail};
use crate::event::{EventKind, StepStatus, now};
use crate::process::{self, Ended, GroupSpec, Observed};
use crate::run::engine::{
    BlockResult, DEFAULT_BACKOFF, DEFAULT_TIMEOUT, Emitter, Engine, MAX_BACKOFF, TAIL_LINES,
    step_started,
};
use crate::run::records::RunDir;
use crate::run::redact::EnvWatch;
use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

impl Engine<'_> {
    /// Runs one block: shell with retries and timeout, or the nested commands of a guided
    /// block. `lenient`: a failure is only a warning.
    pub(super) fn run_block(&mut self, block: &Block, lenient: bool) -> BlockResult {
        self.note_hangup();
        if let Some(result) = self.fanout_hook(block, lenient) {
            return result;
        }
        match crate::run::nested::plan(block, self.opts.resolve.as_ref()) {
            crate::run::nested::Plan::Shell => self.run_shell(block, lenient),
            crate::run::nested::Plan::Nested(list) => self.run_nested(block, &list, lenient),
            crate::run::nested::Plan::NotRunnable(reason) => {
                self.not_runnable(block, reason, lenient)
            }
        }
    }

    /// Reports a block that cannot run as written (a missing nested command, an unusable
    /// inventory) as a step that started and ended `not_runnable`.
    pub(super) fn not_runnable(
        &mut self,
        block: &Block,
        reason: String,
        lenient: bool,
    ) -> BlockResult {
        self.emit(step_started(block, 1, None, None));
        let status = self.finish_block(
            block,
            StepStatus::NotRunnable,
            None,
            Some(reason.clone()),
            0,
            Duration::ZERO,
            lenient,
            None,
        );
        BlockResult {
            status,
            tail: vec![reason],
        }
    }

    /// Records how a block ended: progress, a warning for `on-fail=continue`, the event.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish_block(
        &mut self,
        block: &Block,
        status: StepStatus,
        exit_code: Option<i32>,
        reason: Option<String>,
        attempts: u32,
        duration: Duration,
        lenient: bool,
        last_line: Option<&str>,
    ) -> StepStatus {
        let continue_on_fail = block.attrs.on_fail == OnFail::Continue || lenient;
        let status = if status.is_failure() && status != StepStatus::Interrupted && continue_on_fail
        {
            // The step's last output line says what it found (a report step's finding).
            let detail = last_line
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| format!(": {l}"))
                .unwrap_or_default();
            let msg = format!(
                "step `{}` {}{detail} (continuing: {})",
                block.id,
                reason.clone().unwrap_or_default(),
                if lenient {
                    "not critical here"
                } else {
                    "on-fail=continue"
                }
            );
            self.warnings.push(msg.clone());
            self.emit(EventKind::Warning {
                step_id: Some(block.id.clone()),
                message: msg,
            });
            StepStatus::Warning
        } else {
            status
        };
        if let Some(p) = self.progress.get_mut(&block.id) {
            p.status = status;
            p.completed = Some(now());
            p.duration_ms = Some(duration.as_millis() as u64);
            p.exit_code = exit_code;
        }
        self.save_step_end();
        self.emit(EventKind::StepFinished {
            step_id: block.id.clone(),
            host: None,
            status,
            exit_code,
            duration_ms: duration.as_millis() as u64,
            attempts,
            reason,
        });
        status
    }

    fn run_shell(&mut self, block: &Block, lenient: bool) -> BlockResult {
        let timeout = block
            .attrs
            .timeout
            .or(self.cmd.settings.timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        let attempts = block.attrs.retries + 1;
        let backoff = block.attrs.backoff.unwrap_or(DEFAULT_BACKOFF);
        let script = self.run.script_path(&block.id);
        let log_path = self.run.log_path(&block.id);
        // Made ready while the step before ran: its bash, waiting (the script file is put in
        // place before it may go on to open it), or only its script.
        let mut prestarted = None;
        // The name the script waited under: removed once bash is on its way (something found
        // at the script's path after all would be left there).
        let mut held_left = None;
        match self.ahead.take() {
            Some(ahead) if ahead.id == block.id => {
                if let Some((bash, held)) = ahead.bash {
                    if self.run.place_script(&held, &script).is_ok() {
                        prestarted = Some(bash);
                        held_left = Some(held);
                    } else {
                        drop(bash);
                        let _ = std::fs::remove_file(&held);
                        let _ = self.run.write_script(&script, block.code.as_bytes());
                    }
                }
            }
            other => {
                self.ahead = other;
                self.drop_unused_script();
                let _ = self.run.write_script(&script, block.code.as_bytes());
            }
        }
        // Made ready while this step runs (see `Engine::up_next`): the next step.
        let mut ahead = self.up_next.take().map(|next| {
            (
                next.id.clone(),
                self.run.script_path(&next.id),
                next.code.as_bytes(),
            )
        });
        let mut made_ahead = None;
        let run_id = self.state.run_id.clone();
        // The step before ended with its script for this one written: its end's event and
        // line were gathered, to go out with this one's start once bash is on its way.
        let mut handed_over = self.em.holding();
        // Recorded as started with the end of the step before (see `Engine::pre_start`): the
        // first attempt's start needs no progress.json write of its own.
        let mut start_recorded = self.pre_started.as_ref().is_some_and(|p| p.id == block.id);
        if start_recorded {
            self.pre_started = None;
        }
        // Opened with the first attempt's start record, while bash starts up: creating a file
        // is among the costliest calls between two steps, and nothing is written before.
        let mut log: Option<crate::records_io::LogFile> = None;
        let started_at = Instant::now();
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut last: Option<Ended> = None;
        let mut attempt = 0;
        while attempt < attempts {
            attempt += 1;
            if attempt > 1 {
                let wait = backoff
                    .saturating_mul(1 << (attempt - 2).min(16))
                    .min(MAX_BACKOFF);
                if !self.sleep_unless_cancelled(wait) {
                    last = Some(Ended::Cancelled(self.cancel.level()));
                    break;
                }
            }
            let eta = self.history.eta_ms(&block.id);
            if let Some(p) = self.progress.get_mut(&block.id) {
                p.status = StepStatus::Running;
                p.attempts = attempt;
                p.started.get_or_insert_with(now);
            }
            self.state.current_step = Some(block.id.clone());
            let env = self.step_env();
            let args = bash_args(&script);
            let token = step_token(&self.state.run_id, &block.id, attempt);
            let spec = GroupSpec {
                program: "bash",
                args: &args,
                cwd: &self.opts.dir,
                env: &env,
                stdin: None,
                timeout,
                grace: self.opts.grace,
                token: &token,
            };
            let mut started = Some(step_started(block, attempt, None, eta));
            let header = format!(
                "── {} attempt {attempt}/{attempts} at {} ──",
                block.id,
                now()
            );
            // The step's start is recorded (progress.json, state.json with the current step,
            // the event, the log's header) while bash starts up, not before:
            // between two steps only what the next one needs (script, log, environment) is on
            // the way. A `kill -9` in that window leaves the step recorded as not started,
            // and resume runs it, as it would a step that was running.
            let extra_secrets = self.extra_secrets();
            let held_notice = self.held_notice();
            let mut record_start = {
                let run = &self.run;
                let progress = &self.progress;
                let state = &mut self.state;
                let log_path = &log_path;
                let progress_written = std::mem::take(&mut start_recorded);
                move |em: &mut Emitter,
                      log: &mut Option<crate::records_io::LogFile>,
                      started: &mut Option<EventKind>| {
                    let Some(event) = started.take() else { return };
                    if log.is_none() {
                        match run.open_log(log_path) {
                            Ok(f) => *log = Some(crate::records_io::LogFile::new(f)),
                            Err(e) => em.record_failed(log_path, &e),
                        }
                    }
                    if !progress_written {
                        let _ = run.write_progress(progress);
                    }
                    state.updated = now();
                    let _ = run.write_state(state);
                    em.emit(event);
                    if let Some(log) = log.as_mut() {
                        let _ = writeln!(log, "{header}");
                    }
                }
            };
            let em = &mut self.em;
            let step_id = &block.id;
            let mut env_watch =
                EnvWatch::new(self.run.env_file(), self.run.env_len(), extra_secrets);
            let folder = self.run.folder();
            let run = &self.run;
            let run_id = &run_id;
            // The lines of one read of the pipes go to the log and to events.ndjson in one
            // write each (a step printing a million lines made two million writes), and the
            // `$NIXCMD_ENV` file is looked at once per read: whatever the step exported
            // before printing them was written before the read.
            let mut log_lines: Vec<u8> = Vec::new();
            let mut in_read = false;
            let tail = &mut tail;
            let mut observe = |seen: Observed| match seen {
                Observed::Spawned => {
                    record_start(em, &mut log, &mut started);
                    if handed_over {
                        handed_over = false;
                        em.release();
                    }
                    if let Some(held) = held_left.take() {
                        let _ = std::fs::remove_file(held);
                    }
                    if let Some((id, path, code)) = ahead.take() {
                        made_ahead = make_ready(run, &spec, run_id, id, &path, code);
                    }
                }
                Observed::Line(stream, line) | Observed::Cut(stream, line) => {
                    if !in_read {
                        in_read = true;
                        env_watch.refresh(&mut em.redactor, folder);
                        em.hold();
                    }
                    let cut = matches!(seen, Observed::Cut(..));
                    let Some(line) = em.output_text(step_id, None, stream, line, cut) else {
                        return;
                    };
                    if log.is_some() {
                        log_lines.extend_from_slice(line.as_bytes());
                        log_lines.push(b'\n');
                    }
                    em.emit(EventKind::Output {
                        step_id: step_id.clone(),
                        host: None,
                        stream: stream.name().into(),
                        line: line.clone(),
                    });
                    // Only the last lines are kept (for the failure report): a step's whole
                    // output held in memory grew with it (117 MB for two million lines).
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
                Observed::Progress(stream, text) => em.stream_progress(step_id, None, stream, text),
                // Only the remote wrapper reports problems.
                Observed::Warning(_) => {}
                Observed::Held => em.emit(EventKind::Warning {
                    step_id: Some(step_id.clone()),
                    message: held_notice.to_string(),
                }),
                Observed::ReadDone => {
                    in_read = false;
                    if let Some(log) = log.as_mut()
                        && !log_lines.is_empty()
                    {
                        let _ = log.write_all(&log_lines);
                    }
                    log_lines.clear();
                    em.release();
                }
            };
            // Only the first attempt: a bash started ahead is started for it. One that does not
            // fit is killed here (dropped).
            let waiting = prestarted
                .take()
                .and_then(|mut bash: process::Prestarted| bash.fits(&spec).then_some(bash));
            let ended = process::run_group_from(&spec, &self.cancel, &mut observe, waiting);
            if made_ahead.is_some() {
                self.ahead = made_ahead.take();
            }
            // Not removed at the start because bash could not be started.
            if let Some(held) = held_left.take() {
                let _ = std::fs::remove_file(held);
            }
            // Every read ends with `ReadDone`; were one not to, nothing gathered stays unwritten.
            if let Some(log) = log.as_mut()
                && !log_lines.is_empty()
            {
                let _ = log.write_all(&log_lines);
            }
            self.em.release();
            // bash could not be started: the step is still recorded as started (and failed).
            record_start(&mut self.em, &mut log, &mut started);
            let ended = match ended {
                Ok(e) => e,
                Err(e) => {
                    let msg = format!("cannot start bash: {e}");
                    if let Some(log) = log.as_mut() {
                        let _ = writeln!(log, "{msg}");
                    }
                    tail.push_back(msg);
                    Ended::Exited(127)
                }
            };
            self.absorb_env_file(&[&block.id]);
            last = Some(ended);
            match ended {
                Ended::Exited(0) => break,
                Ended::Cancelled(_) => break,
                _ => {
                    if let Some(log) = log.as_mut() {
                        let _ =
                            writeln!(log, "── attempt {attempt} {} ──", describe(ended, timeout));
                    }
                }
            }
        }
        if let Some(e) = log.as_mut().and_then(|l| l.take_error()) {
            self.em.record_failed(&log_path, &e);
        }
        if let Some(log) = log.take() {
            process::close_later(log.into_file().into());
        }
        let ended = last.unwrap_or(Ended::Cancelled(self.cancel.level()));
        // The next step's script is written and this one succeeded: only a Ctrl-C can keep
        // the next from starting now. This step's end (progress.json) is recorded before it
        // starts, as resume needs; its event and its line wait for the next start and go out
        // with it, after the spawn instead of before (see `Engine::up_next`).
        if ended == Ended::Exited(0)
            && let Some(next) = self.ahead.as_ref().map(|a| a.id.clone())
        {
            self.em.hold();
            self.pre_start(&next);
        }
        let (status, exit_code, reason) = match ended {
            Ended::Exited(0) => (StepStatus::Succeeded, Some(0), None),
            Ended::Exited(_) | Ended::Killed(_) => (
                StepStatus::Failed,
                ended.code(),
                Some(describe(ended, timeout)),
            ),
            Ended::TimedOut => (StepStatus::TimedOut, None, Some(describe(ended, timeout))),
            Ended::Cancelled(_) => (
                StepStatus::Interrupted,
                None,
                Some("interrupted".to_string()),
            ),
        };
        let status = self.finish_block(
            block,
            status,
            exit_code,
            reason,
            attempt,
            started_at.elapsed(),
            lenient,
            tail.iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(String::as_str),
        );
        BlockResult {
            status,
            tail: tail.into_iter().collect(),
        }
    }

    /// The environment of a step: run variables, arguments, then `$NIXCMD_ENV` exports.
    pub(super) fn step_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("NIXCMD_RUN_ID".to_string(), self.state.run_id.clone()),
            ("NIXCMD_COMMAND".to_string(), self.cmd.name.clone()),
            (
                "NIXCMD_STATE".to_string(),
                self.run.state_dir().display().to_string(),
            ),
            (
                "NIXCMD_ENV".to_string(),
                self.run.env_file().display().to_string(),
            ),
            (
                "NIXCMD_DRY_RUN".to_string(),
                if self.opts.dry_run { "1" } else { "0" }.to_string(),
            ),
        ];
        env.extend(self.hosts_file_env());
        env.extend(self.opts.env.iter().cloned());
        env.extend(self.run.env_vars());
        env
    }

    /// Secrets exported through `$NIXCMD_ENV` are redacted from then on; lines of it that set
    /// nothing are warned about, as found after `steps` ran.
    pub(super) fn absorb_env_file(&mut self, steps: &[&str]) {
        let vars = self.run.env_vars();
        let extra = self.extra_secrets();
        self.em
            .redactor
            .add(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())), &extra);
        for problem in self.run.env_problems() {
            self.env_problem(steps, None, problem.to_string());
        }
    }

    fn sleep_unless_cancelled(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let at_start = self.cancel.level();
        while Instant::now() < until {
            if self.cancel.level() > at_start {
                return false;
            }
            std::thread::sleep(
                Duration::from_millis(20).min(until.saturating_duration_since(Instant::now())),
            );
        }
        true
    }
}

/// The next step made ready while the one before runs (see `Engine::up_next`).
pub(super) struct Ahead {
    pub id: String,
    /// Its bash started ahead, and the name its script waits under to be put in place when
    /// its turn comes; `None` when only its script was written.
    pub bash: Option<(process::Prestarted, PathBuf)>,
}

/// How a step's shell is started: `bash --noprofile --norc -Eeuo pipefail SCRIPT`.
fn bash_args(script: &Path) -> Vec<String> {
    vec![
        "--noprofile".to_string(),
        "--norc".to_string(),
        "-Eeuo".to_string(),
        "pipefail".to_string(),
        script.display().to_string(),
    ]
}

/// The token of a step's attempt (see [`GroupSpec::token`]).
fn step_token(run_id: &str, step: &str, attempt: u32) -> String {
    format!("{run_id}/{step}/{attempt}")
}

/// Makes step `id` (script `code` at `path`) ready while the step of `spec` runs: its bash
/// started ahead ([`process::prestart`]) with the same folder and environment (a step's
/// environment is the one before's unless that one exports through `$NIXCMD_ENV`; checked
/// when its turn comes), else only its script written. `None` when neither could be done:
/// the script is written when its turn comes.
fn make_ready(
    run: &RunDir,
    spec: &GroupSpec,
    run_id: &str,
    id: String,
    path: &Path,
    code: &[u8],
) -> Option<Ahead> {
    if process::may_prestart(spec.env) {
        let args = bash_args(path);
        let token = step_token(run_id, &id, 1);
        let next = GroupSpec {
            program: spec.program,
            args: &args,
            cwd: spec.cwd,
            env: spec.env,
            stdin: None,
            timeout: spec.timeout,
            grace: spec.grace,
            token: &token,
        };
        if let Ok(ready) = run.script_ahead(path, code) {
            let held = ready.held.clone();
            match process::prestart(&next, ready) {
                Ok(bash) => {
                    return Some(Ahead {
                        id,
                        bash: Some((bash, held)),
                    });
                }
                // The script is put in place now, as without a bash started ahead.
                Err(_) => {
                    let placed = run.place_script(&held, path).is_ok();
                    let _ = std::fs::remove_file(&held);
                    if placed {
                        return Some(Ahead { id, bash: None });
                    }
                }
            }
        }
    }
    run.write_script(path, code)
        .is_ok()
        .then_some(Ahead { id, bash: None })
}

fn describe(ended: Ended, timeout: Duration) -> String {
    match ended {
        Ended::TimedOut => format!("timed out after {}", crate::duration::display(timeout)),
        Ended::Cancelled(_) => "interrupted".to_string(),
        Ended::Exited(_) | Ended::Killed(_) => process::exit_description(ended).unwrap_or_default(),
    }
}
