"""The AG-UI load client (``bench/load_sse.py``) reads what the server's SSE encoder writes:
events split anywhere across chunks and TCP reads are counted once, by seq, with their
latency; a first stream knows its start from the snapshot's run id; a gap is seen; a stream
that ends with ``RUN_FINISHED`` is done, one cut off with ``RUN_ERROR`` reconnects after the
last seq it had."""

from __future__ import annotations

import asyncio
import time

from ag_ui.core import RunErrorEvent, RunFinishedEvent, RunStartedEvent, TextMessageContentEvent

from realtime.agui.stream import sse


def chunked(text: str) -> bytes:
    raw = text.encode()
    return f"{len(raw):x}\r\n".encode() + raw + b"\r\n"


# what a first watch stream begins with: its run, numbered by the seq it starts at (0)
SNAPSHOT = sse(RunStartedEvent(thread_id="s", run_id="s:0")) + 'data: {"type":"STATE_SNAPSHOT","snapshot":{}}\n\n'
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True


def content(seq: int, ms: int) -> str:
    event = TextMessageContentEvent(message_id="m", delta=f"t{seq} ", timestamp=ms)
    return sse(event, seq)


async def test_split_events_are_counted_once_with_latency_and_a_gap_is_seen():
    from bench import load, load_sse

    shared = load.Shared("regex")
    viewer = load_sse.make(shared, {"url": "http://127.0.0.1:1/agui/sessions/s/events",
                                    "session": "s", "cookie": "c"}, 0, None)
    viewer.connection_made(Transport())
    assert b"Last-Event-ID" not in viewer.transport.written[0]  # a first stream: the snapshot
    ms = int(time.time() * 1000) - 40  # published 40 ms ago
    body = (chunked(SNAPSHOT) + chunked(content(1, ms) + content(2, ms)) + chunked(content(2, ms))
            + chunked(content(5, ms)))
    stream = HEAD + body
    for start in range(0, len(stream), 7):  # TCP reads of 7 bytes
        viewer.data_received(stream[start:start + 7])
    assert viewer.open.done() and viewer.last == 5
    assert (viewer.stats.events, viewer.stats.dups, viewer.stats.gaps) == (3, 1, 2)
    assert shared.hist.n == 3 and 35 <= viewer.stats.max_latency_ms < 1000


async def test_a_finished_stream_is_done_and_a_cut_off_one_resumes_after_its_last_seq():
    from bench import load, load_sse

    shared = load.Shared("regex")
    target = {"url": "http://127.0.0.1:1/agui/sessions/s/events", "session": "s", "cookie": "c"}
    ms = int(time.time() * 1000)
    done = load_sse.make(shared, target, 0, None)
    done.connection_made(Transport())
    finished = RunFinishedEvent(thread_id="s", run_id="s:0", timestamp=ms)
    done.data_received(HEAD + chunked(SNAPSHOT + content(1, ms) + sse(finished, 2)) + b"0\r\n\r\n")
    assert done.last == 2 and done.finished.is_set() and done.stats.reconnects == 0

    cut = load_sse.make(shared, target, 1, None)
    cut.connection_made(Transport())
    resumed: list[int] = []

    async def reconnect() -> None:
        resumed.append(cut.last)

    cut._reconnect = reconnect  # type: ignore[method-assign]
    error = RunErrorEvent(message="stream closed (too_slow)", code="too_slow")
    cut.data_received(HEAD + chunked(SNAPSHOT + content(1, ms) + sse(error)) + b"0\r\n\r\n")
    await asyncio.sleep(0)
    assert cut.stats.reconnects == 1 and resumed == [1] and not cut.finished.is_set()
