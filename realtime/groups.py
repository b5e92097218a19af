"""Channel-layer group and message-type names: the one place that spells them."""

from __future__ import annotations

import uuid

# Message types travelling through the channel layer (never chosen by client input).
FRAMES = "session.frames"  # logged events of one session, already encoded
PRESENCE = "session.presence"  # one process's viewers of a session
RESET = "session.reset"  # the hub must forget what it delivered (log rewritten)
RUN_CONTROL = "run.control"  # a command for whoever runs the session
WORKER_WAKE = "worker.wake"  # a run was requested: claim it now rather than at next poll

WORKERS_GROUP = "workers"


def session_group(session_id: str | uuid.UUID) -> str:
    """Group every process with viewers of the session joins (one subscription per process)."""
    return f"session.{uuid.UUID(str(session_id)).hex}"


def run_control_group(session_id: str | uuid.UUID) -> str:
    """Group the runner executing the session listens on for pause/resume/stop/review."""
    return f"run.{uuid.UUID(str(session_id)).hex}"
