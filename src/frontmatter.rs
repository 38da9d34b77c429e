//! Frontmatter: YAML between `---` lines (the Claude Code convention) or TOML between `+++`.
//! Splits it off the body and parses it into a JSON-like map, so the settings code reads one
//! shape whatever the syntax. Errors carry the file position.

use crate::diagnostic::Diagnostic;
use crate::source::{Position, SourceFile};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::ops::Range;

/// Frontmatter beyond this size is refused: it is metadata, and a limit keeps YAML cheap.
const MAX_FRONTMATTER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Yaml,
    Toml,
}

#[derive(Debug, Clone, Default)]
pub struct Frontmatter<'a> {
    pub syntax: Option<Syntax>,
    /// Byte range of the text between the delimiter lines.
    pub content: Range<usize>,
    /// Where the Markdown body starts.
    pub body_start: usize,
    pub map: Mapping<'a>,
}

/// A frontmatter value, in JSON's shape. Text the simple YAML reader reads borrows from the
/// file (most frontmatter); the full YAML and TOML parsers' values are owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Text(Cow<'a, str>),
    List(Vec<Node<'a>>),
    Map(Mapping<'a>),
}

/// Keys and values in file order. A frontmatter mapping has a handful of keys: a vector
/// searched in order costs less than hashing each key (and keeps the order without more).
/// Keys are unique: both readers make sure of it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping<'a>(pub Vec<(Cow<'a, str>, Node<'a>)>);

impl<'a> Mapping<'a> {
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node<'a>)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v))
    }
}

impl Node<'_> {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "boolean",
            Node::Number(_) => "number",
            Node::Text(_) => "string",
            Node::List(_) => "list",
            Node::Map(_) => "mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The same value as serde_json's: what the YAML parser would have given.
    pub fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Number(n) => Value::Number(n.clone()),
            Node::Text(s) => Value::String(s.to_string()),
            Node::List(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Map(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

impl From<Value> for Node<'static> {
    fn from(v: Value) -> Self {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Number(n) => Node::Number(n),
            Value::String(s) => Node::Text(Cow::Owned(s)),
            Value::Array(items) => Node::List(items.into_iter().map(Node::from).collect()),
            Value::Object(m) => Node::Map(Mapping(
                m.into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Node::from(v)))
                    .collect(),
            )),
        }
    }
}

impl Frontmatter<'_> {
    /// The byte offset of a key (`key:` in YAML, `key =` or `[key]` in TOML) inside the
    /// frontmatter, searching from `from`: used to point diagnostics at settings.
    pub fn key_offset(&self, file: &SourceFile, key: &str, from: usize) -> Option<usize> {
        // An empty key (YAML gives one for `{ &anchor: x }`) is found everywhere without the
        // search moving on: it names no place.
        if key.is_empty() {
            return None;
        }
        let text = &file.text[self.content.clone()];
        let mut pos = from.saturating_sub(self.content.start).min(text.len());
        while let Some(found) = text[pos..].find(key) {
            let at = pos + found;
            let before = text[..at].chars().next_back();
            let after = text[at + key.len()..].trim_start_matches(['"', '\'', ']']);
            let after = after.trim_start_matches([' ', '\t']);
            let key_start = matches!(
                before,
                None | Some(' ' | '\t' | '\n' | '{' | ',' | '"' | '\'' | '[' | '-')
            );
            let key_end = after.starts_with(':')
                || after.starts_with('=')
                || after.starts_with('.')
                || after.starts_with('\n')
                || after.starts_with("\r\n")
                || after.is_empty();
            if key_start && key_end {
                return Some(self.content.start + at);
            }
            pos = at + key.len();
        }
        None
    }
}

