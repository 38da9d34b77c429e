//! Renderers: event sinks that show a run. At a terminal, a live line per running step
//! (spinner, elapsed, ETA, last output line) and a summary; without one, plain timestamped
//! lines; with `--format json`, the event lines themselves on stdout. All output goes through
//! [`Output`].

use crate::duration::display;
use crate::event::{Event, EventKind, RunStatus, Sink, StepStatus};
use crate::output::Output;
use crate::run::heartbeat::Heartbeat;
use crate::terminal_text;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `--format json`: every event as one line on stdout, written when the emitter flushes
/// (after each event, or once per read of a chatty step's output).
pub struct JsonSink {
    out: Output,
    pending: String,
}

impl JsonSink {
    pub fn new(out: Output) -> Self {
        JsonSink {
            out,
            pending: String::new(),
        }
    }
}

impl Sink for JsonSink {
    fn event(&mut self, _: &Event, line: &str) {
        self.pending.push_str(line);
        self.pending.push('\n');
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.out.print(&self.pending);
            self.pending.clear();
        }
    }
}

impl Drop for JsonSink {
    /// Nothing gathered is lost, whatever ended the run.
    fn drop(&mut self) {
        self.flush();
    }
}

/// One live line: a running step, or one host's part of a fan-out (`step@host`).
type Running = (String, Instant, Option<u64>, String);

#[derive(Default)]
struct Live {
    /// In start order; parallel steps and hosts each have their own line.
    running: Vec<Running>,
    /// How many live lines are on the screen now.
    drawn: usize,
    frame: usize,
    stop: bool,
}

/// At most this many live lines; the rest are counted on one more line.
const MAX_LIVE: usize = 12;

/// Human output on stdout: live at a terminal, plain timestamped lines otherwise.
pub struct TextRenderer {
    out: Output,
    /// With `--format json` human text goes to stderr, as plain lines.
    to_stderr: bool,
    live: Option<Arc<Mutex<Live>>>,
    verbose: bool,
    rows: Vec<(String, StepStatus, u64, Option<String>)>,
    /// Whether rollback blocks ran: "failed — rolled back" only says so when they did.
    rolled_back: bool,
    /// Fan-out results: (step, host, status), for the step × host grid.
    cells: Vec<(String, String, StepStatus)>,
    ticker: Option<std::thread::JoinHandle<()>>,
    /// Plain lines not yet written (see [`TextRenderer::put`]).
    pending: String,
    /// Plain output only: how long without a line before the running steps are named again
    /// (`NIXCMD_HEARTBEAT`); `None` when off.
    heartbeat_every: Option<Duration>,
    /// Started with the first step, so that a run that starts none has no thread (and none
    /// when the output goes to `/dev/null`).
    heartbeat: Option<Heartbeat>,
}

