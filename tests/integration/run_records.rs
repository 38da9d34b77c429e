//! What a run leaves and prints (DESIGN.md §5, §6): the `--format json` event stream, secret
//! redaction everywhere, the private run folder, and `runs`, `log` and `stats`.

use crate::run_support::{
    event_outline, events, mode, normalize, normalized, only_run, read_json, run_dirs, run_id,
};
use crate::support::Test;
use std::path::Path;

const FAILING: &str = r#"---
description: Two steps; the second fails
nixcmd: {}
---
# Failing

## Steps
### Build
```bash {id=build rollback=unbuild}
echo "building"
```
### Check
```bash {id=check}
echo "checking" >&2
exit 1
```

## Rollback
### unbuild
```bash
echo "unbuilding"
```
"#;

#[test]
fn json_stream_parses_line_by_line_with_run_finished_last() {
    let out = Test::new()
        .runbook("failing.md", FAILING)
        .args(["run", "failing", "--format", "json"])
        .run();
    out.assert_status(1);
    let stream = events(&out.stdout);
    let run = only_run(out.root.path());
    let id = run_id(&run);
    for (i, e) in stream.iter().enumerate() {
        assert_eq!(e["seq"], (i + 1) as u64, "seq increases by one: {e}");
        assert_eq!(e["run_id"], id.as_str());
        assert!(
            e["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
            "ts: {e}"
        );
    }
    assert_eq!(stream.last().expect("events")["type"], "run_finished");
    assert_eq!(stream.last().expect("events")["exit_code"], 1);
    // The stream on stdout is the run folder's events.ndjson.
    let recorded = std::fs::read_to_string(run.join("events.ndjson")).expect("events.ndjson");
    assert_eq!(recorded, out.stdout);
    insta::assert_snapshot!(event_outline(&stream), @r#"
    run_started
    step_started step_id=build attempt=1
    output step_id=build
    step_finished step_id=build status=succeeded exit_code=0
    step_started step_id=check attempt=1
    output step_id=check
    step_finished step_id=check status=failed exit_code=1 reason=exited with status 1
    rollback_started reason=step `check` failed blocks=["unbuild"]
    step_started step_id=unbuild attempt=1
    output step_id=unbuild
    step_finished step_id=unbuild status=succeeded exit_code=0
    run_finished status=failed exit_code=1
    "#);
    // Human text goes to stderr.
    insta::assert_snapshot!("json_stderr", normalize(&out.stderr, out.root.path()));
}

#[test]
fn secrets_never_reach_logs_events_state_or_stdout() {
    const API_TOKEN: &str = "tok-4f8a2b9c1d7e";
    const HOOK: &str = "hook-0a1b2c3d4e5f";
    // base64 of the password, so that the script itself does not contain it.
    const PASSWORD: &str = "pw-Zq9xL2mN8vB4";
    let encoded = "cHctWnE5eEwybU44dkI0";
    let runbook = format!(
        r#"---
description: Uses secrets
nixcmd:
  secrets: [DEPLOY_HOOK]
---
# Secret

## Steps
### Use
```bash {{id=use}}
echo "token: $API_TOKEN"
echo "hook: $DEPLOY_HOOK" >&2
pw=$(printf '%s' {encoded} | base64 -d)
echo "DB_PASSWORD=$pw" >> "$NIXCMD_ENV"
echo "password in the same step: $pw"
```
### Later
```bash {{id=later}}
echo "password in a later step: $DB_PASSWORD"
echo "all: $API_TOKEN $DEPLOY_HOOK $DB_PASSWORD" >&2
exit 1
```
"#
    );
    let mut outputs = Vec::new();
    let mut test = Some(
        Test::new()
            .runbook("secret.md", &runbook)
            .env("API_TOKEN", API_TOKEN)
            .env("DEPLOY_HOOK", HOOK),
    );
    for format in ["text", "json"] {
        let out = test
            .take()
            .expect("test")
            .args(["run", "secret", "--verbose", "--format", format])
            .run();
        out.assert_status(1);
        outputs.push(format!("{}\n{}", out.stdout, out.stderr));
        test = Some(
            out.then()
                .env("API_TOKEN", API_TOKEN)
                .env("DEPLOY_HOOK", HOOK),
        );
    }
    let out = test.take().expect("test").args(["log", "last"]).run();
    out.assert_status(0);
    assert!(out.stdout.contains("password in a later step: [REDACTED]"));
    outputs.push(out.stdout.clone());
    let root = out.root.path();
    let mut files = Vec::new();
    collect_files(&root.join("state"), &mut files);
    let mut checked = 0;
    for file in &files {
        // `env` is the `$NIXCMD_ENV` file itself: it carries the values to later steps.
        if file.file_name().is_some_and(|n| n == "env") {
            continue;
        }
        let text = String::from_utf8_lossy(&std::fs::read(file).expect("read")).into_owned();
        for secret in [API_TOKEN, HOOK, PASSWORD] {
            assert!(
                !text.contains(secret),
                "{} contains {secret}:\n{text}",
                file.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 10, "too few files checked: {files:?}");
    for text in &outputs {
        for secret in [API_TOKEN, HOOK, PASSWORD] {
            assert!(!text.contains(secret), "output contains {secret}:\n{text}");
        }
        assert!(text.contains("[REDACTED]"), "{text}");
    }
}

#[test]
fn secrets_named_in_nixcmd_toml_are_redacted() {
    const VALUE: &str = "cfg-9a8b7c6d5e4f";
    let out = Test::new()
        .file("project/nixcmd.toml", "secrets = [\"CACHE_AUTH\"]\n")
        .runbook(
            "cfg.md",
            "---\ndescription: Uses a config secret\nnixcmd: {}\n---\n## Steps\n### Use\n```bash {id=use}\necho \"auth: $CACHE_AUTH\"\n```\n",
        )
        .env("CACHE_AUTH", VALUE)
        .args(["run", "cfg", "--verbose"])
        .run();
    out.assert_status(0);
    assert!(out.stdout.contains("auth: [REDACTED]"), "{}", out.stdout);
    assert!(!out.stdout.contains(VALUE), "{}", out.stdout);
    let log = out.then().args(["log", "last", "use"]).run();
    log.assert_status(0);
    assert!(log.stdout.contains("auth: [REDACTED]"), "{}", log.stdout);
    assert!(!log.stdout.contains(VALUE));
}

/// A config file that cannot be read or parsed refuses the run before anything runs (exit 2,
/// `path:line:col`, a hint): its `secrets` list would otherwise be dropped and their values
/// printed in clear. `--config FILE`, the project's `nixcmd.toml`, a missing `--config`
/// file or a folder given as one (each with what to give instead), and a resume of a run
/// whose config broke since.
#[test]
fn a_config_file_that_cannot_be_parsed_refuses_the_run() {
    const VALUE: &str = "hunter22";
    const BAD: &str = "secrets = [\"FOO\"]\n[hosts.web1\n";
    let runbook = "---\ndescription: Prints a config secret\nnixcmd: {}\n---\n## Steps\n\
                   ### Show\n```bash {id=show readonly}\necho \"val=$FOO\"\n```\n\
                   ### Ask\n```bash {id=ask confirm=\"Go on?\"}\necho \"again=$FOO\"\n```\n";
    let refused = |out: &crate::support::Output, path: &str| {
        out.assert_status(2);
        assert!(!out.stdout.contains(VALUE), "{}", out.stdout);
        assert!(!out.stderr.contains(VALUE), "{}", out.stderr);
        assert!(!out.stdout.contains("val="), "nothing ran: {}", out.stdout);
        assert!(out.stderr.contains(path), "{}", out.stderr);
        assert!(out.stderr.contains("hint: fix"), "{}", out.stderr);
    };
    for (file, args) in [
        ("project/bad.toml", vec!["--config", "bad.toml"]),
        ("project/nixcmd.toml", vec![]),
    ] {
        let mut all = args.clone();
        all.extend(["run", "s", "--dry-run", "--verbose"]);
        let out = Test::new()
            .file(file, BAD)
            .runbook("s.md", runbook)
            .env("FOO", VALUE)
            .args(all)
            .run();
        let name = file.rsplit('/').next().unwrap();
        refused(&out, &format!("{name}:2:"));
        assert!(out.stderr.contains("invalid TOML"), "{}", out.stderr);
        assert!(run_dirs(out.root.path()).is_empty(), "no run folder");
    }
    for (config, problem, hint) in [
        (
            "missing.toml",
            "no such file",
            "check the path; without --config, nixcmd reads `nixcmd.toml` at the project root, \
             else `$XDG_CONFIG_HOME/nixcmd/config.toml`",
        ),
        (
            "conf",
            "is a folder, not a config file",
            "--config takes the file itself, e.g. `--config [TEMP]/project/conf/nixcmd.toml`",
        ),
    ] {
        for command in [&["run", "s", "--dry-run", "--verbose"][..], &["hosts"]] {
            let out = Test::new()
                .runbook("s.md", runbook)
                .dir("project/conf")
                .env("FOO", VALUE)
                .args(["--config", config])
                .args(command.iter().copied())
                .run();
            out.assert_status(2);
            assert_eq!(out.stdout, "", "{command:?}");
            assert_eq!(
                out.filter(&out.stderr),
                format!("error: --config [TEMP]/project/{config}: {problem}\n  hint: {hint}\n"),
                "{command:?}"
            );
            assert!(run_dirs(out.root.path()).is_empty(), "no run folder");
        }
    }
    // A run paused at its gate, then its config broke: resume refuses too.
    let out = Test::new()
        .file("project/nixcmd.toml", "secrets = [\"FOO\"]\n")
        .runbook("s.md", runbook)
        .env("FOO", VALUE)
        .args(["run", "s", "--verbose"])
        .run();
    out.assert_status(3);
    assert!(out.stdout.contains("val=[REDACTED]"), "{}", out.stdout);
    let id = run_id(&only_run(out.root.path()));
    let next = out.then();
    std::fs::write(next.project().join("nixcmd.toml"), BAD).unwrap();
    let out = next
        .env("FOO", VALUE)
        .args(["resume", &id, "--approve", "ask", "--verbose"])
        .run();
    refused(&out, "nixcmd.toml:2:");
    assert!(!out.stdout.contains("again="), "{}", out.stdout);
}

/// A relative `XDG_STATE_HOME` (or `XDG_CONFIG_HOME`) is ignored, as the XDG Base Directory
/// spec says: the run is recorded under `~/.local/state` and its steps start (they failed,
/// their scripts named relative to nixcmd's folder while they ran in `--dir`).
#[test]
fn a_relative_xdg_state_home_is_ignored() {
    let out = Test::new()
        .runbook(
            "x.md",
            "---\ndescription: Two steps\nnixcmd: {}\n---\n## Steps\n### A\n```bash {id=a}\n\
             echo \"state in $NIXCMD_STATE\"\n```\n### B\n```bash {id=b}\necho b-ran\n```\n",
        )
        .dir("project/work/rel")
        .env("XDG_STATE_HOME", "relst")
        .env("XDG_CONFIG_HOME", "relcfg")
        .args(["run", "x", "--dir", "work/rel", "--verbose"])
        .run();
    out.assert_status(0);
    assert!(out.stdout.contains("b-ran"), "{}", out.stdout);
    let home_state = out.root.path().join("home/.local/state/nixcmd/runs");
    let runs: Vec<_> = std::fs::read_dir(&home_state)
        .expect("runs under ~/.local/state")
        .collect();
    assert_eq!(runs.len(), 1);
    assert!(
        out.stdout
            .contains(&format!("state in {}", home_state.display())),
        "{}",
        out.stdout
    );
    for relative in ["project/relst", "project/work/rel/relst"] {
        assert!(!out.root.path().join(relative).exists(), "{relative}");
    }
    // `runs` finds it the same way.
    let out = out
        .then()
        .env("XDG_STATE_HOME", "relst")
        .args(["runs"])
        .run();
    out.assert_status(0);
    assert!(out.stdout.contains("succeeded"), "{}", out.stdout);
    // Nor are commands read from a relative `XDG_CONFIG_HOME`.
    let next = out.then();
    let user = next.project().join("relcfg/nixcmd/commands");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(
        user.join("only-relative.md"),
        "---\ndescription: x\nnixcmd: {}\n---\n## Steps\n```bash\necho\n```\n",
    )
    .unwrap();
    let listed = next.env("XDG_CONFIG_HOME", "relcfg").args(["list"]).run();
    listed.assert_status(0);
    assert!(listed.stdout.contains("flake-update"), "{}", listed.stdout);
    assert!(
        !listed.stdout.contains("only-relative"),
        "{}",
        listed.stdout
    );
}

/// A truncated `progress.json` (a disk that filled, a copy cut short) is told as a broken
/// `state.json` is: `resume` names the run and the file's full path, says nothing ran and
/// what can be done; `log` and `runs` still show the run.
#[test]
fn a_truncated_progress_json_is_explained() {
    let out = Test::new()
        .runbook(
            "p.md",
            "---\ndescription: Paused\nnixcmd: {}\n---\n## Steps\n### A\n```bash {id=a}\n\
             echo a-ran\n```\n### B\n```bash {id=b confirm=\"Go?\"}\necho b-ran\n```\n",
        )
        .args(["run", "p"])
        .run();
    out.assert_status(3);
    let run = only_run(out.root.path());
    let id = run_id(&run);
    let file = run.join("progress.json");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();
    let out = out.then().args(["resume", &id, "--approve", "b"]).run();
    out.assert_status(2);
    assert!(!out.stdout.contains("b-ran"), "{}", out.stdout);
    let err = &out.stderr;
    assert!(err.contains(&format!("run `{id}`")), "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("nothing was run"), "{err}");
    assert!(err.contains(&format!("hint: `nixcmd log {id}`")), "{err}");
    assert!(
        err.contains(&format!("move its folder {} away", run.display())),
        "{err}"
    );
    let out = out.then().args(["log", &id]).run();
    out.assert_status(0);
    assert!(out.stdout.contains("a-ran"), "{}", out.stdout);
    let out = out.then().args(["runs"]).run();
    out.assert_status(0);
    assert!(out.stdout.contains(&id), "{}", out.stdout);
    // The refused resume left the paused run holding the command, as it was; with its
    // folder moved away, the command starts afresh, as the hint says.
    let out = out.then().args(["run", "p"]).run();
    out.assert_status(2);
    assert!(out.stderr.contains(&id), "{}", out.stderr);
    std::fs::rename(&run, out.root.path().join("moved")).unwrap();
    let out = out.then().args(["run", "p"]).run();
    out.assert_status(3);
}

/// A secret a step exported through `$NIXCMD_ENV` stayed secret only in the nixcmd that ran
/// that step: a resumed run (paused at a gate, then `resume --approve`) read the file again
/// for its steps' environment but not for its redactor, and printed the password of an
/// earlier step in the log, the events and the output of every step after the pause.
#[test]
fn a_secret_exported_before_a_pause_stays_redacted_after_resume() {
    const PASSWORD: &str = "pw-Rk7wQ3zT9yH2";
    // base64 of the password, so that the script itself does not contain it.
    let encoded = "cHctUms3d1EzelQ5eUgy";
    let runbook = format!(
        r#"---
description: Exports a secret, then asks
nixcmd: {{}}
---
# Secret

## Steps
### Export
```bash {{id=export}}
echo "DB_PASSWORD=$(printf '%s' {encoded} | base64 -d)" >> "$NIXCMD_ENV"
```
### Use
```bash {{id=use confirm}}
echo "password: $DB_PASSWORD"
```
"#
    );
    let out = Test::new()
        .runbook("secret.md", &runbook)
        .args(["run", "secret"])
        .run();
    out.assert_status(3);
    let id = run_id(&only_run(out.root.path()));
    let out = out
        .then()
        .args([
            "resume",
            &id,
            "--approve",
            "use",
            "--verbose",
            "--format",
            "json",
        ])
        .run();
    out.assert_status(0);
    let line = events(&out.stdout)
        .into_iter()
        .find(|e| e["type"] == "output")
        .expect("an output event");
    assert_eq!(line["line"], "password: [REDACTED]");
    let run = only_run(out.root.path());
    let log = std::fs::read_to_string(run.join("logs/use.log")).expect("use.log");
    assert_eq!(
        log.lines().skip(1).collect::<Vec<_>>(),
        ["password: [REDACTED]"]
    );
    let events_file = std::fs::read_to_string(run.join("events.ndjson")).expect("events");
    assert!(!events_file.contains(PASSWORD), "{events_file}");
    assert!(!out.stderr.contains(PASSWORD), "{}", out.stderr);
}

/// A line over 64 KiB reaches nixcmd in pieces: a secret printed across the cut is still
/// redacted whole, in the JSON stream, `--verbose`, `events.ndjson` and the logs, for a step
/// on this machine, one of a fan-out (the host `local`) and one of a group; and the line
/// itself is kept whole otherwise (nothing lost at the cut).
#[test]
fn a_secret_across_the_cut_of_an_over_long_line_is_redacted() {
    const TOKEN: &str = "abcdefghijklmnop";
    // 65 530 bytes, then the secret: the cut at 65 536 falls after its sixth byte; on
    // stderr after its tenth.
    let block = "head -c 65530 /dev/zero | tr '\\0' a; echo \"$MY_TOKEN tail\"\n\
                 head -c 65526 /dev/zero | tr '\\0' b >&2; echo \"$MY_TOKEN end\" >&2";
    let runbook = format!(
        "---\ndescription: Long lines\nnixcmd: {{}}\n---\n## Steps\n\
         ### Here\n```bash {{id=here}}\n{block}\n```\n\
         ### Hosts\n```bash {{id=fan hosts=local}}\n{block}\n```\n\
         ### One\n```bash {{id=g1 group=g}}\n{block}\n```\n\
         ### Two\n```bash {{id=g2 group=g}}\ntrue\n```\n"
    );
    let out = Test::new()
        .file("project/nixcmd.toml", "[hosts.local]\n")
        .runbook("split.md", &runbook)
        .env("MY_TOKEN", TOKEN)
        .args(["run", "split", "--format", "json", "--verbose"])
        .run();
    out.assert_status(0);
    let mut texts = vec![
        ("stdout".to_string(), out.stdout.clone()),
        ("stderr".to_string(), out.stderr.clone()),
    ];
    let run = only_run(out.root.path());
    let mut files = Vec::new();
    collect_files(&run.join("logs"), &mut files);
    files.push(run.join("events.ndjson"));
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        texts.push((file.display().to_string(), text));
    }
    for (name, text) in &texts {
        // Not even its start or its end alone.
        for part in [TOKEN, "abcdef", "ghijklmnop"] {
            assert!(!text.contains(part), "{name} shows {part}");
        }
    }
    for (name, text) in texts[2..]
        .iter()
        .filter(|(name, _)| !name.ends_with("g2.log"))
    {
        assert!(
            text.contains("[REDACTED] tail") && text.contains("[REDACTED] end"),
            "{name}"
        );
    }
    // The pieces of each line hold all of it, the secret redacted.
    let pieces = |step: &str, stream: &str| -> String {
        events(&out.stdout)
            .into_iter()
            .filter(|e| e["type"] == "output" && e["step_id"] == step && e["stream"] == stream)
            .map(|e| e["line"].as_str().unwrap().to_string())
            .collect()
    };
    for step in ["here", "fan", "g1"] {
        assert_eq!(
            pieces(step, "stdout"),
            format!("{}[REDACTED] tail", "a".repeat(65530)),
            "{step}"
        );
        assert_eq!(
            pieces(step, "stderr"),
            format!("{}[REDACTED] end", "b".repeat(65526)),
            "{step}"
        );
    }
}

fn collect_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read folder").flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn the_run_folder_is_private() {
    let out = Test::new()
        .runbook("failing.md", FAILING)
        .args(["run", "failing"])
        .run();
    out.assert_status(1);
    let run = only_run(out.root.path());
    let mut entries = Vec::new();
    let mut stack = vec![run.clone()];
    while let Some(dir) = stack.pop() {
        entries.push((dir.clone(), mode(&dir)));
        for e in std::fs::read_dir(&dir).expect("read").flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                entries.push((e.path(), mode(&e.path())));
            }
        }
    }
    let mut listing: Vec<String> = entries
        .iter()
        .map(|(p, m)| {
            let rel = p
                .strip_prefix(&run)
                .expect("inside the run")
                .display()
                .to_string();
            format!("{m:o} {}", if rel.is_empty() { "." } else { &rel })
        })
        .collect();
    listing.sort_by(|a, b| a[4..].cmp(&b[4..]));
    insta::assert_snapshot!(listing.join("\n"), @r"
    700 .
    600 env
    600 events.ndjson
    700 logs
    600 logs/build.log
    600 logs/check.log
    600 logs/unbuild.log
    600 progress.json
    700 scripts
    600 scripts/build.sh
    600 scripts/check.sh
    600 scripts/unbuild.sh
    700 state
    600 state.json
    ");
}

const FLIP: &str = r#"---
description: Succeeds unless a file says otherwise
nixcmd: {}
---
# Flip

## Steps
### Prepare
```bash {id=prepare}
echo "preparing"
```
### Apply
```bash {id=apply}
echo "applying"
test ! -e fail
```
"#;

#[test]
fn runs_log_and_stats_report_the_history() {
    let out = Test::new()
        .runbook("flip.md", FLIP)
        .args(["run", "flip"])
        .run();
    out.assert_status(0);
    let root = out.root.path().to_path_buf();
    std::fs::write(root.join("project/fail"), "").expect("make apply fail");
    let out = out.then().args(["run", "flip"]).run();
    out.assert_status(1);
    let runs = run_dirs(&root);
    assert_eq!(runs.len(), 2);
    let (first, second) = (run_id(&runs[0]), run_id(&runs[1]));

    let out = out.then().args(["runs"]).run();
    out.assert_status(0);
    let listing = normalize(
        &out.normalized()
            .replace(&first, "[FIRST]")
            .replace(&second, "[SECOND]"),
        out.root.path(),
    );
    // Newest first.
    insta::assert_snapshot!("runs", listing);

    let out = out.then().args(["log", &second, "apply"]).run();
    out.assert_status(0);
    insta::assert_snapshot!("log_step", normalized(&out));

    let out = out.then().args(["log", &first]).run();
    out.assert_status(0);
    insta::assert_snapshot!("log_run", normalized(&out));

    let out = out.then().args(["log", &first, "aply"]).run();
    out.assert_status(2);
    insta::assert_snapshot!(
        "log_unknown_step",
        normalize(
            &out.normalized().replace(&first, "[FIRST]"),
            out.root.path()
        )
    );

    let out = out.then().args(["stats"]).run();
    out.assert_status(0);
    insta::assert_snapshot!("stats", normalized(&out));

    let out = out.then().args(["stats", "--format", "json"]).run();
    out.assert_status(0);
    let stats = out.stdout_json();
    assert_eq!(stats["flip"]["runs"], 2);
    assert_eq!(stats["flip"]["succeeded"], 1);
    assert_eq!(stats["flip"]["success_rate"], 0.5);
    assert_eq!(stats["flip"]["steps"]["apply"]["runs"], 2);
    assert_eq!(stats["flip"]["steps"]["apply"]["failures"], 1);
    assert_eq!(stats["flip"]["steps"]["prepare"]["failures"], 0);
    let state = read_json(&runs[1].join("state.json"));
    assert_eq!(state["errors"][0], "failed at step apply");
}

#[test]
fn state_json_names_the_commit_checked_out_where_the_run_runs() {
    let test = Test::new().runbook("failing.md", FAILING);
    let project = test.project();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&project)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.org")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.org")
            .output();
        match out {
            Ok(o) if o.status.success() => {
                Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
            }
            Ok(o) => panic!("git {args:?}: {o:?}"),
            Err(e) => {
                assert!(
                    std::env::var_os("NIXCMD_TEST_REQUIRE_ALL").is_none(),
                    "git is required: {e}"
                );
                eprintln!("skipped: git is not installed ({e})");
                None
            }
        }
    };
    if git(&["init", "-q", "-b", "main"]).is_none() {
        return;
    }
    git(&["add", "-A"]);
    git(&["commit", "-qm", "runbooks"]);
    git(&["pack-refs", "--all", "--prune"]);
    let head = git(&["rev-parse", "HEAD"]).expect("a commit");
    let out = test.args(["run", "failing"]).run();
    out.assert_status(1);
    let state = read_json(&only_run(out.root.path()).join("state.json"));
    assert_eq!(state["git_commit"], head.as_str());
}

