//! Diagnostics: what nixcmd found wrong or doubtful in a command file, with where (`line:col`
//! and the length to underline), what to do about it, and how serious it is. Rendering to
//! text happens here as pure string building; printing belongs to the output module.

use crate::source::{Position, SourceFile, Span};
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Informational: never fails `check`, even with `--strict`.
    Note,
    /// Fails `check --strict`.
    Warning,
    /// Fails `check`; the command will not run.
    Error,
    /// The file cannot be read as a command at all (not UTF-8, binary, too large, …).
    Fatal,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error | Severity::Fatal => "error",
        }
    }
}

/// One finding. `code` is a stable kebab-case rule name (`duplicate-id`, `placeholder`, …).
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    /// Where in the file; `None` for findings about the whole file (missing file, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// How many characters to underline from `position` (at least one caret).
    #[serde(skip)]
    pub width: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity,
            code,
            message: message.into(),
            position: None,
            width: 1,
            hint: None,
        }
    }

    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, message)
    }

    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Fatal, code, message)
    }

    /// Points the diagnostic at a byte span of `file`; the underline stops at the line end.
    pub fn at(mut self, file: &SourceFile, span: Span) -> Self {
        let start = file.position(span.start);
        let line = file.line_text(start.line);
        let remaining = line.chars().count().saturating_sub(start.col - 1);
        let wanted = file
            .text
            .get(span.clone())
            .map(|s| s.lines().next().unwrap_or("").chars().count())
            .unwrap_or(1);
        self.position = Some(start);
        self.width = wanted.clamp(1, remaining.max(1));
        self
    }

    /// Points the diagnostic at a known position.
    pub fn at_position(mut self, position: Position, width: usize) -> Self {
        self.position = Some(position);
        self.width = width.max(1);
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// `path:line:col`, or just the path for file-wide findings.
    pub fn location(&self, file_name: &str) -> String {
        match self.position {
            Some(p) => format!("{file_name}:{}:{}", p.line, p.col),
            None => file_name.to_string(),
        }
    }

    /// The human rendering: headline, location arrow, source line, caret, hint.
    pub fn render(&self, file: Option<&SourceFile>, file_name: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}[{}]: {}",
            self.severity.label(),
            self.code,
            self.message
        );
        let _ = writeln!(out, "  --> {}", self.location(file_name));
        if let (Some(file), Some(p)) = (file, self.position) {
            let text = file.line_text(p.line);
            let gutter = p.line.to_string().len();
            let _ = writeln!(out, "{:gutter$} |", "");
            let _ = writeln!(out, "{} | {}", p.line, text.replace('\t', " "));
            let _ = writeln!(
                out,
                "{:gutter$} | {}{}",
                "",
                " ".repeat(p.col - 1),
                "^".repeat(self.width)
            );
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "  = hint: {hint}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_and_caret_under_the_span() {
        let file = SourceFile::new("x.md", "# T\n```bash {idd=a}\n```\n");
        let start = file.text.find("idd").unwrap();
        let d = Diagnostic::error("unknown-attribute", "unknown attribute `idd`")
            .at(&file, start..start + 3)
            .with_hint("did you mean `id`?");
        assert_eq!(
            d.render(Some(&file), "x.md"),
            "error[unknown-attribute]: unknown attribute `idd`\n  --> x.md:2:10\n  |\n2 | ```bash {idd=a}\n  |          ^^^\n  = hint: did you mean `id`?\n"
        );
    }
}
