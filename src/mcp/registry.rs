//! The runs the MCP server owns. Each run executes on its own thread through the same engine
//! as `nixcmd run` (prepared by `run::commands::prepare_new`/`prepare_resume`); a sink folds
//! its events into the run's snapshot, which the tools read and long-poll. A paused run is
//! continued by a resume, as from the terminal. This module never writes to stdout.

use crate::discovery::{self, SearchPath};
use crate::exit::Failure;
use crate::mcp::approver::{GatePolicy, McpApprover};
use crate::mcp::run_handle::{RegistrySink, RunHandle};
use crate::run::commands::{self, NewRun, Prepared};
use crate::run::engine::Engine;
use crate::run::records;
use rmcp::{Peer, RoleServer};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command found on the search path, loaded if `run` accepts it, or why it refuses.
fn load_found(found: &discovery::Found) -> Result<crate::command::Command, String> {
    let loaded =
        discovery::load(found).map_err(|u| failure_text(&discovery::unreadable_failure(&u)))?;
    commands::refuse_invalid(&loaded).map_err(|f| failure_text(&f))?;
    Ok(loaded.command)
}

/// Who is asking, as far as gates care: the client's peer and name.
#[derive(Clone)]
pub struct Caller {
    pub peer: Peer<RoleServer>,
}

impl Caller {
    /// The client's name and version from `initialize`, recorded with approvals.
    pub fn client_name(&self) -> Option<String> {
        self.peer.peer_info().map(|info| {
            let c = &info.client_info;
            if c.version.is_empty() {
                c.name.clone()
            } else {
                format!("{} {}", c.name, c.version)
            }
        })
    }

    /// The peer to elicit from, when the client declared form elicitation.
    pub fn elicitation(&self) -> Option<Peer<RoleServer>> {
        self.peer
            .supported_elicitation_modes()
            .contains(&rmcp::service::ElicitationMode::Form)
            .then(|| self.peer.clone())
    }
}

/// The records of a run of this server when another process has taken it over since (a
/// paused run resumed from a terminal, approved or declined): its `state.json` names
/// another process, or its command's lock is held for it by another one (a `resume` that
/// has not written its state yet). Not while this server runs it.
fn taken_over(run: &RunHandle) -> Option<PathBuf> {
    if run.is_active() {
        return None;
    }
    let dir = records::runs_dir().join(&run.run_id);
    let state = records::read_state(&dir).ok()?;
    let me = std::process::id();
    let ours = format!("(pid {me})");
    let elsewhere = state.pid != me
        || records::lock_held_for(&state).is_some_and(|holder| !holder.ends_with(&ours));
    elsewhere.then_some(dir)
}

/// Every run this server started.
pub struct Registry {
    runs: Mutex<BTreeMap<String, Arc<RunHandle>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    search: SearchPath,
    cwd: PathBuf,
    /// The global `--config FILE` (absolute): the inventory for fan-out.
    config: Option<PathBuf>,
    policy: GatePolicy,
    rt: tokio::runtime::Handle,
}

/// Why a tool could not do what it was asked: a message the model can act on.
pub fn failure_text(f: &Failure) -> String {
    match &f.hint {
        Some(h) => format!("{}\nhint: {h}", f.message),
        None => f.message.clone(),
    }
}

impl Registry {
    pub fn new(
        search: SearchPath,
        cwd: PathBuf,
        config: Option<PathBuf>,
        policy: GatePolicy,
        rt: tokio::runtime::Handle,
    ) -> Registry {
        Registry {
            runs: Mutex::new(BTreeMap::new()),
            threads: Mutex::new(Vec::new()),
            search,
            cwd,
            config,
            policy,
            rt,
        }
    }

    pub fn search(&self) -> &SearchPath {
        &self.search
    }

    /// A run of this server, or else a run recorded in the state folder (started by
    /// `nixcmd run` or another server), read afresh from its records on every call. A run of
    /// this server that another process took over (`nixcmd resume` from a terminal) is read
    /// from its records too: what this server last saw of it is stale.
    pub fn get(&self, run_id: &str) -> Result<Arc<RunHandle>, String> {
        let runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = runs.get(run_id) {
            let r = r.clone();
            drop(runs);
            if let Some(dir) = taken_over(&r) {
                return Ok(Arc::new(RunHandle::external(
                    &r.run_id, &r.command, r.dry_run, dir, true,
                )));
            }
            return Ok(r);
        }
        if let Ok((path, state)) = records::find_run(run_id)
            && !runs.contains_key(&state.run_id)
        {
            return Ok(Arc::new(RunHandle::external(
                &state.run_id,
                &state.command,
                state.dry_run,
                path,
                false,
            )));
        }
        let known: Vec<&str> = runs.keys().map(String::as_str).collect();
        let hint = match crate::suggest::closest(run_id, known.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if known.is_empty() => "this server has started no runs yet".to_string(),
            None => format!("runs of this server: {}", known.join(", ")),
        };
        Err(format!(
            "no run `{run_id}` in this server or in the run records\nhint: {hint} (recorded runs: `nixcmd runs`)"
        ))
    }

    /// Loads a valid command by name: what `run` accepts, or why it refuses.
    pub fn load(&self, name: &str) -> Result<crate::command::Command, String> {
        let found = self
            .search
            .find_by_name(name)
            .map_err(|f| failure_text(&f))?;
        load_found(&found)
    }

