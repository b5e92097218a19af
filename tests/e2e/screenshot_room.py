"""Make docs/room.png: a finished demo session in the meeting room (run: python -m tests.e2e.screenshot_room)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.e2e.conftest import ARGS, CHROMIUM, create_session, login, make_site, wait_status

OUT = Path(__file__).resolve().parents[2] / "docs" / "room.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        site = make_site(Path(tmp), SCRIPTED_TOKENS_PER_SECOND="150")
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = login(browser, site, "alice")
            create_session(page, "demo", "Q3 roadmap review")
            page.click("[data-testid=btn-start]")
            page.wait_for_timeout(1500)
            page.fill("[data-testid=user-input]", "Please focus on EMEA.")
            page.click("[data-testid=btn-send]")
            page.wait_for_selector("[data-testid=review-dialog][open]", timeout=60_000)
            page.click("[data-testid=btn-approve]")
            wait_status(page, "completed", timeout=60_000)
            page.wait_for_timeout(500)
            page.screenshot(path=str(OUT))
            browser.close()
        finally:
            site.server.stop()
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
