"""Several processes, one PROMETHEUS_MULTIPROC_DIR: any process's /metrics serves their sum.

Two writer processes record (as a web process and a worker would), a third serves /metrics
through Django's test client; then one writer is killed and the next scrape forgets its
sockets but keeps its counters. Each process is real: prometheus-client picks its mode at
import, from the environment, so this cannot run inside the test process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]

SETUP = (
    "import os, sys; os.environ['DJANGO_SETTINGS_MODULE'] = 'config.settings'\n"
    "import django; django.setup()\n"
    "from realtime import metrics\n"
    "assert metrics.MULTIPROC_DIR, 'not in multi-process mode'\n"
)
WRITER = SETUP + (
    "n = int(sys.argv[1])\n"
    "metrics.events_published(['token_stream'] * n + ['execution:started'])\n"
    "metrics.SOCKETS.inc(n)\n"
    "metrics.VIEWERS.inc(n)\n"
    "metrics.run_finished(status='completed', seconds=n)\n"
    "metrics.observe_model_call(provider='scripted', model='m', seconds=0.3 * n)\n"
    "print('ready', os.getpid(), flush=True)\n"
    "sys.stdin.readline()\n"
)
SCRAPER = SETUP + (
    "from django.test import Client\n"
    "response = Client(REMOTE_ADDR='127.0.0.1').get('/metrics')\n"
    "print(response.status_code)\n"
    "sys.stdout.write(response.content.decode())\n"
)


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"), METRICS_ALLOWED_IPS="127.0.0.1",
               VAR_DIR=str(tmp_path / "var"), DATABASE_URL="", REDIS_URL="")
    return env


def _writer(env: dict[str, str], n: int) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(n)], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line[:1] == ["ready"], f"writer did not start: {line}"
    return proc, int(line[1])


def _scrape(env: dict[str, str]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    result = subprocess.run([sys.executable, "-c", SCRAPER], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    status, _, body = result.stdout.partition("\n")
    assert status == "200", result.stdout
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def _viewers_by_pid(samples: dict[Any, float]) -> dict[int, float]:
    return {int(dict(labels)["pid"]): v for (name, labels), v in samples.items()
            if name == "agentroom_viewers" and v}


def test_two_processes_report_together_and_a_dead_one_stops_counting_sockets(tmp_path):
    env = _env(tmp_path)
    first, first_pid = _writer(env, 2)
    second, second_pid = _writer(env, 3)
    try:
        both = _scrape(env)
        assert both[("agentroom_websocket_connections", ())] == 5
        assert both[("agentroom_events_published_total", (("event", "token_stream"),))] == 5
        assert both[("agentroom_events_published_total", (("event", "execution:started"),))] == 2
        assert both[("agentroom_runs_finished_total", (("status", "completed"),))] == 2
        assert both[("agentroom_run_duration_seconds_sum", (("status", "completed"),))] == 5
        call = (("model", "m"), ("outcome", "ok"), ("provider", "scripted"))
        assert both[("agentroom_model_call_seconds_count", call)] == 2
        assert both[("agentroom_model_call_seconds_bucket", (("le", "0.5"), *call))] == 0
        assert both[("agentroom_model_call_seconds_bucket", (("le", "1.0"), *call))] == 2
        assert _viewers_by_pid(both) == {first_pid: 2, second_pid: 3}  # viewers per process

        first.kill()  # no clean exit: the scrape must notice it is gone
        first.wait(10)
        alone = _scrape(env)
        assert alone[("agentroom_websocket_connections", ())] == 3
        assert _viewers_by_pid(alone) == {second_pid: 3}
        # what a dead process counted stays in the totals (counters never go down)
        assert alone[("agentroom_events_published_total", (("event", "token_stream"),))] == 5
        assert alone[("agentroom_runs_finished_total", (("status", "completed"),))] == 2

        assert second.stdin is not None
        second.stdin.write("\n")  # a clean exit hands its live gauges back itself
        second.stdin.flush()
        assert second.wait(10) == 0
        left = list((tmp_path / "metrics").glob(f"gauge_live*_{second_pid}.db"))
        assert left == []
        assert _scrape(env)[("agentroom_websocket_connections", ())] == 0
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
