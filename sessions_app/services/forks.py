"""Forking a session from one of its nodes: a new session of the same workflow that keeps what
the parent recorded upstream and runs the chosen node and everything after it again.

Why it works without an engine change: a runner continues a run from the node rows
(``runs.run_begin`` hands it every node's status and output; completed nodes are never run
again). A fork is therefore created with its inherited nodes already ``completed``, their
output, messages, usage rows and review decisions copied (each marked ``inherited``), and the
other nodes ``pending``; starting it runs exactly the chosen node and what depends on it.

Why the fork's log gets events at creation: the room is a fold of the log. The fork logs,
in the parent's order, what shows the inherited part (the messages as ``token_stream``, each
node ``completed`` with ``inherited: true``, its usage as ``token_usage`` with ``inherited:
true`` and the fork's own totals, review decisions, participants' messages), so its room,
its replay and a late joiner's snapshot all show them. Inherited usage was spent by the
parent: it is listed, never added to the fork's own totals (``usage.session_totals``).

Choices (docs/replay.md): a running session may be forked; the fork takes what is recorded
when it is made (a node of the parent still running is simply run again in the fork). The
fork belongs to whoever forks (they must be allowed to control the parent); the parent's
members are not copied.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Sum

from realtime.publisher import publish_sync
from realtime.vocabulary import Access, EventName, MessageKind, NodeStatus, NodeType
from sessions_app.access import session_access
from sessions_app.models import (
    HumanReview,
    Message,
    NodeState,
    Session,
    TokenUsage,
)
from sessions_app.services.errors import Forbidden, InvalidData, NotFound
from sessions_app.services.nodes import recount_nodes
from sessions_app.services.sessions import locked_session, session_start
from workflows.definitions import DefinitionError, WorkflowDefinition
from workflows.definitions.graph import downstream
from workflows.vocabulary import ProviderName, ReviewStatus

MAX_PROMPT_CHARS = 8000
MAX_INSTRUCTION_CHARS = 4000
MAX_NODE_ID_CHARS = 64


@dataclass(frozen=True)
class ForkChanges:
    """What the fork changes for its node (all optional)."""

    instruction: str = ""  # appended to the agent's prompt
    prompt: str = ""  # replaces the agent's prompt
    model: str = ""
    provider: str = ""

    def cleaned(self) -> ForkChanges:
        changes = ForkChanges(
            instruction=(self.instruction or "").strip(), prompt=(self.prompt or "").strip(),
            model=(self.model or "").strip(), provider=(self.provider or "").strip(),
        )
        if len(changes.prompt) > MAX_PROMPT_CHARS:
            raise InvalidData(f"the edited prompt is longer than {MAX_PROMPT_CHARS} characters")
        if len(changes.instruction) > MAX_INSTRUCTION_CHARS:
            raise InvalidData(f"the instruction is longer than {MAX_INSTRUCTION_CHARS} characters")
        if changes.provider and changes.provider not in set(ProviderName):
            raise InvalidData(f"unknown provider {changes.provider[:40]!r}")
        if len(changes.model) > 100:
            raise InvalidData("the model name is too long")
        return changes

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


def _graph(definition: dict[str, Any]) -> dict[str, list[str]]:
    return {node["id"]: list(node.get("depends_on", [])) for node in definition.get("nodes", [])}


def _changed_definition(
    definition: dict[str, Any], node_id: str, changes: ForkChanges, source: str
) -> dict[str, Any]:
    """The parent's definition copy with the node's changes applied, validated like a file.

    The agent is edited in place when only this node uses it (its id, and so its colour and
    name in the room, stay the same); otherwise the node gets its own copy of the agent."""
    result = copy.deepcopy(definition)
    if not changes.as_dict():
        return result
    node = next(n for n in result["nodes"] if n["id"] == node_id)
    if node.get("type", NodeType.AGENT) != NodeType.AGENT or not isinstance(node.get("agent"), str):
        raise InvalidData("only an agent node's prompt, model or provider can be changed")
    agent_id = node["agent"]
    agent = copy.deepcopy(result["agents"][agent_id])
    if changes.prompt:
        agent["prompt"] = changes.prompt
    if changes.instruction:
        agent["prompt"] = f"{agent['prompt']}\n\nAdditional instruction: {changes.instruction}"
    if changes.model:
        agent["model"] = changes.model
    if changes.provider:
        agent["provider"] = changes.provider
    shared = sum(1 for n in result["nodes"] if n.get("agent") == agent_id) > 1
    if shared:
        base = f"{agent_id}_{node_id}"[:36]
        new_id, n = base, 1
        while new_id in result["agents"]:
            n += 1
            new_id = f"{base}_{n}"
        result["agents"][new_id] = agent
        node["agent"] = new_id
    else:
        result["agents"][agent_id] = agent
    try:
        WorkflowDefinition.from_dict(result, source=source)
    except DefinitionError as exc:
        raise InvalidData(str(exc)) from None
    return result


@transaction.atomic
def session_fork(
    *, session_id: Any, user: AbstractBaseUser, node_id: object, changes: ForkChanges | None = None,
    title: str = "", start: bool = True,
) -> Session:
    """A new session forked from ``node_id`` of the session; queued at once when ``start``."""
    parent = locked_session(session_id)
    if session_access(user=user, session=parent) != Access.CONTROL:
        raise Forbidden("you may watch this session but not fork it")
    definition = parent.workflow_definition
    graph = _graph(definition)
    if not isinstance(node_id, str) or len(node_id) > MAX_NODE_ID_CHARS or node_id not in graph:
        raise NotFound(f"no node {str(node_id)[:MAX_NODE_ID_CHARS]!r} in this workflow")
    changes = (changes or ForkChanges()).cleaned()
    fork_definition = _changed_definition(definition, node_id, changes, f"fork of {parent.pk}")
    rerun = downstream(graph, node_id) | {node_id}
    recorded = {n.node_id: n for n in parent.node_states.all()}
    inherited = [
        nid for nid in graph
        if nid not in rerun and nid in recorded and recorded[nid].status == NodeStatus.COMPLETED
    ]
    node_titles = {n["id"]: n.get("title") or n["id"] for n in definition.get("nodes", [])}
    fork = Session.objects.create(
        owner=user,
        title=(title or "").strip()[:200] or f"{parent.title} · fork at {node_titles[node_id]}"[:200],
        workflow_slug=parent.workflow_slug,
        workflow_definition=fork_definition,
        nodes_total=len(graph),
        parent=parent,
        fork_node_id=node_id,
        fork_changes=changes.as_dict(),
    )
    agents = {n["id"]: n.get("agent") or "" for n in fork_definition["nodes"]}
    types = {n["id"]: n.get("type", NodeType.AGENT) for n in fork_definition["nodes"]}
    NodeState.objects.bulk_create([
        _node_row(fork, nid, types[nid], agents[nid], recorded.get(nid) if nid in inherited else None)
        for nid in graph
    ])
    _copy_and_log(parent, fork, inherited, node_id)
    recount_nodes(fork)
    fork.save(update_fields=["nodes_completed", "nodes_failed", "updated_at"])
    if start:
        session_start(session_id=fork.pk, user=user)
    return fork


def _node_row(fork: Session, node_id: str, node_type: str, agent_id: str,
              parent_row: NodeState | None) -> NodeState:
    if parent_row is None:
        return NodeState(session=fork, node_id=node_id, node_type=node_type, agent_id=agent_id)
    return NodeState(
        session=fork, node_id=node_id, node_type=node_type, agent_id=parent_row.agent_id,
        status=NodeStatus.COMPLETED, started_at=parent_row.started_at,
        finished_at=parent_row.finished_at, rounds=parent_row.rounds, output=parent_row.output,
        inherited=True,
    )


def _copy_and_log(parent: Session, fork: Session, inherited: list[str], fork_node: str) -> None:
    """Copy the inherited rows and log the events that show them, in the parent's order."""
    steps: list[tuple[datetime, int, Any]] = []
    order = 0

    def at(moment: datetime | None, step: Any) -> None:
        nonlocal order
        order += 1
        steps.append((moment or fork.created_at, order, step))

    nodes = {n.node_id: n for n in parent.node_states.filter(node_id__in=inherited)}
    answers = parent.messages.filter(kind=MessageKind.AGENT, node_id__in=inherited)
    for message in answers.order_by("created_at", "id"):
        at(message.created_at, lambda m=message: _inherit_message(fork, m, nodes[m.node_id]))
    # Participants' messages said before the fork's node first started in the parent: the
    # nodes that run again read them, as they did there.
    began = nodes.get(fork_node) or parent.node_states.filter(node_id=fork_node).first()
    said = parent.messages.filter(kind=MessageKind.USER)
    if began is not None and began.started_at is not None:
        said = said.filter(created_at__lt=began.started_at)
    for message in said.order_by("created_at", "id"):
        at(message.created_at, lambda m=message: _inherit_user_message(fork, m))
    for review in parent.reviews.filter(node_id__in=inherited, call_id="").exclude(
        status=ReviewStatus.PENDING
    ).order_by("created_at", "id"):
        at(review.decided_at, lambda r=review: _inherit_review(fork, r))
    for node in nodes.values():
        at(node.finished_at, lambda n=node: _inherit_node(parent, fork, n))
    for _moment, _order, step in sorted(steps, key=lambda s: (s[0], s[1])):
        step()


