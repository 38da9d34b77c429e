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
    // FNV-1a of each file's bytes, in the order of BUILTINS: `list` uses a precomputed row only
    // for the exact text it was computed from (src/builtin_rows.rs).
    let mut hashes = String::from(
        "/// FNV-1a 64 of each built-in's text, in the order of [`BUILTINS`].\npub static BUILTIN_HASHES: &[u64] = &[\n",
    );
    for file in &names {
        let stem = file.trim_end_matches(".md");
        let path = std::fs::canonicalize(dir.join(file)).expect("listed file exists");
        println!("cargo:rerun-if-changed={}", path.display());
        let bytes = std::fs::read(&path).expect("listed file is readable");
        writeln!(hashes, "    {:#018x},", fnv1a(&bytes)).expect("write to string");
        writeln!(
            out,
            "    ({stem:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("write to string");
    }
    out.push_str("];\n");
    hashes.push_str("];\n");
    out.push_str(&hashes);
    let target =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtins.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}

/// FNV-1a, 64 bits: a fingerprint of a built-in's text (not a security measure).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
