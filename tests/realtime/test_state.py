"""Folding rules the browser shares (the scenarios cover the rest)."""

from realtime.state import fold


def env(seq, event, data, ts="2026-11-24T10:00:00.000Z"):
    return {"event": event, "data": data, "timestamp": ts, "node_id": data.get("node_id"), "seq": seq,
            "session_id": "s"}


def test_resume_while_a_review_waits_returns_to_waiting_review():
    state = fold([
        env(1, "human_interaction_required", {"node_id": "r", "reason": "check", "timeout": 60}),
        env(2, "execution:paused", {}),
        env(3, "execution:resumed", {}),
    ])
    assert state["status"] == "waiting_review"
    assert state["pending_review"]["deadline"] == "2026-11-24T10:01:00.000Z"


def test_rejected_node_answers_in_a_second_message():
    chunk = lambda seq, text: env(seq, "token_stream", {"chunk": text, "agent_id": "a", "node_id": "m", "is_thinking": False})
    state = fold([
        chunk(1, "first"),
        env(2, "node_state_change", {"node_id": "m", "status": "completed"}),
        env(3, "node_state_change", {"node_id": "m", "status": "running"}),
        chunk(4, "second"),
    ])
    assert [(m["key"], m["text"], m["final"]) for m in state["messages"]] == [
        ("m#1", "first", True), ("m#2", "second", False)]
