//! What the frontmatter means: description, argument hint, mode (annotated when a `nixcmd:`
//! key exists), the `nixcmd:` settings and argument declarations — validated, with positions.
//! Keys of other tools (Claude Code's `allowed-tools`, `model`, …) are left alone.

use crate::command::{ArgSpec, Mode, Settings};
use crate::diagnostic::Diagnostic;
use crate::duration;
use crate::frontmatter::{Frontmatter, Mapping, Node};
use crate::source::SourceFile;

const NIXCMD_KEYS: &[&str] = &["args", "timeout", "secrets"];
/// The keys a diagnostic's key is searched after, for settings and for arguments.
const ARGS_AT: &[&str] = &["nixcmd", "args"];
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
    fm: &'a Frontmatter<'a>,
    out: Interpreted,
}

impl Ctx<'_> {
    /// Where the keys of `path` (`["nixcmd", "args"]`) are found, each searched after the
    /// one before, as far as they are found. Only a diagnostic needs it: searching the text
    /// for every file that has settings cost more than reading them.
    fn after(&self, path: &[&str]) -> usize {
        path.iter().fold(self.fm.content.start, |at, key| {
            self.fm.key_offset(self.file, key, at).unwrap_or(at)
        })
    }

    /// A diagnostic pointing at `key` (searched after the keys of `path`); at the last key
    /// of `path` that was found when `key` is not written as it reads (a quoted name with
    /// escapes, `"a\tb"`, an empty name); else at the frontmatter start.
    fn at_key(&self, d: Diagnostic, key: &str, path: &[&str]) -> Diagnostic {
        let after = self.after(path);
        match self.fm.key_offset(self.file, key, after) {
            Some(off) => d.at(self.file, off..off + key.len()),
            None => match path.last() {
                Some(parent) if after > self.fm.content.start => {
                    d.at(self.file, after..after + parent.len())
                }
                _ => d.at(
                    self.file,
                    self.fm.content.start.saturating_sub(4)..self.fm.content.start,
                ),
            },
        }
    }

    fn push(&mut self, d: Diagnostic, key: &str, path: &[&str]) {
        let d = self.at_key(d, key, path);
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
        Some(Node::Null) => cx.out.mode = Some(Mode::Annotated),
        Some(Node::Map(map)) => {
            cx.out.mode = Some(Mode::Annotated);
            nixcmd_settings(&mut cx, map);
        }
        Some(other) => {
            cx.out.mode = Some(Mode::Annotated);
            let d = Diagnostic::error(
                "setting",
                format!(
                    "`nixcmd` must be a mapping of settings, not a {}",
                    other.kind_name()
                ),
            )
            .with_hint("write `nixcmd:` followed by indented settings such as `timeout: 10m`");
            cx.push(d, "nixcmd", &[]);
        }
    }
    cx.out
}

fn text_field(cx: &mut Ctx, key: &str) -> Option<String> {
    match cx.fm.map.get(key)? {
        Node::Text(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_string())
        }
        Node::Null => None,
        Node::Number(n) => Some(n.to_string()),
        other => {
            let d = Diagnostic::error(
                "setting",
                format!("`{key}` must be text, not a {}", other.kind_name()),
            );
            cx.push(d, key, &[]);
            None
        }
    }
}

