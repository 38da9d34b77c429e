//! A `list` row straight from a file's frontmatter and line scan, without building a
//! [`Command`](crate::command::Command): listing a thousand runbooks spent most of its time
//! allocating and freeing blocks, ids and section headings no row shows. It counts what a row
//! needs (runnable steps, steps that ask, errors) by the parser's own rules and answers
//! `None` whenever the file is not plain enough to be sure — the frontmatter does not parse,
//! the description would come from the overview, or the body needs a full Markdown parse —
//! and the caller parses the file as before. Tests and the fuzz target check that every row
//! it gives equals the parser's.

use crate::attrs;
use crate::command::{Mode, Origin, Phase};
use crate::diagnostic::Severity;
use crate::frontmatter;
use crate::list::Row;
use crate::outline::ElementKind;
use crate::outline_scan;
use crate::parser::{self, SHELL_LANGUAGES, default_id_base, unique_id};
use crate::sections::{self, SectionKind};
use crate::settings;
use crate::source::SourceFile;
use std::borrow::Cow;

/// What the row needs of one block under a phase.
struct BlockFacts<'a> {
    phase: Phase,
    /// Borrowed from the outline (or a `## Step N: Title` heading's title).
    title: Option<Cow<'a, str>>,
    fence: FenceFacts<'a>,
}

/// What the row needs of one fence's info string (`bash {id=x rollback=y}`): borrowed from
/// it on the short way ([`quick_fence`]), owned when the attribute parser read it.
#[derive(Debug, PartialEq)]
struct FenceFacts<'a> {
    runnable: bool,
    explicit_id: Option<Cow<'a, str>>,
    confirm: bool,
    /// An `always` block never asks (see `Command::settle_gates`).
    always: bool,
    rollback: Option<Cow<'a, str>>,
    hosts_arg: Option<Cow<'a, str>>,
    /// The attribute parser's and validator's errors.
    errors: usize,
}

/// The row of `file` as [`parser::parse_with`](crate::parser::parse_with) at
/// `Depth::Summary` would give it, or `None` when only the parser can tell.
pub fn row(file: &SourceFile, name: &str, origin: &Origin) -> Option<Row> {
    row_with(file, || (name.to_string(), origin.clone()))
}