/// Splits and parses the frontmatter. A file without one gets an empty map.
pub fn parse(file: &SourceFile) -> Result<Frontmatter<'_>, Diagnostic> {
    let text = &file.text;
    if !(text.starts_with("---") || text.starts_with("+++")) {
        return Ok(Frontmatter::default());
    }
    let first_line_end = memchr::memchr(b'\n', text.as_bytes()).map_or(text.len(), |i| i + 1);
    let syntax = match text[..first_line_end].trim_end() {
        "---" => Syntax::Yaml,
        "+++" => Syntax::Toml,
        _ => return Ok(Frontmatter::default()),
    };
    let delimiter = if syntax == Syntax::Yaml { "---" } else { "+++" };
    // Most frontmatter is simple YAML: read in the same pass that finds its closing line.
    let simple = match syntax {
        Syntax::Yaml => {
            crate::simple_yaml::read_until_closing(&text[first_line_end..], MAX_FRONTMATTER)
        }
        Syntax::Toml => None,
    };
    let (content_end, body_start, simple) = match simple {
        Some((node, len, end)) => (first_line_end + len, first_line_end + end, Some(node)),
        None => match closing_line(text, first_line_end, syntax) {
            Some((content_end, body_start)) => (content_end, body_start, None),
            None => {
                return Err(Diagnostic::fatal(
                    "frontmatter",
                    format!("the frontmatter that starts here has no closing `{delimiter}` line"),
                )
                .at(file, 0..3)
                .with_hint(format!(
                    "end the frontmatter with a line containing only `{delimiter}`"
                )));
            }
        },
    };
    let content = first_line_end..content_end;
    if content.len() > MAX_FRONTMATTER {
        return Err(Diagnostic::fatal(
            "frontmatter",
            format!(
                "the frontmatter is {} KiB; at most 64 KiB is read",
                content.len() / 1024
            ),
        )
        .at(file, 0..3));
    }
    let source = &text[content.clone()];
    let value = match (simple, syntax) {
        (Some(node), _) => node,
        (None, Syntax::Yaml) => parse_yaml(file, source, content.start)?,
        (None, Syntax::Toml) => parse_toml(file, source, content.start)?,
    };
    let map = match value {
        Node::Map(map) => map,
        Node::Null => Mapping::default(),
        other => {
            return Err(Diagnostic::fatal(
                "frontmatter",
                format!(
                    "the frontmatter is a {}, not a mapping of keys to values",
                    other.kind_name()
                ),
            )
            .at(
                file,
                content.start..content.start + source.lines().next().map_or(1, str::len),
            )
            .with_hint("write `key: value` lines, e.g. `description: Update flake inputs`"));
        }
    };
    Ok(Frontmatter {
        syntax: Some(syntax),
        content,
        body_start,
        map,
    })
}

/// The first line from `from` on that closes a frontmatter of `syntax`: where it starts and
/// where the line after it starts.
fn closing_line(text: &str, from: usize, syntax: Syntax) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut offset = from;
    while offset < text.len() {
        let end = memchr::memchr(b'\n', &bytes[offset..]).map_or(text.len(), |i| offset + i + 1);
        if is_closing(&text[offset..end], syntax) {
            return Some((offset, end));
        }
        offset = end;
    }
    None
}

/// Whether `line` (with or without its newline) is the closing delimiter line: `---` (or
/// YAML's `...`) or `+++`, and nothing but whitespace after it.
pub(crate) fn is_closing(line: &str, syntax: Syntax) -> bool {
    // Only a line that starts like a delimiter can be one: the others need no trimming.
    if !matches!(line.as_bytes().first(), Some(b'-' | b'+' | b'.')) {
        return false;
    }
    let bare = line.trim_end();
    match syntax {
        Syntax::Yaml => bare == "---" || bare == "...",
        Syntax::Toml => bare == "+++",
    }
}

