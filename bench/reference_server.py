"""The Python reference: a minimal ``websockets`` broadcast server with the app's envelope.

What a hand-written server would do: keep the open sockets per session in a set, encode each
event once (same envelope shape and key order as ``realtime.protocol.envelope``, a ``seq``
per event per session) and ``websockets.broadcast`` it, one frame per event. No database, no
authentication, no batching: the bar the Django app is measured against.

    python bench/reference_server.py --port 8765

Sockets: ``/ws/sessions/<id>/`` (first frame: a ``snapshot`` carrying ``last_seq``). A client
may send ``{"cmd":"ping","id":"a<seq>"}`` to acknowledge what it has received; the flood uses
those acknowledgements as its window (see ``bench/README.md``).

HTTP (bench driver only):
- ``GET /bench/flood?session=ID&seconds=S&viewers=N&window=W&chunk=C`` publishes token_stream
  events of ~200 bytes as fast as the viewers take them (never more than W events beyond the
  slowest acknowledgement), returns ``{"published", "first_seq", "last_seq", "seconds"}``.
- ``GET /bench/script?sessions=ID,ID&agents=A&tps=T&tokens=K&window_ms=50`` emulates running
  agents: every agent emits the tokens of each 50 ms window as one event (as the engine's
  coalescer does), then one ``execution:completed`` per session; returns ``{id: last_seq}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from datetime import UTC, datetime
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
CHUNK = "lorem ipsum dolor sit amet, consectetur adipiscing "  # event of ~200 bytes


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(event: str, sid: str, data: dict, node_id: str | None, seq: int | None) -> str:
    return _dumps(
        {"event": event, "data": data, "timestamp": now_iso(), "node_id": node_id, "seq": seq,
         "session_id": sid}
    )


class Room:
    __slots__ = ("acks", "conns", "seq")

    def __init__(self) -> None:
        self.conns: set[ServerConnection] = set()
        self.seq = 0
        self.acks: dict[ServerConnection, int] = {}


rooms: dict[str, Room] = {}


def room(sid: str) -> Room:
    r = rooms.get(sid)
    if r is None:
        r = rooms[sid] = Room()
    return r


def publish(sid: str, event: str, data: dict, node_id: str | None) -> int:
    r = room(sid)
    r.seq += 1
    broadcast(r.conns, envelope(event, sid, data, node_id, r.seq))
    return r.seq


async def handler(ws: ServerConnection) -> None:
    path = urlsplit(ws.request.path).path.strip("/").split("/")
    if len(path) != 3 or path[:2] != ["ws", "sessions"]:
        await ws.close(4404)
        return
    sid = path[2]
    r = room(sid)
    snapshot = {"session": {"id": sid}, "workflow": {}, "state": {}, "presence": {},
                "last_seq": r.seq, "resync": False, "can_control": True}
    r.conns.add(ws)
    await ws.send(envelope("snapshot", sid, snapshot, None, None))
    try:
        async for message in ws:
            if isinstance(message, str) and message.startswith('{"cmd":"ping","id":"a'):
                r.acks[ws] = int(json.loads(message)["id"][1:])
    finally:
        r.conns.discard(ws)
        r.acks.pop(ws, None)


async def flood(sid: str, seconds: float, viewers: int, window: int, chunk: int) -> dict:
    r = room(sid)
    loop = asyncio.get_running_loop()
    # wait (bounded) until every viewer has acknowledged its snapshot position
    deadline = loop.time() + 10
    while len(r.acks) < viewers and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    first = r.seq + 1
    data = {"chunk": CHUNK, "agent_id": "bench", "node_id": "flood", "is_thinking": False}
    t0 = loop.time()
    end = t0 + seconds
    while loop.time() < end:
        slowest = min(r.acks.values()) if r.acks else r.seq
        room_left = slowest + window - r.seq
        if room_left <= 0:
            await asyncio.sleep(0.001)
            continue
        for _ in range(min(room_left, chunk)):
            publish(sid, "token_stream", data, "flood")
        await asyncio.sleep(0)
    return {"published": r.seq - first + 1, "first_seq": first, "last_seq": r.seq,
            "seconds": round(loop.time() - t0, 3)}


async def agent(sid: str, name: str, tps: float, tokens: int, window_ms: float) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    tick = window_ms / 1000.0
    while sent < tokens:
        await asyncio.sleep(tick)
        due = min(tokens, int((loop.time() - start) * tps))
        if due > sent:
            words = "word " * (due - sent)
            sent = due
            publish(sid, "token_stream",
                    {"chunk": words, "agent_id": name, "node_id": name, "is_thinking": False}, name)


async def script(sids: list[str], agents: int, tps: float, tokens: int, window_ms: float) -> dict:
    await asyncio.gather(
        *(agent(sid, f"agent{a}", tps, tokens, window_ms) for sid in sids for a in range(agents))
    )
    for sid in sids:
        publish(sid, "execution:completed", {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0},
                None)
    return {sid: room(sid).seq for sid in sids}


def _json(body: dict) -> Response:
    raw = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(raw)))])
    return Response(HTTPStatus.OK, "OK", headers, raw)


async def process_request(connection: ServerConnection, request: Request) -> Response | None:
    parts = urlsplit(request.path)
    if not parts.path.startswith("/bench/"):
        return None
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if parts.path == "/bench/health":
        return _json({"ok": True, "pid": os.getpid()})
    if parts.path == "/bench/flood":
        return _json(await flood(q["session"], float(q.get("seconds", 5)), int(q.get("viewers", 0)),
                                 int(q.get("window", 2000)), int(q.get("chunk", 100))))
    if parts.path == "/bench/script":
        return _json(await script(q["sessions"].split(","), int(q.get("agents", 1)),
                                  float(q.get("tps", 30)), int(q.get("tokens", 300)),
                                  float(q.get("window_ms", 50))))
    return connection.respond(HTTPStatus.NOT_FOUND, "no such bench endpoint\n")


async def main(host: str, port: int) -> None:
    async with serve(
        handler, host, port, process_request=process_request, compression=None,
        max_size=2**20, open_timeout=None, ping_interval=None, backlog=4096,
    ) as server:
        print(json.dumps({"listening": port, "pid": os.getpid(), "at": time.time()}), flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.host, args.port))
    except ImportError:
        asyncio.run(main(args.host, args.port))
