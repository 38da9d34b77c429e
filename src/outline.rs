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
        info: String,
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
        info: String,
        code: Cow<'a, str>,
        span: Range<usize>,
        fenced: bool,
    },
}

/// Builds the outline of `body`, a slice of the file starting at byte `base`.
pub fn build<'a>(file_text: &str, base: usize, body: &'a str) -> Vec<Element<'a>> {
    build_piece(file_text, base, body).0
}

/// [`build`], and whether a fenced code block or an HTML block is still open at the end of
/// `body` (a heading after it would not close it: see [`build_parallel`]).
fn build_piece<'a>(file_text: &str, base: usize, body: &'a str) -> (Vec<Element<'a>>, bool) {
    let mut open_at_end = false;
    let options =
        Options::ENABLE_TASKLISTS | Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    // About one element per 400 bytes in long runbooks; a generous guess costs only address
    // space (untouched pages are never faulted in), while growing copies every element.
    let mut out = Vec::with_capacity(body.len() / 256 + 16);
    let mut stack: Vec<Open> = Vec::new();
    for (event, range) in Parser::new_ext(body, options).into_offset_iter() {
        if matches!(
            event,
            Event::Start(Tag::HtmlBlock | Tag::CodeBlock(CodeBlockKind::Fenced(_)))
        ) && range.end >= body.len()
        {
            open_at_end = true;
        }
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
                    CodeBlockKind::Fenced(info) => (info.to_string(), true),
                    CodeBlockKind::Indented => (String::new(), false),
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
    (out, open_at_end)
}

/// Bodies smaller than this are parsed on one thread: below it, starting threads costs more
/// than it saves.
const PARALLEL_MIN_BYTES: usize = 512 * 1024;

/// [`build`] of a large body on all cores. The body is cut at ATX headings at column 0 that
/// follow a blank line, and the pieces are parsed at once, each with its own base (spans are
/// file offsets, so the outlines just concatenate). Such a heading closes every block that
/// can be open before it (paragraphs, lists, block quotes, tables, indented code) except a
/// fenced code block or an HTML block (`<!--` … `-->` may span headings): when a piece ends
/// inside one of those, the cut was not a block boundary, and the whole body is parsed again
/// on one thread. Link reference definitions are the one thing in CommonMark that reach
/// across blocks (a `[label]` anywhere may use one), so a body with `]:` is never cut.
///
/// The outline comes back in pieces, in order: joining them would copy every element once
/// more (a megabyte for a 5 MB file), for callers that only iterate.
pub fn build_parallel<'a>(file_text: &str, base: usize, body: &'a str) -> Vec<Vec<Element<'a>>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    split_build(file_text, base, body, threads, PARALLEL_MIN_BYTES)
        .unwrap_or_else(|| vec![build(file_text, base, body)])
}

/// [`build_parallel`] with the number of pieces and the smallest piece given (tests force
/// small pieces to cut small inputs).
pub fn build_split<'a>(
    file_text: &str,
    base: usize,
    body: &'a str,
    pieces: usize,
    min_piece: usize,
) -> Vec<Element<'a>> {
    match split_build(file_text, base, body, pieces, min_piece) {
        Some(pieces) => pieces.into_iter().flatten().collect(),
        None => build(file_text, base, body),
    }
}

