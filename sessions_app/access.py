"""Who may do what in a session: the one rule, used by pages, admin, commands and sockets.

The owner controls; staff control with the admin's change permission and watch with its view
permission (the same rule as the admin); a share grants watch or control. Members are
managed (added, their role changed, removed; links made and revoked) by the owner and by
staff with the admin's ``change_sessionshare`` permission, nobody else.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

from realtime.vocabulary import Access
from sessions_app.models import Session, SessionShare


def session_access(*, user: AbstractBaseUser, session: Session) -> Access | None:
    if not user.is_authenticated or not user.is_active:
        return None
    if session.owner_id == user.pk:
        return Access.CONTROL
    if user.is_staff and user.has_perm("sessions_app.change_session"):
        return Access.CONTROL
    share = SessionShare.objects.filter(session=session, user=user).first()
    if share is not None:
        return Access.CONTROL if share.can_control else Access.WATCH
    if user.is_staff and user.has_perm("sessions_app.view_session"):
        return Access.WATCH
    return None


MANAGE_MEMBERS_PERMISSION = "sessions_app.change_sessionshare"


def can_manage_members(*, user: AbstractBaseUser, session: Session) -> bool:
    if not user.is_authenticated or not user.is_active:
        return False
    if session.owner_id == user.pk:
        return True
    return bool(user.is_staff and user.has_perm(MANAGE_MEMBERS_PERMISSION))
