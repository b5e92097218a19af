"""The WebSocket consumer: authenticate, authorize, attach to the hub, translate commands.

Thin on purpose: who may do what, what a session looks like and what a command does belong
to the app that owns sessions (``realtime.rooms``, registered at start-up), fan-out to the
hub, the protocol to ``realtime.protocol``. How it runs inside Channels (one coroutine per
socket, no per-socket channel) is ``realtime.channels_glue``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.conf import settings

from realtime import metrics, protocol
from realtime.auth import current_user
from realtime.channels_glue import OneCoroutineConsumer
from realtime.hub import get_hub
from realtime.rooms import CommandRefused, RoomNotFound, get_backend
from realtime.snapshots import initial_frames
from realtime.timestamps import now_iso
from realtime.tokens import within_scope
from realtime.viewer import Viewer
from realtime.vocabulary import WATCHER_COMMANDS, Access, CommandName, EventName

log = logging.getLogger(__name__)


class _RateLimiter:
    """Token bucket per connection."""

    __slots__ = ("allowance", "stamp", "strikes")

    def __init__(self) -> None:
        self.allowance = float(settings.WS_RATE_BURST)
        self.stamp = time.monotonic()
        self.strikes = 0

    def allow(self) -> bool:
        now = time.monotonic()
        self.allowance = min(
            float(settings.WS_RATE_BURST),
            self.allowance + (now - self.stamp) * settings.WS_RATE_PER_SECOND,
        )
        self.stamp = now
        if self.allowance >= 1:
            self.allowance -= 1
            return True
        self.strikes += 1
        return False


@database_sync_to_async
def _access(session_id: str, user: Any) -> tuple[bool, Access | None]:
    """(the session exists, what the user may do in it)."""
    try:
        return True, get_backend().access(user=user, session_id=session_id)
    except RoomNotFound:
        return False, None


_initial = database_sync_to_async(initial_frames)


class _LoggedOut(Exception):
    """The socket's login is no longer valid (logged out, deactivated, password changed)."""


@database_sync_to_async
def _execute(scope: dict[str, Any], session_id: str, command: protocol.Command) -> bool:
    user = current_user(scope)
    if user is None:
        raise _LoggedOut
    if scope.get("api_scope") == Access.WATCH:
        raise CommandRefused("forbidden", "this API token may only watch")
    return get_backend().execute(user=user, session_id=session_id, command=command)


@database_sync_to_async
def _recheck(scope: dict[str, Any], session_id: str) -> tuple[bool, Access | None]:
    """(still logged in, what the user may do in the session now)."""
    user = current_user(scope)
    if user is None:
        return False, None
    try:
        access = get_backend().access(user=user, session_id=session_id)
    except RoomNotFound:
        return True, None
    return True, _capped(scope, access)


def _capped(scope: dict[str, Any], access: Access | None) -> Access | None:
    """A watch-only API token never controls, whatever its user may do."""
    api_scope = scope.get("api_scope")
    return within_scope(access, Access(api_scope)) if api_scope else access


def _parse_last_seq(query_string: bytes) -> tuple[bool, int | None]:
    values = parse_qs(query_string.decode("latin-1")).get("last_seq")
    if not values:
        return True, None
    raw = values[0]
    if not raw.isdigit() or len(raw) > 18:
        return False, None
    return True, int(raw)


