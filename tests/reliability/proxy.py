"""A TCP proxy we control, to cut a service (Redis, PostgreSQL) off and bring it back.

The shared Redis and PostgreSQL servers are used by other people's tests and must never be
stopped; instead the processes under test talk to them through this proxy, which a test
can cut and restore:

    proxy = TcpProxy(5432).start()          # listens on 127.0.0.1:<proxy.port>
    ... DATABASE_URL=postgres://postgres@127.0.0.1:{proxy.port}/db ...
    proxy.cut()        # every open connection is reset (RST), new ones are reset at once
    proxy.cut("hang")  # open connections stall, new ones are accepted and never answered
    proxy.restore()    # new connections are forwarded again
    proxy.lose_commit_reply(b'"sessions_app_tokenusage"')
                       # the next PostgreSQL transaction whose statements contain that text:
                       # its COMMIT reaches the server, the client's connection is reset
                       # before the reply (the server committed, the client cannot know)
    proxy.stop()

The proxy runs its own asyncio loop in a daemon thread, so it works the same from
synchronous scripts, from pytest tests and from async tests (it never blocks their loop).
It only ever connects to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from typing import Any

MODES = ("reset", "hang")


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0): the peer sees 'connection reset', as when a server dies."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(Exception):
        writer.transport.abort()


class TcpProxy:
    """Forward 127.0.0.1:port -> 127.0.0.1:target_port until cut."""

    def __init__(self, target_port: int, *, port: int = 0, target_host: str = "127.0.0.1") -> None:
        if target_host not in ("127.0.0.1", "localhost"):
            raise ValueError("the proxy only targets the loopback interface")
        self.target_host = "127.0.0.1"
        self.target_port = target_port
        self.port = port
        self.mode: str | None = None  # None: forwarding; "reset" or "hang": cut
        self.accepted = 0
        self.refused = 0
        self.cuts = 0
        self.commit_marker: bytes | None = None  # see lose_commit_reply
        self.commit_replies_lost = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._held: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ control (any thread)
    def start(self) -> TcpProxy:
        self._thread = threading.Thread(target=self._main, name=f"proxy-{self.target_port}", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("proxy did not start")
        if self._error is not None:
            raise RuntimeError(f"proxy failed: {self._error!r}")
        return self

    def cut(self, mode: str = "reset") -> None:
        """Sever the link: existing connections are reset ("reset") or frozen ("hang")."""
        if mode not in MODES:
            raise ValueError(mode)
        self._call(self._cut, mode)

    def restore(self) -> None:
        """Forward new connections again (held ones are reset: their peers reconnect)."""
        self._call(self._restore)

    def lose_commit_reply(self, marker: bytes) -> None:
        """Arm a one-time cut between a COMMIT and its reply (see the module docstring)."""
        self.commit_marker = marker

    def stop(self) -> None:
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            self._call(self._close_all)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, fn: Any, *args: Any) -> Any:
        assert self._loop is not None, "proxy not started"

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # ------------------------------------------------------------------ loop thread
    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._server.close()
            with contextlib.suppress(Exception):
                loop.run_until_complete(self._server.wait_closed())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def _cut(self, mode: str) -> None:
        self.mode = mode
        self.cuts += 1
        for client, upstream in list(self._pairs):
            if mode == "reset":
                _abort(client)
                if upstream is not None:
                    _abort(upstream)
            else:  # hang: stop moving bytes both ways; the sockets stay open
                for writer in (client, upstream):
                    if writer is not None:
                        with contextlib.suppress(Exception):
                            writer.transport.pause_reading()
        if mode == "reset":
            self._pairs.clear()

    def _restore(self) -> None:
        self.mode = None
        for client, upstream in list(self._pairs):
            # Connections frozen by "hang" are reset now: a frozen connection that wakes up
            # mid-protocol would only confuse both ends.
            _abort(client)
            if upstream is not None:
                _abort(upstream)
        self._pairs.clear()
        for writer in list(self._held):
            _abort(writer)
        self._held.clear()

    def _close_all(self) -> None:
        for client, upstream in list(self._pairs):
            _abort(client)
            if upstream is not None:
                _abort(upstream)
        self._pairs.clear()
        for writer in list(self._held):
            _abort(writer)
        self._held.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "reset":
            self.refused += 1
            _abort(writer)
            return
        if self.mode == "hang":
            self.refused += 1
            self._held.add(writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port), 5
            )
        except (OSError, TimeoutError):
            _abort(writer)
            return
        if self.mode is not None:  # cut while we were connecting
            _abort(writer)
            _abort(up_writer)
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._client_pipe(reader, up_writer, writer),
                                 self._pipe(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    async def _client_pipe(self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter,
                           client: asyncio.StreamWriter) -> None:
        """Client to server, watching for the armed COMMIT (PostgreSQL sends BEGIN, the
        statements and COMMIT as text inside its protocol messages)."""
        transaction = b""

        async def watch(data: bytes) -> bool:
            nonlocal transaction
            if self.commit_marker is None:
                return True
            transaction = data[data.rindex(b"BEGIN"):] if b"BEGIN" in data else transaction + data
            if b"COMMIT" not in data or self.commit_marker not in transaction:
                return True
            self.commit_marker = None
            self.commit_replies_lost += 1
            upstream.write(data)
            await upstream.drain()
            _abort(client)  # the reply will find no one to go to
            await asyncio.sleep(1)  # let the server commit before we close
            return False

        await self._pipe(reader, upstream, watch)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    watch: Any = None) -> None:
        """Copy until EOF; ``watch(data)`` may take a chunk over (returns False to stop)."""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if watch is not None and not await watch(data):
                    break
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(Exception):
                if writer.can_write_eof():
                    writer.write_eof()


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.3):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")
