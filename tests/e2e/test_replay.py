"""Time travel in headless Chromium against a real server (docs/replay.md): a finished demo
session replayed at 16x ends with the live room's panels; a seek to the middle shows the fold
of the log at that seq; a shared replay is followed by a second browser; a fork from the
merge node with an added instruction runs merge, review and summary only and does not count
the inherited usage twice; the compare page shows both side by side."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from realtime.state import fold
from tests.e2e.conftest import PASSWORD, Site, create_session, login, make_site, wait_status
from tests.servers import create_user

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# What the replay's fold cannot know: a snapshot reads the members from the rows.
NOT_FOLDED = ("members", "member_changes")


@pytest.fixture(scope="module")
def demo(browser, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A finished demo session (the review approved), shared with bob as a viewer."""
    site = make_site(tmp_path_factory.mktemp("replay"), SCRIPTED_TOKENS_PER_SECOND="150")
    try:
        alice = login(browser, site, "alice")
        session_id = create_session(alice, "demo", "Launch review")
        alice.click("[data-testid=btn-start]")
        alice.wait_for_selector("[data-testid=review-dialog][open]", timeout=90_000)
        alice.click("[data-testid=btn-approve]")
        wait_status(alice, "completed", timeout=90_000)
        live = alice.evaluate("() => window.__room.state")
        panels = room_panels(alice)
        with site.db() as conn:
            bob_id = conn.execute("select id from auth_user where username='bob'").fetchone()[0]
            conn.execute(
                "insert into sessions_app_sessionshare (session_id, user_id, can_control, created_at)"
                " values (?, ?, 0, datetime('now'))", (session_id.replace("-", ""), bob_id))
        alice.context.close()
        yield {"site": site, "id": session_id, "live": live, "panels": panels}
    finally:
        site.server.stop()


def room_panels(page) -> dict[str, Any]:
    return {
        "cost": page.text_content("[data-testid=total-cost]"),
        "input": page.text_content("[data-testid=total-input]"),
        "output": page.text_content("[data-testid=total-output]"),
        "done": page.get_attribute("[data-testid=progress]", "data-done"),
        "statuses": page.eval_on_selector_all("[data-testid^=node-]", "els => els.map(e => [e.dataset.testid, e.dataset.status])"),
        "cost_rows": page.eval_on_selector_all("[data-testid^=cost-row-]", "els => els.map(e => e.textContent)"),
        "messages": page.eval_on_selector_all("[data-testid^=message-]", "els => els.length"),
    }


def replay_state(page) -> dict[str, Any]:
    return page.evaluate("() => window.__room.replay.player.state")


def wait_replay_end(page, timeout: float = 60_000) -> None:
    page.wait_for_function(
        "() => { const r = window.__room && window.__room.replay; return r && r.view.done && r.player.atEnd; }",
        timeout=timeout,
    )
    page.wait_for_timeout(200)  # the last frame rendered


def without(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in NOT_FOLDED}


