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
    let mut rest = values;
    for (i, spec) in cmd.args.iter().enumerate() {
        let taken: Vec<String> = if spec.variadic {
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
            rest.iter()
                .map(|v| format!("`{v}`"))
                .collect::<Vec<_>>()
                .join(" ")
        ))
        .with_hint(usage_hint(cmd, cmd.args.len())));
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
        env.push((key.to_string(), value.to_string()));
    }
    Ok(BoundArgs {
        env,
        raw: values.to_vec(),
    })
}

fn validate(cmd: &Command, spec: &ArgSpec, value: &str) -> Result<(), Failure> {
    if let Some(p) = &spec.pattern {
        let re = regex::Regex::new(p).map_err(|e| Failure::usage(e.to_string()))?;
        if !re.is_match(value) {
            return Err(Failure::usage(format!(
                "argument `{}` of `{}` does not match `{p}`: {value:?}",
                spec.name, cmd.name
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
            "argument `{}` of `{}` must be one of {}, not {value:?}",
            spec.name,
            cmd.name,
            spec.choices.join(", ")
        )));
    }
    Ok(())
}

fn usage_hint(cmd: &Command, _at: usize) -> String {
    format!(
        "usage: nixcmd /{} {}",
        cmd.name,
        crate::list::args_summary(&cmd.args)
    )
}
