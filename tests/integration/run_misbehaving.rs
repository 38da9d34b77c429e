//! Steps that misbehave as real scripts do: odd output (long lines, control sequences,
//! bytes that are not UTF-8), secrets that do not look like secrets, processes that escape,
//! exits by signal. The run's records, events and screen must stay exact and readable.

use crate::run_support::{
    LIMIT, Spawned, events, normalize, only_run, processes, project_file, read_json,
    run_on_terminal, wait_until,
};
use crate::support::Test;
use serde_json::Value;
use std::time::Duration;

/// The step's log with its header's time normalized.
fn log(root: &std::path::Path, step: &str) -> String {
    let path = only_run(root).join("logs").join(format!("{step}.log"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    normalize(&text, root)
}

/// The `step_finished` events of the run: (step, exit code, reason).
fn finished(root: &std::path::Path) -> Vec<(String, Value, Value)> {
    let text = std::fs::read_to_string(only_run(root).join("events.ndjson")).expect("events");
    events(&text)
        .into_iter()
        .filter(|e| e["type"] == "step_finished")
        .map(|e| {
            (
                e["step_id"].as_str().unwrap_or_default().to_string(),
                e["exit_code"].clone(),
                e["reason"].clone(),
            )
        })
        .collect()
}

/// A line longer than the 64 KiB nixcmd passes on whole is split; a character that would
/// straddle the split goes whole to the next part instead of becoming two U+FFFD.
#[test]
fn a_character_at_the_long_line_split_reaches_the_log_and_events_whole() {
    let out = Test::new()
        .runbook(
            "long.md",
            r#"---
description: A very long line
nixcmd: {}
---
# Long

## Steps
### Long
```bash {id=long}
head -c 65535 /dev/zero | tr '\0' x
printf '\303\251tail\n'
```
"#,
        )
        .args(["run", "long", "--format", "json"])
        .run();
    out.assert_status(0);
    let root = out.root.path();
    // Runs of `x` are shown as their length: a failure message of 64 KiB helps nobody.
    let short = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| match l.trim_start_matches('x') {
                rest if rest.len() < l.len() => format!("{}×x{rest}", l.len() - rest.len()),
                _ => l.to_string(),
            })
            .collect()
    };
    assert_eq!(
        short(&log(root, "long")),
        ["── long attempt 1/1 at [TIMESTAMP] ──", "65535×x", "étail"]
    );
    let lines: Vec<String> = events(&out.stdout)
        .iter()
        .filter(|e| e["type"] == "output")
        .map(|e| e["line"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(short(&lines.join("\n")), ["65535×x", "étail"]);
}

/// Output is redacted line by line, where a secret of several lines (a private key) never
/// appears whole: each of its lines is redacted, blank and short ones excepted.
#[test]
fn each_line_of_a_secret_of_several_lines_is_redacted() {
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n\nQyNTUxOQAAACBzZWNyZXQ=\n-----END OPENSSH PRIVATE KEY-----";
    let out = Test::new()
        .runbook(
            "key.md",
            r#"---
description: Prints a key by mistake
nixcmd: {}
---
# Key

## Steps
### Show
```bash {id=show}
echo "using: $DEPLOY_KEY"
echo "and ok"
```
"#,
        )
        .env("DEPLOY_KEY", key)
        .args(["run", "key", "--format", "json"])
        .run();
    out.assert_status(0);
    let root = out.root.path();
    assert_eq!(
        log(root, "show"),
        "── show attempt 1/1 at [TIMESTAMP] ──\nusing: [REDACTED]\n[REDACTED]\n\n[REDACTED]\n[REDACTED]\nand ok\n"
    );
    assert!(
        !out.stdout.contains("b3BlbnNzaC1rZXktdjEAAAAA"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("QyNTUxOQAAACBzZWNyZXQ="),
        "{}",
        out.stdout
    );
}

/// A secret's value can be any text, `1234` or a field name such as `type` too: it is
/// redacted from string values only, and every event line, in `events.ndjson` and on stdout,
/// stays JSON with its fields intact. `TOKENIZERS_PARALLELISM=false` (in many environments)
/// names no secret worth hiding: `false` in output stays.
#[test]
fn a_secret_that_reads_like_json_leaves_every_event_line_json() {
    let out = Test::new()
        .runbook(
            "plain.md",
            r#"---
description: Prints a word
nixcmd: {}
---
# Plain

## Steps
### Say
```bash {id=say}
echo "parallel: false, type 1234"
```
"#,
        )
        .env("TOKENIZERS_PARALLELISM", "false")
        .env("PIN_SECRET", "1234")
        .env("API_KEY", "type")
        .args(["run", "plain", "--format", "json"])
        .run();
    out.assert_status(0);
    let root = out.root.path();
    let stream = events(&out.stdout);
    let recorded =
        events(&std::fs::read_to_string(only_run(root).join("events.ndjson")).expect("events"));
    assert_eq!(stream, recorded);
    assert_eq!(stream[0]["type"], "run_started");
    assert_eq!(stream[0]["dry_run"], false);
    assert_eq!(stream[0]["resumed"], false);
    let output: Vec<&Value> = stream.iter().filter(|e| e["type"] == "output").collect();
    assert_eq!(output.len(), 1);
    assert_eq!(output[0]["line"], "parallel: false, [REDACTED] [REDACTED]");
    assert!(stream.iter().all(|e| e["type"].is_string()), "{stream:?}");
    let last = stream.last().expect("events");
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["exit_code"], 0);
}

/// The exit of a step says what happened: a status is a status (`exit 255` is no "signal
/// 127"), one of 128+N names signal N beside it (bash exits so when a command was killed),
/// and a shell that was killed itself is reported as killed, with the signal's name.
#[test]
fn an_exit_status_is_told_apart_from_a_signal_and_names_it() {
    let out = Test::new()
        .runbook(
            "exits.md",
            r#"---
description: Ends every way
nixcmd: {}
---
# Exits

## Steps
### Status
```bash {id=status on-fail=continue}
exit 255
```
### Interrupted
```bash {id=interrupted on-fail=continue}
exit 130
```
### Child killed
```bash {id=child-killed on-fail=continue}
sleep 30 &
kill -KILL $!
wait $!
```
### Killed
```bash {id=killed on-fail=continue}
kill -TERM $$
```
"#,
        )
        .args(["run", "exits"])
        .run();
    out.assert_status(0);
    let root = out.root.path();
    assert_eq!(
        finished(root),
        [
            (
                "status".to_string(),
                Value::from(255),
                Value::from("exited with status 255")
            ),
            (
                "interrupted".to_string(),
                Value::from(130),
                Value::from("exited with status 130 (128 + 2: SIGINT)")
            ),
            (
                "child-killed".to_string(),
                Value::from(137),
                Value::from("exited with status 137 (128 + 9: SIGKILL)")
            ),
            (
                "killed".to_string(),
                Value::from(143),
                Value::from("killed by signal 15 (SIGTERM)")
            ),
        ]
    );
    let progress = read_json(&only_run(root).join("progress.json"));
    assert_eq!(progress["steps"][3]["exit_code"], 143);
    assert!(
        out.stdout.contains(
            "warning: step `killed` killed by signal 15 (SIGTERM) (continuing: on-fail=continue)"
        ),
        "{}",
        out.stdout
    );
}

/// Parallel steps run on threads of their own, but the kernel hands a process a step left
/// (`setsid … &`) to nixcmd's main thread: it is found there and stopped with its step, not
/// left running after the run (and the step does not wait for it to close its output).
#[test]
fn a_process_a_parallel_step_leaves_is_stopped_with_the_step() {
    let out = Test::new()
        .runbook(
            "par.md",
            r#"---
description: Parallel steps, one leaves a daemon
nixcmd: {}
---
# Par

## Steps
### Leave
```bash {id=leave group=g}
setsid bash -c 'exec -a "$0" sleep 1000' "$PWD/daemon" &
for _ in $(seq 200); do pgrep -f "$PWD/daemon" >/dev/null && break; sleep 0.05; done
pgrep -f "$PWD/daemon" >/dev/null && echo daemon-started >> trace
```
### Other
```bash {id=other group=g}
sleep 0.2
```
### Look
```bash {id=look}
if pgrep -f "$PWD/daemon" >/dev/null; then echo daemon-alive >> trace; else echo daemon-gone >> trace; fi
```
"#,
        )
        .args(["run", "par"])
        .run();
    out.assert_status(0);
    let root = out.root.path();
    assert_eq!(project_file(root, "trace"), "daemon-started\ndaemon-gone\n");
    assert_eq!(processes(&root.display().to_string()), Vec::<String>::new());
    // Found at once, not after the wait for output that nobody closes (3 × 2 s + 1 s).
    assert!(out.elapsed < Duration::from_secs(6), "{:?}", out.elapsed);
}

/// At a terminal the failure summary shows the step's last lines as the live display and
/// `--verbose` do: colors kept; cursor moves, screen switches and a progress bar's `\r`
/// (which would overwrite the line's own start) not.
#[test]
fn the_failure_summary_at_a_terminal_keeps_only_the_colors_of_the_output() {
    let test = Test::new()
        .runbook(
            "fails.md",
            r#"---
description: Fails after hostile output
nixcmd: {}
---
# Fails

## Steps
### Fetch
```bash {id=fetch}
printf 'fetching 10%%\rfetching 100%%\n'
printf '\033[31merror:\033[0m \033[?1049h\033[2Jgone\n'
exit 3
```
"#,
        )
        .env_remove("CI")
        .args(["run", "fails", "--color", "never"]);
    let (status, screen) = run_on_terminal(test, 100);
    assert_eq!(status, 1, "{screen:?}");
    assert!(!screen.contains("\x1b[?1049h"), "{screen:?}");
    assert!(!screen.contains("\x1b[2J"), "{screen:?}");
    assert!(
        screen.contains("  │ fetching 100%\r\n  │ \x1b[31merror:\x1b[0m gone\x1b[0m\r\n"),
        "{screen:?}"
    );
}

/// One byte that is not UTF-8 in `$NIXCMD_ENV` costs its own line only, not every export.
#[test]
fn an_env_file_line_that_is_not_utf8_loses_only_itself() {
    let out = Test::new()
        .runbook(
            "env.md",
            r#"---
description: Exports
nixcmd: {}
---
# Env

## Steps
### Export
```bash {id=export}
printf 'NAME=caf\351\nGOOD=ok\nQUOTED="a" '"'"'b'"'"' $(x) =c\n' >> "$NIXCMD_ENV"
```
### Use
```bash {id=use}
printf '[%s]\n' "$GOOD" "$QUOTED" "${NAME-unset}"
```
"#,
        )
        .args(["run", "env"])
        .run();
    out.assert_status(0);
    assert_eq!(
        log(out.root.path(), "use"),
        "── use attempt 1/1 at [TIMESTAMP] ──\n[ok]\n[\"a\" 'b' $(x) =c]\n[unset]\n"
    );
}

/// An export too long for Linux to pass to a program (over 128 KiB) sets nothing, with a
/// warning naming it: it used to make every later block fail to start ("Argument list too
/// long"), the rollback and `always` blocks too.
#[test]
fn an_export_too_long_to_pass_sets_nothing_and_later_blocks_still_start() {
    let out = Test::new()
        .runbook(
            "big.md",
            r#"---
description: A large export
nixcmd: {}
---
# Big

## Steps
### Export
```bash {id=export}
echo "BIG=$(head -c 200000 /dev/zero | tr '\0' x)" >> "$NIXCMD_ENV"
echo "SMALL=ok" >> "$NIXCMD_ENV"
```
### Use
```bash {id=use}
printf '[%s]\n' "${BIG-unset}" "$SMALL"
```
### Clean up
```bash {id=cleanup always}
echo cleaned >> trace
```
"#,
        )
        .args(["run", "big", "--format", "json"])
        .run();
    out.assert_status(0);
    assert_eq!(
        log(out.root.path(), "use"),
        "── use attempt 1/1 at [TIMESTAMP] ──\n[unset]\n[ok]\n"
    );
    assert_eq!(project_file(out.root.path(), "trace"), "cleaned\n");
    let warnings = crate::run_support::warning_messages(&out.stdout);
    assert_eq!(
        warnings,
        [
            "step `export`: $NIXCMD_ENV line 1: `BIG` would be 200005 bytes, and Linux passes at \
          most 128 KiB per environment variable: not set (write a large value to a file and \
          export its path)"
        ]
    );
}

/// A process that left the step's group and dropped its token (`setsid env -i …`, a daemon
/// that clears its environment) is still the step's: stopped when the step ends, after a
/// success as after a failure, even when it ignores SIGTERM.
#[test]
fn a_process_that_left_the_group_and_dropped_its_token_is_stopped_with_the_step() {
    let out = Test::new()
        .runbook(
            "strip.md",
            r#"---
description: Daemons without a token
nixcmd: {}
---
# Strip

## Steps
### Start
```bash {id=start}
setsid env -u NIXCMD_STEP_TOKEN bash -c 'exec -a "$0" sleep 1000' "$PWD/daemon" >/dev/null 2>&1 </dev/null &
for _ in $(seq 200); do pgrep -f "$PWD/daemon" >/dev/null && break; sleep 0.05; done
pgrep -f "$PWD/daemon" >/dev/null && echo daemon-started >> trace
```
### Look
```bash {id=look}
if pgrep -f "$PWD/daemon" >/dev/null; then echo daemon-alive >> trace; else echo daemon-gone >> trace; fi
```
### Fail
```bash {id=fail}
setsid env -u NIXCMD_STEP_TOKEN bash -c 'trap "" TERM; exec -a "$0" sleep 1000' "$PWD/deaf" &
for _ in $(seq 200); do pgrep -f "$PWD/deaf" >/dev/null && break; sleep 0.05; done
pgrep -f "$PWD/deaf" >/dev/null && echo deaf-started >> trace
exit 4
```
"#,
        )
        .args(["run", "strip"])
        .run();
    out.assert_status(1);
    let root = out.root.path();
    assert_eq!(
        project_file(root, "trace"),
        "daemon-started\ndaemon-gone\ndeaf-started\n"
    );
    assert_eq!(processes(&root.display().to_string()), Vec::<String>::new());
}

/// Values of several lines go through `$NIXCMD_ENV` as in GitHub Actions (`NAME<<DELIMITER`,
/// the lines, `DELIMITER`), a secret's lines are redacted each, and a line that sets nothing
/// is a warning naming it, given once, instead of vanishing.
#[test]
fn values_of_several_lines_reach_later_steps_and_bad_env_lines_are_warned_about() {
    let out = Test::new()
        .runbook(
            "env.md",
            r#"---
description: Exports of several lines
nixcmd: {}
---
# Env

## Steps
### Export
```bash {id=export}
{
  echo 'DEPLOY_KEY<<EOF'
  printf -- '-----BEGIN KEY-----\nAAAAline1secret\nBBBBline2secret\n-----END KEY-----\n'
  echo 'EOF'
  echo 'NOTES<<END'
  printf 'changelog:\n- fix A=B\n\n- ünïcode\nEND \n'
  echo 'END'
  echo 'PLAIN=a=b "q"'
  echo 'this line is wrong'
  printf 'P=a\nb\n'
} >> "$NIXCMD_ENV"
```
### Use
```bash {id=use}
printf '[%s]\n' "$DEPLOY_KEY" "$NOTES" "$PLAIN" "$P"
printf 'OPEN_TOKEN<<EOT\nhalf\n' >> "$NIXCMD_ENV"
```
### Last
```bash {id=last}
echo "${OPEN_TOKEN-unset}"
```
"#,
        )
        .args(["run", "env"])
        .run();
    out.assert_status(0);
    assert_eq!(
        log(out.root.path(), "use"),
        "── use attempt 1/1 at [TIMESTAMP] ──\n[[REDACTED]\n[REDACTED]\n[REDACTED]\n\
         [REDACTED]]\n[changelog:\n- fix A=B\n\n- ünïcode\nEND ]\n[a=b \"q\"]\n[a]\n"
    );
    assert_eq!(
        log(out.root.path(), "last"),
        "── last attempt 1/1 at [TIMESTAMP] ──\nunset\n"
    );
    let text = std::fs::read_to_string(only_run(out.root.path()).join("events.ndjson")).unwrap();
    let warnings: Vec<(Value, Value)> = events(&text)
        .into_iter()
        .filter(|e| e["type"] == "warning")
        .map(|e| (e["step_id"].clone(), e["message"].clone()))
        .collect();
    let expected = [
        (
            "export",
            "step `export`: $NIXCMD_ENV line 15: neither `NAME=VALUE` nor `NAME<<DELIMITER`: \
             ignored",
        ),
        (
            "export",
            "step `export`: $NIXCMD_ENV line 17: neither `NAME=VALUE` nor `NAME<<DELIMITER`: \
             ignored",
        ),
        (
            "use",
            "step `use`: $NIXCMD_ENV line 18: `OPEN_TOKEN<<EOT` has no line `EOT` after it to \
             end the value: `OPEN_TOKEN` not set",
        ),
    ];
    let expected: Vec<(Value, Value)> = expected
        .iter()
        .map(|(s, m)| (Value::from(*s), Value::from(*m)))
        .collect();
    assert_eq!(warnings, expected);
    // Told as the run goes and again at its end.
    for (_, m) in &expected {
        let m = m.as_str().unwrap();
        assert_eq!(out.stdout.matches(m).count(), 2, "{m}\n{}", out.stdout);
    }
}

/// A progress bar redrawn with `\r` and no newline. Shown at once as the step's last output
/// (its newest state), in the heartbeat as in the live display; recorded as before: the
/// whole line once it ends, the same in the log and the events.
const PROGRESS: &str = r#"---
description: A progress bar
nixcmd: {}
---
# Progress

## Steps
### Fetch
```bash {id=fetch}
echo "building foo"
printf 'fetching 10%%\rfetching 55%%\r'
while [ ! -e go ]; do sleep 0.02; done
printf 'fetching 100%%\n'
```
"#;

#[test]
fn a_progress_line_is_the_heartbeats_last_output_at_once_and_is_logged_whole() {
    let run = Spawned::start(
        Test::new()
            .runbook("progress.md", PROGRESS)
            .env("NIXCMD_HEARTBEAT", "1s")
            .args(["run", "progress"]),
    );
    let root = run.root().to_path_buf();
    // The step waits until a heartbeat showed the bar (a beat before bash printed anything,
    // on a busy machine, has no last output yet).
    wait_until("a heartbeat with the bar", LIMIT, || {
        run.stdout_so_far().lines().any(|l| {
            l.contains("fetch still running") && l.ends_with("; last output: fetching 55%)")
        })
    });
    std::fs::write(root.join("project/go"), "").expect("let the step end");
    let out = run.wait();
    out.assert_status(0);
    assert_eq!(
        log(&root, "fetch"),
        "── fetch attempt 1/1 at [TIMESTAMP] ──\nbuilding foo\n\
         fetching 10%\rfetching 55%\rfetching 100%\n"
    );
    let text = std::fs::read_to_string(only_run(&root).join("events.ndjson")).expect("events");
    let lines: Vec<Value> = events(&text)
        .into_iter()
        .filter(|e| e["type"] == "output")
        .map(|e| e["line"].clone())
        .collect();
    assert_eq!(
        lines,
        [
            Value::from("building foo"),
            Value::from("fetching 10%\rfetching 55%\rfetching 100%")
        ]
    );
}

#[test]
fn a_progress_line_reaches_the_live_display_before_its_line_ends() {
    let test = Test::new()
        .runbook("progress.md", PROGRESS)
        .env_remove("CI")
        .args(["run", "progress", "--color", "never"]);
    let run = Spawned::start_on_terminal(test, 100);
    let root = run.root().to_path_buf();
    // Live rows (spinner, name, elapsed time, the bar's newest state), redrawn while the step
    // waits for `go`: shown before the line ends, not when it does.
    let live_rows = |screen: &str| {
        screen
            .split("\r\u{1b}[2K")
            .filter(|row| row.contains(" fetch  ") && row.ends_with("  fetching 55%"))
            .count()
    };
    wait_until("two live rows with the bar", LIMIT, || {
        live_rows(&run.stdout_so_far()) >= 2
    });
    std::fs::write(root.join("project/go"), "").expect("let the step end");
    let out = run.wait();
    out.assert_status(0);
}

/// A secret of several lines is redacted from the step that exports it, from its first line
/// on: before the block's delimiter is written, its lines are known as secrets already.
#[test]
fn a_secret_of_several_lines_is_redacted_while_its_block_is_written() {
    let out = Test::new()
        .runbook(
            "env.md",
            r#"---
description: A secret of several lines
nixcmd: {}
---
# Env

## Steps
### Export
```bash {id=export}
printf 'SIGNING_KEY<<EOF\nkeyline-one-4711\nkeyline-two-4712\n' >> "$NIXCMD_ENV"
echo "got keyline-one-4711"
echo "got keyline-two-4712"
# nixcmd reads those lines before the block ends.
sleep 0.5
echo EOF >> "$NIXCMD_ENV"
echo "again keyline-two-4712"
```
"#,
        )
        .args(["run", "env", "--format", "json"])
        .run();
    out.assert_status(0);
    assert_eq!(
        log(out.root.path(), "export"),
        "── export attempt 1/1 at [TIMESTAMP] ──\ngot [REDACTED]\ngot [REDACTED]\n\
         again [REDACTED]\n"
    );
    assert!(!out.stdout.contains("keyline"), "{}", out.stdout);
}

/// An export of one of nixcmd's own names through `$NIXCMD_ENV` sets nothing and is a
/// warning, as `--set` refuses them: `NIXCMD_ENV` pointed elsewhere lost every later export
/// (and left their secrets unredacted), and `NIXCMD_ARG_*`/`ARGUMENTS` replaced arguments past
/// their declaration. A secret-named one is still redacted.
#[test]
fn exports_of_nixcmds_own_names_set_nothing_and_are_warned_about() {
    let out = Test::new()
        .runbook(
            "own.md",
            r#"---
description: Exports of nixcmd's own names
nixcmd: {}
---
# Own

## Steps
### Export
```bash {id=export}
printf 'NIXCMD_ENV=/tmp/elsewhere\nARGUMENTS=evil\nNIXCMD_TOKEN<<E\nown-secret-value\nE\nOK=1\n' >> "$NIXCMD_ENV"
```
### Use
```bash {id=use}
echo 'LATER=yes' >> "$NIXCMD_ENV"
printf '[%s]\n' "${NIXCMD_ENV##*/}" "$ARGUMENTS" "${NIXCMD_TOKEN-unset}" "$OK" own-secret-value
```
### Last
```bash {id=last}
echo "$LATER"
```
"#,
        )
        .args(["run", "own"])
        .run();
    out.assert_status(0);
    assert_eq!(
        log(out.root.path(), "use"),
        "── use attempt 1/1 at [TIMESTAMP] ──\n[env]\n[]\n[unset]\n[1]\n[[REDACTED]]\n"
    );
    assert_eq!(
        log(out.root.path(), "last"),
        "── last attempt 1/1 at [TIMESTAMP] ──\nyes\n"
    );
    let text = std::fs::read_to_string(only_run(out.root.path()).join("events.ndjson")).unwrap();
    let warnings: Vec<Value> = events(&text)
        .into_iter()
        .filter(|e| e["type"] == "warning")
        .map(|e| e["message"].clone())
        .collect();
    assert_eq!(
        warnings,
        [
            "step `export`: $NIXCMD_ENV line 1: `NIXCMD_ENV` is set by nixcmd itself: not set",
            "step `export`: $NIXCMD_ENV line 2: `ARGUMENTS` is set by nixcmd itself: not set",
            "step `export`: $NIXCMD_ENV line 3: `NIXCMD_TOKEN` is set by nixcmd itself: not set",
        ]
    );
}
