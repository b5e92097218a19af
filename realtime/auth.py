"""Is the person behind a socket still logged in, as of now?

Channels authenticates a socket once, when it connects, from the session it had then. A user
who logs out, is deactivated or changes their password must lose an open socket too, so the
consumer asks again before every command and when told that someone's access changed: the
Django session is read afresh from its store (a logged-out session is gone), and Django's own
``get_user`` checks the user is still active and the session's auth hash still matches
(a password change invalidates every other session).
"""

from __future__ import annotations

from importlib import import_module
from types import SimpleNamespace
from typing import Any

from channels.auth import AuthMiddleware
from channels.sessions import CookieMiddleware, InstanceSessionWrapper, SessionMiddleware
from django.conf import settings
from django.contrib import auth

from realtime.tokens import authenticate


class _SocketSessionMiddleware(SessionMiddleware):
    """Channels' session middleware, without its wrapper around ``send``.

    The wrapper saves a changed session when an HTTP response starts; a socket never sends
    one and never changes the login (that happens over HTTP), yet the wrapper looked at the
    session on every frame sent to every viewer (docs/PERFORMANCE.md, busy meeting).
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        scope = wrapper.scope
        del wrapper
        return await self.inner(scope, receive, send)


def socket_auth_stack(inner: Any) -> Any:
    """``channels.auth.AuthMiddlewareStack`` for sockets: cookies, the session, the user."""
    return CookieMiddleware(_SocketSessionMiddleware(AuthMiddleware(inner)))


def current_user(scope: dict[str, Any]) -> Any | None:
    """The socket's user if their login (or API token) is still valid now, else None
    (synchronous)."""
    if scope.get("api_token"):
        found = authenticate(scope["api_token"])
        return found.user if found is not None else None
    connected = scope.get("session")
    key = getattr(connected, "session_key", None)
    if not key:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(key)
    user = auth.get_user(SimpleNamespace(session=store))
    return user if user.is_authenticated else None
