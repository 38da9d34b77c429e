//! The hosts of a run, told to the blocks that run on this machine: `$NIXCMD_HOSTS_FILE`
//! names `hosts.tsv` in the run folder, one line per host the run's fan-outs select (after
//! `--hosts`), saying how nixcmd reaches it. A local step that works *for* the hosts (deploy-all
//! builds and copies closures here) then targets exactly the hosts nixcmd resolved — same
//! config file, `--config`, `[ssh]` options, ports, local hosts — instead of reading
//! `nixcmd.toml` again on its own.
//!
//! Format (stable; tab-separated, one host per line, in inventory order, no header):
//!
//! ```text
//! NAME <TAB> HOW <TAB> TARGET <TAB> PORT [<TAB> SSH_OPTION]…
//! ```
//!
//! - `HOW`: `ssh`, or `local` for a host nixcmd runs on this machine (`local`, or named like it);
//! - `TARGET`: what ssh is given (`user@address` or an ssh_config alias); a local host's own
//!   inventory target;
//! - `PORT`: the port, or `-` when the inventory gives none (ssh's configuration decides);
//! - then, one per field, the ssh options nixcmd puts before the target (`-o BatchMode=yes`,
//!   the connect timeout, keep-alives, `[ssh] options`, the host's `ssh_options`); none for a
//!   local host.
//!
//! No field is empty before the options (bash's `read` merges empty tab-separated fields), and
//! no field holds a tab or a line break: a host whose name, target or options would is left
//! out, with a warning. Read it with `while IFS=$'\t' read -r -a f; do …; done`: `${f[0]}` is
//! the name, `${f[@]:4}` the options. Written once, before the first block runs; `resume`
//! keeps it, so a resumed run's local steps see the hosts of the original run.

use crate::event::EventKind;
use crate::hosts::inventory::Host;
use crate::run::engine::Engine;
use std::path::PathBuf;

/// The variable that names the file, for local blocks of a run that fans out.
pub const VAR: &str = "NIXCMD_HOSTS_FILE";
/// The file's name in the run folder.
pub const FILE: &str = "hosts.tsv";

/// `-o` options nixcmd gives ssh for every host, before the host's own: never a prompt, a
/// connect timeout, and keep-alives (a dead host is noticed). [`crate::run::remote::ssh_args`]
/// starts with them, so the file says what ssh is given.
pub fn default_ssh_options(connect_timeout: u32) -> Vec<String> {
    vec![
        "-o".to_string(),
        "BatchMode=yes".to_string(),
        "-o".to_string(),
        format!("ConnectTimeout={connect_timeout}"),
        "-o".to_string(),
        "ServerAliveInterval=15".to_string(),
        "-o".to_string(),
        "ServerAliveCountMax=3".to_string(),
    ]
}

/// The file's text for `hosts`, and the names of the hosts left out (a field would hold a
/// tab or a line break, which the format cannot carry).
pub fn render(hosts: &[&Host], connect_timeout: u32) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut left_out = Vec::new();
    for h in hosts {
        let mut fields: Vec<String> = vec![
            h.name.clone(),
            if h.local { "local" } else { "ssh" }.to_string(),
            h.target.clone(),
            h.port.map_or_else(|| "-".to_string(), |p| p.to_string()),
        ];
        if !h.local {
            fields.extend(default_ssh_options(connect_timeout));
            fields.extend(h.ssh_options.iter().cloned());
        }
        if fields.iter().any(|f| f.contains(['\t', '\n', '\r'])) {
            left_out.push(h.name.clone());
            continue;
        }
        text.push_str(&fields.join("\t"));
        text.push('\n');
    }
    (text, left_out)
}

