//! `nixcmd show`: the parsed command as text and JSON; unknown names; exit codes.

use crate::support::Test;

const DEPLOY: &str = r#"---
description: Deploy the web hosts
nixcmd:
  timeout: 20m
  args:
    host: { required: true, pattern: "^[a-z0-9-]+$", help: "the host to deploy" }
---
# Deploy

Builds and switches one host.

## Prerequisites
```bash {id=clean}
git diff --quiet
```

## Steps
### Build
```bash {id=build retries=2 backoff=10s timeout=30m}
nixos-rebuild build --flake ".#$NIXCMD_ARG_HOST"
```
### Switch
```bash {id=switch confirm="Switch the host?" rollback=previous hosts=@web parallel=2}
nixos-rebuild switch --flake ".#$NIXCMD_ARG_HOST" --target-host "root@$NIXCMD_HOST"
```

## Success Criteria
- [ ] The site answers
```bash {id=running}
systemctl is-system-running
```

## Rollback
### previous
```bash
nixos-rebuild switch --rollback
```

## Troubleshooting
### Build fails
Look at the log.
"#;

#[test]
fn text() {
    let out = Test::new()
        .runbook("deploy.md", DEPLOY)
        .args(["show", "deploy"])
        .run();
    assert_output_snapshot!(out);
}

#[test]
fn slash_name_and_file_path_show_the_same_command() {
    let by_name = Test::new()
        .runbook("deploy.md", DEPLOY)
        .args(["show", "/deploy", "--format", "json"])
        .run();
    by_name.assert_status(0);
    let by_path = Test::new()
        .file("project/deploy.md", DEPLOY)
        .args(["show", "deploy.md", "--format", "json"])
        .run();
    by_path.assert_status(0);
    let (mut a, mut b) = (by_name.stdout_json(), by_path.stdout_json());
    assert_eq!(a["source"]["kind"], "project");
    assert_eq!(
        b["source"],
        serde_json::json!({"kind": "file", "path": "deploy.md"})
    );
    a["source"].take();
    b["source"].take();
    assert_eq!(a, b);
}

#[test]
fn json_contract_fields() {
    let out = Test::new()
        .runbook("deploy.md", DEPLOY)
        .args(["show", "deploy", "--format", "json"])
        .run();
    out.assert_status(0);
    assert_eq!(out.stderr, "");
    let json = out.stdout_json();
    for key in [
        "name",
        "description",
        "source",
        "mode",
        "args",
        "prerequisites",
        "steps",
        "success_criteria",
        "rollback",
        "troubleshooting",
        "references",
        "diagnostics",
    ] {
        assert!(json.get(key).is_some(), "`{key}` is missing");
    }
    assert_eq!(json["mode"], "annotated");
    let ids: Vec<&str> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["build", "switch"]);
    let switch = &json["steps"][1];
    assert_eq!(switch["line"], 23);
    assert_eq!(switch["language"], "bash");
    assert_eq!(switch["attrs"]["confirm"], "Switch the host?");
    assert_eq!(switch["attrs"]["rollback"], "previous");
    assert_eq!(switch["attrs"]["hosts"], "@web");
    assert_eq!(switch["attrs"]["parallel"], 2);
    assert_eq!(json["steps"][0]["attrs"]["retries"], 2);
    assert_eq!(json["steps"][0]["attrs"]["timeout_ms"], 1_800_000);
    assert_eq!(
        json["success_criteria"]["manual"][0]["text"],
        "The site answers"
    );
    assert_eq!(json["success_criteria"]["checks"][0]["id"], "running");
    assert_eq!(json["rollback"][0]["id"], "previous");
    assert_eq!(json["args"][0]["env"], "NIXCMD_ARG_HOST");
}

#[test]
fn a_builtin_by_name() {
    let out = Test::new()
        .args(["show", "flake-update", "--format", "json"])
        .run();
    out.assert_status(0);
    let json = out.stdout_json();
    assert_eq!(json["source"], serde_json::json!({"kind": "builtin"}));
    assert_eq!(json["mode"], "annotated");
}

#[test]
fn unknown_command_suggests_the_closest_name() {
    let out = Test::new()
        .runbook("deploy.md", DEPLOY)
        .args(["show", "deplyo"])
        .run();
    assert_output_snapshot!(out);
}

#[test]
fn unknown_command_without_a_close_name() {
    let out = Test::new().args(["show", "zzzzzzzz"]).run();
    assert_output_snapshot!(out);
}

/// A slash and no name, or a slash path: what is wrong with it, not clap's "unrecognized
/// subcommand".
#[test]
fn a_slash_without_a_command_name_says_so() {
    for args in [&["/"][..], &["run", ""], &["show", ""]] {
        let out = Test::new().args(args.iter().copied()).run();
        out.assert_status(2);
        assert_eq!(out.stdout, "");
        assert_eq!(
            out.stderr,
            "error: no command name\n  \
             hint: name one, e.g. `nixcmd /flake-update`; `nixcmd list` shows every command\n",
            "{args:?}"
        );
    }
    let out = Test::new().args(["/no/such/runbook.md"]).run();
    out.assert_status(2);
    assert_eq!(
        out.stderr,
        "error: cannot read /no/such/runbook.md: no such file\n  \
         hint: check the path, or give the command's name instead (`nixcmd list` shows them)\n"
    );
}

