//! Where commands come from (DESIGN.md §4): `--commands-dir`/`NIXCMD_COMMANDS_DIR`, the
//! project's `.nixcmd/commands/`, its `.claude/commands/`, the user's
//! `$XDG_CONFIG_HOME/nixcmd/commands/`, then the built-ins compiled from `commands/`. First
//! match wins; later ones are reported as shadowed. Also reads command files from disk with
//! the size limit applied before reading, so a huge file is refused without loading it.

use crate::command::{Command, Origin};
use crate::diagnostic::Diagnostic;
use crate::dir_listing::Kind;
use crate::exit::{Exit, Failure};
use crate::parser;
use crate::source::SourceFile;
use std::io::Read as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// One command file found on the search path.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    pub origin: Origin,
    /// `None` for built-ins.
    pub path: Option<PathBuf>,
    /// The folder listing said it is a regular file (not a symlink): see [`read_listed`].
    pub regular: bool,
    /// The folder it was listed in, open: [`read_listed`] opens the file relative to it
    /// rather than walking the folder's path again for each file.
    pub dir: Option<Arc<OwnedFd>>,
}

/// Makes the [`Origin`] of a file found in one folder of the search path.
pub type OriginOf = fn(String) -> Origin;

/// The winners of a search (first of each name) and the shadowed files with the winner's origin.
pub type Resolved = (Vec<Found>, Vec<(Found, Origin)>);

/// The search path, resolved once per invocation.
#[derive(Debug, Clone)]
pub struct SearchPath {
    pub dirs: Vec<(PathBuf, OriginOf)>,
}

/// Markers of a project root, nearest ancestor of the working directory first.
const ROOT_MARKERS: &[&str] = &[".nixcmd", ".claude", "nixcmd.toml", "flake.nix", ".git"];

/// The project root: the nearest ancestor of `cwd` holding one of [`ROOT_MARKERS`], else `cwd`.
pub fn project_root(cwd: &Path) -> PathBuf {
    cwd.ancestors()
        .find(|dir| ROOT_MARKERS.iter().any(|m| dir.join(m).exists()))
        .unwrap_or(cwd)
        .to_path_buf()
}

/// `$XDG_CONFIG_HOME`, else `~/.config`.
pub fn config_home() -> Option<PathBuf> {
    xdg_home("XDG_CONFIG_HOME", ".config")
}

/// An XDG base directory: `$VAR` when it is an absolute path, else `$HOME/DEFAULT` (`None`
/// without a `HOME`). The XDG Base Directory spec has a relative path ignored, as an empty
/// one is: taken as it was, `XDG_STATE_HOME=relst` put every run's scripts at a path that
/// only meant something in nixcmd's own working folder, and every step failed to start.
pub fn xdg_home(var: &str, default: &str) -> Option<PathBuf> {
    xdg_home_of(std::env::var_os(var), std::env::var_os("HOME"), default)
}

fn xdg_home_of(
    value: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
    default: &str,
) -> Option<PathBuf> {
    value
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| PathBuf::from(h).join(default)))
}

impl SearchPath {
    pub fn new(commands_dir: Option<&Path>, cwd: &Path) -> Self {
        let mut dirs: Vec<(PathBuf, OriginOf)> = Vec::new();
        if let Some(dir) = commands_dir {
            dirs.push((dir.to_path_buf(), |path| Origin::CommandsDir { path }));
        }
        let root = project_root(cwd);
        dirs.push((root.join(".nixcmd/commands"), |path| Origin::Project {
            path,
        }));
        dirs.push((root.join(".claude/commands"), |path| Origin::Claude {
            path,
        }));
        if let Some(config) = config_home() {
            dirs.push((config.join("nixcmd/commands"), |path| Origin::User { path }));
        }
        SearchPath { dirs }
    }

    /// The folder `--commands-dir` (or `NIXCMD_COMMANDS_DIR`) named, first on the path.
    pub fn commands_dir(&self) -> Option<&Path> {
        self.dirs
            .first()
            .filter(|(_, origin)| matches!(origin(String::new()), Origin::CommandsDir { .. }))
            .map(|(dir, _)| dir.as_path())
    }

