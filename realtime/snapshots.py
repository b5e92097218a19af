"""What a connecting viewer is sent first: a snapshot, or the exact events it missed.

The snapshot's state is the fold of the event log up to ``last_seq`` (so it is consistent
with the events that follow it). Folds are cached per process and extended incrementally,
so a busy session does not re-read its whole log for every viewer that joins.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any

from django.conf import settings

from realtime import metrics, protocol
from realtime.eventlog import head_seq, read_envelopes, read_frames
from realtime.rooms import get_backend
from realtime.state import fold
from realtime.vocabulary import EventName

_CACHE_SIZE = 256
_cache: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()
_lock = threading.Lock()


def folded_state(session_id: str) -> tuple[int, dict[str, Any]]:
    """(last_seq, state) from the log, reusing the cached fold of earlier events."""
    key = str(session_id)
    with _lock:
        cached = _cache.get(key)
    after, base = cached if cached else (0, None)
    envelopes = read_envelopes(key, after=after)
    if not envelopes and base is not None:
        return after, copy.deepcopy(base)
    state = fold(envelopes, base)
    last_seq = envelopes[-1]["seq"] if envelopes else after
    with _lock:
        _cache[key] = (last_seq, state)
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return last_seq, copy.deepcopy(state)


def snapshot_frame(
    *, session_id: str, can_control: bool, presence: dict[str, Any], resync: bool,
    at_start: bool = False,
) -> tuple[int, str]:
    """The room at the log's head (``at_start``: before its first event)."""
    last_seq, state = (0, fold([])) if at_start else folded_state(session_id)
    backend = get_backend()
    # Read after the log: events after last_seq that it already includes re-apply idempotently.
    state["members"] = backend.members(session_id=session_id)
    data = {
        **backend.describe(session_id=session_id),
        "state": state,
        "presence": presence,
        "last_seq": last_seq,
        "resync": resync,
        "can_control": can_control,
    }
    return last_seq, protocol.encode(event=EventName.SNAPSHOT, session_id=session_id, data=data)


def initial_frames(
    *,
    session_id: str,
    last_seq: int | None,
    can_control: bool,
    presence: dict[str, Any],
) -> tuple[int, list[str]]:
    """(seq the viewer is at, frames to send first): replay after last_seq, else a snapshot."""
    if last_seq is not None:
        head = head_seq(session_id)
        if last_seq <= head and head - last_seq <= settings.REPLAY_MAX_EVENTS:
            frames = read_frames(session_id, after=last_seq)
            if all(seq == last_seq + i + 1 for i, (seq, _) in enumerate(frames)):
                metrics.connection_started(replay=True)
                return (frames[-1][0] if frames else last_seq), [text for _, text in frames]
        metrics.connection_started(replay=False, resync=True)
        return _snapshot_frames(
            session_id=session_id, can_control=can_control, presence=presence, resync=True
        )
    metrics.connection_started(replay=False)
    return _snapshot_frames(
        session_id=session_id, can_control=can_control, presence=presence, resync=False
    )


def _snapshot_frames(
    *, session_id: str, can_control: bool, presence: dict[str, Any], resync: bool
) -> tuple[int, list[str]]:
    """A snapshot; for a long transcript, the empty room and the whole log instead.

    A snapshot is one frame, and daphne (autobahn) refuses to send any frame over its message
    limit (1 MiB by default): the socket then stays silent. The log's events go out in batch
    frames of bounded size, and fold to the same room.
    """
    seq, text = snapshot_frame(
        session_id=session_id, can_control=can_control, presence=presence, resync=resync
    )
    if len(text) <= settings.WS_SNAPSHOT_MAX_BYTES // 4 or (
        len(text.encode()) <= settings.WS_SNAPSHOT_MAX_BYTES or seq > settings.REPLAY_MAX_EVENTS
    ):
        return seq, [text]
    frames = read_frames(session_id, after=0)
    if not frames or any(s != i + 1 for i, (s, _) in enumerate(frames)):
        return seq, [text]
    _, start = snapshot_frame(
        session_id=session_id, can_control=can_control, presence=presence, resync=resync, at_start=True
    )
    return frames[-1][0], [start, *(frame for _, frame in frames)]
