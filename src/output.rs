//! The one place that writes to the terminal. Everything else builds strings (or events) and
//! hands them here. Broken pipes (`nixcmd list | head`) end output quietly, never in a panic.
//! Any other write error (a full disk under `nixcmd show --format json > plan.json`) is kept
//! and reported once at the end, with an exit code that is not 0 (see `app::main`): a
//! truncated file with exit 0 would be lost data nobody notices.

use crate::cli::ColorWhen;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;

/// The first error stdout gave that was not a closed pipe.
static STDOUT_FAILURE: OnceLock<String> = OnceLock::new();

/// Keeps the outcome of a write to stdout: a closed pipe means nobody reads any more (the
/// reader chose to stop) and is not a failure; anything else is, and is kept for
/// [`stdout_failure`].
pub fn settle_stdout(written: std::io::Result<()>) {
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        let _ = STDOUT_FAILURE.set(e.to_string());
    }
}

/// Why stdout did not take all of the output, if it did not (a closed pipe aside).
pub fn stdout_failure() -> Option<&'static str> {
    STDOUT_FAILURE.get().map(String::as_str)
}

/// ANSI styling that is a no-op when colors are off.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    pub enabled: bool,
}

impl Palette {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    pub fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    pub fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    /// [`Self::dim`] of formatted text, written into `out` without a string of its own.
    pub fn dim_into(&self, out: &mut String, text: std::fmt::Arguments) {
        use std::fmt::Write as _;
        let _ = match self.enabled {
            true => write!(out, "\x1b[2m{text}\x1b[0m"),
            false => out.write_fmt(text),
        };
    }
    pub fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    pub fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    pub fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
    pub fn cyan(&self, t: &str) -> String {
        self.paint("36", t)
    }
}

/// Where output goes, and how it is styled.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Styling for text written to stdout.
    pub out: Palette,
    /// Styling for text written to stderr.
    pub err: Palette,
    pub stdout_is_terminal: bool,
    pub stderr_is_terminal: bool,
}

impl Output {
    pub fn new(color: ColorWhen) -> Self {
        let stdout_is_terminal = std::io::stdout().is_terminal();
        let stderr_is_terminal = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let decide = |tty: bool| match color {
            ColorWhen::Always => true,
            ColorWhen::Never => false,
            ColorWhen::Auto => tty && !no_color && !dumb,
        };
        Output {
            out: Palette {
                enabled: decide(stdout_is_terminal),
            },
            err: Palette {
                enabled: decide(stderr_is_terminal),
            },
            stdout_is_terminal,
            stderr_is_terminal,
        }
    }

    /// Writes to stdout; a closed pipe is not an error worth reporting, others are kept (see
    /// [`settle_stdout`]).
    pub fn print(&self, text: &str) {
        let mut lock = std::io::stdout().lock();
        settle_stdout(lock.write_all(text.as_bytes()).and_then(|()| lock.flush()));
    }

    /// Writes `value` as pretty JSON and a newline to stdout, streamed through a small
    /// buffer: `show --format json` of a large runbook is megabytes, and building it as one
    /// string (then copying it to add the newline) touched twice that much fresh memory.
    /// Write errors end output and are kept as [`Self::print`] keeps them; only a value that
    /// cannot be represented as JSON is an error.
    pub fn print_json<T: serde::Serialize + ?Sized>(&self, value: &T) -> Result<(), String> {
        let mut lock = std::io::stdout().lock();
        let mut w = std::io::BufWriter::with_capacity(64 * 1024, &mut lock);
        let written = serde_json::to_writer_pretty(&mut w, value);
        match written {
            Ok(()) => {
                settle_stdout(w.write_all(b"\n").and_then(|()| w.flush()));
                Ok(())
            }
            Err(e) if e.is_io() => {
                settle_stdout(Err(e.into()));
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Copies `reader` to stdout as it reads it: a step's log can be gigabytes, and need not
    /// be text. A read error is returned; a write error ends the copy and is kept as
    /// [`Self::print`] keeps it (`io::copy` would not say which side failed, and "cannot read
    /// the log" for a full disk under `> saved.log` sends people to the wrong file).
    pub fn print_from(&self, reader: &mut impl std::io::Read) -> std::io::Result<()> {
        let mut lock = std::io::stdout().lock();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if let Err(e) = lock.write_all(&buf[..n]) {
                settle_stdout(Err(e));
                return Ok(());
            }
        }
        settle_stdout(lock.flush());
        Ok(())
    }

    pub fn eprint(&self, text: &str) {
        eprint_quietly(text);
    }

    /// Terminal width for tables and the live display, when stdout is a terminal: `COLUMNS`
    /// when exported, else what the terminal says (asked each time: it may be resized
    /// during a run), else 100. Shells set `COLUMNS` without exporting it, so the terminal's
    /// own answer is the usual one.
    pub fn width(&self) -> Option<usize> {
        if !self.stdout_is_terminal {
            return None;
        }
        std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .filter(|&w: &usize| w > 0)
            .or_else(|| {
                terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| w.0 as usize)
            })
            .filter(|&w| w > 0)
            .or(Some(100))
    }
}

/// Writes to stderr, ignoring a closed or hung-up stderr, for code that has no [`Output`] at
/// hand (the MCP server's background tasks): `eprintln!` panics when the write fails.
pub fn eprint_quietly(text: &str) {
    let mut lock = std::io::stderr().lock();
    let _ = lock.write_all(text.as_bytes()).and_then(|()| lock.flush());
}
