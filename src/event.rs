//! The run event: the one contract between the executor and everything that shows a run —
//! the terminal renderer, the `--format json` stream, the run folder's `events.ndjson` and the
//! MCP server. Every event carries `type`, `seq`, `ts` and `run_id` (DESIGN.md §6).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub seq: u64,
    /// RFC 3339 UTC timestamp.
    pub ts: String,
    pub run_id: String,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// How a step (or one host's part of it) ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    Succeeded,
    /// Failed with `on-fail=continue`: a warning, the run went on.
    Warning,
    Failed,
    TimedOut,
    Interrupted,
    /// Not executed: dry run, `--skip`/`--only`/`--from`, or done in an earlier session.
    Skipped,
    /// Declined at a confirmation.
    Declined,
    /// Waiting for a confirmation.
    AwaitingConfirmation,
    /// Cannot be run as written (a nested command that does not exist).
    NotRunnable,
}

impl StepStatus {
    /// Done for good: resume does not run it again.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded | StepStatus::Warning | StepStatus::Skipped
        )
    }

    pub fn is_failure(self) -> bool {
        matches!(
            self,
            StepStatus::Failed
                | StepStatus::TimedOut
                | StepStatus::Interrupted
                | StepStatus::NotRunnable
        )
    }

    pub fn label(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Succeeded => "ok",
            StepStatus::Warning => "warning",
            StepStatus::Failed => "failed",
            StepStatus::TimedOut => "timed out",
            StepStatus::Interrupted => "interrupted",
            StepStatus::Skipped => "skipped",
            StepStatus::Declined => "declined",
            StepStatus::AwaitingConfirmation => "awaiting confirmation",
            StepStatus::NotRunnable => "not runnable",
        }
    }
}

/// How a run ended (or where it stands).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    AwaitingConfirmation,
    Declined,
    PrerequisitesFailed,
    RollbackIncomplete,
    Interrupted,
}

