"""Consumer rules: auth and close codes, snapshot, commands, errors, idempotency, limits."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from realtime.models import SessionEvent
from realtime.publisher import publish
from sessions_app import services
from sessions_app.models import CommandReceipt, Message, Session
from tests.conftest import connect_ws, make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def session(owner):
    return await database_sync_to_async(services.session_create)(
        owner=owner, workflow_slug="demo", title="Room"
    )


def db_counts(session_id):
    return (
        SessionEvent.objects.filter(session_id=session_id).count(),
        CommandReceipt.objects.filter(session_id=session_id).count(),
        Message.objects.filter(session_id=session_id).count(),
        Session.objects.get(pk=session_id).status,
    )


async def test_anonymous_is_closed_4401(ws_app, session):
    ws, ok, _ = await connect_ws(ws_app, str(session.pk), None)
    assert ok
    with pytest.raises(ConnectionError):
        await ws.recv()
    assert ws.close_code == 4401


async def test_stranger_is_closed_4403(ws_app, session, other_user):
    ws, _, _ = await connect_ws(ws_app, str(session.pk), other_user)
    with pytest.raises(ConnectionError):
        await ws.recv()
    assert ws.close_code == 4403


async def test_unknown_session_is_closed_4404(ws_app, owner):
    ws, _, _ = await connect_ws(ws_app, "00000000-0000-4000-8000-000000000000", owner)
    with pytest.raises(ConnectionError):
        await ws.recv()
    assert ws.close_code == 4404


async def test_bad_last_seq_is_closed_4400(ws_app, session, owner):
    ws, _, _ = await connect_ws(ws_app, str(session.pk), owner, query="?last_seq=-3")
    with pytest.raises(ConnectionError):
        await ws.recv()
    assert ws.close_code == 4400


async def test_foreign_origin_is_refused(ws_app, session, owner):
    _, connected, _ = await connect_ws(ws_app, str(session.pk), owner, origin=b"http://evil.example")
    assert not connected


async def test_snapshot_then_ping_pong(ws_app, session, owner):
    ws, ok, _ = await connect_ws(ws_app, str(session.pk), owner)
    snap = await ws.next_event()
    assert snap["event"] == "snapshot" and snap["seq"] is None
    data = snap["data"]
    assert data["session"]["id"] == str(session.pk)
    assert data["session"]["status"] == "created"
    assert data["last_seq"] == 0 and data["resync"] is False and data["can_control"] is True
    assert [n["id"] for n in data["workflow"]["nodes"]][:2] == ["brief", "research"]
    assert data["presence"]["count"] >= 0
    cid = await ws.command("ping")
    pong = await ws.until(lambda e: e["event"] == "pong")
    assert pong["data"]["id"] == cid and pong["data"]["server_time"].endswith("Z")
    await ws.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_json"),
        ("[1,2]", "bad_json"),
        ('{"cmd": "explode"}', "unknown_cmd"),
        ('{"data": {}}', "unknown_cmd"),
        ('{"cmd": "user_input", "data": {"text": 5}, "id": "x1"}', "invalid_data"),
        ('{"cmd": "user_input", "data": {}, "id": "x2"}', "invalid_data"),
        ('{"cmd": "submit_review", "data": {"node_id": "review", "decision": "maybe"}}', "invalid_data"),
        ('{"cmd": "pause_session", "data": "x"}', "invalid_data"),
        ('{"cmd": "ping", "id": 7}', "invalid_data"),
        ('{"cmd": "websocket.disconnect"}', "unknown_cmd"),
        ("[" * 5000 + "]" * 5000, "bad_json"),
    ],
)
async def test_bad_frames_get_error_and_change_nothing(ws_app, session, owner, frame, code):
    before = await database_sync_to_async(db_counts)(session.pk)
    ws, _, _ = await connect_ws(ws_app, str(session.pk), owner)
    await ws.next_event()
    await ws.c.send_to(text_data=frame)
    error = await ws.until(lambda e: e["event"] == "error")
    assert error["seq"] is None and error["data"]["code"] == code
    cid = await ws.command("ping")  # the connection is still usable
    assert (await ws.until(lambda e: e["event"] == "pong"))["data"]["id"] == cid
    assert await database_sync_to_async(db_counts)(session.pk) == before
    await ws.close()


async def test_binary_frame_gets_error(ws_app, session, owner):
    ws, _, _ = await connect_ws(ws_app, str(session.pk), owner)
    await ws.next_event()
    await ws.c.send_to(bytes_data=b"\x00\x01")
    error = await ws.until(lambda e: e["event"] == "error")
    assert error["data"]["code"] == "binary_not_supported"
    await ws.close()


async def test_invalid_state_and_nothing_written(ws_app, session, owner):
    ws, _, _ = await connect_ws(ws_app, str(session.pk), owner)
    await ws.next_event()
    before = await database_sync_to_async(db_counts)(session.pk)
    for cmd in ("pause_session", "resume_session"):
        cid = await ws.command(cmd)
        reply = await ws.reply(cid)
        assert reply["event"] == "error" and reply["data"]["code"] == "invalid_state"
    cid = await ws.command("submit_review", {"node_id": "review", "decision": "approve"})
    assert (await ws.reply(cid))["data"]["code"] == "invalid_state"
    cid = await ws.command("submit_review", {"node_id": "nope", "decision": "approve"})
    assert (await ws.reply(cid))["data"]["code"] == "not_found"
    assert await database_sync_to_async(db_counts)(session.pk) == before
    await ws.close()


async def test_resent_command_id_is_acked_but_runs_once(ws_app, session, owner):
    ws, _, _ = await connect_ws(ws_app, str(session.pk), owner)
    await ws.next_event()
    first = await ws.reply(await ws.command("user_input", {"text": "hello"}, cid="same-id"))
    second = await ws.reply(await ws.command("user_input", {"text": "hello"}, cid="same-id"))
    assert first["event"] == second["event"] == "ack"
    assert first["data"]["duplicate"] is False and second["data"]["duplicate"] is True
    await asyncio.sleep(0.2)
    await ws.command("ping")
    await ws.until(lambda e: e["event"] == "pong")
    msgs = [e for e in ws.events if e["event"] == "user_message"]
    assert len(msgs) == 1
    assert msgs[0]["data"]["text"] == "hello" and msgs[0]["data"]["user"] == "alice"
    count = await database_sync_to_async(Message.objects.filter(session_id=session.pk).count)()
    assert count == 1
    await ws.close()


async def test_watcher_may_watch_but_not_control(ws_app, session):
    viewer = await database_sync_to_async(make_user)("victor")
    await database_sync_to_async(services.session_share)(session=session, user=viewer)
    ws, _, _ = await connect_ws(ws_app, str(session.pk), viewer)
    snap = await ws.next_event()
    assert snap["data"]["can_control"] is False
    assert snap["data"]["state"]["members"] == {"alice": "owner", "victor": "viewer"}
    logged = (await database_sync_to_async(db_counts)(session.pk))[0]  # member_changed
    for cmd, data in [("start_session", {}), ("user_input", {"text": "hi"}),
                      ("stop_session", {})]:
        reply = await ws.reply(await ws.command(cmd, data))
        assert reply["data"]["code"] == "forbidden"
    assert (await database_sync_to_async(db_counts)(session.pk))[0] == logged
    await ws.close()


async def test_idle_connection_is_closed_4408(ws_app, session, owner, settings):
    settings.WS_IDLE_TIMEOUT = 0.5
    ws, _, _ = await connect_ws(ws_app, str(session.pk), owner)
    await ws.next_event()
    with pytest.raises(ConnectionError):
        while True:
            await ws.recv(timeout=5)
    assert ws.close_code == 4408


async def test_oversized_frame_closes_1009(ws_app, session, owner, settings):
    settings.WS_MAX_FRAME_BYTES = 1000
    ws, _, _ = await connect_ws(ws_app, str(session.pk), owner)
    await ws.next_event()
    await ws.c.send_to(text_data=json.dumps({"cmd": "user_input", "data": {"text": "x" * 2000}}))
    with pytest.raises(ConnectionError):
        while True:
            await ws.recv()
    assert ws.close_code == 1009


async def test_oversized_frame_closes_4009_where_the_server_refuses_1009(
        ws_app, session, owner, settings, monkeypatch):
    """daphne (autobahn) refuses 1009 from an application: the consumer must neither die (its
    viewer would stay attached, its socket counted) nor leave the socket open."""
    from channels.generic.websocket import AsyncWebsocketConsumer

    from realtime.hub import get_hub

    real_close = AsyncWebsocketConsumer.close

    async def close(self, code=None, reason=None):
        if code == 1009:
            raise Exception("invalid close code 1009 (must be 1000 or from [3000, 4999])")
        await real_close(self, code=code, reason=reason)

    monkeypatch.setattr(AsyncWebsocketConsumer, "close", close)
    settings.WS_MAX_FRAME_BYTES = 1000
    ws, _, _ = await connect_ws(ws_app, str(session.pk), owner)
    await ws.next_event()
    assert get_hub().sockets_per_user.get(owner.username) == 1
    await ws.c.send_to(text_data="x" * 2000)
    with pytest.raises(ConnectionError):
        while True:
            await ws.recv()
    assert ws.close_code == 4009
    await ws.c.send_input({"type": "websocket.disconnect", "code": 4009})
    await ws.c.wait(2)  # the consumer ends without an exception
    assert owner.username not in get_hub().sockets_per_user


async def test_a_reader_acknowledging_too_little_is_closed_4409(ws_app, session, owner, settings):
    """Where the server never holds a send back (daphne), the page's acknowledging ping is
    what shows a stalled reader: more than WS_SEND_BUFFER_EVENTS unacknowledged -> 4409."""
    settings.WS_SEND_BUFFER_EVENTS = 10
    sid = str(session.pk)
    ws, _, _ = await connect_ws(ws_app, sid, owner)
    await ws.next_event()
    for n in range(30):
        await publish(session_id=sid, event="token_stream", node_id="a",
                      data={"chunk": f"w{n} ", "agent_id": "a", "node_id": "a", "is_thinking": False})
    last = (await ws.until(lambda e: e["seq"] == 30))["seq"]
    await ws.c.send_to(text_data=json.dumps({"cmd": "ping", "data": {"last_seq": last - 5}, "id": "p1"}))
    assert (await ws.until(lambda e: e["event"] == "pong"))["data"]["id"] == "p1"  # 5 behind: fine
    await ws.c.send_to(text_data=json.dumps({"cmd": "ping", "data": {"last_seq": 3}, "id": "p2"}))
    with pytest.raises(ConnectionError):
        while True:
            await ws.recv()
    assert ws.close_code == 4409


async def test_rate_limit_then_close_4429(ws_app, session, owner, settings):
    settings.WS_RATE_BURST = 5
    settings.WS_RATE_PER_SECOND = 1
    settings.WS_RATE_STRIKES = 3
    ws, _, _ = await connect_ws(ws_app, str(session.pk), owner)
    await ws.next_event()
    for _ in range(12):
        await ws.c.send_to(text_data='{"cmd":"ping"}')
    codes = []
    with pytest.raises(ConnectionError):
        while True:
            event = await ws.next_event()
            if event["event"] == "error":
                codes.append(event["data"]["code"])
    assert "rate_limited" in codes and ws.close_code == 4429


async def test_socket_limit_per_user_4430(ws_app, session, owner, settings):
    settings.WS_MAX_SOCKETS_PER_USER = 2
    socks = []
    for _ in range(2):
        ws, _, _ = await connect_ws(ws_app, str(session.pk), owner)
        await ws.next_event()
        socks.append(ws)
    ws, _, _ = await connect_ws(ws_app, str(session.pk), owner)
    with pytest.raises(ConnectionError):
        await ws.recv()
    assert ws.close_code == 4430
    await socks[0].close()
    await asyncio.sleep(0.05)
    ws, _, _ = await connect_ws(ws_app, str(session.pk), owner)
    assert (await ws.next_event())["event"] == "snapshot"
    await ws.close()
    await socks[1].close()


async def _publish_many(session_id, n, start=0):
    for i in range(n):
        await publish(session_id=session_id, event="token_stream", node_id="brief",
                      data={"chunk": f"w{start + i} ", "agent_id": "moderator",
                            "node_id": "brief", "is_thinking": False})


async def test_replay_after_last_seq_is_exact(ws_app, session, owner):
    sid = str(session.pk)
    await _publish_many(sid, 30)
    ws, _, _ = await connect_ws(ws_app, sid, owner, query="?last_seq=10")
    got = []
    while len(got) < 20:
        event = await ws.next_event()
        assert event["event"] != "snapshot"
        if event["seq"] is not None:
            got.append(event["seq"])
    assert got == list(range(11, 31))
    await _publish_many(sid, 3, start=30)
    live = [(await ws.until(lambda e: e["seq"] is not None))["seq"] for _ in range(3)]
    assert live == [31, 32, 33]
    await ws.close()


async def test_a_long_transcript_arrives_as_the_empty_room_and_the_log(ws_app, session, owner, settings):
    """Over WS_SNAPSHOT_MAX_BYTES the snapshot becomes the empty room plus every event, in
    frames under WS_BATCH_MAX_BYTES (daphne refuses to send a frame over its 1 MiB limit);
    folded, the viewer holds the same room as the plain snapshot."""
    from realtime.state import fold

    sid = str(session.pk)
    await _publish_many(sid, 60)
    ws, _, _ = await connect_ws(ws_app, sid, owner)
    whole = await ws.next_event()
    assert whole["event"] == "snapshot" and whole["data"]["last_seq"] == 60
    await ws.close()

    settings.WS_SNAPSHOT_MAX_BYTES = 1000
    settings.WS_BATCH_MAX_BYTES = 2000
    ws, _, _ = await connect_ws(ws_app, sid, owner)
    start = await ws.next_event()
    assert start["event"] == "snapshot" and start["data"]["last_seq"] == 0
    events = [await ws.next_event() for _ in range(60)]
    assert [e["seq"] for e in events] == list(range(1, 61))
    assert fold(events, start["data"]["state"]) == whole["data"]["state"]
    assert len(ws.frame_sizes) > 2 and max(ws.frame_sizes[1:]) <= 2000 + 400
    await ws.close()


async def test_replay_race_no_gap_no_duplicate(ws_app, session, owner):
    """Events published while viewers connect and read the log arrive exactly once, in order."""
    sid = str(session.pk)
    await _publish_many(sid, 50)
    total = 50 + 400
    publisher = asyncio.create_task(_publish_many(sid, 400, start=50))
    clients = []
    for k in range(8):
        ws, _, _ = await connect_ws(ws_app, sid, owner, query=f"?last_seq={k * 5}")
        clients.append((k * 5, ws))
        await asyncio.sleep(0.01)
    await publisher
    for start, ws in clients:
        seqs = []
        while not seqs or seqs[-1] < total:
            event = await ws.next_event()
            if event["seq"] is not None:
                seqs.append(event["seq"])
        assert seqs == list(range(start + 1, total + 1))
        await ws.close()


async def test_last_seq_beyond_log_gets_resync_snapshot(ws_app, session, owner):
    sid = str(session.pk)
    await _publish_many(sid, 3)
    ws, _, _ = await connect_ws(ws_app, sid, owner, query="?last_seq=99")
    snap = await ws.next_event()
    assert snap["event"] == "snapshot" and snap["data"]["resync"] is True
    assert snap["data"]["last_seq"] == 3
    assert snap["data"]["state"]["messages"][0]["text"] == "w0 w1 w2 "
    await ws.close()


async def test_presence_counts_viewers(ws_app, session, owner):
    sid = str(session.pk)
    bob = await database_sync_to_async(make_user)("bob")
    await database_sync_to_async(services.session_share)(session=session, user=bob)
    a, _, _ = await connect_ws(ws_app, sid, owner)
    await a.next_event()
    b, _, _ = await connect_ws(ws_app, sid, bob)
    await b.next_event()
    event = await a.until(lambda e: e["event"] == "presence" and e["data"]["count"] == 2)
    assert event["data"]["users"] == ["alice", "bob"]
    await b.close()
    event = await a.until(lambda e: e["event"] == "presence" and e["data"]["count"] == 1)
    await a.close()


async def test_a_share_lowered_while_the_socket_is_open_stops_its_commands(ws_app, session,
                                                                          monkeypatch):
    """Access is asked again with every command, not only when the socket connected (here
    the push that would close the socket 4412, test_revocation.py, is lost)."""
    monkeypatch.setattr("sessions_app.signals.announce_access_changed", lambda **kwargs: None)
    bob = await database_sync_to_async(make_user)("bobby")
    await database_sync_to_async(services.session_share)(session=session, user=bob, can_control=True)
    ws, _, _ = await connect_ws(ws_app, str(session.pk), bob)
    assert (await ws.next_event())["data"]["can_control"] is True
    await database_sync_to_async(services.session_share)(session=session, user=bob, can_control=False)
    logged = (await database_sync_to_async(db_counts)(session.pk))[0]  # the two member_changed
    reply = await ws.reply(await ws.command("user_input", {"text": "still here?"}))
    assert reply["event"] == "error" and reply["data"]["code"] == "forbidden"
    assert (await database_sync_to_async(db_counts)(session.pk))[0] == logged
    await ws.close()
