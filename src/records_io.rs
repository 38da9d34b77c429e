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
/// and an unlink when the target exists, see [`replace`]). For a file rewritten many times
/// (a run's records) use [`KeptTemps::write`], which also saves the create and the unlink.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = fresh_temp_name(path);
    let result = (|| {
        drop(write_fresh(&tmp, bytes, mode)?);
        if replace(&tmp, path)? {
            // The old content is under the temporary name now; a failure here only leaves a
            // stale temporary file, never a wrong `path`.
            let _ = std::fs::remove_file(&tmp);
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `.<name>.<pid>.<n>.tmp` beside `path`, never used before by this process.
fn fresh_temp_name(path: &Path) -> std::path::PathBuf {
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
    dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

/// Creates (or, for a stale file of a crashed process with the same pid, truncates) `tmp` and
/// writes `bytes` to it. Truncating an existing file to zero makes ext4 flush it on close
/// (`auto_da_alloc`), but that only happens for a stale name, never on the common path.
fn write_fresh(tmp: &Path, bytes: &[u8], mode: u32) -> std::io::Result<std::fs::File> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)?;
    file.write_all(bytes)?;
    Ok(file)
}

/// A folder held open (`O_PATH`), so that the system calls on files in it name them relative
/// to it: the kernel walks one or two path components instead of the ~8 of a run folder's
/// absolute path, for each of the dozen calls a step makes on its records. Paths outside the
/// folder are used as they are.
pub struct Folder {
    path: std::path::PathBuf,
    fd: std::os::fd::OwnedFd,
}

/// What [`Folder::stat`] tells of a file (the fields the callers compare).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl FileStat {
    /// The modification time.
    pub fn modified(&self) -> Option<std::time::SystemTime> {
        let (secs, nanos) = self.mtime;
        let secs = u64::try_from(secs).ok()?;
        let nanos = u32::try_from(nanos).ok()?;
        std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(secs, nanos))
    }
}