class SessionConsumer(OneCoroutineConsumer):
    viewer: Viewer | None = None
    session_id: str = ""
    access: Access | None = None
    counted_user: str | None = None
    _rechecking: asyncio.Task[None] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        with metrics.open_socket():  # counted until the coroutine ends, however it ends
            await super().__call__(scope, receive, send)

    async def connect(self) -> None:
        user = self.scope.get("user")
        self.session_id = str(self.scope["url_route"]["kwargs"]["session_id"])
        await self.accept()
        if user is None or not user.is_authenticated:
            await self._close_with(4401)
            return
        ok, last_seq = _parse_last_seq(self.scope.get("query_string", b""))
        if not ok:
            await self._close_with(4400)
            return
        try:
            exists, access = await _access(self.session_id, user)
        except Exception:
            log.exception("could not open %s", self.session_id)  # database unavailable
            await self._close_with(4503)
            return
        if not exists:
            await self._close_with(4404)
            return
        access = _capped(self.scope, access)
        if access is None:
            await self._close_with(4403)
            return
        hub = get_hub()
        username = user.get_username()
        if hub.sockets_per_user.get(username, 0) >= settings.WS_MAX_SOCKETS_PER_USER:
            await self._close_with(4430)
            return
        hub.sockets_per_user[username] = hub.sockets_per_user.get(username, 0) + 1
        self.counted_user = username
        self.access = access
        self.limiter = _RateLimiter()
        self.viewer = Viewer(
            session_id=self.session_id, user=username, send=self.base_send, close=self._close_with,
            user_id=str(user.pk), on_access_changed=self._access_changed,
        )
        try:
            await hub.attach(self.viewer)
            seq, frames = await _initial(
                session_id=self.session_id, last_seq=last_seq,
                can_control=access == Access.CONTROL, presence=hub.presence.of(self.session_id),
            )
        except Exception:
            # Channel layer or database unavailable: refuse for now; the page retries.
            log.exception("could not open %s", self.session_id)
            await self.disconnect(4503)
            await self._close_with(4503)
            return
        await hub.activate(self.viewer, last_seq=seq, initial=frames)

    def _access_changed(self) -> None:
        """The hub heard that this user's access changed: check it now, in the background."""
        if self._rechecking is None or self._rechecking.done():
            self._rechecking = asyncio.get_running_loop().create_task(self._apply_access())

    async def _apply_access(self) -> None:
        try:
            logged_in, access = await _recheck(self.scope, self.session_id)
        except Exception:
            log.exception("re-checking access to %s failed", self.session_id)
            return  # every command checks again anyway
        if not logged_in:
            await self._close_with(4401)
        elif access is None:
            await self._close_with(4403)
        elif access != self.access:
            await self._close_with(4412)  # reconnect for a snapshot with the new rights

    async def _close_with(self, code: int) -> None:
        """Close without ever raising: a consumer that dies in close() never runs disconnect(),
        leaving its viewer attached and its socket counted. A code the server refuses (1009
        under daphne) is replaced by its documented application-range twin."""
        metrics.socket_closed(code)
        for attempt in (code, protocol.CLOSE_CODE_FALLBACK.get(code)):
            if attempt is None:
                return
            try:
                await self.close(code=attempt)
                return
            except Exception:
                log.debug("close %s refused, or the socket was gone", attempt, exc_info=True)

    async def disconnect(self, code: int) -> None:
        hub = get_hub()
        if self.viewer is not None:
            await hub.detach(self.viewer)
            self.viewer = None
        if self.counted_user is not None:
            left = hub.sockets_per_user.get(self.counted_user, 1) - 1
            if left > 0:
                hub.sockets_per_user[self.counted_user] = left
            else:
                hub.sockets_per_user.pop(self.counted_user, None)
            self.counted_user = None

    # ------------------------------------------------------------------ receive
    def _reply(self, event: str, data: dict[str, Any]) -> None:
        if self.viewer is not None:
            self.viewer.push_ephemeral(
                protocol.encode(event=event, session_id=self.session_id, data=data)
            )

    def _error(self, code: str, message: str, command_id: str | None = None) -> None:
        self._reply(EventName.ERROR, {"code": code, "error": message, "id": command_id})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        viewer = self.viewer
        if viewer is None or not viewer.active:
            return  # frames before the snapshot was sent are ignored
        viewer.last_received = time.monotonic()
        size = len(text_data.encode()) if text_data is not None else len(bytes_data or b"")
        if size > settings.WS_MAX_FRAME_BYTES:
            await self._close_with(1009)
            return
        if not self.limiter.allow():
            self._error("rate_limited", "too many commands; slow down")
            if self.limiter.strikes >= settings.WS_RATE_STRIKES:
                await self._close_with(4429)
            return
        try:
            command = protocol.parse_command(text_data)
        except protocol.ProtocolError as exc:
            self._error(exc.code, exc.message, exc.command_id)
            return
        if command.cmd == CommandName.PING:
            self._reply(EventName.PONG, {"server_time": now_iso(), "id": command.id})
            acked = command.data.get("last_seq")
            if acked is not None:
                viewer.acknowledge(acked)
            return
        if command.cmd not in WATCHER_COMMANDS and self.access != Access.CONTROL:
            self._error("forbidden", "watch-only participants cannot control the session", command.id)
            return
        try:
            duplicate = await _execute(self.scope, self.session_id, command)
        except _LoggedOut:
            await self._close_with(4401)
            return
        except CommandRefused as exc:
            self._error(exc.code, exc.message, command.id)
            return
        except Exception:
            log.exception("command %s failed", command.cmd)
            self._error("internal", "the server could not do this; nothing was changed", command.id)
            return
        self._reply(EventName.ACK, {"id": command.id, "cmd": command.cmd, "duplicate": duplicate})
