//! `RunStatus`, what the run tools answer (DESIGN.md §7), and the [`Snapshot`] it is read
//! from: a run's state as folded from the engine's events. This module only folds events and
//! shapes answers; it starts nothing and waits for nothing.

use crate::event::{Event, EventKind, PlanItem, RunStatus, StepStatus};
use schemars::JsonSchema;
use serde::Serialize;
use std::collections::VecDeque;

/// At most this many bytes of output in a status's `log_tail`.
pub const LOG_TAIL_BYTES: usize = 4096;
/// The most text one page of `run_logs` holds (it holds at least one line).
pub const LOG_PAGE_BYTES: usize = 64 * 1024;
/// Output lines kept in memory per run; older ones are in the run folder's logs.
const LOG_LINES_KEPT: usize = 50_000;

/// Where a run stands, in the words of the MCP tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum McpStatus {
    /// Steps are executing.
    Running,
    /// Stopped before a `confirm` step: only the user can let it go on (see `gate`), asked
    /// in the client now (`gate.waiting_for` = `elicitation`) or through `confirm_gate`.
    AwaitingConfirmation,
    Succeeded,
    /// A step or check failed (rollback ran), or prerequisites were not met.
    Failed,
    /// A confirmation was declined: nothing past the gate ran, what ran was rolled back.
    Aborted,
    /// Stopped by `run_cancel`: what ran was rolled back.
    Cancelled,
}

impl McpStatus {
    pub fn is_terminal(self) -> bool {
        !matches!(self, McpStatus::Running | McpStatus::AwaitingConfirmation)
    }

    /// The engine's status in MCP words. `cancelled`: `run_cancel` was asked for this run.
    pub fn from_engine(status: RunStatus, cancelled: bool) -> McpStatus {
        match status {
            RunStatus::Running => McpStatus::Running,
            RunStatus::AwaitingConfirmation => McpStatus::AwaitingConfirmation,
            RunStatus::Succeeded => McpStatus::Succeeded,
            RunStatus::Failed | RunStatus::PrerequisitesFailed | RunStatus::RollbackIncomplete => {
                McpStatus::Failed
            }
            RunStatus::Declined if cancelled => McpStatus::Cancelled,
            RunStatus::Declined => McpStatus::Aborted,
            RunStatus::Interrupted => McpStatus::Cancelled,
        }
    }
}

/// One step (or check, or rollback block that ran) of a run.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StepOut {
    pub id: String,
    /// `prerequisite`, `step`, `check` or `rollback`.
    pub phase: String,
    /// `pending`, `running`, `succeeded`, `warning`, `failed`, `timed_out`, `interrupted`,
    /// `skipped`, `declined`, `awaiting_confirmation` or `not_runnable`.
    pub status: String,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<u64>,
    /// Why it did not succeed, in nixcmd's words ("timed out after 30s", "not runnable: …").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A confirmation the run is waiting for.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct GateOut {
    pub gate_id: String,
    pub step_id: String,
    /// The question the runbook asks.
    pub message: String,
    /// The one-time token `confirm_gate` needs. Pass it on only when the user approved.
    pub token: String,
    /// `elicitation`: the user is being asked in the client right now; `confirm_gate`: the
    /// run waits until the user approves or declines through the `confirm_gate` tool.
    pub waiting_for: String,
}

