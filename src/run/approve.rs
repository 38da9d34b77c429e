//! Who answers a confirmation gate. The engine asks an [`Approver`]; at a terminal a person
//! answers, without one nobody can and the run pauses (exit 3). The MCP server brings its own
//! approver (elicitation), so the model itself can never approve a destructive step.

use crate::output::Output;
use crate::process::Cancel;
use std::io::{BufRead, IsTerminal};

/// A gate put to whoever can answer it.
#[derive(Debug, Clone)]
pub struct GateRequest {
    pub run_id: String,
    pub step_id: String,
    pub message: String,
    pub code: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Approve {
        channel: String,
        client: Option<String>,
    },
    /// "No" (recorded with the approvals, with its channel and client), or the wait for an
    /// answer cut short by a request to stop (then the run is interrupted: nothing recorded).
    Decline {
        channel: String,
        client: Option<String>,
    },
    /// Nobody can answer now: pause the run before the step.
    Unavailable,
}

impl Answer {
    pub fn declined(channel: &str, client: Option<String>) -> Self {
        Answer::Decline {
            channel: channel.to_string(),
            client,
        }
    }
}

pub trait Approver: Send {
    fn ask(&mut self, gate: &GateRequest) -> Answer;
}

/// Asks on the terminal when there is one (stdin is a TTY and `CI` is not set).
pub struct TerminalApprover {
    pub out: Output,
    /// Ctrl-C at the prompt ends the wait (the run then stops as interrupted).
    pub cancel: Cancel,
}

/// Whether a person can be asked: stdin is a terminal and we are not in CI.
pub fn interactive() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    std::io::stdin().is_terminal() && !ci
}

impl Approver for TerminalApprover {
    fn ask(&mut self, gate: &GateRequest) -> Answer {
        // After SIGHUP nobody may be at the terminal any more, even if it still works.
        if !interactive() || crate::process::hung_up() {
            return Answer::Unavailable;
        }
        let p = self.out.err;
        let mut prompt = format!(
            "\n{} step {}\n",
            p.yellow(&p.bold("confirm:")),
            p.bold(&gate.step_id)
        );
        // The runbook's code and question are shown, never obeyed: an escape sequence or a
        // bidirectional control in them could hide or reorder what the person approves.
        let visible = crate::terminal_text::visible;
        for line in gate.code.lines().take(12) {
            prompt.push_str(&format!("  {} {}\n", p.dim("│"), visible(line)));
        }
        if gate.code.lines().count() > 12 {
            prompt.push_str(&format!("  {} …\n", p.dim("│")));
        }
        prompt.push_str(&format!("{} [y/N] ", visible(&gate.message)));
        self.out.eprint(&prompt);
        let ready = wait_for_input(&self.cancel);
        // The terminal hung up while the prompt waited: its end of file is nobody's "no".
        if crate::process::hung_up() {
            return Answer::Unavailable;
        }
        if !ready {
            self.out.eprint("\n");
            return Answer::declined("terminal", None);
        }
        let mut answer = String::new();
        match std::io::stdin().lock().read_line(&mut answer) {
            Ok(0) | Err(_) if crate::process::hung_up() => Answer::Unavailable,
            Ok(0) | Err(_) => {
                self.out.eprint("\n");
                Answer::declined("terminal", None)
            }
            Ok(_) => match answer.trim().to_ascii_lowercase().as_str() {
                "y" | "yes" => Answer::Approve {
                    channel: "terminal".into(),
                    client: None,
                },
                _ => Answer::declined("terminal", None),
            },
        }
    }
}

/// Waits until stdin has something to read (a line at a terminal, or its end). False when
/// Ctrl-C came first: `read_line` alone would go on waiting, as the signal handler only
/// counts the request. True at once after SIGHUP (the caller checks [`hung_up`]).
///
/// [`hung_up`]: crate::process::hung_up
fn wait_for_input(cancel: &Cancel) -> bool {
    let at_start = cancel.level();
    loop {
        if cancel.level() > at_start {
            return false;
        }
        if crate::process::hung_up() {
            return true;
        }
        let mut fd = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid pollfd for our own stdin, with a 100 ms timeout.
        let ready = unsafe { libc::poll(&mut fd, 1, 100) };
        if ready > 0
            || (ready < 0
                && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted)
        {
            // Readable, closed, or poll is unusable: `read_line` tells which.
            return true;
        }
    }
}

/// Never answers: every unapproved gate pauses the run.
pub struct NoApprover;

impl Approver for NoApprover {
    fn ask(&mut self, _: &GateRequest) -> Answer {
        Answer::Unavailable
    }
}
