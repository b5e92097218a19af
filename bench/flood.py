"""Flood publisher in its own process (scale-out workload): the real publish path over Redis.

    DATABASE_URL=... REDIS_URL=... python bench/flood.py --session ID --servers 8001,8002 \
        --viewers 100 --seconds 5 --window 3000

It publishes ``token_stream`` events through ``realtime.publisher`` (batched insert into the
PostgreSQL event log, then one channel-layer message per flush through Redis to every web
process's hub), never more than ``--window`` events beyond the slowest viewer's
acknowledgement, which it reads from each web process's ``/bench/progress`` (``bench/asgi.py``).
Prints ``{"published", "first_seq", "last_seq", "seconds"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
CHUNK = "lorem ipsum dolor sit amet, consectetur adipiscing "


async def _get(port: int, path: str) -> dict:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    return json.loads(raw.split(b"\r\n\r\n", 1)[1])


async def main(args: argparse.Namespace) -> dict:
    import django

    django.setup()
    from channels.db import database_sync_to_async

    from realtime.eventlog import head_seq
    from realtime.publisher import get_publisher

    ports = [int(p) for p in args.servers.split(",")]
    state = {"slowest": -1, "viewers": 0}

    async def poll() -> None:
        while True:
            try:
                answers = await asyncio.gather(
                    *(_get(p, f"/bench/progress?session={args.session}") for p in ports)
                )
                lows = [a["min"] for a in answers if a["viewers"]]
                state["viewers"] = sum(a["viewers"] for a in answers)
                state["slowest"] = min(lows) if lows else -1
            except OSError:
                pass
            await asyncio.sleep(0.003)

    poller = asyncio.get_running_loop().create_task(poll())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while state["viewers"] < args.viewers and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    head = await database_sync_to_async(head_seq)(args.session)
    publisher = get_publisher()
    data = {"chunk": CHUNK, "agent_id": "bench", "node_id": "flood", "is_thinking": False}
    published = 0
    last = None
    t0 = loop.time()
    end = t0 + args.seconds
    while loop.time() < end:
        room = max(state["slowest"], head) + args.window - (head + published)
        if room <= 0:
            await asyncio.sleep(0.001)
            continue
        for _ in range(min(room, args.chunk)):
            last = publisher.publish_nowait(
                session_id=args.session, event="token_stream", data=dict(data), node_id="flood"
            )
            published += 1
        await asyncio.sleep(0)
    last_seq = await last if last is not None else head
    poller.cancel()
    return {"published": published, "first_seq": head + 1, "last_seq": last_seq,
            "seconds": round(loop.time() - t0, 3), "pid": os.getpid()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--session", required=True)
    parser.add_argument("--servers", required=True, help="comma-separated ports of web processes")
    parser.add_argument("--viewers", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--window", type=int, default=3000)
    parser.add_argument("--chunk", type=int, default=200)
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
