"""Latency figures: percentiles of a list of seconds, and the per-millisecond histogram the
load client (bench/load.py) fills and its drivers (bench/run.py, the soak) merge."""

from __future__ import annotations

from typing import Any


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 1)


def latency_summary(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_ms": ms(pct(values, 50)), "p99_ms": ms(pct(values, 99)),
            "max_ms": ms(max(values)) if values else None}


HIST_MS = 60_000  # latencies above 60 s fall in the last bucket


class Histogram:
    """Counts per millisecond of latency (the envelope timestamp has 1 ms resolution)."""

    __slots__ = ("counts", "n", "top")

    def __init__(self) -> None:
        self.counts = [0] * (HIST_MS + 1)
        self.n = 0
        self.top = 0.0

    def merge_sparse(self, sparse: dict[str, int]) -> None:
        for key, value in sparse.items():
            self.counts[int(key)] += value
            self.n += value

    def sparse(self) -> dict[str, int]:
        return {str(i): c for i, c in enumerate(self.counts) if c}

    def percentile(self, p: float) -> float | None:
        if not self.n:
            return None
        rank = p / 100.0 * self.n
        seen = 0
        for ms, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return float(ms)
        return float(HIST_MS)
