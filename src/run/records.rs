//! What a run leaves (DESIGN.md §5): `$XDG_STATE_HOME/nixcmd/runs/<run-id>/` (0700) with
//! `state.json`, `progress.json` (written atomically), `events.ndjson`, `logs/<step>.log`,
//! `scripts/`, the step-visible `state/` folder and `env` file (all files 0600). Also the
//! per-command lock and the duration history that feeds ETAs and `stats`.

use crate::event::{RunStatus, StepStatus};
use crate::records_io::{Folder, write_atomic};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `$XDG_STATE_HOME/nixcmd`, else `~/.local/state/nixcmd` (a relative `XDG_STATE_HOME` is
/// ignored, see [`crate::discovery::xdg_home`]).
pub fn state_root() -> PathBuf {
    crate::discovery::xdg_home("XDG_STATE_HOME", ".local/state")
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("nixcmd")
}

pub fn runs_dir() -> PathBuf {
    state_root().join("runs")
}

pub fn mkdir_private(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// A recorded approval of a confirmation gate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Approval {
    pub step_id: String,
    /// `flag` (--yes/--approve), `terminal`, `resume`, `mcp-elicitation`, `mcp-confirm-gate`;
    /// for a decline also `cli` (`nixcmd resume --decline`) and `mcp-policy` (the server's
    /// `--confirm=deny`).
    pub channel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The gate was declined, not approved (written only when true: older records and
    /// approvals stay as they were).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub declined: bool,
    pub at: String,
}

/// The version of the records this nixcmd writes (`state.json`'s `version`). New fields
/// with defaults keep it; a change an older nixcmd would misread raises it.
pub const RECORD_VERSION: u32 = 1;

/// `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub run_id: String,
    pub command: String,
    pub command_hash: String,
    pub command_source: String,
    #[serde(default)]
    pub command_text: Option<String>,
    pub args: Vec<String>,
    #[serde(default)]
    pub set: Vec<String>,
    pub dir: String,
    pub dry_run: bool,
    pub status: RunStatus,
    pub started: String,
    pub updated: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_step: Option<String>,
    pub total_steps: usize,
    pub errors: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    pub pid: u32,
    /// Compensations registered by started steps, in registration order.
    pub compensations: Vec<String>,
    pub approvals: Vec<Approval>,
    /// Step selection of the original invocation (`--only/--skip/--from`).
    #[serde(default)]
    pub only: Vec<String>,
    #[serde(default)]
    pub skip: Vec<String>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Host fan-out: `--hosts` of the original invocation, the config file read, per-host
    /// compensations and the hosts that left the run (see `run::fanout`).
    #[serde(default)]
    pub fleet: crate::run::fleet::FleetState,
    /// The nested run this run is in: a `/command` line of a guided block started it, and it
    /// has not ended. Recorded when it starts, so that a `resume` after this run's nixcmd
    /// died resumes that nested run instead of starting the command again (its finished
    /// steps would run twice); with its gate when it stopped at a confirmation nobody could
    /// answer and this run paused with it: `resume` passes the answer (`--approve GATE` or
    /// `--decline`) on to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nested_wait: Option<NestedWait>,
    /// Rollback blocks that finished successfully, in the order they ran. A rollback cut
    /// short (`kill -9`) and resumed runs only the others: undoing a step twice can do harm
    /// (a second "switch to the previous generation" goes back one generation too far).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolled_back: Vec<String>,
    /// Positions in `args` and in `set` of the values that are secrets (a `TOKEN` argument,
    /// a `--set DEPLOY_KEY=…`): `state.json` keeps them for `resume`, every listing shows
    /// them redacted (see [`State::listed`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_args: Vec<usize>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_set: Vec<usize>,
}

impl State {
    /// The run as `runs --format json` lists it: its secret arguments and `--set` values
    /// redacted. A record written before the positions were kept redacts the `--set` values
    /// whose names mark a secret.
    pub fn listed(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        let args: Vec<String> = (self.args.iter().enumerate())
            .map(|(i, a)| match self.secret_args.contains(&i) {
                true => REDACTED.to_string(),
                false => a.clone(),
            })
            .collect();
        let set: Vec<String> = (self.set.iter().enumerate())
            .map(|(i, kv)| {
                let (k, _) = kv.split_once('=').unwrap_or((kv, ""));
                let secret =
                    self.secret_set.contains(&i) || crate::run::redact::is_secret_name(k, &[]);
                match secret {
                    true => format!("{k}={REDACTED}"),
                    false => kv.clone(),
                }
            })
            .collect();
        if let Some(o) = v.as_object_mut() {
            o.insert("args".into(), args.into());
            o.insert("set".into(), set.into());
        }
        v
    }
}

const REDACTED: &str = "[REDACTED]";

/// A nested run that has not ended (see [`State::nested_wait`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NestedWait {
    /// The block of this run whose `/command` line started the nested run.
    pub step_id: String,
    /// Which of the block's `/command` lines (from 0); the ones before it succeeded.
    pub line: usize,
    pub command: String,
    pub run_id: String,
    /// When it paused: the nested run's step that asks, and its question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl State {
    /// What `resume --approve` names to go on from a run paused at a confirmation: the gate
    /// of the nested run it waits for, or else its current step.
    pub fn gate_to_approve(&self) -> Option<&str> {
        self.nested_wait
            .as_ref()
            .and_then(|w| w.gate.as_deref())
            .or(self.current_step.as_deref())
    }

    /// A fresh state for a new run.
    pub fn new(
        run_id: &str,
        cmd: &crate::command::Command,
        args: &[String],
        set: &[String],
        dir: &Path,
        dry_run: bool,
    ) -> State {
        let total = total_steps(cmd);
        State {
            version: RECORD_VERSION,
            run_id: run_id.to_string(),
            command: cmd.name.clone(),
            command_hash: cmd.hash.clone(),
            // Absolute: `resume` loads the run's command from this file, from wherever it
            // is started (a run started as `nixcmd run runbooks/x.md` has no name to find).
            command_source: match cmd.source.path() {
                Some(p) => std::path::absolute(p)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| p.to_string()),
                None => "builtin".to_string(),
            },
            command_text: None,
            args: args.to_vec(),
            set: set.to_vec(),
            dir: dir.display().to_string(),
            dry_run,
            status: RunStatus::Running,
            started: crate::event::now(),
            updated: crate::event::now(),
            completed: None,
            current_step: None,
            total_steps: total,
            errors: Vec::new(),
            git_commit: None,
            pid: std::process::id(),
            compensations: Vec::new(),
            approvals: Vec::new(),
            only: Vec::new(),
            skip: Vec::new(),
            from: None,
            exit_code: None,
            fleet: crate::run::fleet::FleetState::new(),
            nested_wait: None,
            rolled_back: Vec::new(),
            secret_args: Vec::new(),
            secret_set: Vec::new(),
        }
    }
}

