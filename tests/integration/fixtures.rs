//! The fixture corpus: `fixtures/runbooks/{valid,invalid}/*.md`, one snapshot per file and
//! output format. Adding a case means adding a file.
//!
//! `check` runs with only `bash` on `PATH`, so snapshots do not depend on the machine's
//! shellcheck; fixtures named `shellcheck-*` run with shellcheck (skipped when absent).

use crate::support::{Test, skip, which};
use std::path::Path;

/// Copies a fixture into a fresh project and runs `nixcmd ARGS…` on it by its file name.
fn run_on(path: &Path, args: &[&str]) -> crate::support::Output {
    let name = path.file_name().unwrap().to_str().unwrap();
    let bytes = std::fs::read(path).unwrap();
    let mut programs = vec!["bash"];
    if name.starts_with("shellcheck-") {
        programs.push("shellcheck");
    }
    Test::new()
        .file(&format!("project/{name}"), bytes)
        .programs(&programs)
        .args(args.iter().map(|a| a.replace("FILE", name)))
        .run()
}

fn needs_missing_tool(path: &Path) -> bool {
    let name = path.file_name().unwrap().to_str().unwrap();
    name.starts_with("shellcheck-")
        && which("shellcheck").is_none()
        && skip(&format!("{name} needs shellcheck"))
}

#[test]
fn valid_fixtures_check_clean() {
    insta::glob!("../../fixtures/runbooks/valid", "*.md", |path| {
        let out = run_on(path, &["check", "FILE"]);
        insta::assert_snapshot!("check", out.normalized());
        // Valid means no errors: warnings (a guided file's ambiguities) are allowed.
        out.assert_status(0);
    });
}

#[test]
fn valid_fixtures_show_json() {
    insta::glob!("../../fixtures/runbooks/valid", "*.md", |path| {
        let out = run_on(path, &["show", "FILE", "--format", "json"]);
        out.assert_status(0);
        let mut json = out.stdout_json();
        // The content hash changes with every edit of the fixture; its presence is enough.
        let hash = json["hash"].take();
        assert_eq!(hash.as_str().map(str::len), Some(64), "sha-256 hex");
        insta::assert_json_snapshot!("show-json", json);
    });
}

#[test]
fn valid_fixtures_show_text() {
    insta::glob!("../../fixtures/runbooks/valid", "*.md", |path| {
        let out = run_on(path, &["show", "FILE"]);
        out.assert_status(0);
        insta::assert_snapshot!("show-text", out.normalized());
    });
}

#[test]
fn invalid_fixtures_are_reported() {
    insta::glob!("../../fixtures/runbooks/invalid", "*.md", |path| {
        if needs_missing_tool(path) {
            return;
        }
        let out = run_on(path, &["check", "FILE"]);
        insta::assert_snapshot!("check", out.normalized());
        // Every invalid fixture fails at least under --strict (some findings are warnings).
        let strict = run_on(path, &["check", "--strict", "FILE"]);
        assert!(
            [1, 2].contains(&strict.status),
            "{} passes check --strict:\n{}",
            path.display(),
            strict.normalized()
        );
        if out.status == 2 {
            // A file that is not a command at all is also refused by `show`, with the same words.
            let show = run_on(path, &["show", "FILE"]);
            show.assert_status(2);
            assert_eq!(show.stdout, "");
            let headline = out
                .stdout
                .lines()
                .find(|l| l.starts_with("error["))
                .unwrap();
            assert!(
                show.stderr.contains(headline),
                "show does not say `{headline}`:\n{}",
                show.normalized()
            );
        }
    });
}
