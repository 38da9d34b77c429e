//! `nixcmd check`: every format, `--strict`, the exit codes (0 clean, 1 errors, 2 a file that
//! is not a command at all), and which files it looks at.

use crate::support::Test;

const CLEAN: &str =
    "---\ndescription: Clean\nnixcmd:\n---\n## Steps\n```bash {id=hello}\necho hello\n```\n";

/// One error (unknown attribute) and one warning (confirm without rollback).
const PROBLEMS: &str = r#"---
description: Has problems
nixcmd:
---
## Steps
### Build
```bash {id=build retires=2}
nix build
```
### Push
```bash {id=push confirm="Push <it> & \"now\"?"}
git push
```
"#;

/// Only a warning.
const WARNING: &str =
    "---\ndescription: Warns\nnixcmd:\n---\n## Steps\n```bash {confirm=\"Go?\"}\ntrue\n```\n";

fn check(format: &str) -> Test {
    Test::new()
        .programs(&["bash"])
        .file("project/clean.md", CLEAN)
        .file("project/problems.md", PROBLEMS)
        .args(["check", "clean.md", "problems.md", "--format", format])
}

#[test]
fn text_format() {
    let out = check("text").run();
    assert_output_snapshot!(out);
    out.assert_status(1);
}

#[test]
fn json_format() {
    let out = check("json").run();
    out.assert_status(1);
    assert_eq!(out.stderr, "");
    insta::assert_json_snapshot!(out.stdout_json());
}

#[test]
fn github_format() {
    let out = check("github").run();
    assert_output_snapshot!(out);
    out.assert_status(1);
}

#[test]
fn junit_format() {
    let out = check("junit").run();
    assert_output_snapshot!(out);
    out.assert_status(1);
}

#[test]
fn clean_file_exits_0() {
    let out = Test::new()
        .programs(&["bash"])
        .file("project/clean.md", CLEAN)
        .args(["check", "--strict", "clean.md"])
        .run();
    assert_output_snapshot!(out);
    out.assert_status(0);
}

#[test]
fn warnings_pass_unless_strict() {
    let test = || {
        Test::new()
            .programs(&["bash"])
            .file("project/warns.md", WARNING)
    };
    let out = test().args(["check", "warns.md"]).run();
    out.assert_status(0);
    assert!(
        out.stdout
            .ends_with("checked 1 file: 0 errors, 1 warning, 1 note\n"),
        "{}",
        out.stdout
    );
    let strict = test().args(["check", "--strict", "warns.md"]).run();
    assert_output_snapshot!(strict);
    strict.assert_status(1);
}

#[test]
fn strict_json_marks_warnings_as_failures() {
    let out = Test::new()
        .programs(&["bash"])
        .file("project/warns.md", WARNING)
        .args(["check", "--strict", "--format", "json", "warns.md"])
        .run();
    out.assert_status(1);
    insta::assert_json_snapshot!(out.stdout_json());
}

#[test]
fn unreadable_file_exits_2_and_others_are_still_checked() {
    let out = Test::new()
        .programs(&["bash"])
        .file("project/binary.md", b"\x7fELF\x02\x01\x01\x00\x00")
        .file("project/problems.md", PROBLEMS)
        .args(["check", "binary.md", "problems.md", "missing.md"])
        .run();
    assert_output_snapshot!(out);
    out.assert_status(2);
}

#[test]
fn folder_is_searched_for_markdown() {
    let out = Test::new()
        .programs(&["bash"])
        .file("project/runbooks/a.md", CLEAN)
        .file("project/runbooks/nested/b.md", WARNING)
        .file("project/runbooks/.hidden/c.md", PROBLEMS)
        .file("project/runbooks/notes.txt", "not markdown")
        .args(["check", "runbooks"])
        .run();
    assert_output_snapshot!(out);
    out.assert_status(0);
}

#[test]
fn empty_folder_is_an_error() {
    let out = Test::new()
        .dir("project/empty")
        .args(["check", "empty"])
        .run();
    assert_output_snapshot!(out);
    out.assert_status(2);
}

