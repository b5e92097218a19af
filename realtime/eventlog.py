"""The session event log: seq allocation, batched inserts and reads for replay.

seq is allocated inside the insert transaction by advancing ``Session.last_seq`` (a row
lock on PostgreSQL, the database write lock on SQLite), so any number of processes may
publish for one session and seq stays gap-free and unique. Events are committed before they
are broadcast: whatever a viewer was sent can be served again from here.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import F

from realtime import protocol
from sessions_app.models import Session, SessionEvent

log = logging.getLogger(__name__)


@dataclass
class PendingEvent:
    session_id: str
    event: str
    data: dict[str, Any]
    node_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class StoredFrame:
    session_id: str
    seq: int
    text: str


def make_pending(
    *, session_id: str, event: str, data: dict[str, Any] | None, node_id: str | None
) -> PendingEvent:
    if event not in protocol.LOGGED_EVENTS:
        raise ValueError(f"{event!r} is not a logged event")
    return PendingEvent(str(session_id), event, data or {}, node_id, datetime.now(UTC))


def iso_ms(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def frame_text(
    *, session_id: str, seq: int, event: str, data: dict, node_id: str | None, at: datetime
) -> str:
    return protocol.encode(
        event=event, session_id=session_id, data=data, node_id=node_id, seq=seq,
        timestamp=iso_ms(at),
    )


def store_events(batch: list[PendingEvent]) -> list[StoredFrame]:
    """Insert a batch (any sessions) in one transaction; returns the frames in seq order."""
    by_session: dict[str, list[PendingEvent]] = defaultdict(list)
    for item in batch:
        by_session[item.session_id].append(item)
    frames: list[StoredFrame] = []
    rows: list[SessionEvent] = []
    with transaction.atomic():
        for session_id, items in by_session.items():
            n = len(items)
            if not Session.objects.filter(pk=session_id).update(last_seq=F("last_seq") + n):
                log.warning("dropping %d events for missing session %s", n, session_id)
                continue
            last = Session.objects.filter(pk=session_id).values_list("last_seq", flat=True).get()
            for offset, item in enumerate(items):
                seq = last - n + 1 + offset
                rows.append(
                    SessionEvent(
                        session_id=session_id, seq=seq, event=item.event,
                        node_id=item.node_id, data=item.data, created_at=item.created_at,
                    )
                )
                frames.append(
                    StoredFrame(
                        session_id, seq,
                        frame_text(
                            session_id=session_id, seq=seq, event=item.event, data=item.data,
                            node_id=item.node_id, at=item.created_at,
                        ),
                    )
                )
        SessionEvent.objects.bulk_create(rows, batch_size=500)
    return frames


def read_frames(
    session_id: str, *, after: int, upto: int | None = None, limit: int | None = None
) -> list[tuple[int, str]]:
    """Stored events with after < seq <= upto, encoded exactly as they were broadcast."""
    query = SessionEvent.objects.filter(session_id=session_id, seq__gt=after)
    if upto is not None:
        query = query.filter(seq__lte=upto)
    query = query.order_by("seq").values_list("seq", "event", "node_id", "data", "created_at")
    if limit is not None:
        query = query[:limit]
    sid = str(session_id)
    return [
        (seq, frame_text(session_id=sid, seq=seq, event=event, data=data, node_id=node_id, at=at))
        for seq, event, node_id, data, at in query
    ]


def read_envelopes(session_id: str, *, after: int = 0, upto: int | None = None) -> list[dict]:
    """Stored events as envelope dicts (for folding into a snapshot)."""
    query = SessionEvent.objects.filter(session_id=session_id, seq__gt=after)
    if upto is not None:
        query = query.filter(seq__lte=upto)
    sid = str(session_id)
    return [
        {"event": event, "data": data, "timestamp": iso_ms(at), "node_id": node_id,
         "seq": seq, "session_id": sid}
        for seq, event, node_id, data, at in query.order_by("seq").values_list(
            "seq", "event", "node_id", "data", "created_at"
        )
    ]


def head_seq(session_id: str) -> int:
    return Session.objects.filter(pk=session_id).values_list("last_seq", flat=True).first() or 0
