//! One run the MCP server owns: its [`Snapshot`] (folded from the engine's events by a
//! sink), its gate mailbox and cancellation, and the `RunStatus` it answers with. Threads and
//! resumes are the registry's business; this only holds and reports state.

use crate::event::{Event, RunStatus, Sink};
use crate::mcp::approver::GateBox;
use crate::mcp::status::{GateOut, McpStatus, RunStatusOut, Snapshot};
use crate::process::Cancel;
use crate::run::approve::GateRequest;
use crate::run::records;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::watch;

/// One run owned by the server.
pub struct RunHandle {
    pub run_id: String,
    pub command: String,
    pub dry_run: bool,
    pub cancel: Cancel,
    pub gates: GateBox,
    snap: Mutex<Snapshot>,
    pub(super) changed: watch::Sender<u64>,
    /// An engine thread is executing (a first run or a resume).
    pub(super) active: AtomicBool,
    /// Started outside this server (`nixcmd run`, another server): a read-only view folded
    /// from its `events.ndjson`; it cannot be cancelled or confirmed from here.
    pub external: bool,
    /// A run of this server that another process took over (`nixcmd resume` from a
    /// terminal): read from its records like an external run, as it goes on there.
    pub taken_over: bool,
    /// Where an external run's records are, and how far they were read.
    records: Option<Mutex<Records>>,
}

/// The records an external run is read from.
struct Records {
    dir: PathBuf,
    /// Bytes of `events.ndjson` folded in so far (whole lines).
    read: u64,
    /// From `state.json`: the gate `nixcmd resume RUN --approve` names.
    gate_to_approve: Option<String>,
}

impl RunHandle {
    pub(super) fn new(run_id: &str, command: &str, dry_run: bool) -> RunHandle {
        RunHandle {
            run_id: run_id.to_string(),
            command: command.to_string(),
            dry_run,
            cancel: Cancel::default(),
            gates: GateBox::default(),
            snap: Mutex::new(Snapshot::default()),
            changed: watch::channel(0).0,
            active: AtomicBool::new(false),
            external: false,
            taken_over: false,
            records: None,
        }
    }

    /// A run recorded on disk by someone else (or a run of this server that another process
    /// took over: `taken_over`), as its records in `dir` tell it now. See [`RunHandle::refresh`].
    pub(super) fn external(
        run_id: &str,
        command: &str,
        dry_run: bool,
        dir: PathBuf,
        taken_over: bool,
    ) -> RunHandle {
        let mut run = RunHandle::new(run_id, command, dry_run);
        run.external = true;
        run.taken_over = taken_over;
        run.records = Some(Mutex::new(Records {
            dir,
            read: 0,
            gate_to_approve: None,
        }));
        run.refresh();
        run
    }