/// [`row`], with the row's name and source from `named`, called only when there is a row:
/// `list` moves them out of its search results instead of copying them.
pub fn row_with(file: &SourceFile, named: impl FnOnce() -> (String, Origin)) -> Option<Row> {
    let fm = frontmatter::parse(file).ok()?;
    let meta = settings::interpret(file, &fm);
    // Without a description the parser takes one from the overview, which the scan skips.
    let description = meta.description?;
    let mode = meta.mode.unwrap_or(Mode::Guided);
    let mut errors = meta
        .diagnostics
        .iter()
        .filter(|d| d.severity >= Severity::Error)
        .count();

    let body = &file.text[fm.body_start..];
    let elements = outline_scan::scan(&file.text, fm.body_start, body)?;

    // The parser's walk, keeping only what decides counts and errors.
    let mut kind = SectionKind::Overview;
    let mut in_section = false;
    let mut titled = false;
    let mut sub: Option<Cow<str>> = None;
    // At most one block per fence: no regrowing. Not one per element: a dozen blocks' room
    // is over a kilobyte, past malloc's per-thread cache, and each such request made it tidy
    // its free lists (`malloc_consolidate`) once per file.
    let fences = elements
        .iter()
        .filter(|e| matches!(e.kind, ElementKind::Fence { .. }))
        .count();
    let mut blocks: Vec<BlockFacts> = Vec::with_capacity(fences);
    for el in &elements {
        match &el.kind {
            ElementKind::Heading { level: 1, .. } if !titled && !in_section => titled = true,
            ElementKind::Heading { level, text } if *level <= 2 => {
                let class = sections::classify(text);
                kind = class.kind;
                in_section = true;
                sub = class.step_title.map(Cow::Owned);
            }
            ElementKind::Heading { text, .. } => sub = Some(Cow::Borrowed(text)),
            ElementKind::Fence {
                info,
                closed,
                fenced,
                ..
            } => {
                if !closed {
                    // The scan gives up on unclosed fences; a full parse reports them.
                    return None;
                }
                let phase = match kind {
                    SectionKind::Prerequisites => Phase::Prerequisite,
                    SectionKind::Steps => Phase::Step,
                    SectionKind::SuccessCriteria => Phase::Check,
                    SectionKind::Rollback => Phase::Rollback,
                    _ => continue,
                };
                if !fenced {
                    continue;
                }
                let fence = quick_fence(info)
                    .unwrap_or_else(|| parsed_fence(info, phase == Phase::Rollback));
                errors += fence.errors;
                blocks.push(BlockFacts {
                    phase,
                    title: sub.clone(),
                    fence,
                });
            }
            // The scan yields no prose; a summary with a description reads none.
            ElementKind::Paragraph { .. } | ElementKind::ListItem { .. } => {}
        }
    }
    // `duplicate-id`: every explicit id after the first of its kind (a few blocks: compared
    // pairwise, without collecting them).
    errors += blocks
        .iter()
        .enumerate()
        .filter(|(i, b)| {
            b.fence.explicit_id.as_ref().is_some_and(|id| {
                blocks[..*i]
                    .iter()
                    .any(|e| e.fence.explicit_id.as_ref() == Some(id))
            })
        })
        .count();

    let steps = blocks
        .iter()
        .filter(|b| b.phase == Phase::Step && b.fence.runnable)
        .count();
    // `settle_gates`: a runnable step asks when it says so, or always in a guided file.
    let guided = mode == Mode::Guided;
    let confirm_steps = blocks
        .iter()
        .filter(|b| {
            b.phase == Phase::Step
                && b.fence.runnable
                && !b.fence.always
                && (b.fence.confirm || guided)
        })
        .count();
    // `no-runnable-step` is an error only in an annotated file (`missing-description`
    // cannot occur: there is a description).
    if steps == 0 && mode == Mode::Annotated {
        errors += 1;
    }
    // `unknown-rollback`: needs the rollback blocks' ids, assigned as the parser does.
    errors += unknown_rollbacks(&blocks);
    // `unknown-argument`: `hosts=arg:NAME` without an argument of that name.
    errors += blocks
        .iter()
        .filter_map(|b| b.fence.hosts_arg.as_deref())
        .filter(|name| !meta.args.iter().any(|a| a.name == *name))
        .count();

    // The titles borrow from the outline: dropped first, then its vector goes back.
    drop(blocks);
    outline_scan::recycle(elements);
    let (name, source) = named();
    Some(Row {
        name,
        description,
        source,
        mode: Some(mode),
        args: meta.args,
        argument_hint: meta.argument_hint,
        steps,
        confirm_steps,
        errors,
        error: None,
    })
}

/// A fence's facts by the attribute parser and validator: every info string. `rollback`:
/// the fence is in the Rollback section (where, as on `always` blocks, conditions are errors).
fn parsed_fence(info: &str, rollback: bool) -> FenceFacts<'_> {
    let parsed = attrs::parse_info(info);
    let validated = attrs::validate(&parsed.attrs);
    let misplaced = attrs::misplaced_conditions(&parsed.attrs, &validated.attrs, rollback).len();
    let a = validated.attrs;
    FenceFacts {
        runnable: SHELL_LANGUAGES.contains(&parsed.language.as_str()) && !a.norun,
        explicit_id: validated.id.map(|(id, _)| Cow::Owned(id)),
        confirm: a.confirm.is_some(),
        always: a.always,
        hosts_arg: a.hosts_arg().map(|h| Cow::Owned(h.to_string())),
        rollback: a.rollback.map(Cow::Owned),
        errors: parsed.errors.len() + validated.errors.len() + misplaced,
    }
}

