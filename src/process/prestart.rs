//! A step's bash started ahead of its turn, while the step before it runs.
//!
//! Starting bash (exec, the dynamic loader, the shell's own set-up) is most of what a short
//! step costs, and with one process per step it sat between every two steps. When the next
//! step is sure to follow unless the current one fails (see `Engine::up_next`), its bash is
//! started during the current one, on the other CPU, with its script's path as its argument —
//! but at that path a link to a pipe of nixcmd's (`/proc/<nixcmd>/fd/<n>`, see
//! `records_io::ScriptAhead`), which bash opens at once and then blocks reading. When its
//! turn comes, nixcmd puts the real script file in place of the link (so `$0` names the
//! script, as ever), writes the script into the pipe and closes its write end: bash reads it
//! to end of file and runs it. Same program, arguments, environment, folder and process group
//! as a bash started then; only its start moved earlier. Whatever does not match at that
//! moment (an export through `$NIXCMD_ENV` changed the environment, the working folder was
//! replaced, the bash is gone) is not used: it is killed and a bash is started as usual.
//!
//! A bash started ahead runs nothing before it is given its script: if nixcmd dies (even
//! `kill -9`), the kernel closes nixcmd's end of the pipe, and bash reads end of file (an
//! empty script) and exits 0, or, not at its open yet, finds no `/proc/<nixcmd>` and exits
//! 127. Dropping a [`Prestarted`] kills it (SIGKILL: it is blocked in a read).
//!
//! Not done when `BASH_ENV` is set (bash would read that file at its start, before the step
//! before it ended), for a script that names `SECONDS` (bash counts it from its start), when
//! the script does not fit in the pipe's buffer (the write must never
//! wait for the reader: a script that exits early would leave it waiting for good), when
//! nixcmd's `/proc/<pid>/fd` is closed to its own user (not "dumpable"), or when
//! `NIXCMD_PRESTART=0`.

use super::{GroupChild, GroupSpec, boot_ticks, spawn_group};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// A bash waiting for its script (see the module comment).
pub struct Prestarted {
    /// `None` once handed over by [`Prestarted::start`].
    child: Option<GroupChild>,
    /// The pipe's write end (bash sees end of file once it is closed).
    feed: Option<OwnedFd>,
    /// The pipe's read end, which the link at the script's path names: kept open until the
    /// step ends (see `records_io::ScriptAhead::source`).
    source: Option<OwnedFd>,
    script: Vec<u8>,
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
}

