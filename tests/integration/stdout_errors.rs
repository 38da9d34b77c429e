//! Output that standard output refuses (a full disk under `> file`): said once, at the end,
//! with an exit code that is not 0, except for a run, whose exit code is the run's.
//! A closed pipe (`| head`) is not such a failure.

use crate::run_support::{only_run, run_id};
use crate::support::Test;
use std::os::fd::FromRawFd;

const FULL: &str = "/dev/full";

const TWO_STEPS: &str = r#"---
description: Two steps that print
nixcmd: {}
---
# Two

## Steps
### First
```bash {id=first}
echo first
```
### Second
```bash {id=second}
echo second >> trace
```
"#;

const REFUSED: &str = "error: standard output did not take all of the output: No space left on device (os error 28)\n  hint: what was written is incomplete: make room on the device, or send the output elsewhere\n";

#[test]
fn show_list_and_check_on_a_full_disk_fail_and_say_so() {
    for args in [
        &["show", "flake-update", "--format", "json"][..],
        &["show", "flake-update"],
        &["list"],
        &["list", "--format", "json"],
        &["completions", "bash"],
    ] {
        let out = Test::new().args(args).stdout_to(FULL).run();
        assert_eq!((out.status, out.stderr.as_str()), (1, REFUSED), "{args:?}");
    }
    // A clean file: `check` would exit 0; its report is lost, so it is 1.
    let out = Test::new()
        .runbook("two.md", TWO_STEPS)
        .args(["check", ".nixcmd/commands/two.md", "--format", "junit"])
        .stdout_to(FULL)
        .run();
    assert_eq!((out.status, out.stderr.as_str()), (1, REFUSED));
}

#[test]
fn a_run_whose_output_is_refused_goes_on_and_keeps_its_exit_code() {
    let out = Test::new()
        .runbook("two.md", TWO_STEPS)
        .args(["run", "two", "--format", "json"])
        .stdout_to(FULL)
        .run();
    assert_eq!(
        (
            out.status,
            out.stderr.lines().rev().take(2).collect::<Vec<_>>()
        ),
        (
            0,
            vec![
                "  hint: the run was not affected by it: `nixcmd runs` and `nixcmd log RUN` show its records",
                "warning: standard output did not take all of the output: No space left on device (os error 28)",
            ]
        ),
        "{}",
        out.normalized()
    );
    let run = only_run(out.root.path());
    assert_eq!(
        std::fs::read_to_string(out.root.path().join("project/trace")).unwrap(),
        "second\n"
    );
    let id = run_id(&run);
    // `log` into a full disk: the write failed, not the reading of the log.
    for follow in [false, true] {
        let mut test = Test::within(tempfile::TempDir::new().unwrap())
            .env(
                "XDG_STATE_HOME",
                out.root.path().join("state").display().to_string(),
            )
            .args(["log", id.as_str()]);
        if follow {
            test = test.arg("--follow");
        }
        let logged = test.stdout_to(FULL).run();
        assert_eq!(
            (logged.status, logged.stderr.as_str()),
            (1, REFUSED),
            "follow: {follow}"
        );
    }
}

#[test]
fn a_closed_pipe_is_not_a_failure() {
    let (mut cmd, _root) = Test::new()
        .args(["show", "flake-update", "--format", "json"])
        .into_command();
    // A pipe whose reading end is closed before nixcmd starts: every write is EPIPE, not a
    // write that may land in the pipe's buffer before the reader goes away.
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two descriptors we own; the reading end is closed at once and
    // the writing end handed to the child (and closed here after it starts).
    let writer = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        std::os::fd::OwnedFd::from_raw_fd(fds[1])
    };
    let done = cmd
        .stdout(std::process::Stdio::from(writer))
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run nixcmd");
    assert_eq!(
        (
            done.status.code(),
            String::from_utf8_lossy(&done.stderr).as_ref()
        ),
        (Some(0), "")
    );
}
