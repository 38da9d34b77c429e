//! The common shape of YAML frontmatter — `key: plain text` lines and indented mappings of
//! them — read directly, giving exactly the value serde_yaml_ng gives. A YAML parser is the
//! largest cost of reading a small command file, and `list` reads many. Whatever this reader
//! is not sure about (quotes, lists, flow collections, block scalars, anchors, tags, numbers,
//! comments after values, multi-line scalars, tabs, duplicate keys) makes it answer `None`,
//! and the caller uses the full YAML parser, which also reports errors.

use crate::frontmatter::{Mapping, Node};
use serde_json::Value;
use std::borrow::Cow;

/// The frontmatter as a value, or `None` when it is not in the simple shape: [`read`] as
/// serde_json's value, to compare with serde_yaml_ng's (tests and the fuzz target).
pub fn parse(source: &str) -> Option<Value> {
    read(source).map(|node| node.to_value())
}

/// The frontmatter as a mapping (or null when it holds nothing), its text borrowed from
/// `source`, or `None` when it is not in the simple shape.
pub fn read(source: &str) -> Option<Node<'_>> {
    if memchr::memchr2(b'\t', b'\r', source.as_bytes()).is_some() {
        return None;
    }
    read_lines(&mut Lines::new(source, None))
}

/// [`read`] of the YAML frontmatter that `text` starts with (the text after the opening
/// `---` line), up to its closing line (`frontmatter::is_closing`), in one pass over the
/// lines: the value, where the closing line starts and where the line after it starts.
/// `None` also when no closing line starts within `limit` bytes.
pub fn read_until_closing(text: &str, limit: usize) -> Option<(Node<'_>, usize, usize)> {
    let mut lines = Lines::new(text, Some(limit));
    let node = read_lines(&mut lines)?;
    let (content_end, after) = lines.closing?;
    if memchr::memchr2(b'\t', b'\r', &text.as_bytes()[..content_end]).is_some() {
        return None;
    }
    Some((node, content_end, after))
}

fn read_lines<'a>(lines: &mut Lines<'a>) -> Option<Node<'a>> {
    match lines.peek() {
        None => return Some(Node::Null),
        Some((indent, _)) if indent != 0 => return None,
        Some(_) => {}
    }
    let map = mapping(lines, 0)?;
    // Every line is a key of the top mapping or under one.
    lines.peek().is_none().then_some(Node::Map(map))
}

/// The lines that carry something, as (indent, text without the indent and trailing
/// spaces), read one at a time: no vector of them is built.
struct Lines<'a> {
    source: &'a str,
    /// The text after the lines read so far, `None` after the last.
    rest: Option<&'a str>,
    /// The line [`Lines::peek`] found and [`Lines::advance`] has not yet consumed.
    next: Option<(usize, &'a str)>,
    /// Stop at a closing `---` line starting within this many bytes, and at no line after
    /// them; `None`: read to the end.
    limit: Option<usize>,
    /// Where the closing line was found: its start and the start of the line after it.
    closing: Option<(usize, usize)>,
}

impl<'a> Lines<'a> {
    fn new(source: &'a str, limit: Option<usize>) -> Self {
        Lines {
            source,
            rest: Some(source),
            next: None,
            limit,
            closing: None,
        }
    }

    #[inline]
    fn peek(&mut self) -> Option<(usize, &'a str)> {
        if self.next.is_none() {
            self.next = self.next_line();
        }
        self.next
    }

    /// The next line that carries something, or `None` at the end of the text or at the
    /// closing line.
    fn next_line(&mut self) -> Option<(usize, &'a str)> {
        loop {
            let rest = self.rest?;
            let start = self.source.len() - rest.len();
            let (line, after) = match memchr::memchr(b'\n', rest.as_bytes()) {
                Some(end) => {
                    self.rest = Some(&rest[end + 1..]);
                    (&rest[..end], start + end + 1)
                }
                None => {
                    self.rest = None;
                    (rest, self.source.len())
                }
            };
            if let Some(limit) = self.limit {
                if start > limit {
                    self.rest = None;
                    return None;
                }
                if crate::frontmatter::is_closing(line, crate::frontmatter::Syntax::Yaml) {
                    self.closing = Some((start, after));
                    self.rest = None;
                    return None;
                }
            }
            let bytes = line.as_bytes();
            let indent = bytes.iter().take_while(|&&b| b == b' ').count();
            // Blank lines and whole-line comments carry nothing, wherever they are indented.
            if indent < bytes.len() && bytes[indent] != b'#' {
                let mut end = bytes.len();
                while bytes[end - 1] == b' ' {
                    end -= 1;
                }
                return Some((indent, &line[indent..end]));
            }
        }
    }

