"""A run outlives its runner: take-over after a crash or a shutdown, and lost control messages.

The in-process tests hand a run from one Executor to another on the test loop (SQLite). The
last test SIGKILLs a real ``manage.py run_worker`` mid-run against the real PostgreSQL and
Redis and lets a second worker finish the run once the lease expired.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import redis
import yaml
from channels.db import database_sync_to_async

from realtime.state import fold
from sessions_app.models import HumanReview, TokenUsage
from tests import procs
from tests.workflows.helpers import (
    SHIPPED_DIR,
    RecordingProvider,
    agent_node,
    command,
    context_text,
    create_session,
    events,
    install_workflows,
    is_event,
    is_state,
    review_node,
    session_row,
    states,
    usage_sums,
    wait_event,
    wait_finished,
    workflow,
)
from workflows.store import get_store
from workflows.worker import Executor

REVIEWED = workflow(
    "reviewed",
    agent_node("draft", max_tokens=8, thinking=False),
    review_node("check", "draft", max_rounds=2),
    agent_node("final", "check", max_tokens=8, thinking=False),
)
SLOW_DRAFT = workflow(
    "slow-draft",
    agent_node("draft", max_tokens=60, thinking=False),
    review_node("check", "draft", max_rounds=2),
    agent_node("final", "check", max_tokens=8, thinking=False),
)
SOLO = workflow("solo", agent_node("talk", max_tokens=80, thinking=False))


@pytest.fixture
def flows(settings: Any, tmp_path: Path) -> Any:
    install_workflows(settings, tmp_path, REVIEWED, SLOW_DRAFT, SOLO)
    return settings


async def _start_executor(owner: str) -> Executor:
    executor = Executor(owner=owner)
    await executor.start()
    return executor


async def _crash(executor: Executor, monkeypatch: Any) -> None:
    """Stop an executor like a killed process: nothing written, the lease left to expire."""
    monkeypatch.setattr(get_store(), "release_lease", lambda **kwargs: None)
    await executor.close()
    monkeypatch.undo()


@pytest.mark.django_db(transaction=True)
async def test_takeover_asks_a_waiting_review_again(flows, executor, owner, monkeypatch):
    flows.WORKER_LEASE_SECONDS = 0.6
    sid = await create_session(owner, "reviewed")
    assert await command(sid, owner, "start_session") is None
    first = await wait_event(sid, is_event("human_interaction_required"))
    await _crash(executor, monkeypatch)
    row = await session_row(sid)
    assert (row.status, row.lease_owner) == ("waiting_review", "test-executor")
    other = await _start_executor("executor-b")
    try:
        again = await wait_event(sid, is_event("human_interaction_required"), after=first["seq"], timeout=5)
        assert again["data"] | {"timeout": None} == first["data"]
        assert (await session_row(sid)).lease_owner == "executor-b"
        assert await command(sid, owner, "submit_review", node_id="check", decision="approve") is None
        assert await wait_finished(sid) == "completed"
    finally:
        await other.close()
    log = await events(sid)
    seen = states(log)
    assert seen["draft"] == ["running", "completed"]  # not run again
    assert seen["check"] == ["waiting_review", "waiting_review", "completed"]
    reviews = await database_sync_to_async(
        lambda: list(HumanReview.objects.filter(session_id=sid).values_list("round", "status"))
    )()
    assert reviews == [(1, "decided")]
    usage = await database_sync_to_async(
        lambda: Counter(TokenUsage.objects.filter(session_id=sid).values_list("node_id", flat=True))
    )()
    assert usage == {"draft": 1, "final": 1}


@pytest.mark.django_db(transaction=True)
async def test_takeover_while_the_reviewed_agent_answers_a_rejection(flows, executor, owner, monkeypatch):
    """The rejected draft was streaming its second answer when its runner shut down: the
    next runner answers that round again, with the reviewer's comment, then asks round 2."""
    flows.SCRIPTED_TOKENS_PER_SECOND = 100
    recorder = RecordingProvider()
    monkeypatch.setattr("workflows.nodes.agent.get_provider", lambda name: recorder)
    sid = await create_session(owner, "slow-draft")
    assert await command(sid, owner, "start_session") is None
    await wait_event(sid, is_event("human_interaction_required"))
    assert await command(sid, owner, "submit_review", node_id="check", decision="reject",
                         comment="cite two zeppelin sources") is None
    retry = await wait_event(sid, lambda e: e["event"] == "node_state_change"
                             and e["data"] == {"node_id": "draft", "status": "running", "agent_id": "draft"}
                             and e["seq"] > 5)
    await wait_event(sid, is_event("token_stream", "draft"), after=retry["seq"])
    await executor.close()  # a graceful shutdown hands the run over at once
    other = await _start_executor("executor-b")
    try:
        asked = await wait_event(sid, lambda e: e["event"] == "human_interaction_required"
                                 and e["data"]["round"] == 2, timeout=5)
        assert await command(sid, owner, "submit_review", node_id="check", decision="approve") is None
        assert await wait_finished(sid) == "completed"
    finally:
        await other.close()
    log = await events(sid)
    assert states(log)["draft"] == [
        "running", "completed", "running", "stopped", "pending", "running", "completed",
    ]
    interrupted = next(e for e in log if is_state("draft", "stopped")(e))
    assert interrupted["data"]["error"].startswith("interrupted")
    rounds = await database_sync_to_async(
        lambda: sorted(TokenUsage.objects.filter(session_id=sid, node_id="draft").values_list("round", flat=True))
    )()
    assert rounds == [1, 2]
    first, cut, again = recorder.for_node("draft")
    assert "cite two zeppelin sources" in context_text(again)
    assert again.messages == cut.messages
    assert len([e for e in log if e["event"] == "human_interaction_required"]) == 2
    assert asked["data"]["node_id"] == "check"
    sums = await usage_sums(sid)
    row = await session_row(sid)
    assert (row.input_tokens, row.output_tokens, row.cost_usd) == (sums["i"], sums["o"], sums["c"])


