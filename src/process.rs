//! Short-lived helper processes that are not runbook steps (`bash -n`, `shellcheck`, `git`,
//! `nix eval`): run to completion with input on stdin and output captured. Steps themselves
//! are spawned by the executor's process-group runner; nothing else starts processes.

use std::io::Write;
use std::process::{Command, Stdio};

/// What a finished helper process printed.
#[derive(Debug, Clone)]
pub struct Captured {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Runs `program args…` with `stdin` fed in, capturing output. `Ok(None)` when the program
/// is not installed.
pub fn capture(program: &str, args: &[&str], stdin: &str) -> std::io::Result<Option<Captured>> {
    capture_in(None, program, args, stdin)
}

/// Whether `dir` is this process's working directory, which a child inherits anyway. A child
/// is then started without `current_dir`: with one, the standard library starts it with
/// fork+exec instead of posix_spawn (vfork) in a statically linked nixcmd (the release
/// binary), where it cannot look up `posix_spawn_file_actions_addchdir_np` — a fork per step,
/// which doubled a short run's system time. nixcmd never changes its own directory.
fn is_own_cwd(dir: &Path) -> bool {
    static CWD: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    CWD.get_or_init(|| std::env::current_dir().ok()).as_deref() == Some(dir)
}

/// [`capture`] in a given working directory.
pub fn capture_in(
    dir: Option<&std::path::Path>,
    program: &str,
    args: &[&str],
    stdin: &str,
) -> std::io::Result<Option<Captured>> {
    let mut command = Command::new(program);
    if let Some(dir) = dir.filter(|d| !is_own_cwd(d)) {
        command.current_dir(dir);
    }
    let child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let input = stdin.to_string();
    let mut pipe = child.stdin.take();
    // Feed stdin from a thread so a program that writes before reading cannot deadlock us.
    let writer = std::thread::spawn(move || {
        if let Some(p) = pipe.as_mut() {
            let _ = p.write_all(input.as_bytes());
        }
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(Some(Captured {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }))
}

/// Runs a program attached to the terminal (for `sudo -v`, which asks for a password).
pub fn interactive(program: &str, args: &[&str]) -> std::io::Result<bool> {
    Ok(Command::new(program).args(args).status()?.success())
}

/// Runs a program silently and reports whether it succeeded (`sudo -n -v` keep-alive).
pub fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `program` can be found on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join(program);
            candidate.is_file()
                && std::fs::metadata(&candidate)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
                    .unwrap_or(false)
        })
    })
}

// ---------------------------------------------------------------------------------------
// Step processes: each runs in its own process group with output streamed line by line,
// a per-attempt timeout, cancellation, and a sweep that leaves no process behind.

mod prestart;
pub use prestart::{Prestarted, may_prestart, prestart};

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Cancellation requests: 0 none, 1 stop and roll back (first Ctrl-C), 2 stop at once.
///
/// A clone shares the requests. [`Cancel::shielded`] makes the view that rollback and
/// `always` blocks run with: in it a first request is held back (level 0), since stopping a
/// block that restores the machine would leave it half restored; only "stop at once" (2)
/// gets through.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    shared: Arc<Requests>,
    shielded: bool,
}

#[derive(Debug, Default)]
struct Requests {
    count: AtomicUsize,
    /// The held-back request was told about (see [`Cancel::take_held`]): once per run.
    held_told: std::sync::atomic::AtomicBool,
    /// Requests come from signals (Ctrl-C, SIGTERM): a person can press again.
    by_signal: std::sync::atomic::AtomicBool,
}

impl Cancel {
    pub fn level(&self) -> usize {
        let n = self.shared.count.load(Ordering::SeqCst);
        if self.shielded && n < 2 { 0 } else { n }
    }
    pub fn request(&self) {
        self.shared.count.fetch_add(1, Ordering::SeqCst);
    }
    /// The view a rollback or `always` block runs with (see [`Cancel`]).
    pub fn shielded(&self) -> Cancel {
        Cancel {
            shared: self.shared.clone(),
            shielded: true,
        }
    }
    /// True once per run, in a shielded view, when a request is being held back: the time to
    /// say that it was (and, for a person, that a second one stops at once).
    pub fn take_held(&self) -> bool {
        self.shielded
            && self.shared.count.load(Ordering::SeqCst) == 1
            && !self.shared.held_told.swap(true, Ordering::SeqCst)
    }
    /// Whether the requests come from signals ([`Cancel::install_signal_handlers`]), so that
    /// a person can send a second one; the MCP server's requests do not.
    pub fn by_signal(&self) -> bool {
        self.shared.by_signal.load(Ordering::SeqCst)
    }
    /// Makes SIGINT and SIGTERM to nixcmd count as cancellation requests, SIGQUIT as two
    /// (stop at once), and SIGHUP mark the terminal as gone (see [`hung_up`]).
    pub fn install_signal_handlers(&self) -> std::io::Result<()> {
        self.shared.by_signal.store(true, Ordering::SeqCst);
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let shared = self.shared.clone();
            // SAFETY: the handler only performs an atomic increment, which is async-signal-safe.
            unsafe {
                signal_hook::low_level::register(sig, move || {
                    shared.count.fetch_add(1, Ordering::SeqCst);
                })?;
            }
        }
        // Ctrl-\ (SIGQUIT) is the key people press when Ctrl-C seems not to work. Its default
        // (dump core, die) would orphan the running step: it stops at once instead, as a
        // second Ctrl-C does (the step's group is killed, no rollback). Already ignored (a
        // background job of a script): left so, as SIGHUP below.
        if !ignored(libc::SIGQUIT) {
            let shared = self.shared.clone();
            // SAFETY: the handler only performs an atomic increment, which is
            // async-signal-safe.
            unsafe {
                signal_hook::low_level::register(signal_hook::consts::SIGQUIT, move || {
                    shared.count.fetch_add(2, Ordering::SeqCst);
                })?;
            }
        }
        // Already ignored (`nohup nixcmd …`): left so, because exec keeps an ignored signal
        // ignored in the steps but resets a handled one to its default.
        if !ignored(libc::SIGHUP) {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe {
                signal_hook::low_level::register(signal_hook::consts::SIGHUP, || {
                    HUNG_UP.store(true, Ordering::SeqCst);
                })?;
            }
        }
        crate::vfork::handlers_changed();
        Ok(())
    }
}

/// Set when nixcmd got SIGHUP: its terminal, or the SSH session it ran in, went away. By
/// default SIGHUP would kill nixcmd and leave the running step behind, orphaned in its own
/// process group, with nothing recorded and nothing rolled back. A run half done is the
/// worst outcome, and a dropped connection is not an operator's "stop" (that is Ctrl-C), so
/// the run goes on without its terminal, as `nixos-rebuild switch` does since it activates
/// in a unit of its own: steps keep running, output still reaches the records, and a gate
/// that would ask pauses the run instead (nobody is there to answer).
static HUNG_UP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether nixcmd got SIGHUP (see [`HUNG_UP`]).
pub fn hung_up() -> bool {
    HUNG_UP.load(Ordering::SeqCst)
}

/// Whether `sig` is ignored by this process now.
pub fn ignored(sig: libc::c_int) -> bool {
    // SAFETY: sigaction with a null new action only reads the current disposition into
    // `old`, a zeroed local of the right type.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// What to start.
pub struct GroupSpec<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    /// Bytes for stdin (e.g. a script for `ssh … bash -s`); `None` gives /dev/null.
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Time between SIGINT, SIGTERM and SIGKILL.
    pub grace: Duration,
    /// A value unique to this process tree, exported as `NIXCMD_STEP_TOKEN` so that
    /// processes that left the group (setsid, daemonize) are still found and stopped.
    pub token: &'a str,
}

/// How a group run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The main process exited with this code.
    Exited(i32),
    /// The main process was killed by this signal (its exit code reads 128+N, as in a shell).
    Killed(i32),
    TimedOut,
    /// Cancelled by the caller; the payload is the cancellation level seen.
    Cancelled(usize),
}

/// Starts `program` in a new process group with stdout and stderr piped (and stdin piped or
/// `/dev/null`). Every step process — local shell or `ssh` client — starts here.
///
/// Through a vfork (nothing of nixcmd's memory is copied): our own ([`crate::vfork`]) for a
/// program given or found as a path, `posix_spawnp` for a bare name nobody found (its search
/// and error are the reference), with the working directory set by
/// `posix_spawn_file_actions_addchdir_np` there (glibc 2.29, musl 1.1.24). The standard
/// library's `Command` looks that function up at run time, which fails in the statically
/// linked release binary, and then forks instead: page tables copied per step.
/// The child is set up as `Command` would: the inherited environment with `env` on top
/// (sorted by name), an empty signal mask, SIGPIPE back to its default (Rust ignores it),
/// every other descriptor closed on exec; a missing program or directory is the error the
/// exec or the chdir met (ENOENT), as before.
pub fn spawn_group(
    program: &str,
    args: &[String],
    cwd: Option<&Path>,
    env: &[(String, String)],
    piped_stdin: bool,
) -> std::io::Result<GroupChild> {
    use std::os::unix::ffi::OsStrExt;
    ensure_subreaper();
    let path = resolve_program(program);
    let program_c = c_string(path.as_os_str().as_bytes())?;
    let mut argv = vec![program_c.clone()];
    for arg in args {
        argv.push(c_string(arg.as_bytes())?);
    }
    let (_env_strings, envp) = child_env(env)?;
    let cwd_c = cwd
        .map(|d| c_string(d.as_os_str().as_bytes()))
        .transpose()?;
    let (stdin_child, stdin_ours) = if piped_stdin {
        let (read, write) = pipe()?;
        (Some(read), Some(write))
    } else {
        (None, None)
    };
    let stdin_fd = match &stdin_child {
        Some(fd) => fd.as_raw_fd(),
        None => dev_null()?,
    };
    let (stdout_ours, stdout_child) = pipe()?;
    let (stderr_ours, stderr_child) = pipe()?;
    let pid = posix_spawn(
        &program_c,
        &argv,
        &envp,
        cwd_c.as_deref(),
        [stdin_fd, stdout_child.as_raw_fd(), stderr_child.as_raw_fd()],
    )?;
    // The child's ends are the child's now: closing ours lets end of file reach the reader.
    drop((stdin_child, stdout_child, stderr_child));
    close_deferred();
    Ok(GroupChild {
        pid,
        stdin: stdin_ours.map(std::fs::File::from),
        stdout: Some(std::fs::File::from(stdout_ours)),
        stderr: Some(std::fs::File::from(stderr_ours)),
        status: None,
    })
}

/// A process started by [`spawn_group`]: the leader of its own process group. Dropping it
/// neither kills nor reaps it (as with `std::process::Child`).
pub struct GroupChild {
    pid: i32,
    pub stdin: Option<std::fs::File>,
    pub stdout: Option<std::fs::File>,
    pub stderr: Option<std::fs::File>,
    /// Once reaped: the pid may belong to another process then, it is not waited for again.
    status: Option<std::process::ExitStatus>,
}

