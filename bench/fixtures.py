"""Database side of the benchmark, run as a subprocess with the server's DATABASE_URL/VAR_DIR.

    python bench/fixtures.py prepare --sessions 200 --workflow bench-solo [--max-tokens N]
    python bench/fixtures.py wait --sessions ID,ID --timeout 60
    python bench/fixtures.py heads --sessions ID,ID

``prepare`` migrates, creates the bench user (owner of every session) and its login cookie,
and creates the sessions from ``bench/workflows/<name>.yaml`` (or a shipped workflow slug);
it prints one JSON object. ``wait`` polls until every session has finished and prints each
session's final ``seq`` and status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("LOG_LEVEL", "WARNING")


def _setup() -> None:
    import django

    django.setup()


def prepare(args: argparse.Namespace) -> dict:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import transaction
    from django.test import Client

    from sessions_app.models import NodeState, Session
    from workflows.definitions import load_file, load_workflow

    call_command("migrate", interactive=False, verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username=args.user)
    user.set_password("bench-password-123")
    user.save()
    client = Client()
    client.force_login(user)
    cookie = client.cookies["sessionid"].value
    path = ROOT / "bench" / "workflows" / f"{args.workflow}.yaml"
    definition = load_file(path) if path.exists() else load_workflow(args.workflow)
    data = definition.to_dict()
    if args.max_tokens:
        for node in data["nodes"]:
            if node.get("type", "agent") == "agent":
                node.setdefault("options", {})["max_tokens"] = args.max_tokens
    ids = []
    with transaction.atomic():
        for n in range(args.sessions):
            session = Session.objects.create(
                owner=user, title=f"bench {n}", workflow_slug=definition.slug,
                workflow_definition=data, nodes_total=len(definition.nodes),
            )
            NodeState.objects.bulk_create(
                NodeState(session=session, node_id=node.id, node_type=node.type,
                          agent_id=node.agent.id if node.agent else "")
                for node in definition.nodes
            )
            ids.append(str(session.pk))
    return {"user": args.user, "cookie": cookie, "sessions": ids}


def wait(args: argparse.Namespace) -> dict:
    from realtime.eventlog import head_seqs
    from realtime.vocabulary import FINISHED_SESSION_STATUSES as FINISHED_STATUSES
    from sessions_app.models import Session

    ids = args.sessions.split(",")
    deadline = time.monotonic() + args.timeout
    while True:
        rows = dict(Session.objects.filter(pk__in=ids).values_list("id", "status"))
        if all(status in FINISHED_STATUSES for status in rows.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    heads = head_seqs(ids)
    return {
        **_stream_seconds(ids),
        "heads": {str(k): v for k, v in heads.items()},
        "status": {str(k): v for k, v in rows.items()},
        "finished": all(status in FINISHED_STATUSES for status in rows.values()),
    }


def _spread(moments: list) -> float:
    """Seconds from the 10th to the 90th percentile (nearest rank) of some moments: how far
    apart the sessions did one thing."""
    moments = sorted(moments)
    if not moments:
        return 0.0
    n = len(moments)
    low, high = moments[max(0, -(-n // 10) - 1)], moments[-(-n * 9 // 10) - 1]
    return round((high - low).total_seconds(), 2)


def _stream_seconds(ids: list[str]) -> dict[str, float]:
    """Medians over the sessions, from publish times: ``stream_s`` first to last token_stream,
    ``start_s`` the session's first event to its first token, ``end_s`` its last token to its
    last event (the run's writes before and after streaming)."""
    from django.db.models import Max, Min

    from realtime.models import SessionEvent

    def median(values: list[float]) -> float:
        values = sorted(values)
        return round(values[len(values) // 2], 2) if values else 0.0

    rows = SessionEvent.objects.filter(session_id__in=ids)
    tokens = {r["session_id"]: r for r in rows.filter(event="token_stream").values("session_id")
              .annotate(first=Min("created_at"), last=Max("created_at"))}
    every = {r["session_id"]: r for r in rows.values("session_id")
             .annotate(first=Min("created_at"), last=Max("created_at"))}
    # The most sessions streaming tokens at one moment (first to last token_stream): what
    # "N agents at once" means, whatever their start and end writes took.
    edges = sorted([(t["first"], 1) for t in tokens.values()]
                   + [(t["last"], -1) for t in tokens.values()], key=lambda e: (e[0], -e[1]))
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    return {
        "peak_streaming": peak,
        # the runs' first events (execution:started: claimed and begun) and first tokens
        "started_spread_s": _spread([e["first"] for e in every.values()]),
        "first_token_spread_s": _spread([t["first"] for t in tokens.values()]),
        "stream_s": median([(t["last"] - t["first"]).total_seconds() for t in tokens.values()]),
        "start_s": median([(t["first"] - every[s]["first"]).total_seconds()
                           for s, t in tokens.items()]),
        "end_s": median([(every[s]["last"] - t["last"]).total_seconds()
                         for s, t in tokens.items()]),
    }


def heads(args: argparse.Namespace) -> dict:
    from realtime.eventlog import head_seqs

    return {"heads": head_seqs(args.sessions.split(","))}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--workflow", default="bench-solo")
    p.add_argument("--max-tokens", type=int, default=0)
    p.add_argument("--user", default="bench")
    w = sub.add_parser("wait")
    w.add_argument("--sessions", required=True)
    w.add_argument("--timeout", type=float, default=60)
    h = sub.add_parser("heads")
    h.add_argument("--sessions", required=True)
    args = parser.parse_args()
    _setup()
    result = {"prepare": prepare, "wait": wait, "heads": heads}[args.cmd](args)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