/// A new run id: `<command>-<yyyymmdd-hhmmss>-<4 hex>`, readable and sortable by time.
pub fn new_run_id(name: &str) -> String {
    let stamp = crate::event::local_time(c"%Y%m%d-%H%M%S");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let salt = (nanos ^ std::process::id().wrapping_mul(2_654_435_761)) & 0xffff;
    free_id(&runs_dir(), name, &stamp, salt)
}

/// The first id from `salt` on whose folder does not exist yet. Sixteen bits of salt in one
/// second collided in a loop of quick runs (2 in 400): the second run wrote into the first
/// one's folder. Runs of one command are serialized by its lock, so looking is enough for
/// them; [`RunDir::create`] refuses an existing folder for the rest.
fn free_id(runs: &Path, name: &str, stamp: &str, salt: u32) -> String {
    let id = |salt: u32| format!("{name}-{stamp}-{:04x}", salt & 0xffff);
    (0..0x10000)
        .map(|n| id(salt.wrapping_add(n)))
        .find(|id| std::fs::symlink_metadata(runs.join(id)).is_err())
        .unwrap_or_else(|| id(salt))
}

/// One entry of `progress.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StepProgress {
    pub id: String,
    pub phase: String,
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why a `skipped` step did not run, as its `step_finished` event says (`--skip`,
    /// `not in --only`, `before --from X`, `dry run: not readonly`, `when=X: X is not set`…):
    /// named like the event's field and the host entries'. It names a condition's variable,
    /// never its value. Absent for every other status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Per host, for a step that fans out (`hosts=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostProgress>,
}

impl HostProgress {
    /// A host that has not started the step.
    pub fn pending(host: &str) -> HostProgress {
        HostProgress {
            host: host.to_string(),
            status: StepStatus::Pending,
            attempts: 0,
            started: None,
            completed: None,
            duration_ms: None,
            exit_code: None,
            reason: None,
            exported_secrets: false,
        }
    }
}

impl StepProgress {
    /// A step that has not started.
    pub fn pending(id: &str, phase: &str) -> StepProgress {
        StepProgress {
            id: id.to_string(),
            phase: phase.to_string(),
            status: StepStatus::Pending,
            attempts: 0,
            started: None,
            completed: None,
            duration_ms: None,
            exit_code: None,
            reason: None,
            hosts: Vec::new(),
        }
    }
}

/// One host's part of a fan-out step in `progress.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostProgress {
    pub host: String,
    pub status: StepStatus,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The host told nixcmd of exports under secret names in its `$NIXCMD_ENV` (their names
    /// and values are never written here): a resumed run asks it for them again before its
    /// first step (see `run::host_secrets`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exported_secrets: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Progress {
    pub steps: Vec<StepProgress>,
}

