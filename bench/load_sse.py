"""AG-UI viewers for the load client: one ``GET /agui/sessions/<id>/events`` stream each.

Like ``load.Viewer`` (same counters, same latency histogram, same ``finish`` rules), over
server-sent events instead of a WebSocket: an ``asyncio.Protocol`` sends the request with
the login cookie (a first stream starts with the snapshot, like a page: the watch stream
numbers that run by the seq it starts at, ``<session>:<seq>``; a reconnect sends
``Last-Event-ID``), decodes the chunked body and reads, for every AG-UI event
that carries an SSE ``id:`` (the last one made from each of our events), the seq and the
event's ``timestamp`` (epoch milliseconds, set when our event was published) with one
regular expression per chunk. A stream that ends without ``RUN_FINISHED`` (a cut-off ends
with ``RUN_ERROR``) or drops reconnects with ``Last-Event-ID``.

SSE has no way back to the server, so the flood's acknowledgements go out of band: each
viewer's progress is a UDP datagram ``<session> <viewer> <seq>`` to the port the bench
server listens on (``bench/asgi.py``, ``BENCH_ACK_PORT``), at the same interval as the
WebSocket viewers' ``ping``.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import urlsplit

from bench.load import HIST_MS, Shared, Stats

_ID_RE = re.compile(rb'id: (\d+)\ndata: \{"type":"[A-Z_]+","timestamp":(\d+)')
_STARTED_AT = re.compile(rb'"type":"RUN_STARTED","threadId":"[^"]*","runId":"[^"]*:(\d+)"')
_FINISHED, _ERROR = b'"type":"RUN_FINISHED"', b'"type":"RUN_ERROR"'


class Acks:
    """One UDP socket per load process for every SSE viewer's acknowledgements."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=("127.0.0.1", self.port))

    def send(self, session_id: str, key: str, seq: int) -> None:
        if self.transport is not None:
            self.transport.sendto(f"{session_id} {key} {seq}".encode())


class SseViewer(asyncio.Protocol):
    """One AG-UI watch stream: request, chunked body, SSE ids and timestamps, reconnects."""

    def __init__(self, shared: Shared, *, url: str, cookie: str, session_id: str, key: str,
                 acks: Acks | None, ack: bool = True) -> None:
        self.shared = shared
        self.url, self.cookie, self.session_id, self.key = url, cookie, session_id, key
        self.acks = acks
        self.ack = ack and acks is not None
        self.stats = Stats()
        self.last = -1
        self.acked = -2
        self.expect: int | None = None
        self.done_event = False
        self.finished = asyncio.Event()
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._head = b""  # response head until its blank line
        self._body = b""  # undecoded chunked body
        self._sse = b""  # decoded text after the last complete SSE event
        self._in_body = False
        self._over = False  # the response's last chunk came

    async def connect(self) -> None:
        parts = urlsplit(self.url)
        self.closed, self._in_body, self._over = False, False, False
        self._head = self._body = self._sse = b""
        self.open = asyncio.get_running_loop().create_future()
        await asyncio.get_running_loop().create_connection(lambda: self, parts.hostname,
                                                           parts.port or 80)
        await self.open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        parts = urlsplit(self.url)
        resume = f"Last-Event-ID: {self.last}\r\n" if self.last >= 0 else ""
        self.transport.write(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Cookie: sessionid={self.cookie}\r\nAccept: text/event-stream\r\n"
            f"{resume}\r\n".encode())

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed, self.closed = self.closed, True
        if not self.open.done():
            self.open.set_exception(ConnectionError(f"connection lost: {exc}"))
        elif not was_closed:
            self._ended(1006)

    def data_received(self, data: bytes) -> None:
        if not self._in_body:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4:]
            status = head.split(b" ", 2)[1]
            if status != b"200" or b"chunked" not in head.lower():
                self.open.set_exception(ConnectionError(f"stream refused: HTTP {status.decode()}"))
                return
            self._in_body = True
            self.open.set_result(None)
        self._body += data
        self._dechunk()

    def _dechunk(self) -> None:
        body, out = self._body, []
        while True:
            line = body.find(b"\r\n")
            if line < 0:
                break
            size = int(body[:line].split(b";", 1)[0], 16)
            if size == 0:  # the response ended (the session's end, or a cut-off)
                body = b""
                self._over = True
                break
            if len(body) < line + 2 + size + 2:
                break
            out.append(body[line + 2:line + 2 + size])
            body = body[line + 2 + size + 2:]
        self._body = body
        if out:
            self._events(b"".join(out))
        if self._over and not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self._ended(1000)

    def _events(self, text: bytes) -> None:
        text = self._sse + text
        cut = text.rfind(b"\n\n") + 2
        self._sse, text = text[cut:], text[:cut]
        if not text:
            return
        if self.last < 0:  # a first stream: the snapshot's run id says at which seq it starts
            started = _STARTED_AT.search(text)
            if started is None:
                return
            self.last = int(started.group(1))
        stats, shared = self.stats, self.shared
        now = time.time()
        stats.frames += 1
        stats.bytes += len(text)
        items = _ID_RE.findall(text)
        if items:
            if not stats.first_recv:
                stats.first_recv = now
            stats.last_recv = now
            counts, last, worst, n = shared.hist.counts, self.last, 0.0, 0
            for raw_seq, raw_ts in items:
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
                lat = now - int(raw_ts) / 1000.0
                worst = max(worst, lat)
                ms = int(lat * 1000.0)
                counts[ms if 0 <= ms < HIST_MS else (0 if ms < 0 else HIST_MS)] += 1
            self.last = last
            stats.events += n
            shared.hist.n += n
            stats.max_latency_ms = max(stats.max_latency_ms, worst * 1000.0)
        finished, error = text.rfind(_FINISHED), text.rfind(_ERROR)
        if finished >= 0 or error >= 0:  # what the stream ends with, if it ends now
            self.done_event = finished > error
        if self.expect is not None and self.last >= self.expect:
            self.finished.set()

    def _ended(self, code: int) -> None:
        self.stats.closes.append(code)
        if self.done_event or self.finished.is_set() or (
                self.expect is not None and self.last >= self.expect):
            self.finished.set()
            return
        self.stats.reconnects += 1
        asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        for attempt in range(20):
            await asyncio.sleep(min(0.05 * (attempt + 1), 0.5))
            try:
                await self.connect()
                return
            except Exception:
                continue
        self.finished.set()

    def send_ack(self, seq: int) -> None:
        if self.acks is not None:
            self.acks.send(self.session_id, self.key, seq)

    def send_text(self, text: str) -> None:
        """An SSE stream cannot send commands (``start`` goes through ``/bench/start``)."""

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.finished.set()
            self.transport.close()


def make(shared: Shared, target: dict[str, Any], index: int, acks: Acks | None) -> SseViewer:
    return SseViewer(shared, url=target["url"], cookie=target.get("cookie", ""),
                     session_id=target["session"], key=f"{id(shared)}-{target['session'][:8]}-{index}",
                     acks=acks, ack=bool(target.get("ack", True)))