impl GroupChild {
    /// The process id, which is also the process group id.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// The exit status if the process has exited (reaping it), without blocking.
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        loop {
            if let Some(status) = self.reap(0)? {
                return Ok(status);
            }
        }
    }

    fn reap(&mut self, flags: i32) -> std::io::Result<Option<std::process::ExitStatus>> {
        use std::os::unix::process::ExitStatusExt;
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let mut raw = 0;
        loop {
            // SAFETY: waitpid on our own child, writing its status into a local.
            let r = unsafe { libc::waitpid(self.pid, &mut raw, flags) };
            if r == 0 {
                return Ok(None);
            }
            if r > 0 {
                let status = std::process::ExitStatus::from_raw(raw);
                self.status = Some(status);
                return Ok(Some(status));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

fn c_string(bytes: &[u8]) -> std::io::Result<std::ffi::CString> {
    std::ffi::CString::new(bytes).map_err(|_| nul_error())
}

fn nul_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "nul byte found in provided data",
    )
}

/// This process's environment as `KEY=VALUE` C strings, read once: nothing in nixcmd changes
/// it, and building it again for every step (a map of ~50 entries, a C string each) was most
/// of a spawn's own instructions.
struct Inherited {
    /// In the order of `environ`.
    entries: Vec<std::ffi::CString>,
    /// (name, index in `entries`) sorted by name, one per name (the last, as a map keeps).
    by_name: Vec<(Vec<u8>, usize)>,
}

fn inherited() -> &'static Inherited {
    static ENV: std::sync::OnceLock<Inherited> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        use std::os::unix::ffi::OsStrExt;
        let mut entries = Vec::new();
        let mut by_name: Vec<(Vec<u8>, usize)> = Vec::new();
        for (k, v) in std::env::vars_os() {
            let Ok(entry) = c_string(&env_entry(k.as_bytes(), v.as_bytes())) else {
                continue;
            };
            by_name.push((k.as_bytes().to_vec(), entries.len()));
            entries.push(entry);
        }
        // Stable: of equal names the last stays last, and is the one kept.
        by_name.sort_by(|a, b| a.0.cmp(&b.0));
        by_name.reverse();
        by_name.dedup_by(|later, kept| later.0 == kept.0);
        by_name.reverse();
        Inherited { entries, by_name }
    })
}

fn env_entry(key: &[u8], value: &[u8]) -> Vec<u8> {
    // Room for the NUL that `CString::new` adds: no reallocation there.
    let mut entry = Vec::with_capacity(key.len() + value.len() + 2);
    entry.extend_from_slice(key);
    entry.push(b'=');
    entry.extend_from_slice(value);
    entry
}

/// The child's environment as `Command` gives it: this process's own when `env` is empty,
/// else this process's with `env` set on top (a later pair wins), sorted by name. Returned
/// as the C strings made for `env` and the NULL-terminated array of entries (pointing into
/// those and into [`inherited`]), valid while the former lives.
fn child_env(
    env: &[(String, String)],
) -> std::io::Result<(Vec<std::ffi::CString>, Vec<*mut libc::c_char>)> {
    let base = inherited();
    let ptr = |c: &std::ffi::CString| c.as_ptr().cast_mut();
    if env.is_empty() {
        let mut ptrs: Vec<_> = base.entries.iter().map(ptr).collect();
        ptrs.push(std::ptr::null_mut());
        return Ok((Vec::new(), ptrs));
    }
    // Sorted by name, one per name (the last given, as a map would keep): a sorted vector, not
    // a map, for the handful of a step's own variables.
    let mut set: Vec<(&[u8], std::ffi::CString)> = Vec::with_capacity(env.len());
    for (k, v) in env {
        let entry = std::ffi::CString::new(env_entry(k.as_bytes(), v.as_bytes()))
            .map_err(|_| nul_error())?;
        set.push((k.as_bytes(), entry));
    }
    set.reverse();
    // Stable: of equal names the last given comes first now, and is the one kept.
    set.sort_by(|a, b| a.0.cmp(b.0));
    set.dedup_by(|later, kept| later.0 == kept.0);
    let mut ptrs = Vec::with_capacity(base.by_name.len() + set.len() + 1);
    let mut ours = set.iter().peekable();
    for (name, i) in &base.by_name {
        while let Some((_, c)) = ours.next_if(|(k, _)| *k < name.as_slice()) {
            ptrs.push(ptr(c));
        }
        match ours.next_if(|(k, _)| *k == name.as_slice()) {
            Some((_, c)) => ptrs.push(ptr(c)),
            None => ptrs.push(ptr(&base.entries[*i])),
        }
    }
    ptrs.extend(ours.map(|(_, c)| ptr(c)));
    ptrs.push(std::ptr::null_mut());
    Ok((set.into_iter().map(|(_, c)| c).collect(), ptrs))
}

/// Descriptors a finished step no longer needs (its pipes at end of file, its pidfd), closed
/// after the next spawn instead of between the two steps: closing a pipe frees its buffers and
/// its inode, the costliest calls left on the way from one step's exit to the next one's start.
static CLOSE_LATER: std::sync::Mutex<Vec<std::os::fd::OwnedFd>> = std::sync::Mutex::new(Vec::new());

/// Closes `fd` after the next spawn (or at [`close_deferred`]): for what a finished step
/// leaves (its log too), whose closing need not delay the next step.
pub fn close_later(fd: std::os::fd::OwnedFd) {
    CLOSE_LATER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(fd);
}

/// Closes what [`close_later`] kept: after every spawn, and when a run ends (no descriptor of
/// a finished step stays open in a long-lived process such as the MCP server).
pub fn close_deferred() {
    let kept = std::mem::take(
        &mut *CLOSE_LATER
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    drop(kept);
}

/// A pipe (read end, write end), both close-on-exec and above the standard descriptors (if
/// nixcmd was started with one of those closed, a new pipe could take its number, and the
/// child's `dup2` onto 0–2 would then clobber it).
fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors that nothing else owns.
    let (read, write) = unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    Ok((above_stdio(read)?, above_stdio(write)?))
}

fn above_stdio(fd: std::os::fd::OwnedFd) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: duplicating a descriptor we own to the lowest free number ≥ 3.
    let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(dup) })
}

/// `/dev/null` opened once (close-on-exec) and given to every child without piped input as
/// its stdin: an open and a close less per step.
fn dev_null() -> std::io::Result<std::os::fd::RawFd> {
    static NULL: std::sync::OnceLock<std::os::fd::OwnedFd> = std::sync::OnceLock::new();
    if let Some(fd) = NULL.get() {
        return Ok(fd.as_raw_fd());
    }
    let file = std::fs::File::open("/dev/null")?;
    let fd = above_stdio(file.into())?;
    // Another thread may have won the race: its descriptor is used, ours closed.
    Ok(NULL.get_or_init(|| fd).as_raw_fd())
}

/// While it lives, nixcmd ignores SIGTTIN and SIGTTOU, so that a child spawned meanwhile
/// starts with them ignored (exec keeps an ignored disposition; posix_spawn cannot set one).
///
/// A step runs in its own process group, a background job of nixcmd's terminal, and nobody
/// can bring it to the foreground. Reading the terminal (`read < /dev/tty`, ssh asking about a
/// host key or a password, sudo whose credentials expired, git asking for a login) would stop
/// it with SIGTTIN until its timeout, 30 minutes by default, with nothing on the screen. With
/// SIGTTIN ignored the read fails at once (EIO) and the step fails with the program's own
/// message; with SIGTTOU ignored, setting the terminal up for a password prompt does not stop
/// it either. The switch is process-wide, so spawns take turns; it lasts microseconds and
/// nixcmd's own behaviour (stopped when it reads the terminal in the background) is back
/// before anything else could notice.
struct TerminalSignalsIgnored {
    old: [libc::sigaction; 2],
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TERMINAL_SIGNALS: std::sync::Mutex<()> = std::sync::Mutex::new(());

const TERMINAL_SIGNALS_IGNORED: [libc::c_int; 2] = [libc::SIGTTIN, libc::SIGTTOU];

impl TerminalSignalsIgnored {
    fn new() -> Self {
        let turn = TERMINAL_SIGNALS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // SAFETY: sigaction with a zeroed struct whose handler is SIG_IGN, saving the old
        // disposition into memory we own; restored in Drop.
        unsafe {
            let mut old: [libc::sigaction; 2] = std::mem::zeroed();
            let mut ignore: libc::sigaction = std::mem::zeroed();
            ignore.sa_sigaction = libc::SIG_IGN;
            libc::sigemptyset(&mut ignore.sa_mask);
            for (sig, old) in TERMINAL_SIGNALS_IGNORED.iter().zip(old.iter_mut()) {
                libc::sigaction(*sig, &ignore, old);
            }
            TerminalSignalsIgnored { old, _turn: turn }
        }
    }
}

impl Drop for TerminalSignalsIgnored {
    fn drop(&mut self) {
        // SAFETY: restores the dispositions saved in `new`.
        unsafe {
            for (sig, old) in TERMINAL_SIGNALS_IGNORED.iter().zip(self.old.iter()) {
                libc::sigaction(*sig, old, std::ptr::null_mut());
            }
        }
    }
}

/// `posix_spawn` (`posix_spawnp` for a bare name, as `Command` searches `PATH`) of
/// `program argv…` with `envp` (NULL-terminated), in `cwd` if given, with `stdio` as its descriptors 0, 1
/// and 2, as the leader of a new process group. Returns the pid.
fn posix_spawn(
    program: &std::ffi::CStr,
    argv: &[std::ffi::CString],
    envp: &[*mut libc::c_char],
    cwd: Option<&std::ffi::CStr>,
    stdio: [std::os::fd::RawFd; 3],
) -> std::io::Result<i32> {
    let check = |r: libc::c_int| {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::from_raw_os_error(r))
        }
    };
    let mut argv_p: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_p.push(std::ptr::null_mut());
    // A path (every program found on PATH is resolved to one): started by our own vfork; a
    // bare name nobody found goes to posix_spawnp, whose search and error are the reference.
    if program.to_bytes().contains(&b'/') {
        return crate::vfork::spawn(program, &argv_p, envp, cwd, stdio);
    }
    let mut actions = std::mem::MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit();
    let mut attr = std::mem::MaybeUninit::<libc::posix_spawnattr_t>::uninit();
    // SAFETY: the file actions and attributes are initialised before use and destroyed on
    // every path below; every pointer handed over (program, NUL-terminated argv and envp
    // arrays of C strings, cwd) lives until posix_spawn returns, which is after the child has
    // exec'd or failed (glibc and musl wait for that), so the child never sees freed memory.
    unsafe {
        check(libc::posix_spawn_file_actions_init(actions.as_mut_ptr()))?;
        let actions = actions.as_mut_ptr();
        if let Err(e) = check(libc::posix_spawnattr_init(attr.as_mut_ptr())) {
            libc::posix_spawn_file_actions_destroy(actions);
            return Err(e);
        }
        let attr = attr.as_mut_ptr();
        let result = (|| {
            if let Some(cwd) = cwd {
                check(libc::posix_spawn_file_actions_addchdir_np(
                    actions,
                    cwd.as_ptr(),
                ))?;
            }
            for (target, fd) in stdio.into_iter().enumerate() {
                check(libc::posix_spawn_file_actions_adddup2(
                    actions,
                    fd,
                    target as libc::c_int,
                ))?;
            }
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            check(libc::posix_spawnattr_setsigmask(attr, set.as_ptr()))?;
            libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(attr, set.as_ptr()))?;
            check(libc::posix_spawnattr_setpgroup(attr, 0))?;
            check(libc::posix_spawnattr_setflags(
                attr,
                (libc::POSIX_SPAWN_SETPGROUP
                    | libc::POSIX_SPAWN_SETSIGMASK
                    | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))?;
            let spawn = if program.to_bytes().contains(&b'/') {
                libc::posix_spawn
            } else {
                libc::posix_spawnp
            };
            let mut pid: libc::pid_t = 0;
            let _ignored = TerminalSignalsIgnored::new();
            check(spawn(
                &mut pid,
                program.as_ptr(),
                actions,
                attr,
                argv_p.as_ptr(),
                envp.as_ptr(),
            ))?;
            Ok(pid)
        })();
        libc::posix_spawnattr_destroy(attr);
        libc::posix_spawn_file_actions_destroy(actions);
        result
    }
}