fn parse_yaml<'a>(file: &SourceFile, source: &'a str, base: usize) -> Result<Node<'a>, Diagnostic> {
    if let Some(node) = crate::simple_yaml::read(source) {
        return Ok(node);
    }
    let dups = Duplicates::default();
    let value = strict_yaml(source, &dups).map_err(|e| {
        if let Some((path, key)) = dups.found.take() {
            return duplicate_key(file, source, base, &e, path, key);
        }
        let message = e.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_string();
        let d = Diagnostic::fatal(
            "frontmatter",
            format!("the YAML frontmatter cannot be read: {message}"),
        )
        .with_hint("check the YAML syntax (indentation, quoting of values containing `: ` or `#`)");
        match e.location() {
            Some(loc) => d.at_position(relative(file, base, loc.line(), loc.column()), 1),
            None => d.at(file, base..base + 1),
        }
    })?;
    Ok(Node::from(value))
}

/// serde_yaml_ng's value of `source`, as `serde_yaml_ng::from_str::<Value>` gives it, but a
/// key given twice in one mapping is an error (whose location is that key) where
/// serde_json's value lets the last one win: a second `args:` silently replaced the first,
/// `pattern` and all. The duplicate is recorded in `dups`.
fn strict_yaml(source: &str, dups: &Duplicates) -> Result<Value, serde_yaml_ng::Error> {
    use serde::de::DeserializeSeed as _;
    Strict {
        dups,
        path: &Link::Root,
    }
    .deserialize(serde_yaml_ng::Deserializer::from_str(source))
}

/// The error for a key given twice: at the second, naming the line of the first (found by
/// reading the YAML again, stopping at the first occurrence of that key in that mapping).
fn duplicate_key(
    file: &SourceFile,
    source: &str,
    base: usize,
    second: &serde_yaml_ng::Error,
    path: Vec<Segment>,
    key: String,
) -> Diagnostic {
    let again = Duplicates {
        target: Some((path, key.clone())),
        ..Duplicates::default()
    };
    let first = strict_yaml(source, &again)
        .err()
        .and_then(|e| e.location())
        .map(|loc| relative(file, base, loc.line(), loc.column()).line);
    let shown = crate::terminal_text::visible(&key);
    let message = match first {
        Some(line) => {
            format!("the YAML frontmatter sets `{shown}` twice: it is already set on line {line}")
        }
        None => format!("the YAML frontmatter sets `{shown}` twice"),
    };
    let d = Diagnostic::fatal("frontmatter", message).with_hint(format!(
        "keep one `{shown}:` (merge what the two hold): YAML readers keep only the last, and \
         what the earlier one says would be lost"
    ));
    match second.location() {
        Some(loc) => d.at_position(
            relative(file, base, loc.line(), loc.column()),
            key.chars().count(),
        ),
        None => d.at(file, base..base + 1),
    }
}

/// What [`strict_yaml`] looks for and found.
#[derive(Default)]
struct Duplicates {
    /// The first key found a second time in its mapping: the mapping's path and the key.
    found: std::cell::RefCell<Option<(Vec<Segment>, String)>>,
    /// When set, no duplicate is looked for: the first occurrence of this key in the mapping
    /// at this path is an error (its location is the key's).
    target: Option<(Vec<Segment>, String)>,
}

/// A step from the top of the frontmatter to a value.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// The path to the value being read, borrowed up the stack: made into a vector only for the
/// duplicate found (and on the error's second reading).
enum Link<'a> {
    Root,
    Key(&'a Link<'a>, &'a str),
    Index(&'a Link<'a>, usize),
}

impl Link<'_> {
    fn to_vec(&self) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut at = self;
        loop {
            match at {
                Link::Root => break,
                Link::Key(up, k) => {
                    out.push(Segment::Key(k.to_string()));
                    at = up;
                }
                Link::Index(up, i) => {
                    out.push(Segment::Index(*i));
                    at = up;
                }
            }
        }
        out.reverse();
        out
    }
}

