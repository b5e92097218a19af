"""Cutting off an AG-UI stream whose client stopped reading.

A WebSocket viewer that falls ``WS_SEND_BUFFER_EVENTS`` behind is closed (4409). An SSE
stream gets the same rule, but closing it takes more: once the server's send buffer is full,
the response is stuck inside the server's ``send``, where the stream's own code never runs
again. So the ASGI app wraps ``send`` for ``/agui/`` requests: each send also waits on the
request's cut event, which the stream sets when its viewer overflows. The stuck send is
then abandoned and the response ends, and the server closes the connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

SCOPE_KEY = "agui_cut"
PREFIX = "/agui/"


class ClientTooSlow(Exception):
    """The client stopped reading while its events piled up: the stream is cut off."""


class CutOffSlowStreams:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "http" or not scope.get("path", "").startswith(PREFIX):
            return await self.inner(scope, receive, send)
        cut = asyncio.Event()

        async def guarded(message: dict[str, Any]) -> None:
            if cut.is_set():
                raise ClientTooSlow
            # Started at once (eager): a send the transport takes finishes here, with no task
            # to schedule; only one that waits on a full buffer races the cut event.
            sending = asyncio.Task(send(message), loop=asyncio.get_running_loop(), eager_start=True)
            if sending.done():
                return sending.result()
            cutting = asyncio.ensure_future(cut.wait())
            done, _ = await asyncio.wait({sending, cutting}, return_when=asyncio.FIRST_COMPLETED)
            if sending in done:
                cutting.cancel()
                return sending.result()
            sending.cancel()
            raise ClientTooSlow

        try:
            return await self.inner(dict(scope, **{SCOPE_KEY: cut}), receive, guarded)
        except ClientTooSlow:
            return None  # the response is left unfinished: the server drops the connection