/// Reads the child's stdout and stderr on two threads, one read at a time as
/// [`run_group_observed`] does, sending `lines(stream, text)` with the complete lines of each
/// read, each ended by a newline (the unterminated rest at end of file is a line too), `cut(stream,
/// piece)` with each piece of a line longer than 64 KiB but its last (see [`Observed::Cut`]),
/// `progress(stream, text)` as [`Observed::Progress`] says, and
/// `eof()` when a pipe closes. One message per read, not per
/// line: whoever receives them can write what one read brought in one go. One string, not one
/// per line: a message's memory is its text. A bounded channel makes the readers wait for the
/// receiver (and the child for them) instead of holding the output in memory.
pub fn read_lines<M: Send + 'static>(
    child: &mut GroupChild,
    tx: &mpsc::SyncSender<M>,
    lines: fn(Stream, String) -> M,
    cut: fn(Stream, String) -> M,
    progress: fn(Stream, String) -> M,
    eof: fn() -> M,
) {
    for (stream, file) in [
        (Stream::Stdout, child.stdout.take()),
        (Stream::Stderr, child.stderr.take()),
    ] {
        if file.is_none() {
            continue;
        }
        let tx = tx.clone();
        std::thread::spawn(move || {
            // A blocking pipe: each read waits for output, as poll(2) would.
            let mut pipe = Pipe::new(stream, file);
            while let Some(file) = &pipe.file {
                // An unfinished line is offered once the pipe stays quiet: a poll before the
                // next read, only after a read that ended inside a line.
                if pipe.unshown_since.is_some()
                    && !readable_within(file.as_raw_fd(), QUIET)
                    && let Some(text) = pipe.quiet_partial(Instant::now())
                {
                    let _ = tx.send(progress(stream, String::from_utf8_lossy(text).into()));
                }
                let mut batch = String::new();
                pipe.read(&mut |_, line, is_cut| {
                    if is_cut {
                        // Alone, after the whole lines before it: the receiver must know
                        // where a line was cut (see [`Observed::Cut`]).
                        if !batch.is_empty() {
                            let _ = tx.send(lines(stream, std::mem::take(&mut batch)));
                        }
                        let _ = tx.send(cut(stream, line.to_string()));
                        return;
                    }
                    batch.push_str(line);
                    batch.push('\n');
                });
                if !batch.is_empty() {
                    let _ = tx.send(lines(stream, batch));
                }
                if let Some(segment) = pipe.progress() {
                    let _ = tx.send(progress(stream, String::from_utf8_lossy(segment).into()));
                }
            }
            let _ = tx.send(eof());
        });
    }
}

/// Runs a process in a new process group, calling `on_line` for every output line (on the
/// caller's thread). Whatever happens, no process of the group (or carrying its token) is
/// left when this returns.
pub fn run_group(
    spec: &GroupSpec,
    cancel: &Cancel,
    on_line: &mut dyn FnMut(Stream, &str),
) -> std::io::Result<Ended> {
    run_group_observed(spec, cancel, &mut |seen| {
        if let Observed::Line(stream, line) | Observed::Cut(stream, line) = seen {
            on_line(stream, line)
        }
    })
}

