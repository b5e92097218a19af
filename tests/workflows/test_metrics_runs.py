"""What runs report to Prometheus: events by name, runs by status, tokens, cost, node and run
durations, take-overs, equal to what the event log and the usage rows say.

Values are this process's registry (no PROMETHEUS_MULTIPROC_DIR in tests), compared before
and after each run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from realtime import metrics
from realtime.protocol import LOGGED_EVENTS
from sessions_app.models import TokenUsage
from tests.conftest import make_user
from tests.workflows.helpers import (
    agent_node,
    command,
    create_session,
    events,
    install_workflows,
    is_event,
    review_node,
    session_row,
    wait_event,
    wait_finished,
    workflow,
)
from workflows.store import get_store
from workflows.worker import Executor

pytestmark = pytest.mark.django_db(transaction=True)

FAILING = workflow(
    "failing",
    agent_node("root", max_tokens=4, thinking=False),
    agent_node("broken", "root", fail=True),
    agent_node("fine", "root", max_tokens=6, thinking=False),
)
REVIEWED = workflow(
    "reviewed",
    agent_node("draft", max_tokens=8, thinking=False),
    review_node("check", "draft", max_rounds=2),
    agent_node("final", "check", max_tokens=8, thinking=False),
)


@pytest.fixture
def flows(settings: Any, tmp_path: Any) -> Any:
    install_workflows(settings, tmp_path, FAILING, REVIEWED)
    return settings


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def reading() -> dict[str, float]:
    """The samples these tests compare, by a short key."""
    out = {f"published {e}": value("agentroom_events_published_total", event=str(e))
           for e in LOGGED_EVENTS}
    for status in ("completed", "failed", "stopped"):
        out[f"runs {status}"] = value("agentroom_runs_finished_total", status=status)
        out[f"run seconds count {status}"] = value("agentroom_run_duration_seconds_count", status=status)
        out[f"run seconds sum {status}"] = value("agentroom_run_duration_seconds_sum", status=status)
    for status in ("completed", "failed"):
        out[f"node seconds count {status}"] = value("agentroom_node_duration_seconds_count", status=status)
    out["takeovers"] = value("agentroom_lease_takeovers_total")
    return out


def tokens_and_cost(model: str) -> tuple[float, float, float]:
    return (value("agentroom_tokens_total", type="input", model=model),
            value("agentroom_tokens_total", type="output", model=model),
            value("agentroom_cost_usd_total", model=model))


def spend() -> dict[tuple[str, str], float]:
    """Every tokens and cost sample: (type or "usd", model) -> value."""
    out: dict[tuple[str, str], float] = {}
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == "agentroom_tokens_total":
                out[(sample.labels["type"], sample.labels["model"])] = sample.value
            elif sample.name == "agentroom_cost_usd_total":
                out[("usd", sample.labels["model"])] = sample.value
    return out


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


@database_sync_to_async
def usage_by_model(session_id: str) -> dict[str, tuple[int, int, float]]:
    out: dict[str, tuple[int, int, float]] = {}
    for row in TokenUsage.objects.filter(session_id=session_id):
        i, o, c = out.get(row.model, (0, 0, 0.0))
        out[row.model] = (i + row.input_tokens, o + row.output_tokens, c + float(row.cost_usd))
    return out


@database_sync_to_async
def reasoning_by_model(session_id: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in TokenUsage.objects.filter(session_id=session_id):
        out[row.model] = out.get(row.model, 0) + row.reasoning_tokens
    return out


async def test_the_demo_run_is_counted_exactly(flows, executor, owner):
    before, spent = reading(), spend()
    sid = await create_session(owner, "demo")
    assert await command(sid, owner, "start_session") is None
    asked = await wait_event(sid, is_event("human_interaction_required"), timeout=20)
    assert await command(sid, owner, "submit_review", node_id=asked["data"]["node_id"],
                         decision="approve") is None
    assert await wait_finished(sid) == "completed"
    log = await events(sid)
    usage = await usage_by_model(sid)
    session = await session_row(sid)

    changed = delta(before, reading())
    logged = Counter(e["event"] for e in log)
    # every logged event once, by name (token_stream included), and nothing else
    assert {k: v for k, v in changed.items() if k.startswith("published ")} == {
        f"published {name}": count for name, count in logged.items()
    }
    assert logged["token_stream"] >= 7
    assert changed["runs completed"] == 1 and changed["run seconds count completed"] == 1
    assert changed["run seconds sum completed"] == pytest.approx(session.duration_seconds, abs=1e-3)
    assert changed["node seconds count completed"] == 7  # the agent nodes; the review is not one
    assert "takeovers" not in changed and "runs failed" not in changed
    assert sum(i for i, _, _ in usage.values()) > 0
    now = spend()
    grew = {key: now[key] - spent.get(key, 0.0) for key in now if now[key] != spent.get(key, 0.0)}
    expected = {}
    reasoning = await reasoning_by_model(sid)  # the scripted models' thinking
    for model, (i, o, c) in usage.items():
        expected |= {("input", model): i, ("output", model): o, ("usd", model): pytest.approx(c),
                     ("reasoning", model): reasoning[model]}
    assert grew == expected


async def test_tokens_and_cost_grow_by_exactly_the_usage_rows(flows, executor, owner):
    sid = await create_session(owner, "reviewed")
    model = "scripted-small"
    before = tokens_and_cost(model)
    assert await command(sid, owner, "start_session") is None
    await wait_event(sid, is_event("human_interaction_required"))
    assert await command(sid, owner, "submit_review", node_id="check", decision="approve") is None
    assert await wait_finished(sid) == "completed"
    [(used_model, (i, o, c))] = (await usage_by_model(sid)).items()
    assert used_model == model and i > 0 and o > 0 and c > 0
    after = tokens_and_cost(model)
    assert after[0] - before[0] == i
    assert after[1] - before[1] == o
    assert after[2] - before[2] == pytest.approx(c, rel=1e-9)


async def test_a_failed_run_and_its_failed_node(flows, executor, owner):
    before = reading()
    sid = await create_session(owner, "failing")
    assert await command(sid, owner, "start_session") is None
    assert await wait_finished(sid) == "failed"
    changed = delta(before, reading())
    assert changed["runs failed"] == 1 and changed["run seconds count failed"] == 1
    assert changed["node seconds count failed"] == 1  # broken
    assert changed["node seconds count completed"] == 2  # root, fine
    assert changed["published error"] == 1 and changed["published execution:failed"] == 1
    assert "runs completed" not in changed


async def test_a_stopped_run_is_counted_once(flows, executor, owner, settings):
    settings.SCRIPTED_TOKENS_PER_SECOND = 40
    before = reading()
    sid = await create_session(owner, "demo")
    assert await command(sid, owner, "start_session") is None
    await wait_event(sid, is_event("token_stream"))
    assert await command(sid, owner, "stop_session") is None
    assert await wait_finished(sid) == "stopped"
    changed = delta(before, reading())
    assert changed["runs stopped"] == 1 and changed["run seconds count stopped"] == 1
    assert "runs failed" not in changed and "runs completed" not in changed


async def test_a_take_over_is_counted_once(flows, executor, owner, monkeypatch):
    flows.WORKER_LEASE_SECONDS = 0.6
    before = reading()
    sid = await create_session(owner, "reviewed")
    assert await command(sid, owner, "start_session") is None
    first = await wait_event(sid, is_event("human_interaction_required"))
    monkeypatch.setattr(get_store(), "release_lease", lambda **kwargs: None)
    await executor.close()  # like a killed process: the lease is left to expire
    monkeypatch.undo()
    assert value("agentroom_lease_takeovers_total") == before["takeovers"]
    other = Executor(owner="executor-b")
    await other.start()
    try:
        await wait_event(sid, is_event("human_interaction_required"), after=first["seq"], timeout=5)
        assert await command(sid, owner, "submit_review", node_id="check", decision="approve") is None
        assert await wait_finished(sid) == "completed"
    finally:
        await other.close()
    changed = delta(before, reading())
    assert changed["takeovers"] == 1
    assert changed["runs completed"] == 1


async def test_the_endpoint_shows_the_run(flows, executor, owner):
    sid = await create_session(owner, "failing")
    assert await command(sid, owner, "start_session") is None
    assert await wait_finished(sid) == "failed"

    def scrape() -> str:
        client = Client()
        client.force_login(make_user("ops", is_staff=True))
        return client.get("/metrics").content.decode()

    text = await database_sync_to_async(scrape)()
    failed = value("agentroom_runs_finished_total", status="failed")
    assert failed >= 1
    assert f'agentroom_runs_finished_total{{status="failed"}} {failed}' in text
    assert 'agentroom_tokens_total{model="scripted-small",type="input"}' in text