/// A step that prints a million lines: every line reaches the log and events.ndjson, in
/// order, the failure report shows the last 20, and nixcmd's memory does not grow with the
/// output (it held every line until the step ended: about 60 MB for a million).
#[test]
fn a_chatty_step_is_recorded_whole_in_bounded_memory() {
    const LINES: u32 = 1_000_000;
    let text = format!(
        "---\ndescription: A chatty step\nnixcmd: {{}}\n---\n# Chatty\n\n## Steps\n### Spew\n\
         ```bash {{id=spew}}\nseq 1 {LINES}\necho done >&2\nexit 3\n```\n"
    );
    let (status, peak_kb, printed, root) = crate::run_support::run_measuring_peak(
        Test::new()
            .runbook("chatty.md", &text)
            .args(["run", "chatty"]),
    );
    assert_eq!(status, Some(1));
    assert!(peak_kb < 30 * 1024, "peak resident size {peak_kb} kB");

    let run = only_run(root.path());
    // Each stream in order; where stderr's one line falls between stdout's is best effort
    // (both pipes are read as they fill).
    let in_order = |lines: &[String]| {
        let numbers: Vec<&String> = lines.iter().filter(|l| *l != "done").collect();
        assert_eq!(numbers.len(), LINES as usize);
        assert!(numbers.iter().zip(1..).all(|(l, n)| **l == n.to_string()));
        assert_eq!(lines.iter().filter(|l| *l == "done").count(), 1);
    };
    let log = std::fs::read_to_string(run.join("logs/spew.log")).expect("log");
    let log: Vec<String> = log.lines().map(str::to_string).collect();
    assert!(log[0].starts_with("── spew attempt 1/1 at "), "{}", log[0]);
    assert_eq!(log[log.len() - 1], "── attempt 1 exited with status 3 ──");
    in_order(&log[1..log.len() - 1]);
    let events = std::fs::read_to_string(run.join("events.ndjson")).expect("events");
    let outputs: Vec<String> = events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole event lines"))
        .filter(|e| e["type"] == "output")
        .map(|e| e["line"].as_str().expect("line").to_string())
        .collect();
    in_order(&outputs);
    // The failure report: the step's last 20 lines, as the log has them.
    let tail = &log[log.len() - 21..log.len() - 1];
    let shown: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("│ "))
        .collect();
    assert_eq!(shown, tail, "{printed}");
}

