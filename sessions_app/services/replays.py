"""Watching a replay together: the leader's play, pause and seek, sent to everyone watching.

Nothing is stored: a shared replay is a moment, not a state of the session, so the frame is
ephemeral (``replay_control``, ``seq: null``) and goes through the channel layer to the
session's group once the command's transaction commits. Who may lead is who may control
the session (the command table's rule, checked again in the command's transaction); the
position is checked against the log, so nobody is sent to a point that does not exist.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from realtime.eventlog import head_seq
from realtime.publisher import publish_ephemeral_sync
from realtime.vocabulary import EventName
from sessions_app.models import Session
from sessions_app.services.errors import InvalidData, NotFound


@transaction.atomic
def replay_control(
    *, session_id: Any, user: AbstractBaseUser, seq: int, playing: bool, speed: float = 1,
    active: bool = True,
) -> None:
    """The leader's playhead (``seq``: the last event shown), whether it plays and how fast;
    ``active: false`` ends the shared replay (followers keep their place)."""
    if not Session.objects.filter(pk=session_id).exists():
        raise NotFound("no such session")
    last = head_seq(str(session_id))
    if seq > last:
        raise InvalidData(f"seq {seq} is beyond the log (its last event is {last})")
    publish_ephemeral_sync(
        session_id=str(session_id), event=EventName.REPLAY_CONTROL,
        data={"seq": seq, "playing": playing, "speed": speed, "active": active,
              "by": user.get_username()},
    )
