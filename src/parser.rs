//! Reads a command file: bytes → text (refusing binary, non-UTF-8 and oversized files) →
//! frontmatter + outline → [`Command`]. Pure: no file system, no processes. Every problem it
//! can see without running anything becomes a diagnostic on the command, so `check` reports
//! them all at once; callers refuse to run a command that has errors.

use crate::attrs;
use crate::command::{
    Block, Command, Entry, ManualCheck, Mode, Origin, Phase, SectionInfo, SuccessCriteria,
};
use crate::diagnostic::{Diagnostic, Severity};
use crate::frontmatter::{self, Frontmatter};
use crate::guided;
use crate::outline::{self, Element, ElementKind};
use crate::outline_scan;
use crate::sections::{self, SectionKind};
use crate::settings;
use crate::source::{LineCursor, SourceFile};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

/// Command files larger than this are refused: a runbook is read by people, and the limit
/// keeps `list` over a directory of unknown files fast and bounded.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;

/// Languages nixcmd executes.
pub const SHELL_LANGUAGES: &[&str] = &["bash", "sh", "shell"];

/// Turns a file's bytes into text, or explains why it is not a command file.
pub fn decode(name: &str, bytes: &[u8]) -> Result<SourceFile, Diagnostic> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    if let Some(nul) = memchr::memchr(0, bytes) {
        let file = SourceFile::new(name, String::from_utf8_lossy(&bytes[..nul]).into_owned());
        return Err(Diagnostic::fatal(
            "file",
            "the file is binary (it contains NUL bytes), not Markdown",
        )
        .at_position(file.position(file.text.len()), 1)
        .with_hint("command files are UTF-8 Markdown text"));
    }
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    match std::str::from_utf8(bytes) {
        Ok(text) => match cr_only(text) {
            Some(cr) => Err(cr_only_finding(name, text, cr)),
            None => Ok(SourceFile::new(name, text)),
        },
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            let file = SourceFile::new(name, String::from_utf8_lossy(good).into_owned());
            Err(Diagnostic::fatal("file", "the file is not valid UTF-8")
                .at_position(file.position(good.len()), 1)
                .with_hint("save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"))
        }
    }
}

/// [`decode`] of bytes the caller owns: valid text becomes the file's text without a copy
/// (a command file can be megabytes). On failure the bytes come back with the finding.
#[allow(clippy::result_large_err)]
pub fn decode_owned(name: &str, bytes: Vec<u8>) -> Result<SourceFile, (Diagnostic, Vec<u8>)> {
    if bytes.len() > MAX_FILE_BYTES || memchr::memchr(0, &bytes).is_some() {
        return decode(name, &bytes).map_err(|d| (d, bytes));
    }
    // Validated once; a failure is explained by `decode`, on the bytes as read.
    match String::from_utf8(bytes) {
        Ok(mut text) => {
            if text.starts_with('\u{feff}') {
                text.drain(..3);
            }
            if let Some(cr) = cr_only(&text) {
                let finding = cr_only_finding(name, &text, cr);
                return Err((finding, text.into_bytes()));
            }
            Ok(SourceFile::new(name, text))
        }
        Err(e) => {
            let bytes = e.into_bytes();
            decode(name, &bytes).map_err(|d| (d, bytes))
        }
    }
}

/// Where the first line ends in a file whose lines end in a CR alone (classic Mac OS): no
/// `\n` at all, and text after a `\r`. Read as it is, the whole file is one line (no
/// frontmatter, no sections, a fence "never closed"): one clear finding instead.
fn cr_only(text: &str) -> Option<usize> {
    if memchr::memchr(b'\n', text.as_bytes()).is_some() {
        return None;
    }
    let cr = memchr::memchr(b'\r', text.as_bytes())?;
    (cr + 1 < text.len()).then_some(cr)
}

fn cr_only_finding(name: &str, text: &str, cr: usize) -> Diagnostic {
    let file = SourceFile::new(name, text[..cr].to_string());
    Diagnostic::fatal(
        "file",
        "the file's lines end in a carriage return alone (old Mac line endings): it reads as \
         one line",
    )
    .at_position(file.position(cr), 1)
    .with_hint("convert its line endings to `\\n`, e.g. `sed -i 's/\\r/\\n/g' FILE`")
}

/// The finding for a file of `len` bytes, more than [`MAX_FILE_BYTES`].
pub fn too_large(len: u64) -> Diagnostic {
    Diagnostic::fatal(
        "file",
        format!(
            "the file is {:.1} MiB; command files are read up to {} MiB",
            len as f64 / (1024.0 * 1024.0),
            MAX_FILE_BYTES / (1024 * 1024)
        ),
    )
    .with_hint("is this the right file? split very large runbooks into several commands")
}

/// Prose around a block: text and span, borrowed from the outline.
pub type Context<'a> = Vec<(&'a str, Range<usize>)>;

/// The context of each block, by phase (`Phase as usize`) and position in its phase (kept
/// only for guided files).
pub type Contexts<'a> = [Vec<Context<'a>>; 4];

/// Where the walk put a block, for assigning ids afterwards. The walk builds each [`Block`]
/// in its phase's list at once, without its id (a block is a few hundred bytes: building
/// a pending copy first touched that much memory twice for a large file); ids need every
/// explicit id first, then the blocks in document order across the phases.
struct Placed {
    phase: Phase,
    /// Position in its phase's list.
    index: usize,
    /// An `{id=…}` written on the fence, with its span.
    explicit_id: Option<(String, Range<usize>)>,
}

thread_local! {
    /// An empty `Placed` vector with room, kept between the files one thread reads:
    /// allocating it per file made malloc tidy its small free chunks each time (`list`).
    static SPARE_PLACED: std::cell::Cell<Vec<Placed>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Where the walk through the outline is. Heading texts are borrowed from the outline:
/// only a block's title is copied (into the block).
struct Walk<'a> {
    kind: SectionKind,
    heading: Option<(&'a str, usize)>,
    /// The nearest `###`-or-deeper heading (or a numbered `## Step N:` title).
    sub: Option<Cow<'a, str>>,
    /// Prose and headings since the last block, kept only when `keep_context`.
    context: Context<'a>,
    keep_context: bool,
}

impl<'a> Walk<'a> {
    fn note(&mut self, text: &'a str, span: &Range<usize>) {
        if self.keep_context {
            self.context.push((text, span.clone()));
        }
    }
}

/// How much of a file to read. `Summary` is for listing many files: it skips the content
/// hash and the guided-file findings (which are warnings and notes only), so the errors it
/// reports are the same as a full read's; its outline comes from a line scan when the file
/// is plain enough ([`outline_scan`]), so blocks have no code and there is no overview. `Unhashed` is a full read without the content hash,
/// for output that does not show it (`show` as text): hashing a large file costs as much as
/// parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    Full,
    Unhashed,
    Summary,
}

