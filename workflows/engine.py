"""Runs one session's workflow: a DAG of agent and human-review nodes.

Nodes whose dependencies completed run concurrently. Tokens are coalesced per node in a
short window before they are published; rows are written only at node boundaries (and the
partial text about once a second). Pause holds every streaming node at its next chunk
boundary, stop cancels the provider calls. A run can be resumed by another runner after a
crash: completed nodes keep their output and usage and are never run again.

Failure policy: a failed node's dependents are skipped; branches that do not depend on it
run to the end; the session then ends ``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from realtime.publisher import get_publisher
from sessions_app import run_services, services
from sessions_app.models import ReviewStatus
from workflows.definitions import NodeSpec, WorkflowDefinition
from workflows.pricing import cost_usd
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


def _db(fn: Any) -> Any:
    return database_sync_to_async(fn)


class Coalescer:
    """Merges one node's chunks for a short window so a fast model is not one event per token.

    Chunks of one kind (thinking or answer) are joined in order; a change of kind flushes
    first, so the transcript is identical whatever the window.
    """

    def __init__(self, *, session_id: str, node_id: str, agent_id: str, window: float) -> None:
        self.session_id = session_id
        self.node_id = node_id
        self.agent_id = agent_id
        self.window = window
        self.parts: list[str] = []
        self.thinking = False
        self.started = 0.0
        self.events = 0
        self.last: asyncio.Future[int] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, chunk: Chunk) -> None:
        if self.parts and chunk.is_thinking != self.thinking:
            self.flush()
        if not self.parts:
            self.thinking = chunk.is_thinking
            self.started = time.monotonic()
            if self.window > 0:
                self._timer = asyncio.get_running_loop().call_later(self.window, self.flush)
        self.parts.append(chunk.text)
        if self.window <= 0:
            self.flush()

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.parts:
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

    async def drain(self) -> None:
        """Flush and wait until every chunk is stored (before the node-boundary write)."""
        self.flush()
        if self.last is not None:
            with contextlib.suppress(Exception):
                await self.last


@dataclass
class _NodeRun:
    spec: NodeSpec
    round: int = 1
    feedback: list[str] = field(default_factory=list)


class SessionRunner:
    def __init__(self, *, session_id: str, definition: WorkflowDefinition) -> None:
        self.session_id = str(session_id)
        self.definition = definition
        self.status: dict[str, str] = {n.id: "pending" for n in definition.nodes}
        self.outputs: dict[str, str] = {}
        self.rounds: dict[str, int] = {}
        self.running = asyncio.Event()
        self.running.set()
        self.stopped = False
        self.review_wake = asyncio.Event()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.live_usage: dict[str, tuple[int, int, Decimal]] = {}

    # ------------------------------------------------------------------ control
    def on_control(self, action: str) -> None:
        """pause/resume/stop/review from the services (via the channel layer)."""
        if action == "pause":
            self.running.clear()
        elif action == "resume":
            self.running.set()
        elif action == "stop":
            self.stop()
        elif action == "review":
            self.review_wake.set()

    def apply_status(self, status: str | None) -> None:
        """Re-read session status (lease renewal): recovers a lost control message."""
        if status in ("stopped", "completed", "failed", None):
            self.stop()
        elif status == "paused":
            self.running.clear()
        else:
            self.running.set()
            self.review_wake.set()

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.running.set()
        for task in self.tasks.values():
            task.cancel()

    # ------------------------------------------------------------------ run
    async def run(self) -> str | None:
        begin = await _db(run_services.run_begin)(session_id=self.session_id)
        if begin is None:
            return None
        for node_id, status in begin.node_status.items():
            # A review that was waiting when the previous runner died is asked again.
            self.status[node_id] = "pending" if status == "waiting_review" else status
        self.outputs.update(begin.completed)
        self.rounds.update(begin.rounds)
        self.apply_status(begin.status)
        error = ""
        try:
            await self._schedule()
        except asyncio.CancelledError:
            self.stop()
            raise
        except Exception as exc:  # a bug or a database outage: fail cleanly, never half-way
            log.exception("run of %s failed", self.session_id)
            error = f"internal error: {exc.__class__.__name__}"
        finally:
            for task in self.tasks.values():
                task.cancel()
            if self.tasks:
                await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        await get_publisher().flush()
        return await _db(run_services.run_finish)(session_id=self.session_id, error=error)

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
            and any(self.status[d] in ("failed", "skipped", "stopped") for d in node.depends_on)
        ]

    async def _schedule(self) -> None:
        while not self.stopped:
            blocked = self._blocked()
            while blocked:
                await _db(run_services.nodes_skip)(
                    session_id=self.session_id, node_ids=blocked,
                    reason="skipped: a node it depends on failed",
                )
                for node_id in blocked:
                    self.status[node_id] = "skipped"
                blocked = self._blocked()
            ready = self._ready()
            if ready:
                await self.running.wait()
                if self.stopped:
                    break
                if len(ready) > 1:
                    trigger = ready[0].depends_on[-1] if ready[0].depends_on else None
                    await get_publisher().publish(
                        session_id=self.session_id, event="node:parallel_start", node_id=trigger,
                        data={"node_id": trigger, "branches": [n.id for n in ready]},
                    )
                for node in ready:
                    self.status[node.id] = "running"
                    self.tasks[node.id] = asyncio.create_task(
                        self._run_node(node), name=f"node-{node.id}"
                    )
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

    async def _run_node(self, node: NodeSpec) -> None:
        if node.type == "human_review":
            await self._run_review(node)
        else:
            round_ = self.rounds.get(node.id, 0) + 1
            await self._run_agent(node, round_=round_, feedback=[])

    # ------------------------------------------------------------------ agents
    def _request(self, node: NodeSpec, feedback: list[str], users: list[dict]) -> CompletionRequest:
        agent = node.agent
        assert agent is not None
        messages: list[dict[str, str]] = []
        for dep in self._upstream(node):
            title = self.definition.node(dep).title
            messages.append(
                {"role": "user", "content": f"Output of {title}:\n{self.outputs.get(dep, '')}"}
            )
        for item in users:
            messages.append({"role": "user", "content": f"{item['user']} says: {item['text']}"})
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
            if spec.type == "human_review":
                result.append(spec.options["reviews"])
            else:
                result.append(dep)
        return result

    async def _run_agent(self, node: NodeSpec, *, round_: int, feedback: list[str]) -> None:
        agent = node.agent
        assert agent is not None
        users = await _db(run_services.user_messages_before)(session_id=self.session_id)
        request = self._request(node, feedback, users)
        model = request.model
        message_id = await _db(run_services.node_begin)(
            session_id=self.session_id, node_id=node.id, agent_id=agent.id, round=round_
        )
        self.status[node.id] = "running"
        self.rounds[node.id] = round_
        coalescer = Coalescer(
            session_id=self.session_id, node_id=node.id, agent_id=agent.id,
            window=settings.TOKEN_COALESCE_MS / 1000.0,
        )
        text: list[str] = []
        thinking: list[str] = []
        usage: Usage | None = None
        streamed = 0
        last_save = last_usage = time.monotonic()
        try:
            async for item in get_provider(agent.provider).stream(request):
                if isinstance(item, Usage):
                    usage = item
                    continue
                if not self.running.is_set():
                    await coalescer.drain()
                    await _db(run_services.node_set_status)(
                        session_id=self.session_id, node_id=node.id, status="paused"
                    )
                    await self.running.wait()
                    if self.stopped:
                        raise asyncio.CancelledError
                    await _db(run_services.node_set_status)(
                        session_id=self.session_id, node_id=node.id, status="running"
                    )
                coalescer.add(item)
                (thinking if item.is_thinking else text).append(item.text)
                streamed += 1
                now = time.monotonic()
                if now - last_save >= settings.PARTIAL_SAVE_SECONDS:
                    last_save = now
                    await _db(run_services.message_save_partial)(
                        message_id=message_id, text="".join(text), thinking="".join(thinking)
                    )
                if now - last_usage >= settings.USAGE_INTERVAL_SECONDS:
                    last_usage = now
                    await coalescer.drain()
                    await _db(run_services.usage_progress)(
                        session_id=self.session_id, node_id=node.id, agent_id=agent.id,
                        model=model, input_tokens=count_input_tokens(request),
                        output_tokens=streamed,
                        cost_usd=cost_usd(model=model, input_tokens=count_input_tokens(request),
                                          output_tokens=streamed),
                    )
        except asyncio.CancelledError:
            await coalescer.drain()
            await asyncio.shield(
                _db(run_services.node_stopped)(
                    session_id=self.session_id, node_id=node.id, message_id=message_id,
                    text="".join(text), thinking="".join(thinking),
                )
            )
            self.status[node.id] = "stopped"
            raise
        except ProviderError as exc:
            await coalescer.drain()
            await self._fail(node, str(exc) or "the model provider failed", "provider_error",
                             message_id, text, thinking)
            return
        await coalescer.drain()
        if usage is None:
            usage = Usage(input_tokens=count_input_tokens(request), output_tokens=streamed)
        final_text = "".join(text)
        await _db(run_services.node_complete)(
            session_id=self.session_id, node_id=node.id, agent_id=agent.id, round=round_,
            model=model, message_id=message_id, text=final_text, thinking="".join(thinking),
            input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
            cost_usd=cost_usd(model=model, input_tokens=usage.input_tokens,
                              output_tokens=usage.output_tokens),
        )
        self.outputs[node.id] = final_text
        self.status[node.id] = "completed"

    async def _fail(
        self, node: NodeSpec, error: str, code: str, message_id: int | None,
        text: list[str], thinking: list[str],
    ) -> None:
        await _db(run_services.node_fail)(
            session_id=self.session_id, node_id=node.id, error=error, code=code,
            message_id=message_id, text="".join(text), thinking="".join(thinking),
        )
        self.status[node.id] = "failed"

    # ------------------------------------------------------------------ reviews
    async def _run_review(self, node: NodeSpec) -> None:
        options = node.options
        reviewed = self.definition.node(options["reviews"])
        max_rounds = int(options.get("max_rounds", 1))
        round_ = max(1, self.rounds.get(node.id, 0) or 1)
        rejections = round_ - 1
        while True:
            if rejections >= max_rounds and round_ > 1:
                # Rejections spent: approve automatically, with a note, so no loop is endless.
                review = await _db(run_services.review_open)(
                    session_id=self.session_id, node_id=node.id, reviewed_node_id=reviewed.id,
                    round=round_, reason=options["reason"], timeout=None,
                )
                if review.status == ReviewStatus.PENDING:
                    await _db(self._decide)(
                        node.id, "approve",
                        f"approved automatically: {max_rounds} rejection round(s) used", True,
                    )
                break
            review = await _db(run_services.review_open)(
                session_id=self.session_id, node_id=node.id, reviewed_node_id=reviewed.id,
                round=round_, reason=options["reason"], timeout=options.get("timeout"),
            )
            decision, comment = await self._await_decision(node, round_, review.deadline,
                                                           options)
            if decision == "approve":
                break
            rejections += 1
            if rejections > max_rounds:
                break
            round_ += 1
            reviewed_round = self.rounds.get(reviewed.id, 1) + 1
            await self._run_agent(reviewed, round_=reviewed_round, feedback=[comment])
            if self.status[reviewed.id] != "completed":
                self.status[node.id] = "skipped"
                await _db(run_services.nodes_skip)(
                    session_id=self.session_id, node_ids=[node.id],
                    reason="skipped: the reviewed node failed",
                )
                return
            self.rounds[node.id] = round_
        await _db(run_services.review_close)(session_id=self.session_id, node_id=node.id)
        self.status[node.id] = "completed"

    def _decide(self, node_id: str, decision: str, comment: str, timed_out: bool) -> None:
        from django.db import transaction

        try:
            with transaction.atomic():
                services.review_submit(
                    session_id=self.session_id, user=None, node_id=node_id, decision=decision,
                    comment=comment, timed_out=timed_out,
                )
        except services.ServiceError:
            log.info("review of %s was decided meanwhile", node_id)

    async def _await_decision(
        self, node: NodeSpec, round_: int, deadline: Any, options: dict[str, Any]
    ) -> tuple[str, str]:
        from django.utils import timezone

        while True:
            review = await _db(run_services.review_state)(
                session_id=self.session_id, node_id=node.id, round=round_
            )
            if review is not None and review.status in (ReviewStatus.DECIDED, ReviewStatus.TIMED_OUT):
                return review.decision, review.comment
            if review is not None and review.status == ReviewStatus.CANCELLED:
                raise asyncio.CancelledError
            wait = 1.0
            if deadline is not None:
                left = (deadline - timezone.now()).total_seconds()
                if left <= 0 and self.running.is_set():
                    await _db(self._decide)(
                        node.id, options.get("default_decision", "approve"),
                        "no decision before the timeout: default applied", True,
                    )
                    continue
                wait = max(0.05, min(wait, left))
            self.review_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.review_wake.wait(), timeout=wait)
