//! Secret redaction: values of variables whose names contain TOKEN, SECRET, PASSWORD or KEY,
//! and of those listed in `nixcmd.secrets`, never reach logs or events.

/// Replaces known secret values in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<String>,
    /// `values` as they appear inside a JSON string (quotes, backslashes and control
    /// characters escaped), in the same order: what [`Redactor::redact_json`] looks for.
    in_json: Vec<String>,
}

/// What a secret's name contains (in any case). The ssh wrapper's test is built from it.
pub const MARKERS: &[&str] = &["TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY"];

/// Whether a variable name marks its value as a secret.
pub fn is_secret_name(name: &str, extra: &[String]) -> bool {
    let upper = name.to_ascii_uppercase();
    MARKERS.iter().any(|m| upper.contains(m)) || extra.iter().any(|e| e == name)
}

impl Redactor {
    /// Collects secret values from name/value pairs. Very short values are ignored: redacting
    /// every "1" or "on" would destroy the logs without protecting anything.
    pub fn add<'a>(
        &mut self,
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
        extra: &[String],
    ) {
        let known = self.values.len();
        for (name, value) in vars {
            if !is_secret_name(name, extra) {
                continue;
            }
            self.learn(value);
            // Output is redacted line by line, where a secret of several lines (a private
            // key, a certificate) never appears whole: each of its lines is a secret too.
            if value.contains('\n') {
                for line in value.lines() {
                    self.learn(line.trim());
                }
            }
        }
        // Hosts tell their secrets again at every step: nothing new, nothing to redo.
        if self.values.len() == known {
            return;
        }
        // Longest first, so a secret containing another is replaced whole.
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        self.in_json = self
            .values
            .iter()
            .map(|v| {
                let quoted = serde_json::to_string(v).unwrap_or_default();
                quoted[1..quoted.len() - 1].to_string()
            })
            .collect();
    }

    /// Words that are settings, never secrets: `TOKENIZERS_PARALLELISM=false` has TOKEN in its
    /// name, and redacting every `false` and `true` in a step's output (JSON, `nix eval`)
    /// garbled the log without hiding anything.
    fn learn(&mut self, value: &str) {
        const NOT_SECRETS: &[&str] = &["true", "false", "none", "null"];
        if NOT_SECRETS.iter().any(|w| value.eq_ignore_ascii_case(w)) {
            return;
        }
        if value.len() >= 4 && !self.values.iter().any(|v| v == value) {
            self.values.push(value.to_string());
        }
    }

    pub fn redact(&self, text: &str) -> String {
        self.redact_owned(text.to_string())
    }

    /// [`Redactor::redact`] of a string already owned: not copied when nothing matches.
    pub fn redact_owned(&self, text: String) -> String {
        let mut out = text;
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), "[REDACTED]");
            }
        }
        out
    }

    /// [`Redactor::redact`] of text that may end in the middle of a secret (the part of a
    /// line printed so far): a start of a secret at its end is cut off too.
    pub fn redact_progress(&self, text: &str) -> String {
        let mut out = self.redact(text);
        out.truncate(self.unfinished_secret_at(&out));
        out
    }

    /// Where the longest end of `text` that begins a secret (and is shorter than it) starts:
    /// `text.len()` when none does. Always a character boundary (a secret's first byte starts
    /// a character), at most the longest secret's length − 1 bytes from the end.
    fn unfinished_secret_at(&self, text: &str) -> usize {
        let bytes = text.as_bytes();
        let mut cut = bytes.len();
        for v in &self.values {
            // Where the longest start of `v` that `text` ends with begins (shorter than `v`,
            // which `redact` replaced).
            let from = bytes.len().saturating_sub(v.len() - 1);
            let start = (from..bytes.len())
                .find(|&i| bytes[i] == v.as_bytes()[0] && v.as_bytes().starts_with(&bytes[i..]));
            if let Some(i) = start {
                cut = cut.min(i);
            }
        }
        cut
    }

    /// [`Redactor::redact`] of one serialized JSON value (an event line): a secret is replaced
    /// inside string values only. Replaced anywhere, a secret such as `false` or `1234`
    /// (`TOKENIZERS_PARALLELISM=false`) turned `"dry_run":false` into `"dry_run":[REDACTED]`,
    /// a line no reader can parse; inside an escape (`\u001b`) or an object key it broke
    /// the line or its schema.
    pub fn redact_json(&self, line: String) -> String {
        let mut out = line;
        for escaped in &self.in_json {
            if out.contains(escaped.as_str()) {
                out = redact_json_strings(&out, escaped);
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// The ends of pieces of over-long lines held back (see [`crate::process::Observed::Cut`]): a
/// line longer than 64 KiB reaches nixcmd in pieces, and a secret printed across a cut would
/// be redacted in neither piece. A piece's end that could begin a secret (at most the longest
/// secret's length − 1 bytes) is held back and put before the next piece of its line, per
/// step, host and stream.
#[derive(Debug, Default)]
pub struct Straddles {
    held: Vec<(Straddle, String)>,
}

/// Whose line a held end belongs to: a step, its host on fan-out, a stream.
#[derive(Debug, PartialEq)]
struct Straddle {
    step_id: String,
    host: Option<String>,
    stream: crate::process::Stream,
}

impl Straddles {
    /// `piece` of a line (`cut`: the line goes on in the next piece of the same step, host and
    /// stream; else it ends the line), redacted, after what an earlier piece held back; a cut
    /// piece without its end that could begin a secret. `None` when nothing is left to show
    /// (a piece that is all the start of a secret, which only a secret over 64 KiB allows).
    pub fn piece(
        &mut self,
        redactor: &Redactor,
        step_id: &str,
        host: Option<&str>,
        stream: crate::process::Stream,
        piece: &str,
        cut: bool,
    ) -> Option<String> {
        let at = self.find(step_id, host, stream);
        // Nothing held (the rule) and nothing to hold: the line as ever.
        if at.is_none() && !cut {
            return Some(redactor.redact(piece));
        }
        let text = match at {
            Some(i) => {
                let (_, mut held) = self.held.swap_remove(i);
                held.push_str(piece);
                // The end of a cut line that adds nothing (the empty last piece at the end of
                // file, see `process::split_lines`) makes no line of its own.
                if held.is_empty() && !cut {
                    return None;
                }
                redactor.redact_owned(held)
            }
            None => redactor.redact(piece),
        };
        if !cut {
            return Some(text);
        }
        let mut text = text;
        let rest = text.split_off(redactor.unfinished_secret_at(&text));
        // Kept even when empty: the line is open, and its last piece must find it.
        let key = Straddle {
            step_id: step_id.to_string(),
            host: host.map(str::to_string),
            stream,
        };
        self.held.push((key, rest));
        (!text.is_empty()).then_some(text)
    }

    /// The newest part of a line being printed (see [`Redactor::redact_progress`]), after what
    /// a piece of that line held back: a secret whose start was held back is not shown by
    /// its end either. As it came when nothing is held.
    pub fn progress(
        &self,
        redactor: &Redactor,
        step_id: &str,
        host: Option<&str>,
        stream: crate::process::Stream,
        text: &str,
    ) -> String {
        let Some(i) = self.find(step_id, host, stream) else {
            return text.to_string();
        };
        let held = &self.held[i].1;
        let joined = redactor.redact_progress(&format!("{held}{text}"));
        // A newest segment after a `\r` does not go on from the held end: not shown with it.
        match joined.strip_prefix(held.as_str()) {
            Some(rest) => rest.to_string(),
            None => joined,
        }
    }

    fn find(
        &self,
        step_id: &str,
        host: Option<&str>,
        stream: crate::process::Stream,
    ) -> Option<usize> {
        if self.held.is_empty() {
            return None;
        }
        self.held.iter().position(|(k, _)| {
            k.stream == stream && k.step_id == step_id && k.host.as_deref() == host
        })
    }
}

/// `json` with every occurrence of `needle` (a JSON-escaped text) that lies within a string
/// value, starting at a character rather than inside an escape sequence, replaced by
/// `[REDACTED]`.
fn redact_json_strings(json: &str, needle: &str) -> String {
    let b = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut copied = 0;
    let mut i = 0;
    let mut hits = Vec::new();
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        // A string literal: from after its opening quote to its closing one.
        let mut j = i + 1;
        hits.clear();
        while j < b.len() && b[j] != b'"' {
            if b[j..].starts_with(needle.as_bytes()) {
                hits.push(j);
                j += needle.len();
                continue;
            }
            j += match (b[j], b.get(j + 1)) {
                (b'\\', Some(b'u')) => 6,
                (b'\\', _) => 2,
                _ => 1,
            };
        }
        let end = j.min(b.len());
        // An object key (a string followed by `:`) is the event's schema, not its data.
        let is_key = b
            .get(end + 1..)
            .unwrap_or_default()
            .iter()
            .find(|c| !c.is_ascii_whitespace())
            == Some(&b':');
        if !is_key {
            for &hit in &hits {
                out.push_str(&json[copied..hit]);
                out.push_str("[REDACTED]");
                copied = hit + needle.len();
            }
        }
        i = end + 1;
    }
    out.push_str(&json[copied..]);
    out
}

/// Watches the `$NIXCMD_ENV` file while a step runs, so that a secret the step exports there
/// is redacted from the step's very next output line, not only from later steps.
pub struct EnvWatch {
    path: std::path::PathBuf,
    len: u64,
    extra: Vec<String>,
}

impl EnvWatch {
    /// `len`: the file's length when the step started (what it already held).
    pub fn new(path: std::path::PathBuf, len: u64, extra: Vec<String>) -> Self {
        EnvWatch { path, len, extra }
    }

    /// Learns the secrets of new exports, if the file grew (one `stat` per call,
    /// relative to the run folder when it is held open).
    pub fn refresh(&mut self, redactor: &mut Redactor, folder: Option<&crate::records_io::Folder>) {
        let len = crate::records_io::stat_in(folder, &self.path, true).map_or(0, |m| m.len);
        if len == self.len {
            return;
        }
        self.len = len;
        let parsed = crate::run::env_file::read(&self.path);
        // A value still being written (its block not closed yet) may be printed already.
        let vars = parsed.vars.iter().chain(&parsed.unterminated);
        redactor.add(vars.map(|(k, v)| (k.as_str(), v.as_str())), &self.extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_values_of_secret_names_only() {
        let mut r = Redactor::default();
        r.add(
            [
                ("API_TOKEN", "abcd1234"),
                ("HOME", "/root"),
                ("db_password", "hunter22"),
                ("MY", "pw12"),
            ],
            &["MY".into()],
        );
        assert_eq!(
            r.redact("t=abcd1234 p=hunter22 h=/root m=pw12"),
            "t=[REDACTED] p=[REDACTED] h=/root m=[REDACTED]"
        );
    }

    #[test]
    fn each_line_of_a_secret_of_several_lines_is_a_secret() {
        let mut r = Redactor::default();
        let key = "-----BEGIN KEY-----\r\nAAAAbody1\n\n  \nBBBBbody2\nxy\n-----END KEY-----\n";
        r.add([("DEPLOY_KEY", key)], &[]);
        // Blank and short lines are not secrets: they would blank out every empty line.
        assert_eq!(r.redact("a AAAAbody1 b"), "a [REDACTED] b");
        assert_eq!(r.redact("BBBBbody2"), "[REDACTED]");
        assert_eq!(r.redact("xy  z"), "xy  z");
        assert_eq!(r.redact(key), "[REDACTED]");
    }

    #[test]
    fn settings_words_are_never_secrets() {
        let mut r = Redactor::default();
        r.add(
            [
                ("TOKENIZERS_PARALLELISM", "false"),
                ("USE_KEYRING", "True"),
                ("SECRET_BACKEND", "none"),
                ("KEY_FILE", "NULL"),
            ],
            &[],
        );
        assert!(r.is_empty());
        assert_eq!(r.redact("false True none NULL"), "false True none NULL");
    }

    /// A secret printed across the cut of an over-long line is redacted whole, from the
    /// line's pieces and from the live display; what could begin a secret but does not is
    /// shown with the next piece, and nothing is held for another stream, step or host.
    #[test]
    fn a_secret_across_the_cut_of_a_long_line_is_redacted() {
        use crate::process::Stream::{Stderr, Stdout};
        let mut r = Redactor::default();
        r.add([("MY_TOKEN", "abcdefghijklmnop"), ("K_KEY", "é-pw-é")], &[]);
        let mut s = Straddles::default();
        let mut piece = |step: &str, host: Option<&str>, stream, text: &str, cut| {
            s.piece(&r, step, host, stream, text, cut)
        };
        assert_eq!(
            piece("a", None, Stdout, "xxxabcdef", true).as_deref(),
            Some("xxx")
        );
        // Another stream, step or host goes on as ever.
        assert_eq!(
            piece("a", None, Stderr, "abc", false).as_deref(),
            Some("abc")
        );
        assert_eq!(
            piece("b", None, Stdout, "abc", false).as_deref(),
            Some("abc")
        );
        assert_eq!(
            piece("a", Some("h"), Stdout, "abc", false).as_deref(),
            Some("abc")
        );
        assert_eq!(
            piece("a", None, Stdout, "ghijklmnop tail", false).as_deref(),
            Some("[REDACTED] tail")
        );
        // The empty last piece at the end of file (a line ending at a cut): what was held is
        // passed on, not lost; with nothing held it makes no line.
        assert_eq!(
            piece("e", None, Stdout, "xxxabc", true).as_deref(),
            Some("xxx")
        );
        assert_eq!(piece("e", None, Stdout, "", false).as_deref(), Some("abc"));
        assert_eq!(
            piece("f", None, Stdout, "xxx", true).as_deref(),
            Some("xxx")
        );
        assert_eq!(piece("f", None, Stdout, "", false), None);
        // Several pieces; a start of a secret that turns out not to be one is shown.
        assert_eq!(
            piece("a", None, Stdout, "yyabc", true).as_deref(),
            Some("yy")
        );
        assert_eq!(
            piece("a", None, Stdout, "dexyz", true).as_deref(),
            Some("abcdexyz")
        );
        assert_eq!(piece("a", None, Stdout, "é-p", true), None);
        assert_eq!(
            piece("a", None, Stdout, "w-é end", false).as_deref(),
            Some("[REDACTED] end")
        );
        // The live display of the line's next part hides the secret's end too.
        s.piece(&r, "a", None, Stdout, "zzabcdefgh", true);
        assert_eq!(
            s.progress(&r, "a", None, Stdout, "ijklmnop and"),
            "[REDACTED] and"
        );
        assert_eq!(s.progress(&r, "a", None, Stdout, "ijk"), "");
        assert_eq!(s.progress(&r, "a", None, Stdout, "other"), "other");
        assert_eq!(s.progress(&r, "a", None, Stderr, "ijklmnop"), "ijklmnop");
    }

    #[test]
    fn a_progress_segment_loses_a_secret_and_a_start_of_one_at_its_end() {
        let mut r = Redactor::default();
        r.add([("API_TOKEN", "abcd1234"), ("DB_PASSWORD", "é-pw-é")], &[]);
        assert_eq!(r.redact_progress("t=abcd1234 50%"), "t=[REDACTED] 50%");
        assert_eq!(r.redact_progress("sending abcd12"), "sending ");
        assert_eq!(r.redact_progress("sending a"), "sending ");
        assert_eq!(r.redact_progress("x é-p"), "x ");
        assert_eq!(r.redact_progress("abcd"), "");
        assert_eq!(r.redact_progress("50% done"), "50% done");
        assert_eq!(r.redact_progress(""), "");
    }

    #[test]
    fn a_json_line_keeps_its_structure() {
        let mut r = Redactor::default();
        r.add(
            [
                ("TOKENIZERS_PARALLELISM", "false"),
                ("PIN_SECRET", "1234"),
                ("API_KEY", "line"),
                ("A_TOKEN", "q\"uo\\te"),
                ("B_TOKEN", "001b"),
            ],
            &[],
        );
        let event = serde_json::json!({
            "dry_run": false,
            "seq": 1234,
            "line": "false 1234 q\"uo\\te \u{1b}[0m",
            "list": ["false", "not false"],
        });
        let line = serde_json::to_string(&event).unwrap();
        let redacted = r.redact_json(line);
        let back: serde_json::Value = serde_json::from_str(&redacted).unwrap();
        assert_eq!(
            back,
            serde_json::json!({
                "dry_run": false,
                "seq": 1234,
                "line": "false [REDACTED] [REDACTED] \u{1b}[0m",
                "list": ["false", "not false"],
            })
        );
    }
}
