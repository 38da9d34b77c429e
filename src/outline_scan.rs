//! The headings and fenced blocks of plain Markdown from a scan of its lines: what a summary
//! (`list`) needs from a body, without a full CommonMark parse. Where a line could mean
//! something a line scan cannot be sure of — block quotes, HTML, link definitions, tables,
//! tabs, indented or list-nested fences and code, setext underlines, inline markup in a
//! heading, unclosed fences, carriage returns — it answers `None`, and the caller builds the
//! full [`outline`](crate::outline). Fences come without their code, and paragraphs and list
//! items are left out: a summary reads neither.

use crate::outline::{Element, ElementKind};
use std::borrow::Cow;
use std::cell::Cell;

/// The outline's headings and fences of `body`, a slice of the file starting at byte `base`,
/// or `None` when only a full parse can tell.
pub fn scan<'a>(file_text: &'a str, base: usize, body: &'a str) -> Option<Vec<Element<'a>>> {
    if memchr::memchr(b'\r', body.as_bytes()).is_some() {
        return None;
    }
    // A typical runbook has a dozen headings and fences: no regrowing for those. The vector
    // is the one the previous file on this thread gave back ([`recycle`]), if any.
    let mut out = SPARE.take();
    out.reserve(16);
    let mut offset = base;
    // Whether the previous line was text a `---` or `===` line would turn into a heading.
    let mut after_text = false;
    let mut lines = Lines(body);
    // Most runbooks have no table at all: then no line needs looking at for one.
    let has_pipe = memchr::memchr(b'|', body.as_bytes()).is_some();
    while let Some(line) = lines.next() {
        let start = offset;
        offset += line.len();
        let bare = line.strip_suffix('\n').unwrap_or(line);
        // Bytes, not chars: every test below is on ASCII bytes, which never occur inside a
        // multi-byte character, so slicing at them stays on character boundaries.
        let bytes = bare.as_bytes();
        let indent = spaces(bytes);
        let rest = &bare[indent..];
        // A blank line (`indent` took every space).
        let Some(&first) = rest.as_bytes().first() else {
            after_text = false;
            continue;
        };
        if first == b'\t' {
            return None;
        }
        if indent >= 4 {
            // Indented code, or the continuation of a list item: only a parse knows which.
            return None;
        }
        if matches!(first, b'`' | b'~') && run(rest, first) >= 3 {
            if indent > 0 {
                return None;
            }
            let open = run(rest, first);
            let after = &rest[open..];
            if first == b'`' && memchr::memchr(b'`', after.as_bytes()).is_some() {
                // Not a fence: inline code in a paragraph.
                return None;
            }
            // The fence's code is skipped, not split into lines: only a line holding the
            // marker can close it, and most code holds none.
            let end = closing_line_end(lines.0.as_bytes(), first, open)?;
            offset += end;
            lines.0 = &lines.0[end..];
            // Just after the fence characters and the blanks after them, as
            // `outline::info_offset` finds it for an unindented fence.
            let info_offset =
                start + open + (after.len() - after.trim_start_matches([' ', '\t']).len());
            debug_assert_eq!(info_offset, crate::outline::info_offset(file_text, start));
            // The opening line after the fence characters, as `outline::raw_info` reads it.
            let info = file_text[info_offset..start + bare.len()].trim_end();
            out.push(Element {
                kind: ElementKind::Fence {
                    info: Cow::Borrowed(info),
                    code: Default::default(),
                    info_offset,
                    closed: true,
                    fenced: true,
                },
                span: start..offset,
            });
            after_text = false;
            continue;
        }
        match first {
            b'#' => {
                let level = run(rest, b'#');
                let after = &rest[level..];
                if level > 6 || !(after.is_empty() || after.starts_with(' ')) {
                    // `#tag` or `#######`: paragraph text.
                    after_text = true;
                    continue;
                }
                let text = trim_spaces(after);
                let text = if simple_heading(text) {
                    Cow::Borrowed(text)
                } else if plain_heading(text) {
                    squeeze_spaces(text)
                } else {
                    return None;
                };
                out.push(Element {
                    kind: ElementKind::Heading {
                        level: level as u8,
                        text,
                    },
                    span: start..start + bare.len(),
                });
                after_text = false;
            }
            b'>' | b'<' | b'|' => return None,
            b'[' if rest.contains("]:") => return None,
            b'=' | b'-' if after_text && underline(rest) => return None,
            _ => {
                if has_pipe
                    && memchr::memchr(b'|', rest.as_bytes()).is_some()
                    && is_table_delimiter(rest)
                {
                    return None;
                }
                if let Some(content) = list_content(rest)
                    && (content.starts_with(['#', '>', '<', '\t', '|'])
                        || run(content, b'`') >= 3
                        || run(content, b'~') >= 3
                        || content.starts_with("    ")
                        || (content.starts_with('[') && content.contains("]:")))
                {
                    return None;
                }
                after_text = true;
            }
        }
    }
    Some(out)
}

