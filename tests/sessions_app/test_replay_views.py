"""Replay over HTTP (the log in pages), the replay, fork and compare pages, the shared
replay's command; each with the access rule of the room and its bad input (docs/replay.md)."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from realtime.publisher import publish_sync
from realtime.vocabulary import EventName
from sessions_app import services
from sessions_app.models import Session, SessionShare
from sessions_app.selectors import word_diff
from sessions_app.services.forks import MAX_PROMPT_CHARS, session_fork
from tests.conftest import connect_ws, make_user

pytestmark = pytest.mark.django_db


def session_with_events(owner, n: int) -> Session:
    session = services.session_create(owner=owner, workflow_slug="demo", title="Logged")
    for i in range(n):
        publish_sync(session_id=session.pk, event=EventName.USER_MESSAGE,
                     data={"text": f"m{i}", "user": "alice", "message_id": str(i)})
    return session


def test_events_come_in_pages_as_the_logged_frames(client, owner):
    session = session_with_events(owner, 25)
    client.force_login(owner)
    url = f"/sessions/{session.pk}/events/"
    first = client.get(url, {"after": 0, "limit": 10}).json()
    assert [e["seq"] for e in first["events"]] == list(range(1, 11))
    assert first["last_seq"] == 25 and first["next_after"] == 10 and first["done"] is False
    assert set(first["events"][0]) == {"event", "data", "timestamp", "node_id", "seq", "session_id"}
    last = client.get(url, {"after": 20, "limit": 10}).json()
    assert [e["seq"] for e in last["events"]] == list(range(21, 26)) and last["done"] is True
    assert client.get(url, {"after": 25}).json() == {"events": [], "last_seq": 25, "next_after": 25,
                                                     "done": True}


@pytest.mark.parametrize("query", [{"after": -1}, {"after": "x"}, {"limit": 0}, {"limit": 5001},
                                   {"after": 26}])
def test_events_refuse_bad_pages_and_a_point_beyond_the_log(client, owner, query):
    session = session_with_events(owner, 25)
    client.force_login(owner)
    response = client.get(f"/sessions/{session.pk}/events/", query)
    assert response.status_code == 400 and "error" in response.json()


def test_events_of_another_users_session_are_refused(client, owner):
    session = session_with_events(owner, 3)
    client.force_login(make_user("mallory"))
    assert client.get(f"/sessions/{session.pk}/events/").status_code == 403
    assert client.get(f"/sessions/{session.pk}/replay/").status_code == 403
    assert client.get(f"/sessions/{session.pk}/compare/").status_code == 403
    assert client.get("/sessions/00000000-0000-0000-0000-000000000000/events/").status_code == 404
    client.logout()
    assert client.get(f"/sessions/{session.pk}/events/").status_code == 302


def test_replay_page_is_the_room_with_a_timeline(client, owner):
    session = session_with_events(owner, 4)
    viewer = make_user("vera")
    SessionShare.objects.create(session=session, user=viewer, can_control=False)
    client.force_login(viewer)
    html = client.get(f"/sessions/{session.pk}/replay/").content.decode()
    config = json.loads(html.split('id="room-config" type="application/json">')[1].split("</script>")[0])
    assert config["replay"]["last_seq"] == 4
    assert config["replay"]["events_url"] == f"/sessions/{session.pk}/events/"
    assert config["replay"]["header"]["workflow"]["slug"] == "demo"
    assert 'data-testid="timeline"' in html
    assert 'data-testid="btn-start"' not in html  # no run controls in a replay


def test_fork_page_for_a_controller_and_refusals(client, owner):
    session = services.session_create(owner=owner, workflow_slug="demo", title="Parent")
    client.force_login(owner)
    page = client.get(f"/sessions/{session.pk}/fork/", {"node": "merge"})
    assert page.status_code == 200 and b"Fork and run" in page.content
    before = Session.objects.count()
    too_long = client.post(f"/sessions/{session.pk}/fork/",
                           {"node": "merge", "prompt": "p" * (MAX_PROMPT_CHARS + 1)})
    assert too_long.status_code == 400 and b"longer than" in too_long.content
    missing = client.post(f"/sessions/{session.pk}/fork/", {"node": "nope"})
    assert missing.status_code == 404
    assert Session.objects.count() == before
    made = client.post(f"/sessions/{session.pk}/fork/", {"node": "merge", "instruction": "Be brief."})
    fork = Session.objects.get(parent=session)
    assert made.status_code == 302 and made.url == fork.get_absolute_url()
    assert fork.run_requested and fork.fork_changes == {"instruction": "Be brief."}
    viewer = make_user("vera")
    SessionShare.objects.create(session=session, user=viewer, can_control=False)
    client.force_login(viewer)
    assert client.get(f"/sessions/{session.pk}/fork/", {"node": "merge"}).status_code == 403
    assert client.post(f"/sessions/{session.pk}/fork/", {"node": "merge"}).status_code == 403
    assert Session.objects.filter(parent=session).count() == 1


def test_lineage_is_shown_in_the_room_and_the_list(client, owner):
    parent = services.session_create(owner=owner, workflow_slug="demo", title="Parent")
    fork = session_fork(session_id=parent.pk, user=owner, node_id="merge", start=False)
    client.force_login(owner)
    room = client.get(fork.get_absolute_url()).content.decode()
    assert 'data-testid="lineage"' in room and parent.get_absolute_url() in room
    assert f"/sessions/{fork.pk}/compare/" in room
    parent_room = client.get(parent.get_absolute_url()).content.decode()
    assert fork.get_absolute_url() in parent_room
    listing = client.get("/sessions/").content.decode()
    assert f"/sessions/{parent.pk}/replay/" in listing and 'data-testid="fork-of"' in listing


def test_compare_page_shows_each_node_and_the_totals(client, owner):
    parent = services.session_create(owner=owner, workflow_slug="demo", title="Parent")
    fork = session_fork(session_id=parent.pk, user=owner, node_id="merge", start=False)
    client.force_login(owner)
    html = client.get(f"/sessions/{fork.pk}/compare/").content.decode()
    for node in ("brief", "merge", "summary"):
        assert f'data-testid="compare-node-{node}"' in html
    assert 'data-testid="compare-totals"' in html
    assert client.get(f"/sessions/{parent.pk}/compare/").status_code == 400  # not a fork
    assert client.get(f"/sessions/{fork.pk}/compare/", {"with": "not-a-uuid"}).status_code == 404


def test_word_diff_keeps_every_word_once():
    pieces = word_diff("Ship in EMEA first, then US.", "Ship in US first, then EMEA.")
    assert "".join(t for op, t in pieces if op != "removed") == "Ship in US first, then EMEA."
    assert "".join(t for op, t in pieces if op != "added") == "Ship in EMEA first, then US."
    assert {op for op, _ in pieces} == {"same", "removed", "added"}
    assert word_diff("", "") == []


@pytest.mark.django_db(transaction=True)
async def test_shared_replay_reaches_every_viewer_and_is_checked(ws_app, owner):
    session = await database_sync_to_async(session_with_events)(owner, 5)
    viewer = await database_sync_to_async(make_user)("vera")
    await database_sync_to_async(SessionShare.objects.create)(session=session, user=viewer)
    sid = str(session.pk)
    lead, ok, _ = await connect_ws(ws_app, sid, owner)
    follow, ok2, _ = await connect_ws(ws_app, sid, viewer)
    assert ok and ok2
    for ws in (lead, follow):  # both in the room (snapshot sent) before the leader moves
        await ws.until(lambda e: e["event"] == "snapshot")
    cid = await lead.command("replay_control", {"seq": 3, "playing": True, "speed": 16})
    assert (await lead.reply(cid))["event"] == "ack"
    got = await follow.until(lambda e: e["event"] == "replay_control")
    assert got["seq"] is None
    assert got["data"] == {"seq": 3, "playing": True, "speed": 16, "active": True, "by": "alice"}
    beyond = await lead.command("replay_control", {"seq": 6, "playing": False})
    refused = await lead.reply(beyond)
    assert refused["event"] == "error" and "beyond the log" in refused["data"]["error"]
    bad_speed = await lead.command("replay_control", {"seq": 1, "playing": True, "speed": 3})
    assert (await lead.reply(bad_speed))["data"]["code"] == "invalid_data"
    watcher = await follow.command("replay_control", {"seq": 1, "playing": True})
    assert (await follow.reply(watcher))["data"]["code"] == "forbidden"
    await asyncio.sleep(0.1)
    assert not [e for e in follow.events if e["event"] == "replay_control" and e["data"]["seq"] != 3]
    await lead.close()
    await follow.close()
