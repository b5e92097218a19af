"""Property-based fuzzing of the replay pages' parameters (the log's pages, the replay, fork
and compare pages): every reply is a documented status, never a server error, and nothing
is stored. CI keeps a small count (``REPLAY_FUZZ_EXAMPLES``, default 25); ``bench/fuzz_http.py``
runs thousands."""

from __future__ import annotations

import json
import os
import uuid

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realtime.models import SessionEvent
from sessions_app import services
from sessions_app.models import Session
from tests.conftest import make_user

pytestmark = pytest.mark.django_db(transaction=True)
EXAMPLES = int(os.environ.get("REPLAY_FUZZ_EXAMPLES", "25"))
DOCUMENTED = {200, 302, 400, 403, 404, 405}

params = st.text(st.characters(max_codepoint=0x2FF, exclude_categories=("Cs",)), max_size=12) | \
    st.integers(min_value=-10, max_value=10**22).map(str)


class World:
    def __init__(self) -> None:
        self.owner = make_user(f"rp-{uuid.uuid4().hex[:6]}")
        self.stranger = make_user(f"rs-{uuid.uuid4().hex[:6]}")
        self.mine = services.session_create(owner=self.owner, workflow_slug="quick-chat")
        self.theirs = services.session_create(owner=self.stranger, workflow_slug="quick-chat")
        self.client = Client()
        self.client.force_login(self.owner)

    def counts(self) -> tuple[int, int]:
        return Session.objects.count(), SessionEvent.objects.count()


_WORLD: list[World] = []


def world() -> World:
    if not _WORLD or not Session.objects.filter(pk=_WORLD[0].mine.pk).exists():
        _WORLD[:] = [World()]
    return _WORLD[0]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(after=st.none() | params, limit=st.none() | params,
       target=st.sampled_from(["mine", "theirs", "missing"]),
       page=st.sampled_from(["events", "replay", "compare", "fork"]),
       extra=st.dictionaries(st.sampled_from(["node", "node_id", "instruction", "prompt", "model", "x"]),
                             params, max_size=3))
def test_fuzzed_replay_parameters_get_documented_answers(after, limit, target, page, extra):
    w = world()
    sid = {"mine": w.mine.pk, "theirs": w.theirs.pk, "missing": uuid.uuid4()}[target]
    query = {k: v for k, v in (("after", after), ("limit", limit)) if v is not None}
    before = w.counts()
    response = w.client.get(f"/sessions/{sid}/{page}/", {**query, **extra})
    assert response.status_code in DOCUMENTED, (page, query, response.status_code)
    if page == "events" and response.status_code == 200:
        body = json.loads(response.content)
        assert set(body) == {"events", "last_seq", "next_after", "done"}
    if page == "fork":  # a POST with fuzzed fields: refused or a new fork, never a 500
        posted = w.client.post(f"/sessions/{sid}/fork/", extra)
        assert posted.status_code in DOCUMENTED
        if posted.status_code == 302:
            return  # a valid fork of my session: stored by design
    assert w.counts() == before
