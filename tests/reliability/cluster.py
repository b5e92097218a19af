"""A cluster of real processes for one fault scenario: web processes (daphne or uvicorn),
``run_worker`` processes, Redis and a throwaway PostgreSQL database, optional TCP proxies in
front of Redis and PostgreSQL; users, workflows and sessions set up through ``manage.py shell``;
the stored rows read directly; the tracebacks in the processes' logs.

Used by the tests in tests/reliability and by bench/faults.py and bench/soak.py.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import sys
import textwrap
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from tests import procs
from tests.reliability.backends import (
    PG_PORT,
    SHARED_REDIS_DB,
    SHARED_REDIS_PORT,
    PrivateRedis,
    ThrowawayDatabase,
    check_shared_redis,
)
from tests.reliability.proxy import TcpProxy

PASSWORD = "pw-faults-123"


def log(*parts: Any) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


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
