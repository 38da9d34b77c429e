//! `nixcmd runs --prune`: removes old run folders, by count per command (`--keep N`) and/or by
//! age (`--older-than`). Nothing else removes them, and a chatty step leaves gigabytes.
//!
//! Safety before all: a run whose process is alive (its command lock held on its behalf, or a
//! live dry run) and a run paused at a confirmation gate (`nixcmd resume` continues it) are
//! never removed. Only real run folders are touched: a directory, not a symlink, whose
//! `state.json` names the folder's run id. A folder is renamed to `.pruning-<id>` (hidden, so
//! `runs`, `log` and `stats` stop seeing it at once) before it is removed, and checked again
//! after the rename: a `resume` that took the lock in between keeps its run. The duration
//! history (`history/`) is left alone; `stats` counts run folders, so it counts fewer.

use crate::app::Context;
use crate::event::RunStatus;
use crate::exit::{Exit, Failure};
use crate::run::records::{self, State};
use serde::Serialize;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

/// The name prefix of a folder being removed.
const PRUNING: &str = ".pruning-";

/// Which runs the operator wants gone. Both rules together remove only what both select
/// (restic's `--keep-last` with `--keep-within`): the newest N stay, and so does anything
/// younger than the age.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rules {
    pub keep: Option<usize>,
    pub older_than: Option<Duration>,
}

/// What `runs --prune` was asked.
pub struct Request<'a> {
    pub rules: Rules,
    pub command: Option<&'a str>,
    pub dry_run: bool,
    pub json: bool,
}

/// Why a run must stay whatever the rules say.
#[derive(Debug, Clone, PartialEq)]
pub enum Guard {
    /// Nothing protects it: the rules decide.
    None,
    /// Its process is alive; the reason says how that is known.
    InProgress(String),
    /// Paused at a confirmation gate: an intentional pause, `resume` continues it.
    AwaitingApproval { step: Option<String> },
}

/// One run as the choice sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub run_id: String,
    pub command: String,
    /// As in `state.json` (RFC 3339, UTC): runs are ordered by it as `nixcmd runs` orders them.
    pub started: String,
    /// When it last changed: `completed`, else `updated` (a run killed mid-way never completed).
    pub finished: Option<jiff::Timestamp>,
    pub guard: Guard,
}

impl Candidate {
    pub fn from_state(state: &State, guard: Guard) -> Candidate {
        let finished = state
            .completed
            .as_deref()
            .unwrap_or(&state.updated)
            .parse::<jiff::Timestamp>()
            .ok();
        Candidate {
            run_id: state.run_id.clone(),
            command: state.command.clone(),
            started: state.started.clone(),
            finished,
            guard,
        }
    }
}

/// What happens to one run.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The rules keep it.
    Keep,
    Remove,
    /// The rules would remove it, but it stays; the reason says why.
    Skip(String),
}

/// The decision for each of `runs` (same order). Pure: the guards and times are already in.
pub fn decide(runs: &[Candidate], rules: Rules, now: jiff::Timestamp) -> Vec<Decision> {
    // Rank within each command, newest first: the order of `nixcmd runs`.
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&runs[a], &runs[b]);
        a.command
            .cmp(&b.command)
            .then(b.started.cmp(&a.started))
            .then(b.run_id.cmp(&a.run_id))
    });
    let mut rank = vec![0usize; runs.len()];
    for (pos, &i) in order.iter().enumerate() {
        rank[i] = match pos.checked_sub(1).map(|p| order[p]) {
            Some(prev) if runs[prev].command == runs[i].command => rank[prev] + 1,
            _ => 0,
        };
    }
    runs.iter()
        .zip(rank)
        .map(|(run, rank)| {
            if rules.keep.is_some_and(|n| rank < n) {
                return Decision::Keep;
            }
            if let Some(age) = rules.older_than {
                let Some(finished) = run.finished else {
                    return Decision::Skip(
                        "cannot tell when it finished (state.json has no readable time)".into(),
                    );
                };
                // A time in the future (a clock set back) is not old.
                let old = jiff::SignedDuration::try_from(age)
                    .is_ok_and(|age| now.duration_since(finished) > age);
                if !old {
                    return Decision::Keep;
                }
            }
            match &run.guard {
                Guard::None => Decision::Remove,
                Guard::InProgress(why) => Decision::Skip(format!("in progress: {why}")),
                Guard::AwaitingApproval { step } => Decision::Skip(format!(
                    "paused at the confirmation gate{}; `nixcmd resume {}` continues it",
                    step.as_deref()
                        .map(|s| format!(" of step `{s}`"))
                        .unwrap_or_default(),
                    run.run_id
                )),
            }
        })
        .collect()
}

