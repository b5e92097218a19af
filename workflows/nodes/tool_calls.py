"""An agent's tool calls, from the model's first delta to the result it reads back.

While the model streams, ``CallStream`` announces each call (``tool_call_start``) and its
argument fragments (``tool_call_args``, joined for ``TOKEN_COALESCE_MS`` like tokens)
through the publisher: nothing is stored per fragment. Then each call, in order, goes
through ``run_call``: stored with its whole arguments (``tool_call_end``), approved by a
human if its tool requires it (the review mechanism, keyed by the call id), run through the
toolbox, and ended (``tool_call_result``). A stop cancels the call and records it as
interrupted; pause holds before the next call (a running call finishes first).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field

from realtime.eventlog import FencedOut
from realtime.publisher import get_publisher
from realtime.vocabulary import EventName, NodeStatus, ReviewDecision, ToolCallStatus
from workflows import tracing
from workflows.coalescer import Coalescer, EventLogUnavailable
from workflows.definitions import NodeSpec
from workflows.nodes.base import RunContext
from workflows.nodes.review import await_decision
from workflows.providers import ToolCallDelta
from workflows.tools.toolbox import Tool, Toolbox, ToolOutcome

DENIED = "denied by the reviewer"
STOPPED = "stopped: the session was stopped while the call ran"
NO_MORE_ROUNDS = "not run: the agent used all its tool rounds (max_tool_rounds)"


@dataclass
class PendingCall:
    """A call as the model streamed it."""

    call_id: str
    name: str
    arguments: list[str] = field(default_factory=list)

    @property
    def arguments_text(self) -> str:
        return "".join(self.arguments)


class CallStream:
    """The tool calls of one model response, announced as they stream."""

    def __init__(self, *, run: RunContext, node: NodeSpec, round_: int, coalescer: Coalescer,
                 window: float) -> None:
        self.run = run
        self.node = node
        self.round = round_
        self.coalescer = coalescer
        self.window = window
        self.calls: dict[int, PendingCall] = {}
        self._unsent: dict[str, list[str]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._last: asyncio.Future[int] | None = None

    def _publish(self, event: EventName, data: dict[str, object]) -> None:
        self._last = get_publisher().publish_nowait(
            session_id=self.run.session_id, event=event, fence=self.run.generation,
            node_id=self.node.id, data=data,
        )

    def add(self, delta: ToolCallDelta) -> None:
        call = self.calls.get(delta.index)
        if call is None:
            # Text streamed before the call is published first: the card goes after it.
            self.coalescer.flush()
            self.flush()
            agent = self.node.agent
            assert agent is not None
            call = self.calls[delta.index] = PendingCall(
                call_id=f"tc_{uuid.uuid4().hex[:16]}", name=(delta.name or "")[:200]
            )
            self._publish(EventName.TOOL_CALL_START, {
                "call_id": call.call_id, "node_id": self.node.id, "agent_id": agent.id,
                "tool": call.name, "round": self.round,
            })
        if delta.arguments:
            call.arguments.append(delta.arguments)
            self._unsent.setdefault(call.call_id, []).append(delta.arguments)
            if self.window <= 0:
                self.flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self.window, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        unsent, self._unsent = self._unsent, {}
        for call_id, parts in unsent.items():
            self._publish(EventName.TOOL_CALL_ARGS,
                          {"call_id": call_id, "node_id": self.node.id, "delta": "".join(parts)})

    def discard(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._unsent = {}

    async def drain(self) -> None:
        """Everything announced is stored (before the calls' own writes)."""
        self.flush()
        if self._last is None:
            return
        try:
            await self._last
        except FencedOut:
            raise
        except Exception as exc:
            raise EventLogUnavailable(str(exc)) from exc

    def ordered(self) -> list[PendingCall]:
        return [self.calls[index] for index in sorted(self.calls)]


async def run_call(
    run: RunContext, node: NodeSpec, *, round_: int, call: PendingCall, toolbox: Toolbox | None,
    allowed: bool,
) -> ToolOutcome:
    """Store, approve, run and end one call (one ``execute_tool`` span when tracing); the
    outcome is what the model reads back."""
    with tracing.tool_span(node_id=node.id, call_id=call.call_id, tool=call.name,
                           arguments=call.arguments_text) as span:
        outcome = await _run_call(run, node, round_=round_, call=call, toolbox=toolbox,
                                  allowed=allowed)
        tracing.tool_result(span, status=str(outcome.status), result=outcome.result,
                            error=outcome.error or "")
        return outcome


async def _run_call(
    run: RunContext, node: NodeSpec, *, round_: int, call: PendingCall, toolbox: Toolbox | None,
    allowed: bool,
) -> ToolOutcome:
    agent = node.agent
    assert agent is not None
    tool = toolbox.get(call.name) if toolbox is not None and allowed else None
    arguments = call.arguments_text
    needs_approval = tool is not None and tool.spec.requires_approval
    await run.store.tool_call_begin(
        session_id=run.session_id, node_id=node.id, agent_id=agent.id, round=round_,
        call_id=call.call_id, tool=call.name, server=tool.source if tool else "",
        arguments=arguments, requires_approval=needs_approval,
    )
    if not allowed:
        return await _finish(run, call, ToolOutcome(ToolCallStatus.FAILED, error=NO_MORE_ROUNDS))
    try:
        outcome = await _approve_and_run(run, node, round_=round_, call=call, toolbox=toolbox,
                                         tool=tool)
    except asyncio.CancelledError:
        # Stopped while waiting for approval or while the tool ran: say so, keep nothing.
        if not run.abandoned:
            with contextlib.suppress(Exception):
                await asyncio.shield(_finish(
                    run, call, ToolOutcome(ToolCallStatus.INTERRUPTED, error=STOPPED)
                ))
        raise
    return await _finish(run, call, outcome)


async def _approve_and_run(
    run: RunContext, node: NodeSpec, *, round_: int, call: PendingCall, toolbox: Toolbox | None,
    tool: Tool | None,
) -> ToolOutcome:
    if tool is not None and tool.spec.requires_approval:
        await run.store.tool_approval_open(
            session_id=run.session_id, node_id=node.id, round=round_, call_id=call.call_id,
            tool=call.name, arguments=call.arguments_text, timeout=tool.spec.approval_timeout,
        )
        run.status[node.id] = NodeStatus.WAITING_REVIEW
        decision, comment, _ = await await_decision(
            run, node_id=node.id, round_=round_, default=tool.spec.approval_default,
            call_id=call.call_id,
        )
        await run.store.node_set_status(
            session_id=run.session_id, node_id=node.id, status=NodeStatus.RUNNING
        )
        run.status[node.id] = NodeStatus.RUNNING
        if decision != ReviewDecision.APPROVE:
            return ToolOutcome(ToolCallStatus.DENIED, error=DENIED + (f": {comment}" if comment else ""))
        await run.store.tool_call_set_running(session_id=run.session_id, call_id=call.call_id)
    if toolbox is None:
        return ToolOutcome(ToolCallStatus.FAILED,
                           error=f"unknown tool {call.name!r} (this agent has no tools)")
    return await toolbox.call(call.name, call.arguments_text)


async def _finish(run: RunContext, call: PendingCall, outcome: ToolOutcome) -> ToolOutcome:
    await run.store.tool_call_finish(
        session_id=run.session_id, call_id=call.call_id, status=outcome.status,
        result=outcome.result, error=outcome.error or "", duration_ms=outcome.duration_ms,
    )
    return outcome