/// A fence's facts without the attribute parser, for the shapes runbooks use: a lowercase
/// language, then perhaps `{…}` holding `key` and `key=value` separated by single spaces,
/// values unquoted or quoted without escapes, keys among `id`, `rollback`, `confirm` and
/// the flags, none twice, every one valid. Such a list has no errors. Anything else (other
/// keys, commas, tabs, escapes, text after the list, an invalid value) is `None`, and
/// [`parsed_fence`] reads it: the parser splits the list and the validator decides, each
/// allocating (`list` reads six fences per file; the two took a sixth of its time).
fn quick_fence(info: &str) -> Option<FenceFacts<'_>> {
    let b = info.as_bytes();
    let lang_end = b
        .iter()
        .position(|&c| FENCE_BYTE[usize::from(c)] & LOWER == 0)
        .unwrap_or(b.len());
    let mut facts = FenceFacts {
        runnable: SHELL_LANGUAGES.contains(&&info[..lang_end]),
        explicit_id: None,
        confirm: false,
        always: false,
        rollback: None,
        hosts_arg: None,
        errors: 0,
    };
    if lang_end == b.len() {
        return Some(facts);
    }
    let open = lang_end + b[lang_end..].iter().take_while(|&&c| c == b' ').count();
    // The list, `{` and `}` included, must end the info string (whose end the outline
    // trimmed): its inside is the bytes between.
    let list = b.get(open + 1..b.len() - 1)?;
    if b[open] != b'{' || b[b.len() - 1] != b'}' {
        return None;
    }
    let text = &info[open + 1..b.len() - 1];
    // Keys seen, one bit each (a key given twice is the validator's error).
    let mut seen = 0u8;
    let mut norun = false;
    let mut i = 0;
    while i < list.len() {
        if list[i] == b' ' {
            i += 1;
            continue;
        }
        let key_start = i;
        i += list[i..]
            .iter()
            .position(|&c| FENCE_BYTE[usize::from(c)] & LOWER == 0)
            .unwrap_or(list.len() - i);
        let key = &text[key_start..i];
        let value = match list.get(i) {
            None | Some(b' ') => None,
            Some(b'=') if list.get(i + 1) == Some(&b'"') => {
                let start = i + 2;
                // Up to the closing quote, which has no `\` before it.
                let len = list[start..]
                    .iter()
                    .position(|&c| FENCE_BYTE[usize::from(c)] & QUOTED == 0)?;
                if list[start + len] != b'"' {
                    return None;
                }
                i = start + len + 1;
                Some(&text[start..start + len])
            }
            Some(b'=') => {
                let start = i + 1;
                i = start
                    + list[start..]
                        .iter()
                        .position(|&c| FENCE_BYTE[usize::from(c)] & UNQUOTED == 0)
                        .unwrap_or(list.len() - start);
                Some(&text[start..i])
            }
            Some(_) => return None,
        };
        // A token ends at a space or the list's end.
        if list.get(i).is_some_and(|&c| c != b' ') {
            return None;
        }
        let flag = || matches!(value, None | Some("true" | "false"));
        let (bit, valid) = match key {
            "id" => {
                facts.explicit_id = value.map(Cow::Borrowed);
                (1, value.is_some_and(attrs::is_valid_id))
            }
            "rollback" => {
                facts.rollback = value.map(Cow::Borrowed);
                (2, value.is_some_and(attrs::is_valid_id))
            }
            "confirm" => {
                facts.confirm = true;
                (4, true)
            }
            "readonly" => (8, flag()),
            "always" => {
                facts.always = value != Some("false");
                (16, flag())
            }
            "irreversible" => (32, flag()),
            "norun" => {
                norun = value != Some("false");
                (64, flag())
            }
            _ => return None,
        };
        if !valid || seen & bit != 0 {
            return None;
        }
        seen |= bit;
    }
    facts.runnable &= !norun;
    Some(facts)
}

