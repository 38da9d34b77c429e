//! A step's bash started ahead of its turn, while the step before it runs.
//!
//! Starting bash (exec, the dynamic loader, the shell's own set-up) is most of what a short
//! step costs, and with one process per step it sat between every two steps. When the next
//! step is sure to follow unless the current one fails (see `Engine::up_next`), its bash is
//! started during the current one, on the other CPU, as it would be started in its turn
//! (`bash --noprofile --norc -Eeuo pipefail SCRIPT`, same environment, folder and process
//! group), plus `BASH_ENV=/proc/<nixcmd>/fd/<n>`: the read end of a pipe of nixcmd's (see
//! `records_io::ScriptAhead`). A non-interactive bash reads its `BASH_ENV` file before it
//! opens its script, so it waits there, in a read. When its turn comes, nixcmd puts the
//! script file at its path (nothing was there: a reader of `scripts/` never meets the pipe)
//! and writes the file's last line into the pipe: `unset BASH_ENV; SECONDS=0; …`, which
//! undoes what the early start changed (the variable itself, the `SECONDS` clock, a
//! `HOSTNAME` taken before the step before renamed the machine, `$_`). bash runs it, opens the
//! script and runs it as ever: `$0`, `LINENO`, `BASH_SOURCE` and its messages are the
//! script's. Whatever else does not match at that moment (an export through `$NIXCMD_ENV`
//! changed the environment, the working folder was replaced, the bash is gone) is not used:
//! it is killed and a bash is started as usual.
//!
//! A bash started ahead runs nothing before its turn: if nixcmd dies (even `kill -9`), the
//! kernel closes nixcmd's end of the pipe, bash reads end of file (or finds no
//! `/proc/<nixcmd>`), finds no script at its path and exits 127. Dropping a [`Prestarted`]
//! kills it (SIGKILL: it is blocked in a read).
//!
//! Not done when the environment sets `BASH_ENV` (the user's own start-up file),
//! `SHELLOPTS` or `BASHOPTS` (an `xtrace` there would show the start-up line), when nixcmd's
//! `/proc/<pid>/fd` is closed to its own user (not "dumpable"), or with `NIXCMD_PRESTART=0`.

use super::{GroupChild, GroupSpec, boot_ticks, spawn_group};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// A bash waiting for its turn (see the module comment).
pub struct Prestarted {
    /// `None` once handed over by [`Prestarted::start`].
    child: Option<GroupChild>,
    /// The pipe's write end (bash reads on once it is closed).
    feed: Option<OwnedFd>,
    /// The pipe's read end, which bash opens through `/proc`: kept open until the step ends.
    source: Option<OwnedFd>,
    /// What `$_` is at a bash's start: the last line leaves it so.
    underscore: String,
    /// Whether bash takes `HOSTNAME` from its environment (else it asks the kernel at its
    /// start, and the last line asks again).
    hostname_inherited: bool,
    key: Key,
    /// When it was started (clock ticks since boot), for the sweep of what its step leaves.
    since: u64,
}

/// What a bash started now would be started with.
struct Key {
    program: String,
    args: Vec<String>,
    cwd: PathBuf,
    /// The working folder's device and inode: a folder removed and made again under the same
    /// name (a checkout cloned afresh) is another folder, and a bash started in the old one
    /// would run in a folder that no longer exists.
    cwd_id: Option<(u64, u64)>,
    env: Vec<(String, String)>,
    token: String,
}

impl Key {
    fn of(spec: &GroupSpec) -> Key {
        Key {
            program: spec.program.to_string(),
            args: spec.args.to_vec(),
            cwd: spec.cwd.to_path_buf(),
            cwd_id: folder_id(spec.cwd),
            env: spec.env.to_vec(),
            token: spec.token.to_string(),
        }
    }

    /// Whether `spec` is what this was made of ([`Key::of`]), compared in place: this runs
    /// between two steps, where copying the environment to compare it would cost more.
    fn fits(&self, spec: &GroupSpec) -> bool {
        self.program == spec.program
            && self.args == spec.args
            && self.cwd == spec.cwd
            && self.env == spec.env
            && self.token == spec.token
            && self.cwd_id == folder_id(spec.cwd)
    }
}

fn folder_id(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// The pids of bashes started ahead and not handed over yet: children of nixcmd that are not
/// left behind by a step (see `sweep_leftovers`).
static WAITING: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

fn waiting() -> std::sync::MutexGuard<'static, Vec<i32>> {
    WAITING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether any bash started ahead is waiting.
pub(super) fn any_waiting() -> bool {
    !waiting().is_empty()
}

/// Whether `pid` is a bash started ahead, still waiting for its turn.
pub(super) fn is_waiting(pid: i32) -> bool {
    waiting().contains(&pid)
}

/// Names whose presence in the environment rules a bash started ahead out (see the module
/// comment).
const RULED_OUT: [&str; 3] = ["BASH_ENV", "SHELLOPTS", "BASHOPTS"];

/// Whether bashes may be started ahead for a step with environment `env` (see the module
/// comment): asked before anything is made ready for it.
pub fn may_prestart(env: &[(String, String)]) -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let inherited = *ALLOWED.get_or_init(|| {
        // SAFETY: PR_GET_DUMPABLE only reads this process's attribute.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) } == 1;
        dumpable
            && std::path::Path::new("/proc/self/fd").is_dir()
            && std::env::var_os("NIXCMD_PRESTART").is_none_or(|v| v != "0")
            && RULED_OUT.iter().all(|k| std::env::var_os(k).is_none())
            && std::env::var_os("_").is_none_or(|v| v.to_str().is_some())
    });
    inherited && !env.iter().any(|(k, _)| RULED_OUT.contains(&k.as_str()))
}