/// `s` without the spaces at either end: a byte loop (`str::trim_matches` goes through the
/// generic pattern searcher, a few dozen instructions more for each heading of each file).
fn trim_spaces(s: &str) -> &str {
    let b = s.as_bytes();
    let start = spaces(b);
    let end = b.iter().rposition(|&c| c != b' ').map_or(start, |i| i + 1);
    // Both ends are next to an ASCII space (or the ends of `s`): character boundaries.
    &s[start..end]
}

/// The number of spaces at the start of `bytes`.
fn spaces(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|&&b| b == b' ').count()
}

thread_local! {
    /// An empty outline vector with room, kept between the files one thread reads: sixteen
    /// elements are over a kilobyte, and a fresh allocation of that size per file made
    /// malloc tidy its small free chunks every time (about 3 % of `list`).
    /// Empty between files, so `'static`: an empty `Vec<Element<'static>>` serves as any
    /// `Vec<Element<'a>>` (covariance).
    static SPARE: Cell<Vec<Element<'static>>> = const { Cell::new(Vec::new()) };
}

/// Hands an outline's vector back for the next [`scan`] on this thread (its elements are
/// dropped). A large one is freed instead: a big file's outline should not stay in memory.
pub fn recycle(mut elements: Vec<Element>) {
    if elements.capacity() <= 64 {
        elements.clear();
        // Emptied, it holds nothing borrowed: collecting it into `Element<'static>` keeps
        // its memory (same layout) without unsafe code.
        let spare: Vec<Element<'static>> = elements
            .into_iter()
            .map(|_| unreachable!("emptied"))
            .collect();
        SPARE.set(spare);
    }
}

/// The lines of a text, each with its `\n`; memchr finds the ends.
struct Lines<'a>(&'a str);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    // Inlined into the scan: one call a line was a fifth of its cost.
    #[inline(always)]
    fn next(&mut self) -> Option<&'a str> {
        if self.0.is_empty() {
            return None;
        }
        let end = newline(self.0.as_bytes()).map_or(self.0.len(), |i| i + 1);
        let (line, rest) = self.0.split_at(end);
        self.0 = rest;
        Some(line)
    }
}

/// The index of the first `\n` in `bytes`. A runbook's lines are a few dozen bytes: a word
/// at a time inline finds most line ends in fewer instructions than the call and set-up of
/// `memchr` (called once a line, that was a third of the scan); a long line goes to
/// `memchr` after the first 32 bytes.
#[inline]
fn newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut at = 0;
    while at < 32 {
        let Some(word) = bytes[at..].first_chunk::<8>() else {
            return bytes[at..].iter().position(|&b| b == b'\n').map(|i| at + i);
        };
        // The top bit of each byte that is `\n` (a zero after the xor). A borrow may flag
        // bytes above a match too, never one below: the lowest flag is the first match.
        let x = u64::from_le_bytes(*word) ^ (ONES * u64::from(b'\n'));
        let found = x.wrapping_sub(ONES) & !x & (ONES << 7);
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    memchr::memchr(b'\n', &bytes[at..]).map(|i| at + i)
}

