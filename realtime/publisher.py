"""The one way to emit a session event, from async code (engine) or sync code (services, admin).

Async path: events queue in memory and a single flusher per event loop stores everything
that queued while the previous insert ran (group commit), then sends one channel-layer
message per session holding the already-encoded frames. Storage happens once per batch, not
per event, and JSON is encoded once per event, never per recipient.

Sync path: the event is inserted in the caller's transaction (outbox style: it commits or
rolls back with the state change it describes) and broadcast on commit.

Database blips: a batch whose insert fails with a transient database error is stored again
(the same batch, so order is kept and later events wait behind it) with back-off, for up to
``STORE_RETRY_SECONDS`` of continuous failure; only then do its futures fail, and whoever
published must act on that (the engine fails the node with the text the log holds).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import (
    InterfaceError,
    OperationalError,
    close_old_connections,
    connection,
    transaction,
)

from realtime import groups, protocol
from realtime.eventlog import (
    FencedOut,
    PendingEvent,
    StoredFrame,
    find_stored,
    make_pending,
    store_events,
)
from realtime.layer import Backoff, group_send_many, per_loop

log = logging.getLogger(__name__)

# The publisher's thread keeps its database connection between batches that follow each
# other within this many seconds (reopening it per batch cost 1-6 ms, more than inserting
# 200 events), then releases it as CONN_MAX_AGE says.
CONNECTION_IDLE_SECONDS = 1.0

# Errors that say the database (or the link to it) is briefly gone, not that the batch is bad.
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)
# How long the database may keep failing before queued events are given up (their futures
# fail). Counted from the first failure of an outage, not per batch, so a long outage does
# not cost this much for every batch queued behind it.
STORE_RETRY_SECONDS = 30.0
RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 2.0


def _layer_message(session_id: str, frames: list[StoredFrame]) -> dict[str, Any]:
    return {
        "type": groups.FRAMES,
        "sid": session_id,
        # tuples of immutables: the in-memory layer's deepcopy returns them without copying
        "frames": tuple((f.seq, f.text) for f in frames),
    }


async def broadcast(frames: list[StoredFrame]) -> None:
    """Send stored frames to every process watching their sessions (one message per session)."""
    by_session: dict[str, list[StoredFrame]] = {}
    for frame in frames:
        by_session.setdefault(frame.session_id, []).append(frame)
    # A layer outage must not lose the log: what could not be sent, hubs refill from it.
    await group_send_many(get_channel_layer(), [
        (groups.session_group(session_id), _layer_message(session_id, items))
        for session_id, items in by_session.items()
    ])


def _drop_connection() -> None:
    # A broken connection may fail to close; Django forgets it either way.
    try:
        connection.close()
    except Exception:
        log.debug("closing a failed database connection raised", exc_info=True)


def _store_in_thread(batch: list[PendingEvent]) -> list[StoredFrame]:
    # The connection stays open between batches (see CONNECTION_IDLE_SECONDS); a batch
    # that failed drops it, so the next attempt starts on a fresh connection.
    try:
        return store_events(batch)
    except Exception:
        _drop_connection()
        raise


def _store_again_in_thread(batch: list[PendingEvent]) -> list[StoredFrame]:
    """A retry: the failed attempt may have committed after all (only the reply to its
    COMMIT was lost), and storing it twice would repeat text in the log; look first."""
    try:
        frames = find_stored(batch)
    except Exception:
        _drop_connection()
        raise
    if frames is not None:
        log.warning("a batch of %d events reported failed was stored after all", len(batch))
        return frames
    return _store_in_thread(batch)


def _release_connection() -> None:
    close_old_connections()


class Publisher:
    """Per event loop: batches events, stores them, then broadcasts them."""

    def __init__(self) -> None:
        self._pending: list[tuple[PendingEvent, asyncio.Future[int]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="eventlog")
        # loop times of the first and the latest failure of the current database outage
        self._failing_since: float | None = None
        self._failed_at = 0.0
        self._gave_up = False  # a batch of the current outage was given up

    def publish_nowait(
        self,
        *,
        session_id: str,
        event: str,
        data: dict[str, Any] | None = None,
        node_id: str | None = None,
        fence: int | None = None,
    ) -> asyncio.Future[int]:
        """Queue an event; the future resolves to its seq once stored and broadcast, or fails
        with ``FencedOut`` if ``fence`` is no longer the session's (``eventlog.set_fence``)."""
        item = make_pending(
            session_id=session_id, event=event, data=data, node_id=node_id, fence=fence
        )
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="publisher")
        return future

    async def publish(
        self,
        *,
        session_id: str,
        event: str,
        data: dict[str, Any] | None = None,
        node_id: str | None = None,
        fence: int | None = None,
    ) -> int:
        return await self.publish_nowait(
            session_id=session_id, event=event, data=data, node_id=node_id, fence=fence
        )

    async def flush(self) -> None:
        """Wait until everything queued so far is stored and broadcast."""
        if self._pending:
            await asyncio.gather(*(f for _, f in self._pending), return_exceptions=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        limit = settings.EVENT_FLUSH_MAX
        holding = False  # the thread holds a connection since the last batch
        # The broadcast of one batch overlaps the insert of the next (the thread waits on
        # the database while the loop talks to the layer); broadcasts and futures still
        # follow batch order, and a batch is sent only once stored.
        sending: asyncio.Task[None] | None = None
        while True:
            if holding:
                try:
                    await asyncio.wait_for(self._wakeup.wait(), CONNECTION_IDLE_SECONDS)
                except TimeoutError:
                    holding = False
                    try:  # idle: let the connection go as CONN_MAX_AGE says
                        await loop.run_in_executor(self._executor, _release_connection)
                    except Exception:
                        log.exception("closing the publisher's database connection failed")
                    continue
            else:
                await self._wakeup.wait()
            self._wakeup.clear()
            holding = True
            while self._pending:
                batch, self._pending = self._pending[:limit], self._pending[limit:]
                try:
                    frames = await self._store(loop, [item for item, _ in batch])
                except Exception as exc:
                    log.exception("storing %d events failed; they are given up", len(batch))
                    if sending is not None:
                        await sending
                        sending = None
                    _fail_futures(batch, exc)
                    continue
                if sending is not None:
                    await sending
                sending = asyncio.Task(_send(batch, frames), loop=loop, eager_start=True)

    async def _store(
        self, loop: asyncio.AbstractEventLoop, items: list[PendingEvent]
    ) -> list[StoredFrame]:
        """Store one batch; a database blip is retried with back-off (this same batch, so
        events keep their order and later ones wait) until the outage has lasted
        STORE_RETRY_SECONDS. Other errors (a bug, a bad event) fail at once."""
        attempt = _store_in_thread
        backoff = Backoff(RETRY_FIRST_DELAY, RETRY_MAX_DELAY)
        while True:
            try:
                frames = await loop.run_in_executor(self._executor, attempt, items)
            except TRANSIENT_DB_ERRORS as exc:
                now = loop.time()
                began = self._outage_began(now)
                if self._gave_up or now + backoff.delay - began > STORE_RETRY_SECONDS:
                    # Once one batch was given up, the others of this outage fail at once.
                    self._gave_up = True
                    raise
                delay = backoff.next()
                log.warning("storing %d events failed (%s); retrying in %.2f s",
                            len(items), exc, delay)
                await asyncio.sleep(delay)
                attempt = _store_again_in_thread
                continue
            self._failing_since = None
            self._gave_up = False
            return frames

    def _outage_began(self, now: float) -> float:
        """When the current run of failures began: a failure long after the last one (no
        batch was tried in between) starts a new outage with a fresh retry budget."""
        if self._failing_since is None or now - self._failed_at > STORE_RETRY_SECONDS:
            self._failing_since = now
            self._gave_up = False
        self._failed_at = now
        return self._failing_since


async def _send(batch: list[tuple[PendingEvent, asyncio.Future[int]]],
                frames: list[StoredFrame]) -> None:
    """Broadcast a stored batch, then resolve its futures: the events are in the log either
    way (a hub refills what the layer lost), so a failed broadcast fails nobody."""
    try:
        await broadcast(frames)
    except Exception:
        log.exception("broadcasting %d stored events failed; viewers will refill from the log",
                      len(frames))
    _resolve_futures(batch, frames)


def _fail_futures(batch: list[tuple[PendingEvent, asyncio.Future[int]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


def _resolve_futures(
    batch: list[tuple[PendingEvent, asyncio.Future[int]]], frames: list[StoredFrame]
) -> None:
    """Frames come back in batch order per session and fence: resolve the futures in that
    order; an event without a frame was refused (its session gone, or its fence moved on)."""
    by_group: dict[tuple[str, int | None], list[int]] = {}
    for frame in frames:
        by_group.setdefault((frame.session_id, frame.fence), []).append(frame.seq)
    taken: dict[tuple[str, int | None], int] = {}
    for item, future in batch:
        group = (item.session_id, item.fence)
        seq_list = by_group.get(group)
        index = taken.get(group, 0)
        taken[group] = index + 1  # a cancelled future still used its seq
        if future.done():
            continue
        if seq_list and index < len(seq_list):
            future.set_result(seq_list[index])
        elif item.fence is not None:
            future.set_exception(FencedOut(f"session {item.session_id}: fence {item.fence} superseded"))
        else:
            future.set_exception(LookupError(f"session {item.session_id} is gone"))


get_publisher = per_loop(Publisher)  # the publisher of the running event loop


async def publish(
    *,
    session_id: str,
    event: str,
    data: dict[str, Any] | None = None,
    node_id: str | None = None,
) -> int:
    """Async: store (batched) and broadcast one event; returns its seq."""
    return await get_publisher().publish(
        session_id=str(session_id), event=event, data=data, node_id=node_id
    )


def publish_sync(
    *,
    session_id: str,
    event: str,
    data: dict[str, Any] | None = None,
    node_id: str | None = None,
) -> int:
    """Sync: store in the caller's transaction, broadcast after it commits; returns seq."""
    item = make_pending(session_id=str(session_id), event=event, data=data, node_id=node_id)
    frames = store_events([item])
    if not frames:
        raise LookupError(f"session {session_id} is gone")
    transaction.on_commit(lambda: _broadcast_sync(frames))
    return frames[0].seq


def publish_many_sync(events: list[dict[str, Any]]) -> int:
    """``publish_sync`` of many events (any sessions: ``session_id``, ``event``, ``node_id``,
    ``data`` each) in one insert of the caller's transaction; how many were stored (an
    event whose session is gone is dropped)."""
    items = [make_pending(session_id=str(e["session_id"]), event=e["event"], data=e["data"],
                          node_id=e.get("node_id")) for e in events]
    frames = store_events(items) if items else []
    if frames:
        transaction.on_commit(lambda: _broadcast_sync(frames))
    return len(frames)


def _broadcast_sync(frames: list[StoredFrame]) -> None:
    try:
        async_to_sync(broadcast)(frames)
    except Exception:
        log.exception("broadcast after commit failed; viewers will refill from the log")


def publish_ephemeral_sync(*, session_id: str, event: str, data: dict[str, Any]) -> None:
    """Sync: send an ephemeral frame (``seq: null``, never logged) to everyone watching the
    session now, once the caller's transaction commits. At most once: a viewer that misses it
    (not connected, a lost layer message) does not get it later; only moments (a shared
    replay's play/pause/seek) travel this way, never state."""
    if event not in protocol.EPHEMERAL_EVENTS:
        raise ValueError(f"{event!r} is not an ephemeral event")
    text = protocol.encode(event=event, session_id=str(session_id), data=data)
    message = {"type": groups.EPHEMERAL, "sid": str(session_id), "text": text}

    def send() -> None:
        try:
            async_to_sync(get_channel_layer().group_send)(groups.session_group(session_id), message)
        except Exception:
            log.exception("ephemeral broadcast failed")

    transaction.on_commit(send)
