//! Helpers for the run tests (`run_gates`, `run_signals`, `run_records`): a nixcmd process the
//! test drives itself (signals, `kill -9`, a second run at once), a run whose stdin is a
//! pseudo-terminal, the run folders a run leaves, its event stream, and the normalization of
//! run ids and clock times for snapshots.

#![allow(dead_code)]

use crate::support::{Output, Test, filter_paths, kill_left_behind};
use regex::Regex;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How long any single nixcmd invocation of these tests may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A nixcmd process started by the test: stdin is /dev/null or a pseudo-terminal, stdout and
/// stderr are collected as they come. Dropped while nixcmd still runs (a test that fails
/// before [`Spawned::wait`]), it stops nixcmd as Ctrl-C would (see [`stop`]) before its
/// folders go: a run left going would outlive the test, its step looping in a folder that no
/// longer exists.
pub struct Spawned {
    child: Child,
    /// `None` only once [`Spawned::wait`] has handed it to the [`Output`].
    root: Option<tempfile::TempDir>,
    started: Instant,
    stdout: Option<Collected>,
    stderr: Option<Collected>,
    /// The terminal's master side, kept open while nixcmd runs.
    tty: Option<std::fs::File>,
}

type Collected = (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>);

impl Spawned {
    pub fn start(test: Test) -> Spawned {
        Self::spawn(test, None)
    }

    /// Starts with stdin on a pseudo-terminal (stdout and stderr stay pipes) and types
    /// `input` on it. nixcmd asks at a terminal exactly when stdin is one.
    pub fn start_with_tty(test: Test, input: &[u8]) -> Spawned {
        let (master, slave) = open_pty();
        Self::spawn(test, Some(slave)).typing(master, input)
    }

    /// Types `input` on the terminal whose master is `master`, and keeps it open while
    /// nixcmd runs.
    fn typing(mut self, master: OwnedFd, input: &[u8]) -> Spawned {
        let mut master = std::fs::File::from(master);
        // The line discipline keeps the typed line until nixcmd reads it.
        master.write_all(input).expect("type on the terminal");
        // Echo goes back to the master: read it away so the terminal never blocks.
        let echo = master.try_clone().expect("clone the pty master");
        std::thread::spawn(move || drain_into(echo, Arc::default()));
        self.tty = Some(master);
        self
    }

    /// Like [`Spawned::start_with_tty`], with the terminal as nixcmd's *controlling* terminal
    /// (a new session, nixcmd its foreground process group), as in an operator's shell:
    /// steps then are background jobs of that terminal and can open `/dev/tty`.
    pub fn start_with_controlling_tty(test: Test, input: &[u8]) -> Spawned {
        let (master, spawned) = Self::spawn_on_controlling_tty(test);
        spawned.typing(master, input)
    }

    /// Like [`Spawned::start_with_controlling_tty`] with nothing typed, for a test that
    /// hangs the terminal up ([`Spawned::hang_up`]): no thread holds a copy of the master to
    /// read the echo, so closing it is the terminal's end.
    pub fn start_with_controlling_tty_to_hang_up(test: Test) -> Spawned {
        let (master, mut spawned) = Self::spawn_on_controlling_tty(test);
        spawned.tty = Some(std::fs::File::from(master));
        spawned
    }

    /// Closes the terminal's master side, as when the SSH connection or the terminal window
    /// of the operator goes away: the kernel hangs the terminal up and sends SIGHUP to the
    /// session's leader and foreground process group (nixcmd).
    pub fn hang_up(&mut self) {
        drop(self.tty.take().expect("started with a terminal"));
    }

    /// Starts nixcmd in a new session whose controlling terminal is a new pseudo-terminal
    /// (its stdin); returns the terminal's master side.
    fn spawn_on_controlling_tty(test: Test) -> (OwnedFd, Spawned) {
        let (master, slave) = open_pty();
        let (mut cmd, root) = test.into_command();
        // SAFETY: setsid and ioctl are async-signal-safe; they run in the child between fork
        // and exec, on its own descriptor 0 (the terminal, set up before pre_exec runs).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        (master, Self::spawn_command(cmd, root, Some(slave)))
    }

