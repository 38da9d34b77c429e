//! `nixcmd claude export`: the wrappers it writes in `.claude/commands/` (more in
//! tests/mcp/test_claude_export.py).

use crate::support::Test;

const ONE: &str = "---\ndescription: One step\nnixcmd: {}\n---\n# One\n\n## Steps\n### Echo\n```bash {id=echo}\necho hi\n```\n";

/// A wrapper edited since nixcmd wrote it is the user's work: a later export leaves it as it
/// is and says how to replace it (`--force`); one as nixcmd wrote it still follows its
/// runbook's changes.
#[test]
fn an_edited_wrapper_is_left_alone_unless_forced() {
    let out = Test::new()
        .runbook("one.md", ONE)
        .args(["claude", "export"])
        .run();
    out.assert_status(0);
    let wrapper = out.root.path().join("project/.claude/commands/one.md");
    let written = std::fs::read_to_string(&wrapper).expect("the wrapper");
    let edited = format!("{written}Always run it twice.\n");
    std::fs::write(&wrapper, &edited).expect("edit the wrapper");
    let out = out.then().args(["claude", "export"]).run();
    out.assert_status(0);
    assert_eq!(
        out.filter(&out.stdout),
        "note: [TEMP]/project/./.claude/commands/one.md: left alone, it was edited since nixcmd \
         wrote it (edit the runbook instead); `nixcmd claude export --force` replaces it\n\
         nothing to change: 5 wrappers and .mcp.json are up to date in [TEMP]/project/.\n"
    );
    assert_eq!(
        std::fs::read_to_string(&wrapper).expect("the wrapper"),
        edited
    );
    let out = out.then().args(["claude", "export", "--force"]).run();
    out.assert_status(0);
    assert!(
        out.filter(&out.stdout)
            .starts_with("updated [TEMP]/project/./.claude/commands/one.md\n"),
        "{}",
        out.stdout
    );
    assert_eq!(
        std::fs::read_to_string(&wrapper).expect("the wrapper"),
        written
    );
    // Not edited: the runbook's new description reaches it.
    let runbook = out.root.path().join("project/.nixcmd/commands/one.md");
    std::fs::write(&runbook, ONE.replace("One step", "Just one step")).expect("edit the runbook");
    let out = out.then().args(["claude", "export"]).run();
    out.assert_status(0);
    assert!(
        out.filter(&out.stdout)
            .starts_with("updated [TEMP]/project/./.claude/commands/one.md\n"),
        "{}",
        out.stdout
    );
    let now = std::fs::read_to_string(&wrapper).expect("the wrapper");
    assert!(now.contains("description: \"Just one step\"\n"), "{now}");
}
