//! The heartbeat of plain output (`NIXCMD_HEARTBEAT`): a step that prints nothing for the
//! interval is named again with its elapsed time and last output line, so that CI does not
//! kill a silent job. Times on a loaded machine vary: these tests count lines and leave half
//! an interval of margin either side.

use crate::run_support::{events, only_run, run_dirs};
use crate::support::Test;

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

/// A step printing a line every 0.3 s for about 2.5 s.
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
    let out = Test::new()
        .runbook("slow.md", SLOW)
        .env("NIXCMD_HEARTBEAT", "1s")
        .args(["run", "slow"])
        .run();
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
    assert!(log.contains("building foo.drv"), "{log}");
    assert!(!log.contains("still running"), "{log}");
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
    let out = Test::new()
        .runbook("chatty.md", CHATTY)
        .env("NIXCMD_HEARTBEAT", "1s")
        .args(["run", "chatty"])
        .run();
    out.assert_status(0);
    let beats = heartbeats(&out.stdout);
    // About 2.4 s of silence on stdout: two beats, or one on a slow start (never zero).
    assert!((1..=2).contains(&beats.len()), "{}", out.stdout);
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
    assert!(
        out.stderr
            .starts_with("error: NIXCMD_HEARTBEAT=`abc`: `abc` is not a duration"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    // Nothing ran: no run folder.
    assert!(run_dirs(out.root.path()).is_empty());
}

#[test]
fn with_json_the_heartbeat_is_on_stderr_and_the_event_stream_is_unchanged() {
    let out = Test::new()
        .runbook("slow.md", SLOW)
        .env("NIXCMD_HEARTBEAT", "1s")
        .args(["run", "slow", "--format", "json"])
        .run();
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
