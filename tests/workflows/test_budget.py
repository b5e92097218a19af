"""Budgets through the real engine: the warning, the hold at the next chunk with a request
to raise it or stop, the answer (or the timeout's default), and the documented bound:
nothing is charged past a budget by more than the model calls in flight when it was reached."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async

from sessions_app import services
from sessions_app.services.errors import InvalidData
from sessions_app.services.receipts import _decode, _encode
from tests.workflows.helpers import (
    RecordingProvider,
    agent_node,
    command,
    events,
    install_workflows,
    is_event,
    is_state,
    session_row,
    states,
    usage_sums,
    wait_event,
    wait_finished,
    workflow,
)
from tests.workflows.test_takeover import _crash, _start_executor
from workflows.budget import BudgetStart
from workflows.store import RunStart

pytestmark = pytest.mark.django_db(transaction=True)

# One output token of scripted-large costs $10 per million: the most one chunk can add.
ONE_TOKEN = Decimal("0.00001")


def budgeted(slug: str, *nodes: dict[str, Any], **budget: Any) -> dict[str, Any]:
    return {**workflow(slug, *nodes, model="scripted-large"), "budget": budget}


def chain(slug: str, **budget: Any) -> dict[str, Any]:
    # Each node: ~20 input words at $2.50/M + 150 output tokens at $10/M, about $0.0016.
    return budgeted(
        slug,
        agent_node("one", max_tokens=150, thinking=False),
        agent_node("two", "one", max_tokens=150, thinking=False),
        agent_node("three", "two", max_tokens=150, thinking=False),
        usd=0.0025, **budget,
    )


FAN = budgeted(
    "fan-budget",
    agent_node("opening", max_tokens=3, thinking=False),
    agent_node("left", "opening", max_tokens=300, thinking=False),
    agent_node("middle", "opening", max_tokens=300, thinking=False),
    agent_node("right", "opening", max_tokens=300, thinking=False),
    usd=0.004,
)


@pytest.fixture
def flows(settings: Any, tmp_path: Any) -> Any:
    install_workflows(
        settings, tmp_path, chain("chain"), chain("chain-timeout-stop", timeout=1),
        chain("chain-timeout-raise", timeout=1, default_decision="approve"), FAN,
    )
    return settings


@pytest.fixture
def recorder(monkeypatch: Any) -> RecordingProvider:
    provider = RecordingProvider()
    monkeypatch.setattr("workflows.nodes.agent.get_provider", lambda name: provider)
    return provider


@database_sync_to_async
def create(owner: Any, slug: str, budget: Decimal | None = None) -> str:
    return str(services.session_create(owner=owner, workflow_slug=slug, budget_usd=budget).pk)


def is_budget_request(e: dict[str, Any]) -> bool:
    return e["event"] == "human_interaction_required" and "budget_usd" in e["data"]


def budget_states(log: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["state"] for e in log if e["event"] == "budget_status"]


async def test_warning_then_hold_at_the_budget_and_a_raise_lets_the_run_finish(
    flows, executor, owner, recorder
):
    sid = await create(owner, "chain")
    assert await command(sid, owner, "start_session") is None
    asked = await wait_event(sid, is_budget_request)
    assert asked["data"]["node_id"] == "" and asked["data"]["budget_usd"] == 0.0025
    assert asked["data"]["cost_usd"] >= 0.0025
    await wait_event(sid, is_state("two", "paused"))
    log = await events(sid)
    assert budget_states(log) == ["ok", "warning", "reached"]
    assert [r.node_id for r in recorder.requests] == ["one", "two"]  # three never asked
    assert (await session_row(sid)).status == "waiting_review"
    # a raise must be a raise; a budget request is answered by the session, not by a node
    assert await command(sid, owner, "submit_review", node_id="", decision="approve",
                         budget_usd=0.001) == "invalid_data"
    assert await command(sid, owner, "submit_review", node_id="", decision="approve") == "invalid_data"
    assert await command(sid, owner, "submit_review", node_id="", decision="approve",
                         budget_usd=1) is None
    assert await wait_finished(sid) == "completed"
    log = await events(sid)
    assert budget_states(log) == ["ok", "warning", "reached", "ok"]
    assert [e["data"]["budget_usd"] for e in log if e["event"] == "budget_status"][-1] == 1
    assert states(log)["two"] == ["running", "paused", "running", "completed"]
    session = await session_row(sid)
    assert session.budget_usd == Decimal(1) and session.budget_state == "ok"
    assert session.cost_usd > Decimal("0.0025")


async def test_stopping_at_the_budget_charges_nothing_past_the_call_in_flight(
    flows, executor, owner, recorder
):
    sid = await create(owner, "chain")
    assert await command(sid, owner, "start_session") is None
    asked = await wait_event(sid, is_budget_request)
    reached = Decimal(str(asked["data"]["cost_usd"]))
    # checked at every chunk: the cost when it held is past the budget by at most one token
    assert Decimal("0.0025") <= reached <= Decimal("0.0025") + ONE_TOKEN
    assert await command(sid, owner, "submit_review", node_id="", decision="reject") is None
    assert await wait_finished(sid) == "stopped"
    log = await events(sid)
    [stopped] = [e for e in log if e["event"] == "execution:stopped"]
    assert stopped["data"]["by"] == "alice"
    assert [r.node_id for r in recorder.requests] == ["one", "two"]
    assert "three" not in states(log) or states(log)["three"] == ["stopped"]
    assert not any(e["node_id"] == "three" for e in log if e["event"] == "token_stream")
    # recorded: node one's row; node two (the call in flight) was stopped where it held
    assert (await usage_sums(sid))["c"] <= Decimal("0.0025")
    assert (await session_row(sid)).budget_state == "reached"


async def test_parallel_streams_all_hold_within_one_chunk_each(flows, executor, owner, recorder):
    sid = await create(owner, "fan-budget")
    assert await command(sid, owner, "start_session") is None
    asked = await wait_event(sid, is_budget_request)
    for node in ("left", "middle", "right"):
        # Each holds at its next chunk, or ends if that chunk was its last.
        paused, done = is_state(node, "paused"), is_state(node, "completed")
        await wait_event(sid, lambda e, p=paused, d=done: p(e) or d(e))
    overshoot = Decimal(str(asked["data"]["cost_usd"])) - Decimal("0.004")
    assert Decimal(0) <= overshoot <= 3 * ONE_TOKEN  # one chunk per running node at most
    assert 2 <= len(recorder.requests) <= 4  # no call starts after the request; one may not have begun
    assert await command(sid, owner, "submit_review", node_id="", decision="reject") is None
    assert await wait_finished(sid) == "stopped"


async def test_the_default_at_the_timeout_stops_the_run(flows, executor, owner):
    sid = await create(owner, "chain-timeout-stop")
    assert await command(sid, owner, "start_session") is None
    assert await wait_finished(sid, timeout=20) == "stopped"
    log = await events(sid)
    [decided] = [e["data"] for e in log if e["event"] == "review_submitted"]
    assert (decided["node_id"], decided["decision"], decided["timed_out"], decided["by"]) == (
        "", "reject", True, None)
    assert [e["data"]["by"] for e in log if e["event"] == "execution:stopped"] == [None]


async def test_the_default_at_the_timeout_can_raise_the_budget_by_the_workflows_amount(
    flows, executor, owner
):
    sid = await create(owner, "chain-timeout-raise")
    assert await command(sid, owner, "start_session") is None
    assert await wait_finished(sid, timeout=20) == "completed"
    log = await events(sid)
    raises = [e["data"]["budget_usd"] for e in log
              if e["event"] == "budget_status" and e["data"]["state"] == "ok"]
    assert raises[0] == 0.0025 and raises[1] == 0.005  # the start, then one step of budget.usd
    assert all(e["data"]["timed_out"] for e in log if e["event"] == "review_submitted")


async def test_a_session_budget_overrides_the_workflows_and_must_be_positive(flows, owner):
    create_sync = database_sync_to_async(services.session_create)
    session = await create_sync(owner=owner, workflow_slug="chain", budget_usd=Decimal("2"))
    assert session.budget_usd == Decimal("2")
    session = await create_sync(owner=owner, workflow_slug="chain")
    assert session.budget_usd == Decimal("0.0025")
    for bad in (Decimal(0), Decimal("-1"), Decimal("NaN")):
        with pytest.raises(InvalidData, match="more than"):
            await create_sync(owner=owner, workflow_slug="chain", budget_usd=bad)


async def test_a_request_to_raise_outside_a_budget_request_is_refused(flows, executor, owner):
    sid = await create(owner, "chain", budget=Decimal(100))
    assert await command(sid, owner, "start_session") is None
    assert await command(sid, owner, "submit_review", node_id="", decision="approve",
                         budget_usd=200) == "invalid_state"
    assert await wait_finished(sid) == "completed"
    log = await events(sid)
    assert budget_states(log) == ["ok"]
    assert not any(is_event("human_interaction_required")(e) for e in log)


async def test_a_runner_taking_over_waits_for_the_same_budget_request(flows, executor, owner, monkeypatch):
    flows.WORKER_LEASE_SECONDS = 0.6
    sid = await create(owner, "chain")
    assert await command(sid, owner, "start_session") is None
    first = await wait_event(sid, is_budget_request)
    await _crash(executor, monkeypatch)
    other = await _start_executor("executor-b")
    try:
        await wait_event(sid, lambda e: e["event"] == "node_state_change"
                         and e["data"] == {"node_id": "two", "status": "pending", "agent_id": "two"},
                         after=first["seq"], timeout=10)
        assert (await session_row(sid)).lease_owner == "executor-b"
        assert await command(sid, owner, "submit_review", node_id="", decision="approve",
                             budget_usd=1) is None
        assert await wait_finished(sid) == "completed"
    finally:
        await other.close()
    log = await events(sid)
    assert sum(1 for e in log if is_budget_request(e)) == 1  # asked once, answered once
    assert states(log)["three"] == ["running", "completed"]


def test_a_run_start_with_a_budget_survives_a_retried_write():
    start = RunStart(status="running", fresh=False, completed={}, node_status={}, rounds={},
                     budget=BudgetStart(budget_usd=Decimal("0.5"), spent_usd=Decimal("0.1"),
                                        state="warning", pending_round=2))
    assert _decode(json.loads(json.dumps(_encode(start)))) == start


@pytest.mark.django_db
def test_system_checks_list_unpriced_models_and_the_deprecated_setting(flows, monkeypatch):
    from sessions_app.checks import check_prices

    flows.OPENAI_MODEL = "mystery-model-7b"
    monkeypatch.setenv("EXTRA_MODEL_PRICES", "m:1:x")
    found = {m.id: m.msg for m in check_prices(None)}
    assert "mystery-model-7b" in found["sessions_app.W001"]
    assert "deprecated" in found["sessions_app.W002"]
    assert "not a number" in found["sessions_app.E002"]
    monkeypatch.delenv("EXTRA_MODEL_PRICES")
    flows.OPENAI_MODEL = ""
    assert check_prices(None) == []  # every shipped and test workflow is priced
