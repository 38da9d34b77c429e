//! The `$NIXCMD_ENV` file: what a step appends to it is exported to later steps (DESIGN.md §2),
//! with GitHub Actions' syntax: `NAME=VALUE` lines, and `NAME<<DELIMITER`, the value's lines,
//! then a line that is exactly `DELIMITER`, for values of several lines (certificates, JSON,
//! changelogs). A line that is neither (nor blank) is a problem the run warns about, never
//! dropped without a word. The same rules for hosts are in the ssh wrapper (`remote.rs`).

/// What a read of the file found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The exports, in file order (a later one of the same name wins).
    pub vars: Vec<(String, String)>,
    /// Lines that set nothing, and why.
    pub problems: Vec<Problem>,
    /// Values not exported but redacted all the same if their name is a secret's: those of
    /// `NAME<<DELIMITER` blocks not closed (yet) (a step may print them before it writes the
    /// end), those of nixcmd's own names (see [`is_nixcmd_own`]) and those too long to pass
    /// (see [`too_long`]).
    pub unterminated: Vec<(String, String)>,
}

/// A line of the file that set nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Problem {
    /// 1-based.
    pub line: usize,
    /// What is wrong, without the line's text: it may hold a secret the redactor does not
    /// know, since it was never parsed as one.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "$NIXCMD_ENV line {}: {}", self.line, self.what)
    }
}

/// Reads and parses the file; a missing or unreadable file exports nothing.
pub fn read(path: &std::path::Path) -> Parsed {
    match std::fs::read(path) {
        Ok(bytes) => parse(&bytes),
        Err(_) => Parsed::default(),
    }
}

/// The name of an export as written before `=` or `<<` (spaces around it and an `export `
/// prefix allowed), if it is a shell variable name.
fn name(raw: &[u8]) -> Option<&str> {
    let raw = std::str::from_utf8(raw).ok()?.trim();
    // `export` and any blanks after it (`export  NAME=`, `export<TAB>NAME=`), as bash takes it.
    let k = match raw.strip_prefix("export") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_whitespace()) => rest.trim_start(),
        _ => raw,
    };
    let valid = !k.is_empty()
        && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        && !k.starts_with(|c: char| c.is_ascii_digit());
    valid.then_some(k)
}

/// A name nixcmd sets for every block itself (`NIXCMD_ENV`, `NIXCMD_ARG_*`, `ARGUMENTS`, …).
/// An export of one would win over nixcmd's value in later blocks: `NIXCMD_ENV` pointing where
/// nixcmd never reads (later exports lost, their secrets unredacted), an argument's value past
/// its `pattern`. It sets nothing and is warned about; `--set` refuses it by this same rule
/// (`args::bind`), and the ssh wrapper applies it on hosts (`remote.rs`).
pub fn is_nixcmd_own(name: &str) -> bool {
    name.starts_with("NIXCMD_") || name == "ARGUMENTS"
}

/// The longest `NAME=VALUE` string Linux passes to a program (MAX_ARG_STRLEN, 32 pages).
/// One longer makes every later block fail to start ("Argument list too long"), rollback
/// and `always` blocks included: such an export sets nothing, and `--set` refuses such a
/// value (`args::bind`).
pub const MAX_ENV_STRING: usize = 32 * 4096;

/// Whether `NAME=VALUE` (and its terminating NUL) is too long to reach a program.
pub fn too_long(k: &str, v: &str) -> bool {
    k.len() + v.len() + 2 > MAX_ENV_STRING
}

fn too_long_problem(k: &str, v: &str) -> String {
    format!(
        "`{k}` would be {} bytes, and Linux passes at most 128 KiB per environment variable: \
         not set (write a large value to a file and export its path)",
        k.len() + v.len() + 2
    )
}

fn own(k: &str) -> String {
    format!("`{k}` is set by nixcmd itself: not set")
}

const NOT_A_NAME: &str = "the text before `=` is not a variable name (letters, digits and `_`, not starting with a \
     digit): ignored";

