"""Agents with tools, through the real services and executor: every tool-call event with its
fields, the rows, approval, and the faults the model or a tool can cause."""

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

import psutil
import pytest
from channels.db import database_sync_to_async

from sessions_app.models import ToolCall
from tests.conftest import connect_ws
from tests.workflows.fake_openai import FakeOpenAI
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
    usage_sums,
    wait_event,
    wait_finished,
    workflow,
)
from workflows.store import get_store
from workflows.worker import Executor

pytestmark = pytest.mark.django_db(transaction=True)

FAULT_SERVER = Path(__file__).with_name("mcp_fault_server.py")


@pytest.fixture
def desk(settings: Any, tmp_path: Any) -> Any:
    install_workflows(settings, tmp_path)
    settings.SCRIPTED_TOKENS_PER_SECOND = 0
    return settings


@database_sync_to_async
def tool_calls(session_id: str) -> list[ToolCall]:
    return list(ToolCall.objects.filter(session_id=session_id).order_by("id"))


def of(log: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in log if e["event"] == name]


async def test_tool_desk_runs_every_call_live_with_approval(desk, executor, owner):
    sid = await create_session(owner, "tool-desk")
    assert await command(sid, owner, "start_session") is None
    ask = await wait_event(sid, is_event("human_interaction_required"), timeout=30)
    assert ask["data"]["tool"] == "save_note" and ask["data"]["tool_call_id"].startswith("tc_")
    assert await command(sid, owner, "submit_review", node_id="facts", decision="approve",
                         call_id=ask["data"]["tool_call_id"]) is None
    assert await wait_finished(sid, timeout=30) == "completed"
    log = await events(sid)
    assert_gap_free(log)
    starts = of(log, "tool_call_start")
    assert [(e["data"]["node_id"], e["data"]["tool"]) for e in starts] == [
        ("numbers", "calculator"), ("numbers", "current_time"),
        ("facts", "transcript_search"), ("facts", "lookup_fact"), ("facts", "save_note"),
    ]
    results = {e["data"]["call_id"]: e["data"] for e in of(log, "tool_call_result")}
    by_tool = {e["data"]["tool"]: results[e["data"]["call_id"]] for e in starts}
    assert by_tool["calculator"]["result"] == "1111.8" and by_tool["calculator"]["status"] == "succeeded"
    assert "cargo bike sales" in by_tool["lookup_fact"]["result"]
    assert by_tool["save_note"]["result"] == "saved note #1"
    for event in of(log, "tool_call_end"):
        args = "".join(e["data"]["delta"] for e in of(log, "tool_call_args")
                       if e["data"]["call_id"] == event["data"]["call_id"])
        assert args == event["data"]["arguments"]
        json.loads(args)
    rows = await tool_calls(sid)
    assert [(r.tool, r.status) for r in rows] == [(e["data"]["tool"], "succeeded") for e in starts]
    state = folded(log)
    assert {c["status"] for c in state["tool_calls"].values()} == {"succeeded"}
    messages = await agent_messages(sid)
    numbers = next(m for m in messages if m.node_id == "numbers")
    assert numbers.text.startswith("I will check this with calculator and current_time.")
    assert "The calculator tool returned 1111.8." in numbers.text
    assert state["messages"][0]["text"] == numbers.text


# ----------------------------------------------------------------------------- faults

def tool_workflow(slug: str, *, tools: list[Any], calls: list[dict[str, Any]] | None = None,
                  servers: dict[str, Any] | None = None, **agent: Any) -> dict[str, Any]:
    options: dict[str, Any] = {"thinking": False, "max_tokens": 12}
    if calls is not None:
        options["scripted_tool_calls"] = calls
    definition = workflow(slug, agent_node("work", **options))
    definition["agents"]["work"].update(tools=tools, **agent)
    if servers:
        definition["mcp_servers"] = servers
    return definition


def fault_server(pid_file: Any) -> dict[str, Any]:
    return {"command": "python", "args": [str(FAULT_SERVER)], "env": {"MCP_PID_FILE": str(pid_file)},
            "startup_timeout": 20}


