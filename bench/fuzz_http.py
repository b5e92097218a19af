"""Fuzz the HTTP doors at scale: the property-based tests of the AG-UI endpoints
(tests/realtime/test_fuzz_agui.py: RunAgentInput, tokens, Last-Event-ID) and of the replay
pages' parameters (tests/sessions_app/test_fuzz_replay.py), with many more generated inputs
than CI runs.

    .venv/bin/python bench/fuzz_http.py [--agui 1000] [--replay 8000]

``--agui`` inputs for each of the two AG-UI tests (runs and watch streams), ``--replay`` for
the replay pages' test: by default 2,000 + 8,000 = 10,000 inputs (an AG-UI input costs about
0.4 s of wall time here, most of it a new event loop per request; a replay one about 0.08 s).

Prints how many inputs were tried, how long it took, and pytest's verdict: any input that got
an undocumented status, a server error, an event that does not parse, or changed stored data
fails with the smallest such input (hypothesis shrinks it). docs/RELIABILITY.md records the run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agui", type=int, default=1000, help="inputs per AG-UI test (2 tests)")
    parser.add_argument("--replay", type=int, default=8000, help="inputs for the replay test")
    args = parser.parse_args()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/realtime/test_fuzz_agui.py",
         "tests/sessions_app/test_fuzz_replay.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, env={**os.environ, "AGUI_FUZZ_EXAMPLES": str(args.agui),
                       "REPLAY_FUZZ_EXAMPLES": str(args.replay)},
    )
    took = time.monotonic() - started
    print(f"fuzz_http: {2 * args.agui + args.replay} generated inputs ({args.agui} x 2 AG-UI, "
          f"{args.replay} replay) in {took:.0f} s: "
          f"{'no failure' if result.returncode == 0 else 'FAILED'}")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
