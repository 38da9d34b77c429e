//! The section-synonym table: which `##` headings mean prerequisites, steps, success criteria,
//! rollback, troubleshooting, references or overview. The one place that knows the synonyms;
//! README.md lists the same table and a test keeps the two in step.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SectionKind {
    Overview,
    Prerequisites,
    Steps,
    SuccessCriteria,
    Rollback,
    Troubleshooting,
    References,
    /// Anything else: kept, shown, never run.
    Notes,
}

impl SectionKind {
    pub fn label(self) -> &'static str {
        match self {
            SectionKind::Overview => "overview",
            SectionKind::Prerequisites => "prerequisites",
            SectionKind::Steps => "steps",
            SectionKind::SuccessCriteria => "success criteria",
            SectionKind::Rollback => "rollback",
            SectionKind::Troubleshooting => "troubleshooting",
            SectionKind::References => "references",
            SectionKind::Notes => "notes",
        }
    }
}

/// Normalized heading → kind. Headings are normalized by [`normalize`] before lookup.
pub const SYNONYMS: &[(SectionKind, &[&str])] = &[
    (
        SectionKind::Overview,
        &[
            "overview",
            "task overview",
            "description",
            "introduction",
            "purpose",
            "about",
            "summary",
            "context",
            "task",
            "what this does",
        ],
    ),
    (
        SectionKind::Prerequisites,
        &[
            "prerequisites",
            "prerequisite",
            "requirements",
            "preconditions",
            "pre-checks",
            "pre-check setup",
            "pre-update checks",
            "pre-deployment checks",
            "pre-flight checks",
            "preflight",
            "preflight checks",
            "pre-work checklist",
            "before you begin",
            "before you start",
        ],
    ),
    (
        SectionKind::Steps,
        &[
            "steps",
            "step-by-step procedures",
            "procedure",
            "procedures",
            "process",
            "workflow",
            "instructions",
            "implementation",
            "update process",
            "manual update process",
            "deployment process",
            "deployment steps",
            "packaging workflow",
            "execution",
            "run",
            "what i'll do",
        ],
    ),
    (
        SectionKind::SuccessCriteria,
        &[
            "success criteria",
            "success checklist",
            "success metrics",
            "acceptance criteria",
            "checklist",
            "verification",
            "validation",
            "validation & testing",
            "validation and testing",
            "post-deployment verification",
            "post-update verification",
            "health checks",
        ],
    ),
    (
        SectionKind::Rollback,
        &[
            "rollback",
            "rollbacks",
            "rollback procedure",
            "rollback procedures",
            "rollback plan",
            "recovery",
            "error recovery",
            "emergency recovery",
            "undo",
            "revert",
        ],
    ),
    (
        SectionKind::Troubleshooting,
        &[
            "troubleshooting",
            "common issues",
            "common issues and solutions",
            "common issues & solutions",
            "common problems",
            "known issues",
            "error handling",
            "faq",
            "if something goes wrong",
        ],
    ),
    (
        SectionKind::References,
        &[
            "references",
            "reference",
            "documentation references",
            "documentation",
            "resources",
            "see also",
            "links",
            "further reading",
            "context documents",
        ],
    ),
];

/// What a `##` heading is: its kind, and for numbered step headings (`Step 3: Build`) the
/// step's own title.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub kind: SectionKind,
    /// `Some("Build")` for `## Step 3: Build`: the section is itself one named step.
    pub step_title: Option<String>,
}

/// Classifies a `##` heading's text.
pub fn classify(heading: &str) -> Classified {
    if let Some(title) = numbered_step_title(heading) {
        return Classified {
            kind: SectionKind::Steps,
            step_title: Some(title),
        };
    }
    let kind = if already_normal(heading) {
        // The common case (`Steps`, `Success Criteria`): normalizing would only lowercase,
        // so compare without the three allocations of `normalize`.
        lookup(|name| name.eq_ignore_ascii_case(heading))
    } else {
        let key = normalize(heading);
        lookup(|name| name == key)
    };
    Classified {
        kind,
        step_title: None,
    }
}

fn lookup(matches: impl Fn(&str) -> bool) -> SectionKind {
    SYNONYMS
        .iter()
        .find(|(_, names)| names.iter().any(|n| matches(n)))
        .map(|(kind, _)| *kind)
        .unwrap_or(SectionKind::Notes)
}

/// Whether [`normalize`] would only lowercase `heading`: ASCII, starting with a letter (no
/// emoji, punctuation or numbering to strip), ending with a letter or digit (no trailing
/// punctuation or parenthetical), words separated by single spaces.
fn already_normal(heading: &str) -> bool {
    let b = heading.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) if f.is_ascii_alphabetic() && l.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    heading.is_ascii()
        && !heading.contains("  ")
        && !b.iter().any(|&c| c.is_ascii_whitespace() && c != b' ')
}

