"""Telling runners what to do: run-control messages and worker wake-ups over the channel layer.

Control is persisted first (the service changes the session's status in its transaction),
then announced here after commit; a message lost on the way is recovered by the runner
re-reading the session's status at every lease renewal, and a lost wake-up by the next claim
poll. So sending never raises: a layer outage only delays.
"""

from __future__ import annotations

import logging
import uuid
from enum import StrEnum
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

# Message types (never chosen by client input).
RUN_CONTROL = "run.control"  # a command for whoever runs the session
WORKER_WAKE = "worker.wake"  # a run was requested: claim it now rather than at next poll

WORKERS_GROUP = "workers"


class RunAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"
    REVIEW = "review"


def run_control_group(session_id: str | uuid.UUID) -> str:
    """Group the runner executing the session listens on for pause/resume/stop/review."""
    return f"run.{uuid.UUID(str(session_id)).hex}"


def send_run_control(session_id: Any, action: RunAction, **extra: Any) -> None:
    """Tell whichever process runs the session (embedded or worker) to act now."""
    message = {"type": RUN_CONTROL, "sid": str(session_id), "action": action.value, **extra}
    try:
        async_to_sync(get_channel_layer().group_send)(run_control_group(session_id), message)
    except Exception:  # the runner also re-reads the session at every lease renewal
        log.exception("run control %s for %s not delivered", action, session_id)


def wake_workers() -> None:
    try:
        async_to_sync(get_channel_layer().group_send)(WORKERS_GROUP, {"type": WORKER_WAKE})
    except Exception:
        log.exception("worker wake-up not delivered; workers poll anyway")