def _inherit_message(fork: Session, message: Message, node: NodeState) -> None:
    copied = Message.objects.create(
        session=fork, kind=message.kind, node_id=message.node_id, agent_id=message.agent_id,
        round=message.round, text=message.text, thinking=message.thinking, is_final=True,
        inherited=True,
    )
    for chunk, thinking in ((copied.thinking, True), (copied.text, False)):
        if chunk:
            publish_sync(
                session_id=fork.pk, event=EventName.TOKEN_STREAM, node_id=copied.node_id,
                data={"chunk": chunk, "agent_id": copied.agent_id, "node_id": copied.node_id,
                      "is_thinking": thinking},
            )
    _node_completed_event(fork, node)  # ends this message, as the node's end did


def _inherit_user_message(fork: Session, message: Message) -> None:
    copied = Message.objects.create(
        session=fork, kind=MessageKind.USER, user=message.user, text=message.text,
        is_final=True, inherited=True,
    )
    publish_sync(
        session_id=fork.pk, event=EventName.USER_MESSAGE,
        data={"text": copied.text, "user": message.user.get_username() if message.user else "user",
              "message_id": str(copied.pk)},
    )


def _inherit_review(fork: Session, review: HumanReview) -> None:
    review.pk = None  # saved again as a new row of the fork (this instance is ours)
    review._state.adding = True
    review.session = fork
    review.save()
    publish_sync(
        session_id=fork.pk, event=EventName.REVIEW_SUBMITTED, node_id=review.node_id,
        data={"node_id": review.node_id, "decision": review.decision, "comment": review.comment,
              "by": review.decided_by.get_username() if review.decided_by else None,
              "timed_out": review.status == ReviewStatus.TIMED_OUT},
    )


