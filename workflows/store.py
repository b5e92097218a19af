"""What a runner needs written and read, and where the app that owns sessions plugs it in.

The engine decides; it never touches a model. Every row it needs (node states, transcript,
usage, reviews, the run lease) belongs to the app that owns sessions, which implements
``RunStore`` and registers it from its ``AppConfig.ready()``. Keeping the rows behind this
one interface is what lets ``workflows`` depend on ``realtime`` only, and shows in one place
everything a runner persists: each write is one transaction that stores the rows and the
events describing them together (broadcast after commit); each is safe to call again after
an error (nothing was committed), which is how the engine rides out a database blip.

All methods are synchronous and keyword-only; the engine calls them in the database thread.

Fencing: every lease has a generation, advanced each time a runner takes the run. Every write
carries the generation its runner holds (``fence``) and checks it in its own transaction,
under the session's row lock; a write from a superseded runner (one frozen past its lease and
taken over) raises ``LeaseLost`` and stores nothing, and that runner abandons the run. The
runner's streamed events are fenced the same way in the event log (``eventlog.set_fence``).

Idempotence: every write that logs events also takes ``key``, the same for every attempt of
one write; an attempt that finds its key already committed (the reply to its COMMIT was
lost) returns the first attempt's result instead of writing, and logging, again.
With ``first_try=True`` (the first attempt of a new key: ``workflows.stored`` says so) the
store may skip looking for the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from realtime.layer import Registered
from workflows.budget import BudgetStart
from workflows.pricing import Price
from workflows.vocabulary import ReviewStatus


class LeaseLost(Exception):
    """A write from a runner whose lease generation is no longer the session's."""


@dataclass(frozen=True)
class RunStart:
    """What a runner needs to continue a run: the rows, as the previous runner left them."""

    status: str
    fresh: bool
    completed: dict[str, str]  # node_id -> output, for completed nodes
    node_status: dict[str, str]
    rounds: dict[str, int]
    outputs: dict[str, str] = field(default_factory=dict)  # last completed answer of every node
    interrupted: frozenset[str] = frozenset()  # nodes a dead runner left half-done
    budget: BudgetStart | None = None  # the session's budget and what it has spent
    trace_parent: str = ""  # the first runner's run span (W3C traceparent), when tracing


@dataclass(frozen=True)
class ReviewState:
    """One round of a human review, as stored."""

    status: ReviewStatus
    decision: str
    comment: str
    decided_at: datetime | None
    deadline: datetime | None


