"""Runs one session's workflow: a DAG of agent and human-review nodes.

Nodes whose dependencies completed run concurrently. Tokens are coalesced per node in a
short window before they are published; rows are written only at node boundaries (and the
partial text about once a second). Pause holds every streaming node at its next chunk
boundary, stop cancels the provider calls. A run can be resumed by another runner after a
crash: completed nodes keep their output and usage and are never run again.

Failure policy: a failed node's dependents are skipped; branches that do not depend on it
run to the end; the session then ends ``failed``.

Everything is published through ``realtime.publisher`` and persisted through
``sessions_app.run_services`` (one transaction per node boundary). A database blip is
retried (``_db`` here, the publisher for the event log); a node whose streamed text could not
be logged fails with the text the log holds, so rows and log never disagree. docs/engine.md
has the full semantics.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from realtime.publisher import (
    RETRY_FIRST_DELAY,
    RETRY_MAX_DELAY,
    TRANSIENT_DB_ERRORS,
    get_publisher,
)
from sessions_app import run_services, services
from sessions_app.models import ReviewStatus
from workflows.definitions import NodeSpec, WorkflowDefinition
from workflows.pricing import cost_usd, known_model
from workflows.providers import (
    Chunk,
    CompletionRequest,
    ProviderError,
    Usage,
    effective_model,
    get_provider,
)
from workflows.providers.base import input_tokens as count_input_tokens

log = logging.getLogger(__name__)

TERMINAL = {"completed", "failed", "skipped", "stopped"}
UNRUNNABLE = ("failed", "skipped", "stopped")


# How long one node-boundary write may keep failing with a transient database error before
# the error is let through (the node or the run then fails).
DB_RETRY_SECONDS = 30.0

EVENT_LOG_LOST = "internal error: the event log could not be written (database unavailable)"


def _db(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``fn`` (a run_services call) in the database thread, retried through a database blip.

    Every call is one transaction (or a read), so an error means nothing was committed and
    calling again is safe; the engine changes its own state only after a write succeeded."""
    call = database_sync_to_async(_dropping_connection(fn))

    async def retrying(*args: Any, **kwargs: Any) -> Any:
        return await _retry(call, getattr(fn, "__name__", "write"), *args, **kwargs)

    return retrying


