//! Atomic file writes (temp file in the same folder + rename), so a crash at any moment leaves
//! either the old or the new content, never a torn file. No fsync: the guarantee is against
//! the process dying (`kill -9`), which is what runs meet; fsync per step would cost more
//! than the step's own bookkeeping.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".nixcmd-")
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
