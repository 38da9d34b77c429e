//! The heartbeat of plain output: when nixcmd has written no line for a while and steps are
//! running, one line per running step says so, with its elapsed time and its last output
//! line. CI systems kill a job that prints nothing for ten minutes (CircleCI's
//! `no_output_timeout`, Travis, many Jenkins and Buildkite setups), and a reader of a CI log
//! cannot tell a fifteen-minute `nixos-rebuild` from a hang. At a terminal the live display
//! already shows both.
//!
//! The interval is `NIXCMD_HEARTBEAT` (a duration, `0` or `off`), one minute by default. One
//! thread per run sleeps on a condition variable until the next line is due: what the
//! renderer does per event is a clock read (vDSO, no system call) under an uncontended lock.
//! Heartbeat lines are human text only: no event, nothing in the logs.

use crate::duration::display;
use crate::exit::Failure;
use crate::terminal_text;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The environment variable that sets the interval.
pub const VAR: &str = "NIXCMD_HEARTBEAT";

/// Well under the ten minutes after which common CI systems give up on a silent job, and
/// rare enough not to crowd a log: a 15-minute step gets 15 lines.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Shorter intervals are refused: they would fill a log with heartbeats, not show progress.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// At most this many step lines per heartbeat (a fan-out to a hundred hosts); the rest are
/// counted on one more line, as in the live display.
const MAX_LINES: usize = 12;

/// Display columns of the last output line in a heartbeat: plain output has no terminal
/// width, and a CI log viewer wraps long lines.
const LAST_WIDTH: usize = 80;

/// The interval from `NIXCMD_HEARTBEAT`: `None` when the heartbeat is off. A bad value is a
/// usage error, before anything runs.
pub fn from_env() -> Result<Option<Duration>, Failure> {
    let value = std::env::var_os(VAR);
    interval(value.as_ref().map(|v| v.to_string_lossy()).as_deref())
}

/// [`from_env`] for a given value (`None`: the variable is not set).
fn interval(value: Option<&str>) -> Result<Option<Duration>, Failure> {
    // Set but empty counts as not set: CI templates often write `NIXCMD_HEARTBEAT=` for
    // "default".
    let text = match value.map(str::trim) {
        None | Some("") => return Ok(Some(DEFAULT_INTERVAL)),
        Some(text) => text,
    };
    if text == "0" || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let hint = "set it to a duration such as 30s, 1m or 5m, or to 0 or off for no heartbeat";
    match crate::duration::parse(text) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) if d < MIN_INTERVAL => Err(Failure::usage(format!(
            "{VAR}=`{text}` is shorter than the shortest heartbeat interval, 1s"
        ))
        .with_hint(hint)),
        Ok(d) => Ok(Some(d)),
        Err(why) => Err(Failure::usage(format!("{VAR}=`{text}`: {why}")).with_hint(hint)),
    }
}

/// Whether `fd` is `/dev/null`: nobody reads a heartbeat written there (`nixcmd run x
/// >/dev/null`, hyperfine), and the heartbeat's thread is not free even asleep: with a
/// second thread, glibc's malloc takes its locks and its system call wrappers check for
/// cancellation, ~3 % more instructions for a 50-step run. One `fstat`, once per run.
pub fn discarded(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: fstat writes into a zeroed `stat` we own; a bad descriptor is an error return.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFCHR
            && st.st_rdev == libc::makedev(1, 3)
    }
}

/// A running step, or one host's part of a fan-out (`step@host`).
struct Running {
    key: String,
    attempt: u32,
    /// When this attempt started.
    started: Instant,
    /// Its last output line, as printed (made safe only when a heartbeat shows it), or the
    /// start of one it has not ended yet (a progress bar's newest state, a prompt).
    last: String,
}

/// What the heartbeat decides from: the running steps and when the last line went out. The
/// clock is passed in, so that tests decide the time.
pub struct Beat {
    every: Duration,
    /// When nixcmd last wrote a line, a heartbeat included.
    last_line: Instant,
    /// In start order.
    running: Vec<Running>,
    stop: bool,
}

impl Beat {
    pub fn new(every: Duration, now: Instant) -> Self {
        Beat {
            every,
            last_line: now,
            running: Vec::new(),
            stop: false,
        }
    }

    /// A line went out: the timer starts again.
    pub fn wrote(&mut self, now: Instant) {
        self.last_line = now;
    }

