"""This app as the runner's store (``workflows.store.RunStore``), registered at start-up.

Every method is one of this app's services (writes, each its own transaction) or selectors
(reads), looked up when called, so a test can replace a service on its module.
"""

from __future__ import annotations

from typing import Any

from sessions_app import prices, selectors
from sessions_app.services import budgets, leases, nodes, reviews, runs, tools, usage

_WHERE = {
    "run_begin": runs,
    "run_finish": runs,
    "run_trace": runs,
    "run_definition": selectors,
    "run_definitions": selectors,
    "claim_runs": leases,
    "renew_lease": leases,
    "renew_leases": leases,
    "take_lease": leases,
    "release_lease": leases,
    "node_begin": nodes,
    "node_set_status": nodes,
    "message_save_partial": nodes,
    "messages_save_partial": nodes,
    "node_complete": nodes,
    "node_fail": nodes,
    "node_stopped": nodes,
    "nodes_skip": nodes,
    "usage_progress": usage,
    "usage_progress_many": usage,
    "user_messages_before": selectors,
    "review_open": reviews,
    "review_auto_approve": reviews,
    "review_state": selectors,
    "review_decide_default": reviews,
    "review_comments": selectors,
    "answered_after": selectors,
    "review_close": reviews,
    "tool_approval_open": reviews,
    "tool_call_begin": tools,
    "tool_call_set_running": tools,
    "tool_call_finish": tools,
    "transcript_search": selectors,
    "model_price": prices,
    "run_budget": prices,
    "budget_notice": budgets,
    "budget_review_open": budgets,
}


class SessionRunStore:
    def __getattr__(self, name: str) -> Any:
        module = _WHERE.get(name)
        if module is None:
            raise AttributeError(name)
        return getattr(module, name)
