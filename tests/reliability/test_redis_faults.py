"""Redis goes away and comes back: the channel layer reconnects, events flow again, and
every viewer ends with the complete transcript (missed events recovered from the event log).

The first test restarts a real (private) redis-server under two daphne processes and a
worker (tests/reliability/scenarios.py ``scenario_redis``). The in-process tests pin down what
a restart does to one process's hub with a channel layer that behaves like channels_redis
across an outage (``RestartableLayer``), and the last ones check the project's Redis layer
configuration against the real Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import runpy
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.conf import settings as django_settings

from realtime.publisher import publish
from sessions_app import services
from tests.conftest import connect_ws
from tests.reliability.backends import SHARED_REDIS_DB, SHARED_REDIS_PORT, check_shared_redis
from tests.reliability.scenarios import scenario_redis

# --------------------------------------------------------------------------- real processes


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_redis_restarted_mid_run_every_viewer_ends_complete(tmp_path: Path) -> None:
    """redis-server SIGKILLed mid-run and started again empty (no persistence): viewers on
    two daphne processes, a command sent and a viewer joining during the outage; every
    viewer ends at the log head, no gap, no duplicate, transcript = rows = snapshot."""
    check_shared_redis()
    result = await scenario_redis(tmp_path, mode="restart", per_web=2, sessions=1,
                                  tokens=100, rate=40, outage=2.0, first_joiner=False)
    print("\n" + json.dumps(result, default=str))
    assert result["problems"] == []
    assert set(result["statuses"].values()) == {"completed"}
    assert result["dups"] == 0 and result["gaps"] == 0
    assert result["viewers"] == 5  # 2 per process + the viewer that joined during the outage


# --------------------------------------------------------------------------- one process


class RestartableLayer:
    """An in-memory channel layer behaving like channels_redis across a Redis outage: while
    ``down`` every call raises ConnectionError; ``restart()`` forgets every group membership
    and queued message (a Redis without persistence) and fails the receives in flight (their
    connection was reset)."""

    extensions = ["groups"]

    def __init__(self) -> None:
        self.groups: dict[str, set[str]] = defaultdict(set)
        self.queues: dict[str, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self.down = False
        self.epoch = 0

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    async def new_channel(self, prefix: str = "specific") -> str:
        return f"{prefix}.fake!{uuid.uuid4().hex}"

    async def group_add(self, group: str, channel: str) -> None:
        self._check()
        self.groups[group].add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self._check()
        self.groups[group].discard(channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self._check()
        for channel in list(self.groups.get(group, ())):
            self.queues[channel].put_nowait(message)

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self._check()
        self.queues[channel].put_nowait(message)

    async def receive(self, channel: str) -> dict[str, Any]:
        self._check()
        epoch = self.epoch
        getter = asyncio.ensure_future(self.queues[channel].get())
        try:
            while True:
                done, _ = await asyncio.wait({getter}, timeout=0.02)
                if getter in done:
                    return getter.result()
                if self.epoch != epoch or self.down:
                    raise ConnectionError("Connection closed by server.")
        finally:
            getter.cancel()

    def restart(self) -> None:
        self.groups.clear()
        self.queues.clear()
        self.epoch += 1


@pytest.fixture
def layer(monkeypatch: pytest.MonkeyPatch) -> RestartableLayer:
    fake = RestartableLayer()
    monkeypatch.setattr("realtime.hub.get_channel_layer", lambda *a, **k: fake)
    monkeypatch.setattr("realtime.publisher.get_channel_layer", lambda *a, **k: fake)
    return fake


@pytest.fixture
async def session(owner: Any) -> Any:
    return await database_sync_to_async(services.session_create)(
        owner=owner, workflow_slug="demo", title="Room"
    )


async def _token(session_id: str, n: int) -> int:
    return await publish(session_id=session_id, event="token_stream", node_id="brief",
                         data={"chunk": f"w{n} ", "agent_id": "moderator", "node_id": "brief",
                               "is_thinking": False})


async def _connect_or_retry(ws_app: Any, session_id: str, user: Any, layer: RestartableLayer) -> Any:
    """Connect while Redis is down; if refused, connect again once it is back (as the page
    does). Returns a socket that got its snapshot."""
    ws, _, _ = await connect_ws(ws_app, session_id, user)
    try:
        first = await ws.next_event(timeout=1)
        assert first["event"] == "snapshot"
        layer.down = False
        return ws
    except Exception:  # refused (closed, or the consumer failed): retry after the outage
        layer.down = False
    ws, _, _ = await connect_ws(ws_app, session_id, user)
    assert (await ws.next_event())["event"] == "snapshot"
    return ws


@pytest.mark.django_db(transaction=True)
async def test_viewer_joining_while_redis_is_down_gets_live_events_once_it_is_back(
        ws_app: Any, session: Any, owner: Any, layer: RestartableLayer) -> None:
    sid = str(session.pk)
    layer.down = True
    ws = await _connect_or_retry(ws_app, sid, owner, layer)
    seq = await _token(sid, 1)
    event = await ws.until(lambda e: e["seq"] is not None, timeout=6)
    assert event["seq"] == seq
    await ws.close()


@pytest.mark.django_db(transaction=True)
async def test_a_refused_connection_does_not_count_against_the_socket_limit(
        ws_app: Any, session: Any, owner: Any, layer: RestartableLayer, settings: Any) -> None:
    settings.WS_MAX_SOCKETS_PER_USER = 1
    sid = str(session.pk)
    layer.down = True
    ws, _, _ = await connect_ws(ws_app, sid, owner)
    with contextlib.suppress(Exception):
        await ws.next_event(timeout=1)
    # The socket is gone (closed by the server, or given up by the page): a server tells
    # the application so with websocket.disconnect.
    with contextlib.suppress(Exception):
        await ws.c.disconnect()
    layer.down = False
    again, _, _ = await connect_ws(ws_app, sid, owner)
    first = await again.next_event(timeout=5)
    assert first["event"] == "snapshot", again.close_code
    await again.close()


@pytest.mark.django_db(transaction=True)
async def test_hub_joins_its_groups_again_after_a_redis_restart(
        ws_app: Any, session: Any, owner: Any, layer: RestartableLayer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("realtime.hub.TAIL_CHECK_SECONDS", 3600.0)  # only the layer may deliver
    sid = str(session.pk)
    ws, _, _ = await connect_ws(ws_app, sid, owner)
    assert (await ws.next_event())["event"] == "snapshot"
    first = await _token(sid, 0)
    assert (await ws.until(lambda e: e["seq"] is not None))["seq"] == first
    layer.restart()

    async def keep_publishing() -> int:
        n = 0
        for n in range(1, 21):  # 6 s: a restarted hub has joined again long before
            await _token(sid, n)
            await asyncio.sleep(0.3)
        return n

    publisher = asyncio.create_task(keep_publishing())
    try:
        # One long wait (a communicator's receive timeout kills the application).
        got = await ws.until(lambda e: e["seq"] is not None, timeout=7)
    finally:
        sent = await publisher
    assert got["seq"] > first
    last = first + sent
    while ws.events[-1]["seq"] is None or ws.events[-1]["seq"] < last:
        await ws.until(lambda e: e["seq"] is not None, timeout=5)
    seqs = [e["seq"] for e in ws.events if e["seq"] is not None]
    assert seqs == list(range(first, last + 1))  # what the layer lost was refilled from the log
    await ws.close()


@pytest.mark.django_db(transaction=True)
async def test_hub_refreshes_its_group_memberships(
        ws_app: Any, session: Any, owner: Any, layer: RestartableLayer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A membership that vanished without a failed receive (channels_redis's group_expiry)
    is added again by the maintenance loop."""
    monkeypatch.setattr("realtime.hub.TAIL_CHECK_SECONDS", 3600.0)  # only the layer may deliver
    monkeypatch.setattr("realtime.hub.GROUP_REFRESH_SECONDS", 0.5)
    sid = str(session.pk)
    ws, _, _ = await connect_ws(ws_app, sid, owner)
    assert (await ws.next_event())["event"] == "snapshot"
    layer.groups.clear()  # expired: no error anywhere, the hub just stops getting messages
    await asyncio.sleep(2.5)  # a refresh has run
    seq = await _token(sid, 1)
    assert (await ws.until(lambda e: e["seq"] is not None, timeout=5))["seq"] == seq
    await ws.close()


