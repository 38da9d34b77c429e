//! The start of a step's process, for `process::spawn_group` only (nothing else starts
//! processes): `clone(CLONE_VM | CLONE_VFORK)` on a stack kept for the whole run, then the
//! child's set-up and `execve`.
//!
//! This is what glibc's `posix_spawn` does, minus what it costs per call and nixcmd does not
//! need: a fresh 36 KiB stack mapped and unmapped around every spawn (page faults in the child,
//! then an unmap that flushes the other CPU's TLB), six `getrlimit` calls for three `dup2`
//! actions, and SIGTTIN/SIGTTOU switched to ignored and back in nixcmd itself (here the child
//! ignores them in its own copy of the dispositions). Measured per step of a 50-step run: the
//! gap between one step's exit and the next one's exec shrank by about 30 µs.
//!
//! The child shares nixcmd's memory until it execs, and the calling thread waits meanwhile
//! (`CLONE_VFORK`): it reads only what [`Setup`] points at, which lives on the waiting thread's
//! stack, allocates nothing, and takes no lock. Every signal is blocked around the clone, and
//! the child sets every caught signal back to its default before unblocking them, so no
//! handler of nixcmd's runs in the child (glibc does the same).

use std::ffi::CStr;
use std::os::fd::RawFd;

/// What the child needs, all of it prepared by the parent: raw pointers into memory that the
/// waiting parent keeps alive and unchanged until the child has exec'd or exited.
struct Setup {
    program: *const libc::c_char,
    argv: *const *mut libc::c_char,
    envp: *const *mut libc::c_char,
    /// NULL: stay in nixcmd's directory.
    cwd: *const libc::c_char,
    stdio: [RawFd; 3],
    /// The signals nixcmd has a handler for (bit `n - 1` for signal `n`): set back to their
    /// default in the child.
    caught: u64,
    /// Written by the child when a set-up call or `execve` fails: its errno.
    error: libc::c_int,
}

/// glibc's own signals (SIGCANCEL, SIGSETXID), which its `sigaction` refuses to touch. nixcmd
/// neither cancels threads nor changes its ids, so glibc never gave them a handler: they are
/// at their default, and the step gets them so (glibc's posix_spawn ignored them instead).
const GLIBC_INTERNAL: [libc::c_int; 2] = [32, 33];

