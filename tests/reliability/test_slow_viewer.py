"""A viewer that stops reading: the others do not wait for it; where the server lets the
application see the backlog (uvicorn) it is closed with 4409 once WS_SEND_BUFFER_EVENTS frames
wait for it; it catches up by replay when it reads again. Daphne (Twisted) buffers outgoing
frames itself without bound, so there the limit never bites (measured, docs/RELIABILITY.md).
Also: over-size frames through the real servers.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from realtime import protocol
from realtime.eventlog import frame_text
from realtime.hub import Viewer
from tests.reliability import viewers
from tests.reliability.backends import check_shared_redis
from tests.reliability.cluster import Cluster
from tests.reliability.definitions import chain_workflow
from tests.reliability.slow_scenario import flood, oversize_close, scenario_slow

SID = "5b0e2a1c-0000-4000-8000-000000000001"


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_stalled_viewer_does_not_hold_back_the_others(tmp_path: Path) -> None:
    """uvicorn and daphne side by side, one flood: each has 2 fast viewers and one that
    stops reading (4 KiB receive buffer, no compression; pings acknowledging the last seq
    every second). Then over-size frames to uvicorn."""
    check_shared_redis()
    result = await scenario_slow(
        tmp_path, servers=("uvicorn", "daphne"), fast=2, limit=2500, chars=400, rate=2000,
        stall_events=11000, heartbeat=1.0, oversize=("uvicorn",),
    )
    print("\n" + json.dumps(result, default=str))
    assert result["problems"] == []  # every viewer, slow ones included, ends at the head
    assert result["dups"] == 0 and result["gaps"] == 0
    uvicorn, daphne = result["servers"]["uvicorn"], result["servers"]["daphne"]
    # uvicorn applies back-pressure: the stalled viewer's backlog reaches the limit -> 4409
    assert uvicorn["closed_4409_while_stalled"] and 4409 in uvicorn["slow_closes"]
    # daphne never blocks the application's send: the viewer's acknowledging ping shows it,
    # and the server closes it 4409 (its close frame waits behind the unread frames, so the
    # client may see daphne drop the connection instead: 1006); its memory stays flat
    assert daphne["closed_4409_while_stalled"] and set(daphne["slow_closes"]) <= {4409, 1006}
    assert daphne["slow_closes"] and daphne["server_rss_growth_mb"] < 5
    for server in (uvicorn, daphne):
        assert server["slow_caught_up"]
        # the others do not wait for it (documented bound: p99 within 250 ms of the baseline;
        # asserted generously here, the machine is shared)
        assert server["fast_with_stalled_viewer"]["p99_ms"] <= server["fast_without_stalled_viewer"]["p99_ms"] + 1000
        assert server["fast_with_stalled_viewer"]["max_ms"] < 5000
    # frames over WS_MAX_FRAME_BYTES (64 KiB): 1009 (daphne: see the next test)
    assert uvicorn["oversize_close"] == {"100KiB": 1009, "2MiB": 1009}


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_oversized_frame_under_daphne_closes_4009_and_leaks_nothing(tmp_path: Path) -> None:
    """daphne refuses 1009 from an application: the consumer closes with the documented 4009
    instead, and the socket is not left counted (a dead consumer would leak it: 4430)."""
    check_shared_redis()
    with Cluster(tmp_path) as cluster:
        web = cluster.add_web("daphne", WS_MAX_SOCKETS_PER_USER="2")
        data = cluster.setup(users=["alice"], workflows=[chain_workflow(10)],
                             sessions=[{"owner": "alice", "workflow": "fault-chain"}])
        sid, cookie = data["sessions"][0], data["cookies"]["alice"]
        codes = [await oversize_close(web, sid, cookie, 100 * 1024, wait=10) for _ in range(2)]
        again = await viewers.fresh_snapshot(web, sid, cookie)  # refused with 4430 if counts leaked
        assert codes == [4009, 4009]
        assert again["last_seq"] == 0


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_a_transcript_over_a_mebibyte_reaches_a_new_viewer_under_daphne(tmp_path: Path) -> None:
    """daphne refuses to send a frame over its 1 MiB message limit; a snapshot that large
    left the socket silent for good. The room now arrives as the empty room plus the log."""
    check_shared_redis()
    with Cluster(tmp_path) as cluster:
        web = cluster.add_web("daphne")
        data = cluster.setup(users=["alice"], workflows=[chain_workflow(10)],
                             sessions=[{"owner": "alice", "workflow": "fault-chain"}])
        sid, cookie = data["sessions"][0], data["cookies"]["alice"]
        flooded = await viewers.in_thread(flood, cluster, sid, 3000, 3000, 400)  # ~1.2 MB
        viewer = viewers.Viewer("late", [web], sid, cookie)
        await viewers.start_viewers([viewer])
        try:
            assert await viewer.wait_seq(flooded["last"], 30), viewer.closes
            assert viewer.dups == 0 and viewer.gaps == 0 and viewer.closes == []
        finally:
            await viewer.stop()


# --------------------------------------------------------------------------- one viewer


def _frames(first: int, last: int) -> list[tuple[int, str]]:
    from datetime import UTC, datetime

    return [
        (seq, frame_text(session_id=SID, seq=seq, event="token_stream", node_id="n",
                         data={"chunk": f"w{seq} ", "agent_id": "a", "node_id": "n", "is_thinking": False},
                         at=datetime.now(UTC)))
        for seq in range(first, last + 1)
    ]


async def test_a_replay_longer_than_the_send_buffer_is_not_a_slow_viewer(settings: Any) -> None:
    settings.WS_SEND_BUFFER_EVENTS = 10
    sent: list[str] = []
    closed: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["text"])

    async def close(code: int) -> None:
        closed.append(code)

    viewer = Viewer(session_id=SID, user="alice", send=send, close=close)
    replay = _frames(1, 100)  # what the consumer read after ?last_seq=0
    (live_seq, live_text), = _frames(101, 101)
    viewer.push(live_seq, live_text)  # published while the replay was being read: held
    viewer.activate(last_seq=100, initial=[text for _, text in replay], missing=[])
    for _ in range(50):
        await asyncio.sleep(0.01)
    got = [e["seq"] for text in sent for e in viewers.unpack(json.loads(text))]
    assert closed == []
    assert got == list(range(1, 102))
    for text in sent:
        protocol.validate_event(json.loads(text))


async def test_live_frames_past_the_send_buffer_still_close_4409_after_a_replay(settings: Any) -> None:
    """The replay's allowance ends once the writer took it: a viewer that then stops reading
    is still closed when WS_SEND_BUFFER_EVENTS live frames wait for it."""
    settings.WS_SEND_BUFFER_EVENTS = 10
    closed: list[int] = []
    stalled = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        await stalled.wait()  # the socket stops being read after the first frame

    async def close(code: int) -> None:
        closed.append(code)

    viewer = Viewer(session_id=SID, user="alice", send=send, close=close)
    viewer.activate(last_seq=100, initial=[text for _, text in _frames(1, 100)], missing=[])
    await asyncio.sleep(0.01)  # the writer took the replay and is stuck sending it
    for seq, text in _frames(101, 111):
        viewer.push(seq, text)
    await asyncio.sleep(0.01)
    assert closed == [4409]
    viewer.stop()
