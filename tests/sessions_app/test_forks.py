"""Forking a session from a node: what is inherited, what runs again, what is counted, and
what is refused (docs/replay.md)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db.models import Sum

from realtime.eventlog import read_envelopes
from realtime.state import fold
from sessions_app.models import Message, NodeState, Session, SessionShare, TokenUsage
from sessions_app.services import InvalidData
from sessions_app.services.errors import Forbidden, NotFound
from sessions_app.services.forks import MAX_PROMPT_CHARS, ForkChanges, session_fork
from tests.conftest import make_user
from tests.workflows.helpers import (
    RecordingProvider,
    agent_node,
    command,
    context_text,
    create_session,
    events,
    install_workflows,
    is_event,
    review_node,
    states,
    wait_event,
    wait_finished,
    workflow,
)

pytestmark = pytest.mark.django_db(transaction=True)

PIPE = workflow(
    "pipe",
    agent_node("brief", max_tokens=6, thinking=False),
    agent_node("left", "brief", max_tokens=8, thinking=False),
    agent_node("right", "brief", max_tokens=8, thinking=False),
    agent_node("merge", "left", "right", max_tokens=8, thinking=False),
    review_node("check", "merge"),
    agent_node("summary", "check", max_tokens=6, thinking=False),
)


@pytest.fixture
def flows(settings: Any, tmp_path: Any) -> Any:
    install_workflows(settings, tmp_path, PIPE)
    return settings


async def run_to_end(session_id: str, user: Any, *, start: bool = True) -> None:
    if start:
        assert await command(session_id, user, "start_session") is None
    asked = await wait_event(session_id, is_event("human_interaction_required"), timeout=20)
    assert await command(session_id, user, "submit_review", node_id=asked["data"]["node_id"],
                         decision="approve", comment="good") is None
    assert await wait_finished(session_id) == "completed"


fork = database_sync_to_async(session_fork)


async def test_fork_from_merge_reruns_merge_review_summary_only(flows, executor, owner, monkeypatch):
    parent = await create_session(owner, "pipe")
    await run_to_end(parent, owner)
    recorder = RecordingProvider()
    monkeypatch.setattr("workflows.nodes.agent.get_provider", lambda name: recorder, raising=False)
    child = await fork(session_id=parent, user=owner, node_id="merge",
                       changes=ForkChanges(instruction="Name one risk first."))
    child_id = str(child.pk)
    await run_to_end(child_id, owner, start=False)  # the fork was queued when it was made

    log = await events(child_id)
    seen = states(log)
    for node in ("brief", "left", "right"):
        assert set(seen[node]) == {"completed"}, node  # never ran: only the inherited marks
    assert seen["merge"][-2:] == ["running", "completed"]
    assert "running" in seen["summary"]
    ran = {r.node_id for r in recorder.requests}
    assert ran <= {"merge", "summary"} and "merge" in ran
    merge_request = recorder.for_node("merge")[0]
    assert "Additional instruction: Name one risk first." in merge_request.system
    # merge read the inherited answers of left and right
    rows = await database_sync_to_async(
        lambda: {n.node_id: n for n in NodeState.objects.filter(session_id=parent)}
    )()
    assert rows["left"].output in context_text(merge_request)

    def figures() -> tuple[Any, ...]:
        session = Session.objects.get(pk=child_id)
        own = TokenUsage.objects.filter(session_id=child_id, inherited=False).aggregate(
            c=Sum("cost_usd"), i=Sum("input_tokens"))
        inherited = TokenUsage.objects.filter(session_id=child_id, inherited=True)
        return session, own, sorted(inherited.values_list("node_id", flat=True))

    session, own, inherited_nodes = await database_sync_to_async(figures)()
    assert inherited_nodes == ["brief", "left", "right"]
    # the fork's own cost is only what it ran: inherited usage is not counted twice
    assert session.cost_usd == own["c"] and session.input_tokens == own["i"]
    done = [e for e in log if e["event"] == "execution:completed"][-1]["data"]
    assert Decimal(str(done["cost_usd"])) == own["c"]
    state = fold(log)
    assert state["usage"]["cost_usd"] == float(own["c"])
    assert state["usage"]["nodes"]["brief"]["inherited"] is True
    assert state["nodes"]["brief"]["inherited"] is True
    assert "inherited" not in state["nodes"]["merge"]
    inherited_text = {m["node_id"]: m["text"] for m in state["messages"] if m["node_id"] in ("brief", "left")}
    assert inherited_text["brief"] == rows["brief"].output
    assert session.parent_id is not None and session.fork_node_id == "merge"
    assert session.fork_changes == {"instruction": "Name one risk first."}


async def test_fork_log_shows_inherited_part_before_start(flows, executor, owner):
    parent = await create_session(owner, "pipe")
    await run_to_end(parent, owner)
    child = await fork(session_id=parent, user=owner, node_id="summary", start=False)
    log = await events(str(child.pk))
    state = fold(log)
    assert state["status"] == "created"
    assert {n for n, v in state["nodes"].items() if v["status"] == "completed"} == {
        "brief", "left", "right", "merge", "check"}
    assert [r["decision"] for r in state["reviews"]] == ["approve"]
    assert state["usage"]["cost_usd"] == 0 and state["cost_series"] == []
    parent_messages = await database_sync_to_async(
        lambda: sorted(Message.objects.filter(session_id=parent).exclude(node_id="summary")
                       .values_list("node_id", "text")))()
    assert sorted((m["node_id"], m["text"]) for m in state["messages"]) == parent_messages


async def test_fork_of_running_session_forks_what_is_recorded(flows, executor, owner):
    parent = await create_session(owner, "pipe")
    assert await command(parent, owner, "start_session") is None
    await wait_event(parent, is_event("human_interaction_required"), timeout=20)
    # merge is done, the review waits: a fork from summary takes everything recorded so far
    child = await fork(session_id=parent, user=owner, node_id="summary", start=False)
    rows = await database_sync_to_async(
        lambda: dict(NodeState.objects.filter(session=child).values_list("node_id", "status")))()
    assert rows["merge"] == "completed" and rows["check"] == "pending"
    assert await command(parent, owner, "stop_session") is None


@pytest.mark.parametrize("node_id", ["nope", "", "x" * 500, 7])
def test_fork_of_unknown_node_is_refused_and_stores_nothing(flows, owner, node_id):
    from sessions_app import services

    parent = services.session_create(owner=owner, workflow_slug="pipe")
    before = Session.objects.count()
    with pytest.raises(NotFound):
        session_fork(session_id=parent.pk, user=owner, node_id=node_id)
    assert Session.objects.count() == before


def test_fork_by_a_watcher_is_refused(flows, owner):
    from sessions_app import services

    parent = services.session_create(owner=owner, workflow_slug="pipe")
    watcher = make_user("walt")
    SessionShare.objects.create(session=parent, user=watcher, can_control=False)
    with pytest.raises(Forbidden):
        session_fork(session_id=parent.pk, user=watcher, node_id="merge")
    stranger = make_user("stan")
    with pytest.raises(Forbidden):
        session_fork(session_id=parent.pk, user=stranger, node_id="merge")
    assert Session.objects.count() == 1


def test_fork_with_bad_changes_is_refused(flows, owner):
    from sessions_app import services

    parent = services.session_create(owner=owner, workflow_slug="pipe")
    bad = [
        ForkChanges(prompt="x" * (MAX_PROMPT_CHARS + 1)),
        ForkChanges(instruction="y" * 5000),
        # (another model without a known price is allowed: it runs as "price unknown", #16)
        ForkChanges(provider="carrier-pigeon"),
    ]
    for changes in bad:
        with pytest.raises(InvalidData):
            session_fork(session_id=parent.pk, user=owner, node_id="merge", changes=changes)
    with pytest.raises(InvalidData):  # a review node has no prompt
        session_fork(session_id=parent.pk, user=owner, node_id="check",
                     changes=ForkChanges(instruction="be nice"))
    assert Session.objects.count() == 1


def test_fork_changes_go_into_the_definition_copy(flows, owner):
    from sessions_app import services

    parent = services.session_create(owner=owner, workflow_slug="pipe")
    child = session_fork(session_id=parent.pk, user=owner, node_id="merge", start=False,
                         changes=ForkChanges(prompt="Merge briefly.", model="scripted-large"))
    agent = child.workflow_definition["agents"]["merge"]
    assert agent["prompt"] == "Merge briefly." and agent["model"] == "scripted-large"
    assert parent.workflow_definition["agents"]["merge"]["prompt"] != "Merge briefly."
    assert list(parent.forks.all()) == [child]
    assert read_envelopes(str(child.pk)) == []  # nothing recorded in the parent: nothing inherited
