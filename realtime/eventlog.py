"""The session event log: seq allocation, batched inserts and reads for replay.

seq is allocated inside the insert transaction by advancing ``SessionLog.last_seq`` (a row
lock on PostgreSQL, the database write lock on SQLite), so any number of processes may
publish for one session and seq stays gap-free and unique. Events are committed before they
are broadcast: whatever a viewer was sent can be served again from here.

Hot path (``store_events``, measured in docs/PERFORMANCE.md): one ``UPDATE … RETURNING
last_seq`` for every session of the batch (PostgreSQL; one per session on SQLite); the rows
go in with one ``executemany`` (SQLite) or ``COPY`` (PostgreSQL) instead of model instances
and ``bulk_create`` (~10x less CPU per event); each event's ``data`` is JSON-encoded once
and that same text is both the stored column and the ``data`` of the frame, which is
assembled by concatenation (byte-identical to ``protocol.encode``; a test checks it). Other
database vendors use the ORM path.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, F, Value, When

from realtime import metrics, protocol
from realtime.models import SessionEvent, SessionLog
from realtime.timestamps import iso_ms, utc_now

log = logging.getLogger(__name__)


class FencedOut(Exception):
    """The log refused events whose fence is not the session's current one: the writer was
    superseded (its lease was taken over while it was frozen) and must write no more."""


@dataclass
class PendingEvent:
    session_id: str
    event: str
    data: dict[str, Any]
    node_id: str | None
    created_at: datetime
    # Events with a fence are stored only while the log's fence equals it (see set_fence);
    # None: not fenced (a person's action, stored by its service's own transaction).
    fence: int | None = None


@dataclass(frozen=True)
class StoredFrame:
    session_id: str
    seq: int
    text: str
    fence: int | None = None


def make_pending(
    *, session_id: str, event: str, data: dict[str, Any] | None, node_id: str | None,
    fence: int | None = None,
) -> PendingEvent:
    if event not in protocol.LOGGED_EVENTS:
        raise ValueError(f"{event!r} is not a logged event")
    return PendingEvent(str(session_id), event, data or {}, node_id, utc_now(), fence)


def _groups(batch: list[PendingEvent]) -> dict[tuple[str, int | None], list[PendingEvent]]:
    """The batch's events by session and fence, in order: each group is stored or refused
    as a whole."""
    groups: dict[tuple[str, int | None], list[PendingEvent]] = defaultdict(list)
    for item in batch:
        groups[(item.session_id, item.fence)].append(item)
    return groups


_dumps = protocol.dumps
_EVENT_PREFIX: dict[str, str] = {}


def _frame(session_id: str, seq: int, event: str, data_json: str, node_id: str | None,
           timestamp: str) -> str:
    """The envelope text of ``protocol.encode`` (same keys, order and separators), by concatenation."""
    prefix = _EVENT_PREFIX.get(event)
    if prefix is None:
        if event not in protocol.EVENTS:
            raise ValueError(f"unknown event {event!r}")
        prefix = _EVENT_PREFIX[event] = '{"event":' + _dumps(event) + ',"data":'
    return (
        prefix + data_json + ',"timestamp":' + _dumps(timestamp)
        + ',"node_id":' + ("null" if node_id is None else _dumps(node_id))
        + ',"seq":' + str(seq) + ',"session_id":' + _dumps(session_id) + "}"
    )


def frame_text(
    *, session_id: str, seq: int, event: str, data: dict, node_id: str | None, at: datetime
) -> str:
    return _frame(session_id, seq, event, _dumps(data or {}), node_id, iso_ms(at))


def _table() -> tuple[str, str]:
    qn = connection.ops.quote_name
    meta = SessionEvent._meta
    columns = ", ".join(
        qn(meta.get_field(name).column)
        for name in ("session", "seq", "event", "node_id", "data", "created_at")
    )
    return qn(meta.db_table), columns


def _advance(cursor: Any, session_id: str, n: int, fence: int | None) -> int | None:
    """Reserve n seqs for the session (row lock until commit); returns the new last_seq, or
    None if the log is gone or (for fenced events) its fence moved on."""
    qn = connection.ops.quote_name
    pk = SessionLog._meta.pk
    fenced = "" if fence is None else f" AND {qn('fence')} = %s"
    cursor.execute(
        f"UPDATE {qn(SessionLog._meta.db_table)} SET {qn('last_seq')} = {qn('last_seq')} + %s "
        f"WHERE {qn(pk.column)} = %s{fenced} RETURNING {qn('last_seq')}",
        [n, pk.get_db_prep_value(uuid.UUID(session_id), connection),
         *([] if fence is None else [fence])],
    )
    rows = cursor.fetchall()
    return rows[0][0] if rows else None


def _advance_many(
    cursor: Any, groups: list[tuple[str, int | None, int]]
) -> dict[tuple[uuid.UUID, int | None], int]:
    """``_advance`` for many sessions in one statement (PostgreSQL): (session, fence, n) ->
    the new last_seq of each group whose log exists and whose fence (if any) still holds.

    A group worker publishes for hundreds of sessions per flush; one ``UPDATE … FROM
    (VALUES …)`` instead of one statement per session is what keeps the database's CPU from
    growing with the number of sessions per flush. Each session appears once (the caller
    falls back to ``_advance`` otherwise); the rows are locked in id order first, as
    every multi-session writer does, so two of them cannot deadlock on each other."""
    qn = connection.ops.quote_name
    table, pk = qn(SessionLog._meta.db_table), qn(SessionLog._meta.pk.column)
    # Three array parameters, not three per session: the driver binds on the client and
    # would otherwise split a new, ever longer query text for every batch.
    params = [[uuid.UUID(sid) for sid, _, _ in groups], [n for _, _, n in groups],
              [fence for _, fence, _ in groups]]
    cursor.execute(
        "WITH v(id, n, fence) AS (SELECT * FROM unnest(%s::uuid[], %s::integer[], %s::integer[])), "
        f"locked AS (SELECT l.{pk} FROM {table} l JOIN v ON l.{pk} = v.id "
        f"ORDER BY l.{pk} FOR UPDATE OF l) "
        f"UPDATE {table} AS l SET {qn('last_seq')} = l.{qn('last_seq')} + v.n FROM v "
        f"WHERE l.{pk} = v.id AND l.{pk} IN (SELECT {pk} FROM locked) "
        f"AND (v.fence IS NULL OR l.{qn('fence')} = v.fence) "
        f"RETURNING l.{pk}, l.{qn('last_seq')}, v.fence",
        params,
    )
    return {(sid, fence): last for sid, last, fence in cursor.fetchall()}


def _insert_rows(cursor: Any, rows: list[tuple[Any, ...]]) -> None:
    table, columns = _table()
    if connection.vendor == "sqlite":
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, %s, %s, %s)", rows
        )
        return
    # PostgreSQL: COPY, rows streamed in the driver's C code. A multi-row INSERT had the
    # driver split a 6,000-placeholder query text per batch and the server parse it: a
    # quarter of a worker's database thread and much of PostgreSQL's CPU at 1,000 agents.
    with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def store_events(batch: list[PendingEvent]) -> list[StoredFrame]:
    """Insert a batch (any sessions) in one transaction; returns the frames in seq order."""
    if connection.vendor not in ("sqlite", "postgresql"):
        return _store_events_orm(batch)
    frames: list[StoredFrame] = []
    rows: list[tuple[Any, ...]] = []
    adapt_time = connection.ops.adapt_datetimefield_value
    pk = SessionLog._meta.pk
    stored: list[list[PendingEvent]] = []
    # No savepoint inside a caller's transaction (publish_sync): a failure here fails the
    # caller's whole write anyway, and two statements per event are spared.
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        grouped = _groups(batch)
        many: dict[tuple[uuid.UUID, int | None], int] | None = None
        if connection.vendor == "postgresql" and len(grouped) > 1 and len(
            {sid for sid, _ in grouped}
        ) == len(grouped):
            many = _advance_many(cursor, [(sid, fence, len(items))
                                          for (sid, fence), items in grouped.items()])
        for (session_id, fence), items in grouped.items():
            n = len(items)
            if many is None:
                last = _advance(cursor, session_id, n, fence)
            else:
                last = many.get((uuid.UUID(session_id), fence))
            if last is None:
                _refused(session_id, fence, n)
                continue
            stored.append(items)
            db_session = pk.get_db_prep_value(uuid.UUID(session_id), connection)
            seq = last - n
            for item in items:
                seq += 1
                data_json = _dumps(item.data)
                rows.append(
                    (db_session, seq, item.event, item.node_id, data_json,
                     adapt_time(item.created_at))
                )
                frames.append(
                    StoredFrame(
                        session_id, seq,
                        _frame(session_id, seq, item.event, data_json, item.node_id,
                               iso_ms(item.created_at)),
                        fence,
                    )
                )
        if rows:
            _insert_rows(cursor, rows)
            _count_on_commit(stored)
    return frames


def _count_on_commit(stored: list[list[PendingEvent]]) -> None:
    """Count the batch as published when it commits (a sync caller's transaction may still
    roll back), once per batch."""
    transaction.on_commit(
        lambda: metrics.events_published(item.event for items in stored for item in items)
    )


def _refused(session_id: str, fence: int | None, n: int) -> None:
    if fence is None:
        log.warning("dropping %d events for missing session %s", n, session_id)
    else:
        log.warning("refusing %d events of %s from a superseded writer (fence %s)",
                    n, session_id, fence)


def find_stored(batch: list[PendingEvent]) -> list[StoredFrame] | None:
    """The frames of a batch an earlier ``store_events`` committed although it raised (the
    reply to its COMMIT was lost), or None if it did not commit.

    The batch was one transaction, so one event found means all were stored, each session's
    events with consecutive seqs; an event is recognised by its creation time (microseconds),
    name, node and data. Only called when retrying, never on the hot path."""
    frames: list[StoredFrame] = []
    found = False
    for (session_id, fence), items in _groups(batch).items():
        first = _stored_seq(items[0])
        if first is None:
            continue  # not committed, or refused (gone, fenced out) as store_events would
        found = True
        frames.extend(
            StoredFrame(session_id, seq, text, fence)
            for seq, text in read_frames(session_id, after=first - 1, upto=first - 1 + len(items))
        )
    return frames if found else None


def _stored_seq(item: PendingEvent) -> int | None:
    query = SessionEvent.objects.filter(
        session_id=item.session_id, event=item.event, node_id=item.node_id,
        created_at=item.created_at,
    ).values_list("seq", "data")
    expected = json.loads(_dumps(item.data))  # as stored: tuples become lists, and so on
    for seq, data in query:
        if data == expected:
            return seq
    return None


def _store_events_orm(batch: list[PendingEvent]) -> list[StoredFrame]:
    """Portable path (databases other than SQLite and PostgreSQL)."""
    frames: list[StoredFrame] = []
    rows: list[SessionEvent] = []
    stored: list[list[PendingEvent]] = []
    with transaction.atomic():
        for (session_id, fence), items in _groups(batch).items():
            n = len(items)
            log_row = SessionLog.objects.filter(pk=session_id)
            if fence is not None:
                log_row = log_row.filter(fence=fence)
            if not log_row.update(last_seq=F("last_seq") + n):
                _refused(session_id, fence, n)
                continue
            stored.append(items)
            last = SessionLog.objects.filter(pk=session_id).values_list("last_seq", flat=True).get()
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
                        fence,
                    )
                )
        SessionEvent.objects.bulk_create(rows, batch_size=500)
        _count_on_commit(stored)
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
        (seq, _frame(sid, seq, event, _dumps(data or {}), node_id, iso_ms(at)))
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
    """The highest seq stored for the session (0: nothing yet, or no such log)."""
    return SessionLog.objects.filter(pk=session_id).values_list("last_seq", flat=True).first() or 0


def head_seqs(session_ids: list[str]) -> dict[str, int]:
    """head_seq of several sessions in one query (the hub's tail check)."""
    return {
        str(pk): seq
        for pk, seq in SessionLog.objects.filter(pk__in=session_ids).values_list("pk", "last_seq")
    }


def open_log(*, session_id: Any) -> None:
    """Start the (empty) log of a new session; called in the transaction that creates it."""
    SessionLog.objects.get_or_create(pk=session_id)


def set_fence(*, session_id: Any, fence: int) -> None:
    """From now on, fenced events of the session are stored only if they carry ``fence``.

    Called in the transaction that hands the session's writing over (a run's lease taken), so
    a superseded writer's batches that were queued, or frozen, are refused even if it wakes
    before it notices."""
    SessionLog.objects.filter(pk=session_id).update(fence=fence)


def set_fences(*, fences: dict[Any, int]) -> None:
    """``set_fence`` for many sessions in one statement (an executor claims hundreds at once)."""
    if fences:
        SessionLog.objects.filter(pk__in=list(fences)).update(fence=Case(
            *(When(pk=session_id, then=Value(fence)) for session_id, fence in fences.items()),
            default=F("fence"), output_field=SessionLog._meta.get_field("fence"),
        ))


def delete_log(*, session_id: Any) -> None:
    """Forget a session's log and every event in it (the session is being deleted)."""
    SessionLog.objects.filter(pk=session_id).delete()
