"""Runner writes that a retry never repeats.

The runner retries a write whose transaction raised a database error (``workflows.stored``);
if only the reply to its COMMIT was lost, the write had committed, and running it again would
log its events (a node's state, its usage, an error) a second time. So each write carries a
key, the same for every attempt: ``@idempotent`` records the key and the write's result in
the write's own transaction, and an attempt that finds its key returns that result instead.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.db import transaction

from sessions_app.models import RunWriteReceipt
from workflows.budget import BudgetStart
from workflows.store import RunStart


def _money(value: Any) -> Any:
    return None if value is None else Decimal(value)


def _encode(result: Any) -> Any:
    if isinstance(result, RunStart):
        fields = dataclasses.asdict(result)
        fields["interrupted"] = sorted(result.interrupted)
        if result.budget is not None:  # money as text: JSON has no Decimal
            fields["budget"] = {name: str(value) if isinstance(value, Decimal) else value
                                for name, value in fields["budget"].items()}
        return {"run_start": fields}
    return result


def _decode(stored: Any) -> Any:
    if isinstance(stored, dict) and "run_start" in stored:
        fields = stored["run_start"]
        budget = fields.get("budget")
        if budget is not None:
            budget = BudgetStart(**{**budget, "budget_usd": _money(budget["budget_usd"]),
                                    "spent_usd": Decimal(budget["spent_usd"]),
                                    "warn_at": Decimal(budget["warn_at"])})
        return RunStart(**{**fields, "interrupted": frozenset(fields["interrupted"]),
                           "budget": budget})
    return stored


def idempotent[R](write: Callable[..., R]) -> Callable[..., R]:
    """``write(..., key=K)`` runs once per key and session; without a key it always runs.

    ``first_try=True`` says no earlier attempt with this key exists (the caller makes a new
    key for every write and says so on its first attempt): the lookup is skipped, one
    statement of every run write; the receipt is still stored for the retries."""

    # The write is ``@transaction.atomic`` itself; inside our transaction its undecorated
    # body runs instead, sparing a savepoint and its release (two statements) per write.
    body = getattr(write, "__wrapped__", write)

    @functools.wraps(write)
    def once(*, key: str | None = None, first_try: bool = False, **kwargs: Any) -> R:
        if key is None:
            return write(**kwargs)
        session_id = kwargs["session_id"]
        with transaction.atomic():
            if not first_try:
                done = RunWriteReceipt.objects.filter(session_id=session_id, key=key).first()
                if done is not None:
                    return _decode(done.result)
            result = body(**kwargs)
            RunWriteReceipt.objects.create(session_id=session_id, key=key, result=_encode(result))
            return result

    return once


def forget_receipts(*, session_id: Any) -> None:
    """The run ended: no write of it will be retried any more."""
    RunWriteReceipt.objects.filter(session_id=session_id).delete()
