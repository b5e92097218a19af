"""API tokens: made by the management command and in admin (shown once, stored hashed), used on
the WebSocket by a client without a browser, limited to their scope, stopped at once when
revoked."""

from __future__ import annotations

import hashlib
import json
from io import StringIO
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.management import call_command
from django.urls import reverse

from realtime.models import ApiToken
from realtime.tokens import issue_token, revoke_token
from tests.workflows.helpers import create_session

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_command_prints_the_token_alone_on_its_last_line_and_stores_only_its_digest(owner):
    out, err = StringIO(), StringIO()
    call_command("create_api_token", "alice", "--scope", "control", stdout=out, stderr=err)
    secret = out.getvalue().strip().splitlines()[-1]
    assert secret.startswith("amr_") and len(secret) >= 4 + 43
    row = ApiToken.objects.get()
    assert row.digest == hashlib.sha256(secret.encode()).hexdigest() and row.scope == "control"
    assert secret not in json.dumps(list(ApiToken.objects.values()), default=str)
    with pytest.raises(Exception, match="no user"):
        call_command("create_api_token", "nobody", stdout=StringIO(), stderr=StringIO())


def test_admin_makes_a_token_shown_once_and_revokes_it(admin_client, owner):
    response = admin_client.post(reverse("admin:realtime_apitoken_add"),
                                 {"user": owner.pk, "name": "dashboard", "scope": "watch"}, follow=True)
    shown = [str(m) for m in response.context["messages"]]
    assert any("amr_" in m and "not shown again" in m for m in shown)
    token = ApiToken.objects.get(name="dashboard")
    assert token.scope == "watch" and token.user == owner
    admin_client.post(reverse("admin:realtime_apitoken_changelist"),
                      {"action": "revoke", "_selected_action": [token.pk]})
    token.refresh_from_db()
    assert token.revoked_at is not None


async def ws(app: Any, session_id: str, token: str) -> tuple[WebsocketCommunicator, bool, Any]:
    communicator = WebsocketCommunicator(app, f"/ws/sessions/{session_id}/",
                                         headers=[(b"authorization", f"Bearer {token}".encode()),
                                                  (b"host", b"127.0.0.1")])
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


async def test_a_token_works_on_the_websocket_without_a_browser_within_its_scope(owner, settings):
    from config.asgi import router

    sid = await create_session(owner, "quick-chat")
    _, watch = await database_sync_to_async(issue_token)(user=owner, scope="watch")
    communicator, connected, _ = await ws(router, sid, watch)
    assert connected
    first = json.loads(await communicator.receive_from(5))
    assert first["event"] == "snapshot" and first["data"]["can_control"] is False
    await communicator.send_to(text_data=json.dumps({"cmd": "start_session", "id": "c1"}))
    reply = json.loads(await communicator.receive_from(5))
    while reply["event"] != "error":
        reply = json.loads(await communicator.receive_from(5))
    assert reply["data"]["code"] == "forbidden"
    # Revoked: the open socket is closed at once (the announcement reaches the hub).
    row = await database_sync_to_async(ApiToken.objects.get)(prefix=watch[:10])
    await database_sync_to_async(revoke_token)(token=row)
    closed = None
    for _ in range(50):
        output = await communicator.receive_output(5)
        if output["type"] == "websocket.close":
            closed = output["code"]
            break
    assert closed == 4401
    # A bad token is refused at connect.
    bad, connected, code = await ws(router, sid, "amr_nope")
    assert not connected or (await bad.receive_output(5))["code"] == 4401


def test_refused_tokens_are_logged_without_the_token(owner, caplog):
    from realtime.tokens import authenticate

    caplog.set_level("INFO", logger="realtime.tokens")
    token, secret = issue_token(user=owner, scope="watch")
    guess = "amr_" + "x" * 43
    assert authenticate(guess) is None
    revoke_token(token=token)
    assert authenticate(secret) is None
    assert "refused" in caplog.text
    for value in (guess, secret, secret[:12], guess[:12]):
        assert value not in caplog.text