impl RunStatus {
    pub fn exit(self) -> crate::exit::Exit {
        use crate::exit::Exit;
        match self {
            RunStatus::Running | RunStatus::Succeeded => Exit::Success,
            RunStatus::Failed => Exit::Failed,
            RunStatus::AwaitingConfirmation | RunStatus::Declined => Exit::NeedsConfirmation,
            RunStatus::PrerequisitesFailed => Exit::Prerequisites,
            RunStatus::RollbackIncomplete => Exit::RollbackIncomplete,
            RunStatus::Interrupted => Exit::Interrupted,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::AwaitingConfirmation => "awaiting confirmation",
            RunStatus::Declined => "declined",
            RunStatus::PrerequisitesFailed => "prerequisites not met",
            RunStatus::RollbackIncomplete => "rollback incomplete",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// One block of the plan, as announced at the start of a run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanItem {
    pub step_id: String,
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Gates in words (`confirm "…"`, `readonly`, `retries 2` …).
    pub gates: Vec<String>,
    pub timeout_ms: u64,
    /// Will it execute in this run? (false: dry run of a non-readonly block, skipped, done.)
    pub will_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `when=NAME`: runs only if NAME is true as it would start (decided then, not here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// `unless=NAME`: runs only if NAME is not true as it would start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    RunStarted {
        command: String,
        args: Vec<String>,
        dry_run: bool,
        resumed: bool,
        total_steps: usize,
        plan: Vec<PlanItem>,
        manual_checks: Vec<String>,
        run_dir: String,
    },
    StepStarted {
        step_id: String,
        phase: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        attempt: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        eta_ms: Option<u64>,
    },
    Output {
        step_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        stream: String,
        line: String,
    },
    Gate {
        step_id: String,
        gate_id: String,
        message: String,
        code: String,
        /// The command that continues the run once the gate is approved.
        resume: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    StepFinished {
        step_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        host: Option<String>,
        status: StepStatus,
        #[serde(skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        duration_ms: u64,
        attempts: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Warning {
        #[serde(skip_serializing_if = "Option::is_none")]
        step_id: Option<String>,
        message: String,
    },
    RollbackStarted {
        reason: String,
        blocks: Vec<String>,
    },
    RunFinished {
        status: RunStatus,
        exit_code: i32,
        duration_ms: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        failed_step: Option<String>,
        warnings: Vec<String>,
        manual_checks: Vec<String>,
        /// Rollback blocks that failed: what an operator must do by hand.
        left_to_do: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        troubleshooting: Option<Troubleshooting>,
        /// Last lines of the failed step's log.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        log_tail: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
        run_dir: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Troubleshooting {
    pub title: String,
    pub text: String,
}

/// Something that consumes events as the run emits them. `line` is the event serialized
/// (and redacted) as one JSON line without the newline.
pub trait Sink: Send {
    fn event(&mut self, event: &Event, line: &str);

    /// Writes out whatever [`Sink::event`] gathered. The emitter calls it after every event,
    /// except between the output lines of one read of a step's pipe, where it calls it once
    /// at the end: a step printing a million lines is then not a million writes to stdout.
    fn flush(&mut self) {}

    /// The newest segment of a line `step_id` (on `host`) is still printing, redacted: a
    /// progress bar redrawn with `\r` (at each read that redraws it), or the start of a line
    /// the step has left unfinished for a moment (a prompt, `Building system... ` before
    /// minutes of work). Not an event: nothing records it, and the line comes whole as an
    /// `output` event when it ends. For live displays.
    fn progress(&mut self, _step_id: &str, _host: Option<&str>, _text: &str) {}
}

/// The local wall-clock time in a strftime(3) `format`, through the C library. jiff's
/// `Zoned::now()` finds the system time zone by name in the zoneinfo database, which it first
/// indexes by walking the whole directory: ~1,800 files and 15 % of the instructions of a
/// 50-step run, for a run id and the plain renderer's `[HH:MM:SS]`. The C library reads
/// `TZ` or `/etc/localtime` once, as jiff would have.
pub fn local_time(format: &std::ffi::CStr) -> String {
    // SAFETY: `time` with a null pointer only returns the time; `localtime_r` and `strftime`
    // write into the buffers passed, whose sizes are given, and `tm` is plain data.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return String::new();
        }
        let mut buf = [0u8; 64];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// RFC 3339 UTC timestamp with milliseconds, as used in events and records.
pub fn now() -> String {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    match since_epoch {
        Ok(d) => utc_millis(d.as_secs(), d.subsec_nanos()),
        // A clock before 1970: not worth a formatter of its own.
        Err(_) => jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string(),
    }
}

/// `secs.nanos` after the Unix epoch as `%Y-%m-%dT%H:%M:%S%.3fZ` (milliseconds truncated),
/// the text jiff's strftime gives. Written by hand: jiff's formatter was ~3,000 instructions a
/// call, and a run takes four timestamps per step (events, records, the log header).
fn utc_millis(secs: u64, nanos: u32) -> String {
    // Days to a civil date (proleptic Gregorian), H. Hinnant's `civil_from_days`, shifted so
    // that the 400-year era starts on 0000-03-01. Unsigned: the time is after 1970.
    let days = secs / 86_400;
    let of_day = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    if year > 9_999 {
        return jiff::Timestamp::new(secs as i64, nanos as i32)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
            .unwrap_or_default();
    }
    let mut out = [0u8; 24];
    let mut put = |at: usize, value: u64, width: usize| {
        let mut v = value;
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, of_day / 3_600, 2);
    put(14, of_day / 60 % 60, 2);
    put(17, of_day % 60, 2);
    put(20, u64::from(nanos / 1_000_000), 3);
    out[4] = b'-';
    out[7] = b'-';
    out[10] = b'T';
    out[13] = b':';
    out[16] = b':';
    out[19] = b'.';
    out[23] = b'Z';
    // ASCII digits and separators only.
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events.ndjson` is read back (the MCP server's view of runs it did not start): every
    /// field left out when empty must come back as empty.
    #[test]
    fn a_finished_run_event_reads_back_as_written() {
        let event = Event {
            seq: 7,
            ts: "2026-11-28T17:58:14.029Z".into(),
            run_id: "quick-1".into(),
            kind: EventKind::RunFinished {
                status: RunStatus::Succeeded,
                exit_code: 0,
                duration_ms: 42,
                failed_step: None,
                warnings: Vec::new(),
                manual_checks: Vec::new(),
                left_to_do: Vec::new(),
                troubleshooting: None,
                log_tail: Vec::new(),
                resume: None,
                run_dir: "/runs/quick-1".into(),
            },
        };
        let line = serde_json::to_string(&event).unwrap();
        assert!(!line.contains("log_tail"), "{line}");
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), event);
    }
}

#[cfg(test)]
mod local_time_tests {
    /// The hand-written formatter gives jiff's text: every day of four centuries (leap years,
    /// 2000 and 2100, month ends), times of day and sub-second digits around the boundaries.
    #[test]
    fn utc_millis_matches_jiff() {
        let jiff = |secs: u64, nanos: u32| {
            jiff::Timestamp::new(secs as i64, nanos as i32)
                .unwrap()
                .strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
                .to_string()
        };
        let nanos = [
            0,
            1,
            999_999,
            1_000_000,
            9_999_999,
            123_456_789,
            999_999_999,
        ];
        let mut secs = 0u64;
        let mut i = 0usize;
        // 1970 to 2370, one instant a day, the time of day moving by a prime step.
        while secs < 400 * 366 * 86_400 {
            let n = nanos[i % nanos.len()];
            assert_eq!(super::utc_millis(secs, n), jiff(secs, n), "{secs}.{n}");
            secs += 86_400 + 7_919;
            i += 1;
        }
        for secs in [
            0,
            59,
            86_399,
            951_782_399,     // 2000-02-28T23:59:59
            951_868_799,     // 2000-02-29T23:59:59
            951_868_800,     // 2000-03-01
            4_107_542_399,   // 2100-02-28T23:59:59
            4_107_542_400,   // 2100-03-01
            253_402_207_200, // 9999-12-30T22:00:00, jiff's last
        ] {
            for n in nanos {
                assert_eq!(super::utc_millis(secs, n), jiff(secs, n), "{secs}.{n}");
            }
        }
        let t = super::now();
        assert_eq!((t.len(), t.as_bytes()[10], &t[23..]), (24, b'T', "Z"));
    }

    #[test]
    fn local_time_matches_jiff() {
        // Compared a few times in case the second turns between the two calls. `time(2)`
        // reads the kernel's coarse clock, up to a tick (a few ms) behind jiff's: right
        // after a second turns the two differ for that long, so the tries are 20 ms apart.
        let same = (0..5).any(|_| {
            let ours = super::local_time(c"%Y%m%d-%H%M%S");
            let jiff = jiff::Zoned::now().strftime("%Y%m%d-%H%M%S").to_string();
            ours == jiff || {
                std::thread::sleep(std::time::Duration::from_millis(20));
                false
            }
        });
        assert!(same);
    }
}