impl Progress {
    pub fn get(&self, id: &str) -> Option<&StepProgress> {
        self.steps.iter().find(|s| s.id == id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut StepProgress> {
        self.steps.iter_mut().find(|s| s.id == id)
    }

    /// Lists the blocks of `cmd` in its order, each with what is recorded for it (pending
    /// when nothing is), for a run resumed with `--force` on a changed file: the engine
    /// records only blocks progress lists, and resume trusts only what progress says ran.
    /// Entries of blocks the change removed stay, after the others: they ran.
    pub fn follow(&mut self, cmd: &crate::command::Command) {
        let mut old = std::mem::take(&mut self.steps);
        for b in cmd
            .blocks()
            .filter(|b| b.phase != crate::command::Phase::Rollback)
        {
            self.steps
                .push(match old.iter().position(|s| s.id == b.id) {
                    Some(i) => old.remove(i),
                    None => StepProgress::pending(&b.id, crate::run::engine::phase_name(b.phase)),
                });
        }
        self.steps.append(&mut old);
    }
}

/// The blocks a run of `cmd` counts as its steps (`total_steps` in `state.json`).
pub fn total_steps(cmd: &crate::command::Command) -> usize {
    cmd.blocks()
        .filter(|b| b.runnable && b.phase != crate::command::Phase::Rollback)
        .count()
}

/// An open run folder.
pub struct RunDir {
    pub path: PathBuf,
    /// `progress.json` is rewritten whole at every step transition, but only an entry or two
    /// change: each entry's JSON text is kept and serialized again only when the entry changed
    /// (the whole file was most of a run's own CPU time).
    progress_cache: std::sync::Mutex<ProgressCache>,
    /// `state.json`, `progress.json` and `env` in the folder, joined once (a join is a few
    /// hundred instructions, and these are written or checked several times per step).
    state_file: PathBuf,
    progress_file: PathBuf,
    env_path: PathBuf,
    /// Temporary files reused by the atomic rewrites of `state.json` and `progress.json`
    /// (removed when the run folder is closed, see `KeptTemps`).
    temps: crate::records_io::KeptTemps,
    /// `$NIXCMD_ENV` as last read (see [`EnvFile`]).
    env_vars: std::sync::Mutex<EnvFile>,
}

/// The JSON text of each `progress.json` entry as last written (with the entry it was made
/// from), and the buffer the whole file is put together in, kept for the next write.
#[derive(Default)]
struct ProgressCache {
    entries: Vec<(StepProgress, Vec<u8>)>,
    out: Vec<u8>,
}

/// The `KEY=VALUE` exports of a run's `$NIXCMD_ENV` as last read, and what the file looked like
/// then: it is read before every step and after it, but rarely changes, so an unchanged file
/// costs one `stat` instead of an open, a stat, a read and a close.
#[derive(Default)]
struct EnvFile {
    seen: Option<(EnvStamp, Vec<(String, String)>)>,
    /// The file's length at the last read (0 when it did not exist).
    len: u64,
    /// The lines that set nothing, as of the last read (kept with `seen` when cached).
    problems: Vec<crate::run::env_file::Problem>,
}

/// What tells a changed file from an unchanged one without reading it.
#[derive(PartialEq)]
struct EnvStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// File times are taken from a coarse clock (one tick is 1–10 ms): a file rewritten with the
/// same length within the tick of its last change keeps its stamp. So, as git does with its
/// index, a file changed this recently is not trusted from the cache: the next read reads it.
const ENV_RACY: std::time::Duration = std::time::Duration::from_millis(20);

impl EnvFile {
    fn read(&mut self, path: &Path, folder: Option<&Folder>) -> Vec<(String, String)> {
        let Ok(meta) = crate::records_io::stat_in(folder, path, true) else {
            self.seen = None;
            self.len = 0;
            self.problems.clear();
            return Vec::new();
        };
        self.len = meta.len;
        let stamp = EnvStamp {
            dev: meta.dev,
            ino: meta.ino,
            len: meta.len,
            mtime: meta.mtime,
            ctime: meta.ctime,
        };
        if let Some((seen, vars)) = &self.seen
            && *seen == stamp
        {
            return vars.clone();
        }
        let parsed = crate::run::env_file::read(path);
        let vars = parsed.vars;
        self.problems = parsed.problems;
        // Read after the stamp was taken: if the file changed in between, the cached stamp
        // is the older one and the next read sees the difference.
        let settled = meta
            .modified()
            .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
            .is_some_and(|age| age > ENV_RACY);
        self.seen = settled.then(|| (stamp, vars.clone()));
        vars
    }
}

impl RunDir {
    pub fn create(run_id: &str) -> std::io::Result<RunDir> {
        RunDir::create_at(runs_dir().join(run_id))
    }

    /// A new run folder at `path`: an existing one is an error, never shared (two runs'
    /// records in one folder lose the first one's state).
    fn create_at(path: PathBuf) -> std::io::Result<RunDir> {
        if let Some(parent) = path.parent() {
            mkdir_private(parent)?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        for sub in ["logs", "scripts", "state"] {
            mkdir_private(&path.join(sub))?;
        }
        let env = path.join("env");
        if !env.exists() {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&env)?;
        }
        RunDir::open_at(path)
    }

    pub fn open(run_id: &str) -> std::io::Result<RunDir> {
        let path = runs_dir().join(run_id);
        if !path.join("state.json").is_file() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no such run",
            ));
        }
        RunDir::open_at(path)
    }

    fn open_at(path: PathBuf) -> std::io::Result<RunDir> {
        // Where the folder cannot be held open, every file is reached by its whole path.
        let temps = match Folder::open(&path) {
            Ok(folder) => crate::records_io::KeptTemps::in_folder(folder),
            Err(_) => Default::default(),
        };
        Ok(RunDir {
            state_file: path.join("state.json"),
            progress_file: path.join("progress.json"),
            env_path: path.join("env"),
            path,
            progress_cache: Default::default(),
            temps,
            env_vars: Default::default(),
        })
    }

    /// The run folder held open, when it could be: see [`Folder`].
    pub fn folder(&self) -> Option<&Folder> {
        self.temps.folder()
    }

    /// Writes a step's script (see [`crate::records_io::write_script`]) at `path`, which is
    /// [`RunDir::script_path`].
    pub fn write_script(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        crate::records_io::write_script_in(self.folder(), path, bytes)
    }

    /// A step's script made ready for a bash started ahead (see
    /// [`crate::records_io::script_ahead_in`]).
    pub fn script_ahead(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> std::io::Result<crate::records_io::ScriptAhead> {
        crate::records_io::script_ahead_in(self.folder(), path, bytes)
    }

    /// Removes what a killed session left of a step made ready ahead: `scripts/.<name>.ahead`
    /// (a script waiting to be put in place). Called when a run is resumed.
    pub fn remove_ahead_leftovers(&self) {
        let dir = self.path.join("scripts");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".ahead") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The script made ready by [`RunDir::script_ahead`], put at `path`.
    pub fn place_script(&self, held: &Path, path: &Path) -> std::io::Result<()> {
        crate::records_io::place_script_in(self.folder(), held, path)
    }

    /// A step's log at `path` ([`RunDir::log_path`]), created 0600 and opened to append: a
    /// retry or a resumed run adds to it, on a line of its own even when a killed run left
    /// the last one torn.
    pub fn open_log(&self, path: &Path) -> std::io::Result<File> {
        let mut file = crate::records_io::open_in(
            self.folder(),
            path,
            libc::O_RDWR | libc::O_CREAT | libc::O_APPEND,
            0o600,
        )?;
        crate::records_io::ensure_file(&file)?;
        crate::records_io::end_torn_line(&mut file)?;
        Ok(file)
    }

    /// `events.ndjson`, opened for appending.
    pub fn events_file(&self) -> std::io::Result<File> {
        open_events(&self.path.join("events.ndjson"))
    }

    pub fn log_path(&self, step: &str) -> PathBuf {
        self.path.join("logs").join(format!("{step}.log"))
    }

    /// `logs/<step>@<host>.log`: one host's part of a fan-out step.
    pub fn host_log_path(&self, step: &str, host: &str) -> PathBuf {
        self.path.join("logs").join(format!("{step}@{host}.log"))
    }

    pub fn script_path(&self, step: &str) -> PathBuf {
        self.path.join("scripts").join(format!("{step}.sh"))
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path.join("state")
    }

    pub fn env_file(&self) -> PathBuf {
        self.env_path.clone()
    }

    /// The exports of `$NIXCMD_ENV` now (read again only when the file changed).
    pub fn env_vars(&self) -> Vec<(String, String)> {
        self.env_vars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .read(&self.env_path, self.temps.folder())
    }

    /// The lines of `$NIXCMD_ENV` that set nothing, when [`RunDir::env_vars`] last looked.
    pub fn env_problems(&self) -> Vec<crate::run::env_file::Problem> {
        let env = self.env_vars.lock().unwrap_or_else(|e| e.into_inner());
        env.problems.clone()
    }

    /// The length of `$NIXCMD_ENV` when [`RunDir::env_vars`] last looked (0 if missing): where
    /// a running step's exports start (see `EnvWatch`), without another `stat`.
    pub fn env_len(&self) -> u64 {
        self.env_vars.lock().unwrap_or_else(|e| e.into_inner()).len
    }

    pub fn write_state(&self, state: &State) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        self.temps.write(&self.state_file, &bytes, 0o600)
    }

    pub fn write_progress(&self, progress: &Progress) -> std::io::Result<()> {
        let mut cache = self
            .progress_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        cache.fill(progress)?;
        self.temps.write(&self.progress_file, &cache.out, 0o600)
    }

    /// The text [`RunDir::write_progress`] writes.
    #[cfg(test)]
    fn progress_json(&self, progress: &Progress) -> std::io::Result<Vec<u8>> {
        let mut cache = self.progress_cache.lock().unwrap();
        cache.fill(progress)?;
        Ok(cache.out.clone())
    }
}

