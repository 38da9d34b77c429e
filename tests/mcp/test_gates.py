"""Confirmation gates belong to the human: elicitation, confirm_gate, tokens, --confirm=deny."""

from __future__ import annotations

import anyio
import pytest
from conftest import session
from helpers import assert_jsonrpc_only, call, call_error, cli
from mcp import types

pytestmark = pytest.mark.anyio


def answering(action: str, approve: bool | None = None, seen: list | None = None):
    async def callback(context, params: types.ElicitRequestParams):
        if seen is not None:
            seen.append(params)
        content = None if approve is None else {"approve": approve}
        return types.ElicitResult(action=action, content=content)

    return callback


async def test_elicitation_accept_continues(env):
    seen: list = []
    async with session(env, elicitation=answering("accept", True, seen)) as s:
        st = await call(s, "run", {"command": "gated"})
    assert st["status"] == "succeeded"
    assert (env.project / "pushed.txt").exists()
    # The user saw the question and the code; the default is "no".
    assert len(seen) == 1
    assert "Push to production?" in seen[0].message
    assert "echo pushed > pushed.txt" in seen[0].message
    prop = seen[0].requested_schema["properties"]["approve"]
    assert prop["type"] == "boolean" and prop["default"] is False
    approvals = env.state_json(st["run_id"])["approvals"]
    assert approvals == [
        {"step_id": "push", "channel": "mcp-elicitation", "client": "pytest-client 1.0", "at": approvals[0]["at"]}
    ]


def declines(env, st):
    """The run's recorded "no"s: (step, channel, client); every approval must be one."""
    approvals = env.state_json(st["run_id"])["approvals"]
    assert all(a.get("declined") is True for a in approvals), approvals
    return [(a["step_id"], a["channel"], a.get("client")) for a in approvals]


async def test_elicitation_decline_aborts_and_rolls_back(env):
    async with session(env, elicitation=answering("decline")) as s:
        st = await call(s, "run", {"command": "gated"})
    assert st["status"] == "aborted"
    assert st["exit_code"] == 3
    assert not (env.project / "pushed.txt").exists()
    assert not (env.project / "prepared.txt").exists()
    assert (env.project / "undone.txt").exists()
    assert {x["id"]: x["status"] for x in st["steps"]}["push"] == "declined"
    assert declines(env, st) == [("push", "mcp-elicitation", "pytest-client 1.0")]


async def test_elicitation_no_is_a_decline(env):
    async with session(env, elicitation=answering("accept", False)) as s:
        st = await call(s, "run", {"command": "gated"})
    assert st["status"] == "aborted"
    assert not (env.project / "pushed.txt").exists()
    assert declines(env, st) == [("push", "mcp-elicitation", "pytest-client 1.0")]


async def test_no_answer_leaves_the_run_waiting(env):
    async with session(env, elicitation=answering("cancel")) as s:
        st = await call(s, "run", {"command": "gated"})
        assert st["status"] == "awaiting_confirmation"
        assert st["gate"]["waiting_for"] == "confirm_gate"
        assert not (env.project / "pushed.txt").exists()
        st = await call(
            s,
            "confirm_gate",
            {"run_id": st["run_id"], "gate_id": "push", "token": st["gate"]["token"], "approve": True},
        )
        assert st["status"] == "succeeded"
    assert (env.project / "pushed.txt").exists()


async def test_without_elicitation_only_confirm_gate_continues(env):
    async with session(env) as s:
        st = await call(s, "run", {"command": "gated"})
        assert st["status"] == "awaiting_confirmation"
        assert st["exit_code"] == 3
        gate = st["gate"]
        assert gate["gate_id"] == "push" and gate["step_id"] == "push"
        assert gate["message"] == "Push to production?"
        assert gate["waiting_for"] == "confirm_gate"
        assert len(gate["token"]) == 32
        assert not (env.project / "pushed.txt").exists()
        assert env.state_json(st["run_id"])["status"] == "awaiting_confirmation"

        # A status poll does not move it; a wrong token is refused.
        again = await call(s, "run_status", {"run_id": st["run_id"]})
        assert again["status"] == "awaiting_confirmation"
        msg = await call_error(
            s, "confirm_gate", {"run_id": st["run_id"], "gate_id": "push", "token": "0" * 32, "approve": True}
        )
        assert "wrong token" in msg
        assert not (env.project / "pushed.txt").exists()

        st = await call(
            s, "confirm_gate", {"run_id": st["run_id"], "gate_id": "push", "token": gate["token"], "approve": True}
        )
        assert st["status"] == "succeeded"
        assert st["gate"] is None
        # One-time token.
        msg = await call_error(
            s, "confirm_gate", {"run_id": st["run_id"], "gate_id": "push", "token": gate["token"], "approve": True}
        )
        assert "not waiting" in msg
    assert (env.project / "pushed.txt").read_text() == "pushed\n"
    approvals = env.state_json(st["run_id"])["approvals"]
    assert [(a["step_id"], a["channel"], a["client"]) for a in approvals] == [
        ("push", "mcp-confirm-gate", "pytest-client 1.0")
    ]
    assert_jsonrpc_only(env.raw_stdout)


