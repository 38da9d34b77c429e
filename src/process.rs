//! Short-lived helper processes that are not runbook steps (`bash -n`, `shellcheck`, `git`,
//! `nix eval`): run to completion with input on stdin and output captured. Steps themselves
//! are spawned by the executor's process-group runner; nothing else starts processes.

use std::io::Write;
use std::process::{Command, Stdio};

/// What a finished helper process printed.
#[derive(Debug, Clone)]
pub struct Captured {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Captured {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

/// Runs `program args…` with `stdin` fed in, capturing output. `Ok(None)` when the program
/// is not installed.
pub fn capture(program: &str, args: &[&str], stdin: &str) -> std::io::Result<Option<Captured>> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let input = stdin.to_string();
    let mut pipe = child.stdin.take();
    // Feed stdin from a thread so a program that writes before reading cannot deadlock us.
    let writer = std::thread::spawn(move || {
        if let Some(p) = pipe.as_mut() {
            let _ = p.write_all(input.as_bytes());
        }
    });
    let out = child.wait_with_output()?;
    let _ = writer.join();
    Ok(Some(Captured {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }))
}

/// Whether `program` can be found on `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join(program);
            candidate.is_file()
                && std::fs::metadata(&candidate)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
                    .unwrap_or(false)
        })
    })
}
