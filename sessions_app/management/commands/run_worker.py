"""Run workflow executions outside the web processes (WORKFLOW_EXECUTOR=worker)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from workflows.worker import Executor


class Command(BaseCommand):
    help = "Claim queued session runs from the database and execute them until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--max-runs", type=int, default=100, help="concurrent runs")
        parser.add_argument("--owner", default=None, help="lease owner name (default host:pid)")

    def handle(self, *args: Any, **options: Any) -> None:
        # uvloop, as the web processes run under uvicorn: a worker's loop runs a timer per
        # streamed token of every agent, and uvloop's timers and callbacks cost a fraction
        # of asyncio's (docs/PERFORMANCE.md). Plain asyncio where uvloop is not installed.
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvicorn[standard] brings it
            runner: Any = asyncio.run
        else:
            runner = uvloop.run
        runner(self._main(options["max_runs"], options["owner"]))

    async def _main(self, max_runs: int, owner: str | None) -> None:
        executor = Executor(owner=owner, max_runs=max_runs)
        await executor.start()
        self.stdout.write(f"worker {executor.owner} ready", ending="\n")
        self.stdout.flush()
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, done.set)
        await done.wait()
        await executor.close()
