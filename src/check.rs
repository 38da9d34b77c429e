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
            let mut files = Vec::new();
            collect_markdown(path, &mut files, 0);
            files.sort();
            if files.is_empty() {
                out.push(Target::Missing(
                    path.clone(),
                    format!("{} holds no `.md` command files", path.display()),
                ));
            }
            out.extend(files.into_iter().map(Target::Path));
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
                format!("cannot read {}: no such file", path.display()),
            ));
        }
    }
    Ok(out)
}

pub enum Target {
    Path(PathBuf),
    Found(discovery::Found),
    Missing(PathBuf, String),
}

/// Recursively lists `*.md` files, skipping hidden folders; bounded depth against symlink loops.
fn collect_markdown(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 16 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if path.is_dir() && !hidden {
            collect_markdown(&path, out, depth + 1);
        } else if path.extension().is_some_and(|e| e == "md") && path.is_file() {
            out.push(path);
        }
    }
}

pub fn check_target(target: &Target) -> FileReport {
    let loaded = match target {
        Target::Missing(path, message) => {
            return FileReport {
                name: path.display().to_string(),
                file: None,
                diagnostics: vec![Diagnostic::fatal("file", message.clone())],
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

/// The file position of a 1-based line and column inside a block's code.
fn code_position(file: &SourceFile, block: &Block, line: usize, col: usize) -> Position {
    let file_line = block.code_line + line.saturating_sub(1);
    let code_line = block.code.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let shift = if code_line.is_empty() {
        0
    } else {
        file.line_text(file_line).find(code_line).unwrap_or(0)
    };
    let col = if col == 0 {
        code_line.len() - code_line.trim_start().len() + 1
    } else {
        col
    };
    Position {
        line: file_line,
        col: shift + col,
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
            .at_position(
                position,
                file.line_text(position.line).trim().chars().count(),
            )
            .with_hint("`bash -n` rejects this block; nixcmd would fail before running it"),
        );
    }
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
        out.push(
            Diagnostic::new(severity, "shellcheck", format!("SC{code}: {message}"))
                .at_position(
                    code_position(file, block, line, col),
                    end.saturating_sub(col).max(1),
                )
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
