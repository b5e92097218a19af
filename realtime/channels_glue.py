"""The one place that relies on how Channels runs a consumer (checked against 4.3.2).

``OneCoroutineConsumer`` is an ``AsyncWebsocketConsumer`` that runs each socket as one
coroutine. Channels' own ``AsyncConsumer.__call__`` merges the client's messages with a
per-socket layer channel through ``await_many_dispatch`` (an extra task and an
``asyncio.wait`` per socket), and its ``dispatch`` hops to a thread per message for
``aclose_old_connections``. Our sockets have no layer channel (the hub holds one subscription
per process) and do their database work through ``database_sync_to_async``, which closes stale
connections itself; the two overrides below cut idle memory from 33.7 to 30.9 KB per socket
at 5,000 sockets (docs/PERFORMANCE.md) and the thread hop from every frame.

What this relies on (tests/realtime/test_channels_glue.py fails when an upgrade changes it):
- ``AsyncConsumer.__call__(scope, receive, send)`` sets ``scope``, ``channel_layer`` and
  ``base_send``, and ``AsyncConsumer.send`` goes through ``base_send``;
- ``get_channel_layer(alias)`` returns None for an alias that names no layer;
- ``AsyncWebsocketConsumer.websocket_connect`` / ``websocket_receive`` call ``connect`` /
  ``receive``, and ``StopConsumer`` ends the consumer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer

# Names no configured layer, so Channels never creates a channel for a socket.
NO_CHANNEL_LAYER = "realtime.no-layer"


class OneCoroutineConsumer(AsyncWebsocketConsumer):
    channel_layer_alias = NO_CHANNEL_LAYER

    # ASGI message types (set by the server, never by the client) -> handler.
    _handlers = {
        "websocket.connect": "websocket_connect",
        "websocket.receive": "websocket_receive",
        "websocket.disconnect": "websocket_disconnect",
    }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
                # Let other tasks (the socket's writer) run between client frames, so replies
                # go out before a close that a later frame causes.
                await asyncio.sleep(0)
        except StopConsumer:
            pass

    async def dispatch(self, message: dict[str, Any]) -> None:
        name = self._handlers.get(message["type"])
        if name is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await getattr(self, name)(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()
