//! Compiles the built-in runbooks of `commands/` into the binary: generates a table of
//! `(name, text)` pairs so adding a runbook means adding a file.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=commands");
    let dir = Path::new("commands");
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".md"))
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    let mut out = String::from(
        "/// Built-in command files: (name, text).\npub static BUILTINS: &[(&str, &str)] = &[\n",
    );
    for file in &names {
        let stem = file.trim_end_matches(".md");
        let path = std::fs::canonicalize(dir.join(file)).expect("listed file exists");
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(
            out,
            "    ({stem:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("write to string");
    }
    out.push_str("];\n");
    let target =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtins.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}