    /// Starts with stdin, stdout and stderr on a pseudo-terminal `cols` columns wide, as
    /// [`run_on_terminal`] does, for a test that acts while the run goes on: every byte
    /// written to the terminal is [`Spawned::stdout_so_far`]; stderr is empty.
    pub fn start_on_terminal(test: Test, cols: u16) -> Spawned {
        let (master, slave) = open_pty();
        set_size(&master, cols);
        let (mut cmd, root) = test.into_command();
        let out = slave.try_clone().expect("clone the pty slave");
        let err = slave.try_clone().expect("clone the pty slave");
        cmd.stdin(Stdio::from(slave))
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        let started = Instant::now();
        let child = cmd.spawn().expect("spawn nixcmd");
        drop(cmd);
        // The master reads end of file (EIO) once nobody holds the slave any more.
        let stdout = collect(std::fs::File::from(master));
        Spawned {
            child,
            root: Some(root),
            started,
            stdout: Some(stdout),
            stderr: Some(collect(std::io::empty())),
            tty: None,
        }
    }

    fn spawn(test: Test, stdin: Option<std::fs::File>) -> Spawned {
        let (cmd, root) = test.into_command();
        Self::spawn_command(cmd, root, stdin)
    }

    fn spawn_command(
        mut cmd: std::process::Command,
        root: tempfile::TempDir,
        stdin: Option<std::fs::File>,
    ) -> Spawned {
        cmd.stdin(stdin.map(Stdio::from).unwrap_or_else(Stdio::null))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = cmd.spawn().expect("spawn nixcmd");
        drop(cmd);
        let stdout = collect(child.stdout.take().expect("piped stdout"));
        let stderr = collect(child.stderr.take().expect("piped stderr"));
        Spawned {
            child,
            root: Some(root),
            started,
            stdout: Some(stdout),
            stderr: Some(stderr),
            tty: None,
        }
    }

    /// Whether nixcmd has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait for nixcmd").is_none()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn root(&self) -> &Path {
        self.root.as_ref().expect("the test folder").path()
    }

    pub fn project(&self) -> PathBuf {
        self.root().join("project")
    }

    /// What nixcmd has written to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        so_far(self.stdout.as_ref())
    }

    /// What nixcmd has written to stderr so far.
    pub fn stderr_so_far(&self) -> String {
        so_far(self.stderr.as_ref())
    }

    /// Whether nixcmd has printed `text` so far, on stdout or stderr (a notice's stream
    /// depends on the output mode).
    pub fn printed(&self, text: &str) -> bool {
        self.stdout_so_far().contains(text) || self.stderr_so_far().contains(text)
    }

    /// Sends a signal to nixcmd itself (not to its steps' process groups).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Waits for the process to end (failing the test after [`LIMIT`]).
    pub fn wait(mut self) -> Output {
        let root = self.root.as_ref().expect("the test folder").path();
        let status = wait_limited(&mut self.child, LIMIT, root);
        drop(self.tty.take());
        let text = |collected: Option<Collected>| {
            let (buf, reader) = collected.expect("output collected once");
            let _ = reader.join();
            let bytes = buf.lock().expect("output buffer").clone();
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Output {
            stdout: text(self.stdout.take()),
            stderr: text(self.stderr.take()),
            status,
            elapsed: self.started.elapsed(),
            root: self.root.take().expect("the test folder"),
        }
    }
}

impl Drop for Spawned {
    /// Runs before the fields are dropped: nixcmd stops (and rolls back) while its state and
    /// project folders still exist. Never panics: it may run while a failed test unwinds.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(root) = &self.root {
            stop(&mut self.child, root.path());
        }
    }
}

/// How long a nixcmd told to stop (SIGINT, as Ctrl-C) has to end its step and roll back
/// before it is killed: its own escalation to SIGKILL takes 2 × 2 s, a rollback a little
/// more.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// Stops a nixcmd that still runs: SIGINT, as an operator's Ctrl-C (the step's group is
/// stopped and rolled back), then, if it has not exited within [`STOP_LIMIT`], SIGKILL; it is
/// reaped either way. A SIGKILL leaves nixcmd's step running, as `kill -9` of a run does
/// (nothing can stop it for nixcmd then): those processes, found by the state folder of the
/// test under `root` in their environment, are killed too.
fn stop(child: &mut Child, root: &Path) {
    // SAFETY: kill(2) on our own child, which has not been reaped yet.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let until = Instant::now() + STOP_LIMIT;
    while Instant::now() < until {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    kill_left_behind(root);
}

/// For a test that kills nixcmd with SIGKILL on purpose: the step runs on, as `kill -9`
/// leaves it, until the test lets it end (a `WAIT_FOR_GO` step waits for a `go` file). Should
/// the test fail before that, this kills what is left of the test under the path it holds as
/// the test unwinds: a loop waiting for a file in a removed folder never ends.
pub struct KillLeftBehindOnPanic(pub PathBuf);

impl Drop for KillLeftBehindOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            kill_left_behind(&self.0);
        }
    }
}

