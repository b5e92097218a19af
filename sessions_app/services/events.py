"""Events the services store with the rows they describe (in the caller's transaction)."""

from __future__ import annotations

from typing import Any

from realtime.publisher import publish_sync
from realtime.vocabulary import EventName
from sessions_app.models import NodeState


def node_state_event(session_id: Any, node: NodeState, **extra: Any) -> None:
    """``node_state_change`` for the node's row as it is now (plus e.g. ``error``)."""
    data = {"node_id": node.node_id, "status": node.status, "agent_id": node.agent_id or None}
    data.update(extra)
    publish_sync(
        session_id=session_id, event=EventName.NODE_STATE_CHANGE, node_id=node.node_id, data=data
    )
