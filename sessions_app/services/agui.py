"""AG-UI threads: which session a client's ``threadId`` names, and which of its messages
were already taken in (an AG-UI client sends the whole conversation with every run).

A ``threadId`` that is a session's id names that session; any other id names the session
made for it the first time it was seen (a new session of the endpoint's workflow, owned by
the caller), so a client that makes up its own thread ids (``@ag-ui/client`` does) works.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from sessions_app.models import AguiThread, Session
from sessions_app.services.sessions import session_create

MAX_SEEN = 2000


def _as_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def agui_thread_find(*, thread_id: str) -> Session | None:
    own = _as_uuid(thread_id)
    if own is not None:
        session = Session.objects.filter(pk=own).first()
        if session is not None:
            return session
    thread = AguiThread.objects.select_related("session").filter(thread_id=thread_id).first()
    return thread.session if thread is not None else None


def agui_thread_open(*, user: AbstractBaseUser, workflow_slug: str, thread_id: str) -> tuple[Session, bool]:
    """(the thread's session, created now). Raises DefinitionError for an unknown workflow."""
    session = agui_thread_find(thread_id=thread_id)
    if session is not None:
        return session, False
    try:
        with transaction.atomic():
            session = session_create(owner=user, workflow_slug=workflow_slug,
                                     title=f"AG-UI thread {thread_id[:60]}")
            AguiThread.objects.create(session=session, thread_id=thread_id)
    except IntegrityError:  # two first runs of one thread raced: the other one made it
        found = agui_thread_find(thread_id=thread_id)
        assert found is not None
        return found, False
    return session, True


@transaction.atomic
def agui_messages_unseen(*, session_id: Any, message_ids: list[str]) -> list[str]:
    """Which of these message ids are new to the session (and remember them)."""
    thread, _ = AguiThread.objects.select_for_update().get_or_create(
        session_id=session_id, defaults={"thread_id": str(session_id)}
    )
    seen = set(thread.seen_message_ids)
    new = [m for m in message_ids if m not in seen]
    if new:
        thread.seen_message_ids = (thread.seen_message_ids + new)[-MAX_SEEN:]
        thread.save(update_fields=["seen_message_ids"])
    return new