fn nixcmd_settings(cx: &mut Ctx, map: &Mapping) {
    const AT: &[&str] = &["nixcmd"];
    for (key, value) in map.iter() {
        match key {
            "timeout" => match value.as_str().map(duration::parse) {
                Some(Ok(d)) if !d.is_zero() => cx.out.settings.timeout = Some(d),
                Some(Ok(_)) => cx.push(
                    Diagnostic::error("setting", "`timeout` must be longer than zero"),
                    "timeout",
                    AT,
                ),
                Some(Err(e)) => cx.push(
                    Diagnostic::error("setting", format!("`timeout`: {e}")),
                    "timeout",
                    AT,
                ),
                None => cx.push(
                    Diagnostic::error("setting", "`timeout` must be a duration such as \"30m\""),
                    "timeout",
                    AT,
                ),
            },
            "secrets" => match value {
                Node::List(items) if items.iter().all(|v| v.as_str().is_some()) => {
                    cx.out.settings.secrets = items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect();
                }
                _ => cx.push(
                    Diagnostic::error("setting", "`secrets` must be a list of variable names"),
                    "secrets",
                    AT,
                ),
            },
            "args" => match value {
                Node::Map(args) => {
                    for (name, spec) in args.iter() {
                        if let Some(arg) = arg_spec(cx, name, spec) {
                            same_variable(cx, &arg);
                            cx.out.args.push(arg);
                        }
                    }
                    check_arg_order(cx);
                }
                Node::Null => {}
                _ => cx.push(
                    Diagnostic::error(
                        "setting",
                        "`args` must map argument names to their declarations",
                    )
                    .with_hint(
                        "e.g. `args: { host: { required: true, pattern: \"^[a-z0-9-]+$\" } }`",
                    ),
                    "args",
                    AT,
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
                    AT,
                );
            }
        }
    }
}

