//! Rollback and `always` blocks are not stopped by a first Ctrl-C (DESIGN.md §2: a first
//! Ctrl-C stops and rolls back, a second stops at once). Stopping a block that restores the
//! previous generation leaves the machine half restored, the worst outcome: while they run,
//! a first request to stop (Ctrl-C, SIGTERM, the MCP server's `run_cancel`) is held back and
//! said once; a second one (Ctrl-C again, Ctrl-\) stops at once as before, and the run lists
//! what is left to do by hand. The levels keep their meaning; the blocks see them through
//! [`Cancel::shielded`](crate::process::Cancel::shielded).

use crate::event::EventKind;
use crate::run::engine::Engine;

/// What the shielded blocks are doing, for the words of the notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finishing {
    /// Compensations and unbound `## Rollback` blocks (the run's, or a failed host's).
    RollingBack,
    /// `always` blocks.
    Always,
}

impl<'a> Engine<'a> {
    /// Runs `f` with the shield up: the blocks it runs see a first request to stop held back.
    /// A request that came before (the Ctrl-C that started this rollback) is told about now,
    /// once, so the person knows what pressing again does.
    pub(super) fn shielded<T>(&mut self, what: Finishing, f: impl FnOnce(&mut Self) -> T) -> T {
        let outer = (self.cancel.clone(), self.finishing);
        self.cancel = self.cancel.shielded();
        self.finishing = Some(what);
        // The MCP server's request that started a rollback is not news to its client.
        if self.cancel.take_held() && self.cancel.by_signal() {
            self.say_held(None);
        }
        let out = f(self);
        (self.cancel, self.finishing) = outer;
        out
    }

    /// The notice for a request held back (see [`crate::process::Observed::Held`]).
    pub(super) fn held_notice(&self) -> &'static str {
        let rolling_back = self.finishing != Some(Finishing::Always);
        match (self.cancel.by_signal(), rolling_back) {
            (true, true) => {
                "rolling back: Ctrl-C again to stop at once (the rollback is left unfinished)"
            }
            (true, false) => {
                "running the `always` blocks: Ctrl-C again to stop at once (they are left \
                 unfinished)"
            }
            (false, true) => {
                "asked to stop while rolling back: the rollback goes on to its end (stopped \
                 halfway, it would leave the machine half restored)"
            }
            (false, false) => {
                "asked to stop while the `always` blocks run: they go on to their end"
            }
        }
    }

    /// Says that a request to stop is held back, as a warning of the run (not repeated in its
    /// final list: it is about that moment).
    pub(super) fn say_held(&mut self, step_id: Option<&str>) {
        let message = self.held_notice().to_string();
        self.emit(EventKind::Warning {
            step_id: step_id.map(str::to_string),
            message,
        });
    }
}
