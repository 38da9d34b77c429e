//! `nixcmd new` and `nixcmd completions`.

use crate::support::Test;

#[test]
fn new_writes_a_skeleton_that_passes_strict_check() {
    let out = Test::new().args(["new", "rotate-keys"]).run();
    assert_output_snapshot!(out);
    let path = out
        .root
        .path()
        .join("project/.nixcmd/commands/rotate-keys.md");
    let text = std::fs::read_to_string(&path).expect("the skeleton was written");
    let check = Test::new()
        .programs(&["bash"])
        .file("project/rotate-keys.md", &text)
        .args(["check", "--strict", "rotate-keys.md"])
        .run();
    assert_output_snapshot!("skeleton_check", check);
    check.assert_status(0);
    if crate::support::which("shellcheck").is_some() {
        let with_shellcheck = Test::new()
            .programs(&["bash", "shellcheck"])
            .file("project/rotate-keys.md", &text)
            .args(["check", "--strict", "rotate-keys.md"])
            .run();
        assert_eq!(
            with_shellcheck.stdout, "checked 1 file: 0 errors, 0 warnings, 0 notes\n",
            "shellcheck finds something in the skeleton"
        );
        with_shellcheck.assert_status(0);
    }
    // The new command is found by name right away.
    let list = Test::new()
        .runbook("rotate-keys.md", &text)
        .args(["show", "rotate-keys", "--format", "json"])
        .run();
    list.assert_status(0);
    assert_eq!(list.stdout_json()["mode"], "annotated");
}

#[test]
fn new_refuses_to_overwrite() {
    let out = Test::new()
        .runbook("deploy.md", "mine\n")
        .args(["new", "deploy"])
        .run();
    assert_output_snapshot!(out);
    let kept = std::fs::read_to_string(out.root.path().join("project/.nixcmd/commands/deploy.md"));
    assert_eq!(kept.unwrap(), "mine\n");
}

/// A dangling symlink where the new file would go is the user's too: it was replaced by the
/// skeleton (`exists` follows the link and said there was nothing).
#[test]
fn new_refuses_to_replace_a_dangling_symlink() {
    let test = Test::new();
    let dir = test.project().join(".nixcmd/commands");
    std::fs::create_dir_all(&dir).expect("commands folder");
    std::os::unix::fs::symlink("../elsewhere/deploy.md", dir.join("deploy.md")).expect("link");
    let out = test.args(["new", "deploy"]).run();
    out.assert_status(2);
    assert!(
        out.stderr.starts_with("error: ") && out.stderr.contains("deploy.md already exists"),
        "{}",
        out.stderr
    );
    let link = std::fs::symlink_metadata(dir.join("deploy.md")).expect("still there");
    assert!(link.file_type().is_symlink());
}

#[test]
fn new_force_overwrites_and_dir_chooses_the_folder() {
    let out = Test::new()
        .file("project/runbooks/deploy.md", "mine\n")
        .args(["new", "deploy", "--dir", "runbooks", "--force"])
        .run();
    out.assert_status(0);
    let text = std::fs::read_to_string(out.root.path().join("project/runbooks/deploy.md")).unwrap();
    assert!(text.starts_with("---\ndescription: "), "{text}");
}

/// The "next:" line names a command that finds the new file: `/NAME` when the search path
/// picks it, its path when `--dir` is off the path or another file of that name shadows it.
#[test]
fn new_suggests_a_command_that_runs_the_file_it_wrote() {
    let next = |out: &crate::support::Output| {
        out.assert_status(0);
        out.filter(out.stdout.lines().nth(1).expect("a next: line"))
    };
    let on_path = Test::new().args(["new", "deploy"]).run();
    assert_eq!(
        next(&on_path),
        "next: edit it, then `nixcmd check [TEMP]/project/.nixcmd/commands/deploy.md` and `nixcmd /deploy --dry-run`"
    );
    let off_path = Test::new()
        .args(["new", "deploy", "--dir", "runbooks"])
        .run();
    assert_eq!(
        next(&off_path),
        "next: edit it, then `nixcmd check runbooks/deploy.md` and `nixcmd run runbooks/deploy.md --dry-run`"
    );
    // A user command is found after the project's own `.nixcmd/commands/deploy.md`.
    let shadowed = Test::new()
        .runbook("deploy.md", "mine\n")
        .args(["new", "deploy", "--dir", "../config/nixcmd/commands"])
        .run();
    assert_eq!(
        next(&shadowed),
        "next: edit it, then `nixcmd check ../config/nixcmd/commands/deploy.md` and `nixcmd run ../config/nixcmd/commands/deploy.md --dry-run`"
    );
    let ran = Test::within(off_path.root)
        .args(["run", "runbooks/deploy.md", "--dry-run"])
        .run();
    ran.assert_status(0);
}