impl Folder {
    pub fn open(path: &Path) -> std::io::Result<Folder> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(path)?;
        Ok(Folder {
            path: path.to_path_buf(),
            fd: file.into(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `renameat2(from, to, RENAME_EXCHANGE)`: whether the two were swapped.
    fn exchange(&self, from: &Path, to: &Path) -> bool {
        let (Ok((from_fd, from)), Ok((to_fd, to))) = (at(Some(self), from), at(Some(self), to))
        else {
            return false;
        };
        // SAFETY: both names are valid NUL-terminated paths that outlive the call.
        unsafe {
            libc::renameat2(
                from_fd,
                from.as_ptr(),
                to_fd,
                to.as_ptr(),
                libc::RENAME_EXCHANGE,
            ) == 0
        }
    }
}

/// The descriptor and name to give an `*at` call for `path`: relative to `folder` when
/// `path` is inside it, else `path` itself (`AT_FDCWD`), as without a folder.
fn at(
    folder: Option<&Folder>,
    path: &Path,
) -> std::io::Result<(std::os::fd::RawFd, std::ffi::CString)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;
    let full = path.as_os_str().as_bytes();
    // Compared as bytes, not by `Path::strip_prefix` (which parses both paths component by
    // component, more instructions than the kernel's walk that this saves): the kernel
    // resolves `<folder>/<rest>` as `<rest>` from the folder, whatever `<rest>` holds.
    let inside = folder.and_then(|folder| {
        let own = folder.path.as_os_str().as_bytes();
        full.strip_prefix(own)
            .filter(|rest| own.ends_with(b"/") || rest.starts_with(b"/"))
            .map(|rest| &rest[rest.iter().take_while(|&&b| b == b'/').count()..])
            .filter(|rest| !rest.is_empty() && !own.is_empty())
            .map(|rest| (folder.fd.as_raw_fd(), rest))
    });
    let (fd, name) = inside.unwrap_or((libc::AT_FDCWD, full));
    let name = std::ffi::CString::new(name)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    Ok((fd, name))
}

/// `stat` (following symbolic links) or `lstat` (`follow` false) of `path`, relative to
/// `folder` when it is in it.
pub fn stat_in(folder: Option<&Folder>, path: &Path, follow: bool) -> std::io::Result<FileStat> {
    let (fd, name) = at(folder, path)?;
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is a NUL-terminated path alive for the call; fstatat fills `st`, which
    // is read only when it succeeded.
    let st = unsafe {
        if libc::fstatat(fd, name.as_ptr(), st.as_mut_ptr(), flags) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        st.assume_init()
    };
    Ok(FileStat {
        dev: st.st_dev,
        ino: st.st_ino,
        len: st.st_size as u64,
        mtime: (st.st_mtime, st.st_mtime_nsec),
        ctime: (st.st_ctime, st.st_ctime_nsec),
    })
}

/// Opens `path` (relative to `folder` when it is in it) with `open(2)` `flags` (close-on-exec
/// added) and `mode`.
pub fn open_in(
    folder: Option<&Folder>,
    path: &Path,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let (fd, name) = at(folder, path)?;
    // SAFETY: `name` is a NUL-terminated path alive for the call; the descriptor returned is
    // new and owned by the `File` made of it.
    unsafe {
        let file = libc::openat(
            fd,
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        );
        if file < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(std::fs::File::from_raw_fd(file))
    }
}

/// Opens a record to read (`state.json`, `progress.json`, `events.ndjson`, a log, a lock),
/// never blocking and never endless: a FIFO put in its place would make `open` wait for a
/// writer and then a read wait forever, and a device (a symlink to `/dev/zero`) would never
/// end. The open does not wait (`O_NONBLOCK`), and anything but a regular file (followed
/// through symbolic links) is an error that says what it is, of kind `InvalidData`.
pub fn open_record(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    ensure_file(&file)?;
    // Reads of a regular file never wait anyway; cleared so that the file behaves as one
    // opened plainly wherever it is passed on.
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor this `File` owns, with flags it returned.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(file)
}

/// An error unless `file` is a regular file: a record opened to append (a log, the events)
/// that is a FIFO would take writes until its buffer is full, then hold the run forever.
pub fn ensure_file(file: &std::fs::File) -> std::io::Result<()> {
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        Ok(())
    } else {
        Err(not_a_file(kind))
    }
}

/// The whole of a record read with [`open_record`].
pub fn read_record(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = open_record(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The error for a record that is not a regular file: what it is instead.
pub fn not_a_file(kind: std::fs::FileType) -> std::io::Error {
    use std::os::unix::fs::FileTypeExt;
    let what = if kind.is_fifo() {
        "a named pipe (FIFO)"
    } else if kind.is_dir() {
        "a folder"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "something else"
    };
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("it is {what}, not a regular file"),
    )
}

/// Ends a file opened to append (and to read) with a newline when it does not end with one:
/// a killed run can leave a write cut short, and what a resumed run appends must start a
/// line of its own rather than be glued to the torn one. Files that hold whole lines:
/// `events.ndjson`, step logs.
pub fn end_torn_line(file: &mut std::fs::File) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    let mut last = [0u8; 1];
    if len > 0 && file.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n' {
        file.write_all(b"\n")?;
    }
    Ok(())
}

