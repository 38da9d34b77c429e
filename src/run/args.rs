//! Binds a run's positional arguments to the command's declarations and validates them
//! (`required`, `pattern`, `choices`, `variadic`, defaults). Values reach blocks only as
//! environment variables (`NIXCMD_ARG_<NAME>`, `ARGUMENTS`), never as shell text.

use crate::command::{ArgSpec, Command};
use crate::exit::Failure;

/// The environment a run's blocks get from its arguments.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BoundArgs {
    pub env: Vec<(String, String)>,
    /// The raw values, in order.
    pub raw: Vec<String>,
}

pub fn bind(cmd: &Command, values: &[String], set: &[String]) -> Result<BoundArgs, Failure> {
    let mut env = Vec::new();
    // `NAME=VALUE` with NAME a declared argument binds by name; the other values fill the
    // positional arguments in order. A value such as `x=1` for an undeclared `x` stays
    // positional.
    let mut by_name: Vec<Option<Vec<String>>> = vec![None; cmd.args.len()];
    let mut positional: Vec<String> = Vec::new();
    for v in values {
        let named = v
            .split_once('=')
            .and_then(|(k, val)| Some((cmd.args.iter().position(|a| a.name == k)?, val)));
        let Some((i, val)) = named else {
            positional.push(v.clone());
            continue;
        };
        let slot = by_name[i].get_or_insert_with(Vec::new);
        if !cmd.args[i].variadic && !slot.is_empty() {
            return Err(Failure::usage(format!(
                "argument `{}` of `{}` is given twice",
                cmd.args[i].name, cmd.name
            ))
            .with_hint(usage_hint(cmd, i)));
        }
        slot.push(val.to_string());
    }
    let mut rest = &positional[..];
    for (i, spec) in cmd.args.iter().enumerate() {
        let taken: Vec<String> = if let Some(given) = by_name[i].take() {
            given
        } else if spec.named {
            Vec::new()
        } else if spec.variadic {
            let all = rest.to_vec();
            rest = &[];
            all
        } else if let Some((first, tail)) = rest.split_first() {
            rest = tail;
            vec![first.clone()]
        } else {
            Vec::new()
        };
        let values = if taken.is_empty() {
            match &spec.default {
                Some(d) if spec.variadic => d.split_whitespace().map(str::to_string).collect(),
                Some(d) => vec![d.clone()],
                None if spec.required => {
                    return Err(Failure::usage(format!(
                        "missing argument `{}` of `{}`",
                        spec.name, cmd.name
                    ))
                    .with_hint(usage_hint(cmd, i)));
                }
                None => Vec::new(),
            }
        } else {
            taken
        };
        for v in &values {
            validate(cmd, spec, v)?;
        }
        env.push((spec.env.clone(), values.join(" ")));
    }
    if !rest.is_empty() && !cmd.args.is_empty() {
        return Err(Failure::usage(format!(
            "too many arguments for `{}`: {}",
            cmd.name,
            quoted(rest)
        ))
        .with_hint(usage_hint(cmd, cmd.args.len())));
    }
    if cmd.args.is_empty() && values.iter().any(|v| !v.is_empty()) && !reads_undeclared(cmd) {
        return Err(undeclared(cmd, values));
    }
    // Guided files declare no arguments: all values go to ARGUMENTS and NIXCMD_ARG_1…
    if cmd.args.is_empty() {
        for (i, v) in values.iter().enumerate() {
            env.push((format!("NIXCMD_ARG_{}", i + 1), v.clone()));
        }
    }
    env.push(("ARGUMENTS".into(), values.join(" ")));
    for kv in set {
        let Some((key, value)) = kv.split_once('=') else {
            return Err(Failure::usage(format!("`--set {kv}` is not KEY=VALUE")));
        };
        let valid = !key.is_empty()
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !key.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(
                Failure::usage(format!("`{key}` is not a valid variable name for --set"))
                    .with_hint("use letters, digits and `_`, e.g. --set SERVICE_NAME=nginx"),
            );
        }
        // Later in a block's environment than nixcmd's own variables, a `--set` of one of
        // them would win: an argument's value past its `pattern`, `$NIXCMD_ENV` pointing
        // where nixcmd never reads (exports lost, their secrets unredacted).
        if crate::run::env_file::is_nixcmd_own(key) {
            return Err(
                Failure::usage(format!("--set {key}: nixcmd sets {key} itself")).with_hint(
                    format!(
                        "give arguments as values (`nixcmd /{} VALUE…`); --set is for the other \
                         variables a block reads",
                        cmd.name
                    ),
                ),
            );
        }
        env.push((key.to_string(), value.to_string()));
    }
    // Every value reaches the blocks as an environment variable, and Linux refuses to start a
    // program with one longer than 128 KiB (MAX_ARG_STRLEN): every block would fail with
    // "Argument list too long". Say so now, before anything runs.
    if let Some((key, value)) = env
        .iter()
        .find(|(k, v)| crate::run::env_file::too_long(k, v))
    {
        return Err(Failure::usage(format!(
            "`{key}` would be {} bytes: Linux passes at most 128 KiB per environment variable, \
             which is how values reach the blocks",
            key.len() + value.len() + 2
        ))
        .with_hint(
            "pass a large value through a file: give its path, and read the file in the block",
        ));
    }
    Ok(BoundArgs {
        env,
        raw: values.to_vec(),
    })
}