impl ProgressCache {
    /// Puts the same text as `serde_json::to_vec_pretty(progress)` in `out`, from cached
    /// entries.
    fn fill(&mut self, progress: &Progress) -> std::io::Result<()> {
        let ProgressCache {
            entries: cache,
            out,
        } = self;
        cache.truncate(progress.steps.len());
        out.clear();
        out.extend_from_slice(b"{\n  \"steps\": [");
        for (i, step) in progress.steps.iter().enumerate() {
            if cache.get(i).is_none_or(|(cached, _)| cached != step) {
                let entry = (step.clone(), progress_entry_json(step)?);
                if i < cache.len() {
                    cache[i] = entry;
                } else {
                    cache.push(entry);
                }
            }
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"\n    ");
            out.extend_from_slice(&cache[i].1);
        }
        if !progress.steps.is_empty() {
            out.extend_from_slice(b"\n  ");
        }
        out.extend_from_slice(b"]\n}");
        Ok(())
    }
}

/// One `progress.json` entry, pretty-printed at the depth it has in the file (JSON strings
/// never hold a raw newline, so every newline starts a line of the entry).
fn progress_entry_json(step: &StepProgress) -> std::io::Result<Vec<u8>> {
    let flat = serde_json::to_vec_pretty(step).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(flat.len() + flat.len() / 4);
    // Line by line, not byte by byte: a byte loop was most of this function's instructions.
    let mut lines = flat.split(|&b| b == b'\n');
    if let Some(first) = lines.next() {
        out.extend_from_slice(first);
    }
    for line in lines {
        out.extend_from_slice(b"\n    ");
        out.extend_from_slice(line);
    }
    Ok(out)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(path, &bytes, 0o600)
}

pub fn read_state(dir: &Path) -> std::io::Result<State> {
    let bytes = crate::records_io::read_record(&dir.join("state.json"))?;
    serde_json::from_slice(&bytes).map_err(std::io::Error::other)
}

pub fn read_progress(dir: &Path) -> std::io::Result<Progress> {
    match crate::records_io::read_record(&dir.join("progress.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(std::io::Error::other),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Progress::default()),
        Err(e) => Err(e),
    }
}

/// `events.ndjson` opened to append. When a killed run left a torn last line (a write of a
/// read's worth of events cut short), it is ended first: the resumed run's first event must
/// not be glued to it, where readers would skip it with the torn part.
fn open_events(path: &Path) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)?;
    crate::records_io::ensure_file(&file)?;
    crate::records_io::end_torn_line(&mut file)?;
    Ok(file)
}

/// The highest `seq` in a run's `events.ndjson` (a resumed run continues the numbering).
pub fn last_seq(dir: &Path) -> u64 {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = crate::records_io::open_record(&dir.join("events.ndjson")) else {
        return 0;
    };
    let len = file.metadata().map_or(0, |m| m.len());
    // From the end: events are appended in `seq` order, so the last whole event has the
    // highest, and a chatty run's file is hundreds of megabytes. The window grows when its
    // lines are all torn or unreadable.
    let mut window: u64 = 64 * 1024;
    let mut buf = Vec::new();
    loop {
        let start = len.saturating_sub(window);
        buf.clear();
        if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut buf).is_err() {
            return 0;
        }
        // The first piece is part of a line that began before the window.
        let skip = usize::from(start > 0);
        let seq = buf
            .split(|&b| b == b'\n')
            .skip(skip)
            .filter_map(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("seq").and_then(|s| s.as_u64()))
            .max();
        match seq {
            Some(seq) => return seq,
            None if start == 0 => return 0,
            None => window = window.saturating_mul(4),
        }
    }
}

/// Whether the process that runs `state` is still there. A run recorded as `running` whose
/// process was killed (`kill -9`, a crash, a reboot) never says so itself.
///
/// A run that changes things holds its command's lock (flock) for its whole life and the
/// kernel drops it with the process, so the lock answers exactly when it can be read. Dry runs
/// take no lock: their pid must still belong to a nixcmd process (a pid reused by another
/// nixcmd reads as alive). Unknown (no /proc) counts as alive.
pub fn run_process_alive(state: &State) -> bool {
    let lock = (!state.dry_run).then(|| lock_path(&state.command));
    alive(lock.as_deref(), &state.run_id, state.pid)
}

/// [`run_process_alive`] of the run `run_id` started by `pid`, whose lock (if it took one) is
/// at `lock`.
fn alive(lock: Option<&Path>, run_id: &str, pid: u32) -> bool {
    match lock.and_then(|path| lock_held_by(path, run_id)) {
        Some(held) => held,
        None => pid_is_nixcmd(pid),
    }
}

/// The holder line of `state`'s command lock (`<run-id> (pid N)`) when that lock is held now
/// on behalf of this run, whatever status `state` records: `resume` takes the lock before it
/// writes `running`.
pub fn lock_held_for(state: &State) -> Option<String> {
    let path = lock_path(&state.command);
    (lock_held_by(&path, &state.run_id) == Some(true)).then(|| {
        crate::records_io::read_record(&path)
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
            .unwrap_or_default()
    })
}

/// Whether `command`'s lock is held now, by any run.
pub fn lock_held(command: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(lock_path(command)) else {
        return false;
    };
    std::fs::read_to_string("/proc/locks").is_ok_and(|locks| flock_on_inode(&locks, meta.ino()))
}

fn pid_is_nixcmd(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    match std::fs::read_to_string(proc.join(pid.to_string()).join("comm")) {
        // The MCP server runs engines in its own process: same name. A binary installed
        // under another name is recognised by this one's name.
        Ok(comm) => {
            let comm = comm.trim_end();
            comm == "nixcmd"
                || std::fs::read_to_string(proc.join("self/comm"))
                    .is_ok_and(|own| own.trim_end() == comm)
        }
        Err(_) => false,
    }
}

/// Whether the lock file at `path` is held on behalf of `run_id`: it must name the run (a
/// later run of the command writes its own id over it) and be locked, which `/proc/locks`
/// tells without taking the lock (taking it, even for a moment, could refuse a run starting
/// at that instant). `None` when that cannot be known (no lock file, no /proc/locks).
fn lock_held_by(path: &Path, run_id: &str) -> Option<bool> {
    use std::os::unix::fs::MetadataExt;
    let file = crate::records_io::open_record(path).ok()?;
    let inode = file.metadata().ok()?.ino();
    let mut holder = String::new();
    std::io::Read::read_to_string(&mut &file, &mut holder).ok()?;
    if holder.split_whitespace().next() != Some(run_id) {
        return Some(false);
    }
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    Some(flock_on_inode(&locks, inode))
}

