//! `nixcmd log RUN [STEP] --follow`: what `log` prints, then the run's output as it is written,
//! until the run is no longer in progress; then one line saying how it ended.
//!
//! The logs are polled (every [`POLL`]), not watched with inotify: a step's log gets its
//! output at most once per read of the step's pipes, a person reading a terminal does not see
//! 200 ms, and polling needs no new dependency, works the same on every file system (inotify
//! misses changes made over NFS, where a state folder may live) and has no watch limit to
//! run into. What a poll costs: one `stat` per log, a directory read and the lock check.
//!
//! Memory stays bounded whatever the logs hold: logs are read [`CHUNK`] bytes at a time and
//! nothing of them is kept between polls but how far each was printed.

use crate::app::Context;
use crate::event::RunStatus;
use crate::exit::{Exit, Failure};
use crate::process::Cancel;
use crate::run::commands::{is_host_log_of, log_header, no_log, present_logs, status_label};
use crate::run::records::{self, State};
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the logs and the run's lock are looked at.
const POLL: Duration = Duration::from_millis(200);
/// How often, while waiting for the next poll, Ctrl-C and a closed stdout are noticed.
const TICK: Duration = Duration::from_millis(50);
/// Bytes read from a log at a time: the one buffer, whatever a log's size.
const CHUNK: usize = 64 * 1024;

pub fn follow(cx: &Context, run: &str, step: Option<&str>) -> Result<Exit, Failure> {
    let (path, mut state) = records::find_run(run).map_err(Failure::usage)?;
    let cancel = Cancel::default();
    // Ctrl-C ends the following, not the run (which is another process): exit 130.
    let _ = cancel.install_signal_handlers();
    let mut alive = look(&path, &mut state);
    let logs = path.join("logs");
    crate::run::commands::refuse_unreadable_logs(&logs)?;
    let present = present_logs(&path);
    let mut follower = Follower::new(cx, &logs, step);
    // A step of a paused run that has not run yet (its gate's, or a later one): the run says
    // how it goes on, as when following the whole run.
    let paused = state.status == RunStatus::AwaitingConfirmation;
    if let Some(step) = step
        && !present.iter().any(|n| selected(n, step))
        && !((alive || paused) && known_step(&path, step))
    {
        return Err(no_log(&path, &state.run_id, step, &present));
    }
    let mut stdout = std::io::stdout().lock();
    let mut out = Headed::new(&mut stdout);
    let stop = || cancel.level() > 0;
    // The first pass prints what `log` prints: every log there is, with its header even when
    // it is empty (the run may have ended: then it is all there is).
    let first = present
        .into_iter()
        .filter(|n| step.is_none_or(|s| selected(n, s)))
        .try_for_each(|name| {
            let i = follower.add(name);
            follower.pump(i, &mut out, !alive, true, &stop)
        });
    let mut last_poll = Instant::now();
    let ended = first.and_then(|()| {
        while alive {
            match wait(&cancel, &mut last_poll) {
                Wait::Poll => {}
                Wait::Interrupted => return Ok(Some(Exit::Interrupted)),
                Wait::Closed => return Ok(Some(Exit::Success)),
            }
            // Looked at before the logs are read: whatever the run wrote before it ended is
            // then in them.
            alive = look(&path, &mut state);
            follower.discover();
            follower.pump_all(&mut out, !alive, &stop)?;
            out.flush()?;
        }
        Ok(None)
    });
    let ended = match ended {
        Ok(Some(exit)) => Ok(exit),
        Ok(None) if stop() => Ok(Exit::Interrupted),
        Ok(None) => out
            .end_line()
            .and_then(|()| out.write_all(cx.out.out.bold(&ending(&state, &path)).as_bytes()))
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            .map(|()| Exit::Success)
            .map_err(Error::Write),
        Err(e) => Err(e),
    };
    match ended {
        Ok(exit) => Ok(exit),
        // A closed pipe ends following quietly; other write errors are reported by `app::main`
        // as every command's are.
        Err(Error::Write(e)) => {
            crate::output::settle_stdout(Err(e));
            Ok(Exit::Success)
        }
        Err(Error::Read(path, e)) => Err(crate::run::commands::unreadable_log(&path, &e)),
    }
}