/// Parses the file's bytes. Lines end at `\n`; one `\r` before it is dropped (files written
/// on Windows), in the lines of a `NAME<<DELIMITER` value too. A line that is not UTF-8 sets
/// nothing, but costs only itself (or its block).
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut out = Parsed::default();
    // A file ending in a newline does not have an empty last line.
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut lines = body.split(|b| *b == b'\n').enumerate().map(|(i, l)| {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        (i + 1, l)
    });
    while let Some((at, line)) = lines.next() {
        let eq = memchr::memchr(b'=', line);
        let heredoc = memchr::memmem::find(line, b"<<");
        match (eq, heredoc) {
            // `=` first: a `<<` after it is part of the value, as in GitHub Actions.
            (Some(eq), h) if h.is_none_or(|h| eq < h) => {
                let Some(k) = name(&line[..eq]) else {
                    out.problems.push(Problem {
                        line: at,
                        what: NOT_A_NAME.into(),
                    });
                    continue;
                };
                match std::str::from_utf8(&line[eq + 1..]) {
                    Ok(v) if is_nixcmd_own(k) => {
                        out.problems.push(Problem {
                            line: at,
                            what: own(k),
                        });
                        out.unterminated.push((k.to_string(), v.to_string()));
                    }
                    Ok(v) if too_long(k, v) => {
                        out.problems.push(Problem {
                            line: at,
                            what: too_long_problem(k, v),
                        });
                        out.unterminated.push((k.to_string(), v.to_string()));
                    }
                    Ok(v) => out.vars.push((k.to_string(), v.to_string())),
                    Err(_) => out.problems.push(Problem {
                        line: at,
                        what: format!("the value of `{k}` is not UTF-8: not set"),
                    }),
                }
            }
            (_, Some(h)) => {
                let delimiter = &line[h + 2..];
                let k = name(&line[..h]);
                if delimiter.is_empty() {
                    out.problems.push(Problem {
                        line: at,
                        what: match k {
                            Some(k) => format!("`{k}<<` has no delimiter after `<<`: ignored"),
                            None => "a `<<` without a delimiter after it: ignored".into(),
                        },
                    });
                    continue;
                }
                // The value's lines are taken up to the delimiter even when the name is
                // wrong: they must not be read as exports of their own.
                let mut value: Vec<u8> = Vec::new();
                let mut closed = false;
                let mut first = true;
                for (_, l) in lines.by_ref() {
                    if l == delimiter {
                        closed = true;
                        break;
                    }
                    if !first {
                        value.push(b'\n');
                    }
                    first = false;
                    value.extend_from_slice(l);
                }
                let delimiter = String::from_utf8_lossy(delimiter);
                let Some(k) = k else {
                    out.problems.push(Problem {
                        line: at,
                        what: "the text before `<<` is not a variable name (letters, digits \
                               and `_`, not starting with a digit): ignored"
                            .into(),
                    });
                    continue;
                };
                let value = String::from_utf8(value);
                match (closed, value) {
                    (true, Ok(v)) if is_nixcmd_own(k) => {
                        out.problems.push(Problem {
                            line: at,
                            what: own(k),
                        });
                        out.unterminated.push((k.to_string(), v));
                    }
                    (true, Ok(v)) if too_long(k, &v) => {
                        out.problems.push(Problem {
                            line: at,
                            what: too_long_problem(k, &v),
                        });
                        out.unterminated.push((k.to_string(), v));
                    }
                    (true, Ok(v)) => out.vars.push((k.to_string(), v)),
                    (true, Err(_)) => out.problems.push(Problem {
                        line: at,
                        what: format!("the value of `{k}` is not UTF-8: not set"),
                    }),
                    (false, value) => {
                        out.problems.push(Problem {
                            line: at,
                            what: format!(
                                "`{k}<<{delimiter}` has no line `{delimiter}` after it to end \
                                 the value: `{k}` not set"
                            ),
                        });
                        if let Ok(v) = value {
                            out.unterminated.push((k.to_string(), v));
                        }
                    }
                }
            }
            _ if line.iter().all(u8::is_ascii_whitespace) => {}
            _ => out.problems.push(Problem {
                line: at,
                what: "neither `NAME=VALUE` nor `NAME<<DELIMITER`: ignored".into(),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn problems(p: &Parsed) -> Vec<String> {
        p.problems.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn nixcmds_own_names_set_nothing_but_are_still_redacted() {
        let p = parse(b"NIXCMD_ENV=/x\nA=1\nNIXCMD_ARG_X<<E\nv\nE\nARGUMENTS=z\nNIXCMDX=ok\n");
        assert_eq!(p.vars, pairs(&[("A", "1"), ("NIXCMDX", "ok")]));
        assert_eq!(
            p.unterminated,
            pairs(&[
                ("NIXCMD_ENV", "/x"),
                ("NIXCMD_ARG_X", "v"),
                ("ARGUMENTS", "z")
            ])
        );
        assert_eq!(
            problems(&p),
            [
                "$NIXCMD_ENV line 1: `NIXCMD_ENV` is set by nixcmd itself: not set",
                "$NIXCMD_ENV line 3: `NIXCMD_ARG_X` is set by nixcmd itself: not set",
                "$NIXCMD_ENV line 6: `ARGUMENTS` is set by nixcmd itself: not set",
            ]
        );
    }

    #[test]
    fn an_env_file_line_that_is_not_utf8_costs_only_itself() {
        let got =
            parse(b"BAD=\xff\xfe\nGOOD=ok\r\nexport EQ=a=b\n1X=no\nnot a pair\nU=\xe6\x97\xa5\n");
        assert_eq!(
            got.vars,
            pairs(&[("GOOD", "ok"), ("EQ", "a=b"), ("U", "日")])
        );
        assert_eq!(
            problems(&got),
            [
                "$NIXCMD_ENV line 1: the value of `BAD` is not UTF-8: not set".to_string(),
                format!("$NIXCMD_ENV line 4: {NOT_A_NAME}"),
                "$NIXCMD_ENV line 5: neither `NAME=VALUE` nor `NAME<<DELIMITER`: ignored".into(),
            ]
        );
    }

    #[test]
    fn name_value_lines_keep_their_value_byte_for_byte() {
        let got = parse(
            b"A=b=\nB=\"q\" 'r' $(x) =c \n  export C = d\nD=\nE=x<<EOF\n\n   \n\tF=tab\nG=last",
        );
        assert_eq!(
            got.vars,
            pairs(&[
                ("A", "b="),
                ("B", "\"q\" 'r' $(x) =c "),
                ("C", " d"),
                ("D", ""),
                ("E", "x<<EOF"),
                ("F", "tab"),
                ("G", "last"),
            ])
        );
        assert!(got.problems.is_empty(), "{:?}", got.problems);
    }

    #[test]
    fn a_value_of_several_lines_goes_up_to_its_delimiter() {
        let got = parse(
            b"CERT<<EOF\n-----BEGIN-----\r\nA=not an export\n\nEOF \nEOF\r\nNEXT=1\n\
              export EMPTY<<END\nEND\nONE<<x=y\nline\nx=y\n",
        );
        assert_eq!(
            got.vars,
            pairs(&[
                ("CERT", "-----BEGIN-----\nA=not an export\n\nEOF "),
                ("NEXT", "1"),
                ("EMPTY", ""),
                ("ONE", "line"),
            ])
        );
        assert!(got.problems.is_empty(), "{:?}", got.problems);
        assert!(got.unterminated.is_empty());
    }

    #[test]
    fn a_broken_block_is_a_problem_and_sets_nothing() {
        let got = parse(
            b"1BAD<<E\nX=inside\nE\nNODELIM<<\nU=\xff<<no\nLATIN<<E\ncaf\xe9\nE\n\
              OK=1\nOPEN_KEY<<END\nsecret line\nmore",
        );
        assert_eq!(got.vars, pairs(&[("OK", "1")]));
        assert_eq!(
            problems(&got),
            [
                "$NIXCMD_ENV line 1: the text before `<<` is not a variable name (letters, \
                 digits and `_`, not starting with a digit): ignored",
                "$NIXCMD_ENV line 4: `NODELIM<<` has no delimiter after `<<`: ignored",
                "$NIXCMD_ENV line 5: the value of `U` is not UTF-8: not set",
                "$NIXCMD_ENV line 6: the value of `LATIN` is not UTF-8: not set",
                "$NIXCMD_ENV line 10: `OPEN_KEY<<END` has no line `END` after it to end the \
                 value: `OPEN_KEY` not set",
            ]
        );
        assert_eq!(
            got.unterminated,
            pairs(&[("OPEN_KEY", "secret line\nmore")])
        );
    }

    /// `export` with any blanks after it, as bash takes it; `exportFOO` is a name of its own.
    #[test]
    fn export_takes_any_blanks_after_it() {
        let p = parse(b"export  D=v4\nexport\tE=v5\n export F<<X\nv6\nX\nexportG=v7\n");
        assert_eq!(
            p.vars,
            pairs(&[("D", "v4"), ("E", "v5"), ("F", "v6"), ("exportG", "v7")])
        );
        assert_eq!(problems(&p), Vec::<String>::new());
    }

    /// A value Linux would not pass to a program sets nothing (every later block would fail
    /// to start, rollback included), named in a problem, and is still redacted if secret.
    #[test]
    fn an_export_too_long_for_linux_sets_nothing() {
        let big = "x".repeat(MAX_ENV_STRING);
        let fits = "y".repeat(MAX_ENV_STRING - "FITS".len() - 2);
        let text = format!("BIG={big}\nFITS={fits}\nBIG_KEY<<EOF\n{big}\nEOF\nAFTER=1\n");
        let p = parse(text.as_bytes());
        assert_eq!(p.vars, pairs(&[("FITS", &fits), ("AFTER", "1")]));
        let bytes = MAX_ENV_STRING + 5;
        let key_bytes = MAX_ENV_STRING + 9;
        assert_eq!(
            problems(&p),
            [
                format!(
                    "$NIXCMD_ENV line 1: `BIG` would be {bytes} bytes, and Linux passes at most \
                     128 KiB per environment variable: not set (write a large value to a file \
                     and export its path)"
                ),
                format!(
                    "$NIXCMD_ENV line 3: `BIG_KEY` would be {key_bytes} bytes, and Linux passes \
                     at most 128 KiB per environment variable: not set (write a large value to \
                     a file and export its path)"
                ),
            ]
        );
        assert_eq!(p.unterminated, pairs(&[("BIG", &big), ("BIG_KEY", &big)]));
    }

    #[test]
    fn an_empty_or_missing_file_exports_nothing() {
        assert_eq!(parse(b""), Parsed::default());
        assert_eq!(parse(b"\n\n"), Parsed::default());
        assert_eq!(
            read(std::path::Path::new("/nonexistent/env")),
            Parsed::default()
        );
    }
}
