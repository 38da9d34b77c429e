//! Fence attributes: `bash {id=update retries=2 confirm="Push?" readonly}`. Splits a fence's
//! info string into a language and raw `key[=value]` pairs (with their offsets in the info
//! string), then validates them into [`Attrs`]. Pure: callers map offsets to file positions.

use crate::command::{Attrs, MaxFail, OnFail};
use crate::duration;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::ops::Range;

/// Every attribute nixcmd knows, for "unknown attribute" and "did you mean".
pub const KNOWN: &[&str] = &[
    "id",
    "confirm",
    "on-fail",
    "readonly",
    "timeout",
    "retries",
    "backoff",
    "rollback",
    "always",
    "irreversible",
    "norun",
    "hosts",
    "parallel",
    "max-fail",
    "canary",
    "group",
    "when",
    "unless",
];

/// One `key` or `key=value` as written. Borrowed from the info string: only a quoted value
/// with a `\` escape needs a copy of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct RawAttr<'a> {
    pub key: &'a str,
    pub value: Option<Cow<'a, str>>,
    /// Byte range of the whole `key=value` in the info string.
    pub span: Range<usize>,
    /// Byte range of the value (or of the key for flags).
    pub value_span: Range<usize>,
}

/// A problem with an offset range into the info string.
#[derive(Debug, Clone, PartialEq)]
pub struct AttrError {
    pub code: &'static str,
    pub message: String,
    pub span: Range<usize>,
    pub hint: Option<String>,
}

/// A fence's language, lowercased. Borrowed from the info string unless it has capitals
/// (`Bash`): every fence of every listed file is parsed, and almost none need a copy.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Language<'a>(Cow<'a, str>);

impl<'a> Language<'a> {
    fn of(written: &'a str) -> Self {
        Language(if written.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(written.to_ascii_lowercase())
        } else {
            Cow::Borrowed(written)
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Language<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<Language<'_>> for String {
    fn from(l: Language<'_>) -> String {
        l.0.into_owned()
    }
}

/// A fence info string, split. A fence has a handful of attributes at most: four fit
/// without a heap allocation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Info<'a> {
    pub language: Language<'a>,
    pub attrs: SmallVec<[RawAttr<'a>; 4]>,
    pub errors: Vec<AttrError>,
}

/// Splits `bash {id=x confirm="a b" readonly}`. Text after the language that is not in
/// braces (`bash title="x"`) is reported, because silently ignoring it would drop a gate.
pub fn parse_info(info: &str) -> Info<'_> {
    let b = info.as_bytes();
    // The usual language is lowercase letters followed by a space, a `{` or the end: it
    // is its own lowercase form. Anything else takes the general rule.
    let lower = b.iter().take_while(|c| c.is_ascii_lowercase()).count();
    let lang_end = match b.get(lower) {
        None | Some(b' ' | b'{') => lower,
        Some(_) => language_end(info, lower),
    };
    let mut out = Info {
        language: if lang_end == lower {
            Language(Cow::Borrowed(&info[..lang_end]))
        } else {
            Language::of(&info[..lang_end])
        },
        ..Info::default()
    };
    // Most fences are a bare language (`bash`): nothing more to look at.
    if lang_end < info.len() {
        attributes(info, lang_end, &mut out);
    }
    out
}

/// Where the language ends, looking from `from` (a character boundary): at the first
/// whitespace (Unicode's, as `char::is_whitespace`) or `{`. Bytewise while the text is
/// ASCII, which a language always is in practice.
fn language_end(info: &str, from: usize) -> usize {
    for (i, &b) in info.as_bytes().iter().enumerate().skip(from) {
        if b >= 0x80 {
            // `i` follows ASCII bytes only, so it is a character boundary.
            return info[i..]
                .find(|c: char| c.is_whitespace() || c == '{')
                .map_or(info.len(), |j| i + j);
        }
        if b == b'{' || (b as char).is_whitespace() {
            return i;
        }
    }
    info.len()
}

/// What follows the language (at `lang_end`, before the end of `info`).
fn attributes<'a>(info: &'a str, lang_end: usize, out: &mut Info<'a>) {
    let b = info.as_bytes();
    // Usually spaces then the list: `bash {…}`. Otherwise trim as `str::trim_start` does.
    let spaces = b[lang_end..].iter().take_while(|&&c| c == b' ').count();
    let open = if b.get(lang_end + spaces) == Some(&b'{') {
        lang_end + spaces
    } else {
        let rest = &info[lang_end..];
        let trimmed = rest.trim_start();
        if trimmed.is_empty() {
            return;
        }
        let open = lang_end + (rest.len() - trimmed.len());
        if !trimmed.starts_with('{') {
            out.errors.push(AttrError {
                code: "malformed-attribute",
                message: format!(
                    "text after the language is not in braces: `{}`",
                    trimmed.trim_end()
                ),
                span: open..info.trim_end().len(),
                hint: Some("write attributes as `bash {key=value flag}`".into()),
            });
            return;
        }
        open
    };
    let Some(close_rel) = find_closing_brace(&info[open..]) else {
        out.errors.push(AttrError {
            code: "malformed-attribute",
            message: "attribute list has no closing `}`".into(),
            span: open..info.len(),
            hint: Some("close the list: `bash {id=x}`".into()),
        });
        return;
    };
    let close = open + close_rel;
    let tail = &info[close + 1..];
    let after = if tail.is_empty() { tail } else { tail.trim() };
    if !after.is_empty() {
        let start = close + 1 + tail.find(after).unwrap_or(0);
        out.errors.push(AttrError {
            code: "malformed-attribute",
            message: format!("unexpected text after the attribute list: `{after}`"),
            span: start..start + after.len(),
            hint: None,
        });
    }
    tokenize(info, open + 1, close, out);
}