/// The end (just past its `\n`, or the end of `code`) of the first line of `code` that closes
/// a fence of `open` × `marker`, or `None` when no line does. Only lines holding the marker
/// are looked at: one `memchr` over a block without any.
fn closing_line_end(code: &[u8], marker: u8, open: usize) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = memchr::memchr(marker, &code[from..]) {
        let at = from + found;
        // `from` is always the start of a line. A closing marker usually starts its line.
        let line_start = if at == from || code[at - 1] == b'\n' {
            at
        } else {
            memchr::memrchr(b'\n', &code[from..at]).map_or(from, |i| from + i + 1)
        };
        let line_end = newline(&code[at..]).map_or(code.len(), |i| at + i + 1);
        if closes(&code[line_start..line_end], marker, open) {
            return Some(line_end);
        }
        from = line_end;
    }
    None
}

/// Heading text that is certainly plain and already squeezed: ASCII words without markup
/// or backticks, single spaces between them. (Anything else goes the long way:
/// [`plain_heading`], then [`squeeze_spaces`].)
fn simple_heading(text: &str) -> bool {
    let mut space_before = true;
    for &b in text.as_bytes() {
        if b == b' ' {
            if space_before {
                return false;
            }
            space_before = true;
        } else if PLAIN_WORD[usize::from(b)] {
            space_before = false;
        } else {
            return false;
        }
    }
    !space_before
}

/// ASCII graphic characters without a meaning in a heading's inline parse (see
/// [`is_markup`], and the backtick of code spans).
const PLAIN_WORD: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = b'!';
    while b <= b'~' {
        table[b as usize] = !is_markup(b) && b != b'`';
        b += 1;
    }
    table
};

/// A byte that may start inline markup in a heading (emphasis, links, HTML, entities,
/// escapes, strikethrough, tables, closing `#`s), or a tab.
const fn is_markup(b: u8) -> bool {
    matches!(
        b,
        b'\\' | b'*' | b'_' | b'[' | b']' | b'<' | b'>' | b'&' | b'!' | b'~' | b'|' | b'#' | b'\t'
    )
}

/// Heading text whose inline parse is the text itself: no emphasis, links, HTML, entities
/// or escapes, and code spans only in their simplest form (`` `x` ``), which the outline
/// keeps with their backticks.
fn plain_heading(text: &str) -> bool {
    // All ASCII: checked byte by byte (a multi-byte character never matches one).
    let mut code = false;
    let mut count = 0;
    for part in text.as_bytes().split(|&b| b == b'`') {
        count += 1;
        let ok = if code {
            // A code span's text is kept as is unless it is padded with spaces.
            !part.is_empty() && !part.starts_with(b" ") && !part.ends_with(b" ")
        } else {
            !part.iter().any(|&b| is_markup(b))
        };
        if !ok {
            return false;
        }
        code = !code;
    }
    count % 2 == 1
}

/// The length of the run of `c` bytes at the start of `s`.
fn run(s: &str, c: u8) -> usize {
    s.bytes().take_while(|&b| b == c).count()
}

/// A closing fence line (with its `\n`, if any) for a fence of `open` × `marker`.
fn closes(line: &[u8], marker: u8, open: usize) -> bool {
    let indent = spaces(line);
    if indent > 3 {
        return false;
    }
    let rest = &line[indent..];
    let n = rest.iter().take_while(|&&b| b == marker).count();
    n >= open && rest[n..].iter().all(|&b| matches!(b, b' ' | b'\t' | b'\n'))
}

/// `===` or `---` alone on a line: a setext underline after text.
fn underline(rest: &str) -> bool {
    let t = rest.trim_end_matches(' ');
    t.bytes().all(|b| b == b'=') || t.bytes().all(|b| b == b'-')
}

