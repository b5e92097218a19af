"""The run store's batched writes (one per executor and interval, not one per agent): lease
renewals, partial text checkpoints and live usage. Each serves many runs in one transaction
and skips, without failing the others, a run whose lease moved on."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from realtime.eventlog import make_pending, read_envelopes, store_events
from realtime.vocabulary import EventName
from sessions_app import services
from sessions_app.models import Message
from sessions_app.services import leases
from workflows.store import get_store


def _running(owner: Any, n: int, runner: str = "runner-a") -> list[tuple[str, int, int, str, str]]:
    """n sessions whose runs ``runner`` holds, each with its first agent node streaming:
    (session id, lease generation, message id, node id, agent id)."""
    store = get_store()
    out = []
    for _ in range(n):
        session = services.session_create(owner=owner, workflow_slug="demo")
        sid = str(session.pk)
        services.session_start(session_id=sid, user=owner)
        generation = leases.take_lease(session_id=sid, owner=runner, lease_seconds=30)
        store.run_begin(session_id=sid, fence=generation)
        node = next(n for n in session.workflow_definition["nodes"] if n["type"] == "agent")
        message_id = store.node_begin(session_id=sid, fence=generation, node_id=node["id"],
                                      agent_id=node["agent"], round=1)
        out.append((sid, generation, message_id, node["id"], node["agent"]))
    return out


def _take_over(sid: str) -> None:
    """Runner A's lease of ``sid`` expires and runner B claims the run."""
    leases.renew_lease(session_id=sid, owner="runner-a", generation=1, lease_seconds=0.01)
    time.sleep(0.05)
    assert leases.claim_runs(owner="runner-b", limit=1, lease_seconds=30, only=[sid]) == [(sid, 2)]


@pytest.mark.django_db
def test_claim_runs_takes_many_runs_at_once_each_with_its_new_fence(owner: Any) -> None:
    """One claim of many queued runs (three statements, not three per run): each claimed
    run gets the next generation and its log refuses the previous one; a run someone holds,
    an excluded one and those past the limit are left alone."""
    sids = []
    for _ in range(6):
        session = services.session_create(owner=owner, workflow_slug="demo")
        services.session_start(session_id=str(session.pk), user=owner)
        sids.append(str(session.pk))
    held, excluded = sids[1], sids[2]
    assert leases.take_lease(session_id=held, owner="runner-a", lease_seconds=30) == 1
    leases.take_lease(session_id=sids[3], owner="runner-a", lease_seconds=0.01)  # lapses
    time.sleep(0.05)

    with CaptureQueriesContext(connection) as queries:
        claimed = leases.claim_runs(owner="runner-b", limit=3, lease_seconds=30,
                                    exclude=[excluded])
    # pick, lease, read the generations, set the fences (+ the transaction's own)
    assert len([q for q in queries if not q["sql"].startswith(("BEGIN", "SAVEPOINT", "RELEASE"))]) == 4

    assert claimed == [(sids[0], 1), (sids[3], 2), (sids[4], 1)]  # queue order, by the limit
    assert leases.claim_runs(owner="runner-c", limit=10, lease_seconds=30) == [
        (excluded, 1), (sids[5], 1)]
    for sid, generation in claimed:
        stale = make_pending(session_id=sid, event=EventName.NODE_STATE_CHANGE, node_id="n",
                             data={"node_id": "n", "status": "running"}, fence=generation - 1)
        assert store_events([stale]) == []  # refused: a superseded writer's
        current = make_pending(session_id=sid, event=EventName.NODE_STATE_CHANGE, node_id="n",
                               data={"node_id": "n", "status": "running"}, fence=generation)
        assert len(store_events([current])) == 1
    # the held run kept its holder and fence
    assert get_store().renew_leases(owner="runner-a", lease_seconds=30,
                                    generations={held: 1}) == {held: "created"}
    fresh = make_pending(session_id=held, event=EventName.NODE_STATE_CHANGE, node_id="n",
                         data={"node_id": "n", "status": "running"}, fence=1)
    assert len(store_events([fresh])) == 1


@pytest.mark.django_db
def test_renew_leases_answers_each_run_and_extends_only_those_still_held(owner: Any) -> None:
    runs = _running(owner, 3)
    lost = runs[1][0]
    _take_over(lost)
    store = get_store()
    answer = store.renew_leases(owner="runner-a", lease_seconds=30,
                                generations={sid: gen for sid, gen, *_ in runs})
    assert answer == {runs[0][0]: "running", lost: None, runs[2][0]: "running"}
    # runner B's lease was not touched by A's renewal
    assert leases.claim_runs(owner="runner-c", limit=5, lease_seconds=30) == []


@pytest.mark.django_db
def test_messages_save_partial_writes_open_messages_of_runs_still_held(owner: Any) -> None:
    runs = _running(owner, 3)
    _take_over(runs[2][0])
    saves = [{"session_id": sid, "fence": gen, "message_id": mid, "text": f"so far {i}",
              "thinking": "hmm"} for i, (sid, gen, mid, *_) in enumerate(runs)]
    assert get_store().messages_save_partial(saves=saves) == 2
    texts = dict(Message.objects.filter(pk__in=[r[2] for r in runs]).values_list("pk", "text"))
    assert texts == {runs[0][2]: "so far 0", runs[1][2]: "so far 1", runs[2][2]: ""}


@pytest.mark.django_db
def test_usage_progress_many_logs_one_live_usage_event_per_held_node(owner: Any) -> None:
    runs = _running(owner, 3)
    _take_over(runs[1][0])
    reports = [{"session_id": sid, "fence": gen, "node_id": node, "agent_id": agent,
                "model": "scripted-small", "input_tokens": 100, "output_tokens": 10 * (i + 1),
                "cost_usd": Decimal("0.001")}
               for i, (sid, gen, _, node, agent) in enumerate(runs)]
    assert get_store().usage_progress_many(reports=reports) == 2
    for i, (sid, _, _, node, _) in enumerate(runs):
        live = [e["data"] for e in read_envelopes(sid) if e["event"] == "token_usage"]
        if i == 1:
            assert live == []  # its runner was superseded: nothing logged for it
            continue
        assert len(live) == 1
        assert (live[0]["node_id"], live[0]["final"]) == (node, False)
        assert (live[0]["input_tokens"], live[0]["output_tokens"]) == (100, 10 * (i + 1))
        assert live[0]["session_output_tokens"] == 10 * (i + 1)
        assert live[0]["estimated_cost_usd"] == pytest.approx(0.001)