/// With `--format json` and with `--verbose`, a chatty step's lines are written to stdout a
/// read at a time: none may be lost or reordered, and the JSON stream is exactly the events
/// the run folder keeps.
#[test]
fn a_chatty_step_is_streamed_whole_as_json_and_verbose_lines() {
    const LINES: u32 = 200_000;
    let text = format!(
        "---\ndescription: A chatty step\nnixcmd: {{}}\n---\n# Chatty\n\n## Steps\n### Spew\n\
         ```bash {{id=spew}}\nseq 1 {LINES}\n```\n### After\n```bash {{id=after}}\necho after\n```\n"
    );
    let numbers = |lines: Vec<&str>| {
        assert_eq!(lines.len(), LINES as usize + 1, "every line once");
        assert!(
            lines[..LINES as usize]
                .iter()
                .zip(1..)
                .all(|(l, n)| *l == n.to_string())
        );
        assert_eq!(lines[LINES as usize], "after");
    };

    let run = |format: &str| {
        let out = Test::new()
            .runbook("chatty.md", &text)
            .args(["run", "chatty", format])
            .run();
        out.assert_status(0);
        out
    };
    let out = run("--format=json");
    let stdout = &out.stdout;
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one whole event per line"))
        .collect();
    assert_eq!(events.last().expect("events")["type"], "run_finished");
    numbers(
        events
            .iter()
            .filter(|e| e["type"] == "output")
            .map(|e| e["line"].as_str().expect("line"))
            .collect(),
    );
    let kept =
        std::fs::read_to_string(only_run(out.root.path()).join("events.ndjson")).expect("events");
    assert!(&kept == stdout, "stdout is events.ndjson, line for line");

    let out = run("--verbose");
    let stdout = &out.stdout;
    numbers(
        stdout
            .lines()
            .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest))
            .filter_map(|l| l.strip_prefix("  spew │ ").or(l.strip_prefix("  after │ ")))
            .collect(),
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let finished = lines.iter().rposition(|l| l.contains("✓ after"));
    let last_output = lines.iter().rposition(|l| l.ends_with("after │ after"));
    assert!(finished.is_some() && last_output.is_some(), "{stdout}");
    assert!(
        last_output < finished,
        "output before the step's end:\n{stdout}"
    );
}

