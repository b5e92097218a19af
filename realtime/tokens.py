"""API tokens: how a program (an AG-UI client, a WebSocket client without a browser) proves
who it acts for.

``amr_`` + 43 URL-safe characters (32 random bytes). Only the SHA-256 digest is stored and a
token is found by its digest, then compared with ``hmac.compare_digest``; the secret itself is
returned once by ``issue_token`` and never logged (a failed attempt logs the token's first
characters at most). Tokens are read from ``Authorization: Bearer`` only, never from a URL.
A revoked token stops working at once: every request and command looks it up again, and
revoking announces an access change so open streams and sockets check now.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db import transaction
from django.utils import timezone

from realtime.models import ApiToken
from realtime.revocation import announce_access_changed
from realtime.vocabulary import Access

log = logging.getLogger(__name__)

PREFIX = "amr_"
LAST_USED_EVERY_SECONDS = 60  # last_used_at is refreshed at most this often (one UPDATE)


@dataclass(frozen=True)
class TokenUser:
    user: Any
    scope: Access
    token_id: int


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_token(*, user: Any, scope: str = Access.WATCH, name: str = "") -> tuple[ApiToken, str]:
    """A new token for ``user``: (its row, the secret to show once)."""
    scope = Access(scope)
    secret = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user, name=name[:100], prefix=secret[:10], digest=_digest(secret), scope=scope
    )
    return token, secret


def revoke_token(*, token: ApiToken) -> None:
    """Stop the token now; open streams and sockets using it are told to check again."""
    with transaction.atomic():
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
        transaction.on_commit(lambda: announce_access_changed(user_id=token.user_id))


def bearer_secret(authorization: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer <token>`` value, None if there is none."""
    if not authorization:
        return None
    kind, _, value = authorization.strip().partition(" ")
    if kind.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate(secret: str) -> TokenUser | None:
    """The active user and scope of a live token, None otherwise (synchronous)."""
    digest = _digest(secret)
    token = ApiToken.objects.select_related("user").filter(digest=digest).first()
    if token is None or not hmac.compare_digest(token.digest, digest):
        log.info("API token refused: unknown token")  # nothing of what was sent is logged
        return None
    if token.revoked_at is not None or not token.user.is_active:
        log.info("API token #%s refused: %s", token.pk,
                 "revoked" if token.revoked_at else "its user is inactive")
        return None
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > LAST_USED_EVERY_SECONDS:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return TokenUser(user=token.user, scope=Access(token.scope), token_id=token.pk)


class RateLimiter:
    """Requests per token per minute, in this process (a token bucket per token id): a
    program gone wrong cannot flood the endpoints with one token. ``API_TOKEN_RATE_PER_MINUTE``
    each process (so N processes allow N times that in all)."""

    def __init__(self) -> None:
        self.buckets: dict[int, tuple[float, float]] = {}

    def allow(self, token_id: int) -> bool:
        rate = float(settings.API_TOKEN_RATE_PER_MINUTE)
        now = time.monotonic()
        level, at = self.buckets.get(token_id, (rate, now))
        level = min(rate, level + (now - at) * rate / 60.0)
        if level < 1:
            self.buckets[token_id] = (level, now)
            return False
        self.buckets[token_id] = (level - 1, now)
        if len(self.buckets) > 10_000:  # forget the idle ones
            self.buckets = {k: v for k, v in self.buckets.items() if now - v[1] < 60}
        return True


RATE = RateLimiter()


def within_scope(access: Access | None, scope: Access) -> Access | None:
    """What a token may do in a session: its user's access, never above its scope."""
    if access is None:
        return None
    return Access.WATCH if scope == Access.WATCH else access


def header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class TokenAuthMiddleware:
    """ASGI: a WebSocket with ``Authorization: Bearer`` acts as the token's user, without
    cookies (the cookie session, if any, is ignored). ``current_user`` checks the token again
    before every command."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        secret = bearer_secret(header(scope, b"authorization"))
        if secret is not None:
            found = await database_sync_to_async(authenticate)(secret)
            scope = dict(scope, session=None, api_token=secret,
                         api_scope=found.scope if found else None,
                         user=found.user if found else AnonymousUser())
        return await self.inner(scope, receive, send)


class BearerWithoutOrigin:
    """ASGI: a WebSocket that carries a bearer token and no ``Origin`` goes straight to
    ``with_token``; everything else to ``checked`` (origin validation).

    Browsers always send ``Origin`` on a WebSocket, so a page on another site cannot get
    past the origin check this way (and cannot set ``Authorization`` on a WebSocket at all);
    a program without a browser sends no ``Origin`` and proves itself with its token."""

    def __init__(self, *, checked: Any, with_token: Any) -> None:
        self.checked = checked
        self.with_token = with_token

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if header(scope, b"origin") is None and bearer_secret(header(scope, b"authorization")):
            return await self.with_token(scope, receive, send)
        return await self.checked(scope, receive, send)
