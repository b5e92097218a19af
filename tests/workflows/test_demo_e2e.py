"""The demo workflow end to end: a real daphne server, a real login and a real WebSocket
client. Every frame is checked against realtime.protocol; every seed event must arrive
with its documented fields, and the seqs must be contiguous."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import urllib.parse
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from realtime import protocol
from tests import procs

PASSWORD = "e2e-Password-491"


class Browser:
    """Just enough of a browser for Django's login and forms: cookies and the CSRF token."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"Cookie": self.cookie_header(), "Referer": f"http://127.0.0.1:{self.port}{path}",
                   "Origin": f"http://127.0.0.1:{self.port}"}
        body = None
        if form is not None:
            form = {**form, "csrfmiddlewaretoken": self.cookies["csrftoken"]}
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        for header in response.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie(header)
            self.cookies.update({key: morsel.value for key, morsel in cookie.items()})
        text = response.read().decode()
        location = response.getheader("Location") or ""
        conn.close()
        return response.status, location, text

    def cookie_header(self) -> str:
        return "; ".join(f"{key}={value}" for key, value in self.cookies.items())

    def login(self, username: str, password: str) -> None:
        self.request("GET", "/accounts/login/")
        status, location, _ = self.request(
            "POST", "/accounts/login/", {"username": username, "password": password}
        )
        assert status == 302 and "sessionid" in self.cookies, (status, location)

    def create_session(self, workflow: str, title: str) -> str:
        self.request("GET", "/sessions/")
        status, location, _ = self.request("POST", "/sessions/new/", {"workflow": workflow, "title": title})
        assert status == 302, status
        return re.search(r"/sessions/([0-9a-f-]{36})/", location).group(1)


class Client:
    """A protocol-checking WebSocket client: every frame validated, batches unpacked."""

    def __init__(self, socket: Any) -> None:
        self.socket = socket
        self.logged: list[dict[str, Any]] = []
        self.replies: list[dict[str, Any]] = []
        self.n = 0

    async def send(self, cmd: str, **data: Any) -> str:
        self.n += 1
        cid = f"c{self.n}"
        await self.socket.send(json.dumps({"cmd": cmd, "data": data, "id": cid}))
        return cid

    async def frames(self, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            text = await asyncio.wait_for(self.socket.recv(), deadline - loop.time())
            frame = json.loads(text)
            assert "type" not in frame
            protocol.validate_event(frame)
            for item in frame["data"]["events"] if frame["event"] == "batch" else [frame]:
                (self.logged if item["seq"] is not None else self.replies).append(item)
                yield item


async def _drive_demo(client: Client) -> dict[str, Any]:
    """Start, pause at the first token, resume, send a bad command, approve the review."""
    facts: dict[str, Any] = {"bad_command": None}
    start = await client.send("start_session")
    paused_node = resumed = False
    async for event in client.frames(timeout=60):
        name = event["event"]
        if name == "ack" and event["data"]["id"] == start:
            facts["bad_command"] = await client.send("submit_review", node_id="summary", decision="approve")
        elif name == "token_stream" and "pause" not in facts:
            facts["pause"] = await client.send("pause_session")
        elif name == "node_state_change" and event["data"]["status"] == "paused" and not paused_node:
            paused_node = True
            await asyncio.sleep(0.2)
            await client.send("resume_session")
        elif name == "execution:resumed":
            resumed = True
        elif name == "human_interaction_required":
            await client.send("submit_review", node_id=event["data"]["node_id"], decision="approve",
                              comment="approved from the e2e test")
        elif name == "execution:completed":
            facts["resumed"] = resumed
            return facts
        elif name == "execution:failed":
            raise AssertionError(f"the demo failed: {event['data']}")
    raise AssertionError("the socket closed")


@pytest.mark.slow
async def test_demo_over_a_real_server_and_websocket(tmp_path: Path) -> None:
    (tmp_path / "staticfiles").mkdir()
    env = procs.child_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", VAR_DIR=str(tmp_path),
        SCRIPTED_TOKENS_PER_SECOND="300", TOKEN_COALESCE_MS="20", REDIS_URL=None,
        WORKFLOW_EXECUTOR="embedded",
    )
    procs.run_manage(["migrate", "--noinput", "-v", "0"], env=env)
    procs.run_manage(["shell", "-c", "from django.contrib.auth.models import User; "
                      f"User.objects.create_user('erin', password='{PASSWORD}')"], env=env)
    port = procs.free_port()
    with procs.ProcessGroup() as group:
        group.start(procs.daphne_args(port), env=env, log_path=tmp_path / "daphne.log",
                    ready=lambda: procs.port_open(port), name="daphne")
        browser = Browser(port)
        browser.login("erin", PASSWORD)
        session_id = browser.create_session("demo", "e2e demo")
        headers = {"Cookie": browser.cookie_header(), "Origin": f"http://127.0.0.1:{port}"}
        async with connect(f"ws://127.0.0.1:{port}/ws/sessions/{session_id}/",
                           additional_headers=headers) as socket:
            client = Client(socket)
            snapshot = json.loads(await asyncio.wait_for(socket.recv(), 10))
            protocol.validate_event(snapshot)
            assert snapshot["event"] == "snapshot" and snapshot["data"]["last_seq"] == 0
            assert snapshot["data"]["can_control"] is True
            facts = await _drive_demo(client)

    logged = client.logged
    assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1))
    names = {e["event"] for e in logged} | {e["event"] for e in client.replies}
    assert set(protocol.SEED_EVENTS) <= names, set(protocol.SEED_EVENTS) - names
    assert facts["resumed"]

    def first(name: str) -> dict[str, Any]:
        return next(e for e in logged if e["event"] == name)

    stream = first("token_stream")["data"]
    assert set(stream) == {"chunk", "agent_id", "node_id", "is_thinking"} and stream["node_id"] == "brief"
    [fan_out] = [e for e in logged if e["event"] == "node:parallel_start"]
    assert fan_out["data"] == {"node_id": "research", "branches": ["market", "tech", "risk"]}
    usage = first("token_usage")["data"]
    assert usage["node_id"] == "brief" and usage["input_tokens"] > 0 and usage["estimated_cost_usd"] > 0
    ask = first("human_interaction_required")["data"]
    assert ask["node_id"] == "review" and ask["timeout"] == 300 and ask["reason"].startswith("Review")
    assert {e["data"].get("node_id") for e in logged if e["event"] == "node_resumed"} == {None, "review"}
    assert first("execution:paused")["data"] == {}
    done = first("execution:completed")["data"]
    finals = [e["data"] for e in logged if e["event"] == "token_usage" and e["data"]["final"]]
    assert done["input_tokens"] == sum(u["input_tokens"] for u in finals)
    assert done["output_tokens"] == sum(u["output_tokens"] for u in finals)
    assert done["cost_usd"] == pytest.approx(sum(u["estimated_cost_usd"] for u in finals), abs=1e-6)
    [bad] = [e for e in client.replies if e["event"] == "error"]
    assert bad["seq"] is None and bad["data"]["code"] == "invalid_state" and bad["data"]["id"] == facts["bad_command"]
    statuses = {e["data"]["node_id"]: e["data"]["status"] for e in logged if e["event"] == "node_state_change"}
    assert set(statuses.values()) == {"completed"} and len(statuses) == 8
    assert any(e["event"] == "node_state_change" and e["data"]["status"] == "paused" for e in logged)
    assert logged[-1]["event"] == "execution:completed"
