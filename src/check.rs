//! `nixcmd check`: every problem in every file at once. The parser's diagnostics plus the
//! shell checks that need a process (`bash -n`, `shellcheck` when installed), mapped back to
//! the command file's own lines. Rendering of the reports lives in `check_report`.

use crate::command::{Block, Command, Mode, Origin};
use crate::diagnostic::{Diagnostic, Severity};
use crate::discovery::{self, SearchPath};
use crate::process;
use crate::source::{Position, SourceFile};
use std::path::{Path, PathBuf};

/// The findings for one file.
#[derive(Debug)]
pub struct FileReport {
    pub name: String,
    pub file: Option<SourceFile>,
    pub diagnostics: Vec<Diagnostic>,
}

impl FileReport {
    pub fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }
}

/// Which files `check` looks at: the given paths (folders are searched for `*.md`), or every
/// non-built-in command on the search path. A path that does not exist but names a command
/// (`check flake-update`) checks that command.
pub fn targets(
    paths: &[PathBuf],
    search: &SearchPath,
) -> Result<Vec<Target>, crate::exit::Failure> {
    let mut out = Vec::new();
    if paths.is_empty() {
        let (winners, _) = search.resolve()?;
        for f in winners.into_iter().filter(|f| f.path.is_some()) {
            out.push(Target::Found(f));
        }
        return Ok(out);
    }
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            collect_markdown(path, &mut found, &mut Vec::new());
            found.sort_by(|a, b| a.0.cmp(&b.0));
            if found.is_empty() {
                out.push(Target::Missing(
                    path.clone(),
                    Diagnostic::fatal(
                        "file",
                        format!("{} holds no `.md` command files", path.display()),
                    )
                    .with_hint("give `.md` command files, or the folders that hold them"),
                ));
            }
            out.extend(
                found
                    .into_iter()
                    .map(|(path, unreadable)| match unreadable {
                        Some(why) => Target::Missing(path, Diagnostic::fatal("file", why)),
                        None => Target::Path(path),
                    }),
            );
        } else if path.exists() {
            out.push(Target::Path(path.clone()));
        } else if let Some(name) = path
            .to_str()
            .filter(|s| !s.contains('/') && !s.ends_with(".md"))
            && let Ok(found) = search.find(name)
        {
            out.push(Target::Found(found));
        } else {
            out.push(Target::Missing(
                path.clone(),
                Diagnostic::fatal(
                    "file",
                    format!("cannot read {}: no such file", path.display()),
                )
                .with_hint(discovery::NOT_FOUND_HINT),
            ));
        }
    }
    Ok(out)
}

pub enum Target {
    Path(PathBuf),
    Found(discovery::Found),
    /// Nothing to load there: what is wrong, and what to do.
    Missing(PathBuf, Diagnostic),
}

/// Recursively lists the `*.md` entries under `dir`, skipping hidden folders, each with
/// `Some(why)` when it is a folder that cannot be read. A `.md` entry that is not a folder is
/// listed whatever it is — a dangling or looping symlink, a FIFO — and loading it reports
/// what is wrong, as `check` without paths does. Symlinks are never followed into folders
/// (`ln -s . self.md` walked the same folder again at every level), and a folder already
/// walked (`visited`: device and inode, a bind mount of a parent) is not walked again.
fn collect_markdown(
    dir: &Path,
    out: &mut Vec<(PathBuf, Option<String>)>,
    visited: &mut Vec<(u64, u64)>,
) {
    use std::os::unix::fs::MetadataExt as _;
    let entries = std::fs::metadata(dir).and_then(|meta| {
        let id = (meta.dev(), meta.ino());
        if visited.contains(&id) {
            return Ok(None);
        }
        visited.push(id);
        std::fs::read_dir(dir).map(Some)
    });
    let entries = match entries {
        Ok(Some(entries)) => entries,
        Ok(None) => return,
        Err(e) => {
            let what = crate::io_error::why(&e, crate::io_error::Expected::Folder);
            out.push((
                dir.to_path_buf(),
                Some(format!("cannot read {}: {what}", dir.display())),
            ));
            return;
        }
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if kind.is_dir() {
            if !hidden {
                collect_markdown(&path, out, visited);
            }
        } else if path.extension().is_some_and(|e| e == "md")
            // A symlink to a folder is no command file, and is not walked.
            && !(kind.is_symlink() && path.is_dir())
        {
            out.push((path, None));
        }
    }
}