/// Starts `spec` (a bash whose script is not at its path yet) to wait on the pipe of `ready`
/// for its turn. `spec.env` must not hold the step token: `spec.token` is added as a run adds
/// it.
pub fn prestart(
    spec: &GroupSpec,
    ready: crate::records_io::ScriptAhead,
) -> std::io::Result<Prestarted> {
    if !may_prestart(spec.env) || spec.stdin.is_some() {
        return Err(std::io::ErrorKind::Unsupported.into());
    }
    let crate::records_io::ScriptAhead { feed, source, .. } = ready;
    let given = |name: &str| -> Option<String> {
        match spec.env.iter().rev().find(|(k, _)| k == name) {
            Some((_, v)) => Some(v.clone()),
            None => std::env::var(name).ok(),
        }
    };
    // bash takes `$_` from the environment, else its own path (see `spawn_group`).
    let underscore = given("_").unwrap_or_else(|| {
        super::resolve_program(spec.program)
            .to_string_lossy()
            .into_owned()
    });
    let hostname_inherited = given("HOSTNAME").is_some();
    let mut env = spec.env.to_vec();
    env.push(("NIXCMD_STEP_TOKEN".into(), spec.token.into()));
    env.push((
        "BASH_ENV".into(),
        format!("/proc/{}/fd/{}", std::process::id(), source.as_raw_fd()),
    ));
    let since = boot_ticks();
    let child = spawn_group(spec.program, spec.args, Some(spec.cwd), &env, false)?;
    waiting().push(child.id() as i32);
    Ok(Prestarted {
        child: Some(child),
        feed: Some(feed),
        source: Some(source),
        underscore,
        hostname_inherited,
        key: Key::of(spec),
        since,
    })
}

/// The machine's name now, as bash would take it at its start.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into our buffer.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok()
}

impl Prestarted {
    /// Whether this is the bash `spec` would start now, still waiting. The caller has put
    /// the script file in place already (see the module comment).
    pub fn fits(&mut self, spec: &GroupSpec) -> bool {
        let alive = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        alive && self.key.fits(spec)
    }

    /// The start-up file's one line: what the early start changed, undone.
    fn last_line(&self) -> String {
        let quote = crate::run::remote::quote;
        let mut line = String::from("unset BASH_ENV; SECONDS=0; ");
        if !self.hostname_inherited
            && let Some(name) = host_name()
        {
            line.push_str(&format!("HOSTNAME={}; ", quote(&name)));
        }
        // Last: a command's last argument is what `$_` holds after it.
        line.push_str(&format!(": {}\n", quote(&self.underscore)));
        line
    }

    /// Lets bash go on to its script: the process is the step's from here on. With the time
    /// it was started, and the pipe's read end, to be closed once the step has ended.
    pub(super) fn start(mut self) -> std::io::Result<(GroupChild, u64, Option<OwnedFd>)> {
        let line = self.last_line();
        let feed = self.feed.take().expect("fed once");
        // Far shorter than PIPE_BUF, into an empty pipe nothing else writes to: one write, all
        // of it, without waiting.
        // SAFETY: writing bytes we own to a descriptor we own.
        let n = unsafe { libc::write(feed.as_raw_fd(), line.as_ptr().cast(), line.len()) };
        if n < 0 || n as usize != line.len() {
            let e = if n < 0 {
                std::io::Error::last_os_error()
            } else {
                std::io::Error::other("its start-up line could not be handed over whole")
            };
            // Killed before the write end closes: bash must not go on with half a line.
            self.kill();
            return Err(e);
        }
        drop(feed);
        let child = self.child.take().expect("started once");
        waiting().retain(|p| *p != child.id() as i32);
        Ok((child, self.since, self.source.take()))
    }

    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id() as i32;
        // SAFETY: signalling the group of a process we started and have not reaped.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = child.wait();
        waiting().retain(|p| *p != pid);
    }
}

impl Drop for Prestarted {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{Cancel, Ended, Observed, run_group_from};
    use std::time::Duration;

    struct Setup {
        dir: tempfile::TempDir,
        args: Vec<String>,
        env: Vec<(String, String)>,
        token: String,
    }