fn arg_spec(cx: &mut Ctx, name: &str, spec: &Node) -> Option<ArgSpec> {
    const AT: &[&str] = ARGS_AT;
    let name_at: &[&str] = &["nixcmd", "args", name];
    if !crate::attrs::is_valid_id(name) {
        cx.push(
            Diagnostic::error("argument", format!("`{name}` is not a valid argument name"))
                .with_hint("use letters, digits, `-` and `_`"),
            name,
            AT,
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
    let empty = Mapping::default();
    let map = match spec {
        Node::Map(m) => m,
        Node::Null => &empty,
        // `host: "the machine to deploy"` is a help text.
        Node::Text(s) => {
            arg.help = Some(s.to_string());
            &empty
        }
        other => {
            cx.push(
                Diagnostic::error(
                    "argument",
                    format!(
                        "argument `{name}` must be a mapping, not a {}",
                        other.kind_name()
                    ),
                ),
                name,
                AT,
            );
            return None;
        }
    };
    for (key, value) in map.iter() {
        let bad =
            |what: &str| Diagnostic::error("argument", format!("`{name}.{key}` must be {what}"));
        match (key, value) {
            ("required", Node::Bool(b)) => arg.required = *b,
            ("variadic", Node::Bool(b)) => arg.variadic = *b,
            ("named", Node::Bool(b)) => arg.named = *b,
            ("help", Node::Text(s)) => arg.help = Some(s.to_string()),
            ("pattern", Node::Text(p)) => match regex_syntax::Parser::new().parse(p) {
                Ok(hir) => match compiles(p, &hir) {
                    Ok(()) => arg.pattern = Some(p.to_string()),
                    Err(why) => cx.push(
                        Diagnostic::error("argument", format!("`{name}.pattern` {why}")).with_hint(
                            "write a smaller pattern: fewer or smaller repetition counts \
                                 (`{1000}`), or ASCII classes (`[0-9A-Za-z_]`) in place of \
                                 Unicode ones (`\\w`)",
                        ),
                        key,
                        name_at,
                    ),
                },
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
            ("choices", Node::List(items)) => {
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
                    Node::List(items) => {
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
            AT,
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
            AT,
        );
    }
    // The values `run` takes from the default: each word of a variadic one, else the whole.
    let defaults: Vec<&str> = match (&arg.default, arg.variadic) {
        (Some(d), true) => d.split_whitespace().collect(),
        (Some(d), false) => vec![d.as_str()],
        (None, _) => Vec::new(),
    };
    if let Some(outside) = defaults
        .iter()
        .find(|d| !arg.choices.is_empty() && !arg.choices.iter().any(|c| c == *d))
    {
        let d = Diagnostic::error(
            "argument",
            format!(
                "the default of `{name}`, `{outside}`, is not one of its choices ({})",
                arg.choices.join(", ")
            ),
        )
        .with_hint("make the default one of the choices, or add it to them: `run` refuses it");
        match map.get("default") {
            Some(_) => cx.push(d, "default", name_at),
            None => cx.push(d, name, AT),
        }
    }
    if let Some(p) = &arg.pattern
        && !defaults.is_empty()
        && let Ok(re) = regex::Regex::new(p)
        && !defaults.iter().all(|part| re.is_match(part))
    {
        cx.push(
            Diagnostic::error(
                "argument",
                format!("the default of `{name}` does not match its pattern"),
            ),
            name,
            AT,
        );
    }
    Some(arg)
}

/// Names that differ only in case or in `-`/`_`/`.` give one environment variable: one
/// value would silently replace the other. An error at the second declaration.
fn same_variable(cx: &mut Ctx, arg: &ArgSpec) {
    let Some(first) = cx.out.args.iter().find(|a| a.env == arg.env) else {
        return;
    };
    let d = Diagnostic::error(
        "argument",
        format!(
            "arguments `{}` and `{}` both reach the blocks as ${}: one value would be lost",
            first.name, arg.name, arg.env
        ),
    )
    .with_hint(
        "rename one of them: names are upper-cased and `-` becomes `_` in the variable's name",
    );
    let name = arg.name.clone();
    cx.push(d, &name, ARGS_AT);
}

/// Whether `pattern` (parsed as `hir`) compiles as `run` compiles it (`regex::Regex::new`):
/// within the engine's size limit (`(a{1000}){1000}` is not), else why not. Compiling costs
/// more than reading the file (`list` reads a thousand), so only a pattern whose parsed size
/// could come near the limit is compiled.
fn compiles(pattern: &str, hir: &regex_syntax::hir::Hir) -> Result<(), String> {
    // A compiled unit of the weight below takes well under a kilobyte; the limit is 10 MiB.
    const SURELY_SMALL: u64 = 2_000;
    if weight(hir) <= SURELY_SMALL {
        return Ok(());
    }
    match regex::Regex::new(pattern) {
        Ok(_) => Ok(()),
        Err(regex::Error::CompiledTooBig(limit)) => Err(format!(
            "is too large: compiled, it exceeds the regular expression engine's limit of {} MiB",
            limit / (1024 * 1024)
        )),
        Err(e) => Err(format!("cannot be used: {e}")),
    }
}

/// A bound on how large `hir` compiles, in units of a byte or a class range: repetitions
/// multiply, everything else adds up.
fn weight(hir: &regex_syntax::hir::Hir) -> u64 {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => 1,
        HirKind::Literal(l) => l.0.len() as u64,
        // A Unicode range becomes up to four bytes of UTF-8.
        HirKind::Class(Class::Unicode(c)) => 4 * c.ranges().len() as u64,
        HirKind::Class(Class::Bytes(c)) => c.ranges().len() as u64,
        HirKind::Repetition(r) => {
            let times = u64::from(r.max.unwrap_or(r.min).max(r.min)) + 1;
            weight(&r.sub).saturating_mul(times)
        }
        HirKind::Capture(c) => weight(&c.sub).saturating_add(1),
        HirKind::Concat(parts) | HirKind::Alternation(parts) => parts
            .iter()
            .fold(1u64, |sum, p| sum.saturating_add(weight(p))),
    }
}

/// Only the last positional argument may be variadic, and required ones may not follow
/// optional ones. Named arguments (`named: true`, given as NAME=VALUE) take no position.
fn check_arg_order(cx: &mut Ctx) {
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
                ARGS_AT,
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
                ARGS_AT,
            );
        }
    }
}

fn scalar_text(v: &Node) -> Option<String> {
    match v {
        Node::Text(s) => Some(s.to_string()),
        Node::Number(n) => Some(n.to_string()),
        Node::Bool(b) => Some(b.to_string()),
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

    /// The positions of `text`'s diagnostics: (message, line, column).
    fn positions(text: &str) -> Vec<(String, usize, usize)> {
        let (_, i) = read(text);
        (i.diagnostics.iter())
            .map(|d| {
                let at = d.position.expect("a position");
                (d.message.clone(), at.line, at.col)
            })
            .collect()
    }

    /// CRLF TOML frontmatter with a `[nixcmd.*]` sub-table pointed at the `+++` line (the
    /// CR after `[nixcmd]` hid the table's end); a name that is not written as it reads
    /// (escapes, empty) pointed at the frontmatter's first line, not at `args`.
    #[test]
    fn crlf_tables_and_escaped_names_are_located() {
        let toml = "+++\ndescription = \"x\"\n[nixcmd]\ntimeout = \"5x\"\n[nixcmd.args.a]\n+++\n";
        for text in [toml.to_string(), toml.replace('\n', "\r\n")] {
            let found = positions(&text);
            assert_eq!((found[0].1, found[0].2), (4, 1), "{text:?}: {found:?}");
        }
        let found = positions(
            "---\ndescription: x\nnixcmd:\n  args:\n    \"a\\tb\": {}\n    \"\": {}\n---\n",
        );
        assert_eq!(
            found.iter().map(|(_, l, c)| (*l, *c)).collect::<Vec<_>>(),
            [(4, 3), (4, 3)],
            "{found:?}"
        );
    }

    /// Two names that give one environment variable: one value would be lost.
    #[test]
    fn names_sharing_a_variable_are_refused_at_the_second() {
        for (second, a, b, var) in [
            ("a_b", "a-b", "a_b", "NIXCMD_ARG_A_B"),
            ("AB", "ab", "AB", "NIXCMD_ARG_AB"),
        ] {
            let text = format!(
                "---\ndescription: d\nnixcmd:\n  args:\n    {a}: {{ pattern: \"^x$\" }}\n    other: {{}}\n    {b}: {{}}\n---\n"
            );
            let (_, i) = read(&text);
            let found: Vec<_> = i
                .diagnostics
                .iter()
                .map(|d| (d.severity, d.message.clone(), d.position.unwrap()))
                .collect();
            assert_eq!(found.len(), 1, "{found:?}");
            let (severity, message, at) = &found[0];
            assert_eq!(*severity, crate::diagnostic::Severity::Error);
            assert_eq!((at.line, at.col), (7, 5), "{message}");
            assert!(
                message.contains(&format!("`{a}`"))
                    && message.contains(&format!("`{b}`"))
                    && message.contains(var),
                "{second}: {message}"
            );
        }
    }

    /// What `run` would refuse is refused by `check`, where the declaration is: a default
    /// outside the choices, and a pattern too large for the regex engine.
    #[test]
    fn defaults_outside_choices_and_oversized_patterns_are_errors() {
        let errors = |args: &str| {
            let (_, i) = read(&format!(
                "---\ndescription: d\nnixcmd:\n  args:\n{args}---\n"
            ));
            i.diagnostics
                .iter()
                .map(|d| {
                    assert_eq!(d.severity, crate::diagnostic::Severity::Error, "{d:?}");
                    let at = d.position.unwrap();
                    (d.message.clone(), at.line, at.col)
                })
                .collect::<Vec<_>>()
        };
        let found = errors("    mode:\n      choices: [fast, slow]\n      default: medium\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0.contains("`medium`"), "{found:?}");
        assert_eq!((found[0].1, found[0].2), (7, 7));
        let found = errors("    m: { variadic: true, choices: [a, b], default: [a, c] }\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0.contains("`c`"), "{found:?}");
        assert!(errors("    m: { variadic: true, choices: [a, b], default: [a, b] }\n").is_empty());
        assert!(errors("    m: { choices: [a, b], default: b }\n").is_empty());

        let found = errors("    x:\n      pattern: \"(a{1000}){1000}\"\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].0.contains("too large"), "{found:?}");
        assert_eq!((found[0].1, found[0].2), (6, 7));
        // Heavy enough to be compiled, and within the limit.
        let pattern = r"^[a-z0-9]{1,63}(\\.[a-z0-9]{1,63}){0,10}$";
        let hir = regex_syntax::Parser::new()
            .parse(&pattern.replace(r"\\", r"\"))
            .unwrap();
        assert!(weight(&hir) > 2_000);
        assert_eq!(
            errors(&format!("    x: {{ pattern: \"{pattern}\" }}\n")),
            []
        );
    }

    #[test]
    fn files_without_nixcmd_are_guided() {
        let (_, i) = read("---\ndescription: x\nallowed-tools: Bash\n---\n");
        assert_eq!(i.mode, Some(Mode::Guided));
        assert!(i.diagnostics.is_empty());
    }
}