/// [`quick_fence`]'s byte classes: one table lookup a byte.
const LOWER: u8 = 1;
/// A byte of an unquoted value: not whitespace, `,`, `"` or `}`, which end one for the
/// attribute parser or which the short way leaves to it.
const UNQUOTED: u8 = 2;
/// A byte inside quotes: not `"` (the end) or `\` (an escape, left to the parser).
const QUOTED: u8 = 4;
const FENCE_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        if c.is_ascii_lowercase() {
            t[i] |= LOWER;
        }
        if !(c.is_ascii_whitespace() || matches!(c, b',' | b'"' | b'}')) {
            t[i] |= UNQUOTED;
        }
        if !matches!(c, b'"' | b'\\') {
            t[i] |= QUOTED;
        }
        i += 1;
    }
    t
};

/// `unknown-rollback`s: rollback targets no rollback block's id equals. Each target is
/// looked up without the ids ([`rollback_found`]) when that is sure, else against
/// [`assign_ids`]' (made once, only then: they cost a string a block).
fn unknown_rollbacks(blocks: &[BlockFacts]) -> usize {
    let mut ids: Option<Vec<Cow<str>>> = None;
    let mut unknown = 0;
    for target in blocks.iter().filter_map(|b| b.fence.rollback.as_deref()) {
        let found = rollback_found(blocks, target).unwrap_or_else(|| {
            let ids = ids.get_or_insert_with(|| assign_ids(blocks));
            blocks
                .iter()
                .zip(ids.iter())
                .any(|(b, id)| b.phase == Phase::Rollback && id == target)
        });
        if !found {
            unknown += 1;
        }
    }
    unknown
}

/// Whether a rollback block's id is `target`, by [`assign_ids`]' rules without making the
/// ids, or `None` when that takes them. Sure when `target` is a valid id that no made-up
/// id can be (those end in `-dup` or `-N`, a `PHASE-N` too): then only the first block
/// holding it explicitly has it, else only the first block without an explicit id whose
/// title's slug it is (the others' ids are made unique against it).
fn rollback_found(blocks: &[BlockFacts], target: &str) -> Option<bool> {
    if !attrs::is_valid_id(target)
        || target.ends_with("-dup")
        || target.as_bytes().last().is_some_and(u8::is_ascii_digit)
    {
        return None;
    }
    let holder = match blocks
        .iter()
        .find(|b| b.fence.explicit_id.as_deref() == Some(target))
    {
        Some(b) => Some(b),
        None => blocks.iter().find(|b| {
            b.fence.explicit_id.is_none()
                && b.title
                    .as_deref()
                    .is_some_and(|t| parser::slug_is(t, target))
        }),
    };
    Some(holder.is_some_and(|b| b.phase == Phase::Rollback))
}

