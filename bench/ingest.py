"""Event-log ingest: how many events per second one process stores through the publisher.

    DATABASE_URL=... REDIS_URL=... python bench/ingest.py --sessions ID,ID,... --seconds 5

Publishes ``token_stream`` events (the size an agent's coalesced chunk has) round-robin into
the given sessions through ``realtime.publisher`` (group commit: one insert per flush, one
channel-layer message per session per flush), keeping at most ``--in-flight`` events
unstored, for ``--seconds``. Then counts the stored rows: every published event must be
there once, seqs gap-free. Prints ``{"published", "stored", "duplicates", "seconds",
"events_per_s", "cpu_percent"}`` (CPU of this process, 100 = one core).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
CHUNK = "market pricing strategy "  # ~2.5 words: one 50 ms window of an agent at 50 tokens/s


def count_rows(sessions: list[str]) -> tuple[int, int]:
    """(rows stored, sessions whose seqs are not exactly 1..count)."""
    from django.db.models import Count, Max, Min

    from realtime.models import SessionEvent

    rows = SessionEvent.objects.filter(session_id__in=sessions).values("session_id").annotate(
        n=Count("id"), lo=Min("seq"), hi=Max("seq"))
    stored = sum(r["n"] for r in rows)
    broken = sum(1 for r in rows if r["lo"] != 1 or r["hi"] != r["n"])
    return stored, broken


async def main(args: argparse.Namespace) -> dict:
    import django

    django.setup()
    from channels.db import database_sync_to_async

    from realtime.publisher import get_publisher

    sessions = args.sessions.split(",")
    publisher = get_publisher()
    loop = asyncio.get_running_loop()
    data = {"chunk": CHUNK, "agent_id": "a1", "node_id": "n1", "is_thinking": False}
    before, _ = await database_sync_to_async(count_rows)(sessions)
    pending: set[asyncio.Future[int]] = set()
    published = 0
    cpu0, t0 = time.process_time(), loop.time()
    end = t0 + args.seconds
    while loop.time() < end:
        room = args.in_flight - len(pending)
        for i in range(min(room, 500)):
            future = publisher.publish_nowait(
                session_id=sessions[(published + i) % len(sessions)], event="token_stream",
                data=dict(data), node_id="n1")
            pending.add(future)
            future.add_done_callback(pending.discard)
        published += max(0, min(room, 500))
        await asyncio.sleep(0 if room > 0 else 0.001)
    await asyncio.gather(*pending, return_exceptions=True)  # the batch in flight too
    seconds = loop.time() - t0
    cpu = time.process_time() - cpu0
    stored, broken = await database_sync_to_async(count_rows)(sessions)
    stored -= before
    return {"published": published, "stored": stored, "duplicates": max(0, stored - published),
            "sessions_not_gap_free": broken, "seconds": round(seconds, 2),
            "events_per_s": round(stored / seconds), "cpu_percent": round(100 * cpu / seconds)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", required=True)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--in-flight", type=int, default=4000)
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