class RunStore(Protocol):
    # --------------------------------------------------------------- the run
    def run_begin(self, *, fence: int, session_id: str) -> RunStart | None:
        """Enter the run (a fresh start announces it; a take-over settles what a dead runner
        left half-done). None if the session already finished."""

    def run_finish(self, *, fence: int, session_id: str, error: str = "") -> str | None:
        """End the run (completed, or failed with ``error``); returns the final status."""

    def run_definition(self, *, session_id: str) -> dict[str, Any]:
        """The copy of the workflow definition the session runs."""

    def run_definitions(self, *, session_ids: list[str]) -> dict[str, dict[str, Any]]:
        """``run_definition`` of many sessions at once (keyed by session id)."""

    # --------------------------------------------------------------- leases
    def claim_runs(
        self, *, owner: str, limit: int, lease_seconds: float, only: Any = None,
        exclude: Any = (),
    ) -> list[tuple[str, int]]:
        """Take up to ``limit`` runs nobody holds: (session id, lease generation) each."""

    def renew_lease(
        self, *, session_id: str, owner: str, generation: int, lease_seconds: float
    ) -> str | None:
        """Extend ``owner``'s lease of that generation; the session's status, or None if the
        lease was lost (taken over: the generation moved on)."""

    def renew_leases(
        self, *, owner: str, generations: dict[str, int], lease_seconds: float
    ) -> dict[str, str | None]:
        """``renew_lease`` of many runs (session id -> generation) at once: each session's
        status, or None where the lease was lost."""

    def take_lease(self, *, session_id: str, owner: str, lease_seconds: float) -> int | None:
        """Lease one session to ``owner`` unless a live runner holds it; its generation."""

    def release_lease(self, *, session_id: str, owner: str, generation: int) -> None: ...

    # --------------------------------------------------------------- agent nodes
    def node_begin(self, *, fence: int, session_id: str, node_id: str, agent_id: str, round: int) -> int:
        """The node streams now; returns the id of its transcript message."""

    def node_set_status(self, *, fence: int, session_id: str, node_id: str, status: str) -> None: ...

    def message_save_partial(self, *, fence: int, message_id: int, text: str, thinking: str) -> None: ...

    def messages_save_partial(self, *, saves: list[dict[str, Any]]) -> int:
        """Checkpoints of many streaming messages at once, each ``{"session_id", "fence",
        "message_id", "text", "thinking"}``; one whose lease moved on is skipped (not an
        error: its runner learns it at its next own write). How many were written."""

    def node_complete(
        self, *, fence: int, session_id: str, node_id: str, agent_id: str, round: int, model: str,
        message_id: int, text: str, thinking: str, input_tokens: int, cached_input_tokens: int,
        cache_write_tokens: int, output_tokens: int, reasoning_tokens: int, estimated: bool,
        cost_usd: Decimal | None, price: dict[str, str], price_source: str,
    ) -> None:
        """The round's usage row: its tokens by type, and the price it was charged at (None
        cost: the price is unknown)."""

    def usage_progress_many(self, *, reports: list[dict[str, Any]]) -> int:
        """``usage_progress`` of many running nodes at once, each report ``{"session_id",
        "fence", "node_id", "agent_id", "model", "<type>_tokens"..., "cost_usd"}``; one whose
        lease moved on is skipped. How many usage events were logged."""

    def usage_progress(
        self, *, fence: int, session_id: str, node_id: str, agent_id: str, model: str,
        input_tokens: int, cached_input_tokens: int, cache_write_tokens: int, output_tokens: int,
        reasoning_tokens: int, cost_usd: Decimal | None,
    ) -> None: ...

    def run_trace(self, *, fence: int, session_id: str, traceparent: str) -> None:
        """Keep the run span's context, so a runner taking over continues the trace."""

    # --------------------------------------------------------------- prices and budgets
    def model_price(self, *, model: str) -> Price | None:
        """The model's price in force now (the admin's prices first; ``workflows.pricing``)."""

    def run_budget(self, *, session_id: str) -> Decimal | None:
        """The session's budget as it stands (after a controller raised it)."""

    def budget_notice(self, *, fence: int, session_id: str, state: str, cost_usd: Decimal) -> None:
        """The live cost crossed the warning threshold: log ``budget_status``."""

    def budget_review_open(self, *, fence: int, session_id: str, cost_usd: Decimal) -> int:
        """The budget is reached: ask a controller to raise it or stop (a review keyed by
        ``workflows.budget.BUDGET_REVIEW_KEY``); returns the request's round."""

    def node_fail(
        self, *, fence: int, session_id: str, node_id: str, error: str, code: str, message_id: int | None,
        text: str = "", thinking: str = "",
    ) -> None: ...

    def node_stopped(
        self, *, fence: int, session_id: str, node_id: str, message_id: int | None, text: str = "",
        thinking: str = "",
    ) -> None: ...

    def nodes_skip(self, *, fence: int, session_id: str, node_ids: list[str], reason: str) -> None: ...

    def user_messages_before(
        self, *, session_id: str, before_id: int | None = None
    ) -> list[dict[str, str]]:
        """Users' messages an agent starting now may read."""

    # --------------------------------------------------------------- review nodes
    def review_open(
        self, *, fence: int, session_id: str, node_id: str, reviewed_node_id: str, round: int, reason: str,
        timeout: int | None,
    ) -> None: ...

    def review_auto_approve(
        self, *, fence: int, session_id: str, node_id: str, reviewed_node_id: str, round: int, reason: str,
        comment: str,
    ) -> None: ...

    def review_state(
        self, *, session_id: str, node_id: str, round: int, call_id: str = ""
    ) -> ReviewState | None: ...

    def review_decide_default(
        self, *, fence: int, session_id: str, node_id: str, decision: str, call_id: str | None = None
    ) -> bool:
        """Record ``decision`` as timed out; False if it cannot be now (decided meanwhile)."""

    def review_comments(self, *, session_id: str, node_id: str) -> list[str]: ...

    def answered_after(self, *, session_id: str, node_id: str, moment: datetime) -> bool: ...

    def review_close(self, *, fence: int, session_id: str, node_id: str) -> None: ...

    # --------------------------------------------------------------- tool calls
    def tool_call_begin(
        self, *, fence: int, session_id: str, node_id: str, agent_id: str, round: int,
        call_id: str, tool: str, server: str, arguments: str, requires_approval: bool,
    ) -> None:
        """The model finished asking for a call: store it, log ``tool_call_end``."""

    def tool_approval_open(
        self, *, fence: int, session_id: str, node_id: str, round: int, call_id: str, tool: str,
        arguments: str, timeout: int | None,
    ) -> None:
        """Ask a human whether the call may run (a review keyed by ``call_id``)."""

    def tool_call_set_running(self, *, fence: int, session_id: str, call_id: str) -> None: ...

    def tool_call_finish(
        self, *, fence: int, session_id: str, call_id: str, status: str, result: str = "",
        error: str = "", duration_ms: int = 0,
    ) -> None:
        """How the call ended; logs ``tool_call_result``."""

    def transcript_search(self, *, session_id: str, query: str, limit: int = 5) -> list[dict[str, str]]:
        """Messages containing every word of ``query``, most recent first (``who``, ``excerpt``)."""


_store: Registered[RunStore] = Registered(
    "run store",
    how="the app that owns sessions must call workflows.store.register_store() in its "
    "AppConfig.ready()",
)
register_store = _store.register
get_store = _store.get
