//! `nixcmd runs --prune`: which run folders go (`--keep`, `--older-than`, `--command`), what a
//! dry run prints, and what is never touched (a run in progress, a run paused at a gate,
//! anything in the runs folder that is not a run folder, the target of a symlink).

use crate::run_support::{
    LIMIT, Spawned, WAIT_FOR_GO, only_run, paused, project_file, run_dirs, run_id, wait_until,
};
use crate::support::Test;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An RFC 3339 time `ago` before now, as `state.json` writes it.
fn ago(ago: Duration) -> String {
    let t = jiff::Timestamp::now() - jiff::SignedDuration::try_from(ago).unwrap();
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

/// Writes a finished run folder as a run leaves it: `state.json` and a log.
fn fake_run(
    root: &Path,
    command: &str,
    id: &str,
    status: &str,
    started: Duration,
    ended: Duration,
) {
    let dir = runs(root).join(id);
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let state = json!({
        "version": 1, "run_id": id, "command": command, "command_hash": "h",
        "command_source": "x.md", "args": [], "dir": "/", "dry_run": false,
        "status": status, "started": ago(started), "updated": ago(ended),
        "completed": ago(ended), "total_steps": 1, "errors": [],
        // No such process: a `running` run here is one whose nixcmd was killed.
        "pid": 999_999_999u32, "compensations": [], "approvals": []
    });
    std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
    std::fs::write(dir.join("logs/step.log"), "x".repeat(10_000)).unwrap();
}

fn runs(root: &Path) -> PathBuf {
    root.join("state/nixcmd/runs")
}

fn names(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(runs(root))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// The run ids of the lines of `stdout` that start with `verb`.
fn listed(stdout: &str, verb: &str) -> Vec<String> {
    let mut ids: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix(verb))
        .filter_map(|rest| rest.split_whitespace().next().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// `a` has runs a1 (oldest) … a4, `b` has b1, b2; run N of each started N hours ago reversed.
fn six_runs() -> Test {
    let test = Test::new();
    for (cmd, n) in [("a", 4), ("b", 2)] {
        for i in 1..=n {
            let age = hours(10 - i);
            fake_run(
                test.root(),
                cmd,
                &format!("{cmd}{i}"),
                "succeeded",
                age,
                age - Duration::from_secs(60),
            );
        }
    }
    test
}

#[test]
fn keep_n_keeps_the_newest_runs_of_each_command() {
    let out = six_runs().args(["runs", "--prune", "--keep", "2"]).run();
    out.assert_status(0);
    let root = out.root.path().to_path_buf();
    assert_eq!(names(&root), ["a3", "a4", "b1", "b2"]);
    assert_eq!(listed(&out.stdout, "removed "), ["a1", "a2"]);
    let summary = out.stdout.lines().last().unwrap();
    assert!(
        summary.starts_with("Removed 2 runs, freed ") && summary.ends_with(" KiB; kept 4."),
        "{summary}"
    );
    // Narrowed to one command, the others are not even counted.
    let out = out
        .then()
        .args(["runs", "--prune", "--keep", "1", "--command", "b"])
        .run();
    out.assert_status(0);
    assert_eq!(names(&root), ["a3", "a4", "b2"]);
    assert!(out.stdout.ends_with("; kept 1.\n"), "{}", out.stdout);
    // What remains is what `runs` lists.
    let out = out.then().args(["runs", "--format", "json"]).run();
    let listed: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(listed.len(), 3);
}

#[test]
fn older_than_removes_runs_that_finished_longer_ago_including_failed_and_stopped_ones() {
    let test = Test::new();
    let root = test.root().to_path_buf();
    fake_run(&root, "a", "old-ok", "succeeded", hours(80), hours(79));
    fake_run(&root, "a", "old-failed", "failed", hours(70), hours(69));
    // Killed mid-way long ago (`resume` could take it up): history, pruned like the rest.
    fake_run(&root, "a", "old-stopped", "running", hours(60), hours(59));
    // Started long ago, but finished only an hour ago.
    fake_run(&root, "a", "long-run", "succeeded", hours(90), hours(1));
    fake_run(&root, "b", "new", "succeeded", hours(2), hours(1));
    let out = test.args(["runs", "--prune", "--older-than", "2d"]).run();
    out.assert_status(0);
    assert_eq!(names(&root), ["long-run", "new"]);
    assert_eq!(
        listed(&out.stdout, "removed "),
        ["old-failed", "old-ok", "old-stopped"]
    );
    // Both rules: only what both select. All three runs finished over 30 minutes ago, but
    // `--keep 1` keeps the newest of each command: `long-run` (a's only one) and `new`. Were
    // the rules or'ed, all three would go.
    fake_run(&root, "b", "b-old", "succeeded", hours(50), hours(49));
    let out = out
        .then()
        .args(["runs", "--prune", "--older-than", "30m", "--keep", "1"])
        .run();
    out.assert_status(0);
    assert_eq!(names(&root), ["long-run", "new"]);
    assert_eq!(listed(&out.stdout, "removed "), ["b-old"]);
}

#[test]
fn a_dry_run_removes_nothing_and_lists_what_the_real_run_removes() {
    let dry = six_runs()
        .args(["runs", "--prune", "--keep", "1", "--dry-run"])
        .run();
    dry.assert_status(0);
    let root = dry.root.path().to_path_buf();
    assert_eq!(names(&root), ["a1", "a2", "a3", "a4", "b1", "b2"]);
    let last = dry.stdout.lines().last().unwrap();
    assert!(
        last.starts_with("Would remove 4 runs, freeing ")
            && last.ends_with(" (dry run: nothing was removed); kept 2."),
        "{last}"
    );
    let dry_stdout = dry.stdout.clone();
    let real = dry.then().args(["runs", "--prune", "--keep", "1"]).run();
    real.assert_status(0);
    assert_eq!(names(&root), ["a4", "b2"]);
    assert_eq!(listed(&real.stdout, "removed "), ["a1", "a2", "a3", "b1"]);
    // Line for line the same list, only the verb differs.
    let body = |s: &str, verb: &str| -> Vec<String> {
        s.lines()
            .filter_map(|l| l.strip_prefix(verb).map(|r| r.trim_start().to_string()))
            .collect()
    };
    assert_eq!(
        body(&dry_stdout, "would remove"),
        body(&real.stdout, "removed")
    );
}

#[test]
fn json_output_has_exactly_these_fields() {
    let out = six_runs()
        .args(["runs", "--prune", "--keep", "3", "--format", "json"])
        .run();
    out.assert_status(0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&v),
        [
            "bytes",
            "dry_run",
            "failed",
            "kept",
            "leftovers",
            "removed",
            "skipped"
        ]
    );
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["kept"], 5);
    assert_eq!(v["skipped"], json!([]));
    assert_eq!(v["failed"], json!([]));
    assert_eq!(v["leftovers"], json!([]));
    let removed = v["removed"].as_array().unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(
        keys(&removed[0]),
        ["bytes", "command", "run_id", "started", "status"]
    );
    assert_eq!(removed[0]["run_id"], "a1");
    assert_eq!(removed[0]["command"], "a");
    assert_eq!(removed[0]["status"], "succeeded");
    let bytes = removed[0]["bytes"].as_u64().unwrap();
    assert!(bytes >= 10_000, "{bytes}");
    assert_eq!(v["bytes"].as_u64(), Some(bytes));
}

#[test]
fn prune_without_a_rule_is_a_usage_error_that_says_what_to_add() {
    let out = six_runs().args(["runs", "--prune"]).run();
    out.assert_status(2);
    assert_eq!(
        out.stderr,
        "error: `--prune` needs `--keep N` (newest runs kept per command) or \
         `--older-than DURATION` (or both)\n  \
         hint: e.g. `nixcmd runs --prune --keep 20 --older-than 30d --dry-run`\n"
    );
    assert_eq!(names(out.root.path()).len(), 6);
    // The rules without --prune are clap's usage errors; `runs` alone still lists.
    let out = out.then().args(["runs", "--keep", "1"]).run();
    out.assert_status(2);
    assert_eq!(
        out.stderr,
        "error: the following required arguments were not provided:\n  --prune\n\n\
         Usage: nixcmd runs --prune --keep <N>\n\nFor more information, try '--help'.\n"
    );
    let out = out
        .then()
        .args(["runs", "--prune", "--older-than", "3"])
        .run();
    out.assert_status(2);
    assert_eq!(
        out.stderr,
        "error: invalid value '3' for '--older-than <DURATION>': `3` has no unit (write 3m, \
         3h or 3d)\n\nFor more information, try '--help'.\n"
    );
    assert_eq!(names(out.root.path()).len(), 6);
}

#[test]
fn a_run_in_progress_is_skipped_with_the_holder_of_its_lock() {
    let first = Spawned::start(
        Test::new()
            .runbook("wait.md", WAIT_FOR_GO)
            .args(["run", "wait"]),
    );
    let root = first.root().to_path_buf();
    wait_until("the run's step", LIMIT, || {
        project_file(&root, "trace") == "waiting\n"
    });
    let id = run_id(&only_run(&root));
    let out = Test::sharing_state(&root)
        .args(["runs", "--prune", "--keep", "0", "--format", "json"])
        .run();
    out.assert_status(0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["removed"], json!([]));
    assert_eq!(
        v["skipped"],
        json!([{
            "run_id": id,
            "command": "wait",
            "status": "running",
            "reason": format!(
                "in progress: the lock of `wait` is held by {id} (pid {})",
                first.pid()
            ),
        }])
    );
    assert_eq!(run_id(&only_run(&root)), id);
    std::fs::write(root.join("project/go"), "").unwrap();
    first.wait().assert_status(0);
}

const GATED: &str = r#"---
description: A gated step
nixcmd: {}
---
# Gated

## Steps
### Push
```bash {id=push confirm="Push it?"}
echo push >> trace
```
"#;

#[test]
fn a_run_paused_at_a_gate_is_skipped_and_can_still_be_resumed() {
    let (out, root, id) = paused(
        Test::new()
            .runbook("gated.md", GATED)
            .args(["run", "gated"]),
    );
    let out = out.then().args(["runs", "--prune", "--keep", "0"]).run();
    out.assert_status(0);
    assert_eq!(
        out.stdout,
        format!(
            "skipped       {id}  paused at the confirmation gate of step `push`; \
             `nixcmd resume {id}` continues it\n\
             Removed 0 runs, freed 0 B; kept 0; skipped 1.\n"
        )
    );
    let out = out.then().args(["resume", &id, "--approve", "push"]).run();
    out.assert_status(0);
    assert_eq!(project_file(&root, "trace"), "push\n");
    // Finished now: history like any other.
    let out = out.then().args(["runs", "--prune", "--keep", "0"]).run();
    out.assert_status(0);
    assert!(run_dirs(&root).is_empty());
}

#[test]
fn only_run_folders_are_removed_and_symlinks_are_never_followed() {
    let test = six_runs();
    let root = test.root().to_path_buf();
    let runs = runs(&root);
    // Outside the runs folder: something that looks like a run, reached by a symlink.
    fake_run(&root, "a", "elsewhere", "succeeded", hours(99), hours(99));
    let outside = root.join("outside");
    std::fs::rename(runs.join("elsewhere"), &outside).unwrap();
    std::os::unix::fs::symlink(&outside, runs.join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(runs.join("a1"), runs.join("a1-link")).unwrap();
    std::fs::create_dir(runs.join("junk")).unwrap();
    std::fs::write(runs.join("junk/notes"), "mine").unwrap();
    std::fs::write(runs.join("stray-file"), "mine").unwrap();
    // A folder whose state.json names another run is not that run's folder.
    fake_run(&root, "a", "a0", "succeeded", hours(99), hours(99));
    std::fs::rename(runs.join("a0"), runs.join("misnamed")).unwrap();
    std::fs::create_dir(runs.join(".hidden")).unwrap();
    let out = test
        .args(["runs", "--prune", "--keep", "0", "--format", "json"])
        .run();
    out.assert_status(0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut removed: Vec<&str> = v["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    removed.sort();
    assert_eq!(removed, ["a1", "a2", "a3", "a4", "b1", "b2"]);
    assert_eq!(
        names(&root),
        [
            ".hidden",
            "a1-link",
            "elsewhere",
            "junk",
            "misnamed",
            "stray-file"
        ]
    );
    assert!(outside.join("state.json").is_file());
    assert!(outside.join("logs/step.log").is_file());
    assert_eq!(
        std::fs::read_to_string(runs.join("junk/notes")).unwrap(),
        "mine"
    );
}

#[test]
fn a_folder_being_pruned_is_not_listed_and_a_leftover_is_finished() {
    let test = six_runs();
    let root = test.root().to_path_buf();
    // What a prune killed between the rename and the end of the removal leaves.
    std::fs::rename(runs(&root).join("a1"), runs(&root).join(".pruning-a1")).unwrap();
    let out = test.args(["runs", "--format", "json"]).run();
    out.assert_status(0);
    let listed: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    let ids: Vec<&str> = listed.iter().filter_map(|r| r["run_id"].as_str()).collect();
    assert!(ids.len() == 5 && !ids.contains(&"a1"), "{listed:?}");
    let out = out.then().args(["log", "a1"]).run();
    out.assert_status(2);
    assert_eq!(out.stderr, "error: no run `a1` (see `nixcmd runs`)\n");
    let out = out
        .then()
        .args(["runs", "--prune", "--keep", "5", "--format", "json"])
        .run();
    out.assert_status(0);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["removed"], json!([]));
    let leftovers = v["leftovers"].as_array().expect("leftovers");
    assert_eq!(leftovers.len(), 1, "{v}");
    assert_eq!(leftovers[0]["name"], ".pruning-a1");
    assert_eq!(names(&root), ["a2", "a3", "a4", "b1", "b2"]);
}

/// A folder that cannot be removed is reported, the others still go, and the exit status is 1.
/// As root (who may remove anything) nixcmd runs as `nobody`, and the blocking folder is
/// root's; otherwise the blocking folder is read-only.
#[test]
fn a_folder_that_cannot_be_removed_does_not_stop_the_others() {
    use std::os::unix::fs::PermissionsExt;
    let test = six_runs();
    let root = test.root().to_path_buf();
    let blocked = runs(&root).join("a1/state");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("kept"), "x").unwrap();
    // SAFETY: `geteuid` has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    // The test's folder, kept until the end when the command takes it.
    let mut _kept = None;
    let out = if as_root {
        let Some(setpriv) = crate::support::which("setpriv") else {
            crate::support::skip("needs setpriv (util-linux) to run as nobody");
            return;
        };
        chown_tree(&root, &blocked);
        std::process::Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_nixcmd"))
            .args(["runs", "--prune", "--keep", "2", "--format", "json"])
            .env("XDG_STATE_HOME", root.join("state"))
            .env("HOME", root.join("home"))
            .current_dir(&root)
            .output()
            .unwrap()
    } else {
        std::fs::set_permissions(&blocked, std::fs::Permissions::from_mode(0o500)).unwrap();
        let (mut cmd, dir) = test
            .args(["runs", "--prune", "--keep", "2", "--format", "json"])
            .into_command();
        _kept = Some(dir);
        let out = cmd.output().unwrap();
        std::fs::set_permissions(
            runs(&root).join(".pruning-a1/state"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        out
    };
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"][0]["run_id"], "a2");
    assert_eq!(v["failed"][0]["run_id"], "a1");
    let error = v["failed"][0]["error"].as_str().unwrap();
    assert!(error.contains("Permission denied"), "{error}");
    // Out of sight, for the next prune to finish.
    assert_eq!(names(&root), [".pruning-a1", "a3", "a4", "b1", "b2"]);
}

/// Gives the test's folders to `nobody`, except `blocked`, which stays root's.
fn chown_tree(root: &Path, blocked: &Path) {
    fn walk(path: &Path, blocked: &Path) {
        if path == blocked {
            return;
        }
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: lchown(2) on a path we own, given as a NUL-terminated string.
        assert_eq!(unsafe { libc::lchown(c.as_ptr(), 65534, 65534) }, 0);
        if path.is_dir() && !path.is_symlink() {
            for e in std::fs::read_dir(path).unwrap() {
                walk(&e.unwrap().path(), blocked);
            }
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    walk(&root.join("state"), blocked);
    walk(&root.join("home"), blocked);
}

/// A run whose nixcmd was killed while its step goes on is still being written to: it stays,
/// named with the step's processes. Once they end it goes, listed as `runs` lists it
/// ("stopped", not "running").
#[test]
fn a_killed_run_whose_step_still_runs_stays_until_the_step_ends() {
    let test = Test::new();
    let root = test.root().to_path_buf();
    fake_run(&root, "a", "killed", "running", hours(5), hours(4));
    let mut step = std::process::Command::new("sleep")
        .arg("60")
        .env("NIXCMD_STEP_TOKEN", "killed/deploy/1")
        .spawn()
        .expect("spawn the orphaned step");
    let out = test.args(["runs", "--prune", "--older-than", "1h"]).run();
    out.assert_status(0);
    assert_eq!(names(&root), ["killed"]);
    let skipped = out
        .stdout
        .lines()
        .find(|l| l.contains("killed"))
        .unwrap_or_else(|| panic!("no line for the run:\n{}", out.stdout))
        .to_string();
    assert_eq!(
        skipped.split_whitespace().collect::<Vec<_>>().join(" "),
        format!(
            "skipped killed in progress: its nixcmd was killed, but its step still runs (pid {})",
            step.id()
        )
    );
    let _ = step.kill();
    let _ = step.wait();
    let out = out
        .then()
        .args(["runs", "--prune", "--older-than", "1h"])
        .run();
    out.assert_status(0);
    assert_eq!(names(&root), Vec::<String>::new());
    let removed = out.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        removed.split_whitespace().take(3).collect::<Vec<_>>(),
        ["removed", "killed", "stopped"],
        "{}",
        out.stdout
    );
}

/// A folder a prune hid (`.pruning-<id>`) and could not finish with, whose run is paused at a
/// gate (taken up meanwhile), is renamed back instead of removed.
#[test]
fn a_hidden_leftover_of_a_paused_run_is_renamed_back() {
    let test = Test::new();
    let root = test.root().to_path_buf();
    fake_run(
        &root,
        "a",
        "paused",
        "awaiting_confirmation",
        hours(5),
        hours(4),
    );
    std::fs::rename(
        runs(&root).join("paused"),
        runs(&root).join(".pruning-paused"),
    )
    .unwrap();
    let out = test.args(["runs", "--prune", "--keep", "100"]).run();
    out.assert_status(0);
    assert_eq!(names(&root), ["paused"]);
    assert_eq!(listed(&out.stdout, "removed "), Vec::<String>::new());
    assert!(
        out.stdout
            .contains("paused at the confirmation gate; `nixcmd resume paused` continues it"),
        "{}",
        out.stdout
    );
    assert_eq!(
        std::fs::read_to_string(runs(&root).join("paused/logs/step.log"))
            .expect("its log")
            .len(),
        10_000
    );
}
