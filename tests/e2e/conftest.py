"""A real daphne server on a temporary SQLite database, and headless Chromium driven by Playwright."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.servers import Server, create_user, daphne, manage, server_env

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "pw-e2e-secret-1"


class Site:
    """The running server plus what the tests need around it."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.server: Server = daphne(env, tmp, "daphne")

    @property
    def base(self) -> str:
        return self.server.base

    def restart(self, *, kill: bool = True) -> None:
        port = self.server.port
        (self.server.kill if kill else self.server.stop)()
        from tests.servers import PYTHON

        self.server = Server(
            [str(Path(PYTHON).parent / "daphne"), "-b", "127.0.0.1", "-p", str(port),
             "config.asgi:application"],
            self.env, port, self.tmp / "daphne-2.log",
        )

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.tmp / "db.sqlite3", timeout=10)

    def transcript(self, session_id: str) -> list[tuple[str, str]]:
        """(node_id or 'user', text) of every stored message, sorted (the room places an agent
        message at its first token, the database at the node's start: the order may differ)."""
        with self.db() as conn:
            rows = conn.execute(
                "select kind, node_id, text from sessions_app_message where session_id = ? order by id",
                (session_id.replace("-", ""),),
            ).fetchall()
        return sorted(("user" if kind == "user" else node, text) for kind, node, text in rows)

    def session_row(self, session_id: str) -> dict[str, Any]:
        with self.db() as conn:
            conn.row_factory = sqlite3.Row
            row = conn.execute(
                "select * from sessions_app_session where id = ?", (session_id.replace("-", ""),)
            ).fetchone()
        return dict(row)


def make_site(tmp_path: Path, **extra: str) -> Site:
    env = server_env(
        tmp_path,
        SCRIPTED_TOKENS_PER_SECOND=extra.pop("SCRIPTED_TOKENS_PER_SECOND", "60"),
        TOKEN_COALESCE_MS="50",
        WORKER_LEASE_SECONDS="2",
        WORKER_POLL_SECONDS="0.2",
        **extra,
    )
    manage(env, "migrate", "-v0")
    for name in ("alice", "bob"):
        create_user(env, name, PASSWORD)
    return Site(tmp_path, env)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = make_site(tmp_path)
    yield s
    s.server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def login(browser: Browser, site: Site, username: str) -> Page:
    context = browser.new_context(viewport={"width": 1400, "height": 950})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{site.base}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit], form input[type=submit]")
    page.wait_for_url("**/sessions/")
    return page


def create_session(page: Page, workflow: str, title: str) -> str:
    page.select_option("select[name=workflow]", workflow)
    page.fill("input[name=title]", title)
    page.locator("[data-testid=new-session-form] button[type=submit]").click()
    page.wait_for_url("**/sessions/*-*/")
    page.wait_for_selector('[data-testid=conn-badge][data-state="connected"]')
    return page.url.rstrip("/").rsplit("/", 1)[1]


def page_transcript(page: Page) -> list[tuple[str, str]]:
    """(node_id or 'user', text) of every message on the page, sorted like Site.transcript."""
    rows = page.evaluate(
        """() => window.__room.state.messages.map(m => [m.kind === 'user' ? 'user' : m.node_id, m.text])"""
    )
    return sorted(tuple(row) for row in rows)


def wait_status(page: Page, status: str, timeout: float = 60_000) -> None:
    """The status as the live state says it (not the server-rendered first paint)."""
    page.wait_for_function(
        "s => window.__room && window.__room.router.lastSeq > 0 && window.__room.state.status === s",
        arg=status, timeout=timeout,
    )
    page.wait_for_selector(f'[data-testid=status-badge][data-status="{status}"]', timeout=timeout)
