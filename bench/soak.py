"""Soak: many sockets on many sessions for minutes, with workflows running the whole time.

    .venv/bin/python bench/soak.py                          # 1,000 sockets, 20 sessions, 10 min
    .venv/bin/python bench/soak.py --minutes 1              # a 1-minute version
    .venv/bin/python bench/soak.py --sockets 50 --sessions 5 --seconds 20   # what CI runs
    .venv/bin/python bench/soak.py --json var/soak.json     # also write the figures

Topology (bench/faults.py's Cluster): two daphne processes (``--server uvicorn`` for uvicorn)
sharing Redis (127.0.0.1:6379, db 12) and a throwaway PostgreSQL database, runs executed by
one ``manage.py run_worker`` process. Every session runs a workflow sized to last the whole
soak: six stages (single agent, parallel pair, single, a human review that times out and
approves by default, parallel pair, single) streaming at ``--rate`` tokens/s per agent; a
participant speaks in every session every 30 s (``user_input``).

Viewers: ``--users`` users each watch every session (shared watch-only, one socket per
session, alternately on each web process: under the default per-user socket limit), plus
the owner of every session. The owner's socket is a full ``bench/faults.py`` Viewer (it
sends the messages; at the end its folded transcript is compared with the Message rows and
a fresh snapshot); all other sockets are ``bench/load.py`` viewers (the load tool's
Sans-I/O client, one process) that check every event's seq and answer with a heartbeat
``ping`` every 15 s, as the page does.

Pass criteria, printed with the figures: no lost event (gaps + missing at the end, by seq, on
every socket), no duplicate, no error (no close or reconnect of any socket, no traceback in
any server log, every run completed), server memory growth under 5 % from the end of the
warm-up (20 % of the soak, at least 20 s) to the end (median of the last samples against
the median of the samples around the end of warm-up, per web process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from bench import faults  # noqa: E402
from bench.faults import Cluster, Viewer, log  # noqa: E402
from bench.load import Histogram  # noqa: E402

STAGES = 6


def soak_workflow(seconds: float, rate: float) -> dict[str, Any]:
    """Six stages of about ``seconds / 6`` each; the review stage waits for its timeout."""
    stage = max(1.0, seconds / STAGES)
    tokens = max(4, int(stage * rate))
    a = faults.agent
    review = {
        "id": "check", "type": "human_review", "depends_on": ["mid"],
        "options": {"reviews": "mid", "reason": "Check the middle of the meeting",
                    "timeout": max(1, int(stage)), "default_decision": "approve", "max_rounds": 1},
    }
    return faults.workflow(
        "soak",
        a("open", tokens=tokens),
        a("left", "open", tokens=tokens), a("right", "open", tokens=tokens),
        a("mid", "left", "right", tokens=tokens),
        review,
        a("east", "check", tokens=tokens), a("west", "check", tokens=tokens),
        a("close", "east", "west", tokens=tokens),
    )


class LoadClient:
    """bench/load.py in a subprocess: connect, then ``finish`` with the final seqs."""

    def __init__(self, spec: dict[str, Any], workdir: Path) -> None:
        path = workdir / "load-spec.json"
        path.write_text(json.dumps(spec))
        self.stderr = open(workdir / "load.log", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "load.py"), str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, cwd=ROOT,
            start_new_session=True,
        )

    def read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError("load client did not answer")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load client exited {self.proc.poll()}")
        return json.loads(line)

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.send({"cmd": "quit"})
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stderr.close()


class MemorySampler:
    """RSS and CPU time of the server processes every ``every`` seconds (psutil)."""

    def __init__(self, procs: dict[str, int], every: float) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in procs.items()}
        self.every = every
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.cpu: list[tuple[float, dict[str, float]]] = []
        self.load: list[float] = []  # the machine's 1-minute load average (other users included)

    async def run(self, t0: float) -> None:
        while True:
            row: dict[str, int] = {}
            cpu: dict[str, float] = {}
            for name, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    row[name] = proc.memory_info().rss
                    times = proc.cpu_times()
                    cpu[name] = times.user + times.system
            now = time.monotonic() - t0
            self.samples.append((now, row))
            self.cpu.append((now, cpu))
            self.load.append(os.getloadavg()[0])
            await asyncio.sleep(self.every)

    def growth(self, warmup: float) -> dict[str, Any]:
        """Median RSS of the 3 samples after warm-up vs the median of the last 3 samples."""
        out = {}
        for name in self.procs:
            series = [(t, row[name]) for t, row in self.samples if name in row]
            after = [rss for t, rss in series if t >= warmup]
            if len(after) < 4:
                continue
            start = statistics.median(after[:3])
            end = statistics.median(after[-3:])
            out[name] = {
                "warm_mb": round(start / 2**20, 1), "end_mb": round(end / 2**20, 1),
                "peak_mb": round(max(after) / 2**20, 1),
                "growth_pct": round(100.0 * (end - start) / start, 2),
            }
        return out

    def cpu_percent(self) -> dict[str, float]:
        """Average CPU use of each process over the sampled run (100 = one core)."""
        if len(self.cpu) < 2:
            return {}
        (t0, first), (t1, last) = self.cpu[0], self.cpu[-1]
        return {name: round(100.0 * (last[name] - first[name]) / max(1e-9, t1 - t0), 1)
                for name in first if name in last}


@faults.stopping_viewers
async def soak(
    *, sockets: int = 1000, sessions: int = 20, seconds: float = 600.0, rate: float = 8.0,
    server: str = "daphne", webs: int = 2, workdir: Path | None = None, say_every: float = 30.0,
    redis_options: str = "", warmup: float | None = None, layer: str = "pubsub",
) -> dict[str, Any]:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="soak-"))
    users_needed = max(0, sockets // sessions - 1)  # the owner's socket makes the rest
    if users_needed * sessions + sessions != sockets:
        raise SystemExit("--sockets must be a multiple of --sessions")
    users = [f"u{n:03d}" for n in range(users_needed)]
    warmup = max(20.0, 0.2 * seconds) if warmup is None else warmup
    result: dict[str, Any] = {
        "sockets": sockets, "sessions": sessions, "seconds": seconds, "rate_tokens_per_s": rate,
        "server": server, "web_processes": webs, "warmup_s": warmup, "redis_options": redis_options,
        "layer": layer,
    }
    # The default 15 s lease (the fault scenarios use 2 s to take over fast): under a load
    # that delays a renewal past a short lease, the worker would take its own run over.
    # DEBUG=0 as in production: with DEBUG on, Django keeps each connection's last 9,000
    # queries, which alone grew the worker's RSS 5 % over 10 minutes (plain HTTP here, so the
    # HTTPS-only hardening is turned off).
    env = {"SCRIPTED_TOKENS_PER_SECOND": str(rate), "WORKER_LEASE_SECONDS": "15",
           "DEBUG": "0", "SECRET_KEY": f"soak-{uuid.uuid4().hex}{uuid.uuid4().hex}",
           "SECURE_SSL_REDIRECT": "0", "SESSION_COOKIE_SECURE": "0", "CSRF_COOKIE_SECURE": "0",
           "SECURE_HSTS_SECONDS": "0"}
    with Cluster(workdir, env=env, redis_options=redis_options, layer=layer) as cluster:
        servers, _ = cluster.start_processes([server] * webs, ["worker"])
        definition = soak_workflow(seconds, rate)
        data = cluster.setup(
            users=["owner", *users], workflows=[definition],
            sessions=[{"owner": "owner", "workflow": "soak", "title": f"soak {i}", "shares": users}
                      for i in range(sessions)],
        )
        sids, cookies = data["sessions"], data["cookies"]
        targets = []
        n = 0
        for sid in sids:
            for user in users:
                web = servers[n % webs]
                n += 1
                targets.append({"url": f"{web.ws}/ws/sessions/{sid}/", "session": sid,
                                "count": 1, "cookie": cookies[user]})
        load = LoadClient({"targets": targets, "origin": "http://127.0.0.1", "ack_ms": 15000,
                           "connect_concurrency": 50, "fd_limit": sockets + 1000}, workdir)
        checkers = [Viewer(f"owner-{i}", servers, sid, cookies["owner"], server_index=i)
                    for i, sid in enumerate(sids)]
        sampler = MemorySampler({**{f"web{i + 1}": w.proc.pid for i, w in enumerate(servers)},
                                 "worker": cluster.workers[0].pid}, every=min(5.0, max(0.5, seconds / 120)))
        sampler_task = None
        try:
            ready = await faults.in_thread(load.read, 180)
            await faults.start_viewers(checkers, timeout=60)
            result["connected"] = ready["ready"] + len(checkers)
            result["connect_errors"] = ready["errors"]
            log(f"soak: {result['connected']} sockets connected in {ready['connect_seconds']} s")
            t0 = time.monotonic()
            t0_wall = time.time()
            sampler_task = asyncio.get_running_loop().create_task(sampler.run(t0))
            await faults.in_thread(cluster.start_runs, sids)
            said = 0
            next_say = t0 + min(say_every, seconds / 3)
            while True:
                await asyncio.sleep(1.0)
                now = time.monotonic()
                if now >= next_say:
                    next_say = now + say_every
                    for checker in checkers:
                        if await checker.send("user_input", {"text": f"remark {said} from the owner"}):
                            said += 1
                if now - t0 > seconds:
                    statuses = {sid: cluster.session(sid)["status"] for sid in sids}
                    if all(s in ("completed", "failed", "stopped") for s in statuses.values()):
                        break
                    if now - t0 > seconds * 1.5 + 120:
                        break
            result["run_seconds"] = round(time.monotonic() - t0, 1)
            result["statuses"] = statuses = {sid: cluster.session(sid)["status"] for sid in sids}
            heads = {sid: cluster.session(sid)["last_seq"] for sid in sids}
            await faults.wait_viewers(checkers, heads, 60)
            load.send({"cmd": "finish", "expect": heads, "timeout": 60})
            report = await faults.in_thread(load.read, 120)
            snaps = {sid: await faults.fresh_snapshot(servers[0], sid, cookies["owner"]) for sid in sids}
            check = faults.check_viewers(cluster, checkers, sids, snaps)
        finally:
            if sampler_task is not None:
                sampler_task.cancel()
            await faults.stop_viewers(checkers)
            load.stop()
        clients = report["clients"]
        hist = Histogram()
        hist.merge_sparse(report["hist"])
        lost = sum(c["gaps"] + c["missing"] for c in clients) + check["gaps"] + sum(
            max(0, heads[v.session_id] - v.last_seq) for v in checkers)
        dups = sum(c["dups"] for c in clients) + check["dups"]
        closes = [c["closes"] for c in clients if c["closes"]] + [
            [code for _, code, _ in v.closes] for v in checkers if v.closes]
        reconnects = sum(c["reconnects"] for c in clients) + check["reconnects"]
        memory = sampler.growth(warmup)
        log_errors = cluster.log_summary()
        windows = {}
        for label, lo, hi in (("warm-up", 0.0, warmup), ("after warm-up", warmup, 1e9)):
            values = [lat for v in checkers for recv, _, lat in v.latencies
                      if lo <= recv - lat - t0_wall < hi]
            windows[label] = faults._lat_summary(values)
        step = max(10.0, seconds / 10)
        series = []
        for k in range(int(result["run_seconds"] // step) + 1):
            values = [lat for v in checkers for recv, _, lat in v.latencies
                      if k * step <= recv - lat - t0_wall < (k + 1) * step]
            if values:
                series.append({"from_s": round(k * step), "p50_ms": faults.ms(faults.pct(values, 50)),
                               "p99_ms": faults.ms(faults.pct(values, 99))})
        events = sum(heads.values())
        result.update(
            said=said,
            events_logged=events,
            events_per_second=round(events / max(1.0, result["run_seconds"]), 1),
            deliveries=sum(c["events"] for c in clients) + sum(len(v.events) for v in checkers),
            lost=lost, duplicates=dups, closes=closes[:10], reconnects=reconnects,
            transcript_problems=check["problems"],
            latency_ms={"p50": hist.percentile(50), "p99": hist.percentile(99),
                        "p999": hist.percentile(99.9), "max": max((c["max_ms"] for c in clients), default=None)},
            owner_socket_latency=windows,
            owner_socket_latency_series=series,
            machine_load_avg={"mean": round(statistics.mean(sampler.load), 2) if sampler.load else None,
                              "max": round(max(sampler.load), 2) if sampler.load else None,
                              "cores": os.cpu_count()},
            cpu_percent={**sampler.cpu_percent(),
                         "load client": round(100.0 * report["cpu_seconds"] / max(1e-9, report["wall_seconds"]), 1)},
            memory=memory,
            log_errors=log_errors,
            all_completed=all(s == "completed" for s in statuses.values()),
        )
        known = {k: v for k, v in log_errors.items() if known_bug(k)}
        unexpected = {k: v for k, v in log_errors.items() if not known_bug(k)}
        result["log_errors_known_bugs"] = {f"{known_bug(k)}: {k}": v for k, v in known.items()}
        result["log_errors_unexpected"] = unexpected
        result["delivery_ok"] = bool(
            result["connected"] == sockets and not lost and not dups and not closes
            and not reconnects and not check["problems"] and result["all_completed"]
        )
        result["memory_ok"] = bool(memory) and all(
            m["growth_pct"] < 5.0 for name, m in memory.items() if name.startswith("web"))
        # ok: every criterion, no traceback at all; ok_but_known_bugs: the same, except
        # tracebacks that are known bugs (listed in docs/RELIABILITY.md) are tolerated
        result["ok_but_known_bugs"] = result["delivery_ok"] and result["memory_ok"] and not unexpected
        result["ok"] = result["ok_but_known_bugs"] and not known
    return result


# Server log tracebacks that are known bugs (docs/RELIABILITY.md, tests/reliability xfails).
KNOWN_BUG_LOGS = {
    "receive failed; retrying -> redis.exceptions.TimeoutError": "B4 idle receive timeout",
    "redis.exceptions.MaxConnectionsError": "B5 Redis pool of 100 connections",
}


def known_bug(line: str) -> str | None:
    return next((bug for signature, bug in KNOWN_BUG_LOGS.items() if signature in line), None)


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