    fn setup(name: &str) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = dir.path().join(format!("{name}.sh"));
        let args = vec![script.display().to_string()];
        // A token of its own per test: a sweep of it must not reach another test's processes.
        let token = format!("unit-prestart-{name}-{}", std::process::id());
        Setup {
            dir,
            args,
            env: vec![("GREETING".into(), "hello".into())],
            token,
        }
    }

    impl Setup {
        fn spec(&self) -> GroupSpec<'_> {
            GroupSpec {
                program: "bash",
                args: &self.args,
                cwd: self.dir.path(),
                env: &self.env,
                stdin: None,
                timeout: Duration::from_secs(20),
                grace: Duration::from_millis(200),
                token: &self.token,
            }
        }

        fn script(&self) -> std::path::PathBuf {
            self.args[0].clone().into()
        }

        /// A bash waiting for `code`, and where the script file waits to be put in place.
        fn prestart(&self, code: &[u8]) -> std::io::Result<(Prestarted, std::path::PathBuf)> {
            let ready = crate::records_io::script_ahead_in(None, &self.script(), code)?;
            let held = ready.held.clone();
            Ok((prestart(&self.spec(), ready)?, held))
        }
    }

    fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, a)| a.trim_start().to_string()))
            .is_some_and(|after| !after.starts_with('Z'))
    }

    fn lines_of(spec: &GroupSpec, bash: Option<Prestarted>) -> (Ended, Vec<String>) {
        let mut lines = Vec::new();
        let ended = run_group_from(
            spec,
            &Cancel::default(),
            &mut |seen| {
                if let Observed::Line(_, l) = seen {
                    lines.push(l.to_string())
                }
            },
            bash,
        )
        .expect("ran");
        (ended, lines)
    }

    /// Let go after waiting over a second, the bash runs the script as a bash started then
    /// does: the same `$_`, no `BASH_ENV`, `SECONDS` from 0, `HOSTNAME`, line numbers, `$0`
    /// and `BASH_SOURCE` the script file's, the step's variables and token, its exit code.
    #[test]
    fn a_waiting_bash_let_go_runs_the_script_as_a_bash_started_then() {
        let s = setup("given");
        let code = b"echo \"$_|${BASH_ENV-unset}|$SECONDS|$HOSTNAME|$LINENO\"\necho \"$GREETING $(basename \"$0\") ${BASH_SOURCE[0]##*/} $NIXCMD_STEP_TOKEN\"\n[ -f \"$0\" ]\nexit 7\n";
        let (mut bash, held) = s.prestart(code).expect("started ahead");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(bash.fits(&s.spec()), "still waiting");
        crate::records_io::place_script_in(None, &held, &s.script()).expect("put in place");
        let (ended, early) = lines_of(&s.spec(), Some(bash));
        assert_eq!(ended, Ended::Exited(7));
        assert_eq!(early[1], format!("hello given.sh given.sh {}", s.token));
        let (ended, fresh) = lines_of(&s.spec(), None);
        assert_eq!(ended, Ended::Exited(7));
        assert_eq!(early, fresh);
        assert!(fresh[0].contains("|unset|0|"), "{fresh:?}");
    }

    /// Another environment, folder or token than the step's now: it does not fit. Dropped,
    /// it is gone (killed and reaped), having run nothing.
    #[test]
    fn a_waiting_bash_that_does_not_fit_is_killed_having_run_nothing() {
        let s = setup("unfit");
        let code = b"touch ran\n";
        let (mut bash, _) = s.prestart(code).expect("started ahead");
        std::thread::sleep(Duration::from_millis(100));
        let pid = bash.child.as_ref().map(|c| c.id() as i32).expect("a pid");
        assert!(is_waiting(pid));
        let env = vec![("GREETING".to_string(), "changed".to_string())];
        let other_env = GroupSpec {
            env: &env,
            ..s.spec()
        };
        assert!(!bash.fits(&other_env));
        let other_token = GroupSpec {
            token: "another",
            ..s.spec()
        };
        assert!(!bash.fits(&other_token));
        let elsewhere = tempfile::tempdir().expect("temp dir");
        let other_dir = GroupSpec {
            cwd: elsewhere.path(),
            ..s.spec()
        };
        assert!(!bash.fits(&other_dir));
        assert!(bash.fits(&s.spec()));
        drop(bash);
        assert!(!running(pid));
        assert!(!is_waiting(pid));
        assert!(!s.dir.path().join("ran").exists());
    }

    /// A script bigger than a pipe's buffer: the script is read from its file, only the
    /// start-up line goes through the pipe.
    #[test]
    fn a_script_bigger_than_a_pipe_buffer_runs_whole() {
        let s = setup("big");
        let mut code = "# padding\n".repeat(20_000).into_bytes();
        code.extend_from_slice(b"echo \"end $LINENO\"\n");
        let (mut bash, held) = s.prestart(&code).expect("started ahead");
        assert!(bash.fits(&s.spec()));
        crate::records_io::place_script_in(None, &held, &s.script()).expect("put in place");
        let (ended, lines) = lines_of(&s.spec(), Some(bash));
        assert_eq!(ended, Ended::Exited(0));
        assert_eq!(lines, ["end 20001"]);
    }
}
