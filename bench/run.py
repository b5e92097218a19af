"""Runs every benchmark workload against the Django app and the reference server; prints a table.

    .venv/bin/python bench/run.py                      # everything (~8 minutes on 2 cores)
    .venv/bin/python bench/run.py --only flood,idle    # some workloads
    .venv/bin/python bench/run.py --quick              # tiny sizes (what CI runs, seconds)

Workloads (sizes from the issue; ``--quick`` shrinks them):
  flood    100 viewers of one session; events as fast as the viewers take them (window of
           acknowledged events); Django publishes inside the server process (bench/asgi.py).
  busy     one session, 4 agents in parallel at 50 tokens/s, 1,000 viewers (run in-process).
  many     200 sessions x 5 viewers, one agent at 30 tokens/s each (runs in-process).
  idle     5,000 connected sockets: server RSS per socket.
  replay   a viewer reconnecting 10,000 events behind: time until it is caught up.
  scale    flood and busy across two uvicorn processes sharing Redis + PostgreSQL, runs in a
           ``run_worker`` process, flood published by a separate process (bench/flood.py);
           flood also on one web process in the same topology, for the ratio.
  levers   the flood on variants: daphne instead of uvicorn, one event per frame
           (WS_BATCH_MAX_EVENTS=1), uvicorn --ws websockets-sansio.
  agents, agentsembedded, ingest   capacity (bench/capacity.py): the largest N of one-agent
           sessions a run_worker (or one process) carries; events/s into the log.
  replaybrowser   the replay page over a 100,000-event log in headless Chromium
           (bench/replay_browser.py): first frame, seek to the end.
  agui     flood and busy with AG-UI clients on the SSE watch stream (bench/agui_stream.py,
           bench/load_sse.py), each beside the same workload over WebSockets: the ratio.

Every figure comes from the clients (bench/load.py): events, lost (gaps + missing at the end,
by seq), duplicates, latency percentiles from the envelope timestamp, frames and bytes; CPU
and RSS of the servers come from psutil, the clients' CPU from the clients themselves.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
sys.path.insert(0, str(ROOT))
from bench.agui_stream import AguiStreamWorkloads  # noqa: E402
from bench.capacity import CapacityWorkloads  # noqa: E402
from bench.load import raise_fd_limit  # noqa: E402
from tests.reliability.latency import Histogram  # noqa: E402

PROD_WS = "websockets-sansio"  # what bin/prod runs (docs/PERFORMANCE.md says why)
REDIS_DB = int(os.environ.get("BENCH_REDIS_DB", "11"))
PG_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port: int, path: str, timeout: float = 120) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        return json.loads(response.read())


# ----------------------------------------------------------------------------- processes


CPU_CGROUP = Path("/sys/fs/cgroup/cpu")


def can_cap_cpu() -> bool:
    """cgroup v1's cpu controller is mounted and writable (root in this sandbox)."""
    return (CPU_CGROUP / "cgroup.procs").exists() and os.access(CPU_CGROUP, os.W_OK)


