"""Every Prometheus metric of the deployment, defined once, and the text ``/metrics`` serves.

Why here: ``realtime`` is the lowest layer, so the hub, the engine and the services can all
record into the same objects without an import pointing upward (``docs/operations.md`` says
what each metric means and which alerts are worth having).

Two modes, chosen when this module is imported, as prometheus-client chooses them:

- ``PROMETHEUS_MULTIPROC_DIR`` set (``bin/prod`` sets it): every process (each uvicorn web
  process, each ``run_worker``) writes its samples to memory-mapped files in that directory,
  and whichever web process answers a scrape serves the sum of all of them. The variable must
  be in the environment before the process starts (prometheus-client reads it at import),
  and the directory emptied when the deployment starts. Gauges say how processes combine
  (``multiprocess_mode``): ``livesum`` adds the live processes, ``liveall`` keeps one series
  per process (a ``pid`` label). A process that ended is forgotten by the next scrape
  (``mark_process_dead``), so its sockets stop counting; its counters stay in the totals.
  The directory is per host and PID namespace: a scrape tests liveness by PID.
- unset (tests, ``bin/serve``, ``runserver``): a registry of this process, nothing to set up.

Hot paths stay cheap: nothing here is called per token or per recipient; callers count per
batch (one ``inc(n)`` per flush, per write of a socket's frames, per node boundary).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import re
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from enum import StrEnum

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if MULTIPROC_DIR:  # before any metric is made: each one opens its file at construction
    os.makedirs(MULTIPROC_DIR, exist_ok=True)

from prometheus_client import (  # noqa: E402 (the directory must exist first)
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

from realtime.protocol import LOGGED_EVENTS  # noqa: E402
from realtime.vocabulary import FINISHED_SESSION_STATUSES, NodeStatus, TokenType  # noqa: E402

NAMESPACE = "agentroom"

# This process's own registry: in multi-process mode scrapes read the files instead (the
# documented way: metrics registered to the registry a MultiProcessCollector serves would
# appear twice).
REGISTRY = CollectorRegistry(auto_describe=True)
if not MULTIPROC_DIR:
    ProcessCollector(registry=REGISTRY)  # memory, CPU, open files (no meaning across processes)


class CallOutcome(StrEnum):
    """How a model call ended (the ``outcome`` label of the model-call latency)."""

    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"


class GapSource(StrEnum):
    """Where the hub noticed events it had not been sent (the ``source`` label of refills)."""

    LAYER = "layer"  # a layer message arrived whose first seq was beyond the process's head
    TAIL = "tail"  # the periodic tail check found events nobody broadcast
    VIEWER = "viewer"  # one viewer's own gap (it joined or refilled in between)


def _name(name: str) -> str:
    return f"{NAMESPACE}_{name}"


# ----------------------------------------------------------------------------- sockets

SOCKETS = Gauge(
    _name("websocket_connections"),
    "WebSocket connections open, from the handshake to the disconnect (refused ones briefly too).",
    multiprocess_mode="livesum", registry=REGISTRY,
)
SSE_STREAMS = Gauge(
    _name("sse_streams"),
    "Server-sent event streams open (the AG-UI endpoint; 0 until it exists).",
    multiprocess_mode="livesum", registry=REGISTRY,
)
VIEWERS = Gauge(
    _name("viewers"),
    "Viewers attached to this process's hub (authorised sockets receiving a session); "
    "one series per process in multi-process mode.",
    multiprocess_mode="liveall", registry=REGISTRY,
)
SOCKET_CLOSES = Counter(
    _name("socket_closes"),
    "Sockets the server closed, by close code (4409: a slow viewer; all codes in "
    "docs/protocol.md).",
    ["code"], registry=REGISTRY,
)

# ----------------------------------------------------------------------------- events

EVENTS_PUBLISHED = Counter(
    _name("events_published"),
    "Events committed to the event log, by event name.",
    ["event"], registry=REGISTRY,
)
EVENTS_DELIVERED = Counter(
    _name("events_delivered"),
    "Event frames written to sockets, each event of a batch counted (snapshots, replays and "
    "replies included).",
    registry=REGISTRY,
)
MESSAGES_SENT = Counter(
    _name("websocket_messages_sent"),
    "WebSocket messages sent (a batch frame is one): delivered / sent is the batching factor.",
    registry=REGISTRY,
)
REPLAYS = Counter(
    _name("replays"),
    "Reconnects served the events they missed from the log (last_seq within reach).",
    registry=REGISTRY,
)
SNAPSHOTS = Counter(
    _name("snapshots"),
    "Connections started from a snapshot; resync=true: a reconnect too far behind to replay.",
    ["resync"], registry=REGISTRY,
)
GAP_REFILLS = Counter(
    _name("gap_refills"),
    "Seq gaps refilled from the event log (a lost or reordered layer message, an outage).",
    ["source"], registry=REGISTRY,
)

# ----------------------------------------------------------------------------- runs

RUNS_FINISHED = Counter(
    _name("runs_finished"),
    "Workflow runs that ended, by final session status.",
    ["status"], registry=REGISTRY,
)
RUN_SECONDS = Histogram(
    _name("run_duration_seconds"),
    "Wall-clock time from a run's start to its end (pauses, reviews and take-overs included).",
    ["status"], registry=REGISTRY,
    buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400),
)
NODE_SECONDS = Histogram(
    _name("node_duration_seconds"),
    "Time an agent node's round took, from its start to completed or failed.",
    ["status"], registry=REGISTRY,
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)
MODEL_CALL_SECONDS = Histogram(
    _name("model_call_seconds"),
    "Duration of one model call, from the request to the end of its stream.",
    ["provider", "model", "outcome"], registry=REGISTRY,
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)
MODEL_FIRST_TOKEN_SECONDS = Histogram(
    _name("model_first_token_seconds"),
    "Time from a model request to its first streamed chunk (what a viewer waits for).",
    ["provider", "model"], registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60),
)
TOKENS = Counter(
    _name("tokens"),
    "Tokens of completed agent nodes, by type (input, cached_input and cache_write are of "
    "input; output and reasoning, of output: do not add them up) and model.",
    ["type", "model"], registry=REGISTRY,
)
COST = Counter(
    _name("cost_usd"),
    "Cost in US dollars of completed agent nodes, by model (as the usage rows record it; "
    "usage without a known price counts in agentroom_unpriced_tokens_total instead).",
    ["model"], registry=REGISTRY,
)
UNPRICED_TOKENS = Counter(
    _name("unpriced_tokens"),
    "Tokens (input and output) of completed agent nodes whose model had no known price.",
    ["model"], registry=REGISTRY,
)
TAKEOVERS = Counter(
    _name("lease_takeovers"),
    "Runs a runner continued after another runner's lease ended (a crash, a lost lease or "
    "a shutdown).",
    registry=REGISTRY,
)

# Series that exist from the start (at 0), so that rate() and alerts see them before the
# first increment. Label values the callers pass come from the same vocabularies.
for _event in LOGGED_EVENTS:
    EVENTS_PUBLISHED.labels(event=str(_event))
for _status in FINISHED_SESSION_STATUSES:
    RUNS_FINISHED.labels(status=str(_status))
for _source in GapSource:
    GAP_REFILLS.labels(source=str(_source))
SOCKET_CLOSES.labels(code="4409")
_GAP = {source: GAP_REFILLS.labels(source=str(source)) for source in GapSource}
_SNAPSHOT = {True: SNAPSHOTS.labels(resync="true"), False: SNAPSHOTS.labels(resync="false")}


# ----------------------------------------------------------------------------- recording
# Small functions so that callers name what happened, not how it is counted.


@contextlib.contextmanager
def open_socket() -> Iterator[None]:
    """Around a WebSocket consumer's whole life (also when it is cancelled)."""
    SOCKETS.inc()
    try:
        yield
    finally:
        SOCKETS.dec()