/// Temporary files kept between atomic rewrites of the same targets (a run's `state.json` and
/// `progress.json`, rewritten a few times per step). After a swap ([`replace`]) the old
/// content sits under the temporary name; instead of unlinking it and creating a new file for
/// the next write (an inode freed and one allocated, the largest part of a step's kernel
/// time on ext4), the next write of the same target overwrites that file in place and swaps
/// it in again.
///
/// Why this keeps the guarantee of the module (a reader, or a `kill -9`, sees the whole old or
/// the whole new content):
/// - The file written in place is only ever reachable under its temporary name, never under
///   the target's name: the swap exchanges the two names atomically. A crash while it is being
///   written leaves the target as it was, plus a hidden stale file.
/// - A reader may have opened the target *before* the swap that moved it under the temporary
///   name, and still be reading it. Before each reuse a write lease is taken on it
///   (`F_SETLEASE`), which the kernel grants only when no one else has the file open; if anyone
///   does, that file is left to the reader (unlinked, the reader keeps its content) and a new
///   one is created. Where leases are unavailable (other owner, file system without them),
///   the same fallback.
/// - The new bytes go at offset 0 and the file is then cut to their length (`ftruncate`) when
///   it was longer. It is never truncated to zero first: ext4 would flush its data on close,
///   the cost the swap exists to avoid.
/// - Names stay unique per process and per concurrent writer: a temporary file is taken out of
///   the set while a writer uses it, so two threads writing the same target use two files.
///   Nothing found on disk is trusted: only names this process created are reused; a stale
///   temporary of a crashed process is never read, at most overwritten whole.
///
/// The first swap of a target in this process moves out a file someone else wrote (an earlier
/// process, before a `resume`): that one is removed as before, so every file kept was created
/// by this process, with the mode asked for.
///
/// The kept files are hidden (`.<name>.<pid>.<n>.tmp`) and removed when this is dropped (the
/// end of the run in this process); a `kill -9` may leave them behind, as it could any
/// temporary file before. Nothing lists or reads them.
#[derive(Default)]
pub struct KeptTemps {
    /// (target, temporary file holding an old version of it, that file held open) triples
    /// not in use by a writer.
    free: std::sync::Mutex<Vec<(std::path::PathBuf, std::path::PathBuf, Option<Held>)>>,
    /// Targets this process has written through here: their current file is one of ours,
    /// held open so that, once swapped out under a temporary name, it is rewritten without
    /// being looked up and opened again.
    written: std::sync::Mutex<Vec<(std::path::PathBuf, Option<Held>)>>,
    /// The folder of the targets, when known: the checks and swaps name files relative to it.
    folder: Option<Folder>,
}

/// A file this process wrote, kept open (write-only, `F_SETSIG` already set), with what
/// identifies it (device, inode) and the length of what was written to it. Before it is
/// rewritten, the temporary name is checked to still lead to this very file (one `stat`
/// instead of an open, a stat of the open file and a close): should anything have moved
/// it, it is opened by name as before.
struct Held {
    file: std::fs::File,
    id: (u64, u64),
    len: u64,
}

impl Held {
    fn new(file: std::fs::File, len: u64) -> std::io::Result<Held> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        Ok(Held {
            file,
            id: (meta.dev(), meta.ino()),
            len,
        })
    }

    /// Whether `path` leads to this file now.
    fn is_at(&self, path: &Path, folder: Option<&Folder>) -> bool {
        stat_in(folder, path, false).is_ok_and(|m| (m.dev, m.ino) == self.id)
    }
}

impl KeptTemps {
    /// Kept temporaries for targets in `folder` (others work too, by their whole path).
    pub fn in_folder(folder: Folder) -> KeptTemps {
        KeptTemps {
            free: Default::default(),
            written: Default::default(),
            folder: Some(folder),
        }
    }

    /// The folder given to [`KeptTemps::in_folder`].
    pub fn folder(&self) -> Option<&Folder> {
        self.folder.as_ref()
    }

