"""The AG-UI endpoints: authenticate, authorize, translate the input into our commands, stream.

``POST /agui/<workflow>/`` takes a ``RunAgentInput`` (the official model validates it: 422
with the reason otherwise). Its ``threadId`` names a session (``RoomBackend.open_thread``:
a new id makes a session of that workflow owned by the caller; an existing one must be one
the caller may control: 403). Then, as commands through the same backend as the room: each
``resume`` entry answers the review it names (``approve``/``reject`` and a comment in its
payload); each user message not taken in before becomes a participant's message; a session
not started is started, a paused one resumed. The response is that run, as server-sent
events, until it finishes, waits for a person (an interrupt) or fails.

``GET /agui/sessions/<id>/events`` is a read-only stream for dashboards (watch access is
enough), across runs until the session ends. Both resume after ``Last-Event-ID`` (header,
or the ``last_event_id`` query parameter for clients that cannot set headers).

Authentication: ``Authorization: Bearer <API token>`` (no cookies are read then; a watch
token cannot drive), or the browser's session cookie, which needs the CSRF token like any
POST.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from ag_ui.core import RunAgentInput
from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from pydantic import ValidationError

from realtime.agui.cutoff import SCOPE_KEY as CUT
from realtime.agui.stream import StreamRequest, agui_stream
from realtime.auth import current_user
from realtime.protocol import Command, ProtocolError, parse_command
from realtime.rooms import CommandRefused, RoomNotFound, get_backend
from realtime.snapshots import folded_state
from realtime.tokens import RATE, authenticate, bearer_secret, within_scope
from realtime.vocabulary import Access, CommandName, SessionStatus

MAX_BODY = 1_000_000
OUR_USER_MESSAGE_PREFIX = "user:"


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"code": code, "error": message}, status=status)


URL_TOKEN_PARAMS = ("token", "access_token", "api_token", "key")


class _Limited(Exception):
    pass


async def _who(request: HttpRequest, *, count: bool = True) -> tuple[Any, Access | None, bool]:
    """(user, token scope or None, by token). A bad or revoked token is no user at all; a
    token over its rate raises _Limited."""
    secret = bearer_secret(request.headers.get("Authorization"))
    if secret is not None:
        found = await database_sync_to_async(authenticate)(secret)
        if found is not None and count and not RATE.allow(found.token_id):
            raise _Limited
        return (found.user, found.scope, True) if found else (None, None, True)
    user = await request.auser()
    return (user if user.is_authenticated else None), None, False


def _csrf_refused(request: HttpRequest) -> HttpResponse | None:
    return CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, None, (), {})


def _last_event_id(request: HttpRequest) -> tuple[bool, int | None]:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("last_event_id")
    if raw is None or raw == "":
        return True, None
    raw = raw.strip()
    return (True, int(raw)) if raw.isdigit() and len(raw) <= 18 else (False, None)


def _cut(request: HttpRequest) -> Any:
    """The cut-off event the ASGI app put in the scope (none outside ASGI)."""
    return getattr(request, "scope", {}).get(CUT)


def _stream(request: StreamRequest) -> StreamingHttpResponse:
    response = StreamingHttpResponse(agui_stream(request), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "\n".join(getattr(p, "text", "") for p in parts if getattr(p, "text", ""))


def _commands(input_: RunAgentInput, session_id: str, status: str, pending: dict | None) -> list[Command]:
    """The input as our commands, in order (each validated like a socket's)."""
    out: list[dict[str, Any]] = []
    for entry in input_.resume or ():
        if entry.status != "resolved":
            continue  # abandoned: the review stays pending (its timeout applies)
        payload = entry.payload if isinstance(entry.payload, dict) else {}
        data = {"decision": payload.get("decision", "approve"), "comment": str(payload.get("comment", ""))}
        kind, _, rest = entry.interrupt_id.partition(":")
        if kind == "tool":
            node = (pending or {}).get("node_id") if (pending or {}).get("tool_call_id") == rest else None
            if node is None:
                raise _Refused(422, "invalid_data", f"no pending tool approval {entry.interrupt_id!r}")
            data.update(node_id=node, call_id=rest)
        elif kind == "review" and rest:
            data["node_id"] = rest.rsplit(":", 1)[0]
        else:
            raise _Refused(422, "invalid_data", f"unknown interrupt id {entry.interrupt_id!r}")
        out.append({"cmd": CommandName.SUBMIT_REVIEW, "data": data})
    if status == SessionStatus.CREATED:
        out.append({"cmd": CommandName.START_SESSION})
    elif status == SessionStatus.PAUSED:
        out.append({"cmd": CommandName.RESUME_SESSION})
    try:
        return [parse_command(json.dumps({**c, "id": uuid.uuid4().hex})) for c in out]
    except ProtocolError as exc:
        raise _Refused(422, exc.code, exc.message) from None


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@database_sync_to_async
def _drive(user: Any, workflow: str, input_: RunAgentInput) -> str:
    """Open the thread and carry out what the input asks; the session id."""
    backend = get_backend()
    try:
        session_id = backend.open_thread(user=user, workflow=workflow, thread_id=input_.thread_id)
    except RoomNotFound:
        raise _Refused(404, "not_found", "no such workflow or thread") from None
    except CommandRefused as exc:
        raise _Refused(403, exc.code, exc.message) from None
    # ``user:<id>`` messages are ours (a participant's message as we streamed it): a client
    # sending the conversation back must not post them again.
    user_messages = [m for m in input_.messages if m.role == "user" and _text(m.content).strip()
                     and not m.id.startswith(OUR_USER_MESSAGE_PREFIX)]
    new = set(backend.unseen_messages(session_id=session_id, message_ids=[m.id for m in user_messages]))
    header = backend.describe(session_id=session_id)["session"]
    try:
        for message in user_messages:
            if message.id in new and header["status"] not in (SessionStatus.COMPLETED,
                                                              SessionStatus.FAILED, SessionStatus.STOPPED):
                text = _text(message.content).strip()[:4000]
                backend.execute(user=user, session_id=session_id, command=parse_command(json.dumps(
                    {"cmd": CommandName.USER_INPUT, "data": {"text": text}})))
        pending = folded_state(session_id)[1]["pending_review"]
        for command in _commands(input_, session_id, header["status"], pending):
            backend.execute(user=user, session_id=session_id, command=command)
    except CommandRefused as exc:
        raise _Refused(409, exc.code, exc.message) from None
    return session_id


def _refuse_url_tokens(request: HttpRequest) -> HttpResponse | None:
    if any(name in request.GET for name in URL_TOKEN_PARAMS):
        return _error(400, "invalid_data", "tokens are never accepted in a URL: send "
                      "Authorization: Bearer <token>")
    return None


@csrf_exempt
@require_POST
async def run_agent(request: HttpRequest, workflow: str) -> HttpResponse:
    if (refused := _refuse_url_tokens(request)) is not None:
        return refused
    try:
        user, scope, by_token = await _who(request)
    except _Limited:
        return _error(429, "rate_limited", "too many requests with this token; slow down")
    if user is None:
        return _error(401, "unauthorized", "log in, or send Authorization: Bearer <API token>")
    if not by_token and (refused := _csrf_refused(request)) is not None:
        return refused
    if scope == Access.WATCH:
        return _error(403, "forbidden", "this API token may only watch")
    if len(request.body) > MAX_BODY:
        return _error(413, "invalid_data", f"body larger than {MAX_BODY} bytes")
    try:
        input_ = RunAgentInput.model_validate_json(request.body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return _error(422, "invalid_data", f"RunAgentInput: {where}: {first['msg']}")
    ok, after = _last_event_id(request)
    if not ok:
        return _error(400, "invalid_data", "Last-Event-ID must be a seq (a non-negative integer)")
    try:
        session_id = await _drive(user, workflow, input_)
    except _Refused as exc:
        return _error(exc.status, exc.code, exc.message)
    return _stream(StreamRequest(session_id=session_id, user=user, thread_id=input_.thread_id,
                                 run_id=input_.run_id, after=after, cut=_cut(request),
                                 recheck=_rechecker(request, session_id, scope)))


@require_GET
async def watch(request: HttpRequest, session_id: str) -> HttpResponse:
    if (refused := _refuse_url_tokens(request)) is not None:
        return refused
    try:
        user, scope, _ = await _who(request)
    except _Limited:
        return _error(429, "rate_limited", "too many requests with this token; slow down")
    if user is None:
        return _error(401, "unauthorized", "log in, or send Authorization: Bearer <API token>")
    ok, after = _last_event_id(request)
    if not ok:
        return _error(400, "invalid_data", "Last-Event-ID must be a seq (a non-negative integer)")
    access = await _access(user, str(session_id), scope)
    if access == "missing":
        return _error(404, "not_found", "no such session")
    if access is None:
        return _error(403, "forbidden", "you may not watch this session")

    return _stream(StreamRequest(session_id=str(session_id), user=user, thread_id=str(session_id),
                                 run_id=None, after=after, cut=_cut(request),
                                 recheck=_rechecker(request, str(session_id), scope)))


def _rechecker(request: HttpRequest, session_id: str, scope: Access | None) -> Any:
    """For the stream: may this client still watch (token not revoked, login still valid)?"""

    async def recheck() -> bool:
        if bearer_secret(request.headers.get("Authorization")) is not None:
            again, _, _ = await _who(request, count=False)
        else:  # the login afresh from the session store (a logout or new password ends it)
            again = await database_sync_to_async(current_user)({"session": request.session})
        return again is not None and await _access(again, session_id, scope) not in (None, "missing")

    return recheck


@database_sync_to_async
def _access(user: Any, session_id: str, scope: Access | None) -> Access | str | None:
    try:
        access = get_backend().access(user=user, session_id=session_id)
    except RoomNotFound:
        return "missing"
    return within_scope(access, scope) if scope else access