/// The index of the `}` that closes the list, skipping braces inside quotes. Bytewise: the
/// bytes looked for are ASCII, which never occur inside a multi-byte character, and an
/// escape skips the first byte of the character it escapes, the rest matching nothing.
fn find_closing_brace(s: &str) -> Option<usize> {
    // Usually no quote comes before the first `}`, which then closes the list.
    match brace_or_quote(s.as_bytes()) {
        Some(i) if s.as_bytes()[i] == b'}' => return Some(i),
        None => return None,
        Some(_) => {}
    }
    let mut in_quote = false;
    let mut escaped = false;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if in_quote => escaped = true,
            b'"' => in_quote = !in_quote,
            b'}' if !in_quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// The first `}` or `"`, eight bytes at a time: a list is a few dozen bytes, too short for
/// `memchr2` to win back its set-up.
fn brace_or_quote(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // The top bit of each byte of `w` equal to `c`. Bytes above a match may be flagged
    // too (a borrow), but never one below: the lowest flag is the first match.
    let matches = |w: u64, c: u8| {
        let x = w ^ (ONES * c as u64);
        x.wrapping_sub(ONES) & !x & (0x80 * ONES)
    };
    let mut at = 0;
    while let Some(word) = b[at..].first_chunk::<8>() {
        let w = u64::from_le_bytes(*word);
        let found = matches(w, b'}') | matches(w, b'"');
        if found != 0 {
            return Some(at + found.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    b[at..]
        .iter()
        .position(|&c| c == b'}' || c == b'"')
        .map(|i| at + i)
}

fn tokenize<'a>(info: &'a str, start: usize, end: usize, out: &mut Info<'a>) {
    let bytes = info.as_bytes();
    let mut i = start;
    while i < end {
        if bytes[i].is_ascii_whitespace() || bytes[i] == b',' {
            i += 1;
            continue;
        }
        let tok_start = i;
        while i < end && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' && bytes[i] != b',' {
            i += 1;
        }
        let key = &info[tok_start..i];
        if i < end && bytes[i] == b'=' {
            i += 1;
            let value_start = i;
            if i < end && bytes[i] == b'"' {
                let (value, next, closed) = quoted(info, i + 1, end);
                i = next;
                if !closed {
                    out.errors.push(AttrError {
                        code: "malformed-attribute",
                        message: format!("the quoted value of `{key}` is not closed"),
                        span: value_start..end,
                        hint: Some("end the value with `\"`".into()),
                    });
                }
                out.attrs.push(RawAttr {
                    key,
                    value: Some(value),
                    span: tok_start..i,
                    value_span: value_start..i,
                });
            } else {
                // `hosts=a,b` is one value: a comma inside a host list does not end it.
                let list = key == "hosts";
                while i < end && !bytes[i].is_ascii_whitespace() && (list || bytes[i] != b',') {
                    i += 1;
                }
                out.attrs.push(RawAttr {
                    key,
                    value: Some(Cow::Borrowed(&info[value_start..i])),
                    span: tok_start..i,
                    value_span: value_start..i,
                });
            }
        } else {
            out.attrs.push(RawAttr {
                key,
                value: None,
                span: tok_start..i,
                value_span: tok_start..i,
            });
        }
    }
}

/// The quoted value starting at `start` (after its opening `"`), unescaped; where scanning
/// stopped (after the closing `"`, or `end`); and whether the value was closed.
fn quoted(info: &str, start: usize, end: usize) -> (Cow<'_, str>, usize, bool) {
    let bytes = info.as_bytes();
    // Without a `\` before the closing quote, the value is the text as written.
    match bytes[start..end]
        .iter()
        .position(|&b| b == b'"' || b == b'\\')
    {
        None => return (Cow::Borrowed(&info[start..end]), end, false),
        Some(n) if bytes[start + n] == b'"' => {
            return (Cow::Borrowed(&info[start..start + n]), start + n + 1, true);
        }
        Some(_) => {}
    }
    let mut i = start;
    let mut value = String::new();
    while i < end {
        let c = info[i..].chars().next().unwrap_or('"');
        // A `\` as the list's last character escapes nothing: it is kept.
        if c == '\\' && i + 1 < end {
            let next = info[i + 1..].chars().next().unwrap_or('\\');
            value.push(next);
            i += 1 + next.len_utf8();
            continue;
        }
        i += c.len_utf8();
        if c == '"' {
            return (Cow::Owned(value), i, true);
        }
        value.push(c);
    }
    (Cow::Owned(value), i, false)
}

/// Validated attributes plus the explicit id, if one was given.
#[derive(Debug, Clone, Default)]
pub struct Validated {
    pub attrs: Attrs,
    pub id: Option<(String, Range<usize>)>,
    pub errors: Vec<AttrError>,
}

/// Ids are slugs: they name log files and appear in resume commands.
/// Bytewise, by table: any byte of a non-ASCII character fails the test, as the character
/// would.
pub fn is_valid_id(id: &str) -> bool {
    match id.as_bytes() {
        [first, rest @ ..] if first.is_ascii_alphanumeric() && id.len() <= 64 => {
            rest.iter().all(|&c| ID_BYTE[c as usize])
        }
        _ => false,
    }
}

/// The bytes an id may hold after its first.
static ID_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        c += 1;
    }
    table
};