/// Whether values given to a command that declares no arguments reach anything: a block reads
/// `$ARGUMENTS` or `$NIXCMD_ARG_N`, or (guided files) the text asks for them. Otherwise they
/// would be dropped in silence, and `nixcmd /deploy-all web1` would deploy to every host.
fn reads_undeclared(cmd: &Command) -> bool {
    cmd.blocks()
        .any(|b| b.code.contains("ARGUMENTS") || b.code.contains("NIXCMD_ARG_"))
        || cmd.diagnostics.iter().any(|d| d.code == "arguments")
}

fn undeclared(cmd: &Command, values: &[String]) -> Failure {
    let given = quoted(values);
    let fans_out = cmd.blocks().any(|b| b.attrs.hosts.is_some());
    let hint = match fans_out {
        true => format!(
            "it would ignore them; to run it on some hosts only, use --hosts (e.g. `nixcmd /{} --hosts {}`)",
            cmd.name,
            cut(&values[0]).0
        ),
        false => format!(
            "it would ignore them; `nixcmd show {}` shows what it does",
            cmd.name
        ),
    };
    Failure::usage(format!(
        "`{}` takes no arguments, and none of its blocks reads them: {given}",
        cmd.name
    ))
    .with_hint(hint)
}

fn validate(cmd: &Command, spec: &ArgSpec, value: &str) -> Result<(), Failure> {
    if let Some(p) = &spec.pattern {
        let re = regex::Regex::new(p).map_err(|e| Failure::usage(e.to_string()))?;
        if !re.is_match(value) {
            return Err(Failure::usage(format!(
                "argument `{}` of `{}` does not match `{p}`: {}",
                spec.name,
                cmd.name,
                debug_cut(value)
            ))
            .with_hint(
                spec.help
                    .clone()
                    .unwrap_or_else(|| "check the value".into()),
            ));
        }
    }
    if !spec.choices.is_empty() && !spec.choices.iter().any(|c| c == value) {
        return Err(Failure::usage(format!(
            "argument `{}` of `{}` must be one of {}, not {}",
            spec.name,
            cmd.name,
            spec.choices.join(", "),
            debug_cut(value)
        )));
    }
    Ok(())
}

/// Values as a refusal quotes them: at most eight, each [`cut`]. Through MCP a client can
/// send any number of values of any size, and the refusal must stay readable.
fn quoted(values: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut out: Vec<String> = values
        .iter()
        .take(SHOWN)
        .map(|v| match cut(v) {
            (shown, None) => format!("`{shown}`"),
            (shown, Some(more)) => format!("`{shown}` {more}"),
        })
        .collect();
    if values.len() > SHOWN {
        out.push(format!("… and {} more", values.len() - SHOWN));
    }
    out.join(" ")
}

/// The first 80 characters of `value` (79 and `…` when longer), and then its size.
fn cut(value: &str) -> (String, Option<String>) {
    const MAX: usize = 80;
    match value.char_indices().nth(MAX) {
        None => (value.to_string(), None),
        Some(_) => {
            let end = value
                .char_indices()
                .nth(MAX - 1)
                .map_or(value.len(), |(i, _)| i);
            (
                format!("{}…", &value[..end]),
                Some(format!("({} bytes)", value.len())),
            )
        }
    }
}

/// `value` quoted as Rust shows strings (escapes visible), [`cut`] when long.
fn debug_cut(value: &str) -> String {
    match cut(value) {
        (_, None) => format!("{value:?}"),
        (shown, Some(more)) => {
            let end = shown.len() - '…'.len_utf8();
            let quoted = format!("{:?}", &shown[..end]);
            format!("{}…\" {more}", &quoted[..quoted.len() - 1])
        }
    }
}

