"""What each of our events becomes on a live AG-UI stream, translated once for every watch
stream that started at the same point.

AG-UI gives each client its own message ids and state deltas, so a stream folds our events
into its own translator. But that translator's output depends only on where the stream
started: two watch streams of a session that took their snapshot at the same seq hold equal
translators event by event (ids come from the state, never at random). So the watch streams
of a session that started at the same seq share one ``LiveTranslation``: the first stream to
need a seq translates it, the others take the text it made (docs/PERFORMANCE.md, AG-UI
stream: translating per client was most of a busy meeting's CPU with AG-UI clients). A POST
stream (its own run id) and a resumed stream (``Last-Event-ID``) translate for themselves.

A shared translation keeps the text of a seq until every stream of it has taken it (a
stream that stops reading is cut off by the slow-reader rule, and leaves).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ag_ui.core import BaseEvent, RunErrorEvent, RunFinishedEvent, RunStartedEvent
from ag_ui.encoder import EventEncoder

from realtime.agui.translate import Outcome, Translator
from realtime.timestamps import epoch_ms

_ENCODER = EventEncoder()


def sse(event: BaseEvent, seq: int | None = None) -> str:
    text = _ENCODER.encode(event)
    return text if seq is None else f"id: {seq}\n{text}"


def finish_event(thread_id: str, run_id: str, outcome: Outcome) -> BaseEvent:
    if outcome.kind == "error":
        return RunErrorEvent(message=outcome.error, code="execution_failed")
    body: dict[str, Any] = {"thread_id": thread_id, "run_id": run_id, "usage": outcome.usage or None}
    if outcome.kind == "interrupt":
        body["outcome"] = {"type": "interrupt", "interrupts": outcome.interrupts}
    elif outcome.kind == "cancelled":
        body["outcome"] = {"type": "cancelled"}
    return RunFinishedEvent.model_validate(body)


@dataclass
class LiveTranslation:
    """One stream's (or several same-start watch streams') translation of live events."""

    translator: Translator
    session_id: str
    thread_id: str
    run_id: str
    in_run: bool
    watch: bool

    def texts_for(self, envelope: dict[str, Any]) -> tuple[str, bool]:
        """The SSE text for one of our events ("" for none) and whether the stream ends there."""
        events, outcome = self.translator.translate(envelope)
        if not events and outcome is None:
            return "", False
        stamp = epoch_ms(envelope["timestamp"])  # when our event was published
        seq = envelope["seq"]
        texts = []
        if not self.in_run:
            self.run_id = f"{self.session_id}:{seq}"
            texts.append(sse(RunStartedEvent(thread_id=self.thread_id, run_id=self.run_id,
                                             timestamp=stamp)))
            self.in_run = True
        for index, event in enumerate(events):
            event.timestamp = stamp
            texts.append(sse(event, seq if index == len(events) - 1 and outcome is None else None))
        ends = False
        if outcome is not None:
            finish = finish_event(self.thread_id, self.run_id, outcome)
            finish.timestamp = stamp
            texts.append(sse(finish, seq))
            ends = not self.watch or outcome.kind != "interrupt"
            self.in_run = False
        return "".join(texts), ends


@dataclass
class SharedTranslation:
    """A ``LiveTranslation`` for the watch streams of a session started at the same seq."""

    live: LiveTranslation
    last: int  # the last seq translated
    made: dict[int, tuple[str, bool]] = field(default_factory=dict)
    oldest: int = 0  # the lowest seq whose text is still kept
    at: dict[int, int] = field(default_factory=dict)  # each stream's last seq taken

    def texts_for(self, stream: int, envelope: dict[str, Any]) -> tuple[str, bool] | None:
        """The text for this seq (translated now if it is the next one); None if it is gone
        (cannot happen while every stream takes every seq in order; the caller resumes)."""
        seq = envelope["seq"]
        self.at[stream] = seq
        made = self.made.get(seq)
        if made is not None:
            return made
        if seq != self.last + 1:
            return None
        made = self.made[seq] = self.live.texts_for(envelope)
        self.last = seq
        if seq % PRUNE_EVERY == 0:
            self._prune()
        return made

    def _prune(self) -> None:
        """Forget the text every stream has taken (checked every ``PRUNE_EVERY`` seqs)."""
        low = min(self.at.values(), default=self.last)
        for seq in range(self.oldest, low + 1):
            self.made.pop(seq, None)
        self.oldest = max(self.oldest, low + 1)


PRUNE_EVERY = 256
_SHARED: dict[tuple[str, int], SharedTranslation] = {}


def join_shared(live: LiveTranslation, head: int, stream: int) -> SharedTranslation:
    """The shared translation of the watch streams of this session that started at ``head``
    (``live``, a stream's own, becomes it if there is none yet)."""
    key = (live.session_id, head)
    shared = _SHARED.get(key)
    if shared is None:
        shared = _SHARED[key] = SharedTranslation(live=live, last=head, oldest=head + 1)
    shared.at[stream] = head
    return shared


def leave_shared(shared: SharedTranslation, head: int, stream: int) -> None:
    shared.at.pop(stream, None)
    key = (shared.live.session_id, head)
    if not shared.at and _SHARED.get(key) is shared:
        del _SHARED[key]
