//! `nixcmd list`: every command on the search path as a table or JSON, with shadowed ones.

use crate::command::{ArgSpec, Command, Mode, Origin};
use crate::discovery::{self, Found, SearchPath};
use crate::exit::{Exit, Failure};
use crate::output::Output;
use crate::terminal_text::visible;
use crate::{parser, summary};
use serde::Serialize;
use std::borrow::Cow;
use std::sync::Mutex;

#[derive(Debug, Serialize)]
pub struct Row {
    pub name: String,
    pub description: String,
    pub source: Origin,
    pub mode: Option<Mode>,
    pub args: Vec<ArgSpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argument_hint: Option<String>,
    pub steps: usize,
    pub confirm_steps: usize,
    /// Errors that keep the command from running (unreadable file, invalid attributes…).
    pub errors: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Shadowed {
    pub name: String,
    pub source: Origin,
    pub shadowed_by: Origin,
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub commands: Vec<Row>,
    pub shadowed: Vec<Shadowed>,
}

pub fn listing(search: &SearchPath) -> Result<Listing, Failure> {
    listing_and_found(search).map(|(listing, _)| listing)
}

/// [`listing`], and the search results it was read from (what is left of them).
fn listing_and_found(search: &SearchPath) -> Result<(Listing, Vec<Found>), Failure> {
    let (mut winners, shadowed) = match helpers_for(search) {
        // A large folder: helper threads start before the search, so that they are running
        // (not still waking an idle core, which takes a millisecond or two on a VM) when its
        // files are ready to read.
        0 => search.resolve()?,
        helpers => return listing_streamed(search, helpers),
    };
    let commands = rows(&mut winners);
    Ok((listing_of(commands, shadowed), winners))
}

fn listing_of(commands: Vec<Row>, shadowed: Vec<(Found, Origin)>) -> Listing {
    let shadowed = shadowed
        .into_iter()
        .map(|(f, by)| Shadowed {
            name: f.name,
            source: f.origin,
            shadowed_by: by,
        })
        .collect();
    Listing { commands, shadowed }
}

/// How many threads besides this one should read the files of `search`: none unless one of
/// its folders is large (more than a block of entries: a few hundred files) and there is
/// more than one core.
fn helpers_for(search: &SearchPath) -> usize {
    if !search.looks_large() {
        return 0;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
        - 1
}

/// A large folder's listing: its files are read (by `helpers` threads and this one) while it
/// is still being listed, about 125 entries at a time; the search's order and its
/// shadowing are applied to the rows afterwards. Every file on the path is read, the
/// shadowed ones too (there are rarely any; a listing of the search first, then the
/// reading, kept one core idle for the first tenth of a thousand-file `list`).
fn listing_streamed(search: &SearchPath, helpers: usize) -> Result<(Listing, Vec<Found>), Failure> {
    let stream = Stream::default();
    // Opened before the reading threads start, so that the copies of the file table they
    // make ([`own_file_table`]) hold them; closed after the threads end, by this thread, so
    // that its own table's copies are not left open (a long-lived MCP server lists often).
    let folders = search.open_folders();
    let (listed, mut rows) = std::thread::scope(|scope| {
        // However this thread leaves the scope (a panic included), the helpers stop waiting
        // for more: the scope joins them.
        let _release = Finished(&stream);
        let handles: Vec<_> = (0..helpers)
            .map(|_| {
                scope.spawn(|| {
                    own_file_table();
                    stream.read_all()
                })
            })
            .collect();
        let mut batch: Vec<Listed> = Vec::with_capacity(BATCH);
        let listed =
            search.each_found_in(&folders, crate::dir_listing::STREAMED, |folder, found| {
                batch.push((folder, found));
                if batch.len() == BATCH {
                    stream.push(&mut batch);
                }
            });
        stream.push(&mut batch);
        stream.finish();
        // This thread reads too, then takes the helpers' rows.
        let mut rows = stream.read_all();
        for h in handles {
            rows.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        (listed, rows)
    });
    drop(folders);
    listed?;
    // The built-ins are last on the path (their rows are ready-made, nothing to read).
    let folders = search.dirs.len();
    rows.extend(discovery::builtins().map(|mut f| (folders, row(&mut f))));
    Ok((in_search_order(rows), Vec::new()))
}

/// A file found on the path, with the position of its folder on it.
type Listed = (usize, Found);

/// The listing of rows read in any order, each with the position of its folder on the path:
/// the first of each name (in name order) is listed, later ones are shadowed by it and
/// reported in search order, as [`SearchPath::resolve`] decides.
fn in_search_order(rows: Vec<(usize, Row)>) -> Listing {
    // (name, folder) is unique (names in one folder are) and orders rows as the search
    // does. Sorted as (first eight bytes of the name as one integer, position) pairs: most
    // comparisons are settled by the integers, without reaching into the rows (a quarter
    // of a millisecond for a thousand rows when every comparison did).
    let mut keys: Vec<(u64, u32)> = rows
        .iter()
        .enumerate()
        .map(|(i, (_, r))| (discovery::name_prefix(&r.name), i as u32))
        .collect();
    keys.sort_unstable_by(|&(ka, a), &(kb, b)| {
        ka.cmp(&kb).then_with(|| {
            let (fa, ra) = &rows[a as usize];
            let (fb, rb) = &rows[b as usize];
            ra.name.cmp(&rb.name).then(fa.cmp(fb))
        })
    });
    let order: Vec<u32> = keys.into_iter().map(|(_, i)| i).collect();
    let mut winners: Vec<u32> = Vec::with_capacity(order.len());
    // (folder of the shadowed row, its position, the winner's position)
    let mut losers: Vec<(usize, u32, u32)> = Vec::new();
    for &i in &order {
        match winners.last() {
            Some(&w) if rows[w as usize].1.name == rows[i as usize].1.name => {
                losers.push((rows[i as usize].0, i, w))
            }
            _ => winners.push(i),
        }
    }
    // Search order: by folder, then by name (`order` is by name already).
    losers.sort_by_key(|&(folder, _, _)| folder);
    let shadowed_by: Vec<Origin> = losers
        .iter()
        .map(|&(_, _, w)| rows[w as usize].1.source.clone())
        .collect();
    // Each row moves twice (into its slot, then into place): rows are not swapped around by
    // the sort, which would move each of them many times.
    let mut slots: Vec<Option<Row>> = rows.into_iter().map(|(_, r)| Some(r)).collect();
    let mut take = |i: u32| slots[i as usize].take().expect("each position taken once");
    let commands = winners.into_iter().map(&mut take).collect();
    let shadowed = losers
        .into_iter()
        .zip(shadowed_by)
        .map(|((_, i, _), by)| {
            let r = take(i);
            Shadowed {
                name: r.name,
                source: r.source,
                shadowed_by: by,
            }
        })
        .collect();
    Listing { commands, shadowed }
}

/// Where a streamed listing ([`listing_streamed`]) leaves the files it finds, a few at a
/// time, for the threads that read them.
#[derive(Default)]
struct Stream {
    pending: Mutex<std::collections::VecDeque<Listed>>,
    /// Set once the listing ended: what is pending then is all there will be.
    done: std::sync::atomic::AtomicBool,
}

impl Stream {
    fn push(&self, batch: &mut Vec<Listed>) {
        if !batch.is_empty() {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(batch.drain(..));
        }
    }

    fn finish(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Reads files as they come until the listing ended and none are left: the rows, each
    /// with its folder's position. Waits for more awake for a while (a sleeping thread's
    /// core may take longer to wake than the next entries take to list), yielding to any
    /// thread that wants the core, then in short naps.
    fn read_all(&self) -> Vec<(usize, Row)> {
        use std::sync::atomic::Ordering;
        let mut rows = Vec::new();
        let mut mine: Vec<Listed> = Vec::with_capacity(BATCH);
        let spin_until = std::time::Instant::now() + std::time::Duration::from_millis(5);
        let mut spins = 0u32;
        loop {
            // Read before taking: whatever was pushed before the listing ended is taken by
            // this or another thread's take.
            let done = self.done.load(Ordering::Acquire);
            {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let n = pending.len().min(BATCH);
                mine.extend(pending.drain(..n));
            }
            if mine.is_empty() {
                if done {
                    return rows;
                }
                spins = spins.wrapping_add(1);
                if std::time::Instant::now() >= spin_until {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                } else if spins.is_multiple_of(256) {
                    // Started on the listing thread's own core, this thread must let it run.
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            for (folder, mut found) in mine.drain(..) {
                rows.push((folder, row(&mut found)));
            }
        }
    }
}

/// Ends a streamed listing when dropped.
struct Finished<'s>(&'s Stream);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Reads every command, spread over the machine's cores: listing a folder of a thousand
/// runbooks is file reading and parsing, and both parallelise cleanly. Order is kept.
fn rows(found: &mut [Found]) -> Vec<Row> {
    // A few files are read on this thread: not worth a thread, nor asking how many cores
    // there are (std reads the cgroup's CPU quota: three files opened and read).
    if found.len() < 16 {
        return found.iter_mut().map(row).collect();
    }
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if workers == 1 {
        return found.iter_mut().map(row).collect();
    }
    let mut slots: Vec<Option<Row>> = Vec::new();
    slots.resize_with(found.len(), || None);
    let queue = Queue::default();
    queue.post(Some(batches(found, &mut slots)));
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..workers)
            .map(|_| {
                scope.spawn(|| {
                    own_file_table();
                    queue.take_all()
                })
            })
            .collect();
        // The main thread reads too: one thread fewer to start (its stack and its malloc
        // arena are page faults), and it would only wait otherwise.
        queue.take_all();
        for h in handles {
            h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        }
    });
    filled(slots)
}

/// Gives the calling thread a file descriptor table of its own (a copy of the process's),
/// for a reading thread that opens, reads and closes its files itself. Threads sharing one
/// table take its lock for every `open` and `close`, and every use of the folder's
/// descriptor (each `openat` relative to it) counts a reference on it, one cache line for
/// both cores; a table with one user skips both. What the thread opens stays its own, which
/// is all a reading thread needs; the folders it reads from must have been opened before it
/// started (a descriptor opened later by another thread is not in the copy). The copies of
/// the process's other descriptors are closed when the thread ends, a few milliseconds
/// later. Where the call is refused (a seccomp filter), the table stays shared, as before.
fn own_file_table() {
    // SAFETY: `unshare(CLONE_FILES)` only replaces this thread's table with a copy; the
    // descriptors it holds stay valid in both tables.
    unsafe { libc::unshare(libc::CLONE_FILES) };
}

/// Every slot was filled by the thread that took it. `Option<Row>` has the size of `Row`:
/// this reuses the vector.
fn filled(slots: Vec<Option<Row>>) -> Vec<Row> {
    slots
        .into_iter()
        .map(|r| r.expect("every file read"))
        .collect()
}

/// Files a thread takes from the queue at a time: few enough that the threads finish
/// together, enough that the queue's lock is rarely contended.
const BATCH: usize = 8;

/// The files still to read, a few at a time, each with the slot for its row.
type Batches<'a> =
    std::iter::Zip<std::slice::ChunksMut<'a, Found>, std::slice::ChunksMut<'a, Option<Row>>>;

fn batches<'a>(found: &'a mut [Found], slots: &'a mut [Option<Row>]) -> Batches<'a> {
    found.chunks_mut(BATCH).zip(slots.chunks_mut(BATCH))
}

/// Where the threads of a listing take their files from. Threads take the next few files
/// (and the slots for their rows) rather than fixed halves: a started thread is ready a
/// fraction of a millisecond after the main thread, which would otherwise finish its half
/// first and wait for the other. Rows go straight into their slots: no per-thread vectors to
/// grow (fresh pages).
#[derive(Default)]
struct Queue<'a> {
    batches: Mutex<Option<Batches<'a>>>,
}

impl<'a> Queue<'a> {
    fn post(&self, batches: Option<Batches<'a>>) {
        *self.batches.lock().unwrap_or_else(|e| e.into_inner()) = batches;
    }

