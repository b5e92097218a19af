"""The room's People panel and share links, as small JSON endpoints, and the join page.

Plain HTTP (CSRF-protected POSTs answered with JSON) rather than WebSocket commands: managing
members is rare, is not part of watching a run, and keeps the meeting protocol unchanged.
Every endpoint but the join page answers only someone who may manage the session's members
(``access.can_manage_members``): the user search in particular must not list the site's
users to anyone else. The writes are the services in ``services.members`` and
``services.links``; a refusal is ``{"code", "error"}`` with a 4xx status and nothing stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from realtime.timestamps import iso_ms_or_none
from realtime.vocabulary import Role
from sessions_app import selectors, services
from sessions_app.access import can_manage_members
from sessions_app.models import Session, ShareLink
from sessions_app.services.errors import (
    Forbidden,
    InvalidData,
    InvalidState,
    LinkUnusable,
    NotFound,
    ServiceError,
)
from sessions_app.services.links import find_link

STATUS = {Forbidden: 403, NotFound: 404, InvalidData: 400, LinkUnusable: 410, InvalidState: 409}


def _status(exc: ServiceError) -> int:
    return next((code for kind, code in STATUS.items() if isinstance(exc, kind)), 400)


def _refusal(exc: ServiceError) -> JsonResponse:
    return JsonResponse({"code": exc.code, "error": exc.message}, status=_status(exc))


def managed(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """JSON endpoints for managers of the session only: 401, 404, 403 otherwise; services'
    refusals become JSON errors."""

    @wraps(view)
    def wrapper(request: HttpRequest, session_id: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return JsonResponse({"code": "forbidden", "error": "log in first"}, status=401)
        try:
            session = Session.objects.get(pk=session_id)
        except (Session.DoesNotExist, ValidationError):
            return JsonResponse({"code": "not_found", "error": "no such session"}, status=404)
        if not can_manage_members(user=request.user, session=session):
            return JsonResponse(
                {"code": "forbidden", "error": "only the owner can manage members"}, status=403
            )
        try:
            return view(request, session, **kwargs)
        except ServiceError as exc:
            return _refusal(exc)

    return wrapper


def _body(request: HttpRequest) -> dict[str, Any]:
    """A form post or a JSON object."""
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            raise InvalidData("the body is not JSON") from None
        if not isinstance(data, dict):
            raise InvalidData("the body must be a JSON object")
        return data
    return request.POST.dict()


@require_GET
@managed
def people_search(request: HttpRequest, session: Session) -> HttpResponse:
    return JsonResponse(
        {"users": selectors.users_to_add(session=session, query=request.GET.get("q", "")[:150])}
    )


MEMBER_ACTIONS = {
    "add": lambda session, user, data: services.member_add(
        session_id=session.pk, actor=user, username=data.get("username"), role=data.get("role")
    ),
    "role": lambda session, user, data: services.member_set_role(
        session_id=session.pk, actor=user, username=data.get("username"), role=data.get("role")
    ),
    "remove": lambda session, user, data: services.member_remove(
        session_id=session.pk, actor=user, username=data.get("username")
    ),
}


@require_POST
@managed
def member_change(request: HttpRequest, session: Session) -> HttpResponse:
    """``{"action": "add" | "role" | "remove", "username": ..., "role": ...}``; the answer is
    the members as they are now (the room also sees ``member_changed``)."""
    data = _body(request)
    action = MEMBER_ACTIONS.get(str(data.get("action")))
    if action is None:
        raise InvalidData("action is add, role or remove")
    action(session, request.user, data)
    return JsonResponse({"members": selectors.members_of(session_id=session.pk)})


def link_view(link: ShareLink, now: Any) -> dict[str, Any]:
    return {
        "id": link.pk,
        "role": link.role,
        "created_by": link.created_by.get_username() if link.created_by else None,
        "created_at": iso_ms_or_none(link.created_at),
        "expires_at": iso_ms_or_none(link.expires_at),
        "max_uses": link.max_uses,
        "uses": link.uses,
        "unusable": link.unusable_because(now),
        "joined": [
            {"user": j.user.get_username(), "role": j.role, "at": iso_ms_or_none(j.joined_at)}
            for j in link.joins.all()
        ],
    }


def _int(value: Any, what: str, *, empty: int | None = None) -> int | None:
    if value in (None, ""):
        return empty
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidData(f"{what} must be a whole number") from None


@require_http_methods(["GET", "POST"])
@managed
def links(request: HttpRequest, session: Session) -> HttpResponse:
    """GET: the session's links and who joined through each. POST ``{"role",
    "expires_hours", "max_uses"}``: a new link; its URL is in this answer only."""
    now = timezone.now()
    if request.method == "GET":
        return JsonResponse({"links": [link_view(x, now) for x in selectors.share_links_of(session=session)]})
    data = _body(request)
    hours = _int(data.get("expires_hours"), "expires_hours", empty=24 * 7)
    link, token = services.share_link_create(
        session_id=session.pk, actor=request.user, role=data.get("role"),
        expires_in=timedelta(hours=hours), max_uses=_int(data.get("max_uses"), "max_uses"),
    )
    url = request.build_absolute_uri(reverse("sessions:join", kwargs={"token": token}))
    return JsonResponse({"link": link_view(link, now), "url": url}, status=201)


@require_POST
@managed
def link_revoke(request: HttpRequest, session: Session, link_id: int) -> HttpResponse:
    if not ShareLink.objects.filter(pk=link_id, session=session).exists():
        raise NotFound("no such link in this session")
    link = services.share_link_revoke(link_id=link_id, actor=request.user)
    return JsonResponse({"link": link_view(link, timezone.now())})


@login_required
@require_http_methods(["GET", "POST"])
def join(request: HttpRequest, token: str) -> HttpResponse:
    """GET: what the link offers (or why it is of no use, with a 4xx status); POST: join and
    enter the room."""
    try:
        if request.method == "POST":
            joined = services.share_link_join(token=token, user=request.user)
            return redirect(reverse("sessions:room", kwargs={"session_id": joined.session_id}))
        link = find_link(token)
        reason = link.unusable_because(timezone.now())
        if reason is not None:
            raise LinkUnusable(f"this invitation link is {reason}")
    except ServiceError as exc:
        return render(request, "sessions/join.html", {"error": exc.message}, status=_status(exc))
    return render(
        request, "sessions/join.html",
        {"link": link, "session": link.session, "controls": link.role == Role.CONTROLLER},
    )
