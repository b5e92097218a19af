"""The AG-UI endpoint through Django's async test client: every event it sends is parsed
with ag-ui-protocol's own models (anything that does not parse fails the test)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from ag_ui.core import Event
from channels.db import database_sync_to_async
from django.test import AsyncClient
from pydantic import TypeAdapter

from realtime.agui import live as live_module
from realtime.agui.translate import Translator
from realtime.eventlog import read_envelopes
from realtime.models import ApiToken
from realtime.timestamps import epoch_ms
from realtime.tokens import RATE, issue_token, revoke_token
from sessions_app.models import AguiThread, Message, Session
from tests.workflows.helpers import (
    agent_node,
    command,
    create_session,
    install_workflows,
    is_event,
    wait_event,
    wait_finished,
    workflow,
)

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
    assert (done.type.value == "RUN_FINISHED" and done.outcome is None) or done.outcome.type == "success"
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


# ----------------------------------------------------------------------------- bad input

@database_sync_to_async
def revoke(secret: str) -> None:
    revoke_token(token=ApiToken.objects.get(prefix=secret[:10]))


async def test_bad_requests_get_clear_errors_and_store_nothing(fast, owner, other_user):
    token = await token_for(owner)
    client = Bearer(token)
    count = database_sync_to_async(Session.objects.count)
    before = await count()
    # RunAgentInput that does not validate: 422 with the reason.
    bad = await client.post("/agui/demo/", json.dumps({"threadId": "t", "messages": []}))
    assert bad.status_code == 422 and "runId" in bad.json()["error"]
    assert (await client.post("/agui/demo/", "not json")).status_code == 422
    # Unknown workflow: 404. Missing and revoked tokens: 401.
    assert (await client.post("/agui/nope/", run_input("t1"))).status_code == 404
    assert (await AsyncClient().post("/agui/demo/", run_input("t1"), content_type="application/json")).status_code == 401
    other = await token_for(other_user)
    await revoke(other)
    assert (await Bearer(other).post("/agui/demo/", run_input("t1"))).status_code == 401
    assert (await Bearer("amr_not-a-token").post("/agui/demo/", run_input("t1"))).status_code == 401
    # A watch token cannot drive.
    watcher = await token_for(owner, "watch")
    assert (await Bearer(watcher).post("/agui/demo/", run_input("t1"))).status_code == 403
    # A bad Last-Event-ID: 400.
    bad_id = await client.post("/agui/demo/", run_input("t1"), headers={"Last-Event-ID": "x1"})
    assert bad_id.status_code == 400
    assert await count() == before  # nothing was created by any of these
    # Someone else's session as a thread: 403 (mallory may not control alice's session).
    sid = await create_session(owner, "demo")
    assert (await Bearer(await token_for(other_user)).post("/agui/demo/", run_input(sid))).status_code == 403
    # A session of another workflow named as the thread: 404.
    assert (await client.post("/agui/quick-chat/", run_input(sid))).status_code == 404
    # A cookie login needs the CSRF token on POST.
    browser = AsyncClient(enforce_csrf_checks=True)
    await browser.aforce_login(owner)
    assert (await browser.post("/agui/demo/", run_input("t2"), content_type="application/json")).status_code == 403
    # The watch stream: 404 for no session, 403 for someone else's, a clear error for a
    # Last-Event-ID beyond the log.
    assert (await client.get(f"/agui/sessions/{uuid.uuid4()}/events")).status_code == 404
    assert (await Bearer(await token_for(other_user)).get(f"/agui/sessions/{sid}/events")).status_code == 403
    beyond = await read_sse(await client.get(f"/agui/sessions/{sid}/events", headers={"Last-Event-ID": "99"}))
    assert [(e.type.value, e.code) for _, e in beyond] == [("RUN_ERROR", "bad_last_event_id")]


async def test_the_watch_stream_resumes_after_last_event_id_without_loss_or_repeat(fast, executor, owner):
    token = await token_for(owner, "watch")
    control = Bearer(await token_for(owner))
    thread = f"thread-{uuid.uuid4().hex[:8]}"
    run = await read_sse(await control.post("/agui/quick-chat/", run_input(thread)))
    assert run[-1][1].type.value == "RUN_FINISHED"
    sid = await database_sync_to_async(
        lambda: str(AguiThread.objects.get(thread_id=thread).session_id))()
    whole = await read_sse(await Bearer(token).get(f"/agui/sessions/{sid}/events", headers={"Last-Event-ID": "0"}))
    ids = [int(i) for i, _ in whole if i is not None]
    # every event carries the time its event of ours was published (from the log, no snapshot)
    logged = {e["seq"]: epoch_ms(e["timestamp"]) for e in await database_sync_to_async(read_envelopes)(sid)}
    assert [e.timestamp for i, e in whole if i is not None] == [logged[i] for i in ids]
    assert all(e.timestamp in logged.values() for _, e in whole)
    cut = ids[len(ids) // 2]
    upto = next(i for i, (sid_, _) in enumerate(whole) if sid_ == str(cut))
    head = whole[: upto + 1]  # what a client had when its stream dropped
    rest = await read_sse(await Bearer(token).get(f"/agui/sessions/{sid}/events?last_event_id={cut}"))
    assert [e.model_dump() for _, e in head[: len(head)]] + [e.model_dump() for _, e in rest] == [
        e.model_dump() for _, e in whole]


async def test_a_client_that_stops_reading_is_cut_off_and_changes_nothing(fast, executor, owner):
    """The ASGI app as a server runs it, with a client whose connection stops taking data
    (the server's send never returns): once WS_SEND_BUFFER_EVENTS events wait for it the
    stream is cut off (the app returns, so the server drops the connection), like a slow
    WebSocket viewer; the session runs to its end unchanged."""
    from config.asgi import router

    fast.WS_SEND_BUFFER_EVENTS = 40
    fast.TOKEN_COALESCE_MS = 0
    sid = await create_session(owner, "demo")
    token = await token_for(owner, "watch")
    sent: list[bytes] = []
    stuck = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            sent.append(message.get("body", b""))
            if len(sent) >= 3:  # the client stops reading: this send never completes
                stuck.set()
                await asyncio.Event().wait()

    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if requests:
            return requests.pop()
        await asyncio.Event().wait()  # no disconnect: the client is there, just not reading
        return {}

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": f"/agui/sessions/{sid}/events", "raw_path": b"",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
             "server": ("127.0.0.1", 80),
             "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())]}
    app = asyncio.ensure_future(router(scope, receive, send))
    await asyncio.sleep(0.3)
    assert await command(sid, owner, "start_session") is None
    await asyncio.wait_for(stuck.wait(), 30)
    await asyncio.wait_for(app, 30)  # cut off: the app returned with its response unfinished
    assert not any(b"RUN_FINISHED" in chunk for chunk in sent)
    ask = await wait_event(sid, is_event("human_interaction_required"), timeout=30)
    assert await command(sid, owner, "submit_review", node_id=ask["data"]["node_id"],
                         decision="approve") is None
    assert await wait_finished(sid, timeout=60) == "completed"


async def test_a_stopped_run_finishes_cancelled_and_a_failed_one_is_a_run_error(fast, executor, owner, tmp_path):
    install_workflows(fast, tmp_path, workflow("boom", agent_node("x", fail=True)))
    client = Bearer(await token_for(owner))
    failed = await read_sse(await client.post("/agui/boom/", run_input(f"t-{uuid.uuid4().hex[:6]}")))
    last = failed[-1][1]
    assert (last.type.value, last.code) == ("RUN_ERROR", "execution_failed")
    assert "scripted failure" in last.message

    fast.SCRIPTED_TOKENS_PER_SECOND = 200
    sid = await create_session(owner, "demo")
    reading = asyncio.ensure_future(read_sse(await client.post("/agui/demo/", run_input(sid))))
    await wait_event(sid, is_event("token_stream"), timeout=20)
    assert await command(sid, owner, "stop_session") is None
    stopped = await asyncio.wait_for(reading, 20)
    last = stopped[-1][1]
    assert last.type.value == "RUN_FINISHED" and last.outcome.type == "cancelled"
    names = types(stopped)  # what was open is closed before the end
    assert names.count("TEXT_MESSAGE_START") == names.count("TEXT_MESSAGE_END")
    assert names.count("REASONING_START") == names.count("REASONING_END")
    assert names.count("STEP_STARTED") == names.count("STEP_FINISHED") >= 1


async def test_tokens_are_refused_in_urls_rate_limited_and_revoked_streams_end(fast, executor, owner):
    token = await token_for(owner, "watch")
    sid = await create_session(owner, "quick-chat")
    in_url = await AsyncClient().get(f"/agui/sessions/{sid}/events?token={token}")
    assert in_url.status_code == 400 and "never accepted in a URL" in in_url.json()["error"]
    fast.API_TOKEN_RATE_PER_MINUTE = 3
    client = Bearer(token)
    codes = [(await client.post("/agui/quick-chat/", run_input(sid))).status_code for _ in range(4)]
    assert codes == [403, 403, 403, 429]  # a watch token may not drive; the 4th is over the rate
    fast.API_TOKEN_RATE_PER_MINUTE = 1000
    RATE.buckets.clear()  # token ids are reused by later tests' databases
    # A revoked token's open stream ends at once with a RUN_ERROR.
    other = await token_for(owner, "watch")
    reading = asyncio.ensure_future(read_sse(await Bearer(other).get(f"/agui/sessions/{sid}/events")))
    await asyncio.sleep(0.3)
    await revoke(other)
    events = await asyncio.wait_for(reading, 10)
    assert (events[-1][1].type.value, events[-1][1].code) == ("RUN_ERROR", "forbidden")


# ----------------------------------------------------------------------------- shared translation

@pytest.mark.parametrize("slug", ["quick-chat", "demo"])  # demo: a review interrupts, then resumes
async def test_watch_streams_started_at_the_same_seq_get_the_same_events_translated_once(
        fast, executor, owner, monkeypatch, slug):
    token = await token_for(owner, "watch")
    sid = await create_session(owner, slug)
    streams = [await Bearer(token).get(f"/agui/sessions/{sid}/events") for _ in range(3)]
    readers = [aiter(s.streaming_content) for s in streams]
    for reader in readers:  # each takes its snapshot at the same seq (nothing has happened yet)
        assert b"STATE_SNAPSHOT" in b"".join([await anext(reader), await anext(reader)])
    translated: list[int] = []
    real = Translator.translate

    def counted(self: Translator, envelope: dict[str, Any]) -> Any:
        translated.append(envelope["seq"])
        return real(self, envelope)

    monkeypatch.setattr(Translator, "translate", counted)
    assert await command(sid, owner, "start_session") is None

    async def rest(reader: Any) -> bytes:
        return b"".join([chunk async for chunk in reader])

    reading = asyncio.gather(*(rest(r) for r in readers))
    if slug == "demo":
        ask = await wait_event(sid, is_event("human_interaction_required"), timeout=30)
        assert await command(sid, owner, "submit_review", node_id=ask["data"]["node_id"],
                             decision="approve") is None
    texts = await asyncio.wait_for(reading, 60)
    assert texts[0] == texts[1] == texts[2] and b'"type":"RUN_FINISHED"' in texts[0]
    if slug == "demo":  # the watch stream went on across the interrupt, into a second run
        assert texts[0].count(b'"type":"RUN_STARTED"') == 1 and b'"interrupt"' in texts[0]
    logged = [e["seq"] for e in await database_sync_to_async(read_envelopes)(sid)]
    assert sorted(translated) == logged  # each event translated once, not once per stream
    assert not live_module._SHARED  # forgotten when its last stream ended
    # what they got is what a stream of its own gets: the same log read from seq 0 through
    # its own translator (it opens its run at seq 1, where the others were in one already)
    alone = await read_sse(await Bearer(token).get(f"/agui/sessions/{sid}/events",
                                                   headers={"Last-Event-ID": "0"}))
    shared = [EVENT.validate_json(block.split("data: ", 1)[1]) for block in texts[0].decode().split("\n\n")
              if block.startswith(("id:", "data:"))]

    def comparable(events: list[Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in e.model_dump().items() if k != "run_id"}
                for e in events if e.type.value != "RUN_STARTED"]

    assert len(shared) > 10 and comparable(shared) == comparable([e for _, e in alone])


def test_a_shared_translation_keeps_each_text_until_every_stream_took_it():
    translator = Translator()
    translator.prime([])
    translator.snapshot()
    live = live_module.LiveTranslation(translator=translator, session_id="s", thread_id="s",
                                       run_id="s:0", in_run=True, watch=True)
    shared = live_module.join_shared(live, 0, stream=1)
    assert live_module.join_shared(live, 0, stream=2) is shared

    def token(seq: int) -> dict[str, Any]:
        return {"event": "token_stream", "seq": seq, "node_id": "a", "session_id": "s",
                "timestamp": "2026-11-28T00:00:00.000Z",
                "data": {"chunk": f"t{seq} ", "agent_id": "a", "node_id": "a", "is_thinking": False}}

    fast = [shared.texts_for(1, token(seq)) for seq in range(1, 601)]
    assert len(shared.made) == 600  # stream 2 has taken none yet
    slow = [shared.texts_for(2, token(seq)) for seq in range(1, 601)]
    assert slow == fast and fast[-1][0].startswith("id: 600\n")
    for seq in range(601, 769):  # the next prune (at 768) forgets what both have taken
        shared.texts_for(1, token(seq))
        shared.texts_for(2, token(seq))
    assert set(shared.made) == {768}  # pruned when stream 1 made 768: stream 2 was at 767
    assert shared.texts_for(2, token(5)) is None  # gone: that stream would resume from the log
    live_module.leave_shared(shared, 0, stream=1)
    live_module.leave_shared(shared, 0, stream=2)
    assert ("s", 0) not in live_module._SHARED
