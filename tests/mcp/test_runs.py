"""Runs through the MCP tools: finishing, failing, long runs, logs, plans, cancellation."""

from __future__ import annotations

import anyio
import pytest
from conftest import session
from helpers import assert_jsonrpc_only, call, call_error, cli, cli_started, follow

pytestmark = pytest.mark.anyio


async def test_a_run_that_finishes(env):
    async with session(env) as s:
        st = await call(s, "run", {"command": "quick", "args": ["bob"]})
    assert st["status"] == "succeeded"
    assert st["exit_code"] == 0
    assert st["command"] == "quick"
    assert [(x["id"], x["status"]) for x in st["steps"]] == [
        ("hello", "succeeded"),
        ("count", "succeeded"),
        ("greeted", "succeeded"),
    ]
    assert all(x["exit_code"] == 0 and x["duration_ms"] is not None for x in st["steps"])
    assert st["gate"] is None
    assert st["manual_checks"] == ["The greeting was friendly"]
    assert "[hello] hello bob" in st["log_tail"]
    assert len(st["log_tail"].encode()) <= 4096
    # The run folder is the same record `nixcmd run` leaves.
    assert env.state_json(st["run_id"])["status"] == "succeeded"
    assert_jsonrpc_only(env.raw_stdout)


async def test_a_failed_runbook_is_a_result_not_an_error(env):
    async with session(env) as s:
        st = await call(s, "run", {"command": "failing"})
    assert st["status"] == "failed"
    assert st["exit_code"] == 1
    assert st["failed_step"] == "break"
    assert st["steps"][0]["exit_code"] == 7
    assert "about to fail" in st["log_tail"]
    assert "meant to fail" in st["troubleshooting"]


async def test_a_long_run_returns_running_and_is_followed(env):
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(p, total, message):
        progress.append((p, total, message))

    async with session(env) as s:
        st = await call(s, "run", {"command": "slow", "wait_seconds": 0})
        assert st["status"] == "running"
        assert st["exit_code"] is None
        assert st["run_id"] in st["next"]
        st = await call(
            s,
            "run_status",
            {"run_id": st["run_id"], "wait_seconds": 30},
            progress_callback=on_progress,
        )
        assert st["status"] == "succeeded"
        assert st["completed_steps"] == st["total_steps"] == 2
    # At most one notification a second, increasing, with the total.
    assert progress, "no progress notifications while waiting"
    values = [p for p, _, _ in progress]
    assert values == sorted(set(values))
    assert all(total == 2 for _, total, _ in progress)
    assert any("second" in (m or "") for _, _, m in progress)
    assert len(progress) <= 6


async def test_a_cancelled_request_stops_the_wait_not_the_run(env):
    async with session(env) as s:
        st = await call(s, "run", {"command": "slow", "wait_seconds": 0})
        with anyio.move_on_after(1):
            await s.call_tool("run_status", {"run_id": st["run_id"], "wait_seconds": 30})
        st = await follow(s, st)
        assert st["status"] == "succeeded"


async def test_logs_are_paged(env):
    async with session(env) as s:
        st = await call(s, "run", {"command": "quick"})
        rid = st["run_id"]
        tail = await call(s, "run_logs", {"run_id": rid, "limit": 5})
        assert tail["total_lines"] == 31
        assert tail["offset"] == 26
        assert [l["text"] for l in tail["lines"]] == [f"line {i}" for i in range(26, 31)]
        assert tail["next_offset"] is None

        first = await call(s, "run_logs", {"run_id": rid, "offset": 0, "limit": 10})
        assert first["lines"][0] == {"index": 0, "step_id": "hello", "stream": "stdout", "text": "hello world"}
        assert first["next_offset"] == 10
        second = await call(s, "run_logs", {"run_id": rid, "offset": first["next_offset"], "limit": 10})
        assert second["lines"][0]["text"] == "line 10"

        one = await call(s, "run_logs", {"run_id": rid, "step_id": "hello"})
        assert [l["text"] for l in one["lines"]] == ["hello world"]
        msg = await call_error(s, "run_logs", {"run_id": rid, "step_id": "nope"})
        assert "no step `nope`" in msg


async def test_plan_executes_nothing_but_readonly_blocks(env):
    async with session(env) as s:
        plan = await call(s, "plan", {"command": "marker"})
    assert not (env.project / "created.marker").exists()
    assert plan["status"] == "succeeded"
    items = {p["step_id"]: p for p in plan["plan"]}
    assert items["create"]["will_run"] is True
    assert items["can-write"]["phase"] == "prerequisite"
    executed = {x["id"]: x["status"] for x in plan["executed"]}
    assert executed == {"can-write": "succeeded", "look": "succeeded"}
    assert plan["problems"] == []
    assert "looking" in plan["log_tail"]


