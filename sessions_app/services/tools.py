"""Tool calls: the row of each call and the events that describe it, written together.

The engine streams a call's start and its argument deltas through the publisher (like
tokens: nothing is stored per delta); these services store the boundaries: the call as
the model finished asking for it (``tool_call_end``) and how it ended
(``tool_call_result``). A runner taking over marks a call it finds unfinished as
interrupted (``interrupt_open_calls``) rather than running it again silently.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from realtime.publisher import publish_sync
from realtime.vocabulary import FINAL_TOOL_CALL_STATUSES, EventName, ToolCallStatus
from sessions_app.models import HumanReview, Session, ToolCall
from sessions_app.services.leases import lock_run
from sessions_app.services.receipts import idempotent
from workflows.vocabulary import ReviewStatus

INTERRUPTED_ERROR = "interrupted: the runner stopped while the call ran; the node runs again"


def _result_event(session_id: Any, call: ToolCall) -> None:
    publish_sync(
        session_id=session_id, event=EventName.TOOL_CALL_RESULT, node_id=call.node_id,
        data={
            "call_id": call.call_id, "node_id": call.node_id, "status": call.status,
            "result": call.result, "error": call.error or None,
            "duration_ms": call.duration_ms or 0,
        },
    )


@idempotent
@transaction.atomic
def tool_call_begin(
    *, session_id: Any, fence: int, node_id: str, agent_id: str, round: int, call_id: str,
    tool: str, server: str, arguments: str, requires_approval: bool,
) -> None:
    """The model finished asking for a call: store it and say so (``tool_call_end``)."""
    session = lock_run(session_id, fence)
    call = ToolCall.objects.create(
        session=session, node_id=node_id, agent_id=agent_id, round=round, call_id=call_id,
        tool=tool, server=server, arguments=arguments, requires_approval=requires_approval,
        status=ToolCallStatus.WAITING_APPROVAL if requires_approval else ToolCallStatus.RUNNING,
    )
    publish_sync(
        session_id=session.pk, event=EventName.TOOL_CALL_END, node_id=node_id,
        data={"call_id": call.call_id, "node_id": node_id, "arguments": arguments,
              "requires_approval": requires_approval},
    )


@idempotent
@transaction.atomic
def tool_call_set_running(*, session_id: Any, fence: int, call_id: str) -> None:
    """An approved call starts (no event: the review's decision already said so)."""
    lock_run(session_id, fence)
    ToolCall.objects.filter(session_id=session_id, call_id=call_id).update(
        status=ToolCallStatus.RUNNING, started_at=timezone.now()
    )


@idempotent
@transaction.atomic
def tool_call_finish(
    *, session_id: Any, fence: int, call_id: str, status: str, result: str = "", error: str = "",
    duration_ms: int = 0,
) -> None:
    """How the call ended (``tool_call_result``): its result, or its error, and how long."""
    if status not in FINAL_TOOL_CALL_STATUSES:
        raise ValueError(f"{status!r} is not a final tool call status")
    lock_run(session_id, fence)
    call = ToolCall.objects.select_for_update().get(session_id=session_id, call_id=call_id)
    call.status = status
    call.result = result
    call.error = error
    call.duration_ms = max(0, int(duration_ms))
    call.finished_at = timezone.now()
    call.save(update_fields=["status", "result", "error", "duration_ms", "finished_at"])
    _result_event(session_id, call)


def interrupt_open_calls(session: Session, node_ids: list[str]) -> None:
    """A take-over: calls of these nodes that never finished are marked interrupted (and
    their pending approvals cancelled); the node runs again with new calls. Part of the
    caller's transaction (``runs.run_begin``)."""
    now = timezone.now()
    open_calls = ToolCall.objects.select_for_update().filter(
        session=session, node_id__in=node_ids
    ).exclude(status__in=FINAL_TOOL_CALL_STATUSES)
    for call in open_calls.order_by("id"):
        call.status = ToolCallStatus.INTERRUPTED
        call.error = INTERRUPTED_ERROR
        call.finished_at = now
        call.duration_ms = max(0, int((now - call.started_at).total_seconds() * 1000))
        call.save(update_fields=["status", "error", "finished_at", "duration_ms"])
        _result_event(session.pk, call)
    HumanReview.objects.filter(
        session=session, node_id__in=node_ids, status=ReviewStatus.PENDING
    ).exclude(call_id="").update(status=ReviewStatus.CANCELLED)
