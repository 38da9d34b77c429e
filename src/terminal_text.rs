//! Text for one row of a terminal: a step's last output line in the live display. What a step
//! prints is not ours to trust there: an escape sequence in it would move the cursor or clear
//! the operator's screen, and a row wider than the terminal wraps, after which the display's
//! redraw (cursor up by the number of rows it drew) leaves stale rows behind.

use unicode_width::UnicodeWidthChar;

/// `text` as it would finally look on one row: what follows its last carriage return
/// (progress bars redraw themselves with `\r`), without escape sequences (CSI, OSC, and the
/// two-character ones) or other control characters; a tab becomes a space.
pub fn plain(text: &str) -> String {
    cleaned(text, false)
}

/// [`plain`], keeping colors and styles (SGR sequences, `ESC [ … m`): for whole output lines
/// printed at a terminal with `--verbose`, where a tool's colors help and only what moves the
/// cursor or clears the screen does harm.
pub fn keeping_colors(text: &str) -> String {
    cleaned(text, true)
}

fn cleaned(text: &str, keep_sgr: bool) -> String {
    let shown = text
        .rsplit('\r')
        .find(|part| !part.trim().is_empty())
        .unwrap_or("");
    let mut out = String::with_capacity(shown.len());
    let mut chars = shown.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    let mut sequence = String::from("\x1b[");
                    for c in chars.by_ref() {
                        sequence.push(c);
                        if ('@'..='~').contains(&c) {
                            // Colors only: SGR is `ESC [` digits, `;` and `:`, then `m`.
                            // With a private marker (`ESC [>4;2m`, modifyOtherKeys) the same
                            // final byte changes how the keyboard reports keys.
                            let params = &sequence[2..sequence.len() - 1];
                            if keep_sgr
                                && c == 'm'
                                && params
                                    .chars()
                                    .all(|p| p.is_ascii_digit() || p == ';' || p == ':')
                            {
                                out.push_str(&sequence);
                            }
                            break;
                        }
                    }
                }
                // OSC (a window title, a hyperlink): up to BEL or ST (ESC \).
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // nF (`ESC ( B`, a character set): intermediates, then one final byte.
                Some(' '..='/') => {
                    while chars.next_if(|c| (' '..='/').contains(c)).is_some() {}
                    chars.next();
                }
                _ => {}
            },
            // The one-character form of CSI.
            '\u{9b}' => {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    // A color the line leaves on would color what nixcmd prints next.
    if keep_sgr && out.contains('\x1b') {
        out.push_str("\x1b[0m");
    }
    out
}

/// `text` (lines a report prints: `show`, `list`, `check`) with the control characters a
/// command file can hold shown as their Unicode pictures (`␛`), one character each, so none
/// reaches the terminal: an escape sequence in a description or a heading would otherwise
/// clear the operator's screen, retitle the window or write the clipboard (OSC 52) when
/// they only list their commands. Line breaks and tabs are kept; C1 controls (U+0080 to
/// U+009F, `U+009B` is CSI) and bidirectional controls ([`is_bidi_control`]) become U+FFFD.
/// Borrowed when there is nothing to replace.
pub fn visible(text: &str) -> std::borrow::Cow<'_, str> {
    let control = |c: char| {
        (c.is_control() && c != '\n' && c != '\t').then(|| match c {
            '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
            '\u{7f}' => '\u{2421}',
            _ => '\u{fffd}',
        })
    };
    let control = |c: char| control(c).or_else(|| is_bidi_control(c).then_some('\u{fffd}'));
    if !maybe_control(text.as_bytes()) || !text.chars().any(|c| control(c).is_some()) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars().map(|c| control(c).unwrap_or(c)).collect()
}

/// Whether `bytes` may hold a control character other than a line break or a tab: C0
/// controls and DEL are single bytes, C1 controls start with 0xC2, the bidirectional
/// controls are E2 80 AA to E2 80 AE and E2 81 A6 to E2 81 A9. Eight bytes at a time
/// (`list` defuses every cell of a thousand rows, `show` megabytes of text): a word whose
/// bytes are all printable ASCII (0x20 to 0x7E) is passed at once, any other is looked at
/// byte by byte.
fn maybe_control(bytes: &[u8]) -> bool {
    let odd = |b: &u8| (*b < 0x20 && *b != b'\n' && *b != b'\t') || *b == 0x7f || *b == 0xc2;
    let (words, rest) = bytes.as_chunks::<8>();
    for word in words {
        let x = u64::from_le_bytes(*word);
        // A byte below 0x20 borrows (high bit set after the subtraction), one of 0x7F or
        // more sets the high bit itself or after adding one. Borrows and carries between
        // bytes can only flag more words, never fewer.
        let flagged =
            (x.wrapping_sub(0x2020_2020_2020_2020) | x.wrapping_add(0x0101_0101_0101_0101) | x)
                & 0x8080_8080_8080_8080;
        if flagged != 0 && word.iter().any(|b| odd(b) || *b == 0xe2) {
            return odd_from(bytes, word.as_ptr() as usize - bytes.as_ptr() as usize);
        }
    }
    rest.iter().any(|b| odd(b) || *b == 0xe2) && odd_from(bytes, words.len() * 8)
}

/// [`maybe_control`] byte by byte from `start`, for the text after a word that may hold one:
/// 0xE2 starts many characters (`…`, `—`, `→`), only a few of them bidirectional controls.
#[cold]
fn odd_from(bytes: &[u8], start: usize) -> bool {
    (start..bytes.len()).any(|i| match bytes[i] {
        b @ ..0x20 => b != b'\n' && b != b'\t',
        0x7f | 0xc2 => true,
        0xe2 => matches!(
            (bytes.get(i + 1), bytes.get(i + 2)),
            (Some(0x80), Some(0xaa..=0xae)) | (Some(0x81), Some(0xa6..=0xa9))
        ),
        _ => false,
    })
}

