//! The heartbeat of plain output (`NIXCMD_HEARTBEAT`): a step that prints nothing for the
//! interval is named again with its elapsed time and last output line, so that CI does not
//! kill a silent job. Times on a loaded machine vary: the tests that count beats hold the
//! step until they have seen the beats they expect, then let it end well before the next.

use crate::run_support::{LIMIT, Spawned, events, normalize, only_run, run_dirs, wait_until};
use crate::support::Test;

/// A step silent after its first line until the project has a file `go`, then a quick one.
const UNTIL_GO: &str = r#"---
description: A slow, silent step
nixcmd: {}
---
# Slow

## Steps
### Wait
```bash {id=wait}
echo "building foo.drv"
while [ ! -e go ]; do sleep 0.02; done
```
### Quick
```bash {id=quick}
echo done
```
"#;

/// Runs `test`, lets its step end once `seen` (stdout or stderr so far) holds two heartbeats.
fn after_two_beats(test: Test, on_stderr: bool) -> crate::support::Output {
    let run = Spawned::start(test);
    let root = run.root().to_path_buf();
    wait_until("two heartbeats", LIMIT, || {
        let text = if on_stderr {
            run.stderr_so_far()
        } else {
            run.stdout_so_far()
        };
        heartbeats(&text).len() >= 2
    });
    std::fs::write(root.join("project/go"), "").expect("let the step end");
    run.wait()
}

/// A 2.5 s step, silent after its first line, then a quick one.
const SLOW: &str = r#"---
description: A slow, silent step
nixcmd: {}
---
# Slow

## Steps
### Wait
```bash {id=wait}
echo "building foo.drv"
sleep 2.5
```
### Quick
```bash {id=quick}
echo done
```
"#;

/// A step printing a line every 0.3 s for about 2.5 s (`CHATTY`), or until `go`
/// (`CHATTY_UNTIL_GO`).
const CHATTY: &str = r#"---
description: A slow step that keeps talking
nixcmd: {}
---
# Chatty

## Steps
### Talk
```bash {id=talk}
for i in 1 2 3 4 5 6 7 8; do echo "line $i"; sleep 0.3; done
```
"#;

const CHATTY_UNTIL_GO: &str = r#"---
description: A slow step that keeps talking
nixcmd: {}
---
# Chatty

## Steps
### Talk
```bash {id=talk}
i=0
while [ ! -e go ]; do i=$((i + 1)); echo "line $i"; sleep 0.3; done
```
"#;

/// The lines of `text` without their `[HH:MM:SS] ` stamps.
fn unstamped(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| match l.find("] ") {
            Some(i) if l.starts_with('[') => l[i + 2..].to_string(),
            _ => l.to_string(),
        })
        .collect()
}

fn heartbeats(text: &str) -> Vec<String> {
    unstamped(text)
        .into_iter()
        .filter(|l| l.contains("still running"))
        .collect()
}

/// Elapsed times vary with the load: `(1.0s;` becomes `([ELAPSED];`.
fn without_elapsed(line: &str) -> String {
    match (line.find(" ("), line.find(';')) {
        (Some(a), Some(b)) if a < b => format!("{} ([ELAPSED]{}", &line[..a], &line[b..]),
        _ => line.to_string(),
    }
}

#[test]
fn a_silent_step_gets_a_heartbeat_line_each_interval_between_its_start_and_end() {
    let out = after_two_beats(
        Test::new()
            .runbook("slow.md", UNTIL_GO)
            .env("NIXCMD_HEARTBEAT", "1s")
            .args(["run", "slow"]),
        false,
    );
    out.assert_status(0);
    let lines = unstamped(&out.stdout);
    let start = lines
        .iter()
        .position(|l| l == "▶ wait")
        .expect("start line");
    let end = lines
        .iter()
        .position(|l| l.starts_with("✓ wait ok"))
        .expect("end line");
    let between: Vec<String> = lines[start + 1..end]
        .iter()
        .map(|l| without_elapsed(l))
        .collect();
    assert_eq!(
        between,
        [
            "… wait still running ([ELAPSED]; last output: building foo.drv)",
            "… wait still running ([ELAPSED]; last output: building foo.drv)",
        ],
        "{}",
        out.stdout
    );
    // Every heartbeat line is stamped like the others, and none is about another step.
    assert_eq!(heartbeats(&out.stdout).len(), 2, "{}", out.stdout);
    for l in out.stdout.lines().filter(|l| l.contains("still running")) {
        assert!(
            l.starts_with('[') && l.as_bytes().get(9) == Some(&b']'),
            "{l}"
        );
    }
    // The step's records are what the step printed, nothing more.
    let log = std::fs::read_to_string(only_run(out.root.path()).join("logs/wait.log"))
        .expect("the step's log");
    assert_eq!(
        normalize(&log, out.root.path()),
        "── wait attempt 1/1 at [TIMESTAMP] ──\nbuilding foo.drv\n"
    );
    let recorded = std::fs::read_to_string(only_run(out.root.path()).join("events.ndjson"))
        .expect("events.ndjson");
    assert!(!recorded.contains("still running"), "{recorded}");
}