/// Reads `/proc/locks` lines such as `3: FLOCK  ADVISORY  WRITE 4711 fd:01:1835 0 EOF`.
/// Only the inode is compared: the device numbers there are the superblock's, which differ
/// from `st_dev` on btrfs subvolumes and overlays; the lock file must name the run as well.
fn flock_on_inode(locks: &str, inode: u64) -> bool {
    locks.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        // Blocked waiters are listed as `3: -> FLOCK …`: they do not hold it.
        fields.next() == Some("FLOCK")
            && fields
                .nth(3)
                .and_then(|dev_ino| dev_ino.rsplit(':').next())
                .and_then(|ino| ino.parse::<u64>().ok())
                == Some(inode)
    })
}

/// Every recorded run, newest first. Hidden entries are not runs: `runs --prune` renames a
/// folder to `.pruning-<id>` before removing it, so a run being removed is never listed.
pub fn all_runs() -> Vec<(PathBuf, State)> {
    scan_runs().0
}

/// Run folders whose `state.json` cannot be read or parsed (a disk error, an edit by hand, a
/// file system that lost its data after a power cut, a FIFO in its place), with why, or that
/// have none ([`NO_STATE`]: a run killed before it recorded anything, a folder put there by
/// hand). They are not listed as runs, but they must not vanish silently either: `runs` names
/// them, and `log` or `resume` of one says what is wrong instead of "no run".
pub type Unreadable = Vec<(PathBuf, String)>;

/// The names a run folder holds before its run's first record: the folders and `env` that
/// [`RunDir::create`] makes, and the `events.ndjson` the engine opens.
const BEFORE_FIRST_RECORD: [&str; 5] = ["logs", "scripts", "state", "env", "events.ndjson"];

/// Whether the run folder at `path` holds nothing its run recorded: only what it holds before
/// the first record ([`BEFORE_FIRST_RECORD`], its folders and files empty). A run's nixcmd
/// that stopped after it made the folder and before that record (`state.json`, written
/// before the first block starts) leaves this, and nothing of such a run ran. Anything else
/// there (a log, a stale temporary file of a first `state.json` cut short) says otherwise.
pub fn recorded_nothing(path: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    entries.into_iter().all(|entry| {
        let Ok(entry) = entry else { return false };
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| BEFORE_FIRST_RECORD.contains(n)) else {
            return false;
        };
        match std::fs::symlink_metadata(entry.path()) {
            Ok(m) if m.is_dir() => {
                std::fs::read_dir(entry.path()).is_ok_and(|mut d| d.next().is_none())
            }
            Ok(m) => m.is_file() && m.len() == 0 && !matches!(name, "logs" | "scripts" | "state"),
            Err(_) => false,
        }
    })
}

/// Removes the run folder at `path` if it [`recorded_nothing`]: its empty folders and files,
/// then the folder. Only what is empty goes (`rmdir` of a folder), so anything written there
/// since stays, and the folder with it.
pub fn remove_recorded_nothing(path: &Path) {
    if !recorded_nothing(path) {
        return;
    }
    for name in BEFORE_FIRST_RECORD {
        let entry = path.join(name);
        match std::fs::symlink_metadata(&entry) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&entry);
            }
            Ok(m) if m.is_file() && m.len() == 0 => {
                let _ = std::fs::remove_file(&entry);
            }
            _ => {}
        }
    }
    let _ = std::fs::remove_dir(path);
}

/// Why a folder without `state.json` is not a run (see [`Unreadable`]).
pub const NO_STATE: &str = "state.json is missing";

/// How long a run folder may be without `state.json` before it is named: a run being
/// started creates its folder a moment before its first record.
const STARTING: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether the folder at `path`, which has no `state.json`, is named by `runs`: a folder
/// (not a stray file), older than [`STARTING`], that is not only a host's folders of a run
/// started on another machine (`RUN_ID/hosts/HOST`, see `remote::state_key`), which have
/// no records here.
fn named_without_state(path: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    let old = meta
        .modified()
        .ok()
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age >= STARTING);
    let only_hosts = std::fs::read_dir(path).is_ok_and(|entries| {
        let names: Vec<_> = entries.filter_map(|e| Some(e.ok()?.file_name())).collect();
        names == ["hosts"]
    });
    meta.is_dir() && old && !only_hosts
}

/// The runs, newest first, and the run folders that cannot be read.
pub fn scan_runs() -> (Vec<(PathBuf, State)>, Unreadable) {
    let Ok(entries) = std::fs::read_dir(runs_dir()) else {
        return (Vec::new(), Vec::new());
    };
    let mut runs = Vec::new();
    let mut unreadable = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = entry.path();
        match read_state(&path) {
            Ok(state) => runs.push((path, state)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if named_without_state(&path) {
                    unreadable.push((path, NO_STATE.to_string()));
                }
            }
            // A stray file among the run folders is not a run.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
            Err(e) => unreadable.push((path, format!("state.json: {e}"))),
        }
    }
    runs.sort_by(|a, b| {
        b.1.started
            .cmp(&a.1.started)
            .then(b.1.run_id.cmp(&a.1.run_id))
    });
    unreadable.sort();
    (runs, unreadable)
}

/// Finds a run by id or unique prefix; `last` means the newest.
pub fn find_run(id: &str) -> Result<(PathBuf, State), String> {
    if id.is_empty() {
        // Every id starts with "": a prefix match would call it ambiguous.
        return Err("give a run id (`nixcmd runs` lists them; `last` is the newest)".to_string());
    }
    let (runs, unreadable) = scan_runs();
    if id == "last" {
        return runs
            .into_iter()
            .next()
            .ok_or_else(|| "there are no recorded runs".to_string());
    }
    if let Some(exact) = runs.iter().find(|(_, s)| s.run_id == id) {
        return Ok(exact.clone());
    }
    let matches: Vec<_> = runs
        .into_iter()
        .filter(|(_, s)| s.run_id.starts_with(id))
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().expect("one match")),
        0 => match unreadable.iter().find(|(p, _)| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(id))
        }) {
            Some((path, why)) => Err(format!(
                "the records of run `{}` cannot be read ({why}); its logs are in {}",
                path.file_name().unwrap_or_default().to_string_lossy(),
                path.join("logs").display()
            )),
            None => Err(format!("no run `{id}` (see `nixcmd runs`)")),
        },
        n => {
            // The newest few, so that the right one can be picked without `nixcmd runs`.
            const SHOWN: usize = 5;
            let mut ids: Vec<&str> = matches
                .iter()
                .take(SHOWN)
                .map(|(_, s)| s.run_id.as_str())
                .collect();
            let more = format!("and {} more", n.saturating_sub(SHOWN));
            if n > SHOWN {
                ids.push(&more);
            }
            Err(format!(
                "`{id}` matches {n} runs ({}); give more of the id",
                ids.join(", ")
            ))
        }
    }
}

