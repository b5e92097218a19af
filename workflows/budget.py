"""A run's spend against its session's budget: checked at every chunk boundary, in memory.

The guard knows what the session's usage rows cost (``committed``, loaded when the run
begins, added to as nodes complete) and what each streaming node has cost so far (``live``:
its finished model calls as the server reported them, the current call by the word rule).
When the sum crosses ``warn_at`` times the budget the viewers are told once (``budget_status``
warning); when it reaches the budget every streaming node holds at its next chunk boundary,
no model call and no node starts, and a review-like request asks a controller to raise the
budget or stop the run (``budget_status`` reached + ``human_interaction_required`` with
``budget_usd``). At the request's timeout the workflow's ``budget.default_decision`` applies:
``reject`` stops the run, ``approve`` raises the budget by the workflow's ``budget.usd``
(the wait is a review's: ``workflows.nodes.review.ask_for_budget``).

The bound (docs/engine.md, "Budgets"): nothing is charged past the budget by more than the
model calls in flight when it was reached, one per running agent node: a held call's stream
stays open (the provider may go on generating, and bill it), and a stop cancels it. A model
without a price counts nothing towards the budget (its cost is unknown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from realtime.vocabulary import BudgetState, ReviewDecision

ZERO = Decimal("0")
DEFAULT_WARN_AT = Decimal("0.8")
# The review row of a budget request: not a node's round (node id ""), keyed like a tool
# call's approval by this key instead of a call id.
BUDGET_REVIEW_KEY = "budget"


@dataclass(frozen=True)
class BudgetStart:
    """The budget as a runner finds it when it begins (or takes over) a run."""

    budget_usd: Decimal | None
    spent_usd: Decimal
    state: str
    warn_at: Decimal = DEFAULT_WARN_AT
    default_decision: str = ReviewDecision.REJECT
    pending_round: int | None = None  # a budget request still waiting for its answer


class BudgetGuard:
    def __init__(self) -> None:
        self.budget: Decimal | None = None
        self.warn_at = DEFAULT_WARN_AT
        self.default_decision: str = ReviewDecision.REJECT
        self.state = BudgetState.OK
        self.committed = ZERO
        self.live: dict[str, Decimal] = {}
        self._allowed = asyncio.Event()
        self._allowed.set()
        # Told when the state moves on (the runner logs it and asks for a decision).
        self.on_change: Callable[[BudgetState], None] = lambda state: None

    def load(self, start: BudgetStart) -> None:
        self.budget = start.budget_usd
        self.committed = start.spent_usd
        self.warn_at = start.warn_at
        self.default_decision = start.default_decision
        self.state = BudgetState(start.state or BudgetState.OK)
        if start.pending_round is not None:
            self.state = BudgetState.REACHED
        if self.state == BudgetState.REACHED:
            self._allowed.clear()

    @property
    def limited(self) -> bool:
        return self.budget is not None

    def spent(self) -> Decimal:
        return self.committed + sum(self.live.values(), ZERO)

    def allows(self) -> bool:
        return self._allowed.is_set()

    async def wait(self) -> None:
        await self._allowed.wait()

    def spend(self, node_id: str, cost: Decimal | None) -> None:
        """A streaming node's cost so far (None: its price is unknown, it counts nothing)."""
        if cost is not None:
            self.live[node_id] = cost
            self._check()

    def commit(self, node_id: str, cost: Decimal | None) -> None:
        """The node completed: its usage row holds ``cost`` now."""
        self.live.pop(node_id, None)
        self.committed += cost or ZERO
        self._check()

    def drop(self, node_id: str) -> None:
        """The node ended without a usage row (failed, stopped): no live cost any more."""
        self.live.pop(node_id, None)

    def release(self) -> None:
        """The run stops: nothing may stay held."""
        self._allowed.set()

    def raised(self, budget: Decimal) -> None:
        """A controller (or the timeout's default) raised the budget: the run goes on."""
        self.budget = budget
        self.state = BudgetState.OK
        self._allowed.set()
        self._check()

    def _check(self) -> None:
        if self.budget is None or self.state == BudgetState.REACHED:
            return
        total = self.spent()
        if total >= self.budget:
            self.state = BudgetState.REACHED
            self._allowed.clear()
            self.on_change(BudgetState.REACHED)
        elif self.state == BudgetState.OK and total >= self.budget * self.warn_at:
            self.state = BudgetState.WARNING
            self.on_change(BudgetState.WARNING)
