"""Bench-only ASGI entry point: the real application plus a flood trigger, for ``bench/run.py``.

    BENCH_ENDPOINTS=1 uvicorn bench.asgi:application ...

Without ``BENCH_ENDPOINTS=1`` this module is exactly ``config.asgi.application``. With it, it
adds (before Django, never reachable from the production entry point ``config.asgi``):

- ``GET /bench/flood?session=ID&seconds=S&viewers=N&window=W&chunk=C``: publishes
  ``token_stream`` events of ~200 bytes for S seconds **inside this server process through the
  real publish path** (``realtime.publisher`` → batched insert in the event log → channel layer
  → hub → sockets), as fast as the viewers take them: never more than W events beyond the
  slowest viewer's acknowledgement. Returns ``{"published", "first_seq", "last_seq", "seconds"}``.
  ``limit=N`` stops after N events (used to build a backlog for the replay measurement).
- ``GET /bench/progress?session=ID``: the lowest acknowledged seq among this process's viewers
  of the session (the window of a flood published by another process, ``bench/flood.py``).
- ``GET /bench/health``: ``{"ok": true, "pid": ...}``.
- ``GET /bench/start?session=ID``: starts the session as its owner, through the same command
  path as a viewer's ``start_session`` (for AG-UI viewers, which cannot send commands).

AG-UI viewers (``bench/load_sse.py``) cannot acknowledge over their stream: with
``BENCH_ACK_PORT`` set the server also listens for UDP datagrams ``<session> <viewer> <seq>``
on 127.0.0.1 at that port and counts them like the WebSocket viewers' acknowledgements.

Acknowledgements are the viewers' ordinary ``ping`` commands with an id ``a<seq>``; this
wrapper peeks at them on the way in (the consumer still answers them with ``pong``).

``BENCH_MAX_RUNS`` (default 1000) starts the embedded executor with that many concurrent runs
(the default executor takes 100), for the many-meetings workload.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any
from urllib.parse import parse_qs

from config.asgi import application as base_application

ENABLED = os.environ.get("BENCH_ENDPOINTS") == "1"
CHUNK = "lorem ipsum dolor sit amet, consectetur adipiscing "  # envelope of ~200 bytes
_SESSION_PATH = re.compile(r"^/ws/sessions/([0-9a-fA-F-]{32,36})/$")
_ACK_PREFIX = '{"cmd":"ping","id":"a'

# session id -> {connection key: highest acknowledged seq}
progress: dict[str, dict[int, int]] = {}


def min_progress(session_id: str) -> tuple[int, int]:
    acks = progress.get(session_id) or {}
    return (min(acks.values()) if acks else -1), len(acks)


async def _json(send: Any, body: dict[str, Any], status: int = 200) -> None:
    raw = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(raw)).encode())]})
    await send({"type": "http.response.body", "body": raw})


async def flood(
    session_id: str, seconds: float, viewers: int, window: int, chunk: int, limit: int = 0
) -> dict:
    from channels.db import database_sync_to_async

    from realtime.eventlog import head_seq
    from realtime.publisher import get_publisher

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while min_progress(session_id)[1] < viewers and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.005)
    head = await database_sync_to_async(head_seq)(session_id)
    publisher = get_publisher()
    data = {"chunk": CHUNK, "agent_id": "bench", "node_id": "flood", "is_thinking": False}
    published = 0
    last: asyncio.Future[int] | None = None
    t0 = loop.time()
    end = t0 + seconds
    while loop.time() < end and not (limit and published >= limit):
        slowest, _ = min_progress(session_id)
        room = max(slowest, head) + window - (head + published)
        if room <= 0:
            await asyncio.sleep(0.001)
            continue
        if limit:
            room = min(room, limit - published)
        for _ in range(min(room, chunk)):
            last = publisher.publish_nowait(
                session_id=session_id, event="token_stream", data=dict(data), node_id="flood"
            )
            published += 1
        await asyncio.sleep(0)
    last_seq = await last if last is not None else head
    return {"published": published, "first_seq": head + 1, "last_seq": last_seq,
            "seconds": round(loop.time() - t0, 3), "pid": os.getpid()}


class _UdpAcks(asyncio.DatagramProtocol):
    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            session_id, key, seq = data.decode().split(" ")
            progress.setdefault(session_id, {})[key] = int(seq)
        except ValueError:
            pass


_udp: list[Any] = []


def _listen_for_udp_acks() -> None:
    port = int(os.environ.get("BENCH_ACK_PORT", "0"))
    if port and not _udp:
        _udp.append(asyncio.get_running_loop().create_task(
            asyncio.get_running_loop().create_datagram_endpoint(
                _UdpAcks, local_addr=("127.0.0.1", port))))


async def _start_session(session_id: str) -> dict[str, Any]:
    """``start_session`` from the session's owner, as the room's consumer sends it."""
    from channels.db import database_sync_to_async

    from realtime.protocol import parse_command
    from realtime.rooms import get_backend

    @database_sync_to_async
    def start() -> dict[str, Any]:
        from sessions_app.models import Session

        owner = Session.objects.select_related("owner").get(pk=session_id).owner
        get_backend().execute(user=owner, session_id=session_id, command=parse_command(
            json.dumps({"cmd": "start_session", "id": f"bench-{session_id[:8]}"})))
        return {"started": session_id}

    return await start()


async def _bench_http(scope: dict[str, Any], receive: Any, send: Any) -> None:
    q = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
    path = scope["path"]
    if path == "/bench/health":
        await _json(send, {"ok": True, "pid": os.getpid()})
    elif path == "/bench/start":
        await _json(send, await _start_session(q["session"]))
    elif path == "/bench/progress":
        low, n = min_progress(q["session"])
        await _json(send, {"min": low, "viewers": n})
    elif path == "/bench/memory":
        await _json(send, _memory(q.get("action", "snap"), int(q.get("top", 25)),
                                  q.get("key", "lineno")))
    elif path == "/bench/flood":
        result = await flood(q["session"], float(q.get("seconds", 5)), int(q.get("viewers", 0)),
                             int(q.get("window", 2000)), int(q.get("chunk", 100)),
                             int(q.get("limit", 0)))
        await _json(send, result)
    else:
        await _json(send, {"error": "no such bench endpoint"}, 404)


_snapshots: list[Any] = []


def _memory(action: str, top: int, key: str) -> dict[str, Any]:
    """tracemalloc (start the server with PYTHONTRACEMALLOC=1): what connected sockets hold."""
    import gc
    import tracemalloc

    if not tracemalloc.is_tracing():
        return {"error": "start the server with PYTHONTRACEMALLOC=1"}
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    if action == "snap" or not _snapshots:
        _snapshots[:] = [snap]
        return {"ok": True, "traced": tracemalloc.get_traced_memory()[0]}
    if key == "package":
        return {"by_package": _by_package(snap.compare_to(_snapshots[0], "traceback"))}
    stats = snap.compare_to(_snapshots[0], key)
    return {
        "total_diff": sum(st.size_diff for st in stats),
        "top": [
            {"where": str(st.traceback).splitlines()[0] if key == "lineno" else
             " <- ".join(str(f) for f in reversed(st.traceback[-5:])),
             "size_diff": st.size_diff, "count_diff": st.count_diff}
            for st in stats[:top]
        ],
    }


_PACKAGES = ("realtime", "bench", "uvicorn", "websockets", "wsproto", "h11", "daphne", "twisted",
             "autobahn", "channels", "django", "asgiref", "sessions_app", "workflows", "config")


def _by_package(stats: list[Any]) -> dict[str, int]:
    """Each allocation goes to the innermost frame that is in a known package (the standard
    library allocates on behalf of its caller: an asyncio.Event made by uvicorn is uvicorn's)."""
    totals: dict[str, int] = {}
    for st in stats:
        owner = "other"
        for frame in reversed(st.traceback):
            parts = frame.filename.replace("\\", "/").split("/")
            hit = next((p for p in _PACKAGES if p in parts), None)
            if hit:
                owner = hit
                break
        totals[owner] = totals.get(owner, 0) + st.size_diff
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def _start_executor() -> None:
    from django.conf import settings

    if settings.WORKFLOW_EXECUTOR != "embedded":
        return
    from workflows import worker

    loop = asyncio.get_running_loop()
    if loop not in worker.embedded_executor.instances:
        executor = worker.Executor(max_runs=int(os.environ.get("BENCH_MAX_RUNS", "1000")))
        worker.embedded_executor.put(executor)
        executor.starting = loop.create_task(executor.start())


async def bench_application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    kind = scope["type"]
    if kind == "http" and scope["path"].startswith("/bench/"):
        await _bench_http(scope, receive, send)
        return
    if kind == "lifespan" or kind == "websocket":
        _start_executor()
    _listen_for_udp_acks()
    if kind == "websocket":
        match = _SESSION_PATH.match(scope["path"])
        if match:
            import uuid

            session_id = str(uuid.UUID(match.group(1)))
            acks = progress.setdefault(session_id, {})
            key = id(scope)

            async def receive_peek() -> dict[str, Any]:
                message = await receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    text = message.get("text")
                    if text is not None and text.startswith(_ACK_PREFIX):
                        try:
                            acks[key] = int(text[len(_ACK_PREFIX):].split('"', 1)[0])
                        except ValueError:
                            pass
                elif kind == "websocket.disconnect":
                    acks.pop(key, None)
                return message

            try:
                await base_application(scope, receive_peek, send)
            finally:
                acks.pop(key, None)
            return
    await base_application(scope, receive, send)


application = bench_application if ENABLED else base_application