    /// Reads what the records of an external run added since the last reading: the events
    /// appended to `events.ndjson` (whole lines only: one being written is read next time),
    /// and whether its process is still there; a run left `running` by a process that is
    /// gone stopped for good.
    pub(super) fn refresh(&self) {
        let Some(records) = &self.records else {
            return;
        };
        let mut rec = records.lock().unwrap_or_else(|e| e.into_inner());
        // Whether it lives, before its events: a run that ends in between then reads as
        // ended, not as one whose process is gone.
        let state = records::read_state(&rec.dir).ok();
        let alive = state.as_ref().is_some_and(records::run_process_alive);
        if let Some(state) = &state {
            rec.gate_to_approve = state.gate_to_approve().map(str::to_string);
        }
        let mut snap = self.snap();
        if let Ok(file) = crate::records_io::open_record(&rec.dir.join("events.ndjson")) {
            use std::io::{BufRead, Seek};
            let mut reader = std::io::BufReader::new(file);
            // A line at a time: a chatty run's events are hundreds of megabytes, and the
            // snapshot keeps only the last lines of output. A line that is not an event (a
            // torn line, its writer killed mid-append) is skipped.
            if reader.seek(std::io::SeekFrom::Start(rec.read)).is_ok() {
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(n) if n > 0 && line.last() == Some(&b'\n') => {
                            rec.read += n as u64;
                            if let Ok(event) = serde_json::from_slice::<Event>(&line) {
                                snap.apply(event);
                            }
                        }
                        _ => break,
                    }
                }
            }
        }
        snap.crashed = None;
        if !alive && snap.engine_status == RunStatus::Running && snap.gate.is_none() {
            let run_id = &self.run_id;
            let at = snap
                .current_step
                .as_deref()
                .map(|s| format!(" during step `{s}`"))
                .unwrap_or_default();
            let left = crate::process::left_behind(run_id);
            snap.crashed = Some(if left.is_empty() {
                format!(
                    "because its nixcmd process is gone (killed or crashed){at}. The user can finish it with `nixcmd resume {run_id}`, which runs that step again"
                )
            } else {
                // `resume` refuses while they run: say so rather than send the user there.
                let pids: Vec<String> = left.iter().map(|p| p.pid.to_string()).collect();
                format!(
                    "because its nixcmd process is gone (killed or crashed){at}, and that step still runs unwatched (pid {}). Once it has ended, the user can finish the run with `nixcmd resume {run_id}`, which runs that step again",
                    pids.join(" ")
                )
            });
        }
        drop(snap);
        self.changed.send_modify(|v| *v += 1);
    }

    /// What `nixcmd resume RUN --approve` names for an external run paused at a gate.
    fn gate_to_approve(&self) -> Option<String> {
        self.records.as_ref().and_then(|r| {
            r.lock()
                .unwrap_or_else(|e| e.into_inner())
                .gate_to_approve
                .clone()
        })
    }

    fn snap(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snap.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        f(&mut self.snap());
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Publishes the gate the run waits at.
    pub fn show_gate(&self, gate_id: &str, gate: &GateRequest, token: &str, waiting_for: &str) {
        let out = GateOut {
            gate_id: gate_id.to_string(),
            step_id: gate.step_id.clone(),
            message: gate.message.clone(),
            token: token.to_string(),
            waiting_for: waiting_for.to_string(),
        };
        self.update(|s| {
            s.gate = Some(out);
            s.current_step = Some(gate.step_id.clone());
        });
    }

    pub fn clear_gate(&self) {
        self.update(|s| s.gate = None);
    }

    /// The run is about to be resumed: no longer waiting.
    pub(super) fn mark_resuming(&self) {
        self.update(|s| {
            s.gate = None;
            s.engine_status = crate::event::RunStatus::Running;
            s.exit_code = None;
        });
    }

    pub fn status(&self) -> McpStatus {
        let s = self.snap();
        self.status_of(&s)
    }

    fn status_of(&self, s: &Snapshot) -> McpStatus {
        if s.crashed.is_some() && !self.is_active() {
            return McpStatus::Failed;
        }
        let st = McpStatus::from_engine(s.engine_status, self.cancel.level() > 0);
        if st == McpStatus::Running && s.gate.is_some() {
            McpStatus::AwaitingConfirmation
        } else {
            st
        }
    }

    /// Whether a waiting tool call should answer now: the run ended, or it waits for
    /// something only the caller can bring (a `confirm_gate`).
    pub(super) fn settled(&self) -> bool {
        if self.external {
            // Nothing here will change it: answer with what the records say now.
            return true;
        }
        let s = self.snap();
        match self.status_of(&s) {
            McpStatus::Running => false,
            // Settled once the engine paused (or blocks at a nested gate) for `confirm_gate`;
            // an elicitation is the user answering right now.
            McpStatus::AwaitingConfirmation => {
                s.gate
                    .as_ref()
                    .is_none_or(|g| g.waiting_for != "elicitation")
                    && (!self.is_active() || self.gates.engine_waiting())
            }
            _ => true,
        }
    }

    pub fn report(&self) -> RunStatusOut {
        let s = self.snap();
        let status = self.status_of(&s);
        let next = next_step(self, &s, status);
        RunStatusOut {
            run_id: self.run_id.clone(),
            command: self.command.clone(),
            status,
            exit_code: if status.is_terminal() || status == McpStatus::AwaitingConfirmation {
                s.exit_code
            } else {
                None
            },
            dry_run: self.dry_run,
            current_step: s.current_step.clone(),
            completed_steps: s.completed_steps(),
            total_steps: s.total_steps,
            steps: s.steps.clone(),
            gate: s.gate.clone(),
            failed_step: s.failed_step.clone(),
            warnings: s.warnings.clone(),
            manual_checks: s.manual_checks.clone(),
            left_to_do: s.left_to_do.clone(),
            troubleshooting: s.troubleshooting.clone(),
            log_tail: s.log_tail(),
            live_output: s.live_output(),
            run_dir: s.run_dir.clone(),
            next,
        }
    }

    pub fn logs(
        &self,
        step_id: Option<&str>,
        offset: Option<u64>,
        limit: u64,
    ) -> crate::mcp::status::LogsOut {
        self.snap().logs(&self.run_id, step_id, offset, limit)
    }

    pub fn plan(&self) -> (Vec<crate::event::PlanItem>, Vec<String>) {
        let s = self.snap();
        (s.plan.clone(), s.manual_checks.clone())
    }

    pub(super) fn progress(&self) -> (f64, usize, String) {
        let s = self.snap();
        let done = s.completed_steps();
        let running = s.current_step.is_some() && s.gate.is_none();
        let value = done as f64 + if running { 0.5 } else { 0.0 };
        let message = match (&s.current_step, &s.gate) {
            (_, Some(g)) => format!("waiting for confirmation of `{}`", g.step_id),
            (Some(step), None) => format!("step `{step}` ({}/{})", done + 1, s.total_steps),
            (None, None) => format!("{done}/{} steps done", s.total_steps),
        };
        (value, s.total_steps, message)
    }
}

