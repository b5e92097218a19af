"""The benchmark tool and the production-style topology, small enough for CI (seconds).

- The event log's fast path builds frames byte-identical to ``protocol.encode``.
- ``bench/run.py --quick``: the flood (with slow readers), a busy meeting and a replay against
  the Django app and the reference server; every client must report zero gaps and duplicates;
  four agents on ``run_worker`` (PostgreSQL + Redis) and the event-log ingest on both databases.
- ``bin/prod``: two uvicorn processes and one worker on a throwaway PostgreSQL database and
  Redis db, one session run, a few clients on each process, zero gaps; Ctrl-C stops it all.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from realtime import protocol
from realtime.eventlog import frame_text

ROOT = Path(__file__).resolve().parents[2]
REDIS_DB = 12  # the realtime tests use 13, the bench 11


@pytest.mark.parametrize(
    ("event", "data", "node_id"),
    [
        ("token_stream", {"chunk": "Ünïcode “quotes” \\ \"json\" 🚀\n", "agent_id": "a",
                          "node_id": "n", "is_thinking": False}, "n"),
        ("execution:paused", {}, None),
        ("token_usage", {"node_id": "n", "agent_id": "a", "model": "m", "input_tokens": 1,
                         "output_tokens": 2, "estimated_cost_usd": 1e-06, "final": True,
                         "session_input_tokens": 3, "session_output_tokens": 4,
                         "session_cost_usd": 0.25}, "n"),
        ("node:parallel_start", {"node_id": None, "branches": ["a", "b"]}, 'we"ird'),
    ],
)
def test_fast_frames_equal_protocol_encode(event, data, node_id):
    at = datetime(2026, 11, 24, 10, 0, 0, 123456, tzinfo=UTC)
    sid = str(uuid.uuid4())
    expected = protocol.encode(event=event, session_id=sid, data=data, node_id=node_id, seq=7,
                               timestamp="2026-11-24T10:00:00.123Z")
    assert frame_text(session_id=sid, seq=7, event=event, data=data, node_id=node_id, at=at) == expected


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> str:
    out = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_bench_quick_run_reports_no_loss(tmp_path):
    out_json = tmp_path / "bench.json"
    stdout = _run([sys.executable, "bench/run.py", "--quick", "--only",
                   "flood,busy,replay,agents,ingest", "--quiet-wait", "0", "--json", str(out_json)])
    results = json.loads(out_json.read_text())
    kinds = {(r["workload"], r["system"]) for r in results}
    assert {("flood", "reference"), ("flood", "django"), ("flood+slow", "django"),
            ("busy", "reference"), ("busy", "django"), ("replay", "django"),
            ("agents", "worker N=4"), ("ingest", "postgresql"), ("ingest", "sqlite")} <= kinds, stdout
    for r in results:
        if r["workload"] == "ingest":  # every published event stored once, gap-free
            assert r["extra"]["stored"] == r["extra"]["published"] > 0, r
            assert r["extra"]["sessions_not_gap_free"] == 0, r
            continue
        if r["workload"] == "agents":  # four agents on run_worker: every run completed
            assert r["extra"]["status"] == "completed" and r["extra"]["peak_concurrent"] == 4, r
        assert r["lost"] == 0 and r["dups"] == 0, (r, stdout)
        assert r["events"] > 0, (r, stdout)
        if r["workload"] != "replay":
            assert r["extra"]["connected"].split("/")[0] == r["extra"]["connected"].split("/")[1]
            assert r["extra"]["min_events"] > 0, r
    assert "ratio to the reference server" in stdout


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of ports")


def _wait_http(port: int, timeout: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing answers on {port}")


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
def test_bin_prod_topology_two_web_processes_and_a_worker(tmp_path):
    import psycopg
    import redis

    sys.path.insert(0, str(ROOT))
    from bench.run import LoadGroup

    db = f"prodsmoke_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "PYTEST_CURRENT_TEST")}
    env.update(DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{db}",
               REDIS_URL=f"redis://127.0.0.1:6379/{REDIS_DB}", VAR_DIR=str(tmp_path),
               SCRIPTED_TOKENS_PER_SECOND="200", PYTHON=sys.executable, LOG_LEVEL="WARNING")
    port = _free_port_pair()
    log = open(tmp_path / "prod.log", "wb")
    prod = subprocess.Popen(["bin/prod", "--web", "2", "--workers", "1", "--port", str(port)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    load = None
    try:
        _wait_http(port)
        _wait_http(port + 1)
        fx = json.loads(_run([sys.executable, "bench/fixtures.py", "prepare", "--sessions", "1",
                              "--workflow", "bench-solo", "--max-tokens", "60"], env).splitlines()[-1])
        sid = fx["sessions"][0]
        targets = [{"url": f"ws://127.0.0.1:{p}/ws/sessions/{sid}/", "session": sid, "count": 3,
                    "cookie": fx["cookie"], "starter": p == port} for p in (port, port + 1)]
        load = LoadGroup(targets, 1, tmp_path)
        assert load.connected == 6, load.errors
        load.command({"cmd": "start"})
        done = json.loads(_run([sys.executable, "bench/fixtures.py", "wait", "--sessions", sid,
                                "--timeout", "60"], env).splitlines()[-1])
        assert done["finished"] and done["status"][sid] == "completed", done
        head = done["heads"][sid]
        report = load.finish({sid: head}, timeout=20)[0]
        clients = report["clients"]
        assert len(clients) == 6
        for client in clients:
            assert client["gaps"] == 0 and client["dups"] == 0 and client["missing"] == 0, client
            assert client["events"] == head, client
    finally:
        if load is not None:
            load.kill()
        os.killpg(prod.pid, signal.SIGINT)
        try:
            prod.wait(30)
        finally:
            log.close()
        with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
    assert prod.returncode == 0, (tmp_path / "prod.log").read_text()[-3000:]
    text = (tmp_path / "prod.log").read_text()
    assert "prod: stopping 3 processes" in text, text[-3000:]
    # every process it started is gone
    leftover = subprocess.run(["pgrep", "-f", "--", f"--port {port} "], capture_output=True, text=True)
    assert not leftover.stdout.strip(), leftover.stdout


async def test_viewer_push_run_dedups_refills_gaps_and_overflows(settings):
    """The hub's run fan-out keeps the per-event rules: in order, once, gaps go to the log."""
    from realtime.hub import Viewer

    settings.WS_SEND_BUFFER_EVENTS = 10
    sent: list[str] = []
    closed: list[int] = []
    socket_takes = asyncio.Event()  # clear: the socket pushes back, frames wait in the viewer

    async def send(message):
        await socket_takes.wait()
        sent.append(message["text"])

    async def close(code):
        closed.append(code)

    viewer = Viewer(session_id=str(uuid.uuid4()), user="u", send=send, close=close)
    gaps: list[int] = []
    viewer.on_gap = lambda v: gaps.append(v.last_seq)
    viewer.activate(last_seq=2, initial=["snap"], missing=[])  # its write waits on the socket

    def run(first, last):
        items = [(seq, f"e{seq}") for seq in range(first, last + 1)]
        viewer.push_run(items, [text for _, text in items])

    run(1, 4)  # overlaps what the snapshot covered: only 3, 4
    run(3, 5)  # overlap again: only 5
    assert viewer.pending == ["e3", "e4", "e5"] and viewer.last_seq == 5
    run(8, 9)  # gap 6-7: held, refilled from the log
    assert gaps == [5] and viewer.filling
    viewer.refill([(6, "e6"), (7, "e7")])
    assert viewer.pending[-4:] == ["e6", "e7", "e8", "e9"] and viewer.last_seq == 9
    socket_takes.set()
    await asyncio.sleep(0.01)  # the writer sends the snapshot, then what waited as one batch frame
    assert len(sent) == 2 and sent[0] == "snap"
    assert sent[1].startswith('{"event":"batch","data":{"events":[e3,e4,e5,e6,e7,e8,e9]')
    socket_takes.clear()
    run(10, 10)  # written at once: the write waits on the socket
    run(11, 21)  # more than WS_SEND_BUFFER_EVENTS waiting behind it: closed with 4409
    await asyncio.sleep(0.01)
    assert closed == [4409] and viewer.closed