async def run_to_end(owner: Any, slug: str, timeout: float = 40) -> tuple[str, list[dict[str, Any]]]:
    sid = await create_session(owner, slug)
    assert await command(sid, owner, "start_session") is None
    await wait_finished(sid, timeout=timeout)
    return sid, await events(sid)


def results_by_tool(log: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    names = {e["data"]["call_id"]: e["data"]["tool"] for e in of(log, "tool_call_start")}
    return [(names[e["data"]["call_id"]], e["data"]["status"], e["data"]["error"])
            for e in of(log, "tool_call_result")]


def assert_reaped(pid_file: Any) -> None:
    pids = [int(line) for line in pid_file.read_text().split()]
    assert pids, "the MCP server never started"
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, (
            f"MCP server {pid} outlived its node")


async def test_what_a_model_gets_wrong_ends_the_call_with_an_error_it_reads(desk, executor, owner, tmp_path):
    install_workflows(desk, tmp_path, tool_workflow("wrong", tools=["calculator"], calls=[
        {"name": "nope", "arguments": {}},
        {"name": "calculator", "arguments": "{not json"},
        {"name": "calculator", "arguments": {"expression": 5}},
        {"name": "calculator", "arguments": {"expression": "1/0"}},
        {"name": "calculator", "arguments": {"expression": "__import__('os').system('true')"}},
        {"name": "calculator", "arguments": {"expression": "6*7"}},
    ]))
    sid, log = await run_to_end(owner, "wrong")
    assert of(log, "execution:completed"), "a tool error must not fail the node"
    outcome = results_by_tool(log)
    assert [status for _, status, _ in outcome] == ["failed"] * 5 + ["succeeded"]
    errors = [error for _, _, error in outcome]
    assert errors[0].startswith("unknown tool 'nope' (available: calculator)")
    assert errors[1].startswith("arguments are not valid JSON")
    assert errors[2] == "arguments do not match the schema: expression: Input should be a valid string"
    assert errors[3] == "division by zero"
    assert errors[4].startswith("not allowed in an expression")
    assert of(log, "tool_call_result")[-1]["data"]["result"] == "42"
    message = (await agent_messages(sid))[0]
    assert "The nope tool returned error: unknown tool 'nope'" in message.text  # the model read it


async def test_mcp_server_faults_fail_the_call_and_every_process_is_reaped(desk, executor, owner, tmp_path):
    pids = tmp_path / "pids"
    pids.write_text("")
    install_workflows(desk, tmp_path, tool_workflow(
        "faulty",
        tools=[{"mcp": "faults", "only": ["hang"], "timeout": 1},
               {"mcp": "faults", "only": ["big"], "max_result_chars": 100},
               {"mcp": "faults", "only": ["fail", "echo", "die"]},
               {"mcp": "broken", "only": ["anything"]}],
        servers={"faults": fault_server(pids),
                 "broken": {"command": "python", "args": ["-c", "import sys; sys.stderr.write('no config here'); sys.exit(2)"]}},
        calls=[{"name": "hang", "arguments": {"seconds": 30}},
               {"name": "big", "arguments": {}},
               {"name": "fail", "arguments": {}},
               {"name": "echo", "arguments": {}},
               {"name": "echo", "arguments": {"text": "still there"}},
               {"name": "die", "arguments": {}},
               {"name": "echo", "arguments": {"text": "after the exit"}},
               {"name": "anything", "arguments": {}}],
    ))
    _, log = await run_to_end(owner, "faulty", timeout=60)
    assert of(log, "execution:completed")
    outcome = results_by_tool(log)
    assert [(tool, status) for tool, status, _ in outcome] == [
        ("hang", "failed"), ("big", "failed"), ("fail", "failed"), ("echo", "failed"),
        ("echo", "succeeded"), ("die", "failed"), ("echo", "failed"), ("anything", "failed")]
    errors = [error for _, _, error in outcome]
    assert errors[0] == "timed out after 1 s"
    assert errors[1] == "the result has 5000 characters, more than the cap of 100"
    assert errors[2] == "Error executing tool fail"  # what the server chose to say
    assert "arguments do not match the schema" in errors[3] and "'text' is a required property" in errors[3]
    assert errors[5].startswith("MCP server 'faults' failed during the call")
    assert errors[6] == errors[5]  # the server is gone: later calls fail at once, same reason
    assert errors[7].startswith("MCP server 'broken' failed to start") and "no config here" in errors[7]
    assert_reaped(pids)


async def test_tool_rounds_are_capped_and_usage_sums_every_model_call(desk, executor, owner, tmp_path):
    install_workflows(desk, tmp_path, tool_workflow("loopy", tools=["calculator"], max_tool_rounds=2))
    desk_definition = tool_workflow("loopy", tools=["calculator"], max_tool_rounds=2)
    desk_definition["nodes"][0]["options"]["scripted_tool_rounds"] = 10
    install_workflows(desk, tmp_path, desk_definition)
    sid, log = await run_to_end(owner, "loopy")
    assert of(log, "execution:completed")
    assert len(of(log, "tool_call_start")) == 2  # a model that always calls stops after 2 rounds
    final = [e for e in of(log, "token_usage") if e["data"]["final"]][-1]["data"]
    sums = await usage_sums(sid)
    assert (final["input_tokens"], final["output_tokens"]) == (sums["i"], sums["o"])
    # Three model calls: the third saw both rounds' calls and results, so input grew.
    assert final["input_tokens"] > 3 * 20


async def test_a_rejected_or_timed_out_approval_returns_denied_to_the_model(desk, executor, owner, tmp_path):
    install_workflows(desk, tmp_path, tool_workflow(
        "guarded", tools=[{"builtin": "calculator", "requires_approval": True, "approval_timeout": 1,
                           "approval_default": "reject"}],
        calls=[{"name": "calculator", "arguments": {"expression": "1+1"}},
               {"name": "calculator", "arguments": {"expression": "2+2"}}]))
    sid = await create_session(owner, "guarded")
    assert await command(sid, owner, "start_session") is None
    ask = await wait_event(sid, is_event("human_interaction_required"))
    assert ask["data"]["arguments"] == '{"expression": "1+1"}'
    # A watcher may not decide; a wrong call id is refused; a reject needs no comment.
    assert await command(sid, owner, "submit_review", node_id="work", decision="reject",
                         call_id="tc_missing") == "invalid_state"
    assert await command(sid, owner, "submit_review", node_id="work", decision="reject",
                         call_id=ask["data"]["tool_call_id"]) is None
    assert await wait_finished(sid, timeout=30) == "completed"  # the second one times out
    log = await events(sid)
    outcome = results_by_tool(log)
    assert outcome[0] == ("calculator", "denied", "denied by the reviewer")
    assert outcome[1] == ("calculator", "denied",
                          "denied by the reviewer: no decision before the timeout: default applied")
    reviews = [e["data"] for e in of(log, "review_submitted")]
    assert [(r["by"], r["timed_out"]) for r in reviews] == [("alice", False), (None, True)]
    assert "denied by the reviewer" in (await agent_messages(sid))[0].text


async def test_stop_cancels_a_running_tool_and_reaps_its_server(desk, executor, owner, tmp_path):
    pids = tmp_path / "pids"
    pids.write_text("")
    install_workflows(desk, tmp_path, tool_workflow(
        "stuck", tools=[{"mcp": "faults", "only": ["hang"], "timeout": 60}],
        servers={"faults": fault_server(pids)}, calls=[{"name": "hang", "arguments": {"seconds": 50}}]))
    sid = await create_session(owner, "stuck")
    assert await command(sid, owner, "start_session") is None
    await wait_event(sid, is_event("tool_call_end"), timeout=30)
    assert await command(sid, owner, "stop_session") is None
    assert await wait_finished(sid, timeout=15) == "stopped"
    outcome = results_by_tool(await events(sid))
    assert outcome == [("hang", "interrupted", "stopped: the session was stopped while the call ran")]
    assert_reaped(pids)


async def test_pause_holds_before_the_next_call(desk, executor, owner, tmp_path):
    install_workflows(desk, tmp_path, tool_workflow(
        "paced", tools=[{"builtin": "calculator", "requires_approval": True}],
        calls=[{"name": "calculator", "arguments": {"expression": "1+1"}},
               {"name": "calculator", "arguments": {"expression": "2+2"}}]))
    sid = await create_session(owner, "paced")
    assert await command(sid, owner, "start_session") is None
    ask = await wait_event(sid, is_event("human_interaction_required"))
    assert await command(sid, owner, "pause_session") is None
    assert await command(sid, owner, "submit_review", node_id="work", decision="approve",
                         call_id=ask["data"]["tool_call_id"]) is None
    first = await wait_event(sid, is_event("tool_call_result"))
    assert first["data"]["status"] == "succeeded"
    await asyncio.sleep(0.5)
    log = await events(sid)
    assert len(of(log, "tool_call_end")) == 1, "a paused session started the next call"
    assert await command(sid, owner, "resume_session") is None
    second = await wait_event(sid, is_event("human_interaction_required"), after=ask["seq"])
    assert await command(sid, owner, "submit_review", node_id="work", decision="approve",
                         call_id=second["data"]["tool_call_id"]) is None
    assert await wait_finished(sid) == "completed"


async def test_a_take_over_marks_the_running_call_interrupted_and_runs_the_node_again(
        desk, executor, owner, tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    pids.write_text("")
    desk.WORKER_LEASE_SECONDS = 0.6
    install_workflows(desk, tmp_path, tool_workflow(
        "crashy", tools=[{"mcp": "faults", "only": ["hang"], "timeout": 60}],
        servers={"faults": fault_server(pids)}, calls=[{"name": "hang", "arguments": {"seconds": 2}}]))
    sid = await create_session(owner, "crashy")
    assert await command(sid, owner, "start_session") is None
    first = await wait_event(sid, is_event("tool_call_end"), timeout=30)
    # The worker dies while the tool runs: nothing more is written, the lease expires.
    monkeypatch.setattr(get_store(), "release_lease", lambda **kwargs: None)
    await executor.close()
    monkeypatch.undo()
    other = Executor(owner="executor-b")
    await other.start()
    try:
        assert await wait_finished(sid, timeout=40) == "completed"
    finally:
        await other.close()
    log = await events(sid)
    assert_gap_free(log)
    outcome = results_by_tool(log)
    assert outcome[0] == ("hang", "interrupted",
                          "interrupted: the runner stopped while the call ran; the node runs again")
    assert outcome[1] == ("hang", "succeeded", None)  # the node ran again: a new call, recorded
    calls = await tool_calls(sid)
    assert [(c.call_id == first["data"]["call_id"], c.status) for c in calls] == [
        (True, "interrupted"), (False, "succeeded")]
    state = folded(log)
    assert [c["status"] for c in state["tool_calls"].values()] == ["interrupted", "succeeded"]
    assert_reaped(pids)


async def test_openai_provider_streams_tool_calls_and_sends_results_back(desk, executor, owner, tmp_path):
    install_workflows(desk, tmp_path, tool_workflow("remote", tools=["calculator"]))
    server = FakeOpenAI().start()
    try:
        desk.LLM_PROVIDER = "openai"
        desk.OPENAI_BASE_URL = server.base_url
        desk.OPENAI_API_KEY = "sk-test-tools-0123456789"
        desk.OPENAI_MODEL = "gpt-4o-mini"
        desk.LLM_MAX_RETRIES = 0
        server.modes = ["tool_call", "normal"]
        sid, log = await run_to_end(owner, "remote")
    finally:
        server.stop()
    assert of(log, "execution:completed")
    assert results_by_tool(log) == [("calculator", "succeeded", None)]
    assert of(log, "tool_call_result")[0]["data"]["result"] == "42"
    assert "".join(e["data"]["delta"] for e in of(log, "tool_call_args")) == '{"expression": "6*7"}'
    first, second = (request["json"] for request in server.requests)
    assert first["tools"][0]["function"]["name"] == "calculator"
    assert first["tools"][0]["function"]["parameters"]["required"] == ["expression"]
    assistant, tool = second["messages"][-2:]
    call_id = of(log, "tool_call_start")[0]["data"]["call_id"]
    assert assistant["tool_calls"] == [{"id": call_id, "type": "function", "function": {
        "name": "calculator", "arguments": '{"expression": "6*7"}'}}]
    assert tool == {"role": "tool", "tool_call_id": call_id, "content": "42"}
    # Usage is the sum of both model calls (17 + 17 in, 7 + 7 out from the server).
    sums = await usage_sums(sid)
    assert (sums["i"], sums["o"]) == (34, 14)
    assert (await agent_messages(sid))[0].text == "Hello there, world!"


async def test_a_websocket_client_sees_every_tool_event_with_its_fields(desk, executor, owner, ws_app):
    """Driven over a real WebSocket: start, approve the flagged call with submit_review +
    call_id, and check every new event as the client received it (each frame is validated
    against the protocol by the test client)."""
    sid = await create_session(owner, "tool-desk")
    ws, ok, _ = await connect_ws(ws_app, sid, owner)
    assert ok
    await ws.reply(await ws.command("start_session"))
    ask = await ws.until(lambda e: e["event"] == "human_interaction_required", 30)
    data = ask["data"]
    assert (data["node_id"], data["tool"], data["round"], data["timeout"]) == ("facts", "save_note", 1, 300)
    assert json.loads(data["arguments"]) == {"text": json.loads(data["arguments"])["text"]}
    # Unknown extra fields are refused; a wrong call id is an invalid_state error.
    bad = await ws.reply(await ws.command("submit_review", {"node_id": "facts", "decision": "approve", "tool": "x"}))
    assert (bad["event"], bad["data"]["code"]) == ("error", "invalid_data")
    bad = await ws.reply(await ws.command("submit_review", {"node_id": "facts", "decision": "approve", "call_id": "tc_nope"}))
    assert (bad["event"], bad["data"]["code"]) == ("error", "invalid_state")
    ok_reply = await ws.reply(await ws.command(
        "submit_review", {"node_id": "facts", "decision": "approve", "call_id": data["tool_call_id"]}))
    assert ok_reply["event"] == "ack"
    await ws.until(lambda e: e["event"] == "execution:completed", 30)
    await ws.close()
    log = await events(sid)
    received = [e for e in ws.events if e["seq"] is not None]
    assert [e["seq"] for e in received] == [e["seq"] for e in log]
    starts = [e for e in received if e["event"] == "tool_call_start"]
    assert len(starts) == 5
    for start in starts:
        call_id = start["data"]["call_id"]
        mine = [e for e in received if e["data"].get("call_id") == call_id]
        kinds = [e["event"] for e in mine]
        assert kinds[0] == "tool_call_start" and kinds[-1] == "tool_call_result"
        assert kinds.count("tool_call_end") == 1 and set(kinds[1:-2]) <= {"tool_call_args"}
        end = next(e for e in mine if e["event"] == "tool_call_end")
        assert "".join(e["data"]["delta"] for e in mine if e["event"] == "tool_call_args") == end["data"]["arguments"]
        assert end["data"]["requires_approval"] is (start["data"]["tool"] == "save_note")
        result = mine[-1]["data"]
        assert set(result) == {"call_id", "node_id", "status", "result", "error", "duration_ms"}
        assert result["status"] == "succeeded" and result["error"] is None and result["duration_ms"] >= 0
        assert all(e["node_id"] == start["data"]["node_id"] == e["data"]["node_id"] for e in mine)
        assert start["data"]["agent_id"] == {"numbers": "analyst", "facts": "archivist"}[start["node_id"]]
    decided = next(e for e in received if e["event"] == "review_submitted")["data"]
    assert (decided["tool_call_id"], decided["decision"], decided["by"]) == (data["tool_call_id"], "approve", "alice")


@pytest.fixture
def http_mcp_server(tmp_path: Path) -> Any:
    """The fault server over streamable HTTP, in its own process, on a free port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, str(FAULT_SERVER)], env={**os.environ, "MCP_HTTP_PORT": str(port)},
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "mcp-http.log").open("w"),
    )
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
        assert process.poll() is None and time.monotonic() < deadline, (
            (tmp_path / "mcp-http.log").read_text())
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/mcp"
    process.terminate()
    try:
        process.wait(3)
    except subprocess.TimeoutExpired:  # its uvicorn waits for the hung tool's thread
        process.kill()
        process.wait(5)


async def test_an_mcp_server_over_streamable_http(desk, executor, owner, tmp_path, http_mcp_server):
    desk.MCP_ALLOWED_HOSTS = ["127.0.0.1"]
    install_workflows(desk, tmp_path, tool_workflow(
        "remote-mcp", tools=[{"mcp": "web", "only": ["echo", "hang"], "timeout": 2}],
        servers={"web": {"url": http_mcp_server}},
        calls=[{"name": "echo", "arguments": {"text": "over http"}},
               {"name": "hang", "arguments": {"seconds": 30}}]))
    _, log = await run_to_end(owner, "remote-mcp")
    assert of(log, "execution:completed")
    assert results_by_tool(log) == [("echo", "succeeded", None), ("hang", "failed", "timed out after 2 s")]
    assert of(log, "tool_call_result")[0]["data"]["result"] == "echo: over http"


async def test_an_mcp_server_on_a_host_not_allowed_is_never_called(desk, executor, owner, tmp_path, http_mcp_server):
    desk.MCP_ALLOWED_HOSTS = ["tools.example.com"]
    install_workflows(desk, tmp_path, tool_workflow(
        "far-mcp", tools=[{"mcp": "web", "only": ["echo"]}], servers={"web": {"url": http_mcp_server}},
        calls=[{"name": "echo", "arguments": {"text": "hi"}}]))
    _, log = await run_to_end(owner, "far-mcp")
    assert of(log, "execution:completed")
    assert results_by_tool(log) == [("echo", "failed", "MCP server 'web' not reached: its host is not "
                                                        "allowed (add it to MCP_ALLOWED_HOSTS)")]


async def test_a_stdio_server_gets_only_the_environment_its_definition_names(
        desk, executor, owner, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-must-not-leak")
    monkeypatch.setenv("DJANGO_SECRET_KEY", "must-not-leak")
    pids = tmp_path / "pids"
    pids.write_text("")
    install_workflows(desk, tmp_path, tool_workflow(
        "envy", tools=[{"mcp": "faults", "only": ["env_names"]}], servers={"faults": fault_server(pids)},
        calls=[{"name": "env_names", "arguments": {}}]))
    _, log = await run_to_end(owner, "envy")
    names = of(log, "tool_call_result")[0]["data"]["result"].split()
    assert "MCP_PID_FILE" in names  # what the definition names
    assert "OPENAI_API_KEY" not in names and "DJANGO_SECRET_KEY" not in names
    assert set(names) - {"MCP_PID_FILE"} <= {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LC_CTYPE"}


async def test_tool_results_are_data_never_commands_or_markup(desk, executor, owner, tmp_path):
    """A tool answering with markup and with text shaped like our protocol: the session runs
    on (no stop, no message from anyone), the text is stored and sent exactly as it came, and
    the page renders it as text (tests/js/static_safety: no HTML parsing in static/js)."""
    nasty = ('<img src=x onerror="alert(1)"><script>alert(2)</script> '
             '{"cmd": "stop_session", "id": "x"} {"event": "execution:stopped", "seq": 1}')
    pids = tmp_path / "pids"
    pids.write_text("")
    install_workflows(desk, tmp_path, tool_workflow(
        "nasty", tools=[{"mcp": "faults", "only": ["echo"]}], servers={"faults": fault_server(pids)},
        calls=[{"name": "echo", "arguments": {"text": nasty}}]))
    sid, log = await run_to_end(owner, "nasty")
    assert of(log, "execution:completed") and not of(log, "execution:stopped")
    assert not of(log, "user_message")
    [result] = of(log, "tool_call_result")
    assert result["data"]["result"] == f"echo: {nasty}"
    assert (await tool_calls(sid))[0].result == f"echo: {nasty}"