#[test]
fn new_rejects_a_bad_name() {
    let out = Test::new().args(["new", "../escape"]).run();
    assert_output_snapshot!(out);
    assert!(!out.root.path().join("escape.md").exists());
}

#[test]
fn completions_bash_prints_a_script() {
    let out = Test::new().args(["completions", "bash"]).run();
    out.assert_status(0);
    assert_eq!(out.stderr, "");
    assert!(
        out.stdout.starts_with("_nixcmd() {"),
        "{}",
        &out.stdout[..80]
    );
    assert!(
        out.stdout.contains("complete -F _nixcmd"),
        "no `complete` line"
    );
    for sub in ["list", "show", "check", "new", "completions"] {
        assert!(
            out.stdout.contains(&format!("nixcmd,{sub})")),
            "no case for `{sub}`"
        );
    }
    // The script is valid bash.
    let status = std::process::Command::new("bash")
        .args(["-n", "-c", &out.stdout])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn completions_for_an_unknown_shell_is_a_usage_error() {
    let out = Test::new().args(["completions", "cmd.exe"]).run();
    out.assert_status(2);
    assert_eq!(out.stdout, "");
}

/// `new deploy.md` means the command `deploy`, as `nixcmd /deploy.md` and `show deploy.md`
/// do: it used to write `deploy.md.md`, a command listed as `deploy.md` that no name reached.
#[test]
fn new_takes_a_file_name_for_the_command_name() {
    let out = Test::new().args(["new", "deploy.md"]).run();
    out.assert_status(0);
    assert_eq!(
        out.filter(&out.stdout),
        "wrote [TEMP]/project/.nixcmd/commands/deploy.md\nnext: edit it, then `nixcmd check [TEMP]/project/.nixcmd/commands/deploy.md` and `nixcmd /deploy --dry-run`\n"
    );
    let commands = out.root.path().join("project/.nixcmd/commands");
    let names: Vec<_> = std::fs::read_dir(&commands)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["deploy.md"]);
    let text = std::fs::read_to_string(commands.join("deploy.md")).unwrap();
    assert!(text.contains("\n# deploy\n"), "{text}");
}

/// `--commands-dir` (or `NIXCMD_COMMANDS_DIR`) names where the user keeps commands: a new
/// one is written there, and the "next:" line runs it by path (`/NAME` would need the option
/// again).
#[test]
fn new_writes_into_the_commands_dir_the_user_named() {
    let out = Test::new()
        .args(["--commands-dir", "mine", "new", "rotate-keys"])
        .run();
    out.assert_status(0);
    assert_eq!(
        out.filter(&out.stdout),
        "wrote mine/rotate-keys.md\nnext: edit it, then `nixcmd check mine/rotate-keys.md` and `nixcmd run mine/rotate-keys.md --dry-run`\n"
    );
    assert!(
        out.root
            .path()
            .join("project/mine/rotate-keys.md")
            .is_file()
    );
    assert!(!out.root.path().join("project/.nixcmd").exists());
    let by_env = Test::new()
        .env("NIXCMD_COMMANDS_DIR", "env-dir")
        .args(["new", "rotate-keys"])
        .run();
    by_env.assert_status(0);
    assert!(
        by_env
            .root
            .path()
            .join("project/env-dir/rotate-keys.md")
            .is_file()
    );
}