/// What [`run_group_observed`] reports while a group runs.
pub enum Observed<'a> {
    /// The process has started: bookkeeping done here (records, events) runs while the
    /// process starts up, instead of delaying its start.
    Spawned,
    Line(Stream, &'a str),
    /// A piece of a line longer than 64 KiB, cut there (at a character's end): the line goes
    /// on in the next `Cut` or `Line` of the same stream, which always comes (at end of file
    /// an empty `Line`, when the cut fell at the very end: see `split_lines`). Whoever redacts must not show the end of a piece that could start a secret the
    /// next piece completes (see [`crate::run::redact::Straddles`]).
    Cut(Stream, &'a str),
    /// The newest `\r`-separated segment of a line not ended yet (a progress bar redrawing
    /// itself), after the read that redrew it; or the start of a line left unfinished while
    /// the pipe stayed quiet for [`QUIET`] (a prompt, `Building system... `), once per read
    /// that adds to it. For the live display only: the line itself comes when it ends.
    Progress(Stream, &'a str),
    /// The wrapper of a remote step reports a problem (a `$NIXCMD_ENV` line that sets
    /// nothing on the host).
    Warning(&'a str),
    /// A request to stop (a first Ctrl-C) came while a rollback or `always` block runs, and
    /// is held back (see [`Cancel::shielded`]): told once per run, for the run to say so.
    Held,
    /// Every complete line of one read has been passed on: what was gathered for them can
    /// be written now, in one call instead of one per line.
    ReadDone,
}

/// [`run_group`], also told when the process has started (before any of its output).
/// A spawn that failed because the working folder is gone (a step removed it, a checkout
/// was deleted) says so: the error alone, "No such file or directory", reads as if bash were
/// missing.
fn missing_cwd(e: std::io::Error, cwd: &Path) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::NotFound && !cwd.is_dir() {
        return std::io::Error::new(
            e.kind(),
            format!("its working folder {} is gone", cwd.display()),
        );
    }
    e
}

pub fn run_group_observed(
    spec: &GroupSpec,
    cancel: &Cancel,
    observe: &mut dyn FnMut(Observed),
) -> std::io::Result<Ended> {
    run_group_from(spec, cancel, observe, None)
}

/// [`run_group_observed`] with the bash started ahead for it ([`prestart`]), when the caller
/// has one that [`Prestarted::fits`] `spec`.
pub fn run_group_from(
    spec: &GroupSpec,
    cancel: &Cancel,
    observe: &mut dyn FnMut(Observed),
    prestarted: Option<Prestarted>,
) -> std::io::Result<Ended> {
    use std::os::unix::process::ExitStatusExt;
    ensure_subreaper();
    let cancel_at_start = cancel.level();
    // The read end of a bash started ahead's pipe: closed once the step has ended.
    let mut source = None;
    let (mut child, since) = match prestarted {
        Some(waiting) => {
            let (child, since, read_end) = waiting.start()?;
            source = read_end;
            (child, since)
        }
        None => {
            let mut env: Vec<(String, String)> = spec.env.to_vec();
            env.push(("NIXCMD_STEP_TOKEN".into(), spec.token.into()));
            let since = boot_ticks();
            let child = spawn_group(
                spec.program,
                spec.args,
                Some(spec.cwd),
                &env,
                spec.stdin.is_some(),
            )
            .map_err(|e| missing_cwd(e, spec.cwd))?;
            (child, since)
        }
    };
    let pgid = child.id() as i32;
    observe(Observed::Spawned);
    if let (Some(bytes), Some(mut pipe)) = (spec.stdin.clone(), child.stdin.take()) {
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    // From here on this thread only watches: it should not preempt the step on every line.
    let _calm = BatchWhileWatching::begin();
    // Both pipes and the exit are watched from this thread with poll(2): no reader threads
    // (two thread starts and a hand-off per line), and with a pidfd the exit wakes the poll
    // at once instead of being found by a sleep loop.
    let mut pipes = [
        Pipe::new(Stream::Stdout, child.stdout.take()),
        Pipe::new(Stream::Stderr, child.stderr.take()),
    ];
    let pidfd = pidfd_open(pgid);
    // Without a pidfd the exit is only noticed by asking on every tick.
    let mut exit_ready = pidfd.is_none();

    let deadline = Instant::now() + spec.timeout;
    // A further Ctrl-C while the group is being stopped gently stops it at once.
    let escalate = || cancel.level() >= (cancel_at_start + 1).max(2);
    let mut exit: Option<std::process::ExitStatus> = None;
    let mut ended: Option<Ended> = None;
    let mut swept = false;
    let mut exited_at: Option<Instant> = None;
    let mut token_swept = false;
    let mut polls = 0u32;
    loop {
        if exit.is_none() && exit_ready {
            if let Ok(Some(status)) = child.try_wait() {
                exit = Some(status);
            }
            exit_ready = pidfd.is_none();
        }
        let eof = pipes.iter().all(|p| p.file.is_none());
        if eof && exit.is_some() {
            break;
        }
        if ended.is_none() {
            let level = cancel.level();
            if level > cancel_at_start {
                ended = Some(Ended::Cancelled(level));
            } else if Instant::now() >= deadline {
                ended = Some(Ended::TimedOut);
            }
            if ended.is_some() {
                let immediate = matches!(ended, Some(Ended::Cancelled(l)) if l >= 2);
                terminate_group(pgid, spec.grace, immediate, &escalate);
            } else if cancel.take_held() {
                observe(Observed::Held);
            }
        }
        // The main process is gone but a background process keeps the pipes open: stop the
        // rest of the group so the step ends with its shell, as DESIGN.md §2.7 requires.
        if exit.is_some() && !swept {
            swept = true;
            exited_at = Some(Instant::now());
            terminate_group(pgid, spec.grace, false, &escalate);
        }
        // Processes that left the group (setsid) may still hold the pipes open.
        if let Some(at) = exited_at
            && !eof
            && at.elapsed() > Duration::from_millis(200)
            && !token_swept
        {
            token_swept = true;
            sweep_leftovers(spec.token, since, spec.grace);
        }
        // Whatever still holds a pipe now is not ours to wait for.
        if exited_at.is_some_and(|at| at.elapsed() > spec.grace * 3 + Duration::from_secs(1)) {
            break;
        }
        let wait = if ended.is_some() || exit.is_some() {
            Duration::from_millis(50)
        } else {
            deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100))
        };
        if eof && pidfd.is_none() {
            // Output is over but the process has not exited yet: poll briefly, then calmly.
            polls += 1;
            std::thread::sleep(Duration::from_millis(if polls < 20 { 1 } else { 10 }).min(wait));
            continue;
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
        for pipe in &pipes {
            if let Some(file) = &pipe.file {
                fds.push(pollfd(file.as_raw_fd()));
            }
        }
        let pidfd_slot = match &pidfd {
            Some(fd) if exit.is_none() => {
                fds.push(pollfd(fd.as_raw_fd()));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        // Rounded up, so a deadline less than 1 ms away does not spin.
        let ms = wait.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd entries.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n <= 0 {
            // Timeout, or EINTR (a signal such as Ctrl-C: the loop looks at `cancel`). The
            // poll's tick is what shows an unfinished line: no timer of its own.
            show_quiet_partials(&mut pipes, observe);
            continue;
        }
        if let Some(slot) = pidfd_slot
            && fds[slot].revents != 0
        {
            exit_ready = true;
        }
        let mut slot = 0;
        for pipe in &mut pipes {
            if pipe.file.is_none() {
                continue;
            }
            let ready = fds[slot].revents != 0;
            slot += 1;
            if ready {
                // Every writer is gone (the step exited): what is left in the pipe is read
                // to its end now, without another poll for the end of file.
                let hung_up = fds[slot - 1].revents & libc::POLLHUP != 0;
                loop {
                    pipe.read(&mut |stream, line, cut| {
                        observe(if cut {
                            Observed::Cut(stream, line)
                        } else {
                            Observed::Line(stream, line)
                        })
                    });
                    if let Some(segment) = pipe.progress() {
                        observe(Observed::Progress(
                            pipe.stream,
                            &String::from_utf8_lossy(segment),
                        ));
                    }
                    if !hung_up || pipe.file.is_none() {
                        break;
                    }
                }
                observe(Observed::ReadDone);
            }
        }
        show_quiet_partials(&mut pipes, observe);
    }
    if exit.is_none() {
        exit = child.wait().ok();
    }
    if let Some(fd) = pidfd {
        close_later(fd);
    }
    if let Some(fd) = source {
        close_later(fd);
    }
    terminate_group(pgid, spec.grace, false, &escalate);
    sweep_leftovers(spec.token, since, spec.grace);
    if let Some(e) = ended {
        return Ok(e);
    }
    let Some(status) = exit else {
        return Err(std::io::Error::other(
            "the step's process could not be waited for",
        ));
    };
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => Ended::Exited(code),
        (None, Some(sig)) => Ended::Killed(sig),
        (None, None) => Ended::Exited(128),
    })
}

/// Offers the unfinished lines that stayed quiet long enough (see [`Pipe::quiet_partial`]),
/// as progress: the log and the events get them when they end, as ever. Nothing to do, and no
/// clock read, while every read ended with its lines.
fn show_quiet_partials(pipes: &mut [Pipe], observe: &mut dyn FnMut(Observed)) {
    if pipes.iter().all(|p| p.unshown_since.is_none()) {
        return;
    }
    let now = Instant::now();
    for pipe in pipes {
        let stream = pipe.stream;
        if let Some(text) = pipe.quiet_partial(now) {
            observe(Observed::Progress(stream, &String::from_utf8_lossy(text)));
        }
    }
}

impl Ended {
    /// The exit code recorded for it: the code, 128+N for signal N (as a shell's `$?`).
    pub fn code(self) -> Option<i32> {
        match self {
            Ended::Exited(code) => Some(code),
            Ended::Killed(sig) => Some(128 + sig),
            Ended::TimedOut | Ended::Cancelled(_) => None,
        }
    }
}

/// How a step's process ended, in words: `exited with status 3`, `killed by signal 15
/// (SIGTERM)`. A status of 128+N is how a shell reports a command that signal N killed (bash
/// exits with it under `-e`), so the signal is named beside it; it stays a status, since an
/// `exit 130` reads the same.
pub fn exit_description(ended: Ended) -> Option<String> {
    match ended {
        Ended::Killed(sig) => Some(match signal_name(sig) {
            Some(name) => format!("killed by signal {sig} ({name})"),
            None => format!("killed by signal {sig}"),
        }),
        Ended::Exited(code) if (129..=128 + 64).contains(&code) => {
            let sig = code - 128;
            Some(match signal_name(sig) {
                Some(name) => format!("exited with status {code} (128 + {sig}: {name})"),
                None => format!("exited with status {code} (128 + signal {sig})"),
            })
        }
        Ended::Exited(code) => Some(format!("exited with status {code}")),
        Ended::TimedOut | Ended::Cancelled(_) => None,
    }
}

/// `SIGTERM` for 15: the name of a standard signal (Linux numbering).
fn signal_name(sig: i32) -> Option<String> {
    const NAMES: [&str; 31] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2",
        "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG",
        "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO", "PWR", "SYS",
    ];
    match sig {
        1..=31 => Some(format!("SIG{}", NAMES[sig as usize - 1])),
        _ => None,
    }
}

/// The calling thread under `SCHED_BATCH` while it watches a step, back to `SCHED_OTHER` when
/// dropped. A normal thread woken by a pipe write preempts the writer at once: on a machine
/// that packs both on one CPU, every output line and each of the shell's closing descriptors
/// at exit costs two context switches, and the step waits for nixcmd's bookkeeping. Under
/// `SCHED_BATCH` the wake-up does not preempt; nixcmd reads when the step blocks, exits or
/// uses up its slice (a few ms at most), usually once per step. Nothing started later
/// inherits it: the thread is normal again before anything else is spawned. Threads that
/// run under another policy (`chrt`, `SCHED_IDLE`, real-time) are left as they are.
struct BatchWhileWatching {
    switched: bool,
}

impl BatchWhileWatching {
    fn begin() -> Self {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: both calls only read or change the calling thread's (pid 0) policy; the
        // parameter is a valid local.
        let switched = unsafe {
            libc::sched_getscheduler(0) == libc::SCHED_OTHER
                && libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) == 0
        };
        BatchWhileWatching { switched }
    }
}

impl Drop for BatchWhileWatching {
    fn drop(&mut self) {
        if self.switched {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: as in `begin`; going back from SCHED_BATCH to SCHED_OTHER keeps the
            // nice value and needs no privilege.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &param) };
        }
    }
}

/// Longest line passed on whole; longer ones are split (as `read_lines` does).
const MAX_LINE: usize = 64 * 1024;

/// One output pipe of a group run, read from the caller's thread when poll(2) says so.
struct Pipe {
    stream: Stream,
    /// `None` once the pipe reached end of file.
    file: Option<std::fs::File>,
    /// Bytes of a line not yet ended.
    pending: Vec<u8>,
    /// The last piece passed on was cut (see [`split_lines`]).
    cut_open: bool,
    /// Whether `pending` holds a `\r`: a progress bar redrawing itself, whose newest state
    /// is shown at once instead of when its line ends (or reaches [`MAX_LINE`]), minutes
    /// later.
    carriage: bool,
    /// Whether the last read added to such a line.
    redrawn: bool,
    /// When the last read left a line unfinished that no `\r` shows yet (a prompt, `Building
    /// system... ` before minutes of work): once the pipe stays quiet for [`QUIET`] it is
    /// offered as the step's newest output. `None` after a read that ends with its lines,
    /// which is all ordinary output costs.
    unshown_since: Option<Instant>,
}

/// How long a pipe stays quiet before an unfinished line is shown: longer than the gaps within
/// one burst of output (a line written in pieces), short enough to look immediate to a person.
const QUIET: Duration = Duration::from_millis(100);

impl Pipe {
    fn new(stream: Stream, file: Option<std::fs::File>) -> Self {
        Pipe {
            stream,
            file,
            pending: Vec::new(),
            cut_open: false,
            carriage: false,
            redrawn: false,
            unshown_since: None,
        }
    }

    /// One read (poll said it will not block): passes on every complete line (`on_line(stream,
    /// line, cut)`, `cut` for a piece of an over-long line, see [`Observed::Cut`]); at end of
    /// file (or a read error) the unterminated rest too, and the pipe is closed.
    fn read(&mut self, on_line: &mut dyn FnMut(Stream, &str, bool)) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        // Straight into the spare capacity of `pending` (kept across reads): a zeroed buffer
        // per read would cost a 16 KiB memset each time.
        const CHUNK: usize = 16 * 1024;
        self.pending.reserve(CHUNK);
        let before = self.pending.len();
        let eof = loop {
            let spare = self.pending.spare_capacity_mut();
            // SAFETY: reading at most `spare.len()` bytes into memory owned by `pending`.
            let n = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
            match n {
                0 => break true,
                n if n > 0 => {
                    // SAFETY: the kernel initialised the `n` bytes it reported.
                    unsafe { self.pending.set_len(self.pending.len() + n as usize) };
                    break false;
                }
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {
                    continue;
                }
                _ => break true,
            }
        };
        let stream = self.stream;
        let (read_from, read_len) = (before, self.pending.len());
        split_lines(
            &mut self.pending,
            eof,
            &mut self.cut_open,
            &mut |line, cut| on_line(stream, &String::from_utf8_lossy(line), cut),
        );
        // Ordinary line output ends its reads with its lines: nothing is left, nothing to do.
        self.redrawn = false;
        if !self.pending.is_empty() {
            // Only the bytes this read brought are looked at, unless lines were taken off:
            // then the rest is (nearly) all new.
            self.carriage = if self.pending.len() == read_len {
                self.carriage || memchr::memchr(b'\r', &self.pending[read_from..]).is_some()
            } else {
                memchr::memchr(b'\r', &self.pending).is_some()
            };
            self.redrawn = self.carriage && read_len > read_from;
            // A clock read (vDSO, no system call) only for a read that ends inside a line.
            self.unshown_since = (!self.carriage && !eof).then(Instant::now);
        } else {
            self.carriage = false;
            self.unshown_since = None;
        }
        if eof && let Some(file) = self.file.take() {
            close_later(file.into());
        }
    }

    /// The unfinished line, when nothing came for [`QUIET`] since the read that left it (at
    /// most [`PROGRESS_BYTES`] of its start, as a terminal shows it); offered once per read
    /// that adds to it.
    fn quiet_partial(&mut self, now: Instant) -> Option<&[u8]> {
        let since = self.unshown_since?;
        if now.saturating_duration_since(since) < QUIET {
            return None;
        }
        self.unshown_since = None;
        let head = &self.pending[..self.pending.len().min(PROGRESS_BYTES)];
        let head = &head[..whole_chars(head)];
        let end = head.iter().rposition(|b| !b.is_ascii_whitespace())? + 1;
        Some(&head[..end])
    }

    /// After a read that redrew a progress line: its newest segment (the last one not
    /// blank), at most [`PROGRESS_BYTES`] of it.
    fn progress(&self) -> Option<&[u8]> {
        if !self.redrawn {
            return None;
        }
        newest_segment(&self.pending)
    }
}

