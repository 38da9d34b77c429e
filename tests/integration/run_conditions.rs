//! Conditional blocks, `when=NAME` and `unless=NAME`: a block whose condition does not hold as
//! it would start is skipped (no gate, no compensation, recorded with its reason), from every
//! place a block's environment comes from; `show`, the plan and `check` say so.

use crate::run_support::{events, normalized, only_run, project_file, read_json, run_id, statuses};
use crate::support::Test;

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// `decide` exports PUSH_NEEDED=0; `push` asks first, but only when PUSH_NEEDED is true.
const PUSH: &str = r#"---
description: Push only when there is something to push
nixcmd: {}
---
# Push

## Steps
### Decide
```bash {id=decide rollback=undo-decide}
echo decide >> trace
echo "PUSH_NEEDED=${SET_TO:-0}" >>"$NIXCMD_ENV"
```
### Push
```bash {id=push when=PUSH_NEEDED confirm="Push now?" rollback=undo-push}
echo push >> trace
```
### After
```bash {id=after}
echo after >> trace
[ -z "${FAIL_AFTER:-}" ]
```

## Rollback
### undo-decide
```bash
echo undo-decide >> trace
```
### undo-push
```bash
echo undo-push >> trace
```
"#;

#[test]
fn a_confirm_step_whose_condition_is_false_is_skipped_without_asking_in_ci() {
    let out = Test::new()
        .runbook("push.md", PUSH)
        .env("CI", "true")
        .args(["run", "push", "--format", "json"])
        .run();
    out.assert_status(0);
    let root = out.root.path().to_path_buf();
    assert_eq!(project_file(&root, "trace"), "decide\nafter\n");
    let run = only_run(&root);
    assert_eq!(
        statuses(&run),
        pairs(&[
            ("decide", "succeeded"),
            ("push", "skipped"),
            ("after", "succeeded")
        ])
    );
    let stream = events(&out.stdout);
    assert!(!stream.iter().any(|e| e["type"] == "gate"), "no question");
    let push: Vec<_> = stream
        .iter()
        .filter(|e| e["step_id"] == "push" && e["type"] != "run_started")
        .collect();
    assert_eq!(push.len(), 1, "{push:?}");
    assert_eq!(push[0]["type"], "step_finished");
    assert_eq!(push[0]["status"], "skipped");
    assert_eq!(push[0]["attempts"], 0);
    assert_eq!(
        push[0]["reason"],
        "when=PUSH_NEEDED: PUSH_NEEDED is not true"
    );
    let plan = &stream[0]["plan"];
    assert_eq!(plan[1]["step_id"], "push");
    assert_eq!(plan[1]["when"], "PUSH_NEEDED");
    assert!(plan[1].get("unless").is_none());
    assert_eq!(plan[1]["gates"][0], "only when PUSH_NEEDED", "{}", plan[1]);
    let state = read_json(&run.join("state.json"));
    assert_eq!(state["status"], "succeeded");
    assert_eq!(state["compensations"], serde_json::json!(["undo-decide"]));
    assert_eq!(state["approvals"], serde_json::json!([]));

    // The same run in text, at the end of a failing run: the skipped step's compensation is
    // not run, the others are.
    let out = Test::new()
        .runbook("push.md", PUSH)
        .env("CI", "true")
        .env("FAIL_AFTER", "1")
        .args(["run", "push"])
        .run();
    out.assert_status(1);
    assert_eq!(
        project_file(out.root.path(), "trace"),
        "decide\nafter\nundo-decide\n"
    );
    insta::assert_snapshot!(normalized(&out));
}

#[test]
fn a_true_condition_keeps_the_gate_and_the_compensation() {
    let out = Test::new()
        .runbook("push.md", PUSH)
        .env("CI", "true")
        .env("SET_TO", "yes")
        .args(["run", "push"])
        .run();
    out.assert_status(3);
    assert_eq!(project_file(out.root.path(), "trace"), "decide\n");
    let run = only_run(out.root.path());
    assert_eq!(
        statuses(&run),
        pairs(&[
            ("decide", "succeeded"),
            ("push", "awaiting_confirmation"),
            ("after", "pending")
        ])
    );
}