@pytest.mark.django_db(transaction=True)
async def test_lost_control_messages_are_recovered_by_the_lease_renewal(flows, executor, owner, monkeypatch):
    flows.WORKER_LEASE_SECONDS = 0.6  # renewal (and status re-read) every 0.2 s
    flows.SCRIPTED_TOKENS_PER_SECOND = 40
    monkeypatch.setattr("workflows.control.send_run_control", lambda *args, **kwargs: None)
    sid = await create_session(owner, "solo")
    assert await command(sid, owner, "start_session") is None
    await wait_event(sid, is_event("token_stream", "talk"))
    assert await command(sid, owner, "pause_session") is None
    paused = await wait_event(sid, is_state("talk", "paused"), timeout=2)
    assert await command(sid, owner, "resume_session") is None
    await wait_event(sid, is_state("talk", "running"), after=paused["seq"], timeout=2)
    assert await command(sid, owner, "stop_session") is None
    assert await wait_finished(sid, timeout=2) == "stopped"
    assert states(await events(sid))["talk"] == ["running", "paused", "running", "stopped"]


# --------------------------------------------------------------------------- real processes

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
REDIS_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture
def throwaway_postgres() -> Any:
    """A fresh database for this test run, dropped afterwards (fails if PostgreSQL is down)."""
    name = f"takeover_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def flushed_redis() -> Any:
    """Redis db 14, emptied before and after (fails if Redis is down)."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


def _quick_demo(folder: Path) -> str:
    """The demo workflow with short answers and a 1 s review that approves by default."""
    definition = yaml.safe_load((SHIPPED_DIR / "demo.yaml").read_text())
    definition["slug"] = "takeover-demo"
    for node in definition["nodes"]:
        if node["type"] == "agent":
            node["options"] = {"max_tokens": 24, "thinking": False}
        else:
            node["options"].update({"timeout": 1, "default_decision": "approve"})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "takeover-demo.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
    return "takeover-demo"


_CREATE = """
import json
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from sessions_app import services
settings.WORKFLOW_DIR = {folder!r}
owner = get_user_model().objects.create_user("alice")
session = services.session_create(owner=owner, workflow_slug={slug!r}, title="take-over")
with transaction.atomic():
    services.session_start(session_id=str(session.pk), user=owner)
print(json.dumps({{"id": str(session.pk)}}))
"""


class _Db:
    """Reads the test's PostgreSQL database directly (the rows the workers wrote)."""

    def __init__(self, dbname: str, session_id: str) -> None:
        self.conn = psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={dbname}",
                                    autocommit=True)
        self.sid = session_id

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, {"sid": self.sid}).fetchall()

    def nodes(self) -> dict[str, tuple[str, Any, Any]]:
        return {
            node: (status, started, finished)
            for node, status, started, finished in self.rows(
                "SELECT node_id, status, started_at, finished_at FROM sessions_app_nodestate "
                "WHERE session_id = %(sid)s"
            )
        }

    def session(self) -> dict[str, Any]:
        [row] = self.rows(
            "SELECT status, lease_owner, input_tokens, output_tokens, cost_usd, last_seq "
            "FROM sessions_app_session JOIN realtime_sessionlog ON session_id = id "
            "WHERE id = %(sid)s"
        )
        return dict(zip(("status", "lease_owner", "input", "output", "cost", "last_seq"), row, strict=True))

    def events(self) -> list[tuple[int, str, str | None, dict[str, Any], Any]]:
        return self.rows(
            "SELECT seq, event, node_id, data, created_at FROM realtime_sessionevent "
            "WHERE session_id = %(sid)s ORDER BY seq"
        )


