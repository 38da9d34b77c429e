//! `nixcmd show NAME`: the parsed command as readable text, or the JSON contract.

use crate::command::{Block, Mode, OnFail};
use crate::discovery::Loaded;
use crate::duration;
use crate::list::args_summary;
use crate::output::Palette;
// Text from the command file is shown with its control characters as pictures, never sent
// to the terminal as escape sequences.
use crate::parser::push_number;
use crate::terminal_text::visible as v;
use std::fmt::Write as _;

/// The gates of a block in words: `confirm "Push?"`, `continue on failure`, `readonly` …
pub fn gates(b: &Block) -> Vec<String> {
    let mut g = Vec::new();
    if !b.runnable {
        g.push(if b.attrs.norun {
            "norun (example)".to_string()
        } else {
            format!("not run ({})", lang(b))
        });
        return g;
    }
    // First: it decides whether any of the rest applies.
    if let Some(c) = crate::condition::describe(&b.attrs) {
        g.push(c);
    }
    match &b.attrs.confirm {
        Some(q) => g.push(format!("confirm \"{q}\"")),
        None if b.effective.asks => g.push("confirm (guided file)".into()),
        None => {}
    }
    if b.attrs.on_fail == OnFail::Continue {
        g.push("continue on failure".into());
    }
    if b.attrs.readonly {
        g.push("readonly".into());
    }
    if b.attrs.always {
        g.push("always".into());
    }
    if b.attrs.irreversible {
        g.push("irreversible".into());
    }
    if let Some(t) = b.attrs.timeout {
        g.push(format!("timeout {}", duration::display(t)));
    }
    if b.attrs.retries > 0 {
        let backoff = b
            .attrs
            .backoff
            .map(|d| format!(", backoff {}", duration::display(d)))
            .unwrap_or_default();
        g.push(format!("retries {}{backoff}", b.attrs.retries));
    }
    if let Some(h) = &b.attrs.hosts {
        let par = b
            .attrs
            .parallel
            .map(|p| format!(", {p} at a time"))
            .unwrap_or_default();
        match b.attrs.hosts_arg() {
            Some(arg) => g.push(format!(
                "hosts from argument `{arg}`{par} (this machine when it is empty)"
            )),
            None => g.push(format!("hosts {h}{par}")),
        }
    }
    if let Some(gr) = &b.attrs.group {
        g.push(format!("group {gr}"));
    }
    if let Some(r) = &b.attrs.rollback {
        g.push(format!("rollback → {r}"));
    }
    g
}

fn lang(b: &Block) -> &str {
    if b.language.is_empty() {
        "no language"
    } else {
        &b.language
    }
}

