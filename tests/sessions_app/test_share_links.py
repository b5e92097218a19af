"""Share links end to end over HTTP: made by the owner, joined by anyone logged in, refused
with a clear page when revoked, expired, used up or not a link; and the People endpoints."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from realtime.models import SessionEvent
from sessions_app import services
from sessions_app.models import SessionShare, ShareLink, ShareLinkJoin
from sessions_app.services.errors import Forbidden, InvalidData, LinkUnusable, NotFound
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(owner):
    return services.session_create(owner=owner, workflow_slug="demo", title="Q3")


def make_link(client, session, **body):
    response = client.post(f"/sessions/{session.pk}/links/", body)
    assert response.status_code == 201, response.content
    return response.json()


def join_path(url):
    return url.split("testserver", 1)[1]


def test_owner_makes_a_link_and_only_its_digest_is_stored(client, owner, session):
    client.force_login(owner)
    made = make_link(client, session, role="controller", expires_hours="2", max_uses="3")
    token = made["url"].rstrip("/").rsplit("/", 1)[1]
    assert len(token) >= 43  # token_urlsafe(32)
    link = ShareLink.objects.get()
    assert link.token_digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in json.dumps(list(ShareLink.objects.values()), default=str)
    assert made["link"] | {"created_at": None, "expires_at": None} == {
        "id": link.pk, "role": "controller", "created_by": "alice", "created_at": None,
        "expires_at": None, "max_uses": 3, "uses": 0, "unusable": None, "joined": [],
    }


def test_a_user_joins_through_the_link_and_enters_the_room(client, owner, session):
    client.force_login(owner)
    url = join_path(make_link(client, session, role="viewer")["url"])
    bob = make_user("bob")
    client.force_login(bob)
    page = client.get(url)
    assert page.status_code == 200 and "invites you to this meeting as" in page.content.decode()
    assert not SessionShare.objects.exists()  # a GET joins nobody
    response = client.post(url)
    assert response.status_code == 302 and response.url == session.get_absolute_url()
    assert client.get(response.url).status_code == 200
    assert SessionShare.objects.get(user=bob).role == "viewer"
    event = SessionEvent.objects.get(session_id=session.pk, event="member_changed")
    link = ShareLink.objects.get()
    assert event.data == {"user": "bob", "role": "viewer", "previous": None, "by": "bob", "link": str(link.pk)}
    client.force_login(owner)
    listed = client.get(f"/sessions/{session.pk}/links/").json()["links"][0]
    assert listed["uses"] == 1 and [j["user"] for j in listed["joined"]] == ["bob"]


def test_following_the_link_again_counts_no_second_use(client, owner, session):
    link, token = services.share_link_create(
        session_id=session.pk, actor=owner, role="viewer", expires_in=timedelta(hours=1), max_uses=1
    )
    bob = make_user("bob")
    assert services.share_link_join(token=token, user=bob).joined is True
    again = services.share_link_join(token=token, user=bob)  # used up, but bob is in already
    assert again.joined is False
    assert services.share_link_join(token=token, user=owner).joined is False
    link.refresh_from_db()
    assert link.uses == 1


def _refused_page(client, url, status, text):
    for response in (client.get(url), client.post(url)):
        assert response.status_code == status
        body = response.content.decode()
        assert "This invitation cannot be used" in body and text in body


def test_a_revoked_link_gets_a_clear_page_and_lets_nobody_in(client, owner, session):
    link, token = services.share_link_create(
        session_id=session.pk, actor=owner, role="viewer", expires_in=timedelta(hours=1)
    )
    client.force_login(owner)
    assert client.post(f"/sessions/{session.pk}/links/{link.pk}/revoke/").json()["link"]["unusable"] == "revoked"
    client.force_login(make_user("bob"))
    _refused_page(client, f"/join/{token}/", 410, "is revoked")
    assert not SessionShare.objects.exists()


def test_an_expired_link_gets_a_clear_page(client, owner, session):
    link, token = services.share_link_create(
        session_id=session.pk, actor=owner, role="viewer", expires_in=timedelta(hours=1)
    )
    ShareLink.objects.filter(pk=link.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    client.force_login(make_user("bob"))
    _refused_page(client, f"/join/{token}/", 410, "is expired")
    assert not SessionShare.objects.exists() and not ShareLinkJoin.objects.exists()


def test_a_link_beyond_its_use_limit_gets_a_clear_page(client, owner, session):
    _, token = services.share_link_create(
        session_id=session.pk, actor=owner, role="viewer", expires_in=timedelta(hours=1), max_uses=1
    )
    services.share_link_join(token=token, user=make_user("bob"))
    client.force_login(make_user("carol"))
    _refused_page(client, f"/join/{token}/", 410, "is used up")
    assert list(SessionShare.objects.values_list("user__username", flat=True)) == ["bob"]


@pytest.mark.parametrize("token", ["not-a-link", "x" * 43, "%00", "a" * 300])
def test_a_token_that_is_no_link_gets_a_404_page(client, owner, token):
    client.force_login(owner)
    _refused_page(client, f"/join/{token}/", 404, "is not an invitation link")
    assert not SessionShare.objects.exists()


def test_a_member_removed_after_joining_cannot_come_back_through_the_same_link(client, owner, session):
    _, token = services.share_link_create(
        session_id=session.pk, actor=owner, role="viewer", expires_in=timedelta(hours=1)
    )
    bob = make_user("bob")
    services.share_link_join(token=token, user=bob)
    services.member_remove(session_id=session.pk, actor=owner, username="bob")
    with pytest.raises(Forbidden):
        services.share_link_join(token=token, user=bob)
    client.force_login(bob)
    assert client.post(f"/join/{token}/").status_code == 403
    assert not SessionShare.objects.exists()


def test_the_join_page_needs_a_login(client, owner, session):
    _, token = services.share_link_create(
        session_id=session.pk, actor=owner, role="viewer", expires_in=timedelta(hours=1)
    )
    response = client.post(f"/join/{token}/")
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")


def test_link_bad_input_and_non_owners_are_refused(client, owner, session):
    with pytest.raises(InvalidData):
        services.share_link_create(session_id=session.pk, actor=owner, role="admin", expires_in=timedelta(hours=1))
    with pytest.raises(InvalidData):
        services.share_link_create(session_id=session.pk, actor=owner, role="viewer", expires_in=timedelta(days=365))
    with pytest.raises(InvalidData):
        services.share_link_create(session_id=session.pk, actor=owner, role="viewer", expires_in=timedelta(hours=1), max_uses=0)
    with pytest.raises(NotFound):
        services.share_link_revoke(link_id="nope", actor=owner)
    member = make_user("member")
    services.member_add(session_id=session.pk, actor=owner, username="member", role="controller")
    with pytest.raises(Forbidden):
        services.share_link_create(session_id=session.pk, actor=member, role="viewer", expires_in=timedelta(hours=1))
    client.force_login(member)
    assert client.post(f"/sessions/{session.pk}/links/", {"role": "viewer"}).status_code == 403
    assert client.get(f"/sessions/{session.pk}/links/").status_code == 403
    assert not ShareLink.objects.exists()
    client.force_login(owner)
    assert client.post(f"/sessions/{session.pk}/links/", {"role": "viewer", "max_uses": "many"}).status_code == 400
    assert client.post(f"/sessions/{session.pk}/links/999/revoke/").status_code == 404
    assert not ShareLink.objects.exists()


def test_unusable_link_error_is_raised_by_the_service(owner, session):
    link, token = services.share_link_create(
        session_id=session.pk, actor=owner, role="viewer", expires_in=timedelta(hours=1)
    )
    services.share_link_revoke(link_id=link.pk, actor=owner)
    with pytest.raises(LinkUnusable):
        services.share_link_join(token=token, user=make_user("bob"))


# ----------------------------------------------------------------- the People endpoints


def test_search_lists_users_to_add_to_managers_only(client, owner, session):
    make_user("bob")
    make_user("bobby", first_name="Bob")
    make_user("robert", first_name="Bob")
    make_user("bobinactive", is_active=False)
    services.member_add(session_id=session.pk, actor=owner, username="bobby", role="viewer")
    client.force_login(owner)
    found = client.get(f"/sessions/{session.pk}/people/search/", {"q": "bo"}).json()["users"]
    assert [u["username"] for u in found] == ["bob", "robert"]
    assert client.get(f"/sessions/{session.pk}/people/search/", {"q": "b"}).json()["users"] == []
    for who in ("bobby", "robert"):  # a member, a stranger
        client.force_login(type(owner).objects.get(username=who))
        response = client.get(f"/sessions/{session.pk}/people/search/", {"q": "bo"})
        assert response.status_code == 403 and "users" not in response.json()
    client.logout()
    assert client.get(f"/sessions/{session.pk}/people/search/", {"q": "bo"}).status_code == 401


def test_people_endpoint_changes_members_and_refuses_bad_input(client, owner, session):
    make_user("bob")
    client.force_login(owner)
    url = f"/sessions/{session.pk}/people/"
    ok = client.post(url, {"action": "add", "username": "bob", "role": "viewer"})
    assert ok.status_code == 200 and ok.json()["members"] == {"alice": "owner", "bob": "viewer"}
    ok = client.post(url, json.dumps({"action": "role", "username": "bob", "role": "controller"}),
                     content_type="application/json")
    assert ok.json()["members"]["bob"] == "controller"
    for body, status, code in [
        ({"action": "add", "username": "ghost", "role": "viewer"}, 404, "not_found"),
        ({"action": "add", "username": "alice", "role": "viewer"}, 400, "invalid_data"),
        ({"action": "add", "username": "bob", "role": "viewer"}, 409, "invalid_state"),
        ({"action": "role", "username": "bob", "role": "superuser"}, 400, "invalid_data"),
        ({"action": "promote", "username": "bob"}, 400, "invalid_data"),
    ]:
        response = client.post(url, body)
        assert (response.status_code, response.json()["code"]) == (status, code), body
        assert response.json()["error"]
    assert SessionShare.objects.get().role == "controller"
    assert client.post(url, {"action": "remove", "username": "bob"}).json()["members"] == {"alice": "owner"}
    assert client.get(url).status_code == 405


def test_a_non_owner_cannot_use_the_people_endpoint(client, owner, session):
    make_user("bob")
    member = make_user("member")
    services.member_add(session_id=session.pk, actor=owner, username="member", role="controller")
    client.force_login(member)
    response = client.post(f"/sessions/{session.pk}/people/", {"action": "add", "username": "bob", "role": "viewer"})
    assert response.status_code == 403
    assert list(SessionShare.objects.values_list("user__username", flat=True)) == ["member"]


def test_the_room_tells_the_page_who_may_manage_members(client, owner, session):
    member = make_user("member")
    services.member_add(session_id=session.pk, actor=owner, username="member", role="controller")

    def config():
        html = client.get(session.get_absolute_url()).content.decode()
        return json.loads(html.split('id="room-config"', 1)[1].split(">", 1)[1].split("</script>", 1)[0])

    client.force_login(owner)
    assert config()["can_manage"] is True and config()["csrf_token"]
    client.force_login(member)
    assert config()["can_manage"] is False