pub fn parse(file: &SourceFile, name: &str, origin: Origin) -> Command {
    parse_with(file, name, origin, Depth::Full)
}

pub fn parse_with(file: &SourceFile, name: &str, origin: Origin, depth: Depth) -> Command {
    parse_at(file, name, origin, depth, true)
}

/// Files from this size on are hashed on a second thread while they are parsed: SHA-256 of
/// 5 MB takes about as long as parsing it, and a thread costs less than a millisecond only
/// once the file is large.
const PARALLEL_HASH_BYTES: usize = 1 << 20;

/// [`parse_with`], where `line_scan: false` keeps a summary on the full outline (tests
/// compare the two).
pub fn parse_at(
    file: &SourceFile,
    name: &str,
    origin: Origin,
    depth: Depth,
    line_scan: bool,
) -> Command {
    if depth != Depth::Full || file.text.len() < PARALLEL_HASH_BYTES {
        return parse_body(file, name, origin, depth, line_scan);
    }
    let digest = || hex(&Sha256::digest(file.text.as_bytes()));
    std::thread::scope(|scope| {
        // A thread that cannot be started (resource limits) only means hashing inline.
        let hashing = std::thread::Builder::new()
            .name("hash".into())
            .spawn_scoped(scope, || Sha256::digest(file.text.as_bytes()))
            .ok();
        let mut cmd = parse_body(file, name, origin, Depth::Unhashed, line_scan);
        cmd.hash = match hashing.map(|h| h.join()) {
            Some(Ok(sum)) => hex(&sum),
            _ => digest(),
        };
        cmd
    })
}

/// The longest command name a run can be recorded under: a file name is at most 255 bytes,
/// and a run id adds `-YYYYmmdd-HHMMSS-xxxx` (21 bytes) to the name.
pub const MAX_NAME_BYTES: usize = 255 - 21;

/// Attribute problems told per fence; the rest are counted in one more diagnostic.
const MAX_ATTR_ERRORS: usize = 20;

/// [`parse_at`]; hashes the text itself at `Depth::Full`.
fn parse_body(
    file: &SourceFile,
    name: &str,
    origin: Origin,
    depth: Depth,
    line_scan: bool,
) -> Command {
    let mut diagnostics = Vec::new();
    let mut frontmatter_read = true;
    let fm = match frontmatter::parse(file) {
        Ok(fm) => fm,
        Err(d) => {
            diagnostics.push(d);
            frontmatter_read = false;
            // Read the body anyway so every other problem is reported too.
            Frontmatter {
                body_start: skip_broken_frontmatter(&file.text),
                ..Frontmatter::default()
            }
        }
    };
    let meta = settings::interpret(file, &fm);
    diagnostics.extend(meta.diagnostics);
    let mode = meta.mode.unwrap_or(Mode::Guided);

    let body = &file.text[fm.body_start..];
    // Only the guided-file block findings read the prose around blocks: copying it for any
    // other file would double the memory of a large one.
    let guided_findings = depth != Depth::Summary && mode == Mode::Guided;
    // A guided file without a description takes it from the overview, which the line scan
    // does not read.
    let scan = line_scan
        && depth == Depth::Summary
        && (meta.description.is_some() || mode == Mode::Annotated);
    let elements = match scan {
        true => outline_scan::scan(&file.text, fm.body_start, body),
        false => None,
    }
    .unwrap_or_else(|| {
        outline::build_with(&file.text, fm.body_start, body, prose_read(guided_findings))
    });

    let mut cmd = Command {
        name: name.to_string(),
        title: None,
        description: meta.description,
        argument_hint: meta.argument_hint,
        source: origin,
        mode,
        hash: match depth {
            Depth::Full => hex(&Sha256::digest(file.text.as_bytes())),
            Depth::Unhashed | Depth::Summary => String::new(),
        },
        settings: meta.settings,
        args: meta.args,
        overview: String::new(),
        sections: Vec::new(),
        prerequisites: Vec::new(),
        steps: Vec::new(),
        success_criteria: SuccessCriteria::default(),
        rollback: Vec::new(),
        troubleshooting: Vec::new(),
        references: Vec::new(),
        notes: Vec::new(),
        other_blocks: 0,
        diagnostics: Vec::new(),
    };
    let keep_context = guided_findings;
    let (placed, contexts) = walk(file, &elements, &mut cmd, &mut diagnostics, keep_context);
    assign_ids(file, placed, &mut cmd, &mut diagnostics);
    cmd.settle_gates();
    structural_rules(file, &mut cmd, frontmatter_read, &mut diagnostics);
    if depth != Depth::Summary {
        if mode == Mode::Guided {
            guided::block_findings(file, &mut cmd, &contexts, &mut diagnostics);
        }
        guided::prose_findings(file, &elements, mode, &mut diagnostics);
    }
    diagnostics.sort_by_key(|d| (d.position, std::cmp::Reverse(d.severity)));
    cmd.diagnostics = diagnostics;
    outline_scan::recycle(elements);
    cmd
}

/// Which sections' paragraphs the walk reads (for [`outline::build_with`]): all of them
/// for the guided-file findings (`all`); else none of those in the runnable sections, whose
/// prose [`prose`] drops. Tracks sections as the walk does: the first `#` heading before any
/// section is the title, every other heading of level 1 or 2 starts a section.
fn prose_read(all: bool) -> impl FnMut(u8, &str) -> bool {
    let (mut titled, mut in_section) = (false, false);
    move |level, text| {
        if all {
            return true;
        }
        if level == 1 && !titled && !in_section {
            // Still the overview, whose prose is kept.
            titled = true;
            return true;
        }
        in_section = true;
        phase_of(sections::classify(text).kind).is_none()
    }
}

/// After an unparsable frontmatter, the body starts after the next delimiter line if any.
fn skip_broken_frontmatter(text: &str) -> usize {
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        offset += line.len();
        if i > 0 && matches!(line.trim_end(), "---" | "+++") {
            return offset;
        }
    }
    0
}

