"""Tool calls in Django admin (inline, search by tool name) and in the exports."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from sessions_app.admin.export import export_queryset, session_to_dict, session_to_markdown
from sessions_app.models import Session, ToolCall
from tests.sessions_app.factories import make_session, make_user

pytestmark = pytest.mark.django_db
CHANGELIST = reverse("admin:sessions_app_session_changelist")


@pytest.fixture
def with_calls() -> tuple[Session, Session]:
    owner = make_user("owner")
    used = make_session(owner=owner, title="Used the desk")
    make_session(owner=owner, title="No tools")
    ToolCall.objects.create(
        session=used, node_id="facts", agent_id="archivist", call_id="tc_1", tool="lookup_fact",
        server="desk", arguments='{"topic": "market"}', status="succeeded",
        result="Urban cargo bike sales grew 18%", duration_ms=12,
    )
    ToolCall.objects.create(
        session=used, node_id="facts", agent_id="archivist", call_id="tc_2", tool="save_note",
        server="desk", arguments='{"text": "x"}', status="denied", error="denied by the reviewer",
    )
    return used, Session.objects.get(title="No tools")


def test_the_session_page_lists_its_tool_calls(admin_client, with_calls):
    used, _ = with_calls
    page = admin_client.get(reverse("admin:sessions_app_session_change", args=[used.pk])).content.decode()
    assert "tool calls" in page.lower()
    assert "lookup_fact" in page and "Urban cargo bike sales grew 18%" in page
    assert "denied by the reviewer" in page


def test_sessions_are_searchable_by_tool_name(admin_client, with_calls):
    page = admin_client.get(f"{CHANGELIST}?q=lookup_fact").content.decode()
    assert "Used the desk" in page and "No tools" not in page


def test_exports_carry_the_calls(with_calls):
    used, _ = with_calls
    session = export_queryset(Session.objects.filter(pk=used.pk)).get()
    calls = session_to_dict(session)["tool_calls"]
    assert [(c["tool"], c["status"], c["result"] or c["error"]) for c in calls] == [
        ("lookup_fact", "succeeded", "Urban cargo bike sales grew 18%"),
        ("save_note", "denied", "denied by the reviewer"),
    ]
    json.dumps(calls)
    markdown = session_to_markdown(session)
    assert "## Tool calls" in markdown and "| facts | 1 | save_note |" in markdown
