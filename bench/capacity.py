"""Capacity workloads of ``bench/run.py``: agents per core and event-log ingest.

    .venv/bin/python bench/run.py --only agents          # largest N on run_worker + one web process
    .venv/bin/python bench/run.py --only agents --agents-n 200,400   # only these N
    .venv/bin/python bench/run.py --only agentsembedded  # the same, runs inside the web process
    .venv/bin/python bench/run.py --only ingest          # events/s into PostgreSQL and SQLite

**Agents per core**: N sessions of ``bench-solo`` (one scripted agent streaming at 50 tokens
per second, the default coalescing window), 2 viewers each, all started at once. The runs
execute in one ``manage.py run_worker`` process and the viewers are served by one uvicorn
process, PostgreSQL and Redis on 127.0.0.1 (``agentsembedded``: one process does both). A
trial *holds* when every viewer got every event once (0 lost, 0 duplicated), the p99 of
publish-to-receive latency is under 250 ms, every run completed, the agents kept their pace
(the median session streamed its tokens in at most 1.11x the time they need at 50/s) and at
least 90 % of them streamed at the same time. How long the runs' start and end writes took
is reported beside it (``start_s``, ``end_s``, ``pace`` of the whole session). The search doubles N from ``--agents-start`` while trials
hold, then halves the interval between the last that held and the first that did not.

**Ingest**: one process publishes ``token_stream`` events into 100 sessions through
``realtime.publisher`` (the group-commit path) as fast as the log takes them, for a few
seconds (``bench/ingest.py``); stored rows are counted afterwards and must be gap-free.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
TOKENS_PER_SECOND = 50
P99_LIMIT_MS = 250.0
# The median session's streaming time (first to last token, by the worker's clock) against
# the time its tokens need at 50/s: below this the agents no longer stream at 50 tokens/s,
# whatever the latency of what they did stream. The whole session (its start and end writes
# included) is reported beside it as ``pace``, with ``start_s`` and ``end_s``.
PACE_MIN = 0.9


def session_spans(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Per session: the first and last receive among its viewers; from them the peak number of
    sessions streaming at once and the median session's duration."""
    spans: dict[str, list[float]] = {}
    for report in reports:
        for client in report["clients"]:
            if not client["first"] or not client["last"]:
                continue
            span = spans.setdefault(client["s"], [client["first"], client["last"]])
            span[0] = min(span[0], client["first"])
            span[1] = max(span[1], client["last"])
    edges = sorted([(a, 1) for a, _ in spans.values()] + [(b, -1) for _, b in spans.values()],
                   key=lambda e: (e[0], -e[1]))
    live = peak = 0
    for _, step in edges:
        live += step
        peak = max(peak, live)
    durations = sorted(b - a for a, b in spans.values())
    median = durations[len(durations) // 2] if durations else 0.0
    return {"sessions_seen": len(spans), "peak_concurrent": peak,
            "median_session_s": round(median, 2)}


class CapacityWorkloads:
    """Mixed into ``bench.run.Bench`` (uses its servers, fixtures and ``measure``)."""

    def agents_trial(self, n: int, *, embedded: bool) -> Any:
        a = self.args
        tokens = a.agents_tokens
        ideal = tokens / TOKENS_PER_SECOND
        mode = "embedded" if embedded else "worker"
        env, db = self.pg_env(f"agents_{mode}_{n}", SCRIPTED_TOKENS_PER_SECOND=str(TOKENS_PER_SECOND),
                              WORKFLOW_EXECUTOR=mode, BENCH_MAX_RUNS=str(n + 10))
        try:
            fx = self.fixtures(env, "prepare", "--sessions", str(n), "--workflow", "bench-solo",
                               "--max-tokens", str(tokens))
            servers = []
            if not embedded:
                servers.append(self.start("worker", [PY, "manage.py", "run_worker", "--max-runs",
                                                     str(n + 10)], env, None))
            web = self.django_server(env, name="web")
            servers.insert(0, web)
            targets = [{"url": f"ws://127.0.0.1:{web.port}/ws/sessions/{sid}/", "session": sid,
                        "count": 2, "cookie": fx["cookie"], "starter": True}
                       for sid in fx["sessions"]]
            result = self.measure(
                "agents", f"{mode} N={n}", servers, targets,
                self.run_trigger(env, fx["sessions"], ideal * 4 + 60), procs=a.procs,
                finish_timeout=30, analyse=session_spans,
                note={"agents": n, "tokens": tokens},
            )
        finally:
            self.stop_all()
            if a.keep_db:
                print(f"    kept database {db} (bench/start_timeline.sql reads it)", flush=True)
            else:
                self.pg_drop(db)
        x = result.extra
        x["pace"] = round(ideal / x["median_session_s"], 2) if x.get("median_session_s") else 0
        x["stream_pace"] = round(ideal / x["stream_s"], 2) if x.get("stream_s") else 0
        checks = {
            "p99<250": result.p99 is not None and result.p99 < P99_LIMIT_MS,
            "0 lost": result.lost == 0 and result.viewers == 2 * n,
            "0 dup": result.dups == 0,
            "completed": x.get("status") == "completed",
            "pace": x["stream_pace"] >= PACE_MIN,
            # streaming tokens at the same moment (by the log's publish times), not merely
            # connected and waiting for their run's first token
            "concurrent": x.get("peak_streaming", 0) >= 0.9 * n,
        }
        x["failed"] = [name for name, ok in checks.items() if not ok]
        x["holds"] = not x["failed"]
        print(f"    N={n} {mode}: {'holds' if x['holds'] else 'fails: ' + ', '.join(x['failed'])}"
              f" (p99 {result.p99} ms, pace {x['pace']} (streaming {x['stream_pace']}),"
              f" streaming at once {x.get('peak_streaming')},"
              f" CPU {x.get('cpu_by_process')})", flush=True)
        return result

    def agents_search(self, *, embedded: bool) -> None:
        a = self.args
        mode = "embedded" if embedded else "worker"
        print(f"[agents] {mode}: one-agent sessions at {TOKENS_PER_SECOND} tok/s x "
              f"{a.agents_tokens} tokens, 2 viewers each, PostgreSQL + Redis", flush=True)
        if a.agents_n:
            for n in (int(v) for v in a.agents_n.split(",")):
                self.agents_trial(n, embedded=embedded)
            return
        held, failed = 0, 0
        n = a.agents_start
        while n <= a.agents_max:
            if self.agents_trial(n, embedded=embedded).extra["holds"]:
                held = n
                n *= 2
            else:
                failed = n
                break
        for _ in range(a.agents_refine):
            if not failed or failed - held <= max(10, held // 10):
                break
            n = (held + failed) // 2
            if self.agents_trial(n, embedded=embedded).extra["holds"]:
                held = n
            else:
                failed = n
        print(f"  agents per process ({mode}): largest N that held = {held}"
              f"{f', first that failed = {failed}' if failed else ''}", flush=True)
        self.summary_lines.append(f"agents {mode:<8} largest N that held: {held}"
                                  f"{f' (failed at {failed})' if failed else ''}")

    def w_agents(self) -> None:
        self.agents_search(embedded=False)

    def w_agentsembedded(self) -> None:
        self.agents_search(embedded=True)

    def w_ingest(self) -> None:
        from bench.run import Result, row

        a = self.args
        print(f"[ingest] events/s into the log, one process, {a.ingest_seconds}s", flush=True)
        for label in ("postgresql", "sqlite"):
            if label == "postgresql":
                env, db = self.pg_env("ingest")
            else:
                var_dir = self.work / "ingest-sqlite"
                var_dir.mkdir(exist_ok=True)
                env, db = self.django_env(var_dir), ""
            try:
                fx = self.fixtures(env, "prepare", "--sessions", "100", "--workflow", "bench-solo")
                sessions = ",".join(fx["sessions"])
                out = subprocess.run(
                    [PY, str(ROOT / "bench" / "ingest.py"), "--sessions", sessions,
                     "--seconds", str(a.ingest_seconds)],
                    cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
                if out.returncode:
                    raise RuntimeError(out.stderr[-3000:])
                got = json.loads(out.stdout.strip().splitlines()[-1])
            finally:
                if db:
                    self.pg_drop(db)
            result = Result(workload="ingest", system=label, events=got["stored"],
                            seconds=got["seconds"], ev_s=got["events_per_s"],
                            lost=got["published"] - got["stored"], dups=got["duplicates"],
                            server_cpu=got["cpu_percent"], extra=got)
            self.results.append(result)
            print("  " + row(result), flush=True)

    def w_replaybrowser(self) -> None:
        """The replay page over a long log in headless Chromium (bench/replay_browser.py):
        time to the first frame, to seek to the end, and the rest of its medians."""
        from bench.run import Result, row

        a = self.args
        print(f"[replaybrowser] {a.replay_browser_events:,} events, 3 page loads", flush=True)
        out = subprocess.run(
            [PY, str(ROOT / "bench" / "replay_browser.py"), "--events",
             str(a.replay_browser_events), "--runs", "3"],
            cwd=ROOT, capture_output=True, text=True, timeout=1800)
        if out.returncode:
            raise RuntimeError(out.stderr[-3000:])
        text = out.stdout
        got = json.loads(text[text.index("{"): text.rindex("}") + 1])
        runs = got["runs"]
        medians = {key: sorted(r[key] for r in runs)[len(runs) // 2] for key in runs[0]}
        result = Result(workload="replay browser", system="chromium", viewers=1,
                        events=got["events"], extra={k: round(v) for k, v in medians.items()})
        self.results.append(result)
        print("  " + row(result), flush=True)