    fn advance(&mut self) {
        self.next = None;
    }
}

/// Past this many keys, a mapping finds duplicate keys by sorting them rather than by a scan
/// of the keys so far for each (which would make 64 KiB of keys quadratic).
const SCANNED_KEYS: usize = 16;

/// The mapping whose keys are indented by exactly `indent`, from the next line on.
fn mapping<'a>(lines: &mut Lines<'a>, indent: usize) -> Option<Mapping<'a>> {
    // Called only where a key follows: the vector is never left empty.
    let mut entries: Vec<(Cow<'a, str>, Node<'a>)> = Vec::with_capacity(4);
    while let Some((at, content)) = lines.peek() {
        if at < indent {
            break;
        }
        if at > indent {
            // A continuation line of a multi-line scalar, or a misindented key.
            return None;
        }
        let (key, rest) = key_and_rest(content)?;
        lines.advance();
        let value = if rest.is_empty() {
            match lines.peek() {
                Some((child, _)) if child > indent => Node::Map(mapping(lines, child)?),
                _ => Node::Null,
            }
        } else {
            scalar(rest)?
        };
        // A short mapping checks each key as it comes; a long one sorts its keys at the end.
        if entries.len() < SCANNED_KEYS && entries.iter().any(|(k, _)| k == key) {
            return None;
        }
        entries.push((Cow::Borrowed(key), value));
    }
    if entries.len() > SCANNED_KEYS {
        let mut keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_ref()).collect();
        keys.sort_unstable();
        if keys.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
    }
    Some(Mapping(entries))
}

/// Words YAML (1.2, or 1.1 for older readers) may read as booleans or null (callers skip
/// the search for words longer than the longest, `false`).
fn is_special_word(s: &str) -> bool {
    ["true", "false", "null", "yes", "no", "on", "off", "y", "n"]
        .iter()
        .any(|w| s.eq_ignore_ascii_case(w))
}

/// A double-quoted scalar at the start of `s` (escapes limited to `\\` and `\"`): its text
/// (borrowed unless it had escapes) and the rest of `s` after the closing quote.
fn quoted(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let inner = s.strip_prefix('"')?;
    let mut text: Option<String> = None;
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let text = match text {
                    Some(owned) => Cow::Owned(owned),
                    None => Cow::Borrowed(&inner[..i]),
                };
                return Some((text, &inner[i + 1..]));
            }
            '\\' => match chars.next() {
                Some((_, e @ ('\\' | '"'))) => {
                    text.get_or_insert_with(|| inner[..i].to_string()).push(e)
                }
                _ => return None,
            },
            c if c.is_control() || !printable(c) => return None,
            c => {
                if let Some(owned) = &mut text {
                    owned.push(c);
                }
            }
        }
    }
    None
}

/// `["a", "b"]`: a flow list of double-quoted scalars, as the list value.
fn quoted_list(s: &str) -> Option<Node<'_>> {
    let mut rest = s.strip_prefix('[')?.trim_start_matches(' ');
    let mut items = Vec::new();
    if let Some(after) = rest.strip_prefix(']') {
        return after.is_empty().then_some(Node::List(items));
    }
    loop {
        let (text, after) = quoted(rest)?;
        items.push(Node::Text(text));
        let after = after.trim_start_matches(' ');
        if let Some(end) = after.strip_prefix(']') {
            return end.is_empty().then_some(Node::List(items));
        }
        rest = after.strip_prefix(',')?.trim_start_matches(' ');
    }
}

/// Characters YAML allows in a document, beyond ASCII.
fn printable(c: char) -> bool {
    c.is_ascii()
        || (!c.is_control()
            && !matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
            ))
}

