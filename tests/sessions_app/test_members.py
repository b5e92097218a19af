"""Members and roles: who may add, change and remove them, what is logged, bad input, races."""

from __future__ import annotations

import itertools
import threading

import pytest
from django.contrib.auth.models import Permission
from django.db import connection

from realtime.models import SessionEvent
from realtime.state import fold
from sessions_app import selectors, services
from sessions_app.models import SessionShare
from sessions_app.services.errors import Forbidden, InvalidData, InvalidState, NotFound
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(owner):
    return services.session_create(owner=owner, workflow_slug="demo", title="Q3")


def member_events(session):
    return list(
        SessionEvent.objects.filter(session_id=session.pk, event="member_changed")
        .order_by("seq").values_list("data", flat=True)
    )


def test_owner_adds_promotes_and_removes_a_member_each_change_logged(session, owner):
    bob = make_user("bob")
    services.member_add(session_id=session.pk, actor=owner, username="bob", role="viewer")
    assert selectors.members_of(session_id=session.pk) == {"alice": "owner", "bob": "viewer"}
    services.member_set_role(session_id=session.pk, actor=owner, username="bob", role="controller")
    assert SessionShare.objects.get(user=bob).can_control is True
    services.member_remove(session_id=session.pk, actor=owner, username="bob")
    assert not SessionShare.objects.filter(user=bob).exists()
    assert member_events(session) == [
        {"user": "bob", "role": "viewer", "previous": None, "by": "alice"},
        {"user": "bob", "role": "controller", "previous": "viewer", "by": "alice"},
        {"user": "bob", "role": None, "previous": "controller", "by": "alice"},
    ]


def test_setting_the_same_role_again_changes_and_logs_nothing(session, owner):
    make_user("bob")
    services.member_add(session_id=session.pk, actor=owner, username="bob", role="viewer")
    services.member_set_role(session_id=session.pk, actor=owner, username="bob", role="viewer")
    assert len(member_events(session)) == 1


def test_staff_with_the_permission_manage_members_other_staff_do_not(session):
    make_user("bob")
    helper = make_user("helper", is_staff=True)
    helper.user_permissions.add(Permission.objects.get(codename="change_sessionshare"))
    plain_staff = make_user("plainstaff", is_staff=True)
    with pytest.raises(Forbidden):
        services.member_add(session_id=session.pk, actor=plain_staff, username="bob", role="viewer")
    services.member_add(session_id=session.pk, actor=helper, username="bob", role="viewer")
    assert member_events(session)[0]["by"] == "helper"


@pytest.mark.parametrize("role", ["viewer", "controller"])
def test_a_member_who_is_not_the_owner_cannot_add_or_remove_members(session, owner, role):
    member = make_user("member")
    make_user("bob")
    services.member_add(session_id=session.pk, actor=owner, username="member", role=role)
    services.member_add(session_id=session.pk, actor=owner, username="bob", role="viewer")
    before = len(member_events(session))
    for call in (
        lambda: services.member_add(session_id=session.pk, actor=member, username="carol", role="viewer"),
        lambda: services.member_set_role(session_id=session.pk, actor=member, username="bob", role="controller"),
        lambda: services.member_remove(session_id=session.pk, actor=member, username="bob"),
    ):
        with pytest.raises(Forbidden):
            call()
    assert len(member_events(session)) == before
    assert SessionShare.objects.get(user__username="bob").can_control is False


@pytest.mark.parametrize(
    ("username", "role", "error", "text"),
    [
        ("nobody", "viewer", NotFound, "there is no user 'nobody'"),
        ("alice", "viewer", InvalidData, "alice owns this session"),
        ("bob", "admin", InvalidData, "no such role 'admin'"),
        ("bob", None, InvalidData, "no such role"),
        ("", "viewer", InvalidData, "name the user"),
        (["bob"], "viewer", InvalidData, "name the user"),
    ],
)
def test_bad_additions_are_refused_and_store_nothing(session, owner, username, role, error, text):
    make_user("bob")
    with pytest.raises(error) as caught:
        services.member_add(session_id=session.pk, actor=owner, username=username, role=role)
    assert text in caught.value.message
    assert not SessionShare.objects.exists()
    assert member_events(session) == []


