//! Hosts: the inventory (`nixcmd.toml` or the flake), selectors (`all`, `@tag`, `a,b`) and
//! the `nixcmd hosts` subcommand. Running things on hosts is the executor's business
//! (`run::fanout`); this module only says which hosts exist and how to reach them.

pub mod inventory;
pub mod selector;

use crate::app::Context;
use crate::cli::TextOrJson;
use crate::exit::{Exit, Failure};
use inventory::{Inventory, Source};

/// A `--config` (`explicit`, relative to `dir`) that names no file: missing, or a folder
/// (`--config .`), with what to give instead, by its full path. Anything else wrong with the
/// file is the inventory's to tell, at `path:line:col`.
pub fn refuse_missing_config(
    explicit: Option<&std::path::Path>,
    dir: &std::path::Path,
) -> Result<(), Failure> {
    let Some(path) = inventory::config_path(explicit, dir) else {
        return Ok(());
    };
    if explicit.is_none() {
        return Ok(());
    }
    let (problem, hint) = match std::fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => (
            "is a folder, not a config file",
            format!(
                "--config takes the file itself, e.g. `--config {}`",
                path.join("nixcmd.toml").display()
            ),
        ),
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (
            "no such file",
            "check the path; without --config, nixcmd reads `nixcmd.toml` at the project root, \
             else `$XDG_CONFIG_HOME/nixcmd/config.toml`"
                .to_string(),
        ),
        // Unreadable for another reason: the inventory says why.
        Err(_) => return Ok(()),
    };
    Err(Failure::usage(format!("--config {}: {problem}", path.display())).with_hint(hint))
}

/// Loads the inventory the way a run in `cx.cwd` would, printing its warnings on stderr.
pub fn load_for(cx: &Context, dir: &std::path::Path) -> Result<Inventory, Failure> {
    refuse_missing_config(cx.config.as_deref(), dir)?;
    let path = inventory::config_path(cx.config.as_deref(), dir);
    let inv = inventory::load(path.as_deref(), dir);
    if !inv.diagnostics.is_empty() {
        cx.out.eprint(&inv.render_diagnostics());
    }
    if inv.has_errors() {
        return Err(Failure::usage(format!(
            "the inventory in {} is invalid",
            inv.path.clone().unwrap_or_default()
        ))
        .with_hint("fix the file; `nixcmd hosts` shows what nixcmd reads"));
    }
    Ok(inv)
}

/// `nixcmd hosts`: name, target, port, tags, where they came from.
pub fn command(cx: &Context, format: TextOrJson) -> Result<Exit, Failure> {
    let inv = load_for(cx, &cx.cwd)?;
    if format == TextOrJson::Json {
        let text = serde_json::to_string_pretty(&inv).map_err(|e| Failure::usage(e.to_string()))?;
        cx.out.print(&format!("{text}\n"));
        return Ok(Exit::Success);
    }
    let from = match inv.source {
        Source::Config => format!("from {}", inv.path.as_deref().unwrap_or("")),
        Source::Flake => format!(
            "from the nixosConfigurations of the flake in {}",
            inv.path.as_deref().unwrap_or("")
        ),
        Source::None => {
            // The flake here could not be evaluated (warned about above): not "no flake",
            // and not a listing that succeeded.
            let unreadable = inv.diagnostics.iter().any(|d| d.code == "flake-hosts");
            let flake = match unreadable {
                true => "and the flake here could not be read (see above)",
                false => "and no flake with nixosConfigurations here",
            };
            cx.out.print(&format!(
                "No hosts: no nixcmd.toml with [hosts.NAME] tables, {flake}.\n"
            ));
            cx.out.eprint(
                "  hint: add to nixcmd.toml:\n    [hosts.web1]\n    target = \"root@10.0.0.5\"\n    tags = [\"web\"]\n",
            );
            return Ok(if unreadable {
                Exit::Failed
            } else {
                Exit::Success
            });
        }
    };
    let rows: Vec<[String; 4]> = inv
        .hosts
        .iter()
        .map(|h| {
            let target = if h.local {
                "(this machine)".to_string()
            } else {
                match h.port {
                    Some(p) => format!("{} port {p}", h.target),
                    None => h.target.clone(),
                }
            };
            let opts = if h.ssh_options.is_empty() || h.local {
                String::new()
            } else {
                h.ssh_options.join(" ")
            };
            [h.name.clone(), target, h.tags.join(","), opts]
        })
        .collect();
    let head = ["HOST", "TARGET", "TAGS", "SSH OPTIONS"];
    let mut w = head.map(|h| h.len());
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2]
        )
        .trim_end()
        .to_string()
    };
    let mut s = cx.out.out.bold(&line(head));
    s.push('\n');
    for r in &rows {
        s.push_str(&line([&r[0], &r[1], &r[2], &r[3]]));
        s.push('\n');
    }
    s.push_str(&format!(
        "{} host{} {from}\n",
        inv.hosts.len(),
        if inv.hosts.len() == 1 { "" } else { "s" }
    ));
    cx.out.print(&s);
    Ok(Exit::Success)
}