@contextlib.contextmanager
def _worker_run(
    database: str, redis_url: str, tmp_path: Path
) -> Iterator[tuple[Any, procs.Proc, str, _Db]]:
    """A migrated database and worker A running the quick demo in a real process:
    (the process group, with ``start_worker(name)``; worker A; the session id; its rows)."""
    env = procs.child_env(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}",
        REDIS_URL=redis_url, WORKFLOW_EXECUTOR="worker", WORKER_LEASE_SECONDS="2",
        WORKER_POLL_SECONDS="0.2", SCRIPTED_TOKENS_PER_SECOND="40", TOKEN_COALESCE_MS="50",
        VAR_DIR=str(tmp_path), LOG_LEVEL="INFO",
    )
    procs.run_manage(["migrate", "--noinput", "-v", "0"], env=env)
    slug = _quick_demo(tmp_path / "workflows")
    with procs.ProcessGroup() as group:

        def start_worker(name: str) -> procs.Proc:
            log_path = tmp_path / f"{name}.log"
            return group.start(
                procs.manage_args("run_worker", "--owner", name), env=env, log_path=log_path,
                ready=lambda: procs.log_contains(log_path, "ready"), name=name,
            )

        group.start_worker = start_worker  # type: ignore[attr-defined]
        worker_a = start_worker("worker-a")
        created = procs.run_manage(
            ["shell", "-c", _CREATE.format(folder=str(tmp_path / "workflows"), slug=slug)], env=env
        )
        sid = json.loads(created.stdout.strip().splitlines()[-1])["id"]
        yield group, worker_a, sid, _Db(database, sid)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_sigkilled_worker_is_taken_over_after_its_lease_expires(
    throwaway_postgres: str, flushed_redis: str, tmp_path: Path
) -> None:
    with _worker_run(throwaway_postgres, flushed_redis, tmp_path) as (group, worker_a, sid, db):

        def mid_run() -> dict[str, tuple[str, Any, Any]] | None:
            nodes = db.nodes()
            done = [n for n, (status, *_) in nodes.items() if status == "completed"]
            running = [n for n, (status, *_) in nodes.items() if status == "running"]
            return nodes if len(done) >= 2 and len(running) >= 2 else None

        before = procs.wait_until(mid_run, timeout=20, interval=0.03, what="parallel stage")
        assert db.session()["lease_owner"] == "worker-a"
        worker_a.kill()
        killed_at = time.time()
        before = db.nodes()  # what the dead worker left (it can write no more)
        events_before = db.events()
        worker_b = group.start_worker("worker-b")
        procs.wait_until(lambda: db.session()["status"] in ("completed", "failed", "stopped"),
                         timeout=30, interval=0.1, what="end of the run")
        finished_at = time.time()
        # the log line follows the commit of the run's end: wait for it, not just the row
        procs.wait_until(lambda: "ended: completed" in worker_b.log(), timeout=5,
                         what="worker B reporting the end of the run")
        worker_b.stop()

    session = db.session()
    assert session["status"] == "completed"
    completed_before = [n for n, (status, *_) in before.items() if status == "completed"]
    interrupted = [n for n, (status, *_) in before.items() if status == "running"]
    after = db.nodes()
    assert all(status == "completed" for status, *_ in after.values())
    log = db.events()

    # completed nodes were not run again: same timestamps, one start each
    starts = Counter(node for _, event, node, data, _ in log
                     if event == "node_state_change" and data["status"] == "running")
    for node in completed_before:
        assert after[node][1:] == before[node][1:], node
        assert starts[node] == 1, node
    # interrupted nodes were settled by worker B, then ran once more
    for node in interrupted:
        statuses = [data["status"] for _, event, n, data, _ in log if event == "node_state_change" and n == node]
        assert statuses == ["running", "stopped", "pending", "running", "completed"], (node, statuses)
        assert after[node][1] == before[node][1]  # started_at kept from the first attempt
    # no usage counted twice: one row per node and round, all round 1
    usage = db.rows("SELECT node_id, round, count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd) "
                    "FROM sessions_app_tokenusage WHERE session_id = %(sid)s GROUP BY node_id, round")
    assert sorted((node, rnd, count) for node, rnd, count, *_ in usage) == sorted(
        (node, 1, 1) for node in after if node != "review"
    )
    totals = (sum(r[3] for r in usage), sum(r[4] for r in usage), sum(r[5] for r in usage))
    assert (session["input"], session["output"], session["cost"]) == totals
    [(_, _, _, done, _)] = [row for row in log if row[1] == "execution:completed"]
    assert (done["input_tokens"], done["output_tokens"]) == totals[:2]
    assert done["cost_usd"] == float(totals[2])
    # the event log stayed gap-free across both workers
    seqs = [row[0] for row in log]
    assert seqs == list(range(1, len(seqs) + 1)) and session["last_seq"] == len(seqs)
    # interrupted messages were closed with the text viewers had been sent
    for node in interrupted:
        texts = [text for text, final in db.rows(
            f"SELECT text, is_final FROM sessions_app_message WHERE session_id = %(sid)s "
            f"AND node_id = '{node}' ORDER BY id") if final]
        streamed = "".join(data["chunk"] for seq, event, n, data, _ in events_before
                           if event == "token_stream" and n == node and not data["is_thinking"])
        assert len(texts) == 2 and texts[0] == streamed
    takeover_at = next(created for seq, event, n, data, created in log
                       if event == "node_state_change" and data.get("error", "").startswith("interrupted"))
    print(
        f"\ntake-over: killed during {interrupted} after {completed_before}; "
        f"worker B settled them {takeover_at.timestamp() - killed_at:.2f} s after the kill; "
        f"run ended {finished_at - killed_at:.2f} s after it; {len(seqs)} events, "
        f"usage rows {len(usage)}, totals {totals}"
    )
    db.conn.close()



