"""Writes, one module per domain; each service is keyword-only and owns its transaction.

- ``sessions``: create, start, pause, resume, stop, speak
- ``members``: add a member, change their role, remove them; ``links``: share links
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
from sessions_app.services.links import share_link_create, share_link_join, share_link_revoke
from sessions_app.services.members import member_add, member_remove, member_set_role, session_share
from sessions_app.services.reviews import review_submit
from sessions_app.services.sessions import (
    session_create,
    session_pause,
    session_resume,
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
    "member_add",
    "member_remove",
    "member_set_role",
    "review_submit",
    "session_create",
    "session_pause",
    "session_resume",
    "session_share",
    "session_start",
    "session_stop",
    "share_link_create",
    "share_link_join",
    "share_link_revoke",
    "user_message_post",
]