const SPINNER: &[&str] = &["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl TextRenderer {
    pub fn new(out: Output, verbose: bool) -> Self {
        Self::build(out, verbose, false)
    }

    /// Plain human lines on stderr, next to a JSON stream on stdout.
    pub fn stderr(out: Output, verbose: bool) -> Self {
        Self::build(out, verbose, true)
    }

    fn build(out: Output, verbose: bool, to_stderr: bool) -> Self {
        let live =
            (out.stdout_is_terminal && !to_stderr).then(|| Arc::new(Mutex::new(Live::default())));
        let ticker = live.as_ref().map(|shared| {
            let shared = shared.clone();
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(120));
                    let mut l = match shared.lock() {
                        Ok(l) => l,
                        Err(_) => return,
                    };
                    if l.stop {
                        return;
                    }
                    l.frame += 1;
                    let text = redraw(&mut l, &out);
                    out.print(&text);
                }
            })
        });
        TextRenderer {
            out,
            to_stderr,
            live,
            verbose,
            rows: Vec::new(),
            rolled_back: false,
            cells: Vec::new(),
            ticker,
            pending: String::new(),
            heartbeat_every: None,
            heartbeat: None,
        }
    }

    /// Names the running steps after `every` without a line (plain output only; at a
    /// terminal the live display shows them all the time).
    pub fn with_heartbeat(mut self, every: Option<Duration>) -> Self {
        self.heartbeat_every = every.filter(|_| self.live.is_none());
        self
    }

    /// The heartbeat, started on first use; `None` when off, live or written to `/dev/null`.
    fn heartbeat(&mut self) -> Option<&Heartbeat> {
        if self.heartbeat.is_none()
            && let Some(every) = self.heartbeat_every.take()
            && !crate::run::heartbeat::discarded(if self.to_stderr { 2 } else { 1 })
        {
            let (out, to_stderr) = (self.out, self.to_stderr);
            self.heartbeat = Some(Heartbeat::start(every, move |text| {
                if to_stderr {
                    out.eprint(text)
                } else {
                    out.print(text)
                }
            }));
        }
        self.heartbeat.as_ref()
    }

    fn stamp(&self) -> String {
        crate::event::local_time(c"%H:%M:%S")
    }

    /// Prints a finished line, clearing the live line first.
    fn line(&mut self, text: &str) {
        if let Some(live) = &self.live {
            if let Ok(mut l) = live.lock() {
                let mut s = clear(&mut l);
                s.push_str(&format!("{text}\n"));
                s.push_str(&redraw(&mut l, &self.out));
                self.out.print(&s);
            } else {
                self.out.print(&format!("\r\x1b[2K{text}\n"));
            }
        } else {
            self.put(&format!("[{}] {text}\n", self.stamp()));
        }
    }

    /// Without a live display, text is gathered until [`Sink::flush`]: one write per read of
    /// a chatty step's output with `--verbose`. With one, it goes out at once, in order with
    /// the live lines the ticker draws.
    fn put(&mut self, text: &str) {
        if self.live.is_none() {
            self.pending.push_str(text);
            // Queued is as good as written: the emitter flushes right after the event.
            if let Some(mut beat) = self.heartbeat.as_ref().and_then(Heartbeat::lock) {
                beat.wrote(Instant::now());
            }
        } else {
            self.write(text);
        }
    }

    fn write(&self, text: &str) {
        if self.to_stderr {
            self.out.eprint(text)
        } else {
            self.out.print(text)
        }
    }

    /// Text that holds a step's output (its last lines, a warning quoting one) as it may be
    /// shown: at a terminal only its colors are kept, as for `--verbose` lines, since a cursor
    /// move, a screen clear or a switch to the alternate screen in it would garble (or hide)
    /// the summary, and a progress bar's `\r` would overwrite the line's own start. Elsewhere
    /// it goes as printed.
    fn shown(&self, text: &str) -> String {
        match self.live {
            Some(_) => terminal_text::keeping_colors(text),
            None => text.to_string(),
        }
    }

    /// Starts (or restarts, for a retry) the live line `key`.
    fn start_running(&self, key: &str, label: String, eta: Option<u64>) {
        if let Some(live) = &self.live
            && let Ok(mut l) = live.lock()
        {
            l.running.retain(|r| r.0.split(' ').next() != Some(key));
            l.running.push((label, Instant::now(), eta, String::new()));
        }
    }

    fn stop_running(&self, key: Option<&str>) {
        if let Some(mut beat) = self.heartbeat.as_ref().and_then(Heartbeat::lock) {
            beat.finished(key);
        }
        if let Some(live) = &self.live
            && let Ok(mut l) = live.lock()
        {
            match key {
                Some(key) => l.running.retain(|r| r.0.split(' ').next() != Some(key)),
                None => l.running.clear(),
            }
        }
    }
}

/// `step@host` for a host's part of a fan-out, else the step id.
fn key(step: &str, host: Option<&String>) -> String {
    match host {
        Some(h) => format!("{step}@{h}"),
        None => step.to_string(),
    }
}

/// Erases the live lines drawn last time; leaves the cursor at the start of the first.
fn clear(l: &mut Live) -> String {
    let mut s = String::from("\r\x1b[2K");
    if l.drawn > 1 {
        s = format!("\x1b[{}A\r\x1b[J", l.drawn - 1);
    }
    l.drawn = 0;
    s
}

/// Clears and draws the live lines again (without a final newline).
fn redraw(l: &mut Live, out: &Output) -> String {
    let mut s = clear(l);
    let lines = live_lines(l, out);
    l.drawn = lines.len();
    s.push_str(&lines.join("\n"));
    s
}

fn live_lines(l: &Live, out: &Output) -> Vec<String> {
    let mut lines: Vec<String> = l
        .running
        .iter()
        .take(MAX_LIVE)
        .map(|r| live_line(r, l.frame, out))
        .collect();
    if l.running.len() > MAX_LIVE {
        lines.push(out.out.dim(&format!(
            "  … and {} more running",
            l.running.len() - MAX_LIVE
        )));
    }
    lines
}

