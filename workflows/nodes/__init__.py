"""One executor per kind of node; the runner looks a node's executor up here by its type."""

from __future__ import annotations

from realtime.vocabulary import NodeType
from workflows.nodes.agent import AgentExecutor
from workflows.nodes.base import NodeExecutor, RunContext
from workflows.nodes.review import ReviewExecutor

AGENT = AgentExecutor()

EXECUTORS: dict[str, NodeExecutor] = {
    NodeType.AGENT: AGENT,
    NodeType.HUMAN_REVIEW: ReviewExecutor(),
}

__all__ = ["AGENT", "EXECUTORS", "NodeExecutor", "RunContext"]
