"""A remote AG-UI agent's own tool calls and interrupts, relayed into the room.

The remote agent runs its tools itself; viewers still see each call like a local one:
``tool_call_start`` and ``tool_call_args`` as it streams (through ``CallStream``, joined like
tokens), ``tool_call_end`` with the whole arguments and ``tool_call_result`` with what the
remote agent reported, each call stored as a ``ToolCall`` row whose ``server`` is
``agui:<endpoint>``. Nothing runs here.

An interrupt (``RUN_FINISHED`` with an interrupt outcome) becomes our human review, keyed by
a call id like a tool approval (``tool_approval_open``, ``await_decision``): on the card of
the remote call it is about, or, for an interrupt about no call, on a card of its own (tool
``interrupt:<reason>``, its message as arguments). The decision goes back to the provider,
which resumes the remote run; a rejected call is ended ``denied`` at once.

A call the stream leaves open (the remote run failed, or the session stopped) is ended
``failed`` or ``interrupted``, so no card stays running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from django.conf import settings

from realtime.vocabulary import NodeStatus, ReviewDecision, ToolCallStatus
from workflows.coalescer import Coalescer
from workflows.definitions import NodeSpec
from workflows.nodes.base import RunContext
from workflows.nodes.review import await_decision
from workflows.nodes.tool_calls import DENIED, STOPPED, CallStream, PendingCall
from workflows.providers import ProviderError, ToolCallDelta
from workflows.providers.agui import (
    CallStep,
    InterruptAsk,
    RemoteInterrupt,
    RemoteToolCall,
    endpoint_label,
)

MAX_RESULT_CHARS = 20_000
FAILED = "the remote agent's run ended before the call did"


class RemoteRelay:
    """The remote calls of one model call of an agent node (one per ``_stream``)."""

    def __init__(self, *, run: RunContext, node: NodeSpec, coalescer: Coalescer) -> None:
        self.run = run
        self.node = node
        self.round = run.rounds.get(node.id, 1)
        self.calls: CallStream | None = None
        self.index: dict[str, int] = {}  # remote call id -> CallStream index
        self.open: dict[str, float] = {}  # our call id -> when it was stored (not ended yet)
        self.ended: set[str] = set()  # remote ids stored with tool_call_begin
        self.coalescer = coalescer

    @property
    def server(self) -> str:
        agent = self.node.agent
        assert agent is not None and agent.agui is not None
        return f"agui:{endpoint_label(agent.agui.url)}"

    def _stream(self) -> CallStream:
        if self.calls is None:
            self.calls = CallStream(run=self.run, node=self.node, round_=self.round,
                                    coalescer=self.coalescer,
                                    window=settings.TOKEN_COALESCE_MS / 1000.0)
        return self.calls

    def _call(self, remote_id: str) -> PendingCall | None:
        index = self.index.get(remote_id)
        return None if index is None or self.calls is None else self.calls.calls[index]

    async def relay(self, item: Any) -> None:
        if isinstance(item, RemoteToolCall):
            await self._step(item)
        elif isinstance(item, RemoteInterrupt):
            await self._interrupt(item)
        else:
            raise TypeError(f"a provider streamed {type(item).__name__}")

    async def _step(self, item: RemoteToolCall) -> None:
        calls = self._stream()
        if item.step == CallStep.START:
            if item.remote_id not in self.index:
                self.index[item.remote_id] = len(self.index)
                calls.add(ToolCallDelta(index=self.index[item.remote_id], name=item.name))
            return
        call = self._call(item.remote_id)
        if call is None:
            return  # a step of a call it never started: nothing to show it on
        if item.step == CallStep.ARGS and item.remote_id not in self.ended:
            calls.add(ToolCallDelta(index=self.index[item.remote_id], arguments=item.text))
        elif item.step == CallStep.END:
            await self._begin(item.remote_id, call)
        elif item.step == CallStep.RESULT:
            await self._begin(item.remote_id, call)
            await self._finish(call.call_id, ToolCallStatus.SUCCEEDED,
                               result=item.text[:MAX_RESULT_CHARS])

    async def _begin(self, remote_id: str, call: PendingCall) -> None:
        """The call as the remote agent asked for it: stored, ``tool_call_end`` logged."""
        if remote_id in self.ended:
            return
        self.ended.add(remote_id)
        agent = self.node.agent
        assert agent is not None
        await self._stream().drain()
        await self.run.store.tool_call_begin(
            session_id=self.run.session_id, node_id=self.node.id, agent_id=agent.id,
            round=self.round, call_id=call.call_id, tool=call.name, server=self.server,
            arguments=call.arguments_text,
            requires_approval=False,
        )
        self.open[call.call_id] = time.monotonic()

    async def _finish(self, call_id: str, status: str, *, result: str = "", error: str = "") -> None:
        started = self.open.pop(call_id, None)
        if started is None:
            return  # ended already (a denied call whose result came anyway)
        await self.run.store.tool_call_finish(
            session_id=self.run.session_id, call_id=call_id, status=status, result=result,
            error=error, duration_ms=int((time.monotonic() - started) * 1000),
        )

    async def _interrupt(self, item: RemoteInterrupt) -> None:
        agent = self.node.agent
        assert agent is not None and agent.agui is not None
        for ask in item.asks:
            call, own = self._card(ask)
            await self._begin(f"interrupt:{ask.id}" if own else ask.tool_call_id or "", call)
            await self.run.store.tool_approval_open(
                session_id=self.run.session_id, node_id=self.node.id, round=self.round,
                call_id=call.call_id, tool=call.name, arguments=call.arguments_text,
                timeout=agent.agui.interrupt_timeout,
            )
            self.run.status[self.node.id] = NodeStatus.WAITING_REVIEW
            decision, comment, _ = await await_decision(
                self.run, node_id=self.node.id, round_=self.round,
                default=agent.agui.interrupt_default, call_id=call.call_id,
            )
            await self.run.store.node_set_status(
                session_id=self.run.session_id, node_id=self.node.id, status=NodeStatus.RUNNING
            )
            self.run.status[self.node.id] = NodeStatus.RUNNING
            approved = decision == ReviewDecision.APPROVE
            item.answers[ask.id] = (approved, comment)
            if not approved:
                await self._finish(call.call_id, ToolCallStatus.DENIED,
                                   error=DENIED + (f": {comment}" if comment else ""))
            elif own:
                await self._finish(call.call_id, ToolCallStatus.SUCCEEDED, result="approved")
            else:
                await self.run.store.tool_call_set_running(
                    session_id=self.run.session_id, call_id=call.call_id
                )

    def _card(self, ask: InterruptAsk) -> tuple[PendingCall, bool]:
        """The card a review is asked on: the remote call's, or a new one (True)."""
        if ask.tool_call_id:
            call = self._call(ask.tool_call_id)
            if call is not None:
                return call, False
        remote_id = f"interrupt:{ask.id}"
        index = self.index[remote_id] = len(self.index)
        self._stream().add(ToolCallDelta(index=index, name=f"interrupt:{ask.reason}"[:200]))
        self._stream().add(ToolCallDelta(index=index, arguments=json.dumps({"message": ask.message})))
        call = self._call(remote_id)
        assert call is not None
        return call, True

    async def close(self, error: BaseException | None) -> None:
        """End every call left open: ``interrupted`` on a stop, ``failed`` otherwise."""
        if self.calls is not None and error is not None:
            self.calls.discard()
        elif self.calls is not None:
            self.calls.flush()
        if not self.open or self.run.abandoned:
            return
        if isinstance(error, asyncio.CancelledError):
            status, why = ToolCallStatus.INTERRUPTED, STOPPED
        else:
            status = ToolCallStatus.FAILED
            why = error.message if isinstance(error, ProviderError) else FAILED
        for call_id in list(self.open):
            with contextlib.suppress(Exception):
                await asyncio.shield(self._finish(call_id, status, error=why))