    /// Writes `bytes` to `path` atomically, like [`write_atomic`], reusing a kept temporary.
    pub fn write(&self, path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
        let kept = {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            free.iter()
                .rposition(|(target, _, _)| target == path)
                .map(|i| free.swap_remove(i))
                .map(|(_, tmp, held)| (tmp, held))
        };
        let (tmp, held) = match kept {
            Some((tmp, held)) => match rewrite_unshared(&tmp, held, bytes, self.folder.as_ref()) {
                Ok(Some(held)) => (tmp, held),
                // Someone has it open, or it cannot be reused: leave it, start a new one.
                Ok(None) | Err(_) => {
                    let _ = std::fs::remove_file(&tmp);
                    self.write_new(path, bytes, mode)?
                }
            },
            None => self.write_new(path, bytes, mode)?,
        };
        let replaced = match &self.folder {
            Some(folder) if folder.exchange(&tmp, path) => Ok(true),
            _ => replace(&tmp, path),
        };
        match replaced {
            Ok(true) => {
                // The file now under the temporary name is the one that was at `path`: ours
                // (and held open) if this process put it there.
                let previous = {
                    let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
                    match written.iter_mut().find(|(w, _)| w == path) {
                        Some((_, current)) => Some(current.replace(held)),
                        None => {
                            written.push((path.to_path_buf(), Some(held)));
                            None
                        }
                    }
                };
                match previous {
                    Some(old) => {
                        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
                        free.push((path.to_path_buf(), tmp, old));
                    }
                    None => {
                        let _ = std::fs::remove_file(&tmp);
                    }
                }
                Ok(())
            }
            Ok(false) => {
                let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
                match written.iter_mut().find(|(w, _)| w == path) {
                    Some((_, current)) => *current = Some(held),
                    None => written.push((path.to_path_buf(), Some(held))),
                }
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn write_new(
        &self,
        path: &Path,
        bytes: &[u8],
        mode: u32,
    ) -> std::io::Result<(std::path::PathBuf, Held)> {
        let tmp = fresh_temp_name(path);
        let held = write_fresh(&tmp, bytes, mode)
            .and_then(|file| {
                set_lease_signal(&file);
                Held::new(file, bytes.len() as u64)
            })
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })?;
        Ok((tmp, held))
    }
}

impl Drop for KeptTemps {
    fn drop(&mut self) {
        let free = self.free.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, tmp, _) in free.drain(..) {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// `fcntl(F_SETSIG)` (Linux, `<fcntl.h>` with `_GNU_SOURCE`; the libc crate does not export it).
const F_SETSIG: libc::c_int = 10;

/// A lease break is signalled to the holder (SIGIO by default, which would end the process)
/// when someone opens the file while the lease is held; SIGURG is ignored by default. The
/// lease is held for two system calls only, and only the temporary name leads to the file,
/// but a stray `cat` of it must not kill a run. Set once per open file.
fn set_lease_signal(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain fcntl call on a file descriptor owned by `file`.
    unsafe { libc::fcntl(file.as_raw_fd(), F_SETSIG, libc::SIGURG) == 0 }
}

/// Whether no one but us has `file` open: a write lease is granted only then (and at once
/// given back). The lease is only that check; anyone opening the file from then on does so
/// by the temporary name, which no reader uses.
fn unshared(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: plain fcntl calls on a file descriptor owned by `file`.
    unsafe {
        if libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) != 0 {
            return false;
        }
        libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK);
    }
    true
}

/// Overwrites the kept temporary `tmp` with `bytes` in place, if no one else has it open:
/// through `held` when `tmp` still leads to that file, else opened by name. `Ok(None)`:
/// someone has it open (or leases are unavailable); the file was not changed.
fn rewrite_unshared(
    tmp: &Path,
    held: Option<Held>,
    bytes: &[u8],
    folder: Option<&Folder>,
) -> std::io::Result<Option<Held>> {
    use std::os::unix::fs::FileExt;
    if let Some(mut held) = held.filter(|h| h.is_at(tmp, folder)) {
        if !unshared(&held.file) {
            return Ok(None);
        }
        held.file.write_all_at(bytes, 0)?;
        if (bytes.len() as u64) < held.len {
            held.file.set_len(bytes.len() as u64)?;
        }
        held.len = bytes.len() as u64;
        return Ok(Some(held));
    }
    // No O_CREAT: the file must be the one this process left there.
    let file = std::fs::OpenOptions::new().write(true).open(tmp)?;
    if !(set_lease_signal(&file) && unshared(&file)) {
        return Ok(None);
    }
    overwrite_in_place(&file, bytes)?;
    Held::new(file, bytes.len() as u64).map(Some)
}

/// Makes `file`'s content `bytes`: written at offset 0, then cut to length only when the old
/// content was longer. Never truncated to zero first (ext4 would flush the file on close,
/// `auto_da_alloc`), and no `ftruncate` when not needed (even to the same length it updates
/// and journals the inode; a stat of the open file does not). Not atomic for readers: for a
/// file only this process reads by that name (a kept temporary, the run lock).
pub fn overwrite_in_place(file: &std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let old_len = file.metadata()?.len();
    file.write_all_at(bytes, 0)?;
    if (bytes.len() as u64) < old_len {
        file.set_len(bytes.len() as u64)?;
    }
    Ok(())
}

/// Writes a step's script file: created in place when it does not exist yet (a fresh run, no
/// temporary file and rename needed: nothing reads it before the shell nixcmd starts next),
/// else replaced atomically (a resumed run, or a file left half-written by a crash).
pub fn write_script(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_script_in(None, path, bytes)
}

/// [`write_script`] of a file named relative to `folder` when it is in it.
pub fn write_script_in(folder: Option<&Folder>, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let created = open_in(
        folder,
        path,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
        0o600,
    );
    match created {
        // A short write (disk full) must not leave half a script for the shell to run.
        Ok(mut file) => file.write_all(bytes).inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        }),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => write_atomic(path, bytes, 0o600),
        Err(e) => Err(e),
    }
}