impl Engine<'_> {
    /// Writes `hosts.tsv` before the first block runs, when some block of the run fans out
    /// (a `hosts=arg:NAME` left empty does not); a resumed run keeps the one it has. The hosts
    /// are those of every runnable fan-out, in inventory order. Selectors that do not resolve
    /// add nothing here: their block says why when it runs.
    pub(super) fn write_hosts_file(&mut self) {
        let selectors: Vec<String> = self
            .cmd
            .blocks()
            .filter(|b| b.runnable)
            .filter_map(|b| self.effective_selector(&b.attrs))
            .collect();
        if selectors.is_empty() {
            return;
        }
        let path = self.run.path.join(FILE);
        if self.resumed && path.is_file() {
            // The names, first field of each line: the fan-outs stay within them.
            self.fleet.pinned = std::fs::read(&path).ok().map(|bytes| {
                String::from_utf8_lossy(&bytes)
                    .lines()
                    .filter_map(|l| l.split('\t').next())
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect()
            });
            self.fleet.hosts_file = Some(path);
            return;
        }
        let filter = self.state.fleet.filter.clone();
        let (text, left_out) = match self.inventory() {
            Ok(inv) => {
                let mut chosen = vec![false; inv.hosts.len()];
                for sel in &selectors {
                    if let Ok(hosts) =
                        crate::hosts::selector::hosts_for(sel, filter.as_deref(), inv)
                    {
                        for h in hosts {
                            if let Some(i) = inv.hosts.iter().position(|x| x.name == h.name) {
                                chosen[i] = true;
                            }
                        }
                    }
                }
                let hosts: Vec<&Host> = inv
                    .hosts
                    .iter()
                    .zip(chosen)
                    .filter_map(|(h, c)| c.then_some(h))
                    .collect();
                render(&hosts, inv.connect_timeout)
            }
            Err(_) => (String::new(), Vec::new()),
        };
        for name in left_out {
            let message = format!(
                "host `{name}` is not listed in ${VAR}: its name, target or ssh options hold a \
                 tab or a line break"
            );
            self.warnings.push(message.clone());
            self.emit(EventKind::Warning {
                step_id: None,
                message,
            });
        }
        match crate::records_io::write_atomic(&path, text.as_bytes(), 0o600) {
            Ok(()) => self.fleet.hosts_file = Some(path),
            Err(e) => {
                let message = format!(
                    "{} cannot be written ({e}): local steps get no ${VAR}",
                    path.display()
                );
                self.warnings.push(message.clone());
                self.emit(EventKind::Warning {
                    step_id: None,
                    message,
                });
            }
        }
    }

    /// `NIXCMD_HOSTS_FILE` for a block on this machine, when the run has the file.
    pub(super) fn hosts_file_env(&self) -> Option<(String, String)> {
        let path: &PathBuf = self.fleet.hosts_file.as_ref()?;
        Some((VAR.to_string(), path.display().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, target: &str, port: Option<u16>, opts: &[&str], local: bool) -> Host {
        Host {
            name: name.into(),
            target: target.into(),
            port,
            tags: Vec::new(),
            ssh_options: opts.iter().map(|s| s.to_string()).collect(),
            local,
        }
    }

    #[test]
    fn one_line_per_host_with_how_target_port_and_ssh_options() {
        let web1 = host("web1", "root@10.0.0.5", Some(2222), &["-i", "/k"], false);
        let web2 = host("web2", "web2", None, &[], false);
        let here = host("here", "here", None, &[], true);
        let (text, left) = render(&[&web1, &web2, &here], 7);
        assert_eq!(
            text,
            "web1\tssh\troot@10.0.0.5\t2222\t-o\tBatchMode=yes\t-o\tConnectTimeout=7\t-o\t\
             ServerAliveInterval=15\t-o\tServerAliveCountMax=3\t-i\t/k\n\
             web2\tssh\tweb2\t-\t-o\tBatchMode=yes\t-o\tConnectTimeout=7\t-o\t\
             ServerAliveInterval=15\t-o\tServerAliveCountMax=3\n\
             here\tlocal\there\t-\n"
        );
        assert!(left.is_empty());
    }

    #[test]
    fn a_host_with_a_tab_or_line_break_is_left_out() {
        let ok = host("ok", "ok", None, &[], true);
        let bad = host("bad", "bad", None, &["-o", "X=a\tb"], false);
        let worse = host("worse", "a\nb", None, &[], false);
        let (text, left) = render(&[&bad, &ok, &worse], 10);
        assert_eq!(text, "ok\tlocal\tok\t-\n");
        assert_eq!(left, ["bad", "worse"]);
    }

    #[test]
    fn the_options_are_those_nixcmd_gives_ssh() {
        let h = host("web1", "root@a", Some(22), &["-F", "/c"], false);
        let mut expected = default_ssh_options(9);
        expected
            .extend(["-T", "-p", "22", "-F", "/c", "--", "root@a", "bash -s"].map(String::from));
        assert_eq!(crate::run::remote::ssh_args(&h, 9), expected);
    }
}
