"""A budget in the room, in headless Chromium against a real server: the cost panel shows the
token types and the budget, the run holds when it is reached and asks, and stopping it there
stops the run with nothing charged past the call in flight."""

import pytest

from tests.e2e.conftest import create_session, login, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BUDGET = 0.0025
ONE_TOKEN = 0.00001  # one output token of scripted-large


def test_a_budget_stops_a_run_from_the_room(browser, site):
    alice = login(browser, site, "alice")
    session_id = create_session(alice, "budget-demo", "Budgeted plan")
    alice.click("[data-testid=btn-start]")
    wait_status(alice, "running")
    budget = alice.locator("[data-testid=budget]")
    budget.wait_for()
    assert budget.text_content().startswith("Budget $0.0025")

    # The budget is reached in the critique: the dialog asks to raise it or stop.
    dialog = alice.locator("[data-testid=review-dialog][open]")
    dialog.wait_for(timeout=60_000)
    assert dialog.locator("#review-title").text_content() == "Budget reached"
    assert dialog.locator("[data-testid=review-budget-input]").is_visible()
    assert dialog.locator("[data-testid=btn-reject]").text_content().strip().endswith("Stop the run")
    wait_status(alice, "waiting_review")
    assert budget.get_attribute("data-state") == "reached"
    alice.wait_for_selector('[data-testid=node-critique][data-status="paused"]', timeout=10_000)

    # The cost panel shows the token types (the scripted models' thinking is reasoning).
    assert int(alice.locator("[data-testid=total-reasoning]").text_content().replace(",", "")) > 0
    assert alice.locator("[data-testid=total-cached]").text_content() == "0"
    assert alice.locator("[data-testid=price-unknown]").is_hidden()
    plan_row = alice.locator("[data-testid=cost-row-plan]")
    assert "reasoning" in plan_row.locator("td[data-part]").first.get_attribute("title")

    # A raise below the budget is refused in the dialog; stopping needs no comment.
    dialog.locator("[data-testid=review-budget-input]").fill("0.001")
    dialog.locator("[data-testid=btn-approve]").click()
    assert "above the current" in dialog.locator("#review-error").text_content()
    dialog.locator("[data-testid=btn-reject]").click()
    wait_status(alice, "stopped")

    row = site.session_row(session_id)
    assert (row["status"], row["budget_state"]) == ("stopped", "reached")
    assert float(row["cost_usd"]) <= BUDGET  # recorded: the plan; the held critique was stopped
    reached = alice.evaluate("() => window.__room.state.budget")
    assert BUDGET <= reached["cost_usd"] <= BUDGET + ONE_TOKEN
    with site.db() as conn:
        nodes = dict(conn.execute(
            "select node_id, status from sessions_app_nodestate where session_id = ?",
            (session_id.replace("-", ""),)).fetchall())
    assert nodes == {"plan": "completed", "critique": "stopped", "final": "pending"}
