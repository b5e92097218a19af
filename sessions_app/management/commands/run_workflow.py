"""Run one workflow headless, in this process, with a live progress line and cost.

    python manage.py run_workflow demo --owner alice --title "Launch review"

The session is created and executed by an executor on this command's own event loop (it
claims only this session, so it never picks up other queued runs); the event log is
polled to draw one updating line on a terminal, or plain lines when stdout is not a TTY:

    [#####.....] 4/8 nodes  $0.001234  in 812 out 1,034  running: market, tech

Human reviews are approved automatically by default (``--review approve``);
``--review reject-first`` rejects each review's first round with ``--comment`` and approves
later rounds; ``--review wait`` decides nothing (the definition's timeout and default
decision apply, or someone decides in the meeting room). Ctrl-C stops the session. The
exit status is 0 only if the session completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from realtime.eventlog import read_envelopes
from realtime.vocabulary import EventName, NodeStatus, ReviewDecision, SessionStatus
from sessions_app import services
from sessions_app.services.leases import session_start_leased
from workflows.definitions import DefinitionError
from workflows.worker import Executor

DEFAULT_COMMENT = "Please tighten the recommendation and address the biggest risk explicitly."
BAR_WIDTH = 10


@dataclass
class Progress:
    """The room state this command needs, folded from the session's logged events."""

    node_ids: list[str]
    status: dict[str, str] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    outcome: str = ""
    asks: list[tuple[str, int]] = field(default_factory=list)  # reviews asked, not yet handled

    def apply(self, envelope: dict[str, Any]) -> bool:
        """Apply one event; True when the line worth printing changed (a plain-line step)."""
        name, data = envelope["event"], envelope["data"]
        if name == EventName.NODE_STATE_CHANGE:
            self.status[data["node_id"]] = data["status"]
            return True
        if name == EventName.TOKEN_USAGE:
            self.input_tokens = data["session_input_tokens"]
            self.output_tokens = data["session_output_tokens"]
            self.cost_usd = data["session_cost_usd"]
        elif name == EventName.HUMAN_INTERACTION_REQUIRED:
            self.asks.append((data["node_id"], int(data.get("round") or 1)))
        elif name == EventName.EXECUTION_COMPLETED:
            self.input_tokens, self.output_tokens = data["input_tokens"], data["output_tokens"]
            self.cost_usd = data["cost_usd"]
            self.outcome = SessionStatus.COMPLETED
            return True
        elif name == EventName.EXECUTION_FAILED:
            self.outcome = SessionStatus.FAILED
            return True
        elif name == EventName.EXECUTION_STOPPED:
            self.outcome = SessionStatus.STOPPED
            return True
        return False

    def line(self) -> str:
        """``[#####.....] 4/8 nodes  $0.001234  in 812 out 1,034  running: market, tech``"""
        total = len(self.node_ids) or 1
        done = sum(1 for n in self.node_ids if self.status.get(n) == NodeStatus.COMPLETED)
        filled = round(BAR_WIDTH * done / total)
        text = (
            f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{len(self.node_ids)} nodes  "
            f"${Decimal(str(self.cost_usd)):.6f}  in {self.input_tokens:,} out {self.output_tokens:,}"
        )
        groups = {
            label: [n for n in self.node_ids if self.status.get(n) == status]
            for label, status in (("running", NodeStatus.RUNNING), ("paused", NodeStatus.PAUSED),
                                  ("waiting", NodeStatus.WAITING_REVIEW), ("failed", NodeStatus.FAILED))
        }
        for label, nodes in groups.items():
            if nodes:
                text += f"  {label}: {', '.join(nodes)}"
        if self.outcome:
            text += f"  -> {self.outcome}"
        return text