/// A run id given by prefix: an ambiguous one names the candidates, newest first; an empty
/// one is not a prefix of every run.
#[test]
fn an_ambiguous_or_empty_run_id_is_explained() {
    let mut test = Test::new().runbook(
        "one.md",
        "---\ndescription: One step\nnixcmd: {}\n---\n# One\n\n## Steps\n### Echo\n```bash {id=echo}\necho hi\n```\n",
    );
    for _ in 0..7 {
        let out = test.args(["run", "one"]).run();
        out.assert_status(0);
        test = out.then();
    }
    let out = test.args(["log", "one-"]).run();
    out.assert_status(2);
    // Newest first, as `nixcmd runs` orders them: by start time, then by id.
    let mut runs: Vec<(String, String)> = run_dirs(out.root.path())
        .iter()
        .map(|d| {
            let started = read_json(&d.join("state.json"))["started"]
                .as_str()
                .expect("started")
                .to_string();
            (started, run_id(d))
        })
        .collect();
    runs.sort_by(|a, b| b.cmp(a));
    let newest: Vec<&str> = runs.iter().take(5).map(|(_, id)| id.as_str()).collect();
    assert_eq!(
        out.stderr,
        format!(
            "error: `one-` matches 7 runs ({}, and 2 more); give more of the id\n",
            newest.join(", ")
        )
    );

    let out = out.then().args(["log", ""]).run();
    out.assert_status(2);
    assert_eq!(
        out.stderr,
        "error: give a run id (`nixcmd runs` lists them; `last` is the newest)\n"
    );
}

/// Output that cannot be written to the records (a full disk; here a file size limit) is
/// said once, in a warning on the output and among the run's warnings at its end, instead of
/// being lost in silence. The run goes on: what resume needs (state.json, progress.json)
/// is still written.
#[test]
fn output_the_records_cannot_take_is_said_not_lost_in_silence() {
    let runbook = r#"---
description: A chatty step, then another
nixcmd: {}
---
# Chatty

## Steps
### Chatty
```bash {id=chatty}
for i in $(seq 300); do printf '%099d\n' "$i"; done
```
### Second
```bash {id=second}
echo second >> trace
```
"#;
    let (mut cmd, root) = Test::new()
        .runbook("chatty.md", runbook)
        .args(["run", "chatty", "--color", "never"])
        .into_command();
    // SAFETY: signal(2) and setrlimit(2) are async-signal-safe; they run in the child
    // before exec. SIGXFSZ ignored makes a write past the limit fail with EFBIG.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 20_000,
                rlim_max: 20_000,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run nixcmd");
    let stdout = normalize(&String::from_utf8_lossy(&out.stdout), root.path());
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let warning = "[TEMP]/state/nixcmd/runs/chatty-[ID]/events.ndjson cannot be written (File \
                   too large (os error 27)): the run's records miss output from here on; the \
                   run goes on";
    assert_eq!(
        stdout.matches(warning).count(),
        2,
        "once when it happens, once among the warnings at the end:\n{stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("project/trace")).expect("trace"),
        "second\n"
    );
    let dir = only_run(root.path());
    assert_eq!(read_json(&dir.join("state.json"))["status"], "succeeded");
    assert_eq!(
        crate::run_support::statuses(&dir),
        [
            ("chatty".to_string(), "succeeded".to_string()),
            ("second".to_string(), "succeeded".to_string()),
        ]
    );
}

/// A run folder whose state.json is damaged is not silently dropped: `runs` names it on
/// stderr (its JSON stays a list of runs), and `log`/`resume` say what is wrong with it
/// instead of "no run".
#[test]
fn a_run_whose_state_cannot_be_read_is_named_not_hidden() {
    let test = Test::new().runbook(
        "one.md",
        "---\ndescription: One step\nnixcmd: {}\n---\n# One\n\n## Steps\n### Echo\n```bash {id=echo}\necho hi\n```\n",
    );
    let out = test.args(["run", "one"]).run();
    out.assert_status(0);
    let dir = only_run(out.root.path());
    let id = run_id(&dir);
    std::fs::write(dir.join("state.json"), "{\"version\": 1, \"run_id\":").expect("damage");
    let out = out.then().args(["runs", "--format", "json"]).run();
    out.assert_status(0);
    assert_eq!(out.stdout, "[]\n");
    assert_eq!(
        normalize(&out.stderr, out.root.path()),
        format!(
            "warning: [TEMP]/state/nixcmd/runs/one-[ID] is not listed: its state.json: EOF \
             while parsing a value at line 1 column 24\n"
        )
    );
    let mut out = out;
    for args in [["log", id.as_str()], ["resume", id.as_str()]] {
        out = out.then().args(args).run();
        out.assert_status(2);
        assert_eq!(
            normalize(&out.stderr, out.root.path()),
            "error: the records of run `one-[ID]` cannot be read (state.json: EOF while \
             parsing a value at line 1 column 24); its logs are in \
             [TEMP]/state/nixcmd/runs/one-[ID]/logs\n"
        );
    }
}

/// Run records that cannot be written stop the run before anything runs, with the path,
/// the reason, and what to do.
#[test]
fn an_unwritable_state_folder_is_explained_before_anything_runs() {
    let holder = tempfile::tempdir().expect("a temporary folder");
    let state = holder.path().join("state-file");
    std::fs::write(&state, "not a folder").expect("write a file");
    let state = state.to_str().expect("utf-8 path").to_string();
    let run_id_pattern = regex::Regex::new(r"one-\d{8}-\d{6}-[0-9a-f]{4}").expect("regex");
    for (args, action, path) in [
        (&["run", "one"][..], "take the run lock", "nixcmd/locks"),
        (
            &["run", "one", "--dry-run"],
            "create the run folder",
            "nixcmd/runs/one-[ID]",
        ),
    ] {
        let test = Test::new()
            .runbook(
                "one.md",
                "---\ndescription: One step\nnixcmd: {}\n---\n# One\n\n## Steps\n### Echo\n```bash {id=echo readonly}\necho ran >> trace\n```\n",
            )
            .env("XDG_STATE_HOME", &state)
            .args(args.iter().copied());
        let out = test.run();
        out.assert_status(2);
        assert!(
            !out.root.path().join("project/trace").exists(),
            "nothing ran"
        );
        let stderr = run_id_pattern
            .replace(&out.stderr, "one-[ID]")
            .replace(&state, "[STATE]");
        assert_eq!(
            stderr,
            format!(
                "error: cannot {action} [STATE]/{path}: a file is in the way of a folder\n  \
                 hint: runs are recorded under [STATE]/nixcmd ($XDG_STATE_HOME/nixcmd): make \
                 it writable, or set XDG_STATE_HOME to a folder you can write\n"
            ),
            "{args:?}"
        );
    }
}

