"""The TCP proxy the fault tests put between the app and Redis/PostgreSQL does what it says."""

from __future__ import annotations

import psycopg
import pytest
import redis

from tests.reliability.proxy import TcpProxy


@pytest.mark.redis
def test_proxy_cuts_and_restores_redis() -> None:
    with TcpProxy(6379) as proxy:
        client = redis.Redis(port=proxy.port, socket_timeout=1, socket_connect_timeout=1, retry=None)
        assert client.ping()
        proxy.cut()
        with pytest.raises(redis.exceptions.ConnectionError):
            client.ping()
        proxy.restore()
        assert client.ping()
        proxy.cut("hang")
        with pytest.raises((redis.exceptions.TimeoutError, redis.exceptions.ConnectionError)):
            client.ping()
        proxy.restore()
        assert client.ping()
        client.close()
        assert proxy.cuts == 2


@pytest.mark.postgres
def test_proxy_cuts_and_restores_postgres() -> None:
    with TcpProxy(5432) as proxy:
        dsn = f"host=127.0.0.1 port={proxy.port} user=postgres dbname=postgres connect_timeout=3"
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
            proxy.cut()
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn)
        proxy.restore()
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