def _dropping_connection(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Close the thread's connection after a transient error, so a retry reconnects."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TRANSIENT_DB_ERRORS:
            if not connection.in_atomic_block:
                with contextlib.suppress(Exception):
                    connection.close()
            raise

    return call


async def _retry(call: Callable[..., Awaitable[Any]], name: str, *args: Any, **kwargs: Any) -> Any:
    """Await ``call`` again with back-off while the database is briefly gone, at most for
    DB_RETRY_SECONDS: the run holds meanwhile instead of failing for good."""
    deadline = time.monotonic() + DB_RETRY_SECONDS
    delay = RETRY_FIRST_DELAY
    while True:
        try:
            return await call(*args, **kwargs)
        except TRANSIENT_DB_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s failed (%s); retrying in %.2f s", name, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)


class EventLogUnavailable(Exception):
    """A token_stream event of the node could not be stored, even after the publisher's
    retries: the node must not complete with text the log (and every viewer) lacks."""


SENT_COMPACT_EVERY = 256


class Coalescer:
    """Merges one node's chunks for a short window so a fast model is not one event per token.

    Chunks of one kind (thinking or answer) are joined in order; a change of kind flushes
    first, so the transcript is identical whatever the window. ``sent_text`` and
    ``sent_thinking`` are what was stored in the event log (and so sent to viewers), filled
    in as the publisher's futures resolve: after a stop the unsent rest is dropped (no
    token_stream may follow a stop) and the stored message keeps exactly what was sent.
    ``failed`` is set when a chunk could not be stored; nothing more is published then.
    """

    def __init__(self, *, session_id: str, node_id: str, agent_id: str, window: float) -> None:
        self.session_id = session_id
        self.node_id = node_id
        self.agent_id = agent_id
        self.window = window
        self.parts: list[str] = []
        self.thinking = False
        self.events = 0
        self.sent_text: list[str] = []
        self.sent_thinking: list[str] = []
        self.last: asyncio.Future[int] | None = None
        self.failed: BaseException | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, chunk: Chunk) -> None:
        if self.parts and chunk.is_thinking != self.thinking:
            self.flush()
        if not self.parts:
            self.thinking = chunk.is_thinking
            if self.window > 0:
                self._timer = asyncio.get_running_loop().call_later(self.window, self.flush)
        self.parts.append(chunk.text)
        if self.window <= 0:
            self.flush()

    def flush(self) -> None:
        self._cancel_timer()
        if not self.parts:
            return
        if self.failed is not None:  # the log lost a chunk: the node fails, publish no more
            self.parts = []
            return
        text, self.parts = "".join(self.parts), []
        self.events += 1
        self.last = get_publisher().publish_nowait(
            session_id=self.session_id,
            event="token_stream",
            node_id=self.node_id,
            data={
                "chunk": text,
                "agent_id": self.agent_id,
                "node_id": self.node_id,
                "is_thinking": self.thinking,
            },
        )
        self.last.add_done_callback(functools.partial(self._stored, text, self.thinking))

    def _stored(self, text: str, thinking: bool, future: asyncio.Future[int]) -> None:
        # Futures resolve in publish order (the publisher keeps it), before anyone awaiting
        # them resumes: after settle() the sent_* lists hold exactly what the log holds.
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.failed = self.failed or error
            return
        sent = self.sent_thinking if thinking else self.sent_text
        sent.append(text)
        if len(sent) >= SENT_COMPACT_EVERY:
            # One string object per event costs ~50 bytes of overhead each for as long as the
            # node streams (a long node: thousands of events); joined, a node costs its text.
            sent[:] = ["".join(sent)]

    def check(self) -> None:
        """Raise if a chunk could not be stored (see EventLogUnavailable)."""
        if self.failed is not None:
            raise EventLogUnavailable(str(self.failed)) from self.failed

    def discard(self) -> None:
        """Drop what was not sent yet (stop, abandon): nothing more is published."""
        self._cancel_timer()
        self.parts = []

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def drain(self) -> None:
        """Flush and wait until every chunk is stored (before the node-boundary write)."""
        self.flush()
        await self.settle()

    async def settle(self) -> None:
        """Wait until every chunk published so far is stored (without flushing the rest)."""
        if self.last is not None:
            with contextlib.suppress(Exception):
                await self.last


@dataclass
class _Stream:
    """What one agent round produced so far (its text is the Coalescer's: what was logged)."""

    streamed: int = 0
    usage: Usage | None = None
    last_save: float = field(default_factory=time.monotonic)
    last_usage: float = field(default_factory=time.monotonic)

    def add(self, chunk: Chunk) -> None:
        self.streamed += 1


