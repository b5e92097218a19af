"""What a node executor may ask of the run it belongs to, and the interface it implements.

The runner only schedules: it starts a node when its dependencies completed and hands it to
the executor registered for its type (``workflows.nodes.EXECUTORS``). An executor does the
node's work, writes its boundaries through the run store and keeps ``run.status`` up to date;
a new kind of node (a tool loop, a remote agent) is a new executor, not a bigger runner.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from workflows.budget import BudgetGuard
from workflows.definitions import NodeSpec, WorkflowDefinition


class RunContext(Protocol):
    """The runner's state an executor reads and updates."""

    session_id: str
    definition: WorkflowDefinition
    status: dict[str, str]  # node id -> NodeStatus value, as this runner knows it
    outputs: dict[str, str]  # node id -> its last completed answer
    rounds: dict[str, int]  # node id -> the round it is at
    interrupted: set[str]  # nodes a dead runner left half-done
    running: asyncio.Event  # clear while the session is paused
    review_wake: asyncio.Event  # set when a review may have been decided
    budget: BudgetGuard  # the run's spend against the session's budget
    stopped: bool
    abandoned: bool  # another runner owns the run: write nothing more
    generation: int  # the lease generation this runner holds (the fence of its writes)
    store: Any  # the run store for this run: writes fenced, retried through blips

    def stop(self) -> None: ...

    def fenced_out(self) -> None:
        """A write was refused: the run was taken over; abandon it, writing nothing more."""

    def next_round(self, node_id: str) -> int: ...

    async def run_agent(self, node: NodeSpec, *, round_: int, feedback: list[str]) -> None:
        """One round of an agent node (a review sends its agent back through this)."""


class NodeExecutor(Protocol):
    async def execute(self, run: RunContext, node: NodeSpec) -> None:
        """Do the node's work to its end (completed, failed, skipped or stopped); raise
        CancelledError when the run stops it, after writing what it must."""