def test_replay_at_16x_ends_like_the_live_room_and_a_seek_shows_the_fold_at_that_seq(browser, demo):
    site: Site = demo["site"]
    page = login(browser, site, "alice")
    page.goto(f"{site.base}/sessions/{demo['id']}/replay/?speed=16")
    page.wait_for_selector("[data-testid=btn-play][data-playing=true]")
    assert page.input_value("[data-testid=replay-speed]") == "16"
    # long idle stretches (the review wait) are compressed
    duration = page.evaluate("() => window.__room.replay.timeline.duration")
    assert duration < 120_000
    wait_replay_end(page, timeout=120_000)
    assert without(replay_state(page)) == without(demo["live"])
    assert room_panels(page) == demo["panels"]

    # a seek to the middle (the scrubber) shows exactly the fold of the log up to that seq
    log = page.evaluate(f"() => fetch('/sessions/{demo['id']}/events/?limit=5000').then(r => r.json())")
    middle = log["last_seq"] // 2
    page.evaluate(
        """seq => { const s = document.querySelector('[data-testid=scrubber]');
                    s.value = String(window.__room.replay.timeline.positionOfSeq(seq));
                    s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }""",
        middle,
    )
    page.wait_for_selector(f"[data-testid=replay-position][data-seq='{middle}']")
    expected = fold([e for e in log["events"] if e["seq"] <= middle])
    assert without(replay_state(page)) == without(expected)
    assert page.text_content("[data-testid=replay-position]").startswith(f"{middle} /")

    # step, jump to a node's start
    page.click("[data-testid=btn-step]")
    page.wait_for_selector(f"[data-testid=replay-position][data-seq='{middle + 1}']")
    page.select_option("[data-testid=jump-node]", "merge")
    page.wait_for_function("() => window.__room.replay.player.state.nodes.merge.status === 'running'")
    # the panel follows at its next render
    page.wait_for_selector("[data-testid=node-merge][data-status='running']", timeout=5_000)

    # a seek beyond the log is refused with a clear message
    page.goto(f"{site.base}/sessions/{demo['id']}/replay/?seq={log['last_seq'] + 50}")
    page.wait_for_selector("[data-testid=toast]")
    assert "beyond the log" in page.text_content("[data-testid=toast]")
    assert page.evaluate("() => window.__room.replay.player.position") == 0
    page.context.close()


def test_a_shared_replay_is_followed_by_a_second_browser(browser, demo):
    site: Site = demo["site"]
    alice = login(browser, site, "alice")
    alice.goto(f"{site.base}/sessions/{demo['id']}/replay/?seq=1")
    alice.wait_for_selector("[data-testid=replay-loaded][data-done=true]")
    bob = login(browser, site, "bob")
    bob_room = login(browser, site, "bob")
    bob_room.goto(f"{site.base}/sessions/{demo['id']}/")
    bob_room.wait_for_selector('[data-testid=conn-badge][data-state="connected"]')
    bob.goto(f"{site.base}/sessions/{demo['id']}/replay/?seq=1")
    bob.wait_for_selector("[data-testid=replay-loaded][data-done=true]")
    bob.wait_for_selector('[data-testid=conn-badge][data-state="connected"]')
    assert bob.is_hidden("[data-testid=btn-share]")  # a viewer may follow, not lead

    alice.click("[data-testid=btn-share]")
    bob.wait_for_selector("[data-testid=follow-wrap]:not([hidden])")
    assert "alice" in bob.text_content("[data-testid=shared-by]")
    # the live room offers to join
    bob_room.wait_for_selector("[data-testid=shared-notice]:not([hidden]) [data-testid=join-shared]")

    total = alice.evaluate("() => window.__room.replay.timeline.length")
    alice.evaluate(
        """n => { const s = document.querySelector('[data-testid=scrubber]'); s.value = String(n);
                  s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); }""",
        total // 3,
    )
    seq = alice.evaluate("() => window.__room.replay.player.seq")
    bob.wait_for_function("s => window.__room.replay.player.seq === s", arg=seq)
    alice.select_option("[data-testid=replay-speed]", "4")
    alice.click("[data-testid=btn-play]")
    bob.wait_for_function("() => window.__room.replay.player.playing && window.__room.replay.player.speed === 4")
    alice.click("[data-testid=btn-play]")  # pause
    bob.wait_for_function("() => !window.__room.replay.player.playing")
    alice.wait_for_timeout(300)
    assert bob.evaluate("() => window.__room.replay.player.seq") == alice.evaluate("() => window.__room.replay.player.seq")

    # bob leaves the shared replay and scrubs on his own; alice's moves no longer move him
    bob.uncheck("[data-testid=follow-shared]")
    bob.click("[data-testid=btn-step]")
    mine = bob.evaluate("() => window.__room.replay.player.seq")
    alice.click("[data-testid=btn-step-back]")
    alice.wait_for_timeout(500)
    assert bob.evaluate("() => window.__room.replay.player.seq") == mine
    for page in (alice, bob, bob_room):
        page.context.close()