/// Why `state` must stay whatever the rules say (reads the lock and /proc).
fn guard(state: &State) -> Guard {
    if let Some(holder) = records::lock_held_for(state) {
        return Guard::InProgress(format!(
            "the lock of `{}` is held by {holder}",
            state.command
        ));
    }
    if state.status == RunStatus::AwaitingConfirmation {
        return Guard::AwaitingApproval {
            step: state.current_step.clone(),
        };
    }
    if state.status == RunStatus::Running && records::run_process_alive(state) {
        let why = if state.dry_run {
            format!("a dry run whose process {} is alive", state.pid)
        } else {
            format!("its process {} may still be running", state.pid)
        };
        return Guard::InProgress(why);
    }
    // Its nixcmd was killed but its step goes on, writing to the run's folder.
    if state.status == RunStatus::Running {
        let left = crate::process::left_behind(&state.run_id);
        if !left.is_empty() {
            let pids: Vec<String> = left.iter().map(|p| p.pid.to_string()).collect();
            return Guard::InProgress(format!(
                "its nixcmd was killed, but its step still runs (pid {})",
                pids.join(" ")
            ));
        }
    }
    Guard::None
}

#[derive(Serialize, Default)]
struct Report {
    dry_run: bool,
    /// Removed (or, in a dry run, to be removed), oldest last as `nixcmd runs` lists them.
    removed: Vec<Removed>,
    /// Bytes freed (or to be freed): disk blocks, as `du` counts them.
    bytes: u64,
    skipped: Vec<Skipped>,
    failed: Vec<FailedRemoval>,
    /// `.pruning-*` folders an interrupted prune left, removed now.
    leftovers: Vec<Leftover>,
    /// Runs the rules keep.
    kept: usize,
}

#[derive(Serialize)]
struct Removed {
    run_id: String,
    command: String,
    status: RunStatus,
    /// The status as `nixcmd runs` shows it ("stopped" for a killed run, dry runs marked).
    #[serde(skip)]
    label: String,
    started: String,
    bytes: u64,
}

#[derive(Serialize)]
struct Skipped {
    run_id: String,
    command: String,
    status: RunStatus,
    reason: String,
}

#[derive(Serialize)]
struct FailedRemoval {
    run_id: String,
    error: String,
    /// What was removed before the error (the rest stays, hidden, for the next prune).
    bytes_freed: u64,
}

#[derive(Serialize)]
struct Leftover {
    name: String,
    bytes: u64,
}

/// `nixcmd runs --prune`.
pub fn prune(cx: &Context, req: Request) -> Result<Exit, Failure> {
    if req.rules.keep.is_none() && req.rules.older_than.is_none() {
        return Err(Failure::usage(
            "`--prune` needs `--keep N` (newest runs kept per command) or `--older-than DURATION` (or both)",
        )
        .with_hint("e.g. `nixcmd runs --prune --keep 20 --older-than 30d --dry-run`"));
    }
    let dir = records::runs_dir();
    let mut report = Report {
        dry_run: req.dry_run,
        ..Default::default()
    };
    // One prune at a time: with the lock held, a `.pruning-*` folder is a leftover of a prune
    // that died, not one another prune is removing. Runs never take this lock.
    let held = match File::open(&dir) {
        Ok(f) => match f.try_lock() {
            Ok(()) => Some(f),
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Failure::new(
                    Exit::Failed,
                    "another `nixcmd runs --prune` is removing runs; nothing was removed",
                )
                .with_hint("try again when it ends (`pgrep -af 'nixcmd.*--prune'` shows it)"));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(cannot("lock", &dir, &e)),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(cannot("open", &dir, &e)),
    };
    let scan = if held.is_some() {
        scan(&dir, req.command)
    } else {
        Scan::default()
    };
    let candidates: Vec<Candidate> = scan
        .runs
        .iter()
        .map(|s| Candidate::from_state(s, guard(s)))
        .collect();
    let decisions = decide(&candidates, req.rules, jiff::Timestamp::now());
    for (state, decision) in scan.runs.iter().zip(decisions) {
        match decision {
            Decision::Keep => report.kept += 1,
            Decision::Skip(reason) => report.skipped.push(skipped(state, reason)),
            Decision::Remove => remove_run(&dir, state, req.dry_run, &mut report, guard),
        }
    }
    for name in scan.leftovers {
        let path = dir.join(&name);
        // A leftover whose run still reads: a prune died (or could not rename it back) after
        // hiding it. What guards a run guards it too, and `--command` narrows it as a run.
        if let Ok(state) = records::read_state(&path) {
            if req.command.is_some_and(|c| state.command != c) {
                continue;
            }
            let guard = guard(&state);
            if guard != Guard::None {
                restore(&dir, &path, &state, guard, req.dry_run, &mut report);
                continue;
            }
        }
        let bytes = disk_usage(&path);
        if !req.dry_run
            && let Err(e) = std::fs::remove_dir_all(&path)
        {
            report.failed.push(FailedRemoval {
                run_id: name,
                error: e.to_string(),
                bytes_freed: bytes.saturating_sub(disk_usage(&path)),
            });
            continue;
        }
        report.bytes += bytes;
        report.leftovers.push(Leftover { name, bytes });
    }
    print(cx, &report, req.json)?;
    Ok(if report.failed.is_empty() {
        Exit::Success
    } else {
        Exit::Failed
    })
}

