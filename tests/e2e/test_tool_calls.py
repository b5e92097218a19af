"""Tool calls in the room, in headless Chromium against a real server: cards appear where the
agent made each call, fill in live, show results and errors, and an approval card lets a
controller allow a flagged tool."""

import pytest

from tests.e2e.conftest import create_session, login, page_transcript, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_tool_desk_shows_each_call_and_asks_before_saving_a_note(browser, site):
    alice = login(browser, site, "alice")
    session_id = create_session(alice, "tool-desk", "Pricing desk")
    alice.click("[data-testid=btn-start]")
    wait_status(alice, "running")
    calculator = alice.locator('[data-testid=tool-call]:has(.tool-name:text-is("calculator"))')
    calculator.wait_for()
    alice.wait_for_selector('[data-testid=tool-call][data-status="succeeded"]')
    assert calculator.locator("[data-testid=tool-args]").text_content() == '{"expression": "(109 * 12) * 0.85"}'
    assert calculator.locator("[data-testid=tool-result]").text_content() == "1111.8"
    # The card sits inside the analyst's message, after the text written before the call.
    message = alice.locator('[data-node-id="numbers"]').first
    assert message.locator("[data-testid=tool-call]").count() == 2
    assert message.locator("[data-testid=message-text]").text_content().startswith("I will check this with")

    # save_note needs approval: its card asks (the review dialog stays closed for it).
    approval = alice.locator('[data-testid=tool-call][data-status="waiting_approval"] [data-testid=tool-approval]')
    approval.wait_for(timeout=60_000)
    assert not alice.is_visible("[data-testid=review-dialog][open]")
    wait_status(alice, "waiting_review")
    approval.locator("[data-testid=tool-approve]").click()
    note = alice.locator('[data-testid=tool-call]:has(.tool-name:text-is("save_note"))')
    note.locator("[data-testid=tool-result]").wait_for()
    assert note.locator("[data-testid=tool-result]").text_content() == "saved note #1"
    wait_status(alice, "completed", timeout=90_000)
    assert page_transcript(alice) == site.transcript(session_id)
    statuses = alice.eval_on_selector_all("[data-testid=tool-call]", "els => els.map(e => e.dataset.status)")
    assert statuses == ["succeeded"] * 5