class SessionRunner:
    """Executes one session in the runner's event loop; see the module docstring."""

    def __init__(self, *, session_id: str, definition: WorkflowDefinition) -> None:
        self.session_id = str(session_id)
        self.definition = definition
        self.status: dict[str, str] = {n.id: "pending" for n in definition.nodes}
        self.outputs: dict[str, str] = {}
        self.rounds: dict[str, int] = {}
        # Nodes a dead runner left half-done: they run again with the round they had begun.
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

    # ------------------------------------------------------------------ control
    def on_control(self, action: str) -> None:
        """pause/resume/stop/review from the services (via the channel layer)."""
        self.control_at = time.monotonic()
        if action == "pause":
            self.running.clear()
        elif action == "resume":
            self.running.set()
            self.review_wake.set()
        elif action == "stop":
            self.stop()
        elif action == "review":
            self.review_wake.set()

    def apply_status(self, status: str | None, read_at: float | None = None) -> None:
        """Re-read session status (lease renewal): recovers a lost control message.

        A status read before the last control message arrived is stale (a pause committed
        right after the read would otherwise be undone until the next renewal): ignore it."""
        if read_at is not None and read_at < self.control_at:
            return
        if status in ("stopped", "completed", "failed", None):
            self.stop()
        elif status == "paused":
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
        for task in self.tasks.values():
            task.cancel()

    def abandon(self) -> None:
        """Stop without writing anything: the run is (or will be) someone else's."""
        self.abandoned = True
        self.stop()

    # ------------------------------------------------------------------ run
    async def run(self) -> str | None:
        """Run (or continue) the session to its end; returns the final session status."""
        begin = await _db(run_services.run_begin)(session_id=self.session_id)
        if begin is None:
            return None
        self._load(begin)
        self.apply_status(begin.status)
        error = ""
        try:
            error = await self._refuse_unpriced()
            if not error:
                await self._schedule()
        except asyncio.CancelledError:
            self.abandon()
            raise
        except Exception as exc:  # a bug or a database outage: fail cleanly, never half-way
            log.exception("run of %s failed", self.session_id)
            error = f"internal error: {exc.__class__.__name__}"
        finally:
            await self._end_tasks()
        if self.abandoned:
            return None
        await get_publisher().flush()
        self.finishing = True
        return await _db(run_services.run_finish)(session_id=self.session_id, error=error)

    def _load(self, begin: run_services.RunStart) -> None:
        """Take the state a previous runner left (all pending on a fresh start)."""
        for node_id, status in begin.node_status.items():
            # A review that was waiting when the previous runner died is asked again.
            self.status[node_id] = "pending" if status == "waiting_review" else status
        self.outputs.update(begin.outputs)
        self.rounds.update(begin.rounds)
        self.interrupted = set(begin.interrupted)
        for node in self.definition.nodes:
            target = node.options.get("reviews") if node.type == "human_review" else None
            if begin.node_status.get(node.id) == "waiting_review" and target in self.interrupted:
                # The reviewed agent was answering a rejection: the review re-runs it.
                self.status[target] = "completed"

    async def _end_tasks(self) -> None:
        """Cancel what still runs (not twice: a second cancel would cut its clean-up)."""
        for task in self.tasks.values():
            if not task.done() and not task.cancelling():
                task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def _refuse_unpriced(self) -> str:
        """Fail at the start, not mid-way, if a model that would run has no price."""
        missing: dict[str, str] = {}
        for node in self.definition.nodes:
            if node.agent is None or self.status[node.id] in TERMINAL:
                continue
            try:
                model = effective_model(node.agent.provider, node.agent.model)
            except ValueError as exc:
                missing[node.id] = str(exc)
                continue
            if not known_model(model):
                missing[node.id] = (
                    f"model {model!r} has no price in workflows.pricing; add it with "
                    "EXTRA_MODEL_PRICES=name:input_per_million:output_per_million"
                )
        if not missing:
            return ""
        for node_id, error in missing.items():
            await _db(run_services.node_fail)(
                session_id=self.session_id, node_id=node_id, error=error, code="node_failed",
                message_id=None,
            )
            self.status[node_id] = "failed"
        pending = [n for n, s in self.status.items() if s == "pending"]
        await _db(run_services.nodes_skip)(
            session_id=self.session_id, node_ids=pending,
            reason="not run: the workflow uses a model without a price",
        )
        return f"cannot run: {next(iter(missing.values()))}"

    def _ready(self) -> list[NodeSpec]:
        return [
            node
            for node in self.definition.nodes
            if self.status[node.id] == "pending"
            and node.id not in self.tasks
            and all(self.status[d] == "completed" for d in node.depends_on)
        ]

    def _blocked(self) -> list[str]:
        return [
            node.id
            for node in self.definition.nodes
            if self.status[node.id] == "pending"
            and any(self.status[d] in UNRUNNABLE for d in node.depends_on)
        ]

    async def _skip_blocked(self) -> None:
        blocked = self._blocked()
        while blocked:
            await _db(run_services.nodes_skip)(
                session_id=self.session_id, node_ids=blocked,
                reason="skipped: a node it depends on failed",
            )
            for node_id in blocked:
                self.status[node_id] = "skipped"
            blocked = self._blocked()

    async def _schedule(self) -> None:
        while not self.stopped:
            await self._skip_blocked()
            ready = self._ready()
            if ready:
                await self.running.wait()  # paused: start nothing new
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
                    if not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]

    async def _launch(self, ready: list[NodeSpec]) -> None:
        """Start nodes together; more than one is announced as a parallel start."""
        if len(ready) > 1:
            trigger = ready[0].depends_on[-1] if ready[0].depends_on else None
            await get_publisher().publish(
                session_id=self.session_id, event="node:parallel_start", node_id=trigger,
                data={"node_id": trigger, "branches": [n.id for n in ready]},
            )
            if self.stopped:
                return
        for node in ready:
            self.status[node.id] = "running"
            self.tasks[node.id] = asyncio.create_task(self._run_node(node), name=f"node-{node.id}")

    async def _run_node(self, node: NodeSpec) -> None:
        if node.type == "human_review":
            await self._run_review(node)
        else:
            await self._run_agent(node, round_=self._next_round(node.id), feedback=[])

    def _next_round(self, node_id: str) -> int:
        """A new round, or the same round again for a node a dead runner left half-done
        (its usage row was never written, so nothing is counted twice)."""
        current = self.rounds.get(node_id, 0)
        if node_id in self.interrupted and current > 0:
            return current
        return current + 1 if self.status.get(node_id) == "completed" else max(1, current)

    # ------------------------------------------------------------------ agents
    def _request(
        self, node: NodeSpec, feedback: list[str], users: list[dict[str, str]],
        notes: dict[str, list[str]],
    ) -> CompletionRequest:
        """What the agent sees: upstream answers, review notes, users' messages, then (on a
        retry) its own previous answer and the reviewer's comment."""
        agent = node.agent
        assert agent is not None
        messages: list[dict[str, str]] = []
        for dep in self._upstream(node):
            title = self.definition.node(dep).title
            messages.append(
                {"role": "user", "content": f"Output of {title}:\n{self.outputs.get(dep, '')}"}
            )
        for comments in notes.values():
            messages.extend(
                {"role": "user", "content": f"The reviewer approved with this note: {c}"}
                for c in comments
            )
        for item in users:
            messages.append({"role": "user", "content": f"{item['user']} says: {item['text']}"})
        if feedback and self.outputs.get(node.id):
            messages.append({"role": "assistant", "content": self.outputs[node.id]})
        for comment in feedback:
            messages.append(
                {"role": "user", "content": f"The reviewer rejected your answer: {comment}"}
            )
        if not messages:
            messages.append({"role": "user", "content": "Open the meeting."})
        return CompletionRequest(
            model=effective_model(agent.provider, agent.model),
            system=f"You are {agent.name}, {agent.role}.\n{agent.prompt}",
            messages=messages,
            options=dict(node.options),
            node_id=node.id,
            agent_id=agent.id,
        )

    def _upstream(self, node: NodeSpec) -> list[str]:
        """Direct dependencies, looking through review nodes to what they reviewed."""
        result: list[str] = []
        for dep in node.depends_on:
            spec = self.definition.node(dep)
            target = spec.options["reviews"] if spec.type == "human_review" else dep
            if target not in result:
                result.append(target)
        return result

    async def _review_notes(self, node: NodeSpec) -> dict[str, list[str]]:
        notes: dict[str, list[str]] = {}
        for dep in node.depends_on:
            if self.definition.node(dep).type == "human_review":
                notes[dep] = await _db(run_services.review_comments)(
                    session_id=self.session_id, node_id=dep
                )
        return notes

    async def _run_agent(self, node: NodeSpec, *, round_: int, feedback: list[str]) -> None:
        """One round of an agent: stream, then one node-boundary write (or fail / stop)."""
        agent = node.agent
        assert agent is not None
        if self.stopped:
            return
        coalescer = Coalescer(
            session_id=self.session_id, node_id=node.id, agent_id=agent.id,
            window=settings.TOKEN_COALESCE_MS / 1000.0,
        )
        out = _Stream()
        begin = asyncio.ensure_future(
            _db(run_services.node_begin)(
                session_id=self.session_id, node_id=node.id, agent_id=agent.id, round=round_
            )
        )
        message_id: int | None = None
        try:
            message_id = await asyncio.shield(begin)
            self.status[node.id] = "running"
            self.rounds[node.id] = round_
            # Users' messages stored before this node started (its message row) are its context.
            users = await _db(run_services.user_messages_before)(
                session_id=self.session_id, before_id=message_id
            )
            request = self._request(node, feedback, users, await self._review_notes(node))
            await self._stream(node, request, message_id, coalescer, out)
            await coalescer.drain()
            coalescer.check()
        except asyncio.CancelledError:
            if message_id is None:  # stopped while the node was starting: let that finish
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    message_id = await begin
            await self._cancelled(node, message_id, coalescer)
            raise
        except EventLogUnavailable as exc:
            log.error("node %s of %s: streamed text could not be logged (%s)",
                      node.id, self.session_id, exc)
            await coalescer.drain()
            await self._fail(node, EVENT_LOG_LOST, "internal", message_id, coalescer)
            return
        except ProviderError as exc:
            await coalescer.drain()
            await self._fail(node, str(exc) or "the model provider failed", "provider_error",
                             message_id, coalescer)
            return
        except Exception as exc:  # a bug must fail this node, not the whole run half-way
            log.exception("node %s of %s crashed", node.id, self.session_id)
            await coalescer.drain()
            await self._fail(node, f"internal error: {exc.__class__.__name__}", "internal",
                             message_id, coalescer)
            return
        await self._complete_or_fail(node, request, round_, message_id, coalescer, out)

    async def _complete_or_fail(
        self, node: NodeSpec, request: CompletionRequest, round_: int, message_id: int,
        coalescer: Coalescer, out: _Stream,
    ) -> None:
        """Complete the node; if the database stays away past the retries, fail it instead
        (with the logged text), so its message is not left open with another text."""
        try:
            await self._complete(node, request, round_, message_id, coalescer, out)
        except TRANSIENT_DB_ERRORS as exc:
            log.error("node %s of %s could not be completed (%s)", node.id, self.session_id, exc)
            await self._fail(node, f"internal error: {exc.__class__.__name__}", "internal",
                             message_id, coalescer)

    async def _stream(
        self, node: NodeSpec, request: CompletionRequest, message_id: int, coalescer: Coalescer,
        out: _Stream,
    ) -> None:
        assert node.agent is not None
        stream = get_provider(node.agent.provider).stream(request)
        try:
            async for item in stream:
                if isinstance(item, Usage):
                    out.usage = item
                    continue
                await self._hold_if_paused(node, coalescer)
                coalescer.add(item)
                coalescer.check()
                out.add(item)
                await self._checkpoint(node, request, message_id, coalescer, out)
        finally:
            # Close the provider call now (HTTP stream, client), not when it is collected.
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    async def _hold_if_paused(self, node: NodeSpec, coalescer: Coalescer) -> None:
        """Pause at a chunk boundary: what was streamed is stored, the chunk waits."""
        if self.running.is_set():
            return
        await coalescer.drain()
        coalescer.check()
        await _db(run_services.node_set_status)(
            session_id=self.session_id, node_id=node.id, status="paused"
        )
        await self.running.wait()
        if self.stopped:
            raise asyncio.CancelledError
        await _db(run_services.node_set_status)(
            session_id=self.session_id, node_id=node.id, status="running"
        )

    async def _checkpoint(
        self, node: NodeSpec, request: CompletionRequest, message_id: int, coalescer: Coalescer,
        out: _Stream,
    ) -> None:
        """Partial text (what the log holds so far) about once a second, live usage every
        USAGE_INTERVAL_SECONDS."""
        assert node.agent is not None
        now = time.monotonic()
        if now - out.last_save >= settings.PARTIAL_SAVE_SECONDS:
            out.last_save = now
            await _db(run_services.message_save_partial)(
                message_id=message_id, text="".join(coalescer.sent_text),
                thinking="".join(coalescer.sent_thinking),
            )
        if now - out.last_usage >= settings.USAGE_INTERVAL_SECONDS:
            out.last_usage = now
            await coalescer.drain()
            used_in = count_input_tokens(request)
            await _db(run_services.usage_progress)(
                session_id=self.session_id, node_id=node.id, agent_id=node.agent.id,
                model=request.model, input_tokens=used_in, output_tokens=out.streamed,
                cost_usd=cost_usd(model=request.model, input_tokens=used_in,
                                  output_tokens=out.streamed),
            )

    async def _complete(
        self, node: NodeSpec, request: CompletionRequest, round_: int, message_id: int,
        coalescer: Coalescer, out: _Stream,
    ) -> None:
        """Node done (every chunk stored: the log's text is the whole answer)."""
        assert node.agent is not None
        usage = out.usage or Usage(input_tokens=count_input_tokens(request),
                                   output_tokens=out.streamed, estimated=True)
        final_text = "".join(coalescer.sent_text)
        await _db(run_services.node_complete)(
            session_id=self.session_id, node_id=node.id, agent_id=node.agent.id, round=round_,
            model=request.model, message_id=message_id, text=final_text,
            thinking="".join(coalescer.sent_thinking),
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cost_usd=cost_usd(model=request.model, input_tokens=usage.input_tokens,
                              output_tokens=usage.output_tokens),
        )
        self.outputs[node.id] = final_text
        self.status[node.id] = "completed"
        self.interrupted.discard(node.id)

    async def _cancelled(
        self, node: NodeSpec, message_id: int | None, coalescer: Coalescer
    ) -> None:
        """Stopped mid-stream: keep exactly what viewers were sent, mark the node stopped."""
        coalescer.discard()
        self.status[node.id] = "stopped"
        if self.abandoned:
            return
        # Shielded as a whole: a second cancel must not reorder or cut the clean-up.
        await asyncio.shield(self._write_stopped(node, message_id, coalescer))

    async def _write_stopped(
        self, node: NodeSpec, message_id: int | None, coalescer: Coalescer
    ) -> None:
        await coalescer.settle()  # chunks already sent are stored before the stopped state
        await _db(run_services.node_stopped)(
            session_id=self.session_id, node_id=node.id, message_id=message_id,
            text="".join(coalescer.sent_text), thinking="".join(coalescer.sent_thinking),
        )

    async def _fail(
        self, node: NodeSpec, error: str, code: str, message_id: int | None, coalescer: Coalescer
    ) -> None:
        """The message keeps what the log holds (after a drain: everything that streamed,
        unless the log lost a chunk)."""
        await _db(run_services.node_fail)(
            session_id=self.session_id, node_id=node.id, error=error, code=code,
            message_id=message_id, text="".join(coalescer.sent_text),
            thinking="".join(coalescer.sent_thinking),
        )
        self.status[node.id] = "failed"

    # ------------------------------------------------------------------ reviews
    async def _run_review(self, node: NodeSpec) -> None:
        """Ask, wait, and on a rejection send the reviewed agent back, up to max_rounds.

        Every step is read back from the rows first, so a runner taking over continues the
        round it finds (re-asking a pending review, or finishing a rejection's retry)."""
        try:
            if await self._review_rounds(node):
                await _db(run_services.review_close)(session_id=self.session_id, node_id=node.id)
                self.status[node.id] = "completed"
        except asyncio.CancelledError:
            self.status[node.id] = "stopped"
            if not self.abandoned:
                await asyncio.shield(
                    _db(run_services.node_stopped)(
                        session_id=self.session_id, node_id=node.id, message_id=None
                    )
                )
            raise

    async def _review_rounds(self, node: NodeSpec) -> bool:
        """True once approved; False if the reviewed agent failed its retry (node skipped)."""
        options = node.options
        reviewed = self.definition.node(options["reviews"])
        max_rounds = int(options.get("max_rounds", 1))
        round_ = max(1, self.rounds.get(node.id, 0))
        while True:
            self.rounds[node.id] = round_
            if round_ - 1 >= max_rounds:
                # Rejections spent: approve automatically, with a note, so no loop is endless.
                await _db(run_services.review_auto_approve)(
                    session_id=self.session_id, node_id=node.id, reviewed_node_id=reviewed.id,
                    round=round_, reason=options["reason"],
                    comment=f"approved automatically: {max_rounds} rejection round(s) used",
                )
                return True
            await _db(run_services.review_open)(
                session_id=self.session_id, node_id=node.id, reviewed_node_id=reviewed.id,
                round=round_, reason=options["reason"], timeout=options.get("timeout"),
            )
            decision, comment, decided_at = await self._await_decision(node, round_)
            if decision == "approve":
                return True
            if not await self._answer_again(reviewed, comment, decided_at):
                await _db(run_services.nodes_skip)(
                    session_id=self.session_id, node_ids=[node.id],
                    reason="skipped: the reviewed node failed its retry",
                )
                self.status[node.id] = "skipped"
                return False
            round_ += 1

    async def _answer_again(self, reviewed: NodeSpec, comment: str, decided_at: Any) -> bool:
        """Run the reviewed agent again with the comment, unless (after a take-over) that
        retry already completed. True when the reviewed node has a fresh answer."""
        if reviewed.id not in self.interrupted and await _db(run_services.answered_after)(
            session_id=self.session_id, node_id=reviewed.id, moment=decided_at
        ):
            return True
        round_ = self._next_round(reviewed.id)
        await self._run_agent(reviewed, round_=round_, feedback=[comment or "(no comment)"])
        return self.status[reviewed.id] == "completed"

    async def _await_decision(self, node: NodeSpec, round_: int) -> tuple[str, str, Any]:
        """Wait for a human (woken by the review control message, polled every second);
        apply the default decision once the deadline passed while the session runs."""
        while True:
            self.review_wake.clear()
            review = await _db(run_services.review_state)(
                session_id=self.session_id, node_id=node.id, round=round_
            )
            if review is None or review.status == ReviewStatus.CANCELLED:
                self.stop()  # the session was stopped; the control message may be late
                raise asyncio.CancelledError
            if review.status in (ReviewStatus.DECIDED, ReviewStatus.TIMED_OUT):
                return review.decision, review.comment, review.decided_at
            wait = 1.0
            if review.deadline is not None and self.running.is_set():
                left = (review.deadline - timezone.now()).total_seconds()
                if left <= 0 and await _db(self._decide_default)(node):
                    continue
                wait = max(0.05, min(wait, left)) if left > 0 else wait
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.review_wake.wait(), timeout=wait)

    def _decide_default(self, node: NodeSpec) -> bool:
        """Record the definition's default decision as timed out; False if it cannot be
        recorded now (decided meanwhile, or the session is not in a reviewable state)."""
        try:
            with transaction.atomic():
                services.review_submit(
                    session_id=self.session_id, user=None, node_id=node.id,
                    decision=node.options.get("default_decision", "approve"),
                    comment="no decision before the timeout: default applied", timed_out=True,
                )
        except services.ServiceError as exc:
            log.info("default decision for %s not applied: %s", node.id, exc.message)
            return False
        return True

