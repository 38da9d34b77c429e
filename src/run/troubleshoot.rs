//! Which troubleshooting entry of a runbook fits a failure: the one sharing the most words
//! with the failed step (its id and title) and the last lines of its output. A wrong entry
//! sends an operator the wrong way, so an entry is only offered when it shares at least two
//! telling words: not the runbook's own name ("flake" in every line of `flake-update`) and
//! not the words every failure prints ("error", "failed").

use crate::command::Entry;
use std::collections::BTreeSet;

/// Fewer shared words than this is a coincidence, not a match.
const MIN_SHARED: usize = 2;

/// Words of failure output that tell one entry from another no better than chance.
const COMMON: &[&str] = &[
    "about", "after", "again", "also", "before", "been", "cannot", "could", "does", "each",
    "error", "errors", "exited", "fail", "failed", "fails", "failure", "from", "have", "into",
    "more", "must", "only", "other", "should", "some", "status", "step", "than", "that", "their",
    "them", "then", "there", "this", "when", "which", "will", "with", "would", "your",
];

/// The distinct words of `text` that can tell entries apart: longer than three characters,
/// lowercased, neither common nor one of `own` (the runbook's name), and without a plural
/// `s` ("failed units" in a title, "failed-unit" in the output).
fn telling(text: &str, own: &BTreeSet<String>) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 3)
        .map(str::to_lowercase)
        .filter(|w| !COMMON.contains(&w.as_str()))
        .map(|w| match w.strip_suffix('s') {
            Some(stem) if w.len() > 4 && !stem.ends_with('s') => stem.to_string(),
            _ => w,
        })
        .filter(|w| !own.contains(w))
        .collect()
}

