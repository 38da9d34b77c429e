//! The inventory: which hosts a fan-out can reach and how. Read from the config file
//! (`[hosts.NAME] target, port, tags, ssh_options`), else from the flake's
//! `nixosConfigurations` names. Raw file → validated [`Inventory`], with every problem as a
//! diagnostic at `path:line:col`. Reading the flake is the only process this module starts.

use crate::diagnostic::{Diagnostic, Severity};
use crate::source::SourceFile;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Top-level keys of the config file that other parts of nixcmd read.
const TOP_KEYS: &[&str] = &["hosts", "secrets", "ssh"];
/// Keys of a `[hosts.NAME]` table.
const HOST_KEYS: &[&str] = &["target", "port", "tags", "ssh_options"];
/// Keys of the `[ssh]` table (defaults for every host).
const SSH_KEYS: &[&str] = &["connect_timeout", "options"];

/// Default `ConnectTimeout` (seconds): an unreachable host fails fast.
pub const DEFAULT_CONNECT_TIMEOUT: u32 = 10;

/// Where the hosts came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `[hosts.NAME]` tables of this config file.
    Config,
    /// `nixosConfigurations` of the flake in this folder.
    Flake,
    /// No config hosts and no flake (or it has no `nixosConfigurations`).
    None,
}

/// One host, ready to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub name: String,
    /// `user@address` or an `ssh_config` alias; the name when the config gives none.
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub tags: Vec<String>,
    /// Extra `ssh` arguments (`-o Key=Value`, `-i FILE`, `-F FILE` …), before the target.
    pub ssh_options: Vec<String>,
    /// Runs on this machine, without ssh (`local`, or the machine's own name).
    pub local: bool,
}

/// The hosts nixcmd knows, and what was wrong with the file that named them.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub source: Source,
    /// The config file, or the flake folder, the hosts came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub hosts: Vec<Host>,
    /// `ConnectTimeout` for every host, seconds.
    pub connect_timeout: u32,
    /// Names of variables whose values are redacted in every run (`secrets = [...]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    #[serde(skip)]
    pub diagnostics: Vec<Diagnostic>,
    #[serde(skip)]
    pub file: Option<SourceFile>,
}

impl Inventory {
    pub fn get(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.hosts.iter().map(|h| h.name.as_str()).collect()
    }

    /// Warnings and errors rendered with `path:line:col` and the offending text underlined.
    pub fn render_diagnostics(&self) -> String {
        let name = self.path.clone().unwrap_or_default();
        self.diagnostics
            .iter()
            .map(|d| d.render(self.file.as_ref(), &name))
            .collect()
    }

    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity >= Severity::Error)
    }
}

/// The config file to read: `--config FILE`, else `nixcmd.toml` at the project root, else
/// `$XDG_CONFIG_HOME/nixcmd/config.toml`. `None` when none exists.
pub fn config_path(explicit: Option<&Path>, dir: &Path) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        });
    }
    let project = crate::discovery::project_root(dir).join("nixcmd.toml");
    if project.is_file() {
        return Some(project);
    }
    let user = crate::discovery::config_home()?
        .join("nixcmd")
        .join("config.toml");
    user.is_file().then_some(user)
}