/// The parallel build, or None when the body has no cut or a cut was not a block boundary.
fn split_build<'a>(
    file_text: &str,
    base: usize,
    body: &'a str,
    pieces: usize,
    min_piece: usize,
) -> Option<Vec<Vec<Element<'a>>>> {
    let cuts = cut_points(body, pieces, min_piece);
    if cuts.is_empty() {
        return None;
    }
    let mut bounds = Vec::with_capacity(cuts.len() + 2);
    bounds.push(0);
    bounds.extend_from_slice(&cuts);
    bounds.push(body.len());
    let parts: Vec<(Vec<Element<'a>>, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = bounds[1..]
            .windows(2)
            .map(|w| {
                let piece = &body[w[0]..w[1]];
                let piece_base = base + w[0];
                // The main thread's stack size: deeply nested input must not overflow a
                // smaller one where the sequential parse would not. Only what is used of it
                // is ever touched.
                std::thread::Builder::new()
                    .stack_size(8 << 20)
                    .spawn_scoped(s, move || build_piece(file_text, piece_base, piece))
                    .map_err(|_| (piece_base, piece))
            })
            .collect();
        // The first piece on this thread while the others run.
        let mut parts = Vec::with_capacity(bounds.len() - 1);
        parts.push(build_piece(file_text, base, &body[..bounds[1]]));
        for h in handles {
            parts.push(match h {
                Ok(h) => match h.join() {
                    Ok(part) => part,
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                // No thread (resource limits): this piece here, after the others.
                Err((piece_base, piece)) => build_piece(file_text, piece_base, piece),
            });
        }
        parts
    });
    // A piece must also have no element reaching its end: an element that ends with the
    // text may have taken the blank lines before the cut with it (an empty list item does),
    // which it would not have done before a heading.
    let last = parts.len() - 1;
    let piece_end = |i: usize| base + bounds[i + 1];
    if parts[..last]
        .iter()
        .enumerate()
        .any(|(i, (els, open_at_end))| {
            *open_at_end || els.iter().any(|e| e.span.end >= piece_end(i))
        })
    {
        return None;
    }
    Some(parts.into_iter().map(|(part, _)| part).collect())
}

/// Where to cut `body` into at most `pieces` pieces of at least `min_piece` bytes: at the
/// start of a line that is an ATX heading (1–6 `#`, then a space, a tab or the end of the
/// line) at column 0 after a blank line. No cut when the body has `]:` (it may define a link
/// reference, which inline text anywhere may use).
fn cut_points(body: &str, pieces: usize, min_piece: usize) -> Vec<usize> {
    let mut cuts = Vec::new();
    let b = body.as_bytes();
    if pieces < 2
        || body.len() < min_piece.saturating_mul(2)
        || memchr::memmem::find(b, b"]:").is_some()
    {
        return cuts;
    }
    let pieces = pieces.min(body.len() / min_piece.max(1));
    let mut from = 0;
    for i in 1..pieces {
        let target = (body.len() / pieces * i).max(from + min_piece);
        let Some(cut) = next_cut(b, target) else {
            break;
        };
        if b.len() - cut < min_piece {
            break;
        }
        cuts.push(cut);
        from = cut;
    }
    cuts
}

