"""Agents with tools, through the real services and executor: every tool-call event with its
fields, the rows, approval, and the faults the model or a tool can cause."""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.db import database_sync_to_async

from sessions_app.models import ToolCall
from tests.workflows.helpers import (
    agent_messages,
    assert_gap_free,
    command,
    create_session,
    events,
    folded,
    install_workflows,
    is_event,
    wait_event,
    wait_finished,
)

pytestmark = pytest.mark.django_db(transaction=True)


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