    /// [`Registry::load`] of each of `names` (names as the listing gives them), with the
    /// search path resolved once for all of them rather than once per name: the folders of
    /// a large path are listed again by each resolution.
    pub fn load_each(&self, names: &[&str]) -> Vec<Result<crate::command::Command, String>> {
        if names.is_empty() {
            return Vec::new();
        }
        let winners = match self.search.resolve() {
            Ok((winners, _)) => winners,
            Err(f) => return names.iter().map(|_| Err(failure_text(&f))).collect(),
        };
        names
            .iter()
            .map(|name| match winners.iter().find(|f| f.name == *name) {
                Some(found) => load_found(found),
                // Gone since it was listed: as `load` says it.
                None => self.load(name),
            })
            .collect()
    }

    /// Starts a run of `name` on its own thread.
    pub fn start(
        &self,
        name: &str,
        args: Vec<String>,
        dry_run: bool,
        caller: Option<&Caller>,
    ) -> Result<Arc<RunHandle>, String> {
        let cmd = self.load(name)?;
        crate::run::fleet::check_host_args(&cmd, &args, &[], None, !dry_run, || {
            use crate::hosts::inventory;
            let path = inventory::config_path(self.config.as_deref(), &self.cwd);
            let inv = inventory::load(path.as_deref(), &self.cwd);
            if inv.has_errors() {
                return Err(Failure::usage(format!(
                    "the inventory is invalid:\n{}",
                    inv.render_diagnostics()
                )));
            }
            Ok(inv)
        })
        .map_err(|f| failure_text(&f))?;
        let request = NewRun {
            args,
            set: Vec::new(),
            dir: self.cwd.clone(),
            dry_run,
            only: Vec::new(),
            skip: Vec::new(),
            from: None,
            config: self.config.clone(),
        };
        let mut prepared =
            commands::prepare_new(&cmd, request, commands::resolver_for(&self.search))
                .map_err(|f| failure_text(&f))?;
        prepared.state.fleet.config = self.config.as_ref().map(|p| p.display().to_string());
        let run = Arc::new(RunHandle::new(&prepared.state.run_id, &cmd.name, dry_run));
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.run_id.clone(), run.clone());
        self.spawn(run.clone(), cmd, prepared, caller);
        Ok(run)
    }

    /// Continues a paused run (after `confirm_gate`, or to roll it back after `run_cancel`).
    pub fn resume(&self, run: &Arc<RunHandle>, caller: Option<&Caller>) -> Result<(), String> {
        let (path, state) = records::find_run(&run.run_id)?;
        let cmd = self.load(&state.command)?;
        let prepared = commands::prepare_resume(
            &cmd,
            state,
            &path,
            false,
            commands::resolver_for(&self.search),
        )
        .map_err(|f| failure_text(&f))?;
        run.mark_resuming();
        self.spawn(run.clone(), cmd, prepared, caller);
        Ok(())
    }

    fn spawn(
        &self,
        run: Arc<RunHandle>,
        cmd: crate::command::Command,
        prepared: Prepared,
        caller: Option<&Caller>,
    ) {
        let mut approver = McpApprover {
            run: run.clone(),
            policy: self.policy,
            elicit: caller.and_then(Caller::elicitation),
            client: caller.and_then(Caller::client_name),
            rt: self.rt.clone(),
        };
        run.active.store(true, Ordering::SeqCst);
        let name = format!("run {}", run.run_id);
        let thread_run = run.clone();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            let run = thread_run;
            let Prepared {
                run: dir,
                state,
                progress,
                opts,
                mut lock,
            } = prepared;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let sink = RegistrySink::new(run.clone());
                let engine = Engine::new(
                    &cmd,
                    opts,
                    dir,
                    state,
                    progress,
                    vec![Box::new(sink)],
                    &mut approver,
                    run.cancel.clone(),
                );
                engine.execute()
            }));
            // Paused for `confirm_gate`: no other run of the command starts meanwhile.
            if let (Ok(o), Some(lock)) = (&outcome, lock.as_mut())
                && o.status == crate::event::RunStatus::AwaitingConfirmation
            {
                lock.leave_paused();
            }
            drop(lock);
            run.active.store(false, Ordering::SeqCst);
            run.update(|s| {
                if let Err(panic) = &outcome {
                    let msg = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "the engine panicked".to_string());
                    s.crashed = Some(format!("on an internal error: {msg}"));
                }
            });
        });
        match spawned {
            Ok(handle) => self
                .threads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(handle),
            Err(e) => {
                run.active.store(false, Ordering::SeqCst);
                run.update(|s| {
                    s.crashed = Some(format!("on an internal error: cannot start a thread: {e}"))
                });
            }
        }
    }

    /// Waits while an engine that gave up on a gate is still pausing (saving, finishing).
    pub async fn idle(&self, run: &RunHandle) {
        let until = Instant::now() + Duration::from_secs(10);
        while run.is_active() && run.gates.pausing() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cancels every active run and waits for the threads (rollbacks) to end: the client is
    /// gone, as when a terminal closes. A run already rolling back holds the request back
    /// and finishes its rollback (see [`crate::run::shield`]) — unless `stop_at_once` turns
    /// true meanwhile (the client sent SIGTERM: it will not wait).
    pub fn shutdown(&self, stop_at_once: &dyn Fn() -> bool) {
        for run in self.runs.lock().unwrap_or_else(|e| e.into_inner()).values() {
            if run.is_active() && run.cancel.level() == 0 {
                run.cancel.request();
                run.gates.wake();
            }
        }
        let threads: Vec<_> =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let mut stopped = false;
        while !threads.iter().all(|t| t.is_finished()) {
            if !stopped && stop_at_once() {
                // As a second Ctrl-C: the running blocks (rollback included) are stopped and
                // what is left is recorded, before the client's SIGKILL.
                stopped = true;
                for run in self.runs.lock().unwrap_or_else(|e| e.into_inner()).values() {
                    while run.is_active() && run.cancel.level() < 2 {
                        run.cancel.request();
                    }
                    run.gates.wake();
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        for t in threads {
            let _ = t.join();
        }
    }
}
