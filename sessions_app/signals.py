"""What other apps must hear about sessions and their users, whichever path changed them.

- Every session has an event log in realtime from its creation to its deletion. Signals
  rather than a call in ``session_create``: sessions are also created outside the service
  (fixtures, the shell) and deleted by the admin, by a cascade from their owner, or from a
  queryset, and every one of those paths must keep session and log together. (``bulk_create``
  sends no signal: a session made that way has no log until one is opened.)
- Open sockets check their access again at once when it may have dropped: a user logged out,
  was deactivated or changed their password (``user_logged_out``, the user saved), or their
  share of a session was changed or removed (realtime.revocation), after the change commits.
  Staff see sessions through the admin's permissions, so a change of a user's permissions or
  groups, or of a group's permissions, is announced for the users it concerns too (cheap:
  the sockets of those users check again; nobody else's).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from realtime.eventlog import delete_log, open_log
from realtime.revocation import announce_access_changed
from sessions_app.models import Session, SessionShare


def _open_log(sender: type[Session], instance: Session, created: bool, **kwargs: Any) -> None:
    if created:
        open_log(session_id=instance.pk)


def _delete_log(sender: type[Session], instance: Session, **kwargs: Any) -> None:
    delete_log(session_id=instance.pk)


def _announce(user_id: Any, session_id: Any = None) -> None:
    transaction.on_commit(lambda: announce_access_changed(user_id=user_id, session_id=session_id))


def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is None:
        return
    # Django sends this signal before it flushes the session: end it in the store first, or
    # a socket checking at once (in another process) still finds the login and stays open.
    session = getattr(request, "session", None)
    if session is not None and session.session_key:
        session.delete()
    _announce(user.pk)


def _user_saved(sender: Any, instance: Any, created: bool, update_fields: Any, **kwargs: Any) -> None:
    # A login only stamps last_login; any other save may have deactivated the user or
    # changed their password (the sockets tell which).
    if not created and set(update_fields or ()) != {"last_login"}:
        _announce(instance.pk)


def _share_changed(sender: type[SessionShare], instance: SessionShare, **kwargs: Any) -> None:
    _announce(instance.user_id, instance.session_id)


_M2M_CHANGES = {"post_add", "post_remove", "post_clear"}


def _user_rights_changed(
    sender: Any, instance: Any, action: str, pk_set: Any, **kwargs: Any
) -> None:
    """A user's permissions or groups changed, from the user's side (``instance`` is the
    user) or from the permission's or group's (``pk_set`` holds the users; a clear names
    nobody, so its users are read before it)."""
    if isinstance(instance, get_user_model()):
        if action in _M2M_CHANGES:
            _announce(instance.pk)
    elif action == "pre_clear":
        for user_id in instance.user_set.values_list("pk", flat=True):
            _announce(user_id)
    elif action in _M2M_CHANGES and pk_set:
        for user_id in pk_set:
            _announce(user_id)


def _group_permissions_changed(sender: Any, instance: Any, action: str, **kwargs: Any) -> None:
    """A group's permissions changed: every user in it (one query for their ids)."""
    if action not in _M2M_CHANGES:
        return
    groups = [instance] if isinstance(instance, Group) else Group.objects.filter(
        pk__in=kwargs.get("pk_set") or ()
    )
    user_ids = set(
        get_user_model().objects.filter(groups__in=groups).values_list("pk", flat=True)
    )
    for user_id in user_ids:
        _announce(user_id)


def connect() -> None:
    post_save.connect(_open_log, sender=Session, dispatch_uid="sessions_app.open_log")
    post_delete.connect(_delete_log, sender=Session, dispatch_uid="sessions_app.delete_log")
    user_logged_out.connect(_logged_out, dispatch_uid="sessions_app.logged_out")
    post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid="sessions_app.user_saved")
    post_save.connect(_share_changed, sender=SessionShare, dispatch_uid="sessions_app.share_saved")
    post_delete.connect(_share_changed, sender=SessionShare, dispatch_uid="sessions_app.share_deleted")
    user_model = get_user_model()
    m2m_changed.connect(_user_rights_changed, sender=user_model.user_permissions.through,
                        dispatch_uid="sessions_app.user_permissions")
    m2m_changed.connect(_user_rights_changed, sender=user_model.groups.through,
                        dispatch_uid="sessions_app.user_groups")
    m2m_changed.connect(_group_permissions_changed, sender=Group.permissions.through,
                        dispatch_uid="sessions_app.group_permissions")
