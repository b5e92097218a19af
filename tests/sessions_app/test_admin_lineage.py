"""The admin shows lineage, filters by it and links to the replay and the fork page."""

import pytest

from sessions_app import services
from sessions_app.services.forks import session_fork

pytestmark = pytest.mark.django_db


def test_admin_filters_by_lineage_and_links_replay_and_fork(admin_client, admin_user):
    parent = services.session_create(owner=admin_user, workflow_slug="demo", title="Original run")
    fork = session_fork(session_id=parent.pk, user=admin_user, node_id="merge", start=False,
                        title="Forked run")
    listing = admin_client.get("/admin/sessions_app/session/", {"lineage": "fork"}).content.decode()
    assert "Forked run" in listing and "Original run" not in listing
    forked = admin_client.get("/admin/sessions_app/session/", {"lineage": "forked"}).content.decode()
    assert "Original run" in forked and "Forked run" not in forked
    page = admin_client.get(f"/admin/sessions_app/session/{fork.pk}/change/").content.decode()
    assert f"/sessions/{fork.pk}/replay/" in page and f"/sessions/{fork.pk}/compare/" in page
    assert f"/sessions/{fork.pk}/fork/?node=merge" in page
    parent_page = admin_client.get(f"/admin/sessions_app/session/{parent.pk}/change/").content.decode()
    assert f"/admin/sessions_app/session/{fork.pk}/change/" in parent_page
