"""An agent node: stream one round of a model's answer, then one node-boundary write.

A round is one model call, or several when the agent has tools: model, its tool calls
(``tool_calls``), model again with their results, ... up to ``max_tool_rounds`` rounds of
calls; its text is one message and its usage the sum of every call. The toolbox (MCP
servers included) is open for the round and closed when it ends or stops.

Chunks go through the coalescer to the event log (and so to every viewer); the node's rows
are written when it starts, about once a second (partial text, for the admin, saved for every
agent of the process at once by ``workflows/checkpoints.py``), every
``USAGE_INTERVAL_SECONDS`` (live usage) and when it ends. Pause holds the stream at its next
chunk boundary; stop cancels the provider call and keeps exactly the text viewers were sent.
A node whose streamed text could not be logged fails with the text the log holds, so rows
and log never disagree. A remote AG-UI agent's own tool calls and interrupts (items no LLM
provider streams) are handed to ``nodes/remote.py``, which relays them into the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field, replace

from django.conf import settings

from realtime import metrics
from realtime.eventlog import FencedOut
from realtime.publisher import TRANSIENT_DB_ERRORS
from realtime.vocabulary import NodeStatus
from workflows import tracing
from workflows.checkpoints import live_usage, partial_saves
from workflows.coalescer import Coalescer, EventLogUnavailable
from workflows.definitions import NodeSpec
from workflows.nodes.base import RunContext
from workflows.nodes.prompt import build_request
from workflows.nodes.remote import RemoteRelay
from workflows.nodes.tool_calls import CallStream, run_call
from workflows.pricing import Price, cost_usd
from workflows.providers import (
    Chunk,
    CompletionRequest,
    ProviderError,
    ToolCallDelta,
    Usage,
    get_provider,
)
from workflows.providers.base import NO_USAGE, TOKEN_FIELDS, WordCounter
from workflows.providers.base import input_tokens as count_input_tokens
from workflows.tools.registry import ToolContext
from workflows.tools.toolbox import Toolbox

log = logging.getLogger(__name__)

EVENT_LOG_LOST = "internal error: the event log could not be written (database unavailable)"


@dataclass
class _Round:
    """One round of an agent: its message, its coalescer, what it streamed so far."""

    node: NodeSpec
    coalescer: Coalescer
    message_id: int | None = None
    request: CompletionRequest | None = None
    streamed: int = 0
    usage: Usage | None = None
    # Words streamed by the current model call (its live output estimate, the token rule).
    words: WordCounter = field(default_factory=WordCounter)
    # Earlier model calls of this round (a tool loop): their usage, summed type by type.
    used: Usage = NO_USAGE
    # The model's price when the round started (None: price unknown).
    price: Price | None = None
    toolbox: Toolbox | None = None
    last_usage: float = field(default_factory=time.monotonic)


class AgentExecutor:
    async def execute(self, run: RunContext, node: NodeSpec) -> None:
        await run.run_agent(node, round_=run.next_round(node.id), feedback=[])

    async def run_round(
        self, run: RunContext, node: NodeSpec, *, round_: int, feedback: list[str]
    ) -> None:
        """One round: stream, then complete (or fail, or stop)."""
        agent = node.agent
        assert agent is not None
        if run.stopped:
            return
        this = _Round(
            node=node,
            coalescer=Coalescer(
                session_id=run.session_id, node_id=node.id, agent_id=agent.id,
                window=settings.TOKEN_COALESCE_MS / 1000.0, fence=run.generation,
            ),
        )
        begin = asyncio.ensure_future(
            run.store.node_begin(
                session_id=run.session_id, node_id=node.id, agent_id=agent.id, round=round_
            )
        )
        try:
            this.message_id = await asyncio.shield(begin)
            partial_saves().watch(message_id=this.message_id, session_id=run.session_id,
                                  fence=run.generation, coalescer=this.coalescer)
            run.status[node.id] = NodeStatus.RUNNING
            run.rounds[node.id] = round_
            this.request = await build_request(
                run, node, feedback=feedback, before_message=this.message_id
            )
            this.price = await run.store.model_price(model=this.request.model)
            if agent.tools:
                async with Toolbox(
                    agent=agent, servers=run.definition.mcp_servers,
                    context=ToolContext(session_id=run.session_id, node_id=node.id,
                                        search_transcript=run.store.transcript_search),
                ) as this.toolbox:
                    await self._tool_loop(run, this, round_)
            else:
                await self._stream(run, this)
            await this.coalescer.drain()
            this.coalescer.check()
        except asyncio.CancelledError:
            if this.message_id is None:  # stopped while the node was starting: let that finish
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    this.message_id = await begin
            await self._cancelled(run, this)
            raise
        except FencedOut:
            # Taken over while frozen: the log refused what we streamed; write nothing more.
            run.fenced_out()
            await self._cancelled(run, this)
            raise asyncio.CancelledError from None
        except EventLogUnavailable as exc:
            log.error("node %s of %s: streamed text could not be logged (%s)",
                      node.id, run.session_id, exc)
            await self._fail(run, this, EVENT_LOG_LOST, "internal")
            return
        except ProviderError as exc:
            await self._fail(run, this, str(exc) or "the model provider failed", "provider_error")
            return
        except Exception as exc:  # a bug must fail this node, not the whole run half-way
            log.exception("node %s of %s crashed", node.id, run.session_id)
            await self._fail(run, this, f"internal error: {exc.__class__.__name__}", "internal")
            return
        try:
            await self._complete(run, this, round_)
        except TRANSIENT_DB_ERRORS as exc:
            # The database stayed away past the retries: fail the node (with the logged
            # text) so that its message is not left open with another text.
            log.error("node %s of %s could not be completed (%s)", node.id, run.session_id, exc)
            await self._fail(run, this, f"internal error: {exc.__class__.__name__}", "internal")

    async def _stream(
        self, run: RunContext, this: _Round, calls: CallStream | None = None
    ) -> None:
        """One model call: its text to the coalescer, its tool calls (if any) to ``calls``."""
        assert this.node.agent is not None and this.request is not None
        await self._hold_if_paused(run, this)  # no new model call while paused or over budget
        provider = get_provider(this.node.agent.provider)
        stream = provider.stream(this.request)
        # A remote AG-UI agent's own tool calls and interrupts (workflows/nodes/remote.py).
        relay = RemoteRelay(run=run, node=this.node, coalescer=this.coalescer)
        this.usage = None
        this.streamed = 0
        this.words = WordCounter()
        span = tracing.model_call_start(provider=str(provider.name), request=this.request)
        answer: list[str] | None = [] if tracing.capturing() else None  # content, if asked
        started = time.monotonic()
        first: float | None = None
        outcome = metrics.CallOutcome.ERROR
        try:
            async for item in stream:
                if isinstance(item, Usage):
                    this.usage = item
                    continue
                if first is None:
                    first = time.monotonic() - started
                await self._hold_if_paused(run, this)
                if isinstance(item, ToolCallDelta):
                    if calls is not None:
                        calls.add(item)
                    this.words.add(item.arguments)
                elif isinstance(item, Chunk):
                    this.coalescer.add(item)
                    this.words.add(item.text)
                    if answer is not None and not item.is_thinking:
                        answer.append(item.text)
                else:
                    await relay.relay(item)
                this.coalescer.check()
                this.streamed += 1
                if run.budget.limited:
                    run.budget.spend(this.node.id, cost_usd(this.price, self._live(this)))
                await self._checkpoint(run, this)
            outcome = metrics.CallOutcome.OK
            await relay.close(None)
        except asyncio.CancelledError as exc:
            outcome = metrics.CallOutcome.CANCELLED
            await relay.close(exc)
            raise
        except Exception as exc:
            await relay.close(exc)
            raise
        finally:
            # Close the provider call now (HTTP stream, client), not when it is collected.
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
            metrics.observe_model_call(
                provider=str(provider.name), model=this.request.model,
                seconds=time.monotonic() - started, first_token_seconds=first, outcome=outcome,
            )
            call = self._call_usage(this)
            tracing.model_call_end(span, usage=call, cost=cost_usd(this.price, call),
                                   outcome=outcome, output="".join(answer or ()))

    async def _tool_loop(self, run: RunContext, this: _Round, round_: int) -> None:
        """Model, tools, model again with their results, ... until the model answers
        without calling a tool, or the agent's ``max_tool_rounds`` are spent (the last call
        is then offered no tools)."""
        agent, toolbox = this.node.agent, this.toolbox
        assert agent is not None and toolbox is not None and this.request is not None
        messages = list(this.request.messages)
        tool_round = 0
        while True:
            offer = toolbox.offered() if tool_round < agent.max_tool_rounds else ()
            this.request = replace(this.request, messages=messages, tools=offer)
            calls = CallStream(run=run, node=this.node, round_=round_, coalescer=this.coalescer,
                               window=settings.TOKEN_COALESCE_MS / 1000.0)
            text_before = len(this.coalescer.text)
            try:
                await self._stream(run, this, calls)
            finally:
                calls.flush()
            self._count_call(this)
            if not calls.calls:
                return
            await this.coalescer.drain()
            this.coalescer.check()
            await calls.drain()
            pending = calls.ordered()
            messages.append({
                "role": "assistant", "content": this.coalescer.text[text_before:],
                "tool_calls": [{"id": c.call_id, "name": c.name, "arguments": c.arguments_text}
                               for c in pending],
            })
            for call in pending:
                await self._hold_if_paused(run, this)
                outcome = await run_call(run, this.node, round_=round_, call=call,
                                         toolbox=toolbox, allowed=bool(offer))
                messages.append({"role": "tool", "tool_call_id": call.call_id,
                                 "content": outcome.for_model()})
            if not offer:
                return
            tool_round += 1

    def _count_call(self, this: _Round) -> None:
        """Add a finished model call's usage to the round's (the next call starts at 0): the
        server's figures replace the live estimate."""
        this.used = self._live(this)
        this.usage = None
        this.streamed = 0
        this.words = WordCounter()

    def _live(self, this: _Round) -> Usage:
        """The round's usage so far: earlier calls as reported, the current one as the server
        reported it or, while it streams, by the word rule (input and output alike)."""
        return this.used + self._call_usage(this)

    def _call_usage(self, this: _Round) -> Usage:
        assert this.request is not None
        return this.usage or Usage(input_tokens=count_input_tokens(this.request),
                                   output_tokens=this.words.words, estimated=True)

    async def _hold_if_paused(self, run: RunContext, this: _Round) -> None:
        """Pause at a chunk boundary (or before a model call): what was streamed is stored,
        the chunk waits, while the session is paused or its budget is reached."""
        if run.running.is_set() and run.budget.allows():
            return
        await this.coalescer.drain()
        this.coalescer.check()
        await run.store.node_set_status(
            session_id=run.session_id, node_id=this.node.id, status=NodeStatus.PAUSED
        )
        while not (run.running.is_set() and run.budget.allows()) and not run.stopped:
            await run.running.wait()
            await run.budget.wait()
        if run.stopped:
            raise asyncio.CancelledError
        await run.store.node_set_status(
            session_id=run.session_id, node_id=this.node.id, status=NodeStatus.RUNNING
        )

    async def _checkpoint(self, run: RunContext, this: _Round) -> None:
        """Live usage every USAGE_INTERVAL_SECONDS (the partial text is saved for every agent
        of the process at once: ``workflows.checkpoints``)."""
        assert this.node.agent is not None and this.request is not None
        now = time.monotonic()
        if now - this.last_usage >= settings.USAGE_INTERVAL_SECONDS:
            this.last_usage = now
            # Written with every other agent's of this process (workflows/checkpoints.py).
            live = self._live(this)
            live_usage().report({
                "session_id": run.session_id, "fence": run.generation, "node_id": this.node.id,
                "agent_id": this.node.agent.id, "model": this.request.model,
                **_token_fields(live), "cost_usd": cost_usd(this.price, live),
            }, this.coalescer)

    @staticmethod
    async def _usage_written(run: RunContext, this: _Round) -> None:
        """No live usage of the node may land after its end: drop or wait for it."""
        with contextlib.suppress(Exception):
            await live_usage().settled(run.session_id, this.node.id)

    async def _complete(self, run: RunContext, this: _Round, round_: int) -> None:
        """Node done (every chunk stored: the log's text is the whole answer)."""
        node, request = this.node, this.request
        assert node.agent is not None and request is not None and this.message_id is not None
        partial_saves().forget(this.message_id)
        await self._usage_written(run, this)
        if this.toolbox is None:
            self._count_call(this)
        usage, price = this.used, this.price
        cost = cost_usd(price, usage)
        final_text = this.coalescer.text
        await run.store.node_complete(
            session_id=run.session_id, node_id=node.id, agent_id=node.agent.id, round=round_,
            model=request.model, message_id=this.message_id, text=final_text,
            thinking=this.coalescer.thinking_text, **_token_fields(usage),
            estimated=usage.estimated, cost_usd=cost,
            price=price.per_million() if price else {}, price_source=price.source if price else "",
        )
        run.budget.commit(node.id, cost)
        tracing.agent_usage(usage, cost)
        run.outputs[node.id] = final_text
        run.status[node.id] = NodeStatus.COMPLETED
        run.interrupted.discard(node.id)

    async def _cancelled(self, run: RunContext, this: _Round) -> None:
        """Stopped mid-stream: keep exactly what viewers were sent, mark the node stopped."""
        this.coalescer.discard()
        partial_saves().forget(this.message_id)
        run.status[this.node.id] = NodeStatus.STOPPED
        if run.abandoned:
            return
        # Shielded as a whole: a second cancel must not reorder or cut the clean-up.
        await asyncio.shield(self._write_stopped(run, this))

    async def _write_stopped(self, run: RunContext, this: _Round) -> None:
        await self._usage_written(run, this)
        await this.coalescer.settle()  # chunks already sent are stored before the stopped state
        await run.store.node_stopped(
            session_id=run.session_id, node_id=this.node.id, message_id=this.message_id,
            text=this.coalescer.text, thinking=this.coalescer.thinking_text,
        )

    async def _fail(self, run: RunContext, this: _Round, error: str, code: str) -> None:
        """The message keeps what the log holds (after a drain: everything that streamed,
        unless the log lost a chunk)."""
        tracing.agent_failed(error, code)
        partial_saves().forget(this.message_id)
        await self._usage_written(run, this)
        await this.coalescer.drain()
        await run.store.node_fail(
            session_id=run.session_id, node_id=this.node.id, error=error, code=code,
            message_id=this.message_id, text=this.coalescer.text,
            thinking=this.coalescer.thinking_text,
        )
        run.status[this.node.id] = NodeStatus.FAILED


def _token_fields(usage: Usage) -> dict[str, int]:
    """``<type>_tokens`` of every token type, as the run store takes them."""
    return {name: getattr(usage, name) for name in TOKEN_FIELDS}
