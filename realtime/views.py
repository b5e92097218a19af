"""``/metrics``: the deployment's Prometheus metrics, for staff users and allowed addresses.

Never for anyone else: the numbers tell who is busy and what it costs. The address is the
connection's own (``REMOTE_ADDR``), never a forwarded header a client can write; behind a
proxy on the same host every request comes from 127.0.0.1, which is why the allow-list
(``METRICS_ALLOWED_IPS``) is empty unless the operator fills it (docs/operations.md).
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_safe

from realtime import metrics

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(allowed: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in allowed)


def may_scrape(*, user: Any, address: str) -> bool:
    """Staff (active), or a client address inside one of ``METRICS_ALLOWED_IPS``."""
    if user is not None and user.is_active and user.is_staff:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d
    return any(ip in network for network in _networks(tuple(settings.METRICS_ALLOWED_IPS)))


@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not may_scrape(user=getattr(request, "user", None), address=request.META.get("REMOTE_ADDR", "")):
        return HttpResponseForbidden(
            "metrics are served to staff and to METRICS_ALLOWED_IPS only\n",
            content_type="text/plain; charset=utf-8",
        )
    body, content_type = metrics.render()
    response = HttpResponse(body, content_type=content_type)
    patch_cache_control(response, no_store=True)
    return response
