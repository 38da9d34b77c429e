//! Concurrent jobs: one step on one host (fan-out), or one step of a `group=` (parallel steps
//! on this machine). Each job runs its attempts in a worker thread — locally through the
//! process-group runner, or over ssh through [`crate::run::remote`] — and reports back over a
//! channel; the scheduler, on the engine's thread, starts jobs `parallel` at a time, canaries
//! first, and stops starting new ones once critical failures pass the threshold. Jobs emit
//! nothing themselves: the caller turns reports into events and records.

use crate::event::StepStatus;
use crate::process::{self, Cancel, Ended, GroupSpec, Observed, Stream};
use crate::run::remote::{self, RemoteEnded};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where a job runs.
#[derive(Debug, Clone)]
pub enum Runner {
    /// `bash … SCRIPT` on this machine, in its own process group.
    Local,
    /// `ssh ARGS…` with the wrapper on stdin; `secrets`: the names listed in
    /// `nixcmd.secrets`, whose exports on the host are reported as secrets too.
    Ssh {
        args: Vec<String>,
        secrets: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Job {
    pub step_id: String,
    pub host: Option<String>,
    pub runner: Runner,
    pub code: String,
    /// The script file for local runs.
    pub script_path: PathBuf,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
    pub grace: Duration,
    pub attempts: u32,
    pub backoff: Duration,
    pub token: String,
    pub run_id: String,
    /// A failure counts toward the threshold (false for `on-fail=continue`).
    pub critical: bool,
}

/// How one job ended.
#[derive(Debug, Clone)]
pub struct JobResult {
    pub status: StepStatus,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub attempts: u32,
    pub duration: Duration,
}

/// What a worker tells the scheduler; `usize` is the job's index.
#[derive(Debug)]
pub enum Report {
    /// An attempt is about to start (ssh is about to connect, for a host).
    Started(usize, u32),
    /// The attempt began where it runs: at once on this machine, on a host once the wrapper
    /// said `started` (ssh connected). A host ssh never reached never began the step: its
    /// compensation is not due there.
    Began(usize),
    /// The lines of one read of the job's output: the caller writes them in one go (a report
    /// per line made a write per line to the log and to `events.ndjson`).
    Lines(usize, Lines),
    /// The newest segment of a progress line of the job's output (see
    /// [`Observed::Progress`]).
    Progress(usize, Stream, String),
    /// A problem the remote wrapper found (see [`Observed::Warning`]).
    Warning(usize, String),
    /// A secret exported on the host (see [`remote::Seen::Secret`]): name, value.
    Secret(usize, String, String),
    /// A request to stop is held back while a rollback or `always` block runs (see
    /// [`Observed::Held`]).
    Held(usize),
    /// An attempt failed and another follows: why.
    Retrying(usize, u32, String),
    Done(usize, JobResult),
}

/// Reports the scheduler may be behind by before workers wait.
const REPORTS_IN_FLIGHT: usize = 32;

/// Output lines of a job, in one buffer: one allocation per read instead of one per line, and
/// a report holds little more than the text itself.
#[derive(Debug, Default)]
pub struct Lines {
    text: String,
    /// Each line's stream, where it ends in `text`, and whether it is a piece of a line
    /// cut for length (see [`Observed::Cut`]).
    ends: Vec<(Stream, usize, bool)>,
}

impl Lines {
    pub fn push(&mut self, stream: Stream, line: &str) {
        self.text.push_str(line);
        self.ends.push((stream, self.text.len(), false));
    }

    /// A piece of an over-long line: the line goes on in the next one of its stream.
    pub fn push_cut(&mut self, stream: Stream, piece: &str) {
        self.text.push_str(piece);
        self.ends.push((stream, self.text.len(), true));
    }

    /// [`Lines::iter`], each with whether it is a piece of a line cut for length.
    pub fn pieces(&self) -> impl Iterator<Item = (Stream, &str, bool)> {
        let mut start = 0;
        self.ends.iter().map(move |&(stream, end, cut)| {
            let line = &self.text[start..end];
            start = end;
            (stream, line, cut)
        })
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of text, newlines not counted.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Stream, &str)> {
        self.pieces().map(|(stream, line, _)| (stream, line))
    }
}

/// Sends what `lines` gathered, if anything, leaving it empty (sized for a read like the last).
fn send_lines(tx: &mpsc::SyncSender<Report>, index: usize, lines: &mut Lines) {
    if lines.is_empty() {
        return;
    }
    let next = Lines {
        text: String::with_capacity(lines.text.len()),
        ends: Vec::with_capacity(lines.ends.len()),
    };
    let _ = tx.send(Report::Lines(index, std::mem::replace(lines, next)));
}

/// When to stop starting jobs.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub parallel: usize,
    /// The first `canary` jobs run (and must all succeed) before any other starts.
    pub canary: usize,
    /// No new job starts once more than this many critical failures happened.
    pub max_fail: usize,
}

pub struct Outcome {
    /// Per job; `None` for jobs that never started.
    pub results: Vec<Option<JobResult>>,
    pub failures: usize,
    pub canary_failed: bool,
}

/// Runs the jobs under the policy, calling `on_report` on this thread for every report.
pub fn run(
    jobs: Vec<Job>,
    policy: Policy,
    cancel: &Cancel,
    on_report: &mut dyn FnMut(&Job, &Report),
) -> Outcome {
    let total = jobs.len();
    let jobs: Vec<Arc<Job>> = jobs.into_iter().map(Arc::new).collect();
    let at_start = cancel.level();
    let canary = policy.canary.min(total);
    let parallel = policy.parallel.max(1);
    // Bounded: workers that read faster than this thread records wait (and so do their
    // steps, on a full pipe) instead of piling their output up in memory.
    let (tx, rx) = mpsc::sync_channel::<Report>(REPORTS_IN_FLIGHT);
    let mut results: Vec<Option<JobResult>> = vec![None; total];
    let (mut next, mut running, mut failures, mut canary_done) = (0, 0, 0, 0);
    let mut canary_failed = false;
    loop {
        let may_start = cancel.level() == at_start && !canary_failed && failures <= policy.max_fail;
        while may_start
            && running < parallel
            && next < total
            && (next < canary || canary_done == canary)
        {
            let job = jobs[next].clone();
            let (tx, cancel, index) = (tx.clone(), cancel.clone(), next);
            std::thread::spawn(move || {
                let result = work(&job, index, &cancel, &tx);
                let _ = tx.send(Report::Done(index, result));
            });
            next += 1;
            running += 1;
        }
        if running == 0 {
            break;
        }
        let Ok(report) = rx.recv() else { break };
        let index = match &report {
            Report::Started(i, _)
            | Report::Began(i)
            | Report::Lines(i, _)
            | Report::Progress(i, _, _)
            | Report::Warning(i, _)
            | Report::Secret(i, _, _)
            | Report::Held(i)
            | Report::Retrying(i, _, _)
            | Report::Done(i, _) => *i,
        };
        if let Report::Done(i, r) = &report {
            running -= 1;
            let failed = r.status.is_failure() && jobs[*i].critical;
            if failed {
                failures += 1;
            }
            if *i < canary {
                canary_done += 1;
                canary_failed |= failed;
            }
            results[*i] = Some(r.clone());
        }
        on_report(&jobs[index], &report);
    }
    Outcome {
        results,
        failures,
        canary_failed,
    }
}

/// One job's attempts, in a worker thread.
fn work(job: &Job, index: usize, cancel: &Cancel, tx: &mpsc::SyncSender<Report>) -> JobResult {
    let started = Instant::now();
    let at_start = cancel.level();
    let mut attempt = 0;
    let mut last = Attempt::Cancelled;
    while attempt < job.attempts {
        attempt += 1;
        if attempt > 1 {
            let wait = job
                .backoff
                .saturating_mul(1 << (attempt - 2).min(16))
                .min(Duration::from_secs(60));
            let until = Instant::now() + wait;
            while Instant::now() < until && cancel.level() == at_start {
                std::thread::sleep(Duration::from_millis(20));
            }
            if cancel.level() != at_start {
                last = Attempt::Cancelled;
                break;
            }
        }
        let _ = tx.send(Report::Started(index, attempt));
        let token = format!("{}/{attempt}", job.token);
        // Sent once per read; what an attempt gathered after its last read (none is
        // expected) goes out before the attempt's end is reported.
        let mut lines = Lines::default();
        let mut observe = |seen: Observed| match seen {
            Observed::Line(stream, line) => lines.push(stream, line),
            Observed::Cut(stream, piece) => lines.push_cut(stream, piece),
            Observed::ReadDone => send_lines(tx, index, &mut lines),
            Observed::Progress(stream, text) => {
                // After the lines of its read, which came before it.
                send_lines(tx, index, &mut lines);
                let _ = tx.send(Report::Progress(index, stream, text.to_string()));
            }
            Observed::Warning(problem) => {
                send_lines(tx, index, &mut lines);
                let _ = tx.send(Report::Warning(index, problem.to_string()));
            }
            Observed::Held => {
                let _ = tx.send(Report::Held(index));
            }
            Observed::Spawned => {}
        };
        last = match &job.runner {
            Runner::Local => {
                let args = [
                    "--noprofile".to_string(),
                    "--norc".to_string(),
                    "-Eeuo".to_string(),
                    "pipefail".to_string(),
                    job.script_path.display().to_string(),
                ];
                let spec = GroupSpec {
                    program: "bash",
                    args: &args,
                    cwd: &job.cwd,
                    env: &job.env,
                    stdin: None,
                    timeout: job.timeout,
                    grace: job.grace,
                    token: &token,
                };
                let _ = tx.send(Report::Began(index));
                match process::run_group_observed(&spec, cancel, &mut observe) {
                    Ok(Ended::Exited(c)) => Attempt::Exited(c),
                    Ok(Ended::Killed(sig)) => Attempt::Killed(sig),
                    Ok(Ended::TimedOut) => Attempt::TimedOut,
                    Ok(Ended::Cancelled(_)) => Attempt::Cancelled,
                    Err(e) => Attempt::Broken(format!("cannot start bash: {e}")),
                }
            }
            Runner::Ssh { args, secrets } => {
                // A job on a host always names it (`fanout.rs`).
                let state_key = remote::state_key(&job.run_id, job.host.as_deref().unwrap_or("-"));
                let key = remote::new_key();
                let wrapper = remote::wrapper(&remote::Wrapper {
                    script: &job.code,
                    env: &job.env,
                    token: &token,
                    key: &key,
                    secrets,
                    state_key: &state_key,
                    timeout: job.timeout,
                    grace: job.grace,
                });
                let mut seen = |seen: remote::Seen| match seen {
                    remote::Seen::Out(o) => observe(o),
                    remote::Seen::Began => {
                        let _ = tx.send(Report::Began(index));
                    }
                    remote::Seen::Secret(name, value) => {
                        // After the lines before it: they were printed before it was known.
                        observe(Observed::ReadDone);
                        let _ = tx.send(Report::Secret(index, name.into(), value.into()));
                    }
                };
                let ended = remote::run_ssh(
                    args,
                    wrapper,
                    &key,
                    job.timeout,
                    job.grace,
                    cancel,
                    &mut seen,
                );
                match ended {
                    Ok(RemoteEnded::Exited(c)) => Attempt::Exited(c),
                    Ok(RemoteEnded::Killed(sig)) => Attempt::Killed(sig),
                    Ok(RemoteEnded::TimedOut) => Attempt::TimedOut,
                    Ok(RemoteEnded::Cancelled(_)) => Attempt::Cancelled,
                    Ok(RemoteEnded::Unreachable(d)) => {
                        Attempt::Broken(format!("cannot reach the host: {d}"))
                    }
                    Ok(RemoteEnded::Dropped(d)) => Attempt::Broken(format!(
                        "the connection to the host dropped while the step ran: {d}"
                    )),
                    Err(e) => Attempt::Broken(format!("cannot start ssh: {e}")),
                }
            }
        };
        send_lines(tx, index, &mut lines);
        match &last {
            Attempt::Exited(0) | Attempt::Cancelled => break,
            other if attempt < job.attempts => {
                let _ = tx.send(Report::Retrying(
                    index,
                    attempt,
                    other.describe(job.timeout),
                ));
            }
            _ => {}
        }
    }
    let (status, exit_code) = match &last {
        Attempt::Exited(0) => (StepStatus::Succeeded, Some(0)),
        Attempt::Exited(c) => (StepStatus::Failed, Some(*c)),
        Attempt::Killed(sig) => (StepStatus::Failed, Ended::Killed(*sig).code()),
        Attempt::TimedOut => (StepStatus::TimedOut, None),
        Attempt::Cancelled => (StepStatus::Interrupted, None),
        Attempt::Broken(_) => (StepStatus::Failed, None),
    };
    let reason = (status != StepStatus::Succeeded).then(|| last.describe(job.timeout));
    JobResult {
        status,
        exit_code,
        reason,
        attempts: attempt,
        duration: started.elapsed(),
    }
}

enum Attempt {
    Exited(i32),
    Killed(i32),
    TimedOut,
    Cancelled,
    /// ssh could not connect, the connection dropped, or the program would not start.
    Broken(String),
}

impl Attempt {
    fn describe(&self, timeout: Duration) -> String {
        match self {
            Attempt::Exited(c) => process::exit_description(Ended::Exited(*c)).unwrap_or_default(),
            Attempt::Killed(sig) => {
                process::exit_description(Ended::Killed(*sig)).unwrap_or_default()
            }
            Attempt::TimedOut => format!("timed out after {}", crate::duration::display(timeout)),
            Attempt::Cancelled => "interrupted".into(),
            Attempt::Broken(why) => why.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_back_as_pushed() {
        let mut lines = Lines::default();
        assert!(lines.is_empty());
        lines.push(Stream::Stdout, "one");
        lines.push(Stream::Stderr, "");
        lines.push(Stream::Stdout, "three é");
        assert_eq!(lines.len(), 3);
        assert_eq!(lines.text_len(), "onethree é".len());
        let back: Vec<(Stream, &str)> = lines.iter().collect();
        assert_eq!(
            back,
            [
                (Stream::Stdout, "one"),
                (Stream::Stderr, ""),
                (Stream::Stdout, "three é")
            ]
        );
    }

    fn local_job(dir: &std::path::Path, script: &str) -> Job {
        let path = dir.join("step.sh");
        std::fs::write(&path, script).unwrap();
        Job {
            step_id: "s".into(),
            host: None,
            runner: Runner::Local,
            code: script.into(),
            script_path: path,
            cwd: dir.to_path_buf(),
            env: Vec::new(),
            timeout: Duration::from_secs(30),
            grace: Duration::from_secs(1),
            attempts: 2,
            backoff: Duration::from_millis(1),
            // A token of its own: a job whose pipes outlive its shell sweeps every process
            // with its token, and the tests of this module run at the same time.
            token: format!("jobs-unit-test-{}", dir.display()),
            run_id: "r".into(),
            critical: true,
        }
    }

    #[test]
    fn a_job_reports_its_output_a_read_at_a_time_and_all_of_it_before_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        // Two attempts: the first fails; the last line of each has no newline.
        let job = local_job(
            dir.path(),
            "seq 1 50000\necho oops >&2\nprintf 'last'\n\
             [ -e tried ] || { touch tried; exit 4; }\n",
        );
        let policy = Policy {
            parallel: 1,
            canary: 0,
            max_fail: 0,
        };
        let mut seen: Vec<String> = Vec::new();
        let mut reports = 0;
        let mut done = false;
        let outcome = run(vec![job], policy, &Cancel::default(), &mut |_, report| {
            assert!(!done, "nothing after Done");
            match report {
                Report::Lines(0, lines) => {
                    assert!(!lines.is_empty(), "no empty reports");
                    reports += 1;
                    seen.extend(lines.iter().map(|(s, l)| format!("{}:{l}", s.name())));
                }
                Report::Started(0, n) => seen.push(format!("started {n}")),
                Report::Began(0) => {}
                Report::Retrying(0, n, why) => seen.push(format!("retrying {n}: {why}")),
                Report::Done(0, _) => done = true,
                other => panic!("{other:?}"),
            }
        });
        let result = outcome.results[0].clone().expect("ran");
        assert_eq!(result.status, StepStatus::Succeeded);
        assert_eq!(result.attempts, 2);
        let attempt = |n: u32| {
            let mut v = vec![format!("started {n}")];
            v.extend((1..=50000).map(|i| format!("stdout:{i}")));
            v.push("stdout:last".into());
            v
        };
        // Each stream in order; stderr's line may fall anywhere among stdout's.
        let (errs, rest): (Vec<String>, Vec<String>) =
            seen.into_iter().partition(|l| l == "stderr:oops");
        assert_eq!(errs.len(), 2);
        let mut expected = attempt(1);
        expected.push("retrying 1: exited with status 4".into());
        expected.extend(attempt(2));
        assert_eq!(rest, expected);
        assert!(
            reports < 1000,
            "{reports} reports for 100 000 lines: not one per read"
        );
    }
    #[test]
    fn a_cancelled_job_reports_whole_lines_in_order_up_to_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let job = local_job(dir.path(), "seq 1 100000000\n");
        let policy = Policy {
            parallel: 1,
            canary: 0,
            max_fail: 0,
        };
        let cancel = Cancel::default();
        let mut next = 1u64;
        // Stopped in the middle of a line, the step leaves its start: it comes last.
        let mut cut = false;
        let outcome = run(vec![job], policy, &cancel, &mut |_, report| {
            if let Report::Lines(_, lines) = report {
                for (stream, line) in lines.iter() {
                    assert!(!cut, "nothing after a cut line");
                    assert_eq!(stream, Stream::Stdout);
                    let expected = next.to_string();
                    if line != expected {
                        assert!(expected.starts_with(line), "{line} for {expected}");
                        cut = true;
                    }
                    next += 1;
                }
                if next > 10_000 && cancel.level() == 0 {
                    cancel.request();
                }
            }
        });
        let result = outcome.results[0].clone().expect("ran");
        assert_eq!(result.status, StepStatus::Interrupted);
        assert_eq!(result.attempts, 1, "no retry once cancelled");
        assert!(next > 10_000);
    }
}