/// What one of the collected streams holds so far.
fn so_far(collected: Option<&Collected>) -> String {
    let buf = collected.expect("output still collected").0.lock();
    String::from_utf8_lossy(&buf.expect("output buffer")).into_owned()
}

fn collect(pipe: impl Read + Send + 'static) -> Collected {
    let buf: Arc<Mutex<Vec<u8>>> = Arc::default();
    let shared = buf.clone();
    (buf, std::thread::spawn(move || drain_into(pipe, shared)))
}

fn drain_into(mut pipe: impl Read, buf: Arc<Mutex<Vec<u8>>>) {
    let mut chunk = [0u8; 4096];
    loop {
        match pipe.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf
                .lock()
                .expect("output buffer")
                .extend_from_slice(&chunk[..n]),
        }
    }
}

/// The exit code (128+N for signal N), stopping the child (see [`stop`]: the test under `root`
/// leaves no process behind) and failing after `limit`.
fn wait_limited(child: &mut Child, limit: Duration, root: &Path) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for nixcmd") {
            return status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        }
        if Instant::now() > until {
            stop(child, root);
            panic!("nixcmd did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One step that waits until the project has a file `go`.
pub const WAIT_FOR_GO: &str = r#"---
description: Waits for a go
nixcmd: {}
---
# Wait

## Steps
### Wait
```bash {id=wait}
echo waiting >> trace
while [ ! -e go ]; do sleep 0.02; done
echo done >> trace
```
"#;

/// Runs the test with stdin, stdout and stderr on a pseudo-terminal `cols` columns wide, as
/// at an operator's terminal: the live display is on. Returns the exit code and every byte
/// written to the terminal.
pub fn run_on_terminal(test: Test, cols: u16) -> (i32, String) {
    let out = Spawned::start_on_terminal(test, cols).wait();
    (out.status, out.stdout)
}

/// Makes the terminal of `master` 24 rows by `cols` columns.
fn set_size(master: &OwnedFd, cols: u16) {
    let size = libc::winsize {
        ws_row: 24,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own, on a descriptor we own.
    assert_eq!(
        unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) },
        0,
        "set the terminal size"
    );
}

/// Runs the test with stdin on a pseudo-terminal, typing `input` on it.
pub fn run_with_tty(test: Test, input: &[u8]) -> Output {
    Spawned::start_with_tty(test, input).wait()
}

/// A new pseudo-terminal pair (master, slave) with POSIX calls only.
fn open_pty() -> (OwnedFd, std::fs::File) {
    // SAFETY: plain libc calls on a descriptor we own; every result is checked.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt failed");
        let master_fd = OwnedFd::from_raw_fd(master);
        assert_eq!(libc::grantpt(master), 0, "grantpt failed");
        assert_eq!(libc::unlockpt(master), 0, "unlockpt failed");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master, name.as_mut_ptr(), name.len()),
            0,
            "ptsname_r failed"
        );
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_str()
            .expect("a UTF-8 pty name")
            .to_string();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&path)
            .expect("open the pty slave");
        (master_fd, slave)
    }
}

