"""Who is watching a session, counted across every process that serves it.

Each process knows its own viewers; it announces their users through the session's group
(when they change, and every ``PRESENCE_REFRESH_SECONDS``) and remembers what the other
processes announced, forgetting a process not heard from for ``PRESENCE_EXPIRY_SECONDS``.
Arrivals and departures within ``PRESENCE_DEBOUNCE_SECONDS`` make one update, and viewers
are sent a ``presence`` event only when what they would see changed: announcing every
attach to every local viewer was O(viewers^2) frames while a thousand viewers joined
(docs/PERFORMANCE.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from realtime import groups, protocol
from realtime.viewer import Viewer
from realtime.vocabulary import EventName

log = logging.getLogger(__name__)

PRESENCE_REFRESH_SECONDS = 20.0
PRESENCE_EXPIRY_SECONDS = 60.0
PRESENCE_DEBOUNCE_SECONDS = 0.25


class _Seen:
    __slots__ = ("announced", "remote", "shown")

    def __init__(self) -> None:
        self.remote: dict[str, tuple[list[str], float]] = {}  # process -> (users, when heard)
        self.announced: list[str] | None = None  # local users last told to other processes
        self.shown: dict[str, Any] | None = None  # presence last sent to the local viewers


class Presence:
    def __init__(
        self, *, process_id: str, layer: Any, viewers_of: Callable[[str], Iterable[Viewer]]
    ) -> None:
        self.process_id = process_id
        self.layer = layer
        self.viewers_of = viewers_of
        self.sessions: dict[str, _Seen] = {}
        self._due: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def local_users(self, session_id: str) -> list[str]:
        return sorted({v.user for v in self.viewers_of(session_id) if v.active})

    def of(self, session_id: str) -> dict[str, Any]:
        """The ``presence`` event's data: distinct users watching, in every process."""
        users = set(self.local_users(session_id))
        seen = self.sessions.get(session_id)
        if seen:
            now = time.monotonic()
            for process_id, (remote_users, heard) in seen.remote.items():
                if process_id != self.process_id and now - heard < PRESENCE_EXPIRY_SECONDS:
                    users.update(remote_users)
        return {"count": len(users), "users": sorted(users)}

    def track(self, session_id: str) -> None:
        """The process serves the session from now on: listen to the others' announcements."""
        self.sessions.setdefault(session_id, _Seen())

    def changed(self, session_id: str) -> None:
        """Someone came or went: update presence once the debounce window has passed."""
        if session_id in self._due:
            return
        self._due.add(session_id)
        asyncio.get_running_loop().call_later(PRESENCE_DEBOUNCE_SECONDS, self._due_now, session_id)

    def _due_now(self, session_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.flush(session_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self, session_id: str, *, refresh: bool = False) -> None:
        """Announce the local users (if they changed, or always on ``refresh``) and show the
        local viewers the new count."""
        self._due.discard(session_id)
        seen = self.sessions.get(session_id)
        if seen is None:
            return
        users = self.local_users(session_id)
        if refresh or users != seen.announced:
            seen.announced = users
            await self._announce(session_id, users)
        self._show(session_id)

    async def refresh_all(self) -> None:
        for session_id in list(self.sessions):
            await self.flush(session_id, refresh=True)

    async def left(self, session_id: str) -> None:
        """The process's last viewer of the session left: tell the others it watches no more."""
        self.sessions.pop(session_id, None)
        await self._announce(session_id, [])

    def on_message(self, message: dict[str, Any]) -> None:
        """Another process announced its users of a session this process serves."""
        seen = self.sessions.get(message["sid"])
        if seen is None or message["hub"] == self.process_id:
            return
        seen.remote[message["hub"]] = (list(message["users"]), time.monotonic())
        self._show(message["sid"])

    async def _announce(self, session_id: str, users: list[str]) -> None:
        message = {"type": groups.PRESENCE, "sid": session_id, "hub": self.process_id, "users": users}
        try:
            await self.layer.group_send(groups.session_group(session_id), message)
        except Exception:
            log.exception("presence broadcast failed")

    def _show(self, session_id: str) -> None:
        """Send the presence to the local viewers if it changed since the last time."""
        seen = self.sessions.get(session_id)
        if seen is None:
            return
        data = self.of(session_id)
        if data == seen.shown:
            return
        seen.shown = data
        text = protocol.encode(event=EventName.PRESENCE, session_id=session_id, data=data)
        for viewer in self.viewers_of(session_id):
            viewer.push_ephemeral(text)