pub fn validate(raw: &[RawAttr<'_>]) -> Validated {
    let mut v = Validated::default();
    // A fence has a handful of attributes, scanned in place; a set only for a fence line of
    // thousands (a generated or hostile file), where the scan would be quadratic.
    let mut seen: Option<std::collections::HashSet<&str>> =
        (raw.len() > 32).then(std::collections::HashSet::new);
    for (i, attr) in raw.iter().enumerate() {
        let repeated = match seen.as_mut() {
            Some(seen) => !seen.insert(attr.key),
            None => raw[..i].iter().any(|a| a.key == attr.key),
        };
        if repeated {
            v.errors.push(AttrError {
                code: "malformed-attribute",
                message: format!("attribute `{}` is given twice", attr.key),
                span: attr.span.clone(),
                hint: Some("keep one of them".into()),
            });
            continue;
        }
        if let Err(e) = apply(attr, &mut v) {
            v.errors.push(e);
        }
    }
    v
}

/// `when=`/`unless=` where a block must not be skipped without a word: on a rollback block
/// (`rollback`: the block is in `## Rollback`) or an `always` block. A cleanup or a
/// compensation that silently does not run is the wrong default; its own shell can test the
/// variable and say what it skips.
pub fn misplaced_conditions(raw: &[RawAttr<'_>], attrs: &Attrs, rollback: bool) -> Vec<AttrError> {
    if !rollback && !attrs.always {
        return Vec::new();
    }
    let what = if rollback {
        "a rollback block"
    } else {
        "an `always` block"
    };
    let mut out = Vec::new();
    for (key, name) in [("when", &attrs.when), ("unless", &attrs.unless)] {
        let (Some(name), Some(attr)) = (name, raw.iter().find(|a| a.key == key)) else {
            continue;
        };
        // The test that skips: `when` skips when the value is not 1, `unless` when it is.
        let test = if key == "when" { "!=" } else { "=" };
        out.push(AttrError {
            code: "malformed-attribute",
            message: format!("`{key}=` is not allowed on {what}: it must not be skipped silently"),
            span: attr.span.clone(),
            hint: Some(format!(
                "test the variable in the block's own shell and say what is skipped, e.g. \
                 `if [ \"${{{name}:-}}\" {test} 1 ]; then echo \"skipped\"; exit 0; fi`"
            )),
        });
    }
    out
}

fn apply(attr: &RawAttr<'_>, v: &mut Validated) -> Result<(), AttrError> {
    let key = attr.key;
    let bad = |message: String, hint: &str| AttrError {
        code: "malformed-attribute",
        message,
        span: attr.value_span.clone(),
        hint: (!hint.is_empty()).then(|| hint.to_string()),
    };
    let flag = |v: &mut bool| -> Result<(), AttrError> {
        match attr.value.as_deref() {
            None | Some("true") => {
                *v = true;
                Ok(())
            }
            Some("false") => Ok(()),
            Some(other) => Err(bad(
                format!("`{key}` is a flag and takes no value (got `{other}`)"),
                &format!("write just `{key}`"),
            )),
        }
    };
    let value = || -> Result<&str, AttrError> {
        match attr.value.as_deref() {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(AttrError {
                code: "malformed-attribute",
                message: format!("`{key}` needs a value"),
                span: attr.span.clone(),
                hint: Some(format!("write `{key}=…`")),
            }),
        }
    };
    let integer = |max: u32| -> Result<u32, AttrError> {
        let s = value()?;
        match s.parse::<u32>() {
            Ok(n) if n <= max => Ok(n),
            Ok(_) => Err(bad(format!("`{key}={s}` is more than {max}"), "")),
            Err(_) => Err(bad(
                format!("`{key}` must be a whole number, not `{s}`"),
                "",
            )),
        }
    };
    let a = &mut v.attrs;
    match key {
        "id" => {
            let s = value()?;
            if !is_valid_id(s) {
                return Err(bad(
                    format!("`{s}` is not a valid id"),
                    "ids use letters, digits, `-`, `_` and `.`, start with a letter or digit, at most 64 characters",
                ));
            }
            v.id = Some((s.to_string(), attr.value_span.clone()));
        }
        "confirm" => {
            a.confirm = Some(match attr.value.as_deref() {
                None | Some("") => "Run this step?".to_string(),
                Some(q) => q.to_string(),
            })
        }
        "on-fail" => {
            a.on_fail = match value()? {
                "continue" | "warn" => OnFail::Continue,
                "stop" => OnFail::Stop,
                other => {
                    return Err(bad(
                        format!("`on-fail` must be `stop` or `continue`, not `{other}`"),
                        "",
                    ));
                }
            }
        }
        "readonly" => flag(&mut a.readonly)?,
        "always" => flag(&mut a.always)?,
        "irreversible" => flag(&mut a.irreversible)?,
        "norun" => flag(&mut a.norun)?,
        "timeout" | "backoff" => {
            let d = duration::parse(value()?).map_err(|e| bad(e, "e.g. 90s, 45m, 1h30m"))?;
            if d.is_zero() {
                return Err(bad(format!("`{key}` must be longer than zero"), ""));
            }
            if key == "timeout" {
                a.timeout = Some(d);
            } else {
                a.backoff = Some(d);
            }
        }
        "retries" => a.retries = integer(100)?,
        "parallel" => {
            let n = integer(1000)?;
            if n == 0 {
                return Err(bad("`parallel` must be at least 1".into(), ""));
            }
            a.parallel = Some(n);
        }
        "canary" => a.canary = Some(integer(1000)?),
        "max-fail" => {
            let s = value()?;
            let parsed = match s.strip_suffix('%') {
                Some(p) => p
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= 100)
                    .map(MaxFail::Percent),
                None => s.parse::<u32>().ok().map(MaxFail::Count),
            };
            a.max_fail = Some(parsed.ok_or_else(|| {
                bad(
                    format!("`max-fail` must be a count or a percentage, not `{s}`"),
                    "e.g. max-fail=2 or max-fail=25%",
                )
            })?);
        }
        "rollback" | "group" => {
            let s = value()?;
            if !is_valid_id(s) {
                return Err(bad(format!("`{s}` is not a valid id"), ""));
            }
            if key == "rollback" {
                a.rollback = Some(s.to_string());
            } else {
                a.group = Some(s.to_string());
            }
        }
        "when" | "unless" => {
            let s = value()?;
            if !crate::condition::is_var_name(s) {
                return Err(bad(
                    format!("`{key}={s}`: `{s}` is not a variable name"),
                    &format!(
                        "write {key}=NAME with NAME a shell variable name (letters, digits and `_`, not starting with a digit), without `$`"
                    ),
                ));
            }
            if key == "when" {
                a.when = Some(s.to_string());
            } else {
                a.unless = Some(s.to_string());
            }
        }
        "hosts" => {
            let s = value()?;
            // `hosts=arg:NAME`: the hosts come from the run's argument NAME (local when empty).
            if let Some(name) = s.strip_prefix("arg:") {
                if !is_valid_id(name) {
                    return Err(bad(
                        format!("`hosts={s}`: `{name}` is not an argument name"),
                        "write hosts=arg:NAME with NAME an argument declared under nixcmd.args",
                    ));
                }
            } else if let Err(why) = crate::hosts::selector::Selector::parse(s) {
                // Malformed whatever the inventory: found by `check`, not by the run.
                return Err(bad(why.message(&format!("hosts={s}")), why.hint()));
            }
            a.hosts = Some(s.to_string());
        }
        _ => {
            let hint = crate::suggest::closest(key, KNOWN.iter().copied())
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("known attributes: {}", KNOWN.join(", ")));
            return Err(AttrError {
                code: "unknown-attribute",
                message: format!("unknown attribute `{key}`"),
                span: attr.span.clone(),
                hint: Some(hint),
            });
        }
    }
    Ok(())
}

