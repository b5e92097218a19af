"""PostgreSQL briefly unavailable: the run pauses or fails cleanly (with an ``error`` event),
never leaves rows and event log disagreeing, and goes on (is resumed) once it is back.

The first test cuts the real PostgreSQL off (TCP proxy in front of it, for the web processes
and the worker) for 3 s mid-run (tests/reliability/scenarios.py ``scenario_postgres``). The
others make one write fail, in process, which is what a shorter outage does (bench/faults.py
postgres-blip: 0.4 s): one batched insert of the event log, one node-boundary transaction.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError

from realtime import publisher
from realtime.state import fold
from sessions_app.models import Message, NodeState, Session
from tests.reliability.backends import check_shared_redis
from tests.reliability.scenarios import scenario_lost_commit, scenario_postgres
from tests.workflows.helpers import (
    agent_node,
    command,
    create_session,
    events,
    install_workflows,
    wait_finished,
    workflow,
)
from workflows import stored
from workflows.store import get_store


async def _stored(sid: str) -> tuple[list[dict[str, Any]], dict[str, Any], list[tuple[str, str, bool]],
                                   dict[str, str], str]:
    """(event log, its fold, agent Message rows (node, text, final), node states, session status):
    what the viewers were sent next to what the tables say."""
    log = await events(sid)
    messages, nodes, status = await database_sync_to_async(lambda: (
        list(Message.objects.filter(session_id=sid, kind="agent").order_by("id")
             .values_list("node_id", "text", "is_final")),
        dict(NodeState.objects.filter(session_id=sid).values_list("node_id", "status")),
        Session.objects.get(pk=sid).status,
    ))()
    return log, fold(log), messages, nodes, status


def _logged(state: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m["node_id"], m["text"]) for m in state["messages"] if m["kind"] == "agent"]


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_postgres_cut_off_mid_run(tmp_path: Path) -> None:
    check_shared_redis()
    result = await scenario_postgres(tmp_path, mode="reset", outage=3.0, per_web=2,
                                     sessions=1, tokens=100, rate=40, at_seq=15)
    print("\n" + json.dumps(result, default=str))
    assert result["consistency"] == []  # no half-state
    assert result["problems"] == []  # every viewer has the log's transcript
    for sid, status in result["statuses"].items():  # ended: completed, or failed with an error
        assert status == "completed" or (
            status == "failed" and any(e[0] == sid[:8] for e in result["logged_errors"])), result
    # a command sent while the database was down was refused, not half-done
    assert result["command_during_outage"]["reply"][0]["code"] == "internal"


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_a_write_whose_commit_reply_is_lost_is_retried_without_logging_twice(
        tmp_path: Path) -> None:
    """The proxy forwards a node-boundary write's COMMIT and resets the worker's connection
    before the reply: the retry finds its idempotency key and logs nothing twice."""
    check_shared_redis()
    result = await scenario_lost_commit(tmp_path, per_web=1, sessions=1, tokens=30, rate=40)
    print("\n" + json.dumps(result, default=str))
    assert result["commit_replies_lost"] == 1 and result["retried"], result
    assert result["logged_twice"] == {}, result
    assert result["problems"] == [] and result["ok"], result


CHAT = workflow(
    "db-blip",
    agent_node("first", max_tokens=60, thinking=False),
    agent_node("second", "first", max_tokens=60, thinking=False),
)


@pytest.mark.django_db(transaction=True)
async def test_a_failed_event_insert_never_leaves_rows_and_log_disagreeing(
        settings: Any, tmp_path: Path, owner: Any, executor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    install_workflows(settings, tmp_path, CHAT)
    settings.SCRIPTED_TOKENS_PER_SECOND = 400
    real = publisher._store_in_thread
    calls = {"token_batches": 0, "failed": 0}

    def blip(batch: list[Any]) -> Any:
        if any(item.event == "token_stream" for item in batch):
            calls["token_batches"] += 1
            if calls["token_batches"] == 3:  # the database is gone for this one insert
                calls["failed"] += 1
                raise OperationalError("consuming input failed: server closed the connection unexpectedly")
        return real(batch)

    monkeypatch.setattr(publisher, "_store_in_thread", blip)
    sid = await create_session(owner, "db-blip")
    assert await command(sid, owner, "start_session") is None
    status = await wait_finished(sid, timeout=20)
    assert calls["failed"] == 1
    log, state, messages, nodes, session_status = await _stored(sid)
    assert [(n, t) for n, t, _ in messages if t] == _logged(state)  # the rows say what was sent
    assert nodes == {n: s["status"] for n, s in state["nodes"].items()}
    assert session_status == state["status"] == status
    # the run went on (completed), or failed cleanly with an error event
    assert status == "completed" or any(e["event"] == "error" for e in log)


@pytest.mark.django_db(transaction=True)
async def test_a_failed_node_boundary_write_pauses_the_run_instead_of_failing_it(
        settings: Any, tmp_path: Path, owner: Any, executor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    install_workflows(settings, tmp_path, CHAT)
    settings.SCRIPTED_TOKENS_PER_SECOND = 400
    real = get_store().node_complete
    calls = {"n": 0}

    def blip(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:  # the database is gone for this one transaction
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    monkeypatch.setattr(get_store(), "node_complete", blip)
    sid = await create_session(owner, "db-blip")
    assert await command(sid, owner, "start_session") is None
    status = await wait_finished(sid, timeout=20)
    log, state, messages, _, _ = await _stored(sid)
    assert status == "completed", [e["data"] for e in log if e["event"] in ("error", "execution:failed")]
    assert calls["n"] >= 2
    assert [(n, t) for n, t, _ in messages] == _logged(state)
    assert all(final for *_, final in messages)


@pytest.mark.django_db(transaction=True)
async def test_an_event_insert_failing_past_the_retries_fails_the_node_with_the_logged_text(
        settings: Any, tmp_path: Path, owner: Any, executor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database stays away longer than the publisher retries: the node must not complete
    with text the log lacks; it fails (error event) with the text that was stored."""
    install_workflows(settings, tmp_path, CHAT)
    settings.SCRIPTED_TOKENS_PER_SECOND = 400
    monkeypatch.setattr(publisher, "STORE_RETRY_SECONDS", 0.3)
    monkeypatch.setattr(publisher, "RETRY_FIRST_DELAY", 0.02)
    monkeypatch.setattr(publisher, "RETRY_MAX_DELAY", 0.05)
    real = publisher._store_in_thread
    outage = {"token_batches": 0, "until": None}
    loop = asyncio.get_running_loop()

    def down(batch: list[Any]) -> Any:
        if outage["until"] is None and any(item.event == "token_stream" for item in batch):
            outage["token_batches"] += 1
            if outage["token_batches"] == 3:  # the database goes away for 0.6 s
                outage["until"] = loop.time() + 0.6
        if outage["until"] is not None and loop.time() < outage["until"]:
            raise OperationalError("server closed the connection unexpectedly")
        return real(batch)

    monkeypatch.setattr(publisher, "_store_in_thread", down)
    sid = await create_session(owner, "db-blip")
    assert await command(sid, owner, "start_session") is None
    status = await wait_finished(sid, timeout=20)
    log, state, messages, nodes, _ = await _stored(sid)
    assert status == "failed"
    assert nodes == {"first": "failed", "second": "skipped"}
    assert [e["data"]["code"] for e in log if e["event"] == "error"] == ["internal"]
    logged = _logged(state)
    assert [(n, t) for n, t, _ in messages if t] == logged and logged
    assert all(final for *_, final in messages)
    assert nodes == {n: s["status"] for n, s in state["nodes"].items()}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("also_failing", [(), ("node_fail",)])
