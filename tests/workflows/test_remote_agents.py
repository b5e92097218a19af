"""Remote AG-UI agents as meeting participants, against a real AG-UI server from another
framework (Pydantic AI's adapter on deterministic FunctionModels, its own process): what the
room shows, what the remote agent was sent, its interrupts as our reviews, and every fault
failing the node with an error that names the endpoint and no secret."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import NodeState, ToolCall
from tests.conftest import connect_ws
from tests.workflows.agui_agent_server import MARKUP
from tests.workflows.helpers import (
    agent_messages,
    agent_node,
    assert_gap_free,
    command,
    create_session,
    events,
    folded,
    install_workflows,
    is_event,
    is_state,
    session_row,
    usage_sums,
    wait_event,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.django_db(transaction=True)

SERVER = Path(__file__).with_name("agui_agent_server.py")
AGENT_KEY = "k-agent-key-31337"  # what the server expects in X-Agent-Key
TOKEN = "tok-very-secret-4242"  # a bearer token the faults must never show


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def agui_server(tmp_path_factory: Any) -> Any:
    """The AG-UI agent server in its own process; yields (base url, log of what it got and sent)."""
    folder = tmp_path_factory.mktemp("agui")
    port, log = free_port(), folder / "agui.log"
    process = subprocess.Popen(
        [sys.executable, str(SERVER)],
        env={**os.environ, "AGUI_PORT": str(port), "AGUI_LOG": str(log), "AGUI_KEY": AGENT_KEY},
        stdout=subprocess.DEVNULL, stderr=(folder / "server.err").open("w"),
    )
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
        assert process.poll() is None and time.monotonic() < deadline, (folder / "server.err").read_text()
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}", log
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@pytest.fixture
def remote(settings: Any, tmp_path: Path, agui_server: Any, monkeypatch: Any) -> Any:
    install_workflows(settings, tmp_path)
    settings.SCRIPTED_TOKENS_PER_SECOND = 0
    settings.AGUI_AGENT_ALLOWED_HOSTS = ["127.0.0.1"]
    settings.AGUI_AGENT_TIMEOUT_SECONDS = 1.5
    monkeypatch.setenv("AGUI_TOKEN", TOKEN)
    monkeypatch.setenv("AGUI_KEY", AGENT_KEY)
    return settings


def meeting(slug: str, url: str, **agui: Any) -> dict[str, Any]:
    """A local agent (brief), the remote agent (analyst) reading it, a local agent after it."""
    definition = workflow(
        slug, agent_node("brief", thinking=False, max_tokens=8), agent_node("analyst", "brief"),
        agent_node("wrap", "analyst", thinking=False, max_tokens=5),
    )
    definition["agents"]["analyst"].update(
        provider="agui", agui={"url": url, "headers": {"Authorization": "Bearer ${AGUI_TOKEN}"}, **agui}
    )
    return definition


def server_log(log: Path, path: str) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [r for r in map(json.loads, log.read_text().splitlines()) if r["path"] == path]


def of(log: list[dict[str, Any]], name: str, node_id: str | None = None) -> list[dict[str, Any]]:
    return [e for e in log if e["event"] == name and (node_id is None or e["node_id"] == node_id)]


@database_sync_to_async
def node_rows(session_id: str) -> dict[str, NodeState]:
    return {n.node_id: n for n in NodeState.objects.filter(session_id=session_id)}


@database_sync_to_async
def tool_calls(session_id: str) -> list[ToolCall]:
    return list(ToolCall.objects.filter(session_id=session_id).order_by("id"))


async def test_a_remote_pydantic_ai_agent_takes_a_seat_in_a_meeting(remote, executor, owner, ws_app, agui_server):
    """Driven over a real WebSocket: the local agent answers, the remote agent reads it,
    calls its own tool and answers; viewers see its text, its tool call and its usage like a
    local agent's, and its badge."""
    base, log_path = agui_server
    install_workflows(remote, remote.WORKFLOW_DIR.parent, meeting("mixed", f"{base}/analyst"))
    before = len(server_log(log_path, "/analyst"))
    sid = await create_session(owner, "mixed")
    ws, ok, _ = await connect_ws(ws_app, sid, owner)
    assert ok
    snapshot = await ws.next_event()
    assert snapshot["event"] == "snapshot"
    agents = {n["id"]: n["agent"] for n in snapshot["data"]["workflow"]["nodes"]}
    assert (agents["analyst"]["remote"], agents["brief"]["remote"]) == (True, False)
    await ws.reply(await ws.command("start_session"))
    await ws.until(lambda e: e["event"] == "execution:completed", 30)
    await ws.close()
    log = await events(sid)
    assert_gap_free(log)
    received = [e for e in ws.events if e["seq"] is not None]
    assert [e["seq"] for e in received] == [e["seq"] for e in log]

    records = server_log(log_path, "/analyst")[before:]
    sent = [r["sent"] for r in records if "sent" in r]
    got = next(r["got"] for r in records if "got" in r)
    messages = {m.node_id: m for m in await agent_messages(sid)}
    # What the remote agent was sent: the meeting so far, as AG-UI messages.
    assert got["messages"][0]["role"] == "system"
    assert got["messages"][0]["content"].startswith("You are Analyst, Speaks for analyst.")
    assert got["messages"][1]["content"] == f"Output of Brief:\n{messages['brief'].text}"
    # What viewers saw: the remote text, exactly as it was sent.
    text = "".join(e["delta"] for e in sent if e["type"] == "TEXT_MESSAGE_CONTENT")
    assert messages["analyst"].text == text
    assert text.startswith("Remote analyst here. Upstream said: Output of Brief: ")
    assert text.endswith("The price is 1000 EUR for cargo bike.")
    assert "".join(e["data"]["chunk"] for e in of(received, "token_stream", "analyst")) == text
    # Its own tool call, relayed (not run here), with its arguments and result.
    start, = of(received, "tool_call_start", "analyst")
    assert (start["data"]["tool"], start["data"]["agent_id"]) == ("lookup_price", "analyst")
    end, = of(received, "tool_call_end", "analyst")
    args = "".join(e["data"]["delta"] for e in of(received, "tool_call_args", "analyst"))
    assert args == end["data"]["arguments"] == '{"item": "cargo bike"}'
    result, = of(received, "tool_call_result", "analyst")
    assert (result["data"]["status"], result["data"]["result"]) == ("succeeded", "1000 EUR for cargo bike")
    row, = await tool_calls(sid)
    assert row.server == f"agui:{base.removeprefix('http://')}/analyst"
    # Usage: the sum of what RUN_FINISHED reported, priced like any other node.
    reported = [u for e in sent if e["type"] == "RUN_FINISHED" for u in e.get("usage", [])]
    final = [e for e in of(received, "token_usage", "analyst") if e["data"]["final"]][-1]["data"]
    assert (final["input_tokens"], final["output_tokens"]) == (
        sum(u.get("inputTokens", 0) for u in reported), sum(u.get("outputTokens", 0) for u in reported))
    assert reported and final["estimated_cost_usd"] > 0
    assert messages["wrap"].text  # the local agent after it ran
    state = folded(log)
    assert state["nodes"]["analyst"]["status"] == "completed"
    assert state["tool_calls"][row.call_id]["status"] == "succeeded"


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_remote_interrupt_is_our_review_and_the_answer_goes_back_with_resume(
    remote, executor, owner, agui_server, decision
):
    base, log_path = agui_server
    install_workflows(remote, remote.WORKFLOW_DIR.parent,
                      meeting("approvals", f"{base}/approval", interrupt_timeout=60))
    before = len(server_log(log_path, "/approval"))
    sid = await create_session(owner, "approvals")
    assert await command(sid, owner, "start_session") is None
    ask = await wait_event(sid, is_event("human_interaction_required", "analyst"), timeout=30)
    assert (ask["data"]["tool"], ask["data"]["arguments"]) == ("place_order", '{"count": 3}')
    assert (await session_row(sid)).status == "waiting_review"
    comment = "" if decision == "approve" else "three is too many"
    assert await command(sid, owner, "submit_review", node_id="analyst", decision=decision,
                         comment=comment, call_id=ask["data"]["tool_call_id"]) is None
    assert await wait_finished(sid, timeout=30) == "completed"
    got = [r["got"] for r in server_log(log_path, "/approval")[before:] if "got" in r]
    assert len(got) == 2 and "resume" not in got[0]
    resume, = got[1]["resume"]
    assert resume["interruptId"] == "int-call_order" and resume["status"] == "resolved"
    assert resume["payload"] == ({"approved": True} if decision == "approve"
                                 else {"approved": False, "reason": comment})
    # The second run carries the conversation the first one streamed (client-held history).
    assert got[1]["messages"][-1]["toolCalls"][0]["id"] == "call_order"
    text = (await agent_messages(sid))[1].text
    call, = await tool_calls(sid)
    if decision == "approve":
        assert text == "Order outcome: placed 3 bikes"
        assert (call.status, call.result) == ("succeeded", "placed 3 bikes")
    else:
        assert text == f"Order outcome: {comment}"
        assert (call.status, call.error) == ("denied", f"denied by the reviewer: {comment}")


