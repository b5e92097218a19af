"""CSRF on every form, unguessable ids, no access without login."""

import uuid

import pytest
from django.test import Client

from realtime.vocabulary import Access
from sessions_app import services
from sessions_app.access import session_access

pytestmark = pytest.mark.django_db


def test_every_post_needs_csrf(owner):
    strict = Client(enforce_csrf_checks=True)
    assert strict.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"}).status_code == 403
    strict.force_login(owner)
    assert strict.post("/sessions/new/", {"workflow": "demo"}).status_code == 403
    assert strict.post("/accounts/logout/").status_code == 403
    assert strict.post("/admin/logout/").status_code == 403


def test_session_ids_are_random_uuid4(owner):
    ids = [services.session_create(owner=owner, workflow_slug="quick-chat").pk for _ in range(5)]
    assert all(isinstance(i, uuid.UUID) and i.version == 4 for i in ids)
    assert len(set(ids)) == 5


def test_admin_is_staff_only(client, owner):
    client.force_login(owner)
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response.url


def test_staff_roles_in_the_room_follow_admin_permissions(owner):
    from django.contrib.auth.models import Permission

    from tests.conftest import make_user

    session = services.session_create(owner=owner, workflow_slug="quick-chat")
    viewer = make_user("viewstaff", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_session", content_type__app_label="sessions_app"))
    editor = make_user("editstaff", is_staff=True)
    editor.user_permissions.add(Permission.objects.get(codename="change_session", content_type__app_label="sessions_app"))
    plain_staff = make_user("plainstaff", is_staff=True)
    assert session_access(user=viewer, session=session) == Access.WATCH
    assert session_access(user=editor, session=session) == Access.CONTROL
    assert session_access(user=plain_staff, session=session) is None
    assert session_access(user=owner, session=session) == Access.CONTROL