fn walk<'a>(
    file: &SourceFile,
    elements: &'a [Element],
    cmd: &mut Command,
    diagnostics: &mut Vec<Diagnostic>,
    keep_context: bool,
) -> (Vec<Placed>, Contexts<'a>) {
    // Each phase's blocks, sized once (a `Block` is a few hundred bytes; a first push would
    // reserve room for four, and a large file's list would be regrown and copied).
    let per_phase = blocks_per_phase(elements);
    cmd.prerequisites
        .reserve_exact(per_phase[Phase::Prerequisite as usize]);
    cmd.steps.reserve_exact(per_phase[Phase::Step as usize]);
    cmd.success_criteria
        .checks
        .reserve_exact(per_phase[Phase::Check as usize]);
    cmd.rollback
        .reserve_exact(per_phase[Phase::Rollback as usize]);
    let mut placed = SPARE_PLACED.take();
    placed.reserve(per_phase.iter().sum());
    let mut contexts = Contexts::default();
    let mut w = Walk {
        kind: SectionKind::Overview,
        heading: None,
        sub: None,
        context: Vec::new(),
        keep_context,
    };
    let mut overview = Vec::new();
    // Elements come in the file's order: lines are found from the previous one.
    let mut cursor = LineCursor::default();
    for el in elements {
        // Prose of a runnable section is dropped (see `prose`): its line is not counted, and
        // the next count spans the gap in one go.
        let dropped = matches!(
            el.kind,
            ElementKind::Paragraph { .. } | ElementKind::ListItem { checked: None, .. }
        ) && phase_of(w.kind).is_some();
        let line = match dropped {
            true => 0,
            false => file.line_of_from(el.span.start, &mut cursor),
        };
        match &el.kind {
            ElementKind::Heading { level: 1, text }
                if cmd.title.is_none() && w.heading.is_none() =>
            {
                cmd.title = Some(text.to_string());
            }
            ElementKind::Heading { level, text } if *level <= 2 => {
                let class = sections::classify(text);
                w = Walk {
                    kind: class.kind,
                    heading: Some((text, line)),
                    sub: class.step_title.map(Cow::Owned),
                    context: Vec::new(),
                    keep_context,
                };
                w.note(text, &el.span);
                cmd.sections.push(SectionInfo {
                    heading: text.to_string(),
                    kind: class.kind,
                    line,
                });
                if w.kind == SectionKind::Notes && !text.is_empty() {
                    cmd.notes.push(Entry {
                        title: text.to_string(),
                        text: String::new(),
                        line,
                    });
                }
            }
            ElementKind::Heading { text, .. } => {
                w.sub = Some(Cow::Borrowed(text));
                w.note(text, &el.span);
                if matches!(
                    w.kind,
                    SectionKind::Troubleshooting | SectionKind::References
                ) {
                    entries_of(cmd, w.kind).push(Entry {
                        title: text.to_string(),
                        text: String::new(),
                        line,
                    });
                }
            }
            ElementKind::Paragraph { text }
            | ElementKind::ListItem {
                text,
                checked: None,
            } => {
                w.note(text, &el.span);
                prose(
                    cmd,
                    &w,
                    &mut overview,
                    text,
                    line,
                    matches!(el.kind, ElementKind::ListItem { .. }),
                );
            }
            ElementKind::ListItem {
                text,
                checked: Some(_),
            } => {
                w.note(text, &el.span);
                if w.kind == SectionKind::SuccessCriteria {
                    cmd.success_criteria.manual.push(ManualCheck {
                        text: text.to_string(),
                        line,
                    });
                } else {
                    prose(cmd, &w, &mut overview, &format!("[ ] {text}"), line, true);
                }
            }
            ElementKind::Fence {
                info,
                code,
                info_offset,
                closed,
                fenced,
            } => {
                if !closed {
                    diagnostics.push(unclosed_fence(file, &el.span, *info_offset));
                }
                let phase = phase_of(w.kind);
                let (Some(phase), true) = (phase, *fenced) else {
                    cmd.other_blocks += 1;
                    w.context.clear();
                    continue;
                };
                let parsed = attrs::parse_info(info);
                let validated = attrs::validate(&parsed.attrs);
                let misplaced = attrs::misplaced_conditions(
                    &parsed.attrs,
                    &validated.attrs,
                    phase == Phase::Rollback,
                );
                let errors: Vec<&attrs::AttrError> = (parsed.errors.iter())
                    .chain(&validated.errors)
                    .chain(&misplaced)
                    .collect();
                for e in errors.iter().take(MAX_ATTR_ERRORS) {
                    let span = info_offset + e.span.start..info_offset + e.span.end;
                    let mut d = Diagnostic::error(e.code, e.message.clone()).at(file, span);
                    if let Some(h) = &e.hint {
                        d = d.with_hint(h.clone());
                    }
                    diagnostics.push(d);
                }
                if let Some(first_untold) = errors.get(MAX_ATTR_ERRORS) {
                    // Each diagnostic shows the (long) line: thousands of them on one line
                    // took minutes to locate and print, and told nothing more.
                    let span =
                        info_offset + first_untold.span.start..info_offset + first_untold.span.end;
                    diagnostics.push(
                        Diagnostic::error(
                            "malformed-attribute",
                            format!(
                                "{} more problems in this fence's attributes, not shown",
                                errors.len() - MAX_ATTR_ERRORS
                            ),
                        )
                        .at(file, span)
                        .with_hint("fix those above, then check again"),
                    );
                }
                let explicit_id = validated
                    .id
                    .map(|(id, r)| (id, info_offset + r.start..info_offset + r.end));
                if keep_context {
                    contexts[phase as usize].push(std::mem::take(&mut w.context));
                }
                let runnable =
                    SHELL_LANGUAGES.contains(&parsed.language.as_str()) && !validated.attrs.norun;
                let list = blocks_of(cmd, phase);
                placed.push(Placed {
                    phase,
                    index: list.len(),
                    explicit_id,
                });
                list.push(Block {
                    // Assigned by `assign_ids`, once every explicit id is known.
                    id: String::new(),
                    phase,
                    title: w.sub.as_deref().map(str::to_string),
                    language: parsed.language.into(),
                    // Most code has no `\r` (and a summary's has no code at all): `replace`
                    // would set up a substring search for nothing.
                    code: match memchr::memchr(b'\r', code.as_bytes()) {
                        Some(_) => code.replace("\r\n", "\n"),
                        None => code.to_string(),
                    },
                    line,
                    code_line: line + 1,
                    runnable,
                    attrs: validated.attrs,
                    nested: Vec::new(),
                    effective: Default::default(),
                });
            }
        }
    }
    cmd.overview = overview.join("\n\n");
    (placed, contexts)
}

