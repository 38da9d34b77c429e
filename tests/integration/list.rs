//! `nixcmd list`: the search path (DESIGN.md §4), first match wins, shadowing reported.
//!
//! The built-ins in `commands/` change with the product, so their rows are checked against
//! the folder rather than frozen into snapshots.

use crate::support::{Test, repo};
use std::collections::BTreeSet;

fn runbook(description: &str, extra: &str) -> String {
    format!(
        "---\ndescription: {description}\nnixcmd:\n{extra}---\n## Steps\n```bash {{confirm=\"sure?\" irreversible}}\ntrue\n```\n"
    )
}

fn guided(description: &str) -> String {
    format!("---\ndescription: {description}\n---\n## Steps\n```bash\ntrue\n```\n")
}

/// Commands in every place of the search path, with each kind of shadowing.
fn search_path_test() -> Test {
    Test::new()
        .file("dir/deploy.md", runbook("From --commands-dir", ""))
        .runbook("deploy.md", &runbook("Project deploy", ""))
        .runbook(
            "flake-update.md",
            &runbook(
                "Project flake update",
                "  args:\n    host: { required: true }\n    inputs: { variadic: true }\n",
            ),
        )
        .claude_command("deploy.md", &guided("Claude deploy"))
        .claude_command("review.md", &guided("Claude review"))
        .user_command("review.md", &guided("User review"))
        .user_command("backup.md", &runbook("User backup", ""))
        .file("config/nixcmd/commands/broken.md", b"garbage\x00")
        .user_command("README.txt", "not a command")
        .args(["--commands-dir", "../dir", "list"])
}

fn builtin_names() -> BTreeSet<String> {
    std::fs::read_dir(repo().join("commands"))
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "md").then(|| p.file_stem().unwrap().to_str().unwrap().to_string())
        })
        .collect()
}

/// The table without built-in rows, with column padding collapsed (built-ins set the widths).
fn without_builtin_rows(table: &str) -> (String, BTreeSet<String>) {
    let padding = regex::Regex::new(r" {2,}").unwrap();
    let mut builtins = BTreeSet::new();
    let mut kept = Vec::new();
    for line in table.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.last() == Some(&"builtin") && !line.starts_with(' ') {
            builtins.insert(words[0].to_string());
            continue;
        }
        let collapsed = padding.replace_all(line, "  ");
        kept.push(collapsed.into_owned());
    }
    (kept.join("\n") + "\n", builtins)
}