async def test_plan_reports_problems(env):
    (env.commands / "broken-check.md").write_text(
        "---\ndescription: A check that fails\nnixcmd: {}\n---\n# B\n\n## Prerequisites\n"
        "```bash {id=needs-file}\ntest -e /nonexistent/file\n```\n\n## Steps\n```bash {id=go}\ntouch go.marker\n```\n"
    )
    async with session(env) as s:
        plan = await call(s, "plan", {"command": "broken-check"})
    assert plan["status"] == "failed"
    assert any("needs-file" in p for p in plan["problems"])
    assert not (env.project / "go.marker").exists()


async def test_cancel_stops_and_rolls_back(env):
    async with session(env) as s:
        st = await call(s, "run", {"command": "cancellable", "wait_seconds": 0})
        with anyio.fail_after(20):
            while st["current_step"] != "wait":
                st = await call(s, "run_status", {"run_id": st["run_id"], "wait_seconds": 1})
        st = await call(s, "run_cancel", {"run_id": st["run_id"]})
        assert st["status"] == "cancelled"
        assert st["exit_code"] == 130
        steps = {x["id"]: x["status"] for x in st["steps"]}
        assert steps["wait"] == "interrupted"
        assert steps["restore"] == "succeeded"
        # Idempotent.
        again = await call(s, "run_cancel", {"run_id": st["run_id"]})
        assert again["status"] == "cancelled"
    assert (env.project / "restored.txt").read_text() == "restored\n"
    assert env.state_json(st["run_id"])["status"] == "interrupted"


RESTORING = """---
description: A failed step whose compensation waits for a go
nixcmd: {}
---
# Restoring

## Steps
```bash {id=switch rollback=restore}
echo switch >> trace
```
```bash {id=verify}
exit 1
```

## Rollback
### restore
```bash
trap 'echo INT >> signals' INT
trap 'echo TERM >> signals' TERM
echo restore >> trace
while [ ! -e go ]; do sleep 0.02; done
echo restored >> trace
```
"""

HELD = (
    "asked to stop while rolling back: the rollback goes on to its end "
    "(stopped halfway, it would leave the machine half restored)"
)


async def test_cancel_during_a_rollback_lets_it_finish(env):
    """run_cancel on a run that is rolling back does not interrupt the block restoring the
    machine; a second run_cancel does not either (no person is there to mean "at once")."""
    (env.commands / "restoring.md").write_text(RESTORING)
    async with session(env) as s:
        st = await call(s, "run", {"command": "restoring", "wait_seconds": 0})
        rid = st["run_id"]
        events = env.state / "nixcmd" / "runs" / rid / "events.ndjson"
        trace = env.project / "trace"
        with anyio.fail_after(20):
            while not trace.exists() or trace.read_text() != "switch\nrestore\n":
                await anyio.sleep(0.02)

        async def go_once_told():
            with anyio.fail_after(20):
                while HELD not in events.read_text():
                    await anyio.sleep(0.02)
            (env.project / "go").write_text("")

        async with anyio.create_task_group() as tg:
            tg.start_soon(go_once_told)
            st = await call(s, "run_cancel", {"run_id": rid})
        assert st["status"] == "failed"
        assert st["exit_code"] == 1
        assert {x["id"]: x["status"] for x in st["steps"]}["restore"] == "succeeded"
        assert st["warnings"] == [HELD]
        again = await call(s, "run_cancel", {"run_id": rid})
        assert again["status"] == "failed"
    assert trace.read_text() == "switch\nrestore\nrestored\n"
    assert not (env.project / "signals").exists()
    assert env.state_json(rid)["status"] == "failed"


async def test_closing_the_client_cancels_running_runs(env):
    """The client going away is a Ctrl-C: running runs stop and roll back before the server exits."""
    async with session(env) as s:
        st = await call(s, "run", {"command": "cancellable", "wait_seconds": 0})
        with anyio.fail_after(20):
            while st["current_step"] != "wait":
                st = await call(s, "run_status", {"run_id": st["run_id"], "wait_seconds": 1})
    assert (env.project / "restored.txt").exists()
    assert env.state_json(st["run_id"])["status"] == "interrupted"