class Server:
    """A child process (server, worker) with its log file; stopped with SIGINT then SIGKILL."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path,
                 port: int | None = None) -> None:
        self.name = name
        self.port = port
        self.log_path = logdir / f"{name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout: float = 60, path: str = "/bench/health") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready: {self.log_path.read_text()[-2000:]}")

    def _tree(self) -> list[psutil.Process]:
        """The process and its children (granian serves from a child process)."""
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.Error:
            return [self.ps]

    def cpu(self) -> float:
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def rss(self) -> int:
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def cap_cpu(self, fraction: float) -> None:
        """Hold the process to ``fraction`` of one core (cgroup v1 CFS quota; the period is
        10 ms, or longer where the quota would fall under the kernel's 1 ms minimum)."""
        group = CPU_CGROUP / f"bench-{self.name}-{self.proc.pid}"
        group.mkdir()
        period = max(10000, int(1000 / fraction) + 1)
        (group / "cpu.cfs_period_us").write_text(str(period))
        (group / "cpu.cfs_quota_us").write_text(str(int(fraction * period)))
        (group / "cgroup.procs").write_text(str(self.proc.pid))
        self.cgroup = group

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        group = getattr(self, "cgroup", None)
        if group is not None:
            with contextlib.suppress(OSError):
                group.rmdir()


class Sampler(threading.Thread):
    """Peak RSS of the server processes while a workload runs."""

    def __init__(self, servers: list[Server]) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.peak = {s.name: 0 for s in servers}
        self.stop_flag = threading.Event()

    def run(self) -> None:
        while not self.stop_flag.is_set():
            for s in self.servers:
                with contextlib.suppress(psutil.Error):
                    self.peak[s.name] = max(self.peak[s.name], s.rss())
            self.stop_flag.wait(0.2)


class LoadGroup:
    """Several bench/load.py processes sharing the viewers of a workload."""

    def __init__(self, targets: list[dict[str, Any]], procs: int, workdir: Path, *,
                 ack_ms: float = 0, parse: str = "regex", concurrency: int = 100,
                 ack_port: int = 0) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.errors: list[str] = []
        specs: list[list[dict[str, Any]]] = [[] for _ in range(procs)]
        for target in targets:
            count = int(target["count"])
            for i in range(procs):
                share = count // procs + (1 if i < count % procs else 0)
                if share:
                    part = dict(target, count=share, starter=target.get("starter") and i == 0)
                    if target.get("slow_count"):
                        part["slow_count"] = (target["slow_count"] // procs
                                              + (1 if i < target["slow_count"] % procs else 0))
                    specs[i].append(part)
        for spec_targets in specs:
            if not spec_targets:
                continue
            path = workdir / f"load-{uuid.uuid4().hex[:6]}.json"
            path.write_text(json.dumps({"targets": spec_targets, "ack_ms": ack_ms, "parse": parse,
                                        "connect_concurrency": concurrency,
                                        "ack_port": ack_port}))
            self.procs.append(subprocess.Popen(
                [PY, str(ROOT / "bench" / "load.py"), str(path)], cwd=ROOT, text=True,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=sys.stderr,
            ))
        self.ready = [self._read(p, 180) for p in self.procs]
        self.connected = sum(r.get("ready", 0) for r in self.ready)
        self.wanted = sum(r.get("wanted", 0) for r in self.ready)
        for r in self.ready:
            self.errors.extend(r.get("errors", []))

    @staticmethod
    def _read(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            raise RuntimeError("load process did not answer")
        return json.loads(result[0])

    def command(self, obj: dict[str, Any], *, answer: bool = True, timeout: float = 60) -> list[dict]:
        for p in self.procs:
            p.stdin.write(json.dumps(obj) + "\n")
            p.stdin.flush()
        return [self._read(p, timeout) for p in self.procs] if answer else []

    def finish(self, expect: dict[str, int], timeout: float = 30) -> list[dict[str, Any]]:
        reports = self.command({"cmd": "finish", "expect": expect, "timeout": timeout},
                               timeout=timeout + 60)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        return reports

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@dataclass
class Result:
    workload: str
    system: str
    viewers: int = 0
    events: int = 0
    lost: int = 0
    dups: int = 0
    reconnects: int = 0
    seconds: float = 0.0
    ev_s: float = 0.0
    frames_s: float = 0.0
    mb_s: float = 0.0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max_ms: float | None = None
    server_cpu: float = 0.0  # % of one core, summed over server processes
    server_rss_mb: float = 0.0
    client_cpu: float = 0.0
    other_cpu: float = 0.0  # % of one core used by other processes meanwhile
    extra: dict[str, Any] = field(default_factory=dict)


def summarize(workload: str, system: str, reports: list[dict[str, Any]], *,
              server_cpu_s: float, wall_s: float, rss_peak: int, note: dict | None = None) -> Result:
    clients = [c for r in reports for c in r["clients"]]
    hist = Histogram()
    for r in reports:
        hist.merge_sparse(r["hist"])
    firsts = [c["first"] for c in clients if c["first"]]
    lasts = [c["last"] for c in clients if c["last"]]
    window = (max(lasts) - min(firsts)) if firsts and lasts else 0.0
    window = max(window, 1e-3)
    events = sum(c["events"] for c in clients)
    frames = sum(c["frames"] for c in clients)
    nbytes = sum(c["bytes"] for c in clients)
    client_cpu = sum(r["cpu_seconds"] for r in reports)
    return Result(
        workload=workload, system=system, viewers=len(clients), events=events,
        lost=sum(c["gaps"] + c["missing"] for c in clients),
        dups=sum(c["dups"] for c in clients),
        reconnects=sum(c["reconnects"] for c in clients),
        seconds=round(window, 2), ev_s=events / window, frames_s=frames / window,
        mb_s=nbytes / window / 1e6, p50=hist.percentile(50), p95=hist.percentile(95),
        p99=hist.percentile(99), max_ms=max((c["max_ms"] for c in clients), default=None),
        server_cpu=100.0 * server_cpu_s / max(wall_s, 1e-3),
        server_rss_mb=rss_peak / 2**20, client_cpu=100.0 * client_cpu / max(wall_s, 1e-3),
        extra=dict(note or {}, min_events=min((c["events"] for c in clients), default=0),
                   max_ms_not_reconnected=max((c["max_ms"] for c in clients if not c["reconnects"]),
                                              default=None),
                   clients_with_loss=sum(1 for c in clients if c["gaps"] or c["missing"]),
                   lossy=[{k: c[k] for k in ("s", "gaps", "missing", "gap_at", "at", "reconnects",
                                             "closes")}
                          for c in clients if c["gaps"] or c["missing"] or c["dups"]][:3]),
    )


# ----------------------------------------------------------------------------- systems


class Bench(CapacityWorkloads, AguiStreamWorkloads):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.summary_lines: list[str] = []
        self.work = Path(tempfile.mkdtemp(prefix="bench-"))
        self.results: list[Result] = []
        self.servers: list[Server] = []
        raise_fd_limit(20000)

    # ------------------------------------------------------------------ environments
    def django_env(self, var_dir: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WS_", "REDIS_", "DATABASE_"))}
        env.update(
            DJANGO_SETTINGS_MODULE="config.settings", VAR_DIR=str(var_dir), DEBUG="0",
            SECRET_KEY="bench-secret-key-" + "x" * 40, SECURE_SSL_REDIRECT="0",
            SESSION_COOKIE_SECURE="0", CSRF_COOKIE_SECURE="0", SECURE_HSTS_SECONDS="0",
            BENCH_ENDPOINTS="1", LOG_LEVEL="WARNING", PYTHONPATH=str(ROOT),
            WS_MAX_SOCKETS_PER_USER="100000", WS_IDLE_TIMEOUT="3600",
            WS_RATE_PER_SECOND="1000", WS_RATE_BURST="2000", WORKER_POLL_SECONDS="0.2",
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        for item in self.args.env:
            key, _, value = item.partition("=")
            env[key] = value
        return env

    def fixtures(self, env: dict[str, str], *argv: str) -> dict[str, Any]:
        out = subprocess.run([PY, str(ROOT / "bench" / "fixtures.py"), *argv], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        if out.returncode:
            raise RuntimeError(f"fixtures {argv}: {out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def start(self, name: str, argv: list[str], env: dict[str, str], port: int | None) -> Server:
        server = Server(name, argv, env, self.work, port)
        self.servers.append(server)
        if port is not None:
            server.wait_ready()
        return server

    def stop_all(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers = []

    def django_server(self, env: dict[str, str], *, kind: str = "uvicorn", ws: str = PROD_WS,
                      name: str = "django", app: str = "bench.asgi:application") -> Server:
        """uvicorn as bin/prod runs it (or daphne); ``app`` config.asgi:application = no bench hooks."""
        port = free_port()
        if kind == "daphne":
            argv = [PY, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0", app]
        elif kind == "granian":  # not a requirement: pip install granian
            argv = [PY, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port",
                    str(port), "--workers", "1", "--log-level", "warning", "--no-access-log", app]
        else:
            argv = [PY, "-m", "uvicorn", app, "--host", "127.0.0.1",
                    "--port", str(port), "--ws", ws, "--lifespan", "on", "--no-access-log",
                    "--log-level", "warning", "--backlog", "4096", "--ws-max-size", "65536"]
        server = Server(name, argv, env, self.work, port)
        self.servers.append(server)
        server.wait_ready(path="/bench/health" if app.startswith("bench.") else "/accounts/login/")
        return server

    def reference_server(self) -> Server:
        port = free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        return self.start("reference", [PY, str(ROOT / "bench" / "reference_server.py"),
                                        "--port", str(port)], env, port)

    def sqlite_setup(self, label: str, sessions: int, workflow: str, max_tokens: int = 0,
                     **env_extra: str) -> tuple[dict[str, str], dict[str, Any]]:
        var_dir = self.work / label
        var_dir.mkdir()
        env = self.django_env(var_dir, **env_extra)
        fx = self.fixtures(env, "prepare", "--sessions", str(sessions), "--workflow", workflow,
                           "--max-tokens", str(max_tokens))
        return env, fx

    def wait_quiet(self, own: list[int]) -> None:
        """Wait (at most --quiet-wait s) until other processes use < 25% of a core for 1 s."""
        deadline = time.monotonic() + self.args.quiet_wait
        mine = set(own) | {os.getpid()}
        while time.monotonic() < deadline:
            others = [p for p in psutil.process_iter() if p.pid not in mine]
            for p in others:
                with contextlib.suppress(psutil.Error):
                    p.cpu_percent(None)
            time.sleep(1.0)
            used = 0.0
            for p in others:
                with contextlib.suppress(psutil.Error):
                    used += p.cpu_percent(None)
            if used < 25:
                return
        print(f"  ! machine busy: other processes use {used:.0f}% of a core", flush=True)

    # ------------------------------------------------------------------ one measurement
    def measure(self, workload: str, system: str, servers: list[Server], targets: list[dict],
                trigger: Any, *, procs: int, ack_ms: float = 0, finish_timeout: float = 30,
                note: dict | None = None, parse: str | None = None,
                analyse: Any = None, ack_port: int = 0) -> Result:
        load = LoadGroup(targets, procs, self.work, ack_ms=ack_ms,
                         parse=parse or self.args.parse, ack_port=ack_port)
        try:
            if load.connected != load.wanted:
                print(f"  ! {system}: {load.connected}/{load.wanted} connected: {load.errors[:2]}",
                      flush=True)
            if self.args.quiet_wait:
                self.wait_quiet([s.proc.pid for s in servers] + [p.pid for p in load.procs])
            else:
                time.sleep(0.5)
            sampler = Sampler(servers)
            sampler.start()
            load.command({"cmd": "mark"})
            profilers = self.profile_start(workload, system, servers)
            cpu0 = {s.name: s.cpu() for s in servers}
            sys0 = psutil.cpu_times()
            t0 = time.time()
            expect, info = trigger(load)
            reports = load.finish(expect, finish_timeout)
            wall = time.time() - t0
            cpu1 = {s.name: s.cpu() for s in servers}
            self.profile_stop(profilers)
            sampler.stop_flag.set()
            sampler.join()
            sys1 = psutil.cpu_times()
            busy = sum(getattr(sys1, f) - getattr(sys0, f) for f in ("user", "system", "nice",
                                                                      "irq", "softirq"))
            if analyse is not None:
                info = dict(info, **analyse(reports))
            if len(servers) > 1:
                info = dict(info, cpu_by_process={
                    name: round(100 * (cpu1[name] - cpu0[name]) / wall) for name in cpu0})
            result = summarize(workload, system, reports,
                               server_cpu_s=sum(cpu1.values()) - sum(cpu0.values()), wall_s=wall,
                               rss_peak=sum(sampler.peak.values()), note=dict(note or {}, **info))
            # CPU used by everything else on the machine (other processes, the kernel's share
            # not charged to ours): figures taken while this is high are disturbed.
            result.other_cpu = max(0.0, 100.0 * busy / wall - result.server_cpu - result.client_cpu)
            result.extra["connected"] = f"{load.connected}/{load.wanted}"
        finally:
            load.kill()
        self.results.append(result)
        print("  " + row(result), flush=True)
        return result

    def profile_start(self, workload: str, system: str, servers: list[Server]) -> list:
        """py-spy (``pip install py-spy``; not a requirement) on each server while measured."""
        if not self.args.profile or (system == "reference" and not self.args.profile_reference):
            return []
        spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
        out = Path(self.args.profile)
        out.mkdir(parents=True, exist_ok=True)
        procs = []
        for s in servers:
            name = f"{workload}-{system}-{s.name}".replace(" ", "_").replace("/", "_")
            procs.append(subprocess.Popen(
                [spy, "record", "-p", str(s.proc.pid), "-r", "250", "--format", "raw",
                 "-o", str(out / f"{name}.txt"), "--nonblocking",
                 *(["--idle"] if self.args.profile_idle else []),
                 *(["--gil"] if self.args.profile_gil else []),
                 *(["-d", str(self.args.profile_seconds)] if self.args.profile_seconds else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.5)
        return procs

    @staticmethod
    def profile_stop(procs: list) -> None:
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()

    # ------------------------------------------------------------------ workloads
    def flood_trigger(self, port: int, sid: str, viewers: int, *, external: Any = None) -> Any:
        a = self.args

        def trigger(load: LoadGroup) -> tuple[dict[str, int], dict[str, Any]]:
            if external is not None:
                out = external()
            else:
                out = http_json(port, f"/bench/flood?session={sid}&seconds={a.flood_seconds}"
                                      f"&viewers={viewers}&window={a.window}&chunk={a.chunk}")
            return {sid: out["last_seq"]}, {"published": out["published"],
                                            "publish_s": out["published"] / out["seconds"]}

        return trigger

    def w_flood(self) -> None:
        a = self.args
        n = a.flood_viewers
        print(f"[flood] {n} viewers, {a.flood_seconds}s, window {a.window}", flush=True)
        ref = self.reference_server()
        sid = str(uuid.uuid4())
        self.measure("flood", "reference", [ref],
                     [{"url": f"ws://127.0.0.1:{ref.port}/ws/sessions/{sid}/", "session": sid,
                       "count": n}],
                     self.flood_trigger(ref.port, sid, n), procs=a.flood_procs, ack_ms=a.ack_ms)
        self.stop_all()
        env, fx = self.sqlite_setup("flood", 1, "bench-solo")
        server = self.django_server(env)
        sid = fx["sessions"][0]
        self.measure("flood", "django", [server],
                     [{"url": f"ws://127.0.0.1:{server.port}/ws/sessions/{sid}/", "session": sid,
                       "count": n, "cookie": fx["cookie"]}],
                     self.flood_trigger(server.port, sid, n), procs=a.flood_procs, ack_ms=a.ack_ms)
        self.stop_all()
        if a.slow_readers:
            # k viewers stop reading for 4 s every 8 s (small receive buffer, no acks: they do
            # not hold the flood back; the loopback send buffer absorbs ~15k events); with a
            # 500-event send buffer they get 4409 and must catch up by replay, losing nothing
            k = a.slow_readers
            env, fx = self.sqlite_setup("flood-slow", 1, "bench-solo", WS_SEND_BUFFER_EVENTS="500")
            server = self.django_server(env)
            sid = fx["sessions"][0]
            url = f"ws://127.0.0.1:{server.port}/ws/sessions/{sid}/"
            self.measure("flood+slow", "django", [server],
                         [{"url": url, "session": sid, "count": n - k, "cookie": fx["cookie"]},
                          {"url": url, "session": sid, "count": k, "cookie": fx["cookie"],
                           "slow_count": k, "slow": 4.0, "ack": False}],
                         self.flood_trigger(server.port, sid, n - k),
                         procs=a.flood_procs, ack_ms=a.ack_ms,
                         note={"slow_readers": k, "WS_SEND_BUFFER_EVENTS": 500})
            self.stop_all()

    def w_levers(self) -> None:
        a = self.args
        n = a.flood_viewers
        print("[levers] flood on variants", flush=True)
        variants = [
            ("daphne", {"kind": "daphne"}, {}),
            ("uvicorn 1 event/frame", {}, {"WS_BATCH_MAX_EVENTS": "1"}),
            ("uvicorn ws=websockets", {"ws": "websockets"}, {}),
            ("uvicorn ws=wsproto", {"ws": "wsproto"}, {}),
        ]
        if importlib.util.find_spec("wsproto") is None:
            variants.pop()
        for label, server_kw, env_extra in variants:
            env, fx = self.sqlite_setup(f"lever-{len(self.results)}", 1, "bench-solo", **env_extra)
            server = self.django_server(env, **server_kw)
            sid = fx["sessions"][0]
            self.measure("flood lever", label, [server],
                         [{"url": f"ws://127.0.0.1:{server.port}/ws/sessions/{sid}/",
                           "session": sid, "count": n, "cookie": fx["cookie"]}],
                         self.flood_trigger(server.port, sid, n), procs=a.flood_procs,
                         ack_ms=a.ack_ms)
            self.stop_all()

    def run_trigger(self, env: dict[str, str], sids: list[str], timeout: float) -> Any:
        def trigger(load: LoadGroup) -> tuple[dict[str, int], dict[str, Any]]:
            load.command({"cmd": "start"})
            done = self.fixtures(env, "wait", "--sessions", ",".join(sids), "--timeout", str(timeout))
            statuses = sorted(set(done["status"].values()))
            return done["heads"], {"status": ",".join(statuses),
                                   **{k: done[k] for k in ("stream_s", "start_s", "end_s", "peak_streaming",
                                                           "started_spread_s", "first_token_spread_s")}}

        return trigger

    def script_trigger(self, port: int, sids: list[str], agents: int, tps: float,
                       tokens: int) -> Any:
        def trigger(load: LoadGroup) -> tuple[dict[str, int], dict[str, Any]]:
            out = http_json(port, f"/bench/script?sessions={','.join(sids)}&agents={agents}"
                                  f"&tps={tps}&tokens={tokens}&window_ms=50", timeout=300)
            return out, {}

        return trigger

    def w_busy(self) -> None:
        a = self.args
        n = a.busy_viewers
        print(f"[busy] 1 session, 4 agents x 50 tok/s x {a.busy_tokens} tokens, {n} viewers",
              flush=True)
        ref = self.reference_server()
        sid = str(uuid.uuid4())
        self.measure("busy", "reference", [ref],
                     [{"url": f"ws://127.0.0.1:{ref.port}/ws/sessions/{sid}/", "session": sid,
                       "count": n}],
                     self.script_trigger(ref.port, [sid], 4, 50, a.busy_tokens), procs=a.procs)
        self.stop_all()
        env, fx = self.sqlite_setup("busy", 1, "bench-parallel", a.busy_tokens,
                                    SCRIPTED_TOKENS_PER_SECOND="50")
        server = self.django_server(env)
        sid = fx["sessions"][0]
        self.measure("busy", "django", [server],
                     [{"url": f"ws://127.0.0.1:{server.port}/ws/sessions/{sid}/", "session": sid,
                       "count": n, "cookie": fx["cookie"], "starter": True}],
                     self.run_trigger(env, [sid], 120), procs=a.procs)
        self.stop_all()

    def w_many(self) -> None:
        a = self.args
        ns, nv = a.many_sessions, a.many_viewers
        print(f"[many] {ns} sessions x {nv} viewers, 1 agent x 30 tok/s x {a.many_tokens} tokens",
              flush=True)
        ref = self.reference_server()
        sids = [str(uuid.uuid4()) for _ in range(ns)]
        self.measure("many", "reference", [ref],
                     [{"url": f"ws://127.0.0.1:{ref.port}/ws/sessions/{sid}/", "session": sid,
                       "count": nv} for sid in sids],
                     self.script_trigger(ref.port, sids, 1, 30, a.many_tokens), procs=a.procs)
        self.stop_all()
        env, fx = self.sqlite_setup("many", ns, "bench-solo", a.many_tokens,
                                    SCRIPTED_TOKENS_PER_SECOND="30")
        server = self.django_server(env)
        self.measure("many", "django", [server],
                     [{"url": f"ws://127.0.0.1:{server.port}/ws/sessions/{sid}/", "session": sid,
                       "count": nv, "cookie": fx["cookie"], "starter": True}
                      for sid in fx["sessions"]],
                     self.run_trigger(env, fx["sessions"], 120), procs=a.procs)
        self.stop_all()

    def idle_one(self, system: str, server: Server, targets: list[dict], warm: dict) -> None:
        warm_load = LoadGroup([warm], 1, self.work)
        time.sleep(1.0)
        rss0 = server.rss()
        load = LoadGroup(targets, self.args.procs, self.work, concurrency=200)
        try:
            time.sleep(3.0)
            cpu0, t0 = server.cpu(), time.time()
            time.sleep(2.0)
            rss1 = server.rss()
            idle_cpu = 100 * (server.cpu() - cpu0) / (time.time() - t0)
            connected = load.connected
            client_rss = sum(r["rss"] for r in load.command({"cmd": "rss"}))
        finally:
            load.kill()
            warm_load.kill()
        per_socket = (rss1 - rss0) / max(connected, 1)
        result = Result(workload="idle", system=system, viewers=connected,
                        server_cpu=idle_cpu, server_rss_mb=rss1 / 2**20,
                        extra={"kb_per_socket": round(per_socket / 1024, 1),
                               "rss_before_mb": round(rss0 / 2**20, 1),
                               "client_rss_mb": round(client_rss / 2**20, 1),
                               "connected": f"{connected}/{load.wanted}"})
        self.results.append(result)
        print("  " + row(result), flush=True)

    def w_idle(self) -> None:
        a = self.args
        total, per = a.idle_sockets, max(1, a.idle_sockets // 50)
        print(f"[idle] {total} sockets", flush=True)
        ref = self.reference_server()
        sids = [str(uuid.uuid4()) for _ in range(max(1, total // per))]
        url = f"ws://127.0.0.1:{ref.port}/ws/sessions/"
        self.idle_one("reference", ref, [{"url": f"{url}{s}/", "session": s, "count": per}
                                         for s in sids],
                      {"url": f"{url}{sids[0]}/", "session": sids[0], "count": 1})
        self.stop_all()
        env, fx = self.sqlite_setup("idle", max(1, total // per), "bench-solo")
        variants: list[tuple[str, dict[str, str]]] = [("django", {})]
        if a.idle_variants:
            variants += [("django ws=websockets", {"ws": "websockets"}),
                         ("django daphne", {"kind": "daphne"})]
            if importlib.util.find_spec("granian") is not None:
                variants.append(("django granian", {"kind": "granian"}))
            if importlib.util.find_spec("wsproto") is not None:
                variants.append(("django ws=wsproto", {"ws": "wsproto"}))
        for label, kw in variants:
            server = self.django_server(env, app="config.asgi:application", **kw)
            url = f"ws://127.0.0.1:{server.port}/ws/sessions/"
            self.idle_one(label, server,
                          [{"url": f"{url}{s}/", "session": s, "count": per, "cookie": fx["cookie"]}
                           for s in fx["sessions"]],
                          {"url": f"{url}{fx['sessions'][0]}/", "session": fx["sessions"][0],
                           "count": 1, "cookie": fx["cookie"]})
            self.stop_all()

    def w_memory(self) -> None:
        """What an idle socket holds, by package (tracemalloc, PYTHONTRACEMALLOC=12)."""
        a = self.args
        n = min(a.idle_sockets, 500)
        print(f"[memory] tracemalloc of {n} idle sockets, by package", flush=True)
        env, fx = self.sqlite_setup("memory", 10, "bench-solo")
        env["PYTHONTRACEMALLOC"] = "12"
        for label, kw in (("uvicorn ws=" + PROD_WS, {}), ("uvicorn ws=websockets", {"ws": "websockets"})):
            server = self.django_server(env, **kw)
            url = f"ws://127.0.0.1:{server.port}/ws/sessions/"
            warm = LoadGroup([{"url": f"{url}{fx['sessions'][0]}/", "session": "w", "count": 1,
                               "cookie": fx["cookie"]}], 1, self.work)
            time.sleep(1.0)
            http_json(server.port, "/bench/memory?action=snap")
            load = LoadGroup([{"url": f"{url}{s}/", "session": s, "count": n // 10,
                               "cookie": fx["cookie"]} for s in fx["sessions"]], 1, self.work)
            time.sleep(2.0)
            diff = http_json(server.port, "/bench/memory?action=diff&key=package", timeout=400)[
                "by_package"]
            load.kill()
            warm.kill()
            per = {k: round(v / max(load.connected, 1)) for k, v in diff.items() if abs(v) > n * 50}
            total = round(sum(diff.values()) / max(load.connected, 1))
            print(f"  {label}: {total} bytes of Python objects per socket: {json.dumps(per)}",
                  flush=True)
            self.results.append(Result(workload="memory", system=label, viewers=load.connected,
                                       extra={"bytes_per_socket": total, "by_package": per}))
            self.stop_all()

    def w_replay(self) -> None:
        """A viewer 10,000 events behind reconnects with last_seq: time to be caught up."""
        a = self.args
        print(f"[replay] reconnect {a.replay_events} events behind", flush=True)
        env, fx = self.sqlite_setup("replay", 1, "bench-solo")
        server = self.django_server(env)
        sid = fx["sessions"][0]
        url = f"ws://127.0.0.1:{server.port}/ws/sessions/{sid}/"
        # publish the backlog through the real path with one viewer attached (window-free)
        out = http_json(server.port, f"/bench/flood?session={sid}&seconds=30&viewers=0"
                                     f"&window={a.replay_events}&chunk=500&limit={a.replay_events}")
        head = out["last_seq"]
        runs = []
        for _ in range(3):
            code = (
                "import asyncio,json,time,sys\n"
                "from websockets.asyncio.client import connect\n"
                "async def main():\n"
                f"  t=time.perf_counter(); n=0; last={head - a.replay_events}\n"
                f"  async with connect('{url}?last_seq={head - a.replay_events}', max_size=None,"
                f" compression=None, origin='http://127.0.0.1',"
                f" additional_headers={{'Cookie':'sessionid={fx['cookie']}'}}) as ws:\n"
                f"    while last < {head}:\n"
                "      f=json.loads(await ws.recv())\n"
                "      for e in (f['data']['events'] if f['event']=='batch' else [f]):\n"
                "        if e['seq'] is None: continue\n"
                "        assert e['seq']==last+1, (e['seq'], last); last=e['seq']; n+=1\n"
                "  print(json.dumps({'seconds': time.perf_counter()-t, 'events': n}))\n"
                "asyncio.run(main())\n"
            )
            res = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
            if res.returncode:
                raise RuntimeError(res.stderr[-2000:])
            runs.append(json.loads(res.stdout))
        best = min(r["seconds"] for r in runs)
        result = Result(workload="replay", system="django", viewers=1, events=runs[0]["events"],
                        seconds=round(best, 3), ev_s=runs[0]["events"] / best,
                        extra={"catch_up_s": [round(r["seconds"], 3) for r in runs]})
        self.results.append(result)
        print("  " + row(result), flush=True)
        self.stop_all()

    # ------------------------------------------------------------------ scale-out
    def pg_env(self, label: str, **extra: str) -> tuple[dict[str, str], str]:
        import psycopg
        import redis

        db = f"bench_{label}_{os.getpid()}"
        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
            conn.execute(f'CREATE DATABASE "{db}"')
        redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB).flushdb()
        var_dir = self.work / label
        var_dir.mkdir(exist_ok=True)
        env = self.django_env(var_dir, **{"DATABASE_URL": f"{PG_URL}/{db}",
                                          "REDIS_URL": f"redis://127.0.0.1:6379/{REDIS_DB}",
                                          "WORKFLOW_EXECUTOR": "worker", "DB_CONN_MAX_AGE": "60",
                                          **extra})
        return env, db

    def pg_drop(self, db: str) -> None:
        import psycopg

        with psycopg.connect(f"{PG_URL}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    def w_scale(self) -> None:
        self.w_scaleflood()
        if self.args.web_cpu_cap and can_cap_cpu():
            self.w_scaleflood(cap=self.args.web_cpu_cap)
        self.w_scalebusy()

    def w_scalecap(self) -> None:
        """Only the CPU-capped scale-out flood (``--only scalecap``)."""
        self.w_scaleflood(cap=self.args.web_cpu_cap or 0.1)

    def w_scaleflood(self, cap: float = 0.0) -> None:
        """Workload 1 on one and on two web processes. With ``cap`` each web process gets that
        fraction of a core (cgroup quota): the web tier becomes the bottleneck, as on a machine
        with a core per web process and spare cores for the clients, the publisher, Redis and
        PostgreSQL; on 2 cores shared by all of them it is not (docs/PERFORMANCE.md)."""
        a = self.args
        n = a.flood_viewers
        label = f"scale flood{' cap' if cap else ''}"
        # Throttled servers answer in bursts: with 200 events in flight the flood would measure
        # the round trip, not the servers; 1,000 keeps them busy.
        window = max(a.window, 1000) if cap else a.window
        print(f"[scale] Redis + PostgreSQL, external flood publisher"
              f"{f', each web process capped at {cap:.0%} of a core' if cap else ''}", flush=True)
        for webs in (1, 2):
            env, db = self.pg_env(f"scale{webs}")
            try:
                fx = self.fixtures(env, "prepare", "--sessions", "1", "--workflow", "bench-solo")
                servers = [self.django_server(env, name=f"web{i}") for i in range(webs)]
                if cap:
                    for server in servers:
                        server.cap_cpu(cap)
                sid = fx["sessions"][0]
                targets = [{"url": f"ws://127.0.0.1:{s.port}/ws/sessions/{sid}/", "session": sid,
                            "count": n // webs + (1 if i < n % webs else 0), "cookie": fx["cookie"]}
                           for i, s in enumerate(servers)]
                ports = ",".join(str(s.port) for s in servers)

                def external(env: dict = env, sid: str = sid, ports: str = ports) -> dict:
                    res = subprocess.run(
                        [PY, str(ROOT / "bench" / "flood.py"), "--session", sid, "--servers", ports,
                         "--viewers", str(n), "--seconds", str(a.flood_seconds),
                         "--window", str(window), "--chunk", str(a.chunk)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
                    if res.returncode:
                        raise RuntimeError(res.stderr[-3000:])
                    return json.loads(res.stdout.strip().splitlines()[-1])

                self.measure(label, f"django {webs} web", servers, targets,
                             self.flood_trigger(0, sid, n, external=external),
                             procs=a.flood_procs, ack_ms=a.ack_ms)
            finally:
                self.stop_all()
                self.pg_drop(db)
    def w_scalebusy(self) -> None:
        """Busy meeting across two web processes, the run in a worker process."""
        a = self.args
        print("[scale] busy meeting: 2 web processes + worker, Redis + PostgreSQL", flush=True)
        env, db = self.pg_env("scalebusy", SCRIPTED_TOKENS_PER_SECOND="50")
        try:
            fx = self.fixtures(env, "prepare", "--sessions", "1", "--workflow", "bench-parallel",
                               "--max-tokens", str(a.busy_tokens))
            worker = self.start("worker", [PY, "manage.py", "run_worker", "--max-runs", "1000"],
                                env, None)
            servers = [self.django_server(env, name=f"web{i}") for i in range(2)]
            sid = fx["sessions"][0]
            nv = a.busy_viewers
            targets = [{"url": f"ws://127.0.0.1:{s.port}/ws/sessions/{sid}/", "session": sid,
                        "count": nv // 2, "cookie": fx["cookie"], "starter": i == 0}
                       for i, s in enumerate(servers)]
            self.measure("scale busy", "django 2 web+worker", [*servers, worker], targets,
                         self.run_trigger(env, [sid], 120), procs=a.procs)
        finally:
            self.stop_all()
            self.pg_drop(db)


# ----------------------------------------------------------------------------- output


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


HEADER = (f"{'workload':<12} {'system':<22} {'viewers':>7} {'events':>10} {'lost':>5} {'dup':>4} "
          f"{'events/s':>10} {'frames/s':>9} {'MB/s':>6} {'p50':>5} {'p95':>5} {'p99':>5} "
          f"{'max ms':>7} {'srv CPU%':>8} {'srv RSS MB':>10} {'cli CPU%':>8} {'oth CPU%':>8}")


def row(r: Result) -> str:
    return (f"{r.workload:<12} {r.system:<22} {r.viewers:>7} {fmt(r.events):>10} {r.lost:>5} "
            f"{r.dups:>4} {fmt(r.ev_s):>10} {fmt(r.frames_s):>9} {fmt(r.mb_s, 1):>6} "
            f"{fmt(r.p50):>5} {fmt(r.p95):>5} {fmt(r.p99):>5} {fmt(r.max_ms):>7} "
            f"{fmt(r.server_cpu):>8} {fmt(r.server_rss_mb, 1):>10} {fmt(r.client_cpu):>8} "
            f"{fmt(r.other_cpu):>8}"
            + (f"  {json.dumps(r.extra)}" if r.extra else ""))


def ratios(results: list[Result]) -> list[str]:
    lines = []
    refs = {r.workload: r for r in results if r.system == "reference"}
    for r in results:
        ref = refs.get(r.workload) or (refs.get("flood") if r.workload.startswith(("flood", "scale flood")) else None)
        if ref is None or r.system == "reference":
            continue

        def q(a: float | None, b: float | None) -> str:
            return f"{a / b:.2f}x" if a is not None and b else "-"

        if r.workload == "idle":
            kb, ref_kb = r.extra.get("kb_per_socket"), ref.extra.get("kb_per_socket")
            lines.append(f"{r.workload:<12} {r.system:<22} KB/socket {kb} vs {ref_kb} ({q(kb, ref_kb)})")
            continue
        lines.append(
            f"{r.workload:<12} {r.system:<22} events/s {q(r.ev_s, ref.ev_s)}  p50 {q(r.p50, ref.p50)}"
            f"  p99 {q(r.p99, ref.p99)}  frames/s {q(r.frames_s, ref.frames_s)}"
            f"  srv CPU {q(r.server_cpu, ref.server_cpu)}  srv RSS {q(r.server_rss_mb, ref.server_rss_mb)}"
        )
    for workload in ("scale flood", "scale flood cap"):
        scale = {r.system: r for r in results if r.workload == workload}
        one, two = scale.get("django 1 web"), scale.get("django 2 web")
        if one and two and one.ev_s:
            lines.append(f"{workload:<16} 2 web / 1 web events/s = {two.ev_s / one.ev_s:.2f}x")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="flood,busy,many,idle,replay,scale,levers")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke)")
    parser.add_argument("--flood-viewers", type=int, default=100)
    parser.add_argument("--flood-seconds", type=float, default=5)
    parser.add_argument("--window", type=int, default=200, help="flood: events beyond the slowest ack")
    parser.add_argument("--chunk", type=int, default=200)
    parser.add_argument("--ack-ms", type=float, default=20)
    parser.add_argument("--flood-procs", type=int, default=1, help="load processes for the flood")
    parser.add_argument("--procs", type=int, default=2, help="load processes for the other workloads")
    parser.add_argument("--slow-readers", type=int, default=5)
    parser.add_argument("--busy-viewers", type=int, default=1000)
    parser.add_argument("--busy-tokens", type=int, default=400)
    parser.add_argument("--many-sessions", type=int, default=200)
    parser.add_argument("--many-viewers", type=int, default=5)
    parser.add_argument("--many-tokens", type=int, default=240)
    parser.add_argument("--idle-sockets", type=int, default=5000)
    parser.add_argument("--web-cpu-cap", type=float, default=0.1,
                        help="scale: also measure with each web process held to this fraction of "
                        "a core (cgroup v1 cpu quota; skipped where not writable; 0: off)")
    parser.add_argument("--agents-n", default="", help="agents: only these N (comma-separated)")
    parser.add_argument("--agents-start", type=int, default=25, help="agents: first N of the search")
    parser.add_argument("--agents-max", type=int, default=3200)
    parser.add_argument("--agents-refine", type=int, default=2, help="agents: bisection steps")
    parser.add_argument("--agents-tokens", type=int, default=750, help="agents: tokens per agent")
    parser.add_argument("--ingest-seconds", type=float, default=5)
    parser.add_argument("--replay-browser-events", type=int, default=100_000)
    parser.add_argument("--idle-variants", action="store_true", help="also ws-sansio and daphne")
    parser.add_argument("--replay-events", type=int, default=10000)
    parser.add_argument("--profile", default="", help="directory: py-spy raw profiles of servers")
    parser.add_argument("--profile-reference", action="store_true")
    parser.add_argument("--keep-db", action="store_true",
                        help="agents: keep each trial's PostgreSQL database (for bench/start_timeline.sql)")
    parser.add_argument("--profile-idle", action="store_true",
                        help="profile: keep samples of waiting threads (time spent on the database)")
    parser.add_argument("--profile-seconds", type=int, default=0,
                        help="profile: only the first S seconds of each measurement (a run's start)")
    parser.add_argument("--profile-gil", action="store_true",
                        help="profile: only samples of the thread holding the GIL (py-spy --gil)")
    parser.add_argument("--quiet-wait", type=float, default=10,
                        help="before each measurement wait up to this many s for a quiet machine")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the Django processes (repeatable)")
    parser.add_argument("--parse", choices=("regex", "json"), default="regex")
    parser.add_argument("--json", default=str(ROOT / "var" / "bench" / "last.json"))
    args = parser.parse_args()
    if args.quick:
        args.flood_viewers, args.flood_seconds, args.busy_viewers = 10, 1.0, 20
        args.busy_tokens, args.many_sessions, args.many_tokens = 20, 4, 12
        args.idle_sockets, args.replay_events, args.slow_readers = 100, 500, 2
        args.agents_n, args.agents_tokens, args.ingest_seconds = args.agents_n or "4", 40, 1.0
    bench = Bench(args)
    started = time.time()
    print(f"bench: {time.strftime('%Y-%m-%d %H:%M:%S')}, {os.cpu_count()} cores, python "
          f"{sys.version.split()[0]}, work dir {bench.work}", flush=True)
    print("  " + HEADER, flush=True)
    try:
        for name in args.only.split(","):
            getattr(bench, f"w_{name.strip()}")()
    finally:
        bench.stop_all()
    print(f"\nresults ({time.time() - started:.0f} s)\n  " + HEADER)
    for r in bench.results:
        print("  " + row(r))
    print("\nratio to the reference server (same run, same clients):")
    for line in ratios(bench.results):
        print("  " + line)
    for line in bench.summary_lines:
        print("  " + line)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([r.__dict__ for r in bench.results], indent=1))
    print(f"\nwritten: {out}")
    shutil.rmtree(bench.work, ignore_errors=True)


if __name__ == "__main__":
    main()
