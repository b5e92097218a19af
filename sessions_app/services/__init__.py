"""Writes, one module per domain; each service is keyword-only and owns its transaction.

- ``sessions``: create, share, start, pause, resume, stop, speak
- ``reviews``: ask, decide (people and the timeout), close
- ``nodes``: an agent node's boundaries; ``usage``: live usage and totals
- ``runs``: enter and end a run (settling a take-over); ``leases``: claim, renew, release
"""

from sessions_app.services.errors import (
    Forbidden,
    InvalidData,
    InvalidState,
    NotFound,
    ServiceError,
)
from sessions_app.services.reviews import review_submit
from sessions_app.services.sessions import (
    session_create,
    session_pause,
    session_resume,
    session_share,
    session_start,
    session_stop,
    user_message_post,
)

__all__ = [
    "Forbidden",
    "InvalidData",
    "InvalidState",
    "NotFound",
    "ServiceError",
    "review_submit",
    "session_create",
    "session_pause",
    "session_resume",
    "session_share",
    "session_start",
    "session_stop",
    "user_message_post",
]