class Command(BaseCommand):
    help = "Run a workflow headless in this process with a live progress line; exit 1 unless it completes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("workflow", help="workflow slug, e.g. demo")
        parser.add_argument("--owner", default="demo", help="username owning the session (default: demo)")
        parser.add_argument("--title", default="", help="session title")
        parser.add_argument(
            "--review", choices=("approve", "reject-first", "wait"), default="approve",
            help="how human reviews are decided (default: approve automatically)",
        )
        parser.add_argument("--comment", default=DEFAULT_COMMENT, help="comment of a rejection")
        parser.add_argument("--poll", type=float, default=0.2, help="seconds between progress updates")

    def handle(self, *args: Any, **options: Any) -> None:
        owner = get_user_model().objects.filter(username=options["owner"]).first()
        if owner is None:
            raise CommandError(
                f"no user {options['owner']!r}: pass --owner USER (or create 'demo' with ensure_demo_user)"
            )
        try:
            session = services.session_create(
                owner=owner, workflow_slug=options["workflow"], title=options["title"]
            )
        except DefinitionError as exc:
            raise CommandError(str(exc)) from exc
        self.owner = owner
        self.options = options
        self.tty = self.stdout.isatty()
        self.stdout.write(f"session {session.pk} ({session.workflow_slug}): {session.title}")
        started = time.monotonic()
        asyncio.run(self._main(str(session.pk), [n["id"] for n in session.workflow_definition["nodes"]]))
        session.refresh_from_db()
        self.stdout.write(
            f"{session.status} in {time.monotonic() - started:.1f} s: "
            f"{session.nodes_completed}/{session.nodes_total} nodes, in {session.input_tokens:,} "
            f"out {session.output_tokens:,} tokens, ${session.cost_usd:.6f}"
        )
        if session.status != SessionStatus.COMPLETED:
            raise CommandError(f"the run {session.status}: {session.error or 'see the log above'}")

    # ------------------------------------------------------------------ the run
    async def _main(self, session_id: str, node_ids: list[str]) -> None:
        executor = Executor(owner=f"run_workflow:{os.getpid()}", only={session_id})
        await executor.start(claim=False)
        progress = Progress(node_ids=node_ids)
        self._handle_sigint(session_id)
        try:
            generation = await database_sync_to_async(self._queue)(session_id, executor.owner)
            task = executor.execute(session_id, generation)
            after = 0
            while True:
                finished = task.done()
                after = await self._poll(session_id, after, progress)
                if finished:
                    break
                await asyncio.wait({task}, timeout=self.options["poll"])
        finally:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)
            await executor.close()
        if self.tty:
            self.stdout.write("")

    def _queue(self, session_id: str, owner: str) -> int | None:
        return session_start_leased(
            session_id=session_id, user=self.owner, owner=owner,
            lease_seconds=settings.WORKER_LEASE_SECONDS,
        )

    def _handle_sigint(self, session_id: str) -> None:
        loop = asyncio.get_running_loop()
        self._stopping: set[asyncio.Task[None]] = set()

        def stop() -> None:
            self.stderr.write("\nstopping the session")
            task = loop.create_task(database_sync_to_async(self._stop)(session_id))
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGINT, stop)

    def _stop(self, session_id: str) -> None:
        with contextlib.suppress(services.ServiceError):
            services.session_stop(session_id=session_id, user=self.owner)

    async def _poll(self, session_id: str, after: int, progress: Progress) -> int:
        events = await database_sync_to_async(read_envelopes)(session_id, after=after)
        for envelope in events:
            after = envelope["seq"]
            if progress.apply(envelope) and not self.tty:
                self.stdout.write(progress.line())
        while progress.asks:
            node_id, round_ = progress.asks.pop(0)
            await database_sync_to_async(self._decide)(session_id, node_id, round_)
        if self.tty:
            self.stdout.write("\r" + progress.line() + "\x1b[K", ending="")
            self.stdout.flush()
        return after

    def _decide(self, session_id: str, node_id: str, round_: int) -> None:
        policy = self.options["review"]
        if policy == "wait":
            return
        reject = policy == "reject-first" and round_ == 1
        try:
            services.review_submit(
                session_id=session_id, user=self.owner, node_id=node_id,
                decision=ReviewDecision.REJECT if reject else ReviewDecision.APPROVE,
                comment=self.options["comment"] if reject else "",
            )
        except services.ServiceError as exc:  # decided meanwhile, or the session stopped
            self.stderr.write(f"review of {node_id} not submitted: {exc.message}")
            return
        verb = "rejected" if reject else "approved"
        self.stdout.write(("\n" if self.tty else "") + f"review {node_id} round {round_}: {verb}")

