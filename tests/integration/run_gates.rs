//! Running runbooks: order, gates and rollback (DESIGN.md §2, §3). Each test runs the real
//! binary on a small runbook whose blocks append their id to a `trace` file in the project,
//! then asserts the exit code, the trace and the whole output.

use crate::run_support::{
    Spawned, events, normalized, only_run, paused, project_file, read_json, run_dirs, run_id,
    run_with_tty, statuses, wait_until,
};
use crate::support::Test;
use std::time::Duration;

/// Five steps, each with a compensation except the last two; the third fails.
const FIVE: &str = r#"---
description: Five steps; the third fails
nixcmd: {}
---
# Five

## Steps
### One
```bash {id=one rollback=undo-one}
echo one >> trace
```
### Two
```bash {id=two rollback=undo-two}
echo two >> trace
```
### Three
```bash {id=three rollback=undo-three}
echo three >> trace
echo "error: no space left on device" >&2
exit 7
```
### Four
```bash {id=four}
echo four >> trace
```
### Five
```bash {id=five}
echo five >> trace
```

## Rollback
### undo-one
```bash
echo undo-one >> trace
```
### undo-two
```bash
echo undo-two >> trace
```
### undo-three
```bash
echo undo-three >> trace
```

## Troubleshooting
### No space left on device
Free space with `nix-collect-garbage -d`, then run again.
"#;

