"""Promises of the issue that tests elsewhere already prove, completed where they left a gap.

Covered elsewhere (docs/RELIABILITY.md maps each promise to its test): 1009, 4429, 4430,
4401, 4403, Origin, replay (tests/realtime/test_consumer.py), the protocol fuzz
(tests/realtime/test_fuzz.py), CSRF and admin access (tests/sessions_app/test_security.py,
test_admin.py), script in page and admin (tests/e2e/test_room.py, test_admin.py).
Added here: a watch-only participant is refused *every* control command of the protocol
(test_consumer.py checks three of them), and nothing it sends changes the session.
"""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async

from realtime import protocol
from realtime.models import SessionEvent
from realtime.vocabulary import WATCHER_COMMANDS
from sessions_app import services
from sessions_app.models import CommandReceipt, Message, Session
from tests.conftest import connect_ws, make_user

pytestmark = pytest.mark.django_db(transaction=True)

DATA = {
    "user_input": {"text": "hello"},
    "submit_review": {"node_id": "review", "decision": "approve", "comment": "ok"},
    "replay_control": {"seq": 0, "playing": False},
}


def _state(session_id: str) -> tuple[Any, ...]:
    return (
        SessionEvent.objects.filter(session_id=session_id).count(),
        CommandReceipt.objects.filter(session_id=session_id).count(),
        Message.objects.filter(session_id=session_id).count(),
        Session.objects.filter(pk=session_id).values_list("status", "run_requested").get(),
    )


@pytest.mark.parametrize("cmd", sorted(set(protocol.COMMANDS) - WATCHER_COMMANDS))
async def test_watch_only_cannot_send_any_control_command(ws_app: Any, owner: Any, cmd: str) -> None:
    session = await database_sync_to_async(services.session_create)(owner=owner, workflow_slug="demo")
    watcher = await database_sync_to_async(make_user)("watcher")
    await database_sync_to_async(services.session_share)(session=session, user=watcher, can_control=False)
    sid = str(session.pk)
    before = await database_sync_to_async(_state)(sid)
    ws, _, _ = await connect_ws(ws_app, sid, watcher)
    snapshot = await ws.next_event()
    assert snapshot["data"]["can_control"] is False
    reply = await ws.reply(await ws.command(cmd, DATA.get(cmd, {})))
    assert (reply["event"], reply["data"]["code"]) == ("error", "forbidden")
    # the same command from the owner is accepted or refused on its merits, never "forbidden"
    owner_ws, _, _ = await connect_ws(ws_app, sid, owner)
    await owner_ws.next_event()
    answer = await owner_ws.reply(await owner_ws.command(cmd, DATA.get(cmd, {})))
    assert answer["event"] == "ack" or answer["data"]["code"] != "forbidden"
    await owner_ws.close()
    await ws.close()
    if answer["event"] == "error":
        assert await database_sync_to_async(_state)(sid) == before