/// The entry of `entries` that best fits the failure of step `id` (titled `title`) whose
/// output ended with `tail`, in a runbook named `command`; `None` when none fits.
pub fn best<'e>(
    entries: &'e [Entry],
    command: &str,
    id: &str,
    title: &str,
    tail: &[String],
) -> Option<&'e Entry> {
    let own = telling(command, &BTreeSet::new());
    let named = telling(id, &own);
    let step = telling(&format!("{id} {title}"), &own);
    let mut context = String::new();
    for line in tail {
        context.push(' ');
        context.push_str(line);
    }
    let mut context = telling(&context, &own);
    context.extend(step.iter().cloned());
    entries
        .iter()
        .filter_map(|e| {
            let title = telling(&e.title, &own);
            let text = telling(&e.text, &own);
            let in_title = title.intersection(&context).count();
            let in_text = text
                .difference(&title)
                .filter(|w| context.contains(*w))
                .count();
            // An entry whose title names the failed step ("Break fails" for `break`) is
            // about it, whatever the output says. By its id, every word of it: one word of
            // the step's title ("host" in "Copy the closure to each host") is a coincidence
            // like any other, and counts as one.
            let names_step = !named.is_empty() && named.is_subset(&title);
            // The title names the symptom, the text the remedy: words shared with the title
            // decide, those shared with the text only break ties. A long entry that happens
            // to share words must not beat the one whose title names the failure.
            (names_step || in_title + in_text >= MIN_SHARED).then_some(((in_title, in_text), e))
        })
        // The first of equal scores: entries are written most likely first.
        .fold(
            None,
            |best: Option<((usize, usize), &Entry)>, (score, e)| match best {
                Some((b, _)) if b >= score => best,
                _ => Some((score, e)),
            },
        )
        .map(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// deploy-all: a host that went down after the canary is not "the canary failed".
    #[test]
    fn an_unreachable_host_is_not_a_failed_canary() {
        let entries = vec![
            entry(
                "The canary failed and nothing else was deployed",
                "fix the configuration for that host (it is likely the host the change \
                 touches first) and run again.",
            ),
            entry(
                "Cannot reach the host: connection refused, or timed out",
                "ssh could not connect, so the step never started on that host.",
            ),
        ];
        let tail =
            vec!["web2: cannot reach the host: Connection timed out during banner exchange".into()];
        let e = best(
            &entries,
            "deploy-all",
            "activate",
            "Activate (canary first)",
            &tail,
        );
        assert_eq!(e.map(|e| e.title.as_str()), Some(entries[1].title.as_str()));
    }

    fn entry(title: &str, text: &str) -> Entry {
        Entry {
            title: title.into(),
            text: text.into(),
            line: 1,
        }
    }

    fn flake_update() -> Vec<Entry> {
        vec![
            entry(
                "error: unable to download / Could not resolve host",
                "The update needs the network for every input it moves.",
            ),
            entry(
                "error: hash mismatch in fixed-output derivation",
                "An upstream source changed under a fixed hash.",
            ),
            entry(
                "nix flake check fails after the update: undefined variable, attribute missing",
                "The new inputs changed an option or removed a package.",
            ),
            entry(
                "flake.lock has uncommitted changes",
                "Commit or discard them before running.",
            ),
        ]
    }

    /// `step` is the id, then the title.
    fn title_of(step: &str, tail: &[&str]) -> Option<String> {
        let tail: Vec<String> = tail.iter().map(|l| l.to_string()).collect();
        let entries = flake_update();
        let (id, title) = step.split_once(' ').unwrap_or((step, ""));
        best(&entries, "flake-update", id, title, &tail).map(|e| e.title.clone())
    }

    #[test]
    fn the_entry_naming_the_failure_is_chosen() {
        assert_eq!(
            title_of(
                "update Update the inputs",
                &["error: unable to download 'https://github.com/x': Could not resolve host: github.com"]
            )
            .as_deref(),
            Some("error: unable to download / Could not resolve host")
        );
        assert_eq!(
            title_of(
                "check Evaluate and run the flake checks",
                &["error: undefined variable 'brokenVersionVariable'"]
            )
            .as_deref(),
            Some("nix flake check fails after the update: undefined variable, attribute missing")
        );
        assert_eq!(
            title_of(
                "clean-lock",
                &["flake.lock has uncommitted changes: commit or stash them"]
            )
            .as_deref(),
            Some("flake.lock has uncommitted changes")
        );
    }

    #[test]
    fn the_runbook_s_own_name_and_common_words_match_nothing() {
        // Every entry mentions the flake; that this failure does too says nothing.
        assert_eq!(
            title_of("in-flake", &["no flake.nix in /tmp/sweep (use --dir)"]),
            None
        );
        assert_eq!(
            title_of("build", &["error: build failed with exit status 1"]),
            None
        );
    }

    #[test]
    fn one_shared_word_is_a_coincidence() {
        // "hash" alone (a git hash in the output) is not a hash mismatch.
        assert_eq!(title_of("commit", &["commit hash 1a2b3c4d"]), None);
        assert_eq!(
            title_of(
                "fetch",
                &["error: hash mismatch in fixed-output derivation '/nix/store/x'"]
            )
            .as_deref(),
            Some("error: hash mismatch in fixed-output derivation")
        );
    }

    #[test]
    fn words_shared_with_a_title_outweigh_words_shared_with_a_text() {
        let entries = vec![
            entry(
                "systemd is not running (state: offline)",
                "Unit and journal checks are skipped; run it on the host for a full report.",
            ),
            entry(
                "degraded with failed units",
                "`systemctl --failed` lists them; `journalctl -u UNIT -b` says why.",
            ),
        ];
        let tail: Vec<String> = [
            "error [systemd] systemd is degraded",
            "error [failed-unit] nginx.service",
            "3 health errors (see the report)",
        ]
        .iter()
        .map(|l| l.to_string())
        .collect();
        assert_eq!(
            best(&entries, "system-health-check", "no-errors", "", &tail).map(|e| e.title.as_str()),
            Some("degraded with failed units")
        );
    }

    #[test]
    fn an_entry_whose_title_names_the_step_fits_its_failure() {
        let entries = vec![entry("Deploy fails", "It is meant to fail.")];
        let tail = vec!["about to fail".to_string()];
        let found = |id: &str, title: &str| {
            best(&entries, "failing", id, title, &tail).map(|e| e.title.as_str())
        };
        assert_eq!(found("deploy", "Deploy"), Some("Deploy fails"));
        assert_eq!(found("build", "Build"), None);
    }

    /// One word of the step's title shared with an entry's title does not make the entry
    /// about the step: "host" in a copy step's title is not a host key problem.
    #[test]
    fn a_word_of_the_step_s_title_alone_is_a_coincidence() {
        let entries = vec![entry(
            "host key verification failed",
            "Accept the host's new key with ssh-keygen -R.",
        )];
        let tail = vec!["No space left on device".to_string()];
        assert_eq!(
            best(
                &entries,
                "deploy-all",
                "copy",
                "Copy the closure to each host",
                &tail
            )
            .map(|e| e.title.as_str()),
            None
        );
    }

    #[test]
    fn of_equal_scores_the_first_entry_wins() {
        let entries = vec![
            entry("disk quota exceeded", "x"),
            entry("quota disk exceeded", "y"),
        ];
        let tail = vec!["disk quota exceeded".to_string()];
        assert_eq!(
            best(&entries, "any", "step", "", &tail).map(|e| e.text.as_str()),
            Some("x")
        );
    }
}