/// Takes the complete lines off the front of `pending` (all of it at end of file): a line ends
/// at a newline or after [`MAX_LINE`] bytes (fewer when a character would be cut there);
/// trailing newlines and carriage returns are cut. `emit(line, cut)`: `cut` when the line
/// goes on in the next one emitted (a piece of an over-long line, see [`Observed::Cut`]); the
/// last piece of a line, at end of file too, is never cut.
///
/// `cut_open` says whether the last piece passed on was cut: when the end of file comes with
/// nothing left after such a piece (a line of exactly 64 KiB, or a multiple, without a
/// newline), an empty last piece ends it, so that whoever held the cut piece's end back
/// passes it on.
fn split_lines(
    pending: &mut Vec<u8>,
    eof: bool,
    cut_open: &mut bool,
    emit: &mut dyn FnMut(&[u8], bool),
) {
    if eof && pending.is_empty() && *cut_open {
        *cut_open = false;
        emit(b"", false);
        return;
    }
    let mut start = 0;
    while start < pending.len() {
        let rest = &pending[start..];
        let window = &rest[..rest.len().min(MAX_LINE)];
        let (len, cut) = match memchr::memchr(b'\n', window) {
            Some(i) => (i + 1, false),
            None if rest.len() >= MAX_LINE => {
                let len = whole_chars(window);
                (len, !(eof && len == rest.len()))
            }
            None if eof => (rest.len(), false),
            None => break,
        };
        let mut line = &rest[..len];
        while let [head @ .., b'\n' | b'\r'] = line {
            line = head;
        }
        emit(line, cut);
        *cut_open = cut;
        start += len;
    }
    pending.drain(..start);
}

/// More than a row of any terminal, and the live display shows one row: a progress line that
/// grows to [`MAX_LINE`] is not copied whole on every read.
const PROGRESS_BYTES: usize = 1024;

/// What a terminal would show of a line being redrawn with `\r`: its last segment that is not
/// blank, trailing blanks cut, at most [`PROGRESS_BYTES`] of it (cut at a character's end);
/// `None` when the last few KiB are blank. Only the line's end is looked at: a step writing one
/// `\r` per read must not cost a scan of all it wrote since its last newline at each read.
fn newest_segment(line: &[u8]) -> Option<&[u8]> {
    let window = &line[line.len().saturating_sub(4 * PROGRESS_BYTES)..];
    let end = window.iter().rposition(|b| !b.is_ascii_whitespace())? + 1;
    let start = memchr::memrchr(b'\r', &window[..end]).map_or(0, |i| i + 1);
    let segment = &window[start..end];
    if segment.len() <= PROGRESS_BYTES {
        return Some(segment);
    }
    Some(&segment[..whole_chars(&segment[..PROGRESS_BYTES])])
}

/// The length of the start of `window` that does not end inside a UTF-8 character: a long
/// line split in the middle of one had each half turned into a replacement character, in the
/// log as in the events.
fn whole_chars(window: &[u8]) -> usize {
    let n = window.len();
    // The last character starts at most three bytes before the end.
    for back in 1..=n.min(4) {
        let byte = window[n - back];
        if byte & 0xC0 == 0x80 {
            continue;
        }
        let needs = match byte {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if needs > back { n - back } else { n };
    }
    // Not UTF-8 there anyway: cut where the limit is.
    n
}

/// Whether `fd` has something to read (or its end) within `wait`; an error counts as
/// readable, so that the read that follows reports it.
fn readable_within(fd: std::os::fd::RawFd, wait: Duration) -> bool {
    let mut fds = [pollfd(fd)];
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: `fds` is a valid, exclusively borrowed array of one pollfd entry.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if n >= 0 {
            return n > 0;
        }
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return true;
        }
    }
}

fn pollfd(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// A pidfd for our child `pid` (Linux 5.3+): readable once the process has exited. `None`
/// where the kernel (or a seccomp filter) refuses, and the exit is then polled for.
fn pidfd_open(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd (close-on-exec) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a non-negative return is a fresh descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

fn group_alive(pgid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: sending a signal to a process group we created.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

/// SIGINT, then SIGTERM, then SIGKILL to the whole group, `grace` apart, stopping early once
/// the group is empty; straight to SIGKILL as soon as `escalate()` says so (a second Ctrl-C).
fn terminate_group(pgid: i32, grace: Duration, immediate: bool, escalate: &dyn Fn() -> bool) {
    if !group_alive(pgid) {
        return;
    }
    let signals: &[i32] = if immediate {
        &[libc::SIGKILL]
    } else {
        &[libc::SIGINT, libc::SIGTERM, libc::SIGKILL]
    };
    let mut next = 0;
    while let Some(&sig) = signals.get(next) {
        next += 1;
        signal_group(pgid, sig);
        if sig != libc::SIGKILL {
            // A stopped process (SIGSTOP, or a terminal read before steps ignored SIGTTIN)
            // keeps a caught signal pending until it runs again: wake it so it can act on
            // it, as systemd does, instead of only dying at SIGKILL.
            signal_group(pgid, libc::SIGCONT);
        }
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if !group_alive(pgid) || only_zombies(pgid) {
                return;
            }
            if sig != libc::SIGKILL && escalate() {
                // The last signal is SIGKILL.
                next = signals.len() - 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// True when every process left in the group is a zombie (dead, waiting to be reaped by a
/// parent that is not us): nothing runs any more.
fn only_zombies(pgid: i32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name (which may contain spaces) in parentheses.
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(2).and_then(|f| f.parse::<i32>().ok()) == Some(pgid)
            && fields.first() != Some(&"Z")
        {
            return false;
        }
    }
    true
}

/// Makes nixcmd the "child subreaper" of everything it starts: a process that leaves its
/// step's process group (`setsid`, double fork) is reparented to nixcmd instead of init when
/// its parent exits, so it can be found among nixcmd's own children without scanning /proc.
fn ensure_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only changes this process's attribute.
        unsafe {
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        }
    });
}

/// Whether [`own_children`] has worked in this process: the kernel lists children, so having
/// none at all (see [`has_children`]) means an empty list, and the file need not be read.
static CHILDREN_LISTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process has any child, running or not yet reaped (one `waitid` that neither
/// blocks nor reaps). After a step's shell was reaped there is usually none: no orphan of the
/// step was reparented to us, and the list of children (a /proc file: an open, a stat, a read
/// and a close per step) need not be read.
fn has_children() -> bool {
    // SAFETY: waitid with WNOHANG | WNOWAIT neither blocks nor reaps; it only fills `info`.
    let r = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // ECHILD: none at all. Anything else (0, or another error) is taken as "maybe".
    !(r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
}

/// The children of this process's threads, or `None` when the kernel does not list them.
/// An orphan is not handed to the thread that started its step: the kernel gives it to the
/// subreaper's first live thread, the main one. Steps run on the main thread (its own list,
/// one small file) unless they run in parallel (`group=`, host fan-out), on worker threads:
/// there only the main thread's list held the processes a step left (`setsid sleep &`
/// outlived the run), so every thread's list is read.
fn own_children() -> Option<Vec<i32>> {
    let pid = std::process::id();
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() } as u32;
    let mut tasks = vec![tid];
    if tid != pid {
        tasks.push(pid);
    }
    if let Ok(entries) = std::fs::read_dir("/proc/self/task") {
        let others = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
        for task in others {
            if !tasks.contains(&task) {
                tasks.push(task);
            }
        }
    }
    let mut children = Vec::new();
    let mut listed = false;
    for task in tasks {
        // A thread may have ended since the listing.
        let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{task}/children")) else {
            continue;
        };
        listed = true;
        children.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    if !listed {
        return None;
    }
    CHILDREN_LISTED.store(true, Ordering::Relaxed);
    Some(children)
}

/// The absolute path of a program found on `PATH`, looked up once per process: a run starts
/// one shell per step, and searching `PATH` each time costs a failed `execve` per entry.
pub fn resolve_program(program: &str) -> std::path::PathBuf {
    static CACHE: std::sync::Mutex<Vec<(String, std::path::PathBuf)>> =
        std::sync::Mutex::new(Vec::new());
    if program.contains('/') {
        return program.into();
    }
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, path)) = cache.iter().find(|(p, _)| p == program) {
        return path.clone();
    }
    let found = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|c| {
                    std::fs::metadata(c).is_ok_and(|m| {
                        m.is_file()
                            && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111
                                != 0
                    })
                })
        })
        .unwrap_or_else(|| program.into());
    cache.push((program.to_string(), found.clone()));
    found
}

fn carries_token(pid: i32, needle: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|kv| kv == needle))
        .unwrap_or(false)
}

/// A process still carrying a step token of some run (see [`left_behind`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftBehind {
    pub pid: i32,
    /// The token's value: `RUN/STEP/ATTEMPT`, `RUN/STEP@HOST` or `RUN/STEP`.
    pub token: String,
    /// Its command line, arguments joined by spaces.
    pub command: String,
}

/// Processes of this user whose environment carries a step token of run `run_id`: steps
/// that went on after the nixcmd watching them was killed (`kill -9`, an OOM kill, a
/// crash). Resuming the run beside them would run such a step a second time at once.
pub fn left_behind(run_id: &str) -> Vec<LeftBehind> {
    of_run(&step_processes(), run_id).cloned().collect()
}

/// Those of `processes` ([`step_processes`]) that belong to run `run_id`.
pub fn of_run<'a>(
    processes: &'a [LeftBehind],
    run_id: &str,
) -> impl Iterator<Item = &'a LeftBehind> {
    let prefix = format!("{run_id}/");
    processes
        .iter()
        .filter(move |p| p.token.starts_with(&prefix))
}

/// Every process of this user that carries a step token (of any run), by pid.
pub fn step_processes() -> Vec<LeftBehind> {
    const KEY: &[u8] = b"NIXCMD_STEP_TOKEN=";
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<LeftBehind> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            // Unreadable (another user's process) or gone since the listing: not ours.
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let token = env.split(|b| *b == 0).find_map(|kv| kv.strip_prefix(KEY))?;
            let command = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let command = String::from_utf8_lossy(&command)
                .trim_end_matches('\0')
                .replace('\0', " ");
            Some(LeftBehind {
                pid,
                token: String::from_utf8_lossy(token).into_owned(),
                command,
            })
        })
        .collect();
    found.sort_by_key(|p| p.pid);
    found
}