/// A step's script made ready before its turn, for a bash started ahead
/// (`process::prestart`): the script in a file beside its path (`held`, put in place when its
/// turn comes) and a pipe whose read end (`source`) the bash reads as its `BASH_ENV` start-up
/// file, waiting there until nixcmd writes its last lines into `feed` and closes it. Nothing
/// is at the script's path meanwhile: a reader of `scripts/` never meets the pipe.
pub struct ScriptAhead {
    pub held: std::path::PathBuf,
    /// The pipe's write end, non-blocking.
    pub feed: std::os::fd::OwnedFd,
    /// The pipe's read end, opened by the bash as `/proc/<nixcmd>/fd/<n>`: open until the
    /// step has ended (a bash slow to start opens it after its turn came).
    pub source: std::os::fd::OwnedFd,
}

/// `.<name>.ahead` beside `path`: the same name whenever the step's script is made ready,
/// so a file a killed run left there is reused, not piled up.
fn ahead_name(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.ahead"))
}

/// Makes [`ScriptAhead`] for `bytes` at `path` (relative to `folder` when in it). Whatever was
/// at `path` (a script of an earlier attempt or session) is removed: a bash whose nixcmd died
/// while it waited must find no script to run.
pub fn script_ahead_in(
    folder: Option<&Folder>,
    path: &Path,
    bytes: &[u8],
) -> std::io::Result<ScriptAhead> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let held = ahead_name(path);
    write_script_in(folder, &held, bytes)?;
    let ready = (|| {
        let (fd, name) = at(folder, path)?;
        // SAFETY: `name` is a NUL-terminated path alive for the call.
        if unsafe { libc::unlinkat(fd, name.as_ptr(), 0) } != 0
            && std::io::Error::last_os_error().kind() != std::io::ErrorKind::NotFound
        {
            return Err(std::io::Error::last_os_error());
        }
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both are fresh descriptors that nothing else owns.
        let (source, feed) = unsafe {
            (
                std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        };
        // SAFETY: F_SETFL on a descriptor we own.
        if unsafe { libc::fcntl(feed.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok((feed, source))
    })();
    match ready {
        Ok((feed, source)) => Ok(ScriptAhead { held, feed, source }),
        Err(e) => {
            let _ = std::fs::remove_file(&held);
            Err(e)
        }
    }
}

/// Puts the script of [`script_ahead_in`] (at `held`) at `path`. Nothing is there in the
/// common case: one rename that replaces nothing (a rename over an existing file would make
/// ext4 flush the script, see [`replace`]); should something be there after all, the two are
/// swapped and what was there is left under `held` (the caller removes that name).
pub fn place_script_in(folder: Option<&Folder>, held: &Path, path: &Path) -> std::io::Result<()> {
    let (from_fd, from) = at(folder, held)?;
    let (to_fd, to) = at(folder, path)?;
    let rename = |flags| {
        // SAFETY: both names are NUL-terminated paths alive for the call.
        unsafe { libc::renameat2(from_fd, from.as_ptr(), to_fd, to.as_ptr(), flags) == 0 }
    };
    if rename(libc::RENAME_NOREPLACE) || rename(libc::RENAME_EXCHANGE) {
        Ok(())
    } else {
        std::fs::rename(held, path)
    }
}

/// Puts `tmp` in place of `path`, atomically. When `path` exists the two are swapped
/// (`renameat2(RENAME_EXCHANGE)`) and the old content is left under the temporary name
/// (`Ok(true)`): ext4 (`auto_da_alloc`) flushes a file's data to disk on a plain rename *over*
/// an existing file, which costs 1–2 ms on a VM disk, three times per step. The swap is just
/// as atomic for anyone reading `path`, and durability across power loss is not the guarantee
/// here (see the module comment). Where the swap is not supported, or `path` does not exist
/// yet, a plain rename (`Ok(false)`: nothing is left under the temporary name).
fn replace(tmp: &Path, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(from), Ok(to)) = (
        std::ffi::CString::new(tmp.as_os_str().as_bytes()),
        std::ffi::CString::new(path.as_os_str().as_bytes()),
    ) else {
        return std::fs::rename(tmp, path).map(|()| false);
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
        Ok(true)
    } else {
        std::fs::rename(tmp, path).map(|()| false)
    }
}

/// A log file whose formatted writes (`writeln!`) reach the file in one `write(2)` each, so a
/// line is never split by a crash: `File` alone issues one write per formatted piece (nine for
/// a step's header line). It keeps the first write error (a full disk, a file size limit):
/// callers write a read's worth of output and move on, and the engine asks
/// [`LogFile::take_error`] when the step ends, so that output missing from the records is
/// said, not lost in silence.
pub struct LogFile {
    file: std::fs::File,
    error: Option<std::io::Error>,
}

impl LogFile {
    pub fn new(file: std::fs::File) -> Self {
        LogFile { file, error: None }
    }

    /// The first write that failed since the last call, if any.
    pub fn take_error(&mut self) -> Option<std::io::Error> {
        self.error.take()
    }

    /// The file, for whoever closes it (its errors were taken or are dropped with it).
    pub fn into_file(self) -> std::fs::File {
        self.file
    }

    fn keep<T>(&mut self, result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &result
            && self.error.is_none()
        {
            self.error = Some(std::io::Error::new(e.kind(), e.to_string()));
        }
        result
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let result = self.file.write(buf);
        self.keep(result)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let result = self.file.flush();
        self.keep(result)
    }

    fn write_fmt(&mut self, args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
        let result = match args.as_str() {
            Some(text) => self.file.write_all(text.as_bytes()),
            None => self.file.write_all(args.to_string().as_bytes()),
        };
        self.keep(result)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

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
    fn kept_temps_are_reused_and_removed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.json");
        let files = || std::fs::read_dir(dir.path()).unwrap().count();
        let temps = super::KeptTemps::default();
        // Longer, shorter, longer again: the file written in place is cut to the new length.
        for text in [
            "first",
            "a longer second text",
            "3",
            "fourth, longest of them all",
            "5",
        ] {
            temps.write(&path, text.as_bytes(), 0o600).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            // The target and at most one kept temporary file.
            assert!(files() <= 2);
        }
        // One kept file is reused, not a new one per write.
        let kept: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".progress.json."))
            .collect();
        assert_eq!(kept.len(), 1);
        temps.write(&path, b"6", 0o600).unwrap();
        assert!(dir.path().join(&kept[0]).exists());
        drop(temps);
        assert_eq!(files(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "6");
    }

    /// The same through a folder held open: names in it are reached relative to it, names
    /// elsewhere by their whole path.
    #[test]
    fn kept_temps_in_a_folder_write_inside_and_outside_it() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let folder = super::Folder::open(dir.path()).unwrap();
        assert_eq!(folder.path(), dir.path());
        let temps = super::KeptTemps::in_folder(folder);
        let inside = dir.path().join("progress.json");
        let outside = other.path().join("state.json");
        for text in ["one", "a longer two", "3", "four"] {
            temps.write(&inside, text.as_bytes(), 0o600).unwrap();
            temps.write(&outside, text.as_bytes(), 0o600).unwrap();
            assert_eq!(std::fs::read_to_string(&inside).unwrap(), text);
            assert_eq!(std::fs::read_to_string(&outside).unwrap(), text);
            let mode = std::fs::metadata(&inside).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let folder = temps.folder().unwrap();
        let named = |p: &str| {
            let (fd, name) = super::at(Some(folder), Path::new(p)).unwrap();
            (fd == libc::AT_FDCWD, name.into_string().unwrap())
        };
        let own = dir.path().to_str().unwrap();
        assert_eq!(named(&format!("{own}/a.json")), (false, "a.json".into()));
        assert_eq!(
            named(&format!("{own}//logs/b.log")),
            (false, "logs/b.log".into())
        );
        assert_eq!(named(&format!("{own}x/c")), (true, format!("{own}x/c")));
        assert_eq!(named(own), (true, own.to_string()));
        assert_eq!(named("rel/d"), (true, "rel/d".into()));
        let stat = super::stat_in(Some(folder), &inside, false).unwrap();
        assert_eq!(stat.len, 4);
        assert_eq!(
            stat.modified(),
            std::fs::metadata(&inside).unwrap().modified().ok()
        );
        assert_eq!(super::stat_in(Some(folder), &outside, true).unwrap().len, 4);
        assert_eq!(super::stat_in(None, &inside, true).unwrap(), stat);
        assert!(super::stat_in(Some(folder), &dir.path().join("none"), true).is_err());
        let script = dir.path().join("step.sh");
        super::write_script_in(Some(folder), &script, b"echo 1\n").unwrap();
        super::write_script_in(Some(folder), &script, b"echo 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&script).unwrap(), "echo 2\n");
        drop(temps);
        // The target and the script; no temporary left.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 1);
    }

    #[test]
    fn overwriting_in_place_leaves_exactly_the_new_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .unwrap();
        for text in [
            "a longer first line (pid 123456)\n",
            "short\n",
            "short\n",
            "longer again\n",
        ] {
            super::overwrite_in_place(&file, text.as_bytes()).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
    }

    #[test]
    fn a_reader_of_an_old_version_keeps_it_whole() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let temps = super::KeptTemps::default();
        temps.write(&path, b"one", 0o600).unwrap();
        temps.write(&path, b"two", 0o600).unwrap();
        // A reader opens the current version, then the writer goes on: the file the reader
        // holds moves under the temporary name and must not be overwritten while it is open.
        let mut reader = std::fs::File::open(&path).unwrap();
        for text in ["three", "four", "five"] {
            temps.write(&path, text.as_bytes(), 0o600).unwrap();
        }
        let mut seen = String::new();
        reader.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "two");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "five");
        drop(reader);
        drop(temps);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_kept_temporary_replaced_behind_our_back_is_not_written_through_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("progress.json");
        let temps = super::KeptTemps::default();
        temps.write(&path, b"one", 0o600).unwrap();
        temps.write(&path, b"two", 0o600).unwrap();
        // The kept temporary (held open) is replaced by another file under the same name.
        let kept = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p != &path)
            .unwrap();
        std::fs::remove_file(&kept).unwrap();
        std::fs::write(&kept, "somebody else's").unwrap();
        // Written through the name, not through the held (now unlinked) file.
        for text in ["three", "four", "five"] {
            temps.write(&path, text.as_bytes(), 0o600).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        }
        drop(temps);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_file_left_by_another_process_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "written by an earlier process").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let temps = super::KeptTemps::default();
        for text in ["one", "two", "three"] {
            temps.write(&path, text.as_bytes(), 0o600).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "after writing {text}");
        }
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

    /// A failed write is kept for the engine to report once the step ends, and given once.
    #[test]
    fn a_log_keeps_its_first_write_error() {
        use std::io::Write;
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let mut log = super::LogFile::new(full);
        assert!(log.take_error().is_none());
        assert!(writeln!(log, "line {}", 1).is_err());
        assert!(log.write_all(b"more\n").is_err());
        let e = log.take_error().expect("the error is kept");
        assert_eq!(e.kind(), std::io::ErrorKind::StorageFull);
        assert!(log.take_error().is_none(), "given once");
    }

    #[test]
    fn log_lines_are_written_whole() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("step.log");
        let mut log = super::LogFile::new(std::fs::File::create(&path).unwrap());
        let step = "step-1";
        writeln!(log, "── {step} attempt {}/{} ──", 1, 2).unwrap();
        writeln!(log, "plain").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "── step-1 attempt 1/2 ──\nplain\n"
        );
    }
}
