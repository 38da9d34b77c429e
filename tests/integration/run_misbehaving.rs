//! Steps that misbehave as real scripts do: odd output (long lines, control sequences,
//! bytes that are not UTF-8), secrets that do not look like secrets, processes that escape,
//! exits by signal. The run's records, events and screen must stay exact and readable.

use crate::run_support::{
    events, normalize, only_run, processes, project_file, read_json, run_on_terminal,
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