    /// Every command file on the path, in search order (shadowed ones included).
    pub fn all(&self) -> Result<Vec<Found>, Failure> {
        // Each folder's files, in the order of the path.
        let mut folders: Vec<Vec<Found>> = Vec::new();
        let mut last = usize::MAX;
        self.each_found(crate::dir_listing::WHOLE, |folder, found| {
            if folder != last {
                last = folder;
                folders.push(Vec::new());
            }
            if let Some(here) = folders.last_mut() {
                here.push(found);
            }
        })?;
        let mut found = Vec::new();
        for here in folders {
            let here = sorted_by_name(here);
            if found.is_empty() {
                // The usual case, one folder with files: no copy of its entries.
                found = here;
            } else {
                found.extend(here);
            }
        }
        found.reserve_exact(BUILTINS.len());
        found.extend(builtins());
        Ok(found)
    }

    /// Calls `sink` with every command file of the path's folders, with the position of its
    /// folder on the path, in the order each folder lists them (not sorted), as soon as the
    /// folder's listing gives them: `list` reads the first files of a large folder while the
    /// rest is listed. The folders are listed `chunk` bytes of entries at a time
    /// ([`crate::dir_listing::entries`]). The built-ins are not included ([`builtins`]).
    pub fn each_found(&self, chunk: usize, sink: impl FnMut(usize, Found)) -> Result<(), Failure> {
        self.each_found_in(&self.open_folders(), chunk, sink)
    }

    /// The path's folders, open (or why not), in its order: for [`each_found_in`], and for
    /// threads that must have them in a file table of their own (see `list`).
    ///
    /// [`each_found_in`]: Self::each_found_in
    pub fn open_folders(&self) -> Vec<std::io::Result<Arc<OwnedFd>>> {
        self.dirs
            .iter()
            .map(|(dir, _)| crate::dir_listing::open_folder(dir).map(Arc::new))
            .collect()
    }