/// Whether the run is in progress, as `runs --prune` decides it (see `prune::guard`): its
/// command's lock is held on its behalf, or it is recorded `running` by a process that is
/// alive. Refreshes `state` from `state.json` when the lock is not held (while it is, the
/// state is not needed, and its JSON was most of a poll's work).
///
/// The lock is looked at *before* `state.json` is read: a run writes its final state, then its
/// process ends and the kernel drops the lock. Read the other way round, a run ending between
/// the two reads would look `running` with no lock held, as if its nixcmd had been killed.
fn look(path: &Path, state: &mut State) -> bool {
    // The lock file and the run id in it do not depend on what `state.json` says now.
    if records::lock_held_for(state).is_some() {
        return true;
    }
    if let Ok(now) = records::read_state(path) {
        *state = now;
    }
    state.status == RunStatus::Running && records::run_process_alive(state)
}

/// Whether the log `name` is followed for STEP `step`: the step's own log, or for a fan-out
/// step (which has none) its hosts' logs, `<step>@<host>`.
fn selected(name: &str, step: &str) -> bool {
    name == step || is_host_log_of(name, step)
}

/// Whether `step` names a block of the run that may still write a log: one of its steps
/// (`progress.json`), of its plan (rollback blocks, in the `run_started` event), or a host of
/// one of them (`<step>@<host>`).
fn known_step(path: &Path, step: &str) -> bool {
    let progress = records::read_progress(path).unwrap_or_default();
    let base = step.split_once('@').map_or(step, |(b, _)| b);
    [step, base].iter().any(|id| progress.get(id).is_some())
        || plan_ids(path).iter().any(|id| id == step || id == base)
}

/// The step ids of the plan announced by the run's first event (`run_started`), read from the
/// start of `events.ndjson` and no further than its first line (at most 1 MiB of it).
fn plan_ids(path: &Path) -> Vec<String> {
    use std::io::{BufRead, Read};
    let Ok(file) = crate::records_io::open_record(&path.join("events.ndjson")) else {
        return Vec::new();
    };
    let mut line = Vec::new();
    if std::io::BufReader::new(file.take(1 << 20))
        .read_until(b'\n', &mut line)
        .is_err()
    {
        return Vec::new();
    }
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else {
        return Vec::new();
    };
    event["plan"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["step_id"].as_str().map(str::to_string))
        .collect()
}

/// The last line: the run's status as `runs` shows it, and how to go on when it can.
pub(crate) fn ending(state: &State, path: &Path) -> String {
    let id = &state.run_id;
    if !path.join("state.json").is_file() {
        // Removed while it was followed (by hand: `runs --prune` leaves runs in progress).
        return format!("run {id}: its records were removed ({})", path.display());
    }
    // Only called once the run is not in progress: `running` then means its nixcmd is gone.
    let gone = state.status == RunStatus::Running;
    let status = status_label(state, gone);
    let next = if gone {
        // Its orphaned step may still write to the log, unwatched.
        let pids: Vec<i32> = crate::process::left_behind(id)
            .iter()
            .map(|p| p.pid)
            .collect();
        format!(" {}", crate::run::commands::killed_note(id, &pids))
    } else if state.status == RunStatus::AwaitingConfirmation {
        let approve = state
            .gate_to_approve()
            .map(|s| format!(" --approve {s}"))
            .unwrap_or_default();
        format!(" (`nixcmd resume {id}{approve}` continues it)")
    } else if matches!(
        state.status,
        RunStatus::Failed | RunStatus::RollbackIncomplete
    ) && crate::run::fleet::resumable(state)
    {
        format!(" (`nixcmd resume {id}` retries the failed hosts)")
    } else {
        String::new()
    };
    format!("run {id}: {status}{next}")
}

