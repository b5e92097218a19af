"""A session's events as an AG-UI server-sent event stream: from the log, then live.

The stream registers with the process's hub like a WebSocket viewer (``realtime.viewer``:
same gap refill from the log, same slow-reader rule: a client that stops reading is cut off
when ``WS_SEND_BUFFER_EVENTS`` frames wait for it), reads the log, then translates each of
our events (``translate.Translator``) in seq order. The last AG-UI event made from one of
our events carries that event's ``seq`` as its SSE ``id:``, so a client that reconnects with
``Last-Event-ID`` continues exactly after it; each carries AG-UI's ``timestamp``: when our
event was published, in epoch milliseconds. A run (``RUN_STARTED`` ... ``RUN_FINISHED`` or
``RUN_ERROR``) ends the POST stream that drove it; the watch stream goes on across runs
until the session ends.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ag_ui.core import RunErrorEvent, RunStartedEvent
from channels.db import database_sync_to_async
from django.conf import settings

from realtime import metrics
from realtime.agui.live import LiveTranslation, finish_event, join_shared, leave_shared, sse
from realtime.agui.translate import Outcome, Translator, interrupt_of, usage_entries
from realtime.eventlog import read_envelopes
from realtime.hub import get_hub
from realtime.viewer import Viewer
from realtime.vocabulary import EventName, SessionStatus

KEEPALIVE_SECONDS = 15.0
# Events that wait when the stream writes go out in one write (a chunk of the response),
# as a WebSocket viewer's waiting frames go out as one batch frame: one send per event cost
# more than translating it (docs/PERFORMANCE.md, AG-UI stream).
MAX_EVENTS_PER_WRITE = 500
_CLOSED = object()
_read_log = database_sync_to_async(lambda sid: read_envelopes(sid))


class BadLastEventId(ValueError):
    """A ``Last-Event-ID`` that is not a seq of this session's log."""


@dataclass(frozen=True)
class StreamRequest:
    session_id: str
    user: Any
    thread_id: str
    run_id: str | None  # the POST's runId; None: a watch stream (runs numbered by seq)
    after: int | None  # Last-Event-ID: continue after this seq (no snapshot)
    recheck: Any = None  # async callable: False when the client may no longer watch
    cut: asyncio.Event | None = None  # set to cut a client off (realtime.agui.cutoff)


def _finish(request: StreamRequest, run_id: str, outcome: Outcome) -> Any:
    return finish_event(request.thread_id, run_id, outcome)


def _now_outcome(state: dict[str, Any]) -> Outcome | None:
    """A run that has nothing to stream: the session ended, or waits for a person."""
    status = state["status"]
    if status == SessionStatus.COMPLETED:
        return Outcome("success", usage=usage_entries(state))
    if status == SessionStatus.STOPPED:
        return Outcome("cancelled", usage=usage_entries(state))
    if status == SessionStatus.FAILED:
        return Outcome("error", error=state["error"] or "the run failed")
    if state["pending_review"]:
        return Outcome("interrupt", interrupts=[interrupt_of(state["pending_review"])])
    return None


class _Inbox:
    """What the hub hands the stream: our frames, parsed, in order; or the end."""

    def __init__(self, cut: asyncio.Event | None) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=settings.WS_SEND_BUFFER_EVENTS)
        self.close_code: int | None = None
        self.cut = cut

    async def send(self, message: dict[str, Any]) -> None:
        frame = json.loads(message["text"])
        for envelope in frame["data"]["events"] if frame["event"] == EventName.BATCH else [frame]:
            if envelope.get("seq") is not None:  # presence and other ephemeral frames: not ours
                await self.queue.put(envelope)

    async def close(self, code: int) -> None:
        self.close_code = code
        if code == 4409 and self.cut is not None:
            self.cut.set()  # the client is not reading: its response is stuck in the server
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_CLOSED)


