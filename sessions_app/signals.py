"""Every session has an event log in realtime from its creation to its deletion.

Signals rather than a call in ``session_create``: sessions are also created outside the
service (fixtures, the shell) and deleted by the admin, by a cascade from their owner, or
from a queryset, and every one of those paths must keep session and log together.
(``bulk_create`` sends no signal: a session made that way has no log until one is opened.)
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save

from realtime.eventlog import delete_log, open_log
from sessions_app.models import Session


def _open_log(sender: type[Session], instance: Session, created: bool, **kwargs: Any) -> None:
    if created:
        open_log(session_id=instance.pk)


def _delete_log(sender: type[Session], instance: Session, **kwargs: Any) -> None:
    delete_log(session_id=instance.pk)


def connect() -> None:
    post_save.connect(_open_log, sender=Session, dispatch_uid="sessions_app.open_log")
    post_delete.connect(_delete_log, sender=Session, dispatch_uid="sessions_app.delete_log")