/// What the run tools answer.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunStatusOut {
    pub run_id: String,
    pub command: String,
    pub status: McpStatus,
    /// The process-style exit code once the run stopped (0 ok, 1 failed, 3 confirmation
    /// needed or declined, 4 prerequisites not met, 5 rollback incomplete, 130 interrupted).
    pub exit_code: Option<i32>,
    pub dry_run: bool,
    pub current_step: Option<String>,
    pub completed_steps: usize,
    pub total_steps: usize,
    pub steps: Vec<StepOut>,
    /// Present while the run waits for a confirmation.
    pub gate: Option<GateOut>,
    pub failed_step: Option<String>,
    pub warnings: Vec<String>,
    /// Checks a person must make by hand (listed, never run).
    pub manual_checks: Vec<String>,
    /// Rollback blocks that failed: what must now be done by hand.
    pub left_to_do: Vec<String>,
    /// The runbook's troubleshooting advice that best matches the failure.
    pub troubleshooting: Option<String>,
    /// The last output lines, at most 4 KB.
    pub log_tail: String,
    /// While a step runs: what it is printing on a line not ended yet (a progress bar's
    /// newest state, a prompt such as `Building system... ` before minutes of work), as
    /// `[step] text`. The line goes to `log_tail` when it ends.
    pub live_output: Option<String>,
    /// The run folder (state.json, progress.json, events.ndjson, logs/).
    pub run_dir: String,
    /// What to do next.
    pub next: String,
}

/// One line of a step's output.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LogLine {
    /// The position of the line in the run's output (0-based), for paging.
    pub index: u64,
    pub step_id: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub text: String,
}

/// A page of a run's output.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct LogsOut {
    pub run_id: String,
    pub step_id: Option<String>,
    /// Index of the first line returned, among the lines selected (all steps or one).
    pub offset: u64,
    /// Lines selected in all (all steps, or the one step).
    pub total_lines: u64,
    pub lines: Vec<LogLine>,
    /// Pass as `offset` for the following page; absent at the end.
    pub next_offset: Option<u64>,
    /// Lines before this offset are no longer in memory (read them with `nixcmd log RUN`).
    pub first_available: u64,
}

/// A gate a run paused at, from its `gate` event.
#[derive(Debug, Clone)]
pub struct PausedGate {
    pub step_id: String,
    pub message: String,
    /// The command that continues the run once the gate is approved
    /// (`nixcmd resume RUN --approve GATE`).
    pub resume: String,
}

/// A run as folded from its events.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub engine_status: RunStatus,
    pub exit_code: Option<i32>,
    pub current_step: Option<String>,
    pub steps: Vec<StepOut>,
    pub total_steps: usize,
    pub gate: Option<GateOut>,
    pub plan: Vec<PlanItem>,
    pub manual_checks: Vec<String>,
    pub warnings: Vec<String>,
    pub left_to_do: Vec<String>,
    pub failed_step: Option<String>,
    pub troubleshooting: Option<String>,
    pub run_dir: String,
    /// An error that kept the engine from finishing (it panicked).
    pub crashed: Option<String>,
    /// The gate the run paused at, as its `gate` event tells it (until it runs again): what
    /// a run this server cannot answer waits for, and the command that continues it.
    pub paused_at: Option<PausedGate>,
    /// (step, text): the line a running step is still printing, until it ends.
    live_output: Option<(String, String)>,
    log: VecDeque<LogLine>,
    next_index: u64,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            engine_status: RunStatus::Running,
            exit_code: None,
            current_step: None,
            steps: Vec::new(),
            total_steps: 0,
            gate: None,
            plan: Vec::new(),
            manual_checks: Vec::new(),
            warnings: Vec::new(),
            left_to_do: Vec::new(),
            failed_step: None,
            troubleshooting: None,
            run_dir: String::new(),
            crashed: None,
            paused_at: None,
            live_output: None,
            log: VecDeque::new(),
            next_index: 0,
        }
    }
}

fn step_status(s: StepStatus) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| s.label().to_string())
}