async def test_a_run_started_by_the_cli_is_read_from_its_records(env):
    p = cli(env, "run", "quick", "bob")
    assert p.returncode == 0, p.stdout + p.stderr
    [run_dir] = env.runs()
    rid = run_dir.name
    async with session(env) as s:
        st = await call(s, "run_status", {"run_id": rid, "wait_seconds": 5})
        assert st["status"] == "succeeded"
        assert st["exit_code"] == 0
        assert st["command"] == "quick"
        assert [(x["id"], x["status"]) for x in st["steps"]] == [
            ("hello", "succeeded"),
            ("count", "succeeded"),
            ("greeted", "succeeded"),
        ]
        assert "[hello] hello bob" in st["log_tail"]
        one = await call(s, "run_logs", {"run_id": rid, "step_id": "hello"})
        assert [l["text"] for l in one["lines"]] == ["hello bob"]
        # A finished run: cancelling it just reports it; its gates are not this server's.
        assert (await call(s, "run_cancel", {"run_id": rid}))["status"] == "succeeded"
        msg = await call_error(
            s, "confirm_gate", {"run_id": rid, "gate_id": "g", "token": "t", "approve": True}
        )
        assert "was started outside this server" in msg


async def test_run_status_says_why_a_step_was_skipped(env):
    p = cli(env, "run", "quick", "bob", "--skip", "count")
    assert p.returncode == 0, p.stdout + p.stderr
    [run_dir] = env.runs()
    async with session(env) as s:
        st = await call(s, "run_status", {"run_id": run_dir.name, "wait_seconds": 5})
    assert [(x["id"], x["status"], x.get("reason")) for x in st["steps"]] == [
        ("hello", "succeeded", None),
        ("count", "skipped", "--skip"),
        ("greeted", "succeeded", None),
    ]


async def test_a_cli_run_whose_process_was_killed_reads_as_stopped(env):
    import os
    import signal
    import subprocess
    import time

    proc, rid = cli_started(
        env,
        "hang",
        "---\ndescription: Waits for a go\nnixcmd: {}\n---\n# Hang\n\n## Steps\n"
        "### Wait\n```bash {id=wait}\necho waiting > trace\n"
        "while [ ! -e go ]; do sleep 0.02; done\n```\n",
    )
    try:
        async with session(env) as s:
            st = await call(s, "run_status", {"run_id": rid, "wait_seconds": 0})
            assert st["status"] == "running"
            assert st["current_step"] == "wait"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # The orphaned step still runs: `resume` would refuse, so `next` says to wait for it.
        async with session(env) as s:
            st = await call(s, "run_status", {"run_id": rid, "wait_seconds": 0})
        assert st["status"] == "failed"
        assert st["next"].startswith(
            "The run stopped because its nixcmd process is gone (killed or crashed) during step "
            "`wait`, and that step still runs unwatched (pid "
        ), st["next"]
        assert st["next"].endswith(
            f"). Once it has ended, the user can finish the run with `nixcmd resume {rid}`, "
            "which runs that step again"
        ), st["next"]
    finally:
        # The orphaned step ends once it may.
        (env.project / "go").write_text("")
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", str(env.state)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the orphaned step did not end"
        time.sleep(0.02)
    async with session(env) as s:
        st = await call(s, "run_status", {"run_id": rid, "wait_seconds": 5})
    assert st["status"] == "failed"
    assert st["exit_code"] is None
    assert st["next"] == (
        "The run stopped because its nixcmd process is gone (killed or crashed) during step "
        f"`wait`. The user can finish it with `nixcmd resume {rid}`, which runs that step again"
    )


async def test_the_global_config_names_the_inventory_for_fan_out(env):
    import socket

    (env.commands / "fleet.md").write_text(
        "---\ndescription: Uptime of every host\nnixcmd: {}\n---\n# Fleet\n\n## Steps\n"
        "### Uptime\n```bash {id=uptime readonly hosts=all}\nuptime\n```\n"
    )
    # A port nothing listens on: ssh is refused at once.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    inventory = env.root / "elsewhere" / "fleet.toml"
    inventory.parent.mkdir()
    inventory.write_text(
        f'[ssh]\nconnect_timeout = 2\n\n[hosts.ghost]\ntarget = "root@127.0.0.1"\nport = {port}\n'
    )
    async with session(env) as s:
        st = await call(s, "run", {"command": "fleet", "wait_seconds": 30})
    assert st["status"] == "failed"
    [step] = st["steps"]
    assert step["status"] == "not_runnable"
    assert "there is no inventory" in step["reason"], step
    async with session(env, extra_args=("--config", str(inventory))) as s:
        st = await call(s, "run", {"command": "fleet", "wait_seconds": 30})
    assert st["status"] == "failed"
    [step] = st["steps"]
    assert step["status"] == "failed"
    assert step["reason"] == "failed on 1 of 1 host (ghost; max-fail 0)"
    assert f"port {port}: Connection refused" in st["log_tail"], st["log_tail"]