/// The finding for a fence without a closing line. When the line just after the block
/// would close it but is outside the list item or quote the fence is in (the closing
/// line is less indented than the item's text, or lacks the quote's `>`), CommonMark
/// ends the code with the item and that line opens a new fence: "never closed" would
/// send the author looking for a fence line that is right there.
fn unclosed_fence(file: &SourceFile, span: &Range<usize>, info_offset: usize) -> Diagnostic {
    let at = span.start..info_offset;
    let opening = file.text[span.start..info_offset].trim_end_matches([' ', '\t']);
    let marker = opening.chars().next_back().unwrap_or('`');
    let open = opening.len() - opening.trim_end_matches(marker).len();
    let after = &file.text[span.end.min(file.text.len())..];
    let next = after.lines().next().unwrap_or("").trim_matches([' ', '\t']);
    let closes = next.len() >= open && next.chars().all(|c| c == marker);
    if span.end < file.text.len() && file.text[..span.end].ends_with('\n') && closes {
        let line = file.line_of(span.end);
        return Diagnostic::fatal(
            "unclosed-fence",
            format!("this code fence's closing line (line {line}) is outside the list item or quote the fence is in"),
        )
        .at(file, at)
        .with_hint(format!("indent line {line} like this line (in a quote, start it with `>`): as it is, the code ends where the item or quote does, and line {line} opens a new fence"));
    }
    Diagnostic::fatal("unclosed-fence", "this code fence is never closed")
        .at(file, at)
        .with_hint(
            "add a closing fence line (```) after the code: without it the rest of the file is code",
        )
}

/// The number of blocks of each phase (`Phase as usize`) the walk will find: the same
/// section tracking without building anything. Only a capacity: a miscount would cost a
/// regrowth, not a wrong result.
fn blocks_per_phase(elements: &[Element]) -> [usize; 4] {
    let mut counts = [0usize; 4];
    let mut phase = None;
    let (mut titled, mut in_section) = (false, false);
    for el in elements {
        match &el.kind {
            ElementKind::Heading { level: 1, .. } if !titled && !in_section => titled = true,
            ElementKind::Heading { level, text } if *level <= 2 => {
                in_section = true;
                phase = phase_of(sections::classify(text).kind);
            }
            ElementKind::Fence { fenced: true, .. } => {
                if let Some(p) = phase {
                    counts[p as usize] += 1;
                }
            }
            _ => {}
        }
    }
    counts
}

/// The phase of the blocks of a section of this kind, if its blocks have one.
fn phase_of(kind: SectionKind) -> Option<Phase> {
    match kind {
        SectionKind::Prerequisites => Some(Phase::Prerequisite),
        SectionKind::Steps => Some(Phase::Step),
        SectionKind::SuccessCriteria => Some(Phase::Check),
        SectionKind::Rollback => Some(Phase::Rollback),
        _ => None,
    }
}

fn blocks_of(cmd: &mut Command, phase: Phase) -> &mut Vec<Block> {
    match phase {
        Phase::Prerequisite => &mut cmd.prerequisites,
        Phase::Step => &mut cmd.steps,
        Phase::Check => &mut cmd.success_criteria.checks,
        Phase::Rollback => &mut cmd.rollback,
    }
}

fn entries_of(cmd: &mut Command, kind: SectionKind) -> &mut Vec<Entry> {
    match kind {
        SectionKind::Troubleshooting => &mut cmd.troubleshooting,
        SectionKind::References => &mut cmd.references,
        _ => &mut cmd.notes,
    }
}

/// Where a paragraph or list item's text goes.
fn prose(
    cmd: &mut Command,
    w: &Walk,
    overview: &mut Vec<String>,
    text: &str,
    line: usize,
    item: bool,
) {
    // Prose in the runnable sections is not kept: no copy of it is made (most of a large
    // runbook's text is there).
    if text.is_empty() || phase_of(w.kind).is_some() {
        return;
    }
    let text = if item {
        format!("- {text}")
    } else {
        text.to_string()
    };
    match w.kind {
        // Text before the first `##`, and under an overview heading ("## Task Overview").
        SectionKind::Overview => overview.push(text),
        SectionKind::References if item && w.sub.is_none() => cmd.references.push(Entry {
            title: text.trim_start_matches("- ").to_string(),
            text: String::new(),
            line,
        }),
        SectionKind::Troubleshooting | SectionKind::References => {
            let section = w.heading.map(|h| h.0.to_string()).unwrap_or_default();
            let entries = entries_of(cmd, w.kind);
            if entries.is_empty() {
                entries.push(Entry {
                    title: section,
                    text: String::new(),
                    line,
                });
            }
            append(&mut entries.last_mut().expect("just pushed").text, &text);
        }
        SectionKind::Notes => {
            if let Some(note) = cmd.notes.last_mut() {
                append(&mut note.text, &text);
            }
        }
        _ => {}
    }
}

fn append(into: &mut String, text: &str) {
    if !into.is_empty() {
        into.push('\n');
    }
    into.push_str(text);
}

