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
    // A heading equal to a synonym but for ASCII case is already normal (the synonyms are,
    // and it differs from one only in case), so this is what normalizing would find. It is
    // the common case (`Steps`, `Success Criteria`), and costs no allocation.
    let kind = if let Some(kind) = lookup(heading, eq_but_case) {
        kind
    } else if already_normal(heading) {
        // Normalizing would only lowercase: no synonym either.
        SectionKind::Notes
    } else {
        lookup(&normalize(heading), |name, key| name == key).unwrap_or(SectionKind::Notes)
    };
    Classified {
        kind,
        step_title: None,
    }
}

/// The kind of the first synonym (in table order) that is `same` as `key`. Only the
/// synonyms of `key`'s length are compared: a handful, not the whole table.
fn lookup(key: &str, same: impl Fn(&str, &str) -> bool) -> Option<SectionKind> {
    let group = BY_LEN.get(key.len())?;
    group.names[..group.count]
        .iter()
        .find(|(_, name)| same(name, key))
        .map(|(kind, _)| *kind)
}

/// Whether `heading` is `name` (a synonym: no capitals) but for ASCII case, eight bytes at a
/// time: this runs for every section heading of every listed file.
fn eq_but_case(name: &str, heading: &str) -> bool {
    let (n, h) = (name.as_bytes(), heading.as_bytes());
    if n.len() != h.len() {
        return false;
    }
    if n.len() < 8 {
        return n.iter().zip(h).all(|(n, h)| *n == h.to_ascii_lowercase());
    }
    let same = |at: usize| match (n[at..].first_chunk::<8>(), h[at..].first_chunk::<8>()) {
        (Some(n), Some(h)) => u64::from_le_bytes(*n) == lowercase8(u64::from_le_bytes(*h)),
        _ => false,
    };
    // Whole words, then the last eight bytes (overlapping the previous word).
    (0..n.len() - 8).step_by(8).all(same) && same(n.len() - 8)
}

/// `u8::to_ascii_lowercase` of each byte of `x`.
fn lowercase8(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    // Each byte's low seven bits plus a constant sets its top bit exactly when they are at
    // least `A` (or more than `Z`), without a carry into the next byte.
    let low = x & (0x7f * ONES);
    let at_least_a = low + (0x80 - b'A' as u64) * ONES;
    let above_z = low + (0x7f - b'Z' as u64) * ONES;
    let upper = at_least_a & !above_z & !x & (0x80 * ONES);
    x | (upper >> 2)
}

