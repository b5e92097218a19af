"""The stores a fault scenario runs against: a throwaway PostgreSQL database, a private
``redis-server`` it may kill, and the check that the shared Redis is up.

The shared servers (PostgreSQL on 127.0.0.1:5432, Redis on 127.0.0.1:6379) are used by other
people's tests: they are never stopped; a scenario cuts them off with tests/reliability/proxy.py.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import psycopg

from tests import procs

PG_PORT = 5432
PG_ADMIN = f"host=127.0.0.1 port={PG_PORT} user=postgres dbname=postgres"
SHARED_REDIS_PORT = 6379
SHARED_REDIS_DB = 12


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


def script_on_postgres(script: str, *, tmp_path: Path, prefix: str) -> dict[str, Any]:
    """Run ``script`` (``manage.py shell -c``) against a migrated throwaway database and
    return the JSON it printed after ``RESULT `` (the suite's own database is SQLite)."""
    db = ThrowawayDatabase(prefix=prefix)
    try:
        env = procs.child_env(DATABASE_URL=db.url(), VAR_DIR=str(tmp_path), LOG_LEVEL="ERROR")
        procs.run_manage(["migrate", "--noinput", "-v", "0"], env=env, timeout=180)
        out = procs.run_manage(["shell", "-c", script], env=env, timeout=120).stdout
    finally:
        db.drop()
    return json.loads(out.split("RESULT ", 1)[1])


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