    /// Step (or `step@host`) `key` started its attempt `attempt`; a retry starts the clock
    /// again.
    pub fn started(&mut self, key: &str, attempt: u32, now: Instant) {
        self.running.retain(|r| r.key != key);
        self.running.push(Running {
            key: key.to_string(),
            attempt,
            started: now,
            last: String::new(),
        });
    }

    /// `key` printed `line`. The buffer is reused: a chatty step costs a copy per line, no
    /// allocation.
    pub fn output(&mut self, key: &str, line: &str) {
        if let Some(r) = self.running.iter_mut().find(|r| r.key == key) {
            r.last.clear();
            r.last.push_str(line);
        }
    }

    /// `key` finished; `None`: everything did (the run ended).
    pub fn finished(&mut self, key: Option<&str>) {
        match key {
            Some(key) => self.running.retain(|r| r.key != key),
            None => self.running.clear(),
        }
    }

    /// The heartbeat lines due at `now` (without time stamps), which restart the timer;
    /// none when a line went out within the interval or nothing runs.
    pub fn due_lines(&mut self, now: Instant) -> Vec<String> {
        if self.running.is_empty() || now.saturating_duration_since(self.last_line) < self.every {
            return Vec::new();
        }
        self.last_line = now;
        let mut lines: Vec<String> = self
            .running
            .iter()
            .take(MAX_LINES)
            .map(|r| heartbeat_line(r, now))
            .collect();
        if self.running.len() > MAX_LINES {
            lines.push(format!(
                "… and {} more still running",
                self.running.len() - MAX_LINES
            ));
        }
        lines
    }

    /// How long to sleep from `now` before looking again: until the next heartbeat is due,
    /// or a whole interval when it is due but nothing runs (a step that starts writes its
    /// start line, which moves the time due past the wake-up).
    pub fn sleep(&self, now: Instant) -> Duration {
        let due = self.last_line + self.every;
        match due.checked_duration_since(now) {
            Some(left) if !left.is_zero() => left,
            _ => self.every,
        }
    }
}

/// `step-3 still running (2m; last output: building foo.drv)`.
fn heartbeat_line(r: &Running, now: Instant) -> String {
    let retry = if r.attempt > 1 {
        format!(" (attempt {})", r.attempt)
    } else {
        String::new()
    };
    let elapsed = display(now.saturating_duration_since(r.started));
    // As the live display shows it: no control sequences, one row.
    let last = terminal_text::fit(&terminal_text::plain(&r.last), LAST_WIDTH);
    if last.trim().is_empty() {
        format!("… {}{retry} still running ({elapsed})", r.key)
    } else {
        format!(
            "… {}{retry} still running ({elapsed}; last output: {last})",
            r.key
        )
    }
}

type Shared = Arc<(Mutex<Beat>, Condvar)>;

/// The heartbeat of one run: the shared [`Beat`] and the thread that writes what is due.
pub struct Heartbeat {
    shared: Shared,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    /// Starts the thread; `write` gets the heartbeat lines of one beat, time-stamped, as one
    /// text. It is called with the [`Beat`] locked, so that a line the renderer writes
    /// meanwhile (which takes the lock to restart the timer) is never overtaken by a
    /// heartbeat decided before it.
    pub fn start(every: Duration, write: impl Fn(&str) + Send + 'static) -> Self {
        let shared: Shared =
            Arc::new((Mutex::new(Beat::new(every, Instant::now())), Condvar::new()));
        let theirs = shared.clone();
        let thread = without_signals(|| {
            std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || beat_until_stopped(&theirs, &write))
                .ok()
        });
        Heartbeat { shared, thread }
    }

    /// The shared state, locked; `None` after a panic elsewhere poisoned it (the heartbeat
    /// is then silent, the run goes on).
    pub fn lock(&self) -> Option<MutexGuard<'_, Beat>> {
        self.shared.0.lock().ok()
    }
}

/// Runs `spawn` with the asynchronous signals blocked, so that the thread it starts inherits
/// that mask: Ctrl-C, SIGTERM and SIGHUP always reach the main thread, whose blocking calls
/// (a confirmation prompt's read, the step's poll) they must interrupt, never this one. (It
/// also keeps `strace -f` from showing this thread's sleep restarted at every step's SIGCHLD,
/// which a traced process receives.) SIGSEGV and SIGBUS stay open for Rust's stack overflow
/// report.
fn without_signals<T>(spawn: impl FnOnce() -> T) -> T {
    // SAFETY: the sets are initialised by sigfillset/sigdelset before use, and
    // pthread_sigmask only changes this thread's mask, restored to `old` right after.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigdelset(&mut all, libc::SIGSEGV);
        libc::sigdelset(&mut all, libc::SIGBUS);
        let blocked = libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old) == 0;
        let result = spawn();
        if blocked {
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
        result
    }
}