fn usage_hint(cmd: &Command, _at: usize) -> String {
    format!(
        "usage: nixcmd /{} {}",
        cmd.name,
        crate::list::args_summary(&cmd.args)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Origin;
    use crate::source::SourceFile;

    const HEALTH: &str = "---\ndescription: d\nnixcmd:\n  args:\n    warn: { pattern: \"^[0-9]+$\", default: \"80\", named: true }\n    mode: { choices: [fast, slow], default: fast }\n    hosts: { variadic: true, pattern: \"^[a-z0-9@,]+$\" }\n---\n## Steps\n```bash\ntrue\n```\n";

    fn env_of(values: &[&str]) -> Result<Vec<(String, String)>, String> {
        let file = SourceFile::new("health.md", HEALTH);
        let cmd = crate::parser::parse(&file, "health", Origin::Builtin);
        assert!(cmd.diagnostics.is_empty(), "{:?}", cmd.diagnostics);
        let values: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        bind(&cmd, &values, &[])
            .map(|b| b.env)
            .map_err(|f| f.message)
    }

    fn get<'a>(env: &'a [(String, String)], key: &str) -> &'a str {
        &env.iter().find(|(k, _)| k == key).unwrap().1
    }

    #[test]
    fn named_arguments_bind_by_name_and_take_no_position() {
        let env = env_of(&["slow", "web1", "warn=90", "web2"]).unwrap();
        assert_eq!(get(&env, "NIXCMD_ARG_WARN"), "90");
        assert_eq!(get(&env, "NIXCMD_ARG_MODE"), "slow");
        assert_eq!(get(&env, "NIXCMD_ARG_HOSTS"), "web1 web2");
        let env = env_of(&[]).unwrap();
        assert_eq!(get(&env, "NIXCMD_ARG_WARN"), "80");
        assert_eq!(get(&env, "NIXCMD_ARG_HOSTS"), "");
    }

    #[test]
    fn positional_arguments_can_be_given_by_name() {
        let env = env_of(&["hosts=web1", "mode=slow", "hosts=@db"]).unwrap();
        assert_eq!(get(&env, "NIXCMD_ARG_MODE"), "slow");
        assert_eq!(get(&env, "NIXCMD_ARG_HOSTS"), "web1 @db");
    }

    #[test]
    fn named_values_are_validated_and_not_given_twice() {
        let e = env_of(&["warn=9x"]).unwrap_err();
        assert!(
            e.contains("argument `warn` of `health` does not match"),
            "{e}"
        );
        let e = env_of(&["warn=1", "warn=2"]).unwrap_err();
        assert_eq!(e, "argument `warn` of `health` is given twice");
        // An undeclared NAME=VALUE is an ordinary positional value.
        let e = env_of(&["fast", "x=1"]).unwrap_err();
        assert!(e.contains("does not match"), "{e}");
    }

    /// The MCP `run` tool takes any number of values of any size: a refusal quotes at most
    /// eight, each cut to 80 characters (100,000 values made an error of 400 KB).
    #[test]
    fn refusals_quote_a_bounded_part_of_the_values() {
        let quick = "---\ndescription: d\nnixcmd:\n  args:\n    name: { pattern: \"^[a-z0-9]+$\" }\n---\n## Steps\n```bash\ntrue\n```\n";
        let many: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let e = bind_to(quick, &many).unwrap_err();
        assert_eq!(
            e.message,
            "too many arguments for `c`: `v1` `v2` `v3` `v4` `v5` `v6` `v7` `v8` … and 91 more"
        );
        let long = format!("{}X", "x".repeat(1_000_000));
        let e = bind_to(quick, &[&long]).unwrap_err();
        assert_eq!(
            e.message,
            format!(
                "argument `name` of `c` does not match `^[a-z0-9]+$`: \"{}…\" (1000001 bytes)",
                "x".repeat(79)
            )
        );
        let none = "---\ndescription: d\nnixcmd: {}\n---\n## Steps\n```bash\ntrue\n```\n";
        let e = bind_to(none, &[&long, "b"]).unwrap_err();
        assert_eq!(
            e.message,
            format!(
                "`c` takes no arguments, and none of its blocks reads them: `{}…` (1000001 bytes) `b`",
                "x".repeat(79)
            )
        );
    }

    fn bind_to(md: &str, values: &[&str]) -> Result<Vec<(String, String)>, Failure> {
        let file = SourceFile::new("c.md", md);
        let cmd = crate::parser::parse(&file, "c", Origin::Builtin);
        let values: Vec<String> = values.iter().map(|s| s.to_string()).collect();
        bind(&cmd, &values, &[]).map(|b| b.env)
    }

    #[test]
    fn values_nothing_reads_are_refused_not_dropped() {
        let fleet = "---\ndescription: d\nnixcmd: {}\n---\n## Steps\n```bash {id=go hosts=all}\ntrue\n```\n";
        let e = bind_to(fleet, &["web1"]).unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.hint.as_deref()),
            (
                "`c` takes no arguments, and none of its blocks reads them: `web1`",
                Some(
                    "it would ignore them; to run it on some hosts only, use --hosts (e.g. `nixcmd /c --hosts web1`)"
                )
            )
        );
        let local = fleet.replace(" hosts=all", "");
        let e = bind_to(&local, &["a", "b"]).unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.hint.as_deref()),
            (
                "`c` takes no arguments, and none of its blocks reads them: `a` `b`",
                Some("it would ignore them; `nixcmd show c` shows what it does")
            )
        );
        // Nothing given, or only empty values (an empty `$ARGUMENTS` of a wrapper): fine.
        assert!(bind_to(&local, &[]).is_ok());
        assert!(bind_to(&local, &[""]).is_ok());
        // A block that reads them, in either form; a guided text that asks for them.
        for code in ["echo \"$ARGUMENTS\"", "echo \"${NIXCMD_ARG_1:-}\""] {
            let reads = local.replace("true", code);
            let env = bind_to(&reads, &["web1"]).unwrap();
            assert_eq!(get(&env, "ARGUMENTS"), "web1");
        }
        let guided = "---\ndescription: d\n---\n## Steps\nUpdate $ARGUMENTS.\n```bash\nnix flake update\n```\n";
        assert!(bind_to(guided, &["nixpkgs"]).is_ok());
    }
}
