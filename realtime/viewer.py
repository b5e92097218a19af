"""The outgoing side of one socket: what it was sent, what waits, and its writer.

The hub appends ready frames to each local viewer; a writer task (alive only while frames
wait, so an idle socket holds no task) drains them, joining whatever has queued into one
``batch`` frame (a string join, no re-encoding) cut at ``WS_BATCH_MAX_EVENTS`` frames and
``WS_BATCH_MAX_BYTES`` characters. A seq gap holds the live frames and asks the hub to
refill from the log; a viewer that falls more than ``WS_SEND_BUFFER_EVENTS`` behind (frames
waiting here, or sent and not acknowledged by the page's heartbeat) is closed with 4409 and
catches up by replay when it reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from realtime import metrics, protocol

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Close = Callable[[int], Awaitable[None]]


class Viewer:
    """The outgoing side of one socket."""

    __slots__ = (
        "_close",
        "_send",
        "_task",
        "active",
        "allowance",
        "buffered",
        "closed",
        "fill_attempts",
        "filling",
        "last_received",
        "last_seq",
        "limit",
        "on_access_changed",
        "on_gap",
        "pending",
        "session_id",
        "user",
        "user_id",
    )

    def __init__(
        self, *, session_id: str, user: str, send: Send, close: Close, user_id: str = "",
        on_access_changed: Callable[[], None] | None = None,
    ) -> None:
        self.user_id = user_id
        # Called when the user's access may have changed (realtime.revocation).
        self.on_access_changed = on_access_changed
        self.filling = False
        self.fill_attempts = 0
        self.on_gap: Callable[[Viewer], None] | None = None
        self.session_id = session_id
        self.user = user
        self._send = send
        self._close = close
        self.active = False
        self.closed = False
        self.last_seq = 0
        self.buffered: list[tuple[int, str]] = []  # before activation
        self.pending: list[str] = []
        self.limit = settings.WS_SEND_BUFFER_EVENTS
        # Frames of the snapshot/replay still waiting: they do not count against ``limit``
        # (a viewer reconnecting after a 4409 is more than the limit behind by construction).
        self.allowance = 0
        # The writer task exists only while frames wait (an idle socket holds no task).
        self._task: asyncio.Task[None] | None = None
        self.last_received = time.monotonic()

    def push(self, seq: int, text: str) -> None:
        if self.closed:
            return
        if not self.active or self.filling:
            self.buffered.append((seq, text))
            return
        if seq <= self.last_seq:
            return
        if seq > self.last_seq + 1 and self.on_gap is not None:
            # Something between was lost on the way: hold live frames, refill from the log.
            self.filling = True
            self.buffered.append((seq, text))
            self.on_gap(self)
            return
        self.last_seq = seq
        self._enqueue(text)

    def push_run(self, run: list[tuple[int, str]], texts: list[str]) -> None:
        """A run of consecutive seqs (``texts`` its frames): O(1) Python work per viewer.

        The hub fans every layer message out to every local viewer; doing it per event per
        viewer cost more than everything else in a flood (docs/PERFORMANCE.md).
        """
        if self.closed:
            return
        if not self.active or self.filling:
            self.buffered.extend(run)
            return
        last = run[-1][0]
        if last <= self.last_seq:
            return
        first = run[0][0]
        if first > self.last_seq + 1:
            if self.on_gap is None:  # not yet wired to the log: per-event rules
                for seq, text in run:
                    self.push(seq, text)
                return
            self.filling = True
            self.buffered.extend(run)
            self.on_gap(self)
            return
        skip = self.last_seq + 1 - first
        self.last_seq = last
        self.pending.extend(texts[skip:] if skip else texts)
        if self._over_limit():
            return
        self._kick()

    def refill(self, missing: list[tuple[int, str]]) -> None:
        """Deliver what the log had, then the held live frames, in seq order."""
        items = sorted([*missing, *self.buffered])
        self.buffered = []
        self.filling = False
        for index, (seq, text) in enumerate(items):
            if seq <= self.last_seq:
                continue
            if seq > self.last_seq + 1:
                self.fill_attempts += 1
                if self.fill_attempts > 3 or self.on_gap is None:
                    log.warning("cannot fill %s after seq %s: closing for replay",
                                self.session_id, self.last_seq)
                    self.overflow()
                    return
                self.filling = True
                self.buffered = items[index:]
                self.on_gap(self)
                return
            self.last_seq = seq
            self._enqueue(text)
        self.fill_attempts = 0

    def push_ephemeral(self, text: str) -> None:
        if self.active and not self.closed:
            self._enqueue(text)

    def _enqueue(self, text: str) -> None:
        self.pending.append(text)
        if self._over_limit():
            return
        self._kick()

    def _over_limit(self) -> bool:
        """Close a viewer whose live frames outgrow the buffer (its catch-up is not counted)."""
        if len(self.pending) <= self.limit + self.allowance:
            return False
        self.pending = []
        self.overflow()
        return True

    def acknowledge(self, seq: int) -> None:
        """The client has applied every event up to ``seq`` (the page says so in its heartbeat).

        Under uvicorn a reader that stops shows as frames piling up in ``pending``; daphne never
        blocks a send (Twisted buffers every frame in process memory), so there only the client
        can tell. More than the send buffer sent but not acknowledged is the same 4409.
        """
        if self.active and not self.closed and self.last_seq - seq > self.limit + self.allowance:
            self.pending = []
            self.overflow()

    def overflow(self) -> None:
        log.warning("viewer of %s too slow: closing with 4409", self.session_id)
        self.closed = True
        asyncio.get_running_loop().create_task(self._close(4409))

    def activate(self, *, last_seq: int, initial: list[str], missing: list[tuple[int, str]]) -> None:
        """Start sending: the snapshot/replay first, then what queued meanwhile (deduplicated).

        The snapshot/replay and the events read from the log are allowed on top of the send
        buffer until the writer takes them, so a long replay is not mistaken for a slow reader.
        """
        self.pending = list(initial)
        self.allowance = len(initial) + len(missing)
        self.last_seq = last_seq
        self.active = True
        self.refill(missing)
        self._kick()

    def stop(self) -> None:
        self.closed = True
        if self._task is not None:
            self._task.cancel()

    def _kick(self) -> None:
        """Write what waits now, in the caller's turn of the loop (an eager task).

        The hub pushes a flush to every viewer of the session in one loop; a socket that can
        take the frames gets them right there, without a task scheduled per viewer (creating
        and running one per viewer cost half as much as the write itself in the busy
        meeting's profile: docs/PERFORMANCE.md). Only a socket whose transport pushes back
        suspends, and goes on as an ordinary task.
        """
        if self._task is None and not self.closed:
            task = asyncio.Task(self._write_loop(), loop=asyncio.get_running_loop(),
                                eager_start=True)
            if not task.done():
                self._task = task

    async def _write_loop(self) -> None:
        """Send what waits, as few frames as possible, then end (the next push starts another)."""
        try:
            while self.pending and not self.closed:
                items, self.pending = self.pending, []
                self.allowance = 0  # the catch-up (if any) has left the buffer
                messages = _MESSAGES.of(self.session_id, items)
                for text in messages:
                    await self._send({"type": "websocket.send", "text": text})
                metrics.frames_sent(events=len(items), messages=len(messages))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.closed = True
            if not _socket_gone(exc):
                # The server refused the frame: close, so that the client reconnects instead
                # of waiting on a silent socket. (A gone socket's disconnect handler detaches it.)
                log.warning("send to a viewer of %s failed: closing it", self.session_id,
                            exc_info=True)
                asyncio.get_running_loop().create_task(self._close(1011))
        finally:
            self._task = None


def _socket_gone(exc: BaseException) -> bool:
    """The client went away (uvicorn: ClientDisconnected, an OSError; autobahn: Disconnected)."""
    return isinstance(exc, OSError) or type(exc).__name__ == "Disconnected"


class _Messages:
    """The messages that carry a list of waiting frames, joined once for every viewer.

    The viewers of a session are pushed the same frame objects in the same order, so they
    usually have the same list waiting when they write: the last list and its messages are
    kept, and a viewer whose list is equal (a comparison of identical objects, in C) reuses
    them. This keeps the batch frame's encoding per flush, not per recipient.
    """

    __slots__ = ("items", "messages", "session_id")

    def __init__(self) -> None:
        self.session_id = ""
        self.items: list[str] = []
        self.messages: list[str] = []

    def of(self, session_id: str, items: list[str]) -> list[str]:
        if len(items) == 1:
            return items
        if session_id == self.session_id and items == self.items:
            return self.messages
        head, tail = protocol.batch_parts(session_id)
        messages = [chunk[0] if len(chunk) == 1 else head + ",".join(chunk) + tail
                    for chunk in _batches(items)]
        self.session_id, self.items, self.messages = session_id, items, messages
        return messages


_MESSAGES = _Messages()


def _batches(items: list[str]) -> list[list[str]]:
    """Consecutive runs of at most WS_BATCH_MAX_EVENTS frames and WS_BATCH_MAX_BYTES characters
    (a frame larger than that goes alone)."""
    most, cap = settings.WS_BATCH_MAX_EVENTS, settings.WS_BATCH_MAX_BYTES
    out: list[list[str]] = []
    run: list[str] = []
    size = 0
    for item in items:
        if run and (len(run) >= most or size + len(item) > cap):
            out.append(run)
            run, size = [], 0
        run.append(item)
        size += len(item) + 1
    if run:
        out.append(run)
    return out
