//! Finds what is ambiguous in a file written for a person or Claude Code rather than for
//! nixcmd: alternatives ("Option B", "Or …"), placeholders (`<host>`, `{{name}}`,
//! `SERVICE_NAME`), commented-out alternative commands, slash-command lines, `$ARGUMENTS`/`$1`,
//! and Claude Code's `` !`cmd` `` syntax — each with its position. Pure.

use crate::command::{Command, Mode, NestedCommand};
use crate::diagnostic::{Diagnostic, Severity};
use crate::outline::{Element, ElementKind};
use crate::parser::Contexts;
use crate::source::SourceFile;
use regex::Regex;
use std::ops::Range;
use std::sync::LazyLock;

// Word classes and boundaries here are ASCII (`[^[:alnum:]_]`, `(?-u:\b)`): the Unicode `\W`,
// `\w` and `\b` made compiling these two patterns take 1.5 ms, paid by every `show`, `check`
// and `run` of a guided file, for words (option, or, read, for) that are ASCII anyway.
static ALTERNATIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^[^[:alnum:]_]*(option\s+[a-z0-9]+(?-u:\b)|alternative(ly)?(?-u:\b)|or(?-u:\b)|method\s+[0-9]+(?-u:\b)|approach\s+[0-9]+(?-u:\b))")
        .expect("valid regex")
});
static ANGLE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"<([A-Za-z][A-Za-z0-9_.-]*)>").expect("valid regex"));
static MUSTACHE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}").expect("valid regex"));
static CAPS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*\b").expect("valid regex"));
static COMMENTED_COMMAND: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^\s*#\s*(sudo|nix|nixos-rebuild|nix-[a-z-]+|home-manager|darwin-rebuild|git|systemctl|journalctl|cp|mv|rm|ln|ssh|scp|rsync|curl|gh|colmena|deploy)\s+\S")
        .expect("valid regex")
});
static SLASH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\s*/([a-z][a-z0-9_-]*)(\s+.*)?$").expect("valid regex"));
static POSITIONAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$(ARGUMENTS\b|\{ARGUMENTS\}|[1-9]\b|\{[1-9]\}|@|\*)").expect("valid regex")
});
static BANG: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"!`[^`]+`").expect("valid regex"));

/// Words that look like placeholders but are ordinary environment variables or shell words.
const KNOWN_CAPS: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "SHELL",
    "PWD",
    "TERM",
    "LANG",
    "EDITOR",
    "HOSTNAME_",
    "UID",
    "TMPDIR",
    "ARGUMENTS",
    "EOF",
    "END",
    "OK",
    "TODO",
    "NOTE",
    "README",
    "JSON",
    "YAML",
    "TOML",
    "URL",
    "API",
    "SSH",
    "CI",
    "PR",
    "ID",
    "OS",
    "CPU",
    "RAM",
    "GB",
    "MB",
    "KB",
    "HTTP",
    "HTTPS",
    "UTC",
    "XDG",
];

/// Single words that are placeholders in real runbooks even without an underscore.
const PLACEHOLDER_WORDS: &[&str] = &[
    "HOSTNAME", "USERNAME", "HOST", "PACKAGE", "SERVICE", "VERSION", "BRANCH",
];

fn ambiguity(code: &'static str, message: String) -> Diagnostic {
    Diagnostic::new(Severity::Warning, code, message)
}

