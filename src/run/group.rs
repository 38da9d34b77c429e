//! Parallel steps on this machine: consecutive steps with the same `group=NAME` run at the
//! same time, at most `parallel=N` of them (the largest `parallel` among the members, else 5).
//! The run waits for the whole group; output and logs stay per step. A critical failure lets
//! the members in flight finish, starts none of the others, and the run then rolls back every
//! member that started (their compensations were registered as each one started).
//! Members with `hosts=` are not grouped: they fan out on their own.

use crate::command::{Block, OnFail, Phase};
use crate::event::{RunStatus, StepStatus, now};
use crate::run::engine::{DEFAULT_BACKOFF, DEFAULT_TIMEOUT, Engine, GateResult, step_started};
use crate::run::fanout::{DEFAULT_PARALLEL, record_lines};
use crate::run::jobs::{self, Job, Policy, Report, Runner};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;

/// What the engine's main loop does after a group.
pub enum Flow<'b> {
    /// A member needs a confirmation nobody can give now.
    Pause(&'b Block),
    /// A member's confirmation was declined.
    Declined(String),
    /// Every member finished (or was skipped): go on.
    Done,
    /// The run stops: status, the failed member, its last lines.
    Failed(RunStatus, String, Vec<String>),
}

fn groupable(b: &Block) -> bool {
    b.runnable && !b.attrs.always && b.attrs.hosts.is_none() && b.attrs.group.is_some()
}

