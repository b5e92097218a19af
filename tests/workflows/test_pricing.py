from decimal import Decimal

import pytest

from workflows.pricing import PRICES, ModelPrice, cost_usd, known_model, price_for


def test_table_covers_required_models_with_decimal_prices():
    for model in (
        "scripted-small",
        "scripted-large",
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1-mini",
        "deepseek-chat",
        "deepseek-reasoner",
    ):
        assert known_model(model)
        price = PRICES[model]
        assert isinstance(price.input_per_million, Decimal)
        assert isinstance(price.output_per_million, Decimal)
        assert price.output_per_million >= price.input_per_million > 0


def test_cost_is_exact_decimal():
    # 1234 * 0.15 / 1e6 + 5678 * 0.60 / 1e6 = 0.0001851 + 0.0034068 = 0.0035919 -> 0.003592
    cost = cost_usd(model="scripted-small", input_tokens=1234, output_tokens=5678)
    assert cost == Decimal("0.003592")
    assert isinstance(cost, Decimal)
    assert cost.as_tuple().exponent == -6


def test_cost_of_a_million_tokens_is_the_list_price():
    assert cost_usd(model="gpt-4o", input_tokens=1_000_000, output_tokens=0) == Decimal("2.5")
    assert cost_usd(model="gpt-4o", input_tokens=0, output_tokens=1_000_000) == Decimal("10")
    assert cost_usd(model="gpt-4o", input_tokens=0, output_tokens=0) == Decimal("0")


def test_rounding_is_half_up_not_bankers():
    # 5 tokens at 0.10/M = 0.0000005 exactly: half-up gives 0.000001, half-even would give 0.
    assert cost_usd(model="gpt-4.1-nano", input_tokens=5, output_tokens=0) == Decimal("0.000001")
    # 15 tokens = 0.0000015 -> 0.000002 (half-even would also give 0.000002); 25 -> 0.000003
    assert cost_usd(model="gpt-4.1-nano", input_tokens=25, output_tokens=0) == Decimal("0.000003")


def test_many_small_costs_sum_without_float_drift():
    total = sum(
        (cost_usd(model="scripted-large", input_tokens=1000, output_tokens=100) for _ in range(10)),
        Decimal(0),
    )
    # each: 1000*2.5/1e6 + 100*10/1e6 = 0.0025 + 0.001 = 0.0035
    assert total == Decimal("0.035")


def test_unknown_model_raises_key_error_naming_it():
    assert not known_model("gpt-99")
    with pytest.raises(KeyError, match="gpt-99"):
        cost_usd(model="gpt-99", input_tokens=1, output_tokens=1)


def test_negative_tokens_rejected():
    with pytest.raises(ValueError):
        cost_usd(model="gpt-4o", input_tokens=-1, output_tokens=0)


def test_extra_model_prices_from_env(monkeypatch):
    monkeypatch.setenv("EXTRA_MODEL_PRICES", "llama3:8b:0.05:0.10, my-model:1:3")
    assert known_model("llama3:8b")
    assert price_for("my-model") == ModelPrice(Decimal("1"), Decimal("3"))
    assert cost_usd(model="llama3:8b", input_tokens=2_000_000, output_tokens=1_000_000) == Decimal("0.2")
    monkeypatch.setenv("EXTRA_MODEL_PRICES", "")
    assert not known_model("llama3:8b")


def test_extra_model_prices_can_override_builtin(monkeypatch):
    monkeypatch.setenv("EXTRA_MODEL_PRICES", "gpt-4o:1:2")
    assert cost_usd(model="gpt-4o", input_tokens=1_000_000, output_tokens=0) == Decimal("1")
    assert PRICES["gpt-4o"].input_per_million == Decimal("2.50")  # the table is not mutated


@pytest.mark.parametrize("raw", ["nocolons", "m:1", "m:abc:1", "m:-1:1", ":1:2"])
def test_malformed_extra_prices_raise_value_error(monkeypatch, raw):
    monkeypatch.setenv("EXTRA_MODEL_PRICES", raw)
    with pytest.raises(ValueError, match="EXTRA_MODEL_PRICES"):
        known_model("anything")
