"""Session transcripts and usage as JSON (for tools) and Markdown (for people).

Plain functions over a queryset so the admin action, a management command or a test can
all produce the same files. Related rows are prefetched: exporting 500 sessions costs the
same handful of queries as exporting one. Costs are written as decimal strings so no
fraction of a cent is lost to float rounding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.db.models import Prefetch, QuerySet

from realtime.timestamps import iso_ms_or_none
from sessions_app.models import HumanReview, Message, Session

EXPORT_VERSION = 1


def export_queryset(queryset: QuerySet[Session]) -> QuerySet[Session]:
    """The sessions with everything an export reads, fetched in a fixed number of queries."""
    return (
        queryset.select_related("owner")
        .prefetch_related(
            "node_states",
            "usages",
            "tool_calls",
            Prefetch("reviews", queryset=HumanReview.objects.select_related("decided_by")),
            Prefetch("messages", queryset=Message.objects.select_related("user")),
        )
        .order_by("created_at", "pk")
    )


def _money(value: Decimal) -> str:
    return f"{value:.6f}"


def _username(user: Any) -> str | None:
    return user.get_username() if user is not None else None


def session_to_dict(session: Session) -> dict[str, Any]:
    """One session as a JSON-ready dict; the event log is left out (it can be huge)."""
    return {
        "id": str(session.pk),
        "title": session.title,
        "owner": _username(session.owner),
        "workflow": session.workflow_slug,
        "status": session.status,
        "error": session.error,
        "created_at": iso_ms_or_none(session.created_at),
        "started_at": iso_ms_or_none(session.started_at),
        "finished_at": iso_ms_or_none(session.finished_at),
        "duration_seconds": session.duration_seconds,
        "totals": {
            "input_tokens": session.input_tokens,
            "output_tokens": session.output_tokens,
            "cost_usd": _money(session.cost_usd),
            "nodes_total": session.nodes_total,
            "nodes_completed": session.nodes_completed,
            "nodes_failed": session.nodes_failed,
        },
        "nodes": [
            {
                "node_id": n.node_id, "node_type": n.node_type, "agent_id": n.agent_id,
                "status": n.status, "rounds": n.rounds, "error": n.error,
                "started_at": iso_ms_or_none(n.started_at), "finished_at": iso_ms_or_none(n.finished_at),
            }
            for n in session.node_states.all()
        ],
        "usage": [
            {
                "node_id": u.node_id, "agent_id": u.agent_id, "model": u.model,
                "round": u.round, "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens, "cost_usd": _money(u.cost_usd),
                "created_at": iso_ms_or_none(u.created_at),
            }
            for u in session.usages.all()
        ],
        "reviews": [
            {
                "node_id": r.node_id, "reviewed_node_id": r.reviewed_node_id,
                "round": r.round, "reason": r.reason, "status": r.status,
                "decision": r.decision, "comment": r.comment,
                "decided_by": _username(r.decided_by), "decided_at": iso_ms_or_none(r.decided_at),
            }
            for r in session.reviews.all()
        ],
        "tool_calls": [
            {
                "call_id": c.call_id, "node_id": c.node_id, "agent_id": c.agent_id,
                "round": c.round, "tool": c.tool, "server": c.server, "arguments": c.arguments,
                "requires_approval": c.requires_approval, "status": c.status,
                "result": c.result, "error": c.error, "duration_ms": c.duration_ms,
                "started_at": iso_ms_or_none(c.started_at),
                "finished_at": iso_ms_or_none(c.finished_at),
            }
            for c in session.tool_calls.all()
        ],
        "transcript": [
            {
                "kind": m.kind, "node_id": m.node_id, "agent_id": m.agent_id,
                "round": m.round, "user": _username(m.user), "is_final": m.is_final,
                "thinking": m.thinking, "text": m.text, "created_at": iso_ms_or_none(m.created_at),
            }
            for m in session.messages.all()
        ],
    }


def export_json(sessions: Iterable[Session]) -> str:
    """A JSON document holding every session; always a list, even for one session."""
    document = {
        "version": EXPORT_VERSION,
        "sessions": [session_to_dict(s) for s in sessions],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def _cell(value: Any) -> str:
    # A pipe or newline inside a cell would break the table row.
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _quote(text: str) -> list[str]:
    return [f"> {line}" if line else ">" for line in text.splitlines()]


def _speaker(message: Message) -> str:
    if message.kind == "user":
        return f"User {_username(message.user) or '(deleted user)'}"
    return f"Agent {message.agent_id or '?'}"


def session_to_markdown(session: Session) -> str:
    """One session as a readable report: header, totals, tables, then the transcript."""
    lines = [f"# {_cell(session.title)}", ""]
    lines += [
        f"- Session: `{session.pk}`",
        f"- Owner: {_cell(_username(session.owner))}",
        f"- Workflow: {_cell(session.workflow_slug)}",
        f"- Status: {session.status}",
        f"- Created: {iso_ms_or_none(session.created_at)}",
        f"- Started: {iso_ms_or_none(session.started_at) or '-'}",
        f"- Finished: {iso_ms_or_none(session.finished_at) or '-'}",
        f"- Duration: {format_duration_seconds(session.duration_seconds)}",
        f"- Nodes: {session.nodes_completed} completed, {session.nodes_failed} failed, "
        f"{session.nodes_total} total",
        f"- Tokens: {session.input_tokens} in, {session.output_tokens} out",
        f"- Estimated cost: ${_money(session.cost_usd)}",
    ]
    if session.error:
        lines.append(f"- Error: {_cell(session.error)}")
    lines += ["", "## Nodes", ""]
    lines += _table(
        ["Node", "Agent", "Status", "Rounds", "Error"],
        [[n.node_id, n.agent_id, n.status, n.rounds, n.error] for n in session.node_states.all()],
    )
    lines += ["", "## Token usage", ""]
    lines += _table(
        ["Node", "Agent", "Model", "Round", "Input", "Output", "Cost (USD)"],
        [
            [u.node_id, u.agent_id, u.model, u.round, u.input_tokens, u.output_tokens,
             _money(u.cost_usd)]
            for u in session.usages.all()
        ],
    )
    reviews = list(session.reviews.all())
    if reviews:
        lines += ["", "## Human reviews", ""]
        lines += _table(
            ["Node", "Round", "Status", "Decision", "Comment", "Decided by", "Decided at"],
            [
                [r.node_id, r.round, r.status, r.decision, r.comment,
                 _username(r.decided_by), iso_ms_or_none(r.decided_at)]
                for r in reviews
            ],
        )
    calls = list(session.tool_calls.all())
    if calls:
        lines += ["", "## Tool calls", ""]
        lines += _table(
            ["Node", "Round", "Tool", "Arguments", "Status", "Result or error", "ms"],
            [
                [c.node_id, c.round, c.tool, c.arguments, c.status,
                 (c.error or c.result)[:200], c.duration_ms]
                for c in calls
            ],
        )
    lines += ["", "## Transcript", ""]
    for message in session.messages.all():
        where = f" — node {message.node_id}, round {message.round}" if message.node_id else ""
        lines += [f"### {_speaker(message)}{where}", "", f"_{iso_ms_or_none(message.created_at)}_", ""]
        if message.thinking:
            lines += ["**Thinking:**", "", *_quote(message.thinking), ""]
        if message.thinking and message.text:
            lines += ["**Answer:**", ""]
        lines += [message.text or "_(no answer)_", ""]
    return "\n".join(lines).rstrip() + "\n"


def export_markdown(sessions: Iterable[Session]) -> str:
    return "\n---\n\n".join(session_to_markdown(s) for s in sessions)


def format_duration_seconds(seconds: float | None) -> str:
    """1:02:03 style; shared with the admin list so both read the same."""
    if seconds is None:
        return "-"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
