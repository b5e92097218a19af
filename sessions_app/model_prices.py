"""Operators' model prices, edited in the admin (``workflows.pricing`` reads them first)."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

ZERO = Decimal("0")


class ModelPrice(models.Model):
    """An operator's price for a model, in force from ``valid_from`` (until ``valid_until``):
    it wins over EXTRA_MODEL_PRICES, the house prices and genai-prices (``workflows.pricing``).
    Usage rows keep the price they were charged at, so editing a price never changes a past
    cost."""

    model = models.CharField(max_length=100, db_index=True,
                             help_text="The model name exactly as requested (e.g. gpt-4o-mini).")
    input_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, validators=[MinValueValidator(ZERO)],
        help_text="USD per million input tokens.")
    cached_input_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, validators=[MinValueValidator(ZERO)],
        help_text="USD per million cached input tokens (empty: the input price).")
    cache_write_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, validators=[MinValueValidator(ZERO)],
        help_text="USD per million tokens written to the cache (empty: the input price).")
    output_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, validators=[MinValueValidator(ZERO)],
        help_text="USD per million output tokens.")
    reasoning_per_million = models.DecimalField(
        max_digits=12, decimal_places=6, null=True, blank=True, validators=[MinValueValidator(ZERO)],
        help_text="USD per million reasoning tokens (empty: the output price).")
    valid_from = models.DateTimeField(default=timezone.now)
    valid_until = models.DateTimeField(null=True, blank=True, help_text="Empty: until further notice.")
    note = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model", "-valid_from"]
        constraints = [
            models.UniqueConstraint(fields=["model", "valid_from"], name="model_price_unique_start"),
            models.CheckConstraint(
                condition=models.Q(input_per_million__gte=0, output_per_million__gte=0),
                name="model_price_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(valid_until__isnull=True)
                | models.Q(valid_until__gt=models.F("valid_from")),
                name="model_price_valid_order",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model} from {self.valid_from:%Y-%m-%d}"

    def clean(self) -> None:
        """Two prices of one model may not apply at the same moment."""
        super().clean()
        if self.valid_from and self.valid_until and self.valid_until <= self.valid_from:
            raise ValidationError({"valid_until": "must be after valid_from"})
        if not self.model or not self.valid_from:
            return
        others = ModelPrice.objects.filter(model=self.model).exclude(pk=self.pk)
        if self.valid_until is not None:
            others = others.filter(valid_from__lt=self.valid_until)
        overlapping = others.filter(
            models.Q(valid_until__isnull=True) | models.Q(valid_until__gt=self.valid_from)
        ).first()
        if overlapping is not None:
            raise ValidationError(
                f"overlaps the price of {self.model} valid from {overlapping.valid_from:%Y-%m-%d %H:%M}"
                + (f" until {overlapping.valid_until:%Y-%m-%d %H:%M}" if overlapping.valid_until else "")
                + "; end that one first (valid until) or pick other dates"
            )