impl Snapshot {
    /// Folds one event into the snapshot.
    pub fn apply(&mut self, event: Event) {
        match event.kind {
            EventKind::RunStarted {
                total_steps,
                plan,
                manual_checks,
                run_dir,
                ..
            } => {
                self.engine_status = RunStatus::Running;
                self.exit_code = None;
                self.paused_at = None;
                self.total_steps = total_steps;
                self.manual_checks = manual_checks;
                self.run_dir = run_dir;
                for item in plan.iter().filter(|i| i.phase != "rollback") {
                    if let Some(step) = self.steps.iter_mut().find(|s| s.id == item.step_id) {
                        // Resumed: done steps keep their record; the rest is to do again.
                        if item.will_run {
                            step.status = "pending".into();
                        }
                        continue;
                    }
                    self.steps.push(StepOut {
                        id: item.step_id.clone(),
                        phase: item.phase.clone(),
                        status: if item.will_run { "pending" } else { "skipped" }.into(),
                        exit_code: None,
                        duration_ms: None,
                        reason: None,
                    });
                }
                self.plan = plan;
            }
            EventKind::StepStarted { step_id, phase, .. } => {
                self.line_ended(&step_id);
                let step = self.step_mut(&step_id, &phase);
                step.status = "running".into();
                self.current_step = Some(step_id);
            }
            EventKind::Output {
                step_id,
                stream,
                line,
                ..
            } => {
                self.line_ended(&step_id);
                self.push_log(step_id, stream, line)
            }
            EventKind::Gate {
                step_id,
                message,
                resume,
                ..
            } => {
                self.paused_at = Some(PausedGate {
                    step_id: step_id.clone(),
                    message,
                    resume,
                });
                self.current_step = Some(step_id.clone());
                if let Some(step) = self.steps.iter_mut().find(|s| s.id == step_id) {
                    step.status = "awaiting_confirmation".into();
                }
            }
            EventKind::StepFinished {
                step_id,
                status,
                exit_code,
                duration_ms,
                reason,
                host,
                ..
            } => {
                self.line_ended(&step_id);
                let step = self.step_mut(&step_id, "step");
                step.status = step_status(status);
                step.exit_code = exit_code;
                step.duration_ms = Some(duration_ms);
                step.reason = match (reason, host) {
                    (Some(r), Some(h)) => Some(format!("{h}: {r}")),
                    (r, _) => r,
                };
                if self.current_step.as_deref() == Some(step_id.as_str()) {
                    self.current_step = None;
                }
            }
            EventKind::Warning { message, .. } => {
                if !self.warnings.contains(&message) {
                    self.warnings.push(message);
                }
            }
            EventKind::RollbackStarted { reason, blocks } => self.push_log(
                String::new(),
                "nixcmd".into(),
                format!("rollback ({reason}): {}", blocks.join(", ")),
            ),
            EventKind::RunFinished {
                status,
                exit_code,
                failed_step,
                warnings,
                manual_checks,
                left_to_do,
                troubleshooting,
                run_dir,
                ..
            } => {
                self.engine_status = status;
                self.exit_code = Some(exit_code);
                self.live_output = None;
                self.failed_step = failed_step;
                for w in warnings {
                    if !self.warnings.contains(&w) {
                        self.warnings.push(w);
                    }
                }
                self.manual_checks = manual_checks;
                self.left_to_do = left_to_do;
                self.troubleshooting = troubleshooting.map(|t| format!("{}\n{}", t.title, t.text));
                self.run_dir = run_dir;
                if status != RunStatus::AwaitingConfirmation {
                    self.current_step = None;
                    self.gate = None;
                    self.paused_at = None;
                }
            }
        }
    }

    /// `step_id` is printing `text` on a line not ended yet (see [`crate::event::Sink::progress`]).
    pub fn printing(&mut self, step_id: &str, text: &str) {
        match &mut self.live_output {
            Some((step, shown)) => {
                step.clear();
                step.push_str(step_id);
                shown.clear();
                shown.push_str(text);
            }
            None => self.live_output = Some((step_id.to_string(), text.to_string())),
        }
    }

    /// What [`Snapshot::printing`] said, as `[step] text`.
    pub fn live_output(&self) -> Option<String> {
        self.live_output
            .as_ref()
            .map(|(step, text)| format!("[{step}] {text}"))
    }

    /// A line of `step_id` ended, or the step did: what it was printing is no longer live.
    fn line_ended(&mut self, step_id: &str) {
        if self
            .live_output
            .as_ref()
            .is_some_and(|(step, _)| step == step_id)
        {
            self.live_output = None;
        }
    }

