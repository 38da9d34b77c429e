//! `nixcmd list`: every command on the search path as a table or JSON, with shadowed ones.

use crate::command::{ArgSpec, Command, Mode, Origin};
use crate::discovery::{self, Found, SearchPath};
use crate::exit::{Exit, Failure};
use crate::output::Output;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub description: String,
    pub source: Origin,
    pub mode: Option<Mode>,
    pub args: Vec<ArgSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argument_hint: Option<String>,
    pub steps: usize,
    pub confirm_steps: usize,
    /// Errors that keep the command from running (unreadable file, invalid attributes…).
    pub errors: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Shadowed {
    pub name: String,
    pub source: Origin,
    pub shadowed_by: Origin,
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub commands: Vec<Row>,
    pub shadowed: Vec<Shadowed>,
}

pub fn listing(search: &SearchPath) -> Result<Listing, Failure> {
    let (winners, shadowed) = search.resolve()?;
    let commands = rows(&winners);
    let shadowed = shadowed
        .into_iter()
        .map(|(f, by)| Shadowed {
            name: f.name,
            source: f.origin,
            shadowed_by: by,
        })
        .collect();
    Ok(Listing { commands, shadowed })
}

/// Reads every command, spread over the machine's cores: listing a folder of a thousand
/// runbooks is file reading and parsing, and both parallelise cleanly. Order is kept.
fn rows(found: &[Found]) -> Vec<Row> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if workers == 1 || found.len() < 16 {
        return found.iter().map(row).collect();
    }
    let chunk = found.len().div_ceil(workers);
    std::thread::scope(|scope| {
        let handles: Vec<_> = found
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(row).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn row(found: &Found) -> Row {
    match discovery::load_with(found, crate::parser::Depth::Summary) {
        Ok(loaded) => from_command(&loaded.command),
        Err(u) => Row {
            name: found.name.clone(),
            description: String::new(),
            source: found.origin.clone(),
            mode: None,
            args: Vec::new(),
            argument_hint: None,
            steps: 0,
            confirm_steps: 0,
            errors: 1,
            error: Some(u.diagnostic.message.clone()),
        },
    }
}

fn from_command(c: &Command) -> Row {
    Row {
        name: c.name.clone(),
        description: c.description.clone().unwrap_or_default(),
        source: c.source.clone(),
        mode: Some(c.mode),
        args: c.args.clone(),
        argument_hint: c.argument_hint.clone(),
        steps: c.runnable_steps(),
        confirm_steps: c.confirm_count(),
        errors: c
            .diagnostics
            .iter()
            .filter(|d| d.severity >= crate::diagnostic::Severity::Error)
            .count(),
        error: None,
    }
}

/// `<host> [inputs…]` from declarations, else the `argument-hint`.
pub fn args_summary(args: &[ArgSpec]) -> String {
    args.iter()
        .filter(|a| !a.named)
        .chain(args.iter().filter(|a| a.named))
        .map(|a| match (a.required, a.variadic) {
            _ if a.named && a.required => format!("<{}=…>", a.name),
            _ if a.named => format!("[{}=…]", a.name),
            (true, true) => format!("<{}…>", a.name),
            (true, false) => format!("<{}>", a.name),
            (false, true) => format!("[{}…]", a.name),
            (false, false) => format!("[{}]", a.name),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(search: &SearchPath, out: &Output, json: bool) -> Result<Exit, Failure> {
    let listing = listing(search)?;
    if json {
        let text =
            serde_json::to_string_pretty(&listing).map_err(|e| Failure::usage(e.to_string()))?;
        out.print(&format!("{text}\n"));
        return Ok(Exit::Success);
    }
    out.print(&table(&listing, out));
    Ok(Exit::Success)
}

fn table(listing: &Listing, out: &Output) -> String {
    let p = out.out;
    if listing.commands.is_empty() {
        return "No commands found.\n".to_string();
    }
    let header = [
        "NAME",
        "DESCRIPTION",
        "ARGS",
        "STEPS",
        "ASKS",
        "MODE",
        "SOURCE",
    ];
    let rows: Vec<[String; 7]> = listing
        .commands
        .iter()
        .map(|r| {
            let description = match &r.error {
                Some(e) => format!("(unreadable: {e})"),
                None if r.errors > 0 => format!("{} (invalid: run `nixcmd check`)", r.description),
                None => r.description.clone(),
            };
            [
                r.name.clone(),
                description,
                if r.args.is_empty() {
                    r.argument_hint.clone().unwrap_or_default()
                } else {
                    args_summary(&r.args)
                },
                r.steps.to_string(),
                r.confirm_steps.to_string(),
                r.mode
                    .map(|m| {
                        if m == Mode::Annotated {
                            "annotated"
                        } else {
                            "guided"
                        }
                    })
                    .unwrap_or("-")
                    .to_string(),
                r.source.label().to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    if let Some(total) = out.width() {
        let others: usize = widths
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, w)| w + 2)
            .sum();
        widths[1] = widths[1].min(total.saturating_sub(others).max(20));
    }
    let mut s = String::new();
    let line = |cells: &[String], s: &mut String, bold: bool| {
        let mut parts = Vec::new();
        for (i, cell) in cells.iter().enumerate() {
            let cell: String = if cell.chars().count() > widths[i] {
                cell.chars()
                    .take(widths[i].saturating_sub(1))
                    .chain(['…'])
                    .collect()
            } else {
                cell.clone()
            };
            let padded = if i + 1 == cells.len() {
                cell
            } else {
                format!("{cell:<w$}", w = widths[i])
            };
            parts.push(if bold { p.bold(&padded) } else { padded });
        }
        s.push_str(parts.join("  ").trim_end());
        s.push('\n');
    };
    line(&header.map(String::from), &mut s, true);
    for row in &rows {
        line(row, &mut s, false);
    }
    if !listing.shadowed.is_empty() {
        s.push_str(&format!(
            "\n{}\n",
            p.bold("Shadowed (a command earlier on the search path has the same name):")
        ));
        for sh in &listing.shadowed {
            s.push_str(&format!(
                "  {}  {} ({}), shadowed by {}\n",
                sh.name,
                sh.source.path().unwrap_or("builtin"),
                sh.source.label(),
                sh.shadowed_by.label()
            ));
        }
    }
    s
}
