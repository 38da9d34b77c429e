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
    let value = serde_yaml_ng::from_str::<Value>(source).map_err(|e| {
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
