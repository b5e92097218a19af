"""Members in the admin: the session's inline goes through the member services; links are
listed with who joined and revoked."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from realtime.models import SessionEvent
from sessions_app import services
from sessions_app.models import SessionShare, ShareLink
from tests.sessions_app.factories import make_session, make_user

pytestmark = pytest.mark.django_db


def change_url(session):
    return reverse("admin:sessions_app_session_change", args=[session.pk])


def form_data(client, session, rows=None, new=None):
    """The change form as the page posts it, with the member rows edited: ``rows`` maps a
    member's username to a role or "DELETE"; ``new`` is (user id, role) for an added row."""
    data = {"title": session.title, "_save": "Save"}
    for inline in client.get(change_url(session)).context["inline_admin_formsets"]:
        formset = inline.formset
        total = len(formset.forms)
        if formset.model is SessionShare and new:
            data[f"{formset.prefix}-{total}-user"] = new[0]
            data[f"{formset.prefix}-{total}-role"] = new[1]
            total += 1
        for key, value in formset.management_form.initial.items():
            data[f"{formset.prefix}-{key}"] = value
        data[f"{formset.prefix}-TOTAL_FORMS"] = total
        for index, form in enumerate(formset.forms):
            data[f"{formset.prefix}-{index}-id"] = form.instance.pk
            data[f"{formset.prefix}-{index}-session"] = session.pk
            if formset.model is SessionShare:
                name = form.instance.user.get_username()
                data[f"{formset.prefix}-{index}-user"] = form.instance.user_id
                change = (rows or {}).get(name, form.instance.role)
                if change == "DELETE":
                    data[f"{formset.prefix}-{index}-DELETE"] = "on"
                    change = form.instance.role
                data[f"{formset.prefix}-{index}-role"] = change
    return data


def changes(session):
    return [
        (d["user"], d["role"], d["previous"], d["by"])
        for d in SessionEvent.objects.filter(session_id=session.pk, event="member_changed")
        .order_by("seq").values_list("data", flat=True)
    ]


def test_admin_adds_changes_and_removes_members_through_the_services(admin_client, admin_user):
    owner = make_user("olivia")
    session = make_session(owner=owner)
    bob = make_user("bob")
    response = admin_client.post(change_url(session), form_data(admin_client, session, new=(bob.pk, "viewer")))
    assert response.status_code == 302, response.context and response.context["errors"]
    assert SessionShare.objects.get(session=session).role == "viewer"
    admin_client.post(change_url(session), form_data(admin_client, session, rows={"bob": "controller"}))
    assert SessionShare.objects.get(session=session).role == "controller"
    admin_client.post(change_url(session), form_data(admin_client, session, rows={"bob": "DELETE"}))
    assert not SessionShare.objects.filter(session=session).exists()
    assert changes(session) == [
        ("bob", "viewer", None, "admin"),
        ("bob", "controller", "viewer", "admin"),
        ("bob", None, "controller", "admin"),
    ]


def test_adding_the_owner_in_the_admin_is_refused_and_stores_nothing(admin_client):
    owner = make_user("olivia")
    session = make_session(owner=owner)
    response = admin_client.post(change_url(session), form_data(admin_client, session, new=(owner.pk, "viewer")),
                                 follow=True)
    assert "olivia owns this session" in response.content.decode()
    assert not SessionShare.objects.exists() and changes(session) == []


def test_staff_who_may_only_view_see_members_read_only(client):
    from django.contrib.auth.models import Permission

    owner = make_user("olivia")
    session = make_session(owner=owner)
    services.session_share(session=session, user=make_user("bob"))
    staff = make_user("viewer", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(content_type__app_label="sessions_app", codename="view_session"))
    client.force_login(staff)
    page = client.get(change_url(session))
    members = next(i for i in page.context["inline_admin_formsets"] if i.formset.model is SessionShare)
    assert not members.has_add_permission and not members.has_delete_permission
    assert "bob" in page.content.decode()


def test_links_are_listed_with_who_joined_and_revoked_from_the_admin(admin_client):
    owner = make_user("olivia")
    session = make_session(owner=owner)
    link, token = services.share_link_create(
        session_id=session.pk, actor=owner, role="viewer", expires_in=timedelta(hours=1)
    )
    services.share_link_join(token=token, user=make_user("bob"))
    page = admin_client.get(reverse("admin:sessions_app_sharelink_change", args=[link.pk])).content.decode()
    assert "bob" in page and "usable" in page
    admin_client.post(reverse("admin:sessions_app_sharelink_changelist"),
                      {"action": "revoke_links", "_selected_action": [link.pk], "index": 0})
    link.refresh_from_db()
    assert link.revoked_at is not None
    assert admin_client.get(reverse("admin:sessions_app_sharelink_add")).status_code == 403
    assert ShareLink.objects.count() == 1
