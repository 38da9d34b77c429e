//! The five built-in runbooks (`commands/*.md`) run end to end by the real binary against real
//! Nix, on the small offline flakes of `fixtures/flakes/make-fixture.sh`, with the stand-ins of
//! `tests/stubs/` for what cannot run here (systemd, `nixos-rebuild`'s activation).
//!
//! Tests that need `nix` (and `git`) skip with a printed reason when it is missing, and fail
//! instead when `NIXCMD_TEST_REQUIRE_ALL=1`. The `deploy-all` tests also need `sshd` (and root):
//! they run over the real OpenSSH servers of `tests/support/sshd-harness.sh`.

use crate::support::{Output, Test, repo, skip, which};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What `.ci/run` sets: flakes on, no binary cache (offline), no sandbox (the fixture builders
/// call `/bin/mkdir` and friends).
const NIX_CONFIG: &str = "experimental-features = nix-command flakes\nsubstituters =\nsandbox = false\nbuild-users-group =";

const SYSTEM: &str = "x86_64-linux";

/// Nix and git are installed (else the test is skipped, or fails under REQUIRE_ALL).
fn have_nix() -> bool {
    for tool in ["nix", "nix-env", "nix-instantiate", "git"] {
        if which(tool).is_none() {
            return !skip(&format!("`{tool}` is not installed"));
        }
    }
    true
}

fn stubs() -> PathBuf {
    repo().join("tests/stubs")
}

/// `PATH` with the stand-ins first.
fn stub_path() -> String {
    format!(
        "{}:{}",
        stubs().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs a program with the fixture environment; panics with its output when it fails.
fn sh(root: &Path, cwd: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(cwd)
        .env("NIX_CONFIG", NIX_CONFIG)
        .env("HOME", root.join("home"))
        .env_remove("XDG_CACHE_HOME")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Generates the fixture fleet `VARIANT` into `[TEMP]/fx` and returns `[TEMP]/fx/app`.
/// A fresh test, or `None` when Nix is missing (the test is skipped then, or fails under
/// NIXCMD_TEST_REQUIRE_ALL).
fn nix_test() -> Option<Test> {
    have_nix().then(Test::new)
}

/// A fresh test and the fixture flake `variant` built in it (`None` as for [`nix_test`]).
fn nix_fixture(variant: &str) -> Option<(Test, PathBuf)> {
    let t = nix_test()?;
    let app = fixture(&t, variant);
    Some((t, app))
}

fn fixture(t: &Test, variant: &str) -> PathBuf {
    let dir = t.root().join("fx");
    let script = repo().join("fixtures/flakes/make-fixture.sh");
    let app = sh(
        t.root(),
        t.root(),
        script.to_str().unwrap(),
        &[dir.to_str().unwrap(), variant],
    );
    let app = PathBuf::from(app);
    assert!(app.join("flake.lock").is_file(), "no flake.lock in {app:?}");
    app
}

/// `nixcmd run COMMAND ARGS… --dir APP --yes` with the Nix environment.
fn run(t: Test, command: &str, args: &[&str], app: &Path) -> Test {
    t.env("NIX_CONFIG", NIX_CONFIG)
        .env_remove("NIXCMD_SYSTEM_ROOT")
        .env_remove("NIXCMD_STUB_SYSTEMD")
        .env_remove("NIXCMD_STUB_FAIL_UNITS")
        .timeout(Duration::from_secs(120))
        .arg("run")
        .arg(command)
        .args(args)
        .arg("--dir")
        .arg(app)
}

/// The folder of the one run recorded under `[TEMP]/state`.
fn run_dir(out: &Output) -> PathBuf {
    let runs = out.root.path().join("state/nixcmd/runs");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&runs)
        .unwrap_or_else(|e| panic!("no runs in {runs:?}: {e}\n{}", out.normalized()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert_eq!(dirs.len(), 1, "expected one run: {dirs:?}");
    dirs.pop().unwrap()
}

/// The output lines of one step of the run (its log without nixcmd's attempt markers).
fn step_log(out: &Output, step: &str) -> Vec<String> {
    log_lines(out, &format!("{step}.log"))
}

/// update-package found greeter 1.0.0 -> 1.1.0 and web1 now runs a system with 1.1.0.
fn assert_moved_greeter_to_1_1_0(out: &Output, root: &Path) {
    assert_eq!(
        step_log(out, "new-version").last().unwrap(),
        "greeter: 1.0.0 -> 1.1.0"
    );
    let running = resolve(&root.join("run/current-system"));
    assert!(is_system(&running, "web1", "1.1.0"), "{running:?}");
}

/// The output lines of `logs/NAME` (a step's or a host's log) without nixcmd's markers.
fn log_lines(out: &Output, name: &str) -> Vec<String> {
    let path = run_dir(out).join("logs").join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {path:?}: {e}\n{}", out.normalized()))
        .lines()
        .filter(|l| !l.starts_with("── "))
        .map(str::to_string)
        .collect()
}

/// The lines of the summary's `warnings:` list.
fn warnings(out: &Output) -> Vec<String> {
    let text = format!("{}{}", out.stdout, out.stderr);
    let mut lines = text.lines().skip_while(|l| l.trim() != "warnings:").skip(1);
    let mut found = Vec::new();
    for l in lines.by_ref() {
        match l.strip_prefix("  - ") {
            Some(w) => found.push(w.to_string()),
            None => break,
        }
    }
    found
}

fn lock(app: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(app.join("flake.lock")).unwrap()).unwrap()
}

fn git(root: &Path, app: &Path, args: &[&str]) -> String {
    sh(root, app, "git", args)
}

/// A hash of every file, symlink and folder under `dir` (paths, modes, contents, link
/// targets), of the git `HEAD` and index-independent status of each repository, but not of git's
/// own bookkeeping (`.git/index` is refreshed by read-only commands such as `git status`).
fn tree_hash(dir: &Path) -> String {
    fn walk(base: &Path, dir: &Path, h: &mut Sha256) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            h.update(rel.as_bytes());
            if meta.file_type().is_symlink() {
                h.update(b"-> ");
                h.update(std::fs::read_link(&p).unwrap().display().to_string());
            } else if meta.is_dir() {
                if p.file_name().is_some_and(|n| n == ".git") {
                    let head = Command::new("git")
                        .args(["rev-parse", "HEAD"])
                        .current_dir(p.parent().unwrap())
                        .output()
                        .unwrap();
                    h.update(&head.stdout);
                    continue;
                }
                h.update(b"/");
                walk(base, &p, h);
            } else {
                use std::os::unix::fs::PermissionsExt;
                h.update(format!(" {:o} ", meta.permissions().mode()));
                h.update(std::fs::read(&p).unwrap());
            }
            h.update(b"\n");
        }
    }
    let mut h = Sha256::new();
    walk(dir, dir, &mut h);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A fake NixOS machine under `[TEMP]/fx/root` running `system` (a store path or folder):
/// `run/current-system`, `run/booted-system` and the system profile (generation 1) point at it.
fn machine(t: &Test, system: &Path) -> PathBuf {
    let root = t.root().join("fx/root");
    machine_at(&root, system);
    root
}

/// The fake NixOS machine of [`machine`] under `root`.
fn machine_at(root: &Path, system: &Path) {
    std::fs::create_dir_all(root.join("run")).unwrap();
    std::fs::create_dir_all(root.join("nix/var/nix/profiles")).unwrap();
    std::os::unix::fs::symlink(system, root.join("run/current-system")).unwrap();
    std::os::unix::fs::symlink(system, root.join("run/booted-system")).unwrap();
    std::os::unix::fs::symlink(system, root.join("nix/var/nix/profiles/system-1-link")).unwrap();
    std::os::unix::fs::symlink("system-1-link", root.join("nix/var/nix/profiles/system")).unwrap();
}

/// Builds host `web1` of the fixture as it is locked now and returns its store path.
fn build_web1(t: &Test, app: &Path) -> PathBuf {
    let attr = ".#nixosConfigurations.web1.config.system.build.toplevel";
    let out = sh(
        t.root(),
        app,
        "nix",
        &["build", "--no-link", "--json", attr],
    );
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    PathBuf::from(json[0]["outputs"]["out"].as_str().unwrap())
}

fn resolve(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|e| panic!("cannot resolve {p:?}: {e}"))
}

// ---- flake-update ------------------------------------------------------------------------------

#[test]
fn flake_update_locks_the_changed_input_and_commits_the_lock() {
    let Some((t, app)) = nix_fixture("update") else {
        return;
    };
    let root = t.root().to_path_buf();
    let before = lock(&app);
    let head_before = git(&root, &app, &["rev-parse", "HEAD"]);
    let dep_dir = t.root().join("fx/dep");
    let dep_hash = sh(
        &root,
        &root,
        "nix",
        &["hash", "path", dep_dir.to_str().unwrap()],
    );

    let out = run(t, "flake-update", &["--yes"], &app).run();
    out.assert_status(0);

    // one new commit on top of the fixture's, with only flake.lock, and a clean work tree
    assert_eq!(
        git(&root, &app, &["log", "--format=%s"]),
        "flake.lock: update dep\ninitial fleet"
    );
    assert_eq!(git(&root, &app, &["rev-parse", "HEAD~1"]), head_before);
    assert_eq!(
        git(&root, &app, &["show", "--name-only", "--format=", "HEAD"]),
        "flake.lock"
    );
    assert_eq!(git(&root, &app, &["status", "--porcelain"]), "");
    let body = git(&root, &app, &["log", "-1", "--format=%b"]);
    assert!(body.contains("dep: sha256-"), "commit message: {body}");

    // dep moved to the new tree (its narHash is the hash of the dep folder now); nothing else
    let after = lock(&app);
    assert_eq!(
        after["nodes"]["dep"]["locked"]["narHash"],
        dep_hash.as_str()
    );
    assert_ne!(
        after["nodes"]["dep"]["locked"]["narHash"],
        before["nodes"]["dep"]["locked"]["narHash"]
    );
    assert!(
        after["nodes"]["dep"]["locked"]["lastModified"].as_u64()
            > before["nodes"]["dep"]["locked"]["lastModified"].as_u64()
    );
    assert_eq!(after["nodes"]["nixpkgs"], before["nodes"]["nixpkgs"]);
    assert_eq!(after["nodes"]["root"], before["nodes"]["root"]);

    // the report, the build of both hosts and the closure diff ran
    let report = step_log(&out, "report");
    assert_eq!(report[0], "Inputs that moved:");
    assert!(report[1].starts_with("  dep: sha256-"), "{report:?}");
    let diff = step_log(&out, "closure-diff").join("\n");
    for host in ["web1", "web2"] {
        assert!(
            diff.contains(&format!("== {host}\ngreeter: 1.0.0 → 1.1.0")),
            "{diff}"
        );
    }
    assert!(
        step_log(&out, "push")
            .join("\n")
            .contains("the current branch has no upstream: push skipped")
    );
}

#[test]
fn flake_update_restores_the_lock_byte_for_byte_when_the_new_input_breaks_evaluation() {
    let Some((t, app)) = nix_fixture("broken-update") else {
        return;
    };
    let root = t.root().to_path_buf();
    let lock_before = std::fs::read(app.join("flake.lock")).unwrap();

    let out = run(t, "flake-update", &["--yes"], &app).run();
    out.assert_status(1);

    assert_eq!(std::fs::read(app.join("flake.lock")).unwrap(), lock_before);
    assert_eq!(git(&root, &app, &["log", "--format=%s"]), "initial fleet");
    assert_eq!(git(&root, &app, &["status", "--porcelain"]), "");
    let text = out.normalized();
    assert!(text.contains("✗ check failed"), "{text}");
    assert!(
        text.contains("error: undefined variable 'brokenVersionVariable'"),
        "{text}"
    );
    assert!(text.contains("✓ restore-lock ok"), "{text}");
    assert!(
        text.contains("troubleshooting: nix flake check fails after the update"),
        "{text}"
    );
    // the steps after the failed check never ran
    let progress: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir(&out).join("progress.json")).unwrap())
            .unwrap();
    let status = |id: &str| {
        progress["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["status"].as_str().unwrap().to_string())
            .unwrap()
    };
    for step in ["build", "commit", "push"] {
        assert_eq!(status(step), "pending", "{step}: {progress:#}");
    }
}

/// `nix flake lock --update-input dep` also moves dep's own inputs (here its copy of nixpkgs, as
/// dep does not follow app's). That is a change to test and commit, not "nothing moved" followed
/// by a success criterion failing with no message.
#[test]
fn flake_update_reports_and_commits_a_moved_input_of_an_input() {
    let Some((t, app)) = nix_fixture("duplicate") else {
        return;
    };
    let root = t.root().to_path_buf();
    let nixpkgs = t.root().join("fx/nixpkgs/lib.nix");
    let mut lib = std::fs::read_to_string(&nixpkgs).unwrap();
    lib.push_str("# upstream moved on\n");
    std::fs::write(&nixpkgs, lib).unwrap();
    let before = lock(&app);

    let out = run(t, "flake-update", &["dep", "--yes"], &app).run();
    out.assert_status(0);

    assert_eq!(
        git(&root, &app, &["log", "--format=%s"]),
        "flake.lock: update dep\ninitial fleet"
    );
    assert_eq!(git(&root, &app, &["status", "--porcelain"]), "");
    let report = step_log(&out, "report");
    assert_eq!(report.len(), 2, "{report:?}");
    assert_eq!(report[0], "Inputs that moved:");
    assert!(
        report[1].starts_with("  dep/nixpkgs: sha256-"),
        "{report:?}"
    );
    let body = git(&root, &app, &["log", "-1", "--format=%b"]);
    assert!(body.starts_with(report[1].trim()), "commit message: {body}");
    // dep itself and app's own nixpkgs (`nixpkgs_2`, not asked for) did not move
    let after = lock(&app);
    assert_eq!(after["nodes"]["dep"], before["nodes"]["dep"]);
    assert_eq!(after["nodes"]["nixpkgs_2"], before["nodes"]["nixpkgs_2"]);
    assert_ne!(
        after["nodes"]["nixpkgs"]["locked"]["narHash"],
        before["nodes"]["nixpkgs"]["locked"]["narHash"]
    );
    // the snapshot lists the inputs named on the command line's level only
    let snapshot = step_log(&out, "snapshot");
    assert_eq!(
        snapshot[0],
        "Inputs before the update (input, revision, last modified):"
    );
    assert!(snapshot[1].starts_with("  dep "), "{snapshot:?}");
    assert!(snapshot[2].starts_with("  nixpkgs "), "{snapshot:?}");
    assert_eq!(snapshot[3], "Hosts: web1 web2 ");
}

/// A scheduled run in CI with nothing to update: the steps after the report are skipped by
/// `unless=FLAKE_UPDATE_NOTHING_MOVED`, the push question is not asked, and the run ends 0 (it
/// paused at `push` with exit 3 on every such run before).
#[test]
fn flake_update_with_nothing_to_update_ends_0_in_ci_without_a_question() {
    let Some((t, app)) = nix_fixture("clean") else {
        return;
    };
    let root = t.root().to_path_buf();
    let lock_before = std::fs::read(app.join("flake.lock")).unwrap();
    let head_before = git(&root, &app, &["rev-parse", "HEAD"]);

    let out = run(t, "flake-update", &["--format", "json"], &app)
        .env("CI", "true")
        .run();
    out.assert_status(0);

    assert_eq!(std::fs::read(app.join("flake.lock")).unwrap(), lock_before);
    assert_eq!(git(&root, &app, &["rev-parse", "HEAD"]), head_before);
    assert_eq!(git(&root, &app, &["status", "--porcelain"]), "");
    assert_eq!(
        step_log(&out, "report"),
        ["Every input was already at its newest revision: nothing to check, build or commit."]
    );
    let stream = crate::run_support::events(&out.stdout);
    let gates: Vec<_> = stream.iter().filter(|e| e["type"] == "gate").collect();
    assert!(gates.is_empty(), "{gates:?}");
    let finished: Vec<(String, String, String)> = stream
        .iter()
        .filter(|e| e["type"] == "step_finished")
        .map(|e| {
            (
                e["step_id"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let skipped = "unless=FLAKE_UPDATE_NOTHING_MOVED: FLAKE_UPDATE_NOTHING_MOVED is true";
    let want: Vec<(String, String, String)> = [
        ("tools", "succeeded", ""),
        ("in-flake", "succeeded", ""),
        ("clean-lock", "succeeded", ""),
        ("clean-tree", "succeeded", ""),
        ("inputs-exist", "succeeded", ""),
        ("flake-reads", "succeeded", ""),
        ("snapshot", "succeeded", ""),
        ("update", "succeeded", ""),
        ("report", "succeeded", ""),
        ("check", "skipped", skipped),
        ("build", "skipped", skipped),
        ("closure-diff", "skipped", skipped),
        ("commit", "skipped", skipped),
        ("push", "skipped", skipped),
        ("lock-committed", "succeeded", ""),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(finished, want);
    let last = stream.last().unwrap();
    assert_eq!(last["type"], "run_finished");
    assert_eq!(last["status"], "succeeded");
    assert_eq!(last["warnings"], serde_json::json!([]));
    let run = run_dir(&out);
    for step in ["check", "build", "closure-diff", "commit", "push"] {
        assert!(!run.join(format!("logs/{step}.log")).exists(), "{step}");
    }
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["compensations"], serde_json::json!(["restore-lock"]));
    assert_eq!(state["approvals"], serde_json::json!([]));
}

// ---- config-audit ------------------------------------------------------------------------------

#[test]
fn config_audit_passes_a_clean_flake() {
    let Some((t, app)) = nix_fixture("clean") else {
        return;
    };
    let out = run(t, "config-audit", &[], &app).run();
    out.assert_status(0);
    assert_eq!(warnings(&out), Vec::<String>::new());
    assert_eq!(
        step_log(&out, "report"),
        ["==== config audit: 0 errors, 0 warnings"]
    );
    let syntax = step_log(&out, "syntax");
    assert_eq!(
        syntax.last().unwrap(),
        "parsed 4 .nix files, 0 with syntax errors"
    );
}

#[test]
fn config_audit_reports_a_syntax_error_with_its_file_and_line() {
    let Some((t, app)) = nix_fixture("syntax-error") else {
        return;
    };
    let out = run(t, "config-audit", &[], &app).run();
    out.assert_status(1);
    let finding = "modules/broken.nix:5:10: syntax error, unexpected '=', expecting ';'";
    assert_eq!(
        warnings(&out),
        [format!(
            "step `syntax` exited with status 1: syntax errors in 1 .nix files, first: {finding} \
             (continuing: on-fail=continue)"
        )]
    );
    assert_eq!(
        step_log(&out, "report"),
        [
            "==== config audit: 1 errors, 0 warnings".to_string(),
            "  syntax           1".to_string(),
            format!("error   [syntax] {finding}"),
        ]
    );
    // the failed success criterion shows the finding in the summary
    assert!(
        out.normalized()
            .contains(&format!("│ error [syntax] {finding}")),
        "{}",
        out.normalized()
    );
}

/// An error in `flake.nix` itself is named relative to the flake, as other files' are: the
/// flake's source path comes from `nix flake archive`, which fails then too, and the finding
/// named `/nix/store/…-source/flake.nix`.
#[test]
fn config_audit_names_a_syntax_error_in_flake_nix_relative_to_the_flake() {
    let Some((t, app)) = nix_fixture("clean") else {
        return;
    };
    let flake = app.join("flake.nix");
    let text = std::fs::read_to_string(&flake).expect("flake.nix");
    std::fs::write(&flake, text.replacen('{', "{ broken = ;", 1)).expect("break flake.nix");
    sh(t.root(), &app, "git", &["commit", "-qam", "break"]);
    let out = run(t, "config-audit", &[], &app).run();
    out.assert_status(1);
    let report = step_log(&out, "report");
    let finding = report
        .iter()
        .find(|l| l.starts_with("error   [flake-eval] "))
        .unwrap_or_else(|| panic!("{report:?}"));
    assert!(
        finding.starts_with("error   [flake-eval] flake.nix:1:"),
        "{finding}"
    );
    assert!(!finding.contains("/nix/store/"), "{finding}");

    // `nixcmd hosts` there: Nix's error line (not its code excerpt), no arrow pointing at
    // nothing, and not "no flake here" with exit 0.
    let root = out.root.path().to_path_buf();
    let rel = app
        .strip_prefix(&root)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let hosts = out
        .then()
        .env("NIX_CONFIG", NIX_CONFIG)
        .timeout(Duration::from_secs(120))
        .current_dir(&rel)
        .args(["hosts"])
        .run();
    hosts.assert_status(1);
    assert!(
        hosts.stderr.starts_with(&format!(
            "warning[flake-hosts]: cannot read the flake's nixosConfigurations in {}: syntax \
             error, unexpected ';' (at flake.nix:1:",
            app.display()
        )),
        "{}",
        hosts.stderr
    );
    assert!(!hosts.stderr.contains("-->"), "{}", hosts.stderr);
    assert_eq!(
        hosts.stdout,
        "No hosts: no nixcmd.toml with [hosts.NAME] tables, and the flake here could not be \
         read (see above).\n"
    );
}

#[test]
fn config_audit_reports_a_stale_input_as_a_warning() {
    let Some((t, app)) = nix_fixture("stale") else {
        return;
    };
    let out = run(t, "config-audit", &[], &app).run();
    out.assert_status(0);
    let days = (jiff::Timestamp::now().as_second() - 1_577_836_800) / 86_400;
    let finding = format!(
        "dep is {days} days old (locked at 2020-01-01; limit 90 days): run /flake-update dep"
    );
    assert_eq!(
        warnings(&out),
        [format!(
            "step `inputs` exited with status 1: {finding} (continuing: on-fail=continue)"
        )]
    );
    assert_eq!(
        step_log(&out, "report"),
        [
            "==== config audit: 0 errors, 1 warnings".to_string(),
            "  input-age        1".to_string(),
            format!("warning [input-age] {finding}"),
        ]
    );
}

#[test]
fn config_audit_reports_the_duplicated_input_of_the_duplicate_fixture() {
    let Some((t, app)) = nix_fixture("duplicate") else {
        return;
    };
    let nixpkgs = t.root().join("fx/nixpkgs");
    let out = run(t, "config-audit", &[], &app).run();
    out.assert_status(0);
    assert_eq!(
        warnings(&out),
        [format!(
            "step `inputs` exited with status 1: path:{} is locked more than once: nixpkgs (from \
             dep); nixpkgs_2 (from root); add 'inputs.<parent>.inputs.<name>.follows' so there is \
             one copy (continuing: on-fail=continue)",
            nixpkgs.display()
        )]
    );
}

/// A `flake.lock` as real fleets have them: registry inputs (`flake-utils`, `nixos-hardware`:
/// different sources, both of type indirect), two deliberate nixpkgs branches, and
/// home-manager's own nixpkgs, which asks for `nixos/nixpkgs` in lower case.
fn real_world_lock(with_home_manager: bool) -> String {
    let recent = jiff::Timestamp::now().as_second() - 86_400;
    let gh = |owner: &str, repo: &str, rev: char| {
        format!(
            r#""locked": {{ "lastModified": {recent}, "narHash": "sha256-{rev}", "owner": "{owner}", "repo": "{repo}", "rev": "{}", "type": "github" }}"#,
            rev.to_string().repeat(40)
        )
    };
    let mut nodes = vec![
        format!(
            r#""flake-utils": {{ {}, "original": {{ "id": "flake-utils", "type": "indirect" }} }}"#,
            gh("numtide", "flake-utils", '1')
        ),
        format!(
            r#""nixos-hardware": {{ {}, "original": {{ "id": "nixos-hardware", "type": "indirect" }} }}"#,
            gh("NixOS", "nixos-hardware", '2')
        ),
        format!(
            r#""nixpkgs": {{ {}, "original": {{ "owner": "NixOS", "ref": "nixos-24.05", "repo": "nixpkgs", "type": "github" }} }}"#,
            gh("NixOS", "nixpkgs", '3')
        ),
        format!(
            r#""nixpkgs-unstable": {{ {}, "original": {{ "owner": "NixOS", "ref": "nixos-unstable", "repo": "nixpkgs", "type": "github" }} }}"#,
            gh("NixOS", "nixpkgs", '4')
        ),
    ];
    let mut root = r#""flake-utils": "flake-utils", "nixos-hardware": "nixos-hardware", "nixpkgs": "nixpkgs", "nixpkgs-unstable": "nixpkgs-unstable""#.to_string();
    if with_home_manager {
        nodes.push(format!(
            r#""home-manager": {{ "inputs": {{ "nixpkgs": "nixpkgs_2" }}, {}, "original": {{ "owner": "nix-community", "repo": "home-manager", "type": "github" }} }}"#,
            gh("nix-community", "home-manager", '5')
        ));
        nodes.push(format!(
            r#""nixpkgs_2": {{ {}, "original": {{ "owner": "nixos", "ref": "nixos-unstable", "repo": "nixpkgs", "type": "github" }} }}"#,
            gh("nixos", "nixpkgs", '6')
        ));
        root.push_str(r#", "home-manager": "home-manager""#);
    }
    nodes.push(format!(r#""root": {{ "inputs": {{ {root} }} }}"#));
    format!(
        "{{ \"nodes\": {{ {} }}, \"root\": \"root\", \"version\": 7 }}\n",
        nodes.join(", ")
    )
}

/// Runs only the lock checks of config-audit on `lock` (offline: nothing is fetched).
fn audit_lock(lock: String) -> Output {
    let t = Test::new()
        .file("app/flake.nix", "{ outputs = { self }: { }; }\n")
        .file("app/flake.lock", lock);
    let app = t.root().join("app");
    run(
        t,
        "config-audit",
        &["--only", "start", "--only", "inputs"],
        &app,
    )
    .run()
}

#[test]
fn config_audit_does_not_call_registry_inputs_or_nixpkgs_branches_duplicates() {
    if !have_nix() {
        return;
    }
    let out = audit_lock(real_world_lock(false));
    out.assert_status(0);
    assert_eq!(warnings(&out), Vec::<String>::new());
    assert_eq!(
        step_log(&out, "inputs").last().unwrap(),
        "inputs: 0 older than 90 days, 0 locked more than once"
    );
}

#[test]
fn config_audit_finds_a_duplicate_nixpkgs_whatever_the_case_of_its_owner() {
    if !have_nix() {
        return;
    }
    let out = audit_lock(real_world_lock(true));
    out.assert_status(0);
    assert_eq!(
        warnings(&out),
        [
            "step `inputs` exited with status 1: github:nixos/nixpkgs is locked more than once: \
             nixpkgs (from root); nixpkgs-unstable (from root); nixpkgs_2 (from home-manager); add \
             'inputs.<parent>.inputs.<name>.follows' so there is one copy (continuing: \
             on-fail=continue)"
        ]
    );
}

// ---- update-package ----------------------------------------------------------------------------

/// The `update` fixture, with this machine "running" web1 as it is locked (greeter 1.0.0).
fn update_package_setup(t: &Test) -> (PathBuf, PathBuf, PathBuf) {
    let app = fixture(t, "update");
    let old = build_web1(t, &app);
    let root = machine(t, &old);
    (app, root, old)
}

#[test]
fn update_package_moves_the_package_to_the_new_version_builds_and_switches() {
    let Some(t) = nix_test() else {
        return;
    };
    let (app, root, old) = update_package_setup(&t);
    let stub_log = t.root().join("stub.log");
    let temp = t.root().to_path_buf();
    let out = run(t, "update-package", &["greeter", "web1", "--yes"], &app)
        .env("PATH", stub_path())
        .env("NIXCMD_SYSTEM_ROOT", root.to_str().unwrap())
        .env("NIXCMD_STUB_LOG", stub_log.to_str().unwrap())
        .run();
    out.assert_status(0);

    assert_eq!(
        step_log(&out, "new-version").last().unwrap(),
        "greeter: 1.0.0 -> 1.1.0"
    );
    let version = sh(
        &temp,
        &app,
        "nix",
        &[
            "eval",
            "--raw",
            &format!(".#packages.{SYSTEM}.greeter.version"),
        ],
    );
    assert_eq!(version, "1.1.0");
    // the new system runs and is the boot default; the old one is not
    let running = resolve(&root.join("run/current-system"));
    assert_ne!(running, old);
    assert!(
        running
            .display()
            .to_string()
            .ends_with("-nixos-system-web1-1.1.0"),
        "{running:?}"
    );
    assert_eq!(resolve(&root.join("nix/var/nix/profiles/system")), running);
    assert_eq!(
        std::fs::read_to_string(root.join("boot/default-system")).unwrap(),
        format!("{}\n", running.display())
    );
    let calls = std::fs::read_to_string(&stub_log).unwrap();
    let rebuilds: Vec<&str> = calls
        .lines()
        .filter(|l| l.starts_with("nixos-rebuild"))
        .collect();
    assert_eq!(
        rebuilds,
        [
            "nixos-rebuild test --flake .#web1",
            "nixos-rebuild switch --flake .#web1"
        ]
    );
    // flake.lock is updated but left for the operator to commit
    let root_dir = out.root.path().to_path_buf();
    assert_eq!(
        git(&root_dir, &app, &["status", "--porcelain"]),
        " M flake.lock"
    );
}

#[test]
fn update_package_rolls_back_to_the_recorded_system_when_units_fail() {
    let Some(t) = nix_test() else {
        return;
    };
    let (app, root, old) = update_package_setup(&t);
    let lock_before = std::fs::read(app.join("flake.lock")).unwrap();
    let out = run(t, "update-package", &["greeter", "web1", "--yes"], &app)
        .env("PATH", stub_path())
        .env("NIXCMD_SYSTEM_ROOT", root.to_str().unwrap())
        .env("NIXCMD_STUB_FAIL_UNITS", "1")
        .run();
    out.assert_status(1);
    let text = out.normalized();
    assert!(text.contains("✗ test failed"), "{text}");
    assert!(text.contains("✓ restore-system ok"), "{text}");
    assert!(text.contains("✓ restore-lock ok"), "{text}");
    assert_eq!(resolve(&root.join("run/current-system")), old);
    assert_eq!(resolve(&root.join("nix/var/nix/profiles/system")), old);
    assert!(!root.join("boot/default-system").exists());
    assert_eq!(std::fs::read(app.join("flake.lock")).unwrap(), lock_before);
    // The stub's units fail again on the way back: warnings on stderr, the result on stdout.
    // Two pipes, so their order in the log is whichever poll(2) read first: compare sorted.
    let mut log = step_log(&out, "restore-system");
    log.sort();
    assert_eq!(
        log,
        [
            "activating the configuration...".to_string(),
            format!("running system restored to {}", old.display()),
            "warning: switch-to-configuration test exited 4: check 'systemctl --failed'".into(),
            "warning: the following units failed: nixcmd-stub-broken.service".into(),
        ]
    );
}

/// A unit that had failed before the run (a nightly backup, say) leaves systemd `degraded`
/// after the switch too: that is not the update's doing and must not roll it back.
#[test]
fn update_package_does_not_blame_the_update_for_units_that_had_failed_before() {
    let Some(t) = nix_test() else {
        return;
    };
    let (app, root, old) = update_package_setup(&t);
    let out = run(t, "update-package", &["greeter", "web1", "--yes"], &app)
        .env("PATH", stub_path())
        .env("NIXCMD_SYSTEM_ROOT", root.to_str().unwrap())
        .env("NIXCMD_STUB_SYSTEMD", "degraded")
        .run();
    out.assert_status(0);
    assert_eq!(
        step_log(&out, "record").last().unwrap(),
        "already failed: nginx.service restic-backups-daily.service"
    );
    let running = resolve(&root.join("run/current-system"));
    assert_ne!(running, old);
    assert_eq!(
        step_log(&out, "verify"),
        [
            "systemd: degraded, only by units that had failed before the update: nginx.service \
             restic-backups-daily.service"
                .to_string(),
            format!("running {}", running.display()),
        ]
    );
    assert_eq!(resolve(&root.join("nix/var/nix/profiles/system")), running);
}

/// A folder of links to every program on `PATH` but `missing`, for a machine without them.
fn path_without(t: &Test, missing: &[&str]) -> String {
    let bin = t.root().join("path-without");
    std::fs::create_dir_all(&bin).unwrap();
    let path = stub_path();
    for dir in std::env::split_paths(&path) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let link = bin.join(&name);
            if missing.iter().any(|m| name == *m) || link.symlink_metadata().is_ok() {
                continue;
            }
            std::os::unix::fs::symlink(e.path(), link).unwrap();
        }
    }
    bin.display().to_string()
}

/// The classic `/etc/nixos`: a flake in a plain folder, on a machine without git.
#[test]
fn update_package_runs_in_a_plain_folder_without_git() {
    let Some(t) = nix_test() else {
        return;
    };
    let (app, root, _) = update_package_setup(&t);
    std::fs::remove_dir_all(app.join(".git")).unwrap();
    let path = path_without(&t, &["git"]);
    let out = run(t, "update-package", &["greeter", "web1", "--yes"], &app)
        .env("PATH", path)
        .env("NIXCMD_SYSTEM_ROOT", root.to_str().unwrap())
        .run();
    out.assert_status(0);
    assert_moved_greeter_to_1_1_0(&out, &root);
}

/// The machine's own host does not evaluate (here a module uses something its nixpkgs lacks):
/// that fails the build and rolls back, where it was "no nixosConfigurations.web1 in this
/// flake: nothing to activate" and a successful run.
#[test]
fn update_package_fails_when_the_host_does_not_evaluate() {
    let Some(t) = nix_test() else {
        return;
    };
    let (app, root, old) = update_package_setup(&t);
    let host = app.join("hosts/web1.nix");
    let text = std::fs::read_to_string(&host).unwrap();
    std::fs::write(
        &host,
        text.replace("[ greeter ]", "[ greeter removedPackage ]"),
    )
    .unwrap();
    let temp = t.root().to_path_buf();
    git(
        &temp,
        &app,
        &["commit", "-q", "-am", "web1 uses a removed package"],
    );
    let lock_before = std::fs::read(app.join("flake.lock")).unwrap();
    let out = run(t, "update-package", &["greeter", "web1", "--yes"], &app)
        .env("PATH", stub_path())
        .env("NIXCMD_SYSTEM_ROOT", root.to_str().unwrap())
        .run();
    out.assert_status(1);
    let text = out.normalized();
    assert!(text.contains("✗ build failed"), "{text}");
    assert!(
        step_log(&out, "build").contains(&"error: undefined variable 'removedPackage'".to_string()),
        "{:?}",
        step_log(&out, "build")
    );
    assert!(text.contains("✓ restore-lock ok"), "{text}");
    assert_eq!(std::fs::read(app.join("flake.lock")).unwrap(), lock_before);
    assert_eq!(resolve(&root.join("run/current-system")), old);
    assert!(!run_dir(&out).join("logs/test.log").exists());
}

#[test]
fn update_package_stops_with_success_when_there_is_no_new_version() {
    let Some((t, app)) = nix_fixture("clean") else {
        return;
    };
    let lock_before = std::fs::read(app.join("flake.lock")).unwrap();
    let out = run(t, "update-package", &["greeter", "web1", "--yes"], &app)
        .env("PATH", stub_path())
        .run();
    out.assert_status(0);
    assert_eq!(
        step_log(&out, "new-version").last().unwrap(),
        "greeter is already at its newest version (1.0.0) in 'dep': flake.lock left as it was"
    );
    assert_eq!(std::fs::read(app.join("flake.lock")).unwrap(), lock_before);
}

/// `tools/other` has the same source, hence the same store path, as app's own `dep`: the input
/// to update is `dep`, the one app can name (`--update-input other` only warns "does not match
/// any input", and the run ended "already at its newest version (1.0.0)").
#[test]
fn update_package_picks_the_direct_input_when_an_input_of_an_input_has_the_same_source() {
    let Some((t, app)) = nix_fixture("nested-update") else {
        return;
    };
    let old = build_web1(&t, &app);
    let root = machine(&t, &old);
    let out = run(t, "update-package", &["greeter", "web1", "--yes"], &app)
        .env("PATH", stub_path())
        .env("NIXCMD_SYSTEM_ROOT", root.to_str().unwrap())
        .run();
    out.assert_status(0);
    assert_eq!(
        step_log(&out, "find-package"),
        [format!(
            "greeter is .#packages.{SYSTEM}.greeter, provided by input 'dep'"
        )]
    );
    assert_eq!(
        step_log(&out, "update-input")[0],
        "+ nix flake lock --update-input dep"
    );
    assert_moved_greeter_to_1_1_0(&out, &root);
}

#[test]
fn update_package_refuses_an_input_the_flake_does_not_have() {
    let Some((t, app)) = nix_fixture("nested-update") else {
        return;
    };
    let lock_before = std::fs::read(app.join("flake.lock")).unwrap();
    let out = run(
        t,
        "update-package",
        &["greeter", "web1", "other", "--yes"],
        &app,
    )
    .env("PATH", stub_path())
    .run();
    out.assert_status(4);
    assert_eq!(
        step_log(&out, "find-package"),
        ["'other' is not an input of this flake; inputs are: dep nixpkgs tools"]
    );
    let text = out.normalized();
    assert!(
        text.contains("troubleshooting: 'X' is not an input of this flake"),
        "{text}"
    );
    assert!(!run_dir(&out).join("logs/update-input.log").exists());
    assert_eq!(std::fs::read(app.join("flake.lock")).unwrap(), lock_before);
}

/// What the overview promises when there is nothing to update and no terminal: the steps after
/// the version check are skipped (`unless=UP_NO_NEW_VERSION`, `when=UP_ACTIVATE`), so neither
/// question is asked and the run ends 0 with the lock as it was (it paused at `test` with
/// exit 3 before).
#[test]
fn update_package_with_no_new_version_ends_0_without_a_terminal_and_without_a_question() {
    let Some((t, app)) = nix_fixture("clean") else {
        return;
    };
    let lock_before = std::fs::read(app.join("flake.lock")).unwrap();
    let out = run(t, "update-package", &["greeter", "web1"], &app)
        .env("PATH", stub_path())
        .env("CI", "true")
        .run();
    out.assert_status(0);
    assert_eq!(
        step_log(&out, "new-version").last().unwrap(),
        "greeter is already at its newest version (1.0.0) in 'dep': flake.lock left as it was"
    );
    let text = out.normalized();
    assert!(!text.contains("needs confirmation"), "{text}");
    for (step, reason) in [
        (
            "build",
            "unless=UP_NO_NEW_VERSION: UP_NO_NEW_VERSION is true",
        ),
        ("test", "when=UP_ACTIVATE: UP_ACTIVATE is not set"),
        ("verify", "when=UP_ACTIVATE: UP_ACTIVATE is not set"),
        ("switch", "when=UP_ACTIVATE: UP_ACTIVATE is not set"),
        (
            "package-built",
            "unless=UP_NO_NEW_VERSION: UP_NO_NEW_VERSION is true",
        ),
    ] {
        let line = format!("- {step} skipped [DURATION] — {reason}\n");
        assert!(
            crate::run_support::normalized(&out).contains(&line),
            "{line}{text}"
        );
        assert!(!run_dir(&out).join(format!("logs/{step}.log")).exists());
    }
    assert_eq!(std::fs::read(app.join("flake.lock")).unwrap(), lock_before);
}

// ---- system-health-check -----------------------------------------------------------------------

/// Runs the health check on a fake NixOS machine with the systemd stand-ins in `mode`.
/// Disk thresholds are 99%/100% so that the machine running the tests does not change the report.
fn health(mode: &str) -> (Output, String) {
    let t = Test::new();
    let system = t.root().join("fx/system");
    std::fs::create_dir_all(&system).unwrap();
    let root = machine(&t, &system);
    let out = t
        .env("PATH", stub_path())
        .env("NIXCMD_SYSTEM_ROOT", root.to_str().unwrap())
        .env("NIXCMD_STUB_SYSTEMD", mode)
        .args([
            "run",
            "system-health-check",
            "disk-warn=99",
            "disk-crit=100",
        ])
        .run();
    let host = String::from_utf8(Command::new("uname").arg("-n").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_string();
    (out, host)
}

#[test]
fn system_health_check_without_systemd_completes_with_a_warning() {
    let (out, host) = health("offline");
    out.assert_status(0);
    assert_eq!(
        warnings(&out),
        [
            "step `systemd` exited with status 1: systemd is not running on this machine \
          (state: offline): unit checks skipped (continuing: on-fail=continue)"
        ]
    );
    assert_eq!(
        step_log(&out, "report"),
        [
            format!("==== {host}: DEGRADED (0 errors, 1 warnings)"),
            "warning [systemd] systemd is not running (state: offline)".to_string(),
        ]
    );
}

#[test]
fn system_health_check_reports_a_healthy_machine_exactly() {
    let (out, host) = health("healthy");
    out.assert_status(0);
    assert_eq!(warnings(&out), Vec::<String>::new());
    assert_eq!(
        step_log(&out, "systemd"),
        ["systemd: running", "failed units: none"]
    );
    assert_eq!(
        step_log(&out, "pending"),
        ["pending activation: none", "reboot needed: no"]
    );
    assert_eq!(step_log(&out, "generations"), ["system generations: 1"]);
    assert_eq!(step_log(&out, "journal"), ["journal errors since boot: 0"]);
    assert_eq!(
        step_log(&out, "report"),
        [format!("==== {host}: HEALTHY (0 errors, 0 warnings)")]
    );
}

#[test]
fn system_health_check_reports_a_degraded_machine_exactly() {
    let (out, host) = health("degraded");
    out.assert_status(1);
    assert_eq!(
        warnings(&out),
        [
            "step `systemd` exited with status 1: systemd is degraded, failed units: \
             nginx.service restic-backups-daily.service (continuing: on-fail=continue)",
            "step `journal` exited with status 1: 4 error messages in the journal since boot \
             (continuing: on-fail=continue)",
        ]
    );
    assert_eq!(
        step_log(&out, "systemd"),
        [
            "systemd: degraded",
            "failed units:",
            "  nginx.service",
            "  restic-backups-daily.service",
            "systemd is degraded, failed units: nginx.service restic-backups-daily.service",
        ]
    );
    assert_eq!(
        step_log(&out, "report"),
        [
            format!("==== {host}: CRITICAL (3 errors, 1 warnings)"),
            "error   [systemd] systemd is degraded".to_string(),
            "error   [failed-unit] nginx.service".to_string(),
            "error   [failed-unit] restic-backups-daily.service".to_string(),
            "warning [journal] 4 error messages since boot (journalctl -b -p err)".to_string(),
        ]
    );
    let text = out.normalized();
    assert!(
        text.contains("troubleshooting: degraded with failed units"),
        "{text}"
    );
}

// ---- --dry-run ---------------------------------------------------------------------------------

#[test]
fn dry_run_of_every_builtin_changes_no_file() {
    let Some((t, app)) = nix_fixture("update") else {
        return;
    };
    let old = build_web1(&t, &app);
    let root = machine(&t, &old);
    let fx = t.root().join("fx");
    let temp = t.root().to_path_buf();
    let state = temp.join("state");
    let before = tree_hash(&fx);
    for (command, args) in [
        ("flake-update", vec![]),
        ("config-audit", vec![]),
        ("update-package", vec!["greeter", "web1"]),
        ("system-health-check", vec![]),
    ] {
        let out = run(Test::new(), command, &args, &app)
            .env("PATH", stub_path())
            .env("NIXCMD_SYSTEM_ROOT", root.to_str().unwrap())
            .env("XDG_STATE_HOME", state.to_str().unwrap())
            .arg("--dry-run")
            .run();
        out.assert_status(0);
        assert!(
            out.normalized().contains("does not run — dry run")
                || command == "config-audit"
                || command == "system-health-check",
            "{}",
            out.normalized()
        );
        assert_eq!(
            tree_hash(&fx),
            before,
            "--dry-run of {command} changed a file under {fx:?}:\n{}",
            out.normalized()
        );
    }
    // (deploy-all's dry run is in deploy_all_dry_run_changes_nothing: it needs hosts)
}

// ---- deploy-all --------------------------------------------------------------------------------

/// Real sshd servers on loopback (`tests/support/sshd-harness.sh`), one per fixture host, each
/// "host" with its own system root: `[TEMP]/fx/roots/HOST`, passed to the sessions as
/// `NIXCMD_SYSTEM_ROOT` by the client's `SetEnv` (the harness's sshd accepts `NIXCMD_*`).
/// Stopped, with whatever the sessions left, on drop.
struct Fleet {
    dir: tempfile::TempDir,
    /// `-F` file for ssh: the harness's hosts plus the per-host `SetEnv`.
    ssh_config: PathBuf,
    /// (host, port, root)
    hosts: Vec<(String, u16, PathBuf)>,
}

fn harness() -> PathBuf {
    repo().join("tests/support/sshd-harness.sh")
}

impl Fleet {
    fn start(t: &Test, hosts: &[&str]) -> Option<Fleet> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            skip("the deploy-all tests need root (sshd must switch to the logged-in user)");
            return None;
        }
        if !Path::new("/usr/sbin/sshd").exists() || which("ssh").is_none() {
            skip("sshd or ssh is not installed (apt-get install openssh-server openssh-client)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("nixcmd-sshd")
            .tempdir()
            .expect("a temporary folder");
        let ports: Vec<u16> = hosts
            .iter()
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
                l.local_addr().unwrap().port()
            })
            .collect();
        let out = Command::new(harness())
            .arg("start")
            .arg(dir.path())
            .args(ports.iter().map(|p| p.to_string()))
            .output()
            .expect("run sshd-harness.sh");
        assert!(
            out.status.success(),
            "sshd-harness start failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut config = format!("Include {}\n", dir.path().join("ssh_config").display());
        let mut list = Vec::new();
        for (host, port) in hosts.iter().zip(&ports) {
            let root = t.root().join("fx/roots").join(host);
            config.push_str(&format!(
                "Host h-{port}\n  SetEnv NIXCMD_SYSTEM_ROOT={}\n",
                root.display()
            ));
            list.push((host.to_string(), *port, root));
        }
        let ssh_config = dir.path().join("fleet_ssh_config");
        std::fs::write(&ssh_config, config).unwrap();
        Some(Fleet {
            dir,
            ssh_config,
            hosts: list,
        })
    }

    /// The inventory: `[hosts.HOST] target = "h-PORT"`, ssh with the fleet's config.
    fn nixcmd_toml(&self) -> String {
        let mut s = format!(
            "[ssh]\nconnect_timeout = 5\noptions = [\"-F\", \"{}\"]\n",
            self.ssh_config.display()
        );
        for (host, port, _) in &self.hosts {
            s.push_str(&format!("\n[hosts.{host}]\ntarget = \"h-{port}\"\n"));
        }
        s
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = Command::new(harness())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// The `update` fleet with both hosts running (and booting) their systems as locked
/// (greeter 1.0.0), then the lock moved to greeter 1.1.0: what deploy-all rolls out.
/// Returns the app folder and, per host, the old system.
fn deploy_setup(t: &Test, fleet: &Fleet) -> (PathBuf, Vec<PathBuf>) {
    let app = fixture(t, "update");
    let mut old = Vec::new();
    for (host, _, root) in &fleet.hosts {
        let attr = format!(".#nixosConfigurations.{host}.config.system.build.toplevel");
        let out = sh(
            t.root(),
            &app,
            "nix",
            &["build", "--no-link", "--json", &attr],
        );
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let system = PathBuf::from(json[0]["outputs"]["out"].as_str().unwrap());
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::create_dir_all(root.join("nix/var/nix/profiles")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink(&system, root.join("run/current-system")).unwrap();
        let profile = root.join("nix/var/nix/profiles/system");
        sh(
            t.root(),
            &app,
            "nix-env",
            &[
                "-p",
                profile.to_str().unwrap(),
                "--set",
                system.to_str().unwrap(),
            ],
        );
        old.push(system);
    }
    sh(
        t.root(),
        &app,
        "nix",
        &["flake", "lock", "--update-input", "dep"],
    );
    std::fs::write(app.join("nixcmd.toml"), fleet.nixcmd_toml()).unwrap();
    (app, old)
}

fn deploy(t: Test, fleet: &Fleet, app: &Path, extra: &[&str]) -> Output {
    let opts = format!("-F {}", fleet.ssh_config.display());
    run(t, "deploy-all", extra, app)
        .env("NIX_SSHOPTS", opts)
        .timeout(Duration::from_secs(150))
        .run()
}

/// What `run/current-system` and the system profile of a host point at, and the symlink's
/// inode (a host that was never touched keeps the very same link).
fn host_state(root: &Path) -> (PathBuf, PathBuf, u64) {
    use std::os::unix::fs::MetadataExt;
    let link = root.join("run/current-system");
    (
        resolve(&link),
        resolve(&root.join("nix/var/nix/profiles/system")),
        std::fs::symlink_metadata(&link).unwrap().ino(),
    )
}

fn is_system(path: &Path, host: &str, version: &str) -> bool {
    path.display()
        .to_string()
        .ends_with(&format!("-nixos-system-{host}-{version}"))
}

#[test]
fn deploy_all_activates_every_host_and_makes_it_the_boot_default() {
    let Some(t) = nix_test() else {
        return;
    };
    let Some(fleet) = Fleet::start(&t, &["web1", "web2"]) else {
        return;
    };
    let (app, old) = deploy_setup(&t, &fleet);
    let out = deploy(t, &fleet, &app, &["--yes"]);
    out.assert_status(0);
    for ((host, _, root), old) in fleet.hosts.iter().zip(&old) {
        let (running, profile, _) = host_state(root);
        assert!(is_system(&running, host, "1.1.0"), "{host}: {running:?}");
        assert_ne!(&running, old);
        assert_eq!(profile, running, "{host}: boot profile");
        assert_eq!(
            std::fs::read_to_string(root.join("boot/default-system")).unwrap(),
            format!("{}\n", running.display())
        );
    }
    let text = out.normalized();
    assert!(text.contains("web1  ok         ok      ok"), "{text}");
}

#[test]
fn deploy_all_stops_at_a_failing_canary_and_rolls_it_back() {
    let Some(t) = nix_test() else {
        return;
    };
    let Some(fleet) = Fleet::start(&t, &["web1", "web2"]) else {
        return;
    };
    let (app, old) = deploy_setup(&t, &fleet);
    // units fail everywhere: only the canary may find out
    let before: Vec<_> = fleet
        .hosts
        .iter()
        .map(|(_, _, root)| {
            std::fs::write(root.join("etc/nixcmd-stub-fail-units"), "").unwrap();
            host_state(root)
        })
        .collect();
    let out = deploy(t, &fleet, &app, &["--yes"]);
    out.assert_status(1);
    let text = out.normalized();
    // web1, first in the inventory, is the canary: activated, failed, put back
    assert!(
        text.contains("warning: the following units failed: nixcmd-stub-broken.service"),
        "{text}"
    );
    let (running, profile, _) = host_state(&fleet.hosts[0].2);
    assert_eq!(running, old[0]);
    assert_eq!(profile, old[0]);
    // Activated, then put back (its own logs say so: the link's inode cannot, as ext4 may
    // give the link the rollback makes the number the first one had).
    let activated = log_lines(&out, "activate@web1.log");
    assert!(
        activated.contains(&"activating the configuration...".to_string()),
        "the canary was never activated: {activated:?}"
    );
    // Its stdout and stderr are two pipes: the order of lines across them in the log is
    // whichever poll(2) read first, so the line is looked for, not expected last.
    let restored = log_lines(&out, "restore-host@web1.log");
    assert!(
        restored.contains(&format!("back on {}", old[0].display())),
        "{restored:?}"
    );
    // web2 was never touched: the very same link, and no activation log
    assert_eq!(host_state(&fleet.hosts[1].2), before[1]);
    assert!(!run_dir(&out).join("logs/activate@web2.log").exists());
    assert!(
        text.contains("web2  ok         ok      skipped"),
        "web2 must not start after the canary failed:\n{text}"
    );
    assert!(
        text.contains("web1  ok         ok      failed    ok"),
        "{text}"
    );
}

#[test]
fn deploy_all_rolls_back_only_the_failing_host() {
    let Some(t) = nix_test() else {
        return;
    };
    let Some(fleet) = Fleet::start(&t, &["web1", "web2"]) else {
        return;
    };
    let (app, old) = deploy_setup(&t, &fleet);
    std::fs::write(fleet.hosts[1].2.join("etc/nixcmd-stub-fail-units"), "").unwrap();
    let out = deploy(t, &fleet, &app, &["--yes"]);
    out.assert_status(1);
    let text = out.normalized();
    // web2 failed its activation and is back on the exact system and profile it had
    let (running, profile, _) = host_state(&fleet.hosts[1].2);
    assert_eq!(running, old[1]);
    assert_eq!(profile, old[1]);
    assert!(
        text.contains("web2  ok         ok      failed    ok"),
        "{text}"
    );
    // web1 (the canary) succeeded and is left as it is: running the new system, its boot
    // default not yet moved, ready for `nixcmd resume`
    let (running, profile, _) = host_state(&fleet.hosts[0].2);
    assert!(is_system(&running, "web1", "1.1.0"), "{running:?}");
    assert_eq!(profile, old[0]);
    assert!(!fleet.hosts[0].2.join("boot/default-system").exists());
}

/// Both hosts have units that failed long before this deploy (systemd `degraded` before and
/// after): the deploy goes through, and each host's check says why it did not count them.
#[test]
fn deploy_all_does_not_roll_back_for_units_that_had_failed_before() {
    let Some(t) = nix_test() else {
        return;
    };
    let Some(fleet) = Fleet::start(&t, &["web1", "web2"]) else {
        return;
    };
    let mut config = std::fs::read_to_string(&fleet.ssh_config).unwrap();
    for (_, _, root) in &fleet.hosts {
        let line = format!("SetEnv NIXCMD_SYSTEM_ROOT={}", root.display());
        config = config.replace(&line, &format!("{line} NIXCMD_STUB_SYSTEMD=degraded"));
    }
    std::fs::write(&fleet.ssh_config, config).unwrap();
    let (app, old) = deploy_setup(&t, &fleet);
    let out = deploy(t, &fleet, &app, &["--yes"]);
    out.assert_status(0);
    let units = "nginx.service restic-backups-daily.service";
    for ((host, _, root), old) in fleet.hosts.iter().zip(&old) {
        let (running, profile, _) = host_state(root);
        assert!(is_system(&running, host, "1.1.0"), "{host}: {running:?}");
        assert_ne!(&running, old);
        assert_eq!(profile, running, "{host}: boot profile");
        assert_eq!(
            log_lines(&out, &format!("record@{host}.log"))
                .last()
                .unwrap(),
            &format!("already failed: {units}")
        );
        assert_eq!(
            log_lines(&out, &format!("check@{host}.log")),
            [
                format!(
                    "systemd is degraded, only by units that had failed before the deploy: {units}"
                ),
                format!("running {}", running.display()),
            ]
        );
    }
}

/// `/deploy-all web1` reads like "deploy web1": it must not deploy every host instead. The
/// command declares no arguments and reads none, so nixcmd refuses them before anything runs.
#[test]
fn deploy_all_refuses_arguments_before_anything_runs() {
    let Some((t, app)) = nix_fixture("clean") else {
        return;
    };
    let out = run(t, "deploy-all", &["web1", "--yes"], &app).run();
    assert_eq!(
        (out.status, out.stderr.as_str()),
        (
            2,
            "error: `deploy-all` takes no arguments, and none of its blocks reads them: `web1`\n  \
             hint: it would ignore them; to run it on some hosts only, use --hosts (e.g. `nixcmd /deploy-all --hosts web1`)\n"
        )
    );
    assert!(crate::run_support::run_dirs(out.root.path()).is_empty());
}

/// `flake.nix` gained an input nobody locked: deploy-all (even its dry run, whose prerequisites
/// run) must not lock it on the way and deploy it unreviewed; it stops with flake.lock as it was.
#[test]
fn deploy_all_refuses_a_lock_that_does_not_match_the_flake_and_leaves_it_alone() {
    let Some((t, app)) = nix_fixture("clean") else {
        return;
    };
    let dep = t.root().join("fx/dep");
    let flake = std::fs::read_to_string(app.join("flake.nix")).unwrap();
    let line = format!("    dep.url = \"path:{}\";\n", dep.display());
    assert!(flake.contains(&line), "{flake}");
    let added = flake.replace(
        &line,
        &format!("{line}    extra.url = \"path:{}\";\n", dep.display()),
    );
    std::fs::write(app.join("flake.nix"), added).unwrap();
    let temp = t.root().to_path_buf();
    git(
        &temp,
        &app,
        &["commit", "-q", "-am", "an input, not locked"],
    );
    let lock_before = std::fs::read_to_string(app.join("flake.lock")).unwrap();
    let out = run(t, "deploy-all", &["--dry-run"], &app).run();
    out.assert_status(4);
    assert_eq!(
        std::fs::read_to_string(app.join("flake.lock")).unwrap(),
        lock_before
    );
    assert_eq!(git(&temp, &app, &["status", "--porcelain"]), "");
    let log = step_log(&out, "inventory");
    assert!(
        log.iter().any(|l| l.contains(
            "requires lock file changes but they're not allowed due to '--no-update-lock-file'"
        )),
        "{log:?}"
    );
    assert!(
        out.normalized().contains(
            "troubleshooting: requires lock file changes but they're not allowed due to \
             '--no-update-lock-file'"
        ),
        "{}",
        out.normalized()
    );
}

#[test]
fn deploy_all_dry_run_changes_no_file() {
    let Some(t) = nix_test() else {
        return;
    };
    let Some(fleet) = Fleet::start(&t, &["web1", "web2"]) else {
        return;
    };
    let (app, _) = deploy_setup(&t, &fleet);
    let fx = t.root().join("fx");
    let before = tree_hash(&fx);
    let out = deploy(t, &fleet, &app, &["--dry-run"]);
    out.assert_status(0);
    let text = out.normalized();
    assert!(
        text.contains("activate skipped") || text.contains("- activate skipped"),
        "{text}"
    );
    assert_eq!(tree_hash(&fx), before, "{text}");
}

impl Fleet {
    /// Stops host `i`'s sshd: the host cannot be reached any more.
    fn stop_host(&self, i: usize) {
        let port = self.hosts[i].1;
        let pid_file = self.dir.path().join(format!("sshd-{port}.pid"));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: signalling the sshd this test started (its pid file names it).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the sshd of {} still answers", self.hosts[i].0);
    }
}

/// The ssh options nixcmd gives every host of the fleet's `nixcmd.toml`, as `hosts.tsv` lists
/// them.
fn fleet_ssh_fields(fleet: &Fleet) -> String {
    format!(
        "-o\tBatchMode=yes\t-o\tConnectTimeout=5\t-o\tServerAliveInterval=15\t-o\t\
         ServerAliveCountMax=3\t-F\t{}",
        fleet.ssh_config.display()
    )
}

/// `--hosts web1` narrows the steps that run here too: only web1 is built and copied to, so
/// the deploy goes through with web2's sshd stopped (the runbook's own parse of nixcmd.toml
/// built every host and ran `nix copy` to web2, which failed the narrowed deploy).
#[test]
fn deploy_all_with_hosts_builds_and_copies_only_the_selected_hosts() {
    let Some(t) = nix_test() else {
        return;
    };
    let Some(fleet) = Fleet::start(&t, &["web1", "web2"]) else {
        return;
    };
    let (app, old) = deploy_setup(&t, &fleet);
    fleet.stop_host(1);
    let web2_before = host_state(&fleet.hosts[1].2);
    // No NIX_SSHOPTS: nix copy gets nixcmd's ssh options from $NIXCMD_HOSTS_FILE.
    let out = run(t, "deploy-all", &["--yes", "--hosts", "web1"], &app)
        .timeout(Duration::from_secs(150))
        .run();
    out.assert_status(0);
    let (running, profile, _) = host_state(&fleet.hosts[0].2);
    assert!(is_system(&running, "web1", "1.1.0"), "{running:?}");
    assert_ne!(running, old[0]);
    assert_eq!(profile, running);
    assert_eq!(host_state(&fleet.hosts[1].2), web2_before);
    let port = fleet.hosts[0].1;
    assert_eq!(
        std::fs::read_to_string(run_dir(&out).join("hosts.tsv")).unwrap(),
        format!("web1\tssh\th-{port}\t-\t{}\n", fleet_ssh_fields(&fleet))
    );
    let built: Vec<String> = step_log(&out, "build")
        .into_iter()
        .filter(|l| l.starts_with("+ "))
        .collect();
    assert_eq!(built, ["+ building web1"]);
    let copied: Vec<String> = step_log(&out, "copy")
        .into_iter()
        .filter(|l| l.starts_with("+ "))
        .collect();
    assert_eq!(
        copied,
        [format!(
            "+ web1: nix copy --to ssh://h-{port} {}",
            running.display()
        )]
    );
    let listed: Vec<String> = step_log(&out, "inventory")
        .into_iter()
        .filter(|l| l.contains(" -> "))
        .collect();
    assert_eq!(listed, [format!("web1 -> h-{port}")]);
}

/// `--config FILE` outside the project (the project has no nixcmd.toml): build and copy use
/// its hosts, with their ports and `[ssh]` and per-host options (no ssh_config alias, no
/// NIX_SSHOPTS: nothing but what nixcmd resolved reaches the hosts).
#[test]
fn deploy_all_honours_a_config_file_outside_the_project() {
    let Some(t) = nix_test() else {
        return;
    };
    let Some(fleet) = Fleet::start(&t, &["web1", "web2"]) else {
        return;
    };
    let (app, old) = deploy_setup(&t, &fleet);
    std::fs::remove_file(app.join("nixcmd.toml")).unwrap();
    let key = fleet.dir.path().join("id_ed25519");
    let mut config = format!(
        "[ssh]\nconnect_timeout = 5\noptions = [\"-i\", \"{}\", \"-o\", \"IdentitiesOnly=yes\", \
         \"-o\", \"StrictHostKeyChecking=no\", \"-o\", \"UserKnownHostsFile=/dev/null\", \"-o\", \
         \"LogLevel=ERROR\"]\n",
        key.display()
    );
    for (host, port, root) in &fleet.hosts {
        config.push_str(&format!(
            "\n[hosts.{host}]\ntarget = \"root@127.0.0.1\"\nport = {port}\n\
             ssh_options = [\"-o\", \"SetEnv=NIXCMD_SYSTEM_ROOT={}\"]\n",
            root.display()
        ));
    }
    let ops = t.root().join("ops");
    std::fs::create_dir_all(&ops).unwrap();
    let config_path = ops.join("fleet.toml");
    std::fs::write(&config_path, config).unwrap();
    let out = run(
        t,
        "deploy-all",
        &["--yes", "--config", config_path.to_str().unwrap()],
        &app,
    )
    .timeout(Duration::from_secs(150))
    .run();
    out.assert_status(0);
    for ((host, port, root), old) in fleet.hosts.iter().zip(&old) {
        let (running, profile, _) = host_state(root);
        assert!(is_system(&running, host, "1.1.0"), "{host}: {running:?}");
        assert_ne!(&running, old);
        assert_eq!(profile, running, "{host}: boot profile");
        assert!(
            step_log(&out, "copy").contains(&format!(
                "+ {host}: nix copy --to ssh://root@127.0.0.1 {}",
                running.display()
            )),
            "{:?}",
            step_log(&out, "copy")
        );
        assert!(
            step_log(&out, "inventory")
                .contains(&format!("{host} -> root@127.0.0.1 (port {port})")),
            "{:?}",
            step_log(&out, "inventory")
        );
    }
}

// ---- system-health-check HOST… ----------------------------------------------------------------

/// `system-health-check web1 web2` over the real sshd: every block runs on both hosts, web1
/// healthy and web2 degraded. The stand-ins sit in each fake system's `sw/bin`, where NixOS
/// keeps `systemctl`; the mode reaches each host through the client's `SetEnv`.
#[test]
fn system_health_check_checks_each_named_host_over_ssh() {
    let t = Test::new();
    let Some(fleet) = Fleet::start(&t, &["web1", "web2"]) else {
        return;
    };
    let mut config = std::fs::read_to_string(&fleet.ssh_config).unwrap();
    for ((host, _, root), mode) in fleet.hosts.iter().zip(["healthy", "degraded"]) {
        let system = t.root().join("fx/systems").join(host);
        let bin = system.join("sw/bin");
        std::fs::create_dir_all(&bin).unwrap();
        for tool in ["systemctl", "journalctl"] {
            std::fs::copy(stubs().join(tool), bin.join(tool)).unwrap();
        }
        machine_at(root, &system);
        let line = format!("SetEnv NIXCMD_SYSTEM_ROOT={}", root.display());
        assert!(config.contains(&line), "{config}");
        config = config.replace(&line, &format!("{line} NIXCMD_STUB_SYSTEMD={mode}"));
    }
    std::fs::write(&fleet.ssh_config, config).unwrap();
    let app = t.root().join("fx/app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("nixcmd.toml"), fleet.nixcmd_toml()).unwrap();
    let out = t
        .env_remove("NIXCMD_SYSTEM_ROOT")
        .env_remove("NIXCMD_STUB_SYSTEMD")
        .timeout(Duration::from_secs(120))
        .args(["run", "system-health-check", "web1", "web2"])
        .args(["disk-warn=99", "disk-crit=100", "--dir"])
        .arg(&app)
        .run();
    out.assert_status(1);
    let host_log = |step: &str, host: &str| log_lines(&out, &format!("{step}@{host}.log"));
    assert_eq!(
        host_log("systemd", "web1"),
        ["systemd: running", "failed units: none"]
    );
    assert_eq!(
        host_log("report", "web1"),
        ["==== web1: HEALTHY (0 errors, 0 warnings)"]
    );
    assert_eq!(
        host_log("report", "web2"),
        [
            "==== web2: CRITICAL (3 errors, 1 warnings)",
            "error   [systemd] systemd is degraded",
            "error   [failed-unit] nginx.service",
            "error   [failed-unit] restic-backups-daily.service",
            "warning [journal] 4 error messages since boot (journalctl -b -p err)",
        ]
    );
    assert_eq!(
        warnings(&out),
        [
            "step `systemd` failed on web2: systemd is degraded, failed units: nginx.service \
             restic-backups-daily.service (continuing: on-fail=continue)",
            "step `journal` failed on web2: 4 error messages in the journal since boot \
             (continuing: on-fail=continue)",
        ]
    );
    // Nothing ran on this machine: every block went to the hosts.
    assert!(!run_dir(&out).join("logs/report.log").exists());
    let text = out.normalized();
    assert!(
        text.contains("✗ no-errors failed [DURATION] — failed on 1 of 2 hosts (web2; max-fail 0)"),
        "the degraded host fails the success criterion:\n{text}"
    );
    for row in [
        "web2  ok     ok    failed   ok       ok     ok           failed   ok     ok      failed",
        "web1  ok     ok    ok       ok       ok     ok           ok       ok     ok      ok",
    ] {
        assert!(text.contains(row), "no row `{row}`:\n{text}");
    }
}

/// A host name the inventory does not know is refused before anything runs.
#[test]
fn system_health_check_refuses_an_unknown_host_before_running() {
    let t = Test::new();
    let app = t.root().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("nixcmd.toml"),
        "[hosts.web1]\ntarget = \"root@192.0.2.1\"\n",
    )
    .unwrap();
    let out = t
        .args(["run", "system-health-check", "web9", "--dir"])
        .arg(&app)
        .run();
    out.assert_status(2);
    assert_eq!(
        out.stderr.trim_end(),
        "error: argument `hosts` (web9): no host named `web9` in the inventory (did you mean `web1`?)\n  \
         hint: `nixcmd hosts` lists the inventory"
    );
    let runs = out.root.path().join("state/nixcmd/runs");
    assert!(
        std::fs::read_dir(&runs).map_or(true, |mut d| d.next().is_none()),
        "a run folder was created: {runs:?}"
    );
}

/// `nixcmd hosts` (and every fan-out) reads the flake's host names with `nix eval`, which
/// wrote a flake.lock into a flake that had none: a read-only command changed the user's
/// files.
#[test]
fn reading_the_flakes_hosts_writes_no_lock_file() {
    let Some((t, app)) = nix_fixture("clean") else {
        return;
    };
    std::fs::remove_file(app.join("flake.lock")).unwrap();
    let rel = app
        .strip_prefix(t.root())
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let out = t
        .env("NIX_CONFIG", NIX_CONFIG)
        .timeout(Duration::from_secs(120))
        .current_dir(&rel)
        .args(["hosts", "--format", "json"])
        .run();
    out.assert_status(0);
    let names: Vec<String> = out.stdout_json()["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .map(|h| h["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["web1", "web2"], "{}", out.stdout);
    assert!(
        !app.join("flake.lock").exists(),
        "nixcmd hosts wrote flake.lock"
    );
}

/// The checks and builds evaluate the work tree as it is, but the commit holds only
/// flake.lock: other uncommitted changes are said (a warning), not refused, and not
/// committed.
#[test]
fn flake_update_warns_that_other_uncommitted_changes_are_built_but_not_committed() {
    let Some((t, app)) = nix_fixture("update") else {
        return;
    };
    let root = t.root().to_path_buf();
    let mut flake = std::fs::read_to_string(app.join("flake.nix")).unwrap();
    flake.push_str("# a local edit\n");
    std::fs::write(app.join("flake.nix"), &flake).unwrap();

    let out = run(t, "flake-update", &["--yes"], &app).run();
    out.assert_status(0);
    assert_eq!(
        step_log(&out, "clean-tree"),
        [
            "uncommitted changes besides flake.lock: the builds below include them, the commit will not:",
            "flake.nix"
        ]
    );
    assert!(
        out.stdout.contains(
            "  - step `clean-tree` exited with status 1: flake.nix (continuing: on-fail=continue)"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(
        git(&root, &app, &["show", "--name-only", "--format=", "HEAD"]),
        "flake.lock"
    );
    assert_eq!(git(&root, &app, &["status", "--porcelain"]), " M flake.nix");
}
