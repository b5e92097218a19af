"""Soak: many sockets on many sessions for minutes, with workflows running the whole time.

    .venv/bin/python bench/soak.py                          # 1,000 sockets, 20 sessions, 10 min
    .venv/bin/python bench/soak.py --minutes 1              # a 1-minute version
    .venv/bin/python bench/soak.py --sockets 50 --sessions 5 --seconds 20   # what CI runs
    .venv/bin/python bench/soak.py --json var/soak.json     # also write the figures

Topology (tests/reliability/cluster.py's Cluster): two daphne processes (``--server uvicorn``
for uvicorn) sharing Redis (127.0.0.1:6379, db 12) and a throwaway PostgreSQL database, runs
executed by one ``manage.py run_worker`` process. Every session runs a workflow sized to last
the whole soak: six stages (single agent, parallel pair, single, a human review that times out
and approves by default, parallel pair, single) streaming at ``--rate`` tokens/s per agent; a
participant speaks in every session every 30 s (``user_input``).

Viewers: ``--users`` users each watch every session (shared watch-only, one socket per
session, alternately on each web process: under the default per-user socket limit), plus
the owner of every session. The owner's socket is a full ``tests/reliability/viewers.py``
Viewer (it sends the messages; at the end its folded transcript is compared with the Message
rows and a fresh snapshot); all other sockets are ``bench/load.py`` viewers (the load tool's
Sans-I/O client, one process) that check every event's seq and answer with a heartbeat
``ping`` every 15 s, as the page does.

Pass criteria, printed with the figures: no lost event (gaps + missing at the end, by seq, on
every socket), no duplicate, no error (no close or reconnect of any socket, no traceback in
any server log, every run completed), server memory growth under 5 % from the end of the
warm-up (20 % of the soak, at least 20 s) to the end (median of the last samples against
the median of the samples around the end of warm-up, per web process).

The soak itself is ``soak()`` in tests/reliability/soak_core.py (tests/reliability/test_soak.py
runs it with tiny sizes); this file is its command line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.reliability.soak_core import soak  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=None, help="overrides --minutes")
    parser.add_argument("--rate", type=float, default=8.0, help="tokens/s per streaming agent")
    parser.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    parser.add_argument("--webs", type=int, default=2)
    parser.add_argument("--redis-options", default="",
                        help='query string added to REDIS_URL, e.g. "max_connections=1000&socket_timeout=15"')
    parser.add_argument("--layer", choices=("core", "pubsub"), default="pubsub",
                        help="CHANNEL_LAYER of every process: channels_redis's pub/sub layer "
                             "(the project's default) or its core layer")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    command = "bench/soak.py " + " ".join(sys.argv[1:])
    result = asyncio.run(soak(sockets=args.sockets, sessions=args.sessions, seconds=seconds,
                              rate=args.rate, server=args.server, webs=args.webs,
                              redis_options=args.redis_options, layer=args.layer))
    result["command"] = command.strip()
    print(json.dumps(result, indent=1, default=str))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    print(f"\nsoak {'PASSED' if result['ok'] else 'FAILED'}: {result['connected']} sockets, "
          f"{result['sessions']} sessions, {result['run_seconds']} s, {result['events_logged']} events "
          f"({result['events_per_second']}/s), {result['deliveries']} deliveries, lost {result['lost']}, "
          f"duplicates {result['duplicates']}, reconnects {result['reconnects']}, "
          f"memory growth {({k: v['growth_pct'] for k, v in result['memory'].items()})} %, "
          f"server log tracebacks {sum(result['log_errors'].values())}",
          file=sys.stderr)
    sys.exit(0 if result["ok"] else 1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
