"""The run store from a runner's event loop: every call in the database thread, retried
while the database is briefly gone, every write fenced with the runner's lease generation.

Every store write is one transaction (or a read), so an error means nothing was committed
and calling again is safe; the engine changes its own state only after a write succeeded. A
call that keeps failing for ``DB_RETRY_SECONDS`` lets the error through (the node or the run
then fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.db import connection

from realtime.layer import Backoff
from realtime.publisher import RETRY_FIRST_DELAY, RETRY_MAX_DELAY, TRANSIENT_DB_ERRORS
from workflows.store import LeaseLost, get_store

log = logging.getLogger(__name__)

DB_RETRY_SECONDS = 30.0


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


async def _retrying(name: str, **kwargs: Any) -> Any:
    backoff = Backoff(RETRY_FIRST_DELAY, RETRY_MAX_DELAY)
    deadline = time.monotonic() + DB_RETRY_SECONDS
    while True:
        # Looked up on every attempt: the registered store decides what a name means.
        call = database_sync_to_async(_dropping_connection(getattr(get_store(), name)))
        try:
            return await call(**kwargs)
        except TRANSIENT_DB_ERRORS as exc:
            if "first_try" in kwargs:  # that attempt may have committed: look for its receipt
                kwargs["first_try"] = False
            if time.monotonic() + backoff.delay > deadline:
                raise
            delay = backoff.next()
            log.warning("%s failed (%s); retrying in %.2f s", name, exc, delay)
            await asyncio.sleep(delay)


# The store's writes: each carries the runner's lease generation (``workflows.store``).
WRITES = frozenset({
    "run_begin", "run_finish", "node_begin", "node_set_status", "message_save_partial",
    "node_complete", "usage_progress", "node_fail", "node_stopped", "nodes_skip",
    "review_open", "review_auto_approve", "review_decide_default", "review_close",
    "tool_approval_open", "tool_call_begin", "tool_call_set_running", "tool_call_finish",
    "budget_notice", "budget_review_open", "run_trace",
})


# Writes that log events carry a key too, the same for every attempt: an attempt whose COMMIT
# did commit although its reply was lost is not carried out again (the store returns the
# first attempt's result). A partial save and the trace context log nothing and are harmless
# to repeat.
KEYED = WRITES - {"message_save_partial", "run_trace"}
# A write's key: unique to this process (random prefix) and to the write (a counter); a
# uuid4 per write read the OS's random source each time, on the hot path of every runner.
_KEY_PREFIX = uuid.uuid4().hex[:16] + "-"
_key_numbers = itertools.count(1)


class FencedStore:
    """The run store as one runner sees it: ``await store.node_begin(...)`` runs the
    registered store's method in the database thread, retried through blips, each write
    carrying the runner's lease generation. A write refused as stale (the run was taken over
    while this runner was frozen) calls ``on_lost`` and unwinds the caller like a stop
    (CancelledError): the runner abandons the run and writes nothing more."""

    def __init__(self, *, generation: int, on_lost: Callable[[], None]) -> None:
        self.generation = generation
        self.on_lost = on_lost

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(**kwargs: Any) -> Any:
            if name in WRITES:
                kwargs["fence"] = self.generation
            if name in KEYED:
                kwargs["key"] = f"{_KEY_PREFIX}{next(_key_numbers)}"
                kwargs["first_try"] = True  # a new key: no attempt can have stored it yet
            try:
                return await _retrying(name, **kwargs)
            except LeaseLost:
                self.on_lost()
                raise asyncio.CancelledError from None

        return call
