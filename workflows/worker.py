"""Claims queued runs and executes them, holding a lease that another runner can take over.

The same executor runs inside the web process (WORKFLOW_EXECUTOR=embedded, the default, so
``runserver`` alone runs sessions) or in ``manage.py run_worker`` processes. A run is
claimed by writing ``lease_owner``/``lease_expires_at`` with a conditional update (with
``select_for_update(skip_locked=True)`` on PostgreSQL); the lease is renewed while the run
executes. If the process dies, the lease expires and any executor takes the run over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Collection
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from realtime.layer import per_loop, receive_forever
from workflows import control
from workflows.definitions import WorkflowDefinition
from workflows.runner import SessionRunner
from workflows.store import get_store

log = logging.getLogger(__name__)


def _store_call(name: str) -> Any:
    """A store method in a database thread (looked up when called)."""
    return database_sync_to_async(lambda **kwargs: getattr(get_store(), name)(**kwargs))


def load_definition(session_id: str, raw: dict[str, Any] | None = None) -> WorkflowDefinition:
    """The session's copy of its workflow (``raw``: as already read with others')."""
    if raw is None:
        raw = get_store().run_definition(session_id=session_id)
    return WorkflowDefinition.from_dict(raw, source=f"session {session_id}", check_models=False)


class Executor:
    """Claims runs (unless ``claim=False`` is passed to start), executes each in a
    SessionRunner, renews their leases and forwards run-control messages to them."""

    def __init__(
        self, *, owner: str | None = None, max_runs: int = 100, only: Collection[str] | None = None
    ) -> None:
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.max_runs = max_runs
        self.only = None if only is None else {str(sid) for sid in only}
        self.runs: dict[str, asyncio.Task[Any]] = {}
        self.runners: dict[str, SessionRunner] = {}
        self.wake = asyncio.Event()
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.stopping = False
        self.starting: asyncio.Task[None] | None = None
        self.claiming = False
        self._renewer: asyncio.Task[None] | None = None

    async def start(self, *, claim: bool = True) -> None:
        # The default prefix, like the hub's: with channels_redis's core layer two prefixes
        # in one process make each receive wait for the other's idle BZPOPMIN (B4).
        self.channel = await self.layer.new_channel()
        self.claiming = claim
        loop = asyncio.get_running_loop()
        self._tasks += [
            loop.create_task(
                receive_forever(
                    layer=self.layer, channel=self.channel, handle=self._on_message,
                    rejoin=self._rejoin_groups, name="executor",
                ),
                name="executor-control",
            )
        ]
        if claim:
            with contextlib.suppress(Exception):
                await self.layer.group_add(control.WORKERS_GROUP, self.channel)
            self._tasks.append(loop.create_task(self._claim_loop(), name="executor-claim"))

    def execute(self, session_id: str, generation: int) -> asyncio.Task[Any]:
        """Run a session whose lease (of ``generation``) this executor already holds."""
        self._start_run(str(session_id), generation)
        return self.runs[str(session_id)]

    async def close(self) -> None:
        """Shut down without deciding anything for the runs: they are abandoned as they are
        (nothing is marked stopped) and their leases released, so another executor continues
        them at once, exactly as after a crash."""
        self.stopping = True
        for runner in list(self.runners.values()):
            runner.abandon()
        for task in [*self._tasks, *self.runs.values()]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self.runs.values(), return_exceptions=True)

    async def _claim_loop(self) -> None:
        while not self.stopping:
            try:
                free = self.max_runs - len(self.runs)
                if free > 0:
                    # Our own runs are excluded: one whose renewals lapsed (a database blip,
                    # a stalled loop) keeps its lease by renewing it, never a second runner.
                    claimed = await _store_call("claim_runs")(
                        owner=self.owner, limit=free, lease_seconds=settings.WORKER_LEASE_SECONDS,
                        only=self.only, exclude=list(self.runs),
                    )
                    # One read for all their definitions (not one database call per run
                    # queued behind the others in the database thread).
                    definitions = await _store_call("run_definitions")(
                        session_ids=[session_id for session_id, _ in claimed]
                    ) if claimed else {}
                    for session_id, generation in claimed:
                        self._start_run(session_id, generation, definitions.get(session_id))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming runs failed; retrying")
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=settings.WORKER_POLL_SECONDS)

    async def _on_message(self, message: dict[str, Any]) -> None:
        """A wake-up or a run-control message. Losing one is harmless (each lease renewal
        re-reads the session's status; the claim loop polls)."""
        kind = message.get("type")
        if kind == control.WORKER_WAKE:
            self.wake.set()
        elif kind == control.RUN_CONTROL:
            runner = self.runners.get(message.get("sid", ""))
            if runner is not None:
                runner.on_control(message.get("action", ""))

    async def _rejoin_groups(self) -> None:
        """Join the workers' group and every running session's control group again (a
        restarted Redis may have forgotten them); raises while the layer is down."""
        names = [control.run_control_group(sid) for sid in list(self.runners)]
        if self.claiming:
            names.append(control.WORKERS_GROUP)
        for name in names:
            await self.layer.group_add(name, self.channel)

    def _start_run(
        self, session_id: str, generation: int, raw: dict[str, Any] | None = None
    ) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run(session_id, generation, raw), name=f"run-{session_id}"
        )
        self.runs[session_id] = task
        task.add_done_callback(lambda _t, sid=session_id: self.runs.pop(sid, None))

    async def _run(
        self, session_id: str, generation: int, raw: dict[str, Any] | None = None
    ) -> None:
        group = control.run_control_group(session_id)
        try:
            if raw is None:
                definition = await database_sync_to_async(load_definition)(session_id)
            else:
                definition = load_definition(session_id, raw)
            runner = SessionRunner(
                session_id=session_id, definition=definition, generation=generation
            )
            self.runners[session_id] = runner
            await self.layer.group_add(group, self.channel)
            self._ensure_renewer()
            status = await runner.run()
            log.info("run %s ended: %s", session_id, status)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("run %s crashed", session_id)
            with contextlib.suppress(Exception):
                await _store_call("run_finish")(
                    session_id=session_id, fence=generation, error="internal error in the runner"
                )
        finally:
            self.runners.pop(session_id, None)
            with contextlib.suppress(Exception):
                await self.layer.group_discard(group, self.channel)
            with contextlib.suppress(Exception):
                await _store_call("release_lease")(
                    session_id=session_id, owner=self.owner, generation=generation
                )

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_all(), name="executor-renew")
            self._tasks.append(self._renewer)

    async def _renew_all(self) -> None:
        """Keep the leases of every run while they last, all in one store call per interval
        (one executor holds hundreds of runs: one call each was a database round trip per
        run), and re-read each session's status so a lost pause/resume/stop/review message
        is recovered within a renewal interval."""
        interval = max(0.2, settings.WORKER_LEASE_SECONDS / 3)
        while True:
            await asyncio.sleep(interval)
            runners = dict(self.runners)
            if not runners:
                continue
            read_at = time.monotonic()
            try:
                statuses = await _store_call("renew_leases")(
                    owner=self.owner, lease_seconds=settings.WORKER_LEASE_SECONDS,
                    generations={sid: runner.generation for sid, runner in runners.items()},
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lease renewal of %d runs failed", len(runners))
                continue
            for session_id, runner in runners.items():
                if self.runners.get(session_id) is not runner:
                    continue  # ended meanwhile
                status = statuses.get(session_id)
                if status is not None:
                    runner.apply_status(status, read_at=read_at)
                elif not runner.finishing:  # run_finish released the lease itself
                    log.warning("lease on %s lost: another runner took it over", session_id)
                    runner.abandon()
                    task = self.runs.get(session_id)
                    if task is not None:
                        task.cancel()


def _embedded_executor() -> Executor:
    executor = Executor()
    executor.starting = asyncio.get_running_loop().create_task(executor.start())
    return executor


embedded_executor = per_loop(_embedded_executor)


def ensure_embedded_executor() -> Executor | None:
    """Start this process's executor on the running loop (embedded mode only, once)."""
    if settings.WORKFLOW_EXECUTOR != "embedded":
        return None
    return embedded_executor()


async def stop_embedded_executor() -> None:
    """Lifespan shutdown: leave the runs to another executor, as after a crash but at once
    (leases released), instead of letting the process exit under them."""
    executor = embedded_executor.pop()
    if executor is not None:
        await executor.close()
