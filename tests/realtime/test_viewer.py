"""The outgoing side of a socket: frames written in the hub's turn, batch frames joined once
per flush for every viewer, a socket that pushes back served in order when it drains, and the
socket stack that hands the server's own ``send`` to the consumer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from realtime import protocol
from realtime.auth import socket_auth_stack
from realtime.viewer import Viewer
from tests.conftest import session_cookie_for

SID = "00000000-0000-4000-8000-0000000000aa"


def frame(seq: int) -> str:
    return protocol.dumps(protocol.envelope(event="token_stream", session_id=SID, seq=seq,
                                            node_id="a", data={"chunk": f"t{seq} "}))


def seqs(text: str) -> list[int]:
    message = json.loads(text)
    events = message["data"]["events"] if message["event"] == "batch" else [message]
    return [event["seq"] for event in events]


class Socket:
    """A socket's ``send``: records each message; ``hold`` makes the next sends wait."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.open = asyncio.Event()
        self.open.set()

    async def send(self, message: dict[str, Any]) -> None:
        await self.open.wait()
        self.sent.append(message["text"])

    async def close(self, code: int) -> None:
        pass


def viewer_on(socket: Socket) -> Viewer:
    viewer = Viewer(session_id=SID, user="u", send=socket.send, close=socket.close)
    viewer.activate(last_seq=0, initial=[], missing=[])
    return viewer


async def test_a_flush_is_written_in_the_hubs_turn_as_one_message_shared_by_every_viewer():
    sockets = [Socket() for _ in range(3)]
    viewers = [viewer_on(s) for s in sockets]
    run = [(seq, frame(seq)) for seq in (1, 2, 3)]
    texts = [text for _, text in run]
    for viewer in viewers:
        viewer.push_run(run, texts)
    # no await between the push and here: each socket already has its message
    assert [len(s.sent) for s in sockets] == [1, 1, 1]
    assert seqs(sockets[0].sent[0]) == [1, 2, 3]
    assert sockets[1].sent[0] is sockets[0].sent[0] and sockets[2].sent[0] is sockets[0].sent[0]


async def test_a_viewer_with_other_frames_waiting_gets_its_own_message():
    shared, alone = Socket(), Socket()
    first, second = viewer_on(shared), viewer_on(alone)
    run = [(seq, frame(seq)) for seq in (1, 2)]
    first.push_run(run, [t for _, t in run])
    second.push_ephemeral('{"event":"presence"}')
    second.push_run(run, [t for _, t in run])
    assert [seqs(t) for t in shared.sent] == [[1, 2]]
    assert alone.sent[0] == '{"event":"presence"}'
    assert seqs(alone.sent[1]) == [1, 2]


async def test_a_socket_that_pushes_back_gets_every_frame_once_in_order_when_it_drains():
    socket = Socket()
    viewer = viewer_on(socket)
    socket.open.clear()  # the transport's buffer is full
    for start in (1, 3, 5):
        run = [(seq, frame(seq)) for seq in (start, start + 1)]
        viewer.push_run(run, [t for _, t in run])
    assert socket.sent == []
    socket.open.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert [s for text in socket.sent for s in seqs(text)] == [1, 2, 3, 4, 5, 6]
    assert len(socket.sent) == 2  # the first write, then what queued meanwhile as one batch
    run = [(7, frame(7))]
    viewer.push_run(run, [run[0][1]])  # drained: written at once again
    assert seqs(socket.sent[-1]) == [7]


@pytest.mark.django_db(transaction=True)
async def test_the_socket_stack_finds_the_user_and_passes_the_servers_send_through(owner):
    cookie = await sync_to_async(session_cookie_for)(owner)
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["send"] = send
        seen["user"] = await sync_to_async(lambda: scope["user"].username)()

    async def server_send(message: dict[str, Any]) -> None:
        pass

    scope = {"type": "websocket", "path": "/ws/", "headers": [(b"cookie", f"sessionid={cookie}".encode())]}
    await socket_auth_stack(app)(scope, None, server_send)
    assert seen == {"send": server_send, "user": "alice"}
