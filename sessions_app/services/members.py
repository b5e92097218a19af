"""Who belongs to a session: add a member, change their role, remove them.

Each change is one transaction that locks the session row first, so two managers acting on
the same member at once are applied one after the other: the second sees the first's result
(``already a member``, ``not a member``, or a role to change from) and the member row, the
event log and the room end in one state. The change is logged as ``member_changed`` (who
changed what for whom) with the row; the row's save or delete tells the member's open sockets
to check their access again (``sessions_app.signals``), once the transaction commits.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from realtime.publisher import publish_sync
from realtime.vocabulary import MEMBER_ROLES, EventName, Role
from sessions_app.access import can_manage_members
from sessions_app.models import Session, SessionShare
from sessions_app.services.errors import Forbidden, InvalidData, InvalidState, NotFound
from sessions_app.services.sessions import locked_session


def member_role(role: object) -> Role:
    """A role a member can be given, or InvalidData."""
    if not isinstance(role, str) or role not in MEMBER_ROLES:
        raise InvalidData(f"no such role {str(role)[:40]!r}: a member is a viewer or a controller")
    return Role(role)


def member_changed_event(
    session: Session, *, user: str, role: str | None, previous: str | None, by: str | None,
    link: str | None = None,
) -> None:
    data: dict[str, Any] = {"user": user, "role": role, "previous": previous, "by": by}
    if link is not None:
        data["link"] = link
    publish_sync(session_id=session.pk, event=EventName.MEMBER_CHANGED, data=data)


def managed_session(session_id: Any, actor: AbstractBaseUser | None) -> Session:
    """The session, locked; Forbidden unless ``actor`` may manage its members (None: the
    system itself, e.g. the CLI or a data fix)."""
    session = locked_session(session_id)
    if actor is not None and not can_manage_members(user=actor, session=session):
        raise Forbidden("only the owner (or staff allowed to manage members) can do this")
    return session


def _member(session: Session, username: object) -> AbstractBaseUser:
    if not isinstance(username, str) or not username.strip():
        raise InvalidData("name the user to add")
    try:
        user = get_user_model().objects.get(username=username.strip(), is_active=True)
    except get_user_model().DoesNotExist:
        raise NotFound(f"there is no user {username.strip()[:150]!r}") from None
    if user.pk == session.owner_id:
        raise InvalidData(f"{user.get_username()} owns this session")
    return user


def _by(actor: AbstractBaseUser | None) -> str | None:
    return actor.get_username() if actor is not None else None


def _share(session: Session, user: AbstractBaseUser) -> SessionShare | None:
    return SessionShare.objects.filter(session=session, user=user).first()


@transaction.atomic
def member_add(
    *, session_id: Any, actor: AbstractBaseUser | None, username: object, role: object
) -> SessionShare:
    """Let a user in as viewer or controller; InvalidState if they already are a member."""
    role = member_role(role)
    session = managed_session(session_id, actor)
    user = _member(session, username)
    if _share(session, user) is not None:
        raise InvalidState(f"{user.get_username()} is already a member: change their role instead")
    try:
        with transaction.atomic():
            share = SessionShare.objects.create(
                session=session, user=user, can_control=role == Role.CONTROLLER
            )
    except IntegrityError:  # added meanwhile by a writer that did not lock the session
        raise InvalidState(f"{user.get_username()} is already a member") from None
    member_changed_event(session, user=user.get_username(), role=role, previous=None, by=_by(actor))
    return share


@transaction.atomic
def member_set_role(
    *, session_id: Any, actor: AbstractBaseUser | None, username: object, role: object
) -> SessionShare:
    """Change a member's role (lowering it to viewer stops their control at once)."""
    role = member_role(role)
    session = managed_session(session_id, actor)
    user = _member(session, username)
    share = _share(session, user)
    if share is None:
        raise NotFound(f"{user.get_username()} is not a member of this session")
    previous = share.role
    if previous == role:
        return share
    share.can_control = role == Role.CONTROLLER
    share.save(update_fields=["can_control"])
    member_changed_event(
        session, user=user.get_username(), role=role, previous=previous, by=_by(actor)
    )
    return share


@transaction.atomic
def member_remove(*, session_id: Any, actor: AbstractBaseUser | None, username: object) -> None:
    """Remove a member: their open sockets of the session close (4403) once this commits."""
    session = managed_session(session_id, actor)
    user = _member(session, username)
    share = _share(session, user)
    if share is None:
        raise NotFound(f"{user.get_username()} is not a member of this session")
    previous = share.role
    share.delete()
    member_changed_event(
        session, user=user.get_username(), role=None, previous=previous, by=_by(actor)
    )


@transaction.atomic
def session_share(
    *, session: Session, user: AbstractBaseUser, can_control: bool = False
) -> SessionShare | None:
    """Make ``user`` a member with that role whether or not they are one (code and the CLI:
    logged with ``by: null``)."""
    role = Role.CONTROLLER if can_control else Role.VIEWER
    if _share(session, user) is None:
        return member_add(session_id=session.pk, actor=None, username=user.get_username(), role=role)
    return member_set_role(session_id=session.pk, actor=None, username=user.get_username(), role=role)
