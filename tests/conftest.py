"""Shared fixtures: users, sessions, a WebSocket client helper and fast settings."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from realtime import protocol


@pytest.fixture(autouse=True)
def _fast_settings(settings: Any) -> None:
    settings.SCRIPTED_TOKENS_PER_SECOND = 0
    settings.TOKEN_COALESCE_MS = 5
    settings.WORKER_POLL_SECONDS = 0.1
    settings.WORKER_LEASE_SECONDS = 3
    # Hashing is what many small users cost (PBKDF2: ~0.3 s each); tests don't need it strong.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def owner(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def other_user(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("mallory", password="pw-mallory-123")


def session_cookie_for(user: Any) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


class WS:
    """A WebSocket test client speaking the protocol, checking every frame it receives."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.c = communicator
        self.events: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.frame_sizes: list[int] = []
        self._n = 0

    async def recv(self, timeout: float = 5) -> dict[str, Any]:
        output = await self.c.receive_output(timeout)
        if output["type"] == "websocket.close":
            self.close_code = output.get("code")
            raise ConnectionError(f"closed {self.close_code}")
        self.frame_sizes.append(len(output["text"]))
        frame = json.loads(output["text"])
        assert "type" not in frame
        protocol.validate_event(frame)
        frames = frame["data"]["events"] if frame["event"] == "batch" else [frame]
        self.events.extend(frames)
        return frame

    async def next_event(self, timeout: float = 5) -> dict[str, Any]:
        if not hasattr(self, "_cursor"):
            self._cursor = 0
        while self._cursor >= len(self.events):
            await self.recv(timeout)
        event = self.events[self._cursor]
        self._cursor += 1
        return event

    async def until(self, predicate: Any, timeout: float = 10) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("event not received")
            event = await self.next_event(left)
            if predicate(event):
                return event

    async def command(self, cmd: str, data: dict | None = None, cid: str | None = None) -> str:
        self._n += 1
        cid = cid or f"c{self._n}"
        await self.c.send_to(text_data=json.dumps({"cmd": cmd, "data": data or {}, "id": cid}))
        return cid

    async def reply(self, cid: str, timeout: float = 5) -> dict[str, Any]:
        return await self.until(
            lambda e: e["event"] in ("ack", "error") and e["seq"] is None
            and e["data"].get("id") == cid,
            timeout,
        )

    async def close(self) -> None:
        await self.c.disconnect()


async def connect_ws(
    app: Any, session_id: str, user: Any | None, *, query: str = "", origin: bytes = b"http://127.0.0.1"
) -> tuple[WS, bool, int | None]:
    headers = [(b"origin", origin), (b"host", b"127.0.0.1")]
    if user is not None:
        cookie = await database_sync_to_async(session_cookie_for)(user)
        headers.append((b"cookie", f"sessionid={cookie}".encode()))
    communicator = WebsocketCommunicator(
        app, f"/ws/sessions/{session_id}/{query}", headers=headers
    )
    connected, code = await communicator.connect(timeout=5)
    return WS(communicator), connected, code


@pytest.fixture
async def ws_app() -> AsyncIterator[Any]:
    """The ASGI app without the embedded executor (tests drive runs themselves)."""
    from config.asgi import router

    yield router


@pytest.fixture
async def executor() -> AsyncIterator[Any]:
    from workflows.worker import Executor

    ex = Executor(owner="test-executor")
    await ex.start()
    yield ex
    await ex.close()


def make_user(username: str, **extra: Any) -> Any:
    return get_user_model().objects.create_user(username, password=f"pw-{username}-123", **extra)
