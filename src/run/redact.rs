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
        let mut cut = out.len();
        let bytes = out.as_bytes();
        for v in &self.values {
            // Where the longest start of `v` that `out` ends with begins (shorter than `v`,
            // which `redact` replaced).
            let from = bytes.len().saturating_sub(v.len() - 1);
            let start = (from..bytes.len())
                .find(|&i| bytes[i] == v.as_bytes()[0] && v.as_bytes().starts_with(&bytes[i..]));
            if let Some(i) = start {
                cut = cut.min(i);
            }
        }
        out.truncate(cut);
        out
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
