"""Access that changes while sockets are open takes effect at once, in every process.

The app that owns sessions calls ``announce_access_changed`` (after the change commits) when
a user logs out, is deactivated, changes their password, or when their rights to a session
change. Every process's hub receives it through the channel layer and asks each of that
user's sockets (of that session, or all) to check again: one no longer logged in is closed
4401, one no longer allowed 4403, one whose rights changed 4412 (the page reconnects at once
and gets a snapshot with its new rights).
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from realtime import groups

log = logging.getLogger(__name__)


def access_message(*, user_id: Any, session_id: Any = None) -> dict[str, Any]:
    return {
        "type": groups.ACCESS_CHANGED,
        "user_id": str(user_id),
        "sid": None if session_id is None else str(session_id),
    }


def announce_access_changed(*, user_id: Any, session_id: Any = None) -> None:
    """Synchronous; call it after the change has committed (``transaction.on_commit``)."""
    try:
        async_to_sync(get_channel_layer().group_send)(
            groups.ACCESS_GROUP, access_message(user_id=user_id, session_id=session_id)
        )
    except Exception:  # every command is checked anyway; only the push is late
        log.exception("access change of user %s not announced", user_id)