async def agui_stream(request: StreamRequest) -> AsyncIterator[str]:
    """The SSE text of one AG-UI stream."""
    hub, inbox = get_hub(), _Inbox(request.cut)
    viewer = Viewer(session_id=request.session_id, user=request.user.get_username(),
                    send=inbox.send, close=inbox.close, user_id=str(request.user.pk))
    if request.recheck is not None:
        viewer.on_access_changed = lambda: asyncio.get_running_loop().create_task(
            _recheck(request, inbox))
    with metrics.open_sse_stream():
        await hub.attach(viewer)
        try:
            async for text in _events(request, hub, viewer, inbox):
                yield text
        finally:
            await hub.detach(viewer)


async def _recheck(request: StreamRequest, inbox: _Inbox) -> None:
    if not await request.recheck():
        await inbox.close(4403)


async def _events(request: StreamRequest, hub: Any, viewer: Viewer, inbox: _Inbox) -> AsyncIterator[str]:
    log = await _read_log(request.session_id)
    head = log[-1]["seq"] if log else 0
    translator = Translator()
    watch = request.run_id is None
    run_id = request.run_id or f"{request.session_id}:{head}"
    opened: int | None = None
    if request.after is not None:
        if not 0 <= request.after <= head:
            yield sse(RunErrorEvent(
                message=f"Last-Event-ID {request.after} is not in this session's log (0..{head})",
                code="bad_last_event_id"))
            return
        opened = translator.prime(log[: request.after])
        backlog = log[request.after:]
        if not backlog and _now_outcome(translator.state) is not None and (
                not watch or translator.state["pending_review"] is None):
            return  # the client has everything up to the end: nothing more will come
        if watch and opened is not None:
            run_id = f"{request.session_id}:{opened}"
    else:
        translator.prime(log)
        backlog = []
        yield sse(RunStartedEvent(thread_id=request.thread_id, run_id=run_id))
        for event in translator.snapshot():
            yield sse(event)
        outcome = _now_outcome(translator.state)
        if outcome is not None and (not watch or outcome.kind != "interrupt"):
            yield sse(_finish(request, run_id, outcome))
            return
    await hub.activate(viewer, last_seq=head, initial=[])
    live = LiveTranslation(translator=translator, session_id=request.session_id,
                           thread_id=request.thread_id, run_id=run_id, watch=watch,
                           in_run=request.after is None or not watch or opened is not None)
    # A watch stream from a snapshot shares its translation with the others started at the
    # same seq (realtime.agui.live); a POST or resumed stream translates for itself.
    shared = join_shared(live, head, id(inbox)) if watch and request.after is None else None
    try:
        async for text in _live(live, shared, id(inbox), inbox, collections.deque(backlog)):
            yield text
    finally:
        if shared is not None:
            leave_shared(shared, head, id(inbox))


async def _live(live: LiveTranslation, shared: Any, stream: int, inbox: _Inbox,
                pending: collections.deque) -> AsyncIterator[str]:
    texts: list[str] = []  # what goes out in the next write: every event already waiting
    while True:
        if pending:
            envelope = pending.popleft()
        elif not inbox.queue.empty():
            envelope = inbox.queue.get_nowait()
        else:
            if texts:
                yield "".join(texts)
                texts = []
                continue  # more may have come while that was written
            try:
                envelope = await asyncio.wait_for(inbox.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
        if envelope is _CLOSED:
            code = inbox.close_code
            reason = "too_slow" if code == 4409 else "forbidden" if code in (4401, 4403) else "closed"
            texts.append(sse(RunErrorEvent(message=f"stream closed ({reason})", code=reason)))
            yield "".join(texts)
            return
        made = live.texts_for(envelope) if shared is None else shared.texts_for(stream, envelope)
        if made is None:  # behind what the shared translation keeps: resume from the log
            texts.append(sse(RunErrorEvent(message="stream closed (too_slow)", code="too_slow")))
            yield "".join(texts)
            return
        text, ends = made
        if text:
            texts.append(text)
        if ends:
            yield "".join(texts)
            return
        if len(texts) >= MAX_EVENTS_PER_WRITE:
            yield "".join(texts)
            texts = []
