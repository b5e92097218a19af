"""Fencing: a runner that froze past its lease and wakes after a take-over stores nothing.

Every lease has a generation, advanced by each claim; every run write and every streamed
event carries the generation its runner holds and is refused once it moved on. The
real-process version (SIGSTOP, another worker takes over, SIGCONT) is in test_takeover.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async

from realtime.eventlog import FencedOut, head_seq, set_fence
from realtime.publisher import get_publisher
from realtime.vocabulary import EventName
from sessions_app import services
from sessions_app.models import Message, NodeState, TokenUsage
from sessions_app.services import leases
from tests.workflows.helpers import (
    agent_node,
    assert_gap_free,
    command,
    create_session,
    events,
    folded,
    install_workflows,
    is_event,
    wait_event,
    wait_finished,
    workflow,
)
from workflows.store import LeaseLost, get_store
from workflows.worker import Executor

SOLO = workflow("solo", agent_node("talk", max_tokens=80, thinking=False))


@pytest.mark.django_db
def test_a_write_from_a_superseded_lease_stores_nothing(owner: Any) -> None:
    session = services.session_create(owner=owner, workflow_slug="demo")
    sid = str(session.pk)
    services.session_start(session_id=sid, user=owner)
    store = get_store()
    old = leases.take_lease(session_id=sid, owner="runner-a", lease_seconds=0.01)
    assert old == 1
    store.run_begin(session_id=sid, fence=old)
    node = next(n for n in session.workflow_definition["nodes"] if n["type"] == "agent")
    message_id = store.node_begin(session_id=sid, fence=old, node_id=node["id"],
                                  agent_id=node["agent"], round=1)
    time.sleep(0.05)  # runner A froze past its lease; runner B takes the run over
    assert leases.claim_runs(owner="runner-b", limit=5, lease_seconds=30) == [(sid, 2)]
    head = head_seq(sid)
    with pytest.raises(LeaseLost):
        store.node_complete(
            session_id=sid, fence=old, node_id=node["id"], agent_id=node["agent"], round=1,
            model="scripted-small", message_id=message_id, text="late answer", thinking="",
            input_tokens=10, output_tokens=2, cost_usd=Decimal("0.000001"),
        )
    for write, kwargs in [
        (store.node_set_status, {"node_id": node["id"], "status": "paused"}),
        (store.message_save_partial, {"message_id": message_id, "text": "late", "thinking": ""}),
        (store.nodes_skip, {"node_ids": [node["id"]], "reason": "late"}),
        (store.run_finish, {"error": ""}),
    ]:
        with pytest.raises(LeaseLost):
            write(session_id=sid, fence=old, **kwargs)
    assert head_seq(sid) == head  # no event logged
    assert not TokenUsage.objects.filter(session_id=sid).exists()
    assert Message.objects.get(pk=message_id).text == ""
    assert NodeState.objects.get(session_id=sid, node_id=node["id"]).status == "running"
    # the new holder writes as usual, and renewing or releasing the old lease does nothing
    store.node_set_status(session_id=sid, fence=2, node_id=node["id"], status="paused")
    assert leases.renew_lease(session_id=sid, owner="runner-a", generation=1, lease_seconds=5) is None
    leases.release_lease(session_id=sid, owner="runner-a", generation=1)
    session.refresh_from_db()
    assert (session.lease_owner, session.lease_generation) == ("runner-b", 2)


@pytest.mark.django_db(transaction=True)
async def test_streamed_events_with_a_superseded_fence_are_refused(owner: Any) -> None:
    sid = await create_session(owner, "demo")
    await database_sync_to_async(set_fence)(session_id=sid, fence=2)
    publisher = get_publisher()
    data = {"chunk": "x ", "agent_id": "a", "node_id": "n", "is_thinking": False}
    stale = publisher.publish_nowait(session_id=sid, event=EventName.TOKEN_STREAM, node_id="n",
                                     data=data, fence=1)
    current = publisher.publish_nowait(session_id=sid, event=EventName.TOKEN_STREAM, node_id="n",
                                       data=data, fence=2)
    unfenced = publisher.publish_nowait(session_id=sid, event=EventName.TOKEN_STREAM, node_id="n",
                                        data=data)
    results = await asyncio.gather(stale, current, unfenced, return_exceptions=True)
    assert isinstance(results[0], FencedOut)
    assert sorted(results[1:]) == [1, 2]
    assert [e["seq"] for e in await events(sid)] == [1, 2]


@pytest.mark.django_db(transaction=True)
async def test_a_runner_that_missed_its_take_over_abandons_at_its_next_write(
        settings: Any, tmp_path: Path, owner: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Runner A never learns from its lease renewals that it lost the run (as if frozen);
    runner B takes it over; A's next streamed chunk is refused and A stops writing."""
    install_workflows(settings, tmp_path, SOLO)
    settings.SCRIPTED_TOKENS_PER_SECOND = 40  # 2 s of streaming
    settings.WORKER_LEASE_SECONDS = 0.6
    store = get_store()
    real_renew = store.renew_leases

    def renew(**kwargs: Any) -> dict[str, str | None]:
        if kwargs["owner"] == "runner-a":
            # A never notices: its renewals neither extend nor fail
            return dict.fromkeys(kwargs["generations"], "running")
        return real_renew(**kwargs)

    monkeypatch.setattr(store, "renew_leases", renew)
    caplog.set_level(logging.WARNING, logger="workflows.runner")
    executor_a = Executor(owner="runner-a")
    await executor_a.start()
    executor_b = Executor(owner="runner-b", only=set())  # claims nothing until asked
    try:
        sid = await create_session(owner, "solo")
        assert await command(sid, owner, "start_session") is None
        await wait_event(sid, is_event("token_stream", "talk"))
        await asyncio.sleep(0.7)  # A's lease has expired; A keeps streaming
        executor_b.only = {sid}
        await executor_b.start()
        assert await wait_finished(sid, timeout=20) == "completed"
        await asyncio.sleep(0.5)  # anything A still had queued has been tried by now
    finally:
        await executor_b.close()
        await executor_a.close()
    assert "was taken over; abandoning" in caplog.text
    log = await events(sid)
    assert_gap_free(log)
    assert log[-1]["event"] == "execution:completed"
    completed_at = next(e["seq"] for e in log if e["event"] == "node_state_change"
                        and e["data"]["status"] == "completed")
    assert not [e for e in log if e["seq"] > completed_at and e["event"] == "token_stream"]
    statuses = [e["data"]["status"] for e in log if e["event"] == "node_state_change"]
    assert statuses == ["running", "stopped", "pending", "running", "completed"], statuses
    rows = await database_sync_to_async(
        lambda: [(m.text, m.is_final) for m in Message.objects.filter(session_id=sid).order_by("id")]
    )()
    state = folded(log)
    assert [(m["text"], m["final"]) for m in state["messages"]] == rows
    usage = await database_sync_to_async(
        lambda: Counter(TokenUsage.objects.filter(session_id=sid).values_list("node_id", "round"))
    )()
    assert usage == {("talk", 1): 1}
