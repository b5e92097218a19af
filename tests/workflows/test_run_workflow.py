"""``manage.py run_workflow``: a headless run with a progress line, reviews decided by flag,
and an exit status that says whether the run completed."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from sessions_app.management.commands.run_workflow import Progress
from sessions_app.models import HumanReview, Message, Session
from tests import procs
from tests.workflows.helpers import agent_node, install_workflows, review_node, workflow

FAILING = workflow(
    "failing",
    agent_node("first", max_tokens=4, thinking=False),
    agent_node("broken", "first", fail=True),
)
REVIEWED = workflow(
    "reviewed",
    agent_node("draft", max_tokens=6, thinking=False),
    review_node("check", "draft", max_rounds=2, timeout=1, default_decision="approve"),
    agent_node("final", "check", max_tokens=6, thinking=False),
)


@pytest.fixture
def flows(settings: Any, tmp_path: Path) -> Any:
    install_workflows(settings, tmp_path, FAILING, REVIEWED)
    return settings


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_format() -> None:
    progress = Progress(node_ids=["a", "b", "c", "d", "market", "tech", "g", "h"])
    for node in ("a", "b", "c", "d"):
        progress.apply({"event": "node_state_change", "data": {"node_id": node, "status": "completed"}})
    for node in ("market", "tech"):
        progress.apply({"event": "node_state_change", "data": {"node_id": node, "status": "running"}})
    progress.apply({"event": "token_usage", "data": {
        "session_input_tokens": 812, "session_output_tokens": 1034, "session_cost_usd": 0.001234}})
    assert progress.line() == "[#####.....] 4/8 nodes  $0.001234  in 812 out 1,034  running: market, tech"
    progress.apply({"event": "node_state_change", "data": {"node_id": "g", "status": "waiting_review"}})
    assert progress.line().endswith("running: market, tech  waiting: g")
    progress.apply({"event": "execution:failed", "data": {"error": "x"}})
    assert progress.line().endswith("-> failed")


@pytest.mark.django_db(transaction=True)
def test_completed_run_prints_progress_lines(flows, owner) -> None:
    out = io.StringIO()
    call_command("run_workflow", "quick-chat", "--owner", "alice", "--title", "cli", stdout=out)
    text = out.getvalue()
    assert "\r" not in text  # not a terminal: plain lines
    assert "[##########] 2/2 nodes" in text and "running: answer" in text
    assert text.strip().splitlines()[-1].startswith("completed in ")
    session = Session.objects.get(title="cli")
    assert session.status == "completed" and session.owner == owner
    assert f"${session.cost_usd:.6f}" in text


@pytest.mark.django_db(transaction=True)
def test_terminal_gets_one_updating_line(flows, owner) -> None:
    out = FakeTTY()
    call_command("run_workflow", "quick-chat", "--owner", "alice", stdout=out)
    text = out.getvalue()
    assert "\r[##########] 2/2 nodes" in text and "\x1b[K" in text


@pytest.mark.django_db(transaction=True)
def test_failed_run_raises_command_error(flows, owner) -> None:
    out = io.StringIO()
    with pytest.raises(CommandError, match="the run failed: node 'broken' failed: scripted failure"):
        call_command("run_workflow", "failing", "--owner", "alice", stdout=out)
    assert "failed: broken" in out.getvalue()


@pytest.mark.django_db(transaction=True)
def test_reviews_are_decided_by_flag(flows, owner) -> None:
    call_command("run_workflow", "reviewed", "--owner", "alice", "--review", "reject-first",
                 "--comment", "shorter please", stdout=io.StringIO())
    session = Session.objects.get()
    assert session.status == "completed"
    reviews = list(HumanReview.objects.filter(session=session).order_by("round")
                   .values_list("round", "decision", "comment", "decided_by__username", "status"))
    assert reviews == [(1, "reject", "shorter please", "alice", "decided"),
                       (2, "approve", "", "alice", "decided")]
    assert Message.objects.filter(session=session, node_id="draft").count() == 2


@pytest.mark.django_db(transaction=True)
def test_review_wait_lets_the_timeout_decide(flows, owner) -> None:
    call_command("run_workflow", "reviewed", "--owner", "alice", "--review", "wait", stdout=io.StringIO())
    [review] = HumanReview.objects.all()
    assert (review.status, review.decision, review.decided_by) == ("timed_out", "approve", None)


@pytest.mark.django_db(transaction=True)
def test_unknown_owner_or_workflow_is_an_error(flows, owner) -> None:
    with pytest.raises(CommandError, match="no user 'nobody'"):
        call_command("run_workflow", "quick-chat", "--owner", "nobody")
    with pytest.raises(CommandError, match="unknown workflow"):
        call_command("run_workflow", "no-such-flow", "--owner", "alice")


@pytest.mark.slow
def test_exit_status_of_the_real_command(tmp_path: Path) -> None:
    env = procs.child_env(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", VAR_DIR=str(tmp_path),
        SCRIPTED_TOKENS_PER_SECOND="0", TOKEN_COALESCE_MS="5",
    )
    procs.run_manage(["migrate", "--noinput", "-v", "0"], env=env)
    procs.run_manage(["shell", "-c", "from django.contrib.auth.models import User; "
                      "User.objects.create_user('alice')"], env=env)
    ok = procs.run_manage(["run_workflow", "quick-chat", "--owner", "alice"], env=env)
    assert ok.returncode == 0 and "completed in" in ok.stdout
    misconfigured = procs.run_manage(
        ["run_workflow", "quick-chat", "--owner", "alice"], check=False,
        env={**env, "LLM_PROVIDER": "no-such-provider"},
    )
    assert misconfigured.returncode == 1
    assert "unknown LLM provider" in misconfigured.stderr
