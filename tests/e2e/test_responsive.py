"""The room and the new pages at 1,400, 1,024 and 390 px in headless Chromium: a test per
width fails when text is clipped (cut by its box or a panel, or a word broken in the middle)
or a control is off-screen. ``SCREENSHOTS=1`` also writes docs/screenshots/<page>-<width>.png."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import PASSWORD, make_site
from tests.servers import manage

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

# Run in the page: every problem found, described. Text is clipped when an element's own text
# overflows a box that hides it, when it sticks out of an ancestor that hides overflow (a
# panel), or when one word is laid out on two lines. A control is off-screen when it is not
# within the viewport's width.
CHECK = """
() => {
  const problems = [];
  const vw = document.documentElement.clientWidth;
  const visible = (el) => {
    const cs = getComputedStyle(el);
    if (cs.visibility === "hidden" || cs.display === "none") return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0
      && !el.closest("[hidden], dialog:not([open]), details:not([open]) > :not(summary), .visually-hidden, .skip-link");
  };
  const name = (el) => `${el.tagName.toLowerCase()}${el.dataset.testid ? "[" + el.dataset.testid + "]" : ""}.${[...el.classList].join(".")} "${(el.textContent || el.value || "").trim().slice(0, 30)}"`;
  const ownText = (el) => [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (document.documentElement.scrollWidth > vw + 1) problems.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}`);
  for (const el of document.querySelectorAll("a, button, input, select, textarea, summary")) {
    if (!visible(el) || el.closest(".table-wrap, .room-sections")) continue;
    const r = el.getBoundingClientRect();
    if (r.left < -1 || r.right > vw + 1) problems.push(`control off-screen: ${name(el)} (${Math.round(r.left)}..${Math.round(r.right)} of ${vw})`);
  }
  for (const el of document.querySelectorAll("body *")) {
    if (!visible(el) || !ownText(el) || el.closest(".transcript-scroll, .table-wrap, .room-sections, .diff, textarea, select, option")) continue;
    const cs = getComputedStyle(el);
    const hides = cs.overflowX !== "visible" || cs.textOverflow === "ellipsis";
    if (hides && el.scrollWidth > el.clientWidth + 1) problems.push(`text clipped by its box: ${name(el)}`);
    const r = el.getBoundingClientRect();
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      const acs = getComputedStyle(a);
      if (acs.overflowX === "hidden" || acs.overflowX === "clip") {
        const ar = a.getBoundingClientRect();
        if (r.right > ar.right + 1 || r.left < ar.left - 1) problems.push(`text cut by ${name(a).slice(0, 40)}: ${name(el)}`);
        break;
      }
    }
    for (const node of el.childNodes) {
      if (node.nodeType !== 3) continue;
      const re = /\\S{2,}/g;
      let m;
      while ((m = re.exec(node.textContent))) {
        const range = document.createRange();
        range.setStart(node, m.index);
        range.setEnd(node, m.index + m[0].length);
        const tops = new Set([...range.getClientRects()].filter((q) => q.width > 0).map((q) => Math.round(q.top)));
        if (tops.size > 1) problems.push(`word broken across lines: "${m[0]}" in ${name(el)}`);
      }
    }
  }
  return [...new Set(problems)];
}
"""


@pytest.fixture(scope="module")
def pages(browser, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """A finished demo session (headless run, review approved) and a fork of it."""
    site = make_site(tmp_path_factory.mktemp("responsive"), SCRIPTED_TOKENS_PER_SECOND="400")
    try:
        manage(site.env, "run_workflow", "demo", "--owner", "alice", "--title",
               "Q3 launch review: pricing, platform and risk", "--poll", "0.2", timeout=180)
        ids = json.loads(manage(site.env, "shell", "-c", (
            "import json;from sessions_app.models import Session;"
            "from sessions_app.services.forks import session_fork, ForkChanges;"
            "s = Session.objects.get();"
            "f = session_fork(session_id=s.pk, user=s.owner, node_id='merge', start=False,"
            " changes=ForkChanges(instruction='Name the biggest risk first.'));"
            "print(json.dumps([str(s.pk), str(f.pk)]))"
        )).strip().splitlines()[-1])
        yield {"site": site, "session": ids[0], "fork": ids[1]}
    finally:
        site.server.stop()


def _login(browser, site, width: int):
    context = browser.new_context(viewport={"width": width, "height": 900 if width > 500 else 844})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{site.base}/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit], form input[type=submit]")
    page.wait_for_url("**/sessions/")
    return page


@pytest.mark.parametrize("width", [1400, 1024, 390])
def test_nothing_is_clipped_or_off_screen(browser, pages, width):
    site = pages["site"]
    page = _login(browser, site, width)
    sid, fork = pages["session"], pages["fork"]
    screens = {
        "list": ("/sessions/", None),
        "room": (f"/sessions/{sid}/", "() => window.__room.router.lastSeq > 0 && window.__room.state.status === 'completed'"),
        "replay": (f"/sessions/{sid}/replay/?speed=0", "() => window.__room.replay.view.done && window.__room.replay.player.atEnd"),
        "fork-room": (f"/sessions/{fork}/", "() => window.__room.router.lastSeq > 0"),
        "fork": (f"/sessions/{sid}/fork/?node=merge", None),
        "compare": (f"/sessions/{fork}/compare/", None),
    }
    found: dict[str, list[str]] = {}
    for label, (path, ready) in screens.items():
        page.goto(site.base + path)
        if ready:
            page.wait_for_function(ready)
        page.wait_for_timeout(400)
        problems = page.evaluate(CHECK)
        if problems:
            found[label] = problems
        if os.environ.get("SCREENSHOTS") and label in ("room", "replay", "compare", "fork-room"):
            DOCS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(DOCS / f"{label}-{width}.png"), full_page=width < 500)
    if width < 500:  # on a phone every panel is one tap away
        page.goto(f"{site.base}/sessions/{sid}/")
        page.wait_for_function(screens["room"][1])
        for target in ("cost-heading", "workflow-heading", "people-heading"):
            page.click(f".room-sections a[href='#{target}']")
            page.wait_for_timeout(300)
            top, height = page.evaluate(
                f"() => [document.getElementById('{target}').getBoundingClientRect().top, innerHeight]")
            assert 0 <= top < height - 40, (target, top)  # in view (the last panel may not reach the top)
    page.context.close()
    assert not found, json.dumps(found, indent=1)