/// The first safe cut at or after `from` (see [`cut_points`]).
fn next_cut(b: &[u8], from: usize) -> Option<usize> {
    let from = from.min(b.len());
    for nl in memchr::memmem::find_iter(&b[from..], b"\n#").map(|i| from + i) {
        let line = nl + 1;
        let hashes = b[line..].iter().take_while(|&&c| c == b'#').count();
        let after = b.get(line + hashes);
        if hashes > 6 || !matches!(after, None | Some(b' ' | b'\t' | b'\n' | b'\r')) {
            continue;
        }
        // The line before is blank (spaces, tabs and a carriage return only).
        let before = &b[..nl];
        let prev_start = memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
        if before[prev_start..]
            .iter()
            .all(|c| matches!(c, b' ' | b'\t' | b'\r'))
        {
            return Some(line);
        }
    }
    None
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
fn raw_info(text: &str, info_offset: usize) -> String {
    let rest = &text[info_offset.min(text.len())..];
    let line = rest.split(['\n', '\r']).next().unwrap_or("");
    line.trim_end().to_string()
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

    /// Every way of cutting `md` gives the outline of one sequential parse.
    fn same_when_split(md: &str) {
        let whole = build(md, 0, md);
        for pieces in [2, 3, 5, 16] {
            assert_eq!(
                build_split(md, 0, md, pieces, 1),
                whole,
                "{pieces} pieces of {md:?}"
            );
        }
        // A base other than 0: the body is a slice of the file.
        let file = format!("---\nx: 1\n---\n{md}");
        let whole = build(&file, 12, &file[12..]);
        assert_eq!(build_split(&file, 12, &file[12..], 4, 1), whole, "{file:?}");
    }

    fn markdown_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                markdown_files(&path, out);
            } else if path.extension().is_some_and(|x| x == "md") {
                out.push(path);
            }
        }
    }

    #[test]
    fn parallel_outline_matches_sequential_on_every_known_file() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        for dir in ["fixtures", "commands", "../shared/corpus/real-commands"] {
            markdown_files(&root.join(dir), &mut files);
        }
        assert!(files.len() > 20, "{files:?}");
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            same_when_split(&text);
        }
    }

    #[test]
    fn parallel_outline_matches_sequential_on_tricky_cases() {
        for md in [
            "# A\n\ntext\n\n# B\n\nmore\n\n## C\n",
            "```bash\necho\n\n# not a heading\n\n```\n\n# H\n",
            "~~~\n\n# in a tilde fence\n\n~~~~\n\n## after\n",
            "- item\n  ```\n  code\n\n# breaks the list\n\n  ```\n",
            "> ```\n> quoted fence\n\n# H\n\nx\n",
            "<!-- a comment\n\n# spanning a heading\n\n-->\n\n# H\n",
            "<div>\n\n# after a div\n\n</div>\n\n# H\n",
            "<div>\nblock\n</div>\n\n# H\n\ntext\n",
            "<script>\n\n# x\n\n</script>\n\n# y\n",
            "<pre>\n\n# x\n",
            "[a]: /url\n\n# H\n\n[a]\n\n# I\n\n[a]\n",
            "# H\n\n[a]\n\n# I\n\n[a]: /url\n",
            "Setext\n======\n\n# H\n\nSetext 2\n--------\n",
            "> quote\n\n# H\n> lazy\n\n# I\n",
            "1. one\n\n   ```sh\n   x\n\n# H\n\n   ```\n",
            "    indented code\n\n# H\n\n    more\n",
            "| a | b |\n|---|---|\n| 1 | 2 |\n\n# H\n\n| c |\n|---|\n",
            "text\n\n#\n\n# \n\n####### seven\n\n#tag\n\n\t# tab\n",
            "text\r\n\r\n# CRLF\r\n\r\nmore\r\n",
            "\n# first line\n\n# second\n",
            "- [ ] task\n\n# H\n\n- [x] done\n",
            "```\nunclosed\n\n# H\n\n# I\n",
            // Empty list items: at the end of a piece they would take the blank line.
            "+\n\n#",
            "-\n\n# H\n",
            "1.\n\n## H\n\n*\n\n# I",
            "- a\n-\n\n# H\n",
        ] {
            same_when_split(md);
        }
    }

    #[test]
    fn parallel_outline_matches_sequential_on_generated_input() {
        const LINES: &[&str] = &[
            "# H",
            "## Steps",
            "### Step",
            "",
            "",
            "",
            "text line",
            "`code` and *em*",
            "```",
            "```bash {id=x}",
            "~~~",
            "  ```",
            "<!--",
            "-->",
            "<div>",
            "</div>",
            "<pre>",
            "</pre>",
            "> quote",
            "> ```",
            "- item",
            "- [ ] task",
            "1. one",
            "    indented",
            "===",
            "---",
            "| a | b |",
            "|---|---|",
            "[x]",
            "[x]: /url",
            "#tag",
            "\t# tab",
            "-",
            "+",
            "1.",
            ">",
            " # one space",
            "####### seven",
            "echo hi",
            "* * *",
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let n = 2 + next() % 60;
            let md: String = (0..n)
                .map(|_| format!("{}\n", LINES[(next() % LINES.len() as u64) as usize]))
                .collect();
            same_when_split(&md);
        }
    }

    #[test]
    fn a_large_plain_body_is_cut() {
        let step = "### Step\nsome words here.\n\nmore words.\n\n```bash {id=s}\necho\n```\n\n";
        let md = format!("# Big\n\n## Steps\n{}", step.repeat(2000));
        let whole = build(&md, 0, &md);
        assert_eq!(cut_points(&md, 4, 1000).len(), 3);
        let pieces = split_build(&md, 0, &md, 4, 1000).expect("cut");
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.concat(), whole);
        // An unclosed fence before a cut: not a block boundary, parsed in one piece.
        let md = format!("~~~\n\n{}", step.repeat(2000));
        assert_eq!(split_build(&md, 0, &md, 4, 1000), None);
        assert_eq!(build_split(&md, 0, &md, 4, 1000), build(&md, 0, &md));
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let md = "- a\n  ".to_string() + &"> ".repeat(50_000) + "x\n";
        let _ = build(&md, 0, &md);
        let md = "[".repeat(100_000);
        let _ = build(&md, 0, &md);
    }
}
