//! Host fan-out inside a run (DESIGN.md §2 "Multi-host"): a block with `hosts=` runs once per
//! selected host, `parallel` at a time, canaries first; a host that fails is rolled back on its
//! own (its compensations, newest first, on that host only) and leaves the run; once failures
//! pass `max-fail` no new host starts, the hosts in flight finish, and the run stops without
//! touching the hosts that succeeded, so that `nixcmd resume` can retry just the failed ones.
//! A run-wide rollback (a local step failed, Ctrl-C) runs each host compensation on every host
//! where a step naming it started. This file is the engine's side; [`crate::run::jobs`] runs
//! the processes.

use crate::command::{Block, MaxFail, OnFail, Phase};
use crate::event::{EventKind, StepStatus, now};
use crate::hosts::inventory::{self, Host, Inventory};
use crate::run::engine::{
    BlockResult, DEFAULT_BACKOFF, DEFAULT_TIMEOUT, Emitter, Engine, TAIL_LINES, step_started,
};
use crate::run::fleet::{FailedHost, HostCompensation, selector_from_arg};
use crate::run::jobs::{self, Job, Lines, Policy, Report, Runner};
use crate::run::records::HostProgress;
use crate::run::shield::Finishing;
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::time::Instant;

/// Default number of hosts at a time.
pub const DEFAULT_PARALLEL: usize = 5;

/// The engine's runtime fan-out state.
#[derive(Default)]
pub struct Fleet {
    inventory: Option<Result<Inventory, String>>,
    /// Host failures stopped the run: the failed hosts were rolled back, the rest stays.
    pub stop_without_rollback: bool,
    /// Host rollbacks that failed: for the person.
    pub left: Vec<String>,
    /// The hosts that failed the last block run on hosts.
    last_failed: Vec<String>,
    /// `hosts.tsv` of the run, once written (see [`crate::run::hosts_file`]).
    pub(super) hosts_file: Option<std::path::PathBuf>,
    /// On resume, the hosts of the run's first start (the names in its `hosts.tsv`): fan-outs
    /// reach no other host, whatever the inventory says now.
    pub(super) pinned: Option<Vec<String>>,
    /// Hosts left out for not being among `pinned`, already warned about.
    left_out: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Step,
    Rollback,
}

