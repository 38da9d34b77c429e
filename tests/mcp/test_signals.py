"""Signals to the server: Ctrl-C at the client's terminal reaches the server too (it shares the
client's process group), so SIGINT, SIGHUP and SIGQUIT (Ctrl-\\) must not kill it; SIGTERM ends it as the client
closing the connection does, with running runs stopped and rolled back first."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from conftest import BIN


class RawServer:
    """`nixcmd mcp` spoken to line by line, so the test knows its pid and sees it exit."""

    def __init__(self, env):
        self.proc = subprocess.Popen(
            [str(BIN), "--commands-dir", str(env.commands), "mcp"],
            cwd=env.project,
            env=env.vars,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(env.stderr_log, "a"),
            text=True,
        )
        self.next_id = 0

    def send(self, msg: dict) -> None:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict) -> dict:
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        while True:
            line = self.proc.stdout.readline()
            assert line, "the server closed its output"
            msg = json.loads(line)
            if msg.get("id") == self.next_id:
                assert "result" in msg, msg
                return msg["result"]

    def tool(self, name: str, args: dict) -> dict:
        result = self.request("tools/call", {"name": name, "arguments": args})
        assert not result.get("isError"), result
        return result["structuredContent"]

    def initialize(self) -> None:
        self.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw-test", "version": "1.0"},
            },
        )
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})


def wait_for_step(server: RawServer, status: dict, step: str) -> dict:
    deadline = time.monotonic() + 20
    while status["current_step"] != step:
        assert time.monotonic() < deadline, status
        status = server.tool("run_status", {"run_id": status["run_id"], "wait_seconds": 1})
    return status


def test_sigint_and_sighup_do_not_end_the_server_and_sigterm_rolls_back(env):
    server = RawServer(env)
    try:
        server.initialize()
        st = server.tool("run", {"command": "cancellable", "wait_seconds": 0})
        st = wait_for_step(server, st, "wait")
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            os.kill(server.proc.pid, sig)
            time.sleep(0.3)
            assert server.proc.poll() is None, f"the server ended at {sig.name}"
            # Still serving, and the run goes on.
            st = server.tool("run_status", {"run_id": st["run_id"]})
            assert (st["status"], st["current_step"]) == ("running", "wait"), st
        os.kill(server.proc.pid, signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
    assert (env.project / "restored.txt").read_text() == "restored\n"
    assert env.state_json(st["run_id"])["status"] == "interrupted"
    # Nothing of the run's step is left running.
    left = subprocess.run(["pgrep", "-f", str(env.state)], capture_output=True, text=True)
    assert left.stdout == "", left.stdout


def test_sigterm_during_the_shutdown_rollback_stops_it_at_once_and_records_it(env):
    """A client that goes away closes stdin, then sends SIGTERM and, two seconds later,
    SIGKILL (the MCP SDKs' way). A rollback longer than that was cut by the SIGKILL: the run
    stayed `running` for good and the rollback's processes ran on, unwatched. SIGTERM while
    the server rolls back on its way out stops at once, as a second Ctrl-C does: the block's
    processes are stopped, and the run ends `rollback_incomplete` with what is left by hand."""
    server = RawServer(env)
    try:
        server.initialize()
        st = server.tool("run", {"command": "slow-rollback", "wait_seconds": 0})
        run_id = st["run_id"]
        wait_for_step(server, st, "wait")
        server.proc.stdin.close()
        deadline = time.monotonic() + 20
        while not (env.project / "restoring.txt").exists():
            assert time.monotonic() < deadline, "the rollback did not start"
            time.sleep(0.05)
        os.kill(server.proc.pid, signal.SIGTERM)
        sent = time.monotonic()
        assert server.proc.wait(timeout=30) == 0
        # The SDKs allow 2 s; the rollback would take 60. A loaded machine gets some slack.
        assert time.monotonic() - sent < 5, "the server did not stop at once"
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()
    state = env.state_json(run_id)
    assert (state["status"], state["exit_code"]) == ("rollback_incomplete", 5), state
    assert not (env.project / "restored.txt").exists()
    events = [
        json.loads(line)
        for line in (env.state / "nixcmd" / "runs" / run_id / "events.ndjson").read_text().splitlines()
    ]
    assert events[-1]["type"] == "run_finished", events[-1]
    assert events[-1]["left_to_do"] == [
        "restore: run by hand:\ntouch restoring.txt\nsleep 60\necho restored > restored.txt"
    ], events[-1]
    left = subprocess.run(["pgrep", "-f", str(env.state)], capture_output=True, text=True)
    assert left.stdout == "", left.stdout