/// The runs folder cannot be opened or locked: where, why, and what to do.
fn cannot(action: &str, dir: &Path, e: &std::io::Error) -> Failure {
    Failure::new(
        Exit::Failed,
        format!(
            "cannot {action} {}: {e}; nothing was removed",
            dir.display()
        ),
    )
    .with_hint(
        "run it as the user whose runs these are, or point XDG_STATE_HOME at their state folder",
    )
}

/// The runs folder's entries that prune may touch, newest run first.
#[derive(Default)]
struct Scan {
    runs: Vec<State>,
    leftovers: Vec<String>,
}

/// Real run folders only: a directory entry (a symlink is never followed, whatever it points
/// at) whose `state.json` names it. Anything else there is not ours and stays.
fn scan(dir: &Path, command: Option<&str>) -> Scan {
    let mut scan = Scan::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return scan;
    };
    for entry in entries.filter_map(Result::ok) {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        // `file_type` is the entry's own (lstat): a symlink is a symlink.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if name.starts_with(PRUNING) {
            scan.leftovers.push(name);
            continue;
        }
        if name.starts_with('.') {
            continue;
        }
        let Ok(state) = records::read_state(&entry.path()) else {
            continue;
        };
        if state.run_id != name || command.is_some_and(|c| state.command != c) {
            continue;
        }
        scan.runs.push(state);
    }
    scan.runs
        .sort_by(|a, b| b.started.cmp(&a.started).then(b.run_id.cmp(&a.run_id)));
    scan.leftovers.sort();
    scan
}

/// A hidden leftover whose run must stay: renamed back to its run id (unless a dry run, or
/// a folder of that name exists), and reported as skipped with the guard's reason.
fn restore(
    dir: &Path,
    hidden: &Path,
    state: &State,
    guard: Guard,
    dry_run: bool,
    report: &mut Report,
) {
    let reason = guard_reason(state, guard);
    let path = dir.join(&state.run_id);
    if !dry_run && (path.exists() || std::fs::rename(hidden, &path).is_err()) {
        report.failed.push(FailedRemoval {
            run_id: state.run_id.clone(),
            error: format!(
                "{reason}, but it is hidden at {} and could not be renamed back to {}",
                hidden.display(),
                path.display()
            ),
            bytes_freed: 0,
        });
        return;
    }
    report.skipped.push(skipped(state, reason));
}

/// Why a guarded run stays, in the words of the first look ([`decide`] with no rules).
fn guard_reason(state: &State, guard: Guard) -> String {
    match decide(
        &[Candidate::from_state(state, guard)],
        Rules::default(),
        jiff::Timestamp::now(),
    )
    .pop()
    {
        Some(Decision::Skip(reason)) => reason,
        _ => "taken up while it was being pruned".into(),
    }
}

fn skipped(state: &State, reason: String) -> Skipped {
    Skipped {
        run_id: state.run_id.clone(),
        command: state.command.clone(),
        status: state.status,
        reason,
    }
}

