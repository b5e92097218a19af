"""Opt-in OpenTelemetry traces of runs, named and attributed by the GenAI semantic conventions.

Off unless asked for, with the standard OpenTelemetry settings (read here once, at start-up):
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set, or
``OTEL_TRACES_EXPORTER`` naming ``otlp`` or ``console``, turns it on; ``OTEL_SDK_DISABLED=true``
or ``OTEL_TRACES_EXPORTER=none`` keeps it off. Everything else is the SDK's and read by it:
the endpoint, headers and timeout of the OTLP/HTTP exporter, ``OTEL_SERVICE_NAME`` and
``OTEL_RESOURCE_ATTRIBUTES``, the sampler, the batch processor's sizes. We ship the
OTLP/HTTP (protobuf) exporter only: another ``OTEL_TRACES_EXPORTER`` or an
``OTEL_EXPORTER_OTLP_*PROTOCOL`` other than ``http/protobuf`` is a start-up error
(``workflows.E002``), not a silent lack of traces.

Each run is one trace: a span per run (``invoke_workflow <slug>``), per agent round
(``invoke_agent <name>``), per model call (``chat <model>``) and per tool call
(``execute_tool <tool>``), with ``gen_ai.*`` attributes (operation, provider, model, usage by
type: input, cache read, cache creation, output, reasoning) and ours (``agentroom.*``:
session, node, round, cost; a usage without a price has no cost attribute). Prompts and
answers are recorded only with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``
(the GenAI instrumentations' own switch). A runner taking a run over continues its trace:
the first runner stores its run span's context with the session (W3C ``traceparent``), the
next one starts its run span as that span's child, linked to it. HTTP and WebSocket
requests get the ASGI instrumentation's server spans (``instrument_asgi``).

Why the SDK, not our own exporter: the systems around us (Vercel AI SDK, OpenAI Agents SDK,
Langfuse) speak these conventions over OTLP, and a collector takes it from there.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from opentelemetry import trace
from opentelemetry.environment_variables import OTEL_TRACES_EXPORTER
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    OTEL_SDK_DISABLED,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from workflows.providers.base import CompletionRequest, Usage

CAPTURE_CONTENT = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
EXPORTERS = ("otlp", "console", "none")
PROTOCOLS = ("http/protobuf",)
SERVICE_NAME = "agent-meeting-room"
TRACEPARENT = "traceparent"

_provider: TracerProvider | None = None
_capture = False
_propagator = TraceContextTextMapPropagator()


class TracingConfigError(ValueError):
    """An OpenTelemetry setting this deployment cannot honour (named in the message)."""


def settings_error(environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """Why the OTEL settings cannot be honoured, or None."""
    exporters = [e.strip() for e in environ.get(OTEL_TRACES_EXPORTER, "").split(",") if e.strip()]
    unknown = [e for e in exporters if e not in EXPORTERS]
    if unknown:
        return (f"{OTEL_TRACES_EXPORTER}={environ[OTEL_TRACES_EXPORTER]!r}: unknown exporter "
                f"{unknown[0]!r} (this deployment has: {', '.join(EXPORTERS)})")
    for name in (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, OTEL_EXPORTER_OTLP_PROTOCOL):
        value = environ.get(name, "").strip()
        if value and value not in PROTOCOLS:
            return f"{name}={value!r}: only {', '.join(PROTOCOLS)} is installed"
    return None


def _wanted(environ: Any) -> list[str]:
    if environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return []
    exporters = [e.strip() for e in environ.get(OTEL_TRACES_EXPORTER, "").split(",") if e.strip()]
    if exporters:
        return [e for e in exporters if e != "none"]
    endpoint = environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
    return ["otlp"] if endpoint else []


def configure_from_env(environ: Any = os.environ) -> bool:
    """At start-up: trace if the OTEL settings ask for it. Raises TracingConfigError for a
    setting that cannot be honoured. True when tracing is on."""
    error = settings_error(environ)
    if error:
        raise TracingConfigError(error)
    exporters: list[SpanExporter] = []
    for name in _wanted(environ):
        if name == "otlp":
            # Imported only when used: it brings requests and protobuf along.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        else:
            exporters.append(ConsoleSpanExporter())
    if not exporters:
        return False
    configure(
        [BatchSpanProcessor(exporter) for exporter in exporters],
        capture_content=environ.get(CAPTURE_CONTENT, "").strip().lower() == "true",
        make_global=True,
    )
    return True


def configure(
    processors: list[SpanProcessor] | None, *, capture_content: bool = False,
    make_global: bool = False,
) -> TracerProvider | None:
    """Trace through ``processors`` (None: stop tracing). Tests hand in the SDK's in-memory
    exporter; ``make_global`` also gives the provider to the instrumentations (once)."""
    global _provider, _capture
    if _provider is not None:
        _provider.shutdown()
    _capture = capture_content
    instrumentor = DjangoInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    if processors is None:
        _provider = None
        return None
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    _provider = TracerProvider(resource=resource)
    for processor in processors:
        _provider.add_span_processor(processor)
    if make_global:
        trace.set_tracer_provider(_provider)
    # Django's own spans (a span per request, named by its route): its middleware is added to
    # settings.MIDDLEWARE now, so handlers built after this (the ASGI app is built after the
    # apps are ready) carry it.
    instrumentor.instrument(tracer_provider=_provider, is_sql_commentor_enabled=False)
    return _provider


def enabled() -> bool:
    return _provider is not None


def capturing() -> bool:
    """Prompts and answers go into the spans (``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``)."""
    return _provider is not None and _capture


def _tracer() -> trace.Tracer:
    if _provider is None:
        return trace.NoOpTracer()
    return _provider.get_tracer("agentroom.workflows")


def instrument_asgi(app: Any) -> Any:
    """The ASGI app with OpenTelemetry's server spans (HTTP and WebSocket), when tracing
    (Django's own come from ``configure``)."""
    if _provider is None:
        return app
    return OpenTelemetryMiddleware(app, tracer_provider=_provider)


# ----------------------------------------------------------------------------- spans


@contextlib.contextmanager
def run_span(
    *, session_id: str, workflow: str, generation: int, parent: str = ""
) -> Iterator[Span]:
    """The run's span, current while it runs (node spans are its children). ``parent``: the
    traceparent an earlier runner of this run stored: continue its trace, linked to it."""
    context, links = None, []
    if parent:
        context = _propagator.extract({TRACEPARENT: parent})
        earlier = trace.get_current_span(context).get_span_context()
        if earlier.is_valid:
            links = [Link(earlier, {"agentroom.link": "takeover"})]
    with _tracer().start_as_current_span(
        f"{gen_ai.GenAiOperationNameValues.INVOKE_WORKFLOW.value} {workflow}",
        context=context, links=links, kind=SpanKind.INTERNAL, record_exception=False,
        attributes={
            gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.INVOKE_WORKFLOW.value,
            gen_ai.GEN_AI_WORKFLOW_NAME: workflow,
            gen_ai.GEN_AI_CONVERSATION_ID: session_id,
            "agentroom.session_id": session_id,
            "agentroom.lease_generation": generation,
            "agentroom.takeover": bool(parent),
        },
    ) as span:
        yield span


def traceparent(span: Span) -> str:
    """The span's W3C traceparent ("" when not tracing), stored for a runner taking over."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT, "")


def run_ended(span: Span, *, status: str | None, error: str = "") -> None:
    span.set_attribute("agentroom.status", status or "abandoned")
    if error:
        span.set_status(Status(StatusCode.ERROR, error[:200]))


@contextlib.contextmanager
def agent_span(
    *, session_id: str, node_id: str, round_: int, agent_id: str, agent_name: str
) -> Iterator[Span]:
    """One agent round (a node answering once; a rejected answer's retry is another)."""
    with _tracer().start_as_current_span(
        f"{gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value} {agent_name}",
        kind=SpanKind.INTERNAL, record_exception=False,
        attributes={
            gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.INVOKE_AGENT.value,
            gen_ai.GEN_AI_AGENT_ID: agent_id, gen_ai.GEN_AI_AGENT_NAME: agent_name,
            gen_ai.GEN_AI_CONVERSATION_ID: session_id,
            "agentroom.session_id": session_id, "agentroom.node_id": node_id,
            "agentroom.round": round_,
        },
    ) as span:
        yield span


def _usage(span: Span, usage: Usage, cost: Decimal | None) -> None:
    span.set_attributes({
        gen_ai.GEN_AI_USAGE_INPUT_TOKENS: usage.input_tokens,
        gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: usage.cached_input_tokens,
        gen_ai.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: usage.cache_write_tokens,
        gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS: usage.output_tokens,
        gen_ai.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: usage.reasoning_tokens,
        "agentroom.usage_estimated": usage.estimated,
    })
    if cost is not None:  # no price: no cost attribute (never 0)
        span.set_attribute("agentroom.cost_usd", float(cost))


def agent_usage(usage: Usage, cost: Decimal | None) -> None:
    """The round's usage, on the current agent span (called when the round completes)."""
    _usage(trace.get_current_span(), usage, cost)


def agent_failed(error: str, code: str) -> None:
    span = trace.get_current_span()
    span.set_attribute(ERROR_TYPE, code)
    span.set_status(Status(StatusCode.ERROR, error[:200]))


def model_call_start(*, provider: str, request: CompletionRequest) -> Span:
    """A model call's span (ended by ``model_call_end``)."""
    span = _tracer().start_span(
        f"{gen_ai.GenAiOperationNameValues.CHAT.value} {request.model}", kind=SpanKind.CLIENT,
        attributes={
            gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.CHAT.value,
            gen_ai.GEN_AI_PROVIDER_NAME: provider, gen_ai.GEN_AI_REQUEST_MODEL: request.model,
            "agentroom.node_id": request.node_id,
        },
    )
    if _capture and span.is_recording():
        span.set_attribute(gen_ai.GEN_AI_SYSTEM_INSTRUCTIONS,
                           json.dumps([{"type": "text", "content": request.system}]))
        span.set_attribute(gen_ai.GEN_AI_INPUT_MESSAGES, json.dumps(
            [{"role": m.get("role"), "parts": [{"type": "text", "content": m.get("content") or ""}]}
             for m in request.messages]))
    return span


def model_call_end(
    span: Span, *, usage: Usage, cost: Decimal | None, outcome: str, output: str = ""
) -> None:
    _usage(span, usage, cost)
    if outcome != "ok":
        span.set_attribute(ERROR_TYPE, outcome)
        span.set_status(Status(StatusCode.ERROR, outcome))
    if _capture and span.is_recording():
        span.set_attribute(gen_ai.GEN_AI_OUTPUT_MESSAGES, json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": output}]}]))
    span.end()


@contextlib.contextmanager
def tool_span(*, node_id: str, call_id: str, tool: str, arguments: str) -> Iterator[Span]:
    with _tracer().start_as_current_span(
        f"{gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value} {tool}", kind=SpanKind.INTERNAL,
        record_exception=False,
        attributes={
            gen_ai.GEN_AI_OPERATION_NAME: gen_ai.GenAiOperationNameValues.EXECUTE_TOOL.value,
            gen_ai.GEN_AI_TOOL_NAME: tool, gen_ai.GEN_AI_TOOL_CALL_ID: call_id,
            gen_ai.GEN_AI_TOOL_TYPE: "function", "agentroom.node_id": node_id,
        },
    ) as span:
        if _capture:
            span.set_attribute(gen_ai.GEN_AI_TOOL_CALL_ARGUMENTS, arguments)
        yield span


def tool_result(span: Span, *, status: str, result: str, error: str) -> None:
    span.set_attribute("agentroom.tool_status", status)
    if error:
        span.set_attribute(ERROR_TYPE, status)
        span.set_status(Status(StatusCode.ERROR, error[:200]))
    elif _capture:
        span.set_attribute(gen_ai.GEN_AI_TOOL_CALL_RESULT, result)
