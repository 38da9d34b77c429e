//! The `Test` builder: a temporary project with command files, the real `nixcmd` binary run in
//! it with a clean environment, and its whole output (stdout, stderr, exit status) normalized
//! for snapshots. Modelled on just's `tests/test.rs` and uv's `uv_snapshot!`.
//!
//! Layout of a test's temporary folder (`[TEMP]` in snapshots):
//!
//! ```text
//! [TEMP]/home        HOME
//! [TEMP]/config      XDG_CONFIG_HOME (user commands: config/nixcmd/commands)
//! [TEMP]/state       XDG_STATE_HOME (runs)
//! [TEMP]/project     the working directory; `.runbook()` writes to project/.nixcmd/commands
//! ```

#![allow(dead_code)]

use regex::Regex;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_nixcmd");

/// Environment variables that would leak the developer's setup into a test.
const SCRUBBED: &[&str] = &[
    "CI",
    "NIXCMD_COMMANDS_DIR",
    "NIXCMD_CONFIG",
    "NIXCMD_HEARTBEAT",
    "NIXCMD_STATE_DIR",
    "CLICOLOR",
    "CLICOLOR_FORCE",
    "FORCE_COLOR",
    "GITHUB_ACTIONS",
    "XDG_CONFIG_HOME",
    "XDG_STATE_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "COLUMNS",
];

pub struct Test {
    root: tempfile::TempDir,
    cwd: PathBuf,
    args: Vec<OsString>,
    env: BTreeMap<OsString, Option<OsString>>,
    stdin: Option<Vec<u8>>,
    programs: Option<Vec<String>>,
    timeout: Duration,
    /// Where stdout goes instead of the captured pipe (a full device, a file).
    stdout_to: Option<PathBuf>,
}

impl Default for Test {
    fn default() -> Self {
        Self::new()
    }
}

impl Test {
    pub fn new() -> Self {
        Self::within(
            tempfile::Builder::new()
                .prefix("nixcmd-test")
                .tempdir()
                .expect("a temporary folder"),
        )
    }

    /// A new test that sees the runs recorded under `root` (another test's folder): a
    /// second nixcmd on the same state, started while the first one runs.
    pub fn sharing_state(root: &Path) -> Self {
        Self::new().env("XDG_STATE_HOME", root.join("state").display().to_string())
    }

    /// A test in an existing temporary folder: a later invocation that sees the files, runs
    /// and state of an earlier one (see [`Output::then`]).
    pub fn within(root: tempfile::TempDir) -> Self {
        for dir in ["home", "config", "state", "project"] {
            std::fs::create_dir_all(root.path().join(dir)).expect("create test folders");
        }
        let cwd = root.path().join("project");
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: OsString| {
            env.insert(OsString::from(k), Some(v));
        };
        set("HOME", root.path().join("home").into());
        set("XDG_CONFIG_HOME", root.path().join("config").into());
        set("XDG_STATE_HOME", root.path().join("state").into());
        set("NO_COLOR", "1".into());
        Test {
            root,
            cwd,
            args: Vec::new(),
            env,
            stdin: None,
            programs: None,
            timeout: Duration::from_secs(60),
            stdout_to: None,
        }
    }

    /// The temporary folder (`[TEMP]` in snapshots).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The project folder, the default working directory.
    pub fn project(&self) -> PathBuf {
        self.root.path().join("project")
    }

    /// Writes a command file into the project's `.nixcmd/commands/`.
    pub fn runbook(self, name: &str, text: &str) -> Self {
        self.file(&format!("project/.nixcmd/commands/{name}"), text)
    }

    /// Writes a guided command file into the project's `.claude/commands/`.
    pub fn claude_command(self, name: &str, text: &str) -> Self {
        self.file(&format!("project/.claude/commands/{name}"), text)
    }

    /// Writes a command file into the user's `$XDG_CONFIG_HOME/nixcmd/commands/`.
    pub fn user_command(self, name: &str, text: &str) -> Self {
        self.file(&format!("config/nixcmd/commands/{name}"), text)
    }