enum Wait {
    Poll,
    Interrupted,
    /// Nobody reads stdout any more (`nixcmd log -f RUN | head`).
    Closed,
}

/// Waits until [`POLL`] after the last poll, noticing Ctrl-C and a closed stdout meanwhile.
fn wait(cancel: &Cancel, last: &mut Instant) -> Wait {
    loop {
        if cancel.level() > 0 {
            return Wait::Interrupted;
        }
        if stdout_closed() {
            return Wait::Closed;
        }
        let left = POLL.saturating_sub(last.elapsed());
        if left.is_zero() {
            *last = Instant::now();
            return Wait::Poll;
        }
        std::thread::sleep(left.min(TICK));
    }
}

/// Whether stdout is a pipe whose reader has gone (or a terminal that hung up): a run that
/// prints nothing for an hour would otherwise keep `log -f | head` waiting that long.
fn stdout_closed() -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDOUT_FILENO,
        events: 0,
        revents: 0,
    };
    // SAFETY: one pollfd that we own, for the duration of the call; a timeout of 0 only looks.
    let ready = unsafe { libc::poll(&mut fd, 1, 0) };
    ready > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
}

/// What ends following early.
#[derive(Debug)]
enum Error {
    Read(PathBuf, std::io::Error),
    Write(std::io::Error),
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Write(e)
    }
}

/// The logs followed, in the order they are printed.
struct Follower<'a> {
    cx: &'a Context,
    logs: PathBuf,
    /// With STEP: the step's log followed (printed without a header, as `log RUN STEP` does),
    /// or the logs of its hosts for a fan-out step (each after its header).
    only: Option<&'a str>,
    tails: Vec<Tail>,
    known: HashSet<String>,
    /// The log whose output was printed last (its header is the last one printed).
    current: Option<usize>,
    buf: Vec<u8>,
}

/// One log: where it is, and how much of it was printed.
struct Tail {
    name: String,
    path: PathBuf,
    printed: u64,
}

impl<'a> Follower<'a> {
    fn new(cx: &'a Context, logs: &Path, only: Option<&'a str>) -> Self {
        Follower {
            cx,
            logs: logs.to_path_buf(),
            only,
            tails: Vec::new(),
            known: HashSet::new(),
            current: None,
            buf: vec![0; CHUNK],
        }
    }

    fn add(&mut self, name: String) -> usize {
        self.known.insert(name.clone());
        self.tails.push(Tail {
            path: self.logs.join(format!("{name}.log")),
            name,
            printed: 0,
        });
        self.tails.len() - 1
    }

    /// Adds the logs that appeared since the last look, in the order the run started them:
    /// those that appeared together in `progress.json` order, then by name (as `log` orders).
    fn discover(&mut self) {
        if let Some(step) = self.only
            && !self.known.contains(step)
            && self.logs.join(format!("{step}.log")).is_file()
        {
            self.add(step.to_string());
            return;
        }
        let only = self.only;
        let mut new: Vec<String> = crate::run::commands::log_names(&self.logs)
            .into_iter()
            .filter(|n| !self.known.contains(n) && only.is_none_or(|s| selected(n, s)))
            .collect();
        if new.is_empty() {
            return;
        }
        if new.len() > 1 {
            let progress = records::read_progress(self.logs.parent().unwrap_or(&self.logs))
                .unwrap_or_default();
            let rank = |n: &String| {
                progress
                    .steps
                    .iter()
                    .position(|s| s.id == *n)
                    .unwrap_or(usize::MAX)
            };
            new.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
        }
        for name in new {
            self.add(name);
        }
    }

    /// Prints what the logs got since the last poll: the log printed last first (no header
    /// between its lines), then the others in order, each after its header.
    fn pump_all(
        &mut self,
        out: &mut Headed<impl Write>,
        all: bool,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), Error> {
        let first = self.current;
        for (n, i) in first.into_iter().chain(0..self.tails.len()).enumerate() {
            if n > 0 && Some(i) == first || stop() {
                continue;
            }
            self.pump(i, out, all, false, stop)?;
        }
        Ok(())
    }

