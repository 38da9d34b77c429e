//! Fence attributes: `bash {id=update retries=2 confirm="Push?" readonly}`. Splits a fence's
//! info string into a language and raw `key[=value]` pairs (with their offsets in the info
//! string), then validates them into [`Attrs`]. Pure: callers map offsets to file positions.

use crate::command::{Attrs, MaxFail, OnFail};
use crate::duration;
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
];

/// One `key` or `key=value` as written.
#[derive(Debug, Clone, PartialEq)]
pub struct RawAttr {
    pub key: String,
    pub value: Option<String>,
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

/// A fence info string, split.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Info {
    pub language: String,
    pub attrs: Vec<RawAttr>,
    pub errors: Vec<AttrError>,
}

/// Splits `bash {id=x confirm="a b" readonly}`. Text after the language that is not in
/// braces (`bash title="x"`) is reported, because silently ignoring it would drop a gate.
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
        while i < end && !bytes[i].is_ascii_whitespace() && bytes[i] != b'=' && bytes[i] != b',' {
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

/// Validated attributes plus the explicit id, if one was given.
#[derive(Debug, Clone, Default)]
pub struct Validated {
    pub attrs: Attrs,
    pub id: Option<(String, Range<usize>)>,
    pub errors: Vec<AttrError>,
}

/// Ids are slugs: they name log files and appear in resume commands.
pub fn is_valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && id.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub fn validate(raw: &[RawAttr]) -> Validated {
    let mut v = Validated::default();
    for (i, attr) in raw.iter().enumerate() {
        // The attributes before this one, scanned in place: a fence has a handful.
        if raw[..i].iter().any(|a| a.key == attr.key) {
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

fn apply(attr: &RawAttr, v: &mut Validated) -> Result<(), AttrError> {
    let key = attr.key.as_str();
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
            } else if s.split(',').any(|part| part.trim().is_empty()) {
                return Err(bad(
                    format!("`hosts={s}` has an empty entry"),
                    "write hosts=all, hosts=@tag or hosts=a,b",
                ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn splits_language_and_attributes() {
        let info = parse_info(r#"bash {id=up retries=2 confirm="Push \"now\"?" readonly}"#);
        assert_eq!(info.language, "bash");
        assert!(info.errors.is_empty(), "{:?}", info.errors);
        let keys: Vec<_> = info.attrs.iter().map(|a| a.key.as_str()).collect();
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
        assert_eq!(parse_info("").language, "");
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
}