/// Lowercases, strips leading emoji, punctuation and numbering (`1.`, `2)`, `Phase 2:`), a
/// trailing parenthetical (`(Manual Process)`) and trailing punctuation, and squeezes spaces.
pub fn normalize(heading: &str) -> String {
    // Every section heading of every listed file comes here: ASCII ones skip the Unicode
    // case tables.
    let lower = if heading.is_ascii() {
        heading.to_ascii_lowercase()
    } else {
        heading.to_lowercase()
    };
    let mut s = lower
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .trim();
    // "1. Prerequisites", "2) Steps"
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(0);
    if digits > 0 {
        s = s[digits..]
            .trim_start_matches(|c: char| !c.is_alphanumeric())
            .trim();
    }
    let mut out = s.to_string();
    if let Some(open) = out.rfind(" (")
        && out.ends_with(')')
    {
        out.truncate(open);
    }
    let out = out.trim_end_matches(|c: char| !c.is_alphanumeric() && c != ')');
    let mut squeezed = String::with_capacity(out.len());
    for word in out.split_whitespace() {
        if !squeezed.is_empty() {
            squeezed.push(' ');
        }
        squeezed.push_str(word);
    }
    squeezed
}

/// `Step 3: Build the system` → `Build the system`.
fn numbered_step_title(heading: &str) -> Option<String> {
    let trimmed = heading.trim_start_matches(|c: char| !c.is_alphanumeric());
    let rest = trimmed
        .strip_prefix("Step ")
        .or_else(|| trimmed.strip_prefix("step "))?;
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 {
        return None;
    }
    let title = rest[digits..].trim_start_matches([':', '.', ')', '-', ' ', '—']);
    let title = title.trim();
    Some(if title.is_empty() {
        format!("Step {}", &rest[..digits])
    } else {
        title.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_numbering_emoji_and_parentheticals() {
        assert_eq!(normalize("🚨 Rollback Procedures"), "rollback procedures");
        assert_eq!(normalize("2. Steps"), "steps");
        assert_eq!(
            normalize("Pre-Update Checks (Manual Process)"),
            "pre-update checks"
        );
        assert_eq!(
            normalize("  Common Issues & Solutions: "),
            "common issues & solutions"
        );
    }

    #[test]
    fn classifies_synonyms_and_numbered_steps() {
        assert_eq!(
            classify("Success Checklist").kind,
            SectionKind::SuccessCriteria
        );
        assert_eq!(classify("Rollback Procedure").kind, SectionKind::Rollback);
        assert_eq!(classify("Quick Start").kind, SectionKind::Notes);
        let step = classify("Step 3: Check Current and Latest Versions");
        assert_eq!(step.kind, SectionKind::Steps);
        assert_eq!(
            step.step_title.as_deref(),
            Some("Check Current and Latest Versions")
        );
    }

    #[test]
    fn the_shortcut_agrees_with_normalize() {
        for h in [
            "Steps",
            "Success Criteria",
            "STEPS",
            "Step",
            "Pre-Update Checks",
            "What I'll Do",
            "Common Issues & Solutions",
            "Rollback  Plan",
            "Rollback\tPlan",
            "1. Steps",
            "Steps:",
            "Steps (manual)",
            "Étapes",
            "x",
            "",
        ] {
            if already_normal(h) {
                assert_eq!(normalize(h), h.to_ascii_lowercase(), "{h:?}");
            }
            let slow = SYNONYMS
                .iter()
                .find(|(_, names)| names.contains(&normalize(h).as_str()))
                .map(|(kind, _)| *kind)
                .unwrap_or(SectionKind::Notes);
            assert_eq!(classify(h).kind, slow, "{h:?}");
        }
    }

    #[test]
    fn every_synonym_is_already_normalized() {
        for (_, names) in SYNONYMS {
            for name in *names {
                assert_eq!(&normalize(name), name);
            }
        }
    }
}

#[cfg(test)]
mod readme {
    /// README.md lists the same synonym table as the code.
    #[test]
    fn readme_lists_every_synonym() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("<!-- synonyms:start -->")
            .expect("README has the synonym table");
        let end = readme
            .find("<!-- synonyms:end -->")
            .expect("README closes the synonym table");
        let table = &readme[start..end];
        for (kind, names) in super::SYNONYMS {
            let row = table
                .lines()
                .find(|l| l.starts_with(&format!("| {} |", kind.label())))
                .unwrap_or_else(|| panic!("README has no row for {}", kind.label()));
            let listed: Vec<&str> = row
                .split('|')
                .nth(2)
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .collect();
            assert_eq!(listed, names.to_vec(), "README row for {}", kind.label());
        }
    }
}
