"""The command table: which service carries out each protocol command.

Client input never chooses a handler by name: a command is looked up here, and a command
with no entry cannot run. ``command_execute`` records the command's id in the same
transaction as its effect, so a resent command is acknowledged, not run again, and a refused
one leaves neither effect nor receipt behind (it may be retried with the same id).
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from realtime.vocabulary import CommandName
from sessions_app.models import CommandReceipt
from sessions_app.services.replays import replay_control
from sessions_app.services.reviews import review_submit
from sessions_app.services.sessions import (
    session_pause,
    session_resume,
    session_start,
    session_stop,
    user_message_post,
)


def _money(value: float | int | None) -> Decimal | None:
    """A budget from the socket (a JSON number) as the column's Decimal, to the micro-dollar."""
    return None if value is None else Decimal(str(value)).quantize(Decimal("0.000001"))


CommandService = Callable[[Any, AbstractBaseUser, dict[str, Any]], object]

COMMAND_SERVICES: dict[CommandName, CommandService] = {
    CommandName.START_SESSION: lambda sid, user, data: session_start(session_id=sid, user=user),
    CommandName.PAUSE_SESSION: lambda sid, user, data: session_pause(session_id=sid, user=user),
    CommandName.RESUME_SESSION: lambda sid, user, data: session_resume(session_id=sid, user=user),
    CommandName.STOP_SESSION: lambda sid, user, data: session_stop(session_id=sid, user=user),
    CommandName.USER_INPUT: lambda sid, user, data: user_message_post(
        session_id=sid, user=user, text=data["text"]
    ),
    CommandName.SUBMIT_REVIEW: lambda sid, user, data: review_submit(
        session_id=sid, user=user, node_id=data["node_id"], decision=data["decision"],
        comment=data.get("comment", ""), call_id=data.get("call_id"),
        budget_usd=_money(data.get("budget_usd")),
    ),
    CommandName.REPLAY_CONTROL: lambda sid, user, data: replay_control(
        session_id=sid, user=user, seq=data["seq"], playing=data["playing"], speed=data["speed"],
        active=data["active"],
    ),
}


def command_execute(
    *, session_id: Any, user: AbstractBaseUser, cmd: str, data: dict[str, Any],
    command_id: str | None,
) -> bool:
    """Run a client command once; returns True when the id was already executed (not re-run)."""
    service = COMMAND_SERVICES[CommandName(cmd)]
    try:
        with transaction.atomic():
            if command_id is not None:
                CommandReceipt.objects.create(
                    session_id=session_id, command_id=command_id, cmd=cmd, user=user
                )
            service(session_id, user, data)
    except IntegrityError:
        if command_id is not None and CommandReceipt.objects.filter(
            session_id=session_id, command_id=command_id
        ).exists():
            return True
        raise
    return False