/// `key: rest` split at the colon, `rest` without the spaces after it, when the key is a
/// word YAML reads as text (letters, digits, `-`, `_`, `.`; no `true` or `null`).
fn key_and_rest(content: &str) -> Option<(&str, &str)> {
    let bytes = content.as_bytes();
    // The first byte no key has must be the colon (else there is no colon, or the text
    // before it is no such key).
    let end = bytes.iter().position(|&b| BYTES[b as usize] != KEY)?;
    if bytes[end] != b':' {
        return None;
    }
    let (key, rest) = (&content[..end], &content[end + 1..]);
    let ok = bytes[0].is_ascii_alphabetic()
        && (rest.is_empty() || rest.starts_with(' '))
        && !(key.len() <= 5 && is_special_word(key));
    ok.then(|| (key, rest.trim_start_matches(' ')))
}

/// What a byte is to [`key_and_rest`] and [`scalar`]: one table lookup a byte, rather
/// than a chain of comparisons.
const BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => KEY,
            b'#' => HASH,
            b':' => COLON,
            // Printable ASCII but `\`, which this reader has always left to the YAML parser.
            b'\\' => OTHER,
            b' '..=b'~' => PLAIN,
            0x80.. => NON_ASCII,
            _ => OTHER,
        };
        b += 1;
    }
    t
};
/// Printable ASCII that is plain text in a value but not part of a key.
const PLAIN: u8 = 0;
/// A key's letters, digits, `-`, `_` and `.`; plain text in a value too.
const KEY: u8 = 1;
const HASH: u8 = 2;
const COLON: u8 = 3;
/// A byte of a UTF-8 sequence: the character is checked as a whole.
const NON_ASCII: u8 = 4;
/// Control characters, DEL and `\`: never in a value this reader reads.
const OTHER: u8 = 5;

