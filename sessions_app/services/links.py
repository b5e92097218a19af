"""Share links: a link lets any logged-in user of the site join a session as viewer or
controller, until it expires, is used up or is revoked.

The token is ``secrets.token_urlsafe(32)`` (256 random bits); only its SHA-256 digest is
stored, and a link is found by its digest (a unique index), so neither the database nor a
timing difference gives a working link away. Joining locks the link row, so a use limit
holds however many people follow the link at once.

Choices: joining counts a use only when it lets someone in or raises their role (a member
who opens the link again just enters); a member a manager removed after they joined through
a link cannot come back through the same link (removal sticks; send them a new one);
the owner opening their own link just enters.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from realtime.vocabulary import Role
from sessions_app.models import SessionShare, ShareLink, ShareLinkJoin
from sessions_app.services.errors import Forbidden, InvalidData, LinkUnusable, NotFound
from sessions_app.services.members import managed_session, member_changed_event, member_role

TOKEN_BYTES = 32
MAX_TOKEN_CHARS = 100
MIN_LIFETIME = timedelta(minutes=5)
MAX_LIFETIME = timedelta(days=90)
MAX_USES = 10_000


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def share_link_create(
    *, session_id: Any, actor: AbstractBaseUser | None, role: object, expires_in: timedelta,
    max_uses: int | None = None,
) -> tuple[ShareLink, str]:
    """A new link and its token (shown once: only the digest is kept)."""
    role = member_role(role)
    if not MIN_LIFETIME <= expires_in <= MAX_LIFETIME:
        raise InvalidData("a link lasts between 5 minutes and 90 days")
    if max_uses is not None and not 1 <= max_uses <= MAX_USES:
        raise InvalidData(f"the use limit is 1 to {MAX_USES}, or none")
    session = managed_session(session_id, actor)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    link = ShareLink.objects.create(
        session=session, token_digest=token_digest(token), role=role, created_by=actor,
        expires_at=timezone.now() + expires_in, max_uses=max_uses,
    )
    return link, token


@transaction.atomic
def share_link_revoke(*, link_id: Any, actor: AbstractBaseUser | None) -> ShareLink:
    """Nobody joins through the link from now on (who joined stays a member)."""
    try:
        link = ShareLink.objects.select_for_update().get(pk=int(link_id))
    except (ShareLink.DoesNotExist, TypeError, ValueError):
        raise NotFound("no such link") from None
    managed_session(link.session_id, actor)
    if link.revoked_at is None:
        link.revoked_at = timezone.now()
        link.save(update_fields=["revoked_at"])
    return link


def find_link(token: object) -> ShareLink:
    """The link a token opens (NotFound when it opens none)."""
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS:
        raise NotFound("this is not an invitation link")
    digest = token_digest(token)
    link = ShareLink.objects.select_related("session", "session__owner").filter(
        token_digest=digest
    ).first()
    if link is None or not hmac.compare_digest(link.token_digest, digest):
        raise NotFound("this is not an invitation link")
    return link


@dataclass(frozen=True)
class Joined:
    session_id: Any
    role: str
    joined: bool  # False: the user was already in (nothing changed, no use counted)


_RANK = {Role.VIEWER: 1, Role.CONTROLLER: 2}


@transaction.atomic
def share_link_join(*, token: object, user: AbstractBaseUser) -> Joined:
    """Let ``user`` into the link's session with the link's role."""
    found = find_link(token)
    link = ShareLink.objects.select_for_update().get(pk=found.pk)
    session = managed_session(link.session_id, None)
    if session.owner_id == user.pk:
        return Joined(session.pk, Role.OWNER, joined=False)
    share = SessionShare.objects.filter(session=session, user=user).first()
    if share is not None and _RANK[share.role] >= _RANK[Role(link.role)]:
        return Joined(session.pk, share.role, joined=False)
    reason = link.unusable_because(timezone.now())
    if reason is not None:
        raise LinkUnusable(f"this invitation link is {reason}")
    came_before = ShareLinkJoin.objects.filter(link=link, user=user).first()
    if came_before is not None and share is None:
        raise Forbidden(
            "you were removed from this meeting after joining through this link; ask its "
            "owner to invite you again"
        )
    previous = share.role if share is not None else None
    if share is None:
        share = SessionShare(session=session, user=user)
    share.can_control = link.role == Role.CONTROLLER
    share.save()
    if came_before is None:
        ShareLinkJoin.objects.create(link=link, user=user, role=link.role)
    else:
        came_before.role = link.role
        came_before.save(update_fields=["role"])
    link.uses += 1
    link.save(update_fields=["uses"])
    member_changed_event(
        session, user=user.get_username(), role=link.role, previous=previous,
        by=user.get_username(), link=str(link.pk),
    )
    return Joined(session.pk, link.role, joined=True)
