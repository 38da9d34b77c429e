//! Markdown → outline: a flat list of the elements nixcmd interprets (headings, paragraphs,
//! list items, fences), each with its byte span in the file. Nesting is flattened on purpose:
//! a fence inside a list item is still a fence of its section. No interpretation happens here.

use pulldown_cmark::{CodeBlockKind, CowStr, Event, Options, Parser, Tag, TagEnd};
use std::borrow::Cow;
use std::ops::Range;

/// Text borrows from the file when it is one run of it (most paragraphs of a large file: a
/// copy of every paragraph doubled the memory `show` touches); it is owned when it had to be
/// assembled (soft breaks, inline code, escapes) or squeezed.
#[derive(Debug, Clone, PartialEq)]
pub enum ElementKind<'a> {
    Heading {
        level: u8,
        text: Cow<'a, str>,
    },
    Paragraph {
        text: Cow<'a, str>,
    },
    /// A list item's own text (not that of items nested in it); `checked` for task items.
    ListItem {
        text: Cow<'a, str>,
        checked: Option<bool>,
    },
    Fence {
        /// The info string as written, borrowed from the file.
        info: Cow<'a, str>,
        code: Cow<'a, str>,
        /// Byte offset of the info string (just after the opening backticks or tildes).
        info_offset: usize,
        /// False when the file ends before the closing fence.
        closed: bool,
        /// False for indented code blocks (four spaces), which have no info string.
        fenced: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Element<'a> {
    pub kind: ElementKind<'a>,
    /// Byte range in the whole file.
    pub span: Range<usize>,
}

enum Open<'a> {
    Heading {
        level: u8,
        text: Cow<'a, str>,
        start: usize,
    },
    Paragraph {
        text: Cow<'a, str>,
        start: usize,
    },
    Item {
        text: Cow<'a, str>,
        checked: Option<bool>,
        start: usize,
        emitted: bool,
    },
    /// A paragraph folded into the list item around it.
    ItemParagraph,
    /// The info string is not kept: a fenced block's is read from the file as written
    /// ([`raw_info`]), an indented block has none.
    Fence {
        code: Cow<'a, str>,
        span: Range<usize>,
        fenced: bool,
    },
}

/// Builds the outline of `body`, a slice of the file starting at byte `base`.
pub fn build<'a>(file_text: &'a str, base: usize, body: &'a str) -> Vec<Element<'a>> {
    build_with(file_text, base, body, |_, _| true)
}