/// The synonyms of one length, in table order.
#[derive(Clone, Copy)]
struct SameLength {
    count: usize,
    names: [(SectionKind, &'static str); MAX_SAME_LENGTH],
}

/// [`SYNONYMS`] grouped by length, built from it at compile time, so the table stays the
/// one place that knows the synonyms.
static BY_LEN: [SameLength; MAX_LEN + 1] = group_by_length();

/// The longest synonym's length.
const MAX_LEN: usize = {
    let mut max = 0;
    let mut k = 0;
    while k < SYNONYMS.len() {
        let names = SYNONYMS[k].1;
        let mut n = 0;
        while n < names.len() {
            if names[n].len() > max {
                max = names[n].len();
            }
            n += 1;
        }
        k += 1;
    }
    max
};

/// The most synonyms that share one length.
const MAX_SAME_LENGTH: usize = {
    let mut counts = [0; MAX_LEN + 1];
    let mut max = 0;
    let mut k = 0;
    while k < SYNONYMS.len() {
        let names = SYNONYMS[k].1;
        let mut n = 0;
        while n < names.len() {
            counts[names[n].len()] += 1;
            if counts[names[n].len()] > max {
                max = counts[names[n].len()];
            }
            n += 1;
        }
        k += 1;
    }
    max
};

const fn group_by_length() -> [SameLength; MAX_LEN + 1] {
    let mut groups = [SameLength {
        count: 0,
        names: [(SectionKind::Notes, ""); MAX_SAME_LENGTH],
    }; MAX_LEN + 1];
    let mut k = 0;
    while k < SYNONYMS.len() {
        let (kind, names) = SYNONYMS[k];
        let mut n = 0;
        while n < names.len() {
            let group = &mut groups[names[n].len()];
            group.names[group.count] = (kind, names[n]);
            group.count += 1;
            n += 1;
        }
        k += 1;
    }
    groups
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
    // One pass: ASCII, no whitespace but single spaces (`is_ascii_whitespace`'s, as before).
    let mut prev = 0u8;
    b.iter().all(|&c| {
        let ok =
            c.is_ascii() && !(c.is_ascii_whitespace() && c != b' ') && !(c == b' ' && prev == b' ');
        prev = c;
        ok
    })
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
    // Most headings start with a letter: nothing to trim, and only `s` can start a step.
    let trimmed = match heading.as_bytes().first() {
        Some(b's' | b'S') => heading,
        Some(c) if c.is_ascii_alphanumeric() => return None,
        _ => heading.trim_start_matches(|c: char| !c.is_alphanumeric()),
    };
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

    /// The classification before the by-length index and the synonym-first order: the
    /// linear table scan, shortcut only for already normal headings.
    fn reference_kind(h: &str) -> SectionKind {
        let scan = |matches: &dyn Fn(&str) -> bool| {
            SYNONYMS
                .iter()
                .find(|(_, names)| names.iter().any(|n| matches(n)))
                .map(|(kind, _)| *kind)
                .unwrap_or(SectionKind::Notes)
        };
        if already_normal(h) {
            scan(&|name| name.eq_ignore_ascii_case(h))
        } else {
            let key = normalize(h);
            scan(&|name| name == key)
        }
    }

    #[test]
    fn classify_agrees_with_the_table_scan() {
        let mut headings: Vec<String> = Vec::new();
        for (_, names) in SYNONYMS {
            for name in *names {
                let title: String = name
                    .split(' ')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_uppercase().chain(c).collect::<String>())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                for h in [
                    name.to_string(),
                    name.to_uppercase(),
                    title.clone(),
                    format!("1. {title}"),
                    format!("{title}:"),
                    format!("{title} (manual)"),
                    format!("🚨 {title}"),
                    title.replace(' ', "  "),
                    title.replace(' ', "\t"),
                    title.replace(' ', "\u{b}"),
                    format!("{title}s"),
                    name[1..].to_string(),
                    name[..name.len() - 1].to_string(),
                ] {
                    headings.push(h);
                }
            }
        }
        headings.extend(
            [
                "",
                " ",
                "x",
                "Quick Start",
                "Überblick",
                "STEPS ",
                "Steps\u{b}",
            ]
            .map(String::from),
        );
        for h in &headings {
            assert_eq!(classify(h).kind, reference_kind(h), "{h:?}");
        }
    }

    #[test]
    fn lowercase8_lowercases_each_byte() {
        for base in (0u8..=255).step_by(8) {
            let bytes: [u8; 8] = std::array::from_fn(|i| base.wrapping_add(i as u8));
            let want = bytes.map(|b| b.to_ascii_lowercase());
            assert_eq!(
                lowercase8(u64::from_le_bytes(bytes)),
                u64::from_le_bytes(want)
            );
        }
        // Neighbouring bytes do not disturb each other.
        let mixed = *b"@AZ[`az{";
        assert_eq!(
            lowercase8(u64::from_le_bytes(mixed)),
            u64::from_le_bytes(mixed.map(|b| b.to_ascii_lowercase()))
        );
    }

    #[test]
    fn eq_but_case_is_eq_ignore_ascii_case_for_lowercase_names() {
        let names = [
            "steps",
            "rollback",
            "prerequisites",
            "success criteria",
            "x",
            "",
        ];
        let mut headings: Vec<String> = Vec::new();
        for name in names {
            headings.push(name.to_string());
            headings.push(name.to_uppercase());
            for i in 0..name.len() {
                for c in ['\0', '\r', '@', '`', '[', '{', 'Z', 'z', 'é'] {
                    let mut h: Vec<char> = name.chars().collect();
                    h[i] = c;
                    headings.push(h.into_iter().collect());
                }
            }
        }
        for name in names {
            for h in &headings {
                assert_eq!(
                    eq_but_case(name, h),
                    name.eq_ignore_ascii_case(h),
                    "{name:?} {h:?}"
                );
            }
        }
    }

    #[test]
    fn the_index_holds_every_synonym_once() {
        let total: usize = SYNONYMS.iter().map(|(_, names)| names.len()).sum();
        assert_eq!(BY_LEN.iter().map(|g| g.count).sum::<usize>(), total);
        for (kind, names) in SYNONYMS {
            for name in *names {
                assert!(already_normal(name), "{name:?}");
                assert_eq!(lookup(name, |a, b| a == b), Some(*kind), "{name:?}");
            }
        }
        assert_eq!(lookup(&"x".repeat(MAX_LEN + 1), |_, _| true), None);
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