    /// [`each_found`](Self::each_found) with the folders of [`open_folders`](Self::open_folders).
    pub fn each_found_in(
        &self,
        folders: &[std::io::Result<Arc<OwnedFd>>],
        chunk: usize,
        mut sink: impl FnMut(usize, Found),
    ) -> Result<(), Failure> {
        for (position, ((dir, origin), folder)) in self.dirs.iter().zip(folders).enumerate() {
            // The folder's path once, as bytes: each entry's path is it plus the name.
            let dir_bytes = dir.as_os_str().as_bytes();
            let sep = usize::from(!dir_bytes.is_empty() && !dir_bytes.ends_with(b"/"));
            let dir_is_utf8 = dir.to_str().is_some();
            let claude = matches!(origin(String::new()), Origin::Claude { .. });
            let listed = match folder {
                Ok(folder) => crate::dir_listing::entries(folder, chunk, |file_name, kind| {
                    let Some(name) = file_name.strip_suffix(b".md") else {
                        return;
                    };
                    let Ok(name) = std::str::from_utf8(name) else {
                        return;
                    };
                    if name.starts_with('.') || name.is_empty() || kind == Kind::Dir {
                        return;
                    }
                    // `dir.join(file_name)`, without `Path::join`'s component walk.
                    let mut bytes = Vec::with_capacity(dir_bytes.len() + sep + file_name.len());
                    bytes.extend_from_slice(dir_bytes);
                    bytes.extend_from_slice(&b"/"[..sep]);
                    bytes.extend_from_slice(file_name);
                    // Shown as is when it is UTF-8 (the folder is, and so is the name).
                    let shown = match dir_is_utf8 {
                        true => String::from_utf8(bytes.clone()).ok(),
                        false => None,
                    };
                    let path = PathBuf::from(std::ffi::OsString::from_vec(bytes));
                    // Only a symlink (or an untyped entry) needs a `stat` to tell whether it
                    // points at a folder: a thousand files, a thousand system calls saved.
                    if kind == Kind::Other && path.is_dir() {
                        return;
                    }
                    // `nixcmd claude export` writes thin wrappers into .claude/commands; they
                    // call the runbook and must not shadow it.
                    if claude && crate::claude_export::is_wrapper(&path) {
                        return;
                    }
                    let shown = shown.unwrap_or_else(|| path.display().to_string());
                    sink(
                        position,
                        Found {
                            name: name.to_string(),
                            origin: origin(shown),
                            path: Some(path),
                            regular: kind == Kind::File,
                            dir: Some(Arc::clone(folder)),
                        },
                    );
                }),
                // The error as it was (it is reported once, here).
                Err(e) => Err(match e.raw_os_error() {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::new(e.kind(), e.to_string()),
                }),
            };
            match listed {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // Not skipped: a runbook in it could shadow one found later, and `run` would
                // start another runbook than the one meant (README, "Decisions").
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                    let hint = if matches!(origin(String::new()), Origin::CommandsDir { .. }) {
                        "give `--commands-dir` (or NIXCMD_COMMANDS_DIR) a folder of runbooks"
                    } else {
                        "nixcmd looks for runbooks there: rename or remove the file"
                    };
                    return Err(Failure::usage(format!("{} is not a folder", dir.display()))
                        .with_hint(hint));
                }
                Err(e) => {
                    return Err(Failure::usage(format!(
                        "cannot read {}: {e}",
                        dir.display()
                    ))
                    .with_hint(format!(
                        "nixcmd looks for runbooks in it and will not guess past it: make it readable (`chmod u+rx {}`, or fix its owner) or move it away",
                        dir.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether a folder of the path holds more than a block of entries (a few hundred
    /// files on ext4, fewer on tmpfs or btrfs, whose folder sizes count names): `list` then
    /// starts its reading threads before the search. Only a hint; a wrong guess costs
    /// little either way.
    pub fn looks_large(&self) -> bool {
        self.dirs
            .iter()
            .any(|(dir, _)| std::fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.len() > 4096))
    }

    /// The winners (first of each name) and the shadowed ones with the winner's origin.
    pub fn resolve(&self) -> Result<Resolved, Failure> {
        let all = self.all()?;
        // Positions sorted by name, search order kept among equal names (a stable sort of runs
        // that are each sorted already): the first of each name is the winner. No map of
        // names, the winners come out in name order, and only 4-byte positions move.
        let mut order: Vec<u32> = (0..all.len() as u32).collect();
        order.sort_by(|&a, &b| all[a as usize].name.cmp(&all[b as usize].name));
        // (shadowed, winner) positions.
        let mut losers: Vec<(u32, u32)> = Vec::new();
        let mut last: Option<u32> = None;
        let mut winner_order = Vec::with_capacity(order.len());
        for &i in &order {
            match last {
                Some(w) if all[w as usize].name == all[i as usize].name => losers.push((i, w)),
                _ => {
                    last = Some(i);
                    winner_order.push(i);
                }
            }
        }
        // Shadowed files are reported in search order.
        losers.sort_unstable();
        let shadowed_by: Vec<Origin> = losers
            .iter()
            .map(|&(_, w)| all[w as usize].origin.clone())
            .collect();
        // `Option<Found>` has the size of `Found`: this reuses the vector, no copy.
        let mut slots: Vec<Option<Found>> = all.into_iter().map(Some).collect();
        let mut take = |i: u32| slots[i as usize].take().expect("each position taken once");
        let winners = winner_order.into_iter().map(&mut take).collect();
        let shadowed = losers
            .into_iter()
            .zip(shadowed_by)
            .map(|((i, _), by)| (take(i), by))
            .collect();
        Ok((winners, shadowed))
    }

    /// Finds a command by name, with "did you mean" when it does not exist; a name that was
    /// clearly meant as a path (`./x.md`, `docs/x`) that is not a command gets what is wrong
    /// with that path instead.
    pub fn find(&self, name: &str) -> Result<Found, Failure> {
        self.find_command(name, true)
    }

    /// [`SearchPath::find`] for a caller that may only name commands (the MCP tools): a name
    /// is never looked at as a path. Saying what is wrong with a path would tell a model
    /// which files exist anywhere the server can see.
    pub fn find_by_name(&self, name: &str) -> Result<Found, Failure> {
        self.find_command(name, false)
    }

    fn find_command(&self, name: &str, paths: bool) -> Result<Found, Failure> {
        let raw = name;
        let given = name.strip_prefix('/').unwrap_or(name);
        let name = given.strip_suffix(".md").unwrap_or(given);
        if name.is_empty() {
            return Err(Failure::usage("no command name").with_hint(
                "name one, e.g. `nixcmd /flake-update`; `nixcmd list` shows every command",
            ));
        }
        let (winners, _) = self.resolve()?;
        // The name as given first: `notes.md.md` is listed as `notes.md`, which must find it.
        if let Some(f) = (winners.iter().find(|f| f.name == given))
            .or_else(|| winners.iter().find(|f| f.name == name))
        {
            return Ok(f.clone());
        }
        if let Some(failure) = paths.then(|| path_failure(raw)).flatten() {
            return Err(failure);
        }
        let mut failure = Failure::usage(format!("unknown command `{name}`"));
        failure = match crate::suggest::closest(name, winners.iter().map(|f| f.name.as_str())) {
            Some(s) => failure.with_hint(format!(
                "did you mean `{s}`? (`nixcmd list` shows every command)"
            )),
            None => failure.with_hint("`nixcmd list` shows every command"),
        };
        Err(failure)
    }
}

/// When a name that is not a command was clearly meant as a path (`./x.md`, `docs/x`, `x.md`),
/// says what is wrong with that path instead of "unknown command".
fn path_failure(raw: &str) -> Option<Failure> {
    let inner = raw.strip_prefix('/').unwrap_or(raw);
    if !(inner.contains('/') || raw.ends_with(".md")) {
        return None;
    }
    let path = Path::new(raw);
    let diagnostic = match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => read_limited(path).err()?,
        Ok(_) => return None,
        Err(e) => io_diagnostic(path, &e),
    };
    let failure = Failure::new(Exit::Usage, diagnostic.message);
    Some(match diagnostic.hint {
        Some(h) => failure.with_hint(h),
        None => failure,
    })
}

/// A command read and parsed, with the text kept for diagnostics.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: SourceFile,
    pub command: Command,
}

/// Why a file could not be read as a command at all.
#[derive(Debug)]
pub struct Unreadable {
    pub name: String,
    pub diagnostic: Diagnostic,
    /// The text read up to the problem, for rendering the line.
    pub file: Option<SourceFile>,
}

/// Loads a found command (from disk or the built-ins).
// `Unreadable` carries the text read so far for rendering; it is built once per bad file.
#[allow(clippy::result_large_err)]
pub fn load(found: &Found) -> Result<Loaded, Unreadable> {
    load_with(found, parser::Depth::Full)
}

/// [`load`] at a given depth (`Summary` for `list`).
#[allow(clippy::result_large_err)]
pub fn load_with(found: &Found, depth: parser::Depth) -> Result<Loaded, Unreadable> {
    match &found.path {
        Some(path) => load_path_with(path, &found.name, found.origin.clone(), depth),
        None => {
            let text = BUILTINS
                .iter()
                .find(|(n, _)| *n == found.name)
                .map(|(_, t)| *t)
                .unwrap_or_default();
            let file = SourceFile::new(format!("builtin:{}", found.name), text);
            let command = parser::parse_with(&file, &found.name, Origin::Builtin, depth);
            Ok(Loaded { file, command })
        }
    }
}

/// Reads and parses a file. The display name is the path as given.
#[allow(clippy::result_large_err)]
pub fn load_path(path: &Path, name: &str, origin: Origin) -> Result<Loaded, Unreadable> {
    load_path_with(path, name, origin, parser::Depth::Full)
}

/// [`load_path`] at a given depth.
#[allow(clippy::result_large_err)]
pub fn load_path_with(
    path: &Path,
    name: &str,
    origin: Origin,
    depth: parser::Depth,
) -> Result<Loaded, Unreadable> {
    let shown = shown(path);
    let unreadable = |d: Diagnostic| Unreadable {
        name: shown.clone(),
        diagnostic: d,
        file: None,
    };
    let bytes = read_limited(path).map_err(unreadable)?;
    match parser::decode_owned(&shown, bytes) {
        Ok(file) => {
            let command = parser::parse_with(&file, name, origin, depth);
            Ok(Loaded { file, command })
        }
        Err((d, bytes)) => {
            let partial = String::from_utf8_lossy(&bytes[..bytes.len().min(1 << 20)]).into_owned();
            Err(Unreadable {
                name: shown.clone(),
                diagnostic: d,
                file: Some(SourceFile::new(shown, partial)),
            })
        }
    }
}

/// The built-ins as search results, last on the path.
pub fn builtins() -> impl Iterator<Item = Found> {
    BUILTINS.iter().map(|(name, _)| Found {
        name: (*name).to_string(),
        origin: Origin::Builtin,
        path: None,
        regular: false,
        dir: None,
    })
}

/// One folder's files in name order. Names in one folder are unique (file names are): no
/// stable sort needed. Sorted as (first eight bytes as one integer, position) pairs: most
/// comparisons are settled by the integers, without a call to `memcmp`, and only 16-byte
/// keys move. The order is the names' byte order all the same.
fn sorted_by_name(here: Vec<Found>) -> Vec<Found> {
    let mut keys: Vec<(u64, u32)> = here
        .iter()
        .enumerate()
        .map(|(i, f)| (name_prefix(&f.name), i as u32))
        .collect();
    keys.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then_with(|| here[a.1 as usize].name.cmp(&here[b.1 as usize].name))
    });
    // `Option<Found>` has the size of `Found`: this reuses the vector.
    let mut slots: Vec<Option<Found>> = here.into_iter().map(Some).collect();
    keys.iter()
        .map(|&(_, i)| slots[i as usize].take().expect("each position taken once"))
        .collect()
}

/// The first eight bytes of a name, zero-padded, as a big-endian integer: integers compare as
/// the bytes do, and a name (no NUL bytes) that is a prefix of another sorts first either way.
pub(crate) fn name_prefix(name: &str) -> u64 {
    let bytes = name.as_bytes();
    match bytes.first_chunk::<8>() {
        Some(first) => u64::from_be_bytes(*first),
        None => bytes
            .iter()
            .enumerate()
            .fold(0, |key, (i, &b)| key | u64::from(b) << (56 - 8 * i)),
    }
}

/// `path.display().to_string()`, without the lossy conversion's scan for the (common)
/// UTF-8 path: `list` shows a thousand of them.
fn shown(path: &Path) -> String {
    match path.to_str() {
        Some(s) => s.to_string(),
        None => path.display().to_string(),
    }
}

/// Reads at most [`parser::MAX_FILE_BYTES`] + 1 bytes, with errors for people.
fn read_limited(path: &Path) -> Result<Vec<u8>, Diagnostic> {
    // Opened first and asked for its metadata through the handle: one path lookup, not two.
    // Without waiting: opening a named pipe for reading otherwise blocks until something
    // opens it for writing, and a `.md` pipe in a commands folder hung `list` for good.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| io_diagnostic(path, &e))?;
    let meta = file.metadata().map_err(|e| io_diagnostic(path, &e))?;
    if !meta.is_file() {
        // A pipe is read as usual from here: to its end, which a pipe nobody writes to has
        // at once (`nixcmd check <(…)` still waits for the command's text).
        // SAFETY: F_GETFL/F_SETFL only read and change the flags of a descriptor we own.
        unsafe {
            let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
    }
    if meta.is_dir() {
        return Err(Diagnostic::fatal(
            "file",
            format!("{} is a folder, not a command file", path.display()),
        )
        .with_hint(
            "give the path of a `.md` file, or use `check FOLDER` to check every file in it",
        ));
    }
    if meta.len() > parser::MAX_FILE_BYTES as u64 {
        // Refused before reading, with the real size (a read stops at the limit).
        return Err(parser::too_large(meta.len()));
    }
    // A regular file is read up to the size it has now, into a buffer of that size: one
    // `read` (no regrowing, no extra call to see the end). Anything else (a pipe, a /proc
    // file reporting size 0) is read to its end, up to the limit.
    let limit = if meta.is_file() && meta.len() > 0 {
        meta.len()
    } else {
        parser::MAX_FILE_BYTES as u64 + 1
    };
    let len = meta.len() as usize;
    let mut bytes = if len >= HUGE_PAGE {
        // Room for a 2 MiB boundary before the data ends: untouched memory costs only
        // address space.
        let mut bytes = Vec::with_capacity(len + 1 + HUGE_PAGE);
        advise_huge_pages(&mut bytes);
        bytes
    } else {
        Vec::with_capacity(len + 1)
    };
    file.take(limit)
        .read_to_end(&mut bytes)
        .map_err(|e| io_diagnostic(path, &e))?;
    Ok(bytes)
}

/// Room for the first read of a listed file: most runbooks fit (the largest real one we have
/// is 27 KB), and a file that fills it is read again the careful way ([`read_limited`]).
const LISTED_READ: usize = 32 * 1024;

thread_local! {
    /// The buffer of [`read_listed`]'s first read, kept between the files one thread reads.
    static LISTED_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

thread_local! {
    /// A listed file's text vector, handed back by [`recycle_text`] once its row is made,
    /// for [`read_listed`] to fill with the next file this thread reads.
    static SPARE_TEXT: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Gives the text of a file [`read_listed`] read back for the next one (a large text is
/// freed instead: it should not stay in memory).
pub fn recycle_text(text: String) {
    if text.capacity() <= LISTED_READ {
        SPARE_TEXT.set(text.into_bytes());
    }
}

/// The bytes of a file `list` found, with [`read_limited`]'s errors. For a file the folder
/// listing called regular it skips the `stat`: a read shorter than asked for is the end of a
/// regular file, so a small runbook is `open`, one `read`, `close` (a thousand files, a
/// thousand `statx` calls fewer). Anything else, or a file that fills the buffer, goes
/// through [`read_limited`].
pub fn read_listed(found: &Found) -> Result<Vec<u8>, Diagnostic> {
    let Some(path) = &found.path else {
        return Ok(Vec::new());
    };
    if !found.regular {
        return read_limited(path);
    }
    let opened = match (&found.dir, path.file_name()) {
        (Some(dir), Some(name)) => crate::dir_listing::open_in(dir, name.as_bytes()),
        _ => std::fs::File::open(path),
    };
    let mut file = opened.map_err(|e| io_diagnostic(path, &e))?;
    let read = LISTED_BUF.with_borrow_mut(|buf| {
        buf.resize(LISTED_READ, 0);
        loop {
            match file.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(n) if n < buf.len() => {
                    // Into the text vector the previous file gave back, if any: no
                    // allocation (and no free) per file.
                    let mut text = SPARE_TEXT.take();
                    text.clear();
                    text.extend_from_slice(&buf[..n]);
                    return Ok(Some(text));
                }
                Ok(_) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    });
    match read {
        Ok(Some(bytes)) => Ok(bytes),
        Ok(None) => read_limited(path),
        // Replaced by a folder since the listing: the same finding as `read_limited`'s.
        Err(e) if e.kind() == std::io::ErrorKind::IsADirectory => read_limited(path),
        Err(e) => Err(io_diagnostic(path, &e)),
    }
}

use crate::huge_alloc::HUGE_PAGE;

/// Asks the kernel to back the 2 MiB-aligned part of `buf`'s allocation with huge pages.
/// Reading a large file into fresh memory costs one page fault per 4 KiB page (1280 for a
/// 5 MB runbook, a third of `show`'s time); with huge pages it is a handful, plus one per
/// 4 KiB page before the first 2 MiB boundary (1 MiB on average). Only advice: where the
/// kernel has no huge page at hand, has them disabled, or predates the call, the memory
/// stays ordinary memory and `madvise`'s error is ignored.
///
/// (Rounding the allocation to a multiple of 2 MiB gets it a 2 MiB-aligned mapping from
/// Linux, but the allocator's bookkeeping at its start is written before the advice, and
/// that 4 KiB page keeps the whole first 2 MiB out of huge pages: 512 faults, more than the
/// average of an unaligned buffer.)
fn advise_huge_pages(buf: &mut Vec<u8>) {
    crate::huge_alloc::advise(buf.as_mut_ptr(), buf.capacity());
}

/// What to do about a command file given by a path that names nothing.
pub const NOT_FOUND_HINT: &str =
    "check the path, or give the command's name instead (`nixcmd list` shows them)";

fn io_diagnostic(path: &Path, e: &std::io::Error) -> Diagnostic {
    let what = crate::io_error::why(e, crate::io_error::Expected::File);
    let diagnostic = Diagnostic::fatal("file", format!("cannot read {}: {what}", path.display()));
    match e.kind() {
        std::io::ErrorKind::NotFound => diagnostic.with_hint(NOT_FOUND_HINT),
        _ => diagnostic,
    }
}

/// The name a file's command has: its stem.
pub fn name_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// For errors from `show`/`run`: an unreadable file as a [`Failure`] with exit 2.
pub fn unreadable_failure(u: &Unreadable) -> Failure {
    let rendered = u.diagnostic.render(u.file.as_ref(), &u.name);
    Failure::new(Exit::Usage, rendered.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    /// A relative or empty `XDG_*_HOME` is ignored, as the XDG Base Directory spec says.
    #[test]
    fn a_relative_or_empty_xdg_home_is_ignored() {
        use std::path::Path;
        let of = |value: Option<&str>, home: Option<&str>| {
            super::xdg_home_of(value.map(Into::into), home.map(Into::into), ".local/state")
        };
        let home = Some("/home/u");
        assert_eq!(
            of(Some("/var/st"), home).as_deref(),
            Some(Path::new("/var/st"))
        );
        for ignored in [None, Some(""), Some("relst"), Some("./st"), Some("../st")] {
            assert_eq!(
                of(ignored, home).as_deref(),
                Some(Path::new("/home/u/.local/state")),
                "{ignored:?}"
            );
        }
        assert_eq!(of(Some("relst"), None), None);
    }

    use super::*;

    #[test]
    fn the_prefix_order_is_the_byte_order() {
        let mut names = vec![
            "deploy-web",
            "deploy",
            "deploy-all",
            "a",
            "",
            "Zeta",
            "zeta",
            "cmd-0010",
            "cmd-0002",
            "cmd-00021",
            "ünïcode",
            "deploy-al",
            "abcdefgh",
            "abcdefg",
            "abcdefghi",
        ];
        let mut plain = names.clone();
        plain.sort();
        names.sort_by(|a, b| name_prefix(a).cmp(&name_prefix(b)).then_with(|| a.cmp(b)));
        assert_eq!(names, plain);
    }

    fn listed(path: &Path, regular: bool) -> Found {
        Found {
            name: name_of(path),
            origin: Origin::Builtin,
            path: Some(path.to_path_buf()),
            regular,
            dir: None,
        }
    }

    /// `list`'s read without `stat` gives what the careful read gives: the same bytes, or
    /// the same finding, for small, large, too large, missing files and folders.
    #[test]
    fn listed_reads_equal_limited_reads() {
        let dir = tempfile::tempdir().expect("temp dir");
        let small = dir.path().join("small.md");
        std::fs::write(&small, "---\ndescription: d\n---\n# x\n").expect("write");
        // Fills the first read's buffer: read again the careful way.
        let large = dir.path().join("large.md");
        std::fs::write(&large, "a".repeat(LISTED_READ + 10)).expect("write");
        let exact = dir.path().join("exact.md");
        std::fs::write(&exact, "b".repeat(LISTED_READ)).expect("write");
        let empty = dir.path().join("empty.md");
        std::fs::write(&empty, "").expect("write");
        // Sparse: refused with its real size, unread.
        let huge = dir.path().join("huge.md");
        std::fs::File::create(&huge)
            .and_then(|f| f.set_len(parser::MAX_FILE_BYTES as u64 + 4096))
            .expect("sparse file");
        let folder = dir.path().join("folder.md");
        std::fs::create_dir(&folder).expect("mkdir");
        let missing = dir.path().join("missing.md");
        // Read by path, and relative to the open folder as `list` reads them.
        let opened = Arc::new(crate::dir_listing::for_each(dir.path(), |_, _| {}).expect("list"));
        for path in [&small, &large, &exact, &empty, &huge, &folder, &missing] {
            let careful = read_limited(path);
            for (regular, relative) in [(true, false), (false, false), (true, true)] {
                let mut found = listed(path, regular);
                found.dir = relative.then(|| Arc::clone(&opened));
                match (read_listed(&found), &careful) {
                    (Ok(a), Ok(b)) => assert!(a == *b, "{}", path.display()),
                    (Err(a), Err(b)) => assert_eq!(a.message, b.message, "{}", path.display()),
                    (a, b) => panic!("{}: {:?} vs {:?}", path.display(), a.is_ok(), b.is_ok()),
                }
            }
        }
        assert!(read_limited(&huge).unwrap_err().message.contains("MiB"));
        assert_eq!(
            read_listed(&listed(&large, true)).expect("read").len(),
            LISTED_READ + 10
        );
    }

    /// A large file reads the same into its huge-page buffer, whatever the kernel did with
    /// the advice.
    #[test]
    fn large_files_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.md");
        let text: Vec<u8> = (0..HUGE_PAGE + 12345)
            .map(|i| b'a' + (i % 26) as u8)
            .collect();
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read_limited(&path).unwrap(), text);
    }
}
