"""Tools, schemas, annotations, read-only tools, prompts and resources."""

from __future__ import annotations

import jsonschema
import pytest
from conftest import session
from helpers import assert_jsonrpc_only, call, call_error, tool_schemas

pytestmark = pytest.mark.anyio

TOOLS = {
    "list_commands",
    "describe_command",
    "plan",
    "run",
    "run_status",
    "run_logs",
    "run_cancel",
    "confirm_gate",
}


async def test_server_identity_and_instructions(env):
    async with session(env) as s:
        info = s.initialize_result
        assert info.server_info.name == "nixcmd"
        assert info.server_info.version
        assert "confirm_gate" in info.instructions
        assert info.capabilities.tools is not None
        assert info.capabilities.prompts is not None
        assert info.capabilities.resources is not None


async def test_tools_have_schemas_and_honest_annotations(env):
    async with session(env) as s:
        tools = await tool_schemas(s)
    assert set(tools) == TOOLS
    for name, tool in tools.items():
        assert tool.description, name
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
        assert tool.output_schema is not None, name
        jsonschema.Draft202012Validator.check_schema(tool.output_schema)
        assert tool.annotations is not None, name
    for name in ("list_commands", "describe_command", "plan", "run_status", "run_logs"):
        assert tools[name].annotations.read_only_hint is True, name
        assert tools[name].annotations.idempotent_hint is True, name
    for name in ("run", "run_cancel", "confirm_gate"):
        assert tools[name].annotations.read_only_hint is False, name
    assert tools["confirm_gate"].annotations.destructive_hint is True
    assert tools["run"].annotations.destructive_hint is False
    assert tools["run_cancel"].annotations.idempotent_hint is True
    # `run` cannot approve anything.
    props = tools["run"].input_schema["properties"]
    assert set(props) == {"command", "args", "dry_run", "wait_seconds"}
    assert tools["run"].input_schema["required"] == ["command"]
    assert set(tools["confirm_gate"].input_schema["required"]) >= {"run_id", "gate_id", "token", "approve"}


async def test_list_and_describe(env):
    async with session(env) as s:
        listing = await call(s, "list_commands", {})
        by_name = {c["name"]: c for c in listing["commands"]}
        assert {"quick", "gated", "failing"} <= set(by_name)
        assert by_name["quick"]["description"] == "Say hello in two quick steps"
        assert by_name["quick"]["argument_hint"] == "[name]"
        assert by_name["quick"]["source"] == "commands-dir"
        assert by_name["gated"]["confirm_steps"] == 1
        assert by_name["quick"]["args"][0]["name"] == "name"

        d = await call(s, "describe_command", {"command": "gated"})
        blocks = {b["id"]: b for b in d["blocks"]}
        assert blocks["push"]["confirm"] == "Push to production?"
        assert "echo pushed" in blocks["push"]["code"]
        assert blocks["unprepare"]["phase"] == "rollback"
        assert d["mode"] == "annotated"

        q = await call(s, "describe_command", {"command": "quick"})
        assert q["manual_checks"] == ["The greeting was friendly"]
        assert "Says hello" in q["overview"]
    assert_jsonrpc_only(env.raw_stdout)


async def test_unknown_command_and_bad_arguments_are_tool_errors(env):
    async with session(env) as s:
        msg = await call_error(s, "describe_command", {"command": "quik"})
        assert "unknown command `quik`" in msg and "did you mean `quick`" in msg
        msg = await call_error(s, "run", {"command": "nope"})
        assert "unknown command `nope`" in msg
        # A name is never looked at as a path: whether a file exists there is not told.
        (env.project / "secret-plan.md").write_text("x")
        up = "../" * 12
        for name in (up + "etc/passwd", up + "etc/no-such-file", up + "etc/", "secret-plan.md", "nope.md"):
            for tool in ("describe_command", "run", "plan"):
                msg = await call_error(s, tool, {"command": name})
                shown = name.removesuffix(".md")
                assert msg.startswith(f"unknown command `{shown}`"), (tool, name, msg)
        # The runbook's own argument rules.
        msg = await call_error(s, "run", {"command": "quick", "args": ["NOT-LOWER"]})
        assert "NOT-LOWER" in msg
        # Arguments that do not fit the tool's input schema.
        msg = await call_error(s, "run", {"command": 3})
        assert "failed to deserialize parameters" in msg and "expected a string" in msg
        msg = await call_error(s, "run_status", {"run_id": "no-such-run"})
        assert "no run `no-such-run`" in msg
        # Nothing was started by the refused calls.
    assert env.runs() == []


async def test_a_command_with_nothing_to_run_is_a_tool_error(env):
    # A reference card: every code block is an example outside the runnable sections.
    (env.commands / "cheatsheet.md").write_text(
        "---\ndescription: Nix cheat sheet\n---\n# Cheat sheet\n\n"
        "## Common commands\n\n```bash\nnix flake update\n```\n"
    )
    async with session(env) as s:
        for tool in ("run", "plan"):
            msg = await call_error(s, tool, {"command": "cheatsheet"})
            assert "`cheatsheet` has nothing to run" in msg, msg
            assert "its 1 code block is outside the runnable sections" in msg, msg
    assert env.runs() == []


