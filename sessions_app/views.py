"""Server-rendered pages: the session list, creating a session, the meeting room (the
People panel's endpoints and the join page are in ``views_people``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from realtime.vocabulary import Access
from sessions_app import selectors, services
from sessions_app.access import can_manage_members, session_access
from sessions_app.forms import NewSessionForm
from sessions_app.models import Session
from sessions_app.selectors import sessions_visible_to
from workflows.definitions import DefinitionError, list_workflows


def _list_context(request: HttpRequest, form: NewSessionForm, errors: list[str]) -> dict:
    return {
        "sessions": sessions_visible_to(user=request.user)[:200],
        "workflows": list_workflows(),
        "form": form,
        "form_errors": errors,
    }


@login_required
def session_list(request: HttpRequest) -> HttpResponse:
    form = NewSessionForm(workflows=list_workflows())
    return render(request, "sessions/list.html", _list_context(request, form, []))


@login_required
@require_http_methods(["GET", "POST"])
def session_new(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return redirect("sessions:list")
    workflows = list_workflows()
    form = NewSessionForm(request.POST, workflows=workflows)
    if not form.is_valid():
        errors = [f"{field}: {msg}" for field, msgs in form.errors.items() for msg in msgs]
        return render(request, "sessions/list.html", _list_context(request, form, errors), status=400)
    try:
        session = services.session_create(
            owner=request.user,
            workflow_slug=form.cleaned_data["workflow"],
            title=form.cleaned_data["title"],
        )
    except DefinitionError as exc:
        return render(
            request, "sessions/list.html", _list_context(request, form, [str(exc)]), status=400
        )
    return redirect(session.get_absolute_url())


def visible_session(request: HttpRequest, session_id: Any) -> tuple[Session, Access]:
    """The session and the user's access to it: 404 if there is none, 403 if not theirs."""
    try:
        session = get_object_or_404(Session.objects.select_related("owner", "parent"), pk=session_id)
    except ValidationError:  # not a UUID (a ?with= parameter)
        raise Http404("no such session") from None
    access = session_access(user=request.user, session=session)
    if access is None:
        raise PermissionDenied("not shared with you")
    return session, access


def room_config(request: HttpRequest, session: Session, access: Access) -> dict[str, Any]:
    """What the room's script reads (``#room-config``), the live room's and the replay's."""
    return {
        "session_id": str(session.pk),
        "ws_path": f"/ws/sessions/{session.pk}/",
        "user": request.user.get_username(),
        "can_control": access == Access.CONTROL,
        "title": session.title,
        "can_manage": can_manage_members(user=request.user, session=session),
        "people_url": reverse("sessions:members", kwargs={"session_id": session.pk}),
        "search_url": reverse("sessions:people_search", kwargs={"session_id": session.pk}),
        "links_url": reverse("sessions:links", kwargs={"session_id": session.pk}),
        "csrf_token": get_token(request),
        "fork_url": reverse("sessions:fork", kwargs={"session_id": session.pk}),
        "replay_url": reverse("sessions:replay", kwargs={"session_id": session.pk}),
    }


def room_context(session: Session, config: dict[str, Any]) -> dict[str, Any]:
    return {"session": session, "room_config": config, "lineage": selectors.lineage_of(session=session)}


@login_required
def session_room(request: HttpRequest, session_id: str) -> HttpResponse:
    session, access = visible_session(request, session_id)
    config = room_config(request, session, access)
    return render(request, "sessions/room.html", room_context(session, config))