impl Engine<'_> {
    pub(super) fn inventory(&mut self) -> Result<&Inventory, String> {
        if self.fleet.inventory.is_none() {
            let dir = self.opts.dir.clone();
            let explicit = self
                .state
                .fleet
                .config
                .as_ref()
                .map(std::path::PathBuf::from);
            let path = inventory::config_path(explicit.as_deref(), &dir);
            let inv = inventory::load(path.as_deref(), &dir);
            for d in &inv.diagnostics {
                let msg = format!(
                    "{}: {}",
                    d.location(inv.path.as_deref().unwrap_or("nixcmd.toml")),
                    d.message
                );
                self.warnings.push(msg.clone());
                self.emit(EventKind::Warning {
                    step_id: None,
                    message: msg,
                });
            }
            let result = if inv.has_errors() {
                Err(format!(
                    "the inventory in {} is invalid (see `nixcmd hosts`)",
                    inv.path.clone().unwrap_or_default()
                ))
            } else {
                Ok(inv)
            };
            self.fleet.inventory = Some(result);
        }
        match self.fleet.inventory.as_ref().expect("loaded above") {
            Ok(inv) => Ok(inv),
            Err(e) => Err(e.clone()),
        }
    }

    /// The hook in `run_block`: `Some` when the block runs on hosts.
    pub(super) fn fanout_hook(&mut self, block: &Block, lenient: bool) -> Option<BlockResult> {
        if block.phase == Phase::Rollback && block.attrs.hosts.is_none() {
            let binders: Vec<&Block> = self
                .cmd
                .blocks()
                .filter(|b| b.attrs.rollback.as_deref() == Some(block.id.as_str()))
                .collect();
            if binders.is_empty()
                || binders
                    .iter()
                    .any(|b| self.effective_selector(&b.attrs).is_none())
            {
                return None;
            }
            let parallel = binders.iter().find_map(|b| b.attrs.parallel);
            let mut names: Vec<String> = Vec::new();
            for c in self.state.fleet.compensations.iter().rev() {
                if c.rollback == block.id && !names.contains(&c.host) {
                    names.push(c.host.clone());
                }
            }
            return Some(self.roll_back_on(block, &names, parallel, lenient));
        }
        let selector = self.effective_selector(&block.attrs)?;
        let filter = self.state.fleet.filter.clone();
        let hosts = match self.inventory().and_then(|inv| {
            crate::hosts::selector::hosts_for(&selector, filter.as_deref(), inv)
                .map(|hs| hs.into_iter().cloned().collect::<Vec<Host>>())
        }) {
            Ok(h) => h,
            Err(e) => {
                return Some(self.not_runnable(block, format!("hosts={selector}: {e}"), lenient));
            }
        };
        let hosts = self.only_the_runs_hosts(hosts);
        Some(self.run_on_hosts(block, hosts, Kind::Step, lenient))
    }

    /// On resume, the hosts among `hosts` the run started with. A host that joined the
    /// inventory (or its selection) while the run was paused was never built for nor
    /// recorded: activating it, then rolling it back to nothing, left the run at exit 5.
    /// It is left out, with a warning naming it once.
    fn only_the_runs_hosts(&mut self, hosts: Vec<Host>) -> Vec<Host> {
        let Some(pinned) = &self.fleet.pinned else {
            return hosts;
        };
        let (keep, joined): (Vec<Host>, Vec<Host>) =
            hosts.into_iter().partition(|h| pinned.contains(&h.name));
        for h in joined {
            if self.fleet.left_out.contains(&h.name) {
                continue;
            }
            self.fleet.left_out.push(h.name.clone());
            let message = format!(
                "host `{}` is not one of this run's hosts (it joined the inventory since the run \
                 started): left out; start a new run for it",
                h.name
            );
            self.warnings.push(message.clone());
            self.emit(EventKind::Warning {
                step_id: None,
                message,
            });
        }
        keep
    }

    /// The selector a block fans out with: its `hosts=`, or for `hosts=arg:NAME` the value of
    /// that argument (several values are joined as `a,b`). `None`: run on this machine — no
    /// `hosts=`, or an argument left empty.
    pub(super) fn effective_selector(&self, attrs: &crate::command::Attrs) -> Option<String> {
        match attrs.hosts_arg() {
            Some(name) => selector_from_arg(self.cmd, &self.opts.env, name),
            None => attrs.hosts.clone(),
        }
    }

    /// Runs a rollback block on the named hosts (those where a step naming it started).
    fn roll_back_on(
        &mut self,
        block: &Block,
        names: &[String],
        parallel: Option<u32>,
        lenient: bool,
    ) -> BlockResult {
        if names.is_empty() {
            return BlockResult {
                status: StepStatus::Skipped,
                tail: Vec::new(),
            };
        }
        let hosts: Vec<Host> = match self.inventory() {
            Ok(inv) => names.iter().filter_map(|n| inv.get(n).cloned()).collect(),
            Err(e) => return self.not_runnable(block, e, lenient),
        };
        let mut b = block.clone();
        b.attrs.parallel = parallel;
        let result = self.run_on_hosts(&b, hosts, Kind::Rollback, lenient);
        self.state
            .fleet
            .compensations
            .retain(|c| !(c.rollback == block.id && names.contains(&c.host)));
        self.save();
        result
    }

    /// One block on many hosts: events, per-host logs and progress, the failure policy.
    fn run_on_hosts(
        &mut self,
        block: &Block,
        hosts: Vec<Host>,
        kind: Kind,
        lenient: bool,
    ) -> BlockResult {
        let started_at = Instant::now();
        let at_start = self.cancel.level();
        let timeout = block
            .attrs
            .timeout
            .or(self.cmd.settings.timeout)
            .unwrap_or(DEFAULT_TIMEOUT);
        // Hosts that left the run earlier, and (on resume) hosts already done with this step.
        let out: BTreeMap<String, String> = self
            .state
            .fleet
            .failed
            .iter()
            .map(|f| {
                (
                    f.host.clone(),
                    format!("left the run: failed at `{}`", f.step),
                )
            })
            .collect();
        let done: Vec<String> = self
            .progress
            .get(&block.id)
            .map(|p| {
                p.hosts
                    .iter()
                    .filter(|h| h.status == StepStatus::Succeeded)
                    .map(|h| h.host.clone())
                    .collect()
            })
            .unwrap_or_default();
        self.emit(step_started(block, 1, None, self.history.eta_ms(&block.id)));
        self.state.current_step = Some(block.id.clone());
        if let Some(p) = self.progress.get_mut(&block.id) {
            p.status = StepStatus::Running;
            p.attempts = p.attempts.max(1);
            p.started.get_or_insert_with(now);
            for h in &hosts {
                if !p.hosts.iter().any(|e| e.host == h.name) {
                    p.hosts.push(HostProgress::pending(&h.name));
                }
            }
        }
        let mut skipped: Vec<(String, String)> = Vec::new();
        let mut run_hosts: Vec<Host> = Vec::new();
        for h in hosts {
            if kind == Kind::Step
                && let Some(why) = out.get(&h.name)
            {
                skipped.push((h.name.clone(), why.clone()));
            } else if kind == Kind::Step && done.contains(&h.name) {
                continue;
            } else {
                run_hosts.push(h);
            }
        }
        for (host, why) in &skipped {
            self.set_host(
                &block.id,
                host,
                StepStatus::Skipped,
                None,
                Some(why.clone()),
            );
            self.emit(EventKind::StepFinished {
                step_id: block.id.clone(),
                host: Some(host.clone()),
                status: StepStatus::Skipped,
                exit_code: None,
                duration_ms: 0,
                attempts: 0,
                reason: Some(why.clone()),
            });
        }
        self.save();
        let script = self.run.script_path(&block.id);
        let _ = crate::records_io::write_script(&script, block.code.as_bytes());
        let base_env = self.step_env();
        let connect_timeout = self
            .inventory()
            .map(|i| i.connect_timeout)
            .unwrap_or(inventory::DEFAULT_CONNECT_TIMEOUT);
        let continue_on_fail = block.attrs.on_fail == OnFail::Continue || lenient;
        let secrets = self.extra_secrets();
        let jobs: Vec<Job> = run_hosts
            .iter()
            .map(|h| {
                let mut env = base_env.clone();
                if !h.local {
                    // It names a file of this machine.
                    env.retain(|(k, _)| k != crate::run::hosts_file::VAR);
                }
                env.push(("NIXCMD_HOST".into(), h.name.clone()));
                Job {
                    step_id: block.id.clone(),
                    host: Some(h.name.clone()),
                    runner: if h.local {
                        Runner::Local
                    } else {
                        Runner::Ssh {
                            args: crate::run::remote::ssh_args(h, connect_timeout),
                            secrets: secrets.clone(),
                        }
                    },
                    code: block.code.clone(),
                    script_path: script.clone(),
                    cwd: self.opts.dir.clone(),
                    env,
                    timeout,
                    grace: self.opts.grace,
                    attempts: block.attrs.retries + 1,
                    backoff: block.attrs.backoff.unwrap_or(DEFAULT_BACKOFF),
                    token: format!("{}/{}@{}", self.state.run_id, block.id, h.name),
                    run_id: self.state.run_id.clone(),
                    critical: !continue_on_fail && kind == Kind::Step,
                }
            })
            .collect();
        let total = jobs.len();
        let policy = match kind {
            Kind::Rollback => Policy {
                parallel: block
                    .attrs
                    .parallel
                    .map_or(DEFAULT_PARALLEL, |p| p as usize),
                canary: 0,
                max_fail: usize::MAX,
            },
            Kind::Step => Policy {
                parallel: block
                    .attrs
                    .parallel
                    .map_or(DEFAULT_PARALLEL, |p| p as usize),
                canary: block.attrs.canary.unwrap_or(0) as usize,
                max_fail: threshold(block.attrs.max_fail, total),
            },
        };
        let mut logs: BTreeMap<String, crate::records_io::LogFile> = BTreeMap::new();
        let mut tails: BTreeMap<String, VecDeque<String>> = BTreeMap::new();
        let register = (kind == Kind::Step && !self.opts.dry_run)
            .then(|| block.attrs.rollback.clone())
            .flatten();
        let cancel = self.cancel.clone();
        let outcome = {
            let mut on_report = |job: &Job, report: &Report| {
                let host = job.host.clone().unwrap_or_default();
                self.host_report(
                    block,
                    &host,
                    report,
                    &mut logs,
                    &mut tails,
                    register.as_deref(),
                    &secrets,
                );
            };
            jobs::run(jobs, policy, &cancel, &mut on_report)
        };
        self.absorb_env_file(&[&block.id]);
        for (host, log) in &mut logs {
            if let Some(e) = log.take_error() {
                let path = self.run.host_log_path(&block.id, host);
                self.em.record_failed(&path, &e);
            }
        }

        let mut failed: Vec<(String, String)> = Vec::new();
        let mut not_started: Vec<String> = Vec::new();
        for (h, r) in run_hosts.iter().zip(&outcome.results) {
            match r {
                Some(r) if r.status.is_failure() => {
                    failed.push((h.name.clone(), r.reason.clone().unwrap_or_default()))
                }
                Some(_) => {}
                None => not_started.push(h.name.clone()),
            }
        }
        let why_not = if outcome.canary_failed {
            "not started: the canary failed".to_string()
        } else if self.cancel.level() != at_start {
            "not started: interrupted".to_string()
        } else {
            format!(
                "not started: {} host{} failed (max-fail {})",
                outcome.failures,
                if outcome.failures == 1 { "" } else { "s" },
                describe_max_fail(block.attrs.max_fail)
            )
        };
        for host in &not_started {
            self.set_host(
                &block.id,
                host,
                StepStatus::Pending,
                None,
                Some(why_not.clone()),
            );
            self.emit(EventKind::StepFinished {
                step_id: block.id.clone(),
                host: Some(host.clone()),
                status: StepStatus::Skipped,
                exit_code: None,
                duration_ms: 0,
                attempts: 0,
                reason: Some(why_not.clone()),
            });
        }
        let mut tail: Vec<String> = Vec::new();
        if let Some((first, _)) = failed.first() {
            for line in tails.get(first).into_iter().flatten() {
                tail.push(format!("{first}: {line}"));
            }
        }
        for (h, why) in &failed {
            tail.push(format!("{h}: {why}"));
        }
        self.fleet.last_failed = failed.iter().map(|(h, _)| h.clone()).collect();
        let list = |v: &[(String, String)]| {
            v.iter()
                .map(|(h, _)| h.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let interrupted = self.cancel.level() != at_start;
        let (status, reason) = if failed.is_empty() && not_started.is_empty() {
            (StepStatus::Succeeded, None)
        } else if interrupted {
            (StepStatus::Interrupted, Some("interrupted".to_string()))
        } else if kind == Kind::Rollback {
            (
                StepStatus::Failed,
                Some(format!("failed on {}", list(&failed))),
            )
        } else if continue_on_fail {
            // finish_block turns this into a warning; the hosts stay in the run.
            (
                StepStatus::Failed,
                Some(format!("failed on {}", list(&failed))),
            )
        } else {
            let stop = outcome.canary_failed || outcome.failures > policy.max_fail;
            for (h, why) in &failed {
                self.state.fleet.failed.push(FailedHost {
                    host: h.clone(),
                    step: block.id.clone(),
                    reason: why.clone(),
                });
            }
            self.save();
            let names: Vec<String> = failed.iter().map(|(h, _)| h.clone()).collect();
            self.roll_back_hosts(&names, &block.id);
            if stop {
                if block.phase != Phase::Prerequisite {
                    self.fleet.stop_without_rollback = true;
                    self.state.fleet.stopped_by_hosts = Some(true);
                }
                let what = if outcome.canary_failed {
                    format!("canary failed on {}", list(&failed))
                } else {
                    format!(
                        "failed on {} of {total} host{} ({}; max-fail {})",
                        failed.len(),
                        if total == 1 { "" } else { "s" },
                        list(&failed),
                        describe_max_fail(block.attrs.max_fail)
                    )
                };
                (StepStatus::Failed, Some(what))
            } else {
                let msg = format!(
                    "step `{}` failed on {} (within max-fail {}); {} left the run",
                    block.id,
                    list(&failed),
                    describe_max_fail(block.attrs.max_fail),
                    if failed.len() == 1 { "it" } else { "they" }
                );
                self.warnings.push(msg.clone());
                self.emit(EventKind::Warning {
                    step_id: Some(block.id.clone()),
                    message: msg,
                });
                (StepStatus::Warning, None)
            }
        };
        // What a warning quotes: each failed host's own last output line (its finding), not
        // the "exited with status 1" that follows it.
        let last_of = |h: &str| {
            tails
                .get(h)
                .and_then(|t| t.iter().rev().find(|l| !l.trim().is_empty()).cloned())
        };
        let last = match failed.as_slice() {
            [] => tail.iter().rev().find(|l| !l.trim().is_empty()).cloned(),
            [(h, why)] => Some(last_of(h).unwrap_or_else(|| why.clone())),
            many => Some(
                many.iter()
                    .map(|(h, why)| format!("{h}: {}", last_of(h).unwrap_or_else(|| why.clone())))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        };
        let status = self.finish_block(
            block,
            status,
            None,
            reason,
            1,
            started_at.elapsed(),
            lenient,
            last.as_deref(),
        );
        BlockResult { status, tail }
    }

    /// One report of one host's job: progress, the host's log, events, compensations, the
    /// secrets it exported (`secrets`: the names of `nixcmd.secrets`).
    #[allow(clippy::too_many_arguments)]
    fn host_report(
        &mut self,
        block: &Block,
        host: &str,
        report: &Report,
        logs: &mut BTreeMap<String, crate::records_io::LogFile>,
        tails: &mut BTreeMap<String, VecDeque<String>>,
        register: Option<&str>,
        secrets: &[String],
    ) {
        if !logs.contains_key(host) {
            let path = self.run.host_log_path(&block.id, host);
            match self.run.open_log(&path) {
                Ok(f) => {
                    logs.insert(host.to_string(), crate::records_io::LogFile::new(f));
                }
                Err(e) => self.em.record_failed(&path, &e),
            }
        }
        match report {
            Report::Started(_, attempt) => {
                if let Some(log) = logs.get_mut(host) {
                    let _ = writeln!(
                        log,
                        "── {}@{host} attempt {attempt} at {} ──",
                        block.id,
                        now()
                    );
                }
                if let Some(p) = self.progress.get_mut(&block.id)
                    && let Some(h) = p.hosts.iter_mut().find(|h| h.host == host)
                {
                    h.status = StepStatus::Running;
                    h.attempts = *attempt;
                    h.started.get_or_insert_with(now);
                }
                self.save();
                self.emit(step_started(block, *attempt, Some(host), None));
            }
            // The step began on the host (the wrapper said `started`): from now on it may
            // have changed something there, so its compensation is due there. A host ssh
            // never reached (refused, hanging at connect, cut short by Ctrl-C) gets none.
            Report::Began(_) => {
                if let Some(comp) = register {
                    let entry = HostCompensation {
                        rollback: comp.to_string(),
                        host: host.to_string(),
                    };
                    if !self.state.fleet.compensations.contains(&entry) {
                        self.state.fleet.compensations.push(entry);
                        self.save();
                    }
                }
            }
            Report::Lines(_, lines) => record_lines(
                &mut self.em,
                &block.id,
                Some(host),
                lines,
                logs.get_mut(host),
                tails.entry(host.to_string()).or_default(),
            ),
            Report::Progress(_, stream, text) => {
                self.em
                    .stream_progress(&block.id, Some(host), *stream, text)
            }
            Report::Warning(_, problem) => {
                self.env_problem(&[&block.id], Some(host), problem.clone())
            }
            Report::Held(_) => self.say_held(Some(&block.id)),
            // Redacted from then on, from every host's output and this machine's: a host's
            // secret may be printed anywhere.
            Report::Secret(_, name, value) => {
                self.em
                    .redactor
                    .add([(name.as_str(), value.as_str())], secrets);
                // For a resume: this host is asked for its secrets before the first step.
                if let Some(p) = self.progress.get_mut(&block.id)
                    && let Some(h) = p.hosts.iter_mut().find(|h| h.host == host)
                {
                    h.exported_secrets = true;
                }
            }
            Report::Retrying(_, attempt, why) => {
                if let Some(log) = logs.get_mut(host) {
                    let _ = writeln!(log, "── attempt {attempt} {why} ──");
                }
            }
            Report::Done(_, r) => {
                if let Some(log) = logs.get_mut(host)
                    && let Some(why) = &r.reason
                {
                    let _ = writeln!(log, "── {why} ──");
                }
                self.set_host(&block.id, host, r.status, r.exit_code, r.reason.clone());
                if let Some(p) = self.progress.get_mut(&block.id)
                    && let Some(h) = p.hosts.iter_mut().find(|h| h.host == host)
                {
                    h.duration_ms = Some(r.duration.as_millis() as u64);
                }
                self.save();
                self.emit(EventKind::StepFinished {
                    step_id: block.id.clone(),
                    host: Some(host.to_string()),
                    status: r.status,
                    exit_code: r.exit_code,
                    duration_ms: r.duration.as_millis() as u64,
                    attempts: r.attempts,
                    reason: r.reason.clone(),
                });
            }
        }
    }

    fn set_host(
        &mut self,
        step: &str,
        host: &str,
        status: StepStatus,
        exit_code: Option<i32>,
        reason: Option<String>,
    ) {
        if let Some(p) = self.progress.get_mut(step)
            && let Some(h) = p.hosts.iter_mut().find(|h| h.host == host)
        {
            h.status = status;
            h.exit_code = exit_code;
            h.reason = reason;
            if status != StepStatus::Pending {
                h.completed = Some(now());
            }
        }
    }

    /// Rolls back failed hosts on their own: each one's compensations, newest first.
    fn roll_back_hosts(&mut self, hosts: &[String], step: &str) {
        let mut order: Vec<String> = Vec::new();
        for c in self.state.fleet.compensations.iter().rev() {
            if hosts.contains(&c.host) && !order.contains(&c.rollback) {
                order.push(c.rollback.clone());
            }
        }
        let blocks: Vec<Block> = order
            .iter()
            .filter_map(|id| {
                self.cmd
                    .rollback
                    .iter()
                    .find(|b| &b.id == id && b.runnable)
                    .cloned()
            })
            .collect();
        if blocks.is_empty() || self.opts.dry_run {
            return;
        }
        self.emit(EventKind::RollbackStarted {
            reason: format!(
                "step `{step}` failed on {}: rolling back {}",
                hosts.join(", "),
                if hosts.len() == 1 {
                    "that host"
                } else {
                    "those hosts"
                }
            ),
            blocks: blocks.iter().map(|b| b.id.clone()).collect(),
        });
        self.shielded(Finishing::RollingBack, |engine| {
            for block in blocks {
                let names: Vec<String> = engine
                    .state
                    .fleet
                    .compensations
                    .iter()
                    .rev()
                    .filter(|c| c.rollback == block.id && hosts.contains(&c.host))
                    .map(|c| c.host.clone())
                    .collect();
                let before: Vec<String> = names.clone();
                let parallel = engine
                    .cmd
                    .blocks()
                    .find(|b| b.attrs.rollback.as_deref() == Some(block.id.as_str()))
                    .and_then(|b| b.attrs.parallel);
                let result = engine.roll_back_on(&block, &before, parallel, false);
                if result.status.is_failure() {
                    let failed = std::mem::take(&mut engine.fleet.last_failed);
                    for h in failed {
                        engine.fleet.left.push(left_on_host(&block, &h));
                    }
                }
            }
        });
    }
}

/// The lines of one read of a job's output (a host's, or a group member's): redacted as each
/// line always is, into the job's log in one write and into `events.ndjson` in one write
/// (every event still reaches the sinks as it is made), the last [`TAIL_LINES`] kept.
pub(super) fn record_lines(
    em: &mut Emitter,
    step_id: &str,
    host: Option<&str>,
    lines: &Lines,
    log: Option<&mut crate::records_io::LogFile>,
    tail: &mut VecDeque<String>,
) {
    em.hold();
    let mut text: Vec<u8> = Vec::new();
    if log.is_some() {
        text.reserve(lines.text_len() + lines.len());
    }
    // Only lines that can end up among the last TAIL_LINES are copied for the tail.
    let keep_from = lines.len().saturating_sub(TAIL_LINES);
    for (i, (stream, line, cut)) in lines.pieces().enumerate() {
        let Some(line) = em.output_text(step_id, host, stream, line, cut) else {
            continue;
        };
        if log.is_some() {
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
        if i >= keep_from {
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.clone());
        }
        em.emit(EventKind::Output {
            step_id: step_id.to_string(),
            host: host.map(str::to_string),
            stream: stream.name().into(),
            line,
        });
    }
    if let Some(log) = log {
        let _ = log.write_all(&text);
    }
    em.release();
}

/// What is left to do by hand when compensation `block` failed on `host`.
pub(super) fn left_on_host(block: &Block, host: &str) -> String {
    format!(
        "{} on host {host}: run by hand there:\n{}",
        block.id,
        block.code.trim_end()
    )
}

impl Fleet {
    /// The hosts that failed the last block run on hosts, cleared.
    pub(super) fn take_last_failed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.last_failed)
    }
}

/// How many failed hosts are tolerated before no new host starts.
pub fn threshold(max_fail: Option<MaxFail>, total: usize) -> usize {
    match max_fail {
        None => 0,
        Some(MaxFail::Count(n)) => n as usize,
        Some(MaxFail::Percent(p)) => total * p as usize / 100,
    }
}

fn describe_max_fail(m: Option<MaxFail>) -> String {
    match m {
        None => "0".into(),
        Some(MaxFail::Count(n)) => n.to_string(),
        Some(MaxFail::Percent(p)) => format!("{p}%"),
    }
}