/// The highest signal number + 1 on Linux.
const NSIG: libc::c_int = 65;

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Setup` of `spawn`, alive and not touched by the waiting parent
    // until this child execs or exits. Only async-signal-safe calls follow, on memory that
    // was prepared before the clone.
    unsafe {
        let setup = &mut *arg.cast::<Setup>();
        let mut set: libc::sigaction = std::mem::zeroed();
        for sig in 1..NSIG {
            let disposition = if sig == libc::SIGPIPE {
                // Rust ignores SIGPIPE in nixcmd; a shell gets it back at its default.
                libc::SIG_DFL
            } else if sig == libc::SIGTTIN || sig == libc::SIGTTOU {
                // A step reading the terminal fails at once instead of stopping (see
                // `process::spawn_group`).
                libc::SIG_IGN
            } else if setup.caught & (1 << (sig - 1)) != 0 {
                libc::SIG_DFL
            } else {
                continue;
            };
            set.sa_sigaction = disposition;
            libc::sigaction(sig, &set, std::ptr::null_mut());
        }
        if libc::setpgid(0, 0) != 0 {
            return fail(setup);
        }
        if !setup.cwd.is_null() && libc::chdir(setup.cwd) != 0 {
            return fail(setup);
        }
        for (target, fd) in setup.stdio.into_iter().enumerate() {
            let target = target as libc::c_int;
            if fd == target {
                // dup2 onto itself would keep close-on-exec set.
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return fail(setup);
                }
            } else if libc::dup2(fd, target) < 0 {
                return fail(setup);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::execve(setup.program, setup.argv.cast(), setup.envp.cast());
        fail(setup)
    }
}

/// Records the errno of the call that failed and ends the child.
///
/// # Safety
/// Only in the child of [`spawn`].
unsafe fn fail(setup: &mut Setup) -> libc::c_int {
    // SAFETY: errno is readable here (the thread-local of the waiting parent thread, as for
    // glibc's own child); `_exit` ends the child without running anything of nixcmd's.
    unsafe {
        setup.error = *libc::__errno_location();
        libc::_exit(127)
    }
}

/// The stack the child runs on until it execs, mapped once (with a guard page below it) and
/// reused: spawns take turns on it.
struct Stack {
    base: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is only used under `KEPT`'s lock.
unsafe impl Send for Stack {}

const STACK_LEN: usize = 64 * 1024;
const GUARD: usize = 4096;

/// What spawns keep from one to the next, under one lock (spawns take turns).
struct Kept {
    stack: Option<Stack>,
    /// The signals with a handler, looked up (64 `sigaction` calls) at the first spawn and
    /// again after [`handlers_changed`]: glibc's child looks them all up at every spawn.
    caught: Option<u64>,
}

static KEPT: std::sync::Mutex<Kept> = std::sync::Mutex::new(Kept {
    stack: None,
    caught: None,
});

/// To be called after nixcmd gives a signal a handler: the next spawn looks them up again.
/// (Were one missed, a child would keep that handler only until its exec, with every signal
/// blocked until just before it.)
pub fn handlers_changed() {
    KEPT.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .caught = None;
}

/// The signals that have a handler now, as a bit set (bit `n - 1` for signal `n`).
fn look_up_caught() -> u64 {
    let mut caught = 0u64;
    for sig in 1..NSIG {
        if GLIBC_INTERNAL.contains(&sig) {
            continue;
        }
        // SAFETY: a query only (no new disposition), into a local.
        let handled = unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
        };
        if handled {
            caught |= 1 << (sig - 1);
        }
    }
    caught
}

fn map_stack() -> std::io::Result<Stack> {
    let len = STACK_LEN + GUARD;
    // SAFETY: a new private anonymous mapping; the lowest page is made inaccessible so that
    // an overflow faults instead of writing into whatever lies below.
    unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        );
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        if libc::mprotect(base, GUARD, libc::PROT_NONE) != 0 {
            let e = std::io::Error::last_os_error();
            libc::munmap(base, len);
            return Err(e);
        }
        Ok(Stack { base, len })
    }
}

/// Starts `program` (a path) with `argv` and `envp` (both NULL-terminated), in `cwd` if given,
/// with `stdio` as its descriptors 0–2, as the leader of a new process group. Returns the pid
/// once the child has exec'd; the error of the set-up call or exec that failed otherwise (the
/// child is reaped then).
pub fn spawn(
    program: &CStr,
    argv: &[*mut libc::c_char],
    envp: &[*mut libc::c_char],
    cwd: Option<&CStr>,
    stdio: [RawFd; 3],
) -> std::io::Result<i32> {
    debug_assert!(argv.last().is_some_and(|p| p.is_null()));
    debug_assert!(envp.last().is_some_and(|p| p.is_null()));
    let mut kept = KEPT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if kept.stack.is_none() {
        kept.stack = Some(map_stack()?);
    }
    let caught = *kept.caught.get_or_insert_with(look_up_caught);
    let Some(stack) = kept.stack.as_ref() else {
        unreachable!("mapped above")
    };
    let mut setup = Setup {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: cwd.map_or(std::ptr::null(), CStr::as_ptr),
        stdio,
        caught,
        error: 0,
    };
    // SAFETY: the stack is ours alone while the lock is held, and 16-byte aligned at its top;
    // `setup` outlives the child's use of it (CLONE_VFORK: clone returns once the child has
    // exec'd or exited). All signals are blocked around the clone so that none is handled in
    // the child before it has reset its dispositions; the mask is restored right after.
    unsafe {
        let top = stack
            .base
            .cast::<u8>()
            .add(stack.len)
            .cast::<libc::c_void>();
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let pid = libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut setup as *mut Setup).cast(),
        );
        let clone_error = std::io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid < 0 {
            return Err(clone_error);
        }
        // The child wrote `error` through shared memory: read it as memory the compiler
        // cannot assume unchanged.
        let error = std::ptr::read_volatile(&setup.error);
        if error != 0 {
            let mut status = 0;
            while libc::waitpid(pid, &mut status, 0) < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
            }
            return Err(std::io::Error::from_raw_os_error(error));
        }
        Ok(pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler given after the first spawn is known to the next one (its child sets it back
    /// to the default before unblocking signals).
    #[test]
    fn a_handler_given_later_is_looked_up_again() {
        let bit = 1u64 << (libc::SIGUSR2 - 1);
        let program = c"/bin/true";
        let argv = [program.as_ptr().cast_mut(), std::ptr::null_mut()];
        let envp = [std::ptr::null_mut()];
        let null = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&null);
        let spawn_and_reap = || {
            let pid = spawn(program, &argv, &envp, None, [fd, fd, fd]).unwrap();
            let mut status = 0;
            // SAFETY: waiting for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert_eq!(status, 0);
        };
        spawn_and_reap();
        assert_eq!(look_up_caught() & bit, 0, "SIGUSR2 has no handler yet");
        // SAFETY: the handler does nothing.
        unsafe { signal_hook::low_level::register(libc::SIGUSR2, || {}).unwrap() };
        handlers_changed();
        spawn_and_reap();
        // `None` only if another test gave a handler meanwhile.
        let kept = KEPT.lock().unwrap().caught;
        assert!(kept.is_none_or(|c| c & bit == bit), "{kept:?}");
    }
}
