"""Fuzz the AG-UI endpoints at scale: the property-based tests of tests/realtime/test_fuzz_agui.py
with many more generated inputs than CI runs (default 5,000 per test: 10,000 in all).

    .venv/bin/python bench/fuzz_agui.py [--examples 5000]

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
    parser.add_argument("--examples", type=int, default=5000, help="inputs per test (2 tests)")
    args = parser.parse_args()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/realtime/test_fuzz_agui.py", "-q", "-p", "no:cacheprovider",
         "--hypothesis-show-statistics"],
        cwd=ROOT, env={**os.environ, "AGUI_FUZZ_EXAMPLES": str(args.examples)},
    )
    took = time.monotonic() - started
    print(f"fuzz_agui: {2 * args.examples} generated inputs in {took:.0f} s: "
          f"{'no failure' if result.returncode == 0 else 'FAILED'}")
    return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