/// A value read as serde_json's `Value` reads it, with mappings read by [`Keys`].
struct Strict<'a> {
    dups: &'a Duplicates,
    path: &'a Link<'a>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Value, E> {
        use serde::Deserialize as _;
        Value::deserialize(serde::de::IntoDeserializer::<E>::into_deserializer(v))
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Value, E> {
        use serde::Deserialize as _;
        Value::deserialize(serde::de::IntoDeserializer::<E>::into_deserializer(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let path = Link::Index(self.path, items.len());
            let item = Strict {
                dups: self.dups,
                path: &path,
            };
            match seq.next_element_seed(item)? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Keys {
            dups: self.dups,
            path: self.path,
            seen: &out,
        })? {
            let path = Link::Key(self.path, &key);
            let value = map.next_value_seed(Strict {
                dups: self.dups,
                path: &path,
            })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// A mapping's key, read as serde_json's `Value` reads keys; an error when the mapping has
/// it already (or, on the second reading, when it is the key looked for).
struct Keys<'a> {
    dups: &'a Duplicates,
    path: &'a Link<'a>,
    seen: &'a Map<String, Value>,
}

impl Keys<'_> {
    fn check<E: serde::de::Error>(self, key: &str) -> Result<(), E> {
        let stop = match &self.dups.target {
            Some((path, target)) => target == key && *path == self.path.to_vec(),
            None => {
                let again = self.seen.contains_key(key);
                if again {
                    *self.dups.found.borrow_mut() = Some((self.path.to_vec(), key.to_string()));
                }
                again
            }
        };
        match stop {
            true => Err(E::custom(format!("duplicate key `{key}`"))),
            false => Ok(()),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Keys<'_> {
    type Value = String;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Keys<'_> {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        self.check(v)?;
        Ok(v.to_string())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        self.check(&v)?;
        Ok(v)
    }
}

fn parse_toml(file: &SourceFile, source: &str, base: usize) -> Result<Node<'static>, Diagnostic> {
    let table: toml::Table = toml::from_str(source).map_err(|e| {
        let d = Diagnostic::fatal(
            "frontmatter",
            format!("the TOML frontmatter cannot be read: {}", e.message()),
        );
        match e.span() {
            Some(span) => d.at(file, base + span.start..base + span.end),
            None => d.at(file, base..base + 1),
        }
    })?;
    let value = serde_json::to_value(table).map_err(|e| {
        Diagnostic::fatal(
            "frontmatter",
            format!("the TOML frontmatter cannot be read: {e}"),
        )
        .at(file, base..base + 1)
    })?;
    Ok(Node::from(value))
}

/// A 1-based line/column inside the frontmatter, as a file position.
fn relative(file: &SourceFile, base: usize, line: usize, col: usize) -> Position {
    let start = file.position(base);
    Position {
        line: start.line + line.saturating_sub(1),
        col: col.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_toml_give_the_same_map() {
        let y = SourceFile::new(
            "y.md",
            "---\ndescription: Hi\nnixcmd:\n  timeout: 5m\n---\n# T\n",
        );
        let t = SourceFile::new(
            "t.md",
            "+++\ndescription = \"Hi\"\n[nixcmd]\ntimeout = \"5m\"\n+++\n# T\n",
        );
        let fy = parse(&y).unwrap();
        let ft = parse(&t).unwrap();
        assert_eq!(fy.map, ft.map);
        assert_eq!(&y.text[fy.body_start..], "# T\n");
        assert_eq!(y.position(fy.key_offset(&y, "timeout", 0).unwrap()).line, 4);
        assert_eq!(t.position(ft.key_offset(&t, "nixcmd", 0).unwrap()).line, 3);
    }

    /// Found by the fuzzer: `{ &anchor: true }` gives an empty key, and looking for it never
    /// moved on (`check` hung). It names no place.
    #[test]
    fn an_empty_key_has_no_offset() {
        let f = SourceFile::new(
            "a.md",
            "---
nixcmd:
  args:
    extra: { &ariadic: true }
---
# A
",
        );
        let fm = parse(&f).unwrap();
        assert_eq!(fm.key_offset(&f, "", 0), None);
        assert_eq!(fm.key_offset(&f, "", 20), None);
    }

    #[test]
    fn closing_lines_are_found_as_lines() {
        for (text, body) in [
            ("---\na: b\n---  \nbody\n", "body\n"),
            ("---\na: b\n...\nbody\n", "body\n"),
            ("---\nl:\n- a\n- --\n---", ""),
            ("---\r\na: b\r\n---\r\nbody", "body"),
            ("+++\na = \"---\"\n+++\nbody", "body"),
        ] {
            let f = SourceFile::new("a.md", text);
            let fm = parse(&f).unwrap_or_else(|d| panic!("{text:?}: {}", d.message));
            assert_eq!(&text[fm.body_start..], body, "{text:?}");
        }
        for text in [
            "---\na: b\n ---\n",
            "+++\na = 1\n...\n",
            "---\na: b\n--- x\n",
        ] {
            let f = SourceFile::new("a.md", text);
            assert!(parse(&f).is_err(), "{text:?}");
        }
    }

    #[test]
    fn rejects_unclosed_and_non_mapping_frontmatter() {
        let f = SourceFile::new("a.md", "---\ndescription: x\n# body\n");
        assert!(parse(&f).unwrap_err().message.contains("no closing"));
        let f = SourceFile::new("b.md", "---\n- a\n- b\n---\n");
        let d = parse(&f).unwrap_err();
        assert!(d.message.contains("a list, not a mapping"), "{}", d.message);
        assert_eq!(d.position.unwrap().line, 2);
        let f = SourceFile::new("c.md", "---\na: [1,\n---\n");
        assert_eq!(parse(&f).unwrap_err().position.unwrap().line, 3);
    }

    /// A key given twice in a mapping is refused at the second, naming the first's line:
    /// the YAML parser let the last one win, and an `args` declaration (with its `pattern`)
    /// vanished.
    #[test]
    fn duplicate_yaml_keys_are_refused_at_the_second() {
        for (text, line, col, first) in [
            (
                "---\ndescription: d\nnixcmd:\n  args:\n    host: { pattern: \"^a$\" }\n  args:\n    host: {}\n---\n",
                6,
                3,
                4,
            ),
            (
                "---\nnixcmd:\n  timeout: 5m\ndescription: d\nnixcmd:\n  timeout: 9m\n---\n",
                5,
                1,
                2,
            ),
            (
                "---\nnixcmd:\n  args:\n    host: {required: true, required: false}\n---\n",
                4,
                28,
                4,
            ),
            (
                "---\nl:\n  - {a: 1}\n  - {b: 1,\n     \"b\": 2}\n---\n",
                5,
                6,
                4,
            ),
        ] {
            let f = SourceFile::new("a.md", text);
            let d = parse(&f).expect_err(text);
            assert_eq!(d.severity, crate::diagnostic::Severity::Fatal, "{text:?}");
            let at = d.position.expect("a position");
            assert_eq!((at.line, at.col), (line, col), "{text:?}: {}", d.message);
            assert!(
                d.message.contains(&format!("line {first}")),
                "{text:?}: {}",
                d.message
            );
        }
        // The same key in two mappings is no duplicate.
        let f = SourceFile::new(
            "a.md",
            "---\nnixcmd:\n  args:\n    a: {required: true}\n    b: {required: true}\n---\n",
        );
        assert!(parse(&f).is_ok());
    }

    #[test]
    fn alias_bombs_are_refused_quickly() {
        let mut y = String::from(
            "---\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (i, name) in ["b", "c", "d", "e", "f", "g", "h", "i"].iter().enumerate() {
            let prev = ["a", "b", "c", "d", "e", "f", "g", "h"][i];
            y.push_str(&format!("{name}: &{name} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        }
        y.push_str("---\n");
        let f = SourceFile::new("bomb.md", y);
        let d = parse(&f).unwrap_err();
        assert!(d.message.contains("YAML"), "{}", d.message);
    }
}
