"""Fault injection against real processes: does the product keep its promises when things break?

    .venv/bin/python bench/faults.py                         # every scenario, report + JSON
    .venv/bin/python bench/faults.py --only redis,web-kill   # some of them
    .venv/bin/python bench/faults.py --quick                 # the sizes the CI tests use
    .venv/bin/python bench/faults.py --json var/faults.json  # also write the figures

Scenarios (each starts its own processes on free ports, a throwaway PostgreSQL database and,
where it needs one, a private ``redis-server``; everything is stopped and dropped at the end):

  redis         Redis restarted mid-run (private redis-server, SIGKILL, no persistence: the
                restarted server has lost every group membership), viewers on two web
                processes; also a client connecting *during* the outage.
  redis-blip    The link to Redis reset for a few seconds (TCP proxy; Redis keeps its data).
  web-kill      One of two web processes SIGKILLed mid-stream; its viewers reconnect to the other.
  worker-kill   The run's worker SIGKILLed mid-run; a second worker takes over (viewers watch).
  slow          A viewer that stops reading while events flood, under daphne and uvicorn: other
                viewers' latency, the 4409 close, server memory, catch-up by replay.
  postgres      PostgreSQL unreachable for a few seconds mid-run (TCP proxy in front of it).
  takeover-test Runs tests/workflows/test_takeover.py's real-process test and quotes its line.

Every viewer is a ``websockets`` client that checks each logged event's ``seq`` (no gap, no
duplicate), reconnects with ``?last_seq=N`` after any close (to the other web process if its
own is gone, as a load balancer would), and folds what it received with ``realtime.state.fold``;
at the end its transcript is compared with the stored ``Message`` rows and with a fresh
snapshot from the server. The CI tests in tests/reliability call the same functions with small
sizes and assert on the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import psycopg  # noqa: E402
import yaml  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus  # noqa: E402

from realtime.state import fold  # noqa: E402  (pure Python, no Django needed)
from tests import procs  # noqa: E402
from tests.reliability.proxy import TcpProxy  # noqa: E402

PG_PORT = 5432
PG_ADMIN = f"host=127.0.0.1 port={PG_PORT} user=postgres dbname=postgres"
SHARED_REDIS_PORT = 6379
SHARED_REDIS_DB = 12
TERMINAL_EVENTS = ("execution:completed", "execution:failed", "execution:stopped")
PASSWORD = "pw-faults-123"


def log(*parts: Any) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


# ============================================================================ services


class ThrowawayDatabase:
    """A PostgreSQL database for one run, created and dropped with psycopg (fails loudly if
    PostgreSQL is down). ``query`` reads it directly, never through a proxy."""

    def __init__(self, prefix: str = "faults") -> None:
        self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        self._conn: psycopg.Connection | None = None

    def url(self, port: int = PG_PORT) -> str:
        return f"postgres://postgres@127.0.0.1:{port}/{self.name}"

    def query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                f"host=127.0.0.1 port={PG_PORT} user=postgres dbname={self.name}",
                autocommit=True, connect_timeout=5,
            )
        return self._conn.execute(sql, params).fetchall()

    def drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class PrivateRedis:
    """Our own ``redis-server`` (no persistence): the one we may kill and restart."""

    def __init__(self, workdir: Path, group: procs.ProcessGroup) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.port = procs.free_port()
        self.workdir = workdir
        self.group = group
        self.proc: procs.Proc | None = None
        self.starts = 0
        self.start()

    def start(self) -> None:
        self.starts += 1
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)]
        self.proc = self.group.start(
            args, env=procs.child_env(), log_path=self.workdir / f"redis-{self.starts}.log",
            ready=lambda: procs.port_open(self.port), name=f"redis-server-{self.starts}",
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()


def check_shared_redis() -> None:
    """Fail loudly (never skip) when the shared Redis is down."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=SHARED_REDIS_PORT, socket_connect_timeout=5)
    try:
        client.ping()
    finally:
        client.close()


# ============================================================================ workflows


def agent(node_id: str, *deps: str, tokens: int, thinking: bool = False, agent_id: str = "") -> dict[str, Any]:
    return {"id": node_id, "type": "agent", "agent": agent_id or f"a_{node_id}",
            "depends_on": list(deps), "options": {"max_tokens": tokens, "thinking": thinking}}


def workflow(slug: str, *nodes: dict[str, Any]) -> dict[str, Any]:
    agents = {
        node["agent"]: {"name": node["id"].title(), "role": "Talks", "model": "scripted-small",
                        "provider": "scripted", "prompt": f"You talk about {node['id']} plans and risks."}
        for node in nodes if node["type"] == "agent"
    }
    return {"slug": slug, "name": slug, "description": "fault injection", "agents": agents,
            "nodes": list(nodes)}


