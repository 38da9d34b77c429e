//! "Did you mean …?": the closest known name to a mistyped one.

/// The candidate closest to `input` by Jaro-Winkler similarity, if close enough to help.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(input, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggests_only_close_names() {
        let names = ["flake-update", "deploy-all", "config-audit"];
        assert_eq!(super::closest("flake-updte", names), Some("flake-update"));
        assert_eq!(super::closest("zzz", names), None);
    }
}
