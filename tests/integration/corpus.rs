//! Every real command file in `../shared/corpus/real-commands/` (written by NixOS users for
//! Claude Code) is read without an error exit or a panic, and what nixcmd understood of it
//! is frozen in one compact snapshot: mode, sections with their kinds, counts of steps,
//! blocks and manual checks, and the ambiguities found with their lines.

use crate::support::{Test, repo, skip};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::PathBuf;

fn corpus_files() -> Option<Vec<PathBuf>> {
    let dir = repo().join("../shared/corpus/real-commands");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        skip(&format!("{} is absent", dir.display()));
        return None;
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    Some(files)
}

fn count(v: &Value) -> usize {
    v.as_array().map_or(0, Vec::len)
}

/// One file's summary, from `show --format json`.
fn summary(json: &Value) -> String {
    let mut s = String::new();
    let blocks = ["prerequisites", "steps", "rollback"]
        .iter()
        .map(|k| count(&json[k]))
        .sum::<usize>()
        + count(&json["success_criteria"]["checks"]);
    let runnable_steps = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["runnable"] == true)
        .count();
    let _ = writeln!(
        s,
        "  mode: {}; steps: {} ({} runnable); blocks: {} (+{} not in a runnable section); manual checks: {}; troubleshooting: {}; references: {}",
        json["mode"].as_str().unwrap(),
        count(&json["steps"]),
        runnable_steps,
        blocks,
        json["other_blocks"],
        count(&json["success_criteria"]["manual"]),
        count(&json["troubleshooting"]),
        count(&json["references"]),
    );
    let _ = writeln!(
        s,
        "  counts: prerequisites {}, checks {}, rollback {}",
        count(&json["prerequisites"]),
        count(&json["success_criteria"]["checks"]),
        count(&json["rollback"]),
    );
    for sec in json["sections"].as_array().unwrap() {
        let _ = writeln!(
            s,
            "  section {:>4}: {} = {}",
            sec["line"],
            sec["heading"].as_str().unwrap(),
            sec["kind"].as_str().unwrap()
        );
    }
    let mut by_code: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for d in json["diagnostics"].as_array().unwrap() {
        let line = d["position"]["line"]
            .as_u64()
            .map_or("-".to_string(), |l| l.to_string());
        by_code
            .entry(format!(
                "{} {}",
                d["severity"].as_str().unwrap(),
                d["code"].as_str().unwrap()
            ))
            .or_default()
            .push(line);
    }
    for (code, lines) in by_code {
        let _ = writeln!(s, "  {code}: lines {}", lines.join(","));
    }
    s
}

#[test]
fn real_commands_are_understood() {
    let Some(files) = corpus_files() else { return };
    assert!(!files.is_empty());
    let mut report = String::new();
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let bytes = std::fs::read(path).unwrap();
        let show = Test::new()
            .file(&format!("project/{name}"), &bytes)
            .args(["show", name, "--format", "json"])
            .run();
        assert_eq!(show.status, 0, "{name}:\n{}", show.normalized());
        let json = show.stdout_json();
        let check = Test::new()
            .programs(&["bash"])
            .file(&format!("project/{name}"), &bytes)
            .args(["check", name])
            .run();
        assert!(
            [0, 1].contains(&check.status),
            "{name}: check exited {}:\n{}",
            check.status,
            check.normalized()
        );
        let _ = writeln!(report, "{name} (check exit {})", check.status);
        report.push_str(&summary(&json));
    }
    insta::assert_snapshot!(report);
}
