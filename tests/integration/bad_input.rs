//! The bad inputs of issue 2: each gives a clear error naming the path (and line where there
//! is one) and exit 2 from `show` — never a panic (101), never a hang.

use crate::support::{Output, Test};
use std::time::Duration;

/// `show FILE` on these bytes, in a project, within a few seconds.
fn show(name: &str, bytes: impl AsRef<[u8]>) -> Output {
    Test::new()
        .file(&format!("project/{name}"), bytes)
        .args(["show", name])
        .timeout(Duration::from_secs(20))
        .run()
}

fn assert_refused(out: &Output) {
    assert_eq!(out.status, 2, "{}", out.normalized());
    assert_eq!(out.stdout, "", "nothing on stdout");
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );
}

#[test]
fn non_utf8() {
    let out = show("latin1.md", b"---\ndescription: caf\xe9\n---\n");
    assert_refused(&out);
    assert_output_snapshot!(out);
}

#[test]
fn binary_garbage() {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let out = show("image.md", bytes);
    assert_refused(&out);
    assert_output_snapshot!(out);
}

#[test]
fn fifty_megabytes() {
    let mut text = String::from("---\ndescription: huge\nnixcmd:\n---\n## Steps\n```bash\n");
    while text.len() < 50 * 1024 * 1024 {
        text.push_str("echo 'a line of a very long generated runbook'\n");
    }
    let out = show("huge.md", text);
    assert_refused(&out);
    assert_output_snapshot!(out);
}

#[test]
fn unterminated_fence() {
    let out = show(
        "open.md",
        "---\ndescription: x\nnixcmd:\n---\n## Steps\n```bash {id=a}\necho never closed\n",
    );
    assert_refused(&out);
    assert_output_snapshot!(out);
}

#[test]
fn frontmatter_not_a_mapping() {
    let out = show(
        "scalar.md",
        "---\njust a sentence\n---\n## Steps\n```bash\ntrue\n```\n",
    );
    assert_refused(&out);
    assert_output_snapshot!(out);
}

#[test]
fn yaml_alias_bomb() {
    let mut y = String::from("---\na: &a [x,x,x,x,x,x,x,x,x,x]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 10].join(",");
        y.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
    }
    y.push_str("---\n## Steps\n```bash\ntrue\n```\n");
    let out = show("bomb.md", y);
    assert_refused(&out);
    assert_output_snapshot!(out);
}

#[test]
fn deeply_nested_lists_do_not_crash_or_hang() {
    // 10 000 levels of list in one line, and 10 000 levels of block quotes with lists.
    let mut text = String::from("---\ndescription: deep\nnixcmd:\n---\n## Steps\n");
    text.push_str(&"- ".repeat(10_000));
    text.push_str("deep\n\n");
    for _ in 0..10_000 {
        text.push_str("> - ");
    }
    text.push_str("deeper\n\n```bash\ntrue\n```\n");
    let out = Test::new()
        .file("project/deep.md", &text)
        .args(["show", "deep.md", "--format", "json"])
        .timeout(Duration::from_secs(20))
        .run();
    out.assert_status(0);
    assert!(
        out.elapsed < Duration::from_secs(10),
        "took {:?}",
        out.elapsed
    );
    let json = out.stdout_json();
    assert_eq!(json["steps"].as_array().unwrap().len(), 1);
    assert_eq!(json["steps"][0]["line"], 10);
}

#[test]
fn deeply_nested_list_with_an_unclosed_fence_shows_a_short_line() {
    let text = format!("{}```bash\ntrue\n", "1. ".repeat(10_000));
    let out = show("deep-fence.md", text);
    assert_refused(&out);
    // The 30 000-character line is cut around the column.
    assert_output_snapshot!(out);
}

#[test]
fn missing_file() {
    let out = Test::new().args(["show", "./nowhere/missing.md"]).run();
    assert_refused(&out);
    assert_output_snapshot!(out);
    let out = Test::new().args(["show", "missing.md"]).run();
    assert_refused(&out);
    assert_eq!(
        out.stderr,
        "error: cannot read missing.md: no such file\n  \
         hint: check the path, or give the command's name instead (`nixcmd list` shows them)\n"
    );
}

#[test]
fn directory_where_a_file_was_expected() {
    let out = Test::new()
        .dir("project/runbook.md")
        .args(["show", "runbook.md"])
        .run();
    assert_refused(&out);
    assert_output_snapshot!(out);
    let out = Test::new()
        .dir("project/runbooks")
        .args(["show", "./runbooks"])
        .run();
    assert_refused(&out);
    assert_eq!(
        out.stderr,
        "error: ./runbooks is a folder, not a command file\n  hint: give the path of a `.md` file, or use `check FOLDER` to check every file in it\n"
    );
}

#[test]
fn unreadable_file_in_the_search_path_names_its_path() {
    let out = Test::new()
        .file("project/.nixcmd/commands/broken.md", b"\xff\xfe\x00garbage")
        .args(["show", "broken"])
        .run();
    assert_refused(&out);
    assert_output_snapshot!(out);
}

#[test]
fn check_reports_every_bad_file_and_exits_2() {
    let out = Test::new()
        .programs(&["bash"])
        .file("project/bad/latin1.md", b"caf\xe9\n")
        .file("project/bad/open.md", "## Steps\n```bash\ntrue\n")
        .file("project/bad/scalar.md", "---\n42\n---\n")
        .dir("project/bad/folder.md")
        .args([
            "check",
            "bad",
            "bad/folder.md",
            "bad/none.md",
            "--format",
            "github",
        ])
        .run();
    assert_output_snapshot!(out);
    out.assert_status(2);
}