impl Key {
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

/// Whether `pid` is a bash started ahead, still waiting for its script.
pub(super) fn is_waiting(pid: i32) -> bool {
    waiting().contains(&pid)
}

/// Whether bashes may be started ahead: not with `NIXCMD_PRESTART=0`, nor with `BASH_ENV`
/// set, nor when this process's `/proc/<pid>/fd` is not its user's to open (see the module
/// comment).
fn allowed(env: &[(String, String)]) -> bool {
    static ALLOWED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let inherited = *ALLOWED.get_or_init(|| {
        // SAFETY: PR_GET_DUMPABLE only reads this process's attribute.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE) } == 1;
        dumpable
            && std::path::Path::new("/proc/self/fd").is_dir()
            && std::env::var_os("NIXCMD_PRESTART").is_none_or(|v| v != "0")
            && std::env::var_os("BASH_ENV").is_none()
    });
    inherited && !env.iter().any(|(k, _)| k == "BASH_ENV")
}

/// Whether a bash may be started ahead for a step with environment `env` and `script` (see
/// [`allowed`]): asked before anything is made ready for it. Not for a script that reads
/// `$SECONDS`: bash counts it from its own start, which would include the wait.
pub fn may_prestart(env: &[(String, String)], script: &[u8]) -> bool {
    allowed(env) && !script.windows(b"SECONDS".len()).any(|w| w == b"SECONDS")
}

/// Starts `spec` (a bash whose script argument is the link to the pipe `ready` holds) to
/// wait for `script`. `spec.env` must not hold the step token: `spec.token` is added as a run
/// adds it.
pub fn prestart(
    spec: &GroupSpec,
    ready: crate::records_io::ScriptAhead,
    script: &[u8],
) -> std::io::Result<Prestarted> {
    let crate::records_io::ScriptAhead { feed, source, .. } = ready;
    if !may_prestart(spec.env, script) || spec.stdin.is_some() {
        return Err(std::io::ErrorKind::Unsupported.into());
    }
    // SAFETY: F_GETPIPE_SZ only reads the pipe's capacity.
    let room = unsafe { libc::fcntl(feed.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if room < 0 || script.len() > room as usize {
        return Err(std::io::ErrorKind::Unsupported.into());
    }
    let mut env = spec.env.to_vec();
    env.push(("NIXCMD_STEP_TOKEN".into(), spec.token.into()));
    let since = boot_ticks();
    let child = spawn_group(spec.program, spec.args, Some(spec.cwd), &env, false)?;
    waiting().push(child.id() as i32);
    Ok(Prestarted {
        child: Some(child),
        feed: Some(feed),
        source: Some(source),
        script: script.to_vec(),
        key: Key::of(spec),
        since,
    })
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

    /// Gives bash its script: the process is the step's from here on. With the time it was
    /// started, and the pipe's read end, to be closed once the step has ended.
    pub(super) fn start(mut self) -> std::io::Result<(GroupChild, u64, Option<OwnedFd>)> {
        let feed = self.feed.take().expect("fed once");
        // Fits in the pipe's buffer (checked in `prestart`) and nothing else writes to it:
        // one write, all of it, without waiting.
        // SAFETY: writing bytes we own to a descriptor we own.
        let n = unsafe {
            libc::write(
                feed.as_raw_fd(),
                self.script.as_ptr().cast(),
                self.script.len(),
            )
        };
        if n < 0 || n as usize != self.script.len() {
            let e = if n < 0 {
                std::io::Error::last_os_error()
            } else {
                std::io::Error::other("its script could not be handed over whole")
            };
            // Killed before the write end closes: a part of a script must not run.
            self.kill();
            return Err(e);
        }
        drop(feed);
        let child = self.child.take().expect("started once");
        waiting().retain(|p| *p != child.id() as i32);
        Ok((child, self.since, self.source.take()))
    }
}

impl Prestarted {
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
            Ok((prestart(&self.spec(), ready, code)?, held))
        }
    }

    fn running(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, a)| a.trim_start().to_string()))
            .is_some_and(|after| !after.starts_with('Z'))
    }

    /// Handed over, the waiting bash runs the script with the step's environment and token,
    /// its `$0` the script file, and ends as a bash started then would.
    #[test]
    fn a_waiting_bash_given_its_script_runs_it_as_the_step() {
        let s = setup("given");
        let code =
            b"echo \"$GREETING $(basename \"$0\") $NIXCMD_STEP_TOKEN\"\n[ -f \"$0\" ]\nexit 7\n";
        let (mut bash, held) = s.prestart(code).expect("started ahead");
        std::thread::sleep(Duration::from_millis(100));
        assert!(bash.fits(&s.spec()), "still waiting");
        crate::records_io::place_script_in(None, &held, &s.script()).expect("put in place");
        let mut lines = Vec::new();
        let ended = run_group_from(
            &s.spec(),
            &Cancel::default(),
            &mut |seen| {
                if let Observed::Line(_, l) = seen {
                    lines.push(l.to_string())
                }
            },
            Some(bash),
        )
        .expect("ran");
        assert_eq!(ended, Ended::Exited(7));
        assert_eq!(lines, [format!("hello given.sh {}", s.token)]);
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

    /// A script bigger than the pipe's buffer is not handed over that way (the write could
    /// wait for good): refused before anything starts.
    #[test]
    fn a_script_bigger_than_the_pipe_buffer_is_refused() {
        let s = setup("big");
        let code = vec![b'#'; 1 << 20];
        let e = s.prestart(&code).err().expect("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    }
}
