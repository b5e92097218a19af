"""Prices: genai-prices for the public models, house prices for ours, the admin's first, the
deprecated EXTRA_MODEL_PRICES still read; costs by token type, exact decimals, no silent $0."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from realtime.vocabulary import TokenType
from workflows.pricing import PriceOverride, check_extra_prices, cost_usd, known_model, resolve
from workflows.providers import Usage

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def cost(model: str, **tokens: int) -> Decimal | None:
    return cost_usd(resolve(model, at=NOW), Usage(**{"input_tokens": 0, "output_tokens": 0, **tokens}))


@pytest.fixture(autouse=True)
def _no_extra_prices(monkeypatch):
    monkeypatch.delenv("EXTRA_MODEL_PRICES", raising=False)


@pytest.mark.parametrize("model", ["scripted-small", "scripted-large", "gpt-4o-mini", "gpt-4o",
                                   "gpt-4.1-mini", "deepseek-chat", "deepseek-reasoner"])
def test_the_models_we_ship_and_common_public_ones_have_a_price(model):
    assert known_model(model, at=NOW)
    price = resolve(model, at=NOW)
    assert Decimal(price.per_million()["output"]) >= Decimal(price.per_million()["input"]) > 0


def test_public_prices_come_from_genai_prices_with_a_cached_input_price():
    price = resolve("gpt-4o-mini", at=NOW)
    assert price.source.startswith("genai-prices ") and "gpt-4o-mini" in price.source
    assert price.per_million() == {"input": "0.15", "cached_input": "0.075", "output": "0.6"}


def test_cost_is_exact_decimal_half_up():
    # 1234 * 0.15 / 1e6 + 5678 * 0.60 / 1e6 = 0.0001851 + 0.0034068 = 0.0035919 -> 0.003592
    value = cost("scripted-small", input_tokens=1234, output_tokens=5678)
    assert value == Decimal("0.003592") and value.as_tuple().exponent == -6
    # 5 tokens at 0.10/M = 0.0000005 exactly: half-up gives 0.000001, half-even would give 0.
    assert cost("gpt-4.1-nano", input_tokens=5) == Decimal("0.000001")
    total = sum((cost("scripted-large", input_tokens=1000, output_tokens=100) for _ in range(10)),
                Decimal(0))
    assert total == Decimal("0.035")  # no float drift


def test_cached_tokens_are_part_of_input_never_added_on_top():
    # 1M input of which 400k cached: 600k at 0.15 + 400k at 0.075 = 0.09 + 0.03; 1M output at 0.6
    assert cost("gpt-4o-mini", input_tokens=1_000_000, cached_input_tokens=400_000,
                output_tokens=1_000_000) == Decimal("0.72")
    assert cost("gpt-4o-mini", input_tokens=1_000_000, output_tokens=1_000_000) == Decimal("0.75")


def test_reasoning_is_part_of_output_at_the_output_price_unless_priced_apart():
    plain = cost("deepseek-reasoner", input_tokens=100, output_tokens=1000)
    assert cost("deepseek-reasoner", input_tokens=100, output_tokens=1000, reasoning_tokens=700) == plain
    override = PriceOverride(
        model="thinker", valid_from=NOW - timedelta(days=1),
        per_million={TokenType.INPUT: Decimal(1), TokenType.OUTPUT: Decimal(2),
                     TokenType.REASONING: Decimal(10)},
    )
    price = resolve("thinker", at=NOW, overrides=[override])
    # 300 plain output at 2 + 700 reasoning at 10 per million
    assert cost_usd(price, Usage(0, 1000, reasoning_tokens=700)) == Decimal("0.007600")


def test_unknown_model_has_no_price_and_no_cost_never_zero():
    assert resolve("gpt-99", at=NOW) is None
    assert not known_model("gpt-99", at=NOW)
    assert cost("gpt-99", input_tokens=10, output_tokens=10) is None


def test_an_admin_price_wins_from_its_date_and_until_its_end():
    day = timedelta(days=1)
    overrides = [
        PriceOverride(model="gpt-4o", per_million={TokenType.INPUT: Decimal(1), TokenType.OUTPUT: Decimal(2)},
                      valid_from=NOW - 10 * day, valid_until=NOW - day, source="admin #1"),
        PriceOverride(model="gpt-4o", per_million={TokenType.INPUT: Decimal(3), TokenType.OUTPUT: Decimal(4)},
                      valid_from=NOW + day, source="admin #2"),
    ]
    assert resolve("gpt-4o", at=NOW - 2 * day, overrides=overrides).source == "admin #1"
    assert resolve("gpt-4o", at=NOW, overrides=overrides).source.startswith("genai-prices")
    assert resolve("gpt-4o", at=NOW + 2 * day, overrides=overrides).source == "admin #2"


def test_extra_model_prices_still_read_with_a_deprecation_warning(monkeypatch):
    monkeypatch.setenv("EXTRA_MODEL_PRICES", "llama3:8b:0.05:0.10, my-model:1:3")
    with pytest.warns(DeprecationWarning, match="admin"):
        price = resolve("llama3:8b", at=NOW)
    assert price.source == "EXTRA_MODEL_PRICES"
    with pytest.warns(DeprecationWarning):
        assert cost("llama3:8b", input_tokens=2_000_000, output_tokens=1_000_000) == Decimal("0.2")
    monkeypatch.setenv("EXTRA_MODEL_PRICES", "gpt-4o:1:2")
    with pytest.warns(DeprecationWarning):  # it overrides the library, as it always did
        assert cost("gpt-4o", input_tokens=1_000_000) == Decimal("1")


@pytest.mark.parametrize("raw", ["nocolons", "m:1", "m:abc:1", "m:-1:1", ":1:2", "m:1:inf"])
def test_malformed_extra_prices_are_an_error_at_start_up_and_ignored_by_a_run(monkeypatch, raw):
    monkeypatch.setenv("EXTRA_MODEL_PRICES", raw)
    with pytest.raises(ValueError, match="EXTRA_MODEL_PRICES"):
        check_extra_prices()
    # a running session is never failed by it: the other sources still price its models
    assert resolve("gpt-4o-mini", at=NOW).source.startswith("genai-prices")
    assert resolve("m", at=NOW) is None


def test_usage_adds_up_type_by_type():
    total = Usage(10, 5, cached_input_tokens=4, reasoning_tokens=2) + Usage(3, 1, cache_write_tokens=1,
                                                                          estimated=True)
    assert total == Usage(13, 6, cached_input_tokens=4, cache_write_tokens=1, reasoning_tokens=2,
                          estimated=True)
