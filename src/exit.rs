//! The exit codes of DESIGN.md §3, in one enum. Nothing else chooses a process exit code.

/// Why nixcmd exits. The discriminants are the documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Exit {
    /// Success (warnings allowed).
    Success = 0,
    /// A step or success criterion failed and rollback completed; `check` found errors.
    Failed = 1,
    /// Usage error, unknown command, invalid runbook.
    Usage = 2,
    /// A confirmation is needed or was declined; nothing past the gate ran.
    NeedsConfirmation = 3,
    /// Prerequisites not met; nothing changed.
    Prerequisites = 4,
    /// Rollback incomplete: manual action needed.
    RollbackIncomplete = 5,
    /// Interrupted (Ctrl-C).
    Interrupted = 130,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }

    pub fn from_code(code: i32) -> Option<Exit> {
        [
            Exit::Success,
            Exit::Failed,
            Exit::Usage,
            Exit::NeedsConfirmation,
            Exit::Prerequisites,
            Exit::RollbackIncomplete,
            Exit::Interrupted,
        ]
        .into_iter()
        .find(|e| e.code() == code)
    }
}

/// An error that ends the program with a given exit code and a message for people.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            exit: Exit::Usage,
            message: message.into(),
            hint: None,
        }
    }

    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Unexpected I/O and other internal errors are reported as usage-level failures with their
/// context chain; a panic (exit 101) is always a bug.
impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<Failure>() {
            Ok(f) => f,
            Err(e) => Failure::usage(format!("{e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    #[test]
    fn codes_match_the_design_table() {
        let all = [
            (Exit::Success, 0),
            (Exit::Failed, 1),
            (Exit::Usage, 2),
            (Exit::NeedsConfirmation, 3),
            (Exit::Prerequisites, 4),
            (Exit::RollbackIncomplete, 5),
            (Exit::Interrupted, 130),
        ];
        for (exit, code) in all {
            assert_eq!(exit.code(), code);
            assert_eq!(Exit::from_code(code), Some(exit));
        }
    }
}
