//! What the frontmatter means: description, argument hint, mode (annotated when a `nixcmd:`
//! key exists), the `nixcmd:` settings and argument declarations — validated, with positions.
//! Keys of other tools (Claude Code's `allowed-tools`, `model`, …) are left alone.

use crate::command::{ArgSpec, Mode, Settings};
use crate::diagnostic::Diagnostic;
use crate::duration;
use crate::frontmatter::{Frontmatter, kind_name};
use crate::source::SourceFile;
use serde_json::{Map, Value};

const NIXCMD_KEYS: &[&str] = &["args", "timeout", "secrets"];
const ARG_KEYS: &[&str] = &[
    "required", "variadic", "named", "pattern", "choices", "default", "help",
];

#[derive(Debug, Default)]
pub struct Interpreted {
    pub description: Option<String>,
    pub argument_hint: Option<String>,
    pub mode: Option<Mode>,
    pub settings: Settings,
    pub args: Vec<ArgSpec>,
    pub diagnostics: Vec<Diagnostic>,
}

struct Ctx<'a> {
    file: &'a SourceFile,
    fm: &'a Frontmatter,
    out: Interpreted,
}

impl Ctx<'_> {
    /// A diagnostic pointing at `key` (searched after `after`), or at the frontmatter start.
    fn at_key(&self, d: Diagnostic, key: &str, after: usize) -> Diagnostic {
        match self.fm.key_offset(self.file, key, after) {
            Some(off) => d.at(self.file, off..off + key.len()),
            None => d.at(
                self.file,
                self.fm.content.start.saturating_sub(4)..self.fm.content.start,
            ),
        }
    }

    fn push(&mut self, d: Diagnostic, key: &str, after: usize) {
        let d = self.at_key(d, key, after);
        self.out.diagnostics.push(d);
    }
}

pub fn interpret(file: &SourceFile, fm: &Frontmatter) -> Interpreted {
    let mut cx = Ctx {
        file,
        fm,
        out: Interpreted::default(),
    };
    cx.out.description = text_field(&mut cx, "description");
    cx.out.argument_hint = text_field(&mut cx, "argument-hint");
    match fm.map.get("nixcmd") {
        None => cx.out.mode = Some(Mode::Guided),
        Some(Value::Null) => cx.out.mode = Some(Mode::Annotated),
        Some(Value::Object(map)) => {
            cx.out.mode = Some(Mode::Annotated);
            let nix_at = fm.key_offset(file, "nixcmd", 0).unwrap_or(fm.content.start);
            nixcmd_settings(&mut cx, map, nix_at);
        }
        Some(other) => {
            cx.out.mode = Some(Mode::Annotated);
            let d = Diagnostic::error(
                "setting",
                format!(
                    "`nixcmd` must be a mapping of settings, not a {}",
                    kind_name(other)
                ),
            )
            .with_hint("write `nixcmd:` followed by indented settings such as `timeout: 10m`");
            cx.push(d, "nixcmd", 0);
        }
    }
    cx.out
}

fn text_field(cx: &mut Ctx, key: &str) -> Option<String> {
    match cx.fm.map.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::String(_) | Value::Null => None,
        Value::Number(n) => Some(n.to_string()),
        other => {
            let d = Diagnostic::error(
                "setting",
                format!("`{key}` must be text, not a {}", kind_name(other)),
            );
            cx.push(d, key, 0);
            None
        }
    }
}

