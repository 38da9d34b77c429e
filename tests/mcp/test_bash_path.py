"""The Bash path Claude Code can use without MCP: `nixcmd run NAME --format json`."""

from __future__ import annotations

import json

from helpers import cli as nixcmd


def test_a_gate_ends_the_process_with_exit_3_and_the_resume_command(env):
    p = nixcmd(env, "run", "gated", "--format", "json")
    assert p.returncode == 3, p.stderr
    events = [json.loads(line) for line in p.stdout.splitlines()]
    assert all({"type", "seq", "ts", "run_id"} <= set(e) for e in events)
    last = events[-1]
    assert last["type"] == "run_finished"
    assert last["status"] == "awaiting_confirmation"
    assert last["exit_code"] == 3
    run_id = last["run_id"]
    assert last["resume"] == f"nixcmd resume {run_id} --approve push"
    gate = [e for e in events if e["type"] == "gate"][0]
    assert gate["step_id"] == "push" and gate["message"] == "Push to production?"
    assert not (env.project / "pushed.txt").exists()

    # The person approves by running the resume command.
    p = nixcmd(env, "resume", run_id, "--approve", "push", "--format", "json")
    assert p.returncode == 0, p.stderr
    last = json.loads(p.stdout.splitlines()[-1])
    assert last["type"] == "run_finished" and last["status"] == "succeeded"
    assert (env.project / "pushed.txt").exists()