/// Loads the inventory: the config file's hosts, else the flake's `nixosConfigurations` in
/// `dir` (evaluated only when the config names no host and `flake.nix` exists).
pub fn load(config: Option<&Path>, dir: &Path) -> Inventory {
    let mut inv = match config {
        Some(path) => from_config_file(path),
        None => empty(None),
    };
    if inv.hosts.is_empty() && !inv.has_errors() {
        let root = crate::discovery::project_root(dir);
        let flake_dir = if dir.join("flake.nix").is_file() {
            dir.to_path_buf()
        } else {
            root
        };
        if flake_dir.join("flake.nix").is_file() {
            match flake_hosts(&flake_dir) {
                Ok(names) if !names.is_empty() => {
                    let me = hostname();
                    inv.source = Source::Flake;
                    inv.path = Some(flake_dir.display().to_string());
                    inv.hosts = names
                        .into_iter()
                        .map(|name| Host {
                            local: name == "local" || me.as_deref() == Some(name.as_str()),
                            target: name.clone(),
                            name,
                            port: None,
                            tags: Vec::new(),
                            ssh_options: Vec::new(),
                        })
                        .collect();
                }
                Ok(_) => {}
                Err(e) => inv
                    .diagnostics
                    .push(Diagnostic::warning("flake-hosts", e).with_hint(
                        "list the hosts in nixcmd.toml: [hosts.NAME] target = \"root@host\"",
                    )),
            }
        }
    }
    inv
}

fn empty(path: Option<&Path>) -> Inventory {
    Inventory {
        source: Source::None,
        path: path.map(|p| p.display().to_string()),
        hosts: Vec::new(),
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        secrets: Vec::new(),
        diagnostics: Vec::new(),
        file: None,
    }
}

/// The `secrets` names of the config file that applies to `dir` (none without a file). Reads
/// only the file: never asks the flake for hosts. A file that cannot be read or has errors
/// (invalid TOML, a wrong type), or a `--config` file that does not exist, is the invalid
/// [`Inventory`] with its diagnostics: its `secrets` cannot be known, and a run that went on
/// without them would print their values in clear.
pub fn config_secrets(explicit: Option<&Path>, dir: &Path) -> Result<Vec<String>, Box<Inventory>> {
    let inv = match config_path(explicit, dir) {
        Some(path) if explicit.is_some() || path.is_file() => from_config_file(&path),
        _ => return Ok(Vec::new()),
    };
    if inv.has_errors() {
        return Err(Box::new(inv));
    }
    Ok(inv.secrets)
}

/// What Nix's stderr says went wrong: its `error:` line with the position after it (`at
/// FILE:LINE:COL`, the store copy of the flake named as the file in it), not the last line,
/// which is a code excerpt (`2|   description = …`) when Nix shows one.
fn nix_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    let Some(i) = lines.iter().position(|l| l.starts_with("error:")) else {
        return lines
            .iter()
            .rev()
            .find(|l| !l.is_empty())
            .unwrap_or(&"")
            .to_string();
    };
    let message = lines[i].trim_start_matches("error:").trim();
    let at = lines[i + 1..]
        .iter()
        .find_map(|l| l.strip_prefix("at "))
        .map(|at| {
            let at = at.trim_end_matches(':');
            match at
                .strip_prefix("/nix/store/")
                .and_then(|r| r.split_once("-source/"))
            {
                Some((hash, rest)) if hash.len() == 32 => rest.to_string(),
                _ => at.to_string(),
            }
        });
    match at {
        Some(at) => format!("{message} (at {at})"),
        None => message.to_string(),
    }
}

/// `nix eval --no-write-lock-file --json .#nixosConfigurations --apply builtins.attrNames`
/// in `dir`.
fn flake_hosts(dir: &Path) -> Result<Vec<String>, String> {
    let out = crate::process::capture_in(
        Some(dir),
        "nix",
        &[
            "eval",
            // Reading the host names must not write the user's flake.lock (Nix writes one
            // when it is missing or lacks an input of flake.nix).
            "--no-write-lock-file",
            "--json",
            ".#nixosConfigurations",
            "--apply",
            "builtins.attrNames",
        ],
        "",
    )
    .map_err(|e| format!("cannot run nix: {e}"))?;
    let Some(out) = out else {
        return Ok(Vec::new());
    };
    if !out.success() {
        // A flake without nixosConfigurations is not an error: it simply has no hosts.
        if out.stderr.contains("does not provide attribute") {
            return Ok(Vec::new());
        }
        return Err(format!(
            "cannot read the flake's nixosConfigurations in {}: {}",
            dir.display(),
            nix_error(&out.stderr)
        ));
    }
    serde_json::from_str(out.stdout.trim())
        .map_err(|e| format!("nix eval printed something unexpected: {e}"))
}