impl<'a> Engine<'a> {
    /// The hook in the main loop: `Some` when `block` starts a group of two or more steps.
    pub(super) fn group_hook(&mut self, block: &'a Block) -> Option<Flow<'a>> {
        if block.phase != Phase::Step || !groupable(block) {
            return None;
        }
        let cmd: &'a crate::command::Command = self.cmd;
        let start = cmd.steps.iter().position(|b| std::ptr::eq(b, block))?;
        let members: Vec<&'a Block> = cmd.steps[start..]
            .iter()
            .take_while(|b| groupable(b) && b.attrs.group == block.attrs.group)
            .collect();
        let mut todo: Vec<&'a Block> = Vec::new();
        for m in &members {
            if self.done(&m.id) {
                continue;
            }
            if let Some(reason) = self.skip_reason(m) {
                self.mark_skipped(m, &reason);
                continue;
            }
            // The members start together: their conditions are looked at now.
            if self.skip_by_condition(m) {
                continue;
            }
            todo.push(m);
        }
        if todo.len() <= 1 && members.len() <= 1 {
            return None;
        }
        for m in &todo {
            match self.gate(m) {
                GateResult::Go => {}
                GateResult::Pause => return Some(Flow::Pause(m)),
                GateResult::Declined => return Some(Flow::Declined(m.id.clone())),
            }
        }
        Some(self.run_members(&todo))
    }

    fn run_members(&mut self, todo: &[&'a Block]) -> Flow<'a> {
        let at_start = self.cancel.level();
        let env = self.step_env();
        let jobs: Vec<Job> = todo
            .iter()
            .map(|b| {
                let script = self.run.script_path(&b.id);
                let _ = crate::records_io::write_script(&script, b.code.as_bytes());
                Job {
                    step_id: b.id.clone(),
                    host: None,
                    runner: Runner::Local,
                    code: b.code.clone(),
                    script_path: script,
                    cwd: self.opts.dir.clone(),
                    env: env.clone(),
                    timeout: b
                        .attrs
                        .timeout
                        .or(self.cmd.settings.timeout)
                        .unwrap_or(DEFAULT_TIMEOUT),
                    grace: self.opts.grace,
                    attempts: b.attrs.retries + 1,
                    backoff: b.attrs.backoff.unwrap_or(DEFAULT_BACKOFF),
                    token: format!("{}/{}", self.state.run_id, b.id),
                    run_id: self.state.run_id.clone(),
                    critical: b.attrs.on_fail != OnFail::Continue,
                }
            })
            .collect();
        let parallel = todo
            .iter()
            .filter_map(|b| b.attrs.parallel)
            .max()
            .map_or(DEFAULT_PARALLEL, |p| p as usize);
        let policy = Policy {
            parallel,
            canary: 0,
            max_fail: 0,
        };
        let mut logs: BTreeMap<String, crate::records_io::LogFile> = BTreeMap::new();
        let mut tails: BTreeMap<String, VecDeque<String>> = BTreeMap::new();
        let mut finished: Vec<(String, StepStatus)> = Vec::new();
        let cancel = self.cancel.clone();
        let outcome = {
            let mut on_report = |job: &Job, report: &Report| {
                let block = todo
                    .iter()
                    .find(|b| b.id == job.step_id)
                    .copied()
                    .expect("a job of this group");
                if let Some(s) = self.member_report(block, report, &mut logs, &mut tails) {
                    finished.push((block.id.clone(), s));
                }
            };
            jobs::run(jobs, policy, &cancel, &mut on_report)
        };
        let ids: Vec<&str> = todo.iter().map(|b| b.id.as_str()).collect();
        self.absorb_env_file(&ids);
        for (id, log) in &mut logs {
            if let Some(e) = log.take_error() {
                let path = self.run.log_path(id);
                self.em.record_failed(&path, &e);
            }
        }
        let failed = finished.iter().find(|(_, s)| s.is_failure()).cloned();
        for (b, r) in todo.iter().zip(&outcome.results) {
            if r.is_none() {
                let why = match &failed {
                    Some((id, _)) => format!("not started: `{id}` of the same group failed"),
                    None => "not started: interrupted".into(),
                };
                self.mark_skipped(b, &why);
            }
        }
        let interrupted = self.cancel.level() != at_start;
        match failed {
            Some((id, s)) => {
                let status = if interrupted || s == StepStatus::Interrupted {
                    RunStatus::Interrupted
                } else {
                    RunStatus::Failed
                };
                let tail = tails.remove(&id).map(Vec::from).unwrap_or_default();
                Flow::Failed(status, id, tail)
            }
            None if interrupted => Flow::Failed(
                RunStatus::Interrupted,
                todo.first().map(|b| b.id.clone()).unwrap_or_default(),
                Vec::new(),
            ),
            None => Flow::Done,
        }
    }

    /// One report of one member; returns its final status when it is done.
    fn member_report(
        &mut self,
        block: &Block,
        report: &Report,
        logs: &mut BTreeMap<String, crate::records_io::LogFile>,
        tails: &mut BTreeMap<String, VecDeque<String>>,
    ) -> Option<StepStatus> {
        if !logs.contains_key(&block.id) {
            let path = self.run.log_path(&block.id);
            match self.run.open_log(&path) {
                Ok(f) => {
                    logs.insert(block.id.clone(), crate::records_io::LogFile::new(f));
                }
                Err(e) => self.em.record_failed(&path, &e),
            }
        }
        let log = logs.get_mut(&block.id);
        match report {
            Report::Started(_, attempt) => {
                if let Some(log) = log {
                    let _ = writeln!(log, "── {} attempt {attempt} at {} ──", block.id, now());
                }
                if *attempt == 1
                    && !self.opts.dry_run
                    && let Some(comp) = &block.attrs.rollback
                    && !self.state.compensations.contains(comp)
                {
                    self.state.compensations.push(comp.clone());
                }
                let eta = self.history.eta_ms(&block.id);
                if let Some(p) = self.progress.get_mut(&block.id) {
                    p.status = StepStatus::Running;
                    p.attempts = *attempt;
                    p.started.get_or_insert_with(now);
                }
                self.state.current_step = Some(block.id.clone());
                self.save();
                self.emit(step_started(block, *attempt, None, eta));
                None
            }
            Report::Lines(_, lines) => {
                record_lines(
                    &mut self.em,
                    &block.id,
                    None,
                    lines,
                    log,
                    tails.entry(block.id.clone()).or_default(),
                );
                None
            }
            Report::Progress(_, stream, text) => {
                self.em.stream_progress(&block.id, None, *stream, text);
                None
            }
            Report::Warning(_, problem) => {
                self.env_problem(&[&block.id], None, problem.clone());
                None
            }
            Report::Held(_) => {
                self.say_held(Some(&block.id));
                None
            }
            // Reported by hosts only.
            Report::Secret(..) | Report::Began(_) => None,
            Report::Retrying(_, attempt, why) => {
                if let Some(log) = log {
                    let _ = writeln!(log, "── attempt {attempt} {why} ──");
                }
                None
            }
            Report::Done(_, r) => {
                if let Some(log) = log
                    && let Some(why) = &r.reason
                {
                    let _ = writeln!(log, "── {why} ──");
                }
                Some(
                    self.finish_block(
                        block,
                        r.status,
                        r.exit_code,
                        r.reason.clone(),
                        r.attempts,
                        r.duration,
                        false,
                        tails
                            .get(&block.id)
                            .and_then(|t| t.back())
                            .map(String::as_str),
                    ),
                )
            }
        }
    }
}