@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_a_worker_frozen_past_its_lease_stores_nothing_after_it_is_thawed(
    throwaway_postgres: str, flushed_redis: str, tmp_path: Path
) -> None:
    """Fencing, with real processes: SIGSTOP worker A mid-stream, worker B takes the run over
    and finishes it, SIGCONT A: nothing A held queued (events, node-boundary rows, usage,
    messages) is stored, and the log stays gap-free and equal to the fold of the rows."""
    with _worker_run(throwaway_postgres, flushed_redis, tmp_path) as (group, worker_a, sid, db):

        def streaming() -> bool:
            running = [n for n, (status, *_) in db.nodes().items() if status == "running"]
            return bool(running) and any(
                event == "token_stream" and node in running for _, event, node, _, _ in db.events()
            )

        procs.wait_until(streaming, timeout=20, interval=0.03, what="a node streaming")
        os.kill(worker_a.pid, signal.SIGSTOP)
        try:
            worker_b = group.start_worker("worker-b")
            procs.wait_until(lambda: db.session()["status"] in ("completed", "failed", "stopped"),
                             timeout=40, interval=0.1, what="end of the run under worker B")
            procs.wait_until(lambda: "ended: completed" in worker_b.log(), timeout=5,
                             what="worker B reporting the end of the run")
            finished = db.events()
        finally:
            os.kill(worker_a.pid, signal.SIGCONT)
        procs.wait_until(
            lambda: "taken over" in worker_a.log() or "another runner took it over" in worker_a.log(),
            timeout=15, what="worker A noticing it was taken over",
        )
        time.sleep(2)  # whatever A still held has been tried by now
        log = db.events()
        worker_b.stop()
        worker_a.stop()

    assert db.session()["status"] == "completed"
    assert log == finished, "the thawed worker stored events after the run ended"
    seqs = [row[0] for row in log]
    assert seqs == list(range(1, len(seqs) + 1)) and db.session()["last_seq"] == len(seqs)
    completed_at = {n: seq for seq, event, n, data, _ in log
                    if event == "node_state_change" and data["status"] == "completed"}
    late = [(seq, n) for seq, event, n, _, _ in log
            if event == "token_stream" and n in completed_at and seq > completed_at[n]]
    assert not late, f"tokens logged into completed nodes: {late}"
    usage = db.rows("SELECT node_id, round, count(*) FROM sessions_app_tokenusage "
                    "WHERE session_id = %(sid)s GROUP BY node_id, round")
    assert all(count == 1 for _, _, count in usage), usage
    state = fold([{"event": event, "data": data, "node_id": node, "seq": seq,
                   "timestamp": created.isoformat().replace("+00:00", "Z"), "session_id": sid}
                  for seq, event, node, data, created in log])
    messages = db.rows("SELECT node_id, text, is_final FROM sessions_app_message "
                       "WHERE session_id = %(sid)s AND kind = 'agent' ORDER BY id")
    # per node in order (parallel nodes' messages may interleave differently)
    assert sorted((m["node_id"], m["text"], m["final"]) for m in state["messages"]
                  if m["kind"] == "agent") == sorted(tuple(row) for row in messages)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.slow