async def test_confirm_gate_decline_aborts(env):
    async with session(env) as s:
        st = await call(s, "run", {"command": "gated"})
        st = await call(
            s,
            "confirm_gate",
            {"run_id": st["run_id"], "gate_id": "push", "token": st["gate"]["token"], "approve": False},
        )
    assert st["status"] == "aborted"
    assert not (env.project / "pushed.txt").exists()
    assert (env.project / "undone.txt").exists()
    assert declines(env, st) == [("push", "mcp-confirm-gate", "pytest-client 1.0")]


async def test_cancel_while_awaiting_confirmation_rolls_back(env):
    async with session(env) as s:
        st = await call(s, "run", {"command": "gated"})
        assert st["status"] == "awaiting_confirmation"
        st = await call(s, "run_cancel", {"run_id": st["run_id"]})
    assert st["status"] == "cancelled"
    assert not (env.project / "pushed.txt").exists()
    assert (env.project / "undone.txt").exists()
    # A stop is nobody's "no": nothing recorded.
    assert env.state_json(st["run_id"])["approvals"] == []


async def test_confirm_deny_refuses_every_gate(env):
    async with session(env, elicitation=answering("accept", True), extra_args=("--confirm=deny",)) as s:
        st = await call(s, "run", {"command": "gated"})
    assert st["status"] == "aborted"
    assert not (env.project / "pushed.txt").exists()
    assert (env.project / "undone.txt").exists()
    assert declines(env, st) == [("push", "mcp-policy", "pytest-client 1.0")]


async def test_the_question_shows_the_code_as_it_is(env):
    """The code the person approves is fenced with more backticks than any run in it (a
    ``` line in the code closed the fence early and the rest read as Markdown), and its
    control and bidirectional characters are shown, not passed to the client's screen."""
    (env.commands / "tricky.md").write_text(
        "---\ndescription: Tricky code\nnixcmd: {}\n---\n## Steps\n"
        '````bash {id=push confirm="Push \u202enow\u202c?" irreversible}\n'
        "cat <<'EOF'\n```\n<!-- hidden -->\nEOF\n"
        "echo \"\u202e gnp.txt\" \"\x1b]0;t\x07\"\n````\n"
    )
    seen: list = []
    async with session(env, elicitation=answering("decline", seen=seen)) as s:
        st = await call(s, "run", {"command": "tricky"})
    assert st["status"] == "aborted"
    assert len(seen) == 1
    message = seen[0].message
    assert message.startswith("Push \ufffdnow\ufffd?\n\n"), message
    assert (
        "`push`:\n\n````bash\ncat <<'EOF'\n```\n<!-- hidden -->\nEOF\n"
        "echo \"\ufffd gnp.txt\" \"\u241b]0;t\u2407\"\n````\n\n" in message
    ), message
    assert not any(c in message for c in "\u202e\u202c\x1b\x07"), message


async def test_a_paused_run_keeps_other_runs_of_its_command_from_starting(env):
    """A run waiting for `confirm_gate` has changed the machine: another run of the same
    command is refused (naming it) until the gate is answered; then runs start again."""
    async with session(env) as s:
        first = await call(s, "run", {"command": "gated"})
        assert first["status"] == "awaiting_confirmation"
        message = await call_error(s, "run", {"command": "gated"})
        assert f"run {first['run_id']} of `gated` is paused at step `push`" in message, message
        st = await call(
            s,
            "confirm_gate",
            {"run_id": first["run_id"], "gate_id": "push", "token": first["gate"]["token"], "approve": True},
        )
        assert st["status"] == "succeeded"
        again = await call(s, "run", {"command": "gated"})
        assert again["status"] == "awaiting_confirmation"
        assert again["run_id"] != first["run_id"]