#[test]
fn without_paths_checks_the_search_path_but_not_builtins() {
    let out = Test::new()
        .programs(&["bash"])
        .runbook("clean.md", CLEAN)
        .claude_command("warns.md", WARNING)
        .args(["check"])
        .run();
    assert_output_snapshot!(out);
    out.assert_status(0);
}

#[test]
fn nothing_to_check() {
    let out = Test::new().args(["check"]).run();
    assert_output_snapshot!(out);
    out.assert_status(0);
}

/// The machine formats still write a report a CI step can parse when there is nothing to
/// check: an empty JSON report, a JUnit document with no test.
#[test]
fn nothing_to_check_is_an_empty_machine_report() {
    let json = Test::new().args(["check", "--format", "json"]).run();
    json.assert_status(0);
    assert_eq!(
        json.stdout_json(),
        serde_json::json!({ "files": [], "errors": 0, "warnings": 0, "notes": 0 })
    );
    let junit = Test::new().args(["check", "--format", "junit"]).run();
    junit.assert_status(0);
    assert_eq!(
        junit.stdout,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <testsuites name=\"nixcmd check\" tests=\"0\" failures=\"0\">\n  \
         <testsuite name=\"nixcmd check\" tests=\"0\" failures=\"0\">\n  \
         </testsuite>\n</testsuites>\n"
    );
    for out in [&json, &junit] {
        assert_eq!(
            out.stderr,
            "no command files found (give paths, or add commands to .nixcmd/commands/)\n"
        );
    }
}

#[test]
fn a_command_name_is_checked_by_name() {
    let out = Test::new()
        .programs(&["bash"])
        .runbook("problems.md", PROBLEMS)
        .args(["check", "problems", "--format", "github"])
        .run();
    assert_output_snapshot!(out);
    out.assert_status(1);
}

#[test]
fn builtins_pass_strict() {
    // Test what we ship: every built-in, by name.
    for name in [
        "config-audit",
        "deploy-all",
        "flake-update",
        "system-health-check",
        "update-package",
    ] {
        let out = Test::new()
            .programs(&["bash"])
            .args(["check", "--strict", name])
            .run();
        assert_eq!(out.status, 0, "{name}:\n{}", out.normalized());
    }
}

#[test]
fn shellcheck_findings_are_mapped_to_file_lines() {
    if crate::support::which("shellcheck").is_none()
        && crate::support::skip("shellcheck is not installed")
    {
        return;
    }
    let out = Test::new()
        .programs(&["bash", "shellcheck"])
        .file(
            "project/sc.md",
            "---\ndescription: x\nnixcmd:\n---\n## Steps\n1. Remove:\n   ```bash {id=rm}\n   dir=result\n   rm -rf $dir/*\n   ```\n",
        )
        .args(["check", "sc.md", "--format", "github"])
        .run();
    assert_output_snapshot!(out);
}

/// A guided file's findings point at their text when a list item's code is indented with
/// tabs: the parser turns a tab that the item's indentation splits into spaces, so the code
/// line is not a substring of the file line. A commented-out command is pointed at its `#`,
/// not at the blanks before it.
#[test]
fn guided_findings_point_at_their_text_after_tabs() {
    let out = Test::new()
        .programs(&["bash"])
        .file(
            "project/g.md",
            "---\ndescription: g\n---\n## Steps\n- Restart:\n  ```bash\n\t\techo <host> SERVICE_NAME $1\n\t# sudo nixos-rebuild boot\n    # Or restart it\n  ```\n",
        )
        .args(["check", "g.md", "--format", "json"])
        .run();
    out.assert_status(0);
    let found: Vec<(String, u64, u64)> = out.stdout_json()["files"][0]["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["code"] != "bash-syntax" && d["code"] != "shellcheck")
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap().to_string();
            let n = |k: &str| d[k].as_u64().unwrap();
            (s("code"), n("line"), n("col"))
        })
        .collect();
    let wanted = [
        ("placeholder", 7, 8),
        ("placeholder", 7, 15),
        ("arguments", 7, 28),
        ("commented-alternative", 8, 2),
        ("alternative", 9, 5),
    ];
    let wanted: Vec<_> = wanted
        .iter()
        .map(|&(c, l, col)| (c.to_string(), l, col))
        .collect();
    assert_eq!(found, wanted, "{}", out.stdout);
    let text = Test::new()
        .programs(&["bash"])
        .file(
            "project/g.md",
            "---\ndescription: g\n---\n## Steps\n- Restart:\n  ```bash\n\t\techo <host>\n  ```\n",
        )
        .args(["check", "g.md"])
        .run();
    // The tabs are shown as one space each: the carets sit under `<host>`.
    assert!(
        text.stdout
            .contains("7 |   echo <host>\n  |        ^^^^^^\n"),
        "{}",
        text.stdout
    );
}