/// The STATUS column is as wide as its longest label, so STARTED stays aligned; a command
/// filter that matches nothing says which command had no runs.
#[test]
fn runs_keeps_its_columns_aligned_and_names_an_empty_filter() {
    let out = Test::new()
        .runbook(
            "gate.md",
            "---\ndescription: Needs a file\nnixcmd: {}\n---\n# Gate\n\n## Prerequisites\n```bash {id=file}\ntest -e missing\n```\n\n## Steps\n### Echo\n```bash {id=echo}\necho hi\n```\n",
        )
        .runbook(
            "ok.md",
            "---\ndescription: Works\nnixcmd: {}\n---\n# Ok\n\n## Steps\n### Echo\n```bash {id=echo}\necho hi\n```\n",
        )
        .args(["run", "gate", "--dry-run"])
        .run();
    out.assert_status(4);
    let out = out.then().args(["run", "ok"]).run();
    out.assert_status(0);
    let out = out.then().args(["runs"]).run();
    out.assert_status(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    // Newest first: the successful run, then the dry run whose label is the long one.
    assert!(lines[1].contains("  succeeded  "), "{}", out.stdout);
    assert!(
        lines[2].contains("  prerequisites not met (dry run)  "),
        "{}",
        out.stdout
    );
    let started_at = lines[0].find("STARTED").expect("a STARTED column");
    for line in &lines[1..] {
        let time = &line[started_at..];
        assert!(
            time.starts_with("20") && time.as_bytes()[4] == b'-',
            "STARTED out of its column:\n{}",
            out.stdout
        );
        assert_eq!(&line[started_at - 2..started_at], "  ", "{}", out.stdout);
    }

    let out = out.then().args(["runs", "--command", "nope"]).run();
    out.assert_status(0);
    assert_eq!(out.stdout, "No runs of `nope` recorded.\n");
}

/// At a terminal the live display shows each running step's last output line on one row:
/// what the step printed cannot move the cursor or clear the screen, a progress bar shows its
/// last state, and the row fits the terminal's width (asked of the terminal: shells do not
/// export `COLUMNS`), so the redraw leaves nothing behind.
#[test]
fn the_live_line_fits_the_terminal_and_carries_no_escape_sequences() {
    let test = || {
        Test::new()
        .runbook(
            "live.md",
            r#"---
description: A step whose output is hostile to a terminal
nixcmd: {}
---
# Live

## Steps
### Noisy
```bash {id=noisy}
printf 'fetching 10%%\rfetching 99%% \033[2J\033[H\033]0;pwned\007of a source whose progress line is far wider than forty columns\n'
sleep 1.5
```
"#,
        )
        .env_remove("COLUMNS")
        .env_remove("CI")
        .args(["run", "live", "--color", "never"])
    };
    // With --verbose every line is printed too: colors pass, nothing else does.
    let (status, screen) = crate::run_support::run_on_terminal(test().arg("--verbose"), 40);
    assert_eq!(status, 0, "{screen:?}");
    assert!(!screen.contains("\x1b[2J"), "{screen:?}");
    assert!(
        screen.contains("  noisy │ fetching 99% of a source whose progress line is far wider than forty columns\r\n"),
        "{screen:?}"
    );
    let (status, screen) = crate::run_support::run_on_terminal(test(), 40);
    assert_eq!(status, 0, "{screen:?}");
    assert!(!screen.contains("\x1b[2J"), "{screen:?}");
    assert!(!screen.contains("\x1b]0;"), "{screen:?}");
    assert!(!screen.contains("\x1b[H"), "{screen:?}");
    let spinner = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
    // Rows the live display drew: after its clears, up to the next row or clear.
    let live: Vec<&str> = screen
        .split(['\n', '\r'])
        .flat_map(|row| row.split("\x1b[2K"))
        .flat_map(|row| row.split("\x1b[J"))
        .filter(|row| row.starts_with(spinner))
        .collect();
    assert!(!live.is_empty(), "no live row drawn: {screen:?}");
    let with_output: Vec<&&str> = live.iter().filter(|r| r.contains("fetching")).collect();
    assert!(!with_output.is_empty(), "{live:?}");
    for row in &live {
        // Every character here (braille spinner, ASCII, "…") takes one column.
        let cols = row.chars().count();
        assert!(
            cols <= 39,
            "a live row of {cols} columns on a 40-column terminal: {row:?}"
        );
        assert!(!row.contains('\x1b'), "{row:?}");
    }
    for row in with_output {
        assert!(row.contains("fetching 99% of a"), "{row:?}");
        assert!(!row.contains("10%"), "{row:?}");
        assert!(row.ends_with('…'), "{row:?}");
    }
}

/// `nixcmd log` streams a log instead of reading it whole: a chatty step's log can be
/// gigabytes. While nixcmd waits for a reader of its output, it holds a fraction of the log.
#[test]
fn log_streams_a_large_log_in_bounded_memory() {
    const LINES: u32 = 3_000_000;
    let out = Test::new()
        .runbook(
            "chatty.md",
            "---\ndescription: A chatty step\nnixcmd: {}\n---\n# Chatty\n\n## Steps\n### Spew\n\
             ```bash {id=spew}\necho one line\n```\n",
        )
        .args(["run", "chatty"])
        .run();
    out.assert_status(0);
    // The log a step printing three million lines leaves, written here: running such a step
    // in a debug build takes twenty seconds.
    let log = only_run(out.root.path()).join("logs/spew.log");
    let mut big = String::from("── spew attempt 1/1 at 2026-11-29T00:00:00.000Z ──\n");
    for n in 1..=LINES {
        big.push_str(&n.to_string());
        big.push('\n');
    }
    std::fs::write(&log, &big).expect("write the log");
    let log_size = big.len();
    drop(big);
    let (mut cmd, root) = out.then().args(["log", "last", "spew"]).into_command();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn nixcmd log");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut text = vec![0u8; 4096];
    std::io::Read::read_exact(&mut stdout, &mut text).expect("the start of the log");
    // Nobody reads now: nixcmd fills the pipe and waits. Whatever it holds, it holds now.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let peak_kb = crate::run_support::peak_kb(child.id()).expect("VmHWM");
    std::io::Read::read_to_end(&mut stdout, &mut text).expect("the rest of the log");
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    assert!(
        peak_kb < 18 * 1024,
        "nixcmd held {peak_kb} kB while printing a log of {log_size} bytes"
    );
    let text = String::from_utf8(text).expect("utf-8");
    let lines: Vec<&str> = text.lines().collect();
    // The attempt's header, then every line; a step that succeeds gets no closing line.
    assert_eq!(lines.len(), LINES as usize + 1);
    assert!(
        lines[0].starts_with("── spew attempt 1/1 at "),
        "{}",
        lines[0]
    );
    assert!(lines[1..].iter().zip(1..).all(|(l, n)| *l == n.to_string()));
    drop(root);
}

/// When the run's records can no longer be written (a full disk, a folder made read-only),
/// no further step starts: `resume` decides from them what ran, and a run that cannot keep
/// them would go on blind. What ran is rolled back, as after any failure. Needs root, to run
/// as `nobody` (root writes whatever the permissions say).
#[test]
fn no_step_starts_once_the_records_cannot_be_written() {
    use std::os::unix::fs::PermissionsExt;
    let Some((setpriv, dir)) = crate::support::as_nobody("to make the run folder unwritable")
    else {
        return;
    };
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::write(
        work.join("records.md"),
        r#"---
description: The run folder becomes read-only during a step
nixcmd: {}
---
# Records

## Steps
### Lock
```bash {id=lock rollback=unlock}
chmod 500 "$(dirname "$NIXCMD_STATE")"
echo lock >> trace
```
### After
```bash {id=after}
echo after >> trace
```

## Rollback
### unlock
```bash {id=unlock}
chmod 700 "$(dirname "$NIXCMD_STATE")"
echo unlock >> trace
```
"#,
    )
    .unwrap();
    let out = std::process::Command::new(&setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_nixcmd"))
        .args(["--commands-dir", ".", "run", "records"])
        .env("XDG_CONFIG_HOME", work.join("config"))
        .env("XDG_STATE_HOME", work.join("state"))
        .env("HOME", &work)
        .env_remove("NIXCMD_COMMANDS_DIR")
        .env_remove("CI")
        .current_dir(&work)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(work.join("trace")).unwrap(),
        "lock\nunlock\n"
    );
    let runs: Vec<_> = std::fs::read_dir(work.join("state/nixcmd/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert!(
        stdout.contains(&format!(
            "warning: the run's records in {} cannot be written: Permission denied (os error 13); no further step starts\n",
            run.display()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains("▶ after"), "{stdout}");
    assert!(
        stdout.contains("rolling back — the run's records cannot be written: unlock\n"),
        "{stdout}"
    );
    // The rollback put the folder back, so the end of the run was recorded.
    let state = read_json(&run.join("state.json"));
    assert_eq!(state["status"], "failed");
    assert_eq!(
        state["errors"][0],
        format!(
            "`after` was not started: the run's records in {} cannot be written: Permission denied (os error 13)",
            run.display()
        )
    );
}

/// Every step `skips` lists: these are the skips the progress entries must show.
const SKIPS: &str = r#"---
description: Steps skipped every way there is
nixcmd: {}
---
# Skips

## Prerequisites
```bash {id=tool when=HAVE_TOOL readonly}
echo tool
```

## Steps
### One
```bash {id=one}
echo "MODE=off" >>"$NIXCMD_ENV"
```
### Two
```bash {id=two}
echo two
```
### Three
```bash {id=three when=MODE}
echo three
```
### Four
```bash {id=four unless=TOKEN}
echo four
```
### Five
```bash {id=five readonly}
echo five
```
"#;

/// The exact `progress.json` entry of a skipped step, as it is indented in the file.
fn skipped_entry(id: &str, phase: &str, reason: &str) -> String {
    format!(
        "    {{\n      \"id\": \"{id}\",\n      \"phase\": \"{phase}\",\n      \
         \"status\": \"skipped\",\n      \"attempts\": 0,\n      \"reason\": {}\n    }}",
        serde_json::to_string(reason).unwrap()
    )
}

/// `progress.json` says why each skipped step did not run, in the words of its
/// `step_finished` event, and no other entry has a reason. A condition's reason names the
/// variable, never its value (which may be a secret).
#[test]
fn progress_json_says_why_each_skipped_step_did_not_run() {
    let skips = |args: &[&str]| {
        let out = Test::new()
            .runbook("skips.md", SKIPS)
            .env_remove("HAVE_TOOL")
            .env("TOKEN", "s3cr3t-t0ken")
            .arg("run")
            .arg("skips")
            .args(args.iter().copied())
            .args(["--yes", "--format", "json"])
            .run();
        out.assert_status(0);
        let run = only_run(out.root.path());
        let text = std::fs::read_to_string(run.join("progress.json")).unwrap();
        assert!(!text.contains("s3cr3t"), "{text}");
        // The entries' reasons are their events' reasons.
        let progress = read_json(&run.join("progress.json"));
        for e in events(&out.stdout)
            .iter()
            .filter(|e| e["type"] == "step_finished" && e["status"] == "skipped")
        {
            let entry = progress["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["id"] == e["step_id"])
                .unwrap();
            assert_eq!(entry["reason"], e["reason"], "{text}");
        }
        let reasons: Vec<(String, String)> = progress["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let reason = match s.get("reason") {
                    Some(r) => r.as_str().unwrap().to_string(),
                    None => "-".to_string(),
                };
                (s["id"].as_str().unwrap().to_string(), reason)
            })
            .collect();
        (text, reasons, out)
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };

    // `--skip` and the three ways a condition does not hold.
    let (text, reasons, out) = skips(&["--skip", "two"]);
    assert_eq!(
        reasons,
        pairs(&[
            ("tool", "when=HAVE_TOOL: HAVE_TOOL is not set"),
            ("one", "-"),
            ("two", "--skip"),
            ("three", "when=MODE: MODE is not true"),
            ("four", "unless=TOKEN: TOKEN is true"),
            ("five", "-"),
        ])
    );
    for (id, phase, reason) in [
        (
            "tool",
            "prerequisite",
            "when=HAVE_TOOL: HAVE_TOOL is not set",
        ),
        ("two", "step", "--skip"),
        ("three", "step", "when=MODE: MODE is not true"),
        ("four", "step", "unless=TOKEN: TOKEN is true"),
    ] {
        let entry = skipped_entry(id, phase, reason);
        assert!(text.contains(&entry), "{entry}\nnot in:\n{text}");
    }
    // A skipped step has no log: `log` and `log --follow` say why.
    let id = run_id(&only_run(out.root.path()));
    for follow in [&[][..], &["--follow"][..]] {
        let log = Test::sharing_state(out.root.path())
            .args(["log", &id, "two"])
            .args(follow.iter().copied())
            .run();
        log.assert_status(2);
        assert_eq!(
            log.stderr,
            format!(
                "error: run {id} has no log for step `two`: it was skipped (--skip)\n  \
                 hint: logs: one, five\n"
            ),
            "{follow:?}"
        );
    }

    let (text, reasons, _) = skips(&["--only", "five"]);
    assert_eq!(
        reasons,
        pairs(&[
            ("tool", "when=HAVE_TOOL: HAVE_TOOL is not set"),
            ("one", "not in --only"),
            ("two", "not in --only"),
            ("three", "not in --only"),
            ("four", "not in --only"),
            ("five", "-"),
        ])
    );
    let entry = skipped_entry("one", "step", "not in --only");
    assert!(text.contains(&entry), "{entry}\nnot in:\n{text}");

    let (text, reasons, _) = skips(&["--from", "four"]);
    assert_eq!(
        reasons,
        pairs(&[
            ("tool", "when=HAVE_TOOL: HAVE_TOOL is not set"),
            ("one", "before --from four"),
            ("two", "before --from four"),
            ("three", "before --from four"),
            ("four", "unless=TOKEN: TOKEN is true"),
            ("five", "-"),
        ])
    );
    let entry = skipped_entry("three", "step", "before --from four");
    assert!(text.contains(&entry), "{entry}\nnot in:\n{text}");

    let (text, reasons, _) = skips(&["--dry-run"]);
    assert_eq!(
        reasons,
        pairs(&[
            ("tool", "when=HAVE_TOOL: HAVE_TOOL is not set"),
            ("one", "dry run: not readonly"),
            ("two", "dry run: not readonly"),
            ("three", "dry run: not readonly"),
            ("four", "dry run: not readonly"),
            ("five", "-"),
        ])
    );
    let entry = skipped_entry("one", "step", "dry run: not readonly");
    assert!(text.contains(&entry), "{entry}\nnot in:\n{text}");
}

const THREE: &str = r#"---
description: Three steps; the second fails when a file says so
nixcmd: {}
---
# Three

## Steps
### Build
```bash {id=build}
echo "building"
```
### Check
```bash {id=check}
echo "checking"
test ! -e fail
```
### Publish
```bash {id=publish}
echo "publishing"
```
"#;

/// `scripts/` in a run folder, as `name: content` lines sorted by name.
fn scripts(run: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(run.join("scripts"))
        .expect("scripts folder")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
        .iter()
        .map(|n| {
            let code = std::fs::read_to_string(run.join("scripts").join(n)).expect("script");
            format!("{n}: {code:?}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A step's script is written while the step before it runs; `scripts/` still holds exactly
/// the scripts that ran: none for a step that a failure kept from running.
#[test]
fn scripts_holds_the_scripts_that_ran() {
    let out = Test::new()
        .runbook("three.md", THREE)
        .args(["run", "three"])
        .run();
    out.assert_status(0);
    assert_eq!(
        scripts(&only_run(out.root.path())),
        "build.sh: \"echo \\\"building\\\"\\n\"\n\
         check.sh: \"echo \\\"checking\\\"\\ntest ! -e fail\\n\"\n\
         publish.sh: \"echo \\\"publishing\\\"\\n\""
    );

    let out = Test::new()
        .runbook("three.md", THREE)
        .file("project/fail", "")
        .args(["run", "three"])
        .run();
    out.assert_status(1);
    assert_eq!(
        scripts(&only_run(out.root.path())),
        "build.sh: \"echo \\\"building\\\"\\n\"\n\
         check.sh: \"echo \\\"checking\\\"\\ntest ! -e fail\\n\""
    );
}

/// A run that cannot start (unknown command, a bad argument, an unknown run to resume) gives
/// a `--format json` reader one line on stdout that says why; the person reads stderr as
/// ever, and without `--format json` stdout stays empty.
#[test]
fn a_run_that_cannot_start_says_why_on_the_json_stream() {
    const PICKY: &str = r#"---
description: Takes a host
nixcmd:
  args:
    host: {required: true, pattern: "^[a-z]+$"}
---
# Picky

## Steps
### Show
```bash {id=show}
echo "$NIXCMD_ARG_HOST"
```
"#;
    let cases: [(&[&str], &str); 3] = [
        (
            &["run", "nosuch", "--format", "json"],
            r#"{"type":"error","exit_code":2,"message":"unknown command `nosuch`","hint":"`nixcmd list` shows every command"}"#,
        ),
        (
            &["run", "picky", "host=x;y", "--format", "json"],
            r#"{"type":"error","exit_code":2,"message":"argument `host` of `picky` does not match `^[a-z]+$`: \"x;y\"","hint":"check the value"}"#,
        ),
        (
            &["resume", "picky-20260101-000000-abcd", "--format", "json"],
            // No hint: no `hint` key.
            r#"{"type":"error","exit_code":2,"message":"no run `picky-20260101-000000-abcd` (see `nixcmd runs`)"}"#,
        ),
    ];
    for (args, expected) in cases {
        let out = Test::new().runbook("picky.md", PICKY).args(args).run();
        out.assert_status(2);
        assert_eq!(out.stdout.trim_end(), expected);
        // The same words as the error on stderr.
        let message = serde_json::from_str::<serde_json::Value>(expected).expect("JSON")["message"]
            .as_str()
            .expect("message")
            .to_string();
        assert_eq!(
            out.stderr.lines().next(),
            Some(format!("error: {message}").as_str())
        );
        // Without --format json, nothing on stdout.
        let text_args: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| *a != "--format" && *a != "json")
            .collect();
        let out = Test::new().runbook("picky.md", PICKY).args(text_args).run();
        out.assert_status(2);
        assert_eq!(out.stdout, "");
    }
}

const FOUR_STEPS: &str = r#"---
description: Four plain steps; the third keeps the progress it sees at its start
nixcmd: {}
---
# Four

## Steps
### One
```bash {id=one}
echo one
```
### Two
```bash {id=two}
echo two
```
### Three
```bash {id=three}
cp "$NIXCMD_STATE/../progress.json" "$NIXCMD_STATE/seen.json"
```
### Four
```bash {id=four}
echo four
```
"#;

/// Between two plain steps, progress.json is written once: the end of the one and the start
/// of the next in the same write, before the next is spawned (so the step sees itself
/// recorded as running). Counted with strace: a write is one successful rename or swap onto
/// `progress.json`.
#[test]
fn one_progress_write_between_two_steps_records_both_the_end_and_the_next_start() {
    let Some(strace) = strace() else {
        return;
    };
    let (cmd, root) = Test::new()
        .runbook("four.md", FOUR_STEPS)
        .args(["run", "four"])
        .into_command();
    let trace = root.path().join("renames.strace");
    let out = under_strace(
        &strace,
        &cmd,
        &["-e", "trace=rename,renameat,renameat2"],
        &trace,
    )
    .output()
    .expect("run strace");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let renames = std::fs::read_to_string(&trace).expect("the trace");
    let progress_writes = renames
        .lines()
        .filter(|l| l.contains("progress.json\"") && l.trim_end().ends_with("= 0"))
        .count();
    // The run's start, the first step's start, one per boundary between the four steps
    // (three), the last step's end, the run's end.
    assert_eq!(progress_writes, 7, "{renames}");

    let run = only_run(root.path());
    let seen = read_json(&run.join("state/seen.json"));
    let steps: Vec<(String, String, u64)> = seen["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
                s["attempts"].as_u64().unwrap_or(99),
            )
        })
        .collect();
    let expected = [
        ("one", "succeeded", 1),
        ("two", "succeeded", 1),
        ("three", "running", 1),
        ("four", "pending", 0),
    ]
    .map(|(id, status, n)| (id.to_string(), status.to_string(), n));
    assert_eq!(steps, expected);
    assert!(seen["steps"][2]["started"].is_string(), "{seen}");
}

/// strace, or `None` after saying why the test is skipped (a failure instead under
/// NIXCMD_TEST_REQUIRE_ALL=1).
fn strace() -> Option<std::path::PathBuf> {
    let found = crate::support::which("strace");
    if found.is_none() {
        crate::support::skip("strace is not installed (apt-get install strace)");
    }
    found
}

/// `cmd` run under `strace -f -qq OPTIONS -o TRACE`, with its arguments, folder and
/// environment, and no standard input.
fn under_strace(
    strace: &Path,
    cmd: &std::process::Command,
    options: &[&str],
    trace: &Path,
) -> std::process::Command {
    let mut traced = std::process::Command::new(strace);
    traced
        .args(["-f", "-qq"])
        .args(options)
        .arg("-o")
        .arg(trace)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(cmd.get_current_dir().expect("a working directory"))
        .stdin(std::process::Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => traced.env(k, v),
            None => traced.env_remove(k),
        };
    }
    traced
}

/// A Ctrl-C between two steps, after the write that records the end of the one and the start
/// of the next (see the test above) and before the next is spawned: the next did not start,
/// so it is put back to pending with no attempt (the run ends interrupted, its records must
/// not show a step running that never ran). The window
/// is microseconds wide; strace holds nixcmd in it (`inject=renameat2:delay_exit`, on the
/// rename of that write, found by counting renames in a run without the delay) while the
/// test presses Ctrl-C.
#[test]
fn a_ctrl_c_between_two_steps_puts_the_next_step_back_to_pending() {
    let Some(strace) = strace() else {
        return;
    };
    // Which renameat2 of nixcmd is the write after step one ends: the first onto
    // progress.json after the first child exited.
    let (probe, probe_root) = Test::new()
        .runbook("four.md", FOUR_STEPS)
        .args(["run", "four"])
        .into_command();
    let probe_trace = probe_root.path().join("probe.strace");
    let out = under_strace(
        &strace,
        &probe,
        &["-e", "trace=renameat2", "-e", "signal=SIGCHLD"],
        &probe_trace,
    )
    .output()
    .expect("run strace");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = std::fs::read_to_string(&probe_trace).expect("the trace");
    // `when=` counts the calls of each traced process: only nixcmd's own (the first pid of
    // the trace; its steps' bash make no renames, but a count must not depend on that).
    let nixcmd_pid = lines
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let mut renames = 0;
    let mut child_exited = false;
    let mut nth = None;
    for line in lines.lines() {
        if line.split_whitespace().next() != Some(nixcmd_pid.as_str()) {
            continue;
        }
        if line.contains("SIGCHLD") {
            child_exited = true;
        } else if line.contains("renameat2(") {
            renames += 1;
            if child_exited && line.contains("\"progress.json\"") {
                nth = Some(renames);
                break;
            }
        }
    }
    let nth = nth.unwrap_or_else(|| panic!("no progress write after a step ended:\n{lines}"));

    let (cmd, root) = Test::new()
        .runbook("four.md", FOUR_STEPS)
        .args(["run", "four"])
        .into_command();
    // Held 10 s: time enough to see the window and press Ctrl-C on a loaded machine.
    let inject = format!("inject=renameat2:delay_exit=10000000:when={nth}");
    let child = under_strace(
        &strace,
        &cmd,
        &["-e", "trace=renameat2", "-e", &inject],
        &root.path().join("run.strace"),
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("start strace");
    // A failed assertion must not leave strace and nixcmd behind.
    struct KillOnPanic(i32);
    impl Drop for KillOnPanic {
        fn drop(&mut self) {
            if std::thread::panicking() {
                // SAFETY: kill(2) of our own strace child; nixcmd, detached from it, then ends
                // with its run (nothing holds it any more).
                unsafe { libc::kill(self.0, libc::SIGKILL) };
            }
        }
    }
    let _strace = KillOnPanic(child.id() as i32);
    // Held in the window: progress.json already says `two` is running, and it is not.
    let progress_says = |id: &str| -> Option<String> {
        let run = run_dirs(root.path()).into_iter().next()?;
        let progress: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("progress.json")).ok()?).ok()?;
        progress["steps"]
            .as_array()?
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["status"].as_str().unwrap_or_default().to_string())
    };
    crate::run_support::wait_until(
        "step two recorded as started",
        std::time::Duration::from_secs(30),
        || progress_says("two").as_deref() == Some("running"),
    );
    let run = only_run(root.path());
    assert!(!run.join("logs/two.log").exists(), "step two was spawned");
    // nixcmd is strace's child.
    let children =
        std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id()))
            .expect("strace's children");
    let nixcmd: i32 = children
        .split_whitespace()
        .next()
        .expect("nixcmd")
        .parse()
        .expect("a pid");
    // SAFETY: kill(2) with a pid of our own test's process tree and a signal number.
    assert_eq!(unsafe { libc::kill(nixcmd, libc::SIGINT) }, 0);
    let out = child.wait_with_output().expect("wait for strace");
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let progress = read_json(&run.join("progress.json"));
    let steps: Vec<(String, String, u64, bool)> = progress["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["status"].as_str().unwrap_or_default().to_string(),
                s["attempts"].as_u64().unwrap_or(99),
                s["started"].is_string(),
            )
        })
        .collect();
    let expected = [
        ("one", "succeeded", 1, true),
        ("two", "pending", 0, false),
        ("three", "pending", 0, false),
        ("four", "pending", 0, false),
    ]
    .map(|(id, status, n, started)| (id.to_string(), status.to_string(), n, started));
    assert_eq!(steps, expected);
    assert_eq!(read_json(&run.join("state.json"))["status"], "interrupted");
    assert!(!run.join("logs/two.log").exists());
    assert!(!run.join("scripts/two.sh").exists());
}

