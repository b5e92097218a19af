"""Fuzz the HTTP doors at scale: the property-based tests of the AG-UI endpoints
(tests/realtime/test_fuzz_agui.py: RunAgentInput, tokens, Last-Event-ID) and of the replay
pages' parameters (tests/sessions_app/test_fuzz_replay.py), with many more generated inputs
than CI runs (default 5,000 per test: 15,000 in all).

    .venv/bin/python bench/fuzz_http.py [--examples 5000]

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
    parser.add_argument("--examples", type=int, default=5000, help="inputs per test (3 tests)")
    args = parser.parse_args()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/realtime/test_fuzz_agui.py",
         "tests/sessions_app/test_fuzz_replay.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT, env={**os.environ, "AGUI_FUZZ_EXAMPLES": str(args.examples),
                       "REPLAY_FUZZ_EXAMPLES": str(args.examples)},
    )
    took = time.monotonic() - started
    print(f"fuzz_http: {3 * args.examples} generated inputs in {took:.0f} s: "
          f"{'no failure' if result.returncode == 0 else 'FAILED'}")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