/// Renames the run's folder out of sight, checks once more that nothing took the run up in the
/// meantime (`recheck`: [`guard`], a parameter for the tests), then removes it. A dry run only
/// measures it.
fn remove_run(
    dir: &Path,
    state: &State,
    dry_run: bool,
    report: &mut Report,
    recheck: impl Fn(&State) -> Guard,
) {
    let path = dir.join(&state.run_id);
    let bytes = disk_usage(&path);
    let removed = Removed {
        run_id: state.run_id.clone(),
        command: state.command.clone(),
        status: state.status,
        // Guarded runs are not removed: one recorded `running` is one whose nixcmd is gone.
        label: crate::run::commands::status_label(state, state.status == RunStatus::Running),
        started: state.started.clone(),
        bytes,
    };
    if dry_run {
        report.bytes += bytes;
        report.removed.push(removed);
        return;
    }
    let hidden = dir.join(format!("{PRUNING}{}", state.run_id));
    if let Err(e) = std::fs::rename(&path, &hidden) {
        report.failed.push(FailedRemoval {
            run_id: state.run_id.clone(),
            error: format!("cannot rename it out of sight: {e}"),
            bytes_freed: 0,
        });
        return;
    }
    // A `resume` takes the lock before it opens the folder: one that took it before the rename
    // shows now; one that takes it later finds no run to open.
    let current = records::read_state(&hidden).ok();
    let current = current.as_ref().unwrap_or(state);
    let mut guard = recheck(current);
    if guard == Guard::None && records::lock_held(&current.command) {
        // Someone holds the command's lock. A `resume` of this very run takes it, then writes
        // its id into it: give it the moment between the two, and look again.
        std::thread::sleep(Duration::from_millis(50));
        guard = recheck(current);
    }
    if guard != Guard::None {
        let reason = guard_reason(current, guard);
        if let Err(e) = std::fs::rename(&hidden, &path) {
            report.failed.push(FailedRemoval {
                run_id: state.run_id.clone(),
                error: format!(
                    "{reason}, but it could not be renamed back from {}: {e}",
                    hidden.display()
                ),
                bytes_freed: 0,
            });
            return;
        }
        report.skipped.push(skipped(current, reason));
        return;
    }
    // `remove_dir_all` never follows a symlink a step left in its `state/` folder.
    match std::fs::remove_dir_all(&hidden) {
        Ok(()) => {
            report.bytes += bytes;
            report.removed.push(removed);
        }
        Err(e) => {
            let freed = bytes.saturating_sub(disk_usage(&hidden));
            report.bytes += freed;
            report.failed.push(FailedRemoval {
                run_id: state.run_id.clone(),
                error: format!("{e} (what is left is in {})", hidden.display()),
                bytes_freed: freed,
            });
        }
    }
}

/// Disk blocks used under `path` (as `du` counts them), symlinks not followed; what cannot be
/// read counts 0.
fn disk_usage(path: &Path) -> u64 {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => meta.blocks() * 512 + contents_usage(path),
        Ok(meta) => meta.blocks() * 512,
        Err(_) => 0,
    }
}

/// [`disk_usage`] of what is inside the folder `dir`. Entries are measured relative to the
/// open folder (`DirEntry::metadata`, no symlink followed), not by their whole path: a
/// thousand runs are tens of thousands of files.
fn contents_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| {
            let own = entry.metadata().map_or(0, |m| m.blocks() * 512);
            match entry.file_type() {
                Ok(t) if t.is_dir() => own + contents_usage(&entry.path()),
                _ => own,
            }
        })
        .sum()
}