@contextlib.contextmanager
def open_sse_stream() -> Iterator[None]:
    """Around a server-sent event stream's whole life (for the AG-UI endpoint)."""
    SSE_STREAMS.inc()
    try:
        yield
    finally:
        SSE_STREAMS.dec()


def socket_closed(code: int) -> None:
    SOCKET_CLOSES.labels(code=str(code)).inc()


def events_published(names: Iterable[str]) -> None:
    """One committed batch: one increment per distinct event name, not per event."""
    for name, count in Tally(names).items():
        EVENTS_PUBLISHED.labels(event=name).inc(count)


def frames_sent(*, events: int, messages: int) -> None:
    """One write of a socket's waiting frames (``events`` frames in ``messages`` messages)."""
    EVENTS_DELIVERED.inc(events)
    MESSAGES_SENT.inc(messages)


def connection_started(*, replay: bool, resync: bool = False) -> None:
    if replay:
        REPLAYS.inc()
    else:
        _SNAPSHOT[resync].inc()


def gap_refilled(source: GapSource) -> None:
    _GAP[source].inc()


def run_finished(*, status: str, seconds: float | None) -> None:
    RUNS_FINISHED.labels(status=status).inc()
    if seconds is not None:
        RUN_SECONDS.labels(status=status).observe(seconds)