/// Escape sequences in a command file (a description that clears the screen and writes the
/// clipboard with OSC 52, a heading, an attribute) are shown as their pictures by `list`,
/// `show` and `check`, never sent to the operator's terminal.
#[test]
fn control_characters_in_a_runbook_are_shown_not_obeyed() {
    let text = "---\ndescription: \"t \\e]52;c;aGk=\\a \\e[2J\"\nnixcmd: {}\n---\n# T\n\nAbout \u{1b}[31mit\u{9b}2J.\n\n## Steps\n```bash {x\u{1b}[31m=1}\ntrue\n```\n";
    let test = || Test::new().programs(&["bash"]).runbook("esc.md", text);
    let list = test().args(["list"]).run();
    list.assert_status(0);
    assert!(
        list.stdout.contains("t ␛]52;c;aGk=␇ ␛[2J "),
        "{}",
        list.stdout
    );
    let show = test().args(["show", "esc"]).run();
    show.assert_status(0);
    assert!(
        show.stdout.starts_with("esc — t ␛]52;c;aGk=␇ ␛[2J\n")
            && show.stdout.contains("About ␛[31mit\u{fffd}2J."),
        "{}",
        show.stdout
    );
    let check = test().args(["check", "esc"]).run();
    check.assert_status(1);
    assert!(
        check
            .stdout
            .contains("\nerror[unknown-attribute]: unknown attribute `x␛[31m`\n"),
        "{}",
        check.stdout
    );
    // nixcmd's own colors are kept; only the file's sequences are defused.
    let colored = test().args(["--color", "always", "show", "esc"]).run();
    colored.assert_status(0);
    assert!(
        colored.stdout.starts_with("\u{1b}[1mesc\u{1b}[0m — t ␛]52")
            && !colored.stdout.contains("\u{1b}]")
            && !colored.stdout.contains("\u{1b}[2J"),
        "{:?}",
        colored.stdout
    );
    for out in [&list, &show, &check] {
        assert!(
            !out.stdout.contains(['\u{1b}', '\u{7}', '\u{9b}']),
            "{:?}",
            out.stdout
        );
    }
}

/// Bidirectional controls (U+202A–U+202E, U+2066–U+2069: "Trojan Source") reorder what a
/// terminal shows: a description or a line of code could read differently from what it
/// is. `list`, `show` and `check` show each as U+FFFD, one character, as they do C1 controls.
#[test]
fn bidi_controls_in_a_runbook_are_shown_not_obeyed() {
    let text = "---\ndescription: \"safe \u{202e}lla-yolped\u{202c} end\"\nnixcmd: {}\n---\n# T\n\nAbout \u{2067}it\u{2069}.\n\n## Steps\n### Clean \u{202d}up\n```bash {idd=\u{202a}x\u{2066}}\necho hi\n```\n";
    let test = || Test::new().programs(&["bash"]).runbook("bidi.md", text);
    let list = test().args(["list"]).run();
    list.assert_status(0);
    assert!(
        list.stdout.contains("safe \u{fffd}lla-yolped\u{fffd} end"),
        "{}",
        list.stdout
    );
    let show = test().args(["show", "bidi"]).run();
    show.assert_status(0);
    assert!(
        show.stdout
            .starts_with("bidi — safe \u{fffd}lla-yolped\u{fffd} end\n")
            && show.stdout.contains("About \u{fffd}it\u{fffd}."),
        "{}",
        show.stdout
    );
    let check = test().args(["check", "bidi"]).run();
    check.assert_status(1);
    assert!(
        check
            .stdout
            .contains("\n11 | ```bash {idd=\u{fffd}x\u{fffd}}\n   |          ^^^^^^^\n"),
        "{}",
        check.stdout
    );
    let bidi = |c: char| matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    for out in [&list, &show, &check] {
        assert!(!out.stdout.contains(bidi), "{:?}", out.stdout);
    }
}

/// A named pipe with a command's name, in the search path or given to `check`, is read as
/// what it holds now: a pipe nobody writes to is an empty file, not a wait for a writer
/// (`list` and `check` used to hang on it for good).
#[test]
fn a_named_pipe_is_read_without_waiting_for_a_writer() {
    let t = Test::new().dir("project/.nixcmd/commands");
    let pipe = t.project().join(".nixcmd/commands/pipe.md");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let out = t
        .timeout(Duration::from_secs(20))
        .args(["list", "--format", "json"])
        .run();
    assert_eq!(out.status, 0, "{}", out.stderr);
    let listing: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    let row = listing["commands"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["name"] == "pipe")
        .expect("the pipe is listed");
    assert_eq!(
        (row["steps"].as_u64(), row["mode"].as_str()),
        (Some(0), Some("guided"))
    );

    let t = Test::new().dir("project");
    let pipe = t.project().join("pipe.md");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&pipe)
            .status()
            .expect("mkfifo")
            .success()
    );
    let out = t
        .timeout(Duration::from_secs(20))
        .args(["check", "pipe.md"])
        .run();
    assert_eq!(out.status, 0, "{}", out.stderr);
    // An empty guided file: the two findings of an empty file, nothing about reading it.
    assert_eq!(out.stderr, "");
    assert!(
        out.stdout.contains("warning[missing-description]"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("warning[no-runnable-step]"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .ends_with("checked 1 file: 0 errors, 2 warnings, 0 notes\n"),
        "{}",
        out.stdout
    );
}
