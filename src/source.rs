//! A command file's text with its name and a line index, so that any byte offset can be turned
//! into `line:col` and the line it sits on. Owns no I/O: callers hand it text they already read.

use std::ops::Range;
use std::sync::OnceLock;

/// A byte range into a [`SourceFile`]'s text.
pub type Span = Range<usize>;

/// One command file as text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// What diagnostics call the file: a path as the user gave it, or `builtin:NAME`.
    pub name: String,
    pub text: String,
    /// Where each line starts, made when first asked for: a walk through the file counts
    /// lines with a [`LineCursor`] instead, and most files need no position at all (no
    /// diagnostics); the index of a large file is thousands of entries.
    line_starts: OnceLock<Vec<usize>>,
}

/// Where a walk through a [`SourceFile`] is: an offset and the newlines before it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LineCursor {
    offset: usize,
    newlines: usize,
}

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Position {
    pub line: usize,
    pub col: usize,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
            line_starts: OnceLock::new(),
        }
    }

    fn line_starts(&self) -> &[usize] {
        self.line_starts.get_or_init(|| {
            // memchr rather than `match_indices`, and counted first so a large file's
            // index is allocated once.
            let newlines = memchr::memchr_iter(b'\n', self.text.as_bytes());
            let mut starts = Vec::with_capacity(newlines.count() + 1);
            starts.push(0);
            starts.extend(memchr::memchr_iter(b'\n', self.text.as_bytes()).map(|i| i + 1));
            starts
        })
    }

    /// The position of a byte offset; offsets past the end clamp to the end.
    pub fn position(&self, offset: usize) -> Position {
        let offset = offset.min(self.text.len());
        let line_index = match self.line_starts().binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts()[line_index];
        let mut col_end = offset;
        while !self.text.is_char_boundary(col_end) {
            col_end -= 1;
        }
        Position {
            line: line_index + 1,
            col: self.text[start..col_end].chars().count() + 1,
        }
    }

    /// The 1-based line of a byte offset (clamped to the end): [`Self::position`] without the
    /// column, which counts characters from the line's start and is not needed for a line
    /// number (the parser asks for one per block, and `list` parses a thousand files).
    pub fn line_of(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        match self.line_starts().binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// [`Self::line_of`] for offsets met mostly in increasing order (a walk through the
    /// file): counts the newlines from the cursor's offset, without the line index (one
    /// pass over the file in all, where a binary search per offset is a cache miss per
    /// step). An offset before the cursor is looked up in the index.
    pub fn line_of_from(&self, offset: usize, cursor: &mut LineCursor) -> usize {
        let offset = offset.min(self.text.len());
        if offset >= cursor.offset {
            let gap = &self.text.as_bytes()[cursor.offset..offset];
            cursor.newlines += memchr::memchr_iter(b'\n', gap).count();
        } else {
            cursor.newlines = self.line_of(offset) - 1;
        }
        cursor.offset = offset;
        cursor.newlines + 1
    }

    /// The byte offset where a 1-based line starts (clamped to the end of the text).
    pub fn line_start(&self, line: usize) -> usize {
        self.line_starts()
            .get(line.saturating_sub(1))
            .copied()
            .unwrap_or(self.text.len())
    }

    /// The text of a 1-based line without its line ending.
    pub fn line_text(&self, line: usize) -> &str {
        let start = self.line_start(line);
        let end = self
            .line_starts()
            .get(line)
            .copied()
            .unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }

    pub fn line_count(&self) -> usize {
        self.line_starts().len()
    }

    /// The byte offset in the file where a block's `code_line`, found on file `line`, has its
    /// first non-blank character.
    ///
    /// A block's code is its file lines without their container prefix (a list item's
    /// indentation, `> `), so the code after a line's leading blanks is the end of its file
    /// line; the blanks themselves may differ, because a tab that the list item's
    /// indentation splits becomes spaces in the code, and then the code line is not a
    /// substring of the file line. A blank code line has no such end to match: it is looked
    /// for as it is.
    pub fn code_start(&self, line: usize, code_line: &str) -> usize {
        let text = self.line_text(line);
        let content = code_line.trim_start();
        let lead = code_line.len() - content.len();
        let at = match text.strip_suffix(content) {
            Some(prefix) if !content.is_empty() => prefix.len(),
            _ => text.find(code_line).map_or(lead, |at| at + lead),
        };
        self.line_start(line) + at.min(text.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let f = SourceFile::new("t.md", "ab\néx y\n");
        assert_eq!(f.position(0), Position { line: 1, col: 1 });
        assert_eq!(f.position(3), Position { line: 2, col: 1 });
        // "é" is two bytes: the "x" after it is column 2.
        assert_eq!(f.position(5), Position { line: 2, col: 2 });
        assert_eq!(f.line_text(2), "éx y");
        assert_eq!(f.position(999), Position { line: 3, col: 1 });
        for offset in 0..12 {
            assert_eq!(f.line_of(offset), f.position(offset).line, "{offset}");
        }
    }

    /// The cursor gives the same lines as the binary search, forward (near and far),
    /// backward and past the end.
    #[test]
    fn line_of_from_agrees_with_line_of() {
        let text: String = (0..100).map(|i| "x".repeat(i % 7) + "\n").collect();
        let f = SourceFile::new("t.md", text);
        let mut cursor = LineCursor::default();
        let offsets = (0..f.text.len() + 3)
            .chain([5, 0, 300, 2, 250, 251, 9999])
            .chain((0..f.text.len()).rev().step_by(13));
        for offset in offsets {
            assert_eq!(
                f.line_of_from(offset, &mut cursor),
                f.line_of(offset),
                "{offset}"
            );
        }
        let empty = SourceFile::new("e.md", "");
        assert_eq!(empty.line_of_from(3, &mut LineCursor::default()), 1);
    }
}