/// One step per case, each appending its id to `trace` when it runs.
const CASES: &str = r#"---
description: Every kind of condition
nixcmd:
  args:
    force:
      help: run the forced step
---
# Cases

`FROM_OUTSIDE` and `MISSING` come from the environment nixcmd is started in.

## Prerequisites
```bash {id=pre-skipped when=MISSING}
echo pre-skipped >> trace
```

## Steps
### Export
```bash {id=export}
printf 'ON=yes\nOFF=Off\nEMPTY=\n' >>"$NIXCMD_ENV"
```
### When on
```bash {id=when-on when=ON}
echo when-on >> trace
```
### When off
```bash {id=when-off when=OFF}
echo when-off >> trace
```
### When empty
```bash {id=when-empty when=EMPTY}
echo when-empty >> trace
```
### Unless on
```bash {id=unless-on unless=ON}
echo unless-on >> trace
```
### Unless off
```bash {id=unless-off unless=OFF}
echo unless-off >> trace
```
### Unless unset
```bash {id=unless-unset unless=MISSING}
echo unless-unset >> trace
```
### Both hold
```bash {id=both-hold when=ON unless=OFF}
echo both-hold >> trace
```
### Only one holds
```bash {id=both-one when=ON unless=ON}
echo both-one >> trace
```
### From outside
```bash {id=outside when=FROM_OUTSIDE}
echo outside >> trace
```
### From an argument
```bash {id=forced when=NIXCMD_ARG_FORCE}
echo forced >> trace
```

## Success criteria
```bash {id=check-skipped unless=ON}
exit 1
```
"#;