/// Findings inside the blocks of a guided file; also records slash-command lines on blocks.
pub fn block_findings(
    file: &SourceFile,
    cmd: &mut Command,
    contexts: &Contexts,
    out: &mut Vec<Diagnostic>,
) {
    let known_commands: Vec<String> = Vec::new();
    let _ = known_commands;
    // In the order of `Phase`, as `contexts` is.
    let phases = [
        &mut cmd.prerequisites,
        &mut cmd.steps,
        &mut cmd.success_criteria.checks,
        &mut cmd.rollback,
    ];
    let blocks = phases.into_iter().zip(contexts).flat_map(|(blocks, ctxs)| {
        blocks
            .iter_mut()
            .enumerate()
            .map(move |(i, b)| (b, ctxs.get(i)))
    });
    for (block, ctx) in blocks {
        if !block.runnable {
            continue;
        }
        if let Some(ctx) = ctx
            && let Some((text, span)) = ctx.iter().rev().find(|(t, _)| ALTERNATIVE.is_match(t))
        {
            let shown: String = text.chars().take(40).collect();
            out.push(
                ambiguity(
                    "alternative",
                    format!("block `{}` is one of several alternatives (\"{shown}\")", block.id),
                )
                .at(file, span.start..span.start + text.len().min(40))
                .with_hint("keep the one to run under Steps and move the others to a notes section or mark them `norun`"),
            );
        }
        let assigned = assigned_names(&block.code);
        for (i, code_line) in block.code.lines().enumerate() {
            let line_no = block.code_line + i;
            let at = |range: Range<usize>| locate(file, line_no, code_line, range);
            if COMMENTED_COMMAND.is_match(code_line) {
                out.push(
                    ambiguity(
                        "commented-alternative",
                        "a commented-out command: an alternative the reader picks by hand".into(),
                    )
                    .at(file, at(0..code_line.len()))
                    .with_hint("nixcmd never runs comments; make it a separate step or delete it"),
                );
            } else if code_line.trim_start().starts_with('#')
                && ALTERNATIVE.is_match(code_line.trim_start().trim_start_matches('#'))
            {
                out.push(
                    ambiguity(
                        "alternative",
                        "a comment offers an alternative inside the block; nixcmd runs every line"
                            .into(),
                    )
                    .at(file, at(0..code_line.len()))
                    .with_hint("split the alternatives into separate steps or keep only one"),
                );
            }
            if let Some(c) = SLASH.captures(code_line) {
                let name = c[1].to_string();
                let args = c
                    .get(2)
                    .map(|m| m.as_str().split_whitespace().map(str::to_string).collect())
                    .unwrap_or_default();
                out.push(
                    Diagnostic::new(Severity::Note, "slash-command", format!("`/{name}` runs another command"))
                        .at(file, at(0..code_line.trim_end().len()))
                        .with_hint(format!("nixcmd runs it as a nested command when `{name}` exists; otherwise the step cannot run")),
                );
                block.nested.push(NestedCommand {
                    name,
                    args,
                    line: line_no,
                });
                continue;
            }
            let code_part = strip_comment(code_line);
            for m in ANGLE.find_iter(code_part) {
                if code_part[..m.start()].ends_with('<') {
                    continue;
                }
                out.push(placeholder(file, at(m.range()), m.as_str()));
            }
            for m in MUSTACHE.find_iter(code_part) {
                out.push(placeholder(file, at(m.range()), m.as_str()));
            }
            for m in CAPS.find_iter(code_part) {
                let word = m.as_str();
                let before = &code_part[..m.start()];
                let after = &code_part[m.end()..];
                let looks_like = word.contains('_') || PLACEHOLDER_WORDS.contains(&word);
                if !looks_like
                    || word.len() < 4
                    || before.ends_with('$')
                    || before.ends_with("${")
                    || before.ends_with('-')
                    || after.starts_with('=')
                    || after.starts_with('(')
                    || word.starts_with("NIX")
                    || KNOWN_CAPS.contains(&word)
                    || assigned.iter().any(|a| a == word)
                {
                    continue;
                }
                out.push(placeholder(file, at(m.range()), word));
            }
            for m in POSITIONAL.find_iter(code_part) {
                out.push(
                    ambiguity("arguments", format!("`{}` expects the command's arguments", m.as_str()))
                        .at(file, at(m.range()))
                        .with_hint("nixcmd passes arguments as environment variables: `$ARGUMENTS` (all) or `$NIXCMD_ARG_<NAME>`; `$1` is empty in a block"),
                );
            }
        }
    }
}

