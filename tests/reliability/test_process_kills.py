"""Processes die mid-run: a web process SIGKILLed with viewers on it, the worker running the
sessions SIGKILLed. Viewers reconnect elsewhere and lose nothing; another worker takes the
run over without running a completed node again or counting usage twice.

The worker take-over itself (rows, usage, messages, against PostgreSQL and Redis, no viewer)
is tests/workflows/test_takeover.py::test_sigkilled_worker_is_taken_over_after_its_lease_expires;
here both kills happen in one run, watched from two daphne processes
(tests/reliability/scenarios.py ``scenario_kill``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError

from sessions_app.models import Message
from tests.reliability.backends import check_shared_redis
from tests.reliability.scenarios import scenario_kill
from tests.workflows.helpers import (
    agent_node,
    command,
    create_session,
    events,
    install_workflows,
    wait_finished,
    workflow,
)
from workflows.worker import Executor


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_web_process_and_worker_killed_mid_run(tmp_path: Path) -> None:
    check_shared_redis()
    result = await scenario_kill(tmp_path, kill_web=True, kill_worker=True, per_web=2,
                                 sessions=1, tokens=100, rate=40)
    print("\n" + json.dumps(result, default=str))
    assert result["problems"] == []
    assert set(result["statuses"].values()) == {"completed"}
    assert result["web_kill"]["moved_viewers"] == result["web_kill"]["of"] == 2
    assert result["worker_kill"]["interrupted_nodes"], "the worker was not killed mid-node"
    assert result["dups"] == 0 and result["gaps"] == 0 and result["resyncs"] == 0


# --------------------------------------------------------------------------- one process

SLOW_SOLO = workflow("slow-solo", agent_node("talk", max_tokens=60, thinking=False))


@pytest.mark.django_db(transaction=True)
async def test_executor_never_takes_over_its_own_live_run(
        settings: Any, tmp_path: Path, owner: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    install_workflows(settings, tmp_path, SLOW_SOLO)
    settings.SCRIPTED_TOKENS_PER_SECOND = 40  # 1.5 s of streaming
    settings.WORKER_LEASE_SECONDS = 0.4
    from workflows.store import get_store

    real = get_store().renew_leases
    failures = {"left": 4}  # about 1 s of failed renewals: the lease expires meanwhile

    def flaky_renew(**kwargs: Any) -> dict[str, str | None]:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return real(**kwargs)

    monkeypatch.setattr(get_store(), "renew_leases", flaky_renew)
    executor = Executor(owner="only-executor")
    await executor.start()
    try:
        sid = await create_session(owner, "slow-solo")
        assert await command(sid, owner, "start_session") is None
        status = await wait_finished(sid, timeout=20)
    finally:
        await executor.close()
    log = await events(sid)
    starts = [e for e in log if e["event"] == "node_state_change" and e["data"]["status"] == "running"]
    interrupted = [e for e in log if (e["data"].get("error") or "").startswith("interrupted")]
    assert failures["left"] == 0
    assert (status, len(starts), interrupted) == ("completed", 1, [])
    rows = await database_sync_to_async(
        lambda: list(Message.objects.filter(session_id=sid, kind="agent").values_list("text", flat=True))
    )()
    streamed = "".join(e["data"]["chunk"] for e in log if e["event"] == "token_stream")
    assert rows == [streamed]