fn nixcmd_settings(cx: &mut Ctx, map: &Map<String, Value>, at: usize) {
    for (key, value) in map {
        match key.as_str() {
            "timeout" => match value.as_str().map(duration::parse) {
                Some(Ok(d)) if !d.is_zero() => cx.out.settings.timeout = Some(d),
                Some(Ok(_)) => cx.push(
                    Diagnostic::error("setting", "`timeout` must be longer than zero"),
                    "timeout",
                    at,
                ),
                Some(Err(e)) => cx.push(
                    Diagnostic::error("setting", format!("`timeout`: {e}")),
                    "timeout",
                    at,
                ),
                None => cx.push(
                    Diagnostic::error("setting", "`timeout` must be a duration such as \"30m\""),
                    "timeout",
                    at,
                ),
            },
            "secrets" => match value {
                Value::Array(items) if items.iter().all(Value::is_string) => {
                    cx.out.settings.secrets = items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect();
                }
                _ => cx.push(
                    Diagnostic::error("setting", "`secrets` must be a list of variable names"),
                    "secrets",
                    at,
                ),
            },
            "args" => match value {
                Value::Object(args) => {
                    let args_at = cx.fm.key_offset(cx.file, "args", at).unwrap_or(at);
                    for (name, spec) in args {
                        if let Some(arg) = arg_spec(cx, name, spec, args_at) {
                            cx.out.args.push(arg);
                        }
                    }
                    check_arg_order(cx, args_at);
                }
                Value::Null => {}
                _ => cx.push(
                    Diagnostic::error(
                        "setting",
                        "`args` must map argument names to their declarations",
                    )
                    .with_hint(
                        "e.g. `args: { host: { required: true, pattern: \"^[a-z0-9-]+$\" } }`",
                    ),
                    "args",
                    at,
                ),
            },
            other => {
                let hint = crate::suggest::closest(other, NIXCMD_KEYS.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("known settings: {}", NIXCMD_KEYS.join(", ")));
                cx.push(
                    Diagnostic::error("setting", format!("unknown nixcmd setting `{other}`"))
                        .with_hint(hint),
                    other,
                    at,
                );
            }
        }
    }
}

fn arg_spec(cx: &mut Ctx, name: &str, spec: &Value, at: usize) -> Option<ArgSpec> {
    let name_at = cx.fm.key_offset(cx.file, name, at).unwrap_or(at);
    if !crate::attrs::is_valid_id(name) {
        cx.push(
            Diagnostic::error("argument", format!("`{name}` is not a valid argument name"))
                .with_hint("use letters, digits, `-` and `_`"),
            name,
            at,
        );
        return None;
    }
    let mut arg = ArgSpec {
        name: name.to_string(),
        env: format!(
            "NIXCMD_ARG_{}",
            name.to_ascii_uppercase().replace(['-', '.'], "_")
        ),
        required: false,
        variadic: false,
        named: false,
        pattern: None,
        choices: Vec::new(),
        default: None,
        help: None,
    };
    let map = match spec {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        // `host: "the machine to deploy"` is a help text.
        Value::String(s) => {
            arg.help = Some(s.clone());
            Map::new()
        }
        other => {
            cx.push(
                Diagnostic::error(
                    "argument",
                    format!(
                        "argument `{name}` must be a mapping, not a {}",
                        kind_name(other)
                    ),
                ),
                name,
                at,
            );
            return None;
        }
    };
    for (key, value) in &map {
        let bad =
            |what: &str| Diagnostic::error("argument", format!("`{name}.{key}` must be {what}"));
        match (key.as_str(), value) {
            ("required", Value::Bool(b)) => arg.required = *b,
            ("variadic", Value::Bool(b)) => arg.variadic = *b,
            ("named", Value::Bool(b)) => arg.named = *b,
            ("help", Value::String(s)) => arg.help = Some(s.clone()),
            ("pattern", Value::String(p)) => match regex_syntax::Parser::new().parse(p) {
                Ok(_) => arg.pattern = Some(p.clone()),
                Err(e) => {
                    let first = e
                        .to_string()
                        .lines()
                        .last()
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    cx.push(
                        bad(&format!("a valid regular expression ({first})")),
                        key,
                        name_at,
                    );
                }
            },
            ("choices", Value::Array(items)) => {
                let texts: Vec<String> = items.iter().filter_map(scalar_text).collect();
                if texts.len() == items.len() && !texts.is_empty() {
                    arg.choices = texts;
                } else {
                    cx.push(bad("a non-empty list of values"), key, name_at);
                }
            }
            ("default", v) => match scalar_text(v) {
                Some(s) => arg.default = Some(s),
                None => match v {
                    Value::Array(items) => {
                        arg.default = Some(
                            items
                                .iter()
                                .filter_map(scalar_text)
                                .collect::<Vec<_>>()
                                .join(" "),
                        )
                    }
                    _ => cx.push(bad("a value"), key, name_at),
                },
            },
            ("required" | "variadic" | "named", _) => cx.push(bad("true or false"), key, name_at),
            ("help" | "pattern", _) => cx.push(bad("text"), key, name_at),
            ("choices", _) => cx.push(bad("a list"), key, name_at),
            (other, _) => {
                let hint = crate::suggest::closest(other, ARG_KEYS.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| format!("known keys: {}", ARG_KEYS.join(", ")));
                cx.push(
                    Diagnostic::error(
                        "argument",
                        format!("unknown key `{other}` in argument `{name}`"),
                    )
                    .with_hint(hint),
                    other,
                    name_at,
                );
            }
        }
    }
    if arg.named && arg.variadic {
        cx.push(
            Diagnostic::error(
                "argument",
                format!("argument `{name}` is both named and variadic"),
            )
            .with_hint("a named argument takes one value (NAME=VALUE); drop one of the two"),
            name,
            at,
        );
    }
    if arg.required && arg.default.is_some() {
        cx.push(
            Diagnostic::warning(
                "argument",
                format!("argument `{name}` is required and has a default"),
            )
            .with_hint("drop `required` or the default: a default makes the argument optional"),
            name,
            at,
        );
    }
    if let (Some(p), Some(d)) = (&arg.pattern, &arg.default)
        && let Ok(re) = regex::Regex::new(p)
        && !d.split_whitespace().all(|part| re.is_match(part))
    {
        cx.push(
            Diagnostic::error(
                "argument",
                format!("the default of `{name}` does not match its pattern"),
            ),
            name,
            at,
        );
    }
    Some(arg)
}

