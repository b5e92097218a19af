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
import json
import os
import re
import shutil
import signal
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
from tests.reliability.proxy import TcpProxy, wait_port  # noqa: E402

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
    ) -> None:
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
        self.redis_proxy: TcpProxy | None = None
        self.pg_proxy: TcpProxy | None = None
        self.env: dict[str, str] = {}
        self.workflow_dir = workdir / "workflows"
        self.workflow_dir.mkdir(exist_ok=True)
        self._n = 0

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
                "REDIS_URL": f"redis://127.0.0.1:{redis_port}/{redis_db}",
                "WORKFLOW_EXECUTOR": "worker",
                "WORKER_LEASE_SECONDS": "2",
                "WORKER_POLL_SECONDS": "0.2",
                "SCRIPTED_TOKENS_PER_SECOND": "20",
                "TOKEN_COALESCE_MS": "50",
                "VAR_DIR": str(self.workdir),
                "LOG_LEVEL": "WARNING",
                "WHITENOISE_USE_FINDERS": "0",
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
    def add_web(self, kind: str = "daphne", **env: str) -> Web:
        self._n += 1
        port = procs.free_port()
        if kind == "daphne":
            args = procs.daphne_args(port)
        elif kind == "uvicorn":
            args = [str(Path(procs.PYTHON).parent / "uvicorn"), "config.asgi:application",
                    "--host", "127.0.0.1", "--port", str(port), "--ws", "websockets",
                    "--no-access-log", "--log-level", "warning"]
        else:
            raise ValueError(kind)
        name = f"{kind}-{self._n}"
        proc = self.group.start(
            args, env={**self.env, **env}, log_path=self.workdir / f"{name}.log",
            ready=lambda: procs.port_open(port), timeout=60, name=name,
        )
        web = Web(proc, port, kind)
        self.webs.append(web)
        return web

    def add_worker(self, name: str | None = None) -> procs.Proc:
        self._n += 1
        name = name or f"worker-{self._n}"
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
            "run_requested FROM sessions_app_session WHERE id = %s", (sid,))
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
            "SELECT seq, event, node_id, data FROM sessions_app_sessionevent WHERE session_id = %s "
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
        """Tracebacks in the logs of our processes (what is expected in a fault is listed by
        the scenario itself)."""
        found = []
        for proc in self.group.procs:
            text = proc.log()
            for match in re.finditer(r"^(\w*Error|Traceback).*$", text, re.M):
                found.append(f"{proc.name}: {match.group(0)[:200]}")
        return found


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


@dataclass
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

    async def stop(self) -> None:
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

    async def wait_seq(self, seq: int, timeout: float) -> bool:
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
                await ws.send(json.dumps({"cmd": "ping", "id": f"hb{n}"}))

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
    cluster: Cluster, viewers: list[Viewer], sids: list[str], snapshots: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """Per viewer: contiguous seqs, nothing missing, transcript = rows = server snapshot."""
    heads = {sid: cluster.session(sid)["last_seq"] for sid in sids}
    rows = {sid: transcript_of_rows(cluster.messages(sid)) for sid in sids}
    problems: list[str] = []
    for v in viewers:
        state = v.state()
        if v.last_seq != heads[v.session_id]:
            problems.append(f"{v.name}: at seq {v.last_seq}, log head {heads[v.session_id]}")
        if v.dups or v.gaps:
            problems.append(f"{v.name}: {v.dups} duplicates, {v.gaps} gaps")
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
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


async def start_viewers(viewers: list[Viewer], timeout: float = 30) -> None:
    for v in viewers:
        v.start()
    deadline = time.monotonic() + timeout
    while any(v.last_seq < 0 for v in viewers):
        if time.monotonic() > deadline:
            raise TimeoutError("viewers did not get their snapshots")
        await asyncio.sleep(0.05)


async def wait_viewers(viewers: list[Viewer], heads: dict[str, int], timeout: float) -> None:
    await asyncio.gather(*(v.wait_seq(heads[v.session_id], timeout) for v in viewers))


async def stop_viewers(viewers: list[Viewer]) -> None:
    await asyncio.gather(*(v.stop() for v in viewers), return_exceptions=True)


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


