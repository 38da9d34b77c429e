//! The entries of one folder, read with `readdir` and handed out borrowed. `std::fs::read_dir`
//! allocates a name (and an `Arc` clone) per entry and joins a full path for each; `list`
//! of a thousand runbooks spent about 2 M instructions there, on the main thread before any
//! file could be read.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, IntoRawFd as _, OwnedFd};
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
pub fn for_each(dir: &Path, mut f: impl FnMut(&[u8], Kind)) -> io::Result<OwnedFd> {
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
    let folder = unsafe { OwnedFd::from_raw_fd(fd) };
    // The stream reads through its own descriptor (`closedir` closes it); `folder` stays.
    let stream_fd = folder.try_clone()?;
    // SAFETY: `stream_fd` is an open directory descriptor; on success the stream owns it.
    let handle = unsafe { libc::fdopendir(stream_fd.as_raw_fd()) };
    if handle.is_null() {
        return Err(io::Error::last_os_error());
    }
    // Now owned by the stream.
    let _ = stream_fd.into_raw_fd();
    let dir = Open(handle);
    loop {
        // `readdir` returns NULL both at the end and on error; only errno tells them apart.
        // SAFETY: errno is this thread's own variable.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: `dir.0` is an open directory stream owned by `dir`.
        let entry = unsafe { libc::readdir64(dir.0) };
        if entry.is_null() {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(0) | None => Ok(folder),
                Some(_) => Err(err),
            };
        }
        // SAFETY: a non-NULL `readdir64` result points at an entry whose `d_name` is
        // NUL-terminated and stays valid until the next `readdir64` or `closedir` on the
        // stream; `name` is used only before either.
        let (name, d_type) = unsafe {
            (
                CStr::from_ptr((*entry).d_name.as_ptr()).to_bytes(),
                (*entry).d_type,
            )
        };
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

/// Closes the stream however the listing ends.
struct Open(*mut libc::DIR);

impl Drop for Open {
    fn drop(&mut self) {
        // SAFETY: the stream was opened by `opendir` and is closed exactly once, here.
        unsafe { libc::closedir(self.0) };
    }
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
