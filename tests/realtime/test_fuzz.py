"""Property-based fuzzing of the WebSocket protocol against the real consumer.

Every frame gets a documented reply (`error` with a code, `ack`, `pong`) or a documented close
code, the connection stays usable, the server stays healthy, and the database changes only
by what acknowledged commands do (never for another user's session).
"""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime import protocol
from realtime.models import SessionEvent
from sessions_app import services
from sessions_app.models import CommandReceipt, Message, Session
from tests.conftest import connect_ws, make_user

pytestmark = pytest.mark.django_db(transaction=True)

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)
command_names = st.sampled_from(sorted(protocol.COMMANDS)) | st.text(max_size=15)
field_names = st.sampled_from(["text", "node_id", "decision", "comment", "session_id", "id", "x"])
command_ids = st.sampled_from(["a", "b", "c"]) | st.text(min_size=0, max_size=70) | st.integers()


def _command(cmd, data, cid):
    frame = {"cmd": cmd, "data": data}
    if cid is not None:
        frame["id"] = cid
    return ("text", json.dumps(frame))


frames = st.one_of(
    st.text(max_size=200).map(lambda t: ("text", t)),
    st.binary(max_size=100).map(lambda b: ("bytes", b)),
    json_values.map(lambda v: ("text", json.dumps(v))),
    st.integers(min_value=1, max_value=3000).map(lambda n: ("text", "[" * n + "]" * n)),
    st.integers(min_value=1, max_value=2000).map(lambda n: ("text", '{"a":' * n + "1" + "}" * n)),
    st.builds(_command, command_names, st.dictionaries(field_names, json_values, max_size=4),
              st.none() | command_ids),
    st.builds(_command, st.just("user_input"), st.fixed_dictionaries({"text": st.text(max_size=50)}),
              st.none() | st.sampled_from(["dup-1", "dup-2"])),
    st.builds(_command, st.just("submit_review"),
              st.fixed_dictionaries({"node_id": st.sampled_from(["review", "brief", "other"]),
                                     "decision": st.sampled_from(["approve", "reject", "x"])}),
              st.none() | command_ids),
    st.just(("text", "x" * 70_000)),  # over WS_MAX_FRAME_BYTES: close 1009
)


def db_state(session_id):
    return (
        list(SessionEvent.objects.filter(session_id=session_id).values_list("seq", "event", "data")),
        CommandReceipt.objects.filter(session_id=session_id).count(),
        Message.objects.filter(session_id=session_id).count(),
        Session.objects.filter(pk=session_id).values_list("status", "run_requested", "title").get(),
    )


async def _exchange(ws, kind, payload):
    """Send one frame; return the reply event, or the close code."""
    key = "bytes" if kind == "bytes" else "text"
    await ws.c.send_input({"type": "websocket.receive", key: payload})
    try:
        return await ws.until(lambda e: e["seq"] is None and e["event"] in ("error", "ack", "pong"), 10)
    except ConnectionError:
        return ws.close_code


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(frames, min_size=1, max_size=12))
def test_fuzzed_frames_get_documented_answers(sample):
    asyncio.run(_run_sample(sample))


async def _run_sample(sample):
    from config.asgi import router

    owner, _ = await database_sync_to_async(lambda: (make_user_once("fuzzer"), None))()
    stranger = await database_sync_to_async(make_user_once)("stranger")
    mine = await database_sync_to_async(services.session_create)(owner=owner, workflow_slug="demo")
    theirs = await database_sync_to_async(services.session_create)(owner=stranger, workflow_slug="demo")
    before_theirs = await database_sync_to_async(db_state)(theirs.pk)
    ws, _, _ = await connect_ws(router, str(mine.pk), owner)
    assert (await ws.next_event())["event"] == "snapshot"
    acked = []
    for kind, payload in sample:
        answer = await _exchange(ws, kind, payload)
        if isinstance(answer, int) or answer is None:
            assert answer == 1009 and len(payload) > 64 * 1024
            break
        if answer["event"] == "error":
            assert answer["data"]["code"] in protocol.ERROR_CODES
        elif answer["event"] == "ack" and not answer["data"]["duplicate"]:
            acked.append(answer["data"]["cmd"])
    else:
        cid = await ws.command("ping")
        assert (await ws.until(lambda e: e["event"] == "pong"))["data"]["id"] == cid
        await ws.close()
    # The server is healthy: a new connection gets its snapshot.
    again, _, _ = await connect_ws(router, str(mine.pk), owner)
    assert (await again.next_event())["event"] == "snapshot"
    await again.close()
    # Another user's session is untouched; mine changed only by acknowledged commands.
    assert await database_sync_to_async(db_state)(theirs.pk) == before_theirs
    events, receipts, messages, _ = await database_sync_to_async(db_state)(mine.pk)
    assert messages == acked.count("user_input")
    expected = {"user_message": acked.count("user_input"), "execution:stopped": acked.count("stop_session")}
    assert {name: sum(1 for e in events if e[1] == name) for name in expected} == expected
    assert len(events) == sum(expected.values())


def make_user_once(name):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=name).first()
    return user or make_user(name)
