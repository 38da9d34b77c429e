"""Fixtures for the MCP tests: the nixcmd binary, fixture runbooks in a temp folder, private
state/home folders, and an MCP client session over stdio (with or without elicitation).

Every byte the server writes to stdout is also copied to `env.raw_stdout`, so tests can check
that stdout carries nothing but JSON-RPC messages.
"""

from __future__ import annotations

import contextlib
import os
import stat
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client, types

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("NIXCMD_BIN", ROOT / "target" / "debug" / "nixcmd")).resolve()

RUNBOOKS: dict[str, str] = {
    # Two quick steps and a check; an argument with a default.
    "quick": """
        ---
        description: Say hello in two quick steps
        argument-hint: "[name]"
        nixcmd:
          args:
            name: { default: world, pattern: "^[a-z]+$", help: "who to greet" }
        ---
        # Quick

        Says hello, then counts.

        ## Steps
        ### Hello
        ```bash {id=hello}
        echo "hello $NIXCMD_ARG_NAME"
        ```
        ### Count
        ```bash {id=count}
        for i in $(seq 1 30); do echo "line $i"; done
        ```

        ## Success Criteria
        - [ ] The greeting was friendly
        ```bash {id=greeted}
        true
        ```
        """,
    # A step that must not run in a dry run.
    "marker": """
        ---
        description: Creates a marker file
        nixcmd: {}
        ---
        # Marker

        ## Prerequisites
        ```bash {id=can-write}
        test -w .
        ```

        ## Steps
        ### Create
        ```bash {id=create}
        touch created.marker
        ```
        ### Look
        ```bash {id=look readonly}
        echo looking
        ```
        """,
    # Longer than a short wait.
    "slow": """
        ---
        description: Takes a few seconds
        nixcmd: {}
        ---
        # Slow

        ## Steps
        ### First
        ```bash {id=first}
        echo start
        sleep 1
        ```
        ### Second
        ```bash {id=second}
        for i in 1 2 3; do echo "tick $i"; sleep 1; done
        ```
        """,
    # A destructive step behind a confirmation, with a compensation for the step before it.
    "gated": """
        ---
        description: Prepares, then pushes after a confirmation
        nixcmd: {}
        ---
        # Gated

        ## Steps
        ### Prepare
        ```bash {id=prepare rollback=unprepare}
        echo prepared > prepared.txt
        ```
        ### Push
        ```bash {id=push confirm="Push to production?"}
        echo pushed > pushed.txt
        ```

        ## Rollback
        ### unprepare
        ```bash
        rm -f prepared.txt
        echo undone > undone.txt
        ```
        """,
    # A long step after one with a compensation: cancelled midway, it rolls back.
    "cancellable": """
        ---
        description: Starts, then waits a long time
        nixcmd: {}
        ---
        # Cancellable

        ## Steps
        ### Start
        ```bash {id=start rollback=restore}
        touch started.txt
        ```
        ### Wait
        ```bash {id=wait}
        echo waiting
        sleep 60
        ```

        ## Rollback
        ### restore
        ```bash
        echo restored > restored.txt
        ```
        """,
    # A runbook that fails.
    "failing": """
        ---
        description: Fails on purpose
        nixcmd: {}
        ---
        # Failing

        ## Steps
        ### Break
        ```bash {id=break}
        echo "about to fail"
        exit 7
        ```

        ## Troubleshooting
        ### Break fails
        It is meant to fail.
        """,
}
# `cancellable` with a rollback that takes long (as `nixos-rebuild switch --rollback` does).
RUNBOOKS["slow-rollback"] = RUNBOOKS["cancellable"].replace(
    "echo restored > restored.txt", "touch restoring.txt\n        sleep 60\n        echo restored > restored.txt"
)
assert RUNBOOKS["slow-rollback"] != RUNBOOKS["cancellable"]


@dataclass
class Env:
    root: Path
    commands: Path
    project: Path
    state: Path
    home: Path
    raw_stdout: Path
    stderr_log: Path
    wrapper: Path
    vars: dict[str, str] = field(default_factory=dict)

    def runs(self) -> list[Path]:
        runs = self.state / "nixcmd" / "runs"
        return sorted(runs.iterdir()) if runs.is_dir() else []

    def state_json(self, run_id: str) -> dict[str, Any]:
        import json

        return json.loads((self.state / "nixcmd" / "runs" / run_id / "state.json").read_text())


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def env(tmp_path: Path) -> Env:
    if not BIN.is_file():
        pytest.fail(f"nixcmd binary not found at {BIN}: run `cargo build` or set NIXCMD_BIN")
    commands = tmp_path / "commands"
    project = tmp_path / "project"
    state = tmp_path / "state"
    home = tmp_path / "home"
    for d in (commands, project, state, home):
        d.mkdir()
    for name, text in RUNBOOKS.items():
        (commands / f"{name}.md").write_text(textwrap.dedent(text).lstrip())
    raw = tmp_path / "stdout.raw"
    wrapper = tmp_path / "nixcmd-tee"
    # Copies the server's stdout byte for byte, then passes it on to the client.
    wrapper.write_text(f'#!/bin/sh\n"{BIN}" "$@" | tee -a "{raw}"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    vars_ = {
        "XDG_STATE_HOME": str(state),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "HOME": str(home),
        "NO_COLOR": "1",
        "CI": "true",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    return Env(
        root=tmp_path,
        commands=commands,
        project=project,
        state=state,
        home=home,
        raw_stdout=raw,
        stderr_log=tmp_path / "stderr.log",
        wrapper=wrapper,
        vars=vars_,
    )


@contextlib.asynccontextmanager
async def session(env: Env, *, elicitation=None, extra_args: tuple[str, ...] = (), client_name="pytest-client"):
    """An initialized MCP client session with `nixcmd mcp` on the fixture runbooks."""
    params = StdioServerParameters(
        command=str(env.wrapper),
        args=["--commands-dir", str(env.commands), "mcp", *extra_args],
        env=env.vars,
        cwd=str(env.project),
    )
    with open(env.stderr_log, "a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(
                read,
                write,
                elicitation_callback=elicitation,
                client_info=types.Implementation(name=client_name, version="1.0"),
                read_timeout_seconds=90,
            ) as s:
                await s.initialize()
                yield s
