"""Helpers for the engine tests: small workflow files, sessions, commands and the event log.

Tests drive runs through the real services (the same calls the WebSocket commands make)
and read the outcome from the stored event log, which is what every viewer is served from.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import Sum

from realtime.eventlog import read_envelopes
from realtime.protocol import Command
from realtime.rooms import CommandRefused, get_backend
from realtime.state import fold
from sessions_app import services
from sessions_app.models import Message, Session, TokenUsage
from workflows.providers import CompletionRequest
from workflows.providers.scripted import ScriptedProvider

SHIPPED_DIR = Path(settings.BASE_DIR) / "workflows" / "definitions"
Event = dict[str, Any]


# ----------------------------------------------------------------------------- workflows


def agent_node(node_id: str, *deps: str, **options: Any) -> dict[str, Any]:
    """An agent node using the agent of the same id (see ``workflow``)."""
    return {"id": node_id, "type": "agent", "agent": node_id, "depends_on": list(deps),
            "options": options}


def review_node(node_id: str, reviews: str, *deps: str, **options: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "human_review", "depends_on": list(deps or (reviews,)),
            "options": {"reviews": reviews, "reason": f"Check {reviews}", **options}}


def workflow(slug: str, *nodes: dict[str, Any], model: str = "scripted-small") -> dict[str, Any]:
    """A valid definition: one agent per agent node, named after it."""
    agents = {
        node["id"]: {
            "name": node["id"].title(), "role": f"Speaks for {node['id']}", "model": model,
            "prompt": f"You discuss the {node['id']} topic of cargo bicycles in Lisbon.",
        }
        for node in nodes
        if node["type"] == "agent"
    }
    return {"slug": slug, "name": slug.title(), "agents": agents, "nodes": list(nodes)}


def install_workflows(settings: Any, tmp_path: Path, *definitions: dict[str, Any]) -> Path:
    """Point WORKFLOW_DIR at a copy of the shipped files plus the given test workflows."""
    folder = tmp_path / "workflows"
    folder.mkdir(exist_ok=True)
    for path in SHIPPED_DIR.glob("*.yaml"):
        shutil.copy(path, folder / path.name)
    for definition in definitions:
        (folder / f"{definition['slug']}.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
    settings.WORKFLOW_DIR = folder
    return folder


# ----------------------------------------------------------------------------- commands


@database_sync_to_async
def create_session(owner: Any, slug: str, title: str = "test") -> str:
    return str(services.session_create(owner=owner, workflow_slug=slug, title=title).pk)


@database_sync_to_async
def command(session_id: str, user: Any, cmd: str, **data: Any) -> str | None:
    """Run a client command like the consumer does; returns the error code, or None if ok."""
    try:
        get_backend().execute(
            user=user, session_id=session_id, command=Command(cmd=cmd, data=data, id=None)
        )
    except CommandRefused as exc:
        return exc.code
    return None


# ----------------------------------------------------------------------------- the log


@database_sync_to_async
def events(session_id: str) -> list[Event]:
    return read_envelopes(session_id)


async def wait_event(
    session_id: str, predicate: Callable[[Event], bool], *, timeout: float = 10, after: int = 0
) -> Event:
    """The first logged event with seq > after matching ``predicate`` (polls the log)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for event in await database_sync_to_async(read_envelopes)(session_id, after=after):
            if predicate(event):
                return event
        if loop.time() > deadline:
            names = [(e["seq"], e["event"], e["node_id"]) for e in await events(session_id)][-15:]
            raise TimeoutError(f"event not logged within {timeout} s; last events: {names}")
        await asyncio.sleep(0.02)


def is_state(node_id: str, status: str) -> Callable[[Event], bool]:
    return lambda e: (e["event"] == "node_state_change" and e["data"]["node_id"] == node_id
                      and e["data"]["status"] == status)


def is_event(name: str, node_id: str | None = None) -> Callable[[Event], bool]:
    return lambda e: e["event"] == name and (node_id is None or e["node_id"] == node_id)


def is_end(e: Event) -> bool:
    return e["event"] in ("execution:completed", "execution:failed", "execution:stopped")


async def wait_finished(session_id: str, timeout: float = 20) -> str:
    """Wait until the session is finished and its runner let go of it; returns the status."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        row = await database_sync_to_async(
            lambda: Session.objects.filter(pk=session_id)
            .values("status", "run_requested", "lease_owner").get()
        )()
        if row["status"] in ("completed", "failed", "stopped") and not row["lease_owner"]:
            return row["status"]
        if loop.time() > deadline:
            raise TimeoutError(f"session still {row} after {timeout} s")
        await asyncio.sleep(0.03)


def states(log: list[Event]) -> dict[str, list[str]]:
    """node id -> the statuses it went through, in order."""
    result: dict[str, list[str]] = {}
    for e in log:
        if e["event"] == "node_state_change":
            result.setdefault(e["data"]["node_id"], []).append(e["data"]["status"])
    return result


def seq_of(log: list[Event], predicate: Callable[[Event], bool]) -> int:
    """seq of the first matching event (AssertionError if none)."""
    for e in log:
        if predicate(e):
            return int(e["seq"])
    raise AssertionError("no such event in the log")


def tokens_of(log: list[Event], node_id: str) -> list[Event]:
    return [e for e in log if e["event"] == "token_stream" and e["node_id"] == node_id]


def folded(log: list[Event]) -> dict[str, Any]:
    return fold(log)


@database_sync_to_async
def agent_messages(session_id: str) -> list[Message]:
    return list(Message.objects.filter(session_id=session_id, kind="agent").order_by("id"))


@database_sync_to_async
def usage_sums(session_id: str) -> dict[str, Any]:
    return TokenUsage.objects.filter(session_id=session_id).aggregate(
        i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost_usd")
    )


def price_now(model: str, **tokens: int) -> Any:
    """What ``tokens`` (``input_tokens=``, ``cached_input_tokens=``, ...) of ``model`` cost at
    today's price (no admin prices): the figure a usage row of a run now must hold."""
    from django.utils import timezone

    from workflows.pricing import cost_usd, resolve
    from workflows.providers import Usage

    tokens = {"input_tokens": 0, "output_tokens": 0, **tokens}
    return cost_usd(resolve(model, at=timezone.now()), Usage(**tokens))


@database_sync_to_async
def session_row(session_id: str) -> Session:
    return Session.objects.get(pk=session_id)


def assert_gap_free(log: list[Event]) -> None:
    seqs = [e["seq"] for e in log]
    assert seqs == list(range(1, len(seqs) + 1)), "seq has a gap or a duplicate"


# ----------------------------------------------------------------------------- providers


class RecordingProvider:
    """The scripted provider, keeping every CompletionRequest the engine sends."""

    name = "recording"

    def __init__(self) -> None:
        self.requests: list[CompletionRequest] = []

    def stream(self, request: CompletionRequest) -> Any:
        self.requests.append(request)
        return ScriptedProvider().stream(request)

    def for_node(self, node_id: str) -> list[CompletionRequest]:
        return [r for r in self.requests if r.node_id == node_id]


def context_text(request: CompletionRequest) -> str:
    return "\n".join(m["content"] for m in request.messages)
