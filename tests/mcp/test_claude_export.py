"""`nixcmd claude export`: wrappers, .mcp.json merge, idempotence."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import BIN
from helpers import cli


def export(env) -> subprocess.CompletedProcess:
    return cli(env, "claude", "export", "--dir", str(env.project))


def frontmatter(text: str) -> dict:
    """The wrapper's frontmatter: `key: <JSON string>` lines (a subset of YAML)."""
    assert text.startswith("---\n")
    head, _ = text[4:].split("\n---\n", 1)
    return {k: json.loads(v) for k, v in (line.split(": ", 1) for line in head.splitlines())}


def test_export_writes_wrappers_and_merges_mcp_json(env):
    mcp_json = env.project / ".mcp.json"
    mcp_json.write_text(json.dumps({"mcpServers": {"other": {"command": "other-server", "args": ["x"]}}, "keep": True}))
    # A hand-written Claude Code command with the same name as a runbook is left alone.
    claude = env.project / ".claude" / "commands"
    claude.mkdir(parents=True)
    (claude / "failing.md").write_text("---\ndescription: mine\n---\nDo it by hand.\n")

    p = export(env)
    assert p.returncode == 0, p.stderr
    wrapper = (claude / "quick.md").read_text()
    meta = frontmatter(wrapper)
    assert meta["description"] == "Say hello in two quick steps"
    assert meta["argument-hint"] == "[name]"
    assert "confirm_gate" not in meta["allowed-tools"]
    assert "mcp__nixcmd__run" in meta["allowed-tools"]
    assert "nixcmd run quick --format json $ARGUMENTS" in wrapper
    assert "stop and ask the user" in wrapper
    assert (claude / "gated.md").exists()
    assert (claude / "failing.md").read_text() == "---\ndescription: mine\n---\nDo it by hand.\n"
    assert "left alone" in p.stdout

    merged = json.loads(mcp_json.read_text())
    assert merged["mcpServers"]["other"] == {"command": "other-server", "args": ["x"]}
    assert merged["mcpServers"]["nixcmd"] == {"command": "nixcmd", "args": ["mcp"]}
    assert merged["keep"] is True

    # Idempotent: the second run changes nothing and says so.
    before = {f.name: f.read_bytes() for f in claude.iterdir()}
    mcp_before = mcp_json.read_bytes()
    p = export(env)
    assert p.returncode == 0, p.stderr
    assert "nothing to change" in p.stdout
    assert {f.name: f.read_bytes() for f in claude.iterdir()} == before
    assert mcp_json.read_bytes() == mcp_before


def test_export_refuses_a_broken_mcp_json(env):
    (env.project / ".mcp.json").write_text("{ not json")
    p = export(env)
    assert p.returncode == 2
    assert "not valid JSON" in p.stderr
    assert (env.project / ".mcp.json").read_text() == "{ not json"


def test_wrappers_do_not_shadow_the_runbooks(env):
    """After an export, `nixcmd` still runs the runbook, not its wrapper."""
    assert export(env).returncode == 0
    p = subprocess.run(
        [str(BIN), "list", "--format", "json"],
        cwd=env.project,
        env={**env.vars, "NIXCMD_COMMANDS_DIR": str(env.commands)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    listing = json.loads(p.stdout)
    sources = {c["name"]: c["source"]["kind"] for c in listing["commands"]}
    assert sources["quick"] == "commands-dir"
    assert not [s for s in listing["shadowed"] if s["source"]["kind"] == "claude"]


def test_a_claude_command_that_hides_a_runbook_is_named_and_left_alone(env):
    """A hand-written `.claude/commands/flake-update.md` hides the built-in: it is not
    overwritten, and the export says why `/flake-update` in Claude Code is not nixcmd's."""
    own = env.project / ".claude" / "commands" / "flake-update.md"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text("my own notes on updating the flake\n")
    p = export(env)
    assert p.returncode == 0, p.stderr
    assert own.read_text() == "my own notes on updating the flake\n"
    assert (
        f"note: flake-update: not exported, {own} is a Claude Code command of the same name "
        "and hides nixcmd's (built-in)\n"
    ) in p.stdout


def test_a_symlinked_mcp_json_is_updated_where_it_points(env, tmp_path):
    """A `.mcp.json` kept elsewhere (a dotfiles repository) and linked into the project: the
    entry goes into that file and the link stays (it was replaced by a copy). A dangling link
    gets its file created where it points."""
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "mcp.json"
    real.write_text(json.dumps({"mcpServers": {"other": {"command": "other-server"}}}))
    link = env.project / ".mcp.json"
    link.symlink_to(real)
    p = export(env)
    assert p.returncode == 0, p.stderr
    assert link.is_symlink()
    servers = json.loads(real.read_text())["mcpServers"]
    assert set(servers) == {"other", "nixcmd"}, servers

    link.unlink()
    gone = dotfiles / "new-mcp.json"
    link.symlink_to(gone)
    p = export(env)
    assert p.returncode == 0, p.stderr
    assert link.is_symlink()
    assert set(json.loads(gone.read_text())["mcpServers"]) == {"nixcmd"}
