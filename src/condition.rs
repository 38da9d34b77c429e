//! Conditional blocks: `when=NAME` runs a block only when the variable NAME is true at the
//! moment the block would start, `unless=NAME` only when it is not. The rule of truth, the
//! reason a skipped block gives, and the words `show` and the plan use. Pure: the engine
//! looks the value up in the environment the block would get.

use crate::command::Attrs;

/// A shell variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_var_name(s: &str) -> bool {
    match s.as_bytes() {
        [first, rest @ ..] => {
            (first.is_ascii_alphabetic() || *first == b'_')
                && rest.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        }
        [] => false,
    }
}

/// The values that are set but false, compared without case and without the spaces around
/// them (`echo "X=0 " >>"$NIXCMD_ENV"` means 0).
const FALSE: &[&str] = &["", "0", "false", "no", "off"];

/// True: set, and not empty, `0`, `false`, `no` or `off` (any case, spaces around ignored).
pub fn is_true(value: Option<&str>) -> bool {
    match value {
        None => false,
        Some(v) => {
            let v = v.trim_ascii();
            !FALSE.iter().any(|f| v.eq_ignore_ascii_case(f))
        }
    }
}

/// Why a block with `attrs` does not run, given how a variable is looked up (`None`: unset);
/// `None` when it runs. The reason names the variable, never its value: it may be a secret.
pub fn skip_reason(attrs: &Attrs, lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(name) = &attrs.when {
        match lookup(name) {
            None => return Some(format!("when={name}: {name} is not set")),
            Some(v) if !is_true(Some(&v)) => {
                return Some(format!("when={name}: {name} is not true"));
            }
            Some(_) => {}
        }
    }
    if let Some(name) = &attrs.unless
        && is_true(lookup(name).as_deref())
    {
        return Some(format!("unless={name}: {name} is true"));
    }
    None
}

/// The condition in words, for `show` and the plan: `only when X`, `unless Y`, or both.
pub fn describe(attrs: &Attrs) -> Option<String> {
    match (&attrs.when, &attrs.unless) {
        (None, None) => None,
        (Some(w), None) => Some(format!("only when {w}")),
        (None, Some(u)) => Some(format!("unless {u}")),
        (Some(w), Some(u)) => Some(format!("only when {w}, unless {u}")),
    }
}

/// The variables nixcmd documents (DESIGN.md §2 and README): a condition may name them
/// without the file mentioning them.
pub const DOCUMENTED: &[&str] = &[
    "NIXCMD_RUN_ID",
    "NIXCMD_COMMAND",
    "NIXCMD_STATE",
    "NIXCMD_ENV",
    "NIXCMD_DRY_RUN",
    "NIXCMD_HOST",
    "NIXCMD_HOSTS_FILE",
    "ARGUMENTS",
    "CI",
];

/// How often `name` occurs in `text` as a whole word (not inside a longer variable name).
/// A letter escaped by `\` just before it (`printf 'A=1\nNAME=0'`) does not join the word.
pub fn occurrences(text: &str, name: &str) -> usize {
    if name.is_empty() {
        return 0;
    }
    let word = |b: Option<&u8>| b.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
    let bytes = text.as_bytes();
    memchr::memmem::find_iter(bytes, name.as_bytes())
        .filter(|&at| {
            let before = at.checked_sub(1).and_then(|i| bytes.get(i));
            let escaped =
                before.is_some_and(u8::is_ascii_alphabetic) && at >= 2 && bytes[at - 2] == b'\\';
            (escaped || !word(before)) && !word(bytes.get(at + name.len()))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truth_is_set_and_not_a_false_word() {
        for v in [
            "1", "true", "yes", "on", "TRUE", "2", "x", " 1 ", "00", "0.0", "-",
        ] {
            assert!(is_true(Some(v)), "{v:?} is true");
        }
        for v in [
            "", " ", "0", "false", "False", "FALSE", "no", "NO", "No", "off", "Off", " 0", "0\t",
            "\n",
        ] {
            assert!(!is_true(Some(v)), "{v:?} is not true");
        }
        assert!(!is_true(None));
    }

    #[test]
    fn variable_names() {
        for ok in ["X", "_", "_x1", "FLAKE_UPDATE_CHANGED", "a9"] {
            assert!(is_var_name(ok), "{ok}");
        }
        for bad in ["", "9x", "a-b", "a.b", "$X", "é", "a b", "X="] {
            assert!(!is_var_name(bad), "{bad}");
        }
    }

    fn attrs(when: Option<&str>, unless: Option<&str>) -> Attrs {
        Attrs {
            when: when.map(str::to_string),
            unless: unless.map(str::to_string),
            ..Attrs::default()
        }
    }

    #[test]
    fn reasons_name_the_variable_never_its_value() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let when = attrs(Some("X"), None);
        assert_eq!(
            skip_reason(&when, env(&[])).as_deref(),
            Some("when=X: X is not set")
        );
        assert_eq!(
            skip_reason(&when, env(&[("X", "off")])).as_deref(),
            Some("when=X: X is not true")
        );
        assert_eq!(skip_reason(&when, env(&[("X", "s3cr3t")])), None);
        let unless = attrs(None, Some("Y"));
        assert_eq!(skip_reason(&unless, env(&[])), None);
        assert_eq!(skip_reason(&unless, env(&[("Y", "no")])), None);
        assert_eq!(
            skip_reason(&unless, env(&[("Y", "s3cr3t")])).as_deref(),
            Some("unless=Y: Y is true")
        );
        let both = attrs(Some("X"), Some("Y"));
        assert_eq!(skip_reason(&both, env(&[("X", "1")])), None);
        assert_eq!(
            skip_reason(&both, env(&[("X", "1"), ("Y", "1")])).as_deref(),
            Some("unless=Y: Y is true")
        );
        assert_eq!(
            skip_reason(&both, env(&[("Y", "1")])).as_deref(),
            Some("when=X: X is not set")
        );
        assert_eq!(skip_reason(&Attrs::default(), env(&[])), None);
    }

    #[test]
    fn descriptions() {
        assert_eq!(describe(&attrs(None, None)), None);
        assert_eq!(
            describe(&attrs(Some("A"), None)).as_deref(),
            Some("only when A")
        );
        assert_eq!(
            describe(&attrs(None, Some("B"))).as_deref(),
            Some("unless B")
        );
        assert_eq!(
            describe(&attrs(Some("A"), Some("B"))).as_deref(),
            Some("only when A, unless B")
        );
    }

    #[test]
    fn occurrences_are_whole_words() {
        let text = "X X_1 AX X. $X ${X:-0} when=X XX";
        assert_eq!(occurrences(text, "X"), 5);
        assert_eq!(occurrences(text, "X_1"), 1);
        assert_eq!(occurrences("", "X"), 0);
        assert_eq!(occurrences("abc", ""), 0);
        assert_eq!(occurrences(r"printf 'A=1\nX=0\tX=1' nX", "X"), 2);
    }
}