pub fn check_target(target: &Target) -> FileReport {
    let loaded = match target {
        Target::Missing(path, diagnostic) => {
            return FileReport {
                name: path.display().to_string(),
                file: None,
                diagnostics: vec![diagnostic.clone()],
            };
        }
        Target::Path(path) => discovery::load_path(
            path,
            &discovery::name_of(path),
            Origin::File {
                path: path.display().to_string(),
            },
        ),
        Target::Found(found) => discovery::load(found),
    };
    match loaded {
        Ok(loaded) => {
            let mut diagnostics = loaded.command.diagnostics.clone();
            diagnostics.extend(shell_findings(&loaded.command, &loaded.file));
            diagnostics.sort_by_key(|d| (d.position, std::cmp::Reverse(d.severity)));
            FileReport {
                name: loaded.file.name.clone(),
                file: Some(loaded.file),
                diagnostics,
            }
        }
        Err(u) => FileReport {
            name: u.name,
            file: u.file,
            diagnostics: vec![u.diagnostic],
        },
    }
}

/// `bash -n` and `shellcheck` on every runnable block, mapped to the file's lines.
pub fn shell_findings(cmd: &Command, file: &SourceFile) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut shellcheck_missing = false;
    for block in cmd.blocks().filter(|b| b.runnable) {
        bash_syntax(cmd, file, block, &mut out);
        if !shellcheck_missing && !shellcheck(cmd, file, block, &mut out) {
            shellcheck_missing = true;
        }
    }
    if shellcheck_missing && cmd.blocks().any(|b| b.runnable) {
        out.push(
            Diagnostic::new(Severity::Note, "shellcheck", "shellcheck is not installed: its checks were skipped")
                .with_hint("install it (`apt-get install shellcheck`, `nix profile install nixpkgs#shellcheck`)"),
        );
    }
    out
}

/// The file position of a 1-based line and column inside a block's code (column 0: the
/// line's first non-blank character).
///
/// A block's code is its file lines without their container prefix (a list item's
/// indentation, `> `): the column is shifted by that prefix. The code after a line's leading
/// blanks is the end of its file line; the blanks themselves may differ, because a tab
/// that spans the list item's indentation becomes spaces in the code. Columns count
/// characters, as shellcheck's `json1` columns do (a tab is one).
fn code_position(file: &SourceFile, block: &Block, line: usize, col: usize) -> Position {
    let file_line = block.code_line + line.saturating_sub(1);
    let code_line = block.code.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let content = code_line.trim_start();
    let lead = code_line.chars().count() - content.chars().count();
    let col = if col == 0 { lead + 1 } else { col };
    if code_line.is_empty() {
        // A blank line, or the end of the code (shellcheck's "unexpected end"): no prefix
        // to find.
        return Position {
            line: file_line,
            col,
        };
    }
    let text = file.line_text(file_line);
    // Where the code after its leading blanks starts in the file line (0-based, characters).
    let at = file.code_start(file_line, code_line) - file.line_start(file_line);
    let start = text.get(..at).map_or(lead, |prefix| prefix.chars().count());
    Position {
        line: file_line,
        col: (start + col).saturating_sub(lead).max(1),
    }
}

fn bash_syntax(cmd: &Command, file: &SourceFile, block: &Block, out: &mut Vec<Diagnostic>) {
    let Ok(Some(result)) = process::capture("bash", &["-n"], &block.code) else {
        return;
    };
    if result.success() {
        return;
    }
    let severity = if cmd.mode == Mode::Annotated {
        Severity::Error
    } else {
        Severity::Warning
    };
    for line in result.stderr.lines() {
        // "bash: line 3: syntax error near unexpected token `fi'"
        let Some(rest) = line.split_once("line ").map(|(_, r)| r) else {
            continue;
        };
        let Some((num, message)) = rest.split_once(": ") else {
            continue;
        };
        let Ok(num) = num.trim().parse::<usize>() else {
            continue;
        };
        if message.starts_with('`') {
            continue; // bash repeats the offending line; the caret already shows it
        }
        let position = code_position(file, block, num.min(block.code.lines().count().max(1)), 0);
        out.push(
            Diagnostic::new(
                severity,
                "bash-syntax",
                format!("bash: {message} (in block `{}`)", block.id),
            )
            .at_position(position, rest_of_line(file, position))
            .with_hint("`bash -n` rejects this block; nixcmd would fail before running it"),
        );
    }
}

/// The number of characters from `position` to the end of its line, trailing blanks left
/// out: the code a line-wide finding underlines (not a container prefix before it).
fn rest_of_line(file: &SourceFile, position: Position) -> usize {
    let text = file.line_text(position.line).trim_end();
    text.chars().count().saturating_sub(position.col - 1)
}

