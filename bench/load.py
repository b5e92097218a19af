"""Load client: many logged-in WebSocket viewers in one process, checked event by event.

Each viewer is an ``asyncio.Protocol`` driving the ``websockets`` Sans-I/O client
(``websockets.client.ClientProtocol``): the handshake (``Cookie`` and ``Origin`` headers), frame
parsing and the answers to pings and closes are the library's; there is no task, queue or
future per message, so one client process can follow hundreds of thousands of events per
second (the asyncio client of ``websockets`` costs ~5x more per message and would be the
bottleneck). uvloop is used when installed.

For every viewer it counts, by ``seq``: events received, duplicates, gaps (seq skipped) and
events still missing at the end (the driver tells each viewer the final seq of its session);
frames and bytes; and the publish-to-receive latency of every event (receive wall clock minus
the envelope ``timestamp``, 1 ms resolution) into one histogram per process. A viewer closed
with 4409 (too slow) or dropped reconnects with ``?last_seq=`` and is caught up from the
event log, as the page does; those reconnects are counted.

Parsing: ``--parse regex`` (default) reads ``timestamp`` and ``seq`` of every envelope with one
compiled regular expression per frame (the envelope's key order is fixed by
``realtime.protocol.envelope``: event, data, timestamp, node_id, seq, session_id; a quote
inside a JSON string is escaped, so the pattern cannot match inside a chunk); ``--parse json``
decodes every frame fully (slower; the smoke test checks both agree).

Usage (normally driven by ``bench/run.py``): ``load.py SPEC.json``; the process connects,
prints ``{"ready": ...}``, then obeys commands read from stdin, one JSON object per line:
``{"cmd": "start"}`` (each session's first viewer sends ``start_session``),
``{"cmd": "finish", "expect": {session_id: final_seq}, "timeout": s}`` (wait until every viewer
has its session's final seq, then print the report and exit), ``{"cmd": "rss"}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import resource
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Origin
from websockets.uri import parse_uri

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.reliability.latency import HIST_MS, Histogram  # noqa: E402

# "timestamp":"…","node_id":null|"…","seq":N — only logged events have a numeric seq.
_EVENT_RE = re.compile(
    rb'"timestamp":"([^"]*)","node_id":(?:null|"(?:[^"\\]|\\.)*"),"seq":(\d+)'
)
_SNAPSHOT = b'{"event":"snapshot"'
_DONE_RE = re.compile(rb'"event":"execution:(?:completed|failed|stopped)"')


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


@dataclass
class Stats:
    events: int = 0
    dups: int = 0
    gaps: int = 0
    frames: int = 0
    bytes: int = 0
    reconnects: int = 0
    closes: list[int] = field(default_factory=list)
    first_recv: float = 0.0
    last_recv: float = 0.0
    max_latency_ms: float = 0.0
    gap_at: list[tuple[int, int]] = field(default_factory=list)  # (last seen, next seen)


class Shared:
    """Per process: the latency histogram and a parse cache for timestamps."""

    def __init__(self, parse: str) -> None:
        self.hist = Histogram()
        self.ts_cache: dict[bytes, float] = {}
        self.parse = parse
        self.changed = asyncio.Event()

    def ts(self, raw: bytes) -> float:
        value = self.ts_cache.get(raw)
        if value is None:
            if len(self.ts_cache) > 200_000:
                self.ts_cache.clear()
            value = datetime.fromisoformat(raw.decode()).timestamp()
            self.ts_cache[raw] = value
        return value


class Viewer(asyncio.Protocol):
    """One WebSocket viewer: handshake, frames, seq bookkeeping, reconnect on 4409."""

    def __init__(self, shared: Shared, *, url: str, cookie: str, origin: str, slow: float = 0.0,
                 ack: bool = True):
        self.shared = shared
        self.ack = ack  # False: never acknowledges (a slow reader must not hold a flood back)
        self.url = url
        self.cookie = cookie
        self.origin = origin
        self.slow = slow  # > 0: pause reading for `slow` seconds every 2*slow seconds
        self.stats = Stats()
        self.last = -1  # last seq applied; -1 until the snapshot told us where we are
        self.expect: int | None = None
        self.done_event = False
        self.open = asyncio.get_running_loop().create_future()
        self.finished = asyncio.Event()
        self.transport: asyncio.Transport | None = None
        self.proto: ClientProtocol | None = None
        self.fragments: list[bytes] = []
        self.closed = False
        self.acked = -2

    # -------------------------------------------------------------- connection
    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        parts = urlsplit(self.url)
        query = f"?last_seq={self.last}" if self.last >= 0 else ""
        self.proto = ClientProtocol(
            parse_uri(self.url + query), origin=Origin(self.origin), max_size=None
        )
        self.closed = False
        self.open = loop.create_future()
        if self.slow > 0:
            # a slow reader with a small receive buffer: the kernel does not absorb its backlog
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
            sock.setblocking(False)
            await loop.sock_connect(sock, (parts.hostname, parts.port or 80))
            await loop.create_connection(lambda: self, sock=sock)
        else:
            await loop.create_connection(lambda: self, parts.hostname, parts.port or 80)
        await self.open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        assert self.proto is not None
        request = self.proto.connect()
        if self.cookie:
            request.headers["Cookie"] = f"sessionid={self.cookie}"
        self.proto.send_request(request)
        self._flush()
        if self.slow > 0:
            asyncio.get_running_loop().call_later(self.slow, self._pause)

    def _pause(self) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.pause_reading()
        asyncio.get_running_loop().call_later(self.slow, self._resume)

    def _resume(self) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.resume_reading()
        asyncio.get_running_loop().call_later(self.slow, self._pause)

    def _flush(self) -> None:
        assert self.proto is not None and self.transport is not None
        out = self.proto.data_to_send()
        if out:
            data = b"".join(out)
            if data:
                self.transport.write(data)
        if self.proto.close_expected():
            pass

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        if not self.open.done():
            self.open.set_exception(ConnectionError(f"connection lost: {exc}"))
            return
        if was_closed:
            return
        code = self.proto.close_code if self.proto is not None else None
        self._on_close(code if code is not None else 1006)

    def data_received(self, data: bytes) -> None:
        proto = self.proto
        assert proto is not None
        proto.receive_data(data)
        for event in proto.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Response):
                if event.status_code != 101 or proto.handshake_exc is not None:
                    if not self.open.done():
                        self.open.set_exception(
                            ConnectionError(f"handshake refused: HTTP {event.status_code}")
                        )
                elif not self.open.done():
                    self.open.set_result(None)
        self._flush()
        if proto.close_rcvd is not None and not self.closed:
            self.closed = True
            self._on_close(proto.close_rcvd.code)
            if self.transport is not None:
                self.transport.close()

    def _on_close(self, code: int) -> None:
        self.stats.closes.append(code)
        if code in (4409, 1006, 1011, 1012) and not self.finished.is_set():
            self.stats.reconnects += 1
            asyncio.get_running_loop().create_task(self._reconnect())
        else:
            self.finished.set()

    async def _reconnect(self) -> None:
        for attempt in range(20):
            await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
            try:
                await self.connect()
                return
            except Exception:  # server busy: try again
                continue
        self.finished.set()

    # -------------------------------------------------------------- frames
    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT:
            if not frame.fin:
                self.fragments = [frame.data]
                return
            self._message(frame.data)
        elif opcode is Opcode.CONT:
            self.fragments.append(frame.data)
            if frame.fin:
                data = b"".join(self.fragments)
                self.fragments = []
                self._message(data)

    def _message(self, data: bytes) -> None:
        stats = self.stats
        now = time.time()
        stats.frames += 1
        stats.bytes += len(data)
        # A snapshot (first frame, or a resync) may come alone or inside a batch; a JSON
        # string cannot contain an unescaped quote, so this substring is always an envelope.
        if self.last < 0 or _SNAPSHOT in data:
            items = self._parse_json(data, snapshot=True)
        elif self.shared.parse == "json":
            items = self._parse_json(data)
        else:
            items = _EVENT_RE.findall(data)
        if not items:
            if _DONE_RE.search(data):
                self.done_event = True
            return
        if not stats.first_recv:
            stats.first_recv = now
        stats.last_recv = now
        shared = self.shared
        counts = shared.hist.counts
        cache = shared.ts_cache
        last = self.last
        worst = 0.0
        n = 0
        for raw_ts, raw_seq in items:
            seq = int(raw_seq)
            if seq <= last:
                stats.dups += 1
                continue
            if seq != last + 1:
                stats.gaps += seq - last - 1
                if len(stats.gap_at) < 5:
                    stats.gap_at.append((last, seq))
            last = seq
            n += 1
            ts = cache.get(raw_ts)
            if ts is None:
                ts = shared.ts(raw_ts)
            lat = now - ts
            if lat > worst:
                worst = lat
            ms = int(lat * 1000.0)
            counts[ms if 0 <= ms < HIST_MS else (0 if ms < 0 else HIST_MS)] += 1
        self.last = last
        stats.events += n
        shared.hist.n += n
        if worst * 1000.0 > stats.max_latency_ms:
            stats.max_latency_ms = worst * 1000.0
        if _DONE_RE.search(data):
            self.done_event = True
        if self.expect is not None and last >= self.expect:
            self.finished.set()

    def _parse_json(self, data: bytes, snapshot: bool = False) -> list[tuple[bytes, bytes]]:
        frame = json.loads(data)
        inner = frame["data"]["events"] if frame["event"] == "batch" else [frame]
        items = []
        for e in inner:
            if snapshot and e["event"] == "snapshot":
                if self.last < 0 or e["data"].get("resync"):
                    self.last = int(e["data"]["last_seq"])
                    items = []  # anything before the snapshot is covered by it
            elif e["seq"] is not None and self.last >= 0:
                items.append((e["timestamp"].encode(), str(e["seq"]).encode()))
        return items

    # -------------------------------------------------------------- commands
    def send_ack(self, seq: int) -> None:
        self.send_text(f'{{"cmd":"ping","id":"a{seq}"}}')

    def send_text(self, text: str) -> None:
        if self.proto is None or self.transport is None or self.closed:
            return
        self.proto.send_text(text.encode())
        self._flush()

    def close(self) -> None:
        if self.proto is not None and self.transport is not None and not self.closed:
            try:
                self.proto.send_close(1000)
                self._flush()
            except Exception:
                pass
            self.closed = True
            self.finished.set()
            self.transport.close()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _connect_all(viewers: list[Viewer], concurrency: int) -> tuple[int, list[str]]:
    sem = asyncio.Semaphore(concurrency)
    errors: list[str] = []

    async def one(viewer: Viewer) -> bool:
        async with sem:
            for attempt in range(5):
                try:
                    await asyncio.wait_for(viewer.connect(), 30)
                    return True
                except Exception as exc:  # backlog full, server starting: retry
                    if attempt == 4:
                        errors.append(repr(exc))
                    await asyncio.sleep(0.2 * (attempt + 1))
            return False

    results = await asyncio.gather(*(one(v) for v in viewers))
    return sum(results), errors[:5]


async def _ack_loop(viewers: list[Viewer], interval: float) -> None:
    """Acknowledge progress (``ping`` with id ``a<seq>``): the flood's window is the slowest ack."""
    while True:
        for viewer in viewers:
            if viewer.ack and viewer.last >= 0 and viewer.last != viewer.acked and not viewer.closed:
                viewer.acked = viewer.last
                viewer.send_ack(viewer.last)
        await asyncio.sleep(interval)


