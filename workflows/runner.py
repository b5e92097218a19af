"""Runs one session's workflow: schedules its nodes, follows pause/resume/stop.

Nodes whose dependencies completed run concurrently, each handed to the executor of its type
(``workflows.nodes``); the runner itself never streams, asks or writes a node's rows. A run
can be continued by another runner after a crash: completed nodes keep their output and usage
and are never run again (docs/engine.md).

Failure policy: a failed node's dependents are skipped; branches that do not depend on it run
to the end; the session then ends ``failed``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from realtime.eventlog import FencedOut
from realtime.publisher import get_publisher
from realtime.vocabulary import (
    FINAL_NODE_STATUSES,
    BudgetState,
    EventName,
    NodeStatus,
    NodeType,
    SessionStatus,
)
from workflows import tracing
from workflows.budget import BudgetGuard
from workflows.control import RunAction
from workflows.definitions import NodeSpec, WorkflowDefinition
from workflows.nodes import AGENT, EXECUTORS
from workflows.nodes.review import ask_for_budget
from workflows.providers import effective_model
from workflows.store import RunStart
from workflows.stored import FencedStore

log = logging.getLogger(__name__)

# A dependency in one of these will never complete in this run.
UNRUNNABLE = frozenset({NodeStatus.FAILED, NodeStatus.SKIPPED, NodeStatus.STOPPED})
# The session's status after any of these: the runner stops.
ENDED = frozenset({SessionStatus.STOPPED, SessionStatus.COMPLETED, SessionStatus.FAILED, None})


class SessionRunner:
    """Executes one session in the runner's event loop (a ``nodes.RunContext``)."""

    def __init__(
        self, *, session_id: str, definition: WorkflowDefinition, generation: int
    ) -> None:
        self.session_id = str(session_id)
        self.definition = definition
        self.generation = generation
        self.store = FencedStore(generation=generation, on_lost=self.fenced_out)
        self.status: dict[str, str] = {n.id: NodeStatus.PENDING for n in definition.nodes}
        self.outputs: dict[str, str] = {}
        self.rounds: dict[str, int] = {}
        self.interrupted: set[str] = set()
        self.running = asyncio.Event()
        self.running.set()
        self.stopped = False
        # Set when another runner owns the run now (lease lost, shutdown): write nothing more.
        self.abandoned = False
        self.finishing = False
        self.control_at = 0.0
        self.review_wake = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.budget = BudgetGuard()
        self.budget.on_change = self._budget_changed
        self.side_tasks: set[asyncio.Task[None]] = set()  # budget notices and requests

    # ------------------------------------------------------------------ control
    def on_control(self, action: str) -> None:
        """pause/resume/stop/review from the services (via the channel layer)."""
        self.control_at = time.monotonic()
        if action == RunAction.PAUSE:
            self.running.clear()
        elif action == RunAction.RESUME:
            self.running.set()
            self.review_wake.set()
        elif action == RunAction.STOP:
            self.stop()
        elif action == RunAction.REVIEW:
            self.review_wake.set()

    def apply_status(self, status: str | None, read_at: float | None = None) -> None:
        """Re-read session status (lease renewal): recovers a lost control message.

        A status read before the last control message arrived is stale (a pause committed
        right after the read would otherwise be undone until the next renewal): ignore it."""
        if read_at is not None and read_at < self.control_at:
            return
        if status in ENDED:
            self.stop()
        elif status == SessionStatus.PAUSED:
            self.running.clear()
        else:
            self.running.set()
            self.review_wake.set()

    def stop(self) -> None:
        """Cancel every node task: provider calls end now, nodes are marked stopped."""
        if self.stopped:
            return
        self.stopped = True
        self.running.set()
        self.budget.release()
        for task in self.tasks.values():
            task.cancel()

    def abandon(self) -> None:
        """Stop without writing anything: the run is (or will be) someone else's."""
        self.abandoned = True
        self.stop()

    def fenced_out(self) -> None:
        """A write was refused: another runner took the run over (this one froze past its
        lease). Abandon at once, before anything else queued is tried."""
        if not self.abandoned:
            log.warning("run of %s: lease generation %s was taken over; abandoning",
                        self.session_id, self.generation)
        self.abandon()

    # ------------------------------------------------------------------ run
    async def run(self) -> str | None:
        """Run (or continue) the session to its end; returns the final session status."""
        begin = await self.store.run_begin(session_id=self.session_id)
        if begin is None:
            return None
        self._load(begin)
        self.apply_status(begin.status)
        with tracing.run_span(session_id=self.session_id, workflow=self.definition.slug,
                              generation=self.generation, parent=begin.trace_parent) as span:
            if not begin.trace_parent and tracing.enabled():  # a runner taking over continues it
                await self.store.run_trace(session_id=self.session_id,
                                           traceparent=tracing.traceparent(span))
            try:
                return await self._run(span)
            except asyncio.CancelledError:  # the executor left the run (shutdown, lease lost)
                tracing.run_ended(span, status=None)
                raise

    async def _run(self, span: Any) -> str | None:
        error = ""
        try:
            error = await self._refuse_misconfigured()
            if not error:
                await self._schedule()
        except asyncio.CancelledError:
            self.abandon()
            raise
        except FencedOut:
            self.fenced_out()
        except Exception as exc:  # a bug or a database outage: fail cleanly, never half-way
            log.exception("run of %s failed", self.session_id)
            error = f"internal error: {exc.__class__.__name__}"
        finally:
            await self._end_tasks()
        if self.abandoned:
            tracing.run_ended(span, status=None)
            return None
        await get_publisher().flush()
        self.finishing = True
        status = await self.store.run_finish(session_id=self.session_id, error=error)
        tracing.run_ended(span, status=status, error=error)
        return status

    def _load(self, begin: RunStart) -> None:
        """Take the state a previous runner left (all pending on a fresh start)."""
        for node_id, status in begin.node_status.items():
            # A review that was waiting when the previous runner died is asked again.
            self.status[node_id] = NodeStatus.PENDING if status == NodeStatus.WAITING_REVIEW else status
        self.outputs.update(begin.outputs)
        self.rounds.update(begin.rounds)
        self.interrupted = set(begin.interrupted)
        if begin.budget is not None:
            self.budget.load(begin.budget)
            if begin.budget.pending_round is not None:  # a budget request still open
                self._side(ask_for_budget(self, begin.budget.pending_round))
        for node in self.definition.nodes:
            target = node.options.get("reviews") if node.type == NodeType.HUMAN_REVIEW else None
            if begin.node_status.get(node.id) == NodeStatus.WAITING_REVIEW and target in self.interrupted:
                # The reviewed agent was answering a rejection: the review re-runs it.
                self.status[target] = NodeStatus.COMPLETED

    async def _end_tasks(self) -> None:
        """Cancel what still runs (not twice: a second cancel would cut its clean-up)."""
        for task in [*self.tasks.values(), *self.side_tasks]:
            if not task.done() and not task.cancelling():
                task.cancel()
        if self.tasks or self.side_tasks:
            await asyncio.gather(*self.tasks.values(), *self.side_tasks, return_exceptions=True)

    # ------------------------------------------------------------------ budget
    def _side(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine, name=f"budget-{self.session_id}")
        self.side_tasks.add(task)
        task.add_done_callback(self.side_tasks.discard)

    def _budget_changed(self, state: BudgetState) -> None:
        """The live cost crossed the warning threshold (tell the viewers) or reached the
        budget (every stream holds at its next chunk; ask whether to raise it or stop)."""
        if self.stopped:
            return
        if state == BudgetState.REACHED:
            self._side(ask_for_budget(self))
        else:
            self._side(self.store.budget_notice(
                session_id=self.session_id, state=state, cost_usd=self.budget.spent()))

    async def _refuse_misconfigured(self) -> str:
        """Fail at the start, not mid-way, if a node's provider cannot run. (A model without
        a price runs: its cost is "price unknown", and the ``sessions_app.W001`` system check
        lists it.)"""
        missing: dict[str, str] = {}
        for node in self.definition.nodes:
            if node.agent is None or self.status[node.id] in FINAL_NODE_STATUSES:
                continue
            try:
                effective_model(node.agent.provider, node.agent.model)
            except ValueError as exc:
                missing[node.id] = str(exc)
        if not missing:
            return ""
        for node_id, error in missing.items():
            await self.store.node_fail(
                session_id=self.session_id, node_id=node_id, error=error, code="node_failed",
                message_id=None,
            )
            self.status[node_id] = NodeStatus.FAILED
        pending = [n for n, s in self.status.items() if s == NodeStatus.PENDING]
        await self.store.nodes_skip(
            session_id=self.session_id, node_ids=pending,
            reason="not run: a node's model provider is not configured",
        )
        return f"cannot run: {next(iter(missing.values()))}"

    # ------------------------------------------------------------------ scheduling
    def _ready(self) -> list[NodeSpec]:
        return [
            node
            for node in self.definition.nodes
            if self.status[node.id] == NodeStatus.PENDING
            and node.id not in self.tasks
            and all(self.status[d] == NodeStatus.COMPLETED for d in node.depends_on)
        ]

    def _blocked(self) -> list[str]:
        return [
            node.id
            for node in self.definition.nodes
            if self.status[node.id] == NodeStatus.PENDING
            and any(self.status[d] in UNRUNNABLE for d in node.depends_on)
        ]

    async def _skip_blocked(self) -> None:
        blocked = self._blocked()
        while blocked:
            await self.store.nodes_skip(
                session_id=self.session_id, node_ids=blocked,
                reason="skipped: a node it depends on failed",
            )
            for node_id in blocked:
                self.status[node_id] = NodeStatus.SKIPPED
            blocked = self._blocked()

    async def _schedule(self) -> None:
        while not self.stopped:
            await self._skip_blocked()
            ready = self._ready()
            if ready:
                # Paused, or the budget reached: start nothing new.
                while not (self.running.is_set() and self.budget.allows()) and not self.stopped:
                    await self.running.wait()
                    await self.budget.wait()
                if self.stopped:
                    break
                await self._launch(ready)
            if not self.tasks:
                break
            done, _ = await asyncio.wait(
                list(self.tasks.values()), return_when=asyncio.FIRST_COMPLETED
            )
            for node_id, task in list(self.tasks.items()):
                if task in done:
                    del self.tasks[node_id]
                    self.budget.drop(node_id)
                    if not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]

    async def _launch(self, ready: list[NodeSpec]) -> None:
        """Start nodes together; more than one is announced as a parallel start."""
        if len(ready) > 1:
            trigger = ready[0].depends_on[-1] if ready[0].depends_on else None
            await get_publisher().publish(
                session_id=self.session_id, event=EventName.NODE_PARALLEL_START, node_id=trigger,
                data={"node_id": trigger, "branches": [n.id for n in ready]},
                fence=self.generation,
            )
            if self.stopped:
                return
        for node in ready:
            self.status[node.id] = NodeStatus.RUNNING
            self.tasks[node.id] = asyncio.create_task(
                EXECUTORS[node.type].execute(self, node), name=f"node-{node.id}"
            )

    def next_round(self, node_id: str) -> int:
        """A new round, or the same round again for a node a dead runner left half-done
        (its usage row was never written, so nothing is counted twice)."""
        current = self.rounds.get(node_id, 0)
        if node_id in self.interrupted and current > 0:
            return current
        return current + 1 if self.status.get(node_id) == NodeStatus.COMPLETED else max(1, current)

    async def run_agent(self, node: NodeSpec, *, round_: int, feedback: list[str]) -> None:
        assert node.agent is not None
        with tracing.agent_span(session_id=self.session_id, node_id=node.id, round_=round_,
                                agent_id=node.agent.id, agent_name=node.agent.name):
            await AGENT.run_round(self, node, round_=round_, feedback=feedback)