/// Only the last positional argument may be variadic, and required ones may not follow
/// optional ones. Named arguments (`named: true`, given as NAME=VALUE) take no position.
fn check_arg_order(cx: &mut Ctx, at: usize) {
    let args: Vec<ArgSpec> = cx.out.args.iter().filter(|a| !a.named).cloned().collect();
    for (i, arg) in args.iter().enumerate() {
        if arg.variadic && i + 1 != args.len() {
            cx.push(
                Diagnostic::error(
                    "argument",
                    format!("`{}` is variadic but not the last argument", arg.name),
                )
                .with_hint("move it to the end: it takes every remaining value"),
                &arg.name,
                at,
            );
        }
        if arg.required && args[..i].iter().any(|a| !a.required && !a.variadic) {
            cx.push(
                Diagnostic::error(
                    "argument",
                    format!("required argument `{}` follows an optional one", arg.name),
                )
                .with_hint("declare required arguments first: values are matched by position"),
                &arg.name,
                at,
            );
        }
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontmatter;

    fn read(text: &str) -> (SourceFile, Interpreted) {
        let file = SourceFile::new("f.md", text);
        let fm = frontmatter::parse(&file).unwrap();
        let i = interpret(&file, &fm);
        (file, i)
    }

    #[test]
    fn reads_arguments_in_order() {
        let (_, i) = read(
            "---\ndescription: d\nnixcmd:\n  args:\n    host: { required: true, pattern: \"^[a-z]+$\" }\n    inputs: { variadic: true, default: [a, b] }\n---\n",
        );
        assert!(i.diagnostics.is_empty(), "{:?}", i.diagnostics);
        assert_eq!(i.mode, Some(Mode::Annotated));
        assert_eq!(i.args[0].env, "NIXCMD_ARG_HOST");
        assert!(i.args[0].required);
        assert_eq!(i.args[1].default.as_deref(), Some("a b"));
    }

    #[test]
    fn unknown_keys_point_at_their_line() {
        let (file, i) = read(
            "---\ndescription: d\nnixcmd:\n  timeot: 5m\n  args:\n    host: { requird: true }\n---\n",
        );
        let found: Vec<_> = i
            .diagnostics
            .iter()
            .map(|d| (d.message.clone(), d.position.unwrap().line, d.hint.clone()))
            .collect();
        assert_eq!(found[0].0, "unknown nixcmd setting `timeot`");
        assert_eq!(found[0].1, 4);
        assert_eq!(found[0].2.as_deref(), Some("did you mean `timeout`?"));
        assert_eq!(found[1].0, "unknown key `requird` in argument `host`");
        assert_eq!(found[1].1, 6);
        let _ = file;
    }

    #[test]
    fn files_without_nixcmd_are_guided() {
        let (_, i) = read("---\ndescription: x\nallowed-tools: Bash\n---\n");
        assert_eq!(i.mode, Some(Mode::Guided));
        assert!(i.diagnostics.is_empty());
    }
}
