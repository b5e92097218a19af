"""The event log's many-session path on PostgreSQL: one statement advances every session of a
batch; fences, missing logs and two fences of one session behave as the per-session path.

The suite's database is SQLite, so this runs a script in a child process against a
throwaway PostgreSQL database (the real server, as a deployment has it).
"""

from __future__ import annotations

from pathlib import Path

from tests.reliability.backends import script_on_postgres

SCRIPT = r'''
import json, threading, uuid
from django.db import connection
from realtime.eventlog import PendingEvent, set_fence, store_events, open_log
from realtime.models import SessionEvent, SessionLog
from realtime.timestamps import utc_now

def ev(sid, n, fence=None):
    return PendingEvent(sid, "token_stream", {"chunk": f"c{n}", "node_id": "n1", "agent_id": "a",
                        "is_thinking": False}, "n1", utc_now(), fence)

sids = [str(uuid.uuid4()) for _ in range(4)]
for sid in sids:
    open_log(session_id=sid)
set_fence(session_id=sids[2], fence=7)
gone = str(uuid.uuid4())
out = {}
odd = ev(sids[0], 1)
odd.data["chunk"] = 'tab\there\nnew line \\ "quoted" é \u2603'
batch = [odd, ev(sids[1], 1), ev(sids[0], 2), ev(sids[2], 1, fence=6),
         ev(sids[3], 1, fence=None), ev(gone, 1), ev(sids[1], 2)]
with connection.execute_wrapper(lambda execute, sql, *a: (out.setdefault("sql", []).append(sql.split()[0]), execute(sql, *a))[1]):
    frames = store_events(batch)
out["frames"] = [(f.session_id == sids[0] and "s0" or f.session_id == sids[1] and "s1"
                  or f.session_id == sids[3] and "s3" or "other", f.seq) for f in frames]
# the fenced session with its current fence, and the same session twice (two fences)
frames = store_events([ev(sids[2], 2, fence=7), ev(sids[2], 3, fence=None), ev(sids[0], 3)])
out["second"] = sorted([f.session_id == sids[2] and "s2" or "s0", f.seq] for f in frames)
# two threads writing overlapping sessions at once: no deadlock, every seq once
def writer(order):
    for _ in range(30):
        store_events([ev(sids[i], 0) for i in order])
    connection.close()
threads = [threading.Thread(target=writer, args=(o,)) for o in ([0, 1, 3], [3, 1, 0])]
for t in threads: t.start()
for t in threads: t.join()
rows = {}
for sid, seq in SessionEvent.objects.filter(session_id__in=sids).values_list("session_id", "seq"):
    rows.setdefault(str(sid), []).append(seq)
out["gap_free"] = all(sorted(v) == list(range(1, len(v) + 1)) for v in rows.values())
out["heads"] = [SessionLog.objects.get(pk=s).last_seq for s in sids]
out["counts"] = [len(rows.get(s, [])) for s in sids]
out["first"] = SessionEvent.objects.get(session_id=sids[0], seq=1).data
print("RESULT " + json.dumps(out))
'''


def test_a_batch_of_many_sessions_is_advanced_in_one_statement(tmp_path: Path) -> None:
    result = script_on_postgres(SCRIPT, tmp_path=tmp_path, prefix="eventlog")
    # one statement advances the four sessions of the batch (the rows go in by COPY)
    assert result["sql"] == ["WITH"]
    # the fenced-out group (fence 6, log at 7) and the missing log are refused, the rest in order
    assert result["frames"] == [["s0", 1], ["s0", 2], ["s1", 1], ["s1", 2], ["s3", 1]]
    # one session under two fences: the per-session path, both groups stored
    assert result["second"] == [["s0", 3], ["s2", 1], ["s2", 2]]
    # COPY keeps the data exactly, control characters and all
    assert result["first"] == {"chunk": 'tab\there\nnew line \\ "quoted" é \u2603',
                               "node_id": "n1", "agent_id": "a", "is_thinking": False}
    assert result["gap_free"]
    assert result["heads"] == [63, 62, 2, 61]
    assert result["counts"] == result["heads"]
