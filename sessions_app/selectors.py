"""Read-side queries for the pages."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet

from sessions_app.models import Session


def sessions_visible_to(*, user: AbstractBaseUser) -> QuerySet[Session]:
    """Sessions the user owns or that were shared with them (staff see all)."""
    query = Session.objects.select_related("owner")
    if not user.is_staff:
        query = query.filter(Q(owner=user) | Q(shares__user=user)).distinct()
    return query.order_by("-created_at")
