"""Property-based fuzzing of the AG-UI endpoints (RunAgentInput, headers, Last-Event-ID):
every reply is a documented status with a JSON error, or a stream of valid AG-UI events;
never a server error, and nothing is stored for a refused request.

CI keeps a small count (``AGUI_FUZZ_EXAMPLES``, default 10 per test); ``bench/fuzz_http.py`` runs
thousands.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid

import pytest
from ag_ui.core import Event
from django.test import AsyncClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from realtime.models import ApiToken, SessionEvent
from realtime.tokens import issue_token
from sessions_app import services
from sessions_app.models import Session
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)
EXAMPLES = int(os.environ.get("AGUI_FUZZ_EXAMPLES", "10"))
EVENT = TypeAdapter(Event)
DOCUMENTED = {200, 400, 401, 403, 404, 405, 409, 413, 422, 429}

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
    max_leaves=12,
)
message = st.fixed_dictionaries(
    {"id": st.text(max_size=10), "role": st.sampled_from(["user", "assistant", "tool", "system", "x"])},
    optional={"content": json_values, "toolCallId": st.text(max_size=5)},
)
run_inputs = st.fixed_dictionaries(
    {},
    optional={
        "threadId": st.text(max_size=20) | st.integers(), "runId": st.text(max_size=20) | st.none(),
        "messages": st.lists(message, max_size=3) | json_values,
        "resume": st.lists(st.fixed_dictionaries({"interruptId": st.text(max_size=20),
                                                  "status": st.sampled_from(["resolved", "cancelled", "x"])},
                                                 optional={"payload": json_values}), max_size=2) | json_values,
        "tools": json_values, "state": json_values, "forwardedProps": json_values,
        "extra": json_values,
    },
)
bodies = st.one_of(run_inputs.map(json.dumps), st.text(max_size=100), json_values.map(json.dumps))
auth = st.sampled_from(["control", "watch", "revoked", "none", "garbage", "basic"])
# What a header can carry over HTTP (latin-1, no control characters).
header_text = st.text(st.characters(max_codepoint=255, exclude_categories=("Cc",)), max_size=8)
last_ids = st.none() | header_text | st.integers(min_value=-5, max_value=10**20).map(str)


class World:
    """Users, tokens and sessions the fuzzed requests are aimed at (made once)."""

    def __init__(self) -> None:
        self.owner = make_user(f"fz-{uuid.uuid4().hex[:6]}")
        self.stranger = make_user(f"st-{uuid.uuid4().hex[:6]}")
        self.theirs = services.session_create(owner=self.stranger, workflow_slug="quick-chat")
        self.mine = services.session_create(owner=self.owner, workflow_slug="quick-chat")
        Session.objects.filter(pk=self.mine.pk).update(status="completed")
        self.tokens = {scope: issue_token(user=self.owner, scope=scope)[1] for scope in ("control", "watch")}
        revoked, self.tokens["revoked"] = issue_token(user=self.owner, scope="control")
        ApiToken.objects.filter(pk=revoked.pk).update(revoked_at="2026-01-01T00:00:00Z")

    def header(self, kind: str) -> dict[str, str]:
        if kind in self.tokens:
            return {"Authorization": f"Bearer {self.tokens[kind]}"}
        return {"none": {}, "garbage": {"Authorization": "Bearer amr_x"},
                "basic": {"Authorization": "Basic YTpi"}}[kind]

    def counts(self) -> tuple[int, int]:
        return Session.objects.count(), SessionEvent.objects.count()


async def _check(response) -> None:
    assert response.status_code in DOCUMENTED, response.status_code
    if response.status_code != 200:
        body = response.json()
        assert set(body) == {"code", "error"} and body["error"]
        return
    assert response["Content-Type"] == "text/event-stream"
    text = (await _read_while_it_sends(response)).decode()
    for block in text.split("\n\n"):
        if block.strip() and not block.startswith(":"):
            data = next(line[6:] for line in block.split("\n") if line.startswith("data: "))
            EVENT.validate_json(data)


async def _read_while_it_sends(response, quiet: float = 1.0) -> bytes:
    """The stream until it ends, or until it has sent nothing for ``quiet`` seconds: a watch
    stream of a session that waits to start stays open (rightly) until the session ends."""
    chunks, stream = [], aiter(response.streaming_content)
    try:
        while True:
            chunks.append(await asyncio.wait_for(anext(stream), quiet))
    except (StopAsyncIteration, TimeoutError):
        pass
    return b"".join(chunks)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=bodies, who=auth, last_id=last_ids, slug=st.sampled_from(["quick-chat", "nope", "x" * 60]))
def test_fuzzed_runs_get_documented_answers_and_store_nothing(body, who, last_id, slug):
    world = _world()
    data = json.loads(body) if body.startswith("{") else None
    if isinstance(data, dict) and isinstance(data.get("threadId"), str):
        data["threadId"] = str(world.theirs.pk)  # never start anything: a thread not theirs to drive
        body = json.dumps(data)
    headers = world.header(who)
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    before = world.counts()
    asyncio.run(_post(f"/agui/{slug}/", body, headers))
    assert world.counts() == before


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(who=auth, last_id=last_ids, query=st.none() | header_text,
       target=st.sampled_from(["mine", "theirs", "missing"]))
def test_fuzzed_watch_requests_get_documented_answers(who, last_id, query, target):
    world = _world()
    sid = {"mine": world.mine.pk, "theirs": world.theirs.pk, "missing": uuid.uuid4()}[target]
    headers = world.header(who)
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    path = f"/agui/sessions/{sid}/events" + ("" if query is None else f"?last_event_id={query}")
    before = world.counts()
    asyncio.run(_get(path, headers))
    assert world.counts() == before


async def _post(path: str, body: str, headers: dict[str, str]) -> None:
    await _check(await AsyncClient().post(path, body, content_type="application/json", headers=headers))


async def _get(path: str, headers: dict[str, str]) -> None:
    await _check(await AsyncClient().get(path, headers=headers))


_WORLD: list[World] = []


def _world() -> World:
    if not _WORLD or not Session.objects.filter(pk=_WORLD[0].mine.pk).exists():
        _WORLD[:] = [World()]
    return _WORLD[0]
