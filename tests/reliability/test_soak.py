"""A tiny soak (tests/reliability/soak_core.py, which bench/soak.py runs at full size): 50
sockets on 5 sessions for 20 s, workflows running, two daphne processes, a worker, Redis and a
throwaway PostgreSQL database. The full one (1,000 sockets, 20 sessions, 10 minutes) is
recorded in docs/RELIABILITY.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability.backends import check_shared_redis
from tests.reliability.soak_core import soak


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_tiny_soak_loses_nothing(tmp_path: Path) -> None:
    check_shared_redis()
    result = await soak(sockets=50, sessions=5, seconds=20, rate=8, workdir=tmp_path, warmup=8,
                        say_every=6)
    print("\n" + json.dumps(result, default=str))
    assert result["connected"] == 50
    assert result["lost"] == 0 and result["duplicates"] == 0
    assert result["closes"] == [] and result["reconnects"] == 0
    assert result["transcript_problems"] == []
    assert result["all_completed"] and result["said"] >= 5
    assert result["log_errors_unexpected"] == {}  # known bugs (xfail tests) aside
    # 20 s is no memory soak (that is the 10-minute run); this only catches a gross leak
    for name, memory in result["memory"].items():
        if name.startswith("web"):
            assert memory["growth_pct"] < 20, result["memory"]