    /// Prints the new whole lines of log `i` (and, with `all`, a last line without its
    /// newline yet), after its header unless it is the log printed last; `header` prints the
    /// header even when there is nothing new.
    fn pump(
        &mut self,
        i: usize,
        out: &mut Headed<impl Write>,
        all: bool,
        header: bool,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), Error> {
        let tail = &mut self.tails[i];
        // With STEP, only the hosts' logs of a fan-out step have headers (there are several).
        if self.only != Some(tail.name.as_str()) && self.current != Some(i) {
            out.pending = Some(log_header(self.cx, &tail.name));
            if header {
                out.write_all(b"")?;
            }
        }
        let read = |path: &Path, e| Error::Read(path.to_path_buf(), e);
        let len = match std::fs::metadata(&tail.path) {
            // A FIFO in its place would never end a read: said, not waited on.
            Ok(meta) if !meta.is_file() => {
                return Err(read(
                    &tail.path,
                    crate::records_io::not_a_file(meta.file_type()),
                ));
            }
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(read(&tail.path, e)),
        };
        if len > tail.printed {
            let file =
                crate::records_io::open_record(&tail.path).map_err(|e| read(&tail.path, e))?;
            let from = tail.printed;
            tail.printed = copy_lines(&file, from, len, all, &mut self.buf, out, stop).map_err(
                |e| match e {
                    Error::Read(_, e) => read(&tail.path, e),
                    write => write,
                },
            )?;
        }
        if out.pending.take().is_none() {
            self.current = Some(i);
        }
        Ok(())
    }
}

/// Copies `file` from offset `from` to `len` to `out`, but only up to its last newline unless
/// `all` (a step's last line may be half-written), and returns how far it printed. Reads
/// through `buf`; a line longer than `buf` is read again from the file when its newline comes,
/// so that nothing but `buf` is held, however long the line.
fn copy_lines(
    file: &std::fs::File,
    from: u64,
    len: u64,
    all: bool,
    buf: &mut [u8],
    out: &mut impl Write,
    stop: &dyn Fn() -> bool,
) -> Result<u64, Error> {
    let read = |e: std::io::Error| Error::Read(PathBuf::new(), e);
    let mut pos = from;
    let mut printed = from;
    while pos < len && !stop() {
        let want = buf
            .len()
            .min(usize::try_from(len - pos).unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], pos).map_err(read)?;
        if n == 0 {
            break;
        }
        if let Some(end) = memchr::memrchr(b'\n', &buf[..n]) {
            if printed < pos {
                // A line begun in an earlier read: its start, from the file again.
                copy_range(file, printed, pos, out)?;
            }
            out.write_all(&buf[..=end])?;
            printed = pos + end as u64 + 1;
        }
        pos += n as u64;
    }
    if all && printed < pos {
        copy_range(file, printed, pos, out)?;
        printed = pos;
    }
    Ok(printed)
}