    /// Writes any file, relative to the temporary folder (e.g. `project/x.md`).
    pub fn file(self, rel: &str, contents: impl AsRef<[u8]>) -> Self {
        let path = self.root.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent folder");
        }
        std::fs::write(&path, contents).expect("write test file");
        self
    }

    /// Creates a folder, relative to the temporary folder.
    pub fn dir(self, rel: &str) -> Self {
        std::fs::create_dir_all(self.root.path().join(rel)).expect("create folder");
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable; `[TEMP]` in the value is replaced by the temp folder.
    pub fn env(mut self, key: &str, value: impl AsRef<str>) -> Self {
        let value = value
            .as_ref()
            .replace("[TEMP]", &self.root.path().display().to_string());
        self.env.insert(key.into(), Some(value.into()));
        self
    }

    /// Removes a variable the builder would set (HOME, NO_COLOR, …).
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env.insert(key.into(), None);
        self
    }

    /// The working directory, relative to the temporary folder (default `project`).
    pub fn current_dir(mut self, rel: &str) -> Self {
        self.cwd = self.root.path().join(rel);
        std::fs::create_dir_all(&self.cwd).expect("create working folder");
        self
    }

    /// Bytes fed to stdin (default: no stdin at all, like a CI job).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Restricts `PATH` to these programs (symlinked into `[TEMP]/bin`), so that optional
    /// tools such as `shellcheck` are absent, whatever the machine has installed.
    pub fn programs(mut self, names: &[&str]) -> Self {
        self.programs = Some(names.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Fails the test when the binary runs longer than this (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends stdout to `path` (opened for writing, e.g. `/dev/full`) instead of capturing it;
    /// [`Output::stdout`] is then empty.
    pub fn stdout_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.stdout_to = Some(path.into());
        self
    }

    /// The configured process (arguments, environment, working directory, `PATH`), not yet
    /// started, with the folder it runs in: for tests that drive the process themselves
    /// (signals, a pseudo-terminal, two runs at once).
    pub fn into_command(self) -> (Command, tempfile::TempDir) {
        let cmd = self.command();
        (cmd, self.root)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args).current_dir(&self.cwd);
        for key in SCRUBBED {
            cmd.env_remove(key);
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if let Some(programs) = &self.programs {
            let bin = self.root.path().join("bin");
            std::fs::create_dir_all(&bin).expect("create bin folder");
            for p in programs {
                let real = which(p).unwrap_or_else(|| panic!("`{p}` is not installed"));
                let link = bin.join(p);
                if !link.exists() {
                    std::os::unix::fs::symlink(real, link).expect("symlink a program");
                }
            }
            cmd.env("PATH", &bin);
        }
        cmd
    }

    pub fn run(self) -> Output {
        let mut cmd = self.command();
        cmd.stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(match &self.stdout_to {
            Some(path) => std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
                .into(),
            None => Stdio::piped(),
        })
        .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn nixcmd");
        let writer = child.stdin.take().map(|mut pipe| {
            let input = self.stdin.clone().unwrap_or_default();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            })
        });
        let pid = child.id();
        let limit = self.timeout;
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(limit).is_err() {
                // SAFETY: kill(2) on the pid of our own child, which has not been reaped yet.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                return true;
            }
            false
        });
        let out = child.wait_with_output().expect("wait for nixcmd");
        let _ = done_tx.send(());
        let timed_out = watchdog.join().unwrap_or(false);
        if timed_out {
            // The SIGKILL left the running step behind, as `kill -9` of a run does.
            kill_left_behind(self.root.path());
        }
        if let Some(w) = writer {
            let _ = w.join();
        }
        let elapsed = started.elapsed();
        assert!(
            !timed_out,
            "nixcmd {:?} did not finish within {limit:?}",
            self.args
        );
        let status = out.status.code().unwrap_or(-1);
        let output = Output {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            status,
            elapsed,
            root: self.root,
        };
        assert_ne!(status, 101, "nixcmd panicked:\n{}", output.normalized());
        output
    }
}

