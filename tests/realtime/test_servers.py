"""Through real server processes: runserver (daphne), and two daphne processes sharing Redis."""

import asyncio
import contextlib
import http.cookiejar
import json
import re
import urllib.parse
import urllib.request

import pytest
import redis
from websockets.asyncio.client import connect

from realtime import protocol
from tests.servers import (
    Server,
    create_session,
    create_user,
    daphne,
    free_port,
    login,
    manage,
    server_env,
    unpack,
    ws_headers,
    ws_url,
)

pytestmark = pytest.mark.slow


async def read_until(ws, predicate, timeout=30):
    events = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            assert "type" not in frame
            protocol.validate_event(frame)
            for event in unpack(frame):
                events.append(event)
                if predicate(event):
                    return events


async def test_runserver_serves_pages_and_websockets(tmp_path):
    env = server_env(tmp_path)
    manage(env, "migrate", "-v0")
    create_user(env, "alice", "pw-alice-123")
    session = create_session(env, "alice")
    port = free_port()
    server = Server(
        [str(__import__("sys").executable), "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        env, port, tmp_path / "runserver.log",
    )
    try:
        cookie = login(server.base, "alice", "pw-alice-123")
        async with connect(ws_url(server, session["id"]), additional_headers=ws_headers(server, cookie)) as ws:
            snapshot = json.loads(await ws.recv())
            assert snapshot["event"] == "snapshot"
            await ws.send(json.dumps({"cmd": "start_session", "id": "s1"}))
            events = await read_until(ws, lambda e: e["event"] == "execution:completed")
        names = {e["event"] for e in events}
        assert {"ack", "execution:started", "token_stream", "token_usage"} <= names
        seqs = [e["seq"] for e in events if e["seq"] is not None]
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        server.stop()


@contextlib.contextmanager
def two_daphnes(tmp_path, redis_db, **env_extra):
    """Two daphne processes sharing Redis db ``redis_db`` (emptied before and after) and one
    database, with user alice and one of her sessions: (env, session, one, two)."""
    client = redis.Redis(host="127.0.0.1", port=6379, db=redis_db)
    client.ping()  # fails loudly when Redis is down
    client.flushdb()
    env = server_env(tmp_path, REDIS_URL=f"redis://127.0.0.1:6379/{redis_db}", **env_extra)
    manage(env, "migrate", "-v0")
    create_user(env, "alice", "pw-alice-123")
    session = create_session(env, "alice")
    one, two = daphne(env, tmp_path, "one"), daphne(env, tmp_path, "two")
    try:
        yield env, session, one, two
    finally:
        one.stop()
        two.stop()
        client.flushdb()


@pytest.mark.redis
@pytest.mark.parametrize("layer", ["pubsub", "core"])
async def test_two_daphne_processes_share_redis(tmp_path, layer):
    """Both channels_redis layers (CHANNEL_LAYER): each process runs a hub and an embedded
    executor receiving on the same layer (with the core layer, channels on two prefixes once
    starved each other: docs/RELIABILITY.md B4)."""
    with two_daphnes(tmp_path, 13, CHANNEL_LAYER=layer) as (env, session, one, two):
        cookie = login(one.base, "alice", "pw-alice-123")
        async with (
            connect(ws_url(one, session["id"]), additional_headers=ws_headers(one, cookie)) as a,
            connect(ws_url(two, session["id"]), additional_headers=ws_headers(two, cookie)) as b,
        ):
            for ws in (a, b):
                assert json.loads(await ws.recv())["event"] == "snapshot"
            text = 'Ünïcode “quotes” \\ backslash {"json": [1, 2.5, null]} 🚀 ' + "x" * 3000
            await a.send(json.dumps({"cmd": "user_input", "data": {"text": text}, "id": "u1"}))
            got = await read_until(b, lambda e: e["event"] == "user_message")
            assert got[-1]["data"]["text"] == text.strip()
            assert got[-1]["data"]["user"] == "alice"
            # A run started through process one streams to the viewer on process two.
            await a.send(json.dumps({"cmd": "start_session", "id": "s1"}))
            seen_b = await read_until(b, lambda e: e["event"] == "execution:completed")
            seen_a = await read_until(a, lambda e: e["event"] == "execution:completed")
        logged_b = [e for e in got + seen_b if e["seq"] is not None]
        assert [e["seq"] for e in logged_b] == list(range(1, len(logged_b) + 1))
        logged_a = [e for e in seen_a if e["seq"] is not None]
        assert logged_a == [e for e in logged_b if e["seq"] >= logged_a[0]["seq"]]


@pytest.mark.redis
async def test_deactivating_a_user_closes_their_sockets_in_every_process(tmp_path):
    """Revocation crosses processes: the change is made by a third process (manage.py shell);
    the user's sockets on both daphne processes are closed 4401 within 2 seconds."""
    with two_daphnes(tmp_path, 12) as (env, session, one, two):
        cookie = login(one.base, "alice", "pw-alice-123")
        async with (
            connect(ws_url(one, session["id"]), additional_headers=ws_headers(one, cookie)) as a,
            connect(ws_url(two, session["id"]), additional_headers=ws_headers(two, cookie)) as b,
        ):
            for ws in (a, b):
                assert json.loads(await ws.recv())["event"] == "snapshot"
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, lambda: manage(
                env, "shell", "-c",
                "from django.contrib.auth import get_user_model as g;"
                "u = g().objects.get(username='alice'); u.is_active = False; u.save()"))
            changed_at = loop.time()
            for ws in (a, b):
                async with asyncio.timeout(2):
                    await ws.wait_closed()
                assert ws.close_code == 4401
            assert loop.time() - changed_at < 2


