"""What the fault scenarios check: each viewer against the log head, the stored Message rows
and a fresh snapshot; the stored rows against the fold of the event log (no half-state); a
taken-over run against what the killed worker had left."""

from __future__ import annotations

from typing import Any

from realtime.state import fold  # pure Python, no Django needed
from tests.reliability.cluster import Cluster
from tests.reliability.viewers import Viewer


def transcript_of_state(state: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Per node (and "user:<name>"), the texts of its messages in order."""
    out: dict[str, list[tuple[str, str]]] = {}
    for message in state["messages"]:
        key = message["node_id"] if message["kind"] == "agent" else f"user:{message['user']}"
        out.setdefault(key, []).append((message["text"], message["thinking"]))
    return out


def transcript_of_rows(rows: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        if row["kind"] == "agent" and not row["text"] and not row["thinking"]:
            continue  # a node that never streamed: no message in the room either
        key = row["node_id"] if row["kind"] == "agent" else f"user:{row['user']}"
        out.setdefault(key, []).append((row["text"], row["thinking"]))
    return out


def check_viewers(
    cluster: Cluster, viewers: list[Viewer], sids: list[str], snapshots: dict[str, dict[str, Any]],
    *, transcripts: bool = True,
) -> dict[str, Any]:
    """Per viewer: contiguous seqs, nothing missing, transcript = rows = server snapshot
    (``transcripts=False``: seqs only, for floods without Message rows)."""
    heads = {sid: cluster.session(sid)["last_seq"] for sid in sids}
    rows = {sid: transcript_of_rows(cluster.messages(sid)) for sid in sids} if transcripts else {}
    problems: list[str] = []
    for v in viewers:
        if v.last_seq != heads[v.session_id]:
            problems.append(f"{v.name}: at seq {v.last_seq}, log head {heads[v.session_id]}")
        if v.dups or v.gaps:
            problems.append(f"{v.name}: {v.dups} duplicates, {v.gaps} gaps")
        if not transcripts:
            continue
        state = v.state()
        if transcript_of_state(state) != rows[v.session_id]:
            problems.append(f"{v.name}: transcript differs from the Message rows")
        snap = snapshots.get(v.session_id)
        if snap is not None and snap["last_seq"] == v.last_seq and state != snap["state"]:
            problems.append(f"{v.name}: folded state differs from the server snapshot")
    return {
        "viewers": len(viewers),
        "heads": heads,
        "problems": problems,
        "dups": sum(v.dups for v in viewers),
        "gaps": sum(v.gaps for v in viewers),
        "resyncs": sum(v.resyncs for v in viewers),
        "reconnects": sum(v.reconnects for v in viewers),
        "close_codes": sorted({c for v in viewers for _, c, _ in v.closes if c is not None}),
    }


def first_error_time(cluster: Cluster, sid: str, error_prefix: str) -> float | None:
    """Wall time of the first node_state_change whose error starts with ``error_prefix``."""
    assert cluster.db is not None
    rows = cluster.db.query(
        "SELECT created_at FROM realtime_sessionevent WHERE session_id = %s AND "
        "event = 'node_state_change' AND data->>'error' LIKE %s ORDER BY seq LIMIT 1",
        (sid, error_prefix + "%"))
    return rows[0][0].timestamp() if rows else None


def takeover_problems(cluster: Cluster, sid: str, before: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    events = cluster.stored_events(sid)
    starts: dict[str, int] = {}
    for _, name, node, data in events:
        if name == "node_state_change" and data["status"] == "running":
            starts[node] = starts.get(node, 0) + 1
    after = cluster.node_rows(sid)
    for node, row in before.items():
        if row["status"] == "completed":
            if starts.get(node) != 1:
                problems.append(f"{sid[:8]}: completed node {node} started {starts.get(node)} times")
            if after[node]["finished_at"] != row["finished_at"]:
                problems.append(f"{sid[:8]}: completed node {node} was written again")
    usage = cluster.usage_rows(sid)
    keys = sorted((node, rnd) for node, rnd, *_ in usage)
    if keys != sorted((n, 1) for n in before):
        problems.append(f"{sid[:8]}: usage rows {keys}")
    row = cluster.session(sid)
    totals = (sum(u[2] for u in usage), sum(u[3] for u in usage), sum(u[4] for u in usage))
    if (row["input_tokens"], row["output_tokens"], row["cost_usd"]) != totals:
        problems.append(f"{sid[:8]}: session totals differ from the usage rows {totals}")
    done = [d for _, name, _, d in events if name == "execution:completed"]
    if not done or (done[0]["input_tokens"], done[0]["output_tokens"]) != totals[:2]:
        problems.append(f"{sid[:8]}: execution:completed {done} != usage sum {totals}")
    return problems


def consistency_problems(cluster: Cluster, sid: str) -> list[str]:
    """The stored rows against the fold of the event log: they must tell the same story."""
    problems = []
    events = cluster.stored_events(sid)
    seqs = [e[0] for e in events]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"{sid[:8]}: event log seqs not contiguous")
    state = fold([{"event": name, "data": data, "timestamp": "2026-01-01T00:00:00.000Z",
                   "node_id": node, "seq": seq} for seq, name, node, data in events])
    logged, stored = transcript_of_state(state), transcript_of_rows(cluster.messages(sid))
    if logged != stored:
        for key in sorted(set(logged) | set(stored)):
            a, b = logged.get(key, []), stored.get(key, [])
            if a != b:
                problems.append(
                    f"{sid[:8]}: {key}: Message rows {[len(t) for t, _ in b]} chars, event log "
                    f"{[len(t) for t, _ in a]} chars (half-state: rows and log disagree)")
    for node, row in cluster.node_rows(sid).items():
        status = state["nodes"].get(node, {}).get("status", "pending")
        if status != row["status"]:
            problems.append(f"{sid[:8]}: node {node} is {row['status']} in its row, {status} in the log")
    session = cluster.session(sid)
    if state["status"] != session["status"] and not (
        session["status"] == "running" and state["status"] in ("running", "waiting_review")):
        problems.append(f"{sid[:8]}: session is {session['status']}, {state['status']} in the log")
    usage = cluster.usage_rows(sid)
    keys = [(u[0], u[1]) for u in usage]
    if len(keys) != len(set(keys)):
        problems.append(f"{sid[:8]}: usage counted twice {keys}")
    if session["status"] in ("completed", "failed", "stopped") and (
            session["input_tokens"], session["output_tokens"]) != (
            sum(u[2] for u in usage), sum(u[3] for u in usage)):
        problems.append(f"{sid[:8]}: session totals differ from the usage rows")
    return problems
