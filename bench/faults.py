"""Fault injection against real processes: does the product keep its promises when things break?

    .venv/bin/python bench/faults.py                         # every scenario, report + JSON
    .venv/bin/python bench/faults.py --only redis,web-kill   # some of them
    .venv/bin/python bench/faults.py --quick                 # the sizes the CI tests use
    .venv/bin/python bench/faults.py --json var/faults.json  # also write the figures

Scenarios (each starts its own processes on free ports, a throwaway PostgreSQL database and,
where it needs one, a private ``redis-server``; everything is stopped and dropped at the end):

  redis         Redis restarted mid-run (private redis-server, SIGKILL, no persistence: the
                restarted server has lost every group membership), viewers on two web
                processes; also a client connecting *during* the outage.
  redis-blip    The link to Redis reset for a few seconds (TCP proxy; Redis keeps its data).
  web-kill      One of two web processes SIGKILLed mid-stream; its viewers reconnect to the other.
  worker-kill   The run's worker SIGKILLed mid-run; a second worker takes over (viewers watch).
  worker-freeze The run's worker SIGSTOPped mid-run past its lease; a second worker takes over
                and finishes; the first is SIGCONTed: it must store nothing (fencing).
  slow          A viewer that stops reading while events flood, under daphne and uvicorn: other
                viewers' latency, the 4409 close, server memory, catch-up by replay.
  postgres      PostgreSQL unreachable for a few seconds mid-run (TCP proxy in front of it).
  postgres-lost-commit  The reply to a node-boundary write's COMMIT lost (the proxy resets the
                connection after forwarding the COMMIT): the retried write logs nothing twice.
  takeover-test Runs tests/workflows/test_takeover.py's real-process test and quotes its line.
  tool-worker-kill  A worker SIGKILLed while its agent's MCP tool runs (real run_worker
                processes, PostgreSQL, Redis): the call is shown interrupted, the node re-runs,
                the orphaned MCP server exits (tests/workflows/test_takeover.py, quoted).

Every viewer is a ``websockets`` client that checks each logged event's ``seq`` (no gap, no
duplicate), reconnects with ``?last_seq=N`` after any close (to the other web process if its
own is gone, as a load balancer would), and folds what it received with ``realtime.state.fold``;
at the end its transcript is compared with the stored ``Message`` rows and with a fresh
snapshot from the server. The scenarios live in tests/reliability (scenarios.py,
slow_scenario.py and the modules they use); the CI tests there call the same functions with
small sizes and assert on the same figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import procs  # noqa: E402
from tests.reliability.cluster import CLUSTER_DEFAULTS, log  # noqa: E402
from tests.reliability.scenarios import (  # noqa: E402
    scenario_kill,
    scenario_lost_commit,
    scenario_postgres,
    scenario_redis,
)
from tests.reliability.slow_scenario import scenario_slow  # noqa: E402


def run_takeover_test(
    test: str = "tests/workflows/test_takeover.py::test_sigkilled_worker_is_taken_over_after_its_lease_expires",
    marker: str = "take-over:", scenario: str = "takeover-test",
) -> dict[str, Any]:
    """A real-process test of tests/workflows/test_takeover.py (SIGKILLed run_worker against
    PostgreSQL + Redis), run with pytest; its summary line is quoted."""
    t0 = time.monotonic()
    proc = subprocess.run([procs.PYTHON, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", test],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=procs.child_env())
    line = next((ln.strip() for ln in proc.stdout.splitlines() if marker in ln), "")
    return {"scenario": scenario, "test": test, "ok": proc.returncode == 0,
            "summary": line, "seconds": round(time.monotonic() - t0, 1),
            "output_tail": "" if proc.returncode == 0 else proc.stdout[-2000:]}


# ============================================================================ command line

SCENARIOS: dict[str, Callable[[Path, bool], Any]] = {
    "redis": lambda wd, quick: scenario_redis(wd, mode="restart", **({"tokens": 30, "rate": 30, "outage": 2}
                                                                       if quick else {})),
    "redis-blip": lambda wd, quick: scenario_redis(wd, mode="blip", **({"tokens": 30, "rate": 30, "outage": 2}
                                                                         if quick else {})),
    "web-kill": lambda wd, quick: scenario_kill(wd, kill_web=True, **({"tokens": 30, "rate": 30} if quick else {})),
    "worker-kill": lambda wd, quick: scenario_kill(wd, kill_web=False, kill_worker=True,
                                                   **({"tokens": 30, "rate": 30} if quick else {})),
    "worker-freeze": lambda wd, quick: scenario_kill(wd, kill_web=False, freeze_worker=True,
                                                     **({"tokens": 30, "rate": 30} if quick else {})),
    "slow": lambda wd, quick: scenario_slow(wd, **({"limit": 2500, "chars": 400, "stall_events": 11000,
                                                   "rate": 2000, "fast": 2} if quick else {})),
    "postgres": lambda wd, quick: scenario_postgres(wd, mode="reset", **({"tokens": 40, "rate": 30}
                                                                         if quick else {})),
    "postgres-hang": lambda wd, quick: scenario_postgres(wd, mode="hang", **({"tokens": 40, "rate": 30}
                                                                             if quick else {})),
    "postgres-blip": lambda wd, quick: scenario_postgres(wd, mode="reset", outage=0.4,
                                                         **({"tokens": 40, "rate": 30} if quick else {})),
    "postgres-lost-commit": lambda wd, quick: scenario_lost_commit(
        wd, **({"tokens": 30, "rate": 40, "per_web": 1} if quick else {})),
    "takeover-test": None,  # type: ignore[dict-item]
    "tool-worker-kill": None,  # type: ignore[dict-item]
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="", help="comma-separated scenario names: " + ", ".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="the small sizes of the CI tests")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--repeat", type=int, default=1, help="run each scenario this many times")
    parser.add_argument("--layer", choices=("core", "pubsub"), default="pubsub",
                        help="CHANNEL_LAYER of every process: channels_redis's pub/sub layer "
                             "(the project's default) or its core layer")
    parser.add_argument("--redis-options", default="", help='query string for REDIS_URL, e.g. '
                        '"max_connections=1000&socket_timeout=15"')
    args = parser.parse_args()
    CLUSTER_DEFAULTS.update(layer=args.layer, redis_options=args.redis_options)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    results = []
    for name in names:
        for _ in range(args.repeat):
            t0 = time.monotonic()
            log(f"=== {name}")
            if name == "takeover-test":
                result = run_takeover_test()
            elif name == "tool-worker-kill":
                result = run_takeover_test(
                    "tests/workflows/test_takeover.py::"
                    "test_a_worker_sigkilled_while_a_tool_runs_is_taken_over_and_the_call_shown_interrupted",
                    marker="tool take-over:", scenario="tool-worker-kill")
            else:
                with tempfile.TemporaryDirectory(prefix=f"faults-{name}-") as tmp:
                    try:
                        result = asyncio.run(SCENARIOS[name](Path(tmp), args.quick))
                    except Exception as exc:  # a scenario that crashed is a failed scenario
                        result = {"scenario": name, "ok": False, "crashed": repr(exc)}
            result["seconds"] = round(time.monotonic() - t0, 1)
            results.append(result)
            print(json.dumps(result, default=str), flush=True)
    command = "bench/faults.py " + " ".join(sys.argv[1:])
    print(f"\n{'scenario':<28} {'ok':<5} seconds   ({command.strip()})", file=sys.stderr)
    for r in results:
        print(f"{r['scenario']:<28} {('yes' if r['ok'] else 'NO'):<5} {r['seconds']:>7}"
              + (f"   problems: {r.get('problems') or r.get('consistency') or r.get('crashed')}"
                 if not r["ok"] else ""), file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command.strip(), "results": results}, indent=1, default=str))
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