async def test_an_interrupt_about_no_call_gets_its_own_card_and_its_timeout_default(
    remote, executor, owner, agui_server
):
    base, log_path = agui_server
    install_workflows(remote, remote.WORKFLOW_DIR.parent,
                      meeting("asks", f"{base}/ask", interrupt_timeout=1, interrupt_default="reject"))
    before = len(server_log(log_path, "/ask"))
    sid = await create_session(owner, "asks")
    assert await command(sid, owner, "start_session") is None
    ask = await wait_event(sid, is_event("human_interaction_required", "analyst"), timeout=30)
    assert (ask["data"]["tool"], json.loads(ask["data"]["arguments"])) == (
        "interrupt:confirmation", {"message": "Publish the summary?"})
    assert await wait_finished(sid, timeout=30) == "completed"  # nobody answered: reject applied
    decided, = of(await events(sid), "review_submitted", "analyst")
    assert (decided["data"]["decision"], decided["data"]["timed_out"]) == ("reject", True)
    resume = [r["got"] for r in server_log(log_path, "/ask")[before:]][-1]["resume"]
    assert resume == [{"interruptId": "go-ahead", "status": "resolved", "payload": {
        "approved": False, "reason": "no decision before the timeout: default applied"}}]
    assert (await agent_messages(sid))[1].text == "I was declined."
    call, = await tool_calls(sid)
    assert call.status == "denied"


