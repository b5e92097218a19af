"""Model prices in USD per million tokens, and the one place that turns tokens into money.

Costs are shown to users and summed over sessions, so they are computed with ``Decimal``
(no float drift) and quantized to 0.000001 USD with ROUND_HALF_UP. Workflow definitions
may only name models listed here, so every run can be priced.

The built-in table ``PRICES`` can be extended (or a built-in price overridden) without a
code change through the environment variable ``EXTRA_MODEL_PRICES``::

    EXTRA_MODEL_PRICES="llama3:8b:0.05:0.10,my-model:1.00:3.00"

Each comma-separated entry is ``name:input_per_million:output_per_million``; the name may
itself contain colons (the two prices are taken from the right). The variable is read on
every call, so it can be changed in tests; a malformed entry raises ``ValueError`` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MILLION = Decimal(1_000_000)
QUANTUM = Decimal("0.000001")


@dataclass(frozen=True)
class ModelPrice:
    input_per_million: Decimal
    output_per_million: Decimal


def _price(input_per_million: str, output_per_million: str) -> ModelPrice:
    return ModelPrice(Decimal(input_per_million), Decimal(output_per_million))


PRICES: dict[str, ModelPrice] = {
    # Made-up prices for the offline scripted provider, shaped like real small/large models.
    "scripted-small": _price("0.15", "0.60"),
    "scripted-large": _price("2.50", "10.00"),
    # Public list prices of common OpenAI-compatible models.
    "gpt-4o-mini": _price("0.15", "0.60"),
    "gpt-4o": _price("2.50", "10.00"),
    "gpt-4.1": _price("2.00", "8.00"),
    "gpt-4.1-mini": _price("0.40", "1.60"),
    "gpt-4.1-nano": _price("0.10", "0.40"),
    "deepseek-chat": _price("0.27", "1.10"),
    "deepseek-reasoner": _price("0.55", "2.19"),
}


def _extra_prices() -> dict[str, ModelPrice]:
    raw = os.environ.get("EXTRA_MODEL_PRICES", "")
    extra: dict[str, ModelPrice] = {}
    for entry in (item.strip() for item in raw.split(",")):
        if not entry:
            continue
        parts = entry.rsplit(":", 2)
        if len(parts) != 3 or not parts[0].strip():
            raise ValueError(
                f"EXTRA_MODEL_PRICES entry {entry!r} is not 'name:input_per_million:output_per_million'"
            )
        name, input_price, output_price = (part.strip() for part in parts)
        try:
            price = _price(input_price, output_price)
        except InvalidOperation:
            raise ValueError(f"EXTRA_MODEL_PRICES entry {entry!r} has a price that is not a number") from None
        values = (price.input_per_million, price.output_per_million)
        if not all(value.is_finite() and value >= 0 for value in values):
            raise ValueError(f"EXTRA_MODEL_PRICES entry {entry!r} has a negative or infinite price")
        extra[name] = price
    return extra


def all_prices() -> dict[str, ModelPrice]:
    """The built-in table merged with ``EXTRA_MODEL_PRICES`` (the environment wins)."""
    return {**PRICES, **_extra_prices()}


def known_model(model: str) -> bool:
    return model in all_prices()


def price_for(model: str) -> ModelPrice:
    """Raise KeyError for an unknown model rather than silently charging nothing."""
    prices = all_prices()
    try:
        return prices[model]
    except KeyError:
        raise KeyError(
            f"no price for model {model!r}; known models: {', '.join(sorted(prices))} "
            "(add one with EXTRA_MODEL_PRICES=name:input_per_million:output_per_million)"
        ) from None


def cost_usd(*, model: str, input_tokens: int, output_tokens: int) -> Decimal:
    if input_tokens < 0 or output_tokens < 0:
        raise ValueError("token counts cannot be negative")
    price = price_for(model)
    total = (
        Decimal(input_tokens) * price.input_per_million + Decimal(output_tokens) * price.output_per_million
    ) / MILLION
    return total.quantize(QUANTUM, rounding=ROUND_HALF_UP)
