//! Inputs found by `cargo fuzz run parse` (see `fuzz/`), kept in `fixtures/runbooks/fuzz/`.
//! Each must be read without a panic or a hang by `show` and `check`, with a regular exit.
//! The folder is seeded with hostile inputs of the kinds the fuzzer explores (deep nesting,
//! unbalanced quotes, number overflow, CRLF and control characters, delimiter soup, …).

use crate::support::Test;
use std::time::Duration;

#[test]
fn fuzz_findings_do_not_crash() {
    let dir = crate::support::repo().join("fixtures/runbooks/fuzz");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "{} holds no inputs", dir.display());
    for path in &paths {
        let name = format!("{}.md", path.file_stem().unwrap().to_str().unwrap());
        let bytes = std::fs::read(path).unwrap();
        for args in [
            vec!["show", &name, "--format", "json"],
            vec!["check", &name],
        ] {
            let out = Test::new()
                .programs(&["bash"])
                .file(&format!("project/{name}"), &bytes)
                .args(&args)
                .timeout(Duration::from_secs(20))
                .run();
            assert!(
                [0, 1, 2].contains(&out.status),
                "{} {args:?}:\n{}",
                path.display(),
                out.normalized()
            );
        }
    }
}
