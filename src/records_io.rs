//! Atomic file writes (temp file in the same folder + rename), so a crash at any moment leaves
//! either the old or the new content, never a torn file. No fsync: the guarantee is against
//! the process dying (`kill -9`), which is what runs meet; fsync per step would cost more
//! than the step's own bookkeeping.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to `path` atomically. The temporary file is `.<name>.<pid>.<n>.tmp` beside
/// the target: unique per process and per write (threads of the MCP server write at the same
/// time), so no random names are needed — the write costs an open, a write and a rename (a swap
/// and an unlink when the target exists, see [`replace`]).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        drop(file);
        replace(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes a step's script file: created in place when it does not exist yet (a fresh run, no
/// temporary file and rename needed: nothing reads it before the shell nixcmd starts next),
/// else replaced atomically (a resumed run, or a file left half-written by a crash).
pub fn write_script(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        // A short write (disk full) must not leave half a script for the shell to run.
        Ok(mut file) => file.write_all(bytes).inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => write_atomic(path, bytes, 0o600),
        Err(e) => Err(e),
    }
}

/// Puts `tmp` in place of `path`, atomically. When `path` exists the two are swapped
/// (`renameat2(RENAME_EXCHANGE)`) and the old content, now under the temporary name, is
/// removed: ext4 (`auto_da_alloc`) flushes a file's data to disk on a plain rename *over* an
/// existing file, which costs 1–2 ms on a VM disk, three times per step. The swap is just as
/// atomic for anyone reading `path`, and durability across power loss is not the guarantee
/// here (see the module comment). Where the swap is not supported, or `path` does not exist
/// yet, a plain rename.
fn replace(tmp: &Path, path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(from), Ok(to)) = (
        std::ffi::CString::new(tmp.as_os_str().as_bytes()),
        std::ffi::CString::new(path.as_os_str().as_bytes()),
    ) else {
        return std::fs::rename(tmp, path);
    };
    // SAFETY: both arguments are valid NUL-terminated paths that outlive the call.
    let swapped = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    } == 0;
    if swapped {
        // The old content is under the temporary name now; a failure here only leaves a
        // stale temporary file, never a wrong `path`.
        let _ = std::fs::remove_file(tmp);
        Ok(())
    } else {
        std::fs::rename(tmp, path)
    }
}

/// A log file whose formatted writes (`writeln!`) reach the file in one `write(2)` each, so a
/// line is never split by a crash: `File` alone issues one write per formatted piece (nine for
/// a step's header line).
pub struct LogFile(pub std::fs::File);

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }

    fn write_fmt(&mut self, args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
        match args.as_str() {
            Some(text) => self.0.write_all(text.as_bytes()),
            None => self.0.write_all(args.to_string().as_bytes()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_the_file_with_the_given_mode_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        super::write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // Again, now that the file exists (the swap path), then a second time.
        super::write_atomic(&path, b"newer", 0o600).unwrap();
        super::write_atomic(&path, b"newest", 0o600).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "newest");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn scripts_are_created_or_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step.sh");
        super::write_script(&path, b"echo one\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "echo one\n");
        super::write_script(&path, b"echo 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "echo 2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn log_lines_are_written_whole() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step.log");
        let mut log = super::LogFile(std::fs::File::create(&path).unwrap());
        let step = "step-1";
        writeln!(log, "── {step} attempt {}/{} ──", 1, 2).unwrap();
        writeln!(log, "plain").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "── step-1 attempt 1/2 ──\nplain\n"
        );
    }
}