async def test_a_run_finished_from_a_terminal_is_reported_as_its_records_say(env):
    """A run paused in the server, then approved (or declined) from a terminal with `nixcmd
    resume`: run_status said `awaiting_confirmation` with the old gate and token, and `next`
    told the model to ask the user again. It reports what the records say now, and
    confirm_gate refuses the old token, saying why."""
    async with session(env) as s:
        st = await call(s, "run", {"command": "gated"})
        assert st["status"] == "awaiting_confirmation"
        rid, gate = st["run_id"], st["gate"]
        p = cli(env, "resume", rid, "--approve", "push")
        assert p.returncode == 0, p.stdout + p.stderr
        assert env.state_json(rid)["status"] == "succeeded"
        now = await call(s, "run_status", {"run_id": rid, "wait_seconds": 5})
        assert now["status"] == "succeeded"
        assert now["exit_code"] == 0
        assert now["gate"] is None
        assert {x["id"]: x["status"] for x in now["steps"]}["push"] == "succeeded"
        assert now["next"].startswith("The run was finished outside this server (`nixcmd resume`"), now["next"]
        assert "confirm_gate" not in now["next"], now["next"]
        msg = await call_error(
            s, "confirm_gate", {"run_id": rid, "gate_id": "push", "token": gate["token"], "approve": False}
        )
        assert f"run {rid} was taken over outside this server" in msg, msg
        assert "is `succeeded` now" in msg, msg
        assert (await call(s, "run_cancel", {"run_id": rid}))["status"] == "succeeded"
        assert (env.project / "pushed.txt").exists()
        assert not (env.project / "undone.txt").exists()

        # Declined from the terminal: aborted, rolled back.
        st = await call(s, "run", {"command": "gated"})
        assert st["status"] == "awaiting_confirmation"
        rid, gate = st["run_id"], st["gate"]
        p = cli(env, "resume", rid, "--decline")
        assert p.returncode == 3, p.stdout + p.stderr
        assert env.state_json(rid)["status"] == "declined"
        now = await call(s, "run_status", {"run_id": rid})
        assert now["status"] == "aborted"
        assert now["gate"] is None
        msg = await call_error(
            s, "confirm_gate", {"run_id": rid, "gate_id": "push", "token": gate["token"], "approve": True}
        )
        assert "was taken over outside this server" in msg and "is `aborted` now" in msg, msg
        # A new run of the command is not held back by the run declined elsewhere.
        again = await call(s, "run", {"command": "gated"})
        assert again["status"] == "awaiting_confirmation"
        await call(s, "run_cancel", {"run_id": again["run_id"]})
    assert (env.project / "undone.txt").exists()
    assert [a["channel"] for a in env.state_json(rid)["approvals"]] == ["cli"]


async def test_a_cli_run_paused_at_a_gate_says_how_the_user_goes_on(env):
    """A run paused by `nixcmd run` (no terminal): `next` names the commands the user runs
    (`nixcmd resume RUN --approve GATE`, `--decline`), since confirm_gate cannot answer it."""
    p = cli(env, "run", "gated")
    assert p.returncode == 3, p.stdout + p.stderr
    [run_dir] = env.runs()
    rid = run_dir.name
    async with session(env) as s:
        st = await call(s, "run_status", {"run_id": rid, "wait_seconds": 5})
        assert st["status"] == "awaiting_confirmation"
        assert st["gate"] is None
        nxt = st["next"]
        assert nxt.startswith("The run was started outside this server"), nxt
        assert "step `push`" in nxt and '"Push to production?"' in nxt, nxt
        assert f"`nixcmd resume {rid} --approve push` runs the step" in nxt, nxt
        assert f"`nixcmd resume {rid} --decline` stops the run" in nxt, nxt
        assert "confirm_gate cannot answer it" in nxt, nxt
        msg = await call_error(s, "run_cancel", {"run_id": rid})
        assert f"`nixcmd resume {rid} --decline`" in msg, msg


async def test_an_elicitation_settled_another_way_is_withdrawn(env):
    """A gate being asked through elicitation and settled another way (confirm_gate,
    run_cancel): the server cancels its elicitation request (`notifications/cancelled`), so
    the client closes the question; it stayed open, and the user's later answer was lost."""
    asked: list = []
    withdrawn: list = []

    async def ask_and_wait(context, params: types.ElicitRequestParams):
        asked.append(params)
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            withdrawn.append(params)
            raise

    async with session(env, elicitation=ask_and_wait) as s:
        for n, how in enumerate(("confirm_gate", "run_cancel"), start=1):
            st = await call(s, "run", {"command": "gated", "wait_seconds": 0})
            with anyio.fail_after(30):
                while len(asked) < n:
                    await anyio.sleep(0.02)
            st = await call(s, "run_status", {"run_id": st["run_id"]})
            gate = st["gate"]
            assert gate["waiting_for"] == "elicitation", st
            if how == "confirm_gate":
                st = await call(
                    s,
                    "confirm_gate",
                    {"run_id": st["run_id"], "gate_id": "push", "token": gate["token"], "approve": True},
                )
                assert st["status"] == "succeeded", st
            else:
                st = await call(s, "run_cancel", {"run_id": st["run_id"]})
                assert st["status"] == "cancelled", st
            with anyio.fail_after(10):
                while len(withdrawn) < n:
                    await anyio.sleep(0.02)
            assert withdrawn[-1] is asked[-1]
    assert (env.project / "pushed.txt").exists()