    fn step_mut(&mut self, id: &str, phase: &str) -> &mut StepOut {
        let at = match self.steps.iter().position(|s| s.id == id) {
            Some(i) => i,
            None => {
                self.steps.push(StepOut {
                    id: id.to_string(),
                    phase: phase.to_string(),
                    status: "pending".into(),
                    exit_code: None,
                    duration_ms: None,
                    reason: None,
                });
                self.steps.len() - 1
            }
        };
        &mut self.steps[at]
    }

    fn push_log(&mut self, step_id: String, stream: String, text: String) {
        self.log.push_back(LogLine {
            index: self.next_index,
            step_id,
            stream,
            text,
        });
        self.next_index += 1;
        if self.log.len() > LOG_LINES_KEPT {
            self.log.pop_front();
        }
    }

    /// Steps (and checks) that ended one way or another, for progress.
    pub fn completed_steps(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.phase != "rollback")
            .filter(|s| {
                !matches!(
                    s.status.as_str(),
                    "pending" | "running" | "awaiting_confirmation"
                )
            })
            .count()
    }

    /// The last output lines, at most [`LOG_TAIL_BYTES`], cut at a line boundary.
    pub fn log_tail(&self) -> String {
        let mut lines: Vec<String> = Vec::new();
        let mut size = 0;
        for l in self.log.iter().rev() {
            let line = if l.step_id.is_empty() {
                l.text.clone()
            } else {
                format!("[{}] {}", l.step_id, l.text)
            };
            if size + line.len() + 1 > LOG_TAIL_BYTES {
                if lines.is_empty() {
                    // One huge line: keep its end.
                    let mut cut = line.len().saturating_sub(LOG_TAIL_BYTES - 1);
                    while !line.is_char_boundary(cut) {
                        cut += 1;
                    }
                    lines.push(line[cut..].to_string());
                }
                break;
            }
            size += line.len() + 1;
            lines.push(line);
        }
        lines.reverse();
        lines.join("\n")
    }

    /// A page of output: `offset`/`limit` count lines among those selected; without an
    /// offset, the last `limit` lines. Fewer when they hold more than `LOG_PAGE_BYTES`.
    pub fn logs(
        &self,
        run_id: &str,
        step_id: Option<&str>,
        offset: Option<u64>,
        limit: u64,
    ) -> LogsOut {
        let selected: Vec<&LogLine> = self
            .log
            .iter()
            .filter(|l| step_id.is_none_or(|s| l.step_id == s))
            .collect();
        let dropped = self.next_index - self.log.len() as u64;
        // Offsets count every selected line ever written; lines dropped from memory are only
        // counted exactly when no step filter is given.
        let base = if step_id.is_none() { dropped } else { 0 };
        let total = base + selected.len() as u64;
        // A page holds at most `LOG_PAGE_BYTES` of text, and at least one line: a step's
        // long lines would otherwise make an answer of megabytes, which a client refuses.
        let fits = |i: usize, size: &mut usize, l: &LogLine| {
            *size += l.text.len();
            i == 0 || *size <= LOG_PAGE_BYTES
        };
        let offset = match offset {
            Some(offset) => offset.max(base),
            None => {
                let mut size = 0;
                let n = (selected.iter().rev().take(limit as usize).enumerate())
                    .take_while(|(i, l)| fits(*i, &mut size, l))
                    .count();
                total - n as u64
            }
        };
        let start = (offset - base) as usize;
        let mut size = 0;
        let lines: Vec<LogLine> = (selected.iter().skip(start).take(limit as usize).enumerate())
            .take_while(|(i, l)| fits(*i, &mut size, l))
            .map(|(_, l)| (*l).clone())
            .collect();
        let end = offset + lines.len() as u64;
        LogsOut {
            run_id: run_id.to_string(),
            step_id: step_id.map(str::to_string),
            offset,
            total_lines: total,
            next_offset: (end < total).then_some(end),
            lines,
            first_available: base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind) -> Event {
        Event {
            seq: 1,
            ts: "t".into(),
            run_id: "r".into(),
            kind,
        }
    }

    fn output(snap: &mut Snapshot, step: &str, text: &str) {
        snap.apply(ev(EventKind::Output {
            step_id: step.into(),
            host: None,
            stream: "stdout".into(),
            line: text.into(),
        }));
    }

    #[test]
    fn logs_page_from_the_tail_by_default() {
        let mut s = Snapshot::default();
        for i in 0..10 {
            output(
                &mut s,
                if i % 2 == 0 { "a" } else { "b" },
                &format!("line {i}"),
            );
        }
        let page = s.logs("r", None, None, 3);
        assert_eq!(page.offset, 7);
        assert_eq!(page.total_lines, 10);
        assert_eq!(page.next_offset, None);
        assert_eq!(page.lines[0].text, "line 7");
        let first = s.logs("r", None, Some(0), 4);
        assert_eq!(first.next_offset, Some(4));
        let only_b = s.logs("r", Some("b"), Some(1), 2);
        assert_eq!(only_b.total_lines, 5);
        let texts: Vec<&str> = only_b.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["line 3", "line 5"]);
    }

    /// A page holds at most `LOG_PAGE_BYTES` of text, and at least one line: 200 long lines
    /// made one answer of 20 MB, more than an MCP client takes (Claude Code refuses a tool
    /// result of more than 25,000 tokens), so the output could not be read at all.
    #[test]
    fn a_page_of_long_lines_stops_at_its_byte_budget() {
        let mut s = Snapshot::default();
        let long = |i: usize| format!("{i:0>5}{}", "x".repeat(LOG_PAGE_BYTES / 4 - 5));
        for i in 0..10 {
            output(&mut s, "a", &long(i));
        }
        output(&mut s, "a", &"y".repeat(LOG_PAGE_BYTES * 2));
        output(&mut s, "a", "last");
        let texts = |page: &LogsOut| -> Vec<String> {
            page.lines
                .iter()
                .map(|l| l.text.chars().take(5).collect())
                .collect()
        };
        // From an offset: as many lines as fit, and where to go on.
        let page = s.logs("r", None, Some(2), 200);
        assert_eq!(texts(&page), ["00002", "00003", "00004", "00005"]);
        assert_eq!((page.offset, page.next_offset), (2, Some(6)));
        // The tail: the last lines that fit, from a later offset; nothing follows.
        let tail = s.logs("r", None, None, 200);
        assert_eq!((tail.offset, tail.next_offset), (11, None));
        assert_eq!(tail.lines[0].text, "last");
        let before = s.logs("r", None, Some(10), 200);
        assert_eq!((before.offset, before.next_offset), (10, Some(11)));
        assert_eq!(before.lines.len(), 1, "one line even when it is larger");
        let tail = s.logs("r", None, Some(6), 200);
        assert_eq!(texts(&tail), ["00006", "00007", "00008", "00009"]);
        assert_eq!(tail.next_offset, Some(10));
        // Short lines: `limit` decides, as before.
        assert_eq!(s.logs("r", None, Some(0), 3).next_offset, Some(3));
    }

    #[test]
    fn log_tail_is_at_most_4_kb() {
        let mut s = Snapshot::default();
        for i in 0..500 {
            output(&mut s, "a", &format!("{i:0>40}"));
        }
        let tail = s.log_tail();
        assert!(tail.len() <= LOG_TAIL_BYTES);
        assert!(tail.ends_with(&format!("{:0>40}", 499)));
        output(&mut s, "a", &"é".repeat(5000));
        let tail = s.log_tail();
        assert!(tail.len() <= LOG_TAIL_BYTES && tail.ends_with('é'));
    }

    #[test]
    fn engine_statuses_map_to_mcp_words() {
        use McpStatus as M;
        assert_eq!(M::from_engine(RunStatus::Declined, false), M::Aborted);
        assert_eq!(M::from_engine(RunStatus::Declined, true), M::Cancelled);
        assert_eq!(M::from_engine(RunStatus::Interrupted, false), M::Cancelled);
        assert_eq!(
            M::from_engine(RunStatus::PrerequisitesFailed, false),
            M::Failed
        );
        assert!(!M::AwaitingConfirmation.is_terminal());
    }
}