async def _read_line(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readline()
    if not line:
        return {"cmd": "quit"}
    return json.loads(line)


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main_async(spec: dict[str, Any]) -> None:
    raise_fd_limit(int(spec.get("fd_limit", 20000)))
    shared = Shared(spec.get("parse", "regex"))
    viewers: list[Any] = []
    starters: list[Viewer] = []
    by_session: dict[str, list[Any]] = {}
    acks = None
    if any(t.get("kind") == "sse" for t in spec["targets"]):
        from bench import load_sse

        if spec.get("ack_port"):
            acks = load_sse.Acks(int(spec["ack_port"]))
            await acks.open()
    for target in spec["targets"]:
        group = by_session.setdefault(target["session"], [])
        if target.get("kind") == "sse":  # AG-UI watch streams (bench/load_sse.py)
            for i in range(int(target["count"])):
                viewer = load_sse.make(shared, target, i, acks)
                viewers.append(viewer)
                group.append(viewer)
            continue
        for i in range(int(target["count"])):
            slow = float(target.get("slow", 0.0)) if i < int(target.get("slow_count", 0)) else 0.0
            viewer = Viewer(
                shared, url=target["url"], cookie=target.get("cookie", ""),
                origin=spec.get("origin", "http://127.0.0.1"), slow=slow,
                ack=bool(target.get("ack", True)),
            )
            viewers.append(viewer)
            group.append(viewer)
            if i == 0 and target.get("starter"):
                starters.append(viewer)
    t0 = time.monotonic()
    connected, errors = await _connect_all(viewers, int(spec.get("connect_concurrency", 100)))
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    # wait for every snapshot (seq position known) before saying ready
    deadline = time.monotonic() + 60
    while any(v.last < 0 for v in viewers if v.open.done() and not v.open.exception()):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.02)
    _emit({"ready": connected, "wanted": len(viewers), "errors": errors,
           "connect_seconds": round(time.monotonic() - t0, 3), "pid": os.getpid()})
    cpu0 = _cpu()
    wall0 = time.time()
    ack_ms = float(spec.get("ack_ms", 0))
    background: list[asyncio.Task[None]] = []
    if ack_ms > 0:
        background.append(loop.create_task(_ack_loop(viewers, ack_ms / 1000.0)))
    while True:
        command = await _read_line(reader)
        cmd = command.get("cmd")
        if cmd == "start":
            for n, viewer in enumerate(starters):
                viewer.send_text(json.dumps({"cmd": "start_session", "id": f"start-{n}"}))
            _emit({"started": len(starters)})
        elif cmd == "mark":
            # start of the measured part: frames and bytes of the connect phase (snapshots,
            # presence) are not counted; events and seq checks continue across the mark
            for viewer in viewers:
                viewer.stats.frames = viewer.stats.bytes = 0
            cpu0 = _cpu()
            wall0 = time.time()
            _emit({"marked": True})
        elif cmd == "finish":
            expect: dict[str, int] = command.get("expect") or {}
            for sid, group in by_session.items():
                for viewer in group:
                    if sid in expect:
                        viewer.expect = int(expect[sid])
                        if viewer.last >= viewer.expect:
                            viewer.finished.set()
            timeout = float(command.get("timeout", 30))
            waits = [v.finished.wait() for v in viewers if v.open.done() and not v.open.exception()]
            if waits:
                try:
                    await asyncio.wait_for(asyncio.gather(*waits), timeout)
                except TimeoutError:
                    pass
            wall1 = time.time()
            cpu1 = _cpu()
            per_client = []
            for sid, group in by_session.items():
                final = expect.get(sid)
                for viewer in group:
                    s = viewer.stats
                    missing = max(0, final - viewer.last) if final is not None and viewer.last >= 0 else (
                        final or 0)
                    per_client.append(
                        {"s": sid[:8], "events": s.events, "dups": s.dups, "gaps": s.gaps,
                         "missing": missing, "frames": s.frames, "bytes": s.bytes,
                         "reconnects": s.reconnects, "first": s.first_recv, "last": s.last_recv,
                         "max_ms": round(s.max_latency_ms, 1), "closes": s.closes[-3:],
                         "gap_at": s.gap_at, "at": viewer.last}
                    )
            _emit({
                "report": True,
                "clients": per_client,
                "hist": shared.hist.sparse(),
                "cpu_seconds": round(cpu1 - cpu0, 3),
                "wall_seconds": round(wall1 - wall0, 3),
                "rss": _rss(),
            })
            for viewer in viewers:
                viewer.close()
            await asyncio.sleep(0.2)
            return
        elif cmd == "rss":
            _emit({"rss": _rss()})
        elif cmd == "quit":
            for viewer in viewers:
                viewer.close()
            return


def _rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def main() -> None:
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    try:
        import uvloop

        uvloop.run(main_async(spec))
    except ImportError:
        asyncio.run(main_async(spec))


if __name__ == "__main__":
    main()
