//! `--only`, `--skip` and `--from`: which steps and success criteria a run leaves out. One
//! rule for the engine (`Engine::skip_reason`) and for the check before a run starts
//! (`commands::check_selection`), so that what the check promises is what the run does.

use crate::command::{Block, Command, Phase};

/// The options as given.
pub struct Selection<'s> {
    pub only: &'s [String],
    pub skip: &'s [String],
    pub from: Option<&'s str>,
}

impl Selection<'_> {
    /// Why `block` is left out, if it is. Prerequisites, rollback and `always` blocks are
    /// never left out (`--skip` of an `always` block is refused before the run).
    pub fn skips(&self, cmd: &Command, block: &Block) -> Option<String> {
        if !matches!(block.phase, Phase::Step | Phase::Check) || block.attrs.always {
            return None;
        }
        if !self.only.is_empty() && block.phase == Phase::Step && !self.only.contains(&block.id) {
            return Some("not in --only".into());
        }
        if self.skip.contains(&block.id) {
            return Some("--skip".into());
        }
        if let Some(from) = self.from {
            // Steps, then success criteria: `--from` a criterion skips every step.
            let pos = |id: &str| {
                (cmd.steps.iter())
                    .chain(&cmd.success_criteria.checks)
                    .position(|b| b.id == id)
            };
            if let (Some(me), Some(start)) = (pos(&block.id), pos(from))
                && me < start
            {
                return Some(format!("before --from {from}"));
            }
        }
        None
    }

    /// Whether any option is given.
    pub fn is_given(&self) -> bool {
        !self.only.is_empty() || !self.skip.is_empty() || self.from.is_some()
    }
}
