"""One channel-layer subscription per process per session, fanning ready frames out to sockets.

A plain Channels design gives every socket its own channel and makes the layer deliver every
event once per viewer (and drops them when a channel holds ``capacity`` messages). Here the
process joins a session's group once; the frames arrive already encoded and are appended to
each local viewer's outgoing buffer (``realtime.viewer``). Nothing is dropped: a seq gap (a
lost layer message, an outage, two publishers racing) is refilled from the event log, a
periodic tail check catches events lost while nothing else was published, and a viewer whose
buffer passes its limit is closed with 4409 and catches up by replay when it reconnects.
Presence (who watches, across processes) is ``realtime.presence``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from realtime import groups, metrics
from realtime.eventlog import head_seqs, read_frames
from realtime.layer import per_loop, receive_forever
from realtime.presence import PRESENCE_REFRESH_SECONDS, Presence
from realtime.viewer import Viewer

log = logging.getLogger(__name__)

MAINTENANCE_SECONDS = 1.0
TAIL_CHECK_SECONDS = 3.0
# Memberships are re-added this often: channels_redis's core layer forgets a group member
# after ``group_expiry`` (a day), and a restarted Redis forgets them all (docs/RELIABILITY.md B3).
GROUP_REFRESH_SECONDS = 300.0


class _Subscription:
    __slots__ = ("head", "last_frame_at", "viewers")

    def __init__(self) -> None:
        self.viewers: set[Viewer] = set()
        self.head: int | None = None
        self.last_frame_at = time.monotonic()


_read_missing = database_sync_to_async(
    lambda session_id, after, upto: read_frames(session_id, after=after, upto=upto)
)
_heads = database_sync_to_async(head_seqs)


class Hub:
    def __init__(self) -> None:
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.sessions: dict[str, _Subscription] = {}
        self.presence = Presence(process_id=self.id, layer=self.layer, viewers_of=self._viewers_of)
        self._tasks: list[asyncio.Task[None]] = []
        self._start_lock = asyncio.Lock()
        self.sockets_per_user: dict[str, int] = {}
        self._fills: set[asyncio.Task[None]] = set()

    def _viewers_of(self, session_id: str) -> set[Viewer]:
        subs = self.sessions.get(session_id)
        return subs.viewers if subs else set()

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
                await self.layer.group_add(groups.ACCESS_GROUP, channel)
                loop = asyncio.get_running_loop()
                self._tasks = [
                    loop.create_task(
                        receive_forever(
                            layer=self.layer, channel=channel, handle=self._handle,
                            rejoin=self._rejoin_groups, name="hub",
                        ),
                        name="hub-receive",
                    ),
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
            self.presence.track(viewer.session_id)
        if viewer not in subs.viewers:
            subs.viewers.add(viewer)
            metrics.VIEWERS.inc()

    async def activate(self, viewer: Viewer, *, last_seq: int, initial: list[str]) -> None:
        missing: list[tuple[int, str]] = []
        if viewer.buffered and viewer.buffered[0][0] > last_seq + 1:
            missing = await _read_missing(viewer.session_id, last_seq, viewer.buffered[0][0] - 1)
        viewer.on_gap = self._fill_viewer
        viewer.activate(last_seq=last_seq, initial=initial, missing=missing)
        self.presence.changed(viewer.session_id)

    def _fill_viewer(self, viewer: Viewer) -> None:
        async def fill() -> None:
            metrics.gap_refilled(metrics.GapSource.VIEWER)
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
        metrics.VIEWERS.dec()
        if not subs.viewers:
            del self.sessions[viewer.session_id]
            try:
                await self.layer.group_discard(groups.session_group(viewer.session_id), self.channel)
            except Exception:
                log.exception("group_discard failed")
            await self.presence.left(viewer.session_id)
            return
        self.presence.changed(viewer.session_id)

    # ----------------------------------------------------------------- frames
    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == groups.FRAMES:
            await self._on_frames(message)
        elif kind == groups.PRESENCE:
            self.presence.on_message(message)
        elif kind == groups.ACCESS_CHANGED:
            self._on_access_changed(message)
        elif kind == groups.EPHEMERAL:
            for viewer in list(self._viewers_of(message["sid"])):
                viewer.push_ephemeral(message["text"])

    def _on_access_changed(self, message: dict[str, Any]) -> None:
        """Ask that user's sockets (of that session, or all) to check their access again."""
        sessions = [message["sid"]] if message.get("sid") else list(self.sessions)
        for session_id in sessions:
            for viewer in list(self._viewers_of(session_id)):
                if viewer.user_id == message["user_id"] and viewer.on_access_changed is not None:
                    viewer.on_access_changed()

    async def _on_frames(self, message: dict[str, Any]) -> None:
        session_id = message["sid"]
        subs = self.sessions.get(session_id)
        if subs is None:
            return
        frames = [(int(seq), text) for seq, text in message["frames"]]
        if subs.head is not None and frames and frames[0][0] > subs.head + 1:
            metrics.gap_refilled(metrics.GapSource.LAYER)
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

    # ----------------------------------------------------------------- groups
    async def _rejoin_groups(self) -> None:
        """Join every subscribed session's group again (raises while the layer is down);
        what was published meanwhile comes from the log (gap refill, tail check)."""
        if (error := await self._join_all()) is not None:
            raise error
        await self.presence.refresh_all()

    async def _join_all(self) -> Exception | None:
        """group_add for every subscribed session; the error if the layer refused one."""
        try:
            await self.layer.group_add(groups.ACCESS_GROUP, self.channel)
        except Exception as error:
            return error
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

    # ----------------------------------------------------------------- maintenance
    async def _maintenance_loop(self) -> None:
        """Idle sockets, presence refresh, group membership refresh, and a tail check that
        refills events lost in an outage."""
        last_presence = last_tail = last_groups = time.monotonic()
        while True:
            await asyncio.sleep(MAINTENANCE_SECONDS)
            try:
                now = time.monotonic()
                await self._close_idle(now)
                if now - last_presence > PRESENCE_REFRESH_SECONDS:
                    last_presence = now
                    await self.presence.refresh_all()
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

    async def _close_idle(self, now: float) -> None:
        for subs in list(self.sessions.values()):
            for viewer in list(subs.viewers):
                if (
                    viewer.active
                    and not viewer.closed
                    and now - viewer.last_received > settings.WS_IDLE_TIMEOUT
                ):
                    viewer.closed = True
                    await viewer._close(4408)

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
                metrics.gap_refilled(metrics.GapSource.TAIL)
                self._deliver(subs, await _read_missing(sid, subs.head, None))


get_hub = per_loop(Hub)  # the hub of the running event loop (one per process in production)
