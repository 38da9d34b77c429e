//! The entries of one folder, read with `getdents64` and handed out borrowed. `std::fs::read_dir`
//! allocates a name (and an `Arc` clone) per entry and joins a full path for each; `list`
//! of a thousand runbooks spent about 2 M instructions there, on the main thread before any
//! file could be read.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// What the listing says an entry is. `Other` (a symlink, or a file system that does not
/// report types) needs a `stat` to tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Other,
}

/// Calls `f` with the name (without `.` and `..`) and kind of every entry of `dir`, in the
/// order the file system lists them, and returns the folder, open: its files can then be
/// opened relative to it ([`open_in`]) without walking the folder's path again for each.
/// Errors are those of `open`/`readdir`, as `std::fs::read_dir` reports them (`NotFound`,
/// `NotADirectory`, …).
pub fn for_each(dir: &Path, f: impl FnMut(&[u8], Kind)) -> io::Result<OwnedFd> {
    let folder = open_folder(dir)?;
    entries(&folder, WHOLE, f)?;
    Ok(folder)
}

/// Bytes asked of the kernel at a time by [`for_each`]: a thousand entries in one call.
pub const WHOLE: usize = 32 * 1024;

/// Bytes asked at a time by a listing whose entries are used as they come (`list` of a
/// large folder reads the first files while the rest is listed): about 125 entries. The
/// kernel lists a hashed ext4 folder a block at a time, so the first of these calls returns
/// in an eighth of the time of a whole one.
pub const STREAMED: usize = 4 * 1024;

/// Opens `dir` as a folder, for [`entries`] and [`open_in`].
pub fn open_folder(dir: &Path) -> io::Result<OwnedFd> {
    let path = c_path(dir.as_os_str().as_bytes())?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Calls `f` with the name and kind of every entry of the open `folder` (as [`for_each`]),
/// asking the kernel for `chunk` bytes of entries at a time (`getdents64`): each call's
/// entries reach `f` before the next call. Reads the folder from its start; `folder` must
/// not be listed by anything else at the same time (the position is the descriptor's).
pub fn entries(folder: &OwnedFd, chunk: usize, mut f: impl FnMut(&[u8], Kind)) -> io::Result<()> {
    // SAFETY: seeking an open descriptor; a folder's position 0 is its first entry.
    if unsafe { libc::lseek(folder.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; chunk.max(1024)];
    loop {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which is ours.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                folder.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Ok(());
        }
        // Each record: inode (8 bytes), offset (8), its length (2), type (1), then the
        // NUL-terminated name, padded to the length.
        let mut at = 0;
        let n = n as usize;
        while at + 19 <= n {
            let len = usize::from(u16::from_ne_bytes([buf[at + 16], buf[at + 17]]));
            if len < 19 || at + len > n {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "malformed folder entry from the kernel",
                ));
            }
            let record = &buf[at..at + len];
            let d_type = record[18];
            let name = &record[19..];
            let name = &name[..memchr::memchr(0, name).unwrap_or(name.len())];
            at += len;
            if name == b"." || name == b".." {
                continue;
            }
            let kind = match d_type {
                libc::DT_REG => Kind::File,
                libc::DT_DIR => Kind::Dir,
                _ => Kind::Other,
            };
            f(name, kind);
        }
    }
}

/// Opens the file `name` of the folder `dir` (from [`for_each`]) for reading.
pub fn open_in(dir: &OwnedFd, name: &[u8]) -> io::Result<std::fs::File> {
    // The name with its NUL on the stack: file names are at most 255 bytes on Linux.
    let mut buf = [0u8; 256];
    let owned;
    let name: &CStr = match buf.get_mut(..=name.len()) {
        Some(room) => {
            room[..name.len()].copy_from_slice(name);
            CStr::from_bytes_with_nul(room).map_err(|_| nul_error())?
        }
        None => {
            owned = c_path(name)?;
            &owned
        }
    };
    // Listing commands is not using them: without the access time to maintain, each read
    // skips a check (and sometimes an inode write). Only the file's owner (or root) may ask
    // for that; anyone else opens it the ordinary way.
    let open = |flags| {
        // SAFETY: `dir` is an open descriptor and `name` a NUL-terminated string, both alive
        // for the call.
        unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) }
    };
    let mut fd = open(libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOATIME);
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
        fd = open(libc::O_RDONLY | libc::O_CLOEXEC);
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn nul_error() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte")
}

fn c_path(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| nul_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_names_and_kinds_like_read_dir() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.md"), "x").expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::os::unix::fs::symlink("a.md", dir.path().join("link.md")).expect("symlink");
        let mut seen = Vec::new();
        let folder = for_each(dir.path(), |name, kind| {
            seen.push((String::from_utf8(name.to_vec()).expect("utf-8"), kind))
        })
        .expect("listing");
        let mut read = String::new();
        std::io::Read::read_to_string(&mut open_in(&folder, b"a.md").expect("open"), &mut read)
            .expect("read");
        assert_eq!(read, "x");
        seen.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            seen,
            [
                ("a.md".to_string(), Kind::File),
                ("link.md".to_string(), Kind::Other),
                ("sub".to_string(), Kind::Dir),
            ]
        );
    }

    /// A folder listed a few entries at a time gives every entry once, as a whole listing
    /// does, and each listing of the same descriptor starts from the first entry.
    #[test]
    fn chunked_listings_give_every_entry_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        for i in 0..300 {
            std::fs::write(
                dir.path().join(format!("a-rather-long-name-{i:04}.md")),
                "x",
            )
            .expect("write");
        }
        let folder = open_folder(dir.path()).expect("open");
        let names = |chunk| {
            let mut calls = 0;
            let mut seen = Vec::new();
            entries(&folder, chunk, |name, kind| {
                calls += 1;
                assert_eq!(kind, Kind::File);
                seen.push(String::from_utf8(name.to_vec()).expect("utf-8"));
            })
            .expect("entries");
            assert_eq!(calls, seen.len());
            seen.sort();
            seen
        };
        let whole = names(WHOLE);
        assert_eq!(whole.len(), 300);
        assert_eq!(whole[0], "a-rather-long-name-0000.md");
        assert_eq!(names(1024), whole);
        assert_eq!(names(STREAMED), whole);
    }

    #[test]
    fn errors_are_read_dirs_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = for_each(&dir.path().join("nope"), |_, _| {}).expect_err("missing");
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let file = dir.path().join("f");
        std::fs::write(&file, "x").expect("write");
        let not_dir = for_each(&file, |_, _| {}).expect_err("a file");
        assert_eq!(not_dir.kind(), io::ErrorKind::NotADirectory);
    }
}