/// A scalar value: quoted or plain text, a boolean, a list of quoted texts, or `None` when
/// YAML might read it otherwise.
fn scalar(s: &str) -> Option<Node<'_>> {
    if s.starts_with('"') {
        let (text, rest) = quoted(s)?;
        return rest.is_empty().then_some(Node::Text(text));
    }
    if s.starts_with('[') {
        return quoted_list(s);
    }
    match s {
        "true" | "True" | "TRUE" => return Some(Node::Bool(true)),
        "false" | "False" | "FALSE" => return Some(Node::Bool(false)),
        "null" | "Null" | "NULL" => return Some(Node::Null),
        _ => {}
    }
    if s.ends_with(':') || (s.len() <= 5 && is_special_word(s)) {
        return None;
    }
    let first = s.chars().next()?;
    // `<`, `(` and `/` are no YAML indicators: `argument-hint: <host> [flags]` is text.
    if !(first.is_ascii_alphanumeric()
        || matches!(first, '<' | '(' | '/')
        || (!first.is_ascii() && first.is_alphabetic()))
    {
        return None;
    }
    // Every byte of every description comes here: a table finds the few that need a look.
    let bytes = s.as_bytes();
    let mut ascii = true;
    let mut from = 0;
    while let Some(found) = bytes[from..].iter().position(|&b| BYTES[b as usize] > KEY) {
        let at = from + found;
        match BYTES[bytes[at] as usize] {
            // ` #` starts a comment, `: ` a mapping.
            HASH if at > 0 && bytes[at - 1] == b' ' => return None,
            COLON if bytes.get(at + 1) == Some(&b' ') => return None,
            HASH | COLON => {}
            NON_ASCII => ascii = false,
            _ => return None,
        }
        from = at + 1;
    }
    if !ascii && !s.chars().all(printable) {
        return None;
    }
    // A scalar starting with a digit is text only if it has a letter no number can contain
    // (`5m`, `2 hours`); `0x1f`, `1e5` or `1.0` are numbers, left to the YAML parser.
    if first.is_ascii_digit()
        && !s
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && !b"abcdefABCDEFxXoO".contains(&b))
    {
        return None;
    }
    Some(Node::Text(Cow::Borrowed(s)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml_ng::from_str::<Value>(s).unwrap()
    }

    const SIMPLE: &[&str] = &[
        "",
        "\n\n",
        "# only a comment\n",
        "description: Update flake inputs\n",
        "description: Update flake inputs   \nnixcmd:\n  timeout: 5m\n",
        "description: Maintenance task 7, check, update and verify the host\nnixcmd:\n  timeout: 5m\n",
        "nixcmd:\n",
        "nixcmd:\ndescription: x\n",
        "a: b\n# c\n\nd:\n    e: f\n    g:\n      h: true\n    i: False\n",
        "argument-hint: <host> [flags]\n",
        "description: Déploie l'hôte (vite!)\n",
        "description: http://example.com/a#b\n",
        "model: claude-3.5\nallowed-tools: Bash(git add:*), Read\n",
        "timeout: 30s\nother: 2 hours\nz: 0x1g\n",
        "a: Run `nix` [fast] {x} a|b, done\nb: x [y\n",
        "n1: null\nn2:\n",
        "a: \"^[0-9]{1,4}$\"\nb: \"\"\nc: \"it's \\\"x\\\" a\\\\b # no comment\"\n",
        "choices: [\"no\", \"yes\"]\nempty: []\none: [ \"a, b\" ]\n",
    ];

    #[test]
    fn simple_frontmatter_reads_as_serde_yaml_ng_reads_it() {
        for s in SIMPLE {
            assert_eq!(parse(s), Some(yaml(s)), "{s:?}");
        }
    }

    const DECLINED: &[&str] = &[
        "description: \"a\\nb\"\n",
        "description: \"open\n",
        "description: \"a\" # c\n",
        "description: \"a\" b\n",
        "l: [a, b]\n",
        "l: [\"a\" \"b\"]\n",
        "l: [\"a\"] x\n",
        "description: 'single'\n",
        "description: \"multi\n  line\"\n",
        "description: `code`\n",
        "description: [x]\n",
        "description: -x\n",
        "description: .5\n",
        "description: a # comment\n",
        "description: a: b\n",
        "description: first\n  continued\n",
        "version: 1.0\n",
        "n: 12\n",
        "n: 0x1f\n",
        "n: 1e5\n",
        "d: 2024-01-01\n",
        "b: yes\n",
        "b: ~\n",
        "l:\n  - a\n",
        "f: [a, b]\n",
        "m: {a: b}\n",
        "s: |\n  text\n",
        "s: >\n  text\n",
        "a: &x b\n",
        "a: *x\n",
        "a: !tag b\n",
        "a: b\na: c\n",
        "  indented: top\n",
        "a:\n    b: c\n  d: e\n",
        "a:\tb\n",
        "a: b\r\n",
        "\"key\": v\n",
        "true: v\n",
        "a b: c\n",
        "? a\n",
        "- a\n",
        "---\n",
        "aé: b\n",
        "a\\b: c\n",
        "description: a\\b\n",
        "description: a\u{7f}b\n",
        "description: x\u{2028}y\n",
    ];

    #[test]
    fn anything_else_is_left_to_the_yaml_parser() {
        for s in DECLINED {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }

    /// Reading up to the closing line gives what reading the text before it gives.
    #[test]
    fn reading_until_the_closing_line_reads_the_same() {
        for s in SIMPLE.iter().chain(DECLINED) {
            if s.lines()
                .any(|l| crate::frontmatter::is_closing(l, crate::frontmatter::Syntax::Yaml))
            {
                continue;
            }
            for (close, body) in [
                ("---\n", "# body\n"),
                ("...\n", "x"),
                ("--- \r\n", ""),
                ("---", ""),
            ] {
                let text = format!("{s}{close}{body}");
                let expected = read(s).map(|n| (n, s.len(), s.len() + close.len()));
                assert_eq!(read_until_closing(&text, 1 << 16), expected, "{text:?}");
            }
            assert_eq!(
                read_until_closing(s, 1 << 16),
                None,
                "{s:?}: no closing line"
            );
        }
        let text = "a: b\nc: d\n---\n";
        assert!(read_until_closing(text, 10).is_some());
        assert_eq!(
            read_until_closing(text, 9),
            None,
            "the closing line starts past the limit"
        );
        assert_eq!(read_until_closing("a: b\r\n---\n", 99), None);
        assert_eq!(read_until_closing("a: b\n\t\n---\n", 99), None);
    }

    #[test]
    fn long_mappings_are_read_and_their_duplicate_keys_refused() {
        let keys: Vec<String> = (0..40).map(|i| format!("key{i}: value {i}\n")).collect();
        let all = keys.concat();
        assert_eq!(parse(&all), Some(yaml(&all)));
        // A duplicate past the keys checked one by one, and one among them.
        for dup in ["key3: again\n", "key39: again\n"] {
            assert_eq!(parse(&format!("{all}{dup}")), None, "{dup}");
        }
        let nested = format!(
            "nixcmd:\n{}",
            all.lines().map(|l| format!("  {l}\n")).collect::<String>()
        );
        assert_eq!(parse(&nested), Some(yaml(&nested)));
        assert_eq!(parse(&format!("{nested}  key0: again\n")), None);
    }

    #[test]
    fn text_is_borrowed_unless_unescaped() {
        let Some(Node::Map(m)) = read("a: plain\nb: \"quoted\"\nc: \"x\\\"y\"\n") else {
            panic!("not read")
        };
        let text = |k| match m.get(k) {
            Some(Node::Text(t)) => t.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert!(matches!(text("a"), Cow::Borrowed("plain")));
        assert!(matches!(text("b"), Cow::Borrowed("quoted")));
        assert_eq!(text("c"), "x\"y");
        assert!(matches!(text("c"), Cow::Owned(_)));
    }
}

/// A differential check: many generated frontmatters, each either left to the YAML parser or
/// read exactly as serde_yaml_ng reads it.
#[cfg(test)]
mod differential {
    use super::*;

    const KEYS: &[&str] = &[
        "description",
        "a",
        "nixcmd",
        "args",
        "x-y",
        "k.v",
        "n_1",
        "On",
    ];
    const VALUES: &[&str] = &[
        "",
        "text",
        "inf",
        "nan",
        "Inf",
        "NaN",
        "infinity",
        "Infinity",
        "-inf",
        "0",
        "12",
        "1e5",
        "1E5x",
        "0o17",
        "0b101",
        "0x1F",
        "1_000",
        "5m",
        "2 hours",
        "12abc",
        "1:30",
        "1.5.2",
        "2024-01-01",
        "yes",
        "No",
        "ON",
        "off",
        "y",
        "N",
        "true",
        "False",
        "null",
        "NULL",
        "~",
        "<host>",
        "(a)",
        "/path",
        "a # c",
        "a#b",
        "a: b",
        "a:b",
        "x:",
        "'q'",
        "\"q\"",
        "\"a\\\"b\"",
        "[\"a\", \"b\"]",
        "[]",
        "[ ]",
        "[a]",
        "{a: b}",
        "-x",
        "- x",
        "!t",
        "&a x",
        "*a",
        "|",
        ">",
        "%x",
        "@x",
        "`x`",
        "é",
        "日本",
        "a  b",
        "Run `x` now",
        "a,b",
        "?x",
        "= 1",
        "TRUE",
        "True",
        "tRUE",
        "Null",
        "nULL",
        ".5",
        "+5",
        "+x",
        "x+",
        "0.",
        "00",
        "007",
        "0xg",
        "1e",
        "e1",
        "12:30:45",
        "3h30m",
        "v1.2",
        "1.2.3-rc",
        "[\"a\"",
        "[\"a\",]",
    ];

    /// xorshift: deterministic, no dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as usize
        }
        fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
            from[self.next() % from.len()]
        }
    }

    #[test]
    fn generated_frontmatter_reads_as_serde_yaml_ng_reads_it_or_is_left_to_it() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut read = 0;
        for _ in 0..20_000 {
            let mut text = String::new();
            let mut depth = 0usize;
            for _ in 0..(1 + rng.next() % 6) {
                let indent = match rng.next() % 4 {
                    0 if depth > 0 => depth - 1,
                    1 => depth + 1,
                    _ => depth,
                };
                depth = indent.min(3);
                text.push_str(&"  ".repeat(depth));
                text.push_str(rng.pick(KEYS));
                text.push(':');
                let v = rng.pick(VALUES);
                if !v.is_empty() {
                    text.push(' ');
                    text.push_str(v);
                }
                text.push('\n');
            }
            let Some(ours) = parse(&text) else { continue };
            read += 1;
            let theirs: Result<Value, _> = serde_yaml_ng::from_str(&text);
            match theirs {
                Ok(v) => assert_eq!(ours, v, "{text:?}"),
                Err(e) => panic!("read {text:?} as {ours}, but serde_yaml_ng says: {e}"),
            }
        }
        assert!(
            read > 1_000,
            "only {read} generated inputs took the simple path"
        );
    }
}