def chain_workflow(tokens: int = 40) -> dict[str, Any]:
    """brief -> (left, right in parallel) -> wrap: streaming, thinking, a parallel stage."""
    return workflow(
        "fault-chain",
        agent("brief", tokens=tokens // 2, thinking=True),
        agent("left", "brief", tokens=tokens),
        agent("right", "brief", tokens=tokens),
        agent("wrap", "left", "right", tokens=tokens // 2),
    )


# ============================================================================ processes


@dataclass
class Web:
    proc: procs.Proc
    port: int
    kind: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def rss(self) -> int:
        try:
            return psutil.Process(self.proc.pid).memory_info().rss
        except psutil.Error:
            return 0


_SETUP = textwrap.dedent(
    """
    import json
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.test import Client
    from sessions_app import services
    spec = json.load(open({spec!r}))
    settings.WORKFLOW_DIR = spec["workflow_dir"]
    User = get_user_model()
    users, cookies = {{}}, {{}}
    for name in spec["users"]:
        user = User.objects.filter(username=name).first() or User.objects.create_user(name, password={password!r})
        users[name] = user
        client = Client()
        client.force_login(user)
        cookies[name] = client.cookies["sessionid"].value
    sessions = []
    for item in spec["sessions"]:
        session = services.session_create(owner=users[item["owner"]], workflow_slug=item["workflow"],
                                          title=item.get("title", ""))
        for name in item.get("shares", []):
            services.session_share(session=session, user=users[name], can_control=False)
        if item.get("start"):
            with transaction.atomic():
                services.session_start(session_id=str(session.pk), user=users[item["owner"]])
        sessions.append(str(session.pk))
    print("SETUP" + json.dumps({{"cookies": cookies, "sessions": sessions}}))
    """
)


# What the command line's --layer/--redis-options set for every cluster of a run.
CLUSTER_DEFAULTS: dict[str, str] = {}


class Cluster:
    """Web processes (daphne or uvicorn), ``run_worker`` processes, Redis, a throwaway
    PostgreSQL database, optional TCP proxies in front of Redis and PostgreSQL."""

    def __init__(
        self,
        workdir: Path,
        *,
        redis: str = "shared",  # "shared" (127.0.0.1:6379/12) or "private" (our redis-server)
        redis_proxy: bool = False,
        pg_proxy: bool = False,
        env: dict[str, str] | None = None,
        redis_options: str | None = None,  # query string for REDIS_URL, e.g. "max_connections=1000"
        layer: str | None = None,  # CHANNEL_LAYER: "pubsub" (the project's default) or "core"
    ) -> None:
        redis_options = CLUSTER_DEFAULTS.get("redis_options", "") if redis_options is None else redis_options
        layer = CLUSTER_DEFAULTS.get("layer", "pubsub") if layer is None else layer
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.group = procs.ProcessGroup()
        self.webs: list[Web] = []
        self.workers: list[procs.Proc] = []
        self.proxies: list[TcpProxy] = []
        self.redis: PrivateRedis | None = None
        self.db: ThrowawayDatabase | None = None
        self.redis_mode = redis
        self.redis_proxy_on = redis_proxy
        self.pg_proxy_on = pg_proxy
        self.extra_env = env or {}
        self.redis_options = redis_options
        if layer not in ("core", "pubsub"):
            raise ValueError(layer)
        self.layer = layer
        self.redis_proxy: TcpProxy | None = None
        self.pg_proxy: TcpProxy | None = None
        self.env: dict[str, str] = {}
        self.workflow_dir = workdir / "workflows"
        self.workflow_dir.mkdir(exist_ok=True)
        self._names = itertools.count(1)  # process names (thread-safe enough: next() is atomic)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Cluster:
        try:
            self.db = ThrowawayDatabase()
            if self.redis_mode == "private":
                self.redis = PrivateRedis(self.workdir, self.group)
                redis_port, redis_db = self.redis.port, 0
            else:
                check_shared_redis()
                redis_port, redis_db = SHARED_REDIS_PORT, SHARED_REDIS_DB
            if self.redis_proxy_on:
                self.redis_proxy = TcpProxy(redis_port).start()
                self.proxies.append(self.redis_proxy)
                redis_port = self.redis_proxy.port
            pg_port = PG_PORT
            if self.pg_proxy_on:
                self.pg_proxy = TcpProxy(PG_PORT).start()
                self.proxies.append(self.pg_proxy)
                pg_port = self.pg_proxy.port
            settings = {
                "DATABASE_URL": self.db.url(pg_port),
                "REDIS_URL": f"redis://127.0.0.1:{redis_port}/{redis_db}"
                + (f"?{self.redis_options}" if self.redis_options else ""),
                "WORKFLOW_EXECUTOR": "worker",
                "WORKER_LEASE_SECONDS": "2",
                "WORKER_POLL_SECONDS": "0.2",
                "SCRIPTED_TOKENS_PER_SECOND": "20",
                "TOKEN_COALESCE_MS": "50",
                "VAR_DIR": str(self.workdir),
                "LOG_LEVEL": "WARNING",
                "WHITENOISE_USE_FINDERS": "0",
                "CHANNEL_LAYER": self.layer,
            }
            settings.update(self.extra_env)
            self.env = procs.child_env(**settings)
            procs.run_manage(["migrate", "--noinput", "-v", "0"], env=self.env, timeout=180)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.group.stop_all()
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                proxy.stop()
        if self.db is not None:
            with contextlib.suppress(Exception):
                self.db.drop()
            self.db = None

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            log("failure; process logs:\n" + self.group.logs(2000))
        self.stop()

    # ------------------------------------------------------------------ processes
    def add_web(self, kind: str = "daphne", *, app: str = "config.asgi:application", **env: str) -> Web:
        n = next(self._names)
        port = procs.free_port()
        if kind == "daphne":
            args = procs.daphne_args(port, app)
        elif kind == "uvicorn":
            args = [str(Path(procs.PYTHON).parent / "uvicorn"), app,
                    "--host", "127.0.0.1", "--port", str(port), "--ws", "websockets",
                    "--no-access-log", "--log-level", "warning"]
        else:
            raise ValueError(kind)
        name = f"{kind}-{n}"
        proc = self.group.start(
            args, env={**self.env, **env}, log_path=self.workdir / f"{name}.log",
            ready=lambda: procs.port_open(port), timeout=60, name=name,
        )
        web = Web(proc, port, kind)
        self.webs.append(web)
        return web

    def start_processes(self, webs: Iterable[str] = ("daphne", "daphne"),
                        workers: Iterable[str] = ("worker",), **env: str) -> tuple[list[Web], list[procs.Proc]]:
        """Start web processes (by kind) and workers (by name) at once; returns them in order."""
        from concurrent.futures import ThreadPoolExecutor

        webs, workers = list(webs), list(workers)
        with ThreadPoolExecutor(max(1, len(webs) + len(workers))) as pool:
            web_futures = [pool.submit(self.add_web, kind, **env) for kind in webs]
            worker_futures = [pool.submit(self.add_worker, name) for name in workers]
            started = [f.result() for f in web_futures], [f.result() for f in worker_futures]
        self.webs = started[0] + [w for w in self.webs if w not in started[0]]
        return started

    def add_worker(self, name: str | None = None) -> procs.Proc:
        name = name or f"worker-{next(self._names)}"
        path = self.workdir / f"{name}.log"
        proc = self.group.start(
            procs.manage_args("run_worker", "--owner", name), env=self.env, log_path=path,
            ready=lambda: procs.log_contains(path, "ready"), timeout=60, name=name,
        )
        self.workers.append(proc)
        return proc

    def manage_shell(self, code: str, timeout: float = 120) -> str:
        return procs.run_manage(["shell", "-c", code], env=self.env, timeout=timeout).stdout

    # ------------------------------------------------------------------ data
    def setup(self, *, users: list[str], sessions: list[dict[str, Any]],
              workflows: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """Users (with login cookies), workflows and sessions; returns cookies and session ids."""
        for definition in workflows:
            (self.workflow_dir / f"{definition['slug']}.yaml").write_text(
                yaml.safe_dump(definition, sort_keys=False)
            )
        spec = self.workdir / f"setup-{uuid.uuid4().hex[:6]}.json"
        spec.write_text(json.dumps({"workflow_dir": str(self.workflow_dir), "users": users,
                                    "sessions": sessions}))
        out = self.manage_shell(_SETUP.format(spec=str(spec), password=PASSWORD), timeout=300)
        line = next(line for line in out.splitlines() if line.startswith("SETUP"))
        return json.loads(line[len("SETUP"):])

    def start_runs(self, session_ids: list[str]) -> None:
        code = (
            "from django.db import transaction\nfrom sessions_app import services\n"
            "from sessions_app.models import Session\n"
            f"for sid in {session_ids!r}:\n"
            "    s = Session.objects.get(pk=sid)\n"
            "    with transaction.atomic():\n"
            "        services.session_start(session_id=sid, user=s.owner)\n"
        )
        self.manage_shell(code)

    def session(self, sid: str) -> dict[str, Any]:
        assert self.db is not None
        rows = self.db.query(
            "SELECT status, last_seq, error, input_tokens, output_tokens, cost_usd, lease_owner, "
            "run_requested FROM sessions_app_session JOIN realtime_sessionlog ON session_id = id "
            "WHERE id = %s", (sid,))
        keys = ("status", "last_seq", "error", "input_tokens", "output_tokens", "cost_usd",
                "lease_owner", "run_requested")
        return dict(zip(keys, rows[0], strict=True))

    def wait_finished(self, sids: list[str], timeout: float) -> dict[str, str]:
        def done() -> dict[str, str] | None:
            statuses = {sid: self.session(sid)["status"] for sid in sids}
            finished = all(s in ("completed", "failed", "stopped") for s in statuses.values())
            return statuses if finished else None

        return procs.wait_until(done, timeout=timeout, interval=0.2, what="end of the runs")

    def stored_events(self, sid: str) -> list[tuple[int, str, str | None, dict[str, Any]]]:
        assert self.db is not None
        return self.db.query(
            "SELECT seq, event, node_id, data FROM realtime_sessionevent WHERE session_id = %s "
            "ORDER BY seq", (sid,))

    def messages(self, sid: str) -> list[dict[str, Any]]:
        assert self.db is not None
        rows = self.db.query(
            "SELECT m.id, m.kind, m.node_id, m.round, m.text, m.thinking, m.is_final, u.username "
            "FROM sessions_app_message m LEFT JOIN auth_user u ON u.id = m.user_id "
            "WHERE m.session_id = %s ORDER BY m.id", (sid,))
        keys = ("id", "kind", "node_id", "round", "text", "thinking", "is_final", "user")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def node_rows(self, sid: str) -> dict[str, dict[str, Any]]:
        assert self.db is not None
        rows = self.db.query(
            "SELECT node_id, status, rounds, output, started_at, finished_at, error "
            "FROM sessions_app_nodestate WHERE session_id = %s", (sid,))
        return {r[0]: {"status": r[1], "rounds": r[2], "output": r[3], "started_at": r[4],
                       "finished_at": r[5], "error": r[6]} for r in rows}

    def usage_rows(self, sid: str) -> list[tuple[str, int, int, int, Any]]:
        assert self.db is not None
        return self.db.query(
            "SELECT node_id, round, input_tokens, output_tokens, cost_usd "
            "FROM sessions_app_tokenusage WHERE session_id = %s ORDER BY node_id, round", (sid,))

    def log_problems(self) -> list[str]:
        """One line per traceback in the logs of our processes: the message logged before it
        and the exception it ended with."""
        found = []
        for proc in self.group.procs:
            found.extend(f"{proc.name}: {line}" for line in tracebacks(proc.log()))
        return found

    def log_summary(self) -> dict[str, int]:
        """Tracebacks in every process log, counted by (logged message, final exception)."""
        counts: dict[str, int] = {}
        for line in self.log_problems():
            name, _, rest = line.partition(": ")
            key = f"{re.sub(r'-?[0-9]+$', '', name)}: {rest}"
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def tracebacks(text: str) -> list[str]:
    """``<message logged before the traceback> -> <final exception line>`` for each traceback
    (chained tracebacks count once; session ids and ports are blanked so lines group)."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("Traceback (most recent call last):"):
            before = next((lines[j] for j in range(i - 1, max(-1, i - 4), -1)
                           if lines[j].strip() and not lines[j].startswith((" ", "^"))), "")
            j = i + 1
            final = ""
            while j < len(lines):
                line = lines[j]
                if line.startswith("Traceback (most recent call last):"):
                    pass
                elif line and not line.startswith((" ", "^")) and not line.startswith(
                        ("The above exception", "During handling")):
                    final = line
                    if j + 1 >= len(lines) or not (
                        lines[j + 1].startswith(("The above", "During handling"))
                        or (not lines[j + 1].strip()
                        and j + 2 < len(lines) and lines[j + 2].startswith(("The above", "During handling")))
                    ):
                        break
                j += 1
            text_ = f"{before} -> {final}"
            text_ = _UUID.sub("<id>", text_)
            text_ = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:<port>", text_)
            text_ = re.sub(r"\('127\.0\.0\.1', \d+\)", "('127.0.0.1', <port>)", text_)
            out.append(text_[:300])
            i = j + 1
            continue
        i += 1
    return out


# ============================================================================ viewers


def _ts(raw: str) -> float:
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp()


def unpack(frame: dict[str, Any]) -> list[dict[str, Any]]:
    return frame["data"]["events"] if frame["event"] == "batch" else [frame]


async def _small_socket(port: int, rcvbuf: int) -> Any:
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


LIVE_VIEWERS: set[Viewer] = set()  # started and not stopped (stopped when a scenario ends)


def stopping_viewers(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a scenario: whatever happens, the viewers it started are stopped."""
    import functools

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        finally:
            await stop_viewers(list(LIVE_VIEWERS))

    return wrapper


@dataclass(eq=False)
class Viewer:
    """A browser tab, as far as delivery goes: seq bookkeeping, reconnect with last_seq,
    fail-over to the next server, heartbeat ping, fold of everything applied."""

    name: str
    servers: list[Web]
    session_id: str
    cookie: str
    server_index: int = 0
    max_queue: int = 16
    rcvbuf: int = 0  # > 0: a small socket receive buffer (a slow reader fills it fast)
    compression: str | None = "deflate"  # None: no permessage-deflate
    heartbeat: float = 15.0
    last_seq: int = -1
    base_state: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    dups: int = 0
    gaps: int = 0
    resyncs: int = 0
    reconnects: int = 0
    failed_connects: int = 0
    closes: list[tuple[float, int | None, str]] = field(default_factory=list)
    latencies: list[tuple[float, int, float]] = field(default_factory=list)  # (recv wall, seq, latency)
    replies: list[dict[str, Any]] = field(default_factory=list)
    connected_at: list[tuple[float, int]] = field(default_factory=list)  # (wall, server port)
    terminal: bool = False

    def __post_init__(self) -> None:
        self.reading = asyncio.Event()
        self.reading.set()
        self.stopping = False
        self.changed = asyncio.Event()
        self.ws: Any = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    # ------------------------------------------------------------------ control
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"viewer-{self.name}")
        LIVE_VIEWERS.add(self)

    async def stop(self) -> None:
        LIVE_VIEWERS.discard(self)
        self.stopping = True
        self.reading.set()
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    async def send(self, cmd: str, data: dict[str, Any] | None = None, cid: str | None = None) -> bool:
        ws = self.ws
        if ws is None:
            return False
        try:
            await ws.send(json.dumps({"cmd": cmd, "data": data or {}, "id": cid or uuid.uuid4().hex[:8]}))
            return True
        except Exception:
            return False

    async def wait_seq(self, seq: int, timeout: float) -> bool:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while self.last_seq < seq:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
        return True

    # ------------------------------------------------------------------ loop
    async def _run(self) -> None:
        attempt = 0
        while not self.stopping:
            web = self.servers[self.server_index % len(self.servers)]
            query = f"?last_seq={self.last_seq}" if self.last_seq >= 0 else ""
            url = f"{web.ws}/ws/sessions/{self.session_id}/{query}"
            code: int | None = None
            reason = ""
            opened = False
            extra: dict[str, Any] = {}
            try:
                if self.rcvbuf:
                    extra["sock"] = await _small_socket(web.port, self.rcvbuf)
                async with connect(
                    url, additional_headers={"Cookie": f"sessionid={self.cookie}", "Origin": web.base},
                    open_timeout=10, max_size=None, max_queue=self.max_queue, ping_interval=None,
                    close_timeout=2, compression=self.compression, **extra,
                ) as ws:
                    opened = True
                    self.ws = ws
                    self.connected_at.append((time.time(), web.port))
                    self.connected.set()
                    if self.closes:
                        self.reconnects += 1
                    attempt = 0
                    beat = asyncio.get_running_loop().create_task(self._heartbeat(ws))
                    try:
                        while True:
                            if not self.reading.is_set():
                                await self.reading.wait()
                            raw = await ws.recv()
                            if self._on_frame(raw):  # a gap: reconnect with last_seq
                                await ws.close(1000)
                    finally:
                        beat.cancel()
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else 1006
                reason = exc.rcvd.reason if exc.rcvd is not None else ""
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                reason = f"connect failed: {exc.__class__.__name__}: {exc}"[:200]
                if isinstance(exc, InvalidStatus):
                    code = exc.response.status_code
            except asyncio.CancelledError:
                raise
            finally:
                self.ws = None
                self.connected.clear()
            if self.stopping:
                return
            self.closes.append((time.time(), code, reason))
            if not opened:
                self.failed_connects += 1
                self.server_index += 1  # a load balancer would send us to another process
            attempt += 1
            await asyncio.sleep(min(0.1 * 2 ** min(attempt, 5), 2.0))

    async def _heartbeat(self, ws: Any) -> None:
        n = 0
        while True:
            await asyncio.sleep(self.heartbeat)
            n += 1
            with contextlib.suppress(Exception):
                # as the page does: acknowledge what was applied (a stalled reader -> 4409)
                await ws.send(json.dumps({"cmd": "ping", "data": {"last_seq": max(self.last_seq, 0)},
                                          "id": f"hb{n}"}))

    def _on_frame(self, raw: str | bytes) -> bool:
        """Apply one frame; True if a gap was seen (the caller reconnects)."""
        now = time.time()
        frame = json.loads(raw)
        gap = False
        for env in unpack(frame):
            name = env["event"]
            if name == "snapshot":
                data = env["data"]
                if self.last_seq < 0 or data["resync"]:
                    self.resyncs += int(bool(data["resync"]))
                    self.base_state = data["state"]
                    self.events = []
                    self.last_seq = data["last_seq"]
                    self.terminal = data["state"]["status"] in ("completed", "failed", "stopped")
                continue
            seq = env["seq"]
            if seq is None:
                if name in ("ack", "error"):
                    self.replies.append(env)
                continue
            if seq <= self.last_seq:
                self.dups += 1
                continue
            if seq != self.last_seq + 1:
                self.gaps += seq - self.last_seq - 1
                gap = True
                break
            self.last_seq = seq
            self.events.append(env)
            self.latencies.append((now, seq, now - _ts(env["timestamp"])))
            if name in TERMINAL_EVENTS:
                self.terminal = True
        self.changed.set()
        return gap

    # ------------------------------------------------------------------ results
    def state(self) -> dict[str, Any]:
        return fold(self.events, self.base_state)


async def fresh_snapshot(web: Web, session_id: str, cookie: str) -> dict[str, Any]:
    """The snapshot a new viewer gets now (the server's fold of the whole log)."""
    async with connect(
        f"{web.ws}/ws/sessions/{session_id}/",
        additional_headers={"Cookie": f"sessionid={cookie}", "Origin": web.base},
        open_timeout=10, max_size=None,
    ) as ws:
        async with asyncio.timeout(20):
            while True:
                # The snapshot may come inside a batch (with a presence frame, say).
                for env in unpack(json.loads(await ws.recv())):
                    if env["event"] == "snapshot":
                        return env["data"]


def transcript_of_state(state: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Per node (and "user:<name>"), the texts of its messages in order."""
    out: dict[str, list[tuple[str, str]]] = {}
    for message in state["messages"]:
        key = message["node_id"] if message["kind"] == "agent" else f"user:{message['user']}"
        out.setdefault(key, []).append((message["text"], message["thinking"]))
    return out


def transcript_of_rows(rows: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        if row["kind"] == "agent" and not row["text"] and not row["thinking"]:
            continue  # a node that never streamed: no message in the room either
        key = row["node_id"] if row["kind"] == "agent" else f"user:{row['user']}"
        out.setdefault(key, []).append((row["text"], row["thinking"]))
    return out


def check_viewers(
    cluster: Cluster, viewers: list[Viewer], sids: list[str], snapshots: dict[str, dict[str, Any]],
    *, transcripts: bool = True,
) -> dict[str, Any]:
    """Per viewer: contiguous seqs, nothing missing, transcript = rows = server snapshot
    (``transcripts=False``: seqs only, for floods without Message rows)."""
    heads = {sid: cluster.session(sid)["last_seq"] for sid in sids}
    rows = {sid: transcript_of_rows(cluster.messages(sid)) for sid in sids} if transcripts else {}
    problems: list[str] = []
    for v in viewers:
        if v.last_seq != heads[v.session_id]:
            problems.append(f"{v.name}: at seq {v.last_seq}, log head {heads[v.session_id]}")
        if v.dups or v.gaps:
            problems.append(f"{v.name}: {v.dups} duplicates, {v.gaps} gaps")
        if not transcripts:
            continue
        state = v.state()
        if transcript_of_state(state) != rows[v.session_id]:
            problems.append(f"{v.name}: transcript differs from the Message rows")
        snap = snapshots.get(v.session_id)
        if snap is not None and snap["last_seq"] == v.last_seq and state != snap["state"]:
            problems.append(f"{v.name}: folded state differs from the server snapshot")
    return {
        "viewers": len(viewers),
        "heads": heads,
        "problems": problems,
        "dups": sum(v.dups for v in viewers),
        "gaps": sum(v.gaps for v in viewers),
        "resyncs": sum(v.resyncs for v in viewers),
        "reconnects": sum(v.reconnects for v in viewers),
        "close_codes": sorted({c for v in viewers for _, c, _ in v.closes if c is not None}),
    }


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


async def start_viewers(viewers: list[Viewer], timeout: float = 30) -> None:  # noqa: ASYNC109
    for v in viewers:
        v.start()
    deadline = time.monotonic() + timeout
    while any(v.last_seq < 0 for v in viewers):
        if time.monotonic() > deadline:
            raise TimeoutError("viewers did not get their snapshots")
        await asyncio.sleep(0.05)


async def wait_viewers(viewers: list[Viewer], heads: dict[str, int], timeout: float) -> None:  # noqa: ASYNC109
    await asyncio.gather(*(v.wait_seq(heads[v.session_id], timeout) for v in viewers))


async def stop_viewers(viewers: list[Viewer]) -> None:
    await asyncio.gather(*(v.stop() for v in viewers), return_exceptions=True)


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


# ============================================================================ scenarios


def _latency_between(viewers: list[Viewer], since: float, until: float = 1e18) -> list[float]:
    """Latencies of the events *published* (envelope timestamp) in [since, until)."""
    return [lat for v in viewers for recv, _, lat in v.latencies if since <= recv - lat < until]


def _lat_summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_ms": ms(pct(values, 50)), "p99_ms": ms(pct(values, 99)),
            "max_ms": ms(max(values)) if values else None}


async def _wait_progress(viewers: list[Viewer], seq: int, timeout: float) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while any(v.last_seq < seq for v in viewers):
        if time.monotonic() > deadline:
            raise TimeoutError(f"viewers did not reach seq {seq}: {[v.last_seq for v in viewers]}")
        await asyncio.sleep(0.05)


async def _say(viewer: Viewer, text: str, cid: str | None = None) -> None:
    if not await viewer.send("user_input", {"text": text}, cid):
        raise RuntimeError(f"{viewer.name} could not send")


def _delivery_times(viewers: list[Viewer], text: str, since: float) -> list[float]:
    """Seconds from ``since`` until each viewer had the user_message with ``text``."""
    out = []
    for v in viewers:
        for (recv, _, _), env in zip(v.latencies[-len(v.events):], v.events, strict=False):
            if env["event"] == "user_message" and env["data"]["text"] == text:
                out.append(recv - since)
    return out


def _watchers(webs: list[Web], sids: list[str], cookie: str, per_web: int) -> list[Viewer]:
    return [
        Viewer(f"s{i}-w{w}-{k}", webs, sid, cookie, server_index=w)
        for i, sid in enumerate(sids) for w in range(len(webs)) for k in range(per_web)
    ]


async def _watched_runs(cluster: Cluster, webs: list[Web], *, tokens: int, sessions: int,
                        per_web: int) -> tuple[list[str], str, list[Viewer]]:
    """``sessions`` fault-chain runs started, each watched by ``per_web`` viewers per web process:
    (session ids, alice's cookie, the viewers)."""
    data = cluster.setup(
        users=["alice"], workflows=[chain_workflow(tokens)],
        sessions=[{"owner": "alice", "workflow": "fault-chain"} for _ in range(sessions)],
    )
    sids, cookie = data["sessions"], data["cookies"]["alice"]
    viewers = _watchers(webs, sids, cookie, per_web)
    await start_viewers(viewers)
    await in_thread(cluster.start_runs, sids)
    return sids, cookie, viewers


@stopping_viewers
async def scenario_redis(workdir: Path, *, mode: str = "restart", per_web: int = 3, sessions: int = 2,
                         tokens: int = 60, rate: int = 20, outage: float = 3.0,
                         first_joiner: bool = True) -> dict[str, Any]:
    """Redis restarted (``mode="restart"``: our redis-server SIGKILLed and started again empty,
    every group membership lost) or its link reset (``mode="blip"``: TCP proxy cut, Redis
    keeps its data) while runs stream to viewers on two web processes.

    During the outage a command is sent (stored; its broadcast fails), a viewer joins a
    session already watched on its process ("late joiner") and one joins a session nobody
    watched on its process yet ("first joiner": the process must subscribe while Redis is
    down). After it, a command sent through web 0 is timed to the viewers of web 1, and the
    latency of live events is compared with before the outage."""
    result: dict[str, Any] = {"scenario": f"redis-{mode}", "outage_s": outage}
    with Cluster(workdir, redis="private", redis_proxy=(mode == "blip"),
                 env={"SCRIPTED_TOKENS_PER_SECOND": str(rate)}) as cluster:
        webs, _ = cluster.start_processes()
        data = cluster.setup(
            users=["alice"], workflows=[chain_workflow(tokens)],
            sessions=[{"owner": "alice", "workflow": "fault-chain"}
                      for _ in range(sessions + int(first_joiner))],
        )
        sids, cookie = data["sessions"], data["cookies"]["alice"]
        watched = sids[:sessions]
        lonely = sids[-1] if first_joiner else None  # watched by nobody until the outage
        viewers = _watchers(webs, watched, cookie, per_web)
        await start_viewers(viewers)
        await in_thread(cluster.start_runs, sids)
        await _wait_progress(viewers, 8, 30)
        t_cut = time.time()
        if mode == "restart":
            assert cluster.redis is not None
            cluster.redis.kill()
        else:
            assert cluster.redis_proxy is not None
            cluster.redis_proxy.cut()
        log(f"redis {mode}: cut")
        await asyncio.sleep(outage / 2)
        await _say(viewers[0], "said while Redis was down")
        late = Viewer("late-joiner", webs, sids[0], cookie, server_index=1)
        joiners = [late]
        if lonely is not None:
            joiners.append(Viewer("first-joiner", webs, lonely, cookie, server_index=1))
        for joiner in joiners:
            joiner.start()
        await asyncio.sleep(outage / 2)
        if mode == "restart":
            await in_thread(cluster.redis.start)
        else:
            cluster.redis_proxy.restore()
        t_back = time.time()
        log(f"redis {mode}: back")
        await asyncio.sleep(1.0)
        marker = "said after Redis came back"
        marker_at = time.time()
        await _say(viewers[0], marker)
        statuses = await in_thread(cluster.wait_finished, sids, 60)
        heads = {sid: cluster.session(sid)["last_seq"] for sid in sids}
        everyone = [*viewers, *joiners]
        await wait_viewers(everyone, heads, 15)
        snaps = {sid: await fresh_snapshot(webs[1], sid, cookie) for sid in sids}
        check = check_viewers(cluster, everyone, sids, snaps)
        await stop_viewers(everyone)
        on_web1 = [v for v in viewers if v.session_id == sids[0] and v.server_index == 1] + [late]
        before = _latency_between(viewers, 0, t_cut)
        after = _latency_between(viewers, t_back + 2)
        if lonely is not None:
            first = joiners[-1]
            result["first_joiner"] = {
                "connects": len(first.connected_at), "closes": [c for _, c, _ in first.closes],
                "last_seq": first.last_seq, "head": heads[lonely]}
        result.update(
            statuses=statuses, **check,
            latency_before=_lat_summary(before),
            latency_after=_lat_summary(after),
            command_after_outage_s=round(max(_delivery_times(on_web1, marker, marker_at), default=-1), 3),
        )
        result["ok"] = (not check["problems"] and all(s == "completed" for s in statuses.values()))
    return result


@stopping_viewers
async def scenario_kill(workdir: Path, *, kill_web: bool = True, kill_worker: bool = False,
                        per_web: int = 3, sessions: int = 2, tokens: int = 60, rate: int = 20,
                        server: str = "daphne") -> dict[str, Any]:
    """SIGKILL, mid-stream, one of two web processes (its viewers reconnect with last_seq to
    the other, as behind a load balancer) and/or the worker running the sessions (a second
    worker takes the runs over once the 2 s lease expired).

    Checked: every viewer ends at the log head, no gap, no duplicate, its folded transcript
    equals the Message rows and a fresh snapshot; no completed node started again; one
    usage row per node and round; session totals = sum of usage rows = execution:completed."""
    name = "+".join(n for n, on in (("web-kill", kill_web), ("worker-kill", kill_worker)) if on)
    result: dict[str, Any] = {"scenario": name, "server": server}
    with Cluster(workdir, env={"SCRIPTED_TOKENS_PER_SECOND": str(rate)}) as cluster:
        webs, (worker_a,) = cluster.start_processes((server, server), ("worker-a",))
        sids, cookie, viewers = await _watched_runs(cluster, webs, tokens=tokens, sessions=sessions,
                                                    per_web=per_web)
        t_web = t_worker = None
        victims = [v for v in viewers if v.server_index == 0]
        at_kill: dict[str, int] = {}
        if kill_web:
            await _wait_progress(viewers, 12, 30)
            at_kill = {v.name: v.last_seq for v in victims}
            webs[0].proc.kill()
            t_web = time.time()
            log("web 0 killed")
        before: dict[str, dict[str, dict[str, Any]]] = {}
        if kill_worker:
            def parallel_stage() -> bool:
                return all(
                    sum(1 for n in cluster.node_rows(sid).values() if n["status"] == "running") >= 2
                    for sid in sids
                )

            await in_thread(procs.wait_until, parallel_stage, timeout=30, interval=0.05,
                            what="parallel stage")
            worker_a.kill()
            t_worker = time.time()
            before = {sid: cluster.node_rows(sid) for sid in sids}  # what the dead worker left
            log("worker-a killed")
            cluster.add_worker("worker-b")
        statuses = await in_thread(cluster.wait_finished, sids, 60)
        t_end = time.time()
        heads = {sid: cluster.session(sid)["last_seq"] for sid in sids}
        await wait_viewers(viewers, heads, 20)
        snaps = {sid: await fresh_snapshot(webs[1], sid, cookie) for sid in sids}
        check = check_viewers(cluster, viewers, sids, snaps)
        await stop_viewers(viewers)
        problems = check["problems"]
        for sid in sids:
            problems.extend(_consistency(cluster, sid))
            if kill_worker:
                problems.extend(_takeover_checks(cluster, sid, before[sid]))
        result.update(statuses=statuses, **check)
        if kill_web:
            resumed = [next((t - t_web for t, port in v.connected_at if t > t_web), None) for v in victims]
            resumed = [r for r in resumed if r is not None]
            result["web_kill"] = {
                "moved_viewers": len(resumed), "of": len(victims),
                "reconnect_s_max": round(max(resumed), 2) if resumed else None,
                "events_recovered_per_viewer": round(statistics.mean(
                    sum(1 for recv, seq, _ in v.latencies if seq > at_kill[v.name] and recv > t_web)
                    for v in victims), 1),
            }
        if kill_worker:
            takeover = [
                min((_ts_of(cluster, sid, "interrupted") or t_end) - t_worker for _ in [0])
                for sid in sids
            ]
            result["worker_kill"] = {
                "interrupted_nodes": sorted({n for b in before.values() for n, r in b.items()
                                             if r["status"] == "running"}),
                "completed_before": sorted({n for b in before.values() for n, r in b.items()
                                            if r["status"] == "completed"}),
                "takeover_s_max": round(max(takeover), 2),
                "kill_to_end_s": round(t_end - t_worker, 2),
            }
        result["ok"] = not problems and all(s == "completed" for s in statuses.values())
    return result


def _ts_of(cluster: Cluster, sid: str, error_prefix: str) -> float | None:
    """Wall time of the first node_state_change whose error starts with ``error_prefix``."""
    assert cluster.db is not None
    rows = cluster.db.query(
        "SELECT created_at FROM realtime_sessionevent WHERE session_id = %s AND "
        "event = 'node_state_change' AND data->>'error' LIKE %s ORDER BY seq LIMIT 1",
        (sid, error_prefix + "%"))
    return rows[0][0].timestamp() if rows else None


def _takeover_checks(cluster: Cluster, sid: str, before: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    events = cluster.stored_events(sid)
    starts: dict[str, int] = {}
    for _, name, node, data in events:
        if name == "node_state_change" and data["status"] == "running":
            starts[node] = starts.get(node, 0) + 1
    after = cluster.node_rows(sid)
    for node, row in before.items():
        if row["status"] == "completed":
            if starts.get(node) != 1:
                problems.append(f"{sid[:8]}: completed node {node} started {starts.get(node)} times")
            if after[node]["finished_at"] != row["finished_at"]:
                problems.append(f"{sid[:8]}: completed node {node} was written again")
    usage = cluster.usage_rows(sid)
    keys = sorted((node, rnd) for node, rnd, *_ in usage)
    if keys != sorted((n, 1) for n in before):
        problems.append(f"{sid[:8]}: usage rows {keys}")
    row = cluster.session(sid)
    totals = (sum(u[2] for u in usage), sum(u[3] for u in usage), sum(u[4] for u in usage))
    if (row["input_tokens"], row["output_tokens"], row["cost_usd"]) != totals:
        problems.append(f"{sid[:8]}: session totals differ from the usage rows {totals}")
    done = [d for _, name, _, d in events if name == "execution:completed"]
    if not done or (done[0]["input_tokens"], done[0]["output_tokens"]) != totals[:2]:
        problems.append(f"{sid[:8]}: execution:completed {done} != usage sum {totals}")
    return problems


def _consistency(cluster: Cluster, sid: str) -> list[str]:
    """The stored rows against the fold of the event log: they must tell the same story."""
    problems = []
    events = cluster.stored_events(sid)
    seqs = [e[0] for e in events]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"{sid[:8]}: event log seqs not contiguous")
    state = fold([{"event": name, "data": data, "timestamp": "2026-01-01T00:00:00.000Z",
                   "node_id": node, "seq": seq} for seq, name, node, data in events])
    logged, stored = transcript_of_state(state), transcript_of_rows(cluster.messages(sid))
    if logged != stored:
        for key in sorted(set(logged) | set(stored)):
            a, b = logged.get(key, []), stored.get(key, [])
            if a != b:
                problems.append(
                    f"{sid[:8]}: {key}: Message rows {[len(t) for t, _ in b]} chars, event log "
                    f"{[len(t) for t, _ in a]} chars (half-state: rows and log disagree)")
    for node, row in cluster.node_rows(sid).items():
        status = state["nodes"].get(node, {}).get("status", "pending")
        if status != row["status"]:
            problems.append(f"{sid[:8]}: node {node} is {row['status']} in its row, {status} in the log")
    session = cluster.session(sid)
    if state["status"] != session["status"] and not (
        session["status"] == "running" and state["status"] in ("running", "waiting_review")):
        problems.append(f"{sid[:8]}: session is {session['status']}, {state['status']} in the log")
    usage = cluster.usage_rows(sid)
    keys = [(u[0], u[1]) for u in usage]
    if len(keys) != len(set(keys)):
        problems.append(f"{sid[:8]}: usage counted twice {keys}")
    if session["status"] in ("completed", "failed", "stopped") and (
            session["input_tokens"], session["output_tokens"]) != (
            sum(u[2] for u in usage), sum(u[3] for u in usage)):
        problems.append(f"{sid[:8]}: session totals differ from the usage rows")
    return problems


@stopping_viewers
async def scenario_postgres(workdir: Path, *, mode: str = "reset", outage: float = 3.0, per_web: int = 2,
                            sessions: int = 2, tokens: int = 80, rate: int = 20,
                            at_seq: int = 20) -> dict[str, Any]:
    """PostgreSQL unreachable for ``outage`` s while runs stream (TCP proxy in front of it
    for every process: ``reset`` = connections reset, ``hang`` = frozen, reset when it
    comes back), then reachable again.

    Checked: the stored rows agree with the event log (no half-state: messages, node and
    session states, usage), viewers end with the log's transcript, and every run ends
    (completed, or failed with an ``error`` event) or goes on when the database is back."""
    result: dict[str, Any] = {"scenario": f"postgres-{mode}", "outage_s": outage}
    with Cluster(workdir, pg_proxy=True, env={"SCRIPTED_TOKENS_PER_SECOND": str(rate)}) as cluster:
        webs, _ = cluster.start_processes()
        sids, cookie, viewers = await _watched_runs(cluster, webs, tokens=tokens, sessions=sessions,
                                                    per_web=per_web)
        await _wait_progress(viewers, at_seq, 30)
        assert cluster.pg_proxy is not None
        cluster.pg_proxy.cut(mode)
        t_cut = time.time()
        log(f"postgres cut ({mode})")
        await asyncio.sleep(outage / 2)
        sent = await viewers[0].send("user_input", {"text": "said while PostgreSQL was down"}, "pg-down")
        await asyncio.sleep(outage / 2)
        cluster.pg_proxy.restore()
        t_back = time.time()
        log("postgres back")
        try:
            statuses = await in_thread(cluster.wait_finished, sids, 60)
        except TimeoutError:
            statuses = {sid: cluster.session(sid)["status"] for sid in sids}
        heads = {sid: cluster.session(sid)["last_seq"] for sid in sids}
        await wait_viewers(viewers, heads, 20)
        snaps = {sid: await fresh_snapshot(webs[1], sid, cookie) for sid in sids}
        check = check_viewers(cluster, viewers, sids, snaps)
        await stop_viewers(viewers)
        consistency = [p for sid in sids for p in _consistency(cluster, sid)]
        errors = [(sid[:8], name, d.get("code") or d.get("error"))
                  for sid in sids for _, name, _, d in cluster.stored_events(sid)
                  if name in ("error", "execution:failed")]
        reply = [r["data"] for r in viewers[0].replies if r["data"].get("id") == "pg-down"]
        interrupted = [sid[:8] for sid in sids if _ts_of(cluster, sid, "interrupted")]
        gaps = [b - a for v in viewers
                for (a, _, _), (b, _, _) in zip(v.latencies, v.latencies[1:], strict=False)
                if b > t_cut - 1]
        result.update(
            statuses=statuses, **check, consistency=consistency, logged_errors=errors,
            taken_over_after_outage=interrupted,
            command_during_outage={"sent": sent, "reply": reply[:1]},
            longest_silence_s=round(max(gaps, default=0), 2),
            resumed_s_after_restore=round(min(
                (recv for v in viewers for recv, _, _ in v.latencies if recv > t_back), default=t_back) - t_back, 2),
        )
        ended_cleanly = all(
            s == "completed" or (s == "failed" and any(e[0] == sid[:8] for e in errors))
            for sid, s in statuses.items())
        result["ok"] = not check["problems"] and not consistency and ended_cleanly
    return result


_FLOOD = textwrap.dedent(
    """
    import asyncio, json, random, string, time
    from realtime.publisher import get_publisher
    SID, N, RATE, CHARS = {sid!r}, {n}, {rate}, {chars}
    rng = random.Random(7)
    WORDS = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(500)]
    def chunk():
        out = []
        while sum(len(w) + 1 for w in out) < CHARS:
            out.append(rng.choice(WORDS))
        return " ".join(out) + " "
    async def main():
        pub = get_publisher()
        futures = []
        t0 = time.monotonic()
        step = max(1, RATE // 100)
        for i in range(0, N, step):
            for _ in range(min(step, N - i)):
                futures.append(pub.publish_nowait(
                    session_id=SID, event="token_stream", node_id="flood",
                    data={{"chunk": chunk(), "agent_id": "flood", "node_id": "flood", "is_thinking": False}}))
            await asyncio.sleep(max(0.0, t0 + (i + step) / RATE - time.monotonic()))
        seqs = await asyncio.gather(*futures)
        print("FLOOD" + json.dumps({{"first": seqs[0], "last": seqs[-1], "n": len(seqs),
                                     "seconds": round(time.monotonic() - t0, 2)}}))
    asyncio.run(main())
    """
)


def flood(cluster: Cluster, sid: str, n: int, rate: int, chars: int = 60) -> dict[str, Any]:
    """Publish ``n`` token_stream events (chunks of ~``chars`` random words) at ``rate``/s
    through the real publisher (batched insert, then Redis) from a separate process."""
    out = cluster.manage_shell(_FLOOD.format(sid=sid, n=n, rate=rate, chars=chars), timeout=600)
    line = next(line for line in out.splitlines() if line.startswith("FLOOD"))
    return json.loads(line[len("FLOOD"):])


class RssSampler:
    """Start and peak RSS of some processes while a block runs (sampled every 0.1 s)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.start = {name: p.memory_info().rss for name, p in self.procs.items()}
        self.peak = dict(self.start)
        self._stop = False
        self._thread: Any = None

    def __enter__(self) -> RssSampler:
        import threading

        def run() -> None:
            while not self._stop:
                for name, proc in self.procs.items():
                    with contextlib.suppress(psutil.Error):
                        self.peak[name] = max(self.peak[name], proc.memory_info().rss)
                time.sleep(0.1)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join(2)

    def growth_mb(self) -> dict[str, float]:
        return {name: round((self.peak[name] - self.start[name]) / 2**20, 1) for name in self.procs}


async def oversize_close(web: Web, session_id: str, cookie: str, size: int, wait: float = 30) -> int | str:
    """Send one text frame of ``size`` bytes; the close code the server answers with."""
    try:
        async with asyncio.timeout(wait), connect(
            f"{web.ws}/ws/sessions/{session_id}/",
            additional_headers={"Cookie": f"sessionid={cookie}", "Origin": web.base},
            open_timeout=10, max_size=None, close_timeout=5, compression=None,
        ) as ws:
            await ws.recv()
            await ws.send(json.dumps({"cmd": "user_input", "data": {"text": "x" * size}}))
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else 1006
    except TimeoutError:
        return f"no close within {wait:g} s"
    except OSError as exc:
        return f"{exc.__class__.__name__}"


@stopping_viewers
async def scenario_slow(workdir: Path, *, servers: tuple[str, ...] = ("uvicorn", "daphne"),
                        fast: int = 3, limit: int = 20000, rate: int = 2000,
                        stall_events: int = 45000, chars: int = 60, heartbeat: float = 15.0,
                        oversize: tuple[str, ...] | bool = True) -> dict[str, Any]:
    """A viewer stops reading while events flood at ``rate``/s, on each server kind at once
    (one web process per kind, ``fast`` normal viewers + one slow viewer on each).

    Phase 1 (control): ``stall_events`` events, everybody reads: the fast viewers' latency
    without a stalled viewer. Phase 2: the same flood while the slow viewers do not read
    (4 KiB socket receive buffer, no compression: the worst case for the server); the fast
    viewers' latency, each server's memory and the slow viewers' close codes are recorded.
    Phase 3: the slow viewers read again; where the limit bit they are closed with 4409 and
    catch up by replay. Every viewer must end at the log head with no gap and no duplicate.
    Then frames over WS_MAX_FRAME_BYTES are sent to each server (``oversize``: True, False
    or the server kinds to try). ``heartbeat``: seconds between the viewers' acknowledging
    pings (the page: 15 s); under daphne only they reveal the stalled reader."""
    result: dict[str, Any] = {"scenario": "slow-viewer", "limit": limit, "rate": rate,
                              "chunk_chars": chars}
    with Cluster(workdir, env={"WS_SEND_BUFFER_EVENTS": str(limit)}) as cluster:
        started, _ = cluster.start_processes(servers, ())
        webs = dict(zip(servers, started, strict=True))
        data = cluster.setup(users=["alice"], workflows=[chain_workflow(10)],
                             sessions=[{"owner": "alice", "workflow": "fault-chain"}])
        sid, cookie = data["sessions"][0], data["cookies"]["alice"]
        fasts = {kind: [Viewer(f"{kind}-fast-{k}", [web], sid, cookie, compression=None,
                               heartbeat=heartbeat)
                        for k in range(fast)] for kind, web in webs.items()}
        slows = {kind: Viewer(f"{kind}-slow", [web], sid, cookie, max_queue=1, rcvbuf=4096,
                              compression=None, heartbeat=heartbeat) for kind, web in webs.items()}
        everyone = [v for group in fasts.values() for v in group] + list(slows.values())
        await start_viewers(everyone)
        log("slow: control flood (everybody reads)")
        base = await in_thread(flood, cluster, sid, stall_events, rate, chars)
        await wait_viewers(everyone, {sid: base["last"]}, 60)
        t_stall = time.time()
        for slow in slows.values():
            slow.reading.clear()
        log("slow: stall flood")
        with RssSampler({kind: web.proc.pid for kind, web in webs.items()}) as rss:
            stall = await in_thread(flood, cluster, sid, stall_events, rate, chars)
            await wait_viewers([v for g in fasts.values() for v in g], {sid: stall["last"]}, 60)
        stalled_at = {kind: slow.last_seq for kind, slow in slows.items()}
        closed_while_stalled = {
            kind: (web.proc.log().count("too slow: closing with 4409") > 0) for kind, web in webs.items()}
        log("slow: resume reading")
        t_resume = time.time()
        for slow in slows.values():
            slow.reading.set()
        caught = {kind: await slow.wait_seq(stall["last"], 120) for kind, slow in slows.items()}
        catch_up = {kind: round(time.time() - t_resume, 2) for kind in slows}
        await asyncio.sleep(0.3)
        check = check_viewers(cluster, everyone, [sid], {}, transcripts=False)  # no Message rows
        await stop_viewers(everyone)
        per_server: dict[str, Any] = {}
        for kind in webs:
            baseline = _latency_between(fasts[kind], 0, t_stall)
            during = _latency_between(fasts[kind], t_stall)
            slow = slows[kind]
            per_server[kind] = {
                "fast_without_stalled_viewer": _lat_summary(baseline),
                "fast_with_stalled_viewer": _lat_summary(during),
                "slow_stalled_at_seq": stalled_at[kind],
                "slow_closes": [c for _, c, _ in slow.closes],
                "closed_4409_while_stalled": closed_while_stalled[kind],
                "slow_caught_up": caught[kind], "slow_catch_up_s": catch_up[kind],
                "server_rss_growth_mb": rss.growth_mb()[kind],
            }
        kinds = tuple(webs) if oversize is True else (oversize or ())
        if kinds:
            log("slow: oversize frames")
        for kind in kinds:
            per_server[kind]["oversize_close"] = {
                "100KiB": await oversize_close(webs[kind], sid, cookie, 100 * 1024),
                "2MiB": await oversize_close(webs[kind], sid, cookie, 2 * 2**20),
            }
        result.update(**check, servers=per_server, flood={"control": base, "stall": stall})
        result["ok"] = not check["problems"] and all(caught.values())
    return result


def run_takeover_test() -> dict[str, Any]:
    """tests/workflows/test_takeover.py's real-process test (SIGKILLed run_worker against
    PostgreSQL + Redis), run with pytest; its summary line is quoted."""
    test = "tests/workflows/test_takeover.py::test_sigkilled_worker_is_taken_over_after_its_lease_expires"
    t0 = time.monotonic()
    proc = subprocess.run([procs.PYTHON, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", test],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=procs.child_env())
    line = next((ln.strip() for ln in proc.stdout.splitlines() if "take-over:" in ln), "")
    return {"scenario": "takeover-test", "test": test, "ok": proc.returncode == 0,
            "summary": line, "seconds": round(time.monotonic() - t0, 1),
            "output_tail": "" if proc.returncode == 0 else proc.stdout[-2000:]}


# ============================================================================ command line

SCENARIOS: dict[str, Callable[[Path, bool], Any]] = {
    "redis": lambda wd, quick: scenario_redis(wd, mode="restart", **({"tokens": 30, "rate": 30, "outage": 2}
                                                                       if quick else {})),
    "redis-blip": lambda wd, quick: scenario_redis(wd, mode="blip", **({"tokens": 30, "rate": 30, "outage": 2}
                                                                         if quick else {})),
    "web-kill": lambda wd, quick: scenario_kill(wd, kill_web=True, **({"tokens": 30, "rate": 30} if quick else {})),
    "worker-kill": lambda wd, quick: scenario_kill(wd, kill_web=False, kill_worker=True,
                                                   **({"tokens": 30, "rate": 30} if quick else {})),
    "slow": lambda wd, quick: scenario_slow(wd, **({"limit": 2500, "chars": 400, "stall_events": 11000,
                                                   "rate": 2000, "fast": 2} if quick else {})),
    "postgres": lambda wd, quick: scenario_postgres(wd, mode="reset", **({"tokens": 40, "rate": 30}
                                                                         if quick else {})),
    "postgres-hang": lambda wd, quick: scenario_postgres(wd, mode="hang", **({"tokens": 40, "rate": 30}
                                                                             if quick else {})),
    "postgres-blip": lambda wd, quick: scenario_postgres(wd, mode="reset", outage=0.4,
                                                         **({"tokens": 40, "rate": 30} if quick else {})),
    "takeover-test": None,  # type: ignore[dict-item]
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated scenario names: " + ", ".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="the small sizes of the CI tests")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--repeat", type=int, default=1, help="run each scenario this many times")
    parser.add_argument("--layer", choices=("core", "pubsub"), default="pubsub",
                        help="CHANNEL_LAYER of every process: channels_redis's pub/sub layer "
                             "(the project's default) or its core layer")
    parser.add_argument("--redis-options", default="", help='query string for REDIS_URL, e.g. '
                        '"max_connections=1000&socket_timeout=15"')
    args = parser.parse_args()
    CLUSTER_DEFAULTS.update(layer=args.layer, redis_options=args.redis_options)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    results = []
    for name in names:
        for _ in range(args.repeat):
            t0 = time.monotonic()
            log(f"=== {name}")
            if name == "takeover-test":
                result = run_takeover_test()
            else:
                with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as tmp:
                    try:
                        result = asyncio.run(SCENARIOS[name](Path(tmp), args.quick))
                    except Exception as exc:  # a scenario that crashed is a failed scenario
                        result = {"scenario": name, "ok": False, "crashed": repr(exc)}
            result["seconds"] = round(time.monotonic() - t0, 1)
            results.append(result)
            print(json.dumps(result, default=str), flush=True)
    command = "bench/faults.py " + " ".join(sys.argv[1:])
    print(f"\n{'scenario':<28} {'ok':<5} seconds   ({command.strip()})", file=sys.stderr)
    for r in results:
        print(f"{r['scenario']:<28} {('yes' if r['ok'] else 'NO'):<5} {r['seconds']:>7}"
              + (f"   problems: {r.get('problems') or r.get('consistency') or r.get('crashed')}"
                 if not r["ok"] else ""), file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command.strip(), "results": results}, indent=1, default=str))
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
