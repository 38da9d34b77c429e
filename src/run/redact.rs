//! Secret redaction: values of variables whose names contain TOKEN, SECRET, PASSWORD or KEY,
//! and of those listed in `nixcmd.secrets`, never reach logs or events.

/// Replaces known secret values in text.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    values: Vec<String>,
}

const MARKERS: &[&str] = &["TOKEN", "SECRET", "PASSWORD", "PASSWD", "KEY"];

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
        for (name, value) in vars {
            if value.len() >= 4
                && is_secret_name(name, extra)
                && !self.values.iter().any(|v| v == value)
            {
                self.values.push(value.to_string());
            }
        }
        // Longest first, so a secret containing another is replaced whole.
        self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
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

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
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

    /// Learns the secrets of new `KEY=VALUE` lines, if the file grew (one `stat` per call,
    /// relative to the run folder when it is held open).
    pub fn refresh(&mut self, redactor: &mut Redactor, folder: Option<&crate::records_io::Folder>) {
        let len = crate::records_io::stat_in(folder, &self.path, true).map_or(0, |m| m.len);
        if len == self.len {
            return;
        }
        self.len = len;
        let vars = crate::run::step::read_env_file(&self.path);
        redactor.add(
            vars.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &self.extra,
        );
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
}