/// A table's delimiter row (`| --- | :-: |`, `---|---`).
fn is_table_delimiter(rest: &str) -> bool {
    rest.contains('-')
        && rest
            .bytes()
            .all(|b| matches!(b, b'|' | b'-' | b':' | b' ' | b'\t'))
}

/// The text after the list markers at the start of a line (`- `, `1. `, `- [ ] `…, nested
/// ones too), or `None` when the line is not a list item.
fn list_content(rest: &str) -> Option<&str> {
    let mut s = rest;
    let mut item = false;
    loop {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        let marker = if (1..=9).contains(&digits) && s[digits..].starts_with(['.', ')']) {
            digits + 1
        } else if s.starts_with(['-', '*', '+']) {
            1
        } else {
            0
        };
        if marker == 0 {
            break;
        }
        let after = &s[marker..];
        if after.is_empty() {
            return Some(after);
        }
        if !after.starts_with([' ', '\t']) {
            break;
        }
        item = true;
        let trimmed = after.trim_start_matches(' ');
        // Five or more spaces after a marker start indented code inside the item.
        if after.len() - trimmed.len() > 4 {
            return Some(after);
        }
        s = trimmed;
    }
    item.then_some(s)
}

/// Runs of whitespace to one space: the heading text as the outline squeezes it. Borrowed
/// when it is already squeezed (the usual heading: ASCII words and single spaces).
fn squeeze_spaces(text: &str) -> Cow<'_, str> {
    // Already squeezed: ASCII words, each space between two of them.
    let mut space_before = true;
    let mut squeezed = true;
    for &b in text.as_bytes() {
        if b == b' ' && !space_before {
            space_before = true;
        } else if b.is_ascii_graphic() {
            space_before = false;
        } else {
            squeezed = false;
            break;
        }
    }
    squeezed &= !space_before || text.is_empty();
    if squeezed {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closing line found by searching for the marker is the one a walk over every
    /// line finds.
    #[test]
    fn closing_line_search_equals_a_line_walk() {
        let walk = |code: &str, marker: u8, open: usize| {
            let mut end = 0;
            for line in Lines(code) {
                end += line.len();
                if closes(line.as_bytes(), marker, open) {
                    return Some(end);
                }
            }
            None
        };
        let pieces = [
            "x\n",
            "```\n",
            "````\n",
            "  ```\n",
            "    ```\n",
            "a ```\n",
            "```bash\n",
            "``` \t\n",
            "~~~\n",
            "``\n",
            "```",
            "`x`\n",
            "\n",
            " ``` ```\n",
        ];
        let mut cases = Vec::new();
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    cases.push(format!("{a}{b}{c}"));
                }
            }
        }
        for code in &cases {
            for (marker, open) in [(b'`', 3), (b'`', 4), (b'~', 3)] {
                assert_eq!(
                    closing_line_end(code.as_bytes(), marker, open),
                    walk(code, marker, open),
                    "{code:?} {open}"
                );
            }
        }
    }

    /// The inline search finds the first `\n` as `memchr` does, wherever it is.
    #[test]
    fn newline_search_equals_memchr() {
        for len in 0..80 {
            let mut bytes = vec![b'a'; len];
            assert_eq!(newline(&bytes), None);
            for at in 0..len {
                bytes[at] = b'\n';
                assert_eq!(newline(&bytes), Some(at), "{len} {at}");
                // A byte one above `\n` right after it (a borrow's false match) and more
                // line ends after it change nothing.
                if at + 1 < len {
                    bytes[at + 1] = 0x0b;
                }
                for b in bytes.iter_mut().skip(at + 2).step_by(3) {
                    *b = b'\n';
                }
                assert_eq!(newline(&bytes), Some(at), "{len} {at}");
                bytes.fill(0x8a);
            }
        }
    }

    /// The short way for headings agrees with the long one wherever it answers.
    #[test]
    fn simple_headings_are_plain_and_squeezed() {
        for text in [
            "Steps",
            "Apply the change",
            "a  b",
            " a",
            "a ",
            "",
            "C# notes",
            "`code`",
            "*x*",
            "Step 1: Build",
            "naïve",
            "a\tb",
            "x_y",
            "a.b-c",
            "(x) {y}",
        ] {
            if simple_heading(text) {
                assert!(plain_heading(text), "{text:?}");
                assert_eq!(squeeze_spaces(text), text, "{text:?}");
            }
        }
        assert!(simple_heading("Apply the change"));
        assert!(!simple_heading("a  b"));
        assert!(!simple_heading("`code`"));
    }

    #[test]
    fn spaces_are_trimmed_as_trim_matches_does() {
        for s in [
            "", " ", "   ", "a", " a", "a ", "  a b  ", "é ", " \t a\t ", "·",
        ] {
            assert_eq!(trim_spaces(s), s.trim_matches(' '), "{s:?}");
        }
    }

    #[test]
    fn a_recycled_vector_keeps_its_memory() {
        let text = String::from("## Steps\n");
        let mut v = Vec::with_capacity(16);
        v.push(scan(&text, 0, &text).unwrap().remove(0));
        let before = v.capacity();
        recycle(v);
        assert_eq!(SPARE.take().capacity(), before);
    }

    /// The full outline's headings and fences, with the code left out as the scan does.
    fn full(md: &str) -> Vec<(ElementKind<'_>, usize)> {
        crate::outline::build(md, 0, md)
            .into_iter()
            .filter_map(|e| match e.kind {
                ElementKind::Heading { .. } => Some((e.kind, e.span.start)),
                ElementKind::Fence {
                    info,
                    info_offset,
                    closed,
                    fenced,
                    ..
                } => Some((
                    ElementKind::Fence {
                        info,
                        code: Default::default(),
                        info_offset,
                        closed,
                        fenced,
                    },
                    e.span.start,
                )),
                _ => None,
            })
            .collect()
    }

    fn line_of(md: &str, offset: usize) -> usize {
        md[..offset].matches('\n').count()
    }

    #[test]
    fn agrees_with_the_full_outline_or_declines() {
        let cases = [
            "# T\n\nIntro *text*.\n\n## Steps\n### One\n```bash {id=a confirm=\"Go?\"}\necho\n```\n",
            "## Steps\n1. do\n2. this\n```bash\nx\n```\n- [ ] check\n",
            "##   Spaced   out  \n~~~sh\n```\n~~~\n",
            "#tag\n####### seven\n## Steps ##\n",
            "para\n---\n",
            "para\n\n---\n\n## After\n",
            "> ## quoted\n",
            "<div>\n```bash\n</div>\n",
            "- ```bash\n  x\n  ```\n",
            "1. Step\n   ```bash\n   x\n   ```\n",
            "    ```bash\n",
            "```bash\nunclosed\n",
            "````\n```\n````\n",
            "```a`b\n```\n",
            "## **Bold**\n",
            "| a | b |\n|---|---|\n# h\n",
            "[x]:\n```bash\n",
            "text\n===\n",
            "- - # nested heading\n",
            "## Steps\r\n",
            "## Steps\n```bash\n  ```  \n",
            "## Step\u{a0}one  two\n- [ ] done\n- [x]: /url\n",
            "## Why `a  b` and `c`\n- `code`: text\n- ``` x\n",
            "## ` padded `\n",
            "## odd ` tick\n",
            "## `*not emphasis*`\n",
            "## ``double``\n",
        ];
        for md in cases {
            if let Some(scanned) = scan(md, 0, md) {
                let scanned: Vec<_> = scanned
                    .into_iter()
                    .map(|e| (e.kind, line_of(md, e.span.start)))
                    .collect();
                let full: Vec<_> = full(md)
                    .into_iter()
                    .map(|(k, start)| (k, line_of(md, start)))
                    .collect();
                assert_eq!(scanned, full, "{md:?}");
            }
        }
        assert!(scan(cases[0], 0, cases[0]).is_some());
        assert!(scan(cases[1], 0, cases[1]).is_some());
        assert!(scan(cases[6], 0, cases[6]).is_none());
    }
}