fn live_line(r: &Running, frame: usize, out: &Output) -> String {
    let (id, started, eta, last) = r;
    let p = out.out;
    let elapsed = display(started.elapsed());
    let eta = eta
        .map(|e| format!(" / ~{}", display(Duration::from_millis(e))))
        .unwrap_or_default();
    // One row whatever the step printed: a wrapped row would outlive the redraw, which moves
    // the cursor up by the rows it drew. The last column stays free (a character there makes
    // some terminals wrap at once).
    let width = out.width().unwrap_or(100).saturating_sub(1);
    let head = terminal_text::fit(
        &format!("{} {id}  {elapsed}{eta}", SPINNER[frame % SPINNER.len()]),
        width,
    );
    let room = width.saturating_sub(terminal_text::width(&head) + 2);
    let last = terminal_text::fit(&terminal_text::plain(last), room);
    if last.is_empty() {
        return p.cyan(&head);
    }
    format!("{}  {}", p.cyan(&head), p.dim(&last))
}

impl Drop for TextRenderer {
    fn drop(&mut self) {
        self.flush();
        if let Some(live) = &self.live
            && let Ok(mut l) = live.lock()
        {
            l.stop = true;
        }
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

fn mark(status: StepStatus, p: crate::output::Palette) -> String {
    match status {
        StepStatus::Succeeded => p.green("✓"),
        StepStatus::Warning => p.yellow("!"),
        StepStatus::Skipped => p.dim("-"),
        StepStatus::Declined | StepStatus::AwaitingConfirmation => p.yellow("⏸"),
        _ => p.red("✗"),
    }
}

impl Sink for TextRenderer {
    /// A progress bar's newest state, or a line the step left unfinished for a moment, is the
    /// step's last output until its line ends. `--verbose` prints nothing for it: its plain
    /// lines stay whole, and the line is printed once, when it ends.
    fn progress(&mut self, step_id: &str, host: Option<&str>, text: &str) {
        let key = match host {
            Some(h) => format!("{step_id}@{h}"),
            None => step_id.to_string(),
        };
        if let Some(live) = &self.live
            && let Ok(mut l) = live.lock()
            && let Some(r) = l
                .running
                .iter_mut()
                .find(|r| r.0.split(' ').next() == Some(key.as_str()))
        {
            r.3.clear();
            r.3.push_str(text);
        }
        if let Some(mut beat) = self.heartbeat.as_ref().and_then(Heartbeat::lock) {
            beat.output(&key, text);
        }
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.write(&self.pending);
            // Cleared, not dropped: the buffer serves the next read.
            self.pending.clear();
        }
    }

    fn event(&mut self, event: &Event, _: &str) {
        let p = self.out.out;
        match &event.kind {
            EventKind::RunStarted {
                command,
                dry_run,
                resumed,
                plan,
                manual_checks,
                ..
            } => {
                let what = if *resumed {
                    "resuming"
                } else if *dry_run {
                    "dry run of"
                } else {
                    "running"
                };
                self.line(&format!(
                    "{} {what} {} ({})",
                    p.bold("nixcmd"),
                    p.bold(command),
                    event.run_id
                ));
                if *dry_run {
                    let mut s = String::from("plan:\n");
                    for item in plan {
                        let state = if item.will_run {
                            "runs"
                        } else {
                            "does not run"
                        };
                        let note = item
                            .note
                            .as_deref()
                            .map(|n| format!(" — {n}"))
                            .unwrap_or_default();
                        // A block's own `timeout=` is among its gates already; the
                        // effective timeout is added only when it comes from a default.
                        let mut gates = item.gates.clone();
                        if !gates.iter().any(|g| g.starts_with("timeout ")) {
                            gates.push(format!(
                                "timeout {}",
                                display(Duration::from_millis(item.timeout_ms))
                            ));
                        }
                        // Gates and notes quote the runbook (a `confirm` question): shown,
                        // never obeyed by the terminal.
                        s.push_str(&format!(
                            "  {:<12} {} [{}]: {state}{}\n",
                            item.phase,
                            item.step_id,
                            terminal_text::visible(&gates.join(", ")),
                            terminal_text::visible(&note)
                        ));
                    }
                    for m in manual_checks {
                        s.push_str(&format!(
                            "  manual check: [ ] {}\n",
                            terminal_text::visible(m)
                        ));
                    }
                    self.put(&s);
                }
            }
            EventKind::StepStarted {
                step_id,
                attempt,
                eta_ms,
                host,
                ..
            } => {
                let step_id = &key(step_id, host.as_ref());
                let retry = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                if self.live.is_some() {
                    self.start_running(step_id, format!("{step_id}{retry}"), *eta_ms);
                } else {
                    if let Some(mut beat) = self.heartbeat().and_then(Heartbeat::lock) {
                        beat.started(step_id, *attempt, Instant::now());
                    }
                    self.line(&format!("▶ {step_id}{retry}"));
                }
            }
            EventKind::Output {
                step_id,
                line,
                host,
                ..
            } => {
                let step_id = &key(step_id, host.as_ref());
                if let Some(live) = &self.live
                    && let Ok(mut l) = live.lock()
                    && let Some(r) = l
                        .running
                        .iter_mut()
                        .find(|r| r.0.split(' ').next() == Some(step_id.as_str()))
                {
                    r.3 = line.clone();
                }
                if let Some(mut beat) = self.heartbeat.as_ref().and_then(Heartbeat::lock) {
                    beat.output(step_id, line);
                }
                if self.verbose {
                    // At a terminal a line must not move the cursor or clear the screen under
                    // the live display; its colors are welcome. Elsewhere it goes as printed.
                    let line = match self.live {
                        Some(_) => terminal_text::keeping_colors(line),
                        None => line.clone(),
                    };
                    self.line(&format!("  {} {}", p.dim(&format!("{step_id} │")), line));
                }
            }
            EventKind::StepFinished {
                step_id,
                status,
                duration_ms,
                reason,
                host: Some(host),
                ..
            } => {
                let k = key(step_id, Some(host));
                self.stop_running(Some(&k));
                let why = reason
                    .as_deref()
                    .map(|r| format!(" — {r}"))
                    .unwrap_or_default();
                self.line(&format!(
                    "{} {k} {} {}{why}",
                    mark(*status, p),
                    status.label(),
                    p.dim(&display(Duration::from_millis(*duration_ms)))
                ));
                match self
                    .cells
                    .iter_mut()
                    .find(|c| &c.0 == step_id && &c.1 == host)
                {
                    Some(c) => c.2 = *status,
                    None => self.cells.push((step_id.clone(), host.clone(), *status)),
                }
            }
            EventKind::StepFinished {
                step_id,
                status,
                duration_ms,
                reason,
                ..
            } => {
                self.stop_running(Some(step_id));
                let why = reason
                    .as_deref()
                    .map(|r| format!(" — {r}"))
                    .unwrap_or_default();
                self.line(&format!(
                    "{} {step_id} {} {}{why}",
                    mark(*status, p),
                    status.label(),
                    p.dim(&display(Duration::from_millis(*duration_ms)))
                ));
                match self.rows.iter_mut().find(|r| &r.0 == step_id) {
                    Some(row) => *row = (step_id.clone(), *status, *duration_ms, reason.clone()),
                    None => {
                        self.rows
                            .push((step_id.clone(), *status, *duration_ms, reason.clone()))
                    }
                }
            }
            EventKind::Warning { message, .. } => {
                let message = self.shown(message);
                self.line(&format!("{} {message}", p.yellow("warning:")))
            }
            EventKind::RollbackStarted { reason, blocks } => {
                self.rolled_back = true;
                self.line(&format!(
                    "{} {reason}: {}",
                    p.yellow("rolling back —"),
                    blocks.join(", ")
                ))
            }
            EventKind::Gate {
                step_id,
                message,
                resume,
                ..
            } => {
                // The other way out, for whoever decides not to go on (in CI, nobody can
                // answer "no" at a prompt): the rollback and `always` blocks still run.
                self.line(&format!(
                    "{} step {step_id} needs confirmation: {}\n  approve and continue with: {resume}\n  or decline and roll back with: nixcmd resume {} --decline",
                    p.yellow("paused:"),
                    terminal_text::visible(message),
                    event.run_id
                ));
            }
            EventKind::RunFinished {
                status,
                exit_code,
                duration_ms,
                failed_step,
                warnings,
                manual_checks,
                left_to_do,
                troubleshooting,
                log_tail,
                resume,
                run_dir,
            } => {
                self.stop_running(None);
                let mut s = String::new();
                if !self.rows.is_empty() {
                    s.push('\n');
                    let w = self
                        .rows
                        .iter()
                        .map(|r| r.0.chars().count())
                        .max()
                        .unwrap_or(4)
                        .max(4);
                    s.push_str(&p.bold(&format!("{:<w$}  {:<12}  DURATION", "STEP", "STATUS")));
                    s.push('\n');
                    for (id, st, ms, reason) in &self.rows {
                        // A skipped step took no time: why it was skipped says more (a
                        // condition names its variable, never its value).
                        let last = match (st, reason) {
                            (StepStatus::Skipped, Some(why)) => self.shown(why),
                            _ => display(Duration::from_millis(*ms)),
                        };
                        s.push_str(&format!("{id:<w$}  {:<12}  {last}\n", st.label()));
                    }
                }
                s.push_str(&host_grid(&self.cells, p));
                if !warnings.is_empty() {
                    s.push_str(&format!("\n{}\n", p.yellow("warnings:")));
                    for w in warnings {
                        s.push_str(&format!("  - {}\n", self.shown(w)));
                    }
                }
                if !manual_checks.is_empty() && *status == RunStatus::Succeeded {
                    s.push_str(&format!(
                        "\n{}\n",
                        p.bold("manual checks (do these by hand):")
                    ));
                    for m in manual_checks {
                        s.push_str(&format!("  [ ] {}\n", terminal_text::visible(m)));
                    }
                }
                if let Some(step) = failed_step
                    && !log_tail.is_empty()
                {
                    s.push_str(&format!(
                        "\n{} (log: {run_dir}/logs/{step}.log)\n",
                        p.bold(&if log_tail.len() == 1 {
                            format!("last line of {step}:")
                        } else {
                            format!("last {} lines of {step}:", log_tail.len())
                        })
                    ));
                    for l in log_tail {
                        s.push_str(&format!("  │ {}\n", self.shown(l)));
                    }
                }
                // The runbook's own text (manual checks above, troubleshooting, what is left
                // by hand): shown, never obeyed by the terminal.
                if let Some(t) = troubleshooting {
                    s.push_str(&format!(
                        "\n{} {}\n",
                        p.bold("troubleshooting:"),
                        terminal_text::visible(&t.title)
                    ));
                    for l in t.text.lines() {
                        s.push_str(&format!("  {}\n", terminal_text::visible(l)));
                    }
                }
                if !left_to_do.is_empty() {
                    s.push_str(&format!(
                        "\n{}\n",
                        p.red(&p.bold("rollback incomplete — left to do by hand:"))
                    ));
                    for l in left_to_do {
                        for (i, line) in l.lines().enumerate() {
                            s.push_str(&format!(
                                "  {}{}\n",
                                if i == 0 { "- " } else { "    " },
                                terminal_text::visible(line)
                            ));
                        }
                    }
                }
                let verdict = match status {
                    RunStatus::Succeeded => p.green(&p.bold("succeeded")),
                    RunStatus::Failed if failed_step.is_some() && self.rolled_back => {
                        p.red(&p.bold("failed — rolled back"))
                    }
                    RunStatus::AwaitingConfirmation => p.yellow(&p.bold("paused for confirmation")),
                    other => p.red(&p.bold(other.label())),
                };
                s.push_str(&format!(
                    "\n{verdict} in {} (exit {exit_code})\nrun folder: {run_dir}\n",
                    display(Duration::from_millis(*duration_ms))
                ));
                if let Some(r) = resume {
                    s.push_str(&format!("resume: {r}\n"));
                }
                if let Some(live) = &self.live
                    && let Ok(mut l) = live.lock()
                {
                    self.out.print(&clear(&mut l));
                }
                self.put(&s);
            }
        }
    }
}

/// The summary of a fan-out: one row per host, one column per step that ran on hosts.
fn host_grid(cells: &[(String, String, StepStatus)], p: crate::output::Palette) -> String {
    if cells.is_empty() {
        return String::new();
    }
    let mut steps: Vec<&str> = Vec::new();
    let mut hosts: Vec<&str> = Vec::new();
    for (step, host, _) in cells {
        if !steps.contains(&step.as_str()) {
            steps.push(step);
        }
        if !hosts.contains(&host.as_str()) {
            hosts.push(host);
        }
    }
    let hw = hosts
        .iter()
        .map(|h| h.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let widths: Vec<usize> = steps
        .iter()
        .map(|s| {
            cells
                .iter()
                .filter(|c| c.0 == *s)
                .map(|c| c.2.label().len())
                .max()
                .unwrap_or(0)
                .max(s.chars().count())
        })
        .collect();
    let mut head = format!("{:<hw$}", "HOST");
    for (s, w) in steps.iter().zip(&widths) {
        head.push_str(&format!("  {s:<w$}"));
    }
    let mut out = format!("\n{}\n", p.bold(head.trim_end()));
    for h in &hosts {
        let mut row = format!("{h:<hw$}");
        for (s, w) in steps.iter().zip(&widths) {
            let label = cells
                .iter()
                .find(|c| c.0 == *s && c.1 == *h)
                .map_or("-", |c| c.2.label());
            row.push_str(&format!("  {label:<w$}"));
        }
        out.push_str(row.trim_end());
        out.push('\n');
    }
    out
}