#[test]
fn table_shows_winners_sources_and_shadowed_commands() {
    let out = search_path_test().run();
    out.assert_status(0);
    assert_eq!(out.stderr, "");
    let (table, builtins) = without_builtin_rows(&out.filter(&out.stdout));
    let mut expected = builtin_names();
    expected.remove("flake-update");
    assert_eq!(builtins, expected, "every built-in is listed once");
    insta::assert_snapshot!(table, @r"
    NAME  DESCRIPTION  ARGS  STEPS  ASKS  MODE  SOURCE
    backup  User backup  1  1  annotated  user
    broken  (unreadable: the file is binary (it contains NUL bytes), not Markdown)  0  0  -  user
    deploy  From --commands-dir  1  1  annotated  commands-dir
    flake-update  Project flake update  <host> [inputs…]  1  1  annotated  project
    review  Claude review  1  1  guided  claude

    Shadowed (a command earlier on the search path has the same name):
      deploy  [TEMP]/project/.nixcmd/commands/deploy.md (project), shadowed by commands-dir
      deploy  [TEMP]/project/.claude/commands/deploy.md (claude), shadowed by commands-dir
      review  [TEMP]/config/nixcmd/commands/review.md (user), shadowed by claude
      flake-update  builtin (builtin), shadowed by project
    ");
}

#[test]
fn json_lists_the_same_commands() {
    let out = search_path_test().args(["--format", "json"]).run();
    out.assert_status(0);
    assert_eq!(out.stderr, "");
    let mut json: serde_json::Value =
        serde_json::from_str(&out.filter(&out.stdout)).expect("list --format json is JSON");
    let commands = json["commands"].as_array_mut().unwrap();
    let builtins: BTreeSet<String> = commands
        .iter()
        .filter(|c| c["source"]["kind"] == "builtin")
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    let mut expected = builtin_names();
    expected.remove("flake-update");
    assert_eq!(builtins, expected);
    commands.retain(|c| c["source"]["kind"] != "builtin");
    insta::assert_json_snapshot!(json);
}

#[test]
fn environment_variable_sets_the_commands_dir() {
    let out = Test::new()
        .file(
            "dir/only-here.md",
            runbook("Only in NIXCMD_COMMANDS_DIR", ""),
        )
        .env("NIXCMD_COMMANDS_DIR", "[TEMP]/dir")
        .args(["show", "only-here"])
        .run();
    out.assert_status(0);
    assert_eq!(
        out.filter(&out.stdout).lines().take(2).collect::<Vec<_>>(),
        [
            "only-here — Only in NIXCMD_COMMANDS_DIR",
            "source: [TEMP]/dir/only-here.md  mode: annotated"
        ]
    );
}

#[test]
fn project_root_is_found_from_a_subfolder() {
    let out = Test::new()
        .runbook("deploy.md", &runbook("Project deploy", ""))
        .current_dir("project/hosts/web")
        .args(["show", "deploy", "--format", "json"])
        .run();
    out.assert_status(0);
    let json = out.stdout_json();
    assert_eq!(
        out.filter(json["source"]["path"].as_str().unwrap()),
        "[TEMP]/project/.nixcmd/commands/deploy.md"
    );
}

#[test]
fn commands_dir_that_is_a_file_is_a_usage_error() {
    let out = Test::new()
        .file("project/not-a-dir", "x")
        .args(["--commands-dir", "not-a-dir", "list"])
        .run();
    assert_output_snapshot!(out);
}

#[test]
fn a_project_commands_folder_that_is_a_file_is_a_usage_error() {
    let out = Test::new()
        .file("project/.nixcmd/commands", "x")
        .args(["list"])
        .run();
    assert_output_snapshot!(out);
}

/// A folder of the search path that cannot be read stops every command with exit 2 and a
/// hint, `list` included: a runbook in it could shadow one found later. Needs root, to run
/// the binary as `nobody` (root reads any folder).
#[test]
fn an_unreadable_project_folder_is_an_error_with_a_hint() {
    let Some((setpriv, dir)) = crate::support::as_nobody("to run as another user") else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let commands = dir.path().join(".nixcmd/commands");
    std::fs::create_dir_all(&commands).unwrap();
    std::fs::set_permissions(
        dir.path().join(".nixcmd"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(commands.join("flake-update.md"), runbook("Ours", "")).unwrap();
    std::fs::set_permissions(&commands, std::fs::Permissions::from_mode(0o700)).unwrap();
    for args in [&["list"][..], &["show", "flake-update"][..]] {
        let out = std::process::Command::new(&setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_nixcmd"))
            .args(args)
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .env("HOME", dir.path())
            .env_remove("NIXCMD_COMMANDS_DIR")
            .current_dir(dir.path())
            .output()
            .unwrap();
        let shown = commands.display().to_string();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!(
                "error: cannot read {shown}: Permission denied (os error 13)\n  \
                 hint: nixcmd looks for runbooks in it and will not guess past it: make it \
                 readable (`chmod u+rx {shown}`, or fix its owner) or move it away\n"
            ),
            "{args:?}"
        );
    }
}

/// `list` opens files without updating their access time where it may (their owner, or
/// root), and the ordinary way where it may not: a user listing someone else's readable
/// runbooks gets the same rows. Needs root, to run the binary as `nobody`.
#[test]
fn files_of_another_user_are_listed_too() {
    let Some((setpriv, dir)) = crate::support::as_nobody("to list as another user") else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    let commands = dir.path().join("commands");
    std::fs::create_dir(&commands).unwrap();
    std::fs::set_permissions(&commands, std::fs::Permissions::from_mode(0o755)).unwrap();
    for name in ["a", "b"] {
        let file = commands.join(format!("{name}.md"));
        std::fs::write(&file, runbook(&format!("Runbook {name}"), "")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let list = |as_nobody: bool| {
        let mut cmd = if as_nobody {
            let mut c = std::process::Command::new(&setpriv);
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_nixcmd"));
            c
        } else {
            std::process::Command::new(env!("CARGO_BIN_EXE_nixcmd"))
        };
        let out = cmd
            .args(["--commands-dir"])
            .arg(&commands)
            .args(["list", "--format", "json"])
            .env("XDG_CONFIG_HOME", dir.path())
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        let listing: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        listing["commands"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["source"]["kind"] != "builtin")
            .map(|r| {
                (
                    r["name"].to_string(),
                    r["description"].to_string(),
                    r["errors"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    let expected = vec![
        (
            "\"a\"".to_string(),
            "\"Runbook a\"".to_string(),
            serde_json::json!(0),
        ),
        (
            "\"b\"".to_string(),
            "\"Runbook b\"".to_string(),
            serde_json::json!(0),
        ),
    ];
    assert_eq!(list(false), expected);
    assert_eq!(list(true), expected);
}