async def test_hosts_from_an_argument_are_checked_before_anything_runs(env):
    (env.commands / "disks.md").write_text(
        "---\ndescription: Disk use here or on the hosts given\nnixcmd:\n  args:\n"
        "    hosts: { variadic: true }\n---\n# Disks\n\n## Steps\n"
        "### Root\n```bash {id=root readonly hosts=arg:hosts}\ndf -P / >/dev/null\n```\n"
    )
    (env.project / "nixcmd.toml").write_text('[hosts.web1]\ntarget = "root@192.0.2.1"\n')
    async with session(env) as s:
        msg = await call_error(s, "run", {"command": "disks", "args": ["web9"]})
        assert "argument `hosts` (web9): no host named `web9` in the inventory" in msg
        assert env.runs() == []
        # No host: the block runs on this machine.
        st = await call(s, "run", {"command": "disks"})
    assert st["status"] == "succeeded", st
    assert [(x["id"], x["status"]) for x in st["steps"]] == [("root", "succeeded")]


async def test_run_status_shows_what_a_step_is_still_printing(env):
    """A line not ended yet (a prompt before minutes of work) is the status's `live_output`
    while the step runs; the log tail gets the line once, when it ends."""
    (env.commands / "partial.md").write_text(
        "---\ndescription: A partial line\nnixcmd: {}\n---\n# P\n\n## Steps\n"
        "```bash {id=build}\necho first\nprintf 'phase one... '\n"
        "while [ ! -e go ]; do sleep 0.02; done\necho done\n```\n"
    )
    async with session(env) as s:
        st = await call(s, "run", {"command": "partial", "wait_seconds": 0})
        with anyio.fail_after(30):
            while st["live_output"] != "[build] phase one...":
                assert st["status"] == "running", st
                st = await call(s, "run_status", {"run_id": st["run_id"], "wait_seconds": 0})
                await anyio.sleep(0.05)
        assert st["log_tail"] == "[build] first"
        (env.project / "go").write_text("")
        st = await follow(s, st)
    assert st["status"] == "succeeded"
    assert st["live_output"] is None
    assert st["log_tail"] == "[build] first\n[build] phase one... done"


async def test_a_second_run_at_once_is_refused_naming_the_run_in_progress(env):
    """Two `run` calls of one command at once: one runs, the other is refused with the run
    that holds the lock. The refusal named the command's previous, finished run: it read the
    lock file before the new holder had written its line."""
    async with session(env) as s:
        first = await call(s, "run", {"command": "slow", "wait_seconds": 0})
        await follow(s, first)
        results: list = []

        async def start():
            results.append(await s.call_tool("run", {"command": "slow", "wait_seconds": 0}))

        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(start)
        started = [r.structured_content["run_id"] for r in results if not r.is_error]
        refused = [" ".join(c.text for c in r.content) for r in results if r.is_error]
        assert len(started) == 1 and len(refused) == 3, results
        for text in refused:
            assert first["run_id"] not in text, text
            assert text.startswith(f"another run of `slow` is in progress: {started[0]} (pid "), text
        await call(s, "run_cancel", {"run_id": started[0]})


async def test_run_status_waits_for_a_run_started_outside_the_server(env):
    """run_status of a run the server did not start answered at once, whatever
    `wait_seconds`, and its `next` said that run_cancel stops it (run_cancel refuses such
    runs). It reads the records until the run ends (or pauses), at most `wait_seconds`."""
    import time

    proc, rid = cli_started(
        env,
        "ticks",
        "---\ndescription: Ticks\nnixcmd: {}\n---\n# Ticks\n\n## Steps\n"
        "### Tick\n```bash {id=tick}\necho started > trace\n"
        "for i in 1 2 3; do echo \"tick $i\"; sleep 1; done\n```\n",
    )
    try:
        async with session(env) as s:
            st = await call(s, "run_status", {"run_id": rid})
            assert st["status"] == "running"
            nxt = st["next"]
            assert nxt.startswith("The run was started outside this server"), nxt
            assert "run_cancel cannot" in nxt and "run_cancel stops it" not in nxt, nxt
            assert "goes on in the server" not in nxt, nxt
            msg = await call_error(s, "run_cancel", {"run_id": rid})
            assert msg.startswith(
                f"run {rid} was started outside this server; stop it where it runs (Ctrl-C)"
            ), msg
            started = time.monotonic()
            st = await call(s, "run_status", {"run_id": rid, "wait_seconds": 30})
            waited = time.monotonic() - started
            assert st["status"] == "succeeded", st
            assert waited < 25, waited
            assert "tick 3" in st["log_tail"]
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
