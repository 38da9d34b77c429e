//! Output that does not end in a newline: a prompt-like `Building system... ` before minutes
//! of work is shown as the step's last output once the step has been quiet for a moment (on
//! the live line, in the heartbeat, on a nested command's parent step), while the log, the
//! events and `--verbose`'s plain lines keep one record per line, written when it ends. Each
//! test holds the step until it saw the unfinished text, so the step cannot end first.

use crate::run_support::{LIMIT, Spawned, events, normalize, only_run, wait_until};
use crate::support::Test;
use serde_json::Value;

/// A line begun, then a wait for the project's file `go`, then its end.
const PARTIAL: &str = r#"---
description: A partial line
nixcmd: {}
---
# Partial

## Steps
### Build
```bash {id=build}
echo "first"
printf 'phase one... '
while [ ! -e go ]; do sleep 0.02; done
echo done
```
"#;

/// The step's log with its header's time normalized.
fn log(root: &std::path::Path, step: &str) -> String {
    let path = only_run(root).join("logs").join(format!("{step}.log"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    normalize(&text, root)
}

/// The `line` of every `output` event of the run, in order.
fn output_lines(root: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(only_run(root).join("events.ndjson")).expect("events");
    events(&text)
        .into_iter()
        .filter(|e| e["type"] == "output")
        .map(|e| e["line"].clone())
        .collect()
}

/// The partial line is recorded once, whole, when it ends.
fn assert_recorded_whole(root: &std::path::Path) {
    assert_eq!(
        log(root, "build"),
        "── build attempt 1/1 at [TIMESTAMP] ──\nfirst\nphase one... done\n"
    );
    assert_eq!(
        output_lines(root),
        [Value::from("first"), Value::from("phase one... done")]
    );
}

/// The live rows drawn so far (each redraw starts with `\r` and a line clear).
fn live_rows(screen: &str) -> Vec<&str> {
    screen.split("\r\u{1b}[2K").collect()
}

#[test]
fn a_partial_line_is_on_the_live_line_before_it_ends_and_verbose_prints_it_once() {
    let run = Spawned::start_on_terminal(
        Test::new()
            .runbook("partial.md", PARTIAL)
            .env_remove("CI")
            .args(["run", "partial", "--verbose", "--color", "never"]),
        100,
    );
    let root = run.root().to_path_buf();
    wait_until("the partial line on the live line", LIMIT, || {
        live_rows(&run.stdout_so_far())
            .iter()
            .any(|row| row.contains(" build  ") && row.ends_with("  phase one..."))
    });
    std::fs::write(root.join("project/go"), "").expect("let the step end");
    let out = run.wait();
    out.assert_status(0);
    // `--verbose` prints each line once, when it ends: the live line showed the partial
    // text, the printed line is the whole line.
    let printed: Vec<&str> = out
        .stdout
        .split("\r\n")
        .flat_map(|l| l.split("\r\u{1b}[2K"))
        .filter(|l| l.contains(" │ "))
        .collect();
    assert_eq!(printed, ["  build │ first", "  build │ phase one... done"]);
    assert_recorded_whole(&root);
}

#[test]
fn without_a_terminal_the_heartbeat_shows_a_partial_line_and_verbose_lines_stay_whole() {
    let run = Spawned::start(
        Test::new()
            .runbook("partial.md", PARTIAL)
            .env("NIXCMD_HEARTBEAT", "1s")
            .args(["run", "partial", "--verbose"]),
    );
    let root = run.root().to_path_buf();
    wait_until("a heartbeat with the partial line", LIMIT, || {
        run.stdout_so_far()
            .contains("; last output: phase one...)\n")
    });
    std::fs::write(root.join("project/go"), "").expect("let the step end");
    let out = run.wait();
    out.assert_status(0);
    let text = normalize(&out.stdout, &root);
    let (beats, lines): (Vec<&str>, Vec<&str>) =
        text.lines().partition(|l| l.contains("still running"));
    assert_eq!(
        beats
            .last()
            .map(|b| b.split_once(" (").map(|(head, _)| head)),
        Some(Some("[TIME] … build still running"))
    );
    assert!(
        beats
            .last()
            .unwrap()
            .ends_with("; last output: phase one...)"),
        "{text}"
    );
    assert_eq!(
        lines.join("\n"),
        "[TIME] nixcmd running partial (partial-[ID])\n\
         [TIME] ▶ build\n\
         [TIME]   build │ first\n\
         [TIME]   build │ phase one... done\n\
         [TIME] ✓ build ok [DURATION]\n\
         \n\
         STEP   STATUS        DURATION\n\
         build  ok            [DURATION]\n\
         \n\
         succeeded in [DURATION] (exit 0)\n\
         run folder: [TEMP]/state/nixcmd/runs/partial-[ID]"
    );
    assert_recorded_whole(&root);
}

/// The parent's step of a nested command shows what the nested step is still printing, a
/// partial line as a progress bar redrawn with `\r`, as it shows its lines.
#[test]
fn a_nested_commands_unfinished_output_reaches_the_parents_heartbeat() {
    let run = Spawned::start(
        Test::new()
            .file(
                "project/ops/outer.md",
                "---\ndescription: outer\n---\n# Outer\n## Steps\n### Call inner\n```bash\n/inner\n```\n",
            )
            .file(
                "project/ops/inner.md",
                r#"---
description: inner
nixcmd: {}
---
# Inner
## Steps
### Go
```bash {id=go}
echo first
printf 'phase one... '
while [ ! -e go1 ]; do sleep 0.02; done
printf '\rfetching 42%%'
while [ ! -e go2 ]; do sleep 0.02; done
echo ' ok'
```
"#,
            )
            .env("NIXCMD_HEARTBEAT", "1s")
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
    for (shown, release) in [
        ("; last output: [/inner] go │ phase one...)\n", "go1"),
        ("; last output: [/inner] go │ fetching 42%)\n", "go2"),
    ] {
        wait_until(shown, LIMIT, || run.stdout_so_far().contains(shown));
        std::fs::write(root.join("project").join(release), "").expect("let the step go on");
    }
    let out = run.wait();
    out.assert_status(0);
    let outer = crate::run_support::run_dirs(&root)
        .into_iter()
        .find(|d| {
            d.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("outer-")
        })
        .expect("the outer run");
    let text = std::fs::read_to_string(outer.join("events.ndjson")).expect("events");
    let lines: Vec<String> = events(&text)
        .into_iter()
        .filter(|e| e["type"] == "output")
        .map(|e| normalize(e["line"].as_str().unwrap(), &root))
        .collect();
    assert_eq!(
        lines,
        [
            "[/inner] started as run inner-[ID]",
            "[/inner] go │ first",
            "[/inner] go │ phase one... \rfetching 42% ok",
            "[/inner] go: ok",
            "[/inner] succeeded (exit 0)",
        ]
    );
}

/// An unfinished stdout line, then a whole line on stderr, then more of the stdout line.
const PARTIAL_THEN_STDERR: &str = r#"---
description: A partial line and a warning
nixcmd: {}
---
# Warned

## Steps
### Build
```bash {id=build}
printf 'phase one... '
while [ ! -e warn ]; do sleep 0.02; done
echo "warning: slow mirror" >&2
while [ ! -e more ]; do sleep 0.02; done
printf 'still going'
while [ ! -e go ]; do sleep 0.02; done
echo
```
"#;

/// The live line shows what the step printed last, from either stream, as a terminal would
/// (where the warning would follow `phase one... ` on its row): a whole stderr line after
/// an unfinished stdout line replaces it and stays, however long stdout is quiet; the stdout
/// line comes back when the step adds to it.
#[test]
fn the_live_line_shows_the_newest_output_of_either_stream() {
    let run = Spawned::start_on_terminal(
        Test::new()
            .runbook("warned.md", PARTIAL_THEN_STDERR)
            .env_remove("CI")
            .args(["run", "warned", "--color", "never"]),
        100,
    );
    let root = run.root().to_path_buf();
    let newest_ends_with = |tail: &str| {
        live_rows(&run.stdout_so_far())
            .iter()
            .rev()
            .find(|row| row.contains(" build  "))
            .is_some_and(|row| row.ends_with(tail))
    };
    wait_until("the partial line", LIMIT, || {
        newest_ends_with("  phase one...")
    });
    std::fs::write(root.join("project/warn"), "").expect("let the step warn");
    wait_until("the warning", LIMIT, || {
        newest_ends_with("  warning: slow mirror")
    });
    // Quiet stdout does not bring its older, unfinished line back (the live line is redrawn
    // every 100 ms, the unfinished line was offered after 100 ms of quiet).
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert!(
        newest_ends_with("  warning: slow mirror"),
        "{:?}",
        run.stdout_so_far()
    );
    std::fs::write(root.join("project/more"), "").expect("let the step go on");
    wait_until("the grown partial line", LIMIT, || {
        newest_ends_with("  phase one... still going")
    });
    std::fs::write(root.join("project/go"), "").expect("let the step end");
    let out = run.wait();
    out.assert_status(0);
}