/// Assigns each block its id (the explicit one, else one made from its title or phase),
/// unique in the command, and reports duplicate explicit ids.
fn assign_ids(
    file: &SourceFile,
    mut placed: Vec<Placed>,
    cmd: &mut Command,
    diagnostics: &mut Vec<Diagnostic>,
) {
    // Every id in use: first the explicit ones (with the offset of their first use: its line
    // is only needed for a duplicate, and counting lines here walked a large file a second
    // time), then each generated one as it is made. Sized once: a large runbook has
    // thousands of blocks.
    let mut used: IdMap<usize> = IdMap::with_capacity(placed.len());
    // Whether each explicit id repeats an earlier one.
    let mut repeats = Vec::with_capacity(placed.len());
    for p in &placed {
        let repeat = match &p.explicit_id {
            Some((id, span)) => match used.insert(id, span.start) {
                Some(first) => {
                    let first = file.line_of(first);
                    diagnostics.push(
                        Diagnostic::error(
                            "duplicate-id",
                            format!("the id `{id}` is already used on line {first}"),
                        )
                        .at(file, span.clone())
                        .with_hint(
                            "ids must be unique within a command: they name logs and resume points",
                        ),
                    );
                    true
                }
                None => false,
            },
            None => false,
        };
        repeats.push(repeat);
    }
    for (p, repeat) in placed.drain(..).zip(repeats) {
        let block = &mut blocks_of(cmd, p.phase)[p.index];
        block.id = match p.explicit_id {
            // The first use of an explicit id is in `used` already.
            Some((id, _)) if !repeat => id,
            // A duplicate keeps a unique internal id so runs stay well-defined.
            Some((id, _)) => unique(&format!("{id}-dup"), &mut used),
            None => {
                let base = default_id_base(block.title.as_deref(), p.phase, p.index + 1);
                unique(&base, &mut used)
            }
        };
    }
    // Kept for the next file unless a large file made it large.
    if placed.capacity() <= 64 {
        SPARE_PLACED.set(placed);
    }
}

/// Ids of one file's blocks. A runbook has a dozen blocks: a linear scan over them is
/// cheaper than hashing each id (and `list` does this for every file); past
/// [`LINEAR_IDS`] entries the ids move into a hash map, sized for every block at once, so a
/// large file stays linear overall.
struct IdMap<V> {
    small: Vec<(String, V)>,
    large: HashMap<String, V>,
    /// The number of ids expected.
    capacity: usize,
}

const LINEAR_IDS: usize = 16;

impl<V: Copy> IdMap<V> {
    fn with_capacity(n: usize) -> Self {
        IdMap {
            small: Vec::with_capacity(n.min(LINEAR_IDS)),
            large: HashMap::new(),
            capacity: n,
        }
    }

    fn contains(&self, id: &str) -> bool {
        match self.large.is_empty() {
            true => self.small.iter().any(|(k, _)| k == id),
            false => self.large.contains_key(id),
        }
    }

    /// Adds `id` with `v` unless it is there already; returns the value it had then.
    fn insert(&mut self, id: &str, v: V) -> Option<V> {
        if self.large.is_empty() {
            if let Some((_, old)) = self.small.iter().find(|(k, _)| k == id) {
                return Some(*old);
            }
            if self.small.len() < LINEAR_IDS {
                self.small.push((id.to_string(), v));
                return None;
            }
            self.large.reserve(self.capacity.max(2 * LINEAR_IDS));
            self.large.extend(self.small.drain(..));
        }
        // One hash for the lookup and the insertion.
        match self.large.entry(id.to_string()) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(v);
                None
            }
        }
    }
}

/// `base`, or `base-2`, `base-3` … : the first id not in use, which is then marked used.
fn unique(base: &str, used: &mut IdMap<usize>) -> String {
    let id = unique_id(base, |c| !used.contains(c));
    used.insert(&id, 0);
    id
}

/// `base`, else the first of `base-2`, `base-3`… that is `free` (the summary behind `list`
/// names rollback blocks by the same rule).
pub(crate) fn unique_id(base: &str, free: impl Fn(&str) -> bool) -> String {
    if free(base) {
        return base.to_string();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|c| free(c))
        .expect("an unused suffix exists")
}

/// The id a block without an explicit one starts from: the slug of its title, else
/// `PHASE-N` for the `n`th block of its phase (made unique by the caller).
pub(crate) fn default_id_base(title: Option<&str>, phase: Phase, n: usize) -> String {
    match title.map(slug).filter(|s| !s.is_empty()) {
        Some(slug) => slug,
        None => {
            let prefix = phase_prefix(phase);
            let mut out = String::with_capacity(prefix.len() + 4);
            out.push_str(prefix);
            out.push('-');
            push_number(&mut out, n);
            out
        }
    }
}

/// Appends `n` in decimal.
pub(crate) fn push_number(s: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.extend(digits[at..].iter().map(|&d| char::from(d)));
}

pub(crate) fn phase_prefix(phase: Phase) -> &'static str {
    match phase {
        Phase::Prerequisite => "prereq",
        Phase::Step => "step",
        Phase::Check => "check",
        Phase::Rollback => "rollback",
    }
}

/// `Update inputs` → `update-inputs`; keeps ASCII letters and digits, at most 48 characters.
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    slug_into(text, &mut out);
    out
}

/// [`slug`] into `out` (cleared first): callers comparing many slugs reuse one buffer.
pub fn slug_into(text: &str, out: &mut String) {
    out.clear();
    let (slug, len) = slug_bytes(text);
    // ASCII by construction.
    out.push_str(std::str::from_utf8(&slug[..len]).unwrap_or_default());
}

/// Whether `text`'s slug is `id`, without making it in a string (`show` asks this for
/// every block of a large file).
pub fn slug_is(text: &str, id: &str) -> bool {
    let (slug, len) = slug_bytes(text);
    &slug[..len] == id.as_bytes()
}

/// The slug of `text`: ASCII, at most 48 bytes, so made on the stack; and its length.
fn slug_bytes(text: &str) -> ([u8; 48], usize) {
    let mut slug = [0u8; 48];
    let mut len = 0;
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            slug[len] = c.to_ascii_lowercase() as u8;
            len += 1;
        } else if len > 0 && slug[len - 1] != b'-' {
            slug[len] = b'-';
            len += 1;
        }
        if len >= 48 {
            break;
        }
    }
    while len > 0 && slug[len - 1] == b'-' {
        len -= 1;
    }
    (slug, len)
}

