"""group_send_many: one flush's layer messages in one pipelined round trip on the Redis
pub/sub layer (the real server), one by one on any other layer; every subscriber gets its own."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from channels.layers import InMemoryChannelLayer
from channels_redis.pubsub import RedisPubSubChannelLayer

from realtime.layer import InMemoryLayer, _pubsub_loop_layer, group_send_many
from tests.reliability.backends import SHARED_REDIS_DB, SHARED_REDIS_PORT, check_shared_redis


class _PlainLayer:
    """A layer group_send_many knows nothing of: only the public interface."""

    def __init__(self) -> None:
        self._inner = InMemoryChannelLayer()
        self.new_channel = self._inner.new_channel
        self.group_add = self._inner.group_add
        self.group_send = self._inner.group_send
        self.receive = self._inner.receive


async def _exchange(
    layer: Any, before_send: Any = None, after_send: Any = None
) -> tuple[dict[str, list[int]], list[str]]:
    prefix = uuid.uuid4().hex[:8]
    groups = [f"s-{prefix}-{i}" for i in range(5)]
    channels = {}
    for group in groups:
        channels[group] = await layer.new_channel()
        await layer.group_add(group, channels[group])
    sends = [(group, {"type": "frames", "n": n}) for n, group in enumerate(groups)]
    sends.append((groups[0], {"type": "frames", "n": 99}))  # two messages for one group, in order
    if before_send is not None:
        before_send()
    failed = await group_send_many(layer, sends)
    if after_send is not None:
        after_send()
    got: dict[str, list[int]] = {}
    for group in groups:
        want = 2 if group == groups[0] else 1
        for _ in range(want):
            message = await asyncio.wait_for(layer.receive(channels[group]), 5)
            got.setdefault(group, []).append(message["n"])
    return {g.rsplit("-", 1)[1]: v for g, v in got.items()}, failed


async def test_redis_pubsub_messages_go_out_pipelined_and_arrive() -> None:
    check_shared_redis()
    layer = RedisPubSubChannelLayer(hosts=[f"redis://127.0.0.1:{SHARED_REDIS_PORT}/{SHARED_REDIS_DB}"])
    try:
        # the channels_redis internals group_send_many relies on are still there
        assert _pubsub_loop_layer(layer) is not None
        got, failed = await _exchange(layer)
    finally:
        await layer.flush()
    assert failed == []
    assert got == {"0": [0, 99], "1": [1], "2": [2], "3": [3], "4": [4]}


async def test_the_project_in_memory_layer_sweeps_at_most_once_a_second(monkeypatch: Any) -> None:
    layer = InMemoryLayer()
    assert _pubsub_loop_layer(layer) is None
    sweeps: list[int] = []
    real = InMemoryChannelLayer._clean_expired
    monkeypatch.setattr(InMemoryChannelLayer, "_clean_expired",
                        lambda self: (sweeps.append(1), real(self))[1])
    got, failed = await _exchange(layer)  # 5 joins, 6 sends, 6 receives
    assert failed == []
    assert got == {"0": [0, 99], "1": [1], "2": [2], "3": [3], "4": [4]}
    assert len(sweeps) == 1
    # it still sweeps: a message past its expiry is gone a second later
    layer.expiry = 0.01
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x"})
    await asyncio.sleep(1.05)
    layer._clean_expired()
    assert channel not in layer.channels and len(sweeps) == 2


async def test_another_layer_gets_them_one_by_one() -> None:
    layer = _PlainLayer()
    assert _pubsub_loop_layer(layer) is None
    got, failed = await _exchange(layer)
    assert failed == []
    assert got == {"0": [0, 99], "1": [1], "2": [2], "3": [3], "4": [4]}


async def test_a_redis_that_is_gone_fails_the_sends_without_raising() -> None:
    layer = RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:1/0"])
    try:
        failed = await group_send_many(layer, [("a", {"type": "frames"}), ("b", {"type": "frames"})])
    finally:
        await layer.flush()
    assert failed == ["a", "b"]