def node_finished(
    *, status: str, seconds: float | None, model: str = "",
    tokens: dict[TokenType, int] | None = None, cost_usd: float | None = 0.0,
) -> None:
    """An agent node's round ended (``NodeStatus.COMPLETED`` or ``FAILED``) with its usage
    by token type (a cost of None: the model has no known price)."""
    if seconds is not None:
        NODE_SECONDS.labels(status=status).observe(seconds)
    if status != NodeStatus.COMPLETED:
        return
    tokens = tokens or {}
    for kind, count in tokens.items():
        TOKENS.labels(type=kind, model=model).inc(count)
    if cost_usd is None:
        UNPRICED_TOKENS.labels(model=model).inc(
            tokens.get(TokenType.INPUT, 0) + tokens.get(TokenType.OUTPUT, 0))
    else:
        COST.labels(model=model).inc(cost_usd)


def observe_model_call(
    *, provider: str, model: str, seconds: float, first_token_seconds: float | None = None,
    outcome: CallOutcome = CallOutcome.OK,
) -> None:
    """The engine calls this once per model call, when its stream ended (or failed, or was
    cancelled): ``seconds`` from the request to the end, ``first_token_seconds`` to the first
    chunk if one came."""
    MODEL_CALL_SECONDS.labels(provider=provider, model=model, outcome=outcome).observe(seconds)
    if first_token_seconds is not None:
        MODEL_FIRST_TOKEN_SECONDS.labels(provider=provider, model=model).observe(first_token_seconds)


def run_taken_over() -> None:
    TAKEOVERS.inc()


# ----------------------------------------------------------------------------- exposition

_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]+_(\d+)\.db$")


def _forget_dead_processes(path: str) -> None:
    """Drop the live gauges of processes that ended (killed, restarted by a supervisor)."""
    for pid in {int(m.group(1)) for f in glob.glob(os.path.join(path, "gauge_live*_*.db"))
                if (m := _LIVE_GAUGE_FILE.search(f))}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, path)
        except PermissionError:
            pass  # alive, another user's


def render() -> tuple[bytes, str]:
    """(body, content type) of a scrape: this process's registry, or every process's files."""
    if MULTIPROC_DIR:
        _forget_dead_processes(MULTIPROC_DIR)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


if MULTIPROC_DIR:
    # A clean exit hands back its live gauges at once; a killed process's go at the next scrape.
    atexit.register(lambda: multiprocess.mark_process_dead(os.getpid(), MULTIPROC_DIR))
