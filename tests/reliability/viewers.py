"""Viewers for the real-process scenarios: ``websockets`` clients that behave like a browser
tab as far as delivery goes (seq bookkeeping, reconnect with ``?last_seq=N``, fail-over to the
next web process, acknowledging heartbeat, fold of everything applied), and the helpers that
start, wait for and stop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from realtime.state import fold  # pure Python, no Django needed
from tests.reliability.cluster import Web

TERMINAL_EVENTS = ("execution:completed", "execution:failed", "execution:stopped")


def _ts(raw: str) -> float:
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()


def unpack(frame: dict[str, Any]) -> list[dict[str, Any]]:
    return frame["data"]["events"] if frame["event"] == "batch" else [frame]


async def _small_socket(port: int, rcvbuf: int) -> Any:
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


LIVE_VIEWERS: set[Viewer] = set()  # started and not stopped (stopped when a scenario ends)


def stopping_viewers(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a scenario: whatever happens, the viewers it started are stopped."""
    import functools

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        finally:
            await stop_viewers(list(LIVE_VIEWERS))

    return wrapper


@dataclass(eq=False)
class Viewer:
    """A browser tab, as far as delivery goes: seq bookkeeping, reconnect with last_seq,
    fail-over to the next server, heartbeat ping, fold of everything applied."""

    name: str
    servers: list[Web]
    session_id: str
    cookie: str
    server_index: int = 0
    max_queue: int = 16
    rcvbuf: int = 0  # > 0: a small socket receive buffer (a slow reader fills it fast)
    compression: str | None = "deflate"  # None: no permessage-deflate
    heartbeat: float = 15.0
    last_seq: int = -1
    base_state: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    dups: int = 0
    gaps: int = 0
    resyncs: int = 0
    reconnects: int = 0
    failed_connects: int = 0
    closes: list[tuple[float, int | None, str]] = field(default_factory=list)
    latencies: list[tuple[float, int, float]] = field(default_factory=list)  # (recv wall, seq, latency)
    replies: list[dict[str, Any]] = field(default_factory=list)
    connected_at: list[tuple[float, int]] = field(default_factory=list)  # (wall, server port)
    terminal: bool = False

    def __post_init__(self) -> None:
        self.reading = asyncio.Event()
        self.reading.set()
        self.stopping = False
        self.changed = asyncio.Event()
        self.ws: Any = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"viewer-{self.name}")
        LIVE_VIEWERS.add(self)

    async def stop(self) -> None:
        LIVE_VIEWERS.discard(self)
        self.stopping = True
        self.reading.set()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def send(self, cmd: str, data: dict[str, Any] | None = None, cid: str | None = None) -> bool:
        ws = self.ws
        if ws is None:
            return False
        try:
            await ws.send(json.dumps({"cmd": cmd, "data": data or {}, "id": cid or uuid.uuid4().hex[:8]}))
            return True
        except Exception:
            return False

    async def wait_seq(self, seq: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.last_seq < seq:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
        return True

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        attempt = 0
        while not self.stopping:
            web = self.servers[self.server_index % len(self.servers)]
            query = f"?last_seq={self.last_seq}" if self.last_seq >= 0 else ""
            url = f"{web.ws}/ws/sessions/{self.session_id}/{query}"
            code: int | None = None
            reason = ""
            opened = False
            extra: dict[str, Any] = {}
            try:
                if self.rcvbuf:
                    extra["sock"] = await _small_socket(web.port, self.rcvbuf)
                async with connect(
                    url, additional_headers={"Cookie": f"sessionid={self.cookie}", "Origin": web.base},
                    open_timeout=10, max_size=None, max_queue=self.max_queue, ping_interval=None,
                    close_timeout=2, compression=self.compression, **extra,
                ) as ws:
                    opened = True
                    self.ws = ws
                    self.connected_at.append((time.time(), web.port))
                    self.connected.set()
                    if self.closes:
                        self.reconnects += 1
                    attempt = 0
                    beat = asyncio.get_running_loop().create_task(self._heartbeat(ws))
                    try:
                        while True:
                            if not self.reading.is_set():
                                await self.reading.wait()
                            raw = await ws.recv()
                            if self._on_frame(raw):  # a gap: reconnect with last_seq
                                await ws.close(1000)
                    finally:
                        beat.cancel()
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                reason = f"connect failed: {exc.__class__.__name__}: {exc}"[:200]
                if isinstance(exc, InvalidStatus):
                    code = exc.response.status_code
            except asyncio.CancelledError:
                raise
            finally:
                self.ws = None
                self.connected.clear()
            if self.stopping:
                return
            self.closes.append((time.time(), code, reason))
            if not opened:
                self.failed_connects += 1
                self.server_index += 1  # a load balancer would send us to another process
            attempt += 1
            await asyncio.sleep(min(0.1 * 2 ** min(attempt, 5), 2.0))

    async def _heartbeat(self, ws: Any) -> None:
        n = 0
        while True:
            await asyncio.sleep(self.heartbeat)
            n += 1
            with contextlib.suppress(Exception):
                # as the page does: acknowledge what was applied (a stalled reader -> 4409)
                await ws.send(json.dumps({"cmd": "ping", "data": {"last_seq": max(self.last_seq, 0)},
                                          "id": f"hb{n}"}))

    def _on_frame(self, raw: str | bytes) -> bool:
        """Apply one frame; True if a gap was seen (the caller reconnects)."""
        now = time.time()
        frame = json.loads(raw)
        gap = False
        for env in unpack(frame):
            name = env["event"]
            if name == "snapshot":
                data = env["data"]
                if self.last_seq < 0 or data["resync"]:
                    self.resyncs += int(bool(data["resync"]))
                    self.base_state = data["state"]
                    self.events = []
                    self.last_seq = data["last_seq"]
                    self.terminal = data["state"]["status"] in ("completed", "failed", "stopped")
                continue
            seq = env["seq"]
            if seq is None:
                if name in ("ack", "error"):
                    self.replies.append(env)
                continue
            if seq <= self.last_seq:
                self.dups += 1
                continue
            if seq != self.last_seq + 1:
                self.gaps += seq - self.last_seq - 1
                gap = True
                break
            self.last_seq = seq
            self.events.append(env)
            self.latencies.append((now, seq, now - _ts(env["timestamp"])))
            if name in TERMINAL_EVENTS:
                self.terminal = True
        self.changed.set()
        return gap

    # ------------------------------------------------------------------ results
    def state(self) -> dict[str, Any]:
        return fold(self.events, self.base_state)


async def fresh_snapshot(web: Web, session_id: str, cookie: str) -> dict[str, Any]:
    """The snapshot a new viewer gets now (the server's fold of the whole log)."""
    async with connect(
        f"{web.ws}/ws/sessions/{session_id}/",
        additional_headers={"Cookie": f"sessionid={cookie}", "Origin": web.base},
        open_timeout=10, max_size=None,
    ) as ws:
        async with asyncio.timeout(20):
            while True:
                # The snapshot may come inside a batch (with a presence frame, say).
                for env in unpack(json.loads(await ws.recv())):
                    if env["event"] == "snapshot":
                        return env["data"]


async def start_viewers(viewers: list[Viewer], timeout: float = 30) -> None:
    for v in viewers:
        v.start()
    deadline = time.monotonic() + timeout
    while any(v.last_seq < 0 for v in viewers):
        if time.monotonic() > deadline:
            raise TimeoutError("viewers did not get their snapshots")
        await asyncio.sleep(0.05)


async def wait_viewers(viewers: list[Viewer], heads: dict[str, int], timeout: float) -> None:
    await asyncio.gather(*(v.wait_seq(heads[v.session_id], timeout) for v in viewers))


async def stop_viewers(viewers: list[Viewer]) -> None:
    await asyncio.gather(*(v.stop() for v in viewers), return_exceptions=True)


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


def latency_between(viewers: list[Viewer], since: float, until: float = 1e18) -> list[float]:
    """Latencies of the events *published* (envelope timestamp) in [since, until)."""
    return [lat for v in viewers for recv, _, lat in v.latencies if since <= recv - lat < until]