/// The splitting before the borrowing rewrite, char by char and owning every piece: the new
/// one must give the same result on every input.
#[cfg(test)]
mod reference {
    use super::AttrError;
    use std::ops::Range;

    #[derive(Debug, Clone, PartialEq)]
    pub struct RawAttr {
        pub key: String,
        pub value: Option<String>,
        pub span: Range<usize>,
        pub value_span: Range<usize>,
    }

    #[derive(Debug, Clone, PartialEq, Default)]
    pub struct Info {
        pub language: String,
        pub attrs: Vec<RawAttr>,
        pub errors: Vec<AttrError>,
    }

    pub fn is_valid_id(id: &str) -> bool {
        let mut chars = id.chars();
        matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
            && id.len() <= 64
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    }

    pub fn parse_info(info: &str) -> Info {
        let lang_end = info
            .find(|c: char| c.is_whitespace() || c == '{')
            .unwrap_or(info.len());
        let mut out = Info {
            language: info[..lang_end].to_ascii_lowercase(),
            ..Info::default()
        };
        let rest = &info[lang_end..];
        let trimmed = rest.trim_start();
        if trimmed.is_empty() {
            return out;
        }
        let open = lang_end + (rest.len() - trimmed.len());
        if !trimmed.starts_with('{') {
            out.errors.push(AttrError {
                code: "malformed-attribute",
                message: format!(
                    "text after the language is not in braces: `{}`",
                    trimmed.trim_end()
                ),
                span: open..info.trim_end().len(),
                hint: Some("write attributes as `bash {key=value flag}`".into()),
            });
            return out;
        }
        let Some(close_rel) = find_closing_brace(&info[open..]) else {
            out.errors.push(AttrError {
                code: "malformed-attribute",
                message: "attribute list has no closing `}`".into(),
                span: open..info.len(),
                hint: Some("close the list: `bash {id=x}`".into()),
            });
            return out;
        };
        let close = open + close_rel;
        let after = info[close + 1..].trim();
        if !after.is_empty() {
            let start = close + 1 + info[close + 1..].find(after).unwrap_or(0);
            out.errors.push(AttrError {
                code: "malformed-attribute",
                message: format!("unexpected text after the attribute list: `{after}`"),
                span: start..start + after.len(),
                hint: None,
            });
        }
        tokenize(info, open + 1, close, &mut out);
        out
    }