fn placeholder(file: &SourceFile, span: Range<usize>, word: &str) -> Diagnostic {
    ambiguity("placeholder", format!("`{word}` looks like a placeholder the block never sets"))
        .at(file, span)
        .with_hint("declare an argument and use `$NIXCMD_ARG_…`, or fill it at run time with `--set KEY=VALUE`")
}

/// Findings in prose: Claude Code's `` !`cmd` `` everywhere; `$ARGUMENTS` in guided prose.
pub fn prose_findings(
    file: &SourceFile,
    elements: &[Element],
    mode: Mode,
    out: &mut Vec<Diagnostic>,
) {
    // Outside guided files only "!`" can be found: one search of the whole text is enough to
    // know whether any element has it (most files have none), where a search per element
    // cost twice as much for a large file.
    if mode != Mode::Guided && !has_bang(file.text.as_bytes()) {
        return;
    }
    for el in elements {
        if matches!(el.kind, ElementKind::Fence { .. }) {
            let ElementKind::Fence { code, .. } = &el.kind else {
                continue;
            };
            if !code.contains("!`") {
                continue;
            }
        }
        let raw = &file.text[el.span.clone()];
        // A match needs "!`", looked for first (`!` is rare in prose): the regex runs on
        // almost no element, where a search set up per element was 5 % of the
        // instructions of `show` of a large file.
        let bangs = has_bang(raw.as_bytes()).then(|| BANG.find_iter(raw));
        for m in bangs.into_iter().flatten() {
            let start = el.span.start + m.start();
            out.push(
                ambiguity(
                    "bang-command",
                    format!(
                        "Claude Code's `{}` syntax: nixcmd never runs it",
                        m.as_str()
                    ),
                )
                .at(file, start..start + m.len())
                .with_hint(
                    "put the command in a ```bash block under Steps so it runs with gates and logs",
                ),
            );
        }
        if mode == Mode::Guided && matches!(el.kind, ElementKind::Paragraph { .. }) {
            // A line of prose that is only `/name args`: the reader is told to run a command.
            let mut offset = el.span.start;
            for line in raw.split_inclusive('\n') {
                let bare = line.trim_end();
                if let Some(c) = SLASH.captures(bare) {
                    let name = &c[1];
                    let start = offset + (bare.len() - bare.trim_start().len());
                    out.push(
                        Diagnostic::new(Severity::Note, "slash-command", format!("`/{name}` runs another command"))
                            .at(file, start..offset + bare.len())
                            .with_hint(format!("to run `{name}` as part of this command, put the line in a ```bash block under Steps")),
                    );
                }
                offset += line.len();
            }
        }
        if mode == Mode::Guided && !matches!(el.kind, ElementKind::Fence { .. }) {
            for m in POSITIONAL
                .find_iter(raw)
                .filter(|m| m.as_str().contains("ARGUMENTS"))
            {
                let start = el.span.start + m.start();
                out.push(
                    Diagnostic::new(
                        Severity::Note,
                        "arguments",
                        "the text refers to `$ARGUMENTS`".to_string(),
                    )
                    .at(file, start..start + m.len())
                    .with_hint("declare arguments under `nixcmd.args` so they are validated"),
                );
            }
        }
    }
}

/// Whether `bytes` has "!`" (`!` is rare in prose: it is looked for first).
fn has_bang(bytes: &[u8]) -> bool {
    memchr::memchr_iter(b'!', bytes).any(|i| bytes.get(i + 1) == Some(&b'`'))
}

