//! Renderers: event sinks that show a run. At a terminal, a live line per running step
//! (spinner, elapsed, ETA, last output line) and a summary; without one, plain timestamped
//! lines; with `--format json`, the event lines themselves on stdout. All output goes through
//! [`Output`].

use crate::duration::display;
use crate::event::{Event, EventKind, RunStatus, Sink, StepStatus};
use crate::output::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `--format json`: every event as one line on stdout.
pub struct JsonSink {
    pub out: Output,
}

impl Sink for JsonSink {
    fn event(&mut self, _: &Event, line: &str) {
        self.out.print(&format!("{line}\n"));
    }
}

#[derive(Default)]
struct Live {
    running: Option<(String, Instant, Option<u64>, String)>,
    frame: usize,
    stop: bool,
}

/// Human output on stdout: live at a terminal, plain timestamped lines otherwise.
pub struct TextRenderer {
    out: Output,
    /// With `--format json` human text goes to stderr, as plain lines.
    to_stderr: bool,
    live: Option<Arc<Mutex<Live>>>,
    verbose: bool,
    rows: Vec<(String, StepStatus, u64, Option<String>)>,
    ticker: Option<std::thread::JoinHandle<()>>,
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
                    if let Some(line) = live_line(&l, &out) {
                        out.print(&line);
                    }
                }
            })
        });
        TextRenderer {
            out,
            to_stderr,
            live,
            verbose,
            rows: Vec::new(),
            ticker,
        }
    }

    fn stamp(&self) -> String {
        jiff::Zoned::now().strftime("%H:%M:%S").to_string()
    }

    /// Prints a finished line, clearing the live line first.
    fn line(&self, text: &str) {
        if let Some(live) = &self.live {
            let l = live.lock().ok();
            self.out.print(&format!("\r\x1b[2K{text}\n"));
            if let Some(l) = l
                && let Some(line) = live_line(&l, &self.out)
            {
                self.out.print(&line);
            }
        } else {
            self.put(&format!("[{}] {text}\n", self.stamp()));
        }
    }

    fn put(&self, text: &str) {
        if self.to_stderr {
            self.out.eprint(text)
        } else {
            self.out.print(text)
        }
    }

    fn set_running(&self, running: Option<(String, Instant, Option<u64>, String)>) {
        if let Some(live) = &self.live
            && let Ok(mut l) = live.lock()
        {
            l.running = running;
        }
    }
}

fn live_line(l: &Live, out: &Output) -> Option<String> {
    let (id, started, eta, last) = l.running.as_ref()?;
    let p = out.out;
    let elapsed = display(started.elapsed());
    let eta = eta
        .map(|e| format!(" / ~{}", display(Duration::from_millis(e))))
        .unwrap_or_default();
    let width = out.width().unwrap_or(100);
    let head = format!("{} {id}  {elapsed}{eta}", SPINNER[l.frame % SPINNER.len()]);
    let room = width.saturating_sub(head.chars().count() + 5);
    let last: String = last.chars().take(room).collect();
    Some(format!("\r\x1b[2K{}  {}", p.cyan(&head), p.dim(&last)))
}

impl Drop for TextRenderer {
    fn drop(&mut self) {
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
                        let gates = if item.gates.is_empty() {
                            String::new()
                        } else {
                            format!(" [{}]", item.gates.join(", "))
                        };
                        s.push_str(&format!(
                            "  {:<12} {}{gates}, timeout {}: {state}{note}\n",
                            item.phase,
                            item.step_id,
                            display(Duration::from_millis(item.timeout_ms))
                        ));
                    }
                    for m in manual_checks {
                        s.push_str(&format!("  manual check: [ ] {m}\n"));
                    }
                    self.put(&s);
                }
            }
            EventKind::StepStarted {
                step_id,
                attempt,
                eta_ms,
                ..
            } => {
                let retry = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                if self.live.is_some() {
                    self.set_running(Some((
                        format!("{step_id}{retry}"),
                        Instant::now(),
                        *eta_ms,
                        String::new(),
                    )));
                } else {
                    self.line(&format!("▶ {step_id}{retry}"));
                }
            }
            EventKind::Output { step_id, line, .. } => {
                if let Some(live) = &self.live
                    && let Ok(mut l) = live.lock()
                    && let Some(r) = l.running.as_mut()
                {
                    r.3 = line.clone();
                }
                if self.verbose {
                    self.line(&format!("  {} {}", p.dim(&format!("{step_id} │")), line));
                }
            }
            EventKind::StepFinished {
                step_id,
                status,
                duration_ms,
                reason,
                ..
            } => {
                self.set_running(None);
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
                self.line(&format!("{} {message}", p.yellow("warning:")))
            }
            EventKind::RollbackStarted { reason, blocks } => self.line(&format!(
                "{} {reason}: {}",
                p.yellow("rolling back —"),
                blocks.join(", ")
            )),
            EventKind::Gate {
                step_id,
                message,
                resume,
                ..
            } => {
                self.line(&format!(
                    "{} step {step_id} needs confirmation: {message}\n  approve and continue with: {resume}",
                    p.yellow("paused:")
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
                self.set_running(None);
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
                    for (id, st, ms, _) in &self.rows {
                        s.push_str(&format!(
                            "{id:<w$}  {:<12}  {}\n",
                            st.label(),
                            display(Duration::from_millis(*ms))
                        ));
                    }
                }
                if !warnings.is_empty() {
                    s.push_str(&format!("\n{}\n", p.yellow("warnings:")));
                    for w in warnings {
                        s.push_str(&format!("  - {w}\n"));
                    }
                }
                if !manual_checks.is_empty() && *status == RunStatus::Succeeded {
                    s.push_str(&format!(
                        "\n{}\n",
                        p.bold("manual checks (do these by hand):")
                    ));
                    for m in manual_checks {
                        s.push_str(&format!("  [ ] {m}\n"));
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
                        s.push_str(&format!("  │ {l}\n"));
                    }
                }
                if let Some(t) = troubleshooting {
                    s.push_str(&format!("\n{} {}\n", p.bold("troubleshooting:"), t.title));
                    for l in t.text.lines() {
                        s.push_str(&format!("  {l}\n"));
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
                                "  {}{line}\n",
                                if i == 0 { "- " } else { "    " }
                            ));
                        }
                    }
                }
                let verdict = match status {
                    RunStatus::Succeeded => p.green(&p.bold("succeeded")),
                    RunStatus::Failed if failed_step.is_some() => {
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
                if self.live.is_some() {
                    self.out.print("\r\x1b[2K");
                }
                self.put(&s);
            }
        }
    }
}