#[test]
fn failing_step_stops_the_run_and_compensations_run_newest_first() {
    let out = Test::new()
        .runbook("five.md", FIVE)
        .args(["run", "five"])
        .run();
    out.assert_status(1);
    assert_eq!(
        project_file(out.root.path(), "trace"),
        "one\ntwo\nthree\nundo-three\nundo-two\nundo-one\n"
    );
    let run = only_run(out.root.path());
    assert_eq!(
        statuses(&run),
        [
            ("one", "succeeded"),
            ("two", "succeeded"),
            ("three", "failed"),
            ("four", "pending"),
            ("five", "pending"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let state = read_json(&run.join("state.json"));
    assert_eq!(state["status"], "failed");
    assert_eq!(state["exit_code"], 1);
    insta::assert_snapshot!(normalized(&out));
}

#[test]
fn on_fail_continue_is_a_warning_and_the_run_succeeds() {
    let out = Test::new()
        .runbook(
            "lenient.md",
            r#"---
description: A non-critical step fails
nixcmd: {}
---
# Lenient

## Steps
### Before
```bash {id=before}
echo before >> trace
```
### Optional
```bash {id=optional on-fail=continue}
echo optional >> trace
exit 3
```
### After
```bash {id=after}
echo after >> trace
```
"#,
        )
        .args(["run", "lenient"])
        .run();
    out.assert_status(0);
    assert_eq!(
        project_file(out.root.path(), "trace"),
        "before\noptional\nafter\n"
    );
    insta::assert_snapshot!(normalized(&out));
}

#[test]
fn failing_prerequisite_exits_4_and_no_step_runs() {
    let out = Test::new()
        .runbook(
            "guarded.md",
            r#"---
description: Needs a file
nixcmd: {}
---
# Guarded

## Prerequisites
```bash {id=has-config}
echo has-config >> trace
test -e config.nix
```

## Steps
### Change
```bash {id=change rollback=undo}
echo change >> trace
```

## Rollback
### undo
```bash
echo undo >> trace
```
"#,
        )
        .args(["run", "guarded"])
        .run();
    out.assert_status(4);
    assert_eq!(project_file(out.root.path(), "trace"), "has-config\n");
    let run = only_run(out.root.path());
    assert_eq!(
        statuses(&run),
        [("has-config", "failed"), ("change", "pending")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    insta::assert_snapshot!(normalized(&out));
}

/// A step that needs confirmation between two that do not.
const GATED: &str = r#"---
description: Push needs a yes
nixcmd: {}
---
# Gated

## Steps
### Prepare
```bash {id=prepare rollback=unprepare}
echo prepare >> trace
```
### Push
```bash {id=push confirm="Push the new lock to origin?"}
echo push >> trace
```
### After
```bash {id=after}
echo after >> trace
```

## Rollback
### unprepare
```bash
echo unprepare >> trace
```
"#;

#[test]
fn confirm_without_a_terminal_pauses_and_resume_approve_finishes() {
    let (out, root, id) = paused(
        Test::new()
            .runbook("gated.md", GATED)
            .args(["run", "gated", "--format", "json"]),
    );
    assert_eq!(project_file(&root, "trace"), "prepare\n");
    let run = only_run(&root);
    let resume = format!("nixcmd resume {id} --approve push");
    let stream = events(&out.stdout);
    let last = stream.last().expect("events");
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["status"], "awaiting_confirmation");
    assert_eq!(last["exit_code"], 3);
    assert_eq!(last["resume"], resume.as_str());
    let gate = &stream[stream.len() - 2];
    assert_eq!(gate["type"], "gate");
    assert_eq!(gate["step_id"], "push");
    assert_eq!(gate["message"], "Push the new lock to origin?");
    assert_eq!(gate["resume"], resume.as_str());
    assert!(
        !stream
            .iter()
            .any(|e| e["type"] == "step_started" && e["step_id"] == "push"),
        "the gated step must not start"
    );
    assert_eq!(
        read_json(&run.join("state.json"))["status"],
        "awaiting_confirmation"
    );

    let out = out.then().args(["resume", &id, "--approve", "push"]).run();
    out.assert_status(0);
    assert_eq!(project_file(&root, "trace"), "prepare\npush\nafter\n");
    let state = read_json(&run.join("state.json"));
    assert_eq!(state["status"], "succeeded");
    assert_eq!(state["approvals"][0]["step_id"], "push");
    assert_eq!(state["approvals"][0]["channel"], "resume");
    insta::assert_snapshot!(normalized(&out));
}

/// `GATED` with an unbound rollback block and an `always` block (a lock to release).
fn gated_with_cleanup() -> String {
    GATED.replace(
        "### After",
        "### Unlock\n```bash {id=unlock always}\necho unlock >> trace\n```\n### After",
    ) + "### notify\n```bash\necho notify >> trace\n```\n"
}

/// A run paused at a gate in CI could only be resumed: its rollback and `always` blocks
/// never ran when nobody meant to go on. `--decline` answers the gate "no", as at a prompt.
#[test]
fn resume_decline_rolls_back_and_ends_declined() {
    let out = Test::new()
        .runbook("gated.md", &gated_with_cleanup())
        .args(["run", "gated"])
        .run();
    out.assert_status(3);
    let root = out.root.path().to_path_buf();
    assert_eq!(project_file(&root, "trace"), "prepare\n");
    let run = only_run(&root);
    let id = run_id(&run);
    assert!(
        out.stdout.contains(&format!(
            "  or decline and roll back with: nixcmd resume {id} --decline\n"
        )),
        "{}",
        out.stdout
    );

    let out = out.then().args(["resume", &id, "--decline"]).run();
    out.assert_status(3);
    // Compensations newest first, unbound rollback blocks, then `always` blocks; nothing of
    // the gated step or after it.
    assert_eq!(
        project_file(&root, "trace"),
        "prepare\nunprepare\nnotify\nunlock\n"
    );
    let state = read_json(&run.join("state.json"));
    assert_eq!(state["status"], "declined");
    assert_eq!(state["exit_code"], 3);
    let approvals = state["approvals"].as_array().expect("approvals");
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["step_id"], "push");
    assert_eq!(approvals[0]["channel"], "cli");
    assert_eq!(approvals[0]["declined"], true);
    assert_eq!(
        statuses(&run),
        [
            ("prepare", "succeeded"),
            ("push", "declined"),
            ("unlock", "succeeded"),
            ("after", "pending"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    insta::assert_snapshot!(normalized(&out));

    let out = out.then().args(["runs"]).run();
    out.assert_status(0);
    let row = out
        .stdout
        .lines()
        .find(|l| l.contains(&id))
        .expect("the run's row");
    assert!(row.contains(" declined "), "{row}");

    // It ended: nothing is left to decline or resume.
    let out = out.then().args(["resume", &id, "--decline"]).run();
    out.assert_status(2);
    assert_eq!(
        out.stderr.replace(&id, "[RUN]"),
        "error: run [RUN] already ended (declined); nothing to resume\n  \
         hint: start a new run with `nixcmd /gated`\n"
    );
    assert_eq!(
        project_file(&root, "trace"),
        "prepare\nunprepare\nnotify\nunlock\n"
    );
}

const GATED_FIRST: &str = r#"---
description: the first step asks
nixcmd: {}
---
# Switch
## Steps
### Switch
```bash {id=switch confirm="Switch?"}
echo switch >> trace
```
### Clean up
```bash {id=cleanup always}
echo cleanup >> trace
```
## Rollback
### Previous generation
```bash {id=previous-generation}
echo previous-generation >> trace
```
"#;

/// A "no" at the first gate, before anything ran: nothing to roll back. The unbound rollback
/// blocks (a switch to the previous generation) used to run, changing a machine the run had
/// not touched.
#[test]
fn declining_the_first_gate_rolls_nothing_back() {
    let (out, root, id) = paused(
        Test::new()
            .runbook("switch.md", GATED_FIRST)
            .args(["run", "switch"]),
    );
    let out = out
        .then()
        .args(["resume", &id, "--decline", "--format", "json"])
        .run();
    out.assert_status(3);
    assert_eq!(project_file(&root, "trace"), "");
    let stream = events(&out.stdout);
    assert!(
        !stream.iter().any(|e| e["type"] == "rollback_started"),
        "{}",
        out.stdout
    );
    let last = stream.last().expect("events");
    assert_eq!(
        (&last["status"], &last["exit_code"]),
        (&"declined".into(), &3.into())
    );
    assert_eq!(last["left_to_do"], serde_json::json!([]));
    assert_eq!(
        statuses(&only_run(&root)),
        [("switch", "declined"), ("cleanup", "pending")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
}

/// `--decline` with `--approve` or `--yes` is a contradiction; with a run that is not paused
/// at a gate there is nothing to decline: both are refused and nothing runs.
#[test]
fn resume_decline_is_refused_with_an_approval_or_without_a_paused_gate() {
    let (mut out, root, id) = paused(
        Test::new()
            .runbook("gated.md", GATED)
            .args(["run", "gated"]),
    );
    for flag in [["--approve", "push"].as_slice(), ["--yes"].as_slice()] {
        out = out
            .then()
            .args(["resume", &id, "--decline"])
            .args(flag)
            .run();
        out.assert_status(2);
        assert!(
            out.stderr.contains("cannot be used with"),
            "{flag:?}: {}",
            out.stderr
        );
    }
    assert_eq!(project_file(&root, "trace"), "prepare\n");

    let running = Spawned::start(
        Test::new()
            .runbook("wait.md", crate::run_support::WAIT_FOR_GO)
            .args(["run", "wait"]),
    );
    let wroot = running.root().to_path_buf();
    wait_until("the waiting step", Duration::from_secs(30), || {
        project_file(&wroot, "trace") == "waiting\n"
    });
    let waiting = run_id(&only_run(&wroot));
    let refused = Test::sharing_state(&wroot)
        .args(["resume", &waiting, "--decline"])
        .run();
    refused.assert_status(2);
    assert_eq!(
        refused.stderr.replace(&waiting, "[RUN]"),
        "error: run [RUN] is not paused at a confirmation (running); nothing to decline\n  \
         hint: `nixcmd resume [RUN]` continues it; `--decline` is for a run that ended with \
         exit 3 (paused for confirmation)\n"
    );
    std::fs::write(wroot.join("project/go"), "").expect("let the run finish");
    let finished = running.wait();
    finished.assert_status(0);
    assert_eq!(project_file(&wroot, "trace"), "waiting\ndone\n");
}

/// A paused run whose command changed is refused; `--force` resumes it. A step added by the
/// change ran but was never recorded (progress.json kept the steps of the run's start), so
/// a `kill -9` after it would run it again on resume, and `runs` and `stats` missed it.
#[test]
fn resume_force_runs_and_records_the_steps_of_the_changed_file() {
    let (out, root, id) = paused(
        Test::new()
            .runbook("gated.md", GATED)
            .args(["run", "gated"]),
    );
    let run = only_run(&root);
    let changed = GATED.replace(
        "### After",
        "### Tag\n```bash {id=tag}\necho tag >> trace\n```\n### After",
    );
    std::fs::write(root.join("project/.nixcmd/commands/gated.md"), changed).expect("edit");

    let out = out.then().args(["resume", &id, "--approve", "push"]).run();
    out.assert_status(2);
    assert_eq!(
        out.stderr,
        format!(
            "error: the command `gated` changed since run {id} started; resuming could run \
             steps that were never planned\n  hint: review the change, then `nixcmd resume \
             {id} --force --approve push` to resume anyway\n"
        )
    );
    assert_eq!(project_file(&root, "trace"), "prepare\n");
    // Declining, the hint says `--force --decline`: `--force --approve push` would run the
    // step being declined.
    let out = out.then().args(["resume", &id, "--decline"]).run();
    out.assert_status(2);
    assert!(
        out.stderr.ends_with(&format!(
            "hint: review the change, then `nixcmd resume {id} --force --decline` to resume \
             anyway\n"
        )),
        "{}",
        out.stderr
    );

    let out = out
        .then()
        .args(["resume", &id, "--approve", "push", "--force"])
        .run();
    out.assert_status(0);
    assert_eq!(project_file(&root, "trace"), "prepare\npush\ntag\nafter\n");
    assert_eq!(
        statuses(&run),
        [
            ("prepare", "succeeded"),
            ("push", "succeeded"),
            ("tag", "succeeded"),
            ("after", "succeeded"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let state = read_json(&run.join("state.json"));
    assert_eq!(state["total_steps"], 4);
    assert_eq!(state["status"], "succeeded");
}

/// A run recorded by a newer nixcmd (a higher records `version`) is not resumed here: this
/// one would rewrite its records without what it does not know of them.
#[test]
fn a_run_recorded_by_a_newer_nixcmd_is_not_resumed() {
    let (out, root, id) = paused(
        Test::new()
            .runbook("gated.md", GATED)
            .args(["run", "gated"]),
    );
    let state_path = only_run(&root).join("state.json");
    let mut state = read_json(&state_path);
    state["version"] = 2.into();
    state["from_the_future"] = "kept".into();
    let text = serde_json::to_string_pretty(&state).unwrap();
    std::fs::write(&state_path, &text).expect("write state.json");
    let refused = out.then().args(["resume", &id, "--approve", "push"]).run();
    refused.assert_status(2);
    assert!(
        refused.stderr.starts_with(&format!(
            "error: run {id} was recorded by a newer nixcmd (records version 2; this one writes 1)"
        )),
        "{}",
        refused.stderr
    );
    assert_eq!(std::fs::read_to_string(&state_path).unwrap(), text);
    assert_eq!(project_file(&root, "trace"), "prepare\n");
}

/// `log RUN` of a run paused before any step ran printed nothing (exit 0): it says so, and
/// how the run goes on.
#[test]
fn log_of_a_run_paused_before_any_step_says_so() {
    let (out, _, id) = paused(
        Test::new()
            .runbook("switch.md", GATED_FIRST)
            .args(["run", "switch"]),
    );
    let logged = out.then().args(["log", &id]).run();
    logged.assert_status(0);
    assert_eq!(logged.stdout, "");
    assert_eq!(
        logged.stderr,
        format!(
            "no step of run {id} has a log; run {id}: awaiting confirmation (`nixcmd resume \
             {id} --approve switch` continues it)\n"
        )
    );
}

/// A run started from a file by its path (`nixcmd run runbooks/gated.md`, as `nixcmd new
/// --dir` suggests) printed a resume command that failed with "unknown command": resume
/// looked the command up by name. It reads the file the run started from, from anywhere.
#[test]
fn a_run_started_by_path_resumes_from_its_file() {
    let out = Test::new()
        .file("project/runbooks/gated.md", GATED)
        .args(["run", "runbooks/gated.md"])
        .run();
    out.assert_status(3);
    let root = out.root.path().to_path_buf();
    let id = run_id(&only_run(&root));
    // From the home folder, where no search path finds `gated`.
    let resumed = out
        .then()
        .current_dir("home")
        .args(["resume", &id, "--approve", "push"])
        .run();
    resumed.assert_status(0);
    assert_eq!(project_file(&root, "trace"), "prepare\npush\nafter\n");

    // The file moved away: said so, with where the run started from.
    let paused = resumed.then().args(["run", "runbooks/gated.md"]).run();
    paused.assert_status(3);
    let second = run_dirs(&root)
        .into_iter()
        .map(|d| run_id(&d))
        .find(|r| *r != id)
        .expect("a second run");
    std::fs::rename(
        root.join("project/runbooks/gated.md"),
        root.join("project/runbooks/moved.md"),
    )
    .unwrap();
    let gone = paused
        .then()
        .args(["resume", &second, "--approve", "push"])
        .run();
    assert_eq!(
        (gone.status, gone.filter(&gone.stderr)),
        (
            2,
            format!(
                "error: unknown command `gated`\n  hint: run {second} started from [TEMP]/project/runbooks/gated.md, which is no longer there\n"
            )
        )
    );
    // A run that ended says so first, whether or not its command is still found.
    let ended = gone.then().args(["resume", &id]).run();
    assert_eq!(
        (ended.status, ended.stderr.as_str()),
        (
            2,
            format!(
                "error: run {id} already ended (succeeded); nothing to resume\n  hint: start a new run with `nixcmd /gated`\n"
            )
            .as_str()
        )
    );
}

/// A guided file's `/inner` line found inner next to it (`--commands-dir ops`) when the run
/// started; resumed from elsewhere, the step was "not runnable" and the run failed. Nested
/// commands are looked for in the command file's own folder first.
#[test]
fn a_resumed_run_finds_its_nested_commands_next_to_its_file() {
    let out = Test::new()
        .file(
            "project/ops/outer.md",
            "---\ndescription: outer\n---\n# Outer\n## Steps\n### Call inner\n```bash\n/inner\n```\n",
        )
        .file(
            "project/ops/inner.md",
            "---\ndescription: inner\nnixcmd: {}\n---\n# Inner\n## Steps\n### Go\n```bash {id=go}\necho inner >> trace\n```\n",
        )
        .args(["--commands-dir", "ops", "run", "outer"])
        .run();
    out.assert_status(3);
    let root = out.root.path().to_path_buf();
    let id = run_id(&only_run(&root));
    let resumed = out
        .then()
        .current_dir("home")
        .args(["resume", &id, "--approve", "call-inner"])
        .run();
    resumed.assert_status(0);
    assert_eq!(project_file(&root, "trace"), "inner\n");
}

/// A mistyped `--approve` would approve nothing: the run would stop at the gate it was meant
/// to pass. It is refused before anything starts, for `run` and for `resume`.
#[test]
fn approve_must_name_a_step_that_asks() {
    let out = Test::new()
        .runbook("gated.md", GATED)
        .args(["run", "gated", "--approve", "psuh"])
        .run();
    out.assert_status(2);
    assert_eq!(
        out.stderr,
        "error: --approve psuh: `gated` has no step `psuh`\n  \
         hint: did you mean `push`? (steps that ask: push)\n"
    );
    assert!(run_dirs(out.root.path()).is_empty(), "no run was started");
    assert!(!out.root.path().join("project/trace").exists());

    let out = out
        .then()
        .args(["run", "gated", "--approve", "after"])
        .run();
    out.assert_status(2);
    assert_eq!(
        out.stderr,
        "error: --approve after: step `after` of `gated` does not ask for confirmation\n  \
         hint: steps that ask: push\n"
    );
    assert!(run_dirs(out.root.path()).is_empty(), "no run was started");

    let out = out.then().args(["run", "gated"]).run();
    out.assert_status(3);
    let run = only_run(out.root.path());
    let id = run_id(&run);
    let out = out.then().args(["resume", &id, "--approve", "pushh"]).run();
    out.assert_status(2);
    assert_eq!(
        out.stderr,
        "error: --approve pushh: `gated` has no step `pushh`\n  \
         hint: did you mean `push`? (steps that ask: push)\n"
    );
    assert_eq!(
        read_json(&run.join("state.json"))["status"],
        "awaiting_confirmation"
    );
    assert_eq!(project_file(out.root.path(), "trace"), "prepare\n");
}

#[test]
fn ci_true_pauses_even_at_a_terminal() {
    let test = Test::new()
        .runbook("gated.md", GATED)
        .env("CI", "true")
        .args(["run", "gated"]);
    let out = run_with_tty(test, b"y\n");
    out.assert_status(3);
    assert_eq!(project_file(out.root.path(), "trace"), "prepare\n");
    insta::assert_snapshot!(normalized(&out));
}

#[test]
fn declined_prompt_at_a_terminal_exits_3_and_rolls_back() {
    let test = Test::new()
        .runbook("gated.md", GATED)
        .args(["run", "gated"]);
    let out = run_with_tty(test, b"n\n");
    out.assert_status(3);
    assert_eq!(
        project_file(out.root.path(), "trace"),
        "prepare\nunprepare\n"
    );
    let run = only_run(out.root.path());
    let state = read_json(&run.join("state.json"));
    assert_eq!(state["status"], "declined");
    // The "no" is kept with the approvals, as a "yes" would be.
    let approvals = state["approvals"].as_array().expect("approvals");
    assert_eq!(approvals.len(), 1, "{approvals:?}");
    assert_eq!(approvals[0]["step_id"], "push");
    assert_eq!(approvals[0]["channel"], "terminal");
    assert_eq!(approvals[0]["declined"], true);
    insta::assert_snapshot!(normalized(&out));
}

#[test]
fn ctrl_c_at_a_confirmation_prompt_interrupts_and_rolls_back() {
    // Nothing is typed: the prompt waits until Ctrl-C.
    let run = Spawned::start_with_tty(
        Test::new()
            .runbook("gated.md", GATED)
            .args(["run", "gated"]),
        b"",
    );
    wait_until("the prompt", Duration::from_secs(30), || {
        run.stderr_so_far().contains("[y/N]")
    });
    run.signal(libc::SIGINT);
    let out = run.wait();
    out.assert_status(130);
    assert_eq!(
        project_file(out.root.path(), "trace"),
        "prepare\nunprepare\n"
    );
    let run = only_run(out.root.path());
    let state = read_json(&run.join("state.json"));
    assert_eq!(state["status"], "interrupted");
    // Ctrl-C is nobody's "no": nothing recorded.
    assert_eq!(state["approvals"], serde_json::json!([]));
    insta::assert_snapshot!(normalized(&out));
}

#[test]
fn accepted_prompt_at_a_terminal_runs_the_step() {
    let test = Test::new()
        .runbook("gated.md", GATED)
        .args(["run", "gated"]);
    let out = run_with_tty(test, b"y\n");
    out.assert_status(0);
    assert_eq!(
        project_file(out.root.path(), "trace"),
        "prepare\npush\nafter\n"
    );
    let state = read_json(&only_run(out.root.path()).join("state.json"));
    assert_eq!(state["approvals"][0]["channel"], "terminal");
}

#[test]
fn yes_runs_every_gated_step() {
    let out = Test::new()
        .runbook("gated.md", GATED)
        .args(["run", "gated", "--yes"])
        .run();
    out.assert_status(0);
    assert_eq!(
        project_file(out.root.path(), "trace"),
        "prepare\npush\nafter\n"
    );
    let state = read_json(&only_run(out.root.path()).join("state.json"));
    assert_eq!(state["approvals"][0]["step_id"], "push");
    assert_eq!(state["approvals"][0]["channel"], "flag");
}

#[test]
fn guided_file_without_a_terminal_pauses_at_its_first_block() {
    let out = Test::new()
        .claude_command(
            "tidy.md",
            r#"---
description: Tidy the Nix store
---
# Tidy the store

## Steps
### Look
```bash
echo look >> trace
```
### Collect
```bash
echo collect >> trace
```
"#,
        )
        .args(["run", "tidy", "--format", "json"])
        .run();
    out.assert_status(3);
    assert!(!out.root.path().join("project/trace").exists());
    let stream = events(&out.stdout);
    let gate = &stream[stream.len() - 2];
    assert_eq!(gate["type"], "gate");
    assert_eq!(gate["step_id"], "look");
    let last = stream.last().expect("events");
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["status"], "awaiting_confirmation");
    let id = run_id(&only_run(out.root.path()));
    assert_eq!(
        last["resume"],
        format!("nixcmd resume {id} --approve look").as_str()
    );
}

const GUIDED_CHECKS: &str = r#"---
description: A guided file with checks
---
# Build the VM

## Prerequisites
```bash
echo prerequisite >> trace
```

## Steps
```bash
echo build >> trace
```

## Success Criteria
```bash
echo criterion >> trace
```
"#;

/// A guided file's blocks are not known to be read-only, prerequisites and success criteria
/// included: its dry run executes none of them (they ran, unasked), and in a run its success
/// criteria ask first as its other blocks do (they ran without a question).
#[test]
fn a_guided_files_checks_neither_run_in_a_dry_run_nor_run_unasked() {
    let out = Test::new()
        .claude_command("vm.md", GUIDED_CHECKS)
        .args(["run", "vm", "--dry-run", "--format", "json"])
        .run();
    out.assert_status(0);
    assert!(
        !out.root.path().join("project/trace").exists(),
        "{}",
        project_file(out.root.path(), "trace")
    );
    let run_started = &events(&out.stdout)[0];
    let plan: Vec<(String, bool, String)> = run_started["plan"]
        .as_array()
        .expect("plan")
        .iter()
        .map(|b| {
            (
                b["step_id"].as_str().unwrap_or_default().to_string(),
                b["will_run"].as_bool().unwrap_or(true),
                b["gates"].to_string(),
            )
        })
        .collect();
    let asks = r#"["confirm (guided file)"]"#.to_string();
    assert_eq!(
        plan,
        ["prereq-1", "step-1", "check-1"].map(|id| (id.to_string(), false, asks.clone()))
    );

    // Approved one by one, the success criterion asks too.
    let out = out
        .then()
        .args(["run", "vm", "--approve", "prereq-1", "--approve", "step-1"])
        .run();
    out.assert_status(3);
    assert_eq!(
        project_file(out.root.path(), "trace"),
        "prerequisite\nbuild\n"
    );
}

#[test]
fn retries_make_n_more_attempts() {
    let runbook = r#"---
description: Retries
nixcmd: {}
---
# Retries

## Steps
### Flaky
```bash {id=flaky retries=2 backoff=200ms}
n=$(cat flaky-count 2>/dev/null || echo 0)
echo $((n + 1)) > flaky-count
[ "$n" -ge 2 ]
```
### Broken
```bash {id=broken retries=2 backoff=10ms}
n=$(cat broken-count 2>/dev/null || echo 0)
echo $((n + 1)) > broken-count
exit 1
```
"#;
    let out = Test::new()
        .runbook("retries.md", runbook)
        .args(["run", "retries"])
        .run();
    out.assert_status(1);
    let root = out.root.path();
    assert_eq!(project_file(root, "flaky-count"), "3\n");
    assert_eq!(project_file(root, "broken-count"), "3\n");
    // Backoff 200ms then 400ms before the second and third attempts of `flaky`.
    assert!(out.elapsed.as_millis() >= 600, "backoff not respected");
    let progress = read_json(&only_run(root).join("progress.json"));
    assert_eq!(progress["steps"][0]["status"], "succeeded");
    assert_eq!(progress["steps"][0]["attempts"], 3);
    assert_eq!(progress["steps"][1]["status"], "failed");
    assert_eq!(progress["steps"][1]["attempts"], 3);
    insta::assert_snapshot!(normalized(&out));
}

#[test]
fn nixcmd_env_carries_a_value_to_later_steps() {
    let out = Test::new()
        .runbook(
            "export.md",
            r#"---
description: Pass a value on
nixcmd: {}
---
# Export

## Steps
### Decide
```bash {id=decide}
echo "RELEASE=v42 with spaces" >> "$NIXCMD_ENV"
```
### Use
```bash {id=use}
printf 'release=%s\n' "$RELEASE" > got
```
"#,
        )
        .args(["run", "export"])
        .run();
    out.assert_status(0);
    assert_eq!(
        project_file(out.root.path(), "got"),
        "release=v42 with spaces\n"
    );
}

const ARGS: &str = r#"---
description: Arguments reach blocks as environment variables only
nixcmd:
  args:
    name: { required: true, help: "any text" }
---
# Echo

## Steps
### Record
```bash {id=record}
printf '%s\n' "$NIXCMD_ARG_NAME" > got
echo $NIXCMD_ARG_NAME >> got
printf '%s\n' "$ARGUMENTS" >> got
```
"#;

#[test]
fn argument_values_are_never_executed() {
    let out = Test::new()
        .runbook("echo.md", ARGS)
        .args([
            "run",
            "echo",
            "x; touch pwned $(touch pwned2) `touch pwned3`",
        ])
        .run();
    out.assert_status(0);
    let root = out.root.path();
    assert_eq!(
        project_file(root, "got"),
        "x; touch pwned $(touch pwned2) `touch pwned3`\n\
         x; touch pwned $(touch pwned2) `touch pwned3`\n\
         x; touch pwned $(touch pwned2) `touch pwned3`\n"
    );
    for f in ["pwned", "pwned2", "pwned3"] {
        assert!(!root.join("project").join(f).exists(), "{f} was created");
    }
}

/// Values reach blocks as environment variables, which Linux caps at 128 KiB each
/// (`NAME=value` and its NUL): the longest one runs, one byte more is refused before anything
/// runs (every block would fail with "Argument list too long").
#[test]
fn an_argument_too_long_for_the_environment_is_refused_before_anything_runs() {
    let longest = "x".repeat(128 * 1024 - "NIXCMD_ARG_NAME=".len() - 1);
    let out = Test::new()
        .runbook("echo.md", ARGS)
        .args(["run", "echo", &longest])
        .run();
    out.assert_status(0);
    assert_eq!(
        project_file(out.root.path(), "got").len(),
        3 * (longest.len() + 1)
    );
    let too_long = format!("{longest}x");
    let out = Test::new()
        .runbook("echo.md", ARGS)
        .args(["run", "echo", &too_long])
        .run();
    out.assert_status(2);
    assert_eq!(
        out.stderr,
        "error: `NIXCMD_ARG_NAME` would be 131073 bytes: Linux passes at most 128 KiB per \
         environment variable, which is how values reach the blocks\n  \
         hint: pass a large value through a file: give its path, and read the file in the block\n"
    );
    assert!(run_dirs(out.root.path()).is_empty());
    assert!(!out.root.path().join("project/got").exists());
}

#[test]
fn a_pattern_rejects_an_argument_with_exit_2() {
    let out = Test::new()
        .runbook(
            "pinned.md",
            r#"---
description: A pattern guards the argument
nixcmd:
  args:
    input: { required: true, pattern: "^[A-Za-z0-9_-]+$", help: "a flake input name" }
---
# Pinned

## Steps
### Update
```bash {id=update}
echo "$NIXCMD_ARG_INPUT" > got
```
"#,
        )
        .args(["run", "pinned", "x; touch pwned"])
        .run();
    out.assert_status(2);
    let root = out.root.path();
    assert!(!root.join("project/pwned").exists());
    assert!(!root.join("project/got").exists());
    assert!(crate::run_support::run_dirs(root).is_empty());
    insta::assert_snapshot!(normalized(&out));
}

/// `nixcmd /deploy-all web1` deployed to every host: deploy-all declares no arguments and its
/// blocks do not read `$ARGUMENTS`, so `web1` was dropped in silence. It is refused before
/// anything runs, with the flag that does narrow the hosts.
#[test]
fn values_a_command_would_ignore_are_refused_before_anything_runs() {
    let out = Test::new()
        .args(["run", "deploy-all", "web1", "--dry-run"])
        .run();
    assert_eq!(
        (out.status, out.stdout.as_str(), out.stderr.as_str()),
        (
            2,
            "",
            "error: `deploy-all` takes no arguments, and none of its blocks reads them: `web1`\n  hint: it would ignore them; to run it on some hosts only, use --hosts (e.g. `nixcmd /deploy-all --hosts web1`)\n"
        )
    );
    assert!(crate::run_support::run_dirs(out.root.path()).is_empty());
}

/// `--set` took any name, nixcmd's own included: `--set NIXCMD_ARG_INPUT=…` replaced a
/// validated argument with a value its `pattern` refuses, and `--set NIXCMD_ENV=…` sent the
/// steps' exports to a file nixcmd never reads (later steps lost them, and a secret exported
/// there was printed unredacted). Names nixcmd sets are refused before anything runs.
#[test]
fn set_refuses_the_names_nixcmd_sets_itself() {
    let book = r#"---
description: A pattern guards the argument
nixcmd:
  args:
    input: { required: true, pattern: "^[a-z]+$" }
---
# Pinned

## Steps
### Update
```bash {id=update}
echo "$NIXCMD_ARG_INPUT" > got
```
"#;
    for (set, name) in [
        ("NIXCMD_ARG_INPUT=x; touch pwned", "NIXCMD_ARG_INPUT"),
        ("NIXCMD_ENV=/tmp/elsewhere", "NIXCMD_ENV"),
        ("ARGUMENTS=other", "ARGUMENTS"),
    ] {
        let out = Test::new()
            .runbook("pinned.md", book)
            .args(["run", "pinned", "nixpkgs", "--set", set])
            .run();
        assert_eq!(
            (out.status, out.stderr.clone()),
            (
                2,
                format!(
                    "error: --set {name}: nixcmd sets {name} itself\n  hint: give arguments \
                     as values (`nixcmd /pinned VALUE…`); --set is for the other variables a \
                     block reads\n"
                )
            ),
            "--set {set}"
        );
        let root = out.root.path();
        assert!(!root.join("project/got").exists());
        assert!(crate::run_support::run_dirs(root).is_empty());
    }
}

#[test]
fn a_dir_that_is_missing_or_a_file_is_named_as_such() {
    let test = Test::new().file("project/notes.txt", "x\n");
    let file = test.project().join("notes.txt");
    let out = test.args(["run", "deploy-all", "--dir", "notes.txt"]).run();
    assert_eq!(
        (out.status, out.stderr.clone()),
        (
            2,
            format!(
                "error: --dir {}: not a folder\n  hint: {DIR_HINT}\n",
                file.display()
            )
        )
    );
    let out = out
        .then()
        .args(["run", "deploy-all", "--dir", "gone"])
        .run();
    assert_eq!(
        (out.status, out.filter(&out.stderr)),
        (
            2,
            format!("error: --dir [TEMP]/project/gone: no such folder\n  hint: {DIR_HINT}\n")
        )
    );
    // Below a file: in the words the run records' errors use, not `Not a directory (os
    // error 20)`.
    let out = out
        .then()
        .args(["run", "deploy-all", "--dir", "notes.txt/sub"])
        .run();
    assert_eq!(
        (out.status, out.filter(&out.stderr)),
        (
            2,
            format!(
                "error: --dir [TEMP]/project/notes.txt/sub: a file is in the way of a folder\n  \
                 hint: {DIR_HINT}\n"
            )
        )
    );
    // An empty NIXCMD_COMMANDS_DIR is unset (clap refused it, naming `--commands-dir`).
    let listed = out
        .then()
        .env("NIXCMD_COMMANDS_DIR", "")
        .args(["list"])
        .run();
    listed.assert_status(0);
    assert!(listed.stdout.contains("deploy-all"), "{}", listed.stdout);
}

const DIR_HINT: &str = "`--dir` is the folder the blocks run in (the checkout of your flake, \
                        usually): give one that exists, or leave it out to run here";

/// A paused run whose working folder is gone (a checkout removed, a disk not mounted):
/// `resume` started the approved step anyway, which failed as "cannot start bash: No such
/// file or directory", rolled back in that same missing folder, and ended the run for good
/// (exit 5). It is refused before anything runs and stays resumable.
#[test]
fn resume_refuses_a_run_whose_folder_is_gone() {
    let (out, root, id) = paused(
        Test::new()
            .runbook("gated.md", GATED)
            .dir("work")
            .args(["run", "gated", "--dir", "../work"]),
    );
    assert_eq!(
        std::fs::read_to_string(root.join("work/trace")).unwrap_or_default(),
        "prepare\n"
    );
    std::fs::remove_dir_all(root.join("work")).expect("remove the folder");

    let out = out.then().args(["resume", &id, "--approve", "push"]).run();
    assert_eq!(
        (out.status, out.filter(&out.stderr)),
        (
            2,
            format!(
                "error: run {id} works in [TEMP]/project/../work, which is gone; nothing was run\n  \
                 hint: bring the folder back (a checkout, a mount), then resume again\n"
            )
        )
    );
    assert!(!root.join("work").exists());
    let run = only_run(&root);
    assert_eq!(
        read_json(&run.join("state.json"))["status"],
        "awaiting_confirmation"
    );

    std::fs::create_dir(root.join("work")).expect("bring it back");
    let out = out.then().args(["resume", &id, "--approve", "push"]).run();
    out.assert_status(0);
    assert_eq!(
        std::fs::read_to_string(root.join("work/trace")).expect("trace"),
        "push\nafter\n"
    );
}

/// A step that removes the run's working folder: the next block cannot start there. It said
/// "cannot start bash: No such file or directory", as if bash were missing.
#[test]
fn a_block_whose_working_folder_is_gone_says_so() {
    let out = Test::new()
        .runbook(
            "gone.md",
            "---\ndescription: Removes its folder\nnixcmd: {}\n---\n# Gone\n\n## Steps\n\
             ### Remove\n```bash {id=remove}\nrmdir \"$PWD\"\n```\n\
             ### Next\n```bash {id=next}\necho next\n```\n",
        )
        .dir("work")
        .args(["run", "gone", "--dir", "../work", "--format", "json"])
        .run();
    out.assert_status(1);
    let last = events(&out.stdout).pop().expect("events");
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["failed_step"], "next");
    assert_eq!(
        out.filter(&last["log_tail"][0].to_string()),
        "\"cannot start bash: its working folder [TEMP]/project/../work is gone\""
    );
}

#[test]
fn a_missing_required_argument_exits_2() {
    let out = Test::new()
        .runbook("echo.md", ARGS)
        .args(["run", "echo"])
        .run();
    out.assert_status(2);
    assert!(crate::run_support::run_dirs(out.root.path()).is_empty());
    insta::assert_snapshot!(normalized(&out));
}

#[test]
fn failing_rollback_block_exits_5_and_lists_what_is_left_by_hand() {
    let out = Test::new()
        .runbook(
            "stuck.md",
            r#"---
description: The rollback itself fails
nixcmd: {}
---
# Stuck

## Steps
### Switch
```bash {id=switch rollback=switch-back}
echo switch >> trace
```
### Verify
```bash {id=verify}
echo verify >> trace
exit 1
```

## Rollback
### switch-back
```bash
echo switch-back >> trace
exit 2
```
### notify
```bash
echo notify >> trace
```
"#,
        )
        .args(["run", "stuck"])
        .run();
    out.assert_status(5);
    assert_eq!(
        project_file(out.root.path(), "trace"),
        "switch\nverify\nswitch-back\nnotify\n"
    );
    let state = read_json(&only_run(out.root.path()).join("state.json"));
    assert_eq!(state["status"], "rollback_incomplete");
    insta::assert_snapshot!(normalized(&out));
}

const ALWAYS: &str = r#"---
description: Cleanup runs whatever happens
nixcmd: {}
---
# Always

## Steps
### Work
```bash {id=work}
echo work >> trace
test ! -e fail
```
### Tidy
```bash {id=tidy always}
echo tidy >> trace
```
### More
```bash {id=more}
echo more >> trace
```
"#;

#[test]
fn always_blocks_run_on_success_and_on_failure() {
    let out = Test::new()
        .runbook("always.md", ALWAYS)
        .args(["run", "always"])
        .run();
    out.assert_status(0);
    let root = out.root.path().to_path_buf();
    assert_eq!(project_file(&root, "trace"), "work\nmore\ntidy\n");

    std::fs::write(root.join("project/trace"), "").expect("reset trace");
    std::fs::write(root.join("project/fail"), "").expect("make work fail");
    let out = out.then().args(["run", "always"]).run();
    out.assert_status(1);
    assert_eq!(project_file(&root, "trace"), "work\ntidy\n");
}

#[test]
fn dry_run_runs_only_readonly_blocks_and_prints_the_plan() {
    let out = Test::new()
        .runbook(
            "deploy.md",
            r#"---
description: Deploy
nixcmd:
  timeout: 10m
---
# Deploy

## Prerequisites
```bash {id=clean}
echo clean >> trace
```

## Steps
### Inspect
```bash {id=inspect readonly}
echo inspect >> trace
```
### Change
```bash {id=change rollback=restore retries=2 backoff=10s}
echo changed > data.txt
```
### Push
```bash {id=push confirm="Push?" timeout=90s}
echo pushed > data.txt
```
### Tidy
```bash {id=tidy always}
rm -f data.txt
```

## Success Criteria
- [ ] Dashboards look normal
```bash {id=healthy}
echo healthy >> trace
```

## Rollback
### restore
```bash
echo restored > data.txt
```
"#,
        )
        .file("project/data.txt", "original\n")
        .args(["run", "deploy", "--dry-run"])
        .run();
    out.assert_status(0);
    let root = out.root.path();
    assert_eq!(project_file(root, "trace"), "clean\ninspect\nhealthy\n");
    assert_eq!(project_file(root, "data.txt"), "original\n");
    insta::assert_snapshot!(normalized(&out));
}

const SELECT: &str = r#"---
description: Four steps to select from
nixcmd: {}
---
# Select

## Prerequisites
```bash {id=ready}
echo ready >> trace
```

## Steps
### Build
```bash {id=build}
echo build >> trace
```
### Test
```bash {id=test}
echo test >> trace
```
### Deploy
```bash {id=deploy}
echo deploy >> trace
```
### Notify
```bash {id=notify}
echo notify >> trace
```
"#;

fn select(args: &[&str]) -> (i32, String, String) {
    let out = Test::new()
        .runbook("select.md", SELECT)
        .args(["run", "select"])
        .args(args)
        .run();
    (
        out.status,
        project_file(out.root.path(), "trace"),
        normalized(&out),
    )
}

#[test]
fn only_skip_and_from_select_steps_and_prerequisites_still_run() {
    let (status, trace, output) = select(&["--only", "test", "--only", "notify"]);
    assert_eq!((status, trace.as_str()), (0, "ready\ntest\nnotify\n"));
    insta::assert_snapshot!("only", output);
    let (status, trace, _) = select(&["--skip", "deploy"]);
    assert_eq!(
        (status, trace.as_str()),
        (0, "ready\nbuild\ntest\nnotify\n")
    );
    let (status, trace, _) = select(&["--from", "deploy"]);
    assert_eq!((status, trace.as_str()), (0, "ready\ndeploy\nnotify\n"));
}

/// `--from` a success criterion skips every step and the criteria before it (it was accepted
/// and ignored: the steps ran, a gate among them paused the run). `--skip` of an `always`
/// block is refused (it was accepted and the block ran all the same), and so is a selection
/// that leaves nothing to run (it ran nothing and exited 0).
#[test]
fn from_a_success_criterion_skips_the_steps_and_selections_that_say_nothing_are_refused() {
    let book = SELECT.to_string()
        + "### Clean\n```bash {id=clean always}\necho clean >> trace\n```\n\
           ## Success Criteria\n```bash {id=healthy}\necho healthy >> trace\n```\n\
           ```bash {id=final}\necho final >> trace\n```\n";
    let run = |args: &[&str]| {
        let out = Test::new()
            .runbook("select.md", &book)
            .args(["run", "select"])
            .args(args)
            .run();
        let trace = project_file(out.root.path(), "trace");
        (out.status, trace, out.stderr)
    };
    let (status, trace, _) = run(&["--from", "final"]);
    assert_eq!((status, trace.as_str()), (0, "ready\nfinal\nclean\n"));
    let (status, trace, _) = run(&["--from", "healthy", "--skip", "final"]);
    assert_eq!((status, trace.as_str()), (0, "ready\nhealthy\nclean\n"));

    let (status, trace, stderr) = run(&["--skip", "clean"]);
    assert_eq!((status, trace.as_str()), (2, ""));
    assert_eq!(
        stderr,
        "error: --skip clean: `clean` is an `always` block, which runs at the end of every run \
         and is never skipped\n  hint: leave it out of --skip; to change what it does, edit \
         the command\n"
    );
    for args in [
        ["--from", "final", "--skip", "final"].as_slice(),
        [
            "--only", "build", "--skip", "build", "--skip", "healthy", "--skip", "final",
        ]
        .as_slice(),
    ] {
        let (status, trace, stderr) = run(args);
        assert_eq!((status, trace.as_str()), (2, ""), "{args:?}");
        assert!(
            stderr.starts_with(
                "error: --only, --skip and --from together leave no step or success criterion \
                 of `select` to run\n"
            ),
            "{stderr}"
        );
    }
}

#[test]
fn an_unknown_step_id_is_a_usage_error_with_a_suggestion() {
    let (status, trace, output) = select(&["--skip", "deplyo"]);
    assert_eq!((status, trace.as_str()), (2, ""));
    insta::assert_snapshot!("unknown_skip", output);
    let (status, _, output) = select(&["--from", "nope"]);
    assert_eq!(status, 2);
    insta::assert_snapshot!("unknown_from", output);
}

/// A runbook whose second step calls sudo; every step and the `sudo` stand-in
/// (tests/stubs/sudo) append to the same trace, so the trace shows what happened when.
const SUDO: &str = r#"---
description: Steps that need sudo
nixcmd: {}
---
# Sudo

## Steps
### Look
```bash {id=look}
echo "step look" >> "$NIXCMD_STUB_LOG"
```
### Change
```bash {id=change}
sudo sh -c 'echo "step change" >> "$NIXCMD_STUB_LOG"'
```
"#;

/// The runbook above with `sudo` first on `PATH`, its cache and trace in the test's folder.
fn sudo_test() -> Test {
    let test = Test::new().runbook("sudo.md", SUDO);
    let root = test.root().to_path_buf();
    let path = format!(
        "{}:{}",
        crate::support::repo().join("tests/stubs").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    test.env("PATH", path)
        .env(
            "NIXCMD_STUB_LOG",
            root.join("trace").to_str().expect("utf-8 path"),
        )
        .env(
            "NIXCMD_STUB_SUDO_CACHE",
            root.join("sudo-cache").to_str().expect("utf-8 path"),
        )
        .env_remove("CI")
        .args(["run", "sudo"])
}

/// At a terminal, sudo is asked for once, before the first step, and the steps then use the
/// cached credentials instead of waiting for a password mid-run.
#[test]
fn sudo_is_asked_once_before_the_first_step() {
    let out = run_with_tty(sudo_test(), b"secret\n");
    out.assert_status(0);
    let root = out.root.path();
    assert_eq!(
        std::fs::read_to_string(root.join("trace")).expect("trace"),
        "sudo -n -v\nsudo -v\nstep look\nsudo sh -c echo \"step change\" >> \"$NIXCMD_STUB_LOG\"\nstep change\n"
    );
    // sudo's prompt is on the terminal; nixcmd says why it comes.
    assert!(
        out.stderr.starts_with(
            "this runbook uses sudo: authenticate once now so no step waits for a password\n"
        ),
        "{}",
        out.stderr
    );
}

/// A refused password runs nothing, records nothing, and says so (exit 4).
#[test]
fn a_refused_sudo_password_runs_nothing_and_leaves_no_run_folder() {
    let out = run_with_tty(sudo_test(), b"wrong\nwrong\nwrong\n");
    out.assert_status(4);
    let root = out.root.path();
    assert_eq!(
        std::fs::read_to_string(root.join("trace")).expect("trace"),
        "sudo -n -v\nsudo -v\n"
    );
    assert_eq!(
        out.stderr,
        "this runbook uses sudo: authenticate once now so no step waits for a password\n\
         Sorry, try again.\nSorry, try again.\nsudo: 3 incorrect password attempts\n\
         error: sudo authentication failed; nothing was run\n"
    );
    assert!(run_dirs(root).is_empty(), "{:?}", run_dirs(root));
}

/// Without a terminal nobody can type a password: nixcmd does not ask, and a step that needs
/// one fails on its own (sudo -n style) instead of hanging.
#[test]
fn without_a_terminal_sudo_is_not_asked_for() {
    let out = sudo_test().run();
    out.assert_status(1);
    let root = out.root.path();
    assert_eq!(
        std::fs::read_to_string(root.join("trace")).expect("trace"),
        "step look\nsudo sh -c echo \"step change\" >> \"$NIXCMD_STUB_LOG\"\n"
    );
    assert!(
        !out.stderr.contains("authenticate once now"),
        "{}",
        out.stderr
    );
    let dir = crate::run_support::only_run(root);
    assert_eq!(
        crate::run_support::statuses(&dir),
        [
            ("look".to_string(), "succeeded".to_string()),
            ("change".to_string(), "failed".to_string()),
        ]
    );
    // The step fails at once with sudo's own words: its stdin is not a terminal.
    let log = std::fs::read_to_string(dir.join("logs/change.log")).expect("log");
    assert_eq!(
        crate::run_support::normalize(&log, root),
        "── change attempt 1/1 at [TIMESTAMP] ──\n\
         sudo: a terminal is required to read the password; either use the -S option to read \
         from standard input or configure an askpass helper\n\
         ── attempt 1 exited with status 1 ──\n"
    );
}

/// A reference card (a guided file whose code is all examples) has nothing to run: a run that
/// did nothing would report success, so `run` says so instead, before making a run folder.
#[test]
fn a_command_with_nothing_to_run_is_refused() {
    let out = Test::new()
        .claude_command(
            "cheatsheet.md",
            "# Nix cheat sheet\n\nQuick reference.\n\n## Common commands\n\n```bash\nnix flake update\n```\n\n```bash\nnix-collect-garbage -d\n```\n",
        )
        .args(["run", "cheatsheet"])
        .run();
    out.assert_status(2);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        "error: `cheatsheet` has nothing to run: no prerequisite, step or check is a shell block \
         nixcmd runs; nothing was run\n  \
         hint: its 2 code blocks are outside the runnable sections; `nixcmd show cheatsheet` \
         shows what the file holds\n"
    );
    assert!(run_dirs(out.root.path()).is_empty());
}

/// The question and code a person approves are shown, never obeyed by the terminal: an
/// escape sequence (here: clear the screen) or a bidirectional control in the runbook could
/// hide or reorder what is approved. The prompt, the pause line and the dry-run plan show
/// their pictures.
#[test]
fn a_gate_shows_the_runbooks_control_characters_instead_of_obeying_them() {
    const TRICKY: &str = "---\ndescription: d\nnixcmd: {}\n---\n## Steps\n### Wipe\n```bash {id=wipe confirm=\"Keep \u{1b}[2Jdata \u{202e}?\" irreversible}\necho 'safe \u{1b}[8m rm -rf /'\n```\n\n## Success Criteria\n- [ ] the \u{1b}]52;c;Zm9v\u{7} clipboard is untouched\n";
    let at_terminal = run_with_tty(
        Test::new()
            .runbook("tricky.md", TRICKY)
            .args(["run", "tricky"]),
        b"n\n",
    );
    at_terminal.assert_status(3);
    let prompt = &at_terminal.stderr;
    assert!(prompt.contains("│ echo 'safe ␛[8m rm -rf /'\n"), "{prompt}");
    assert!(prompt.contains("Keep ␛[2Jdata �? [y/N] "), "{prompt}");
    let paused = Test::new()
        .runbook("tricky.md", TRICKY)
        .env("CI", "true")
        .args(["run", "tricky"])
        .run();
    paused.assert_status(3);
    assert!(
        paused
            .stdout
            .contains("needs confirmation: Keep ␛[2Jdata �?\n"),
        "{}",
        paused.stdout
    );
    let plan = Test::new()
        .runbook("tricky.md", TRICKY)
        .args(["run", "tricky", "--dry-run"])
        .run();
    plan.assert_status(0);
    assert!(plan.stdout.contains("Keep ␛[2Jdata �?"), "{}", plan.stdout);
    assert!(
        plan.stdout
            .contains("manual check: [ ] the ␛]52;c;Zm9v␇ clipboard is untouched\n"),
        "{}",
        plan.stdout
    );
    for out in [&at_terminal, &paused, &plan] {
        for text in [&out.stdout, &out.stderr] {
            assert!(!text.contains(['\u{1b}', '\u{202e}', '\u{7}']), "{text:?}");
        }
    }
}

/// A run paused at a gate has changed the machine and not rolled back: no other run of the
/// command starts until it is resumed (approved or declined). Dry runs change nothing and
/// still may; once the paused run has ended, runs start again.
#[test]
fn a_paused_run_keeps_other_runs_of_its_command_from_starting() {
    for end in ["--approve", "--decline"] {
        let (out, root, id) = paused(
            Test::new()
                .runbook("gated.md", GATED)
                .args(["run", "gated"]),
        );
        let refused = out.then().args(["run", "gated"]).run();
        refused.assert_status(2);
        assert_eq!(refused.stdout, "");
        assert_eq!(
            refused.stderr,
            format!(
                "error: run {id} of `gated` is paused at step `push`, waiting for a confirmation: \
                 what it did so far is not finished or undone\n  hint: finish it with `nixcmd \
                 resume {id} --approve push`, or end it with `nixcmd resume {id} --decline` \
                 (what it did is rolled back); then run again\n"
            )
        );
        // Nothing ran and no run folder was made by the refused run.
        assert_eq!(project_file(&root, "trace"), "prepare\n");
        assert_eq!(run_dirs(&root).len(), 1);

        let dry = refused.then().args(["run", "gated", "--dry-run"]).run();
        dry.assert_status(0);

        let args: Vec<&str> = match end {
            "--approve" => vec!["resume", &id, "--approve", "push"],
            _ => vec!["resume", &id, "--decline"],
        };
        let resumed = dry.then().args(args).run();
        resumed.assert_status(if end == "--approve" { 0 } else { 3 });

        // Ended: the next run starts (and pauses at the gate in its turn).
        let next = resumed.then().args(["run", "gated"]).run();
        next.assert_status(3);
        let expected = if end == "--approve" {
            "prepare\npush\nafter\nprepare\n"
        } else {
            "prepare\nunprepare\nprepare\n"
        };
        assert_eq!(project_file(&root, "trace"), expected);
    }
}

const OUTER: &str = "---\ndescription: outer\n---\n# Outer\n## Steps\n### Call inner\n```bash\n/inner\n```\n### After\n```bash\necho after >> trace\n```\n";

const INNER: &str = r#"---
description: inner
nixcmd: {}
---
# Inner
## Steps
### Prepare
```bash {id=prepare rollback=unprepare}
echo prepare >> trace
```
### Push
```bash {id=push confirm="Push now?"}
echo push >> trace
```
## Rollback
### unprepare
```bash {id=unprepare}
echo unprepare >> trace
```
"#;

/// `outer`, started with its own block approved and no terminal, paused with the run of
/// `/inner` it started: the output, and the two run ids (outer's, inner's).
fn paused_outer(extra: &[&str]) -> (crate::support::Output, String, String) {
    let out = Test::new()
        .file("project/ops/outer.md", OUTER)
        .file("project/ops/inner.md", INNER)
        .args([
            "--commands-dir",
            "ops",
            "run",
            "outer",
            "--approve",
            "call-inner",
        ])
        .args(extra)
        .run();
    out.assert_status(3);
    let root = out.root.path().to_path_buf();
    (out, run_of(&root, "outer"), run_of(&root, "inner"))
}

/// The id of the one run of `command` under `root`.
fn run_of(root: &std::path::Path, command: &str) -> String {
    let ids: Vec<String> = run_dirs(root).iter().map(|d| run_id(d)).collect();
    let mut of = ids.iter().filter(|i| i.starts_with(&format!("{command}-")));
    match (of.next(), of.next()) {
        (Some(id), None) => id.clone(),
        _ => panic!("expected one run of {command}: {ids:?}"),
    }
}

/// The folder of run `id` under `root`.
fn run_dir(root: &std::path::Path, id: &str) -> std::path::PathBuf {
    root.join("state/nixcmd/runs").join(id)
}

/// Without a terminal, a nested run's gate cannot be asked: the nested run pauses, and the
/// parent pauses with it (it used to fail and roll back, leaving the nested run paused).
/// `resume PARENT --approve GATE` resumes the nested run where it stopped (its first step
/// does not run again), then the parent goes on.
#[test]
fn a_nested_run_paused_at_a_gate_pauses_its_parent_and_resume_approves_it() {
    let (out, outer, inner) = paused_outer(&["--format", "json"]);
    let root = out.root.path().to_path_buf();
    let stream = events(&out.stdout);
    let gate = stream
        .iter()
        .find(|e| e["type"] == "gate")
        .expect("a gate event");
    assert_eq!(gate["step_id"], "call-inner");
    assert_eq!(gate["gate_id"], "push");
    assert_eq!(
        gate["message"],
        format!("/inner (run {inner}) asks: Push now?").as_str()
    );
    let resume = format!("nixcmd resume {outer} --approve push");
    assert_eq!(gate["resume"], resume.as_str());
    let last = stream.last().expect("events");
    assert_eq!(
        (&last["type"], &last["status"], &last["exit_code"]),
        (
            &"run_finished".into(),
            &"awaiting_confirmation".into(),
            &3.into()
        )
    );
    assert_eq!(project_file(&root, "trace"), "prepare\n");
    let dir = |id: &str| run_dir(&root, id);
    let state = read_json(&dir(&outer).join("state.json"));
    assert_eq!(state["status"], "awaiting_confirmation");
    assert_eq!(
        state["nested_wait"],
        serde_json::json!({"step_id": "call-inner", "line": 0, "command": "inner",
            "run_id": inner, "gate": "push", "message": "Push now?"})
    );
    assert_eq!(
        read_json(&dir(&inner).join("state.json"))["status"],
        "awaiting_confirmation"
    );
    // The paused nested run holds its command, as a paused run started by hand does.
    let again = out
        .then()
        .args(["--commands-dir", "ops", "run", "inner"])
        .run();
    again.assert_status(2);
    assert!(
        again.stderr.starts_with(&format!(
            "error: run {inner} of `inner` is paused at step `push`"
        )),
        "{}",
        again.stderr
    );

    // `runs` says what the parent waits for.
    let listed = again.then().args(["runs"]).run();
    listed.assert_status(0);
    let line = listed
        .stdout
        .lines()
        .find(|l| l.starts_with(&outer))
        .expect("the parent in `runs`")
        .to_string();
    assert!(
        line.ends_with(&format!("call-inner (/inner {inner} waits at push)")),
        "{line}"
    );
    // So does the parent, and the way out it names is the nested gate's answer.
    let again = listed
        .then()
        .args(["--commands-dir", "ops", "run", "outer"])
        .run();
    again.assert_status(2);
    assert!(
        again.stderr.contains(&format!(
            "finish it with `nixcmd resume {outer} --approve push`, or end it with \
             `nixcmd resume {outer} --decline`"
        )),
        "{}",
        again.stderr
    );

    // `--approve push` names the nested gate, not a step of `outer`, and is accepted.
    let resumed = again
        .then()
        .args([
            "--commands-dir",
            "ops",
            "resume",
            &outer,
            "--approve",
            "push",
            "--approve",
            "after",
        ])
        .run();
    resumed.assert_status(0);
    assert_eq!(project_file(&root, "trace"), "prepare\npush\nafter\n");
    assert_eq!(
        statuses(&dir(&inner)),
        [("prepare", "succeeded"), ("push", "succeeded")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let state = read_json(&dir(&outer).join("state.json"));
    assert_eq!(state["status"], "succeeded");
    assert!(state.get("nested_wait").is_none(), "{state}");
    // No third run: the nested run was resumed, not started again.
    assert_eq!(run_dirs(&root).len(), 2);
    // The block's log holds what the nested run told, both times (a header each).
    let log = std::fs::read_to_string(dir(&outer).join("logs/call-inner.log")).expect("log");
    let headers = log
        .lines()
        .filter(|l| l.starts_with("── call-inner attempt 1/1 at "))
        .count();
    assert_eq!(headers, 2, "{log}");
    let told: Vec<&str> = log.lines().filter(|l| !l.starts_with("── ")).collect();
    assert_eq!(
        told,
        [
            format!("[/inner] started as run {inner}"),
            "[/inner] prepare: ok".to_string(),
            format!("[/inner] paused: Push now? (nixcmd resume {inner} --approve push)"),
            "[/inner] awaiting confirmation (exit 3)".to_string(),
            format!("[/inner] started as run {inner}"),
            "[/inner] push: ok".to_string(),
            "[/inner] succeeded (exit 0)".to_string(),
        ]
    );
}

/// `resume PARENT --decline` answers the nested run's gate "no": the nested run rolls back,
/// then the parent ends declined (exit 3), and neither holds its command any longer.
#[test]
fn declining_a_nested_runs_gate_rolls_it_back_and_ends_the_parent_declined() {
    let (out, outer, inner) = paused_outer(&[]);
    let root = out.root.path().to_path_buf();
    let declined = out
        .then()
        .args(["--commands-dir", "ops", "resume", &outer, "--decline"])
        .run();
    declined.assert_status(3);
    assert_eq!(project_file(&root, "trace"), "prepare\nunprepare\n");
    let dir = |id: &str| run_dir(&root, id);
    let inner_state = read_json(&dir(&inner).join("state.json"));
    assert_eq!(inner_state["status"], "declined");
    assert_eq!(inner_state["approvals"][0]["step_id"], "push");
    assert_eq!(inner_state["approvals"][0]["declined"], true);
    assert_eq!(
        read_json(&dir(&outer).join("state.json"))["status"],
        "declined"
    );
    assert_eq!(
        statuses(&dir(&outer)),
        [("call-inner", "declined"), ("after", "pending")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // Nothing holds `inner` now: a new run starts (and pauses at its own gate).
    let fresh = declined
        .then()
        .args(["--commands-dir", "ops", "run", "inner"])
        .run();
    fresh.assert_status(3);
    assert_eq!(
        project_file(&root, "trace"),
        "prepare\nunprepare\nprepare\n"
    );
}

/// The nested command's file changed while the parent waited with it. `resume PARENT` is
/// refused as for a changed file of its own: nothing runs, both runs stay paused (it used to
/// start the nested resume, which refused, and the parent failed and rolled back). With
/// `--force` the nested run goes on with the changed file.
#[test]
fn a_changed_nested_command_refuses_the_parents_resume_unless_forced() {
    let (out, outer, inner) = paused_outer(&[]);
    let root = out.root.path().to_path_buf();
    let changed = INNER.replace("echo push >> trace", "echo push-v2 >> trace");
    std::fs::write(root.join("project/ops/inner.md"), changed).expect("change inner.md");
    let refused = out
        .then()
        .args([
            "--commands-dir",
            "ops",
            "resume",
            &outer,
            "--approve",
            "push",
        ])
        .run();
    refused.assert_status(2);
    assert_eq!(
        refused.stderr,
        format!(
            "error: the command `inner` changed since run {inner} started, which run {outer} \
             goes on with; resuming could run steps that were never planned\n  hint: review \
             the change, then `nixcmd resume {outer} --force --approve push` to resume anyway\n"
        )
    );
    assert_eq!(project_file(&root, "trace"), "prepare\n");
    // Declining, the hint is `--force --decline`: `--approve push` would run the step.
    let refused = refused
        .then()
        .args(["--commands-dir", "ops", "resume", &outer, "--decline"])
        .run();
    refused.assert_status(2);
    assert!(
        refused.stderr.ends_with(&format!(
            "hint: review the change, then `nixcmd resume {outer} --force --decline` to resume \
             anyway\n"
        )),
        "{}",
        refused.stderr
    );
    let dir = |id: &str| run_dir(&root, id);
    for id in [&outer, &inner] {
        assert_eq!(
            read_json(&dir(id).join("state.json"))["status"],
            "awaiting_confirmation"
        );
    }

    let forced = refused
        .then()
        .args([
            "--commands-dir",
            "ops",
            "resume",
            &outer,
            "--force",
            "--approve",
            "push",
            "--approve",
            "after",
        ])
        .run();
    forced.assert_status(0);
    assert_eq!(project_file(&root, "trace"), "prepare\npush-v2\nafter\n");
    assert_eq!(
        read_json(&dir(&inner).join("state.json"))["status"],
        "succeeded"
    );
    assert_eq!(run_dirs(&root).len(), 2);
}

/// A nested block's log holds what its nested run told, redacted with the parent's secrets
/// too: a value the parent exported as a secret, printed by the nested run (which does not
/// know it is one), reached the parent's log in clear (its events were redacted).
#[test]
fn a_nested_blocks_log_is_redacted_with_the_parents_secrets() {
    let outer = "---\ndescription: outer\n---\n# Outer\n## Steps\n### Export\n```bash\n\
                 echo \"API_TOKEN=sekrit-1234\" >> \"$NIXCMD_ENV\"\n```\n### Call inner\n\
                 ```bash\n/inner\n```\n";
    let inner = "---\ndescription: inner\nnixcmd: {}\n---\n# Inner\n## Steps\n### Show\n\
                 ```bash {id=show}\necho \"read: $(cat token.txt)\"\n```\n";
    let out = Test::new()
        .file("project/ops/outer.md", outer)
        .file("project/ops/inner.md", inner)
        .file("project/token.txt", "sekrit-1234\n")
        .args([
            "--commands-dir",
            "ops",
            "run",
            "outer",
            "--yes",
            "--verbose",
        ])
        .run();
    out.assert_status(0);
    let root = out.root.path().to_path_buf();
    let log = std::fs::read_to_string(
        run_dir(&root, &run_of(&root, "outer")).join("logs/call-inner.log"),
    )
    .expect("the nested block's log");
    assert!(!log.contains("sekrit-1234"), "{log}");
    assert!(log.contains("read: [REDACTED]"), "{log}");
    assert!(!out.stdout.contains("sekrit-1234"), "{}", out.stdout);
}

const INNER_WAITING: &str = r#"---
description: inner, with a step that waits
nixcmd: {}
---
# Inner
## Steps
### Prepare
```bash {id=prepare}
echo prepare >> trace
```
### Wait
```bash {id=wait}
echo waiting >> trace
while [ ! -e go ]; do sleep 0.02; done
echo done >> trace
```
"#;

/// The parent's nixcmd dies (`kill -9`) while its nested run is in a step. `resume PARENT`
/// goes on with that nested run (recorded as the parent's `nested_wait` when it started): its
/// interrupted step runs again, its finished one does not, and no new run of it starts.
#[test]
fn resuming_a_parent_killed_inside_a_nested_run_resumes_that_nested_run() {
    let run = Spawned::start(
        Test::new()
            .file("project/ops/outer.md", OUTER)
            .file("project/ops/inner.md", INNER_WAITING)
            .args([
                "--commands-dir",
                "ops",
                "run",
                "outer",
                "--approve",
                "call-inner",
            ]),
    );
    let root = run.root().to_path_buf();
    let _left = crate::run_support::KillLeftBehindOnPanic(root.clone());
    crate::run_support::wait_until("the nested step", Duration::from_secs(30), || {
        project_file(&root, "trace") == "prepare\nwaiting\n"
    });
    run.signal(libc::SIGKILL);
    let out = run.wait();
    let (outer, inner) = (run_of(&root, "outer"), run_of(&root, "inner"));
    // While the nested run's step still runs, orphaned: refused, naming that run.
    let refused = out
        .then()
        .args(["--commands-dir", "ops", "resume", &outer])
        .run();
    refused.assert_status(2);
    assert!(
        refused.stderr.starts_with(&format!(
            "error: run {inner} still has processes of step `wait` running"
        )),
        "{}",
        refused.stderr
    );
    std::fs::write(root.join("project/go"), "").expect("let the orphaned step end");
    crate::run_support::wait_until("the orphaned step", Duration::from_secs(10), || {
        project_file(&root, "trace") == "prepare\nwaiting\ndone\n"
            && crate::run_support::processes(&format!("{}/state/", root.display())).is_empty()
    });
    let out = refused;
    let dir = |id: &str| run_dir(&root, id);
    assert_eq!(
        read_json(&dir(&outer).join("state.json"))["nested_wait"],
        serde_json::json!({"step_id": "call-inner", "line": 0, "command": "inner",
            "run_id": inner})
    );
    let resumed = out
        .then()
        .args([
            "--commands-dir",
            "ops",
            "resume",
            &outer,
            "--approve",
            "after",
        ])
        .run();
    resumed.assert_status(0);
    assert_eq!(
        project_file(&root, "trace"),
        "prepare\nwaiting\ndone\nwaiting\ndone\nafter\n"
    );
    assert_eq!(run_dirs(&root).len(), 2, "no new run of inner");
    assert_eq!(
        statuses(&dir(&inner)),
        [("prepare", "succeeded"), ("wait", "succeeded")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let state = read_json(&dir(&outer).join("state.json"));
    assert_eq!(state["status"], "succeeded");
    assert!(state.get("nested_wait").is_none(), "{state}");
}

/// `outer` calls `/inner`, whose first step kills nixcmd (`kill -9`, as a crash would) unless
/// `survive` exists in the project; `prepare` and `after` around it.
const OUTER_AROUND: &str = "---\ndescription: outer\n---\n# Outer\n## Steps\n### Prepare\n```bash\necho prepare >> trace\n```\n### Call inner\n```bash\n/inner\n```\n### After\n```bash\necho after >> trace\n```\n";
const INNER_DYING: &str = "---\ndescription: inner\nnixcmd: {}\n---\n# Inner\n## Steps\n### Die\n```bash {id=die}\necho die >> trace\n[ -e survive ] || kill -9 $PPID\n```\n";

/// `outer` killed inside the step of `/inner`: the output, outer's run id and inner's run id
/// (recorded as outer's `nested_wait`), and the folder of inner's run, removed.
fn outer_killed_in_inner() -> (crate::support::Output, String, String, std::path::PathBuf) {
    let out = Test::new()
        .file("project/ops/outer.md", OUTER_AROUND)
        .file("project/ops/inner.md", INNER_DYING)
        .args([
            "--commands-dir",
            "ops",
            "run",
            "outer",
            "--approve",
            "prepare",
            "--approve",
            "call-inner",
        ])
        .run();
    assert_eq!(out.status, -1, "killed:\n{}", out.normalized());
    let root = out.root.path().to_path_buf();
    assert_eq!(project_file(&root, "trace"), "prepare\ndie\n");
    let (outer, inner) = (run_of(&root, "outer"), run_of(&root, "inner"));
    assert_eq!(
        read_json(&run_dir(&root, &outer).join("state.json"))["nested_wait"],
        serde_json::json!({"step_id": "call-inner", "line": 0, "command": "inner",
            "run_id": inner})
    );
    let inner_dir = run_dir(&root, &inner);
    std::fs::remove_dir_all(&inner_dir).expect("remove inner's folder");
    std::fs::write(root.join("project/survive"), "").expect("survive");
    (out, outer, inner, inner_dir)
}

/// The parent's nixcmd died after it recorded its nested run (`nested_wait`) and before that
/// run's first record (its folder made, no `state.json`): nothing of the nested run ran, so
/// `resume PARENT` starts it anew, says so in the step's log, and removes the empty folder.
/// It used to fail the step with "no run `inner-…`" and end the parent failed.
#[test]
fn a_nested_run_that_recorded_nothing_starts_anew_when_the_parent_resumes() {
    let (out, outer, inner, inner_dir) = outer_killed_in_inner();
    // What a nested run's folder holds before its first record.
    for sub in ["logs", "scripts", "state"] {
        std::fs::create_dir_all(inner_dir.join(sub)).unwrap();
    }
    for file in ["env", "events.ndjson"] {
        std::fs::write(inner_dir.join(file), "").unwrap();
    }
    let root = out.root.path().to_path_buf();
    let resumed = out
        .then()
        .args([
            "--commands-dir",
            "ops",
            "resume",
            &outer,
            "--approve",
            "after",
        ])
        .run();
    resumed.assert_status(0);
    assert_eq!(project_file(&root, "trace"), "prepare\ndie\ndie\nafter\n");
    assert!(
        !inner_dir.exists(),
        "the empty folder of {inner} is removed"
    );
    let again = run_of(&root, "inner");
    assert_ne!(again, inner);
    assert_eq!(
        statuses(&run_dir(&root, &again)),
        [("die".to_string(), "succeeded".to_string())]
    );
    let log = std::fs::read_to_string(run_dir(&root, &outer).join("logs/call-inner.log")).unwrap();
    assert!(
        log.contains(&format!(
            "\n[/inner] run {inner} recorded nothing before this run's nixcmd stopped: /inner \
             starts anew\n[/inner] started as run {again}\n"
        )),
        "{log}"
    );
    assert_eq!(
        read_json(&run_dir(&root, &outer).join("state.json"))["status"],
        "succeeded"
    );
}

/// The nested run a killed parent goes on with is gone (its folder removed by hand): what it
/// did is unknown, so `resume PARENT` refuses before anything runs, naming it, instead of
/// failing the step with "no run `inner-…`" and rolling the parent back.
#[test]
fn a_parent_whose_nested_run_is_gone_is_not_resumed() {
    let (out, outer, inner, _) = outer_killed_in_inner();
    let root = out.root.path().to_path_buf();
    let refused = out
        .then()
        .args([
            "--commands-dir",
            "ops",
            "resume",
            &outer,
            "--approve",
            "after",
        ])
        .run();
    assert_eq!(
        (
            refused.status,
            refused.stdout.as_str(),
            refused.filter(&refused.stderr)
        ),
        (
            2,
            "",
            format!(
                "error: run {outer} goes on with its nested run {inner} (`/inner` in step \
                 `call-inner`), whose folder [TEMP]/state/nixcmd/runs/{inner} is gone: what \
                 that run did is unknown, so nothing was run\n  hint: put back the nested \
                 run's records to resume; or check by hand what `/inner` left, and move run \
                 {outer}'s folder [TEMP]/state/nixcmd/runs/{outer} away to start over with \
                 `nixcmd run outer`\n"
            )
        )
    );
    assert_eq!(project_file(&root, "trace"), "prepare\ndie\n");
    assert_eq!(
        read_json(&run_dir(&root, &outer).join("state.json"))["status"],
        "running"
    );
}
