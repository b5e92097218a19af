"""Inviting someone into a meeting, in headless Chromium against a real server: the owner
makes a share link, a second user joins through it and watches, is made controller and
pauses the run, then is removed and sees the room close."""

import pytest

from tests.e2e.conftest import create_session, login, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CONNECTED = '[data-testid=conn-badge][data-state="connected"]'


def test_owner_invites_a_member_who_watches_controls_and_is_removed(browser, site):
    alice = login(browser, site, "alice")
    session_id = create_session(alice, "demo", "Invite test")
    room_url = alice.url

    # The user search lists bob to the owner.
    alice.fill("[data-testid=people-search]", "bo")
    alice.wait_for_selector("[data-testid=search-result-bob]")

    # A share link as viewer; its URL is shown once.
    alice.click(".share-links summary")
    alice.select_option("[data-testid=link-role]", "viewer")
    alice.click("[data-testid=btn-create-link]")
    alice.wait_for_selector("[data-testid=link-url]:not([hidden])")
    link = alice.input_value("[data-testid=link-url]")
    assert "/join/" in link

    bob = login(browser, site, "bob")
    bob.goto(link)
    assert bob.text_content("[data-testid=join-role]") == "viewer"
    bob.click("[data-testid=btn-join]")
    bob.wait_for_url(f"**/sessions/{session_id}/")
    bob.wait_for_selector(CONNECTED)

    # The owner sees bob as a viewer who is watching now, and how he came in.
    alice.wait_for_selector('[data-testid=person-bob][data-role="viewer"][data-watching="true"]')
    assert "bob joined through a link as viewer" in alice.text_content("[data-testid=member-changes]")
    alice.wait_for_function("() => document.querySelector('[data-testid=links]').textContent.includes('joined: bob')")

    # bob watches the run but may not control it.
    alice.click("[data-testid=btn-start]")
    wait_status(bob, "running")
    bob.wait_for_function("() => window.__room.state.messages.some(m => m.text.length > 5)")
    assert bob.evaluate("() => window.__room.meta.canControl") is False
    assert not bob.is_enabled("[data-testid=btn-pause]")

    # Made controller: his socket reconnects with the new rights; he pauses the run.
    alice.select_option("[data-testid=role-bob]", "controller")
    bob.wait_for_function("() => window.__room.meta.canControl === true", timeout=10_000)
    bob.wait_for_selector(CONNECTED)
    bob.wait_for_selector("[data-testid=btn-pause]:not([disabled])")
    bob.click("[data-testid=btn-pause]")
    wait_status(alice, "paused")
    assert site.session_row(session_id)["status"] == "paused"
    alice.wait_for_selector('[data-testid=person-bob][data-role="controller"]')

    # Removed: bob's room closes (4403) and says so; the owner's list no longer has him.
    alice.click("[data-testid=remove-bob]")
    bob.wait_for_function("() => window.__room.conn.finalCode === 4403", timeout=10_000)
    bob.wait_for_selector("#room-notice:not([hidden])")
    assert "not allowed to see this session" in bob.text_content("#room-notice")
    bob.wait_for_timeout(500)
    assert bob.get_attribute("[data-testid=conn-badge]", "data-state") == "disconnected"
    alice.wait_for_selector("[data-testid=person-bob]", state="detached")
    assert "You removed bob" in alice.text_content("[data-testid=member-changes]")
    # A fresh visit is refused too.
    response = bob.goto(room_url)
    assert response.status == 403
    for page in (alice, bob):
        page.context.close()