def test_a_worker_sigkilled_while_a_tool_runs_is_taken_over_and_the_call_shown_interrupted(
    throwaway_postgres: str, flushed_redis: str, tmp_path: Path
) -> None:
    """A real run_worker is SIGKILLed while its agent's MCP tool runs; the second worker marks
    the call interrupted (not silently repeated), runs the node again with a new call, and
    the killed worker's MCP server process does not outlive it (it exits when its stdin
    closes)."""
    folder, pids = tmp_path / "workflows", tmp_path / "mcp-pids"
    folder.mkdir()
    pids.write_text("")
    server = Path(__file__).with_name("mcp_fault_server.py")
    (folder / "tool-kill.yaml").write_text(yaml.safe_dump({
        "slug": "tool-kill", "name": "Tool kill",
        "mcp_servers": {"faults": {"command": "python", "args": [str(server)],
                                   "env": {"MCP_PID_FILE": str(pids)}, "startup_timeout": 20}},
        "agents": {"worker": {"name": "Worker", "role": "calls a slow tool", "model": "scripted-small",
                              "prompt": "Use the tool.",
                              "tools": [{"mcp": "faults", "only": ["hang"], "timeout": 30}]}},
        "nodes": [{"id": "work", "type": "agent", "agent": "worker", "options": {
            "thinking": False, "max_tokens": 8,
            "scripted_tool_calls": [{"name": "hang", "arguments": {"seconds": 3}}]}}],
    }, sort_keys=False))
    env = procs.child_env(
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{throwaway_postgres}",
        REDIS_URL=flushed_redis, WORKFLOW_EXECUTOR="worker", WORKER_LEASE_SECONDS="2",
        WORKER_POLL_SECONDS="0.2", SCRIPTED_TOKENS_PER_SECOND="40", VAR_DIR=str(tmp_path),
        WORKFLOW_DIR=str(folder), LOG_LEVEL="INFO",
    )
    procs.run_manage(["migrate", "--noinput", "-v", "0"], env=env)
    with procs.ProcessGroup() as group:

        def start_worker(name: str) -> procs.Proc:
            log_path = tmp_path / f"{name}.log"
            return group.start(procs.manage_args("run_worker", "--owner", name), env=env,
                               log_path=log_path, ready=lambda: procs.log_contains(log_path, "ready"),
                               name=name)

        worker_a = start_worker("worker-a")
        created = procs.run_manage(["shell", "-c", _CREATE.format(folder=str(folder), slug="tool-kill")],
                                   env=env)
        db = _Db(throwaway_postgres, json.loads(created.stdout.strip().splitlines()[-1])["id"])
        calls = lambda: db.rows("SELECT call_id, status FROM sessions_app_toolcall "
                                "WHERE session_id = %(sid)s ORDER BY id")
        procs.wait_until(lambda: [s for _, s in calls()] == ["running"], timeout=30, interval=0.05,
                         what="the tool call running")
        worker_a.kill()
        killed_at = time.time()
        first_server = [int(p) for p in pids.read_text().split()]
        worker_b = start_worker("worker-b")
        procs.wait_until(lambda: db.session()["status"] == "completed", timeout=40, interval=0.1,
                         what="the run completed by worker B")
        finished_at = time.time()
        worker_b.stop()
    after = calls()
    assert [s for _, s in after] == ["interrupted", "succeeded"]
    results = [(data["call_id"], data["status"]) for _, event, _, data, _ in db.events()
               if event == "tool_call_result"]
    assert results == [(after[0][0], "interrupted"), (after[1][0], "succeeded")]
    assert len(first_server) == 1
    procs.wait_until(lambda: not psutil.pid_exists(first_server[0]) or
                     psutil.Process(first_server[0]).status() == psutil.STATUS_ZOMBIE,
                     timeout=10, interval=0.1, what="the killed worker's MCP server to exit")
    seqs = [row[0] for row in db.events()]
    assert seqs == list(range(1, len(seqs) + 1))
    print(f"\ntool take-over: worker SIGKILLed while its MCP tool ran; call {after[0][0]} shown "
          f"interrupted, node re-run with {after[1][0]}; run ended {finished_at - killed_at:.2f} s "
          f"after the kill; the orphaned MCP server exited; {len(seqs)} events, gap-free")
    db.conn.close()
