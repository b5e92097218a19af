"""Pages: login, session list, creating a session, the room and its access rules."""

import json

import pytest

from sessions_app import services
from sessions_app.models import NodeState, Session
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def test_login_page_is_djangos(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="username"' in response.content and b"csrfmiddlewaretoken" in response.content


def test_pages_need_login(client):
    assert client.get("/sessions/").status_code == 302
    assert client.get("/sessions/").url.startswith("/accounts/login/")


def test_list_shows_mine_and_shared_not_others(client, owner):
    bob = make_user("bob")
    mine = services.session_create(owner=owner, workflow_slug="demo", title="Mine")
    shared = services.session_create(owner=bob, workflow_slug="demo", title="Shared with me")
    services.session_share(session=shared, user=owner)
    services.session_create(owner=bob, workflow_slug="demo", title="Not mine")
    client.force_login(owner)
    text = client.get("/sessions/").content.decode()
    assert "Mine" in text and "Shared with me" in text and "Not mine" not in text
    assert mine.get_absolute_url() in text


def test_list_shows_my_role_and_the_member_count(client, owner, django_assert_max_num_queries):
    bob, carol = make_user("bob"), make_user("carol")
    mine = services.session_create(owner=owner, workflow_slug="demo", title="Mine")
    services.session_share(session=mine, user=bob, can_control=True)
    services.session_share(session=mine, user=carol)
    controlled = services.session_create(owner=bob, workflow_slug="demo", title="I control")
    services.session_share(session=controlled, user=owner, can_control=True)
    watched = services.session_create(owner=carol, workflow_slug="demo", title="I watch")
    services.session_share(session=watched, user=owner)
    client.force_login(owner)
    with django_assert_max_num_queries(8):  # one query for the list, whatever its length
        html = client.get("/sessions/").content.decode()

    def row(session):
        start = html.index(f'data-testid="session-{session.pk}"')
        cells = html[start:html.index("</tr>", start)]
        role = cells.split('data-testid="role">')[1].split("<")[0]
        members = cells.split('data-testid="members">')[1].split("<")[0]
        return role, int(members)

    assert row(mine) == ("owner", 3)
    assert row(controlled) == ("controller", 2)
    assert row(watched) == ("viewer", 2)


def test_create_session_lands_in_room(client, owner):
    client.force_login(owner)
    response = client.post("/sessions/new/", {"workflow": "demo", "title": "Planning"})
    session = Session.objects.get(title="Planning")
    assert response.status_code == 302 and response.url == session.get_absolute_url()
    assert session.workflow_definition["slug"] == "demo"
    assert NodeState.objects.filter(session=session).count() == len(
        session.workflow_definition["nodes"]
    )
    room = client.get(response.url)
    config = json.loads(
        room.content.decode().split('id="room-config"', 1)[1].split(">", 1)[1].split("</script>", 1)[0]
    )
    assert config["session_id"] == str(session.pk) and config["can_control"] is True
    assert config["ws_path"] == f"/ws/sessions/{session.pk}/"


def test_create_rejects_unknown_workflow_without_writing(client, owner):
    client.force_login(owner)
    response = client.post("/sessions/new/", {"workflow": "nope", "title": "x"})
    assert response.status_code == 400
    assert Session.objects.count() == 0


def test_create_needs_csrf(owner):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(owner)
    assert strict.post("/sessions/new/", {"workflow": "demo"}).status_code == 403
    assert Session.objects.count() == 0


def test_room_access(client, owner, other_user):
    session = services.session_create(owner=owner, workflow_slug="demo", title="t")
    client.force_login(other_user)
    assert client.get(session.get_absolute_url()).status_code == 403
    assert client.get("/sessions/00000000-0000-4000-8000-000000000000/").status_code == 404
    services.session_share(session=session, user=other_user)
    room = client.get(session.get_absolute_url())
    assert room.status_code == 200 and b'"can_control": false' in room.content


def test_titles_are_escaped_in_pages(client, owner):
    services.session_create(owner=owner, workflow_slug="demo", title="<img src=x onerror=alert(1)>")
    client.force_login(owner)
    text = client.get("/sessions/").content.decode()
    assert "<img src=x" not in text and "&lt;img src=x" in text
