"""The batched publisher through a database blip (B8): a failed insert of the event log is
retried (same batch, order kept, nothing stored twice) for a bounded time, then given up."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import IntegrityError, OperationalError

from realtime import publisher
from realtime.eventlog import read_envelopes
from tests.workflows.helpers import create_session

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher, "RETRY_FIRST_DELAY", 0.01)
    monkeypatch.setattr(publisher, "RETRY_MAX_DELAY", 0.05)


def failing(monkeypatch: pytest.MonkeyPatch, fails: int, *, after_commit: bool = False,
            error: type[Exception] = OperationalError) -> dict[str, int]:
    """Make the next ``fails`` inserts raise (after committing, if ``after_commit``: the reply
    to the COMMIT was lost)."""
    real = publisher._store_in_thread
    calls = {"n": 0}

    def store(batch: list[Any]) -> Any:
        calls["n"] += 1
        if calls["n"] > fails:
            return real(batch)
        if after_commit:
            real(batch)
        raise error("server closed the connection unexpectedly")

    monkeypatch.setattr(publisher, "_store_in_thread", store)
    return calls


async def publish(sid: str, *chunks: str) -> list[asyncio.Future[int]]:
    pub = publisher.get_publisher()
    return [
        pub.publish_nowait(session_id=sid, event="token_stream", node_id="talk",
                           data={"chunk": c, "agent_id": "talk", "node_id": "talk",
                                 "is_thinking": False})
        for c in chunks
    ]


async def logged_chunks(sid: str) -> list[tuple[int, str]]:
    log = await database_sync_to_async(read_envelopes)(sid)
    return [(e["seq"], e["data"]["chunk"]) for e in log if e["event"] == "token_stream"]


async def test_a_blip_is_retried_in_order_and_later_events_wait(owner: Any, monkeypatch: Any,
                                                                fast_retries: None) -> None:
    sid = await create_session(owner, "demo")
    calls = failing(monkeypatch, 3)
    first = await publish(sid, "a ", "b ")
    await asyncio.sleep(0.02)  # the first batch is failing now: these queue behind it
    later = await publish(sid, "c ", "d ")
    seqs = await asyncio.gather(*first, *later)
    assert calls["n"] >= 4
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert [c for _, c in await logged_chunks(sid)] == ["a ", "b ", "c ", "d "]


async def test_a_batch_committed_before_its_error_is_not_stored_twice(
        owner: Any, monkeypatch: Any, fast_retries: None) -> None:
    sid = await create_session(owner, "demo")
    failing(monkeypatch, 1, after_commit=True)
    seqs = await asyncio.gather(*await publish(sid, "a ", "b ", "c "))
    logged = await logged_chunks(sid)
    assert [c for _, c in logged] == ["a ", "b ", "c "]
    assert seqs == [s for s, _ in logged]


async def test_an_outage_longer_than_the_budget_fails_the_futures_then_recovers(
        owner: Any, monkeypatch: Any, fast_retries: None) -> None:
    # The budget is also the quiet gap that starts a new outage: 1 s keeps a loaded machine's
    # slow thread hand-off between the two batches inside it.
    monkeypatch.setattr(publisher, "STORE_RETRY_SECONDS", 0.5)
    sid = await create_session(owner, "demo")
    calls = failing(monkeypatch, 10_000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*await publish(sid, "lost "), return_exceptions=True)
    assert isinstance(results[0], OperationalError)
    assert 0.4 <= loop.time() - started < 5
    tried = calls["n"]
    # still down: the next batch is not given a new budget, it fails at once
    results = await asyncio.gather(*await publish(sid, "also lost "), return_exceptions=True)
    assert isinstance(results[0], OperationalError) and calls["n"] == tried + 1
    calls["n"] = 10_000  # the database is back
    assert await asyncio.gather(*await publish(sid, "kept ")) == [1]
    assert [c for _, c in await logged_chunks(sid)] == ["kept "]


async def test_an_error_that_is_not_a_blip_is_not_retried(owner: Any, monkeypatch: Any,
                                                          fast_retries: None) -> None:
    sid = await create_session(owner, "demo")
    calls = failing(monkeypatch, 1, error=IntegrityError)
    results = await asyncio.gather(*await publish(sid, "bad "), return_exceptions=True)
    assert isinstance(results[0], IntegrityError) and calls["n"] == 1
    assert await asyncio.gather(*await publish(sid, "good ")) == [1]


async def test_the_next_batch_is_stored_while_the_last_is_broadcast_and_order_is_kept(
        owner: Any, monkeypatch: Any) -> None:
    """A slow layer: batch 2 is already in the log while batch 1's broadcast still waits,
    yet batch 2 is broadcast (and its futures resolve) only after batch 1."""
    sid = await create_session(owner, "demo")
    real = publisher.broadcast
    first_may_finish = asyncio.Event()
    sent: list[list[int]] = []
    stored_meanwhile: list[list[str]] = []

    async def slow_broadcast(frames: list[Any]) -> None:
        if not sent:  # the first batch: hold it until the second is stored
            sent.append([])
            for _ in range(200):
                if len(await logged_chunks(sid)) == 3:
                    break
                await asyncio.sleep(0.01)
            stored_meanwhile.append([c for _, c in await logged_chunks(sid)])
            await first_may_finish.wait()
            sent[0] = [f.seq for f in frames]
        else:
            sent.append([f.seq for f in frames])
        await real(frames)

    monkeypatch.setattr(publisher, "broadcast", slow_broadcast)
    first = await publish(sid, "a ")
    await asyncio.sleep(0.05)  # the first batch is stored and being broadcast now
    later = await publish(sid, "b ", "c ")
    await asyncio.sleep(0.3)
    assert not any(f.done() for f in first + later)  # nothing resolves before its broadcast
    first_may_finish.set()
    seqs = await asyncio.gather(*first, *later)
    assert stored_meanwhile == [["a ", "b ", "c "]]
    assert sent == [[1], [2, 3]] and seqs == [1, 2, 3]
