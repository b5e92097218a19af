"""Partial text of every streaming agent of a process, saved together about once a second.

The admin shows a streaming message's text so far; the event log is the truth and viewers
never read this. Each agent used to write its own checkpoint every ``PARTIAL_SAVE_SECONDS``
(a transaction with a row lock, per agent): with hundreds of agents per worker that was most
of the database's work. Now the agents of one event loop register their open message here
and one task writes every changed text in one transaction per interval. A lost checkpoint is
harmless (the next one, or the node's end, writes the text); it is never retried.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings

from realtime.layer import per_loop
from workflows.coalescer import Coalescer
from workflows.store import get_store

log = logging.getLogger(__name__)


@dataclass
class _Watched:
    session_id: str
    fence: int | None
    coalescer: Coalescer
    saved: tuple[int, int] = (0, 0)  # stored events of each kind when last saved


class PartialSaves:
    """One per event loop: ``watch`` an open message while its node streams, ``forget`` it
    before the node's end writes the final text."""

    def __init__(self) -> None:
        self.watched: dict[int, _Watched] = {}
        self.task: asyncio.Task[None] | None = None

    def watch(self, *, message_id: int, session_id: str, fence: int | None,
              coalescer: Coalescer) -> None:
        self.watched[message_id] = _Watched(session_id, fence, coalescer)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._loop(), name="partial-saves")

    def forget(self, message_id: int | None) -> None:
        self.watched.pop(message_id, None)

    def _due(self) -> list[dict]:
        saves = []
        for message_id, item in self.watched.items():
            marker = item.coalescer.stored_counts()
            if marker == item.saved:
                continue
            item.saved = marker
            saves.append({"session_id": item.session_id, "fence": item.fence,
                          "message_id": message_id, "text": item.coalescer.text,
                          "thinking": item.coalescer.thinking_text})
        return saves

    async def _loop(self) -> None:
        while self.watched:
            await asyncio.sleep(settings.PARTIAL_SAVE_SECONDS)
            saves = self._due()
            if not saves:
                continue
            try:
                await database_sync_to_async(get_store().messages_save_partial)(saves=saves)
            except Exception as exc:  # the next interval or the node's end writes the text
                log.warning("saving %d partial messages failed (%s)", len(saves), exc)


partial_saves = per_loop(PartialSaves)


class LiveUsage:
    """One per event loop: the live usage of every streaming agent, written together.

    An agent ``report``s its usage so far every ``USAGE_INTERVAL_SECONDS`` (the latest report
    of a node replaces an unwritten earlier one); a task writes whatever is pending, at most
    twice a second, in one transaction (``usage_progress_many``), after every chunk those
    figures count is in the log. Before its node ends an agent waits in ``settled`` so no
    live figure lands after the final one. A failed write is not retried: the next
    interval, or the node's end, brings newer figures."""

    PERIOD_SECONDS = 0.5

    def __init__(self) -> None:
        self.pending: dict[tuple[str, str], tuple[dict, Coalescer]] = {}
        self.writing: dict[tuple[str, str], asyncio.Future[None]] = {}
        self.task: asyncio.Task[None] | None = None

    def report(self, report: dict, coalescer: Coalescer) -> None:
        self.pending[(report["session_id"], report["node_id"])] = (report, coalescer)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._loop(), name="live-usage")

    async def settled(self, session_id: str, node_id: str) -> None:
        """Drop the node's unwritten report and wait for one being written."""
        self.pending.pop((session_id, node_id), None)
        writing = self.writing.get((session_id, node_id))
        if writing is not None:
            await asyncio.shield(writing)

    async def _loop(self) -> None:
        while self.pending:
            await asyncio.sleep(min(self.PERIOD_SECONDS, settings.USAGE_INTERVAL_SECONDS))
            batch, self.pending = self.pending, {}
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for key in batch:
                self.writing[key] = done
            try:
                for _, coalescer in batch.values():
                    coalescer.flush()
                for _, coalescer in batch.values():
                    await coalescer.settle()
                await database_sync_to_async(get_store().usage_progress_many)(
                    reports=[report for report, _ in batch.values()])
            except Exception as exc:  # newer figures come with the next interval
                log.warning("live usage of %d nodes not written (%s)", len(batch), exc)
            finally:
                for key in batch:
                    if self.writing.get(key) is done:
                        del self.writing[key]
                done.set_result(None)


live_usage = per_loop(LiveUsage)
