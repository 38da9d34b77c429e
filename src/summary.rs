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
use crate::parser::{SHELL_LANGUAGES, default_id_base, unique_id};
use crate::sections::{self, SectionKind};
use crate::settings;
use crate::source::SourceFile;
use std::borrow::Cow;

/// What the row needs of one block under a phase.
struct BlockFacts<'a> {
    phase: Phase,
    /// Borrowed from the outline (or a `## Step N: Title` heading's title).
    title: Option<Cow<'a, str>>,
    explicit_id: Option<String>,
    runnable: bool,
    confirm: bool,
    rollback: Option<String>,
    hosts_arg: Option<String>,
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
                let parsed = attrs::parse_info(info);
                let validated = attrs::validate(&parsed.attrs);
                errors += parsed.errors.len() + validated.errors.len();
                let a = validated.attrs;
                blocks.push(BlockFacts {
                    phase,
                    title: sub.clone(),
                    explicit_id: validated.id.map(|(id, _)| id),
                    runnable: SHELL_LANGUAGES.contains(&parsed.language.as_str()) && !a.norun,
                    confirm: a.confirm.is_some(),
                    hosts_arg: a.hosts_arg().map(str::to_string),
                    rollback: a.rollback,
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
            b.explicit_id.as_ref().is_some_and(|id| {
                blocks[..*i]
                    .iter()
                    .any(|e| e.explicit_id.as_ref() == Some(id))
            })
        })
        .count();

    let steps = blocks
        .iter()
        .filter(|b| b.phase == Phase::Step && b.runnable)
        .count();
    // `settle_gates`: a runnable step asks when it says so, or always in a guided file.
    let guided = mode == Mode::Guided;
    let confirm_steps = blocks
        .iter()
        .filter(|b| b.phase == Phase::Step && b.runnable && (b.confirm || guided))
        .count();
    // `no-runnable-step` is an error only in an annotated file (`missing-description`
    // cannot occur: there is a description).
    if steps == 0 && mode == Mode::Annotated {
        errors += 1;
    }
    // `unknown-rollback`: needs the rollback blocks' ids, assigned as the parser does.
    if blocks.iter().any(|b| b.rollback.is_some()) {
        let ids = assign_ids(&blocks);
        let is_rollback_id = |target: &str| {
            blocks
                .iter()
                .zip(&ids)
                .any(|(b, id)| b.phase == Phase::Rollback && id == target)
        };
        errors += blocks
            .iter()
            .filter_map(|b| b.rollback.as_deref())
            .filter(|target| !is_rollback_id(target))
            .count();
    }
    // `unknown-argument`: `hosts=arg:NAME` without an argument of that name.
    errors += blocks
        .iter()
        .filter_map(|b| b.hosts_arg.as_deref())
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

/// Every block's id, in file order, by the parser's rules (`finish_blocks`): an explicit
/// id as written (a repeated one gets a fresh `ID-dup`), else the slug of its title or
/// `PHASE-N`, made unique against explicit ids and the ids given so far.
fn assign_ids<'b>(blocks: &'b [BlockFacts]) -> Vec<Cow<'b, str>> {
    // Explicit ids are borrowed from the blocks: only made-up ones are new strings.
    let taken = |c: &str| blocks.iter().any(|b| b.explicit_id.as_deref() == Some(c));
    let mut seen: Vec<Cow<str>> = Vec::with_capacity(blocks.len());
    let mut counters = [0usize; 4];
    for b in blocks {
        let n = &mut counters[b.phase as usize];
        *n += 1;
        let free = |c: &str, seen: &[Cow<str>]| !taken(c) && !seen.iter().any(|s| s == c);
        let id = match &b.explicit_id {
            Some(id) if seen.iter().any(|s| s == id) => {
                Cow::Owned(unique_id(&format!("{id}-dup"), |c| free(c, &seen)))
            }
            Some(id) => Cow::Borrowed(id.as_str()),
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
}