/// Stops processes that carry the step's token but left its process group. Thanks to the
/// subreaper they are nixcmd's children once their parent exits; where the kernel hides the
/// list of children, every process is examined instead.
/// Stops what a step left behind: processes carrying its token, then those adopted since it
/// started (see [`kill_adopted_since`]). Nothing to look at when nixcmd has no child at all,
/// as after most steps: one `waitid` says so for both.
fn sweep_leftovers(token: &str, since: u64, grace: Duration) {
    if CHILDREN_LISTED.load(Ordering::Relaxed) && !has_children() {
        return;
    }
    // A bash started ahead for the next step is a child too, and the only one after most
    // steps then: one list of children says so.
    if prestart::any_waiting()
        && own_children().is_some_and(|kids| kids.iter().all(|p| prestart::is_waiting(*p)))
    {
        return;
    }
    kill_by_token(token, grace);
    kill_adopted_since(since, grace);
}

fn kill_by_token(token: &str, grace: Duration) {
    let needle = format!("NIXCMD_STEP_TOKEN={token}");
    let me = std::process::id() as i32;
    let find = || -> Vec<i32> {
        if CHILDREN_LISTED.load(Ordering::Relaxed) && !has_children() {
            return Vec::new();
        }
        let candidates = own_children().unwrap_or_else(|| {
            std::fs::read_dir("/proc")
                .map(|entries| {
                    entries
                        .filter_map(Result::ok)
                        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
                        .collect()
                })
                .unwrap_or_default()
        });
        candidates
            .into_iter()
            .filter(|pid| {
                *pid != me && !prestart::is_waiting(*pid) && carries_token(*pid, needle.as_bytes())
            })
            .collect()
    };
    stop_found(&find, grace);
}