/// The "what now" line of a status, for the model.
fn next_step(run: &RunHandle, s: &Snapshot, status: McpStatus) -> String {
    if run.external {
        return next_step_outside(run, s, status);
    }
    next_step_here(run, s, status)
}

/// The "what now" of a run that goes on (or went on) in another process: this server can
/// follow it, not stop it or answer its gates.
fn next_step_outside(run: &RunHandle, s: &Snapshot, status: McpStatus) -> String {
    let id = &run.run_id;
    let outside = if run.taken_over {
        "The run was taken over outside this server (`nixcmd resume` from a terminal)"
    } else {
        "The run was started outside this server (`nixcmd run` in a terminal, CI or another server)"
    };
    match status {
        McpStatus::Running => format!(
            "{outside} and goes on there: call run_status {{\"run_id\": \"{id}\", \"wait_seconds\": 50}} to follow it. Only the user can stop it, where it runs (Ctrl-C there); run_cancel cannot."
        ),
        McpStatus::AwaitingConfirmation => {
            let (step, question, approve) = match &s.paused_at {
                Some(g) => (
                    g.step_id.clone(),
                    format!(": \"{}\"", g.message),
                    g.resume.clone(),
                ),
                None => {
                    let step = run
                        .gate_to_approve()
                        .or_else(|| s.current_step.clone())
                        .unwrap_or_else(|| "STEP".to_string());
                    let approve = format!("nixcmd resume {id} --approve {step}");
                    (step, String::new(), approve)
                }
            };
            format!(
                "{outside} and is paused before step `{step}`, which needs the user's confirmation{question}. Only the user can answer it, from a terminal: `{approve}` runs the step; `nixcmd resume {id} --decline` stops the run and rolls back what ran. confirm_gate cannot answer it. Show the user the question and the step's code (describe_command); never approve on the user's behalf."
            )
        }
        _ if run.taken_over => format!(
            "The run was finished outside this server (`nixcmd resume` from a terminal). {}",
            next_step_here(run, s, status)
        ),
        _ => next_step_here(run, s, status),
    }
}