/// `runs --format json` lists a run's arguments and `--set` values: the secret ones (an
/// argument whose name marks a secret, a `--set` of such a name) redacted, as in events and
/// logs; `state.json` keeps them, for `resume`.
#[test]
fn runs_as_json_redacts_secret_arguments_and_set_values() {
    let runbook = r#"---
description: Takes a token
nixcmd:
  args:
    api_token:
      required: true
    host: {}
---
# Token

## Steps
### Use
```bash {id=use}
echo "using $NIXCMD_ARG_HOST with ${DEPLOY_TOKEN:-none} and ${PLAIN:-none}"
```
"#;
    let out = Test::new()
        .runbook("token.md", runbook)
        .args([
            "run",
            "token",
            "tok-abcdef-9999",
            "web1",
            "--set",
            "DEPLOY_TOKEN=setsecret777",
            "--set",
            "PLAIN=visible",
        ])
        .run();
    out.assert_status(0);
    let state = read_json(&only_run(out.root.path()).join("state.json"));
    assert_eq!(
        state["args"],
        serde_json::json!(["tok-abcdef-9999", "web1"])
    );
    let listed = out.then().args(["runs", "--format", "json"]).run();
    listed.assert_status(0);
    let runs: serde_json::Value = serde_json::from_str(&listed.stdout).expect("JSON");
    assert_eq!(runs[0]["args"], serde_json::json!(["[REDACTED]", "web1"]));
    assert_eq!(
        runs[0]["set"],
        serde_json::json!(["DEPLOY_TOKEN=[REDACTED]", "PLAIN=visible"])
    );
    for secret in ["tok-abcdef-9999", "setsecret777"] {
        assert!(!listed.stdout.contains(secret), "{}", listed.stdout);
    }
}