/// What a run of the binary printed, and where it ran.
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub status: i32,
    pub elapsed: Duration,
    /// Kept alive so tests can inspect files the run wrote.
    pub root: tempfile::TempDir,
}

static DECIMAL_DURATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d+\.\d+(ms|s)\b|\b\d+ms\b").expect("valid regex"));

impl Output {
    /// Another invocation in the same temporary folder (same project, state and runs).
    pub fn then(self) -> Test {
        Test::within(self.root)
    }

    /// stdout, then stderr, then `[exit status: N]`, with temp paths and durations filtered.
    pub fn normalized(&self) -> String {
        let mut s = String::new();
        s.push_str(&self.filter(&self.stdout));
        if !self.stderr.is_empty() {
            if !s.is_empty() && !s.ends_with('\n') {
                s.push('\n');
            }
            s.push_str("----- stderr -----\n");
            s.push_str(&self.filter(&self.stderr));
        }
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&format!("[exit status: {}]\n", self.status));
        s
    }

    /// Replaces the temp folder with `[TEMP]` and measured durations with `[DURATION]`.
    pub fn filter(&self, text: &str) -> String {
        filter_paths(text, self.root.path())
    }

    pub fn stdout_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    pub fn assert_status(&self, expected: i32) -> &Self {
        assert_eq!(
            self.status,
            expected,
            "unexpected exit status:\n{}",
            self.normalized()
        );
        self
    }
}

pub fn filter_paths(text: &str, root: &Path) -> String {
    let mut text = text.to_string();
    let mut roots = vec![root.display().to_string()];
    if let Ok(canonical) = root.canonicalize() {
        roots.push(canonical.display().to_string());
    }
    roots.sort_by_key(|r| std::cmp::Reverse(r.len()));
    for r in roots {
        text = text.replace(&r, "[TEMP]");
    }
    DECIMAL_DURATION
        .replace_all(&text, "[DURATION]")
        .into_owned()
}

/// Where a program is on the test process's own `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether tests that need optional tools or inputs must run rather than skip.
pub fn require_all() -> bool {
    std::env::var_os("NIXCMD_TEST_REQUIRE_ALL").is_some_and(|v| v == "1")
}

/// Skips (returns true after printing why) unless `NIXCMD_TEST_REQUIRE_ALL=1`, then fails.
pub fn skip(reason: &str) -> bool {
    assert!(
        !require_all(),
        "NIXCMD_TEST_REQUIRE_ALL=1 but this test cannot run: {reason}"
    );
    eprintln!("skipped: {reason}");
    true
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Snapshots the whole normalized output of a run.
#[macro_export]
macro_rules! assert_output_snapshot {
    ($out:expr) => {
        insta::assert_snapshot!($out.normalized())
    };
    ($name:expr, $out:expr) => {
        insta::assert_snapshot!($name, $out.normalized())
    };
}

/// `setpriv` and a temporary folder everyone may enter, for a test that runs the binary as
/// `nobody`; `None` (the test skips, saying why) unless we are root and have `setpriv`.
pub fn as_nobody(why: &str) -> Option<(std::path::PathBuf, tempfile::TempDir)> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: `geteuid` has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let Some(setpriv) = crate::support::which("setpriv").filter(|_| root) else {
        crate::support::skip(&format!("needs root and setpriv (util-linux) {why}"));
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    Some((setpriv, dir))
}

/// Kills every process whose environment has the state folder of the test under `root`
/// (`XDG_STATE_HOME`, which nixcmd passes on to its steps and they to theirs): what a
/// killed nixcmd's steps left running.
pub fn kill_left_behind(root: &Path) {
    let mut wanted = b"XDG_STATE_HOME=".to_vec();
    wanted.extend_from_slice(root.join("state").as_os_str().as_encoded_bytes());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|&b| b == 0)
            .any(|var| var == wanted.as_slice())
        {
            // SAFETY: kill(2) only sends a signal; the process is one this test started.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