fn beat_until_stopped(shared: &Shared, write: &dyn Fn(&str)) {
    let (lock, wake) = &**shared;
    let Ok(mut beat) = lock.lock() else { return };
    loop {
        if beat.stop {
            return;
        }
        let now = Instant::now();
        let lines = beat.due_lines(now);
        if !lines.is_empty() {
            let stamp = crate::event::local_time(c"%H:%M:%S");
            let text: String = lines.iter().map(|l| format!("[{stamp}] {l}\n")).collect();
            write(&text);
        }
        let sleep = beat.sleep(now);
        beat = match wake.wait_timeout(beat, sleep) {
            Ok((beat, _)) => beat,
            Err(_) => return,
        };
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Ok(mut beat) = self.shared.0.lock() {
            beat.stop = true;
        }
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_interval_comes_from_the_environment_value() {
        assert_eq!(interval(None).unwrap(), Some(DEFAULT_INTERVAL));
        assert_eq!(interval(Some("")).unwrap(), Some(DEFAULT_INTERVAL));
        assert_eq!(interval(Some("30s")).unwrap(), Some(secs(30)));
        assert_eq!(interval(Some(" 2m ")).unwrap(), Some(secs(120)));
        assert_eq!(interval(Some("1m30s")).unwrap(), Some(secs(90)));
        for off in ["0", "off", "OFF", "0s", "0ms"] {
            assert_eq!(interval(Some(off)).unwrap(), None, "{off}");
        }
    }

    #[test]
    fn a_bad_interval_is_a_usage_error_naming_the_variable_and_the_value() {
        let e = interval(Some("abc")).unwrap_err();
        assert_eq!(e.exit, crate::exit::Exit::Usage);
        assert_eq!(
            e.message,
            "NIXCMD_HEARTBEAT=`abc`: `abc` is not a duration (expected e.g. 90s, 45m, 1h30m)"
        );
        assert!(e.hint.unwrap().contains("0 or off"));
        let e = interval(Some("30")).unwrap_err();
        assert_eq!(
            e.message,
            "NIXCMD_HEARTBEAT=`30`: `30` has no unit (write 30s, 30m or 30h)"
        );
        let e = interval(Some("500ms")).unwrap_err();
        assert!(e.message.contains("shorter than"), "{}", e.message);
        assert!(interval(Some("8d")).is_err());
    }

    #[test]
    fn nothing_is_due_before_the_interval_or_while_nothing_runs() {
        let t0 = Instant::now();
        let mut b = Beat::new(MIN, t0);
        // Nothing runs: never a line, however long the silence.
        assert!(b.due_lines(t0 + secs(600)).is_empty());
        b.wrote(t0 + secs(600));
        b.started("build", 1, t0 + secs(600));
        assert!(b.due_lines(t0 + secs(659)).is_empty());
        assert_eq!(b.due_lines(t0 + secs(660)), ["… build still running (1m)"]);
        // The heartbeat is a line: the next one is an interval later.
        assert!(b.due_lines(t0 + secs(700)).is_empty());
        assert_eq!(
            b.due_lines(t0 + secs(725)),
            ["… build still running (2m05s)"]
        );
    }

    #[test]
    fn any_line_written_restarts_the_timer() {
        let t0 = Instant::now();
        let mut b = Beat::new(MIN, t0);
        b.started("build", 1, t0);
        b.wrote(t0 + secs(50));
        assert!(b.due_lines(t0 + secs(100)).is_empty());
        assert_eq!(b.sleep(t0 + secs(100)), secs(10));
        assert_eq!(b.due_lines(t0 + secs(110)).len(), 1);
        // Due but nothing runs: look again an interval later, not in a busy loop.
        b.finished(Some("build"));
        assert_eq!(b.sleep(t0 + secs(300)), MIN);
    }

    #[test]
    fn each_running_step_and_host_gets_a_line_in_start_order() {
        let t0 = Instant::now();
        let mut b = Beat::new(MIN, t0);
        b.started("deploy@web1", 1, t0);
        b.started("deploy@web2", 1, t0 + secs(5));
        b.started("check", 1, t0 + secs(10));
        b.output("deploy@web2", "copying paths");
        b.finished(Some("check"));
        // A retry starts its own clock.
        b.started("deploy@web1", 2, t0 + secs(30));
        assert_eq!(
            b.due_lines(t0 + secs(90)),
            [
                "… deploy@web2 still running (1m25s; last output: copying paths)",
                "… deploy@web1 (attempt 2) still running (1m)",
            ]
        );
        b.finished(None);
        assert!(b.due_lines(t0 + secs(900)).is_empty());
    }

    #[test]
    fn lines_are_bounded_for_a_large_fan_out() {
        let t0 = Instant::now();
        let mut b = Beat::new(MIN, t0);
        for i in 0..30 {
            b.started(&format!("deploy@host{i:02}"), 1, t0);
        }
        let lines = b.due_lines(t0 + MIN);
        assert_eq!(lines.len(), MAX_LINES + 1);
        assert_eq!(lines[0], "… deploy@host00 still running (1m)");
        assert_eq!(lines[MAX_LINES], "… and 18 more still running");
    }

    #[test]
    fn the_last_output_is_made_safe_and_cut() {
        let t0 = Instant::now();
        let mut b = Beat::new(MIN, t0);
        b.started("a", 1, t0);
        b.started("b", 1, t0);
        b.started("c", 1, t0);
        b.output(
            "a",
            "\x1b[2J\x1b[1;31mbuilding\x1b[0m foo.drv\x07 10%\rbuilding foo.drv 99%",
        );
        b.output("b", &"x".repeat(500));
        // Only escape sequences: nothing worth showing.
        b.output("c", "\x1b[2K\x1b[1A");
        let lines = b.due_lines(t0 + MIN);
        assert_eq!(
            lines[0],
            "… a still running (1m; last output: building foo.drv 99%)"
        );
        let prefix = "… b still running (1m; last output: ";
        assert_eq!(
            lines[1],
            format!("{prefix}{}…)", "x".repeat(LAST_WIDTH - 1))
        );
        assert_eq!(lines[2], "… c still running (1m)");
        assert!(lines.iter().all(|l| !l.chars().any(char::is_control)));
    }

    /// This thread's signal mask: which of `signals` are blocked.
    fn blocked(signals: &[i32]) -> Vec<bool> {
        // SAFETY: a query only (no new set); `mask` is written by pthread_sigmask.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
            signals
                .iter()
                .map(|&s| libc::sigismember(&mask, s) == 1)
                .collect()
        }
    }

    #[test]
    fn the_thread_leaves_signals_to_the_main_thread() {
        let signals = [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGCHLD,
            libc::SIGSEGV,
        ];
        let before = blocked(&signals);
        let theirs = without_signals(|| std::thread::spawn(move || blocked(&signals)))
            .join()
            .unwrap();
        assert_eq!(theirs, [true, true, true, true, false]);
        // The caller's own mask is as it was.
        assert_eq!(blocked(&signals), before);
    }

    #[test]
    fn only_dev_null_is_discarded() {
        use std::os::fd::AsRawFd;
        let null = std::fs::File::open("/dev/null").unwrap();
        assert!(discarded(null.as_raw_fd()));
        let file = tempfile::tempfile().unwrap();
        assert!(!discarded(file.as_raw_fd()));
        let (read, _write) = std::io::pipe().unwrap();
        assert!(!discarded(read.as_raw_fd()));
        assert!(!discarded(-1));
    }

    #[test]
    fn the_thread_writes_when_due_and_stops_when_dropped() {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let tx = Mutex::new(tx);
        let hb = Heartbeat::start(Duration::from_millis(50), move |text| {
            let _ = tx.lock().unwrap().send(text.to_string());
        });
        hb.lock().unwrap().started("slow", 1, Instant::now());
        let text = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(text.starts_with('['), "{text}");
        // One line, time-stamped; the elapsed time depends on the machine's load.
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("] … slow still running ("), "{text}");
        assert!(text.ends_with(")\n"), "{text}");
        drop(hb);
        // The thread is gone: the sender it held is dropped with it.
        while rx.recv_timeout(Duration::from_secs(30)).is_ok() {}
        assert!(rx.recv().is_err());
    }
}