    /// The index of the `}` that closes the list, skipping braces inside quotes.
    fn find_closing_brace(s: &str) -> Option<usize> {
        let mut in_quote = false;
        let mut escaped = false;
        for (i, c) in s.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quote => escaped = true,
                '"' => in_quote = !in_quote,
                '}' if !in_quote => return Some(i),
                _ => {}
            }
        }
        None
    }

    fn tokenize(info: &str, start: usize, end: usize, out: &mut Info) {
        let bytes = info.as_bytes();
        let mut i = start;
        while i < end {
            if bytes[i].is_ascii_whitespace() || bytes[i] == b',' {
                i += 1;
                continue;
            }
            let tok_start = i;
            while i < end && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' && bytes[i] != b','
            {
                i += 1;
            }
            let key = info[tok_start..i].to_string();
            if i < end && bytes[i] == b'=' {
                i += 1;
                let value_start = i;
                if i < end && bytes[i] == b'"' {
                    i += 1;
                    let mut value = String::new();
                    let mut closed = false;
                    while i < end {
                        let c = info[i..].chars().next().unwrap_or('"');
                        if c == '\\' && i + 1 < end {
                            let next = info[i + 1..].chars().next().unwrap_or('\\');
                            value.push(next);
                            i += 1 + next.len_utf8();
                            continue;
                        }
                        i += c.len_utf8();
                        if c == '"' {
                            closed = true;
                            break;
                        }
                        value.push(c);
                    }
                    if !closed {
                        out.errors.push(AttrError {
                            code: "malformed-attribute",
                            message: format!("the quoted value of `{key}` is not closed"),
                            span: value_start..end,
                            hint: Some("end the value with `\"`".into()),
                        });
                    }
                    out.attrs.push(RawAttr {
                        key,
                        value: Some(value),
                        span: tok_start..i,
                        value_span: value_start..i,
                    });
                } else {
                    // `hosts=a,b` is one value: a comma inside a host list does not end it.
                    let list = key == "hosts";
                    while i < end && !bytes[i].is_ascii_whitespace() && (list || bytes[i] != b',') {
                        i += 1;
                    }
                    out.attrs.push(RawAttr {
                        key,
                        value: Some(info[value_start..i].to_string()),
                        span: tok_start..i,
                        value_span: value_start..i,
                    });
                }
            } else {
                out.attrs.push(RawAttr {
                    key,
                    value: None,
                    span: tok_start..i,
                    value_span: tok_start..i,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn splits_language_and_attributes() {
        let info = parse_info(r#"bash {id=up retries=2 confirm="Push \"now\"?" readonly}"#);
        assert_eq!(info.language.as_str(), "bash");
        assert!(info.errors.is_empty(), "{:?}", info.errors);
        let keys: Vec<_> = info.attrs.iter().map(|a| a.key).collect();
        assert_eq!(keys, ["id", "retries", "confirm", "readonly"]);
        let v = validate(&info.attrs);
        assert!(v.errors.is_empty());
        assert_eq!(v.id.unwrap().0, "up");
        assert_eq!(v.attrs.retries, 2);
        assert_eq!(v.attrs.confirm.as_deref(), Some("Push \"now\"?"));
        assert!(v.attrs.readonly);
    }

    #[test]
    fn reports_unknown_and_malformed_values_with_spans() {
        let text = "sh {timeout=30 idd=x retries=-1 max-fail=150%}";
        let info = parse_info(text);
        let v = validate(&info.attrs);
        let found: Vec<_> = v
            .errors
            .iter()
            .map(|e| (e.code, &text[e.span.clone()]))
            .collect();
        assert_eq!(
            found,
            [
                ("malformed-attribute", "30"),
                ("unknown-attribute", "idd=x"),
                ("malformed-attribute", "-1"),
                ("malformed-attribute", "150%"),
            ]
        );
        assert_eq!(v.errors[1].hint.as_deref(), Some("did you mean `id`?"));
    }

    #[test]
    fn unclosed_lists_and_stray_text_are_errors() {
        assert_eq!(
            parse_info("bash {id=x").errors[0].code,
            "malformed-attribute"
        );
        assert_eq!(parse_info("bash title=x").errors.len(), 1);
        assert_eq!(parse_info("bash {a=\"}\"} tail").errors.len(), 1);
        assert_eq!(parse_info("").language.as_str(), "");
    }

    #[test]
    fn durations_and_flags() {
        let v = validate(&parse_info("bash {timeout=1h30m backoff=5s always norun=true}").attrs);
        assert!(v.errors.is_empty());
        assert_eq!(v.attrs.timeout, Some(Duration::from_secs(5400)));
        assert!(v.attrs.always && v.attrs.norun);
        let v = validate(&parse_info("bash {readonly=yes}").attrs);
        assert_eq!(v.errors.len(), 1);
    }

    #[test]
    fn conditions_take_a_variable_name() {
        let v = validate(&parse_info(r#"bash {when=FLAKE_UPDATE_CHANGED unless="_x9"}"#).attrs);
        assert!(v.errors.is_empty(), "{:?}", v.errors);
        assert_eq!(v.attrs.when.as_deref(), Some("FLAKE_UPDATE_CHANGED"));
        assert_eq!(v.attrs.unless.as_deref(), Some("_x9"));
        let text = "bash {when=$X unless=9a when=Y unless}";
        let v = validate(&parse_info(text).attrs);
        let found: Vec<_> = v
            .errors
            .iter()
            .map(|e| (&text[e.span.clone()], e.message.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("$X", "`when=$X`: `$X` is not a variable name"),
                ("9a", "`unless=9a`: `9a` is not a variable name"),
                ("when=Y", "attribute `when` is given twice"),
                ("unless", "attribute `unless` is given twice"),
            ]
        );
        let v = validate(&parse_info("bash {when= id=x}").attrs);
        assert_eq!(v.errors[0].message, "`when` needs a value");
    }

    #[test]
    fn conditions_are_refused_on_rollback_and_always_blocks() {
        let text = "bash {id=x unless=B always when=A}";
        let info = parse_info(text);
        let v = validate(&info.attrs);
        assert!(v.errors.is_empty());
        let found: Vec<_> = misplaced_conditions(&info.attrs, &v.attrs, false)
            .iter()
            .map(|e| (&text[e.span.clone()], e.message.clone(), e.hint.clone()))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "when=A",
                    "`when=` is not allowed on an `always` block: it must not be skipped silently"
                        .to_string(),
                    Some(
                        "test the variable in the block's own shell and say what is skipped, \
                         e.g. `if [ \"${A:-}\" != 1 ]; then echo \"skipped\"; exit 0; fi`"
                            .to_string()
                    )
                ),
                (
                    "unless=B",
                    "`unless=` is not allowed on an `always` block: it must not be skipped silently"
                        .to_string(),
                    Some(
                        "test the variable in the block's own shell and say what is skipped, \
                         e.g. `if [ \"${B:-}\" = 1 ]; then echo \"skipped\"; exit 0; fi`"
                            .to_string()
                    )
                ),
            ]
        );
        let info = parse_info("bash {when=A}");
        let v = validate(&info.attrs);
        assert_eq!(
            misplaced_conditions(&info.attrs, &v.attrs, true)[0].message,
            "`when=` is not allowed on a rollback block: it must not be skipped silently"
        );
        assert!(misplaced_conditions(&info.attrs, &v.attrs, false).is_empty());
        // An invalid name is reported once, as invalid, not again as misplaced.
        let info = parse_info("bash {when=9 always}");
        let v = validate(&info.attrs);
        assert_eq!(v.errors.len(), 1);
        assert!(misplaced_conditions(&info.attrs, &v.attrs, true).is_empty());
    }

    #[test]
    fn splits_as_the_reference_does() {
        let languages = [
            "bash",
            "Bash",
            "",
            "SH",
            "py\u{a0}",
            "é",
            "bash\u{b}",
            "b\u{2003}",
        ];
        let separators = ["", " ", "  ", "\t", "\u{a0}", "\u{b}"];
        let lists = [
            "{id=x}",
            "{id=x readonly}",
            "{ id=apply rollback=restore }",
            r#"{confirm="Push \"now\"?" retries=2}"#,
            r#"{a="}"}"#,
            r#"{a="x}"#,
            r#"{a="x\"#,
            r#"{a="x\}"#,
            "{hosts=a,b,c x=1,y}",
            "{a,b,c}",
            r#"{a="é\é"}"#,
            r#"{a="\é" b="ü"}"#,
            r#"{k="abc\"}"#,
            r#"{a="x\\"}"#,
            "title=x",
            "{",
            "}",
            "{}",
            "{a=}",
            "{=b}",
            "{a==b}",
            r#"{a="b"c}"#,
            r#"{a=b"c}"}"#,
            "{a=1 b=2 c=3 d=4 e=5 f=6}",
            "{ü=ö}",
        ];
        let tails = ["", " ", " tail", "\u{a0}", "}"];
        for l in languages {
            for s in separators {
                for b in lists {
                    for t in tails {
                        let info = format!("{l}{s}{b}{t}");
                        let new = parse_info(&info);
                        let old = reference::parse_info(&info);
                        assert_eq!(new.language.as_str(), old.language, "{info:?}");
                        assert_eq!(new.errors, old.errors, "{info:?}");
                        let attrs: Vec<_> = new
                            .attrs
                            .iter()
                            .map(|a| reference::RawAttr {
                                key: a.key.to_string(),
                                value: a.value.as_deref().map(str::to_string),
                                span: a.span.clone(),
                                value_span: a.value_span.clone(),
                            })
                            .collect();
                        assert_eq!(attrs, old.attrs, "{info:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn brace_or_quote_finds_the_first_of_either() {
        let text = "ab}cd\"ef}gh\"ij}kl\"mn}op\"qr";
        for start in 0..text.len() {
            for end in start..=text.len() {
                let s = &text.as_bytes()[start..end];
                let want = s.iter().position(|&c| c == b'}' || c == b'"');
                assert_eq!(brace_or_quote(s), want, "{start}..{end}");
            }
        }
        // Bytes one off the targets (a borrow from a lower byte) are not matches.
        let near = [b'|', b'~', b'!', b'#', 0x7d ^ 0x80, 0, 0xff, b'}'];
        assert_eq!(brace_or_quote(&near), Some(7));
        assert_eq!(
            brace_or_quote(&[0x7c, 0x7e, 0x21, 0x23, 0xa2, 0xfd, 0x01, 0x00, 0x22]),
            Some(8)
        );
    }

    #[test]
    fn ids_as_the_reference_checks_them() {
        let long = "a".repeat(64);
        let too_long = "a".repeat(65);
        for id in [
            "", "a", "-a", "a-b_c.d", "é", "aé", "a b", "A9", ".", "_x", &long, &too_long,
        ] {
            assert_eq!(is_valid_id(id), reference::is_valid_id(id), "{id:?}");
        }
    }

    #[test]
    fn only_escaped_values_are_copied() {
        let info = parse_info(r#"Bash {id=x confirm="a b" q="c\"d"}"#);
        assert!(matches!(info.language.0, Cow::Owned(_)));
        let borrowed: Vec<_> = info
            .attrs
            .iter()
            .map(|a| matches!(a.value, Some(Cow::Borrowed(_))))
            .collect();
        assert_eq!(borrowed, [true, true, false]);
        assert_eq!(info.attrs[2].value.as_deref(), Some("c\"d"));
        assert!(!info.attrs.spilled());
        assert!(matches!(parse_info("bash").language.0, Cow::Borrowed(_)));
    }
}