/// Returns false when shellcheck is not installed.
fn shellcheck(cmd: &Command, file: &SourceFile, block: &Block, out: &mut Vec<Diagnostic>) -> bool {
    let shell = if block.language == "sh" { "sh" } else { "bash" };
    // SC2034: variables are often exported to later steps through $NIXCMD_ENV.
    // SC1091: sourced files are not followed.
    let args = ["-s", shell, "-f", "json1", "-e", "SC1091,SC2034", "-"];
    let result = match process::capture("shellcheck", &args, &block.code) {
        Ok(Some(r)) => r,
        Ok(None) => return false,
        Err(_) => return true,
    };
    let Ok(parsed) = serde_json::from_str::<serde_json::Value>(&result.stdout) else {
        return true;
    };
    let Some(comments) = parsed.get("comments").and_then(|c| c.as_array()) else {
        return true;
    };
    for c in comments {
        let line = c.get("line").and_then(|v| v.as_u64()).unwrap_or(1) as usize;
        let col = c.get("column").and_then(|v| v.as_u64()).unwrap_or(1) as usize;
        let end = c
            .get("endColumn")
            .and_then(|v| v.as_u64())
            .unwrap_or(col as u64 + 1) as usize;
        let code = c.get("code").and_then(|v| v.as_u64()).unwrap_or(0);
        let message = c.get("message").and_then(|v| v.as_str()).unwrap_or("");
        let level = c.get("level").and_then(|v| v.as_str()).unwrap_or("info");
        let severity = match (cmd.mode, level) {
            (Mode::Guided, _) => Severity::Note,
            (_, "error") => Severity::Error,
            (_, "warning") => Severity::Warning,
            _ => Severity::Note,
        };
        let end_line = c
            .get("endLine")
            .and_then(|v| v.as_u64())
            .map_or(line, |v| v as usize);
        let position = code_position(file, block, line, col);
        // A finding over several lines (a multi-line string) is underlined to the end of
        // its first line: its end column is on another line.
        let width = match end_line > line {
            true => rest_of_line(file, position),
            false => end.saturating_sub(col),
        };
        out.push(
            Diagnostic::new(severity, "shellcheck", format!("SC{code}: {message}"))
                .at_position(position, width)
                .with_hint(format!("see https://www.shellcheck.net/wiki/SC{code}")),
        );
    }
    true
}

/// Exit status of a check: 2 when a file could not be read as a command at all, 1 when
/// errors (or, with `strict`, warnings) were found, else 0.
pub fn exit_for(reports: &[FileReport], strict: bool) -> crate::exit::Exit {
    use crate::exit::Exit;
    let all = reports.iter().flat_map(|r| &r.diagnostics);
    let worst = all.map(|d| d.severity).max();
    match worst {
        Some(Severity::Fatal) => Exit::Usage,
        Some(Severity::Error) => Exit::Failed,
        Some(Severity::Warning) if strict => Exit::Failed,
        _ => Exit::Success,
    }
}

/// Whether a diagnostic counts as an error in this check (warnings do under `--strict`).
pub fn is_failure(d: &Diagnostic, strict: bool) -> bool {
    d.severity >= Severity::Error || (strict && d.severity == Severity::Warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_step(text: &str) -> (SourceFile, Block) {
        let file = SourceFile::new("t.md", text);
        let cmd = crate::parser::parse(&file, "t", Origin::Builtin);
        let block = cmd.steps[0].clone();
        (file, block)
    }

    /// Columns in a block's code land on the same characters of the file line, whatever
    /// the container prefix: plain, list indentation, a quote, and a tab that the list
    /// item's indentation splits (the code has spaces where the file has the tab).
    #[test]
    fn code_columns_map_to_the_file_line() {
        let cases = [
            ("## Steps\n```bash\nif then\n```\n", "if then"),
            (
                "## Steps\n1. x\n   ```bash\n   if then\n   ```\n",
                "if then",
            ),
            ("## Steps\n> ```bash\n> if then\n> ```\n", "if then"),
            ("## Steps\n- x\n  ```bash\n\t\tif then\n  ```\n", "if then"),
            ("## Steps\n- x\n  ```bash\n\t  if then\n  ```\n", "if then"),
            ("## Steps\n```bash\n\tif then\n```\n", "if then"),
        ];
        for (text, wanted) in cases {
            let (file, block) = first_step(text);
            let code_line = block.code.lines().next().unwrap();
            let lead = code_line.chars().count() - code_line.trim_start().chars().count();
            // Column 0 (the first non-blank) and the `t` of `then`, 4 characters further.
            for (col, offset) in [(0, 0), (lead + 4, 3)] {
                let p = code_position(&file, &block, 1, col);
                let line = file.line_text(p.line);
                let at: String = line.chars().skip(p.col - 1).collect();
                assert_eq!(at, wanted[offset..], "{text:?} col {col}");
            }
            let p = code_position(&file, &block, 1, 0);
            assert_eq!(rest_of_line(&file, p), wanted.len(), "{text:?}");
        }
    }

    /// Past the code's end (shellcheck's "unexpected end of file") the column is kept.
    #[test]
    fn a_position_after_the_code_keeps_its_column() {
        let (file, block) = first_step("## Steps\n> ```bash\n> if then\n> ```\n");
        assert_eq!(
            code_position(&file, &block, 2, 1),
            Position { line: 4, col: 1 }
        );
    }
}
