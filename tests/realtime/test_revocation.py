"""Access that drops while a socket is open: logout, deactivation, password change, a share
removed or lowered. The socket is told at once (4401, 4403, 4412) and, should that message
be lost, every command it sends is checked against the access of now."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client

from sessions_app import services
from sessions_app.models import Message, SessionShare
from tests.conftest import WS, make_user

pytestmark = pytest.mark.django_db(transaction=True)

PUSH_SECONDS = 2  # the bound for revocation to reach an open socket


@pytest.fixture
async def session(owner: Any) -> Any:
    return await database_sync_to_async(services.session_create)(
        owner=owner, workflow_slug="demo", title="Q3"
    )


async def _login(user: Any) -> Client:
    client = Client()
    await database_sync_to_async(client.force_login)(user)
    return client


async def _socket(app: Any, session: Any, client: Client) -> WS:
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"),
               (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]
    communicator = WebsocketCommunicator(app, f"/ws/sessions/{session.pk}/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    ws = WS(communicator)
    assert (await ws.next_event())["event"] == "snapshot"
    return ws


async def _closed_with(ws: WS, timeout: float = PUSH_SECONDS) -> int | None:
    with pytest.raises(ConnectionError):
        while True:
            await ws.recv(timeout)
    return ws.close_code


async def test_logging_out_closes_the_open_socket_4401(ws_app, session, owner):
    client = await _login(owner)
    ws = await _socket(ws_app, session, client)
    await database_sync_to_async(client.logout)()
    assert await _closed_with(ws) == 4401


async def test_deactivating_the_user_closes_the_socket_4401(ws_app, session, owner):
    ws = await _socket(ws_app, session, await _login(owner))
    owner.is_active = False
    await database_sync_to_async(owner.save)()
    assert await _closed_with(ws) == 4401


async def test_changing_the_password_closes_the_other_sessions_sockets_4401(ws_app, session, owner):
    ws = await _socket(ws_app, session, await _login(owner))
    owner.set_password("a-new-password-456")
    await database_sync_to_async(owner.save)()
    assert await _closed_with(ws) == 4401


async def test_removing_a_share_closes_the_socket_4403(ws_app, session):
    bob = await database_sync_to_async(make_user)("bob")
    await database_sync_to_async(services.session_share)(session=session, user=bob)
    ws = await _socket(ws_app, session, await _login(bob))
    await database_sync_to_async(SessionShare.objects.filter(user=bob).delete)()
    assert await _closed_with(ws) == 4403


async def test_lowering_a_share_closes_4412_and_the_reconnect_may_only_watch(ws_app, session):
    bob = await database_sync_to_async(make_user)("bob")
    await database_sync_to_async(services.session_share)(session=session, user=bob, can_control=True)
    client = await _login(bob)
    ws = await _socket(ws_app, session, client)
    await database_sync_to_async(services.session_share)(session=session, user=bob, can_control=False)
    assert await _closed_with(ws) == 4412
    again = await _socket(ws_app, session, client)
    assert again.events[0]["data"]["can_control"] is False
    await again.close()


async def test_a_command_after_an_unannounced_logout_closes_4401_and_changes_nothing(
        ws_app, session, owner):
    """The push may be lost (layer outage): the command itself is checked."""
    client = await _login(owner)
    ws = await _socket(ws_app, session, client)
    key = client.cookies["sessionid"].value
    await database_sync_to_async(lambda: SessionStore(key).delete())()  # no signal sent
    await asyncio.sleep(0.1)
    await ws.command("user_input", {"text": "am I still here?"})
    assert await _closed_with(ws) == 4401
    assert not await database_sync_to_async(Message.objects.filter(session=session).exists)()


async def test_a_user_logged_in_elsewhere_keeps_other_sockets_after_one_logout(ws_app, session, owner):
    """Logging out ends that login only: a socket of the user's other (still valid) login
    checks again and stays open."""
    phone, laptop = await _login(owner), await _login(owner)
    ws_phone = await _socket(ws_app, session, phone)
    ws_laptop = await _socket(ws_app, session, laptop)
    await database_sync_to_async(phone.logout)()
    assert await _closed_with(ws_phone) == 4401
    reply = await ws_laptop.reply(await ws_laptop.command("user_input", {"text": "still here"}))
    assert reply["event"] == "ack"
    await ws_laptop.close()


async def test_the_owner_lowering_then_removing_a_member_closes_4412_then_4403(ws_app, session, owner):
    bob = await database_sync_to_async(make_user)("bob")
    change = database_sync_to_async(lambda name, **kw: getattr(services, name)(
        session_id=session.pk, actor=owner, username="bob", **kw))
    await change("member_add", role="controller")
    client = await _login(bob)
    ws = await _socket(ws_app, session, client)
    await change("member_set_role", role="viewer")
    assert await _closed_with(ws) == 4412
    ws = await _socket(ws_app, session, client)
    assert ws.events[0]["data"]["can_control"] is False
    await change("member_remove")
    assert await _closed_with(ws) == 4403


async def test_taking_a_staff_users_permission_away_closes_their_socket_4403(ws_app, session):
    """Staff watch through the admin's permissions: removing the permission (or the group
    that gave it) is announced like any other loss of access."""
    from django.contrib.auth.models import Group, Permission

    def staff_in_group():
        user = make_user("helper", is_staff=True)
        group = Group.objects.create(name="reviewers")
        group.permissions.add(Permission.objects.get(codename="view_session", content_type__app_label="sessions_app"))
        user.groups.add(group)
        return user, group

    helper, group = await database_sync_to_async(staff_in_group)()
    ws = await _socket(ws_app, session, await _login(helper))
    await database_sync_to_async(group.permissions.clear)()
    assert await _closed_with(ws) == 4403


async def test_granting_a_staff_user_control_reconnects_them_with_it_4412(ws_app, session):
    from django.contrib.auth.models import Permission

    def watching_staff():
        user = make_user("helper", is_staff=True)
        user.user_permissions.add(Permission.objects.get(codename="view_session", content_type__app_label="sessions_app"))
        return user

    helper = await database_sync_to_async(watching_staff)()
    client = await _login(helper)
    ws = await _socket(ws_app, session, client)
    assert ws.events[0]["data"]["can_control"] is False
    await database_sync_to_async(lambda: helper.user_permissions.add(
        Permission.objects.get(codename="change_session", content_type__app_label="sessions_app")))()
    assert await _closed_with(ws) == 4412
    again = await _socket(ws_app, session, client)
    assert again.events[0]["data"]["can_control"] is True
    await again.close()
