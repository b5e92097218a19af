"""Operators' model prices: add or override a model's price per token type, from a date.

They win over EXTRA_MODEL_PRICES (deprecated), the scripted models' house prices and
genai-prices (``workflows.pricing``). A usage row keeps the price it was charged at, so
editing or adding a price here never changes a recorded cost; it applies to model calls
whose round starts after it is in force. The form refuses a negative or non-numeric price
and a price of a model whose dates overlap another's (``ModelPrice.clean``).
"""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone

from sessions_app.models import ModelPrice
from workflows.pricing import resolve


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = (
        "model", "input_per_million", "cached_input_per_million", "cache_write_per_million",
        "output_per_million", "reasoning_per_million", "valid_from", "valid_until", "in_force",
        "note",
    )
    list_filter = ("model",)
    search_fields = ("model", "note")
    ordering = ("model", "-valid_from")
    fieldsets = (
        (None, {"fields": ("model", "note")}),
        ("USD per million tokens", {
            "fields": (
                ("input_per_million", "cached_input_per_million", "cache_write_per_million"),
                ("output_per_million", "reasoning_per_million"),
            ),
            "description": "Cached input and cache writes are part of input, reasoning part of "
            "output: each is charged at its own price when given, at its parent's otherwise.",
        }),
        ("Applies", {"fields": (("valid_from", "valid_until"), "library_price")}),
    )
    readonly_fields = ("library_price",)

    @admin.display(description="in force now", boolean=True)
    def in_force(self, obj: ModelPrice) -> bool:
        now = timezone.now()
        return obj.valid_from <= now and (obj.valid_until is None or now < obj.valid_until)

    @admin.display(description="without this price")
    def library_price(self, obj: ModelPrice) -> str:
        """What the model would cost otherwise (genai-prices, the house prices or nothing)."""
        if not obj.model:
            return "—"
        price = resolve(obj.model, at=timezone.now())
        if price is None:
            return "no known price (runs show \"price unknown\")"
        return ", ".join(f"{kind} {value}" for kind, value in price.per_million().items()) + (
            f" — {price.source}")