@pytest.mark.redis
async def test_lowering_and_removing_a_member_closes_their_sockets_in_every_process(tmp_path):
    """The owner's changes through the member services, made by a third process: bob's
    sockets on both daphne processes close 4412 when his role drops (the reconnect may only
    watch) and 4403 when he is removed, within 2 seconds; the owner's socket sees each change."""
    with two_daphnes(tmp_path, 11) as (env, session, one, two):
        create_user(env, "bob", "pw-bob-123")

        def as_owner(call: str) -> None:
            manage(env, "shell", "-c",
                   "from django.contrib.auth import get_user_model as g; from sessions_app import services;"
                   f"services.{call}(session_id={session['id']!r}, actor=g().objects.get(username='alice'), "
                   "username='bob'" + ("" if call == "member_remove" else f", role={role!r}") + ")")

        loop = asyncio.get_running_loop()
        role = "controller"
        await loop.run_in_executor(None, as_owner, "member_add")
        alice, bob = login(one.base, "alice", "pw-alice-123"), login(one.base, "bob", "pw-bob-123")

        async def bobs_sockets(expect_control: bool):
            sockets = []
            for server in (one, two):
                ws = await connect(ws_url(server, session["id"]), additional_headers=ws_headers(server, bob))
                snapshot = json.loads(await ws.recv())
                assert snapshot["data"]["can_control"] is expect_control
                assert snapshot["data"]["state"]["members"]["bob"] == ("controller" if expect_control else "viewer")
                sockets.append(ws)
            return sockets

        async def closed(sockets, code):
            changed_at = loop.time()
            for ws in sockets:
                async with asyncio.timeout(2):
                    await ws.wait_closed()
                assert ws.close_code == code
            assert loop.time() - changed_at < 2

        async with connect(ws_url(one, session["id"]), additional_headers=ws_headers(one, alice)) as owner_ws:
            assert json.loads(await owner_ws.recv())["event"] == "snapshot"
            sockets = await bobs_sockets(True)
            role = "viewer"
            await loop.run_in_executor(None, as_owner, "member_set_role")
            await closed(sockets, 4412)
            sockets = await bobs_sockets(False)
            await loop.run_in_executor(None, as_owner, "member_remove")
            await closed(sockets, 4403)
            seen = await read_until(owner_ws, lambda e: e["event"] == "member_changed" and e["data"]["role"] is None)
        changes = [(e["data"]["role"], e["data"]["previous"], e["data"]["by"]) for e in seen if e["event"] == "member_changed"]
        assert changes[-2:] == [("viewer", "controller", "alice"), (None, "viewer", "alice")]


def _log_out(base: str, cookie: str) -> None:
    """Log out like the page's button: GET a page for the CSRF token, POST the logout form."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    headers = {"Cookie": f"sessionid={cookie}"}
    page = opener.open(urllib.request.Request(f"{base}/sessions/", headers=headers), timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.read().decode()).group(1)
    csrf = next(c.value for c in jar if c.name == "csrftoken")
    body = urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode()
    opener.open(urllib.request.Request(
        f"{base}/accounts/logout/", data=body,
        headers={"Cookie": f"sessionid={cookie}; csrftoken={csrf}", "Referer": f"{base}/sessions/"},
    ), timeout=10).read()


@pytest.mark.redis
@pytest.mark.parametrize("cause", ["logout", "password"])
async def test_logging_out_or_a_new_password_closes_the_users_sockets_in_every_process(tmp_path, cause):
    """The other two revocation causes across processes: alice logs out on process one (the
    page's logout form), or her password is changed by a third process; her sockets on both
    daphne processes close 4401 within 2 seconds."""
    with two_daphnes(tmp_path, 10 if cause == "logout" else 9) as (env, session, one, two):
        cookie = login(one.base, "alice", "pw-alice-123")
        async with (
            connect(ws_url(one, session["id"]), additional_headers=ws_headers(one, cookie)) as a,
            connect(ws_url(two, session["id"]), additional_headers=ws_headers(two, cookie)) as b,
        ):
            for ws in (a, b):
                assert json.loads(await ws.recv())["event"] == "snapshot"
            loop = asyncio.get_running_loop()
            if cause == "logout":
                await loop.run_in_executor(None, _log_out, one.base, cookie)
            else:
                await loop.run_in_executor(None, lambda: manage(
                    env, "shell", "-c",
                    "from django.contrib.auth import get_user_model as g;"
                    "u = g().objects.get(username='alice'); u.set_password('pw-new-456'); u.save()"))
            changed_at = loop.time()
            for ws in (a, b):
                async with asyncio.timeout(2):
                    await ws.wait_closed()
                assert ws.close_code == 4401
            assert loop.time() - changed_at < 2
