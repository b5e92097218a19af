"""Tokens to events: one node's chunks merged for a short window before they are published.

A fast model is not one event per token: chunks of one kind (thinking or answer) are joined
in order for ``TOKEN_COALESCE_MS``; a change of kind flushes first, so the transcript is the
same whatever the window. The coalescer also remembers what the log has stored (what every
viewer was sent), which is the text a node's message keeps whatever happens next.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

from realtime.eventlog import FencedOut
from realtime.publisher import get_publisher
from realtime.vocabulary import EventName
from workflows.providers import Chunk


class EventLogUnavailable(Exception):
    """A token_stream event of the node could not be stored, even after the publisher's
    retries: the node must not complete with text the log (and every viewer) lacks."""


SENT_COMPACT_EVERY = 256


class Coalescer:
    """Merges one node's chunks for a short window so a fast model is not one event per token.

    Chunks of one kind (thinking or answer) are joined in order; a change of kind flushes
    first, so the transcript is identical whatever the window. ``sent_text`` and
    ``sent_thinking`` are what was stored in the event log (and so sent to viewers), filled
    in as the publisher's futures resolve: after a stop the unsent rest is dropped (no
    token_stream may follow a stop) and the stored message keeps exactly what was sent.
    ``failed`` is set when a chunk could not be stored; nothing more is published then.
    """

    def __init__(
        self, *, session_id: str, node_id: str, agent_id: str, window: float, fence: int | None
    ) -> None:
        self.session_id = session_id
        self.fence = fence
        self.node_id = node_id
        self.agent_id = agent_id
        self.window = window
        self.parts: list[str] = []
        self.thinking = False
        self.events = 0
        self.sent_text: list[str] = []
        self.sent_thinking: list[str] = []
        self.stored_answer = 0
        self.stored_thinking = 0
        self.last: asyncio.Future[int] | None = None
        self.failed: BaseException | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, chunk: Chunk) -> None:
        if self.parts and chunk.is_thinking != self.thinking:
            self.flush()
        if not self.parts:
            self.thinking = chunk.is_thinking
            if self.window > 0:
                self._timer = asyncio.get_running_loop().call_later(self.window, self.flush)
        self.parts.append(chunk.text)
        if self.window <= 0:
            self.flush()

    def flush(self) -> None:
        self._cancel_timer()
        if not self.parts:
            return
        if self.failed is not None:  # the log lost a chunk: the node fails, publish no more
            self.parts = []
            return
        text, self.parts = "".join(self.parts), []
        self.events += 1
        self.last = get_publisher().publish_nowait(
            session_id=self.session_id,
            event=EventName.TOKEN_STREAM,
            fence=self.fence,
            node_id=self.node_id,
            data={
                "chunk": text,
                "agent_id": self.agent_id,
                "node_id": self.node_id,
                "is_thinking": self.thinking,
            },
        )
        self.last.add_done_callback(functools.partial(self._stored, text, self.thinking))

    def _stored(self, text: str, thinking: bool, future: asyncio.Future[int]) -> None:
        # Futures resolve in publish order (the publisher keeps it), before anyone awaiting
        # them resumes: after settle() the sent_* lists hold exactly what the log holds.
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.failed = self.failed or error
            return
        if thinking:
            sent = self.sent_thinking
            self.stored_thinking += 1
        else:
            sent = self.sent_text
            self.stored_answer += 1
        sent.append(text)
        if len(sent) >= SENT_COMPACT_EVERY:
            # One string object per event costs ~50 bytes of overhead each for as long as the
            # node streams (a long node: thousands of events); joined, a node costs its text.
            sent[:] = ["".join(sent)]

    def stored_counts(self) -> tuple[int, int]:
        """How many chunks of answer and of thinking the log holds: changes whenever the
        text does (a cheap test for "anything new to checkpoint")."""
        return self.stored_answer, self.stored_thinking

    @property
    def text(self) -> str:
        """The answer the log holds so far."""
        return "".join(self.sent_text)

    @property
    def thinking_text(self) -> str:
        """The thinking the log holds so far."""
        return "".join(self.sent_thinking)

    def check(self) -> None:
        """Raise if a chunk could not be stored: FencedOut if the log refused it (the run was
        taken over), else EventLogUnavailable."""
        if isinstance(self.failed, FencedOut):
            raise self.failed
        if self.failed is not None:
            raise EventLogUnavailable(str(self.failed)) from self.failed

    def discard(self) -> None:
        """Drop what was not sent yet (stop, abandon): nothing more is published."""
        self._cancel_timer()
        self.parts = []

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def drain(self) -> None:
        """Flush and wait until every chunk is stored (before the node-boundary write)."""
        self.flush()
        await self.settle()

    async def settle(self) -> None:
        """Wait until every chunk published so far is stored (without flushing the rest)."""
        if self.last is not None:
            with contextlib.suppress(Exception):
                await self.last
