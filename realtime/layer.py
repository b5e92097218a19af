"""Living with the channel layer, the event loop and the apps above: written once, used by
hub, publisher, executor and the interfaces other apps implement.

- ``per_loop``: one instance of a thing per running event loop (the hub, the publisher, the
  embedded executor). A process has one loop in production; tests start many, and an object
  holding tasks or futures must never leak into another loop.
- ``Backoff``: the delays between retries of anything that is briefly gone (the database,
  the channel layer): doubling from ``first`` up to ``most``.
- ``receive_forever``: the one loop that receives a process-local channel's messages. A
  failed receive means the layer lost its connection, maybe to a Redis that restarted empty
  and forgot every group; the owner's ``rejoin`` joins its groups again (retried with back-off
  until the layer is back) before the next receive.
- ``Registered``: the slot an interface's one implementation is registered in at start-up.
- ``group_send_many`` (one flush's layer messages in one Redis round trip) and
  ``InMemoryLayer`` (Channels' in-memory layer without a full sweep per message).
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import InMemoryChannelLayer
from django.core.exceptions import ImproperlyConfigured

log = logging.getLogger(__name__)

try:
    from redis.exceptions import TimeoutError as _IdleTimeout
except ImportError:  # pragma: no cover - redis is a runtime requirement
    _IdleTimeout = TimeoutError  # type: ignore[misc,assignment]

RECEIVE_RETRY_SECONDS = 0.5
RECEIVE_RETRY_MAX_SECONDS = 5.0


class per_loop[T]:  # lower case: used like a function, ``get_hub = per_loop(Hub)``
    """Calling it returns the running loop's instance, made by ``factory`` on first use."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self.factory = factory
        self.instances: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self) -> T:
        loop = asyncio.get_running_loop()
        instance = self.instances.get(loop)
        if instance is None:
            instance = self.instances[loop] = self.factory()
        return instance

    def pop(self) -> T | None:
        """Forget the running loop's instance (shutdown); returns it, if there was one."""
        return self.instances.pop(asyncio.get_running_loop(), None)

    def put(self, instance: T) -> None:
        """Use ``instance`` as the running loop's (a benchmark's own executor)."""
        self.instances[asyncio.get_running_loop()] = instance


class Backoff:
    """Delays for one run of failures: ``first``, doubled each time, at most ``most``."""

    __slots__ = ("delay", "first", "most")

    def __init__(self, first: float, most: float) -> None:
        self.first = first
        self.most = most
        self.delay = first

    def next(self) -> float:
        """The delay to wait now; the next one is twice as long (up to ``most``)."""
        delay = self.delay
        self.delay = min(self.delay * 2, self.most)
        return delay

    def reset(self) -> None:
        self.delay = self.first


async def receive_forever(
    *,
    layer: Any,
    channel: str,
    handle: Callable[[dict[str, Any]], Awaitable[None]],
    rejoin: Callable[[], Awaitable[None]],
    name: str,
) -> None:
    """Receive ``channel``'s messages and ``await handle(message)`` each, until cancelled.

    ``rejoin()`` joins the owner's groups again and raises if the layer refuses; it runs
    after every failed receive, retried with back-off, before the next receive. An error in
    ``handle`` is logged and never ends the loop."""
    must_rejoin = False
    backoff = Backoff(RECEIVE_RETRY_SECONDS, RECEIVE_RETRY_MAX_SECONDS)
    while True:
        if must_rejoin:
            try:
                await rejoin()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if backoff.delay == backoff.first:  # once per outage, not every retry
                    log.warning("%s could not join its groups again (%s); retrying", name, error)
                await asyncio.sleep(backoff.next())
                continue
            must_rejoin = False
            backoff.reset()
        try:
            message = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except _IdleTimeout:
            # redis-py >= 8 may time out an idle blocking read (socket_timeout): nothing was
            # lost, ask again at once (no sleep, no log line).
            continue
        except Exception:
            log.exception("%s: channel layer receive failed; joining the groups again", name)
            must_rejoin = True
            await asyncio.sleep(RECEIVE_RETRY_SECONDS)
            continue
        try:
            await handle(message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s could not handle a %s message", name, message.get("type"))


class Registered[T]:
    """The one implementation of an interface, registered by the app above at start-up.

    How a lower layer reaches code of a higher one without importing it: the lower layer
    declares the slot, the higher one fills it from its ``AppConfig.ready()``."""

    def __init__(self, what: str, *, how: str) -> None:
        self.what = what
        self.how = how
        self.implementation: T | None = None

    def register(self, implementation: T) -> None:
        self.implementation = implementation

    def get(self) -> T:
        if self.implementation is None:
            raise ImproperlyConfigured(f"no {self.what} registered: {self.how}")
        return self.implementation


async def group_send_many(layer: Any, sends: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """``group_send`` of many messages; returns the groups whose message could not be sent.

    On channels_redis's pub/sub layer each ``group_send`` is one Redis round trip, taken
    under the shard's lock, one after the other: a worker publishing for a thousand sessions
    would spend its flush waiting on them. Here the messages of one flush go out as one
    pipelined batch of PUBLISH commands per shard (one round trip), under the same lock and
    with the layer's own serializer and names. That reaches into channels_redis 4.x's
    private ``_get_layer``/``_get_shard``/``_get_group_channel_name`` (the test
    ``tests/realtime/test_layer_many.py`` fails if they change); any other layer is sent
    one message at a time."""
    inner = _pubsub_loop_layer(layer)
    failed: list[str] = []
    if inner is None:
        for group, message in sends:
            try:
                await layer.group_send(group, message)
            except Exception:
                log.exception("group_send to %s failed", group)
                failed.append(group)
        return failed
    by_shard: dict[Any, list[tuple[str, str, bytes]]] = {}
    for group, message in sends:
        channel = inner._get_group_channel_name(group)
        by_shard.setdefault(inner._get_shard(channel), []).append(
            (group, channel, inner.channel_layer.serialize(message))
        )
    for shard, items in by_shard.items():
        try:
            async with shard._lock:
                shard._ensure_redis()
                async with shard._redis.pipeline(transaction=False) as pipe:
                    for _, channel, data in items:
                        pipe.publish(channel, data)
                    await pipe.execute()
        except Exception:
            log.exception("publishing %d group messages failed", len(items))
            failed.extend(group for group, _, _ in items)
    return failed


def _pubsub_loop_layer(layer: Any) -> Any:
    """The running loop's channels_redis pub/sub layer behind ``layer``, or None."""
    try:
        from channels_redis.pubsub import RedisPubSubChannelLayer
    except ImportError:  # pragma: no cover - channels_redis is a runtime requirement
        return None
    if not isinstance(layer, RedisPubSubChannelLayer):
        return None
    inner = layer._get_layer()
    needed = ("_get_shard", "_get_group_channel_name", "channel_layer")
    return inner if all(hasattr(inner, name) for name in needed) else None


class InMemoryLayer(InMemoryChannelLayer):
    """Channels' in-memory layer (one process, no Redis), sweeping for expired messages and
    group memberships at most once a second instead of on every send and receive.

    Channels' sweep walks every channel and every group's members; it ran for each of a
    flush's messages and each receive, a quarter of a one-process server's CPU with 200
    sessions running (docs/PERFORMANCE.md). Messages expire after 60 s and memberships after
    a day, so a sweep a second late changes nothing anyone can see."""

    SWEEP_SECONDS = 1.0
    _swept_at = float("-inf")

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < self.SWEEP_SECONDS:
            return
        self._swept_at = now
        super()._clean_expired()