/// A run id prefix that matches two to four runs panicked (`log`, `resume`: exit 101, an
/// overflow in counting the runs not shown); it is a usage error naming them.
#[test]
fn a_prefix_of_several_runs_names_them() {
    let mut out = Test::new()
        .runbook("four.md", FOUR_STEPS)
        .args(["run", "four"])
        .run();
    out.assert_status(0);
    for _ in 0..2 {
        out = out.then().args(["run", "four"]).run();
        out.assert_status(0);
    }
    let mut ids: Vec<String> = run_dirs(out.root.path())
        .iter()
        .map(|d| run_id(d))
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 3);
    for args in [["log", "four"], ["resume", "four"]] {
        let refused = out.then().args(args).run();
        refused.assert_status(2);
        let first = refused
            .stderr
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(
            first.starts_with("error: `four` matches 3 runs (")
                && first.ends_with("); give more of the id")
                && ids.iter().all(|id| first.contains(id.as_str())),
            "{}",
            refused.stderr
        );
        out = refused;
    }
}

/// Makes a FIFO at `path` in place of the file there.
fn fifo_in_place_of(path: &Path) {
    std::fs::remove_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fifo_in_place_of_nothing(path);
}

/// Makes a FIFO at `path`, where there is nothing.
fn fifo_in_place_of_nothing(path: &Path) {
    let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("a path");
    // SAFETY: a NUL-terminated path alive for the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A FIFO in place of a record (`state.json`, `progress.json`, `events.ndjson`, a step's
/// log) never makes `runs` or `log` wait for a writer: the file is named with what it is,
/// and everything else is shown as usual.
#[test]
fn a_fifo_in_place_of_a_record_is_named_not_waited_on() {
    let mut out = Test::new()
        .runbook(
            "one.md",
            "---\ndescription: One step\nnixcmd: {}\n---\n# One\n\n## Steps\n### Echo\n```bash {id=echo}\necho hi\n```\n",
        )
        .args(["run", "one"])
        .run();
    out.assert_status(0);
    for _ in 0..3 {
        out = out.then().args(["run", "one"]).run();
        out.assert_status(0);
    }
    let dirs = run_dirs(out.root.path());
    assert_eq!(dirs.len(), 4);
    let ids: Vec<String> = dirs.iter().map(|d| run_id(d)).collect();
    for (dir, file) in dirs.iter().zip([
        "state.json",
        "progress.json",
        "events.ndjson",
        "logs/echo.log",
    ]) {
        fifo_in_place_of(&dir.join(file));
    }
    let fifo = "it is a named pipe (FIFO), not a regular file";
    // Each in the state of the one before; a wait for a writer is a timeout.
    let run = |out: crate::support::Output, args: &[&str]| {
        out.then()
            .args(args.iter().copied())
            .timeout(std::time::Duration::from_secs(20))
            .run()
    };
    let runs = run(out, &["runs"]);
    runs.assert_status(0);
    assert_eq!(
        runs.filter(&runs.stderr),
        format!(
            "warning: [TEMP]/state/nixcmd/runs/{} is not listed: its state.json: {fifo}\n",
            ids[0]
        )
    );
    let listed: Vec<&str> = runs
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, [&ids[3], &ids[2], &ids[1]]);
    let log = run(runs, &["log", &ids[0]]);
    log.assert_status(2);
    assert_eq!(
        log.filter(&log.stderr),
        format!(
            "error: the records of run `{0}` cannot be read (state.json: {fifo}); its logs are \
             in [TEMP]/state/nixcmd/runs/{0}/logs\n",
            ids[0]
        )
    );
    let mut out = log;
    for id in [&ids[1], &ids[2]] {
        out = run(out, &["log", id]);
        out.assert_status(0);
        assert!(out.stdout.ends_with("\nhi\n"), "{}", out.stdout);
    }
    for args in [
        &["log", &ids[3]][..],
        &["log", &ids[3], "echo"],
        &["log", &ids[3], "echo", "--follow"],
    ] {
        out = run(out, args);
        out.assert_status(2);
        assert_eq!(
            out.filter(&out.stderr),
            format!(
                "error: cannot read [TEMP]/state/nixcmd/runs/{}/logs/echo.log: {fifo}\n  hint: \
                 nixcmd writes each step's log as a plain file: move this one away to see the \
                 others, or read it as the user who ran the command\n",
                ids[3]
            ),
            "{args:?}"
        );
    }
}

