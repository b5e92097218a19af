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

from django.conf import settings
from django.contrib import auth

from realtime.tokens import authenticate


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