/// Copies bytes `from..to` of `file` to `out` (a few KiB at a time).
fn copy_range(file: &std::fs::File, from: u64, to: u64, out: &mut impl Write) -> Result<(), Error> {
    let mut buf = [0u8; 8192];
    let mut pos = from;
    while pos < to {
        let want = buf
            .len()
            .min(usize::try_from(to - pos).unwrap_or(usize::MAX));
        let n = file
            .read_at(&mut buf[..want], pos)
            .map_err(|e| Error::Read(PathBuf::new(), e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    Ok(())
}

/// stdout, with a header that is written only if something follows it, and a record of
/// whether the output stands at the start of a line.
struct Headed<W: Write> {
    out: W,
    pending: Option<String>,
    line_start: bool,
}

impl<W: Write> Headed<W> {
    fn new(out: W) -> Self {
        Headed {
            out,
            pending: None,
            line_start: true,
        }
    }

    /// Ends a last line printed without its newline (a log cut short), so that what follows
    /// starts a line of its own.
    fn end_line(&mut self) -> std::io::Result<()> {
        if self.line_start {
            return Ok(());
        }
        self.write_all(b"\n")
    }
}

impl<W: Write> Write for Headed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if let Some(header) = self.pending.take() {
            if !self.line_start {
                self.out.write_all(b"\n")?;
            }
            self.out.write_all(header.as_bytes())?;
            self.line_start = true;
        }
        if let Some(&last) = buf.last() {
            self.out.write_all(buf)?;
            self.line_start = last == b'\n';
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `copy_lines` prints of `file` from `from`, and how far it got.
    fn copied(file: &std::fs::File, from: u64, all: bool, chunk: usize) -> (String, u64) {
        let len = file.metadata().unwrap().len();
        let mut buf = vec![0; chunk];
        let mut out = Vec::new();
        let printed = copy_lines(file, from, len, all, &mut buf, &mut out, &|| false).unwrap();
        (String::from_utf8(out).unwrap(), printed)
    }

    #[test]
    fn only_whole_lines_are_printed_until_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step.log");
        std::fs::write(&path, "ab\ncdefghij\nkl").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        for chunk in [1, 2, 3, 4, 5, 64] {
            assert_eq!(
                copied(&file, 0, false, chunk),
                ("ab\ncdefghij\n".into(), 12),
                "chunk {chunk}"
            );
            assert_eq!(copied(&file, 12, false, chunk), (String::new(), 12));
            assert_eq!(copied(&file, 12, true, chunk), ("kl".into(), 14));
            assert_eq!(
                copied(&file, 0, true, chunk),
                ("ab\ncdefghij\nkl".into(), 14)
            );
        }
        // Nothing new, and a log that shrank (never written so): nothing printed.
        assert_eq!(copied(&file, 14, true, 4), (String::new(), 14));
    }

    /// A log written a few bytes at a time, in every way its bytes can be split, and read
    /// after each write through buffers smaller and larger than its lines: every line comes
    /// out once, whole, in order, and the torn rest only at the end.
    #[test]
    fn a_log_read_while_it_grows_comes_out_whole_and_once() {
        use std::io::Write as _;
        let text = "── s attempt 1/1 ──\none\n\nthree is a longer line\nfour\nfive, torn";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step.log");
        for step in 1..=7 {
            for chunk in [1, 3, 8, 64] {
                let mut writer = std::fs::File::create(&path).unwrap();
                let reader = std::fs::File::open(&path).unwrap();
                let (mut seen, mut printed) = (String::new(), 0);
                for piece in text.as_bytes().chunks(step) {
                    writer.write_all(piece).unwrap();
                    let (out, p) = copied(&reader, printed, false, chunk);
                    assert!(out.is_empty() || out.ends_with('\n'), "{out:?}");
                    seen.push_str(&out);
                    printed = p;
                    let written = std::fs::metadata(&path).unwrap().len() as usize;
                    let whole = text.as_bytes()[..written]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |i| i + 1);
                    assert_eq!(seen, text[..whole], "step {step}, chunk {chunk}");
                }
                let (out, _) = copied(&reader, printed, true, chunk);
                seen.push_str(&out);
                assert_eq!(seen, text, "step {step}, chunk {chunk}");
            }
        }
    }

    #[test]
    fn a_header_is_written_only_before_output_and_on_a_line_of_its_own() {
        let mut out = Headed::new(Vec::new());
        out.pending = Some("==> a <==\n".into());
        out.write_all(b"").unwrap();
        out.write_all(b"one\ntorn").unwrap();
        // A header with nothing after it is dropped by the caller, never written.
        out.pending = Some("==> b <==\n".into());
        out.pending = Some("==> c <==\n".into());
        out.write_all(b"three\n").unwrap();
        out.end_line().unwrap();
        out.write_all(b"four").unwrap();
        out.end_line().unwrap();
        out.end_line().unwrap();
        assert_eq!(
            String::from_utf8(out.out).unwrap(),
            "==> a <==\none\ntorn\n==> c <==\nthree\nfour\n"
        );
    }

    fn state(status: &str, extra: serde_json::Value) -> State {
        let mut v = serde_json::json!({
            "version": 1, "run_id": "deploy-1", "command": "deploy", "command_hash": "h",
            "command_source": "builtin", "args": [], "dir": "/", "dry_run": false,
            "status": status, "started": "t", "updated": "t", "total_steps": 2, "errors": [],
            "pid": 1, "compensations": [], "approvals": []
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        serde_json::from_value(v).unwrap()
    }

    fn ending_of(state: &State) -> String {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), "{}").unwrap();
        ending(state, dir.path())
    }

    #[test]
    fn the_last_line_says_how_the_run_ended_and_how_to_go_on() {
        let none = serde_json::json!({});
        assert_eq!(
            ending_of(&state("succeeded", none.clone())),
            "run deploy-1: succeeded"
        );
        assert_eq!(
            ending_of(&state("succeeded", serde_json::json!({"dry_run": true}))),
            "run deploy-1: succeeded (dry run)"
        );
        assert_eq!(
            ending_of(&state("running", none.clone())),
            "run deploy-1: stopped (nixcmd was killed: `nixcmd resume deploy-1`)"
        );
        assert_eq!(
            ending_of(&state(
                "awaiting_confirmation",
                serde_json::json!({"current_step": "push"})
            )),
            "run deploy-1: awaiting confirmation (`nixcmd resume deploy-1 --approve push` continues it)"
        );
        assert_eq!(
            ending_of(&state("failed", none.clone())),
            "run deploy-1: failed"
        );
        let failed_host = serde_json::json!({"fleet": {"failed": [
            {"host": "web-1", "step": "push", "reason": "exit 1"}
        ]}});
        assert_eq!(
            ending_of(&state("failed", failed_host)),
            "run deploy-1: failed (`nixcmd resume deploy-1` retries the failed hosts)"
        );
        assert_eq!(
            ending_of(&state("interrupted", none.clone())),
            "run deploy-1: interrupted"
        );
        let gone = tempfile::tempdir().unwrap();
        assert_eq!(
            ending(&state("running", none), gone.path()),
            format!(
                "run deploy-1: its records were removed ({})",
                gone.path().display()
            )
        );
    }

    #[test]
    fn a_step_selects_its_own_log_or_its_hosts_logs() {
        use super::selected;
        assert!(selected("deploy", "deploy"));
        assert!(selected("deploy@web-1", "deploy"));
        assert!(selected("deploy@web-1", "deploy@web-1"));
        assert!(!selected("deploy@web-2", "deploy@web-1"));
        assert!(!selected("deploy-db", "deploy"));
        assert!(!selected("deployment@web-1", "deploy"));
        assert!(!selected("build", "deploy"));
    }

    #[test]
    fn the_plan_is_read_from_the_first_event_only() {
        let dir = tempfile::tempdir().unwrap();
        assert!(plan_ids(dir.path()).is_empty(), "no events");
        std::fs::write(
            dir.path().join("events.ndjson"),
            "{\"type\":\"run_started\",\"plan\":[{\"step_id\":\"a\"},{\"step_id\":\"undo\"}]}\n\
             {\"type\":\"run_started\",\"plan\":[{\"step_id\":\"later\"}]}\n",
        )
        .unwrap();
        assert_eq!(plan_ids(dir.path()), ["a", "undo"]);
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        std::fs::write(
            dir.path().join("progress.json"),
            "{\"steps\":[{\"id\":\"push\",\"phase\":\"step\",\"status\":\"pending\",\"attempts\":0}]}",
        )
        .unwrap();
        for (step, known) in [
            ("push", true),
            ("push@web-1", true),
            ("undo", true),
            ("undo@web-1", true),
            ("later", false),
            ("pus", false),
            ("@push", false),
        ] {
            assert_eq!(known_step(dir.path(), step), known, "{step}");
        }
    }
}