async def test_a_node_boundary_write_failing_past_the_retries_leaves_rows_and_log_agreeing(
        settings: Any, tmp_path: Path, owner: Any, executor: Any, monkeypatch: pytest.MonkeyPatch,
        also_failing: tuple[str, ...]) -> None:
    """node_complete keeps failing: the node fails with the logged text (node_fail), or, if
    that write fails too, the run fails and run_finish closes the message from the log."""
    install_workflows(settings, tmp_path, CHAT)
    settings.SCRIPTED_TOKENS_PER_SECOND = 400
    monkeypatch.setattr(stored, "DB_RETRY_SECONDS", 0.2)
    monkeypatch.setattr(stored, "RETRY_FIRST_DELAY", 0.02)

    def down(**kwargs: Any) -> Any:
        raise OperationalError("server closed the connection unexpectedly")

    for name in ("node_complete", *also_failing):
        monkeypatch.setattr(get_store(), name, down)
    sid = await create_session(owner, "db-blip")
    assert await command(sid, owner, "start_session") is None
    assert await wait_finished(sid, timeout=20) == "failed"
    _, state, messages, _, _ = await _stored(sid)
    assert [(n, t) for n, t, _ in messages] == _logged(state)
    assert [n for n, *_ in messages] == ["first"]
    assert all(final for *_, final in messages)