/// The "what now" of a run of this server (and of any run that ended).
fn next_step_here(run: &RunHandle, s: &Snapshot, status: McpStatus) -> String {
    let id = &run.run_id;
    match status {
        McpStatus::Running => format!(
            "The run goes on in the server: call run_status {{\"run_id\": \"{id}\"}} to follow it (it waits up to 50 s). run_cancel stops it and rolls back."
        ),
        McpStatus::AwaitingConfirmation => match &s.gate {
            Some(g) if g.waiting_for == "elicitation" => format!(
                "The user is being asked in the client to confirm step `{}`; call run_status to wait for the answer.",
                g.step_id
            ),
            Some(g) => format!(
                "Step `{}` needs the user's confirmation: \"{}\". Show the user the question and the step's code (describe_command), then call confirm_gate with run_id, gate_id \"{}\", the token and the user's answer. Never approve on the user's behalf.",
                g.step_id, g.message, g.gate_id
            ),
            None => "The run waits for a confirmation.".to_string(),
        },
        McpStatus::Succeeded if !s.manual_checks.is_empty() => format!(
            "Done. Ask the user to make the manual checks: {}",
            s.manual_checks.join("; ")
        ),
        McpStatus::Succeeded => "Done.".to_string(),
        McpStatus::Failed if !s.left_to_do.is_empty() => format!(
            "Rollback incomplete: tell the user what is left to do by hand (left_to_do). Logs: run_logs {{\"run_id\": \"{id}\"}}."
        ),
        McpStatus::Failed => match &s.failed_step {
            Some(step) => format!(
                "Step `{step}` failed and what ran was rolled back. Read run_logs {{\"run_id\": \"{id}\", \"step_id\": \"{step}\"}} and the troubleshooting advice before trying again."
            ),
            None => match &s.crashed {
                Some(e) => format!("The run stopped {e}"),
                None => "The run failed; what ran was rolled back.".to_string(),
            },
        },
        McpStatus::Aborted => {
            "The confirmation was declined: nothing past the gate ran, and what ran was rolled back."
                .to_string()
        }
        McpStatus::Cancelled => "Cancelled: what ran was rolled back.".to_string(),
    }
}

/// Folds the engine's events (as written, redacted) into the run's snapshot, a flush at a
/// time: the output lines of one read of a chatty step take the lock and wake the waiting
/// tool calls once, not once per line (a million lines took 2.3 s more than on the command
/// line).
pub(super) struct RegistrySink {
    run: std::sync::Arc<RunHandle>,
    pending: Vec<Event>,
}

impl RegistrySink {
    pub(super) fn new(run: std::sync::Arc<RunHandle>) -> Self {
        RegistrySink {
            run,
            pending: Vec::new(),
        }
    }
}

impl Sink for RegistrySink {
    /// Kept for the next status, without waking the waiting tool calls: a progress bar
    /// redraws itself many times a second, and a wait ends on what settles the run.
    fn progress(&mut self, step_id: &str, _: Option<&str>, text: &str) {
        self.run.snap().printing(step_id, text);
    }

    fn event(&mut self, event: &Event, line: &str) {
        // The line is the redacted form of the event: use it, not the raw event.
        let event = serde_json::from_str::<Event>(line).unwrap_or_else(|_| event.clone());
        self.pending.push(event);
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = &mut self.pending;
        self.run.update(|s| {
            for event in pending.drain(..) {
                s.apply(event);
            }
        });
    }
}

impl Drop for RegistrySink {
    /// Nothing gathered is lost, whatever ended the run.
    fn drop(&mut self) {
        self.flush();
    }
}
