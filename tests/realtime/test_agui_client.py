"""The official AG-UI client (npm's @ag-ui/client, installed by bin/test into tests/agui)
against a real daphne process: one client drives the demo through its review interrupt and
resumes it, a second joins mid-run, a third drops its stream and resumes with Last-Event-ID.
What they saw is checked against the session stored in the server's database."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from ag_ui.core import Event
from pydantic import TypeAdapter

from tests.servers import (
    ROOT,
    create_session,
    create_user,
    daphne,
    manage,
    server_env,
)

AGUI = ROOT / "tests" / "agui"
pytestmark = [pytest.mark.slow]


def _token(env: dict[str, str], scope: str) -> str:
    return manage(env, "create_api_token", "alice", "--scope", scope).strip().splitlines()[-1]


def test_three_agui_clients_drive_join_and_resume(tmp_path: Path):
    if not (AGUI / "node_modules" / "@ag-ui" / "client").exists():
        pytest.fail("npm ci --prefix tests/agui has not run (bin/test does it)")
    env = server_env(tmp_path, SCRIPTED_TOKENS_PER_SECOND="300")
    manage(env, "migrate", "-v0")
    create_user(env, "alice", "pw-alice-123")
    session = create_session(env, "alice", "demo")
    server = daphne(env, tmp_path)
    try:
        run = subprocess.run(
            [shutil.which("node") or "node", "clients.mjs"], cwd=AGUI, capture_output=True, text=True,
            timeout=180, env={**env, "BASE": server.base, "TOKEN": _token(env, "control"),
                              "WATCH_TOKEN": _token(env, "watch"), "SESSION": session["id"]},
        )
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        stored = {f"{node}#{rnd}": text for node, rnd, text in db.execute(
            "select node_id, round, text from sessions_app_message where kind = 'agent'")}
        users = [t for (t,) in db.execute("select text from sessions_app_message where kind = 'user'")]
        status = db.execute("select status from sessions_app_session").fetchone()[0]
    assert status == "completed"
    assert users == ["Please focus on EMEA first."]  # taken in once, though sent with every run

    a = seen["a"]
    assert a["first"][:2] == ["RUN_STARTED", "STATE_SNAPSHOT"] and a["first"][-1] == "RUN_FINISHED"
    assert a["interrupts"] == [{"id": "review:review:1", "reason": "human_review"}]
    assert a["second"][0] == "RUN_STARTED" and a["second"][-1] == "RUN_FINISHED" and a["pending"] == 0
    assert a["first"].count("STEP_STARTED") >= 6 and "REASONING_MESSAGE_CONTENT" in a["first"]
    assert a["texts"] == stored  # every answer, as the client assembled it, equals the row

    b = seen["b"]
    assert b["types"][:3] == ["RUN_STARTED", "STATE_SNAPSHOT", "MESSAGES_SNAPSHOT"]
    assert b["types"][-1] == "RUN_FINISHED"
    assert {k: v for k, v in b["texts"].items() if k in stored} and all(
        stored[k].startswith(v) for k, v in b["texts"].items() if k in stored)

    c = seen["c"]
    parse = TypeAdapter(Event).validate_python
    first, rest = c["first"], c["rest"]
    for item in first + rest:
        parse(item["event"])  # every event the endpoint sent is a valid AG-UI event
    ids = [int(e["id"]) for e in first + rest if e["id"] is not None]
    assert ids == sorted(set(ids)), "an event was repeated or out of order across the resume"
    assert int(c["lastId"]) == max(int(e["id"]) for e in first if e["id"] is not None)
    assert rest[-1]["event"]["type"] == "RUN_FINISHED"
    texts: dict[str, str] = {}
    for item in first + rest:
        event = item["event"]
        if event["type"] == "TEXT_MESSAGE_CONTENT" and not event["messageId"].startswith("user:"):
            texts[event["messageId"]] = texts.get(event["messageId"], "") + event["delta"]
    assert texts == stored  # nothing lost across the drop

