//! Fuzzes the whole pure reading path: bytes → text → command, then everything a caller
//! does with the result (rendering every diagnostic, serializing the command as JSON).
//! Nothing here may panic, whatever the bytes. Three fast paths are checked against the slow
//! ones they stand in for: `list`'s line scan against the full outline (same summary), its
//! summary rows against the parser's rows (whenever the summary answers), and the simple
//! YAML reader against serde_yaml_ng (same value, whenever it reads at all).

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcmd::command::{Command, Origin};
use nixcmd::parser::{self, Depth};

fn origin() -> Origin {
    Origin::File {
        path: "fuzz.md".into(),
    }
}

/// What `list` shows of a command.
fn summary(c: &Command) -> String {
    let errors = c
        .diagnostics
        .iter()
        .filter(|d| d.severity >= nixcmd::diagnostic::Severity::Error)
        .count();
    format!(
        "{:?}|{:?}|{}|{:?}|{}|{}|{}",
        c.description,
        c.mode,
        serde_json::to_string(&c.args).expect("args serialize"),
        c.argument_hint,
        c.runnable_steps(),
        c.confirm_count(),
        errors
    )
}

fuzz_target!(|data: &[u8]| {
    match parser::decode("fuzz.md", data) {
        Ok(file) => {
            let cmd = parser::parse(&file, "fuzz", origin());
            for d in &cmd.diagnostics {
                let _ = d.render(Some(&file), &file.name);
                let _ = d.location(&file.name);
            }
            let json = serde_json::to_string(&cmd).expect("a parsed command serializes");
            assert!(!json.is_empty());

            let fast = parser::parse_at(&file, "fuzz", origin(), Depth::Summary, true);
            let full = parser::parse_at(&file, "fuzz", origin(), Depth::Summary, false);
            assert_eq!(summary(&fast), summary(&full), "line scan and outline disagree");

            if let Some(row) = nixcmd::summary::row(&file, "fuzz", &origin()) {
                let parsed = nixcmd::list::row_of_command(fast);
                assert_eq!(
                    serde_json::to_value(&row).expect("rows serialize"),
                    serde_json::to_value(&parsed).expect("rows serialize"),
                    "list's summary row and the parser's row disagree"
                );
            }

            if let Ok(fm) = nixcmd::frontmatter::parse(&file)
                && fm.syntax == Some(nixcmd::frontmatter::Syntax::Yaml)
            {
                let text = &file.text[fm.content.clone()];
                if let Some(ours) = nixcmd::simple_yaml::parse(text) {
                    let theirs: serde_json::Value = serde_yaml_ng::from_str(text)
                        .expect("the simple reader read what serde_yaml_ng refuses");
                    assert_eq!(ours, theirs, "simple YAML reader and serde_yaml_ng disagree");
                }
            }
        }
        Err(d) => {
            let _ = d.render(None, "fuzz.md");
        }
    }
});