/// `1.5 MiB`: sizes as people read them.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn print(cx: &Context, report: &Report, json: bool) -> Result<(), Failure> {
    if json {
        return cx.out.print_json(report).map_err(Failure::usage);
    }
    let p = cx.out.out;
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    let w = report
        .removed
        .iter()
        .map(|r| r.run_id.len())
        .chain(report.skipped.iter().map(|s| s.run_id.len()))
        .max()
        .unwrap_or(0);
    // At least the width of the usual labels, as `runs` sizes its column.
    let sw = report
        .removed
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0)
        .max(22);
    let mut s = String::new();
    for r in &report.removed {
        s.push_str(&format!(
            "{verb:<12}  {:<w$}  {:<sw$}  {}\n",
            r.run_id,
            r.label,
            human_bytes(r.bytes)
        ));
    }
    for l in &report.leftovers {
        s.push_str(&format!(
            "{verb:<12}  {}  (left by an interrupted prune)  {}\n",
            l.name,
            human_bytes(l.bytes)
        ));
    }
    for k in &report.skipped {
        s.push_str(&format!(
            "{}  {:<w$}  {}\n",
            p.yellow(&format!("{:<12}", "skipped")),
            k.run_id,
            k.reason
        ));
    }
    let n = report.removed.len();
    let runs = if n == 1 { "run" } else { "runs" };
    let mut summary = if report.dry_run {
        format!(
            "Would remove {n} {runs}, freeing {} (dry run: nothing was removed)",
            human_bytes(report.bytes)
        )
    } else {
        format!("Removed {n} {runs}, freed {}", human_bytes(report.bytes))
    };
    summary.push_str(&format!("; kept {}", report.kept));
    if !report.skipped.is_empty() {
        summary.push_str(&format!("; skipped {}", report.skipped.len()));
    }
    if !report.failed.is_empty() {
        summary.push_str(&format!("; {} could not be removed", report.failed.len()));
    }
    s.push_str(&p.bold(&format!("{summary}.")));
    s.push('\n');
    cx.out.print(&s);
    if !report.failed.is_empty() {
        let e = cx.out.err;
        let mut s = String::new();
        for f in &report.failed {
            s.push_str(&format!(
                "{} cannot remove {}: {}\n",
                e.red(&e.bold("error:")),
                f.run_id,
                f.error
            ));
        }
        cx.out.eprint(&s);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-11-29T12:00:00Z";

    fn run(command: &str, n: u32, hours_ago: i64, guard: Guard) -> Candidate {
        let now: jiff::Timestamp = NOW.parse().unwrap();
        Candidate {
            run_id: format!("{command}-{n:02}"),
            command: command.into(),
            started: format!("2026-11-{:02}T00:00:00.000Z", n),
            finished: Some(now - jiff::SignedDuration::from_hours(hours_ago)),
            guard,
        }
    }

    fn ids(runs: &[Candidate], decisions: &[Decision], want: &Decision) -> Vec<String> {
        runs.iter()
            .zip(decisions)
            .filter(|(_, d)| *d == want)
            .map(|(r, _)| r.run_id.clone())
            .collect()
    }

    fn removed(runs: &[Candidate], rules: Rules) -> Vec<String> {
        let d = decide(runs, rules, NOW.parse().unwrap());
        ids(runs, &d, &Decision::Remove)
    }

    fn keep(n: usize) -> Rules {
        Rules {
            keep: Some(n),
            older_than: None,
        }
    }

    fn older(hours: u64) -> Rules {
        Rules {
            keep: None,
            older_than: Some(Duration::from_secs(hours * 3600)),
        }
    }

    #[test]
    fn keep_counts_the_newest_of_each_command_whatever_the_input_order() {
        let runs = vec![
            run("a", 1, 50, Guard::None),
            run("b", 5, 10, Guard::None),
            run("a", 3, 30, Guard::None),
            run("b", 4, 20, Guard::None),
            run("a", 2, 40, Guard::None),
        ];
        assert_eq!(removed(&runs, keep(2)), ["a-01"]);
        assert_eq!(removed(&runs, keep(1)), ["a-01", "b-04", "a-02"]);
        assert_eq!(removed(&runs, keep(0)).len(), 5);
        assert!(removed(&runs, keep(3)).is_empty());
    }

    #[test]
    fn older_than_compares_the_finish_time_strictly() {
        let runs = vec![
            run("a", 1, 49, Guard::None),
            run("a", 2, 48, Guard::None),
            run("a", 3, 1, Guard::None),
            // A clock set back: finished "in the future", so not old.
            run("a", 4, -5, Guard::None),
        ];
        assert_eq!(removed(&runs, older(48)), ["a-01"]);
        assert_eq!(removed(&runs, older(0)), ["a-01", "a-02", "a-03"]);
    }

    #[test]
    fn both_rules_remove_only_what_both_select() {
        let runs = vec![
            run("a", 1, 100, Guard::None),
            run("a", 2, 90, Guard::None),
            run("a", 3, 2, Guard::None),
            run("a", 4, 1, Guard::None),
        ];
        let both = Rules {
            keep: Some(1),
            older_than: Some(Duration::from_secs(24 * 3600)),
        };
        assert_eq!(removed(&runs, both), ["a-01", "a-02"]);
    }

    #[test]
    fn guarded_runs_are_skipped_with_a_reason_only_when_the_rules_select_them() {
        let runs = vec![
            run(
                "a",
                1,
                100,
                Guard::InProgress("held by a-01 (pid 7)".into()),
            ),
            run(
                "a",
                2,
                90,
                Guard::AwaitingApproval {
                    step: Some("push".into()),
                },
            ),
            run("a", 3, 80, Guard::None),
            run("a", 4, 1, Guard::InProgress("x".into())),
        ];
        let d = decide(&runs, older(24), NOW.parse().unwrap());
        assert_eq!(
            d,
            [
                Decision::Skip("in progress: held by a-01 (pid 7)".into()),
                Decision::Skip(
                    "paused at the confirmation gate of step `push`; `nixcmd resume a-02` continues it"
                        .into()
                ),
                Decision::Remove,
                Decision::Keep,
            ]
        );
        // A guarded run still counts towards --keep: it is one of the newest.
        let d = decide(&runs, keep(1), NOW.parse().unwrap());
        assert_eq!(d[3], Decision::Keep);
        assert_eq!(ids(&runs, &d, &Decision::Remove), ["a-03"]);
    }

    #[test]
    fn an_unreadable_finish_time_is_skipped_by_age_but_not_by_count() {
        let mut r = run("a", 1, 100, Guard::None);
        r.finished = None;
        let runs = vec![r, run("a", 2, 1, Guard::None)];
        let d = decide(&runs, older(1), NOW.parse().unwrap());
        assert!(matches!(&d[0], Decision::Skip(why) if why.contains("cannot tell")));
        assert_eq!(removed(&runs, keep(1)), ["a-01"]);
    }

    #[test]
    fn finish_time_is_completed_else_updated() {
        let mut state: State = serde_json::from_value(state_json("a-1", "running")).unwrap();
        let c = Candidate::from_state(&state, Guard::None);
        assert_eq!(c.finished, Some("2026-11-02T00:00:00Z".parse().unwrap()));
        state.completed = Some("2026-11-03T00:00:00.000Z".into());
        let c = Candidate::from_state(&state, Guard::None);
        assert_eq!(c.finished, Some("2026-11-03T00:00:00Z".parse().unwrap()));
    }

    fn state_json(id: &str, status: &str) -> serde_json::Value {
        serde_json::json!({
            "version": 1, "run_id": id, "command": "a", "command_hash": "h",
            "command_source": "s", "args": [], "dir": "/", "dry_run": false,
            "status": status, "started": "2026-11-01T00:00:00.000Z",
            "updated": "2026-11-02T00:00:00.000Z", "total_steps": 1, "errors": [],
            "pid": 1, "compensations": [], "approvals": []
        })
    }

    /// A run taken up (`resume` took its lock) between the first look and the rename keeps
    /// its folder, under its own name; one nothing took up is gone, hidden name included.
    #[test]
    fn the_second_look_after_the_rename_can_still_keep_a_run() {
        let dir = tempfile::tempdir().unwrap();
        let value = state_json("a-1", "failed");
        let state: State = serde_json::from_value(value.clone()).unwrap();
        let run = dir.path().join("a-1");
        std::fs::create_dir_all(run.join("logs")).unwrap();
        std::fs::write(run.join("state.json"), value.to_string()).unwrap();
        let mut report = Report::default();
        let seen = std::cell::Cell::new(false);
        remove_run(dir.path(), &state, false, &mut report, |s: &State| {
            // The second look reads the renamed folder's state.json.
            assert!(dir.path().join(".pruning-a-1/state.json").is_file());
            seen.set(s.run_id == "a-1");
            Guard::InProgress("the lock of `a` is held by a-1 (pid 9)".into())
        });
        assert!(seen.get());
        assert!(report.removed.is_empty() && report.failed.is_empty());
        assert_eq!(
            report.skipped[0].reason,
            "in progress: the lock of `a` is held by a-1 (pid 9)"
        );
        assert!(run.join("state.json").is_file(), "renamed back");
        assert!(!dir.path().join(".pruning-a-1").exists());

        let mut report = Report::default();
        remove_run(dir.path(), &state, true, &mut report, |_: &State| {
            Guard::None
        });
        assert!(run.is_dir(), "a dry run removes nothing");
        assert_eq!(report.removed.len(), 1);
        let mut report = Report::default();
        remove_run(dir.path(), &state, false, &mut report, |_: &State| {
            Guard::None
        });
        assert_eq!(report.removed[0].run_id, "a-1");
        assert!(report.bytes > 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn sizes_read_as_people_read_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5_300_000_000), "4.9 GiB");
    }
}
