"""A human-review node: ask, wait, and on a rejection send the reviewed agent back, up to
``max_rounds``; then approve automatically with a note, so no session loops forever. The same
wait serves a tool call's approval and a budget request (``ask_for_budget``).

Every step is read back from the rows first, so a runner taking over continues the round it
finds (re-asking a pending review, or finishing a rejection's retry).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime
from typing import Any

from django.utils import timezone

from realtime.vocabulary import NodeStatus, ReviewDecision
from workflows.budget import BUDGET_REVIEW_KEY, BudgetGuard
from workflows.definitions import NodeSpec
from workflows.nodes.base import RunContext
from workflows.vocabulary import ReviewStatus

POLL_SECONDS = 1.0


class ReviewExecutor:
    async def execute(self, run: RunContext, node: NodeSpec) -> None:
        try:
            if await self._rounds(run, node):
                await run.store.review_close(session_id=run.session_id, node_id=node.id)
                run.status[node.id] = NodeStatus.COMPLETED
        except asyncio.CancelledError:
            run.status[node.id] = NodeStatus.STOPPED
            if not run.abandoned:
                await asyncio.shield(
                    run.store.node_stopped(session_id=run.session_id, node_id=node.id, message_id=None)
                )
            raise

    async def _rounds(self, run: RunContext, node: NodeSpec) -> bool:
        """True once approved; False if the reviewed agent failed its retry (node skipped)."""
        options = node.options
        reviewed = run.definition.node(options["reviews"])
        max_rounds = int(options.get("max_rounds", 1))
        round_ = max(1, run.rounds.get(node.id, 0))
        while True:
            run.rounds[node.id] = round_
            if round_ - 1 >= max_rounds:
                await run.store.review_auto_approve(
                    session_id=run.session_id, node_id=node.id, reviewed_node_id=reviewed.id,
                    round=round_, reason=options["reason"],
                    comment=f"approved automatically: {max_rounds} rejection round(s) used",
                )
                return True
            await run.store.review_open(
                session_id=run.session_id, node_id=node.id, reviewed_node_id=reviewed.id,
                round=round_, reason=options["reason"], timeout=options.get("timeout"),
            )
            decision, comment, decided_at = await self._decision(run, node, round_)
            if decision == ReviewDecision.APPROVE:
                return True
            if not await self._answer_again(run, reviewed, comment, decided_at):
                await run.store.nodes_skip(
                    session_id=run.session_id, node_ids=[node.id],
                    reason="skipped: the reviewed node failed its retry",
                )
                run.status[node.id] = NodeStatus.SKIPPED
                return False
            round_ += 1

    async def _answer_again(
        self, run: RunContext, reviewed: NodeSpec, comment: str, decided_at: datetime | None
    ) -> bool:
        """Run the reviewed agent again with the comment, unless (after a take-over) that
        retry already completed. True when the reviewed node has a fresh answer."""
        if reviewed.id not in run.interrupted and await run.store.answered_after(
            session_id=run.session_id, node_id=reviewed.id, moment=decided_at
        ):
            return True
        await run.run_agent(
            reviewed, round_=run.next_round(reviewed.id), feedback=[comment or "(no comment)"]
        )
        return run.status[reviewed.id] == NodeStatus.COMPLETED

    async def _decision(self, run: RunContext, node: NodeSpec, round_: int) -> tuple[str, str, Any]:
        return await await_decision(
            run, node_id=node.id, round_=round_,
            default=node.options.get("default_decision", ReviewDecision.APPROVE),
        )


async def await_decision(
    run: RunContext, *, node_id: str, round_: int, default: str, call_id: str = ""
) -> tuple[str, str, Any]:
    """Wait for a human (woken by the review control message, polled every second); apply
    ``default`` once the deadline passed while the session runs. The same wait serves a
    review node's round and a tool call's approval (``call_id``)."""
    while True:
        run.review_wake.clear()
        review = await run.store.review_state(
            session_id=run.session_id, node_id=node_id, round=round_, call_id=call_id
        )
        if review is None or review.status == ReviewStatus.CANCELLED:
            run.stop()  # the session was stopped; the control message may be late
            raise asyncio.CancelledError
        if review.status in (ReviewStatus.DECIDED, ReviewStatus.TIMED_OUT):
            return review.decision, review.comment, review.decided_at
        wait = POLL_SECONDS
        if review.deadline is not None and run.running.is_set():
            left = (review.deadline - timezone.now()).total_seconds()
            if left <= 0 and await run.store.review_decide_default(
                session_id=run.session_id, node_id=node_id, decision=default,
                call_id=call_id or None,
            ):
                continue
            wait = max(0.05, min(wait, left)) if left > 0 else wait
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.review_wake.wait(), timeout=wait)


async def ask_for_budget(run: RunContext, review_round: int | None = None) -> None:
    """The budget was reached: ask (or, after a take-over, wait again for) a controller's
    decision, then go on with the raised budget or stop the run (``workflows.budget``)."""
    guard: BudgetGuard = run.budget
    if review_round is None:
        review_round = await run.store.budget_review_open(
            session_id=run.session_id, cost_usd=guard.spent()
        )
    decision, _, _ = await await_decision(
        run, node_id="", round_=review_round, default=guard.default_decision,
        call_id=BUDGET_REVIEW_KEY,
    )
    if decision != ReviewDecision.APPROVE:
        run.stop()  # the rejection stopped the session (its service did)
        return
    guard.raised(await run.store.run_budget(session_id=run.session_id))
