"""Time travel over HTTP: the log in pages, the replay page, forking a node, comparing.

The replay page is the room itself (``room.html``, the same views and the same fold) with a
timeline instead of the run controls; it reads the log through ``session_events`` in pages
(never one huge frame) and starts playing with the first page. Every view asks the same
access rule as the room (``access.session_access``): whoever may watch may replay and
compare, whoever may control may fork.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_safe

from realtime.eventlog import head_seq, read_frames
from realtime.vocabulary import Access, NodeType
from sessions_app import selectors
from sessions_app.models import Session
from sessions_app.prices import suggested_models
from sessions_app.services.errors import ServiceError
from sessions_app.services.forks import (
    MAX_INSTRUCTION_CHARS,
    MAX_PROMPT_CHARS,
    ForkChanges,
    session_fork,
)
from sessions_app.views import room_config, room_context, visible_session
from workflows.vocabulary import ProviderName

PAGE_MAX = 5000
PAGE_DEFAULT = 2000


def _bad(message: str, status: int = 400) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _int_param(request: HttpRequest, name: str, default: int) -> int | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        return None


@login_required
@require_safe
def session_events(request: HttpRequest, session_id: Any) -> HttpResponse:
    """``{"events": [...], "last_seq": head, "next_after": seq, "done": bool}``: the logged
    events with ``after < seq``, at most ``limit``, as the frames the room was sent (the
    stored text, not re-encoded)."""
    session, _access = visible_session(request, session_id)
    after = _int_param(request, "after", 0)
    limit = _int_param(request, "limit", PAGE_DEFAULT)
    if after is None or after < 0:
        return _bad("after must be a whole number >= 0")
    if limit is None or not 1 <= limit <= PAGE_MAX:
        return _bad(f"limit must be 1..{PAGE_MAX}")
    head = head_seq(str(session.pk))
    if after > head:
        return _bad(f"after={after} is beyond the log (its last event is {head})")
    frames = read_frames(str(session.pk), after=after, limit=limit)
    next_after = frames[-1][0] if frames else after
    body = (
        '{"events":[' + ",".join(text for _, text in frames) + "]"
        + f',"last_seq":{head},"next_after":{next_after},"done":{"true" if next_after >= head else "false"}}}'
    )
    response = HttpResponse(body, content_type="application/json")
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_safe
def session_replay(request: HttpRequest, session_id: Any) -> HttpResponse:
    """The room driven by a timeline (docs/replay.md)."""
    session, access = visible_session(request, session_id)
    config = room_config(request, session, access)
    head = head_seq(str(session.pk))
    config["replay"] = {
        "events_url": reverse("sessions:events", kwargs={"session_id": session.pk}),
        "room_url": reverse("sessions:room", kwargs={"session_id": session.pk}),
        "last_seq": head,
        "page_size": PAGE_DEFAULT,
        "header": selectors.room_header(session_id=session.pk),
    }
    context = room_context(session, config)
    context["replay"] = True
    return render(request, "sessions/room.html", context)


def _fork_context(session: Session, node_id: str, form: dict[str, str], error: str = "") -> dict:
    definition = session.workflow_definition
    nodes = definition.get("nodes", [])
    agents = definition.get("agents", {})
    prompts = {
        n["id"]: agents.get(n.get("agent"), {}).get("prompt", "")
        for n in nodes if n.get("type", NodeType.AGENT) == NodeType.AGENT
    }
    models = {n["id"]: agents.get(n.get("agent"), {}).get("model", "") for n in nodes}
    return {
        "session": session,
        "nodes": nodes,
        "node_id": node_id,
        "prompt": prompts.get(node_id, ""),
        "current_model": models.get(node_id, ""),
        "is_agent": node_id in prompts,
        "models": suggested_models(also=models.values()),
        "providers": [p.value for p in ProviderName],
        "form": form,
        "error": error,
        "max_prompt": MAX_PROMPT_CHARS,
        "max_instruction": MAX_INSTRUCTION_CHARS,
    }


@login_required
@require_http_methods(["GET", "POST"])
def session_fork_view(request: HttpRequest, session_id: Any) -> HttpResponse:
    """"Fork from here": a form (GET ?node=) and the fork itself (POST)."""
    session, access = visible_session(request, session_id)
    if request.method == "GET":
        node_id = request.GET.get("node", "")
        status = 200 if access == Access.CONTROL else 403
        error = "" if status == 200 else "You may watch this session but not fork it."
        return render(request, "sessions/fork.html", _fork_context(session, node_id, {}, error),
                      status=status)
    fields = ("node", "instruction", "prompt", "model", "provider", "title")
    form = {k: request.POST.get(k, "") for k in fields}
    changes = ForkChanges(
        instruction=form["instruction"], model=form["model"], provider=form["provider"],
        # The prompt box starts with the current prompt: only a changed one is a change.
        prompt="" if form["prompt"].strip() == _fork_context(session, form["node"], {})["prompt"].strip()
        else form["prompt"],
    )
    try:
        fork = session_fork(session_id=session.pk, user=request.user, node_id=form["node"],
                            changes=changes, title=form["title"])
    except ServiceError as exc:
        status = {"forbidden": 403, "not_found": 404}.get(exc.code, 400)
        return render(request, "sessions/fork.html",
                      _fork_context(session, form["node"], form, exc.message), status=status)
    return redirect(fork.get_absolute_url())


@login_required
@require_safe
def session_compare(request: HttpRequest, session_id: Any) -> HttpResponse:
    """A fork and its parent (or ``?with=<id>``: any session the user may see) side by side."""
    session, _access = visible_session(request, session_id)
    other_id = request.GET.get("with") or (str(session.parent_id) if session.parent_id else "")
    if not other_id:
        return render(request, "sessions/compare.html",
                      {"session": session, "error": "This session is not a fork: nothing to compare."},
                      status=400)
    other, _ = visible_session(request, other_id)
    comparison = selectors.compare_sessions(left=other, right=session)
    return render(request, "sessions/compare.html", {"session": session, "cmp": comparison})
