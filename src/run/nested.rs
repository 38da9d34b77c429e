//! Nested commands: a block of a guided file whose lines are `/other-command args` runs those
//! commands as nested runs, each with its own record, lock and gates. Their events reach the
//! parent run as output lines of the parent step.

use crate::command::{Block, Command};
use crate::event::{Event, EventKind, Sink};
use std::sync::Arc;

/// Finds a command by name for a nested run (the CLI passes the search path's lookup).
pub type Resolver = Arc<dyn Fn(&str) -> Option<Command> + Send + Sync>;

/// What a block asks for, when it is made of slash-command lines.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Not a nested block: run it as shell.
    Shell,
    /// Every line is a slash command, a comment or blank: run these in order.
    Nested(Vec<(String, Vec<String>)>),
    /// Cannot run as written; the reason says why.
    NotRunnable(String),
}

pub fn plan(block: &Block, resolve: Option<&Resolver>) -> Plan {
    if block.nested.is_empty() {
        return Plan::Shell;
    }
    let shell_lines = block
        .code
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('/'))
        .count();
    if shell_lines > 0 {
        return Plan::NotRunnable(
            "the block mixes shell lines with slash commands; split them into separate blocks"
                .into(),
        );
    }
    let Some(resolve) = resolve else {
        return Plan::NotRunnable("nested commands cannot be looked up here".into());
    };
    for n in &block.nested {
        if resolve(&n.name).is_none() {
            return Plan::NotRunnable(format!("`/{}` is not a command nixcmd can find", n.name));
        }
    }
    Plan::Nested(
        block
            .nested
            .iter()
            .map(|n| (n.name.clone(), n.args.clone()))
            .collect(),
    )
}

/// Passes a nested run's events to the parent as output lines of the parent step.
pub struct Forward<F: FnMut(String) + Send> {
    pub name: String,
    pub push: F,
}

impl<F: FnMut(String) + Send> Sink for Forward<F> {
    fn event(&mut self, event: &Event, _: &str) {
        let n = &self.name;
        let line = match &event.kind {
            EventKind::RunStarted { .. } => format!("[/{n}] started as run {}", event.run_id),
            EventKind::StepFinished {
                step_id, status, ..
            } => format!("[/{n}] {step_id}: {}", status.label()),
            EventKind::Output { step_id, line, .. } => format!("[/{n}] {step_id} │ {line}"),
            EventKind::Warning { message, .. } => format!("[/{n}] warning: {message}"),
            EventKind::Gate {
                message, resume, ..
            } => format!("[/{n}] paused: {message} ({resume})"),
            EventKind::RollbackStarted { reason, .. } => format!("[/{n}] rolling back: {reason}"),
            EventKind::RunFinished {
                status, exit_code, ..
            } => {
                format!("[/{n}] {} (exit {exit_code})", status.label())
            }
            EventKind::StepStarted { .. } => return,
        };
        (self.push)(line);
    }
}
