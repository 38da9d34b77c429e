//! The hosts of a run, before and between its fan-outs: `--hosts` and `--config` from the
//! command line, host arguments (`hosts=arg:NAME`) checked against the inventory before
//! anything runs, what `state.json` keeps about hosts (compensations registered, hosts that
//! failed) and how `resume` picks the failed hosts up again. Running a block on hosts is
//! [`crate::run::fanout`].

use crate::event::StepStatus;
use crate::hosts::inventory::Inventory;
use crate::run::records::{Progress, State};
use serde::{Deserialize, Serialize};

/// What `state.json` keeps about hosts.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct FleetState {
    /// `run --hosts SELECTOR`: narrows every fan-out of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// `--config FILE` of the original invocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// Host compensations registered by started steps, in registration order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compensations: Vec<HostCompensation>,
    /// Hosts that failed a step and left the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedHost>,
    /// The run stopped because hosts failed past `max-fail` (or a canary failed): the failed
    /// hosts were rolled back on their own, nothing else was, and `resume` retries them —
    /// also when a host's rollback failed (exit 5). Written by every run, `false` too (see
    /// [`FleetState::new`]): `None` only in records made before the field existed, which
    /// [`resumable`] judges by their failed hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_by_hosts: Option<bool>,
}

impl FleetState {
    /// The fleet record of a new run. `Default` is that of a record written before
    /// `stopped_by_hosts` existed (the field, or the whole `fleet`, missing).
    pub fn new() -> FleetState {
        FleetState {
            stopped_by_hosts: Some(false),
            ..FleetState::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostCompensation {
    pub rollback: String,
    pub host: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailedHost {
    pub host: String,
    pub step: String,
    pub reason: String,
}

/// The fleet settings of a new run from the command line: `--hosts` (checked against the
/// inventory now, so a typo is a usage error before anything runs) and `--config`.
pub fn from_cli(
    cx: &crate::app::Context,
    cmd: &crate::command::Command,
    dir: &std::path::Path,
    filter: Option<&str>,
    values: &[String],
    set: &[String],
    dry_run: bool,
) -> Result<FleetState, crate::exit::Failure> {
    use crate::exit::Failure;
    let config = cx.config.as_ref().map(|p| {
        if p.is_absolute() {
            p.display().to_string()
        } else {
            cx.cwd.join(p).display().to_string()
        }
    });
    if let Some(sel) = filter {
        let inv = crate::hosts::load_for(cx, dir)?;
        crate::hosts::selector::Selector::parse(sel)
            .map_err(|m| m.message(sel))
            .and_then(|s| s.resolve(&inv).map(|_| ()))
            .map_err(|e| {
                Failure::usage(format!("--hosts {sel}: {e}"))
                    .with_hint("`nixcmd hosts` lists the inventory")
            })?;
        if !cmd.blocks().any(|b| b.attrs.hosts.is_some()) {
            cx.out.eprint(&format!(
                "warning: --hosts {sel}: `{}` has no block with hosts=; it changes nothing\n",
                cmd.name
            ));
        }
    }
    check_host_args(cmd, values, set, filter, !dry_run, || {
        crate::hosts::load_for(cx, dir)
    })?;
    Ok(FleetState {
        filter: filter.map(str::to_string),
        config,
        ..FleetState::new()
    })
}

/// The selector argument `name` gives (its values joined as `a,b`), from a run's bound
/// environment; `None` when the argument is undeclared or empty (run on this machine).
pub(super) fn selector_from_arg(
    cmd: &crate::command::Command,
    env: &[(String, String)],
    name: &str,
) -> Option<String> {
    let spec = cmd.args.iter().find(|a| a.name == name)?;
    // The last binding wins, as it does for the step's environment.
    let value = env.iter().rev().find(|(k, _)| *k == spec.env)?.1.as_str();
    let parts: Vec<&str> = value
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|p| !p.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// `hosts=arg:NAME` with hosts given: every one must be in the inventory before anything
/// runs, as for `--hosts` (a typo must not turn into a half-run fleet check).
/// `load` reads the inventory, only when some host is named.
///
/// With `filter` (`--hosts`), the fan-outs whose hosts are known now (host arguments given)
/// must keep at least one host between them: a selection that leaves every fan-out of the
/// run with no host is a usage error, not a run that does nothing and ends 0.
pub fn check_host_args(
    cmd: &crate::command::Command,
    values: &[String],
    set: &[String],
    filter: Option<&str>,
    check_literal: bool,
    load: impl FnOnce() -> Result<Inventory, crate::exit::Failure>,
) -> Result<(), crate::exit::Failure> {
    let mut names: Vec<&str> = cmd.blocks().filter_map(|b| b.attrs.hosts_arg()).collect();
    names.sort_unstable();
    names.dedup();
    // Literal selectors (`hosts=@web`, `hosts=web1,db1`): malformed ones are refused
    // whatever the inventory, unknown names and tags once it is read, before anything runs
    // (found when the run reached the block, the steps before it had changed things).
    let mut literal: Vec<&str> = cmd
        .blocks()
        .filter(|b| b.runnable && b.attrs.hosts_arg().is_none())
        .filter_map(|b| b.attrs.hosts.as_deref())
        .collect();
    literal.sort_unstable();
    literal.dedup();
    for sel in &literal {
        crate::hosts::selector::Selector::parse(sel)
            .map_err(|m| crate::exit::Failure::usage(format!("hosts={sel}: {}", m.message(sel))))?;
    }
    if names.is_empty() && literal.is_empty() {
        return Ok(());
    }
    let bound = crate::run::args::bind(cmd, values, set)?;
    let given: Vec<(&str, String)> = names
        .into_iter()
        .filter_map(|n| Some((n, selector_from_arg(cmd, &bound.env, n)?)))
        .collect();
    if given.is_empty() && (literal.is_empty() || !check_literal) {
        return Ok(());
    }
    let inv = load()?;
    // No inventory at all (a dry run in CI): the fan-out says so when it is reached.
    let literal_checked = check_literal && !inv.hosts.is_empty();
    let mut selected = 0;
    if literal_checked {
        for sel in &literal {
            crate::hosts::selector::hosts_for(sel, None, &inv).map_err(|e| {
                crate::exit::Failure::usage(format!("hosts={sel}: {e}"))
                    .with_hint("`nixcmd hosts` lists the inventory")
            })?;
            if let Some(f) = filter {
                selected += crate::hosts::selector::hosts_for(sel, Some(f), &inv)
                    .map_err(|e| crate::exit::Failure::usage(format!("--hosts {f}: {e}")))?
                    .len();
            } else {
                selected += 1;
            }
        }
    }
    for (name, selector) in &given {
        let hosts = crate::hosts::selector::hosts_for(selector, None, &inv).map_err(|e| {
            crate::exit::Failure::usage(format!("argument `{name}` ({selector}): {e}"))
                .with_hint("`nixcmd hosts` lists the inventory")
        })?;
        if let Some(f) = filter {
            let narrowed = crate::hosts::selector::hosts_for(selector, Some(f), &inv)
                .map_err(|e| crate::exit::Failure::usage(format!("--hosts {f}: {e}")))?;
            selected += narrowed.len();
        } else {
            selected += hosts.len();
        }
    }
    // Literal selectors not resolved here may select hosts.
    let only_args = literal_checked || literal.is_empty();
    if let Some(f) = filter
        && selected == 0
        && only_args
    {
        let args = given
            .iter()
            .map(|(n, sel)| format!("`{n}` ({sel})"))
            .chain(literal.iter().map(|sel| format!("hosts={sel}")))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(crate::exit::Failure::usage(format!(
            "--hosts {f} names no host of this run: the fan-outs reach only {args}"
        ))
        .with_hint("name hosts among those, or leave --hosts out"));
    }
    Ok(())
}

/// Whether a run that ended failed (exit 1) or "rollback incomplete" (exit 5) can be
/// resumed: it stopped because hosts failed, the failed hosts were rolled back on their own
/// and nothing else was. Runs recorded before `stopped_by_hosts` existed (`None`): failed
/// with failed hosts, as before.
pub fn resumable(state: &State) -> bool {
    use crate::event::RunStatus;
    match (state.status, state.fleet.stopped_by_hosts) {
        (_, Some(stopped)) => stopped,
        (RunStatus::RollbackIncomplete, None) => false,
        (_, None) => !state.fleet.failed.is_empty(),
    }
}

/// Prepares a resumed run: failed and not-started hosts of unfinished steps run again.
pub fn reset_for_resume(state: &mut State, progress: &mut Progress) {
    let done: Vec<String> = progress
        .steps
        .iter()
        .filter(|s| s.status.is_done())
        .map(|s| s.id.clone())
        .collect();
    state.fleet.failed.retain(|f| done.contains(&f.step));
    state.fleet.stopped_by_hosts = Some(false);
    for step in &mut progress.steps {
        if step.hosts.is_empty() || step.status.is_done() {
            continue;
        }
        step.status = StepStatus::Pending;
        for h in &mut step.hosts {
            if h.status != StepStatus::Succeeded {
                h.status = StepStatus::Pending;
                h.reason = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `state.json` of a failed run with a host that left it, with `fleet` as given.
    fn failed_run(status: &str, fleet: serde_json::Value) -> State {
        serde_json::from_value(serde_json::json!({
            "version": 1, "run_id": "a-1", "command": "a", "command_hash": "h",
            "command_source": "s", "args": [], "dir": "/", "dry_run": false,
            "status": status, "started": "2026-11-01T00:00:00.000Z",
            "updated": "2026-11-02T00:00:00.000Z", "total_steps": 1, "errors": [],
            "pid": 1, "compensations": [], "approvals": [], "fleet": fleet
        }))
        .expect("a state.json")
    }

    /// Records written before `stopped_by_hosts` existed are judged by their failed hosts
    /// (exit 1) or not resumed (exit 5); records that have it, by it alone.
    #[test]
    fn resumable_uses_the_failed_hosts_only_for_records_without_stopped_by_hosts() {
        let left = serde_json::json!([{"host": "h2", "step": "change", "reason": "x"}]);
        let cases = [
            ("failed", serde_json::json!({"failed": left}), true),
            ("failed", serde_json::json!({}), false),
            (
                "rollback_incomplete",
                serde_json::json!({"failed": left}),
                false,
            ),
            (
                "failed",
                serde_json::json!({"failed": left, "stopped_by_hosts": false}),
                false,
            ),
            (
                "failed",
                serde_json::json!({"failed": left, "stopped_by_hosts": true}),
                true,
            ),
            (
                "rollback_incomplete",
                serde_json::json!({"failed": left, "stopped_by_hosts": true}),
                true,
            ),
            (
                "rollback_incomplete",
                serde_json::json!({"failed": left, "stopped_by_hosts": false}),
                false,
            ),
        ];
        for (status, fleet, expected) in cases {
            let state = failed_run(status, fleet.clone());
            assert_eq!(resumable(&state), expected, "{status} {fleet}");
        }
    }

    /// A new run writes `stopped_by_hosts: false`, so that it is never taken for an old one.
    #[test]
    fn a_new_runs_fleet_record_says_it_was_not_stopped_by_hosts() {
        assert_eq!(
            serde_json::to_value(FleetState::new()).unwrap(),
            serde_json::json!({"stopped_by_hosts": false})
        );
        assert_eq!(FleetState::default().stopped_by_hosts, None);
    }
}