#[test]
fn errors_in_a_readable_file_are_shown_not_fatal() {
    // A command with errors can still be shown (that is how people find out what is wrong).
    let out = Test::new()
        .runbook(
            "bad.md",
            "---\ndescription: x\nnixcmd:\n---\n## Steps\n```bash {idd=1}\ntrue\n```\n",
        )
        .args(["show", "bad"])
        .run();
    assert_output_snapshot!(out);
}

#[test]
fn usage_errors_exit_2() {
    let out = Test::new().args(["show"]).run();
    assert_output_snapshot!(out);
    let out = Test::new()
        .runbook("deploy.md", DEPLOY)
        .args(["show", "deploy", "--format", "yaml"])
        .run();
    out.assert_status(2);
    assert_eq!(out.stdout, "");
}

#[test]
fn version_and_help_exit_0() {
    let out = Test::new().args(["--version"]).run();
    out.assert_status(0);
    assert_eq!(
        out.stdout,
        format!("nixcmd {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = Test::new().args(["--help"]).run();
    out.assert_status(0);
    assert!(
        out.stdout.starts_with("Markdown runbooks"),
        "{}",
        out.stdout
    );
}

#[test]
fn arguments_without_help_leave_no_trailing_spaces() {
    let out = Test::new()
        .runbook(
            "a.md",
            "---\ndescription: Args\nnixcmd:\n  args:\n    host: { required: true }\n    extra: { variadic: true, choices: [x, y] }\n---\n## Steps\n```bash\ntrue\n```\n",
        )
        .args(["show", "a"])
        .run();
    assert_output_snapshot!(out);
    assert!(
        out.stdout.lines().all(|l| l == l.trim_end()),
        "trailing spaces:\n{}",
        out.stdout
    );
}

/// A command file `notes.md.md` is listed as `notes.md`, and that name finds it: a trailing
/// `.md` is stripped only when the name as given names no command.
#[test]
fn a_name_ending_in_md_finds_the_command_list_shows() {
    let text = "---\ndescription: Notes\nnixcmd:\n---\n## Steps\n```bash\ntrue\n```\n";
    let test = || {
        Test::new()
            .runbook("notes.md.md", text)
            .runbook("deploy.md", text)
    };
    let list = test().args(["list", "--format", "json"]).run();
    list.assert_status(0);
    let names: Vec<_> = list.stdout_json()["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["source"]["kind"] == "project")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["deploy", "notes.md"]);
    for (asked, found) in [
        ("notes.md", "notes.md"),
        ("/notes.md", "notes.md"),
        ("notes.md.md", "notes.md"),
        ("deploy.md", "deploy"),
    ] {
        let out = test().args(["show", asked, "--format", "json"]).run();
        out.assert_status(0);
        assert_eq!(out.stdout_json()["name"], found, "{asked}");
    }
}

/// A `confirm` on a rollback or `always` block is never asked (they run after a run that may
/// have no one to answer): `effective.asks` says so, and `list` does not count them.
#[test]
fn rollback_and_always_blocks_never_ask() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/runbooks/invalid/confirm-not-asked.md"),
    )
    .unwrap();
    let out = Test::new()
        .runbook("asks.md", &text)
        .args(["show", "asks", "--format", "json"])
        .run();
    out.assert_status(0);
    let json = out.stdout_json();
    let asks = |block: &serde_json::Value| {
        (
            block["id"].as_str().unwrap().to_string(),
            block["effective"]["asks"].as_bool().unwrap(),
        )
    };
    let steps: Vec<_> = json["steps"].as_array().unwrap().iter().map(asks).collect();
    assert_eq!(
        steps,
        [("switch".to_string(), true), ("unlock".to_string(), false)]
    );
    let rollback: Vec<_> = json["rollback"]
        .as_array()
        .unwrap()
        .iter()
        .map(asks)
        .collect();
    assert_eq!(rollback, [("restore".to_string(), false)]);
}

/// Attribute values are the file's text too: `show` prints their control characters as
/// pictures and bidi controls as `�`, as it does titles. Raw, an OSC 52 in a confirm question
/// wrote the clipboard and `ESC [2J` cleared the screen of whoever looked at the command.
#[test]
fn control_characters_in_attribute_values_are_shown_as_pictures() {
    let file = "---\ndescription: d\nnixcmd:\n---\n## Steps\n\
        ```bash {id=a confirm=\"Go? \x1b]52;c;cHduZWQ=\x07\x1b[2J \u{202e}\" irreversible}\ntrue\n```\n\
        ```bash {id=b hosts=\"w\x1b[1m\" group=\"g\x1b[2J\" rollback=\"r\x1bx\"}\ntrue\n```\n\
        ## Rollback\n```bash {id=r}\ntrue\n```\n";
    let out = Test::new()
        .file("project/ctl.md", file)
        .args(["show", "ctl.md"])
        .run();
    let raw: Vec<char> = out
        .stdout
        .chars()
        .filter(|&c| (c.is_control() && c != '\n') || c == '\u{202e}')
        .collect();
    assert_eq!(raw, [], "{}", out.stdout);
    assert!(
        out.stdout
            .contains("confirm \"Go? ␛]52;c;cHduZWQ=␇␛[2J �\""),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("hosts w␛[1m"), "{}", out.stdout);
}
