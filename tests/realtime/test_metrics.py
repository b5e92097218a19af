"""/metrics: who may read it, and what one process counts of sockets, frames and closes.

Tests run without PROMETHEUS_MULTIPROC_DIR, so the numbers are this process's registry;
every assertion compares a value before and after (other tests in the process count too).
Several processes reporting together: tests/realtime/test_metrics_multiprocess.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from realtime import metrics
from realtime.publisher import get_publisher, publish
from sessions_app import services
from tests.conftest import connect_ws, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


@pytest.fixture
async def session(owner: Any) -> Any:
    return await database_sync_to_async(services.session_create)(
        owner=owner, workflow_slug="demo", title="Room"
    )


# ----------------------------------------------------------------------------- access


def test_anonymous_is_refused_and_sees_no_metric():
    response = Client().get("/metrics")
    assert response.status_code == 403
    assert b"agentroom_" not in response.content


def test_logged_in_user_who_is_not_staff_is_refused(owner):
    client = Client()
    client.force_login(owner)
    assert client.get("/metrics").status_code == 403


def test_localhost_is_not_allowed_by_default(settings):
    assert settings.METRICS_ALLOWED_IPS == []
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403


def test_staff_get_the_prometheus_text_format():
    client = Client()
    client.force_login(make_user("ops", is_staff=True))
    metrics.SOCKETS.inc(3)
    try:
        response = client.get("/metrics")
        expected = value("agentroom_websocket_connections")
    finally:
        metrics.SOCKETS.dec(3)
    assert response.status_code == 200
    assert response["Content-Type"] == metrics.CONTENT_TYPE_LATEST
    assert "no-store" in response["Cache-Control"]
    samples = scraped(response.content)
    assert expected >= 3
    assert samples[("agentroom_websocket_connections", ())] == expected
    assert samples[("agentroom_sse_streams", ())] == 0
    # every logged event and final status is there from the start, so rate() sees it
    assert ("agentroom_events_published_total", (("event", "execution:failed"),)) in samples
    assert ("agentroom_runs_finished_total", (("status", "stopped"),)) in samples


def test_inactive_staff_are_refused():
    client = Client()
    client.force_login(make_user("gone", is_staff=True, is_active=False))
    assert client.get("/metrics").status_code == 403


def test_allowed_addresses_and_networks_are_served(settings):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8", "::1"]
    assert Client(REMOTE_ADDR="10.20.30.40").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::1").get("/metrics").status_code == 200
    assert Client(REMOTE_ADDR="::ffff:10.0.0.7").get("/metrics").status_code == 200  # dual stack
    assert Client(REMOTE_ADDR="11.0.0.1").get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 403
    assert Client(REMOTE_ADDR="not-an-address").get("/metrics").status_code == 403
    # a forwarded header is the client's own words, never the address
    spoofed = Client(REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="10.0.0.1")
    assert spoofed.get("/metrics").status_code == 403


def test_only_safe_methods(settings):
    settings.METRICS_ALLOWED_IPS = ["127.0.0.1"]
    client = Client(enforce_csrf_checks=False)
    assert client.head("/metrics").status_code == 200
    assert client.post("/metrics").status_code == 405


# ----------------------------------------------------------------------------- sockets


async def test_socket_and_viewer_gauges_follow_connect_and_disconnect(ws_app, session, owner):
    sockets, viewers = value("agentroom_websocket_connections"), value("agentroom_viewers")
    joins = value("agentroom_snapshots_total", resync="false")
    ws, ok, _ = await connect_ws(ws_app, str(session.pk), owner)
    assert ok
    assert (await ws.next_event())["event"] == "snapshot"
    assert value("agentroom_websocket_connections") == sockets + 1
    assert value("agentroom_viewers") == viewers + 1
    assert value("agentroom_snapshots_total", resync="false") == joins + 1
    second, _, _ = await connect_ws(ws_app, str(session.pk), owner)
    await second.next_event()
    assert value("agentroom_websocket_connections") == sockets + 2
    await second.close()
    assert value("agentroom_websocket_connections") == sockets + 1
    await ws.close()
    assert value("agentroom_websocket_connections") == sockets
    assert value("agentroom_viewers") == viewers


async def test_a_refused_socket_is_counted_by_close_code_and_leaves(ws_app, session):
    sockets, refused = value("agentroom_websocket_connections"), value(
        "agentroom_socket_closes_total", code="4401"
    )
    ws, _, _ = await connect_ws(ws_app, str(session.pk), None)
    with pytest.raises(ConnectionError):
        await ws.recv()
    assert ws.close_code == 4401
    assert value("agentroom_socket_closes_total", code="4401") == refused + 1
    await ws.c.send_input({"type": "websocket.disconnect", "code": 4401})
    await ws.c.wait(2)
    assert value("agentroom_websocket_connections") == sockets


async def test_a_slow_viewer_close_is_counted_4409(ws_app, session, owner, settings):
    settings.WS_SEND_BUFFER_EVENTS = 2
    sid = str(session.pk)
    slow = value("agentroom_socket_closes_total", code="4409")
    ws, _, _ = await connect_ws(ws_app, sid, owner)
    await ws.next_event()
    for n in range(6):
        await publish(session_id=sid, event="token_stream", node_id="a",
                      data={"chunk": f"w{n} ", "agent_id": "a", "node_id": "a", "is_thinking": False})
    await ws.until(lambda e: e["seq"] == 6)
    await ws.c.send_to(text_data=json.dumps({"cmd": "ping", "data": {"last_seq": 1}, "id": "p"}))
    with pytest.raises(ConnectionError):
        while True:
            await ws.recv()
    assert ws.close_code == 4409
    assert value("agentroom_socket_closes_total", code="4409") == slow + 1


async def test_published_delivered_and_batched_frames(ws_app, session, owner):
    sid = str(session.pk)
    ws, _, _ = await connect_ws(ws_app, sid, owner)
    await ws.next_event()
    published = value("agentroom_events_published_total", event="token_stream")
    delivered = value("agentroom_events_delivered_total")
    sent = value("agentroom_websocket_messages_sent_total")
    publisher = get_publisher()
    futures = [
        publisher.publish_nowait(session_id=sid, event="token_stream", node_id="a",
                                 data={"chunk": f"w{n} ", "agent_id": "a", "node_id": "a",
                                       "is_thinking": False})
        for n in range(40)
    ]
    await asyncio.gather(*futures)
    await ws.until(lambda e: e["seq"] == 40)
    await asyncio.sleep(0)
    assert value("agentroom_events_published_total", event="token_stream") == published + 40
    assert value("agentroom_events_delivered_total") == delivered + 40
    messages = value("agentroom_websocket_messages_sent_total") - sent
    assert messages == len(ws.frame_sizes) - 1  # every message the socket got, less the snapshot
    assert 1 <= messages < 40  # one flush, fanned out as batch frames
    await ws.close()


async def test_a_reconnect_with_last_seq_is_a_replay(ws_app, session, owner):
    sid = str(session.pk)
    for n in range(3):
        await publish(session_id=sid, event="token_stream", node_id="a",
                      data={"chunk": f"w{n} ", "agent_id": "a", "node_id": "a", "is_thinking": False})
    replays, joins = value("agentroom_replays_total"), value("agentroom_snapshots_total", resync="false")
    ws, _, _ = await connect_ws(ws_app, sid, owner, query="?last_seq=1")
    assert [(await ws.next_event())["seq"] for _ in range(2)] == [2, 3]
    assert value("agentroom_replays_total") == replays + 1
    assert value("agentroom_snapshots_total", resync="false") == joins
    await ws.close()
    resyncs = value("agentroom_snapshots_total", resync="true")
    ws, _, _ = await connect_ws(ws_app, sid, owner, query="?last_seq=99")  # ahead of the log
    assert (await ws.next_event())["event"] == "snapshot"
    assert value("agentroom_snapshots_total", resync="true") == resyncs + 1
    await ws.close()


async def test_a_lost_layer_message_is_refilled_and_counted(ws_app, session, owner, monkeypatch):
    sid = str(session.pk)
    ws, _, _ = await connect_ws(ws_app, sid, owner)
    await ws.next_event()

    async def say(n: int) -> None:
        await publish(session_id=sid, event="token_stream", node_id="a",
                      data={"chunk": f"w{n} ", "agent_id": "a", "node_id": "a", "is_thinking": False})

    await say(1)
    await ws.until(lambda e: e["seq"] == 1)
    refills = value("agentroom_gap_refills_total", source="layer")
    import realtime.publisher as publisher_module

    real = publisher_module.broadcast

    async def lose(frames: Any) -> None:
        return None

    monkeypatch.setattr(publisher_module, "broadcast", lose)
    await say(2)  # stored, never broadcast
    monkeypatch.setattr(publisher_module, "broadcast", real)
    await say(3)
    await ws.until(lambda e: e["seq"] == 3)
    assert [e["seq"] for e in ws.events if e["seq"] is not None] == [1, 2, 3]
    assert value("agentroom_gap_refills_total", source="layer") == refills + 1
    await ws.close()