def _inherit_node(parent: Session, fork: Session, node: NodeState) -> None:
    """The node's usage rows copied (marked inherited), its usage and its end logged."""
    rows = list(TokenUsage.objects.filter(session=parent, node_id=node.node_id).order_by("id"))
    for row in rows:
        row.pk = None
        row.session = fork
        row.inherited = True
    TokenUsage.objects.bulk_create(rows)
    if rows:
        sums = TokenUsage.objects.filter(session=fork, node_id=node.node_id).aggregate(
            i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd"),
        )
        publish_sync(
            session_id=fork.pk, event=EventName.TOKEN_USAGE, node_id=node.node_id,
            data={
                "node_id": node.node_id, "agent_id": rows[-1].agent_id, "model": rows[-1].model,
                "input_tokens": sums["i"] or 0, "output_tokens": sums["o"] or 0,
                "estimated_cost_usd": float(sums["c"] or 0), "final": True,
                # The fork's own figures: nothing spent yet.
                "session_input_tokens": 0, "session_output_tokens": 0, "session_cost_usd": 0.0,
                "inherited": True,
            },
        )
    if not fork.messages.filter(node_id=node.node_id).exists():  # a message's end ended it already
        _node_completed_event(fork, node)


def _node_completed_event(fork: Session, node: NodeState) -> None:
    publish_sync(
        session_id=fork.pk, event=EventName.NODE_STATE_CHANGE, node_id=node.node_id,
        data={"node_id": node.node_id, "status": NodeStatus.COMPLETED,
              "agent_id": node.agent_id or None, "inherited": True},
    )