/// Stops what `find` returns, in rounds (SIGTERM twice, then SIGKILL, each process and the
/// group it leads, at most `grace` or 0.5 s apart) until it returns nothing; reaps those that
/// are our children.
fn stop_found(find: &dyn Fn() -> Vec<i32>, grace: Duration) {
    for round in 0..6 {
        let pids = find();
        if pids.is_empty() {
            return;
        }
        let sig = if round < 2 {
            libc::SIGTERM
        } else {
            libc::SIGKILL
        };
        for pid in &pids {
            // SAFETY: signalling a process (and the group it leads) that a step left behind;
            // reaping it if it is our child so no zombie is left.
            unsafe {
                libc::kill(-*pid, sig);
                libc::kill(*pid, sig);
                if sig != libc::SIGKILL {
                    // Stopped, it would not act on SIGTERM until woken (see terminate_group).
                    libc::kill(-*pid, libc::SIGCONT);
                    libc::kill(*pid, libc::SIGCONT);
                }
            }
        }
        let until = Instant::now() + grace.min(Duration::from_millis(500));
        while Instant::now() < until {
            let mut alive = false;
            for pid in &pids {
                // SAFETY: non-blocking wait on one specific pid; fails harmlessly if it is not
                // our child.
                let r = unsafe { libc::waitpid(*pid, std::ptr::null_mut(), libc::WNOHANG) };
                if r == 0 || (r < 0 && unsafe { libc::kill(*pid, 0) } == 0) {
                    alive = true;
                }
            }
            if !alive {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Clock ticks since boot, as `/proc/PID/stat` gives a process's start time.
fn boot_ticks() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec we own; sysconf only reads a constant.
    let hz = unsafe {
        libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts);
        libc::sysconf(libc::_SC_CLK_TCK)
    };
    let hz = u64::try_from(hz).unwrap_or(100).max(1);
    ts.tv_sec as u64 * hz + ts.tv_nsec as u64 * hz / 1_000_000_000
}

/// A process's start time in clock ticks since boot (field 22 of `/proc/PID/stat`).
fn start_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces), from field 3 on.
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Stops the processes a step left behind that neither stayed in its group nor kept its
/// token: started in a new session and with a cleared environment (`setsid env -i …`,
/// `nix develop --ignore-environment`, a daemon that sanitizes its environment), they
/// outlived the step and the run. Their parent's exit hands them to nixcmd, the subreaper,
/// on its main thread: when the step ran there (a run's steps do, unless parallel), every
/// child of that thread started since the step did is a process of the step (the step's
/// shell is reaped by now, and that thread starts nothing else while a step runs).
/// Nothing to read when nixcmd has no child at all, as after most steps.
fn kill_adopted_since(since: u64, grace: Duration) {
    thread_local! {
        // SAFETY: gettid has no arguments and cannot fail.
        static ON_MAIN_THREAD: bool = unsafe { libc::gettid() } as u32 == std::process::id();
    }
    if !ON_MAIN_THREAD.with(|main| *main) || !has_children() {
        return;
    }
    let pid = std::process::id();
    let find = || -> Vec<i32> {
        let Ok(text) = std::fs::read_to_string(format!("/proc/self/task/{pid}/children")) else {
            return Vec::new();
        };
        text.split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .filter(|child| !prestart::is_waiting(*child))
            .filter(|child| start_ticks(*child).is_some_and(|t| t >= since))
            .collect()
    };
    stop_found(&find, grace);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn split(input: &[u8], eof: bool) -> (Vec<String>, Vec<u8>) {
        let (lines, rest) = split_marked(input, eof);
        (lines.into_iter().map(|(l, _)| l).collect(), rest)
    }

    /// [`split`], each line with whether it was cut (goes on in the next one).
    fn split_marked(input: &[u8], eof: bool) -> (Vec<(String, bool)>, Vec<u8>) {
        let mut pending = input.to_vec();
        let mut lines = Vec::new();
        split_lines(&mut pending, eof, &mut false, &mut |l, cut| {
            lines.push((String::from_utf8_lossy(l).into_owned(), cut))
        });
        (lines, pending)
    }

    /// The pieces of an over-long line are marked as cut, all but its last one; at end of
    /// file the rest is a last piece even when it is exactly as long as a piece can be.
    #[test]
    fn the_pieces_of_a_cut_line_say_so_but_its_last() {
        let marks = |input: &[u8], eof: bool| -> Vec<(usize, bool)> {
            let (lines, _) = split_marked(input, eof);
            lines.into_iter().map(|(l, cut)| (l.len(), cut)).collect()
        };
        let mut long = vec![b'x'; 2 * MAX_LINE + 5];
        long.extend_from_slice(b"\nshort\n");
        assert_eq!(
            marks(&long, false),
            [(MAX_LINE, true), (MAX_LINE, true), (5, false), (5, false)]
        );
        // Still being written: the rest waits, its pieces so far are cut.
        assert_eq!(marks(&long[..MAX_LINE + 3], false), [(MAX_LINE, true)]);
        assert_eq!(
            marks(&long[..MAX_LINE + 3], true),
            [(MAX_LINE, true), (3, false)]
        );
        assert_eq!(marks(&long[..MAX_LINE], true), [(MAX_LINE, false)]);
        assert_eq!(marks(&long[..MAX_LINE], false), [(MAX_LINE, true)]);
        // A piece cut at the end of one read, then the end of file with nothing after it: an
        // empty last piece ends the line (whoever held the cut piece's end passes it on).
        let mut pending = long[..MAX_LINE].to_vec();
        let mut open = false;
        let mut seen: Vec<(usize, bool)> = Vec::new();
        split_lines(&mut pending, false, &mut open, &mut |l, cut| {
            seen.push((l.len(), cut))
        });
        split_lines(&mut pending, true, &mut open, &mut |l, cut| {
            seen.push((l.len(), cut))
        });
        split_lines(&mut pending, true, &mut open, &mut |l, cut| {
            seen.push((l.len(), cut))
        });
        assert_eq!(seen, [(MAX_LINE, true), (0, false)]);
    }

    /// Processes carrying a run's step token are found, with their step and command line;
    /// a run whose id only begins the same is not confused with it.
    #[test]
    fn a_shielded_view_holds_back_a_first_request_only() {
        let cancel = Cancel::default();
        let shielded = cancel.shielded();
        assert_eq!((cancel.level(), shielded.level()), (0, 0));
        assert!(!shielded.take_held(), "nothing to hold back yet");
        cancel.request();
        assert_eq!((cancel.level(), shielded.level()), (1, 0));
        assert!(!cancel.take_held(), "only a shielded view holds back");
        assert!(shielded.take_held());
        assert!(!shielded.clone().take_held(), "told once, in any view");
        cancel.request();
        assert_eq!((cancel.level(), shielded.level()), (2, 2));
        assert!(!cancel.by_signal(), "no signal handler was installed");
    }

    #[test]
    fn left_behind_finds_the_processes_of_one_run() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("NIXCMD_STEP_TOKEN", "unit-left-behind-1/deploy/2")
            .spawn()
            .expect("spawn sleep");
        // The parent of a vfork-spawned child goes on while the kernel is still building the
        // child's new stack: for a moment its /proc environ reads empty. Look until it does not.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        let mut found = super::left_behind("unit-left-behind-1");
        while found.is_empty() && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
            found = super::left_behind("unit-left-behind-1");
        }
        let other = super::left_behind("unit-left-behind");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            found,
            [super::LeftBehind {
                pid: child.id() as i32,
                token: "unit-left-behind-1/deploy/2".into(),
                command: "sleep 30".into(),
            }]
        );
        assert_eq!(other, []);
        assert_eq!(super::left_behind("unit-left-behind-1"), []);
    }

    #[test]
    fn an_exit_names_the_signal_behind_it() {
        let said = |e| exit_description(e).unwrap();
        assert_eq!(said(Ended::Exited(3)), "exited with status 3");
        assert_eq!(said(Ended::Exited(128)), "exited with status 128");
        // `exit 255` (or ssh's own failure) is no signal 127.
        assert_eq!(said(Ended::Exited(255)), "exited with status 255");
        assert_eq!(
            said(Ended::Exited(130)),
            "exited with status 130 (128 + 2: SIGINT)"
        );
        assert_eq!(
            said(Ended::Exited(137)),
            "exited with status 137 (128 + 9: SIGKILL)"
        );
        assert_eq!(said(Ended::Killed(15)), "killed by signal 15 (SIGTERM)");
        assert_eq!(said(Ended::Killed(40)), "killed by signal 40");
        assert_eq!(
            said(Ended::Exited(190)),
            "exited with status 190 (128 + signal 62)"
        );
        assert_eq!(exit_description(Ended::TimedOut), None);
        assert_eq!(Ended::Killed(9).code(), Some(137));
        assert_eq!(Ended::Exited(2).code(), Some(2));
    }

    #[test]
    fn the_newest_segment_of_a_progress_line_is_what_a_terminal_shows() {
        let seg = |b: &[u8]| newest_segment(b).map(|s| String::from_utf8_lossy(s).into_owned());
        assert_eq!(seg(b"10%\r55%\r"), Some("55%".into()));
        assert_eq!(seg(b"\r10%\r55"), Some("55".into()));
        assert_eq!(seg(b"copying 10%  \r \r\r"), Some("copying 10%".into()));
        assert_eq!(
            seg(b"no carriage return"),
            Some("no carriage return".into())
        );
        assert_eq!(seg(b"\r\r \r"), None);
        assert_eq!(seg(b""), None);
        // Long: the start of the segment, whole characters only.
        let mut long = b"\r".to_vec();
        long.extend(std::iter::repeat_n(b'x', PROGRESS_BYTES - 1));
        long.extend("é tail".as_bytes());
        assert_eq!(seg(&long), Some("x".repeat(PROGRESS_BYTES - 1)));
        // Only the end is looked at: blank beyond a few KiB is nothing to show.
        let mut blank = b"old".to_vec();
        blank.extend(std::iter::repeat_n(b'\r', 4 * PROGRESS_BYTES));
        assert_eq!(seg(&blank), None);
    }

    /// A pipe read by `Pipe::read`, fed by the test.
    fn fed_pipe() -> (Pipe, std::fs::File) {
        let (r, w) = pipe().unwrap();
        (
            Pipe::new(Stream::Stdout, Some(std::fs::File::from(r))),
            std::fs::File::from(w),
        )
    }

    #[test]
    fn a_read_that_redraws_a_progress_line_offers_its_newest_segment() {
        let (mut pipe, mut w) = fed_pipe();
        let step = |pipe: &mut Pipe, w: &mut std::fs::File, bytes: &[u8]| {
            w.write_all(bytes).unwrap();
            let mut lines = Vec::new();
            pipe.read(&mut |_, l, _| lines.push(l.to_string()));
            (
                lines,
                pipe.progress()
                    .map(|s| String::from_utf8_lossy(s).into_owned()),
            )
        };
        // Ordinary output: nothing to offer, whether the read ends a line or not.
        assert_eq!(
            step(&mut pipe, &mut w, b"one\ntw"),
            (vec!["one".into()], None)
        );
        assert_eq!(step(&mut pipe, &mut w, b"o\n"), (vec!["two".into()], None));
        assert_eq!(step(&mut pipe, &mut w, b"half"), (vec![], None));
        // A carriage return: offered, and again as the line grows after it.
        assert_eq!(
            step(&mut pipe, &mut w, b"\r10%"),
            (vec![], Some("10%".into()))
        );
        assert_eq!(
            step(&mut pipe, &mut w, b" 2"),
            (vec![], Some("10% 2".into()))
        );
        assert_eq!(
            step(&mut pipe, &mut w, b"0%\r"),
            (vec![], Some("10% 20%".into()))
        );
        // The line ends: it comes whole, as ever, and nothing is left to offer.
        assert_eq!(
            step(&mut pipe, &mut w, b"done\nnext"),
            (vec!["half\r10% 20%\rdone".into()], None)
        );
        // Lines taken off the front and a progress line left after them.
        assert_eq!(
            step(&mut pipe, &mut w, b"\na\nb\r1/3\r2/3"),
            (vec!["next".into(), "a".into()], Some("2/3".into()))
        );
        drop(w);
        assert_eq!(
            step(
                &mut pipe,
                &mut std::fs::File::open("/dev/null").unwrap(),
                b""
            ),
            (vec!["b\r1/3\r2/3".into()], None)
        );
        assert!(pipe.file.is_none());
    }

    #[test]
    fn an_unfinished_line_is_offered_once_after_a_quiet_time() {
        let (mut pipe, mut w) = fed_pipe();
        let mut read = |pipe: &mut Pipe, bytes: &[u8]| {
            w.write_all(bytes).unwrap();
            let mut lines = Vec::new();
            pipe.read(&mut |_, l, _| lines.push(l.to_string()));
            lines
        };
        let partial = |pipe: &mut Pipe, after: Duration| {
            let since = pipe.unshown_since?;
            pipe.quiet_partial(since + after)
                .map(|s| String::from_utf8_lossy(s).into_owned())
        };
        // Ordinary output: nothing waits to be shown, no clock was read.
        assert_eq!(read(&mut pipe, b"one\ntwo\n"), ["one", "two"]);
        assert_eq!(pipe.unshown_since, None);
        // A prompt-like start of a line: not before the quiet time, then once, its
        // trailing blank cut.
        assert_eq!(read(&mut pipe, b"three\nBuilding system... "), ["three"]);
        assert_eq!(partial(&mut pipe, QUIET / 2), None);
        assert_eq!(partial(&mut pipe, QUIET), Some("Building system...".into()));
        assert_eq!(pipe.unshown_since, None);
        // More of it: offered again, the whole start of the line.
        assert!(read(&mut pipe, b"still ").is_empty());
        assert_eq!(
            partial(&mut pipe, QUIET),
            Some("Building system... still".into())
        );
        // Its end: the line comes whole, nothing is left to offer.
        assert_eq!(
            read(&mut pipe, b"done\n"),
            ["Building system... still done"]
        );
        assert_eq!(pipe.unshown_since, None);
        // A progress bar is offered at its read (`progress`), not again after a quiet time.
        assert!(read(&mut pipe, b"10%\r20%").is_empty());
        assert_eq!(pipe.unshown_since, None);
        assert_eq!(read(&mut pipe, b"\n"), ["10%\r20%"]);
        // Blank: nothing worth showing. Long: its start, whole characters only.
        assert!(read(&mut pipe, b"   ").is_empty());
        assert_eq!(partial(&mut pipe, QUIET), None);
        // Three blanks, then `x`s and a two-byte `é` fill the limit; `€` would cross it.
        let mut long = vec![b'x'; PROGRESS_BYTES - 5];
        long.extend("é€✓".as_bytes());
        assert!(read(&mut pipe, &long).is_empty());
        assert_eq!(
            partial(&mut pipe, QUIET),
            Some(format!("   {}é", "x".repeat(PROGRESS_BYTES - 5)))
        );
    }

    #[test]
    fn lines_are_split_as_the_reader_threads_did() {
        // Complete lines go, CR/LF endings are cut, empty lines stay, the rest waits.
        let (lines, rest) = split(b"a\r\n\nb\nc", false);
        assert_eq!(lines, ["a", "", "b"]);
        assert_eq!(rest, b"c");
        // At end of file the unterminated rest is a line too.
        let (lines, rest) = split(b"c", true);
        assert_eq!(lines, ["c"]);
        assert!(rest.is_empty());
        // Over 64 KiB without a newline: split there.
        let mut long = vec![b'x'; MAX_LINE + 3];
        long.push(b'\n');
        let (lines, rest) = split(&long, false);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "xxx");
        assert!(rest.is_empty());
        // A character that would straddle the limit goes whole to the next part.
        for (len, ch) in [(1, "é"), (2, "€"), (3, "😀"), (1, "😀")] {
            let mut long = vec![b'x'; MAX_LINE - len];
            long.extend_from_slice(format!("{ch}tail\n").as_bytes());
            let (lines, rest) = split(&long, false);
            assert_eq!(lines.len(), 2);
            assert_eq!(lines[0], "x".repeat(MAX_LINE - len));
            assert_eq!(lines[1], format!("{ch}tail"));
            assert!(rest.is_empty());
        }
        // A character that ends exactly at the limit stays.
        let mut long = vec![b'x'; MAX_LINE - 2];
        long.extend_from_slice("étail".as_bytes());
        let (lines, rest) = split(&long, false);
        assert_eq!(lines, [format!("{}é", "x".repeat(MAX_LINE - 2))]);
        assert_eq!(rest, b"tail");
        // Bytes that are not UTF-8 are cut at the limit.
        let long = vec![0x80; MAX_LINE + 1];
        let (lines, rest) = split(&long, false);
        assert_eq!(lines.len(), 1);
        assert_eq!(rest, [0x80]);
    }

    /// `bash ARGS` in `dir`, stopped after `timeout` (200 ms between signals). Each test has
    /// its own token: tests run at once, and a token sweep must find only its own processes.
    fn bash_spec<'a>(
        args: &'a [String],
        dir: &'a Path,
        timeout: Duration,
        token: &'a str,
    ) -> GroupSpec<'a> {
        GroupSpec {
            program: "bash",
            args,
            cwd: dir,
            env: &[],
            stdin: None,
            timeout,
            grace: Duration::from_millis(200),
            token,
        }
    }

    /// The descriptors of this process that point at `target` (a `readlink` of /proc/self/fd).
    fn own_fds_to(target: &str) -> Vec<String> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == target))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// A finished step's pipes are closed after the next spawn (off the way from one step to
    /// the next), and by `close_deferred` when no spawn follows: none stays open for good.
    #[test]
    fn a_finished_groups_pipes_are_closed_by_the_next_spawn_or_close_deferred() {
        let dir = tempfile::tempdir().unwrap();
        let args = vec![
            "-c".to_string(),
            "readlink /proc/self/fd/1; readlink /proc/self/fd/2 >&2".to_string(),
        ];
        let run = |token: &str| {
            let mut out = Vec::new();
            let spec = bash_spec(&args, dir.path(), Duration::from_secs(20), token);
            let ended = run_group(&spec, &Cancel::default(), &mut |_, l| {
                out.push(l.to_string())
            });
            assert_eq!(ended.unwrap(), Ended::Exited(0), "{out:?}");
            assert_eq!(out.len(), 2, "{out:?}");
            assert!(out.iter().all(|p| p.starts_with("pipe:[")), "{out:?}");
            out
        };
        let first = run("unit-test-close-1");
        let second = run("unit-test-close-2");
        for pipe in &first {
            assert_eq!(
                own_fds_to(pipe),
                Vec::<String>::new(),
                "{pipe} of the first run"
            );
        }
        close_deferred();
        for pipe in &second {
            assert_eq!(
                own_fds_to(pipe),
                Vec::<String>::new(),
                "{pipe} of the last run"
            );
        }
    }

    #[test]
    fn a_group_run_streams_both_pipes_and_returns_the_exit_code() {
        let dir = tempfile::tempdir().unwrap();
        let args = vec![
            "-c".to_string(),
            "echo out1; echo err1 >&2; printf 'tail'; exit 3".to_string(),
        ];
        let spec = bash_spec(
            &args,
            dir.path(),
            Duration::from_secs(20),
            "unit-test-token",
        );
        let mut seen = Vec::new();
        let ended = run_group(&spec, &Cancel::default(), &mut |s, l| {
            seen.push((s, l.to_string()))
        })
        .unwrap();
        assert_eq!(ended, Ended::Exited(3));
        let out: Vec<_> = seen
            .iter()
            .filter(|(s, _)| *s == Stream::Stdout)
            .map(|(_, l)| l.as_str())
            .collect();
        assert_eq!(out, ["out1", "tail"]);
        assert!(seen.contains(&(Stream::Stderr, "err1".to_string())));
    }

    #[test]
    fn read_lines_sends_the_lines_of_a_read_together() {
        let args = vec![
            "-c".to_string(),
            "seq 1 100000; echo; echo err >&2; printf 'tail'".to_string(),
        ];
        let mut child = spawn_group("bash", &args, None, &[], false).unwrap();
        let (tx, rx) = mpsc::sync_channel::<Msg>(2);
        read_lines(&mut child, &tx, Msg::Lines, Msg::Cut, Msg::Progress, || {
            Msg::Eof
        });
        drop(tx);
        let (mut out, mut err, mut batches, mut eofs) = (Vec::new(), Vec::new(), 0, 0);
        for msg in rx {
            match msg {
                Msg::Lines(stream, text) => {
                    assert!(text.ends_with('\n'), "whole lines");
                    let lines = text.split_terminator('\n').map(str::to_string);
                    if stream == Stream::Stdout {
                        batches += 1;
                        out.extend(lines);
                    } else {
                        err.extend(lines);
                    }
                }
                // A read that ended inside a line, and a pause of `seq` on a loaded machine.
                Msg::Progress(..) => {}
                Msg::Cut(..) => panic!("no line is over 64 KiB"),
                Msg::Eof => eofs += 1,
            }
        }
        child.wait().unwrap();
        assert_eq!(eofs, 2);
        assert_eq!(err, ["err"]);
        let expected: Vec<String> = (1..=100000)
            .map(|n| n.to_string())
            .chain([String::new(), "tail".to_string()])
            .collect();
        assert_eq!(out, expected);
        assert!(batches < 1000, "{batches} messages for 100 002 lines");
    }

    /// What [`read_lines`] sends, for the tests.
    #[derive(Debug, PartialEq)]
    enum Msg {
        Lines(Stream, String),
        Cut(Stream, String),
        Progress(Stream, String),
        Eof,
    }

    /// The reader threads (remote steps) offer an unfinished line once the pipe is quiet, as
    /// the poll loop does: the process waits until the test saw it.
    #[test]
    fn read_lines_offers_an_unfinished_line_once_the_pipe_is_quiet() {
        let dir = tempfile::tempdir().unwrap();
        let go = dir.path().join("go");
        let args = vec![
            "-c".to_string(),
            format!(
                "printf 'one\\nBuilding... '; while [ ! -e '{}' ]; do sleep 0.02; done; echo done",
                go.display()
            ),
        ];
        let mut child = spawn_group("bash", &args, None, &[], false).unwrap();
        let (tx, rx) = mpsc::sync_channel::<Msg>(2);
        read_lines(&mut child, &tx, Msg::Lines, Msg::Cut, Msg::Progress, || {
            Msg::Eof
        });
        drop(tx);
        let limit = Duration::from_secs(60);
        let mut seen = Vec::new();
        while !seen.contains(&Msg::Progress(Stream::Stdout, "Building...".into())) {
            seen.push(rx.recv_timeout(limit).expect("the unfinished line"));
        }
        std::fs::write(&go, "").unwrap();
        seen.extend(rx.iter());
        child.wait().unwrap();
        // Each pipe's end comes when its thread finds it: stderr's may come first.
        let eofs = seen.iter().filter(|m| **m == Msg::Eof).count();
        seen.retain(|m| *m != Msg::Eof);
        assert_eq!(eofs, 2);
        assert_eq!(
            seen,
            [
                Msg::Lines(Stream::Stdout, "one\n".into()),
                Msg::Progress(Stream::Stdout, "Building...".into()),
                Msg::Lines(Stream::Stdout, "Building... done\n".into()),
            ]
        );
    }

    fn own_policy() -> i32 {
        // SAFETY: reads the calling thread's policy.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn the_watching_thread_yields_to_the_step_and_the_step_keeps_the_normal_policy() {
        // A thread of its own: the policy is per thread, and other tests run at once.
        std::thread::spawn(|| {
            let dir = tempfile::tempdir().unwrap();
            // The shell prints its own policy (0 = SCHED_OTHER, 3 = SCHED_BATCH).
            let args = vec![
                "-c".to_string(),
                "grep -m1 '^policy' /proc/$$/sched | tr -d ' '".to_string(),
            ];
            let spec = bash_spec(&args, dir.path(), Duration::from_secs(20), "unit-policy");
            assert_eq!(own_policy(), libc::SCHED_OTHER);
            let mut seen = Vec::new();
            let ended = run_group(&spec, &Cancel::default(), &mut |_, l| {
                seen.push((l.to_string(), own_policy()))
            })
            .unwrap();
            assert_eq!(ended, Ended::Exited(0));
            // The step ran normally; nixcmd watched it under SCHED_BATCH, then went back.
            assert_eq!(seen, [("policy:0".to_string(), libc::SCHED_BATCH)]);
            assert_eq!(own_policy(), libc::SCHED_OTHER);

            // A thread someone put under SCHED_IDLE stays there, and so does its step.
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: changes this test thread's own policy.
            assert_eq!(
                unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) },
                0
            );
            let mut seen = Vec::new();
            run_group(&spec, &Cancel::default(), &mut |_, l| {
                seen.push((l.to_string(), own_policy()))
            })
            .unwrap();
            assert_eq!(seen, [("policy:5".to_string(), libc::SCHED_IDLE)]);
            assert_eq!(own_policy(), libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_group_runs_in_its_dir_and_group_with_its_env_and_default_signals() {
        // Not our own directory: the child changes to it (posix_spawn's chdir action).
        let dir = tempfile::tempdir().unwrap();
        let args = vec![
            "-c".to_string(),
            concat!(
                "pwd; read -r _ _ _ _ pgrp _ < /proc/$$/stat; [[ $pgrp == $$ ]] && echo leader; ",
                "echo \"$NIXCMD_TEST_VAR ${PATH:+path}\"; ",
                "grep -E '^Sig(Blk|Ign):' /proc/self/status"
            )
            .to_string(),
        ];
        let env = [("NIXCMD_TEST_VAR".to_string(), "given".to_string())];
        let spec = GroupSpec {
            env: &env,
            ..bash_spec(
                &args,
                dir.path(),
                Duration::from_secs(20),
                "unit-test-spawn",
            )
        };
        let ignored_by_us = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let line = status.lines().find(|l| l.starts_with("SigIgn:")).unwrap();
            u64::from_str_radix(line.trim_start_matches("SigIgn:\t"), 16).unwrap()
        };
        let before = ignored_by_us();
        let mut out = Vec::new();
        let ended = run_group(&spec, &Cancel::default(), &mut |_, l| {
            out.push(l.to_string())
        });
        assert_eq!(ended.unwrap(), Ended::Exited(0), "{out:?}");
        // nixcmd's own dispositions are as they were before the spawn. SIGTTIN and SIGTTOU
        // are left out: other tests of this process spawn at the same time, and each spawn
        // ignores them process-wide for its duration.
        let terminal = (1 << (libc::SIGTTIN - 1)) | (1 << (libc::SIGTTOU - 1));
        assert_eq!(ignored_by_us() & !terminal, before & !terminal);
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(out[0], real.display().to_string());
        assert_eq!(out[1], "leader");
        assert_eq!(out[2], "given path");
        // Nothing blocked; SIGPIPE, which Rust ignores in nixcmd itself, not ignored; what
        // whoever started us ignores (`nohup`: SIGHUP; a background job of a script: SIGINT
        // and SIGQUIT) stays ignored, as exec keeps it; nothing else is (glibc's two internal
        // real-time signals, which its posix_spawn ignored, are at their default, as nixcmd
        // has them). SIGTTIN and SIGTTOU are ignored too: a step reading the terminal fails
        // instead of stopping.
        assert_eq!(out[3], "SigBlk:\t0000000000000000");
        let mask = |line: &str| u64::from_str_radix(line.trim_start_matches("SigIgn:\t"), 16);
        let sigpipe = 1 << (libc::SIGPIPE - 1);
        let ignored = mask(&out[4]).unwrap();
        assert_eq!(ignored, (before & !sigpipe) | terminal, "{}", out[4]);
    }

    /// The entries a `child_env` array points to.
    fn env_of(env: &[(String, String)]) -> Vec<String> {
        let (_strings, ptrs) = child_env(env).unwrap();
        assert!(ptrs.last().unwrap().is_null());
        ptrs[..ptrs.len() - 1]
            .iter()
            // SAFETY: non-null entries point to C strings kept alive by `_strings` or static.
            .map(|p| {
                unsafe { std::ffi::CStr::from_ptr(*p) }
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    #[test]
    fn the_child_env_is_ours_with_the_given_pairs_on_top_sorted_as_command_did() {
        let own: Vec<String> = std::env::vars_os()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        // No pairs: our environment as it is.
        assert_eq!(env_of(&[]), own);
        // Pairs before, among, after and replacing inherited names; a later pair wins.
        let pairs: Vec<(String, String)> = [
            ("\u{1}FIRST", "a"),
            ("PATH", "/replaced"),
            ("NIXCMD_X", "1"),
            ("NIXCMD_X", "2"),
            ("~LAST", "z"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut expected: std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString> =
            std::env::vars_os().collect();
        for (k, v) in &pairs {
            expected.insert(k.into(), v.into());
        }
        let expected: Vec<String> = expected
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        let got = env_of(&pairs);
        assert_eq!(got, expected);
        assert!(got.contains(&"PATH=/replaced".to_string()));
        assert!(got.contains(&"NIXCMD_X=2".to_string()));
    }

    #[test]
    fn a_missing_dir_or_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let err = spawn_group("bash", &[], Some(&gone), &[], false)
            .err()
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        let err = spawn_group("nixcmd-no-such-program", &[], Some(dir.path()), &[], false)
            .err()
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        // A path: the exec's own error, from the child (see `vfork`).
        let missing = dir.path().join("no-such-program");
        let err = spawn_group(missing.to_str().unwrap(), &[], None, &[], false)
            .err()
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        let not_executable = dir.path().join("data");
        std::fs::write(&not_executable, "x").unwrap();
        let err = spawn_group(not_executable.to_str().unwrap(), &[], None, &[], false)
            .err()
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
        // Piped stdin reaches the child.
        let args = vec!["-c".to_string(), "cat".to_string()];
        let mut child = spawn_group("bash", &args, None, &[], true).unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"fed\n").unwrap();
        drop(stdin);
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "fed\n");
        assert!(child.wait().unwrap().success());
        // Reaped once; asking again gives the same status.
        assert!(child.try_wait().unwrap().unwrap().success());
    }

    #[test]
    fn a_group_run_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let args = vec!["-c".to_string(), "echo start; sleep 30".to_string()];
        let spec = bash_spec(
            &args,
            dir.path(),
            Duration::from_millis(300),
            "unit-test-timeout",
        );
        let started = Instant::now();
        let ended = run_group(&spec, &Cancel::default(), &mut |_, _| {}).unwrap();
        assert_eq!(ended, Ended::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