async def test_reasoning_text_messages_usage_entries_and_a_header_from_the_environment(
    remote, executor, owner, agui_server
):
    base, _ = agui_server
    definition = meeting("scripted-remote", f"{base}/scripted")
    definition["agents"]["analyst"]["agui"]["headers"] = {"X-Agent-Key": "${AGUI_KEY}"}
    install_workflows(remote, remote.WORKFLOW_DIR.parent, definition)
    sid = await create_session(owner, "scripted-remote")
    assert await command(sid, owner, "start_session") is None
    assert await wait_finished(sid, timeout=30) == "completed"
    analyst = (await agent_messages(sid))[1]
    assert (analyst.thinking, analyst.text) == ("Weighing the numbers.", f"First part.\n\n{MARKUP}")
    assert (await session_row(sid)).status == "completed"  # the protocol-looking text did nothing
    log = await events(sid)
    final = [e for e in of(log, "token_usage", "analyst") if e["data"]["final"]][-1]["data"]
    assert (final["input_tokens"], final["output_tokens"]) == (11 + 3, 7 + 2)
    # The session keeps the header as written, never resolved.
    stored = (await session_row(sid)).workflow_definition["agents"]["analyst"]["agui"]
    assert stored["headers"] == {"X-Agent-Key": "${AGUI_KEY}"}
    assert AGENT_KEY not in json.dumps(log)


FAULTS = [
    ("/status/500", "answered HTTP 500"),
    ("/status/404", "answered HTTP 404"),
    ("/bad-event", "sent an event that does not parse (TEXT_MESSAGE_CONTENT.delta: Input should be a valid string)"),
    ("/stall", "sent nothing for 1.5 s (timed out)"),
    ("/cut", "closed the connection mid-stream"),
    ("/ends-early", "closed the stream before RUN_FINISHED"),
    ("/run-error", "reported an error (overloaded): model overloaded (you sent ***)"),
    ("/redirect", "answered HTTP 307, a redirect (redirects are not followed)"),
    ("/big", "response larger than 50000 bytes"),
    ("/scripted", "answered HTTP 401"),
    ("refused", "connection refused or unreachable"),
    ("not-allowed", "host not allowed (add it to AGUI_AGENT_ALLOWED_HOSTS)"),
]


