"""Model prices: what a model call cost, type by type, at the price in force when it ran.

Where a model's price comes from (the first that has one wins):

1. an operator's price in Django admin (``sessions_app.models.ModelPrice``: per token type,
   valid from a date, optionally until one), handed in as ``overrides``;
2. ``EXTRA_MODEL_PRICES`` (deprecated, read for one more release with a warning and the
   ``workflows.W002`` system check; the admin replaces it)::

       EXTRA_MODEL_PRICES="llama3:8b:0.05:0.10,my-model:1.00:3.00"   # name:input:output per million

3. the house prices of our own offline models (``scripted-small``, ``scripted-large``: made
   up, shaped like a small and a large public model);
4. ``genai-prices``: maintained, offline, dated prices of the public providers, per token type
   (input, cached input, cache writes, output, reasoning where the provider prices it apart).
   Why this library: it is updated with every provider price change, knows which price
   applied on which date (so a run is charged at the price in force when it ran), and works
   without a network; our own table of nine models had one input and one output price.

No price at all is ``None``: the run goes on and its cost is "price unknown" (never $0).

The money itself is computed by genai-prices' ``ModelPrice.calc_price``, whose rule is ours:
cached input and cache writes are part of input and reasoning part of output, each charged
at its own price where there is one and at its parent's otherwise. Costs are ``Decimal``
quantized to 0.000001 USD with ROUND_HALF_UP (no float drift when summed over sessions).
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelPrice

from realtime.vocabulary import TokenType
from workflows.providers.base import Usage

log = logging.getLogger(__name__)

QUANTUM = Decimal("0.000001")
EXTRA_PRICES_SETTING = "EXTRA_MODEL_PRICES"

# Our token types as genai-prices names the unit (its price key and its usage key).
PRICE_KEYS: dict[TokenType, str] = {
    TokenType.INPUT: "input_mtok",
    TokenType.CACHED_INPUT: "cache_read_mtok",
    TokenType.CACHE_WRITE: "cache_write_mtok",
    TokenType.OUTPUT: "output_mtok",
    TokenType.REASONING: "output_reasoning_mtok",
}
USAGE_KEYS: dict[TokenType, str] = {
    TokenType.INPUT: "input_tokens",
    TokenType.CACHED_INPUT: "cache_read_tokens",
    TokenType.CACHE_WRITE: "cache_write_tokens",
    TokenType.OUTPUT: "output_tokens",
    TokenType.REASONING: "output_reasoning_tokens",
}

# Made-up prices of the offline scripted models (USD per million tokens).
HOUSE_PRICES: dict[str, dict[TokenType, str]] = {
    "scripted-small": {TokenType.INPUT: "0.15", TokenType.OUTPUT: "0.60"},
    "scripted-large": {TokenType.INPUT: "2.50", TokenType.OUTPUT: "10.00"},
}


@dataclass(frozen=True)
class Price:
    """A model's price as one call is charged: genai-prices' ``ModelPrice`` (per unit, per
    million) and where it came from (stored with every usage row)."""

    model_price: ModelPrice = field(repr=False)
    source: str

    def per_million(self) -> dict[str, str]:
        """The price of each token type priced apart, as text (a usage row's ``price``)."""
        out: dict[str, str] = {}
        for kind, key in PRICE_KEYS.items():
            value = getattr(self.model_price, key, None)
            if value is not None:
                out[kind.value] = str(value) if isinstance(value, Decimal) else f"{value.base} (tiered)"
        return out


@dataclass(frozen=True)
class PriceOverride:
    """An operator's price for a model, from ``valid_from`` (until ``valid_until``)."""

    model: str
    per_million: dict[TokenType, Decimal]  # input and output always; the others optional
    valid_from: datetime
    valid_until: datetime | None = None
    source: str = "admin"

    def applies(self, model: str, at: datetime) -> bool:
        return (self.model == model and self.valid_from <= at
                and (self.valid_until is None or at < self.valid_until))


def model_price(per_million: dict[TokenType, Any]) -> ModelPrice:
    """genai-prices' ``ModelPrice`` from our per-type prices (None: charged as its parent)."""
    return ModelPrice(**{PRICE_KEYS[kind]: Decimal(str(value))
                         for kind, value in per_million.items() if value is not None})


# ----------------------------------------------------------------------------- deprecated


def _extra_prices() -> dict[str, dict[TokenType, Decimal]]:
    """``EXTRA_MODEL_PRICES``, parsed (a malformed entry raises ValueError naming it)."""
    raw = os.environ.get(EXTRA_PRICES_SETTING, "")
    extra: dict[str, dict[TokenType, Decimal]] = {}
    for entry in (item.strip() for item in raw.split(",")):
        if not entry:
            continue
        parts = entry.rsplit(":", 2)
        if len(parts) != 3 or not parts[0].strip():
            raise ValueError(
                f"{EXTRA_PRICES_SETTING} entry {entry!r} is not "
                "'name:input_per_million:output_per_million'"
            )
        name, input_price, output_price = (part.strip() for part in parts)
        try:
            values = (Decimal(input_price), Decimal(output_price))
        except InvalidOperation:
            raise ValueError(
                f"{EXTRA_PRICES_SETTING} entry {entry!r} has a price that is not a number"
            ) from None
        if not all(value.is_finite() and value >= 0 for value in values):
            raise ValueError(f"{EXTRA_PRICES_SETTING} entry {entry!r} has a negative or infinite price")
        extra[name] = {TokenType.INPUT: values[0], TokenType.OUTPUT: values[1]}
    if extra:
        warnings.warn(
            f"{EXTRA_PRICES_SETTING} is deprecated and will be removed in the next release: "
            "add model prices in the admin (Model prices) instead",
            DeprecationWarning, stacklevel=3,
        )
    return extra


# ----------------------------------------------------------------------------- resolving


@functools.cache
def _library_version() -> str:
    return genai_prices.__version__


def _library_price(model: str, at: datetime) -> Price | None:
    try:
        provider, info = data_snapshot.get_snapshot().find_provider_model(model, None, None, None)
    except LookupError:
        return None
    return Price(
        info.get_prices(at),
        f"genai-prices {_library_version()}: {provider.id}/{info.id}",
    )


def check_extra_prices() -> None:
    """Raise ValueError naming a malformed ``EXTRA_MODEL_PRICES`` entry (the start-up check)."""
    _extra_prices()


def resolve(model: str, *, at: datetime, overrides: Iterable[PriceOverride] = ()) -> Price | None:
    """The price of ``model`` in force at ``at`` (None: no price known anywhere). A malformed
    ``EXTRA_MODEL_PRICES`` is logged and ignored here: a running session never fails for it
    (``sessions_app.E002`` reports it at start-up)."""
    for override in overrides:
        if override.applies(model, at):
            return Price(model_price(override.per_million), override.source)
    try:
        extra = _extra_prices().get(model)
    except ValueError as exc:
        log.error("%s ignored: %s", EXTRA_PRICES_SETTING, exc)
        extra = None
    if extra is not None:
        return Price(model_price(extra), EXTRA_PRICES_SETTING)
    if model in HOUSE_PRICES:
        return Price(model_price(HOUSE_PRICES[model]), "house price (offline scripted model)")
    return _library_price(model, at)


def known_model(model: str, *, at: datetime, overrides: Iterable[PriceOverride] = ()) -> bool:
    return resolve(model, at=at, overrides=overrides) is not None


def cost_usd(price: Price | None, usage: Usage) -> Decimal | None:
    """What ``usage`` cost at ``price``; None when the price is unknown (never 0)."""
    if price is None:
        return None
    counts = usage.by_type()
    calculated = price.model_price.calc_price(
        genai_prices.Usage(**{USAGE_KEYS[kind]: count for kind, count in counts.items() if count})
    )
    return Decimal(calculated["total_price"]).quantize(QUANTUM, rounding=ROUND_HALF_UP)