/// [`build`], where the caller says which sections' paragraphs it reads: after each heading
/// of level 1 or 2 (its text as in the outline), `paragraphs(level, text)` tells whether
/// the paragraphs up to the next such heading need their text. Those that do not are
/// elements all the same, with empty text: nothing is gathered or squeezed for them (the
/// prose of a large runbook's Steps is most of the file, and read by no one). List items
/// keep their text.
pub fn build_with<'a>(
    file_text: &'a str,
    base: usize,
    body: &'a str,
    mut paragraphs: impl FnMut(u8, &str) -> bool,
) -> Vec<Element<'a>> {
    let mut keep_paragraphs = true;
    let options =
        Options::ENABLE_TASKLISTS | Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    // About one element per 400 bytes in long runbooks; a generous guess costs only address
    // space (untouched pages are never faulted in), while growing copies every element.
    let mut out = Vec::with_capacity(body.len() / 256 + 16);
    let mut stack: Vec<Open> = Vec::new();
    for (event, range) in Parser::new_ext(body, options).into_offset_iter() {
        let range = range.start + base..range.end + base;
        match event {
            Event::Start(Tag::Heading { level, .. }) => stack.push(Open::Heading {
                level: level as u8,
                text: Cow::Borrowed(""),
                start: range.start,
            }),
            Event::Start(Tag::Paragraph) => {
                if let Some(Open::Item {
                    text,
                    emitted: false,
                    ..
                }) = stack.last()
                    && text.trim().is_empty()
                {
                    stack.push(Open::ItemParagraph);
                } else {
                    stack.push(Open::Paragraph {
                        text: Cow::Borrowed(""),
                        start: range.start,
                    });
                }
            }
            Event::Start(Tag::Item) => {
                flush_item(&mut stack, &mut out, range.start);
                stack.push(Open::Item {
                    text: Cow::Borrowed(""),
                    checked: None,
                    start: range.start,
                    emitted: false,
                })
            }
            Event::Start(Tag::List(_)) => flush_item(&mut stack, &mut out, range.start),
            Event::Start(Tag::CodeBlock(kind)) => {
                flush_item(&mut stack, &mut out, range.start);
                let fenced = matches!(kind, CodeBlockKind::Fenced(_));
                stack.push(Open::Fence {
                    code: Cow::Borrowed(""),
                    span: range,
                    fenced,
                });
            }
            Event::TaskListMarker(done) => {
                if let Some(Open::Item { checked, .. }) = stack
                    .iter_mut()
                    .rev()
                    .find(|o| matches!(o, Open::Item { .. }))
                {
                    *checked = Some(done);
                }
            }
            Event::Text(t) => push_text(body, &mut stack, t, false, keep_paragraphs),
            Event::Code(t) => push_text(body, &mut stack, t, true, keep_paragraphs),
            Event::SoftBreak | Event::HardBreak => push_text(
                body,
                &mut stack,
                CowStr::Borrowed(" "),
                false,
                keep_paragraphs,
            ),
            Event::End(TagEnd::Heading(_)) => {
                if let Some(Open::Heading { level, text, start }) = stack.pop() {
                    let text = squeeze(text);
                    if level <= 2 {
                        keep_paragraphs = paragraphs(level, &text);
                    }
                    out.push(Element {
                        kind: ElementKind::Heading { level, text },
                        span: start..range.end,
                    });
                }
            }
            Event::End(TagEnd::Paragraph) => match stack.pop() {
                Some(Open::Paragraph { text, start }) => out.push(Element {
                    kind: ElementKind::Paragraph {
                        text: squeeze(text),
                    },
                    span: start..range.end,
                }),
                Some(Open::ItemParagraph) | None => {}
                Some(other) => stack.push(other),
            },
            Event::End(TagEnd::Item) => {
                flush_item(&mut stack, &mut out, range.end);
                stack.pop();
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some(Open::Fence { code, span, fenced }) = stack.pop() {
                    let info_offset = info_offset(file_text, span.start);
                    // The info string as written: pulldown-cmark resolves backslash escapes
                    // and entities in it, which would break quoted attribute values
                    // (`confirm="a \"b\""`) and shift every attribute's column.
                    let info = if fenced {
                        raw_info(file_text, info_offset)
                    } else {
                        Cow::Borrowed("")
                    };
                    let closed = !fenced || is_closed(file_text, span.clone());
                    out.push(Element {
                        kind: ElementKind::Fence {
                            info,
                            code,
                            info_offset,
                            closed,
                            fenced,
                        },
                        span,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Adds text to the innermost open element that takes it; a paragraph's only when
/// `paragraphs` (see [`build_with`]).
fn push_text<'a>(
    body: &'a str,
    stack: &mut [Open<'a>],
    t: CowStr<'a>,
    inline_code: bool,
    paragraphs: bool,
) {
    let target = stack
        .iter_mut()
        .rev()
        .find(|o| !matches!(o, Open::ItemParagraph));
    let text = match target {
        Some(Open::Heading { text, .. }) => text,
        Some(Open::Paragraph { text, .. }) if paragraphs => text,
        Some(Open::Item {
            text,
            emitted: false,
            ..
        }) => text,
        Some(Open::Fence { code, .. }) => {
            append_code(body, code, t);
            return;
        }
        _ => return,
    };
    if inline_code {
        let text = text.to_mut();
        text.push('`');
        text.push_str(&t);
        text.push('`');
    } else {
        append(text, t);
    }
}

/// Appends `t`, borrowing it when it is the first text and pulldown-cmark borrowed it too.
fn append<'a>(text: &mut Cow<'a, str>, t: CowStr<'a>) {
    match t {
        CowStr::Borrowed(b) if text.is_empty() => *text = Cow::Borrowed(b),
        t => text.to_mut().push_str(&t),
    }
}

/// [`append`] for a code block, whose text comes a line at a time: lines that follow each
/// other in `body` (a block outside lists and quotes) stay one borrowed slice of it, so the
/// code is not assembled in a string of its own (the parser copies it once, into the block).
fn append_code<'a>(body: &'a str, code: &mut Cow<'a, str>, t: CowStr<'a>) {
    if let (Cow::Borrowed(prev), CowStr::Borrowed(next)) = (&*code, &t)
        && !prev.is_empty()
        && let (Some(a), Some(b)) = (offset_in(body, prev), offset_in(body, next))
        && a + prev.len() == b
    {
        *code = Cow::Borrowed(&body[a..b + next.len()]);
        return;
    }
    append(code, t);
}

/// Where `s` starts in `body`, when it is a slice of it.
fn offset_in(body: &str, s: &str) -> Option<usize> {
    let (start, at) = (body.as_ptr() as usize, s.as_ptr() as usize);
    (at >= start && at + s.len() <= start + body.len()).then(|| at - start)
}

/// Emits the innermost open list item's own text before something nested in it.
fn flush_item<'a>(stack: &mut [Open<'a>], out: &mut Vec<Element<'a>>, end: usize) {
    if let Some(Open::Item {
        text,
        checked,
        start,
        emitted,
    }) = stack.last_mut()
        && !*emitted
    {
        *emitted = true;
        out.push(Element {
            kind: ElementKind::ListItem {
                text: squeeze(std::mem::take(text)),
                checked: *checked,
            },
            span: *start..end.max(*start),
        });
    }
}

/// Collapses runs of whitespace to one space and trims. Takes the text by value: most text
/// (a heading, a paragraph whose soft breaks are already single spaces) needs no change and
/// is returned as is, without a copy.
fn squeeze(s: Cow<'_, str>) -> Cow<'_, str> {
    let b = s.as_bytes();
    let (ascii, odd) = ascii_and_odd(b);
    if ascii {
        // Byte-wise for ASCII text (the common case, and large files): same result as
        // `split_whitespace`, an order of magnitude cheaper.
        if !odd && b.first() != Some(&b' ') && b.last() != Some(&b' ') {
            return s;
        }
        let mut out = String::with_capacity(s.len());
        for word in b.split(u8::is_ascii_whitespace).filter(|w| !w.is_empty()) {
            if !out.is_empty() {
                out.push(' ');
            }
            // ASCII, so every word is valid UTF-8 on its own.
            out.push_str(std::str::from_utf8(word).unwrap_or_default());
        }
        return Cow::Owned(out);
    }
    let mut out = String::with_capacity(s.len());
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    Cow::Owned(out)
}

/// Whether `b` is ASCII, and whether it may need squeezing inside: it has a control byte
/// (tabs and line breaks among them) or two spaces in a row. One pass the compiler turns
/// into vector code (a paragraph is looked at once, where four searches for the same
/// answer were a tenth of `show`'s instructions for a large file). A control byte that is
/// not whitespace only costs the careful path, which then returns the same text.
fn ascii_and_odd(b: &[u8]) -> (bool, bool) {
    let Some((&last, _)) = b.split_last() else {
        return (true, false);
    };
    // `high`: every byte or-ed (ASCII when below 0x80); `low`: the smallest byte (a control
    // byte when below 0x20); `pair`: the smallest `(x | y) ^ 0x20` of a byte `x` and the
    // one after it, 0 for two spaces (or a space and a NUL, a control byte anyway).
    let (mut high, mut low, mut pair) = (last, last, u8::MAX);
    // Each byte with the one after it; the last byte has none and is taken above. In
    // blocks, so the folds stay short enough to be unrolled into vector code.
    for (bytes, next) in b.chunks(4096).zip(b[1..].chunks(4096)) {
        let (h, l, p) = bytes
            .iter()
            .zip(next)
            .fold((0u8, u8::MAX, u8::MAX), |(h, l, p), (&x, &y)| {
                (h | x, l.min(x), p.min((x | y) ^ b' '))
            });
        high |= h;
        low = low.min(l);
        pair = pair.min(p);
    }
    (high < 0x80, low < 0x20 || pair == 0)
}

/// The byte offset just after the opening fence characters on the fence's first line.
pub(crate) fn info_offset(text: &str, fence_start: usize) -> usize {
    let line = &text[fence_start..];
    let indent = line.len() - line.trim_start_matches([' ', '\t', '>']).len();
    let after_indent = &line[indent..];
    let marker = after_indent.chars().next().unwrap_or('`');
    let run = after_indent.len() - after_indent.trim_start_matches(marker).len();
    let after = &after_indent[run..];
    let spaces = after.len() - after.trim_start_matches([' ', '\t']).len();
    fence_start + indent + run + spaces
}

/// The rest of the fence's opening line from `info_offset`, without trailing whitespace.
fn raw_info(text: &str, info_offset: usize) -> Cow<'_, str> {
    let rest = &text[info_offset.min(text.len())..];
    let end = memchr::memchr2(b'\n', b'\r', rest.as_bytes()).unwrap_or(rest.len());
    Cow::Borrowed(rest[..end].trim_end())
}

/// Whether a fenced block's span ends with a closing fence line (not the end of the file).
fn is_closed(text: &str, span: Range<usize>) -> bool {
    let block = text[span].trim_end_matches(['\n', '\r']);
    // The first and the last line, found directly (`lines()` walked every line of the
    // block to its last one).
    let Some(first_end) = memchr::memchr(b'\n', block.as_bytes()) else {
        return false;
    };
    let first = &block[..first_end];
    let last = match memchr::memrchr(b'\n', block.as_bytes()) {
        Some(i) => &block[i + 1..],
        None => block,
    };
    let opening = first.trim_start_matches([' ', '\t', '>']);
    let marker = opening.chars().next().unwrap_or('`');
    let open_len = opening.len() - opening.trim_start_matches(marker).len();
    let last = last.trim_start_matches([' ', '\t', '>']).trim_end();
    last.len() >= open_len && last.chars().all(|c| c == marker)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(md: &str) -> Vec<ElementKind<'_>> {
        build(md, 0, md).into_iter().map(|e| e.kind).collect()
    }

    #[test]
    fn flattens_fences_inside_list_items() {
        let md = "## Steps\n1. **Edit** it\n   ```bash {id=x}\n   echo hi\n   ```\n- [ ] done\n";
        let k = kinds(md);
        assert_eq!(
            k[0],
            ElementKind::Heading {
                level: 2,
                text: "Steps".into()
            }
        );
        assert_eq!(
            k[1],
            ElementKind::ListItem {
                text: "Edit it".into(),
                checked: None
            }
        );
        match &k[2] {
            ElementKind::Fence {
                info, code, closed, ..
            } => {
                assert_eq!(info, "bash {id=x}");
                assert_eq!(code, "echo hi\n");
                assert!(closed);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            k[3],
            ElementKind::ListItem {
                text: "done".into(),
                checked: Some(false)
            }
        );
    }

    #[test]
    fn detects_unclosed_fences_and_info_offsets() {
        let md = "text\n\n```bash {id=a}\necho\n";
        let els = build(md, 0, md);
        match &els[1].kind {
            ElementKind::Fence {
                closed,
                info_offset,
                ..
            } => {
                assert!(!closed);
                assert_eq!(&md[*info_offset..*info_offset + 4], "bash");
            }
            other => panic!("{other:?}"),
        }
        let md = "```\n```\n";
        assert!(matches!(
            &build(md, 0, md)[0].kind,
            ElementKind::Fence { closed: true, .. }
        ));
        for (block, closed) in [
            ("```\r\nx\r\n```\r\n", true),
            ("````\nx\n```\n", false),
            ("~~~\nx\n> ~~~~  \n\n", true),
            ("```\n", false),
            ("```", false),
            ("", false),
            ("```\nx\n``` y\n", false),
        ] {
            assert_eq!(is_closed(block, 0..block.len()), closed, "{block:?}");
        }
    }

    #[test]
    fn info_strings_are_kept_as_written() {
        let md = "```bash {confirm=\"a \\\"b\\\" &amp;\"}  \ntrue\n```\n";
        match &build(md, 0, md)[0].kind {
            ElementKind::Fence { info, .. } => {
                assert_eq!(info, r#"bash {confirm="a \"b\" &amp;"}"#)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn loose_item_paragraphs_fold_into_the_item() {
        let md = "- [x] first\n\n- second `code`\n";
        assert_eq!(
            kinds(md),
            [
                ElementKind::ListItem {
                    text: "first".into(),
                    checked: Some(true)
                },
                ElementKind::ListItem {
                    text: "second `code`".into(),
                    checked: None
                },
            ]
        );
    }

    #[test]
    fn squeeze_matches_split_whitespace() {
        for s in [
            "",
            "  a  b\n\tc ",
            "x",
            " é  ü\u{a0}z ",
            "a\x0cb",
            "a b",
            " a",
            "a ",
            "a\nb",
            "a  b",
        ] {
            let expected = s.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(squeeze(Cow::Owned(s.to_string())), expected, "{s:?}");
        }
    }

    /// The one-pass check agrees with a byte-by-byte one, including pairs of spaces across
    /// its 4096-byte blocks and at the very end.
    #[test]
    fn ascii_and_odd_finds_controls_double_spaces_and_non_ascii() {
        let naive = |b: &[u8]| {
            (
                b.is_ascii(),
                b.iter().any(|&c| c < 0x20) || b.windows(2).any(|w| w == b"  "),
            )
        };
        let mut cases: Vec<Vec<u8>> = ["", " ", "  ", "a", "a b", "a  b", "a\tb", "é", "a\x0b"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        for at in [0, 1, 4094, 4095, 4096, 4097, 8191, 9998] {
            let mut words = b"ab ".repeat(3334);
            words.truncate(10_000);
            words[at] = b' ';
            words[at + 1] = b' ';
            cases.push(words.clone());
            words[at] = b'\n';
            cases.push(words.clone());
            words[at] = 0xc3;
            cases.push(words);
        }
        for b in &cases {
            assert_eq!(
                ascii_and_odd(b),
                naive(b),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn code_is_borrowed_when_contiguous_and_assembled_otherwise() {
        let md = "```sh\na\nb\n```\n- item\n  ```sh\n  c\n  d\n  ```\n";
        let codes: Vec<_> = build(md, 0, md)
            .into_iter()
            .filter_map(|e| match e.kind {
                ElementKind::Fence { code, .. } => Some(code),
                _ => None,
            })
            .collect();
        assert_eq!(codes, ["a\nb\n", "c\nd\n"]);
        assert!(matches!(codes[0], Cow::Borrowed(_)));
    }

    /// Paragraphs of the sections the caller does not read have no text; everything else is
    /// as `build` makes it.
    #[test]
    fn paragraphs_of_unread_sections_are_left_empty() {
        let md = "# T\nintro  text\n## Steps\nskip *this*\n\n- item `x`\n\n  loose\n### Sub\nand this\n## Notes\nkept\n";
        let mut seen = Vec::new();
        let lean = build_with(md, 0, md, |level, text| {
            seen.push((level, text.to_string()));
            text != "Steps"
        });
        assert_eq!(
            seen,
            [
                (1, "T".to_string()),
                (2, "Steps".into()),
                (2, "Notes".into())
            ]
        );
        let full = build(md, 0, md);
        assert_eq!(lean.len(), full.len());
        for (l, f) in lean.iter().zip(&full) {
            assert_eq!(l.span, f.span);
            match (&l.kind, &f.kind) {
                (ElementKind::Paragraph { text }, ElementKind::Paragraph { text: t })
                    if t != "intro text" && t != "kept" =>
                {
                    assert_eq!(text, "", "{t:?}")
                }
                (l, f) => assert_eq!(l, f),
            }
        }
        assert!(lean.iter().any(|e| e.kind
            == ElementKind::ListItem {
                text: "item `x`".into(),
                checked: None
            }));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let md = "- a\n  ".to_string() + &"> ".repeat(50_000) + "x\n";
        let _ = build(&md, 0, &md);
        let md = "[".repeat(100_000);
        let _ = build(&md, 0, &md);
    }
}
