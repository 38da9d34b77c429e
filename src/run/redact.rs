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
        let mut out = text.to_string();
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