#[test]
fn conditions_read_exports_the_environment_and_arguments() {
    let out = Test::new()
        .runbook("cases.md", CASES)
        .env("FROM_OUTSIDE", "TRUE")
        .env_remove("MISSING")
        .args(["run", "cases", "yes"])
        .run();
    out.assert_status(0);
    let root = out.root.path().to_path_buf();
    assert_eq!(
        project_file(&root, "trace"),
        "when-on\nunless-off\nunless-unset\nboth-hold\noutside\nforced\n"
    );
    assert_eq!(
        statuses(&only_run(&root)),
        pairs(&[
            ("pre-skipped", "skipped"),
            ("export", "succeeded"),
            ("when-on", "succeeded"),
            ("when-off", "skipped"),
            ("when-empty", "skipped"),
            ("unless-on", "skipped"),
            ("unless-off", "succeeded"),
            ("unless-unset", "succeeded"),
            ("both-hold", "succeeded"),
            ("both-one", "skipped"),
            ("outside", "succeeded"),
            ("forced", "succeeded"),
            ("check-skipped", "skipped"),
        ])
    );
    insta::assert_snapshot!(normalized(&out));

    // The argument given as `0`, and the outside variable as `no`: both skip.
    let out = Test::new()
        .runbook("cases.md", CASES)
        .env("FROM_OUTSIDE", "no")
        .args(["run", "cases", "0"])
        .run();
    out.assert_status(0);
    assert_eq!(
        project_file(out.root.path(), "trace"),
        "when-on\nunless-off\nunless-unset\nboth-hold\n"
    );
    let text = normalized(&out);
    for line in [
        "- outside skipped [DURATION] — when=FROM_OUTSIDE: FROM_OUTSIDE is not true",
        "- forced skipped [DURATION] — when=NIXCMD_ARG_FORCE: NIXCMD_ARG_FORCE is not true",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
}

/// A `--set` value reaches conditions as it reaches the block.
#[test]
fn a_set_value_is_seen_by_a_condition() {
    let book = "---\ndescription: set\nnixcmd: {}\n---\n# Set\n\nGO is given with --set.\n\n## Steps\n```bash {id=go when=GO}\necho go >> trace\n```\n```bash {id=last}\necho last >> trace\n```\n";
    let out = Test::new()
        .runbook("set.md", book)
        .args(["run", "set", "--set", "GO=1"])
        .run();
    out.assert_status(0);
    assert_eq!(project_file(out.root.path(), "trace"), "go\nlast\n");
    let out = Test::new()
        .runbook("set.md", book)
        .args(["run", "set", "--set", "GO=off"])
        .run();
    out.assert_status(0);
    assert_eq!(project_file(out.root.path(), "trace"), "last\n");
}

/// A step skipped before a pause stays skipped on resume, even if its condition would hold
/// by then: what a run decided is not decided again.
#[test]
fn resume_keeps_a_skipped_step_skipped() {
    let book = r#"---
description: Skip, then pause
nixcmd: {}
---
# Resume

`LATER` comes from the environment.

## Steps
### Maybe
```bash {id=maybe when=LATER}
echo maybe >> trace
```
### Ask
```bash {id=ask confirm="Go on?" irreversible}
echo ask >> trace
```
"#;
    let out = Test::new()
        .runbook("resume.md", book)
        .env_remove("LATER")
        .args(["run", "resume"])
        .run();
    out.assert_status(3);
    let root = out.root.path().to_path_buf();
    let run = only_run(&root);
    let id = run_id(&run);
    assert_eq!(
        statuses(&run),
        pairs(&[("maybe", "skipped"), ("ask", "awaiting_confirmation")])
    );
    let out = out
        .then()
        .env("LATER", "1")
        .args(["resume", &id, "--approve", "ask", "--format", "json"])
        .run();
    out.assert_status(0);
    assert_eq!(project_file(&root, "trace"), "ask\n");
    assert_eq!(
        statuses(&run),
        pairs(&[("maybe", "skipped"), ("ask", "succeeded")])
    );
    let stream = events(&out.stdout);
    assert!(
        !stream
            .iter()
            .any(|e| e["step_id"] == "maybe" && e["type"] != "run_started"),
        "{}",
        out.stdout
    );
    assert_eq!(
        stream[0]["plan"][0]["note"], "done in an earlier session",
        "{}",
        stream[0]
    );
}

#[test]
fn the_dry_run_plan_and_show_name_the_conditions() {
    let out = Test::new()
        .runbook("cases.md", CASES)
        .env("FROM_OUTSIDE", "1")
        .args(["run", "cases", "--dry-run"])
        .run();
    out.assert_status(0);
    insta::assert_snapshot!("dry_run", normalized(&out));

    let show = Test::new()
        .runbook("cases.md", CASES)
        .args(["show", "cases"])
        .run();
    show.assert_status(0);
    insta::assert_snapshot!("show_text", normalized(&show));

    let json = Test::new()
        .runbook("cases.md", CASES)
        .args(["show", "cases", "--format", "json"])
        .run();
    json.assert_status(0);
    let v = json.stdout_json();
    let attrs = |list: &str, i: usize| v[list][i]["attrs"].clone();
    assert_eq!(attrs("prerequisites", 0)["when"], "MISSING");
    assert_eq!(attrs("steps", 0).get("when"), None);
    assert_eq!(attrs("steps", 0).get("unless"), None);
    assert_eq!(attrs("steps", 1)["when"], "ON");
    assert_eq!(attrs("steps", 4)["unless"], "ON");
    assert_eq!(attrs("steps", 7)["when"], "ON");
    assert_eq!(attrs("steps", 7)["unless"], "OFF");
    assert_eq!(v["success_criteria"]["checks"][0]["attrs"]["unless"], "ON");
    assert_eq!(v["diagnostics"], serde_json::json!([]));
}

const BAD: &str = r#"---
description: Bad conditions
nixcmd: {}
---
# Bad

## Steps
### One
```bash {id=one when=$X unless=9lives rollback=undo}
echo "X=1" >>"$NIXCMD_ENV"
```
### Cleanup
```bash {id=cleanup always unless=X}
true
```

## Rollback
### undo
```bash {when=X}
true
```
"#;

#[test]
fn check_refuses_bad_names_and_conditions_on_rollback_and_always_blocks() {
    let out = Test::new()
        .programs(&["bash"])
        .file("project/bad.md", BAD)
        .args(["check", "bad.md"])
        .run();
    out.assert_status(1);
    insta::assert_snapshot!(normalized(&out));
    // A run refuses the file as it refuses other attribute errors, before anything runs.
    let run = Test::new()
        .runbook("bad.md", BAD)
        .args(["run", "bad"])
        .run();
    assert_ne!(run.status, 0);
    assert_eq!(project_file(run.root.path(), "trace"), "");
    assert!(
        run.stderr
            .contains("`when=` is not allowed on a rollback block"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_warns_about_a_condition_variable_nothing_mentions() {
    let book = r#"---
description: A typo in a condition
nixcmd:
  args:
    force: {}
---
# Typo

`FROM_CI` is set by the CI job.

## Steps
### Decide
```bash {id=decide}
echo "FLAKE_UPDATE_CHANGED=1" >>"$NIXCMD_ENV"
```
### Build
```bash {id=build when=FLAKE_UPDATE_CHANGD}
true
```
### Twice
```bash {id=twice when=ONLY_IN_ATTRS}
true
```
### Again
```bash {id=again unless=ONLY_IN_ATTRS}
true
```
### Known
```bash {id=known when=FLAKE_UPDATE_CHANGED unless=NIXCMD_DRY_RUN}
true
```
### Outside
```bash {id=outside when=FROM_CI unless=NIXCMD_ARG_FORCE}
true
```
"#;
    let test = || {
        Test::new()
            .programs(&["bash"])
            .file("project/typo.md", book)
    };
    let out = test().args(["check", "typo.md"]).run();
    out.assert_status(0);
    insta::assert_snapshot!(normalized(&out));
    let strict = test().args(["check", "--strict", "typo.md"]).run();
    strict.assert_status(1);
}

/// In a guided file every step asks, except one whose condition does not hold: it is skipped
/// before its question.
#[test]
fn a_guided_step_whose_condition_does_not_hold_asks_nothing() {
    let book = "---\ndescription: guided\n---\n# Guided\n\n`NOPE` is never set.\n\n## Steps\n### one\n```bash {when=NOPE}\necho one >> trace\n```\n### two\n```bash\necho two >> trace\n```\n";
    let out = Test::new()
        .claude_command("guided.md", book)
        .env_remove("NOPE")
        .env("CI", "true")
        .args(["run", "guided"])
        .run();
    out.assert_status(3);
    let run = only_run(out.root.path());
    assert_eq!(
        statuses(&run),
        pairs(&[("one", "skipped"), ("two", "awaiting_confirmation")])
    );
    let text = normalized(&out);
    assert!(
        text.contains("- one skipped [DURATION] — when=NOPE: NOPE is not set\n[TIME] paused: step two needs confirmation"),
        "{text}"
    );
    assert_eq!(project_file(out.root.path(), "trace"), "");
}

/// Members of a `group=` start together: each one's condition is looked at then, and a member
/// whose condition does not hold is skipped while the others run.
#[test]
fn a_group_member_whose_condition_does_not_hold_is_skipped() {
    let book = "---\ndescription: group\nnixcmd: {}\n---\n# Group\n\n`NOPE` is never set.\n\n## Steps\n### a\n```bash {id=a group=g when=NOPE}\necho a >> trace\n```\n### b\n```bash {id=b group=g unless=NOPE}\necho b >> trace\n```\n### c\n```bash {id=c group=g}\necho c >> trace\n```\n";
    let out = Test::new()
        .runbook("group.md", book)
        .env_remove("NOPE")
        .args(["run", "group"])
        .run();
    out.assert_status(0);
    let mut trace: Vec<String> = project_file(out.root.path(), "trace")
        .lines()
        .map(str::to_string)
        .collect();
    trace.sort();
    assert_eq!(trace, ["b", "c"]);
    assert_eq!(
        statuses(&only_run(out.root.path())),
        pairs(&[("a", "skipped"), ("b", "succeeded"), ("c", "succeeded")])
    );
}
