//! Fuzzes the whole pure reading path: bytes → text → command, then everything a caller
//! does with the result (rendering every diagnostic, serializing the command as JSON).
//! Nothing here may panic, whatever the bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nixcmd::command::Origin;
use nixcmd::parser;

fuzz_target!(|data: &[u8]| {
    match parser::decode("fuzz.md", data) {
        Ok(file) => {
            let cmd = parser::parse(
                &file,
                "fuzz",
                Origin::File {
                    path: "fuzz.md".into(),
                },
            );
            for d in &cmd.diagnostics {
                let _ = d.render(Some(&file), &file.name);
                let _ = d.location(&file.name);
            }
            let json = serde_json::to_string(&cmd).expect("a parsed command serializes");
            assert!(!json.is_empty());
        }
        Err(d) => {
            let _ = d.render(None, "fuzz.md");
        }
    }
});
