"""How many SQL statements a run's writes cost (docs/PERFORMANCE.md, "Performance II": every
statement of a run write is ORM work in the one database thread that all of a worker's runs
share). A change that adds statements to these writes shows here first; raise the figures
only on purpose, and update the doc with them."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from tests.workflows.helpers import (
    agent_node,
    command,
    create_session,
    install_workflows,
    wait_finished,
    workflow,
)
from workflows.store import get_store

SOLO = workflow("solo", agent_node("talk", max_tokens=60, thinking=False))
MEASURED = ("run_begin", "node_begin", "node_complete", "run_finish")


@pytest.mark.django_db(transaction=True)
async def test_the_writes_of_a_one_agent_run_cost_these_statements(
        settings: Any, tmp_path: Any, owner: Any, executor: Any, monkeypatch: Any) -> None:
    install_workflows(settings, tmp_path, SOLO)
    settings.SCRIPTED_TOKENS_PER_SECOND = 200
    counts: dict[str, int] = {}
    store = get_store()
    for name in MEASURED:
        real = getattr(store, name)

        def counted(real: Any = real, name: str = name, **kwargs: Any) -> Any:
            def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
                counts[name] = counts.get(name, 0) + 1
                return execute(sql, params, many, context)

            with connection.execute_wrapper(count):
                return real(**kwargs)

        monkeypatch.setattr(store, name, counted)
    sid = await create_session(owner, "solo")
    assert await command(sid, owner, "start_session") is None
    assert await wait_finished(sid) == "completed"
    # SQLite (the suite's database), BEGIN included; 14, 14, 29, 18 before the
    # nested savepoints and the workflow definition's load went, then 11, 10, 23, 14 before
    # the receipt lookup on a first attempt, the usage row's update_or_create, the second
    # COUNT and the budget reads of a session without a budget went (issue 17)
    assert counts == {"run_begin": 7, "node_begin": 9, "node_complete": 17, "run_finish": 10}
