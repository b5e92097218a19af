"""The meeting room in headless Chromium against a real server."""

import re
import time

import pytest

from sessions_app.models import Session  # noqa: F401  (documents what the rows are)
from tests.e2e.conftest import create_session, login, make_site, page_transcript, wait_status

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def approve_review(page):
    page.wait_for_selector("[data-testid=review-dialog][open]", timeout=60_000)
    page.click("[data-testid=btn-approve]")


def test_demo_session_live_pause_resume_review_complete(browser, site):
    alice = login(browser, site, "alice")
    session_id = create_session(alice, "demo", "Q3 roadmap review")
    # A second viewer (same owner, another browser context) watches the same room.
    viewer = login(browser, site, "alice")
    viewer.goto(alice.url)
    viewer.wait_for_selector('[data-testid=conn-badge][data-state="connected"]')

    alice.click("[data-testid=btn-start]")
    wait_status(alice, "running")
    # Tokens stream: a message grows while it is not final.
    streaming = alice.locator('[data-testid^="message-"][data-final="false"] [data-testid=message-text]').first
    streaming.wait_for()
    alice.wait_for_function(
        "() => window.__room.state.messages.some(m => !m.final && m.text.length > 20)"
    )
    alice.click("[data-testid=btn-pause]")
    wait_status(alice, "paused")
    assert alice.is_enabled("[data-testid=btn-resume]") and not alice.is_enabled("[data-testid=btn-pause]")
    time.sleep(0.5)
    frozen = page_transcript(alice)
    time.sleep(1.0)
    assert page_transcript(alice) == frozen  # nothing streams while paused
    alice.click("[data-testid=btn-resume]")
    wait_status(alice, "running")

    alice.fill("[data-testid=user-input]", "Please focus on EMEA.")
    alice.click("[data-testid=btn-send]")
    alice.wait_for_function("() => window.__room.state.messages.some(m => m.kind === 'user')")

    approve_review(alice)
    wait_status(alice, "completed", timeout=90_000)
    wait_status(viewer, "completed")

    row = site.session_row(session_id)
    assert row["status"] == "completed"
    assert page_transcript(alice) == site.transcript(session_id)
    assert page_transcript(viewer) == page_transcript(alice)
    cost = float(re.sub(r"[^0-9.]", "", alice.text_content("[data-testid=total-cost]")))
    assert cost == pytest.approx(float(row["cost_usd"]), abs=1e-4)
    assert int(re.sub(r"\D", "", alice.text_content("[data-testid=total-input]"))) == row["input_tokens"]
    assert int(re.sub(r"\D", "", alice.text_content("[data-testid=total-output]"))) == row["output_tokens"]
    assert alice.get_attribute("[data-testid=progress]", "data-done") == "8"
    for node in ("brief", "market", "tech", "risk", "review", "summary"):
        assert alice.get_attribute(f"[data-testid=node-{node}]", "data-status") == "completed"
    # A finished session opens in the same room, filled from the snapshot.
    late = login(browser, site, "alice")
    late.goto(alice.url)
    wait_status(late, "completed")
    assert page_transcript(late) == site.transcript(session_id)
    for page in (alice, viewer, late):
        page.context.close()


def test_forced_socket_close_reconnects_without_loss(browser, site):
    alice = login(browser, site, "alice")
    sockets = []

    def route(ws):
        server = ws.connect_to_server()
        sockets.append((ws, server))

    alice.route_web_socket(re.compile(r".*/ws/sessions/.*"), route)
    session_id = create_session(alice, "demo", "Drop test")
    alice.click("[data-testid=btn-start]")
    alice.wait_for_function("() => window.__room.state.messages.some(m => !m.final && m.text.length > 10)")
    for n in range(2):  # drop the socket twice, mid-stream
        sockets[-1][0].close(code=4000, reason="network drop")
        deadline = time.monotonic() + 20
        while len(sockets) < n + 2 and time.monotonic() < deadline:
            alice.wait_for_timeout(100)
        alice.wait_for_selector('[data-testid=conn-badge][data-state="connected"]')
        alice.wait_for_timeout(800)
    assert len(sockets) >= 3
    approve_review(alice)
    wait_status(alice, "completed", timeout=90_000)
    assert page_transcript(alice) == site.transcript(session_id)
    keys = alice.evaluate("() => window.__room.state.messages.map(m => m.key)")
    assert len(keys) == len(set(keys))
    alice.context.close()


def test_server_restart_mid_stream_page_catches_up(browser, tmp_path):
    site = make_site(tmp_path, SCRIPTED_TOKENS_PER_SECOND="40")
    try:
        alice = login(browser, site, "alice")
        session_id = create_session(alice, "quick-chat", "Restart test")
        alice.click("[data-testid=btn-start]")
        alice.wait_for_function("() => window.__room.state.messages.some(m => !m.final && m.text.length > 10)")
        site.restart(kill=True)  # SIGKILL the only server process mid-stream
        alice.wait_for_selector('[data-testid=conn-badge][data-state="reconnecting"]', timeout=15_000)
        wait_status(alice, "completed", timeout=90_000)
        alice.wait_for_selector('[data-testid=conn-badge][data-state="connected"]')
        assert page_transcript(alice) == site.transcript(session_id)
        keys = alice.evaluate("() => window.__room.state.messages.map(m => m.key)")
        assert len(keys) == len(set(keys))
        alice.context.close()
    finally:
        site.server.stop()


def test_agent_and_user_text_is_never_html(browser, tmp_path):
    from tests.workflows.fake_openai import FakeOpenAI

    payload = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    with FakeOpenAI() as fake:
        fake.answer = ["Result: ", payload, " end"]
        site = make_site(tmp_path, LLM_PROVIDER="openai", OPENAI_BASE_URL=fake.base_url,
                         OPENAI_API_KEY="test-key", OPENAI_MODEL="gpt-4o-mini")
        try:
            alice = login(browser, site, "alice")
            create_session(alice, "quick-chat", "XSS test")
            alice.fill("[data-testid=user-input]", payload)
            alice.click("[data-testid=btn-send]")
            alice.click("[data-testid=btn-start]")
            wait_status(alice, "completed", timeout=60_000)
            texts = alice.locator("[data-testid=message-text]").all_text_contents()
            assert sum(payload in t for t in texts) >= 2  # shown literally, agent and user
            assert alice.evaluate("() => window.__xss") is None
            assert alice.locator("main img[src=x], [data-testid^=message-] img, [data-testid^=message-] script").count() == 0
            alice.reload()
            wait_status(alice, "completed")
            assert alice.evaluate("() => window.__xss") is None
            alice.context.close()
        finally:
            site.server.stop()