# --------------------------------------------------------------------------- layer configuration


async def _close_layer(layer: Any) -> None:
    close = getattr(layer, "close_pools", None)  # core layer; the pub/sub layer has no pools
    if close is not None:
        await close()


def _project_layer(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The channel layer config/settings.py builds for REDIS_URL (shared Redis, db 12): its
    BACKEND class with its CONFIG."""
    from django.utils.module_loading import import_string

    check_shared_redis()
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{SHARED_REDIS_PORT}/{SHARED_REDIS_DB}")
    monkeypatch.setenv("VAR_DIR", str(django_settings.VAR_DIR))
    config = runpy.run_path(str(Path(django_settings.BASE_DIR) / "config" / "settings.py"))
    layer_config = config["CHANNEL_LAYERS"]["default"]
    assert "redis" in layer_config["BACKEND"].lower()
    return import_string(layer_config["BACKEND"])(**layer_config.get("CONFIG", {}))


@pytest.mark.redis
@pytest.mark.parametrize("kind", ["pubsub", "core"])
async def test_an_idle_receive_does_not_raise(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """B4: the pub/sub layer's receive waits on a local queue; the core layer's socket
    timeout (15 s) outlasts its 5 s BZPOPMIN."""
    monkeypatch.setenv("CHANNEL_LAYER", kind)
    layer = _project_layer(monkeypatch)
    channel = await layer.new_channel()
    try:
        with pytest.raises(TimeoutError) as caught:
            await asyncio.wait_for(layer.receive(channel), 6.5)
        assert type(caught.value) is TimeoutError  # asyncio's, not redis's
    finally:
        await _close_layer(layer)


@pytest.mark.redis
async def test_a_burst_of_layer_calls_does_not_run_out_of_connections(
        monkeypatch: pytest.MonkeyPatch) -> None:
    layer = _project_layer(monkeypatch)
    group = f"reliability-{uuid.uuid4().hex}"
    try:
        results = await asyncio.gather(
            *(layer.group_send(group, {"type": "x"}) for _ in range(150)), return_exceptions=True
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
    finally:
        await _close_layer(layer)
