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
from sessions_app.services.errors import ServiceError


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
