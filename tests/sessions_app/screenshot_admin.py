"""Screenshot of the admin session page for docs/admin-session.png (a script, not a test).

Builds a throwaway SQLite database, fills it with factory data, serves it with
``manage.py runserver`` and drives headless Chromium through the admin login to the
session change page. Run from the project root:

    .venv/bin/python tests/sessions_app/screenshot_admin.py [output.png]
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DB_PATH = Path("/tmp/admin-shot.sqlite3")

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=f"sqlite:///{DB_PATH}",
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="1",
        # Nothing in this database should ever be picked up and run.
        WORKFLOW_EXECUTOR="worker",
    )
    return env


def build_database() -> str:
    """Migrate a fresh database and create the pictured session; returns its admin URL."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DB_PATH}{suffix}").unlink(missing_ok=True)
    os.environ.update(_environment())
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.urls import reverse

    from sessions_app.models import NodeStatus, SessionStatus
    from tests.sessions_app.factories import (
        NodeSpec,
        add_user_message,
        make_many_sessions,
        make_session,
        make_user,
    )

    call_command("migrate", verbosity=0)
    admin = make_user("reviewer", is_staff=True, is_superuser=True)
    owner = make_user("olivia")
    make_many_sessions(owners=[owner, admin], count=6, workflows=("demo", "quick-chat"))
    nodes = [
        NodeSpec(
            "research", "analyst", input_tokens=1850, output_tokens=620,
            cost_usd=Decimal("0.006410"),
            answer="Churn fell from 4.1% to 3.2% after the onboarding rewrite.\n"
                   "Two competitors launched usage-based pricing in May.",
            thinking="Start from the retention cohort table, then check competitor news "
                     "for pricing changes that could explain the Q2 dip.",
        ),
        NodeSpec(
            "draft", "writer", input_tokens=2400, output_tokens=1100,
            cost_usd=Decimal("0.011200"),
            answer="Proposal: keep flat pricing for Q3, add a usage tier for teams above "
                   "50 seats, and re-run the cohort analysis in August.",
            thinking="The analyst's numbers favour retention work over a price change; "
                     "a usage tier answers the competitor move without churn risk.",
        ),
        NodeSpec(
            "critique", "critic", status=NodeStatus.FAILED, input_tokens=900,
            output_tokens=0, cost_usd=Decimal("0.001350"),
        ),
    ]
    session = make_session(
        owner=owner, title="Q3 pricing review", workflow_slug="product-review",
        status=SessionStatus.COMPLETED, nodes=nodes, review=True, reviewer=admin, events=240,
    )
    add_user_message(session, owner, "Please keep the proposal to one paragraph.")
    return reverse("admin:sessions_app_session_change", args=[session.pk])


def free_port(preferred: int = 8765) -> int:
    """8765 if nobody listens there (other tools in this tree may), else any free port."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise RuntimeError("no free port")


def wait_for_server(process: subprocess.Popen, base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("runserver exited early")
        try:
            urllib.request.urlopen(f"{base}/admin/login/", timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("runserver did not answer")


def screenshot(base: str, change_path: str, output: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{base}/admin/login/?next={change_path}")
        page.fill("#id_username", "reviewer")
        page.fill("#id_password", "pw-123456")
        page.click("input[type=submit]")
        page.wait_for_url(f"**{change_path}")
        # Unfold the first thinking box so the picture shows it apart from the answer.
        page.eval_on_selector("details.thinking", "d => d.open = true")
        page.screenshot(path=str(output), full_page=True)
        browser.close()


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "admin-session.png"
    change_path = build_database()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT, env=_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_server(server, base)
        screenshot(base, change_path, output)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
