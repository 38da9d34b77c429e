"""Small helpers shared by the MCP tests."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import jsonschema
from conftest import BIN
from mcp import ClientSession


def cli(env, *args: str) -> subprocess.CompletedProcess:
    """`nixcmd --commands-dir COMMANDS ARGS…` in the project, as a person (or CI) runs it."""
    return subprocess.run(
        [str(BIN), "--commands-dir", str(env.commands), *args],
        cwd=env.project,
        env=env.vars,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def cli_started(env, name: str, runbook: str) -> tuple[subprocess.Popen, str]:
    """Writes `runbook` as command `name`, starts `nixcmd run NAME` in the background (no
    terminal, output dropped) and waits until its first step wrote `trace` in the project.
    Returns the process and the run id; the caller ends the process."""
    import time

    (env.commands / f"{name}.md").write_text(runbook)
    proc = subprocess.Popen(
        [str(BIN), "--commands-dir", str(env.commands), "run", name],
        cwd=env.project,
        env=env.vars,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (env.project / "trace").exists():
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the step never started")
        time.sleep(0.02)
    runs = env.runs()
    if len(runs) != 1:
        proc.kill()
        raise AssertionError(f"expected one run, found {runs}")
    return proc, runs[0].name


async def tool_schemas(s: ClientSession) -> dict[str, Any]:
    return {t.name: t for t in (await s.list_tools()).tools}


async def call(s: ClientSession, name: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """Calls a tool that must succeed; checks its structured result against the output schema."""
    result = await s.call_tool(name, args, **kw)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    assert not result.is_error, f"{name} failed: {text}"
    tools = await tool_schemas(s)
    schema = tools[name].output_schema
    assert schema is not None, f"{name} has no output schema"
    jsonschema.validate(result.structured_content, schema)
    # The text content carries the same JSON for clients without structured content.
    assert json.loads(text) == result.structured_content
    return result.structured_content


async def call_error(s: ClientSession, name: str, args: dict[str, Any]) -> str:
    """Calls a tool that must answer with isError; returns the message."""
    result = await s.call_tool(name, args)
    assert result.is_error, f"{name} should have failed: {result.structured_content}"
    return " ".join(getattr(c, "text", "") for c in result.content)


async def follow(s: ClientSession, status: dict[str, Any], until: float = 60) -> dict[str, Any]:
    """Polls run_status until the run leaves `running`."""
    with anyio.fail_after(until):
        while status["status"] == "running":
            status = await call(s, "run_status", {"run_id": status["run_id"], "wait_seconds": 5})
    return status


def assert_jsonrpc_only(raw: Path) -> int:
    """Every line the server wrote to stdout is one JSON-RPC 2.0 message. Returns the count."""
    data = raw.read_bytes()
    assert data, "the server wrote nothing"
    assert data.endswith(b"\n")
    count = 0
    for line in data.decode("utf-8").split("\n")[:-1]:
        msg = json.loads(line)
        assert msg.get("jsonrpc") == "2.0", line
        assert ("method" in msg) or ("result" in msg) or ("error" in msg), line
        count += 1
    return count