fn lock_path(command: &str) -> PathBuf {
    state_root().join("locks").join(format!("{command}.lock"))
}

/// The per-command lock: held (flock) for the life of the process, so a crash releases it.
/// The file names the holder's run id and pid for the refusal message.
pub struct Lock {
    file: File,
    /// The length of the holder's line, blanked when the lock is released.
    line_len: usize,
    run_id: String,
    /// Set by [`Lock::leave_paused`]: released with the run named as paused, not blanked.
    paused: bool,
    /// The run of the command before this one, when it was cut short (see [`CutShort`]).
    pub cut_short: Option<CutShort>,
}

/// A run whose nixcmd died (`kill -9`, a crash, the machine going down) while it held the
/// command's lock: its line was never blanked, and its `state.json` still says running. It
/// neither finished nor rolled back; the next run of the command says so before it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct CutShort {
    pub run_id: String,
    /// The step it was at, as recorded.
    pub step: Option<String>,
}

impl CutShort {
    /// The warning the next run gives: a new one starts from the first step, a resumed one
    /// (an older run cut short too) goes on from where it stopped.
    pub fn notice(&self, command: &str, resuming: bool) -> String {
        let at = self
            .step
            .as_deref()
            .map(|s| format!(" at step `{s}`"))
            .unwrap_or_default();
        let this = if resuming {
            "this run goes on from where it stopped"
        } else {
            "this run starts from the first step"
        };
        format!(
            "the run before this one, {} of `{command}`, was cut short{at} (its nixcmd is gone): \
             it neither finished nor rolled back, and {this}; check what it left (`nixcmd log {}`)",
            self.run_id, self.run_id
        )
    }
}

/// The line a paused run leaves in its command's lock file (see [`Lock::leave_paused`]).
const PAUSED: &str = " paused";

impl Drop for Lock {
    /// Blanks the holder's line before the lock goes with the file: the next holder writes
    /// its own line only after it took the lock, and a run refused in between read this
    /// finished run's line as the holder's (two MCP `run` calls at once). Same length, so
    /// nothing is truncated (see `acquire`).
    fn drop(&mut self) {
        use std::os::unix::fs::FileExt;
        if self.paused {
            let line = format!("{}{PAUSED}\n", self.run_id);
            let _ = crate::records_io::overwrite_in_place(&self.file, line.as_bytes());
            return;
        }
        let mut blank = vec![b' '; self.line_len];
        if let Some(last) = blank.last_mut() {
            *last = b'\n';
        }
        let _ = self.file.write_all_at(&blank, 0);
    }
}

pub enum LockError {
    Held {
        holder: String,
    },
    /// Another run of the command stopped at a confirmation and has not been finished or
    /// declined: its id and the step it waits at.
    Paused {
        run_id: String,
        step: String,
    },
    /// The lock file (or its folder) and what went wrong with it.
    Io(PathBuf, std::io::Error),
    /// Something that is not a regular file (a FIFO, a device) is where the lock file goes,
    /// and what it is (see `records_io::not_a_file`).
    NotAFile(PathBuf, std::io::Error),
}

impl Lock {
    pub fn acquire(command: &str, run_id: &str) -> Result<Lock, LockError> {
        Self::acquire_at(lock_path(command), run_id)
    }

    fn acquire_at(path: PathBuf, run_id: &str) -> Result<Lock, LockError> {
        if let Some(dir) = path.parent() {
            mkdir_private(dir).map_err(|e| LockError::Io(dir.to_path_buf(), e))?;
        }
        // Non-blocking: a FIFO or a device in place of the lock file must be refused, not
        // waited on (its holder line would be read from it until a writer came). The flag
        // changes nothing for the regular file the lock is.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| LockError::Io(path.clone(), e))?;
        match file.metadata() {
            Ok(meta) if !meta.is_file() => {
                let what = crate::records_io::not_a_file(meta.file_type());
                return Err(LockError::NotAFile(path, what));
            }
            Ok(_) => {}
            Err(e) => return Err(LockError::Io(path, e)),
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // A blank line: the holder has just taken the lock and not yet named itself
                // (or a crash left it so); it is given a moment.
                let mut holder = String::new();
                for _ in 0..20 {
                    holder = std::fs::read_to_string(&path)
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    if !holder.is_empty() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                if holder.is_empty() {
                    holder = "a run that has not named itself yet".to_string();
                }
                return Err(LockError::Held { holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LockError::Io(path, e)),
        }
        let holder = {
            use std::io::Read as _;
            let mut line = String::new();
            let _ = (&file).take(4096).read_to_string(&mut line);
            line
        };
        if let Some(paused) = paused_other(&holder, run_id) {
            return Err(paused);
        }
        let cut_short = cut_short(&holder, run_id);
        // Over the old holder's line, not truncated first: truncating a file to zero and
        // writing it again makes ext4 flush it, milliseconds per run.
        let line = format!("{run_id} (pid {})\n", std::process::id());
        crate::records_io::overwrite_in_place(&file, line.as_bytes())
            .map_err(|e| LockError::Io(path, e))?;
        Ok(Lock {
            file,
            line_len: line.len(),
            run_id: run_id.to_string(),
            paused: false,
            cut_short,
        })
    }

    /// The warnings the run holding this lock gives as it starts: that the run before it
    /// was cut short, if it was.
    pub fn notices(lock: Option<&Lock>, command: &str, resuming: bool) -> Vec<String> {
        lock.and_then(|l| l.cut_short.as_ref())
            .map(|c| c.notice(command, resuming))
            .into_iter()
            .collect()
    }

    /// The run stops at a confirmation nobody could answer: when the lock is released, the
    /// file names it as paused, and no other run of the command starts until it is resumed
    /// (approved or declined). Its steps so far changed the machine and its rollback has not
    /// run: another run in between would work on a half-changed machine, and resuming this
    /// one afterwards on whatever that run left.
    pub fn leave_paused(&mut self) {
        self.paused = true;
    }
}

/// The run (not `run_id`) that the lock file names as paused, when its `state.json` still
/// says it waits for a confirmation; a run resumed since, pruned, or unreadable does not hold
/// anything back.
fn paused_other(line: &str, run_id: &str) -> Option<LockError> {
    let other = line.trim().strip_suffix(PAUSED)?;
    if other == run_id || other.is_empty() || other.contains(['/', ' ']) {
        return None;
    }
    let state = read_state(&runs_dir().join(other)).ok()?;
    (state.status == crate::event::RunStatus::AwaitingConfirmation).then(|| LockError::Paused {
        run_id: other.to_string(),
        step: state.gate_to_approve().unwrap_or_default().to_string(),
    })
}

/// The holder's line left by a run that did not release the lock (`RUN (pid N)`: a released
/// lock's line is blank, a paused run's says so), when that run is another one and its
/// records still say running. Read only on that rare path: a clean release costs nothing.
fn cut_short(line: &str, run_id: &str) -> Option<CutShort> {
    let (other, rest) = line.trim().split_once(' ')?;
    if other == run_id || !rest.starts_with("(pid ") || other.contains('/') {
        return None;
    }
    let state = read_state(&runs_dir().join(other)).ok()?;
    (state.status == crate::event::RunStatus::Running).then(|| CutShort {
        run_id: other.to_string(),
        step: state.current_step,
    })
}

/// Step durations of past successful attempts, per command: the ETA is the median of the
/// last ten.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub steps: std::collections::BTreeMap<String, Vec<u64>>,
}

fn history_path(command: &str) -> PathBuf {
    state_root().join("history").join(format!("{command}.json"))
}

impl History {
    pub fn load(command: &str) -> History {
        crate::records_io::read_record(&history_path(command))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn eta_ms(&self, step: &str) -> Option<u64> {
        let mut d = self.steps.get(step)?.clone();
        if d.is_empty() {
            return None;
        }
        d.sort_unstable();
        Some(d[d.len() / 2])
    }

    pub fn record(&mut self, step: &str, ms: u64) {
        let list = self.steps.entry(step.to_string()).or_default();
        list.push(ms);
        if list.len() > 10 {
            list.remove(0);
        }
    }

    pub fn save(&self, command: &str) -> std::io::Result<()> {
        let path = history_path(command);
        if let Some(dir) = path.parent() {
            mkdir_private(dir)?;
        }
        write_json(&path, self)
    }
}

#[cfg(test)]
mod tests {
    /// Only a folder as a run leaves it before its first record is one that recorded
    /// nothing; removing it leaves anything else in place.
    #[test]
    fn recorded_nothing_is_only_the_folder_before_the_first_record() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("r");
        let skeleton = || {
            for sub in ["logs", "scripts", "state"] {
                std::fs::create_dir_all(run.join(sub)).unwrap();
            }
            std::fs::write(run.join("env"), "").unwrap();
            std::fs::write(run.join("events.ndjson"), "").unwrap();
        };
        assert!(!super::recorded_nothing(&run), "no folder");
        skeleton();
        assert!(super::recorded_nothing(&run));
        for (name, contents) in [
            ("logs/die.log", "x"),
            ("env", "A=1"),
            ("events.ndjson", "{}"),
            (".state.json.1.0.tmp", ""),
            ("progress.json", "{}"),
        ] {
            std::fs::write(run.join(name), contents).unwrap();
            assert!(!super::recorded_nothing(&run), "{name}");
            super::remove_recorded_nothing(&run);
            assert!(run.join(name).exists(), "{name} is kept");
            assert!(
                run.join("state").is_dir(),
                "{name}: the folder is left whole"
            );
            std::fs::remove_dir_all(&run).unwrap();
            skeleton();
        }
        super::remove_recorded_nothing(&run);
        assert!(!run.exists());
    }