/// The run folders under a test's state folder, oldest first (run ids sort by time).
pub fn run_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join("state/nixcmd/runs")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    // Run ids sort by second only; `started` in state.json has milliseconds.
    let started = |p: &Path| {
        std::fs::read_to_string(p.join("state.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|v| v.get("started").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default()
    };
    dirs.sort_by_cached_key(|p| started(p));
    dirs
}

/// Runs `test` (a `run` without a terminal) to its pause at a confirmation: the output (exit 3
/// asserted), the temporary root and the one run's id.
pub fn paused(test: Test) -> (Output, PathBuf, String) {
    let out = test.run();
    out.assert_status(3);
    let root = out.root.path().to_path_buf();
    let id = run_id(&only_run(&root));
    (out, root, id)
}

/// The one run a test made.
pub fn only_run(root: &Path) -> PathBuf {
    let dirs = run_dirs(root);
    assert_eq!(dirs.len(), 1, "expected exactly one run folder: {dirs:?}");
    dirs.into_iter().next().expect("one run")
}

pub fn run_id(dir: &Path) -> String {
    dir.file_name()
        .and_then(|n| n.to_str())
        .expect("a run folder name")
        .to_string()
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// `step id → status` from a run's `progress.json`, in file order.
pub fn statuses(dir: &Path) -> Vec<(String, String)> {
    read_json(&dir.join("progress.json"))["steps"]
        .as_array()
        .expect("progress.json has steps")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A file of the project as text ("" when it does not exist).
pub fn project_file(root: &Path, name: &str) -> String {
    std::fs::read_to_string(root.join("project").join(name)).unwrap_or_default()
}

/// Every line of `text` as a JSON event (panics on a line that is not JSON).
pub fn events(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event ({e}): {l:?}"))
        })
        .collect()
}

/// The messages of the `warning` events of an event stream (`--format json` or
/// events.ndjson), in order.
pub fn warning_messages(text: &str) -> Vec<String> {
    events(text)
        .iter()
        .filter(|e| e["type"] == "warning")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A compact, stable view of an event stream: one line per event with its type and the
/// fields that say what happened (no times, ids or durations).
pub fn event_outline(events: &[Value]) -> String {
    let mut s = String::new();
    for e in events {
        let mut line = e["type"].as_str().unwrap_or("?").to_string();
        for key in [
            "step_id",
            "status",
            "attempt",
            "exit_code",
            "message",
            "reason",
        ] {
            if let Some(v) = e.get(key) {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                line.push_str(&format!(" {key}={v}"));
            }
        }
        if let Some(blocks) = e.get("blocks") {
            line.push_str(&format!(" blocks={blocks}"));
        }
        s.push_str(&line);
        s.push('\n');
    }
    s
}

static RUN_ID_STAMP: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d{8}-\d{6}-[0-9a-f]{4}").expect("valid regex"));
static CLOCK: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\[\d\d:\d\d:\d\d\]").expect("valid regex"));
static ISO_TIME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z").expect("valid regex"));

/// Temp paths, durations, run ids and clock times filtered out of a text.
pub fn normalize(text: &str, root: &Path) -> String {
    let text = filter_paths(text, root);
    let text = RUN_ID_STAMP.replace_all(&text, "[ID]");
    let text = ISO_TIME.replace_all(&text, "[TIMESTAMP]");
    CLOCK.replace_all(&text, "[TIME]").into_owned()
}

/// stdout, stderr and the exit status of a run, normalized as in [`normalize`].
pub fn normalized(out: &Output) -> String {
    normalize(&out.normalized(), out.root.path())
}

/// Processes whose command line mentions `marker` (`pgrep -f`), as "pid cmdline" lines.
pub fn processes(marker: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-a", "-f", marker])
        .output()
        .expect("pgrep is installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls `cond` every 20 ms until it holds, failing the test after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Permission bits of a path.
pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// nixcmd's own high-water mark of resident memory, in kB (VmHWM only grows). Not wait4's
/// rusage: that includes the memory of the test process that spawned it.
pub fn peak_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs nixcmd to the end (stdin from /dev/null, stderr dropped), reading its high-water mark
/// while it runs. Returns the exit code, the peak in kB, what it printed and its folder.
pub fn run_measuring_peak(t: Test) -> (Option<i32>, u64, String, tempfile::TempDir) {
    let (mut cmd, root) = t.into_command();
    let stdout = root.path().join("stdout.txt");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn nixcmd");
    let started = Instant::now();
    let mut peak = 0u64;
    let status = loop {
        if let Some(kb) = peak_kb(child.id()) {
            peak = peak.max(kb);
        }
        if let Some(status) = child.try_wait().expect("wait for nixcmd") {
            break status;
        }
        // Only a hang should end up here: the chatty runs measured take 25 s alone and
        // several times that beside the rest of the suite on a 2-core machine.
        if started.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("nixcmd did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(peak > 0, "VmHWM was read");
    assert_ne!(status.code(), Some(101), "nixcmd panicked");
    let printed = std::fs::read_to_string(&stdout).expect("stdout");
    (status.code(), peak, printed, root)
}
