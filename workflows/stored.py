"""The run store from the runner's event loop: every call in the database thread, retried
while the database is briefly gone.

Every store write is one transaction (or a read), so an error means nothing was committed
and calling again is safe; the engine changes its own state only after a write succeeded. A
call that keeps failing for ``DB_RETRY_SECONDS`` lets the error through (the node or the run
then fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from channels.db import database_sync_to_async
from django.db import connection

from realtime.layer import Backoff
from realtime.publisher import RETRY_FIRST_DELAY, RETRY_MAX_DELAY, TRANSIENT_DB_ERRORS
from workflows.store import get_store

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
            if time.monotonic() + backoff.delay > deadline:
                raise
            delay = backoff.next()
            log.warning("%s failed (%s); retrying in %.2f s", name, exc, delay)
            await asyncio.sleep(delay)


class _AsyncStore:
    """``await stored.node_begin(...)`` runs ``get_store().node_begin(...)`` as above."""

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        return functools.partial(_retrying, name)


stored = _AsyncStore()
