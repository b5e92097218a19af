"""One channel-layer subscription per process per session, fanning ready frames out to sockets.

A plain Channels design gives every socket its own channel and makes the layer deliver every
event once per viewer (and drops them when a channel holds ``capacity`` messages). Here the
process joins a session's group once; the frames arrive already encoded and are appended to
each local viewer's outgoing buffer, which a per-viewer writer drains, joining whatever has
queued into one ``batch`` frame. Nothing is dropped: a seq gap (a lost layer message, an
outage, two publishers racing) is refilled from the event log, and a viewer whose buffer
passes its limit is closed with 4409 and catches up by replay when it reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from realtime import groups, protocol
from realtime.eventlog import read_frames
from sessions_app.models import Session

log = logging.getLogger(__name__)

try:
    from redis.exceptions import TimeoutError as _IdleTimeout
except ImportError:  # pragma: no cover - redis is a runtime requirement
    _IdleTimeout = TimeoutError  # type: ignore[misc,assignment]

Send = Callable[[dict[str, Any]], Awaitable[None]]
Close = Callable[[int], Awaitable[None]]

PRESENCE_REFRESH_SECONDS = 20.0
PRESENCE_EXPIRY_SECONDS = 60.0
# Sockets arriving or leaving within this window make one presence update, and only a change
# is sent: announcing every attach to every local viewer was O(viewers^2) frames while a
# thousand viewers joined (docs/PERFORMANCE.md).
PRESENCE_DEBOUNCE_SECONDS = 0.25
MAINTENANCE_SECONDS = 1.0
TAIL_CHECK_SECONDS = 3.0
# Memberships are re-added this often: channels_redis's core layer forgets a group member
# after ``group_expiry`` (a day), and a restarted Redis forgets them all (docs/RELIABILITY.md B3).
GROUP_REFRESH_SECONDS = 300.0
REJOIN_RETRY_SECONDS = 0.5


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
        "on_gap",
        "pending",
        "session_id",
        "user",
    )

    def __init__(self, *, session_id: str, user: str, send: Send, close: Close) -> None:
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
        if self._task is None and not self.closed:
            self._task = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        """Send what waits, as few frames as possible, then end (the next push starts another)."""
        try:
            while self.pending and not self.closed:
                items, self.pending = self.pending, []
                self.allowance = 0  # the catch-up (if any) has left the buffer
                if len(items) == 1:
                    await self._send({"type": "websocket.send", "text": items[0]})
                    continue
                head, tail = _batch_parts(self.session_id)
                for chunk in _batches(items):
                    text = chunk[0] if len(chunk) == 1 else head + ",".join(chunk) + tail
                    await self._send({"type": "websocket.send", "text": text})
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


def _batch_parts(session_id: str) -> tuple[str, str]:
    """``protocol.encode_batch`` split around its event list: one envelope encode per drain."""
    empty = protocol.encode_batch(session_id, [])
    cut = empty.index(_EVENTS_MARKER) + len(_EVENTS_MARKER) - 1
    return empty[:cut], empty[cut:]


_EVENTS_MARKER = '"events":[]'


class _Subscription:
    __slots__ = ("announced", "head", "last_frame_at", "remote", "shown", "viewers")

    def __init__(self) -> None:
        self.viewers: set[Viewer] = set()
        self.head: int | None = None
        self.remote: dict[str, tuple[list[str], float]] = {}
        self.last_frame_at = time.monotonic()
        self.announced: list[str] | None = None  # local users last told to other processes
        self.shown: dict[str, Any] | None = None  # presence last sent to the local viewers


@database_sync_to_async
def _read_missing(session_id: str, after: int, upto: int | None) -> list[tuple[int, str]]:
    return read_frames(session_id, after=after, upto=upto)


@database_sync_to_async
def _heads(session_ids: list[str]) -> dict[str, int]:
    return {
        str(pk): seq
        for pk, seq in Session.objects.filter(pk__in=session_ids).values_list("id", "last_seq")
    }


class Hub:
    def __init__(self) -> None:
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.sessions: dict[str, _Subscription] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._start_lock = asyncio.Lock()
        self.sockets_per_user: dict[str, int] = {}
        self._fills: set[asyncio.Task[None]] = set()
        self._presence_due: set[str] = set()

    # ----------------------------------------------------------------- lifecycle
    async def _ensure_started(self) -> None:
        if self.channel is not None:
            return
        async with self._start_lock:
            if self.channel is None:
                # The default prefix, like the executor's: channels_redis's core layer has one
                # receive lock per process but one Redis list per prefix, so two prefixes make
                # each receive wait for the other's idle BZPOPMIN (docs/RELIABILITY.md B4).
                channel = await self.layer.new_channel()
                loop = asyncio.get_running_loop()
                self._tasks = [
                    loop.create_task(self._receive_loop(channel), name="hub-receive"),
                    loop.create_task(self._maintenance_loop(), name="hub-maintenance"),
                ]
                self.channel = channel

    async def attach(self, viewer: Viewer) -> None:
        """Subscribe (if first local viewer) before the caller reads the log: nothing is missed."""
        await self._ensure_started()
        subs = self.sessions.get(viewer.session_id)
        if subs is None:
            # Join first: if the layer is down this raises and nothing is registered, so the
            # next viewer tries to join again instead of relying on a subscription that never was.
            await self.layer.group_add(groups.session_group(viewer.session_id), self.channel)
            subs = self.sessions.setdefault(viewer.session_id, _Subscription())
        subs.viewers.add(viewer)

    async def activate(self, viewer: Viewer, *, last_seq: int, initial: list[str]) -> None:
        missing: list[tuple[int, str]] = []
        if viewer.buffered and viewer.buffered[0][0] > last_seq + 1:
            missing = await _read_missing(
                viewer.session_id, last_seq, viewer.buffered[0][0] - 1
            )
        viewer.on_gap = self._fill_viewer
        viewer.activate(last_seq=last_seq, initial=initial, missing=missing)
        self._presence_changed(viewer.session_id)

    def _fill_viewer(self, viewer: Viewer) -> None:
        async def fill() -> None:
            try:
                first = viewer.buffered[0][0] if viewer.buffered else viewer.last_seq + 1
                viewer.refill(await _read_missing(viewer.session_id, viewer.last_seq, first - 1))
            except Exception:
                log.exception("refill of a viewer failed")
                viewer.overflow()

        task = asyncio.get_running_loop().create_task(fill())
        self._fills.add(task)
        task.add_done_callback(self._fills.discard)

    async def detach(self, viewer: Viewer) -> None:
        viewer.stop()
        subs = self.sessions.get(viewer.session_id)
        if subs is None or viewer not in subs.viewers:
            return
        subs.viewers.discard(viewer)
        if not subs.viewers:
            del self.sessions[viewer.session_id]
            try:
                await self.layer.group_discard(
                    groups.session_group(viewer.session_id), self.channel
                )
            except Exception:
                log.exception("group_discard failed")
            await self._announce_users(viewer.session_id, [])
            return
        self._presence_changed(viewer.session_id)

    # ----------------------------------------------------------------- presence
    def local_users(self, session_id: str) -> list[str]:
        subs = self.sessions.get(session_id)
        return sorted({v.user for v in subs.viewers if v.active}) if subs else []

    def presence(self, session_id: str) -> dict[str, Any]:
        subs = self.sessions.get(session_id)
        users = set(self.local_users(session_id))
        if subs:
            now = time.monotonic()
            for hub_id, (remote_users, seen) in subs.remote.items():
                if hub_id != self.id and now - seen < PRESENCE_EXPIRY_SECONDS:
                    users.update(remote_users)
        return {"count": len(users), "users": sorted(users)}

    def _presence_changed(self, session_id: str) -> None:
        """Someone came or went: update presence once the debounce window has passed."""
        if session_id in self._presence_due:
            return
        self._presence_due.add(session_id)
        asyncio.get_running_loop().call_later(
            PRESENCE_DEBOUNCE_SECONDS, self._presence_timer, session_id
        )

    def _presence_timer(self, session_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._flush_presence(session_id))
        self._fills.add(task)
        task.add_done_callback(self._fills.discard)

    async def _flush_presence(self, session_id: str, *, refresh: bool = False) -> None:
        self._presence_due.discard(session_id)
        subs = self.sessions.get(session_id)
        if subs is None:
            return
        users = self.local_users(session_id)
        if refresh or users != subs.announced:
            subs.announced = users
            await self._announce_users(session_id, users)
        self._send_presence(session_id)

    async def _announce_users(self, session_id: str, users: list[str]) -> None:
        message = {"type": groups.PRESENCE, "sid": session_id, "hub": self.id, "users": users}
        try:
            await self.layer.group_send(groups.session_group(session_id), message)
        except Exception:
            log.exception("presence broadcast failed")

    def _send_presence(self, session_id: str) -> None:
        """Send the presence to the local viewers if it changed since the last time."""
        subs = self.sessions.get(session_id)
        if not subs:
            return
        data = self.presence(session_id)
        if data == subs.shown:
            return
        subs.shown = data
        text = protocol.encode(event="presence", session_id=session_id, data=data)
        for viewer in subs.viewers:
            viewer.push_ephemeral(text)

    def _on_presence(self, message: dict[str, Any]) -> None:
        subs = self.sessions.get(message["sid"])
        if subs is None or message["hub"] == self.id:
            return
        subs.remote[message["hub"]] = (list(message["users"]), time.monotonic())
        self._send_presence(message["sid"])

    # ----------------------------------------------------------------- frames
    async def _on_frames(self, message: dict[str, Any]) -> None:
        session_id = message["sid"]
        subs = self.sessions.get(session_id)
        if subs is None:
            return
        frames = [(int(seq), text) for seq, text in message["frames"]]
        if subs.head is not None and frames and frames[0][0] > subs.head + 1:
            frames = await _read_missing(session_id, subs.head, frames[0][0] - 1) + frames
        self._deliver(subs, frames)

    def _deliver(self, subs: _Subscription, frames: list[tuple[int, str]]) -> None:
        subs.last_frame_at = time.monotonic()
        head = subs.head
        run: list[tuple[int, str]] = []
        for item in frames:
            seq = item[0]
            if head is not None and seq <= head:
                continue
            if run and seq != run[-1][0] + 1:
                self._fan_out(subs, run)
                run = []
            run.append(item)
            head = seq
        subs.head = head
        if run:
            self._fan_out(subs, run)

    @staticmethod
    def _fan_out(subs: _Subscription, run: list[tuple[int, str]]) -> None:
        texts = [text for _, text in run]
        for viewer in list(subs.viewers):
            viewer.push_run(run, texts)

    async def _receive_loop(self, channel: str) -> None:
        """Receive forever. A failed receive means the layer lost its connection, maybe to a
        Redis that restarted empty and forgot every group: join them all again first."""
        rejoin = False
        while True:
            if rejoin:
                await self._rejoin_groups()
                rejoin = False
            try:
                message = await self.layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except _IdleTimeout:
                # redis-py >= 8 may time out an idle blocking read (socket_timeout): nothing
                # was lost, ask again at once (no sleep, no log line).
                continue
            except Exception:
                log.exception("channel layer receive failed; joining the groups again")
                rejoin = True
                await asyncio.sleep(REJOIN_RETRY_SECONDS)
                continue
            await self._handle(message)

    async def _handle(self, message: dict[str, Any]) -> None:
        try:
            kind = message.get("type")
            if kind == groups.FRAMES:
                await self._on_frames(message)
            elif kind == groups.PRESENCE:
                self._on_presence(message)
        except Exception:
            log.exception("hub could not handle a %s message", message.get("type"))

    async def _rejoin_groups(self) -> None:
        """Join every subscribed session's group again, retrying until the layer is back;
        what was published meanwhile comes from the log (gap refill, tail check)."""
        attempts = 0
        while (error := await self._join_all()) is not None:
            if attempts == 0:  # once per outage, not every retry
                log.warning("joining the groups again failed (%s); retrying", error)
            attempts += 1
            await asyncio.sleep(REJOIN_RETRY_SECONDS)
        for session_id in list(self.sessions):
            await self._flush_presence(session_id, refresh=True)

    async def _join_all(self) -> Exception | None:
        """group_add for every subscribed session; the error if the layer refused one."""
        for session_id in list(self.sessions):
            group = groups.session_group(session_id)
            try:
                await self.layer.group_add(group, self.channel)
            except Exception as error:
                return error
            if session_id not in self.sessions:  # its last viewer left meanwhile
                with contextlib.suppress(Exception):
                    await self.layer.group_discard(group, self.channel)
        return None

    async def _maintenance_loop(self) -> None:
        """Idle sockets, presence refresh, group membership refresh, and a tail check that
        refills events lost in an outage."""
        last_presence = last_tail = last_groups = time.monotonic()
        while True:
            await asyncio.sleep(MAINTENANCE_SECONDS)
            try:
                now = time.monotonic()
                for subs in list(self.sessions.values()):
                    for viewer in list(subs.viewers):
                        if (
                            viewer.active
                            and not viewer.closed
                            and now - viewer.last_received > settings.WS_IDLE_TIMEOUT
                        ):
                            viewer.closed = True
                            await viewer._close(4408)
                if now - last_presence > PRESENCE_REFRESH_SECONDS:
                    last_presence = now
                    for session_id in list(self.sessions):
                        await self._flush_presence(session_id, refresh=True)
                if now - last_groups > GROUP_REFRESH_SECONDS:
                    last_groups = now
                    if (error := await self._join_all()) is not None:
                        log.warning("refreshing group memberships failed: %s", error)
                if now - last_tail > TAIL_CHECK_SECONDS and self.sessions:
                    last_tail = now
                    await self._tail_check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("hub maintenance failed")

    async def _tail_check(self) -> None:
        quiet = [
            sid
            for sid, subs in self.sessions.items()
            if subs.head is not None and time.monotonic() - subs.last_frame_at > TAIL_CHECK_SECONDS
        ]
        if not quiet:
            return
        heads = await _heads(quiet)
        for sid in quiet:
            subs = self.sessions.get(sid)
            if subs is not None and subs.head is not None and heads.get(sid, 0) > subs.head:
                self._deliver(subs, await _read_missing(sid, subs.head, None))


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of the running event loop (one per process in production)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
