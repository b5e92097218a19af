"""Costs in the admin: token types and "price unknown" on a session and its usage, the cost
summary per user with token types and budgets, model prices with their bad input refused,
and a price change that never rewrites a recorded cost."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from realtime.vocabulary import BudgetState
from sessions_app.models import ModelPrice, Session, TokenUsage
from sessions_app.prices import model_price
from tests.sessions_app.factories import make_session, make_user

pytestmark = pytest.mark.django_db

SUMMARY = reverse("admin:sessions_app_session_summary")
PRICE_ADD = reverse("admin:sessions_app_modelprice_add")


def typed(session: Session, *, cached: int, reasoning: int, unknown: bool = False,
          budget: str | None = None, state: str = BudgetState.OK) -> Session:
    """Give a fabricated session's usage token types (and maybe no price, a budget)."""
    TokenUsage.objects.filter(session=session).update(
        cached_input_tokens=cached, reasoning_tokens=reasoning, price={"input": "0.15"},
        price_source="genai-prices 0.2.3: openai/gpt-4o-mini",
    )
    if unknown:
        row = TokenUsage.objects.filter(session=session).first()
        TokenUsage.objects.filter(pk=row.pk).update(cost_usd=None, price={}, price_source="")
    rows = TokenUsage.objects.filter(session=session)
    Session.objects.filter(pk=session.pk).update(
        cached_input_tokens=cached * rows.count(), reasoning_tokens=reasoning * rows.count(),
        price_unknown=unknown, budget_usd=Decimal(budget) if budget else None, budget_state=state,
    )
    session.refresh_from_db()
    return session


def price_form(**fields: str) -> dict[str, str]:
    now = timezone.localtime()
    return {
        "model": "house-llm", "note": "", "input_per_million": "1.00",
        "cached_input_per_million": "", "cache_write_per_million": "",
        "output_per_million": "2.00", "reasoning_per_million": "",
        "valid_from_0": now.strftime("%Y-%m-%d"), "valid_from_1": now.strftime("%H:%M:%S"),
        "valid_until_0": "", "valid_until_1": "", **fields,
    }


def test_session_page_shows_token_types_price_unknown_and_the_price_charged(admin_client):
    session = typed(make_session(owner=make_user("olivia")), cached=40, reasoning=7, unknown=True)
    url = reverse("admin:sessions_app_session_change", args=[session.pk])
    html = admin_client.get(url).content.decode()
    assert "cached input tokens" in html.lower() and "reasoning tokens" in html.lower()
    assert "price unknown" in html
    assert "genai-prices 0.2.3: openai/gpt-4o-mini" in html
    listing = admin_client.get(reverse("admin:sessions_app_session_changelist")).content.decode()
    assert "+ price unknown" in listing
    usage = admin_client.get(reverse("admin:sessions_app_tokenusage_changelist")).content.decode()
    assert "price unknown" in usage


def test_summary_per_user_with_token_types_and_budget_states(admin_client):
    olivia, pat = make_user("olivia"), make_user("pat")
    typed(make_session(owner=olivia), cached=10, reasoning=3, budget="1", state=BudgetState.REACHED)
    typed(make_session(owner=olivia), cached=5, reasoning=0, unknown=True)
    typed(make_session(owner=pat), cached=0, reasoning=2, budget="2", state=BudgetState.WARNING)
    response = admin_client.get(SUMMARY)
    data = response.context["summary"]
    users = {r.key: r for r in data["per_user"]}
    assert users["olivia"].sessions == 2 and users["pat"].sessions == 1
    totals = data["totals"]
    assert totals.cached_input_tokens == sum(
        s.cached_input_tokens for s in Session.objects.all())
    assert totals.reasoning_tokens == sum(s.reasoning_tokens for s in Session.objects.all())
    assert (totals.budgeted, totals.budget_warning, totals.budget_reached) == (2, 1, 1)
    assert totals.price_unknown == 1 and users["olivia"].price_unknown == 1
    html = response.content.decode()
    assert 'id="summary-per-user"' in html and "of which cached" in html
    assert "+ price unknown (1)" in html
    assert "2 · 1 warned · 1 reached" in html


@pytest.mark.parametrize(("fields", "error"), [
    ({"input_per_million": "-1"}, "greater than or equal to 0"),
    ({"output_per_million": "abc"}, "Enter a number"),
    ({"cached_input_per_million": "-0.01"}, "greater than or equal to 0"),
    ({"valid_until_0": "2000-01-01", "valid_until_1": "00:00:00"}, "must be after valid_from"),
])
def test_a_bad_price_is_a_clear_error_and_saves_nothing(admin_client, fields, error):
    response = admin_client.post(PRICE_ADD, price_form(**fields))
    assert response.status_code == 200
    assert error in response.content.decode()
    assert not ModelPrice.objects.exists()


def test_overlapping_dates_for_one_model_are_refused(admin_client):
    assert admin_client.post(PRICE_ADD, price_form()).status_code == 302
    later = timezone.localtime() + timedelta(days=3)
    response = admin_client.post(PRICE_ADD, price_form(
        input_per_million="5", valid_from_0=later.strftime("%Y-%m-%d"),
        valid_from_1=later.strftime("%H:%M:%S")))
    assert response.status_code == 200
    assert "overlaps the price of house-llm" in response.content.decode()
    # another model, or the same one once the first price ends, is fine
    assert admin_client.post(PRICE_ADD, price_form(model="other-llm")).status_code == 302
    first = ModelPrice.objects.get(model="house-llm")
    first.valid_until = later - timedelta(days=1)
    first.save()
    assert admin_client.post(PRICE_ADD, price_form(
        input_per_million="5", valid_from_0=later.strftime("%Y-%m-%d"),
        valid_from_1=later.strftime("%H:%M:%S"))).status_code == 302


def test_a_new_price_applies_from_its_date_and_never_rewrites_a_recorded_cost(admin_client):
    session = make_session(owner=make_user("olivia"))
    recorded = list(TokenUsage.objects.filter(session=session).values_list("cost_usd", flat=True))
    model = TokenUsage.objects.filter(session=session).values_list("model", flat=True).first()
    before = model_price(model=model)
    response = admin_client.post(PRICE_ADD, price_form(model=model, input_per_million="99"))
    assert response.status_code == 302
    after = model_price(model=model)
    assert after.source.startswith("admin: model price #") and after.per_million()["input"] == "99.000000"
    assert before is None or before.source != after.source
    assert list(TokenUsage.objects.filter(session=session).values_list("cost_usd", flat=True)) == recorded
    session.refresh_from_db()
    assert session.cost_usd == sum(recorded)


def test_a_budget_of_zero_or_below_is_refused_in_the_admin(admin_client):
    session = make_session(owner=make_user("olivia"))
    url = reverse("admin:sessions_app_session_change", args=[session.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {name: form.initial.get(name, "") or "" for name in form.fields}
    data.update({"title": session.title, "budget_usd": "0"})
    data.update({"shares-TOTAL_FORMS": "0", "shares-INITIAL_FORMS": "0"})
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert "greater than or equal to 0.000001" in response.content.decode()
    session.refresh_from_db()
    assert session.budget_usd is None