/// Whether `c` is a bidirectional embedding, override or isolate (U+202A to U+202E, U+2066
/// to U+2069): invisible, it reorders the text after it at the terminal, so that a line
/// reads as something it is not ("Trojan Source", CVE-2021-42574). Right-to-left letters
/// need none of them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Display columns of `text` (wide characters count two, combining marks none).
pub fn width(text: &str) -> usize {
    text.chars().filter_map(UnicodeWidthChar::width).sum()
}

/// The longest start of `text` that fits in `cols` display columns, ending in "…" when cut.
pub fn fit(text: &str, cols: usize) -> String {
    if width(text) <= cols {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    let room = cols.saturating_sub(1);
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > room {
            break;
        }
        used += w;
        out.push(c);
    }
    if cols > 0 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_shows_control_characters_as_pictures() {
        assert_eq!(
            visible("t \x1b]52;c;aGk=\x07 \x1b[2J\r\u{9b}x\u{7f}"),
            "t \u{241b}]52;c;aGk=\u{2407} \u{241b}[2J\u{240d}\u{fffd}x\u{2421}"
        );
        assert_eq!(visible("a\tb\nc é 日本 \u{a0}"), "a\tb\nc é 日本 \u{a0}");
        assert!(matches!(visible("plain\n"), std::borrow::Cow::Borrowed(_)));
        // A bidirectional control is found wherever its three bytes fall across words.
        for (at, c) in
            (0..12).flat_map(|at| ["\u{202a}", "\u{202e}", "\u{2066}", "\u{2069}"].map(|c| (at, c)))
        {
            let text = format!("{}{c}…—{}", "a".repeat(at), "b".repeat(12 - at));
            assert!(maybe_control(text.as_bytes()), "{at} {c:?}");
            assert!(!maybe_control(text.replace(c, "\u{2029}").as_bytes()));
        }
        // Bidirectional controls go; other characters of U+2000 to U+2FFF stay.
        assert_eq!(
            visible("a\u{202e}b\u{2066}c\u{2069} — \u{200f}x → \u{2028}"),
            "a\u{fffd}b\u{fffd}c\u{fffd} — \u{200f}x → \u{2028}"
        );
        // The word-at-a-time test agrees with a byte-by-byte one for every byte anywhere
        // in a word, between any neighbours.
        for b in 0..=255u8 {
            for (before, after) in [(b' ', b' '), (0x7e, 0x00), (0xff, 0x20), (b'\n', 0x7f)] {
                for at in 0..11 {
                    let mut bytes = vec![b'a'; 11];
                    bytes[at] = b;
                    bytes[at.saturating_sub(1)] = if at > 0 { before } else { b };
                    if at + 1 < bytes.len() {
                        bytes[at + 1] = after;
                    }
                    let odd = |b: &u8| {
                        (*b < 0x20 && *b != b'\n' && *b != b'\t') || *b == 0x7f || *b == 0xc2
                    };
                    assert_eq!(maybe_control(&bytes), bytes.iter().any(odd), "{bytes:?}");
                }
            }
        }
    }

    #[test]
    fn escape_sequences_and_control_characters_are_dropped() {
        assert_eq!(plain("\x1b[1;31merror\x1b[0m: x"), "error: x");
        assert_eq!(plain("\x1b[2J\x1b[Hclean"), "clean");
        assert_eq!(
            plain("\x1b]0;title\x07a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\"),
            "alink"
        );
        assert_eq!(plain("a\tb\x08c\x00d"), "a bcd");
        assert_eq!(plain("\u{9b}2Kx"), "x");
        assert_eq!(plain("\x1b(Bkeep\x1b7"), "keep");
        // An escape cut off at the end of the line ends the line.
        assert_eq!(plain("ok\x1b[12"), "ok");
    }

    #[test]
    fn colors_can_be_kept_and_nothing_else() {
        assert_eq!(
            keeping_colors("\x1b[1;31merror\x1b[0m \x1b[2J\x1b[3Ahere\x1b]0;t\x07"),
            "\x1b[1;31merror\x1b[0m here\x1b[0m"
        );
        // A color cut off at the end of the line is dropped, not left open.
        assert_eq!(keeping_colors("ok\x1b[31"), "ok");
        // `m` with a private marker is a keyboard mode, not a color; 24-bit colors stay.
        assert_eq!(keeping_colors("a\x1b[>4;2mb"), "ab");
        assert_eq!(
            keeping_colors("\x1b[38:2::255:0:0mred"),
            "\x1b[38:2::255:0:0mred\x1b[0m"
        );
    }

    #[test]
    fn a_progress_bar_shows_its_last_state() {
        assert_eq!(
            plain("copying 10%\rcopying 55%\rcopying 99%"),
            "copying 99%"
        );
        assert_eq!(plain("done\r"), "done");
        assert_eq!(plain("\r\r"), "");
    }

    #[test]
    fn text_is_cut_to_display_columns() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("exactly10!", 10), "exactly10!");
        assert_eq!(fit("a longer line", 8), "a longe…");
        // Wide characters take two columns: four fit in 9 (8 + "…").
        assert_eq!(fit("日本語のテキスト", 9), "日本語の…");
        assert_eq!(width("日本語の…"), 9);
        assert_eq!(fit("anything", 0), "");
        assert_eq!(fit("ab", 1), "…");
    }
}