    /// Reads files until none are left.
    fn take_all(&self) {
        loop {
            let next = self
                .batches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
                .and_then(Iterator::next);
            let Some((files, out)) = next else {
                return;
            };
            for (f, slot) in files.iter_mut().zip(out) {
                *slot = Some(row(f));
            }
        }
    }
}

/// The row of one search result, whose name and origin it moves into the row when it can.
fn row(found: &mut Found) -> Row {
    if found.path.is_none()
        && let Some(row) = builtin_row(&found.name)
    {
        return row;
    }
    let Some(path) = &found.path else {
        return match discovery::load_with(found, parser::Depth::Summary) {
            Ok(loaded) => row_of_command(loaded.command),
            Err(u) => unreadable_row(found, u.diagnostic.message),
        };
    };
    // The path as the search shows it (its origin holds it already).
    let shown: Cow<str> = match found.origin.path() {
        Some(shown) => Cow::Borrowed(shown),
        None => Cow::Owned(
            path.to_str()
                .map_or_else(|| path.display().to_string(), str::to_string),
        ),
    };
    let bytes = match discovery::read_listed(found) {
        Ok(bytes) => bytes,
        Err(d) => return unreadable_row(found, d.message),
    };
    match parser::decode_owned(&shown, bytes) {
        // The rows of plain files without a `Command`; the parser for the rest.
        Ok(file) => {
            let row = summary::row_with(&file, || {
                let name = std::mem::take(&mut found.name);
                (name, std::mem::replace(&mut found.origin, Origin::Builtin))
            })
            .unwrap_or_else(|| {
                let c = parser::parse_with(
                    &file,
                    &found.name,
                    found.origin.clone(),
                    parser::Depth::Summary,
                );
                row_of_command(c)
            });
            discovery::recycle_text(file.text);
            row
        }
        Err((d, _)) => unreadable_row(found, d.message),
    }
}

/// The row of a file that could not be read as a command.
fn unreadable_row(found: &Found, message: String) -> Row {
    Row {
        name: found.name.clone(),
        description: String::new(),
        source: found.origin.clone(),
        mode: None,
        args: Vec::new(),
        argument_hint: None,
        steps: 0,
        confirm_steps: 0,
        errors: 1,
        error: Some(message),
    }
}

// The built-ins' rows, computed from their text ahead of time (see `builtin_row`).
include!("builtin_rows.rs");

/// A built-in's row without parsing it: every `list` shows the built-ins, and parsing their
/// 12–16 KB texts (argument patterns included) was most of the time of a short `list`. The
/// table in `builtin_rows.rs` is keyed by the FNV-1a of the text it was computed from
/// (`build.rs` hashes the embedded files), so an edited built-in that was not regenerated is
/// parsed as before. `tests::builtin_rows_are_current` checks the table against a fresh parse
/// and rewrites it with `UPDATE_BUILTIN_ROWS=1`.
fn builtin_row(name: &str) -> Option<Row> {
    let i = discovery::BUILTINS.iter().position(|(n, _)| *n == name)?;
    precomputed_builtin_row(name, discovery::BUILTIN_HASHES[i])
}

#[cfg(test)]
fn from_command(c: &Command) -> Row {
    row_of_command(c.clone())
}

/// A command's row, its strings moved rather than copied (the command is dropped next).
pub fn row_of_command(c: Command) -> Row {
    let steps = c.runnable_steps();
    let confirm_steps = c.confirm_count();
    let errors = c
        .diagnostics
        .iter()
        .filter(|d| d.severity >= crate::diagnostic::Severity::Error)
        .count();
    Row {
        name: c.name,
        description: c.description.unwrap_or_default(),
        source: c.source,
        mode: Some(c.mode),
        args: c.args,
        argument_hint: c.argument_hint,
        steps,
        confirm_steps,
        errors,
        error: None,
    }
}

/// `<host> [inputs…]` from declarations, else the `argument-hint`.
pub fn args_summary(args: &[ArgSpec]) -> String {
    args.iter()
        .filter(|a| !a.named)
        .chain(args.iter().filter(|a| a.named))
        .map(|a| match (a.required, a.variadic) {
            _ if a.named && a.required => format!("<{}=…>", a.name),
            _ if a.named => format!("[{}=…]", a.name),
            (true, true) => format!("<{}…>", a.name),
            (true, false) => format!("<{}>", a.name),
            (false, true) => format!("[{}…]", a.name),
            (false, false) => format!("[{}]", a.name),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(search: &SearchPath, out: &Output, json: bool) -> Result<Exit, Failure> {
    let (listing, found) = listing_and_found(search)?;
    // The process ends after this command: its thousands of strings are not handed back to
    // the allocator one by one (as `show` does with its command).
    let listing = std::mem::ManuallyDrop::new(listing);
    std::mem::forget(found);
    if json {
        // Sized for the listing (about 400 bytes a row): no regrowing of a large buffer.
        let mut text = Vec::with_capacity(512 * listing.commands.len() + 4096);
        serde_json::to_writer_pretty(&mut text, &*listing)
            .map_err(|e| Failure::usage(e.to_string()))?;
        text.push(b'\n');
        let text = String::from_utf8(text).map_err(|e| Failure::usage(e.to_string()))?;
        out.print(&text);
        return Ok(Exit::Success);
    }
    out.print(&table(&listing, out));
    Ok(Exit::Success)
}

/// A count as a cell: the usual small ones without an allocation (each row's cells are made
/// twice, once for the widths and once for the line).
fn count_cell(n: usize) -> Cow<'static, str> {
    const SMALL: [&str; 16] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
    ];
    match SMALL.get(n) {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(n.to_string()),
    }
}

/// A row's cells, borrowed from the row where they can. `table` makes them twice per row (for the
/// widths, then for the line) rather than keeping them: a thousand rows of seven cells are a
/// 170 KB allocation, fresh pages from the kernel.
fn row_cells(r: &Row) -> [Cow<'_, str>; 7] {
    let description = match &r.error {
        Some(e) => Cow::Owned(format!("(unreadable: {e})")),
        None if r.errors > 0 => {
            Cow::Owned(format!("{} (invalid: run `nixcmd check`)", r.description))
        }
        None => Cow::Borrowed(r.description.as_str()),
    };
    [
        Cow::Borrowed(r.name.as_str()),
        description,
        if r.args.is_empty() {
            Cow::Borrowed(r.argument_hint.as_deref().unwrap_or_default())
        } else {
            Cow::Owned(args_summary(&r.args))
        },
        count_cell(r.steps),
        count_cell(r.confirm_steps),
        Cow::Borrowed(
            r.mode
                .map(|m| {
                    if m == Mode::Annotated {
                        "annotated"
                    } else {
                        "guided"
                    }
                })
                .unwrap_or("-"),
        ),
        Cow::Borrowed(r.source.label()),
    ]
}

fn table(listing: &Listing, out: &Output) -> String {
    let p = out.out;
    if listing.commands.is_empty() {
        return "No commands found.\n".to_string();
    }
    let header = [
        "NAME",
        "DESCRIPTION",
        "ARGS",
        "STEPS",
        "ASKS",
        "MODE",
        "SOURCE",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &listing.commands {
        for (w, cell) in widths.iter_mut().zip(&row_cells(r)) {
            *w = (*w).max(char_count(cell));
        }
    }
    if let Some(total) = out.width() {
        let others: usize = widths
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, w)| w + 2)
            .sum();
        widths[1] = widths[1].min(total.saturating_sub(others).max(20));
    }
    // Sized for the whole table: no regrowing (and copying) of a 100 KB string.
    let mut s =
        String::with_capacity((widths.iter().sum::<usize>() + 16) * (listing.commands.len() + 1));
    // Written straight into `s` (a thousand rows are a thousand lines): cells padded to their
    // column's width in characters, cut with `…` when too long, the line's end trimmed.
    let line = |cells: &[Cow<str>], s: &mut String, bold: bool| {
        let start = s.len();
        let mut cut = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            // Cells are the files' text (a description): their control characters are
            // shown, not obeyed by the terminal; one character each, so widths hold.
            let cell = visible(cell);
            let mut count = char_count(&cell);
            let mut cell: &str = &cell;
            if count > widths[i] {
                cut.clear();
                cut.extend(cell.chars().take(widths[i].saturating_sub(1)));
                cut.push('…');
                count = cut.chars().count();
                cell = &cut;
            }
            let pad = if i + 1 == cells.len() {
                0
            } else {
                widths[i].saturating_sub(count)
            };
            if bold {
                let padded = format!("{cell}{}", " ".repeat(pad));
                s.push_str(&p.bold(&padded));
            } else {
                s.push_str(cell);
                pad_with_spaces(s, pad);
            }
        }
        let kept = s[start..].trim_end().len();
        s.truncate(start + kept);
        s.push('\n');
    };
    line(&header.map(Cow::Borrowed), &mut s, true);
    for r in &listing.commands {
        line(&row_cells(r), &mut s, false);
    }
    if !listing.shadowed.is_empty() {
        s.push_str(&format!(
            "\n{}\n",
            p.bold("Shadowed (a command earlier on the search path has the same name):")
        ));
        for sh in &listing.shadowed {
            s.push_str(&format!(
                "  {}  {} ({}), shadowed by {}\n",
                visible(&sh.name),
                visible(sh.source.path().unwrap_or("builtin")),
                sh.source.label(),
                sh.shadowed_by.label()
            ));
        }
    }
    s
}