pub fn text(loaded: &Loaded, p: Palette) -> String {
    let c = &loaded.command;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} — {}",
        p.bold(&v(&c.name)),
        v(c.description.as_deref().unwrap_or("(no description)"))
    );
    let mode = match c.mode {
        Mode::Annotated => "annotated",
        Mode::Guided => "guided (every step asks before it runs)",
    };
    let _ = writeln!(
        s,
        "source: {}  mode: {mode}",
        v(c.source.path().unwrap_or("builtin"))
    );
    if !c.args.is_empty() {
        let _ = writeln!(
            s,
            "usage: nixcmd /{} {}",
            v(&c.name),
            v(&args_summary(&c.args))
        );
        for a in &c.args {
            let mut extra = Vec::new();
            if let Some(pat) = &a.pattern {
                extra.push(format!("pattern {pat}"));
            }
            if !a.choices.is_empty() {
                extra.push(format!("one of {}", a.choices.join(", ")));
            }
            if let Some(d) = &a.default {
                extra.push(format!("default {d}"));
            }
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!(" ({})", extra.join("; "))
            };
            let about = format!("{}{extra}", a.help.as_deref().unwrap_or(""));
            let line = format!("  {:<12} ${}  {}", a.name, a.env, about.trim_start());
            let _ = writeln!(s, "{}", v(line.trim_end()));
        }
    } else if let Some(h) = &c.argument_hint {
        let _ = writeln!(s, "usage: nixcmd /{} {}", v(&c.name), v(h));
    }
    if let Some(t) = c.settings.timeout {
        let _ = writeln!(s, "default timeout: {}", duration::display(t));
    }
    if !c.overview.is_empty() {
        let _ = writeln!(s, "\n{}", p.bold("Overview"));
        for line in c.overview.lines() {
            let _ = writeln!(s, "{}", v(format!("  {line}").trim_end()));
        }
    }
    section(&mut s, p, "Prerequisites", &c.prerequisites);
    section(&mut s, p, "Steps", &c.steps);
    if !c.success_criteria.checks.is_empty() || !c.success_criteria.manual.is_empty() {
        section(&mut s, p, "Success criteria", &c.success_criteria.checks);
        if c.success_criteria.checks.is_empty() {
            let _ = writeln!(s, "\n{}", p.bold("Success criteria"));
        }
        for m in &c.success_criteria.manual {
            let _ = writeln!(
                s,
                "  [ ] {}  {}",
                v(&m.text),
                p.dim(&format!("(manual check, line {})", m.line))
            );
        }
    }
    section(&mut s, p, "Rollback", &c.rollback);
    let bound: Vec<&str> = c
        .blocks()
        .filter_map(|b| b.attrs.rollback.as_deref())
        .collect();
    for r in &c.rollback {
        let users: Vec<&str> = c
            .blocks()
            .filter(|b| b.attrs.rollback.as_deref() == Some(&r.id))
            .map(|b| b.id.as_str())
            .collect();
        if !users.is_empty() {
            let _ = writeln!(s, "    {} compensates {}", v(&r.id), v(&users.join(", ")));
        }
    }
    let unbound = c
        .rollback
        .iter()
        .filter(|r| !bound.contains(&r.id.as_str()))
        .count();
    if unbound > 0 {
        let _ = writeln!(
            s,
            "    {unbound} rollback block(s) run on any failure (no step names them)"
        );
    }
    entries(&mut s, p, "Troubleshooting", &c.troubleshooting);
    entries(&mut s, p, "References", &c.references);
    let notes: Vec<_> = c.notes.iter().filter(|n| !n.title.is_empty()).collect();
    if !notes.is_empty() {
        let _ = writeln!(s, "\n{}", p.bold("Notes (shown, never run)"));
        for n in notes {
            let _ = writeln!(
                s,
                "  {}  {}",
                v(&n.title),
                p.dim(&format!("line {}", n.line))
            );
        }
    }
    if c.other_blocks > 0 {
        let _ = writeln!(
            s,
            "\n{} code block(s) outside runnable sections are shown, never run.",
            c.other_blocks
        );
    }
    if !c.diagnostics.is_empty() {
        let _ = writeln!(s, "\n{}", p.bold("Diagnostics"));
        for d in &c.diagnostics {
            s.push_str(&d.render(Some(&loaded.file), &loaded.file.name));
        }
    }
    s
}

fn section(s: &mut String, p: Palette, title: &str, blocks: &[Block]) {
    if blocks.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n{}", p.bold(title));
    // Written straight into `s`, without a string per part: a large runbook has thousands
    // of blocks (a line is about 30 bytes: room for them at once, not by doubling).
    s.reserve(blocks.len() * 32);
    for (i, b) in blocks.iter().enumerate() {
        // `  {:>2}. {id}`, without the formatting machinery (a tenth of the rendering).
        s.push_str(if i + 1 < 10 { "   " } else { "  " });
        push_number(s, i + 1);
        s.push_str(". ");
        s.push_str(&v(&b.id));
        if let Some(t) = &b.title
            && !crate::parser::slug_is(t, &b.id)
        {
            let _ = write!(s, "  {}", v(t));
        }
        let g = gates(b);
        if !g.is_empty() {
            // Attribute values (a confirm question, hosts, a group) are the file's text too.
            let _ = write!(s, "  [{}]", v(&g.join(", ")));
        }
        s.push_str("  ");
        if p.enabled {
            p.dim_into(s, format_args!("line {}", b.line));
        } else {
            s.push_str("line ");
            push_number(s, b.line);
        }
        s.push('\n');
        for nested in &b.nested {
            let _ = writeln!(
                s,
                "      nested: /{} {}",
                v(&nested.name),
                v(&nested.args.join(" "))
            );
        }
    }
}

fn entries(s: &mut String, p: Palette, title: &str, list: &[crate::command::Entry]) {
    if list.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n{}", p.bold(title));
    for e in list {
        let _ = writeln!(
            s,
            "  {}  {}",
            v(&e.title),
            p.dim(&format!("line {}", e.line))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_like_display() {
        for n in [0, 1, 9, 10, 99, 100, 31576, usize::MAX] {
            let mut s = String::from("x");
            push_number(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }
}