/// Rules about the command as a whole.
/// `frontmatter_read` is false when the frontmatter could not be parsed: its description (if
/// any) is unknown then, so "missing description" would be a false report.
fn structural_rules(
    file: &SourceFile,
    cmd: &mut Command,
    frontmatter_read: bool,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let annotated = cmd.mode == Mode::Annotated;
    let by_mode = |s: Severity| if annotated { s } else { Severity::Warning };
    // A run's folder is `NAME-YYYYmmdd-HHMMSS-xxxx`, one file name: past 255 bytes every run
    // failed with "File name too long" and a hint about permissions.
    if cmd.name.len() > MAX_NAME_BYTES {
        diagnostics.push(
            Diagnostic::error(
                "name-too-long",
                format!(
                    "the command's name (its file name) is {} bytes; a run's records are named \
                     after it, and file systems allow {MAX_NAME_BYTES} bytes for it",
                    cmd.name.len()
                ),
            )
            .with_hint("rename the file to a shorter name"),
        );
    }
    if cmd.description.is_none() && frontmatter_read {
        let d = Diagnostic::new(
            by_mode(Severity::Error),
            "missing-description",
            "the command has no description",
        )
        .with_hint(
            "add `description: one line saying what it does` to the frontmatter (`list` shows it)",
        );
        diagnostics.push(
            if file.text.starts_with("---") || file.text.starts_with("+++") {
                d.at(file, 0..3)
            } else {
                d
            },
        );
        if !annotated {
            cmd.description = cmd
                .overview
                .lines()
                .next()
                .map(first_sentence)
                .filter(|s| !s.is_empty());
        }
    }
    if cmd.runnable_steps() == 0 {
        let others = cmd.other_blocks + cmd.steps.len();
        let message = if others > 0 {
            format!(
                "no runnable step: the file's {others} code block(s) are outside a Steps section or not shell"
            )
        } else {
            "no runnable step: there is no shell block under a Steps section".to_string()
        };
        let d = Diagnostic::new(by_mode(Severity::Error), "no-runnable-step", message).with_hint(
            "put ```bash blocks under `## Steps` (named by `###` headings); other sections are shown, never run",
        );
        diagnostics.push(match cmd.sections.first() {
            Some(s) => d.at_position(
                crate::source::Position {
                    line: s.line,
                    col: 1,
                },
                2,
            ),
            None => d,
        });
    }
    let rollback_ids: Vec<&str> = cmd.rollback.iter().map(|b| b.id.as_str()).collect();
    for block in cmd.blocks() {
        if let Some(target) = &block.attrs.rollback
            && !rollback_ids.contains(&target.as_str())
        {
            let hint = match crate::suggest::closest(target, rollback_ids.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None if rollback_ids.is_empty() => {
                    "add a `## Rollback` section with a `### <name>` heading and a ```bash block"
                        .into()
                }
                None => format!("rollback blocks: {}", rollback_ids.join(", ")),
            };
            diagnostics.push(
                Diagnostic::error(
                    "unknown-rollback",
                    format!("`rollback={target}` names no rollback block"),
                )
                .at(file, attr_span(file, block, "rollback"))
                .with_hint(hint),
            );
        }
        if let Some(name) = block.attrs.hosts_arg()
            && !cmd.args.iter().any(|a| a.name == name)
        {
            let names: Vec<&str> = cmd.args.iter().map(|a| a.name.as_str()).collect();
            let hint = match crate::suggest::closest(name, names.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "declare it under `nixcmd: args:` (e.g. `{name}: {{ variadic: true }}`)"
                ),
            };
            diagnostics.push(
                Diagnostic::error(
                    "unknown-argument",
                    format!("`hosts=arg:{name}` names no declared argument"),
                )
                .at(file, attr_span(file, block, "hosts"))
                .with_hint(hint),
            );
        }
        for (key, name) in [("when", &block.attrs.when), ("unless", &block.attrs.unless)] {
            if let Some(name) = name
                && !condition_known(file, cmd, name)
            {
                diagnostics.push(
                    Diagnostic::warning(
                        "unknown-condition-variable",
                        format!(
                            "`{key}={name}` names a variable that nothing in this file mentions"
                        ),
                    )
                    .at(file, attr_span(file, block, key))
                    .with_hint(format!(
                        "a typo? The variable is usually exported to `$NIXCMD_ENV` by an earlier \
                         block; if it comes from outside (CI), name `{name}` in the file's text, \
                         e.g. one sentence saying where it comes from"
                    )),
                );
            }
        }
        if block.runnable
            && let Some((index, line)) = block
                .code
                .lines()
                .enumerate()
                .find(|(_, l)| is_prompt_line(l))
        {
            let start = file.code_start(block.code_line + index, line);
            diagnostics.push(
                Diagnostic::warning(
                    "shell-prompt",
                    "this line starts with a shell prompt `$ `: bash would run `$` as a command",
                )
                .at(file, start..start + 1)
                .with_hint(
                    "a transcript (commands with their output) is shown, not run: remove the \
                     prompts (and the output lines), or mark the block `norun`",
                ),
            );
        }
        let undoes = block.phase == Phase::Rollback || block.attrs.always;
        if block.runnable && block.attrs.confirm.is_some() && undoes {
            let what = if block.phase == Phase::Rollback {
                "a rollback block"
            } else {
                "an `always` block"
            };
            diagnostics.push(
                Diagnostic::warning(
                    "confirm-not-asked",
                    format!("`{}` is {what}: its `confirm` is never asked", block.id),
                )
                .at(file, attr_span(file, block, "confirm"))
                .with_hint(
                    "rollback and `always` blocks run without a question: they undo or clean up \
                     after a run that may have no one left to answer; remove `confirm`, or move \
                     the work into a step",
                ),
            );
        }
        if annotated
            && block.runnable
            && block.attrs.confirm.is_some()
            && !undoes
            && block.attrs.rollback.is_none()
            && !block.attrs.irreversible
        {
            diagnostics.push(
                Diagnostic::warning(
                    "confirm-without-rollback",
                    format!(
                        "step `{}` asks for confirmation but has no `rollback=`",
                        block.id
                    ),
                )
                .at(file, attr_span(file, block, "confirm"))
                .with_hint(
                    "name a compensation with `rollback=ID`, or mark the step `irreversible`",
                ),
            );
        }
    }
}

/// A line of a transcript: `$ command`, as documentation writes a shell session. No shell
/// line starts so (a command named `$`), so the block was copied from a terminal.
fn is_prompt_line(line: &str) -> bool {
    let rest = line.trim_start();
    rest.strip_prefix("$ ")
        .is_some_and(|command| !command.trim().is_empty())
}

/// Whether a condition's variable is one the file can expect: a documented nixcmd variable,
/// a declared argument's, or a name the file's text mentions other than in `when=`/`unless=`
/// attributes (a block that exports it, or prose about an outside variable).
fn condition_known(file: &SourceFile, cmd: &Command, name: &str) -> bool {
    if crate::condition::DOCUMENTED.contains(&name) || cmd.args.iter().any(|a| a.env == name) {
        return true;
    }
    let in_attrs: usize = cmd
        .blocks()
        .map(|b| {
            usize::from(b.attrs.when.as_deref() == Some(name))
                + usize::from(b.attrs.unless.as_deref() == Some(name))
        })
        .sum();
    crate::condition::occurrences(&file.text, name) > in_attrs
}

