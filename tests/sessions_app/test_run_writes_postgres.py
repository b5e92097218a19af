"""The run store's PostgreSQL-only path, on the real server: the partial-text checkpoint of
every agent of an executor in one statement, the lease checked in it.

The suite's database is SQLite, so this runs a script in a child process against a
throwaway PostgreSQL database (the real server, as a deployment has it).
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability.backends import script_on_postgres

SCRIPT = r'''
import json
from django.contrib.auth import get_user_model
from django.db import connection
from sessions_app import services
from sessions_app.models import Message, Session
from sessions_app.services import leases
from workflows.store import get_store

store = get_store()
owner = get_user_model().objects.create_user("pg-owner", password="pw")
out = {}

def running(n):
    runs = []
    for _ in range(n):
        session = services.session_create(owner=owner, workflow_slug="demo")
        sid = str(session.pk)
        services.session_start(session_id=sid, user=owner)
        gen = leases.take_lease(session_id=sid, owner="runner-a", lease_seconds=30)
        store.run_begin(session_id=sid, fence=gen)
        node = next(n for n in session.workflow_definition["nodes"] if n["type"] == "agent")
        mid = store.node_begin(session_id=sid, fence=gen, node_id=node["id"],
                               agent_id=node["agent"], round=1)
        runs.append((sid, gen, mid, node["id"], node["agent"]))
    return runs

def statements(fn, **kwargs):
    seen = []
    def count(execute, sql, params, many, context):
        seen.append(sql.split()[0])
        return execute(sql, params, many, context)
    with connection.execute_wrapper(count):
        result = fn(**kwargs)
    return result, seen

# -- partial saves: held runs written, a taken-over run and a closed message skipped
runs = running(4)
Session.objects.filter(pk=runs[2][0]).update(lease_generation=99)  # taken over meanwhile
Message.objects.filter(pk=runs[3][2]).update(is_final=True, text="final")
saves = [{"session_id": sid, "fence": gen, "message_id": mid,
          "text": f"so far {i} \t\\ \"q\" \u2603", "thinking": "hmm"}
         for i, (sid, gen, mid, *_) in enumerate(runs)]
written, seen = statements(store.messages_save_partial, saves=saves)
out["partial"] = {"written": written, "sql": seen,
                  "texts": [Message.objects.get(pk=r[2]).text for r in runs],
                  "thinking": [Message.objects.get(pk=r[2]).thinking for r in runs]}
out["partial_empty"] = store.messages_save_partial(saves=[])
print("RESULT " + json.dumps(out))
'''


def test_run_writes_on_postgresql(tmp_path: Path) -> None:
    result = script_on_postgres(SCRIPT, tmp_path=tmp_path, prefix="runwrites")
    partial = result["partial"]
    # one statement (savepoint-free: the write is its own transaction) for every agent
    assert partial["sql"] == ["WITH"]
    assert partial["written"] == 2
    assert partial["texts"] == ['so far 0 \t\\ "q" \u2603', 'so far 1 \t\\ "q" \u2603', "",
                                "final"]
    assert partial["thinking"] == ["hmm", "hmm", "", ""]
    assert result["partial_empty"] == 0
