"""Summarise a py-spy raw profile written by ``bench/run.py --profile DIR``.

    .venv/bin/python bench/profile_summary.py DIR/agents-worker_N=600-worker.txt
    .venv/bin/python bench/profile_summary.py FILE --seconds 20   # as shares of wall time

Prints, for each thread of the worker (the event loop, the run-store thread that every
run write goes through, the event log's insert thread), its share of the samples, split
into time waiting for PostgreSQL (psycopg's wait and send) and the rest; then the share of
the samples under each of ``--functions`` (inclusive) in the run-store thread. Shares are
of all samples; with ``--seconds S`` (the profile's length: ``--profile-seconds``, and
``--profile-idle`` so waiting threads are sampled too) they are of one thread's wall time
(py-spy takes 250 samples a second from each thread). With ``--profile-gil`` the samples
are only those holding the GIL.
"""

from __future__ import annotations

import argparse
import collections
import re
from collections.abc import Iterator

WAITING = ("Connection.wait", "ClientCursorMixin._execute_send", "BaseConnection._exec_command")
DEFAULT_FUNCTIONS = ("claim_runs,run_definitions,run_begin,node_begin,user_messages_before,"
                     "model_price,messages_save_partial,usage_progress_many,node_complete,"
                     "run_finish,renew_leases,release_lease")


def samples(path: str) -> Iterator[tuple[str, int]]:
    """(stack, count) of each line; py-spy's raw lines may carry NUL bytes."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            stack, _, count = line.replace("\x00", "").rstrip().rpartition(" ")
            if stack and count.isdigit():
                yield stack, int(count)


def thread_of(stack: str) -> str:
    if "DatabaseSyncToAsync.thread_handler" in stack:
        return "run-store thread"
    if "_store_in_thread" in stack:
        return "event-log insert thread"
    if "manage.py" in stack.split(";", 1)[0]:
        return "event loop"
    return "other threads (idle pool threads included)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile")
    parser.add_argument("--functions", default=DEFAULT_FUNCTIONS)
    parser.add_argument("--seconds", type=float, default=0,
                        help="the profile's length: shares of one thread's wall time")
    args = parser.parse_args()
    functions = [name for name in args.functions.split(",") if name]
    pattern = {name: re.compile(rf"(^|;){re.escape(name)} \(") for name in functions}
    total = 0
    threads: collections.Counter[tuple[str, bool]] = collections.Counter()
    named: collections.Counter[tuple[str, bool]] = collections.Counter()
    for stack, count in samples(args.profile):
        total += count
        thread = thread_of(stack)
        waiting = any(name in stack for name in WAITING)
        threads[(thread, waiting)] += count
        if thread == "run-store thread":
            for name, regex in pattern.items():
                if regex.search(stack):
                    named[(name, waiting)] += count
                    break
    if not total:
        raise SystemExit("no samples")
    whole = args.seconds * 250 if args.seconds else total
    unit = "of a thread's wall time" if args.seconds else "of all samples"
    print(f"{total} samples; % {unit}")
    print(f"{'thread':45} {'busy %':>7} {'waiting for the database %':>27}")
    for thread in sorted({t for t, _ in threads}):
        busy, wait = threads[(thread, False)], threads[(thread, True)]
        print(f"{thread:45} {100 * (busy + wait) / whole:7.1f} {100 * wait / whole:27.1f}")
    print("\nrun-store thread, by store function")
    for name in functions:
        busy, wait = named[(name, False)], named[(name, True)]
        if busy + wait:
            print(f"  {name:28} {100 * (busy + wait) / whole:6.1f}   waiting {100 * wait / whole:5.1f}")


if __name__ == "__main__":
    main()
