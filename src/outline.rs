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
    Fence {
        info: Cow<'a, str>,
        code: Cow<'a, str>,
        span: Range<usize>,
        fenced: bool,
    },
}

/// Builds the outline of `body`, a slice of the file starting at byte `base`.
pub fn build<'a>(file_text: &'a str, base: usize, body: &'a str) -> Vec<Element<'a>> {
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
                let (info, fenced) = match kind {
                    // Read back from the file at the end (`raw_info`): nothing to copy here.
                    CodeBlockKind::Fenced(_) => (Cow::Borrowed(""), true),
                    CodeBlockKind::Indented => (Cow::Borrowed(""), false),
                };
                stack.push(Open::Fence {
                    info,
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
            Event::Text(t) => push_text(&mut stack, t, false),
            Event::Code(t) => push_text(&mut stack, t, true),
            Event::SoftBreak | Event::HardBreak => {
                push_text(&mut stack, CowStr::Borrowed(" "), false)
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some(Open::Heading { level, text, start }) = stack.pop() {
                    out.push(Element {
                        kind: ElementKind::Heading {
                            level,
                            text: squeeze(text),
                        },
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
                if let Some(Open::Fence {
                    info,
                    code,
                    span,
                    fenced,
                }) = stack.pop()
                {
                    let info_offset = info_offset(file_text, span.start);
                    // The info string as written: pulldown-cmark resolves backslash escapes
                    // and entities in it, which would break quoted attribute values
                    // (`confirm="a \"b\""`) and shift every attribute's column.
                    let info = if fenced {
                        raw_info(file_text, info_offset)
                    } else {
                        info
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

fn push_text<'a>(stack: &mut [Open<'a>], t: CowStr<'a>, inline_code: bool) {
    let target = stack
        .iter_mut()
        .rev()
        .find(|o| !matches!(o, Open::ItemParagraph));
    let text = match target {
        Some(Open::Heading { text, .. }) | Some(Open::Paragraph { text, .. }) => text,
        Some(Open::Item {
            text,
            emitted: false,
            ..
        }) => text,
        Some(Open::Fence { code, .. }) => {
            append(code, t);
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
    if s.is_ascii() {
        // Byte-wise for ASCII text (the common case, and large files): same result as
        // `split_whitespace`, an order of magnitude cheaper.
        let b = s.as_bytes();
        let clean = b.first().is_none_or(|&c| c != b' ')
            && b.last().is_none_or(|&c| c != b' ')
            && memchr::memchr3(b'\t', b'\n', b'\r', b).is_none()
            && memchr::memchr(0x0c, b).is_none()
            && memchr::memmem::find(b, b"  ").is_none();
        if clean {
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
    let line = rest.split(['\n', '\r']).next().unwrap_or("");
    Cow::Borrowed(line.trim_end())
}

/// Whether a fenced block's span ends with a closing fence line (not the end of the file).
fn is_closed(text: &str, span: Range<usize>) -> bool {
    let block = &text[span];
    let mut lines = block.trim_end_matches(['\n', '\r']).lines();
    let Some(first) = lines.next() else {
        return false;
    };
    let opening = first.trim_start_matches([' ', '\t', '>']);
    let marker = opening.chars().next().unwrap_or('`');
    let open_len = opening.len() - opening.trim_start_matches(marker).len();
    match lines.last() {
        Some(last) => {
            let last = last.trim_start_matches([' ', '\t', '>']).trim_end();
            last.len() >= open_len && last.chars().all(|c| c == marker)
        }
        None => false,
    }
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

    #[test]
    fn deep_nesting_does_not_overflow() {
        let md = "- a\n  ".to_string() + &"> ".repeat(50_000) + "x\n";
        let _ = build(&md, 0, &md);
        let md = "[".repeat(100_000);
        let _ = build(&md, 0, &md);
    }
}
