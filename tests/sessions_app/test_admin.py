"""The reviewer admin: list, session page, event log, exports, stop, summary, permissions."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from realtime.eventlog import head_seq
from realtime.models import SessionEvent
from sessions_app.admin.export import export_queryset, session_to_markdown
from sessions_app.models import (
    CommandReceipt,
    HumanReview,
    Message,
    NodeState,
    NodeStatus,
    Session,
    SessionShare,
    SessionStatus,
    TokenUsage,
)
from tests.sessions_app.factories import (
    NodeSpec,
    add_events,
    add_user_message,
    make_many_sessions,
    make_session,
    make_user,
)

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:sessions_app_session_changelist")
SUMMARY = reverse("admin:sessions_app_session_summary")
EVENTS = reverse("admin:realtime_sessionevent_changelist")
XSS_SCRIPT = "<script>alert('x')</script>"
XSS_IMG = '<img src=x onerror="alert(1)">'


def change_url(session: Session) -> str:
    return reverse("admin:sessions_app_session_change", args=[session.pk])


@pytest.fixture
def owner():
    return make_user("olivia")


@pytest.fixture
def viewer_client(client):
    """Staff with only the view_session permission."""
    user = make_user("viewer", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="sessions_app", codename="view_session")
    )
    client.force_login(user)
    return client


@pytest.fixture
def nonstaff_client(client):
    client.force_login(make_user("outsider"))
    return client


def action_post(client, action: str, sessions: list[Session], **extra):
    data = {
        "action": action,
        "_selected_action": [str(s.pk) for s in sessions],
        "index": 0,
        "select_across": 0,
        **extra,
    }
    return client.post(CHANGELIST, data)


def result_ids(response) -> list:
    return [s.pk for s in response.context["cl"].result_list]


# --------------------------------------------------------------------------- session list


def test_list_shows_columns(admin_client, owner):
    session = make_session(owner=owner, title="Budget review", workflow_slug="product-review")
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("Budget review", "olivia", "product-review", "session-status", "Completed",
                 "3:20", "$0.0117", "3000", "1300"):
        assert text in html, text
    assert "Cost summary of these sessions" in html
    assert session.cost_usd == Decimal("0.011700")


def test_list_query_count_is_bounded(admin_client, django_assert_max_num_queries):
    owners = [make_user(f"user{i}") for i in range(5)]
    make_many_sessions(owners=owners, count=3, workflows=("demo", "quick-chat"))
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(CHANGELIST).status_code == 200
    make_many_sessions(owners=owners, count=297, workflows=("demo", "quick-chat"))
    with django_assert_max_num_queries(12):
        response = admin_client.get(CHANGELIST + "?o=-11")  # sorted by cost, descending
    assert response.context["cl"].result_count == 300
    with CaptureQueriesContext(connection) as many:
        admin_client.get(CHANGELIST)
    assert len(many) == len(few)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status__exact=running", {"running"}),
        ("workflow_slug=quick-chat", {"chat"}),
        ("q=olivia", {"running", "done"}),
        ("q=weekly", {"chat"}),
    ],
)
def test_list_filters_and_search(admin_client, owner, query, expected):
    other = make_user("bob")
    sessions = {
        "running": make_session(owner=owner, title="Standup", status=SessionStatus.RUNNING),
        "done": make_session(owner=owner, title="Retro"),
        "chat": make_session(owner=other, title="Weekly chat", workflow_slug="quick-chat"),
    }
    response = admin_client.get(f"{CHANGELIST}?{query}")
    assert response.status_code == 200
    assert set(result_ids(response)) == {sessions[name].pk for name in expected}


def test_list_filters_by_owner_date_and_id(admin_client, owner):
    other = make_user("bob")
    mine = make_session(owner=owner, title="Mine")
    old = make_session(owner=other, title="Old", created_at=timezone.now() - timedelta(days=400))
    response = admin_client.get(f"{CHANGELIST}?owner__id__exact={owner.pk}")
    assert result_ids(response) == [mine.pk]
    year = old.created_at.year
    response = admin_client.get(f"{CHANGELIST}?created_at__year={year}")
    assert old.pk in result_ids(response) and (year == mine.created_at.year) == (
        mine.pk in result_ids(response)
    )
    response = admin_client.get(f"{CHANGELIST}?q={old.pk}")
    assert result_ids(response) == [old.pk]
    response = admin_client.get(f"{CHANGELIST}?q=not-a-uuid")
    assert response.status_code == 200 and result_ids(response) == []


def test_list_sorts_by_cost_and_duration(admin_client, owner):
    cheap_long = make_session(
        owner=owner, title="cheap", duration=timedelta(hours=2),
        nodes=[NodeSpec("a", "x", cost_usd=Decimal("0.001"))],
    )
    dear_short = make_session(
        owner=owner, title="dear", duration=timedelta(seconds=30),
        nodes=[NodeSpec("a", "x", cost_usd=Decimal("1.5"))],
    )
    columns = admin_client.get(CHANGELIST).context["cl"].list_display
    cost, duration = columns.index("cost"), columns.index("duration")
    assert result_ids(admin_client.get(f"{CHANGELIST}?o=-{cost}")) == [dear_short.pk, cheap_long.pk]
    assert result_ids(admin_client.get(f"{CHANGELIST}?o={cost}")) == [cheap_long.pk, dear_short.pk]
    assert result_ids(admin_client.get(f"{CHANGELIST}?o=-{duration}")) == [
        cheap_long.pk, dear_short.pk,
    ]
    html = admin_client.get(CHANGELIST).content.decode()
    assert "2:00:00" in html and "0:30" in html


# --------------------------------------------------------------------------- session page


def test_change_page_shows_parts_read_only(admin_client, owner):
    reviewer = make_user("rita")
    session = make_session(owner=owner, review=True, reviewer=reviewer, events=30)
    add_user_message(session, owner, "Please keep it short.")
    response = admin_client.get(change_url(session))
    assert response.status_code == 200
    html = response.content.decode()
    # totals, nodes, usage, review decision, transcript with thinking apart
    for text in ("Totals", "Node states", "Token usage", "Human reviews", "Transcript",
                 "gpt-4o-mini", "research", "Looks good.", "rita", "approve",
                 "Please keep it short.", "Market grew 12%", 'class="thinking"',
                 "Compare last year"):
        assert text in html, text
    review = HumanReview.objects.get(session=session)
    assert timezone.localtime(review.decided_at).strftime("%Y") in html
    assert html.index("Compare last year") < html.index("Market grew 12%")
    assert html.count('<details class="thinking">') == 2
    assert f'href="{session.get_absolute_url()}"' in html
    assert f'href="{EVENTS}?session={session.pk}"' in html
    # only the title and the members are inputs; the runtime inlines cannot add or delete
    assert 'name="title"' in html
    for field in ("status", "cost_usd", "input_tokens", "owner"):
        assert f'name="{field}"' not in html
    assert "-DELETE" not in html  # no member yet: nothing to delete
    for inline in response.context["inline_admin_formsets"]:
        if inline.formset.model is SessionShare:
            continue  # members: tests/sessions_app/test_admin_members.py
        assert not (inline.has_add_permission or inline.has_change_permission
                    or inline.has_delete_permission)
    assert response.context["has_delete_permission"] is False


def test_change_page_does_not_render_the_event_log(admin_client, owner):
    session = make_session(owner=owner, events=10_000)
    response = admin_client.get(change_url(session))
    html = response.content.decode()
    assert "10000 logged events" in html
    assert "chunk 1" not in html


def test_change_page_query_count_does_not_grow_with_transcript(admin_client, owner):
    reviewer = make_user("rita")
    small = make_session(owner=owner, review=True, reviewer=reviewer)
    big = make_session(owner=owner, review=True, reviewer=reviewer)
    for i in range(60):
        add_user_message(big, make_user(f"speaker{i}"), f"message {i}")
    with CaptureQueriesContext(connection) as few:
        admin_client.get(change_url(small))
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(change_url(big)).status_code == 200
    assert len(many) == len(few)


def test_title_and_budget_are_the_only_editable_fields(admin_client, owner):
    session = make_session(owner=owner, status=SessionStatus.RUNNING, events=3)
    form = admin_client.get(change_url(session)).context["adminform"].form
    assert list(form.fields) == ["title", "budget_usd"]
    data = {"title": "Renamed", "status": "failed", "cost_usd": "99", "logged_events": "0",
            "_save": "Save"}
    for inline_formset in admin_client.get(change_url(session)).context["inline_admin_formsets"]:
        formset = inline_formset.formset
        for key, value in formset.management_form.initial.items():
            data[f"{formset.prefix}-{key}"] = value
        for index, inline_form in enumerate(formset.forms):
            data[f"{formset.prefix}-{index}-id"] = inline_form.instance.pk
            data[f"{formset.prefix}-{index}-session"] = session.pk
    response = admin_client.post(change_url(session), data)
    assert response.status_code == 302, response.context and response.context["errors"]
    fresh = Session.objects.get(pk=session.pk)
    assert fresh.title == "Renamed"
    assert (fresh.status, fresh.cost_usd, head_seq(str(fresh.pk))) == (
        SessionStatus.RUNNING, session.cost_usd, 3,
    )


def test_sessions_cannot_be_added_or_deleted(admin_client, owner):
    session = make_session(owner=owner)
    assert admin_client.get(reverse("admin:sessions_app_session_add")).status_code == 403
    delete = reverse("admin:sessions_app_session_delete", args=[session.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert Session.objects.filter(pk=session.pk).exists()


@pytest.mark.parametrize(
    "model", [SessionEvent, Message, TokenUsage, NodeState, HumanReview, CommandReceipt]
)
def test_runtime_models_are_read_only(admin_client, owner, model):
    session = make_session(owner=owner, events=2, review=True)
    CommandReceipt.objects.create(session=session, command_id="c1", cmd="stop_session", user=owner)
    row = model.objects.filter(session_id=session.pk).first()
    name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
    assert admin_client.get(reverse(f"{name}_changelist")).status_code == 200
    page = admin_client.get(reverse(f"{name}_change", args=[row.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.get(reverse(f"{name}_add")).status_code == 403
    assert admin_client.post(reverse(f"{name}_change", args=[row.pk]), {}).status_code == 403
    delete = reverse(f"{name}_delete", args=[row.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=row.pk).exists()


# --------------------------------------------------------------------------- event log


def test_event_log_is_paginated_and_filtered_by_session(admin_client, owner):
    session = make_session(owner=owner, events=10_000)
    other = make_session(owner=owner, title="Other", events=5)
    response = admin_client.get(f"{EVENTS}?session={session.pk}")
    assert response.status_code == 200
    cl = response.context["cl"]
    assert cl.result_count == 10_000
    assert [e.seq for e in cl.result_list] == list(range(1, 101))
    assert {e.session_id for e in cl.result_list} == {session.pk}
    page = admin_client.get(f"{EVENTS}?session={session.pk}&p=3").context["cl"]
    assert page.result_list[0].seq == 201
    assert admin_client.get(f"{EVENTS}?session={other.pk}").context["cl"].result_count == 5
    assert admin_client.get(f"{EVENTS}?session=nonsense").context["cl"].result_count == 0


def test_event_log_filters_by_event_type(admin_client, owner):
    session = make_session(owner=owner, events=4)
    add_events(session, 2, event="execution:paused")
    response = admin_client.get(f"{EVENTS}?session={session.pk}&event=execution:paused")
    assert [e.seq for e in response.context["cl"].result_list] == [5, 6]


# --------------------------------------------------------------------------- exports


def test_export_json(admin_client, owner):
    reviewer = make_user("rita")
    first = make_session(owner=owner, title="First", review=True, reviewer=reviewer)
    second = make_session(owner=owner, title="Second", workflow_slug="quick-chat")
    add_user_message(second, owner, "hello agents")
    response = action_post(admin_client, "export_as_json", [first, second])
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Disposition"].startswith('attachment; filename="sessions-')
    document = json.loads(response.content)
    by_title = {s["title"]: s for s in document["sessions"]}
    assert set(by_title) == {"First", "Second"}
    data = by_title["First"]
    assert data["id"] == str(first.pk) and data["owner"] == "olivia"
    assert Decimal(data["totals"]["cost_usd"]) == first.cost_usd
    assert data["totals"]["input_tokens"] == 3000
    assert sum(Decimal(u["cost_usd"]) for u in data["usage"]) == first.cost_usd
    assert [n["node_id"] for n in data["nodes"]] == ["research", "draft"]
    assert data["reviews"][0]["decided_by"] == "rita" and data["reviews"][0]["decided_at"]
    assert data["transcript"][0]["thinking"].startswith("Compare last year")
    assert data["transcript"][0]["text"].startswith("Market grew")
    assert by_title["Second"]["transcript"][-1] == {
        **by_title["Second"]["transcript"][-1], "kind": "user", "user": "olivia",
        "text": "hello agents",
    }


def test_export_markdown(admin_client, owner):
    session = make_session(owner=owner, title="Pricing | plan", review=True)
    response = action_post(admin_client, "export_as_markdown", [session])
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    assert response["Content-Disposition"] == (
        f'attachment; filename="session-{session.pk}.md"'
    )
    text = response.content.decode()
    assert text.startswith("# Pricing \\| plan\n")
    assert "## Transcript" in text and "## Token usage" in text and "## Human reviews" in text
    assert "> Compare last year's figures first" in text
    assert "Market grew 12% year over year" in text
    assert "- Estimated cost: $0.011700" in text
    assert text.index("**Thinking:**") < text.index("Market grew")


def test_export_from_the_session_page(admin_client, owner):
    session = make_session(owner=owner)
    response = admin_client.post(
        change_url(session),
        {"CHANGE_FORM-action": "export_as_json", "_selected_action": str(session.pk),
         "index": 0},
    )
    assert response.status_code == 200
    assert json.loads(response.content)["sessions"][0]["id"] == str(session.pk)


def test_export_queries_do_not_grow_with_sessions(owner, django_assert_max_num_queries):
    for i in range(20):
        make_session(owner=owner, title=f"s{i}", review=True)
    with django_assert_max_num_queries(6):
        texts = [session_to_markdown(s) for s in export_queryset(Session.objects.all())]
    assert len(texts) == 20


# --------------------------------------------------------------------------- stop


def test_stop_action(admin_client, owner):
    running = make_session(
        owner=owner, title="Live one", status=SessionStatus.RUNNING,
        nodes=[NodeSpec("a", "x", status=NodeStatus.RUNNING)],
    )
    done = make_session(owner=owner, title="Finished one")
    response = admin_client.post(
        CHANGELIST,
        {"action": "stop_sessions", "_selected_action": [str(running.pk), str(done.pk)],
         "index": 0},
        follow=True,
    )
    notes = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert ("success", "Stopped 1: “Live one”.") in notes
    assert any(
        tag == "warning" and "Finished one" in text and "completed" in text
        for tag, text in notes
    )
    running.refresh_from_db()
    assert running.status == SessionStatus.STOPPED and running.finished_at is not None
    stopped_event = SessionEvent.objects.get(session_id=running.pk, event="execution:stopped")
    assert stopped_event.data == {"by": "admin"}
    assert NodeState.objects.get(session=running).status == "stopped"
    assert LogEntry.objects.get(object_id=str(running.pk)).get_change_message() == (
        "Stopped from the admin."
    )
    done_before = Session.objects.values().get(pk=done.pk)
    assert done_before["status"] == SessionStatus.COMPLETED
    assert not SessionEvent.objects.filter(session_id=done.pk).exists()


def test_stop_from_the_session_page(admin_client, owner):
    session = make_session(owner=owner, status=SessionStatus.PAUSED)
    response = admin_client.post(
        change_url(session),
        {"CHANGE_FORM-action": "stop_sessions", "_selected_action": str(session.pk),
         "index": 0},
    )
    assert response.status_code == 302
    session.refresh_from_db()
    assert session.status == SessionStatus.STOPPED


# --------------------------------------------------------------------------- permissions


def test_view_only_staff_can_look_but_not_stop(viewer_client, owner):
    session = make_session(owner=owner, status=SessionStatus.RUNNING, events=3)
    response = viewer_client.get(CHANGELIST)
    assert response.status_code == 200
    choices = [name for name, _ in response.context["action_form"].fields["action"].choices]
    assert "stop_sessions" not in choices and "export_as_json" in choices
    page = viewer_client.get(change_url(session))
    html = page.content.decode()
    assert page.status_code == 200 and 'name="_save"' not in html and 'name="title"' not in html
    assert "Market grew 12%" in html  # transcript visible without per-model perms
    assert "stop_sessions" not in html
    assert viewer_client.get(f"{EVENTS}?session={session.pk}").status_code == 200
    assert viewer_client.get(SUMMARY).status_code == 200
    refused = viewer_client.post(
        CHANGELIST,
        {"action": "stop_sessions", "_selected_action": [str(session.pk)], "index": 0},
    )
    assert refused.status_code in (200, 302)
    refused = viewer_client.post(
        change_url(session),
        {"CHANGE_FORM-action": "stop_sessions", "_selected_action": str(session.pk),
         "index": 0},
    )
    assert refused.status_code in (200, 302)
    assert viewer_client.post(change_url(session), {"title": "x", "_save": "1"}).status_code == 403
    session.refresh_from_db()
    assert session.status == SessionStatus.RUNNING and session.title == "Quarterly planning"
    assert not SessionEvent.objects.filter(event="execution:stopped").exists()
    exported = action_post(viewer_client, "export_as_json", [session])
    assert json.loads(exported.content)["sessions"][0]["id"] == str(session.pk)


def test_staff_without_session_permission_is_refused(client, owner):
    session = make_session(owner=owner)
    client.force_login(make_user("clerk", is_staff=True))
    for url in (CHANGELIST, change_url(session), SUMMARY, EVENTS):
        assert client.get(url).status_code == 403, url


@pytest.mark.parametrize("who", ["anonymous", "nonstaff"])
def test_non_staff_never_get_in(client, owner, who):
    if who == "nonstaff":
        client.force_login(make_user("outsider"))
    session = make_session(owner=owner, status=SessionStatus.RUNNING)
    login = reverse("admin:login")
    for url in (CHANGELIST, change_url(session), SUMMARY, EVENTS,
                reverse("admin:sessions_app_message_changelist")):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(f"{login}?next="), url
    response = client.post(
        CHANGELIST, {"action": "stop_sessions", "_selected_action": [str(session.pk)],
                     "index": 0},
    )
    assert response.status_code == 302 and response["Location"].startswith(login)
    session.refresh_from_db()
    assert session.status == SessionStatus.RUNNING


# --------------------------------------------------------------------------- summary


def one_node(tokens_in: int, tokens_out: int, cost: str) -> list[NodeSpec]:
    return [NodeSpec("a", "x", input_tokens=tokens_in, output_tokens=tokens_out,
                     cost_usd=Decimal(cost))]


def test_summary_per_day_and_workflow(admin_client, owner):
    now = timezone.now()
    yesterday_at = now - timedelta(days=1)
    made = [
        make_session(owner=owner, workflow_slug="demo", created_at=now,
                     nodes=one_node(100, 10, "0.1")),
        make_session(owner=owner, workflow_slug="demo", created_at=yesterday_at,
                     nodes=one_node(200, 20, "0.25")),
        make_session(owner=owner, workflow_slug="quick-chat", created_at=yesterday_at,
                     nodes=one_node(300, 30, "0.005")),
    ]
    response = admin_client.get(SUMMARY)
    assert response.status_code == 200
    data = response.context["summary"]
    assert data["totals"].cost_usd == Decimal("0.355") == sum(s.cost_usd for s in made)
    assert (data["totals"].input_tokens, data["totals"].output_tokens) == (600, 60)
    per_workflow = {r.key: r for r in data["per_workflow"]}
    assert per_workflow["demo"].cost_usd == Decimal("0.35") and per_workflow["demo"].sessions == 2
    assert per_workflow["quick-chat"].cost_usd == Decimal("0.005")
    per_day = {r.key: r for r in data["per_day"]}
    today, yesterday = timezone.localdate(now), timezone.localdate(now - timedelta(days=1))
    assert per_day[today].cost_usd == Decimal("0.1")
    assert per_day[yesterday].cost_usd == Decimal("0.255") and per_day[yesterday].sessions == 2
    assert sum(r.cost_usd for r in data["per_day"]) == data["totals"].cost_usd
    assert "$0.3550" in response.content.decode()


def test_summary_honours_the_changelist_filters(admin_client, owner):
    make_session(owner=owner, workflow_slug="demo")
    chat = make_session(owner=owner, workflow_slug="quick-chat", title="chat one")
    response = admin_client.get(f"{SUMMARY}?workflow_slug=quick-chat")
    data = response.context["summary"]
    assert data["totals"].sessions == 1 and data["totals"].cost_usd == chat.cost_usd
    assert [r.key for r in data["per_workflow"]] == ["quick-chat"]
    assert response.context["active_filters"] == [("workflow slug", "quick-chat")]
    raw = admin_client.get(f"{SUMMARY}?workflow_slug__exact=quick-chat&q=chat")
    assert raw.context["summary"]["totals"].sessions == 1
    assert raw.context["active_filters"] == [
        ("workflow_slug exact", "quick-chat"), ("search", "chat"),
    ]
    assert admin_client.get(f"{SUMMARY}?q=nothing-matches").context["summary"][
        "totals"
    ].sessions == 0
    html = admin_client.get(f"{CHANGELIST}?workflow_slug=quick-chat").content.decode()
    assert f'href="{SUMMARY}?workflow_slug=quick-chat"' in html
    assert admin_client.get(f"{SUMMARY}?bogus__field=1").status_code == 302


# --------------------------------------------------------------------------- escaping


def test_runtime_text_is_escaped(admin_client, owner):
    session = make_session(
        owner=owner, title=f"Plan {XSS_SCRIPT}",
        nodes=[NodeSpec("a", "x", answer=f"Answer {XSS_IMG}", thinking=f"Think {XSS_SCRIPT}")],
        events=1,
    )
    add_user_message(session, owner, f"user says {XSS_IMG}")
    HumanReview.objects.create(session=session, node_id="r", reason=XSS_IMG, comment=XSS_SCRIPT)
    pages = [
        CHANGELIST, change_url(session), f"{EVENTS}?session={session.pk}",
        reverse("admin:sessions_app_message_changelist"),
        reverse("admin:sessions_app_humanreview_changelist"),
        reverse("admin:sessions_app_message_change", args=[Message.objects.first().pk]),
    ]
    for url in pages:
        html = admin_client.get(url).content.decode()
        assert XSS_SCRIPT not in html, url
        assert XSS_IMG not in html, url
        assert "onerror=" not in html.replace("onerror=&quot;", ""), url
    html = admin_client.get(change_url(session)).content.decode()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
