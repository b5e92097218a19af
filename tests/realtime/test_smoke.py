import pytest
from channels.db import database_sync_to_async

from realtime.models import SessionEvent
from sessions_app import services
from sessions_app.models import Session
from tests.conftest import connect_ws

pytestmark = pytest.mark.django_db(transaction=True)


async def test_demo_runs_end_to_end(ws_app, executor, owner):
    session = await database_sync_to_async(services.session_create)(
        owner=owner, workflow_slug="quick-chat", title="t"
    )
    ws, ok, _ = await connect_ws(ws_app, str(session.pk), owner)
    assert ok
    snap = await ws.next_event()
    assert snap["event"] == "snapshot"
    cid = await ws.command("start_session")
    assert (await ws.reply(cid))["event"] == "ack"
    done = await ws.until(lambda e: e["event"].startswith("execution:") and e["event"] != "execution:started", 20)
    assert done["event"] == "execution:completed"
    seqs = [e["seq"] for e in ws.events if e["seq"] is not None]
    assert seqs == list(range(1, len(seqs) + 1))
    count = await database_sync_to_async(SessionEvent.objects.filter(session_id=session.pk).count)()
    assert count == seqs[-1]
    s = await database_sync_to_async(Session.objects.get)(pk=session.pk)
    assert s.status == "completed"
    await ws.close()
