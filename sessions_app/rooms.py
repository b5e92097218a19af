"""This app as realtime's room backend (``realtime.rooms.RoomBackend``), registered at start-up.

Translates between the realtime layer's questions and this app's rules, reads and services:
access through ``access.session_access``, the snapshot's header through ``selectors``,
commands through the command table. Access is asked again inside every command's
transaction, so a share removed or lowered while a socket is open stops its commands at once.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from realtime.protocol import Command
from realtime.rooms import CommandRefused, RoomNotFound
from realtime.vocabulary import Access
from sessions_app import selectors
from sessions_app.access import session_access
from sessions_app.commands import command_execute
from sessions_app.models import Session
from sessions_app.services.agui import agui_messages_unseen, agui_thread_open
from sessions_app.services.errors import ServiceError
from workflows.definitions import DefinitionError


def _session(session_id: str) -> Session:
    try:
        return Session.objects.select_related("owner").get(pk=session_id)
    except (Session.DoesNotExist, ValidationError):
        raise RoomNotFound(session_id) from None


class SessionRooms:
    def access(self, *, user: Any, session_id: str) -> Access | None:
        return session_access(user=user, session=_session(session_id))

    def describe(self, *, session_id: str) -> dict[str, Any]:
        return selectors.room_header(session_id=session_id)

    def members(self, *, session_id: str) -> dict[str, str]:
        return selectors.members_of(session_id=session_id)

    def open_thread(self, *, user: Any, workflow: str, thread_id: str) -> str:
        try:
            session, _ = agui_thread_open(user=user, workflow_slug=workflow, thread_id=thread_id)
        except DefinitionError:
            raise RoomNotFound(workflow) from None
        if session.workflow_slug != workflow:
            raise RoomNotFound(thread_id)
        if session_access(user=user, session=session) != Access.CONTROL:
            raise CommandRefused("forbidden", "you may not control this thread")
        return str(session.pk)

    def unseen_messages(self, *, session_id: str, message_ids: list[str]) -> list[str]:
        return agui_messages_unseen(session_id=session_id, message_ids=message_ids)

    @transaction.atomic
    def execute(self, *, user: Any, session_id: str, command: Command) -> bool:
        try:
            if self.access(user=user, session_id=session_id) != Access.CONTROL:
                raise CommandRefused("forbidden", "you may not control this session")
            return command_execute(
                session_id=session_id, user=user, cmd=command.cmd, data=command.data,
                command_id=command.id,
            )
        except ServiceError as exc:
            raise CommandRefused(exc.code, exc.message) from None
        except RoomNotFound:
            raise CommandRefused("not_found", "no such session") from None