def test_an_inactive_user_cannot_be_added(session, owner):
    make_user("gone", is_active=False)
    with pytest.raises(NotFound):
        services.member_add(session_id=session.pk, actor=owner, username="gone", role="viewer")


def test_adding_a_member_twice_or_changing_a_non_member_is_refused(session, owner):
    make_user("bob")
    services.member_add(session_id=session.pk, actor=owner, username="bob", role="viewer")
    with pytest.raises(InvalidState, match="already a member"):
        services.member_add(session_id=session.pk, actor=owner, username="bob", role="controller")
    make_user("carol")
    with pytest.raises(NotFound, match="not a member"):
        services.member_set_role(session_id=session.pk, actor=owner, username="carol", role="viewer")
    with pytest.raises(NotFound, match="not a member"):
        services.member_remove(session_id=session.pk, actor=owner, username="carol")
    assert len(member_events(session)) == 1


def test_the_log_folds_to_the_members_stored(session, owner):
    for name in ("bob", "carol", "dave"):
        make_user(name)
        services.member_add(session_id=session.pk, actor=owner, username=name, role="viewer")
    services.member_set_role(session_id=session.pk, actor=owner, username="carol", role="controller")
    services.member_remove(session_id=session.pk, actor=owner, username="bob")
    envelopes = [
        {"event": e.event, "data": e.data, "timestamp": "2026-11-24T10:00:00.000Z", "seq": e.seq}
        for e in SessionEvent.objects.filter(session_id=session.pk).order_by("seq")
    ]
    folded = fold(envelopes)["members"]
    stored = selectors.members_of(session_id=session.pk)
    assert {"alice": "owner", **folded} == stored == {"alice": "owner", "carol": "controller", "dave": "viewer"}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("rounds", [6])
def test_two_owners_racing_on_one_member_end_in_one_consistent_state(owner, rounds):
    """The owner and a staff manager act on bob at the same moment (add/add, role/remove):
    the session row lock puts them one after the other; the member row and the logged
    changes always agree, and a refused action stored nothing."""
    session = services.session_create(owner=owner, workflow_slug="demo", title="race")
    make_user("bob")
    helper = make_user("helper", is_staff=True)
    helper.user_permissions.add(Permission.objects.get(codename="change_sessionshare"))

    def race(*calls):
        barrier = threading.Barrier(len(calls))
        outcome = [None] * len(calls)

        def run(i, call):
            try:
                barrier.wait()
                call()
                outcome[i] = "ok"
            except services.ServiceError as exc:
                outcome[i] = exc.code
            finally:
                connection.close()

        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return outcome

    add = lambda actor, role: lambda: services.member_add(session_id=session.pk, actor=actor, username="bob", role=role)
    for _ in range(rounds):
        outcome = race(add(owner, "viewer"), add(helper, "controller"))
        assert sorted(outcome) == ["invalid_state", "ok"]
        outcome = race(
            lambda: services.member_set_role(session_id=session.pk, actor=owner, username="bob", role="viewer"),
            lambda: services.member_set_role(session_id=session.pk, actor=helper, username="bob", role="controller"),
            lambda: services.member_remove(session_id=session.pk, actor=helper, username="bob"),
        )
        assert "ok" in outcome
        events = member_events(session)
        last = events[-1]
        share = SessionShare.objects.filter(session=session, user__username="bob").first()
        assert (share.role if share else None) == last["role"]
        # each logged change starts from the role the one before it left
        for before, after in itertools.pairwise(events):
            assert after["previous"] == before["role"]
        if share is not None:
            services.member_remove(session_id=session.pk, actor=owner, username="bob")
