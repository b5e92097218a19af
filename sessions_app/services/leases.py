"""The run lease: which runner executes a session now, and how another takes over.

A run is claimed by writing ``lease_owner``/``lease_expires_at`` with a conditional update
(with ``select_for_update(skip_locked=True)`` on PostgreSQL, so competing executors skip each
other's rows instead of waiting); the runner renews the lease while the run executes. If its
process dies, the lease expires and any executor takes the run over.

Every claim advances ``lease_generation`` (the fencing token) and sets the event log's fence
to it in the same transaction. Each run write checks it under the session's row lock
(``lock_run``), so a runner that froze past its lease and wakes after a take-over can store
nothing: not its queued events, not its node-boundary rows (``workflows.store``).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from realtime.eventlog import set_fence, set_fences
from realtime.vocabulary import FINISHED_SESSION_STATUSES
from sessions_app.models import Session
from sessions_app.services.sessions import session_start
from workflows.store import LeaseLost


def _claimable() -> QuerySet[Session]:
    return (
        Session.objects.filter(run_requested=True)
        .exclude(status__in=FINISHED_SESSION_STATUSES)
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=timezone.now()))
    )


def _expiry(lease_seconds: float) -> Any:
    return timezone.now() + timedelta(seconds=lease_seconds)


def lock_run(session_id: Any, fence: int) -> Session:
    """The session row, locked until the caller's transaction ends, if ``fence`` is still its
    lease generation; LeaseLost (nothing written) otherwise."""
    # Not the workflow definition: a few KB of JSON parsed on every run write for nothing
    # (the few writes that read it load it when they do).
    session = Session.objects.select_for_update().defer("workflow_definition").get(pk=session_id)
    if session.lease_generation != fence:
        raise LeaseLost(
            f"run of {session_id}: lease generation {fence} was superseded by "
            f"{session.lease_generation}"
        )
    return session


def _lease(session_id: Any, owner: str, lease_seconds: float) -> int | None:
    """Give the session's lease to ``owner`` with a new generation, unless a live runner
    holds it (a conditional update: one executor wins a race); the generation."""
    if not _claimable().filter(pk=session_id).update(
        lease_owner=owner, lease_expires_at=_expiry(lease_seconds),
        lease_generation=F("lease_generation") + 1,
    ):
        return None
    generation = Session.objects.filter(pk=session_id).values_list("lease_generation", flat=True).get()
    set_fence(session_id=session_id, fence=generation)
    return generation


@transaction.atomic
def claim_runs(
    *, owner: str, limit: int, lease_seconds: float, only: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> list[tuple[str, int]]:
    """Take up to ``limit`` runs nobody holds; safe with any number of competing executors.
    Returns (session id, lease generation) pairs.

    ``only`` restricts the claim to those sessions (a headless ``run_workflow`` must not
    pick up other people's queued runs); ``exclude`` are the executor's own runs (one whose
    renewals lapsed keeps its lease by renewing it, never by a second claim)."""
    query = _claimable().order_by("created_at")
    if only is not None:
        query = query.filter(pk__in=list(only))
    if exclude:
        query = query.exclude(pk__in=list(exclude))
    if connection.vendor == "postgresql":
        query = query.select_for_update(skip_locked=True)
    ids = list(query.values_list("id", flat=True)[:limit])
    if not ids:
        return []
    # Four statements whatever the count (before, three per run: with hundreds
    # queued, seconds of the executor's database thread before any run could start). The
    # rows are locked (PostgreSQL) or under the write lock (SQLite's IMMEDIATE
    # transaction); the conditional update still decides, and its own expiry names its rows.
    expires = _expiry(lease_seconds)
    _claimable().filter(pk__in=ids).update(
        lease_owner=owner, lease_expires_at=expires, lease_generation=F("lease_generation") + 1,
    )
    generations = dict(
        Session.objects.filter(pk__in=ids, lease_owner=owner, lease_expires_at=expires)
        .values_list("pk", "lease_generation")
    )
    set_fences(fences=generations)
    return [(str(pk), generations[pk]) for pk in ids if pk in generations]


def renew_lease(
    *, session_id: str, owner: str, generation: int, lease_seconds: float
) -> str | None:
    """Extend our lease; returns the session status, or None if the lease was lost."""
    updated = Session.objects.filter(
        pk=session_id, lease_owner=owner, lease_generation=generation
    ).update(lease_expires_at=_expiry(lease_seconds))
    if not updated:
        return None
    return Session.objects.filter(pk=session_id).values_list("status", flat=True).first()


@transaction.atomic
def renew_leases(
    *, owner: str, generations: dict[str, int], lease_seconds: float
) -> dict[str, str | None]:
    """``renew_lease`` for every run of one executor in one transaction: two statements
    whatever the number of runs (one executor holds hundreds). The rows are locked in id
    order, so the lease cannot change between the check and the extension."""
    rows = (
        Session.objects.select_for_update().filter(pk__in=list(generations)).order_by("pk")
        .values_list("pk", "lease_owner", "lease_generation", "status")
    )
    held: dict[str, str | None] = {str(sid): None for sid in generations}
    for pk, lease_owner, generation, status in rows:
        if lease_owner == owner and generation == generations.get(str(pk)):
            held[str(pk)] = status
    alive = [sid for sid, status in held.items() if status is not None]
    if alive:
        Session.objects.filter(pk__in=alive).update(lease_expires_at=_expiry(lease_seconds))
    return held


@transaction.atomic
def take_lease(*, session_id: str, owner: str, lease_seconds: float) -> int | None:
    """Lease one session to ``owner`` unless a live runner holds it (used right after
    queueing a run that this process will execute itself); the lease's generation."""
    return _lease(session_id, owner, lease_seconds)


def release_lease(*, session_id: str, owner: str, generation: int) -> None:
    Session.objects.filter(pk=session_id, lease_owner=owner, lease_generation=generation).update(
        lease_owner="", lease_expires_at=None
    )


@transaction.atomic
def session_start_leased(
    *, session_id: str, user: AbstractBaseUser | None, owner: str, lease_seconds: float
) -> int | None:
    """Queue the run and lease it to ``owner`` in one go (a headless run executes it in its
    own process): no other executor can grab it in between. The lease's generation."""
    session_start(session_id=session_id, user=user)
    return _lease(session_id, owner, lease_seconds)