@pytest.mark.parametrize(("path", "error"), FAULTS, ids=[f[0].strip("/") for f in FAULTS])
async def test_a_failing_remote_agent_fails_its_node_and_the_run_follows_the_failure_policy(
    remote, executor, owner, agui_server, path, error
):
    base, _ = agui_server
    remote.AGUI_AGENT_MAX_RESPONSE_BYTES = 50_000
    url = {"refused": f"http://127.0.0.1:{free_port()}/agent",
           "not-allowed": f"{base.replace('127.0.0.1', 'localhost')}/analyst"}.get(path, base + path)
    install_workflows(remote, remote.WORKFLOW_DIR.parent, meeting("faulty", url + "?key=in-the-query"))
    sid = await create_session(owner, "faulty")
    assert await command(sid, owner, "start_session") is None
    assert await wait_finished(sid, timeout=30) == "failed"
    endpoint = url.removeprefix("http://")
    nodes = await node_rows(sid)
    assert nodes["analyst"].error == f"remote agent {endpoint}: {error}"
    assert (nodes["brief"].status, nodes["analyst"].status, nodes["wrap"].status) == (
        "completed", "failed", "skipped")
    log = await events(sid)
    failed, = of(log, "error", "analyst")
    assert failed["data"]["code"] == "provider_error"
    assert TOKEN not in json.dumps(log) and "in-the-query" not in json.dumps(log)
    if path in ("/cut", "/stall", "/bad-event"):  # what streamed before the fault is kept
        assert (await agent_messages(sid))[1].text == "Partial answer "
    if path in ("/cut", "/stall"):  # a remote call left running ends with the node's error
        call, = await tool_calls(sid)
        assert (call.tool, call.status, call.error) == ("slow_search", "failed", nodes["analyst"].error)
        assert of(log, "tool_call_result", "analyst")[0]["data"]["status"] == "failed"
    sums = await usage_sums(sid)
    assert sums["i"] > 0  # the local agent's usage still counts


async def test_stop_closes_the_remote_stream(remote, executor, owner, agui_server):
    base, _ = agui_server
    remote.AGUI_AGENT_TIMEOUT_SECONDS = 30
    install_workflows(remote, remote.WORKFLOW_DIR.parent, meeting("stopped", f"{base}/stall"))
    sid = await create_session(owner, "stopped")
    assert await command(sid, owner, "start_session") is None
    await wait_event(sid, lambda e: e["event"] == "token_stream" and e["node_id"] == "analyst", timeout=30)
    assert await command(sid, owner, "stop_session") is None
    assert await wait_finished(sid, timeout=10) == "stopped"
    nodes = await node_rows(sid)
    assert nodes["analyst"].status == "stopped"
    assert (await agent_messages(sid))[1].text == "Partial answer "
    call, = await tool_calls(sid)
    assert (call.status, call.error) == ("interrupted", "stopped: the session was stopped while the call ran")


async def test_pause_holds_the_relay_and_resume_continues_it(remote, executor, owner, agui_server):
    base, _ = agui_server
    install_workflows(remote, remote.WORKFLOW_DIR.parent, meeting("paused", f"{base}/slow"))
    sid = await create_session(owner, "paused")
    assert await command(sid, owner, "start_session") is None
    await wait_event(sid, lambda e: e["event"] == "token_stream" and e["node_id"] == "analyst", timeout=30)
    assert await command(sid, owner, "pause_session") is None
    held = await wait_event(sid, is_state("analyst", "paused"), timeout=10)
    await asyncio.sleep(0.8)  # the remote agent goes on sending; nothing reaches the room
    assert not [e for e in await events(sid) if e["seq"] > held["seq"] and e["node_id"] == "analyst"]
    assert await command(sid, owner, "resume_session") is None
    assert await wait_finished(sid, timeout=30) == "completed"
    assert (await agent_messages(sid))[1].text == "".join(f"w{i} " for i in range(10))
