"""Channel-layer group and message-type names of the fan-out: the one place that spells them."""

from __future__ import annotations

import uuid

# Message types travelling through the channel layer (never chosen by client input).
FRAMES = "session.frames"  # logged events of one session, already encoded
PRESENCE = "session.presence"  # one process's viewers of a session
ACCESS_CHANGED = "access.changed"  # a user's access changed: their sockets check again
EPHEMERAL = "session.ephemeral"  # one encoded frame for every viewer now, never logged

ACCESS_GROUP = "realtime.access"  # every hub joins it


def session_group(session_id: str | uuid.UUID) -> str:
    """Group every process with viewers of the session joins (one subscription per process)."""
    return f"session.{uuid.UUID(str(session_id)).hex}"