/// This machine's host name (a host with that name, and no other target, runs locally).
pub fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

/// Reads and validates a config file.
pub fn from_config_file(path: &Path) -> Inventory {
    let mut inv = empty(Some(path));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            inv.diagnostics.push(Diagnostic::error(
                "config-unreadable",
                format!("cannot read {}: {e}", path.display()),
            ));
            return inv;
        }
    };
    let file = SourceFile::new(path.display().to_string(), text);
    parse_into(&mut inv, &file);
    inv.file = Some(file);
    inv
}

/// Parses config text (already read) into `inv`.
pub fn parse_into(inv: &mut Inventory, file: &SourceFile) {
    use toml::de::{DeTable, DeValue};
    let text = file.text.as_str();
    let table = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            inv.diagnostics.push(
                Diagnostic::error("config-syntax", format!("invalid TOML: {}", e.message()))
                    .at(file, span),
            );
            return;
        }
    };
    let me = hostname();
    let mut default_options: Vec<String> = Vec::new();
    let warn_unknown = |inv: &mut Inventory, key: &str, span, known: &[&str], what: &str| {
        let hint = crate::suggest::closest(key, known.iter().copied())
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("known keys: {}", known.join(", ")));
        inv.diagnostics.push(
            Diagnostic::warning(
                "config-unknown-key",
                format!("unknown key `{key}` {what}; ignored"),
            )
            .at(file, span)
            .with_hint(hint),
        );
    };
    let type_error = |inv: &mut Inventory, msg: String, span| {
        inv.diagnostics
            .push(Diagnostic::error("config-value", msg).at(file, span));
    };
    for (key, value) in table.get_ref().iter() {
        match key.get_ref().as_ref() {
            "hosts" => {
                let Some(hosts) = value.get_ref().as_table() else {
                    type_error(
                        inv,
                        "`hosts` must be a table of [hosts.NAME] tables".into(),
                        value.span(),
                    );
                    continue;
                };
                for (name, host) in hosts.iter() {
                    let name_str = name.get_ref().to_string();
                    if !crate::attrs::is_valid_id(&name_str) {
                        type_error(
                            inv,
                            format!(
                                "`{name_str}` is not a valid host name (letters, digits, `-`, `_`, `.`)"
                            ),
                            name.span(),
                        );
                        continue;
                    }
                    let Some(fields) = host.get_ref().as_table() else {
                        type_error(
                            inv,
                            format!("`hosts.{name_str}` must be a table"),
                            host.span(),
                        );
                        continue;
                    };
                    let mut h = Host {
                        name: name_str.clone(),
                        target: name_str.clone(),
                        port: None,
                        tags: Vec::new(),
                        ssh_options: Vec::new(),
                        local: false,
                    };
                    let mut explicit_target = false;
                    for (k, v) in fields.iter() {
                        let strings = |v: &DeValue| -> Option<Vec<String>> {
                            v.as_array()?
                                .iter()
                                .map(|i| i.get_ref().as_str().map(str::to_string))
                                .collect()
                        };
                        match k.get_ref().as_ref() {
                            "target" => match v.get_ref().as_str() {
                                Some(s) if !s.trim().is_empty() && !s.starts_with('-') => {
                                    h.target = s.to_string();
                                    explicit_target = true;
                                }
                                _ => type_error(
                                    inv,
                                    format!(
                                        "`hosts.{name_str}.target` must be a string like \"root@10.0.0.5\""
                                    ),
                                    v.span(),
                                ),
                            },
                            "port" => match v.get_ref().as_integer().and_then(|i| {
                                i.as_str().parse::<u16>().ok().filter(|_| i.radix() == 10)
                            }) {
                                Some(p) if p > 0 => h.port = Some(p),
                                _ => type_error(
                                    inv,
                                    format!(
                                        "`hosts.{name_str}.port` must be a port number (1–65535)"
                                    ),
                                    v.span(),
                                ),
                            },
                            "tags" => match strings(v.get_ref()) {
                                Some(t) => h.tags = t,
                                None => type_error(
                                    inv,
                                    format!("`hosts.{name_str}.tags` must be a list of strings"),
                                    v.span(),
                                ),
                            },
                            "ssh_options" => match strings(v.get_ref()) {
                                Some(o) => h.ssh_options = o,
                                None => type_error(
                                    inv,
                                    format!(
                                        "`hosts.{name_str}.ssh_options` must be a list of strings, e.g. [\"-o\", \"ProxyJump=bastion\"]"
                                    ),
                                    v.span(),
                                ),
                            },
                            other => warn_unknown(
                                inv,
                                other,
                                k.span(),
                                HOST_KEYS,
                                &format!("in [hosts.{name_str}]"),
                            ),
                        }
                    }
                    h.local = h.target == "local"
                        || name_str == "local" && !explicit_target
                        || (!explicit_target && me.as_deref() == Some(name_str.as_str()));
                    inv.hosts.push(h);
                }
            }
            "ssh" => {
                let Some(fields) = value.get_ref().as_table() else {
                    type_error(inv, "`ssh` must be a table".into(), value.span());
                    continue;
                };
                for (k, v) in fields.iter() {
                    match k.get_ref().as_ref() {
                        "connect_timeout" => match v
                            .get_ref()
                            .as_integer()
                            .and_then(|i| i.as_str().parse::<u32>().ok())
                        {
                            Some(n) if n > 0 => inv.connect_timeout = n,
                            _ => type_error(
                                inv,
                                "`ssh.connect_timeout` must be a number of seconds".into(),
                                v.span(),
                            ),
                        },
                        "options" => {}
                        other => warn_unknown(inv, other, k.span(), SSH_KEYS, "in [ssh]"),
                    }
                }
                if let Some((_, opts)) = fields.iter().find(|(k, _)| k.get_ref() == "options") {
                    let list: Option<Vec<String>> = opts.get_ref().as_array().and_then(|a| {
                        a.iter()
                            .map(|i| i.get_ref().as_str().map(str::to_string))
                            .collect()
                    });
                    match list {
                        Some(list) => default_options = list,
                        None => type_error(
                            inv,
                            "`ssh.options` must be a list of strings".into(),
                            opts.span(),
                        ),
                    }
                }
            }
            "secrets" => {
                let list: Option<Vec<String>> = value.get_ref().as_array().and_then(|a| {
                    a.iter()
                        .map(|i| i.get_ref().as_str().map(str::to_string))
                        .collect()
                });
                match list {
                    Some(list) => inv.secrets = list,
                    None => type_error(
                        inv,
                        "`secrets` must be a list of variable names".into(),
                        value.span(),
                    ),
                }
            }
            other => warn_unknown(inv, other, key.span(), TOP_KEYS, "at the top level"),
        }
    }
    for h in &mut inv.hosts {
        let mut all = default_options.clone();
        all.append(&mut h.ssh_options);
        h.ssh_options = all;
    }
    if !inv.hosts.is_empty() {
        inv.source = Source::Config;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nix's error line and its position, not the code excerpt that ends its message.
    #[test]
    fn a_nix_error_is_its_error_line_and_position() {
        let stderr = "error: syntax error, unexpected ';'\n\n       at /nix/store/78zpky1q0s6xbr3nyqmwykhk2vlvbans-source/flake.nix:1:12:\n\n            1| { broken = ;\n             |            ^\n            2|   description = \"app\";\n";
        assert_eq!(
            nix_error(stderr),
            "syntax error, unexpected ';' (at flake.nix:1:12)"
        );
        assert_eq!(nix_error("warning: x\nsomething odd\n"), "something odd");
    }
}