/// `--format github` messages quote the file (an attribute, a placeholder): their control
/// characters are shown as pictures, as in the text format. A raw ESC in a CI log is still
/// read by the terminal that shows it.
#[test]
fn github_format_shows_control_characters_as_pictures() {
    let out = Test::new()
        .programs(&["bash"])
        .file(
            "project/ctl.md",
            "---\ndescription: d\nnixcmd:\n---\n## Steps\n```bash {id=a bogus\x1b[2J=1}\ntrue\n```\n",
        )
        .args(["check", "--format", "github", "ctl.md"])
        .run();
    out.assert_status(1);
    let raw: Vec<char> = out
        .stdout
        .chars()
        .filter(|&c| c.is_control() && c != '\n')
        .collect();
    assert_eq!(raw, [], "{}", out.stdout);
    assert!(out.stdout.contains("␛[2J"), "{}", out.stdout);
}

/// `check DIR` reports the `.md` entries it cannot read (a dangling symlink, a symlink loop)
/// as `check` without paths does, instead of skipping them, reads a FIFO as that does, and
/// never follows a symlink into a folder: `ln -s . self.md` made it check the same file 17
/// times (and a second such link made the walk exponential).
#[test]
fn a_folder_reports_unreadable_entries_and_follows_no_symlinked_folder() {
    let test = Test::new()
        .programs(&["bash"])
        .file("project/d/ok.md", CLEAN)
        .file("project/d/sub/deeper.md", CLEAN);
    let d = test.project().join("d");
    std::os::unix::fs::symlink("nowhere.md", d.join("dangling.md")).unwrap();
    std::os::unix::fs::symlink("loop.md", d.join("loop.md")).unwrap();
    std::os::unix::fs::symlink(".", d.join("self.md")).unwrap();
    std::os::unix::fs::symlink(".", d.join("selfdir")).unwrap();
    std::os::unix::fs::symlink("..", d.join("sub/up")).unwrap();
    let fifo =
        std::ffi::CString::new(d.join("pipe.md").into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let out = test.args(["check", "d"]).run();
    out.assert_status(2);
    assert!(
        out.stdout
            .contains("cannot read d/dangling.md: no such file"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("cannot read d/loop.md: "),
        "{}",
        out.stdout
    );
    // ok, dangling, loop, pipe, sub/deeper: each once.
    assert!(out.stdout.contains("checked 5 files"), "{}", out.stdout);
}

/// A folder `check` cannot read says so, instead of "holds no .md command files".
#[test]
fn a_folder_it_cannot_read_says_permission_denied() {
    let Some((setpriv, dir)) = crate::support::as_nobody("to check as another user") else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).unwrap();
    std::fs::write(closed.join("a.md"), CLEAN).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir_all(open.join("inner")).unwrap();
    std::fs::write(open.join("a.md"), CLEAN).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(open.join("a.md"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(open.join("inner"), std::fs::Permissions::from_mode(0o700)).unwrap();
    for (folder, denied) in [("closed", "closed"), ("open", "open/inner")] {
        let out = std::process::Command::new(&setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_nixcmd"))
            .args(["check", folder])
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("HOME", dir.path())
            .env_remove("NIXCMD_COMMANDS_DIR")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{folder}: {stdout}");
        assert!(
            stdout.contains(&format!("cannot read {denied}: permission denied")),
            "{folder}: {stdout}"
        );
        assert!(!stdout.contains("holds no"), "{folder}: {stdout}");
    }
}
