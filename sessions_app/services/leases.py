"""The run lease: which runner executes a session now, and how another takes over.

A run is claimed by writing ``lease_owner``/``lease_expires_at`` with a conditional update
(with ``select_for_update(skip_locked=True)`` on PostgreSQL, so competing executors skip each
other's rows instead of waiting); the runner renews the lease while the run executes. If its
process dies, the lease expires and any executor takes the run over.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from realtime.vocabulary import FINISHED_SESSION_STATUSES
from sessions_app.models import Session
from sessions_app.services.sessions import session_start


def _claimable() -> QuerySet[Session]:
    return (
        Session.objects.filter(run_requested=True)
        .exclude(status__in=FINISHED_SESSION_STATUSES)
        .filter(Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=timezone.now()))
    )


def _expiry(lease_seconds: float) -> Any:
    return timezone.now() + timedelta(seconds=lease_seconds)


@transaction.atomic
def claim_runs(
    *, owner: str, limit: int, lease_seconds: float, only: Collection[str] | None = None
) -> list[str]:
    """Take up to ``limit`` runs nobody holds; safe with any number of competing executors.

    ``only`` restricts the claim to those sessions (a headless ``run_workflow`` must not
    pick up other people's queued runs)."""
    claimed: list[str] = []
    expires = _expiry(lease_seconds)
    query = _claimable().order_by("created_at")
    if only is not None:
        query = query.filter(pk__in=list(only))
    if connection.vendor == "postgresql":
        query = query.select_for_update(skip_locked=True)
    for session_id in list(query.values_list("id", flat=True)[:limit]):
        # Conditional update: only one executor wins a race on the same row.
        if _claimable().filter(pk=session_id).update(lease_owner=owner, lease_expires_at=expires):
            claimed.append(str(session_id))
    return claimed


def renew_lease(*, session_id: str, owner: str, lease_seconds: float) -> str | None:
    """Extend our lease; returns the session status, or None if the lease was lost."""
    updated = Session.objects.filter(pk=session_id, lease_owner=owner).update(
        lease_expires_at=_expiry(lease_seconds)
    )
    if not updated:
        return None
    return Session.objects.filter(pk=session_id).values_list("status", flat=True).first()


def take_lease(*, session_id: str, owner: str, lease_seconds: float) -> bool:
    """Lease one session to ``owner`` unless a live runner holds it (used right after
    queueing a run that this process will execute itself)."""
    return bool(
        _claimable().filter(pk=session_id).update(
            lease_owner=owner, lease_expires_at=_expiry(lease_seconds)
        )
    )


def release_lease(*, session_id: str, owner: str) -> None:
    Session.objects.filter(pk=session_id, lease_owner=owner).update(
        lease_owner="", lease_expires_at=None
    )


@transaction.atomic
def session_start_leased(
    *, session_id: str, user: AbstractBaseUser | None, owner: str, lease_seconds: float
) -> None:
    """Queue the run and lease it to ``owner`` in one go (a headless run executes it in its
    own process): no other executor can grab it in between."""
    session_start(session_id=session_id, user=user)
    take_lease(session_id=session_id, owner=owner, lease_seconds=lease_seconds)