/// A FIFO in place of a command's lock file (`locks/NAME.lock`) is refused with what it is
/// and what to do (exit 2, nothing run, no run folder made), by `run` and by `resume`: the
/// holder line used to be read from it until a writer came, which was never.
#[test]
fn a_fifo_in_place_of_the_lock_file_is_refused_not_waited_on() {
    let out = Test::new()
        .runbook(
            "p.md",
            "---\ndescription: Paused\nnixcmd: {}\n---\n## Steps\n### A\n```bash {id=a}\n\
             echo a-ran\n```\n### B\n```bash {id=b confirm=\"Go?\"}\necho b-ran\n```\n",
        )
        .args(["run", "p"])
        .run();
    out.assert_status(3);
    let id = run_id(&only_run(out.root.path()));
    fifo_in_place_of(&out.root.path().join("state/nixcmd/locks/p.lock"));
    let refused = |out: crate::support::Output, args: &[&str]| {
        let out = out
            .then()
            .args(args.iter().copied())
            .timeout(std::time::Duration::from_secs(20))
            .run();
        assert_eq!(
            (out.status, out.stdout.as_str(), out.filter(&out.stderr)),
            (
                2,
                "",
                "error: cannot take the run lock [TEMP]/state/nixcmd/locks/p.lock: it is a named \
                 pipe (FIFO), not a regular file\n  hint: nixcmd keeps each command's lock as a \
                 plain file and makes it again when it is missing: move this one away (or \
                 remove it), then run again\n"
                    .to_string()
            ),
            "{args:?}"
        );
        out
    };
    let out = refused(out, &["run", "p"]);
    let out = refused(out, &["resume", &id, "--approve", "b"]);
    assert_eq!(run_dirs(out.root.path()).len(), 1, "no new run folder");
    // As the hint says: with the FIFO gone, the paused run is resumed.
    std::fs::remove_file(out.root.path().join("state/nixcmd/locks/p.lock")).unwrap();
    let out = out.then().args(["resume", &id, "--approve", "b"]).run();
    out.assert_status(0);
    assert_eq!(
        crate::run_support::statuses(&only_run(out.root.path())),
        [
            ("a".to_string(), "succeeded".to_string()),
            ("b".into(), "succeeded".into())
        ]
    );
}

/// A FIFO in place of the lock file of a command called as a nested run (`/inner` in a
/// guided file) fails the calling step, naming the file and what it is; no run of `inner`.
#[test]
fn a_fifo_in_place_of_a_nested_commands_lock_fails_the_step() {
    let test = Test::new()
        .file(
            "project/ops/outer.md",
            "---\ndescription: outer\n---\n# Outer\n## Steps\n### Call inner\n```bash\n/inner\n```\n",
        )
        .file(
            "project/ops/inner.md",
            "---\ndescription: inner\nnixcmd: {}\n---\n# Inner\n## Steps\n### Prepare\n```bash {id=prepare}\necho prepare\n```\n",
        )
        .dir("state/nixcmd/locks");
    fifo_in_place_of_nothing(&test.root().join("state/nixcmd/locks/inner.lock"));
    let out = test
        .args([
            "--commands-dir",
            "ops",
            "run",
            "outer",
            "--approve",
            "call-inner",
        ])
        .timeout(std::time::Duration::from_secs(20))
        .run();
    out.assert_status(1);
    let why = "/inner: [TEMP]/state/nixcmd/locks/inner.lock: it is a named pipe (FIFO), not a \
               regular file\n";
    let stdout = out.filter(&out.stdout);
    assert!(
        stdout.contains(&format!("✗ call-inner not runnable [DURATION] — {why}")),
        "{stdout}"
    );
    assert_eq!(
        run_dirs(out.root.path())
            .iter()
            .map(|d| run_id(d).split('-').next().unwrap_or_default().to_string())
            .collect::<Vec<_>>(),
        ["outer"]
    );
}

/// A run folder without `state.json` (a run killed before it recorded anything, a folder
/// made by hand) is named by `runs`, with what to do, and `log` of it says so; a folder made
/// a moment ago (a run starting) and a host's folders of a run started on another machine
/// (`RUN_ID/hosts/HOST`) are not.
#[test]
fn a_run_folder_without_records_is_named_by_runs() {
    let out = Test::new()
        .runbook(
            "one.md",
            "---\ndescription: One step\nnixcmd: {}\n---\n# One\n\n## Steps\n### Echo\n```bash {id=echo}\necho hi\n```\n",
        )
        .args(["run", "one"])
        .run();
    out.assert_status(0);
    let id = run_id(&only_run(out.root.path()));
    let runs_dir = out.root.path().join("state/nixcmd/runs");
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let old = |dir: &Path| {
        std::fs::File::open(dir)
            .and_then(|f| f.set_modified(an_hour_ago))
            .expect("date the folder back");
    };
    let bare = runs_dir.join("one-20200101-000000-dead");
    std::fs::create_dir_all(bare.join("logs")).expect("a bare run folder");
    std::fs::write(bare.join("logs/echo.log"), "hi\n").expect("its log");
    old(&bare);
    std::fs::create_dir_all(runs_dir.join("one-20200101-000001-beef/logs")).expect("a new one");
    let host_side = runs_dir.join("deploy-20200101-000000-cafe");
    std::fs::create_dir_all(host_side.join("hosts/web1/state")).expect("a host's folder");
    old(&host_side);
    let warning = "warning: [TEMP]/state/nixcmd/runs/one-20200101-000000-dead is not listed: \
                   its state.json is missing (a run stopped before it recorded anything, or a \
                   folder put there by hand); see what its logs hold \
                   ([TEMP]/state/nixcmd/runs/one-20200101-000000-dead/logs), then remove the \
                   folder\n";
    let runs = out.then().args(["runs"]).run();
    runs.assert_status(0);
    assert_eq!(runs.filter(&runs.stderr), warning);
    let listed: Vec<&str> = runs
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, [id.as_str()]);
    let json = runs.then().args(["runs", "--format", "json"]).run();
    json.assert_status(0);
    assert_eq!(json.filter(&json.stderr), warning);
    assert_eq!(json.stdout_json().as_array().map(Vec::len), Some(1));
    let log = json.then().args(["log", "one-20200101-000000-dead"]).run();
    log.assert_status(2);
    assert_eq!(
        log.filter(&log.stderr),
        "error: the records of run `one-20200101-000000-dead` cannot be read (state.json is \
         missing); its logs are in [TEMP]/state/nixcmd/runs/one-20200101-000000-dead/logs\n"
    );
}