#[test]
fn a_chatty_step_with_verbose_gets_no_heartbeat() {
    let out = Test::new()
        .runbook("chatty.md", CHATTY)
        .env("NIXCMD_HEARTBEAT", "1s")
        .args(["run", "chatty", "--verbose"])
        .run();
    out.assert_status(0);
    assert!(out.stdout.contains("talk │ line 8"), "{}", out.stdout);
    assert_eq!(heartbeats(&out.stdout), Vec::<String>::new());
}

#[test]
fn without_verbose_a_chatty_step_is_silent_here_so_it_gets_heartbeats() {
    let out = after_two_beats(
        Test::new()
            .runbook("chatty.md", CHATTY_UNTIL_GO)
            .env("NIXCMD_HEARTBEAT", "1s")
            .args(["run", "chatty"]),
        false,
    );
    out.assert_status(0);
    let beats = heartbeats(&out.stdout);
    assert_eq!(beats.len(), 2, "{}", out.stdout);
    for b in &beats {
        assert!(b.starts_with("… talk still running ("), "{b}");
        assert!(b.contains("; last output: line "), "{b}");
    }
}

#[test]
fn off_and_zero_turn_the_heartbeat_off() {
    for value in ["off", "0"] {
        let out = Test::new()
            .runbook("slow.md", SLOW)
            .env("NIXCMD_HEARTBEAT", value)
            .args(["run", "slow"])
            .run();
        out.assert_status(0);
        assert_eq!(heartbeats(&out.stdout), Vec::<String>::new(), "{value}");
    }
}

#[test]
fn a_bad_interval_is_a_usage_error_before_anything_runs() {
    let out = Test::new()
        .runbook("slow.md", SLOW)
        .env("NIXCMD_HEARTBEAT", "abc")
        .args(["run", "slow"])
        .run();
    out.assert_status(2);
    assert_eq!(out.stdout, "");
    let hint = "  hint: set it to a duration such as 30s, 1m or 5m, or to 0 or off for no \
                heartbeat\n";
    assert!(
        out.stderr
            .starts_with("error: NIXCMD_HEARTBEAT=`abc`: `abc` is not a duration")
            && out.stderr.ends_with(hint)
            && out.stderr.lines().count() == 2,
        "{}",
        out.stderr
    );
    // Nothing ran: no run folder.
    assert!(run_dirs(out.root.path()).is_empty());
}

#[test]
fn with_json_the_heartbeat_is_on_stderr_and_the_event_stream_is_unchanged() {
    let out = after_two_beats(
        Test::new()
            .runbook("slow.md", UNTIL_GO)
            .env("NIXCMD_HEARTBEAT", "1s")
            .args(["run", "slow", "--format", "json"]),
        true,
    );
    out.assert_status(0);
    assert_eq!(heartbeats(&out.stderr).len(), 2, "{}", out.stderr);
    assert!(!out.stdout.contains("still running"));
    let types: Vec<String> = events(&out.stdout)
        .iter()
        .map(|e| e["type"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        types,
        [
            "run_started",
            "step_started",
            "output",
            "step_finished",
            "step_started",
            "output",
            "step_finished",
            "run_finished"
        ]
    );
}

#[test]
fn the_live_display_at_a_terminal_has_no_heartbeat() {
    let test = Test::new()
        .runbook("slow.md", SLOW)
        .env("NIXCMD_HEARTBEAT", "1s")
        .args(["run", "slow"]);
    let (status, screen) = crate::run_support::run_on_terminal(test, 100);
    assert_eq!(status, 0, "{screen}");
    assert!(screen.contains("succeeded"), "{screen}");
    assert!(!screen.contains("still running"), "{screen}");
}
