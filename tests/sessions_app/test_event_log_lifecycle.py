"""A session's event log (realtime's) lives exactly as long as the session."""

from __future__ import annotations

import pytest

from realtime.eventlog import head_seq
from realtime.models import SessionEvent, SessionLog
from realtime.publisher import publish_sync
from realtime.vocabulary import EventName
from sessions_app import selectors, services
from sessions_app.models import Session

pytestmark = pytest.mark.django_db


def test_a_new_session_has_an_empty_log_and_its_events_go_with_it(owner):
    session = services.session_create(owner=owner, workflow_slug="demo", title="Q3")
    assert SessionLog.objects.get(pk=session.pk).last_seq == 0
    publish_sync(session_id=session.pk, event=EventName.EXECUTION_PAUSED, data={})
    assert head_seq(str(session.pk)) == 1
    Session.objects.filter(pk=session.pk).delete()
    assert not SessionLog.objects.filter(pk=session.pk).exists()
    assert not SessionEvent.objects.filter(session_id=session.pk).exists()


def test_deleting_the_owner_deletes_the_logs_of_their_sessions(owner):
    session = services.session_create(owner=owner, workflow_slug="demo")
    publish_sync(session_id=session.pk, event=EventName.EXECUTION_PAUSED, data={})
    owner.delete()
    assert not SessionLog.objects.filter(pk=session.pk).exists()


def test_the_room_header_comes_from_the_session_and_its_definition(owner):
    session = services.session_create(owner=owner, workflow_slug="demo", title="Q3")
    header = selectors.room_header(session_id=session.pk)
    assert header["session"]["title"] == "Q3" and header["session"]["owner"] == "alice"
    assert header["session"]["created_at"].endswith("Z")
    assert len(header["session"]["created_at"]) == len("2026-01-01T00:00:00.000Z")
    assert [n["id"] for n in header["workflow"]["nodes"]] == [
        n["id"] for n in session.workflow_definition["nodes"]
    ]