/// The characters of `s`: its length when it is ASCII, as almost every cell is (checking
/// that is a word at a time; counting characters is a loop over every byte).
fn char_count(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// Appends `n` spaces, a slice at a time (pushing `char`s one by one was most of the cost
/// of writing a thousand-row table).
fn pad_with_spaces(s: &mut String, mut n: usize) {
    const SPACES: &str = "                                                                ";
    while n > 0 {
        let k = n.min(SPACES.len());
        s.push_str(&SPACES[..k]);
        n -= k;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::parser::{self, Depth};
    use std::path::{Path, PathBuf};

    /// Every `.md` file under `dir` (the corpus and fixture tests of list and summary).
    pub(crate) fn markdown_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                markdown_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }

    /// A reading thread's own table still holds the folder opened before it, and what the
    /// thread opens is not in the process's table (which its open/close no longer lock).
    #[test]
    fn a_reading_thread_has_its_own_file_table() {
        use std::os::fd::AsRawFd as _;
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("a.md"), "hello").expect("write");
        let folder =
            std::os::fd::OwnedFd::from(std::fs::File::open(dir.path()).expect("open folder"));
        let folder_fd = folder.as_raw_fd();
        let ino = |m: std::fs::Metadata| std::os::unix::fs::MetadataExt::ino(&m);
        let file_ino = ino(std::fs::metadata(dir.path().join("a.md")).expect("stat"));
        let (text, opened) = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    own_file_table();
                    let mut f = crate::dir_listing::open_in(&folder, b"a.md").expect("open_in");
                    let mut text = String::new();
                    std::io::Read::read_to_string(&mut f, &mut text).expect("read");
                    // Left open: only this thread's table holds it.
                    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
                    (text, fd)
                })
                .join()
                .expect("thread")
        });
        assert_eq!(text, "hello");
        assert_ne!(opened, folder_fd);
        // Another test's thread may have taken the same number in the process's table since:
        // whatever is there, it is not the thread's file.
        let there = std::fs::read_link(format!("/proc/self/fd/{opened}"))
            .ok()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(ino);
        assert_ne!(
            there,
            Some(file_ino),
            "the thread's file is not in the process's table"
        );
    }

    /// A large folder is read by threads started before the search, a small one by this
    /// thread: both give the rows one file at a time would, in name order.
    #[test]
    fn large_and_small_folders_list_the_same_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cwd = tempfile::tempdir().expect("temp dir");
        for i in (0..400).rev() {
            let text = match i % 4 {
                0 => {
                    format!("---\ndescription: plain {i}\n---\n## Steps\n```bash\necho {i}\n```\n")
                }
                1 => format!(
                    "# Guided {i}\n\nIts overview.\n\n## Steps\n1. do it\n```bash\nx\n```\n"
                ),
                2 => format!("---\ndescription: [broken {i}\n---\n"),
                _ => format!(
                    "---\ndescription: d{i}\nnixcmd:\n  timeout: nope\n---\n## Steps\n```bash {{id=Bad!}}\nx\n```\n"
                ),
            };
            std::fs::write(dir.path().join(format!("c{i:03}.md")), text).expect("write");
        }
        // `c000`…`c399`, not the built-ins.
        let ours = |n: &str| n.len() == 4 && n[1..].bytes().all(|b| b.is_ascii_digit());
        let search = SearchPath::new(Some(dir.path()), cwd.path());
        assert!(search.looks_large(), "400 files make a large folder");
        assert!(
            helpers_for(&search) > 0 || std::thread::available_parallelism().unwrap().get() == 1
        );
        let early = serde_json::to_value(listing(&search).expect("listing")).expect("json");
        // One at a time, in name order, on this thread.
        let (mut found, _) = search.resolve().expect("resolve");
        let one_by_one: Vec<Row> = found.iter_mut().map(row).collect();
        let one_by_one = serde_json::to_value(one_by_one).expect("json");
        assert_eq!(early["commands"], one_by_one);
        let names: Vec<&str> = early["commands"]
            .as_array()
            .expect("rows")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .filter(|n| ours(n))
            .collect();
        assert_eq!(names.len(), 400);
        assert!(names.windows(2).all(|w| w[0] < w[1]), "in name order");
        // Five files: not large, read without helpers, same rows as the large path gives.
        let small = tempfile::tempdir().expect("temp dir");
        for i in 0..5 {
            std::fs::copy(
                dir.path().join(format!("c{i:03}.md")),
                small.path().join(format!("c{i:03}.md")),
            )
            .expect("copy");
        }
        let search = SearchPath::new(Some(small.path()), cwd.path());
        assert!(!search.looks_large());
        let few = serde_json::to_value(listing(&search).expect("listing")).expect("json");
        let rows = |v: &serde_json::Value| {
            v["commands"]
                .as_array()
                .expect("rows")
                .iter()
                .filter(|r| r["name"].as_str().is_some_and(ours))
                .map(|r| {
                    let mut r = r.clone();
                    r["source"] = serde_json::Value::Null;
                    r
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(rows(&few), rows(&early)[..5]);
    }

    /// A large folder is read while it is listed, every file on the path: the rows and the
    /// shadowed files are those of the search's own resolution (first of each name, in name
    /// order; the shadowed ones in search order, each with the origin that shadows it),
    /// built-ins shadowed by a file included.
    #[test]
    fn a_streamed_listing_shadows_as_the_search_does() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cwd = tempfile::tempdir().expect("temp dir");
        let project = cwd.path().join(".nixcmd/commands");
        std::fs::create_dir_all(&project).expect("mkdir");
        let text = |d: &str| format!("---\ndescription: {d}\n---\n## Steps\n```bash\necho\n```\n");
        for i in 0..400 {
            let name = format!("c{i:03}.md");
            std::fs::write(dir.path().join(&name), text(&format!("large {i}"))).expect("write");
            // Every tenth name again in the project's folder, later on the path.
            if i % 10 == 0 {
                std::fs::write(project.join(&name), text(&format!("project {i}"))).expect("write");
            }
        }
        std::fs::write(project.join("only-here.md"), text("project only")).expect("write");
        std::fs::write(dir.path().join("flake-update.md"), text("mine")).expect("write");
        let search = SearchPath::new(Some(dir.path()), cwd.path());
        assert!(
            search.looks_large() && helpers_for(&search) > 0
                || std::thread::available_parallelism().unwrap().get() == 1
        );
        let streamed = serde_json::to_value(listing(&search).expect("listing")).expect("json");
        let (mut winners, shadowed) = search.resolve().expect("resolve");
        let expected =
            serde_json::to_value(listing_of(winners.iter_mut().map(row).collect(), shadowed))
                .expect("json");
        assert_eq!(streamed, expected);
        let shadowed = streamed["shadowed"].as_array().expect("shadowed");
        // 40 project files and the built-in `flake-update`, in search order.
        assert_eq!(shadowed.len(), 41);
        assert_eq!(shadowed[0]["name"], "c000");
        assert_eq!(shadowed[39]["name"], "c390");
        assert_eq!(shadowed[40]["name"], "flake-update");
        assert_eq!(shadowed[40]["source"]["kind"], "builtin");
        let rows = streamed["commands"].as_array().expect("rows");
        let c010 = rows.iter().find(|r| r["name"] == "c010").expect("c010");
        assert_eq!(c010["description"], "large 10");
        assert!(rows.iter().any(|r| r["name"] == "only-here"));
        // Neither folder is left open (an MCP server lists for as long as it runs).
        drop(winners);
        let open: Vec<_> = std::fs::read_dir("/proc/self/fd")
            .expect("fds")
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|p| p.as_path() == dir.path() || p.as_path() == project.as_path())
            .collect();
        assert_eq!(open, Vec::<std::path::PathBuf>::new());
    }

    /// The row of a file's summary with and without the line scan, and whether the scan
    /// could read the file.
    fn rows_of(name: &str, text: &str) -> (serde_json::Value, serde_json::Value, bool) {
        let file = crate::source::SourceFile::new(name, text);
        let row = |line_scan| {
            let c = parser::parse_at(&file, "x", Origin::Builtin, Depth::Summary, line_scan);
            serde_json::to_value(from_command(&c)).expect("rows serialize")
        };
        let fm = crate::frontmatter::parse(&file)
            .map(|f| f.body_start)
            .unwrap_or(0);
        let scanned = crate::outline_scan::scan(text, fm, &text[fm..]).is_some();
        (row(true), row(false), scanned)
    }

    /// The line scan behind `list` gives exactly the row the full outline gives, for every
    /// runbook we have: fixtures, built-ins and the corpus of real command files.
    #[test]
    fn line_scan_rows_equal_full_parse_rows() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        markdown_files(&root.join("fixtures/runbooks"), &mut files);
        markdown_files(&root.join("commands"), &mut files);
        markdown_files(&root.join("../shared/corpus/real-commands"), &mut files);
        assert!(files.len() > 20, "found only {} runbooks", files.len());
        let mut scanned = 0;
        for path in &files {
            let bytes = std::fs::read(path).expect("readable");
            let Ok(file) = parser::decode(&path.display().to_string(), &bytes) else {
                continue;
            };
            let (fast, full, used) = rows_of(&file.name, &file.text);
            assert_eq!(fast, full, "{}", path.display());
            scanned += usize::from(used);
        }
        assert!(scanned > 10, "the line scan read only {scanned} files");
    }

    /// Every `list` shows the built-ins, so they should stay on the fast paths.
    #[test]
    fn builtins_take_the_fast_paths() {
        for (name, text) in crate::discovery::BUILTINS {
            let file = crate::source::SourceFile::new(*name, *text);
            let fm = crate::frontmatter::parse(&file).expect("built-in frontmatter");
            let yaml = &text[fm.content.clone()];
            assert!(crate::simple_yaml::parse(yaml).is_some(), "{name}: YAML");
            let (_, _, scanned) = rows_of(name, text);
            assert!(scanned, "{name}: line scan");
        }
    }

    /// Rust source of `builtin_rows.rs` for the given built-ins' freshly parsed rows.
    fn builtin_rows_source() -> String {
        use std::fmt::Write as _;
        let opt = |o: &Option<String>| match o {
            Some(s) => format!("Some({s:?}.into())"),
            None => "None".to_string(),
        };
        let mut s = String::from(
            "// @generated by `UPDATE_BUILTIN_ROWS=1 cargo test --lib list::tests::builtin_rows_are_current`\n\
             // from commands/*.md; do not edit. Each arm matches a built-in's name and the FNV-1a of\n\
             // the text the row was computed from.\n\n\
             #[rustfmt::skip]\n\
             fn precomputed_builtin_row(name: &str, hash: u64) -> Option<Row> {\n    \
             let row = match (name, hash) {\n",
        );
        for (i, (name, text)) in crate::discovery::BUILTINS.iter().enumerate() {
            let file = crate::source::SourceFile::new(format!("builtin:{name}"), *text);
            let c = parser::parse_with(&file, name, Origin::Builtin, Depth::Summary);
            let r = from_command(&c);
            assert!(r.error.is_none());
            let mode = match r.mode {
                Some(Mode::Annotated) => "Some(Mode::Annotated)",
                Some(Mode::Guided) => "Some(Mode::Guided)",
                None => "None",
            };
            let mut args = String::new();
            for a in &r.args {
                let choices: Vec<String> =
                    a.choices.iter().map(|c| format!("{c:?}.into()")).collect();
                write!(
                    args,
                    "\n                ArgSpec {{ name: {:?}.into(), env: {:?}.into(), required: {}, variadic: {}, named: {}, pattern: {}, choices: vec![{}], default: {}, help: {} }},",
                    a.name,
                    a.env,
                    a.required,
                    a.variadic,
                    a.named,
                    opt(&a.pattern),
                    choices.join(", "),
                    opt(&a.default),
                    opt(&a.help),
                )
                .unwrap();
            }
            write!(
                s,
                "        ({name:?}, {:#018x}) => Row {{\n            name: {:?}.into(),\n            description: {:?}.into(),\n            source: Origin::Builtin,\n            mode: {mode},\n            args: vec![{args}\n            ],\n            argument_hint: {},\n            steps: {},\n            confirm_steps: {},\n            errors: {},\n            error: None,\n        }},\n",
                crate::discovery::BUILTIN_HASHES[i],
                r.name,
                r.description,
                opt(&r.argument_hint),
                r.steps,
                r.confirm_steps,
                r.errors,
            )
            .unwrap();
        }
        s.push_str("        _ => return None,\n    };\n    Some(row)\n}\n");
        s
    }

    /// The precomputed built-in rows are exactly what parsing the embedded texts gives; with
    /// `UPDATE_BUILTIN_ROWS=1` the table is rewritten from a fresh parse first.
    #[test]
    fn builtin_rows_are_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/builtin_rows.rs");
        let source = builtin_rows_source();
        if std::env::var_os("UPDATE_BUILTIN_ROWS").is_some() {
            std::fs::write(&path, &source).expect("src/ is writable");
        }
        let on_disk = std::fs::read_to_string(&path).expect("src/builtin_rows.rs");
        assert!(
            on_disk == source,
            "src/builtin_rows.rs is stale: run `UPDATE_BUILTIN_ROWS=1 cargo test --lib list::tests::builtin_rows_are_current`"
        );
        // And the compiled-in table (what `list` uses) equals a fresh parse, field by field.
        for (name, text) in crate::discovery::BUILTINS {
            let file = crate::source::SourceFile::new(format!("builtin:{name}"), *text);
            let c = parser::parse_with(&file, name, Origin::Builtin, Depth::Summary);
            let fresh = from_command(&c);
            let pre = builtin_row(name).unwrap_or_else(|| panic!("{name}: no precomputed row"));
            assert_eq!(format!("{pre:?}"), format!("{fresh:?}"), "{name}");
            assert_eq!(
                serde_json::to_value(&pre).unwrap(),
                serde_json::to_value(&fresh).unwrap(),
                "{name}"
            );
        }
    }

    /// A built-in whose text changed since the table was made is parsed, not looked up.
    #[test]
    fn stale_builtin_rows_are_not_used() {
        let (name, _) = crate::discovery::BUILTINS[0];
        assert!(precomputed_builtin_row(name, 0).is_none());
        assert!(precomputed_builtin_row("no-such-builtin", 0).is_none());
    }

    #[test]
    fn cells_count_characters_not_bytes() {
        for s in ["", "abc", "naïve", "日本語 x", "\u{1b}", "…"] {
            assert_eq!(char_count(s), s.chars().count(), "{s:?}");
        }
    }

    #[test]
    fn line_scan_reads_the_benchmark_shape() {
        let text = "---\ndescription: Maintenance task 1, check\nnixcmd:\n  timeout: 5m\n---\n# cmd-0001\n\nWhat this does: flake input.\n\n## Prerequisites\n```bash {id=check-tools readonly}\ncommand -v nix >/dev/null\n```\n\n## Steps\n### Record the current state\n```bash {id=record}\necho \"record 1\" > \"$NIXCMD_STATE/before\"\n```\n### Apply the change\n```bash {id=apply rollback=restore confirm=\"Apply?\"}\necho \"apply 1\"\n```\n\n## Success Criteria\n- [ ] The service answers\n```bash\necho ok\n```\n\n## Rollback\n### restore\n```bash\necho \"restore 1\"\n```\n";
        let (fast, full, used) = rows_of("bench.md", text);
        assert!(used);
        assert_eq!(fast, full);
        assert_eq!(fast["steps"], 2);
        assert_eq!(fast["confirm_steps"], 1);
        assert_eq!(fast["errors"], 0);
    }
}
