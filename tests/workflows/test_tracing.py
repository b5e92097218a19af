"""OpenTelemetry traces of runs: the span tree and its GenAI attributes for the demo, a failed
node, a tool call and a run taken over (the SDK's in-memory exporter), one export over
OTLP/HTTP to a receiver here that decodes it with opentelemetry-proto, and the settings."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from sessions_app.models import TokenUsage
from tests import procs
from tests.workflows.helpers import (
    agent_node,
    command,
    create_session,
    install_workflows,
    is_event,
    session_row,
    wait_event,
    wait_finished,
    workflow,
)
from tests.workflows.test_takeover import _crash, _start_executor
from workflows import tracing

pytestmark = pytest.mark.django_db(transaction=True)

FAILING = workflow(
    "failing",
    agent_node("root", max_tokens=4, thinking=False),
    agent_node("broken", "root", fail=True),
)
TOOLED = {**workflow("tooled", agent_node("calc", max_tokens=6, thinking=False))}
TOOLED["agents"]["calc"]["tools"] = ["calculator"]
SLOW = workflow("slow-solo", agent_node("talk", max_tokens=200, thinking=False),
                agent_node("after", "talk", max_tokens=5, thinking=False))


@pytest.fixture
def flows(settings: Any, tmp_path: Any) -> Any:
    install_workflows(settings, tmp_path, FAILING, TOOLED, SLOW)
    return settings


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure([SimpleSpanProcessor(exporter)])
    yield exporter
    tracing.configure(None)


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for span in exporter.get_finished_spans():
        out.setdefault(span.name, []).append(span)
    return out


async def approve_review(sid: str, owner: Any) -> None:
    asked = await wait_event(sid, is_event("human_interaction_required"), timeout=20)
    assert await command(sid, owner, "submit_review", node_id=asked["data"]["node_id"],
                         decision="approve") is None


async def test_the_demo_run_is_one_trace_of_run_agent_and_model_call_spans(flows, spans, executor, owner):
    sid = await create_session(owner, "demo")
    assert await command(sid, owner, "start_session") is None
    await approve_review(sid, owner)
    assert await wait_finished(sid) == "completed"
    finished = spans.get_finished_spans()
    [run] = [s for s in finished if s.name == "invoke_workflow demo"]
    assert {s.context.trace_id for s in finished} == {run.context.trace_id}
    assert run.parent is None
    assert run.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert run.attributes["agentroom.session_id"] == sid
    assert run.attributes["agentroom.status"] == "completed"
    agents = [s for s in finished if s.attributes.get("gen_ai.operation.name") == "invoke_agent"]
    assert len(agents) == 7 and all(s.parent.span_id == run.context.span_id for s in agents)
    calls = [s for s in finished if s.attributes.get("gen_ai.operation.name") == "chat"]
    agent_ids = {s.context.span_id: s for s in agents}
    assert len(calls) == 7 and all(s.parent.span_id in agent_ids for s in calls)
    rows = {r.node_id: r for r in await database_sync_to_async(
        lambda: list(TokenUsage.objects.filter(session_id=sid)))()}
    for span in agents:
        row = rows[span.attributes["agentroom.node_id"]]
        assert span.name == f"invoke_agent {span.attributes['gen_ai.agent.name']}"
        assert span.attributes["gen_ai.usage.input_tokens"] == row.input_tokens
        assert span.attributes["gen_ai.usage.output_tokens"] == row.output_tokens
        assert span.attributes["gen_ai.usage.reasoning.output_tokens"] == row.reasoning_tokens
        assert span.attributes["gen_ai.usage.cache_read.input_tokens"] == 0
        assert Decimal(str(span.attributes["agentroom.cost_usd"])) == row.cost_usd
    for span in calls:
        assert span.name == f"chat {span.attributes['gen_ai.request.model']}"
        assert span.attributes["gen_ai.provider.name"] == "scripted"
        assert span.status.status_code == StatusCode.UNSET
        # no content unless turned on
        assert "gen_ai.input.messages" not in span.attributes
        assert "gen_ai.output.messages" not in span.attributes
    assert (await session_row(sid)).trace_parent.startswith(f"00-{run.context.trace_id:032x}-")


async def test_a_failed_node_marks_its_span_and_the_run(flows, spans, executor, owner):
    sid = await create_session(owner, "failing")
    assert await command(sid, owner, "start_session") is None
    assert await wait_finished(sid) == "failed"
    spans_ = by_name(spans)
    [run] = spans_["invoke_workflow failing"]
    [broken] = [s for s in spans_["invoke_agent Broken"]]
    assert broken.status.status_code == StatusCode.ERROR
    assert broken.attributes["error.type"] == "provider_error"
    assert "scripted failure" in broken.status.description
    [call] = [s for s in spans_["chat scripted-small"] if s.parent.span_id == broken.context.span_id]
    assert call.status.status_code == StatusCode.ERROR
    [root] = spans_["invoke_agent Root"]
    assert root.status.status_code == StatusCode.UNSET
    assert run.attributes["agentroom.status"] == "failed"


async def test_a_tool_call_is_an_execute_tool_span_and_content_only_when_asked(flows, executor, owner):
    exporter = InMemorySpanExporter()
    tracing.configure([SimpleSpanProcessor(exporter)], capture_content=True)
    try:
        sid = await create_session(owner, "tooled")
        assert await command(sid, owner, "start_session") is None
        assert await wait_finished(sid) == "completed"
    finally:
        tracing.configure(None)
    spans_ = by_name(exporter)
    [tool] = spans_["execute_tool calculator"]
    [agent] = spans_["invoke_agent Calc"]
    assert tool.parent.span_id == agent.context.span_id
    assert tool.attributes["gen_ai.tool.name"] == "calculator"
    assert tool.attributes["gen_ai.tool.call.id"].startswith("tc_")
    assert tool.attributes["agentroom.tool_status"] == "succeeded"
    assert "gen_ai.tool.call.arguments" in tool.attributes
    calls = spans_["chat scripted-small"]
    assert len(calls) == 2  # the call that asked for the tool, and the answer
    assert "Calc" in calls[0].attributes["gen_ai.system_instructions"]
    assert "calculator" in calls[0].attributes["gen_ai.output.messages"]


async def test_a_run_taken_over_continues_the_same_trace_linked(flows, spans, executor, owner, monkeypatch):
    flows.WORKER_LEASE_SECONDS = 0.6
    flows.SCRIPTED_TOKENS_PER_SECOND = 100
    sid = await create_session(owner, "slow-solo")
    assert await command(sid, owner, "start_session") is None
    await wait_event(sid, is_event("token_stream", "talk"))
    await _crash(executor, monkeypatch)
    flows.SCRIPTED_TOKENS_PER_SECOND = 0
    other = await _start_executor("executor-b")
    try:
        assert await wait_finished(sid) == "completed"
    finally:
        await other.close()
    first, second = sorted(by_name(spans)["invoke_workflow slow-solo"], key=lambda s: s.start_time)
    assert first.attributes["agentroom.status"] == "abandoned"
    assert second.attributes["agentroom.takeover"] is True
    assert second.context.trace_id == first.context.trace_id
    assert second.parent.span_id == first.context.span_id
    [link] = second.links
    assert link.context.span_id == first.context.span_id
    assert link.attributes["agentroom.link"] == "takeover"
    talks = [s for s in by_name(spans)["invoke_agent Talk"] if s.parent.span_id == second.context.span_id]
    assert len(talks) == 1 and talks[0].context.trace_id == first.context.trace_id


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.bodies.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_a_run_exports_over_otlp_http_as_the_collector_receives_it(flows, executor, owner, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.bodies = []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                       f"http://127.0.0.1:{server.server_address[1]}/v1/traces")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "meeting-room-test")
    try:
        import os

        assert tracing.configure_from_env(os.environ) is True
        sid = await create_session(owner, "failing")
        assert await command(sid, owner, "start_session") is None
        assert await wait_finished(sid) == "failed"
    finally:
        tracing.configure(None)  # shuts the provider down: the batch is flushed
        server.shutdown()
    assert _Receiver.bodies
    names, attributes, services = [], {}, set()
    for path, content_type, body in _Receiver.bodies:
        assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            services |= {a.value.string_value for a in resource_spans.resource.attributes
                         if a.key == "service.name"}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    names.append(span.name)
                    attributes[span.name] = {a.key: a.value for a in span.attributes}
    assert services == {"meeting-room-test"}
    assert sorted(names) == sorted([
        "invoke_workflow failing", "invoke_agent Root", "invoke_agent Broken",
        "chat scripted-small", "chat scripted-small",
    ])
    assert attributes["invoke_workflow failing"]["agentroom.session_id"].string_value == sid
    chat = attributes["chat scripted-small"]
    assert chat["gen_ai.request.model"].string_value == "scripted-small"
    assert chat["gen_ai.operation.name"].string_value == "chat"


@pytest.mark.parametrize(("environ", "message"), [
    ({"OTEL_TRACES_EXPORTER": "zipkin"}, "unknown exporter 'zipkin'"),
    ({"OTEL_TRACES_EXPORTER": "otlp,jaeger"}, "unknown exporter 'jaeger'"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, "grpc"),
])
def test_a_setting_it_cannot_honour_is_a_clear_error(environ, message):
    with pytest.raises(tracing.TracingConfigError, match=message):
        tracing.configure_from_env(environ)
    assert not tracing.enabled()


def test_tracing_is_off_unless_asked_for():
    assert tracing.configure_from_env({}) is False
    assert tracing.configure_from_env({"OTEL_TRACES_EXPORTER": "none"}) is False
    assert tracing.configure_from_env(
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}) is False
    assert not tracing.enabled()


@pytest.mark.slow
def test_an_unknown_exporter_stops_the_start_up_with_the_setting_named(tmp_path):
    env = procs.child_env(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", VAR_DIR=str(tmp_path),
                          OTEL_TRACES_EXPORTER="jaeger")
    result = procs.run_manage(["check"], env=env, check=False)
    assert result.returncode != 0
    assert "OpenTelemetry tracing" in result.stderr and "'jaeger'" in result.stderr


def test_http_requests_get_the_asgi_and_django_instrumentations_spans(spans, client, owner):
    """Django's and the ASGI server's own spans come from OpenTelemetry's instrumentations."""
    from asgiref.sync import async_to_sync
    from django.core.handlers.asgi import ASGIHandler

    # Built after tracing began, as the app is at start-up (a handler built earlier, e.g. by
    # another test's import of config.asgi, has no Django spans: they come with its middleware).
    app = tracing.instrument_asgi(ASGIHandler())
    client.force_login(owner)
    cookie = client.cookies["sessionid"].value
    sent: list[dict[str, Any]] = []

    async def call() -> None:
        requests = [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict[str, Any]:
            if requests:
                return requests.pop()
            await asyncio.Event().wait()  # the client stays connected
            return {}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                   "method": "GET", "scheme": "http", "path": "/sessions/", "raw_path": b"/sessions/",
                   "query_string": b"", "root_path": "", "client": ("127.0.0.1", 5000),
                   "server": ("testserver", 80),
                   "headers": [(b"host", b"testserver"), (b"cookie", f"sessionid={cookie}".encode())]},
                  receive, send)

    async_to_sync(call)()
    assert sent[0]["status"] == 200
    names = {span.name for span in spans.get_finished_spans()}
    assert "GET /sessions/" in names  # the ASGI server span
    django = [s for s in spans.get_finished_spans()
              if s.instrumentation_scope.name == "opentelemetry.instrumentation.django"]
    assert django and django[0].attributes.get("http.route", "").startswith("sessions/")