/// The span of `key` in a block's fence line (or the fence line's start).
fn attr_span(file: &SourceFile, block: &Block, key: &str) -> Range<usize> {
    let start = file.line_start(block.line);
    let line = file.line_text(block.line);
    match line.find(&format!("{key}=")).or_else(|| line.find(key)) {
        Some(i) => {
            let rest = &line[i..];
            // A quoted value (`confirm="Switch the host now?"`) is underlined whole.
            let value = rest.find('=').map(|eq| eq + 1);
            let quoted = value.and_then(|v| {
                let quote = rest[v..]
                    .chars()
                    .next()
                    .filter(|c| *c == '"' || *c == '\'')?;
                let body = &rest[v + 1..];
                let mut escaped = false;
                body.char_indices()
                    .find(|&(_, c)| {
                        let closes = c == quote && !escaped;
                        escaped = c == '\\' && !escaped;
                        closes
                    })
                    .map(|(end, _)| v + 1 + end + 1)
            });
            let len = quoted.unwrap_or_else(|| rest.find([' ', '}']).unwrap_or(rest.len()));
            start + i..start + i + len
        }
        None => start..start + line.len().max(1),
    }
}

fn first_sentence(text: &str) -> String {
    let text = text.trim_start_matches("- ");
    let end = text.find(". ").map(|i| i + 1).unwrap_or(text.len());
    let s: String = text[..end].chars().take(120).collect();
    s.trim().to_string()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unclosed-fence findings of `text`: (line, message).
    fn unclosed(text: &str) -> Vec<(usize, String)> {
        let file = SourceFile::new("t.md", text);
        parse(&file, "t", Origin::Builtin)
            .diagnostics
            .into_iter()
            .filter(|d| d.code == "unclosed-fence")
            .map(|d| (d.position.unwrap().line, d.message))
            .collect()
    }

    /// A file whose lines end in CR alone is one finding at its first line end, not "no
    /// description", "no runnable step" and a fence "never closed" pointing at one that is.
    #[test]
    fn a_file_of_cr_only_line_endings_is_one_clear_finding() {
        let text = "---\rdescription: cr\rnixcmd: {}\r---\r## Steps\r```bash\recho\r```\r";
        for found in [
            decode("cr.md", text.as_bytes()).err(),
            decode_owned("cr.md", text.as_bytes().to_vec())
                .err()
                .map(|(d, _)| d),
        ] {
            let d = found.expect("a finding");
            assert_eq!(d.code, "file");
            assert!(d.message.contains("carriage return alone"), "{}", d.message);
            let at = d.position.expect("a position");
            assert_eq!((at.line, at.col), (1, 4));
        }
        // CRLF files, and a one-line file ending in CR, are read.
        for ok in ["---\r\ndescription: x\r\n---\r\n", "# Title\r"] {
            assert!(decode("ok.md", ok.as_bytes()).is_ok(), "{ok:?}");
            assert!(
                decode_owned("ok.md", ok.as_bytes().to_vec()).is_ok(),
                "{ok:?}"
            );
        }
    }

    /// A name too long to name a run's folder is an error (every run failed with "File name
    /// too long"); the longest that fits is not.
    #[test]
    fn a_name_too_long_for_a_run_folder_is_an_error() {
        let text = "---\ndescription: x\nnixcmd: {}\n---\n## Steps\n```bash\necho\n```\n";
        let file = SourceFile::new("t.md", text);
        let codes = |name: &str| -> Vec<&'static str> {
            (parse(&file, name, Origin::Builtin).diagnostics.iter())
                .map(|d| d.code)
                .collect()
        };
        assert_eq!(codes(&"n".repeat(MAX_NAME_BYTES + 1)), ["name-too-long"]);
        assert!(codes(&"n".repeat(MAX_NAME_BYTES)).is_empty());
    }

    /// A fence line of thousands of bad attributes gets twenty diagnostics and a count of the
    /// rest (each diagnostic shows the line: all of them took minutes); repeated keys are
    /// still found among many attributes.
    #[test]
    fn a_fence_line_of_many_bad_attributes_is_told_in_twenty_diagnostics_and_a_count() {
        let attrs: Vec<String> = (0..5000).map(|i| format!("a{i}=b")).collect();
        let text = format!(
            "---\ndescription: x\nnixcmd: {{}}\n---\n## Steps\n```bash {{{}}}\necho\n```\n",
            attrs.join(" ")
        );
        let file = SourceFile::new("t.md", &text);
        let found: Vec<(&str, String)> = (parse(&file, "t", Origin::Builtin).diagnostics.iter())
            .map(|d| (d.code, d.message.clone()))
            .collect();
        assert_eq!(found.len(), 21, "{found:?}");
        assert_eq!(
            found[0],
            ("unknown-attribute", "unknown attribute `a0`".into())
        );
        assert_eq!(
            found[20],
            (
                "malformed-attribute",
                "4980 more problems in this fence's attributes, not shown".into()
            )
        );
        let many: Vec<String> = (0..40).map(|i| format!("a{i}=b")).collect();
        let text = format!(
            "---\ndescription: x\nnixcmd: {{}}\n---\n## Steps\n```bash {{id=x id=y {}}}\necho\n```\n",
            many.join(" ")
        );
        let file = SourceFile::new("t.md", &text);
        let cmd = parse(&file, "t", Origin::Builtin);
        assert!(
            cmd.diagnostics
                .iter()
                .any(|d| d.message == "attribute `id` is given twice"),
            "{:?}",
            cmd.diagnostics
        );
    }

    /// A closing line left outside the list item or quote is named; a fence the file ends
    /// in, or one whose item ends with other text, is "never closed".
    #[test]
    fn a_closing_line_outside_the_item_is_named() {
        let outside = |n: usize| {
            format!(
                "this code fence's closing line (line {n}) is outside the list item or quote the fence is in"
            )
        };
        let never = "this code fence is never closed".to_string();
        assert_eq!(
            unclosed("## Steps\n1. x\n   ```bash\n   true\n```\n"),
            [(3, outside(5)), (5, never.clone())]
        );
        assert_eq!(
            unclosed("## Steps\n> ````sh\n> true\n  ````  \r\n\n```\n"),
            [(2, outside(4)), (4, never.clone())]
        );
        // Too short to close a four-backtick fence, or another marker: not a closing line.
        for text in [
            "## Steps\n> ````sh\n> true\n```\n```\n",
            "## Steps\n> ```sh\n> true\n~~~\n~~~\n",
            "## Steps\n1. x\n   ```bash\n   true\n",
            "## Steps\n1. x\n   ```bash\ntrue\n",
        ] {
            assert_eq!(
                unclosed(text),
                [(
                    text.lines().position(|l| l.contains("``")).unwrap() + 1,
                    never.clone()
                )],
                "{text:?}"
            );
        }
    }

    #[test]
    fn default_ids_are_the_title_slug_else_phase_and_number() {
        assert_eq!(
            default_id_base(Some("Apply the change"), Phase::Step, 2),
            "apply-the-change"
        );
        assert_eq!(default_id_base(Some("!!!"), Phase::Check, 12), "check-12");
        assert_eq!(default_id_base(None, Phase::Prerequisite, 1), "prereq-1");
        assert_eq!(default_id_base(None, Phase::Rollback, 0), "rollback-0");
    }

    #[test]
    fn slugs() {
        assert_eq!(slug("Update inputs"), "update-inputs");
        assert_eq!(slug("🚀 Build & test!"), "build-test");
        assert_eq!(slug("restore-lock"), "restore-lock");
        assert_eq!(slug("--a__b  c--"), "a__b-c");
        assert_eq!(slug(""), "");
        assert_eq!(slug("!!!"), "");
        let long = "Ab ".repeat(30);
        assert_eq!(slug(&long), "ab-".repeat(16).trim_end_matches('-'));
        assert_eq!(slug(&"x".repeat(60)), "x".repeat(48));
        assert_eq!(slug(&("y".repeat(47) + " z")), "y".repeat(47));
        for (text, id) in [
            ("Step 1", "step-1"),
            ("Step 1", "step-2"),
            ("", ""),
            ("é", ""),
        ] {
            assert_eq!(slug_is(text, id), slug(text) == id, "{text:?} {id:?}");
        }
    }

    /// Ids are tracked in a list up to `LINEAR_IDS` and in a hash map past that: duplicates
    /// and generated ids are the same on both sides of the switch.
    #[test]
    fn ids_past_the_linear_limit() {
        for n in [3, LINEAR_IDS - 1, LINEAR_IDS, LINEAR_IDS + 1, 40] {
            let mut md = String::from("---\ndescription: d\nnixcmd:\n---\n## Steps\n");
            for i in 0..n {
                md.push_str(&format!("### S\n```bash {{id=a{i}}}\nx\n```\n"));
            }
            // Duplicates of the first and the last id, and untitled blocks whose generated
            // ids collide with explicit ones.
            md.push_str(&format!(
                "```bash {{id=a0}}\nx\n```\n```bash {{id=a{}}}\nx\n```\n```bash {{id=step-{}}}\nx\n```\n## Rollback\n```bash\nx\n```\n",
                n - 1,
                n + 4
            ));
            let file = SourceFile::new("t.md", md);
            let c = parse(&file, "t", Origin::Builtin);
            let dups: Vec<_> = c
                .diagnostics
                .iter()
                .filter(|d| d.code == "duplicate-id")
                .collect();
            assert_eq!(dups.len(), 2, "{n}");
            let ids: Vec<&str> = c.blocks().map(|b| b.id.as_str()).collect();
            let mut unique = ids.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), ids.len(), "{n}: {ids:?}");
            assert_eq!(ids[n], "a0-dup", "{n}");
            assert_eq!(ids[n + 1], format!("a{}-dup", n - 1), "{n}");
            assert_eq!(ids[n + 2], format!("step-{}", n + 4), "{n}");
            assert_eq!(ids[n + 3], "rollback-1", "{n}");
        }
    }

    /// A large file is hashed on a second thread: same hash, same command otherwise.
    #[test]
    fn large_files_hash_the_same_in_parallel() {
        let mut md = String::from("---\ndescription: d\nnixcmd:\n---\n## Steps\n");
        // Distinct titles: ids made from one title would be numbered one by one.
        for i in 0.. {
            if md.len() > PARALLEL_HASH_BYTES {
                break;
            }
            md.push_str(&format!("### S{i}\nSome prose.\n```bash\necho hi\n```\n"));
        }
        let file = SourceFile::new("t.md", md);
        let full = parse_with(&file, "t", Origin::Builtin, Depth::Full);
        assert_eq!(full.hash, hex(&Sha256::digest(file.text.as_bytes())));
        let unhashed = parse_with(&file, "t", Origin::Builtin, Depth::Unhashed);
        assert_eq!(unhashed.hash, "");
        let ids = |c: &Command| c.blocks().map(|b| b.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&full), ids(&unhashed));
        assert_eq!(full.diagnostics.len(), unhashed.diagnostics.len());
    }

    #[test]
    fn decode_refuses_binary_and_bad_utf8_with_positions() {
        let d = decode("b.md", b"ab\ncd\x00").unwrap_err();
        assert_eq!(d.position.unwrap().line, 2);
        assert!(d.message.contains("binary"));
        // Invalid bytes before the NUL count as one character each.
        let d = decode("n.md", b"\xff\xfe\x00").unwrap_err();
        assert_eq!(d.position.unwrap().col, 3);
        let d = decode("u.md", b"ok\n\xff").unwrap_err();
        assert_eq!((d.position.unwrap().line, d.position.unwrap().col), (2, 1));
        let big = vec![b'a'; MAX_FILE_BYTES + 1];
        assert!(decode("big.md", &big).unwrap_err().message.contains("MiB"));
        assert_eq!(decode("bom.md", b"\xEF\xBB\xBF# x").unwrap().text, "# x");
        #[allow(clippy::result_large_err)]
        let owned = |b: &[u8]| decode_owned("o.md", b.to_vec());
        assert_eq!(owned(b"\xEF\xBB\xBF# x").unwrap().text, "# x");
        assert_eq!(owned(b"# y").unwrap().text, "# y");
        let (d, back) = owned(b"ok\n\xff").unwrap_err();
        assert_eq!((d.position.unwrap().line, back.len()), (2, 4));
        assert!(owned(b"a\x00").unwrap_err().0.message.contains("binary"));
    }
}