async def test_runnable_in_the_listing_is_what_run_accepts(env):
    """`runnable` agrees with `run`: a file `run` refuses (broken frontmatter, no shell block,
    an empty file, an empty FIFO) is listed `runnable: false`, with `error` saying why."""
    import os

    (env.commands / "broken.md").write_text("---\nnixcmd: [\n---\n# x\n")
    (env.commands / "empty.md").write_text("")
    (env.commands / "noblocks.md").write_text(
        "---\ndescription: prose only\nnixcmd: {}\n---\n# Prose\n\nNothing to run.\n"
    )
    os.mkfifo(env.commands / "fifo.md")
    async with session(env) as s:
        listing = await call(s, "list_commands", {})
        by_name = {c["name"]: c for c in listing["commands"]}
        for name in ("broken", "empty", "noblocks", "fifo"):
            row = by_name[name]
            refused = await call_error(s, "run", {"command": name})
            assert row["runnable"] is False, (name, row)
            assert row["error"], (name, row)
            # The reason `run` gives.
            assert row["error"].splitlines()[0] in refused, (name, row["error"], refused)
        assert "frontmatter" in by_name["broken"]["error"]
        assert "`empty` has nothing to run" in by_name["empty"]["error"]
        assert "`fifo` has nothing to run" in by_name["fifo"]["error"]
        assert "no runnable step" in by_name["noblocks"]["error"]
        assert by_name["quick"]["runnable"] is True and by_name["quick"]["error"] is None
    assert env.runs() == []


async def test_each_command_is_a_prompt_and_a_resource(env):
    async with session(env) as s:
        prompts = {p.name: p for p in (await s.list_prompts()).prompts}
        assert {"quick", "gated"} <= set(prompts)
        assert prompts["quick"].description == "Say hello in two quick steps"
        got = await s.get_prompt("quick", {"args": "bob"})
        text = got.messages[0].content.text
        assert '"command": "quick"' in text and '["bob"]' in text
        assert "confirm_gate" in text and "never approve" in text

        resources = {str(r.uri): r for r in (await s.list_resources()).resources}
        uri = "nixcmd://commands/gated"
        assert uri in resources
        assert resources[uri].mime_type == "text/markdown"
        read = await s.read_resource(uri)
        assert read.contents[0].text == (env.commands / "gated.md").read_text()


CONDITIONAL = """\
---
description: Pushes only when something changed
nixcmd: {}
---
# Conditional

`FORCE_PUSH` comes from the caller's environment.

## Steps
### Decide
```bash {id=decide}
echo "CHANGED=0" >>"$NIXCMD_ENV"
```
### Push
```bash {id=push when=CHANGED unless=FORCE_PUSH confirm="Push?" irreversible}
echo pushed
```
"""


async def test_conditions_appear_in_describe_and_plan(env):
    (env.commands / "conditional.md").write_text(CONDITIONAL)
    async with session(env) as s:
        tools = await tool_schemas(s)
        block_props = tools["describe_command"].output_schema["$defs"]["BlockOut"]["properties"]
        assert {"when", "unless"} <= set(block_props)
        plan_props = tools["plan"].output_schema["$defs"]["PlanStepOut"]["properties"]
        assert {"when", "unless"} <= set(plan_props)

        d = await call(s, "describe_command", {"command": "conditional"})
        blocks = {b["id"]: b for b in d["blocks"]}
        assert blocks["push"]["when"] == "CHANGED"
        assert blocks["push"]["unless"] == "FORCE_PUSH"
        assert blocks["push"]["gates"][0] == "only when CHANGED, unless FORCE_PUSH"
        assert blocks["decide"]["when"] is None
        assert d["problems"] == []

        p = await call(s, "plan", {"command": "conditional"})
        steps = {i["step_id"]: i for i in p["plan"]}
        assert steps["push"]["when"] == "CHANGED"
        assert steps["push"]["unless"] == "FORCE_PUSH"
        assert steps["decide"]["when"] is None


async def test_resource_uris_are_valid_for_any_file_name(env):
    """A command's resource URI percent-encodes its name (a file name may hold spaces, `%`,
    `#` or non-ASCII letters), and reading it back finds that command."""
    odd = "deploy now #2 100% été"
    text = "---\ndescription: An odd name\n---\n## Steps\n```bash\necho hi\n```\n"
    (env.commands / f"{odd}.md").write_text(text)
    async with session(env) as s:
        resources = {str(r.uri): r for r in (await s.list_resources()).resources}
        uri = "nixcmd://commands/deploy%20now%20%232%20100%25%20%C3%A9t%C3%A9"
        assert uri in resources, sorted(resources)
        assert resources[uri].name == odd
        read = await s.read_resource(uri)
        assert read.contents[0].text == text
        # The plain names still read as before.
        read = await s.read_resource("nixcmd://commands/gated")
        assert read.contents[0].text == (env.commands / "gated.md").read_text()