/// Every block's id, in file order, by the parser's rules (`finish_blocks`): an explicit
/// id as written (a repeated one gets a fresh `ID-dup`), else the slug of its title or
/// `PHASE-N`, made unique against explicit ids and the ids given so far.
fn assign_ids<'b>(blocks: &'b [BlockFacts]) -> Vec<Cow<'b, str>> {
    // Explicit ids are borrowed from the blocks: only made-up ones are new strings.
    let taken = |c: &str| {
        blocks
            .iter()
            .any(|b| b.fence.explicit_id.as_deref() == Some(c))
    };
    let mut seen: Vec<Cow<str>> = Vec::with_capacity(blocks.len());
    let mut counters = [0usize; 4];
    for b in blocks {
        let n = &mut counters[b.phase as usize];
        *n += 1;
        let free = |c: &str, seen: &[Cow<str>]| !taken(c) && !seen.iter().any(|s| s == c);
        let id = match &b.fence.explicit_id {
            Some(id) if seen.iter().any(|s| s == id) => {
                Cow::Owned(unique_id(&format!("{id}-dup"), |c| free(c, &seen)))
            }
            Some(id) => Cow::Borrowed(id.as_ref()),
            None => {
                let base = default_id_base(b.title.as_deref(), b.phase, *n);
                // Usually free: kept as is rather than copied by `unique_id`.
                Cow::Owned(if free(&base, &seen) {
                    base
                } else {
                    unique_id(&base, |c| free(c, &seen))
                })
            }
        };
        seen.push(id);
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parser::{self, Depth};

    fn full_row(text: &str) -> serde_json::Value {
        let file = SourceFile::new("x.md", text);
        let c = parser::parse_with(&file, "x", Origin::Builtin, Depth::Summary);
        serde_json::to_value(crate::list::row_of_command(c)).expect("rows serialize")
    }

    /// The summary's row when it gives one, and whether it did.
    fn check(text: &str) -> bool {
        let file = SourceFile::new("x.md", text);
        match row(&file, "x", &Origin::Builtin) {
            Some(r) => {
                let fast = serde_json::to_value(r).expect("rows serialize");
                assert_eq!(fast, full_row(text), "{text}");
                true
            }
            None => false,
        }
    }

    const PLAIN: &str = "---\ndescription: d\nnixcmd:\n  args:\n    host: {}\n---\n# t\n\n## Steps\n### One\n```bash {id=one rollback=undo}\necho\n```\n### Two\n```bash {confirm=\"Sure?\"}\necho\n```\n\n## Rollback\n### undo\n```bash\necho\n```\n";

    #[test]
    fn plain_file_gives_the_parsers_row() {
        assert!(check(PLAIN));
        assert_eq!(full_row(PLAIN)["confirm_steps"], 1);
    }

    #[test]
    fn errors_are_counted_as_the_parser_counts_them() {
        let cases = [
            // unknown rollback target, twice
            PLAIN.replace("rollback=undo", "rollback=nope"),
            // duplicate ids, and a rollback id made unique by a `-2`
            PLAIN.replace("{confirm=\"Sure?\"}", "{id=one}"),
            PLAIN.replace("### undo", "### One"),
            // a rollback block named like a step: its id is `one-2`, not `one`
            PLAIN
                .replace("{id=one rollback=undo}", "{rollback=one}")
                .replace("### undo", "### One"),
            PLAIN.replace(
                "```bash\necho\n```\n\n## Rollback",
                "```bash {id=undo}\necho\n```\n\n## Rollback",
            ),
            // hosts=arg: with and without the argument
            PLAIN.replace("{id=one ", "{id=one hosts=arg:host "),
            PLAIN.replace("{id=one ", "{id=one hosts=arg:nohost "),
            // invalid attributes
            PLAIN.replace("{id=one ", "{id=One! timeout=abc "),
            // no runnable step, annotated and guided
            PLAIN.replace("```bash {", "```python {"),
            PLAIN
                .replace("nixcmd:\n  args:\n    host: {}\n", "")
                .replace("```bash {", "```text {"),
            // `## Step 3: Build` titles, a second `#` heading, norun
            PLAIN.replace("## Steps\n### One", "# Again\n## Step 1: Build"),
            PLAIN.replace("```bash {id=one", "```bash {norun id=one"),
            // guided: every runnable step asks
            PLAIN.replace("nixcmd:\n  args:\n    host: {}\n", ""),
            // a settings error
            PLAIN.replace("host: {}", "host: {variadic: maybe}"),
        ];
        let mut fast = 0;
        for text in &cases {
            fast += usize::from(check(text));
        }
        assert!(
            fast >= cases.len() - 1,
            "only {fast} of {} on the fast path",
            cases.len()
        );
    }

    /// Edits that move a file across the summary's rules: ids, rollback targets, hosts,
    /// languages, confirmations, headings, frontmatter.
    const EDITS: &[(&str, &str)] = &[
        ("rollback=", "rollback=x"),
        ("id=", "id=dup "),
        ("{id=", "{id=a "),
        ("```bash", "```python"),
        ("```bash", "```sh {confirm}"),
        ("```bash\n", "```bash {id=restore}\n"),
        ("```bash\n", "```bash {rollback=restore hosts=arg:hosts}\n"),
        ("```", "~~~"),
        ("confirm", "norun"),
        ("confirm=", "always confirm="),
        ("confirm=", "always=false confirm="),
        ("### ", "## "),
        ("## ", "### "),
        ("## Rollback", "## Steps"),
        ("## Steps", "## Step 1: Go"),
        ("# ", "## "),
        ("nixcmd:", "nixcmd: {}\nx:"),
        ("description:", "argument-hint:"),
        ("description:", "description: \"a: b\"\nold:"),
        ("timeout", "timeout: nope\n  t"),
        ("---\n", ""),
        ("\n\n", "\n"),
    ];

    /// Every row the summary gives equals the parser's, for every runbook we have (fixtures,
    /// built-ins, the corpus of real command files, the benchmark's generated ones) and for
    /// each of them under every edit in [`EDITS`]; and the summary answers for most of them.
    #[test]
    fn summary_rows_equal_parsed_rows() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        crate::list::tests::markdown_files(&root.join("fixtures/runbooks"), &mut files);
        crate::list::tests::markdown_files(&root.join("commands"), &mut files);
        crate::list::tests::markdown_files(
            &root.join("../shared/corpus/real-commands"),
            &mut files,
        );
        let mut texts: Vec<String> = files
            .iter()
            .filter_map(|p| String::from_utf8(std::fs::read(p).ok()?).ok())
            .collect();
        assert!(texts.len() > 20, "found only {} runbooks", texts.len());
        texts.push(PLAIN.to_string());
        let originals = texts.len();
        for i in 0..originals {
            for (from, to) in EDITS {
                texts.push(texts[i].replace(from, to));
                texts.push(texts[i].replacen(from, to, 1));
            }
        }
        let mut fast = 0;
        for text in &texts {
            fast += usize::from(check(text));
        }
        assert!(
            fast > texts.len() / 3,
            "the summary read only {fast} of {} files",
            texts.len()
        );
    }

    /// The short way for fence attributes gives the parser's and validator's facts whenever
    /// it answers, and answers for the usual lists.
    #[test]
    fn quick_fence_facts_equal_parsed_ones() {
        let pieces = [
            "",
            " ",
            "  ",
            "bash",
            "sh",
            "python",
            "Bash",
            "bash2",
            "{",
            "}",
            "{}",
            "id=a",
            "id=A.b_c-1",
            "id=",
            "id=-a",
            "id=\"a\"",
            "id=a,b",
            "rollback=r",
            "rollback=",
            "confirm",
            "confirm=",
            "confirm=\"Go? {x}\"",
            "confirm=\"a\\\"b\"",
            "confirm=\"open",
            "readonly",
            "readonly=true",
            "readonly=false",
            "readonly=yes",
            "norun",
            "norun=false",
            "norun=true",
            "always",
            "irreversible",
            "hosts=arg:h",
            "timeout=5m",
            "on-fail=continue",
            "idx",
            "\t",
            ",",
            "x=\"a\"b",
            "é",
            "id=é",
        ];
        let mut infos = Vec::new();
        for lang in ["", "bash", "sh", "text", "Bash", "bash2"] {
            for sep in [" ", "", "  "] {
                for a in pieces {
                    for c in pieces {
                        infos.push(format!("{lang}{sep}{{{a} {c}}}"));
                        infos.push(format!("{lang}{sep}{{{a}{c}}}"));
                    }
                    infos.push(format!("{lang}{sep}{a}"));
                    infos.push(format!("{lang}{sep}{{{a}}} x"));
                    infos.push(format!("{lang}{sep}{{ {a} }}"));
                }
            }
        }
        let mut quick = 0;
        for info in &infos {
            if let Some(facts) = quick_fence(info) {
                assert_eq!(facts, parsed_fence(info, false), "{info:?}");
                quick += 1;
            }
        }
        assert!(quick > infos.len() / 20, "only {quick} of {}", infos.len());
        for usual in [
            "bash",
            "",
            "bash {id=check-tools readonly}",
            "bash {id=apply rollback=restore confirm=\"Apply?\"}",
            "sh {norun}",
            "bash{}",
        ] {
            assert!(quick_fence(usual).is_some(), "{usual:?}");
        }
    }

    /// Lists the short way must leave to the parser: errors to count, keys it does not
    /// know, separators and quoting it does not read.
    #[test]
    fn quick_fence_gives_up_on_what_it_does_not_read() {
        for info in [
            "Bash",
            "bash title=x",
            "bash {id=a",
            "bash {id=a} x",
            "bash {id=a id=b}",
            "bash {id=Bad!}",
            "bash {id=}",
            "bash {rollback=}",
            "bash {readonly=yes}",
            "bash {timeout=5m}",
            "bash {hosts=arg:h}",
            "bash {on-fail=continue}",
            "bash {id=a,readonly}",
            "bash {id=a\treadonly}",
            "bash {confirm=\"a\\\"b\"}",
            "bash {confirm=\"open}",
            "bash {confirm=\"a\"id=b}",
            "bash {unknown}",
        ] {
            assert!(quick_fence(info).is_none(), "{info:?}");
        }
    }

    #[test]
    fn unsure_files_fall_back() {
        let file = |t: &str| SourceFile::new("x.md", t);
        // no description: the parser reads the overview
        assert!(
            row(
                &file("# t\n\nHello.\n\n## Steps\n```bash\nx\n```\n"),
                "x",
                &Origin::Builtin
            )
            .is_none()
        );
        // a block quote needs the full outline
        assert!(
            row(
                &file("---\ndescription: d\n---\n> q\n## Steps\n```bash\nx\n```\n"),
                "x",
                &Origin::Builtin
            )
            .is_none()
        );
        // broken frontmatter
        assert!(
            row(
                &file("---\ndescription: [\n---\n## Steps\n"),
                "x",
                &Origin::Builtin
            )
            .is_none()
        );
    }

    /// The short look-up of a rollback target answers as the made ids do, or not at all;
    /// and it does answer the usual case (a target named by a rollback block's title).
    #[test]
    fn rollback_lookup_equals_the_assigned_ids() {
        let fence = |id: Option<&'static str>| FenceFacts {
            runnable: true,
            explicit_id: id.map(Cow::Borrowed),
            confirm: false,
            always: false,
            rollback: None,
            hosts_arg: None,
            errors: 0,
        };
        let ids = [
            None,
            Some("undo"),
            Some("undo-2"),
            Some("undo-dup"),
            Some("x"),
        ];
        let titles = [
            None,
            Some("undo"),
            Some("Undo!"),
            Some(""),
            Some("undo 2"),
            Some("x"),
        ];
        let phases = [Phase::Step, Phase::Rollback];
        let mut kinds = Vec::new();
        for id in ids {
            for title in titles {
                for phase in phases {
                    kinds.push((id, title, phase));
                }
            }
        }
        let targets = [
            "undo",
            "undo-2",
            "undo-dup",
            "x",
            "rollback-1",
            "Undo",
            "nope",
            "",
        ];
        let (mut sure, mut all) = (0, 0);
        for a in &kinds {
            for b in &kinds {
                for c in &kinds {
                    let blocks: Vec<BlockFacts> = [a, b, c]
                        .iter()
                        .map(|&&(id, title, phase)| BlockFacts {
                            phase,
                            title: title.map(Cow::Borrowed),
                            fence: fence(id),
                        })
                        .collect();
                    let made = assign_ids(&blocks);
                    for target in targets {
                        all += 1;
                        let by_ids = blocks
                            .iter()
                            .zip(&made)
                            .any(|(b, id)| b.phase == Phase::Rollback && id == target);
                        if let Some(found) = rollback_found(&blocks, target) {
                            assert_eq!(found, by_ids, "{target:?} in {:?}", [a, b, c]);
                            sure += 1;
                        }
                    }
                }
            }
        }
        assert!(sure * 3 > all, "only {sure} of {all}");
        let usual = [
            BlockFacts {
                phase: Phase::Step,
                title: Some(Cow::Borrowed("Apply")),
                fence: fence(Some("apply")),
            },
            BlockFacts {
                phase: Phase::Rollback,
                title: Some(Cow::Borrowed("restore")),
                fence: fence(None),
            },
        ];
        assert_eq!(rollback_found(&usual, "restore"), Some(true));
        assert_eq!(rollback_found(&usual, "apply"), Some(false));
        assert_eq!(rollback_found(&usual, "restore-2"), None);
        assert_eq!(rollback_found(&usual, "apply-dup"), None);
    }
}
