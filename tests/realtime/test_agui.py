"""The AG-UI endpoint through Django's async test client: every event it sends is parsed
with ag-ui-protocol's own models (anything that does not parse fails the test)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from ag_ui.core import Event
from channels.db import database_sync_to_async
from django.test import AsyncClient
from pydantic import TypeAdapter

from realtime.tokens import issue_token
from sessions_app.models import Message
from tests.workflows.helpers import install_workflows

pytestmark = pytest.mark.django_db(transaction=True)
EVENT = TypeAdapter(Event)


@pytest.fixture
def fast(settings: Any, tmp_path: Any) -> Any:
    install_workflows(settings, tmp_path)
    settings.SCRIPTED_TOKENS_PER_SECOND = 0
    return settings


@database_sync_to_async
def token_for(user: Any, scope: str = "control") -> str:
    return issue_token(user=user, scope=scope)[1]


def run_input(thread_id: str, *, messages: list[dict[str, Any]] | None = None, **extra: Any) -> str:
    return json.dumps({"threadId": thread_id, "runId": uuid.uuid4().hex,
                       "messages": messages or [], **extra})


async def read_sse(response: Any) -> list[tuple[str | None, Any]]:
    """(id, parsed AG-UI event) of every SSE event of a streaming response."""
    assert response["Content-Type"] == "text/event-stream"
    text = b""
    async for chunk in response.streaming_content:
        text += chunk
    out = []
    for block in text.decode().split("\n\n"):
        if not block.strip() or block.startswith(":"):
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((fields.get("id"), EVENT.validate_json(fields["data"])))
    return out


class Bearer:
    """Django's async test client with an API token on every request."""

    def __init__(self, token: str) -> None:
        self.client = AsyncClient()
        self.headers = {"Authorization": f"Bearer {token}"}

    async def post(self, path: str, body: str, **extra: Any) -> Any:
        return await self.client.post(path, body, content_type="application/json",
                                      headers={**self.headers, **extra.pop("headers", {})}, **extra)

    async def get(self, path: str, **extra: Any) -> Any:
        return await self.client.get(path, headers={**self.headers, **extra.pop("headers", {})}, **extra)


def types(events: list[tuple[str | None, Any]]) -> list[str]:
    return [e.type.value for _, e in events]


async def test_a_thread_runs_to_a_review_interrupt_and_resumes_to_the_end(fast, executor, owner):
    token = await token_for(owner)
    client = Bearer(token)
    thread = f"thread-{uuid.uuid4().hex[:8]}"
    first = await client.post("/agui/demo/", run_input(thread, messages=[
        {"id": "m1", "role": "user", "content": "Focus on EMEA first."}]))
    assert first.status_code == 200
    events = await read_sse(first)
    names = types(events)
    assert names[0] == "RUN_STARTED" and names[1] == "STATE_SNAPSHOT"
    assert names[-1] == "RUN_FINISHED"
    finished = events[-1][1]
    assert finished.outcome.type == "interrupt"
    [interrupt] = finished.outcome.interrupts
    assert interrupt.id == "review:review:1" and interrupt.reason == "human_review"
    assert "STEP_STARTED" in names and "TEXT_MESSAGE_CONTENT" in names and "REASONING_MESSAGE_CONTENT" in names
    ids = [int(i) for i, _ in events if i is not None]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    second = await client.post("/agui/demo/", run_input(thread, messages=[
        {"id": "m1", "role": "user", "content": "Focus on EMEA first."}],
        resume=[{"interruptId": interrupt.id, "status": "resolved", "payload": {"decision": "approve"}}]),
        )
    events2 = await read_sse(second)
    done = events2[-1][1]
    assert done.type.value == "RUN_FINISHED" and done.outcome is None or done.outcome.type == "success"
    assert done.usage and sum(u.input_tokens for u in done.usage) > 0
    # Text streamed for each message equals the stored transcript; the user message was taken once.
    snapshot = next(e for _, e in events2 if e.type.value == "MESSAGES_SNAPSHOT")
    texts: dict[str, str] = {m.id: m.content for m in snapshot.messages if m.role == "assistant"}
    for _, event in events2:
        if event.type.value == "TEXT_MESSAGE_CONTENT":
            key = event.message_id.split(".")[0]
            texts[key] = texts.get(key, "") + event.delta
    stored = await database_sync_to_async(lambda: {
        f"{m.node_id}#{m.round}": m.text for m in Message.objects.filter(kind="agent")})()
    assert texts == stored
    users = await database_sync_to_async(lambda: list(Message.objects.filter(kind="user").values_list("text", flat=True)))()
    assert users == ["Focus on EMEA first."]
