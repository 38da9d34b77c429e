//! Diagnostics: what nixcmd found wrong or doubtful in a command file, with where (`line:col`
//! and the length to underline), what to do about it, and how serious it is. Rendering to
//! text happens here as pure string building; printing belongs to the output module.

use crate::source::{Position, SourceFile, Span};
use crate::terminal_text::visible;
use serde::Serialize;
use std::fmt::Write as _;
use unicode_width::UnicodeWidthChar;

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
        // The message and the file name can quote the file (an attribute, a placeholder, a
        // path): its control characters are shown, not sent to the terminal.
        let _ = writeln!(
            out,
            "{}[{}]: {}",
            self.severity.label(),
            self.code,
            visible(&self.message)
        );
        // No file to name (a finding about the flake of a folder with no config): no arrow
        // pointing at nothing.
        let location = self.location(file_name);
        if !location.is_empty() {
            let _ = writeln!(out, "  --> {}", visible(&location));
        }
        if let (Some(file), Some(p)) = (file, self.position) {
            let (text, caret_col, width) = excerpt(file.line_text(p.line), p.col, self.width);
            let (pad, carets) = caret_columns(&text, caret_col, width);
            let gutter = p.line.to_string().len();
            let _ = writeln!(out, "{:gutter$} |", "");
            let _ = writeln!(out, "{} | {}", p.line, text);
            let _ = writeln!(
                out,
                "{:gutter$} | {}{}",
                "",
                " ".repeat(pad),
                "^".repeat(carets)
            );
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "  = hint: {}", visible(hint));
        }
        out
    }
}

/// Longest source line shown in full; longer lines are cut to a window around the column.
const MAX_SHOWN: usize = 160;

/// The printable part of `line` to show for a finding at 1-based `col` underlining `width`
/// characters, with the caret's column and width in that excerpt. A minified or generated
/// line can be megabytes long: only a window around the column is shown, marked with `…`.
fn excerpt(line: &str, col: usize, width: usize) -> (String, usize, usize) {
    let shown = printable(line);
    let len = shown.chars().count();
    let col = col.max(1);
    if len <= MAX_SHOWN {
        return (shown, col, width.max(1));
    }
    let start = (col - 1)
        .saturating_sub(MAX_SHOWN / 3)
        .min(len.saturating_sub(MAX_SHOWN));
    let end = (start + MAX_SHOWN).min(len);
    let mut text: String = shown.chars().skip(start).take(end - start).collect();
    let mut caret_col = col - start;
    if start > 0 {
        text.insert(0, '…');
        caret_col += 1;
    }
    if end < len {
        text.push('…');
    }
    let room = (end + 1).saturating_sub(col).max(1);
    (text, caret_col, width.clamp(1, room))
}

/// Where the carets under `text` go at a terminal: the display columns before the 1-based
/// character `col`, and the columns of the `width` characters from there (at least one).
/// Positions count characters (`path:line:col`), but a wide character (CJK, most emoji)
/// takes two columns and a combining accent none: counting one space per character put
/// the carets under the wrong text. Characters past the line's end count one column each.
fn caret_columns(text: &str, col: usize, width: usize) -> (usize, usize) {
    let columns = |c: char| c.width().unwrap_or(0);
    let mut chars = text.chars().map(columns).chain(std::iter::repeat(1));
    let pad = chars.by_ref().take(col.saturating_sub(1)).sum();
    let carets = chars.take(width).sum::<usize>();
    (pad, carets.max(1))
}

/// A source line as it can be shown at a terminal: a tab becomes a space and other control
/// characters their visible Unicode pictures (`␀`, C1 and bidirectional controls U+FFFD), one character each
/// so carets stay aligned.
fn printable(line: &str) -> String {
    line.chars()
        .map(|c| match c {
            '\t' => ' ',
            '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('?'),
            '\u{7f}' => '\u{2421}',
            // C1 controls (U+009B is CSI in some terminals): one visible character.
            '\u{80}'..='\u{9f}' => '\u{fffd}',
            c if crate::terminal_text::is_bidi_control(c) => '\u{fffd}',
            c => c,
        })
        .collect()
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

    #[test]
    fn long_lines_are_cut_around_the_column() {
        let line = format!("{}XYZ{}", "a".repeat(1000), "b".repeat(1000));
        let (text, caret, width) = excerpt(&line, 1001, 3);
        assert_eq!(text.chars().count(), MAX_SHOWN + 2);
        assert!(text.starts_with('…') && text.ends_with('…'));
        let chars: Vec<char> = text.chars().collect();
        assert_eq!(
            chars[caret - 1..caret + 2].iter().collect::<String>(),
            "XYZ"
        );
        assert_eq!(width, 3);
        assert_eq!(excerpt("short", 2, 9), ("short".to_string(), 2, 9));
        let (text, caret, width) = excerpt(&"c".repeat(500), 500, 40);
        assert!(text.starts_with('…') && !text.ends_with('…'));
        assert_eq!((caret, width), (MAX_SHOWN + 1, 1));
    }

    /// Wide characters before a finding push the carets two columns each, combining
    /// accents none; the location still counts characters.
    #[test]
    fn carets_follow_display_columns() {
        // "日本" is two characters, four columns; "e\u{301}" two characters, one column.
        let file = SourceFile::new("x.md", "echo \"日本\" e\u{301} $x\n");
        let start = file.text.find('$').unwrap();
        let d = Diagnostic::warning("shellcheck", "x").at(&file, start..start + 2);
        assert_eq!(
            d.render(Some(&file), "x.md"),
            format!(
                "warning[shellcheck]: x\n  --> x.md:1:14\n  |\n1 | echo \"日本\" e\u{301} $x\n  | {}^^\n",
                " ".repeat(14)
            )
        );
        let start = file.text.find('日').unwrap();
        let d = Diagnostic::warning("shellcheck", "x").at(&file, start..start + 6);
        assert!(
            d.render(Some(&file), "x.md")
                .ends_with("\n  |       ^^^^\n"),
            "{}",
            d.render(Some(&file), "x.md")
        );
        assert_eq!(caret_columns("ab", 5, 2), (4, 2));
        assert_eq!(caret_columns("a\u{301}", 2, 1), (1, 1));
    }

    #[test]
    fn control_characters_are_shown_visibly() {
        assert_eq!(
            printable("a\tb\u{0}\u{1b}[31m\u{7f}"),
            "a b\u{2400}\u{241b}[31m\u{2421}"
        );
    }
}