/// Names a block assigns (`NAME=…`, `read NAME`, `for NAME in`, `export NAME=`).
fn assigned_names(code: &str) -> Vec<String> {
    static ASSIGN: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?:^|[\s;(])(?:export\s+|local\s+|readonly\s+|declare\s+(?:-[A-Za-z0-9_]+\s+)?)?([A-Za-z_][A-Za-z0-9_]*)=|(?-u:\b)read\s+(?:-[A-Za-z0-9_]+\s+)*([A-Za-z_][A-Za-z0-9_]*)|(?-u:\b)for\s+([A-Za-z_][A-Za-z0-9_]*)\s+in(?-u:\b)")
            .expect("valid regex")
    });
    ASSIGN
        .captures_iter(code)
        .filter_map(|c| {
            c.get(1)
                .or(c.get(2))
                .or(c.get(3))
                .map(|m| m.as_str().to_string())
        })
        .collect()
}

/// The part of a shell line before a `#` comment (quotes are not tracked: good enough to skip
/// prose in comments, which is all this is for).
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Maps a byte range in a code line to a byte span in the file, allowing for the container
/// prefix (list indentation, `> `) and for tabs that became spaces in the code (see
/// [`SourceFile::code_start`]). A range that starts in the line's leading blanks starts at
/// its first non-blank character: a finding about a whole line points at its text.
fn locate(file: &SourceFile, line_no: usize, code_line: &str, range: Range<usize>) -> Range<usize> {
    let lead = code_line.len() - code_line.trim_start().len();
    let start = file.code_start(line_no, code_line);
    let at = |i: usize| start + i.saturating_sub(lead);
    at(range.start)..at(range.end.max(range.start))
}

#[cfg(test)]
mod tests {
    use crate::command::Origin;
    use crate::parser::parse;
    use crate::source::SourceFile;

    fn codes(md: &str) -> Vec<(&'static str, usize)> {
        let file = SourceFile::new("g.md", md);
        let cmd = parse(&file, "g", Origin::Builtin);
        cmd.diagnostics
            .iter()
            .map(|d| (d.code, d.position.map_or(0, |p| p.line)))
            .collect()
    }

    /// The two patterns with ASCII word classes (see `ALTERNATIVE`) still find what the
    /// Unicode ones found, after any bullet or emphasis, and only whole words.
    #[test]
    fn alternatives_and_assignments_are_whole_ascii_words() {
        let alt = |t: &str| super::ALTERNATIVE.is_match(t);
        for yes in [
            "Option B: rebuild",
            "• **Or** use the flake",
            "→ Alternatively, boot",
            "- Method 2 – manual",
            "### approach 3",
        ] {
            assert!(alt(yes), "{yes}");
        }
        for no in ["Order matters", "Optional step", "orchestrate", "Ωption B"] {
            assert!(!alt(no), "{no}");
        }
        assert_eq!(
            super::assigned_names(
                "export HOST=a\nread -r -s PASSWORD\nfor NODE in a b; do :; done\ndeclare -a LIST=()\nunread X\nfork Y in"
            ),
            ["HOST", "PASSWORD", "NODE", "LIST"]
        );
    }

    #[test]
    fn finds_each_kind_of_ambiguity_with_its_line() {
        let md = "---\ndescription: g\n---\n# G\n\n## Steps\n\n### Option A: fast\n```bash\nsudo nixos-rebuild switch --flake .#<host>\n# sudo nixos-rebuild boot\n/check_tasks all\necho \"$ARGUMENTS\" SERVICE_NAME\n```\n\nRun !`date` first.\n";
        assert_eq!(
            codes(md),
            [
                ("alternative", 8),
                ("placeholder", 10),
                ("commented-alternative", 11),
                ("slash-command", 12),
                ("arguments", 13),
                ("placeholder", 13),
                ("bang-command", 16),
            ]
        );
    }

    #[test]
    fn assigned_and_environment_names_are_not_placeholders() {
        let md = "---\ndescription: g\n---\n## Steps\n```bash\nMY_HOST=a\necho \"$MY_HOST\" $HOME ${OTHER_VAR} NIX_PATH\n```\n";
        assert_eq!(codes(md), []);
    }
}