def test_fork_from_merge_with_an_instruction_reruns_merge_review_summary_and_compare(browser, demo):
    site: Site = demo["site"]
    parent = site.session_row(demo["id"])
    alice = login(browser, site, "alice")
    alice.goto(f"{site.base}/sessions/{demo['id']}/")
    wait_status(alice, "completed")
    alice.click("[data-testid=fork-merge]")
    alice.wait_for_selector("[data-testid=fork-form]")
    alice.fill("[data-testid=fork-instruction]", "Name the single biggest risk first.")
    alice.click("[data-testid=btn-fork]")
    alice.wait_for_url(re.compile(r".*/sessions/[0-9a-f-]{36}/$"))
    fork_id = alice.url.rstrip("/").rsplit("/", 1)[1]
    assert fork_id != demo["id"]
    alice.wait_for_selector('[data-testid=conn-badge][data-state="connected"]')
    for node in ("brief", "research", "market", "tech", "risk"):
        alice.wait_for_selector(f"[data-testid=node-{node}][data-inherited=true][data-status=completed]")
    alice.wait_for_selector("[data-testid=review-dialog][open]", timeout=90_000)
    alice.click("[data-testid=btn-approve]")
    wait_status(alice, "completed", timeout=90_000)

    events = alice.evaluate(f"() => fetch('/sessions/{fork_id}/events/?limit=5000').then(r => r.json())")["events"]
    ran = {e["data"]["node_id"] for e in events
           if e["event"] == "node_state_change" and e["data"]["status"] in ("running", "waiting_review")}
    assert ran == {"merge", "review", "summary"}
    row = site.session_row(fork_id)
    with site.db() as conn:
        own = conn.execute("select sum(cost_usd), sum(input_tokens) from sessions_app_tokenusage"
                           " where session_id = ? and inherited = 0", (fork_id.replace("-", ""),)).fetchone()
        inherited = conn.execute("select count(*) from sessions_app_tokenusage where session_id = ?"
                                 " and inherited = 1", (fork_id.replace("-", ""),)).fetchone()[0]
    assert inherited == 5
    assert float(row["cost_usd"]) == pytest.approx(float(own[0]), abs=1e-9)
    assert row["input_tokens"] == own[1]
    assert float(row["cost_usd"]) < float(parent["cost_usd"])  # the inherited part is not counted again
    shown = float(re.sub(r"[^0-9.]", "", alice.text_content("[data-testid=total-cost]")))
    assert shown == pytest.approx(float(row["cost_usd"]), abs=1e-4)
    assert alice.get_attribute("[data-testid=cost-row-brief]", "data-inherited") == "true"
    assert alice.text_content("[data-testid=link-parent]") == "Launch review"

    alice.click("[data-testid=link-compare]")
    alice.wait_for_selector("[data-testid=compare]")
    assert alice.get_attribute("[data-testid=compare-node-merge]", "data-changed") == "true"
    assert alice.get_attribute("[data-testid=compare-node-brief]", "data-inherited") == "true"
    assert alice.locator("[data-testid=diff-merge] ins").count() > 0
    assert alice.text_content("[data-testid=total-right]").strip() == f"${float(row['cost_usd']):.6f}"
    Path(site.tmp / "fork_id").write_text(fork_id)
    demo["fork_id"] = fork_id
    alice.context.close()


def test_another_users_log_and_a_watchers_fork_are_refused(browser, demo, tmp_path):
    site: Site = demo["site"]
    create_user(site.env, "mallory", PASSWORD)
    mallory = login(browser, site, "mallory")
    status = mallory.evaluate(f"() => fetch('/sessions/{demo['id']}/events/').then(r => r.status)")
    assert status == 403
    mallory.context.close()
    bob = login(browser, site, "bob")  # a viewer: may replay, may not fork
    bob.goto(f"{site.base}/sessions/{demo['id']}/")
    bob.wait_for_selector('[data-testid=conn-badge][data-state="connected"]')
    assert bob.locator("[data-testid=fork-merge]").count() == 0
    response = bob.goto(f"{site.base}/sessions/{demo['id']}/fork/?node=merge")
    assert response.status == 403
    bob.context.close()
    json.dumps(demo["live"])  # the fixture's state stays JSON