    /// A run refused while the lock's new holder has not written its line yet is not told
    /// that the previous, finished run holds it.
    #[test]
    fn a_released_lock_does_not_name_its_old_holder() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/quick.lock");
        let first = super::Lock::acquire_at(path.clone(), "quick-1")
            .ok()
            .unwrap();
        let line = format!("quick-1 (pid {})\n", std::process::id());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), line);
        drop(first);
        let blank = format!("{}\n", " ".repeat(line.len() - 1));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), blank);
        // A new holder between taking the lock and writing its line.
        let taken = std::fs::File::open(&path).unwrap();
        taken.try_lock().unwrap();
        match super::Lock::acquire_at(path.clone(), "quick-2") {
            Err(super::LockError::Held { holder }) => {
                assert_eq!(holder, "a run that has not named itself yet")
            }
            _ => panic!("the lock is held"),
        }
        drop(taken);
        let second = super::Lock::acquire_at(path.clone(), "quick-3")
            .ok()
            .unwrap();
        let line = format!("quick-3 (pid {})\n", std::process::id());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), line);
        let held = std::fs::File::open(&path).unwrap();
        assert!(held.try_lock().is_err());
        match super::Lock::acquire_at(path, "quick-4") {
            Err(super::LockError::Held { holder }) => assert_eq!(format!("{holder}\n"), line),
            _ => panic!("the lock is held"),
        }
        drop(second);
    }

    #[test]
    fn a_torn_last_event_is_ended_before_new_events_are_appended() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.ndjson");
        super::open_events(&path)
            .unwrap()
            .write_all(b"{\"seq\":1}\n")
            .unwrap();
        super::open_events(&path)
            .unwrap()
            .write_all(b"{\"seq\":2}\n")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"seq\":1}\n{\"seq\":2}\n"
        );
        std::fs::write(&path, "{\"seq\":1}\n{\"seq\":2,\"ty").unwrap();
        super::open_events(&path)
            .unwrap()
            .write_all(b"{\"seq\":3}\n")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"seq\":1}\n{\"seq\":2,\"ty\n{\"seq\":3}\n"
        );
    }

    #[test]
    fn the_last_seq_is_found_from_the_end_past_torn_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let events = dir.path().join("events.ndjson");
        assert_eq!(super::last_seq(dir.path()), 0, "no file");
        std::fs::write(&events, "").unwrap();
        assert_eq!(super::last_seq(dir.path()), 0, "empty");
        let mut text = String::new();
        for seq in 1..=5000 {
            text.push_str(&format!(
                "{{\"seq\":{seq},\"type\":\"output\",\"line\":\"x\"}}\n"
            ));
        }
        std::fs::write(&events, &text).unwrap();
        assert_eq!(super::last_seq(dir.path()), 5000);
        // A torn last line (the writer was killed mid-append) does not count.
        text.push_str("{\"seq\":5001,\"ty");
        std::fs::write(&events, &text).unwrap();
        assert_eq!(super::last_seq(dir.path()), 5000);
        // A last event longer than the first window: the window grows to find it.
        text.push('\n');
        text.push_str(&format!(
            "{{\"seq\":5002,\"line\":\"{}\"}}\n",
            "y".repeat(300_000)
        ));
        text.push_str(&"z".repeat(100_000));
        std::fs::write(&events, &text).unwrap();
        assert_eq!(super::last_seq(dir.path()), 5002);
        // A file of one event and nothing else.
        std::fs::write(&events, "{\"seq\":7}").unwrap();
        assert_eq!(super::last_seq(dir.path()), 7);
    }

    use super::*;

    fn step(id: &str, status: StepStatus) -> StepProgress {
        StepProgress {
            status,
            ..StepProgress::pending(id, "step")
        }
    }

    #[test]
    fn a_run_is_alive_while_its_lock_is_held_whatever_its_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmd.lock");
        std::fs::write(&path, "run-a (pid 1)\n").unwrap();
        let holder = File::open(&path).unwrap();
        assert_eq!(lock_held_by(&path, "run-a"), Some(false), "not locked");
        holder.try_lock().unwrap();
        assert_eq!(lock_held_by(&path, "run-a"), Some(true));
        // A later run wrote its id: the lock, held or not, is no longer this run's.
        assert_eq!(lock_held_by(&path, "run-b"), Some(false));
        drop(holder);
        // A process another test spawns at this moment holds a copy of the descriptor (and
        // so the lock) until it starts its program: the release may take that long to show.
        let released = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            lock_held_by(&path, "run-a") == Some(false)
        });
        assert!(released, "released");
        assert_eq!(lock_held_by(&dir.path().join("none.lock"), "run-a"), None);
    }

    /// The lock, when there is one, wins over the pid: this test process passes the pid check
    /// (its name is this binary's), as another nixcmd that took a dead run's pid would.
    #[test]
    fn the_lock_decides_and_the_pid_only_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmd.lock");
        let me = std::process::id();
        assert!(
            alive(None, "run-a", me),
            "no lock (a dry run): the pid decides"
        );
        assert!(
            alive(Some(&path), "run-a", me),
            "no lock file: the pid decides"
        );
        std::fs::write(&path, "run-a (pid 1)\n").unwrap();
        assert!(
            !alive(Some(&path), "run-a", me),
            "not held: gone, whatever the pid"
        );
        let holder = File::open(&path).unwrap();
        holder.try_lock().unwrap();
        // A pid that is no process at all (above pid_max): the held lock still says alive.
        assert!(alive(Some(&path), "run-a", u32::MAX));
        assert!(!alive(None, "run-a", u32::MAX));
    }

    #[test]
    fn proc_locks_lines_are_matched_by_inode_and_holders_only() {
        let locks = "1: FLOCK  ADVISORY  WRITE 29412 fe:00:5777046 0 EOF\n\
                     2: POSIX  ADVISORY  WRITE 29413 fe:00:42 0 EOF\n\
                     3: -> FLOCK  ADVISORY  WRITE 29414 fe:00:43 0 EOF\n";
        assert!(flock_on_inode(locks, 5777046));
        assert!(!flock_on_inode(locks, 42), "a POSIX lock is not ours");
        assert!(!flock_on_inode(locks, 43), "a waiter does not hold it");
        assert!(!flock_on_inode(locks, 577704));
    }

    /// A run id whose folder exists is not given again, and a folder is never created twice:
    /// two quick runs with the same id shared one folder.
    #[test]
    fn run_ids_and_folders_are_never_shared() {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs");
        assert_eq!(
            free_id(&runs, "ok", "20261130-010203", 0xfffe),
            "ok-20261130-010203-fffe"
        );
        std::fs::create_dir_all(runs.join("ok-20261130-010203-fffe")).unwrap();
        std::fs::create_dir_all(runs.join("ok-20261130-010203-ffff")).unwrap();
        assert_eq!(
            free_id(&runs, "ok", "20261130-010203", 0xfffe),
            "ok-20261130-010203-0000"
        );
        let path = runs.join("ok-20261130-010203-0000");
        assert!(RunDir::create_at(path.clone()).is_ok());
        let again = RunDir::create_at(path).err().expect("refused");
        assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn env_vars_follow_every_change_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open_at(dir.path().to_path_buf()).unwrap();
        let env = run.env_file();
        let pair = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(run.env_vars(), vec![]);
        // Same length, rewritten at once: too recent to be trusted from the cache.
        std::fs::write(&env, "A=1\n").unwrap();
        assert_eq!(run.env_vars(), pair("A", "1"));
        std::fs::write(&env, "A=2\n").unwrap();
        assert_eq!(run.env_vars(), pair("A", "2"));
        // Settled, then read from the cache; any later change (same length) is seen.
        std::thread::sleep(ENV_RACY * 2);
        assert_eq!(run.env_vars(), pair("A", "2"));
        assert!(run.env_vars.lock().unwrap().seen.is_some());
        std::fs::write(&env, "A=3\n").unwrap();
        assert_eq!(run.env_vars(), pair("A", "3"));
        std::fs::write(&env, "A=3\nB=4\n").unwrap();
        assert_eq!(run.env_vars(), [pair("A", "3"), pair("B", "4")].concat());
        // The length seen by that read: where a step's new exports start.
        assert_eq!(run.env_len(), 8);
        std::fs::remove_file(&env).unwrap();
        assert_eq!(run.env_vars(), vec![]);
        assert_eq!(run.env_len(), 0);
    }

    #[test]
    fn cached_progress_json_is_the_pretty_json_of_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::open_at(dir.path().to_path_buf()).unwrap();
        let mut progress = Progress::default();
        let check = |run: &RunDir, progress: &Progress| {
            let expected = serde_json::to_vec_pretty(progress).unwrap();
            let got = run.progress_json(progress).unwrap();
            assert_eq!(
                String::from_utf8(got).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        };
        check(&run, &progress);
        progress.steps = vec![
            step("a", StepStatus::Pending),
            step("b \"quoted\"\nline", StepStatus::Pending),
            step("c", StepStatus::Pending),
        ];
        check(&run, &progress);
        let b = &mut progress.steps[1];
        b.status = StepStatus::Running;
        b.attempts = 1;
        b.started = Some("2026-01-01T00:00:00Z".into());
        b.hosts.push(HostProgress {
            host: "web-1".into(),
            status: StepStatus::Failed,
            attempts: 2,
            started: None,
            completed: None,
            duration_ms: Some(5),
            exit_code: Some(1),
            reason: Some("exited with status 1".into()),
            exported_secrets: true,
        });
        check(&run, &progress);
        // A skip's reason is part of the entry: a changed reason is a changed entry.
        let c = &mut progress.steps[2];
        c.status = StepStatus::Skipped;
        c.reason = Some("--skip".into());
        check(&run, &progress);
        progress.steps[2].reason = Some("when=X: X is not set".into());
        check(&run, &progress);
        progress.steps.truncate(1);
        check(&run, &progress);
        // The file written is the same text.
        run.write_progress(&progress).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("progress.json")).unwrap(),
            serde_json::to_vec_pretty(&progress).unwrap()
        );
    }
}
