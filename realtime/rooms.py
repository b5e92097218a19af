"""What the realtime layer asks of the app that owns sessions, and where that app plugs in.

realtime serves a session's room (snapshot, replay, live events, commands) but knows nothing
of who may see a session, what a session or its workflow looks like, or what a command does.
The app that owns sessions implements ``RoomBackend`` and registers it once, from its
``AppConfig.ready()``; the consumer, the snapshot builder and the AG-UI endpoint only ever call these
methods. That keeps the dependency one way (the owning app imports realtime, never the
reverse) without an import hidden inside a function.
"""

from __future__ import annotations

from typing import Any, Protocol

from realtime.layer import Registered
from realtime.protocol import Command
from realtime.vocabulary import Access


class RoomNotFound(Exception):
    """No such session (the socket is closed 4404)."""


class CommandRefused(Exception):
    """A command the session cannot carry out; ``code`` is one of ``protocol.ERROR_CODES``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RoomBackend(Protocol):
    """Synchronous (called in the database thread); each call does its own queries."""

    def access(self, *, user: Any, session_id: str) -> Access | None:
        """What ``user`` may do in the session, None if nothing; RoomNotFound if none exists."""

    def describe(self, *, session_id: str) -> dict[str, Any]:
        """The snapshot's ``session`` and ``workflow`` objects (docs/protocol.md)."""

    def members(self, *, session_id: str) -> dict[str, str]:
        """Everyone who belongs to the session now, username -> ``vocabulary.Role`` value
        (the owner included): the snapshot's ``state.members``."""

    def execute(self, *, user: Any, session_id: str, command: Command) -> bool:
        """Carry out a control command once; True if its id was already carried out (not
        run again). Raises CommandRefused for anything the session refuses."""

    def open_thread(self, *, user: Any, workflow: str, thread_id: str) -> str:
        """The session an AG-UI thread names, made for a thread id not seen before (owned by
        ``user``). RoomNotFound: no such workflow, or the thread's session runs another one;
        CommandRefused("forbidden"): ``user`` may not control it."""

    def unseen_messages(self, *, session_id: str, message_ids: list[str]) -> list[str]:
        """Which AG-UI message ids the session has not taken in yet (they are taken now)."""


_backend: Registered[RoomBackend] = Registered(
    "realtime room backend",
    how="the app that owns sessions must call realtime.rooms.register_backend() in its "
    "AppConfig.ready()",
)
register_backend = _backend.register
get_backend = _backend.get
