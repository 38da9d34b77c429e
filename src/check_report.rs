//! Renders `check` results as text, JSON, GitHub Actions annotations or JUnit XML.

use crate::check::{FileReport, is_failure};
use crate::diagnostic::Severity;
use crate::terminal_text::visible;
use serde_json::json;
use std::fmt::Write as _;

pub fn text(reports: &[FileReport], strict: bool) -> String {
    let mut s = String::new();
    for r in reports {
        for d in &r.diagnostics {
            let d = if strict && d.severity == Severity::Warning {
                d.clone().with_severity(Severity::Error)
            } else {
                d.clone()
            };
            s.push_str(&d.render(r.file.as_ref(), &r.name));
            s.push('\n');
        }
    }
    let (errors, warnings, notes) = totals(reports, strict);
    let files = reports.len();
    let _ = writeln!(
        s,
        "checked {files} file{}: {errors} error{}, {warnings} warning{}, {notes} note{}",
        plural(files),
        plural(errors),
        plural(warnings),
        plural(notes)
    );
    s
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn totals(reports: &[FileReport], strict: bool) -> (usize, usize, usize) {
    let all: Vec<_> = reports.iter().flat_map(|r| &r.diagnostics).collect();
    let errors = all.iter().filter(|d| is_failure(d, strict)).count();
    let warnings = all
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .count()
        - if strict {
            all.iter()
                .filter(|d| d.severity == Severity::Warning)
                .count()
        } else {
            0
        };
    let notes = all.iter().filter(|d| d.severity == Severity::Note).count();
    (errors, warnings, notes)
}

pub fn json(reports: &[FileReport], strict: bool) -> String {
    let (errors, warnings, notes) = totals(reports, strict);
    let files: Vec<_> = reports
        .iter()
        .map(|r| {
            let diagnostics: Vec<_> = r
                .diagnostics
                .iter()
                .map(|d| {
                    json!({
                        "severity": if strict && d.severity == Severity::Warning { "error" } else { d.severity.label() },
                        "code": d.code,
                        "message": d.message,
                        "line": d.position.map(|p| p.line),
                        "col": d.position.map(|p| p.col),
                        "hint": d.hint,
                    })
                })
                .collect();
            json!({ "path": r.name, "diagnostics": diagnostics })
        })
        .collect();
    let value = json!({ "files": files, "errors": errors, "warnings": warnings, "notes": notes });
    format!(
        "{}\n",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    )
}

/// GitHub Actions workflow commands: `::error file=…,line=…,col=…,title=…::message`.
pub fn github(reports: &[FileReport], strict: bool) -> String {
    let mut s = String::new();
    for r in reports {
        for d in &r.diagnostics {
            let level = if is_failure(d, strict) {
                "error"
            } else if d.severity == Severity::Warning {
                "warning"
            } else {
                "notice"
            };
            let mut props = format!("file={}", escape_property(&visible(&r.name)));
            if let Some(p) = d.position {
                let _ = write!(props, ",line={},col={}", p.line, p.col);
            }
            let _ = write!(
                props,
                ",title={}",
                escape_property(&format!("nixcmd {}", d.code))
            );
            let mut message = d.message.clone();
            if let Some(h) = &d.hint {
                message.push_str(&format!("\nhint: {h}"));
            }
            // The message quotes the file: its control characters as pictures, as in the
            // text format (a raw ESC in a CI log is read by the terminal that shows it).
            let _ = writeln!(s, "::{level} {props}::{}", escape_data(&visible(&message)));
        }
    }
    s
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// JUnit XML: one test case per file, failing when it has errors.
pub fn junit(reports: &[FileReport], strict: bool) -> String {
    let failures = reports
        .iter()
        .filter(|r| r.diagnostics.iter().any(|d| is_failure(d, strict)))
        .count();
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"nixcmd check\" tests=\"{}\" failures=\"{failures}\">",
        reports.len()
    );
    let _ = writeln!(
        s,
        "  <testsuite name=\"nixcmd check\" tests=\"{}\" failures=\"{failures}\">",
        reports.len()
    );
    for r in reports {
        let _ = write!(
            s,
            "    <testcase classname=\"nixcmd.check\" name=\"{}\"",
            xml(&r.name)
        );
        let failed: Vec<_> = r
            .diagnostics
            .iter()
            .filter(|d| is_failure(d, strict))
            .collect();
        if failed.is_empty() {
            s.push_str("/>\n");
            continue;
        }
        s.push_str(">\n");
        let body: String = failed
            .iter()
            .map(|d| d.render(r.file.as_ref(), &r.name))
            .collect::<Vec<_>>()
            .join("\n");
        let _ = writeln!(
            s,
            "      <failure message=\"{} problem(s)\" type=\"nixcmd\">{}</failure>",
            failed.len(),
            xml(&body)
        );
        s.push_str("    </testcase>\n");
    }
    s.push_str("  </testsuite>\n</testsuites>\n");
    s
}

/// `s` as XML 1.0 text or attribute value: escaped, without the characters XML 1.0 does
/// not allow at all (not even as references): control characters other than tab and line
/// breaks, and the noncharacters U+FFFE and U+FFFF. A source line shown in a failure can hold
/// any of them.
fn xml(s: &str) -> String {
    s.chars()
        .filter(|c| {
            !matches!(
                c,
                '\u{0}'..='\u{8}' | '\u{b}' | '\u{c}' | '\u{e}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}'
            )
        })
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::FileReport;
    use crate::diagnostic::Diagnostic;
    use crate::source::SourceFile;

    /// Whether XML 1.0 allows `c` in a document (its `Char` production).
    fn xml_char(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
    }

    /// A failure quoting a line with every kind of character XML forbids, in a file whose
    /// name has some too, is still a well-formed document: no forbidden character, and
    /// markup characters escaped.
    #[test]
    fn junit_holds_only_characters_xml_allows() {
        let line = "echo \u{1}\u{1b}[31m \u{fffe}\u{ffff} ]]> <a b=\"c\"> & \u{10ffff}";
        let name = "f\u{1}\u{fffe}\"&<.md";
        let file = SourceFile::new(name, format!("## Steps\n{line}\n"));
        let d = Diagnostic::error("bash-syntax", format!("bad {line}")).at(&file, 9..12);
        let report = FileReport {
            name: name.to_string(),
            file: Some(file),
            diagnostics: vec![d],
        };
        let out = junit(&[report], false);
        assert!(out.chars().all(xml_char), "{out:?}");
        assert!(out.contains("name=\"f&quot;&amp;&lt;.md\""), "{out}");
        assert!(
            out.contains("]]&gt; &lt;a b=&quot;c&quot;&gt; &amp; \u{10ffff}"),
            "{out}"
        );
    }
}
