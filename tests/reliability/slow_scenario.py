"""The slow-viewer scenario: a viewer stops reading while events flood (published from a
separate process through the real publisher), under daphne and uvicorn side by side; and the
close code a frame over WS_MAX_FRAME_BYTES gets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.reliability.checks import check_viewers
from tests.reliability.cluster import Cluster, Web, log
from tests.reliability.definitions import chain_workflow
from tests.reliability.latency import latency_summary
from tests.reliability.viewers import (
    Viewer,
    in_thread,
    latency_between,
    start_viewers,
    stop_viewers,
    stopping_viewers,
    wait_viewers,
)

_FLOOD = textwrap.dedent(
    """
    import asyncio, json, random, string, time
    from realtime.publisher import get_publisher
    SID, N, RATE, CHARS = {sid!r}, {n}, {rate}, {chars}
    rng = random.Random(7)
    WORDS = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(500)]
    def chunk():
        out = []
        while sum(len(w) + 1 for w in out) < CHARS:
            out.append(rng.choice(WORDS))
        return " ".join(out) + " "
    async def main():
        pub = get_publisher()
        futures = []
        t0 = time.monotonic()
        step = max(1, RATE // 100)
        for i in range(0, N, step):
            for _ in range(min(step, N - i)):
                futures.append(pub.publish_nowait(
                    session_id=SID, event="token_stream", node_id="flood",
                    data={{"chunk": chunk(), "agent_id": "flood", "node_id": "flood", "is_thinking": False}}))
            await asyncio.sleep(max(0.0, t0 + (i + step) / RATE - time.monotonic()))
        seqs = await asyncio.gather(*futures)
        print("FLOOD" + json.dumps({{"first": seqs[0], "last": seqs[-1], "n": len(seqs),
                                     "seconds": round(time.monotonic() - t0, 2)}}))
    asyncio.run(main())
    """
)


def flood(cluster: Cluster, sid: str, n: int, rate: int, chars: int = 60) -> dict[str, Any]:
    """Publish ``n`` token_stream events (chunks of ~``chars`` random words) at ``rate``/s
    through the real publisher (batched insert, then Redis) from a separate process."""
    out = cluster.manage_shell(_FLOOD.format(sid=sid, n=n, rate=rate, chars=chars), timeout=600)
    line = next(line for line in out.splitlines() if line.startswith("FLOOD"))
    return json.loads(line[len("FLOOD"):])


class RssSampler:
    """Start and peak RSS of some processes while a block runs (sampled every 0.1 s)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.start = {name: p.memory_info().rss for name, p in self.procs.items()}
        self.peak = dict(self.start)
        self._stop = False
        self._thread: Any = None

    def __enter__(self) -> RssSampler:
        import threading

        def run() -> None:
            while not self._stop:
                for name, proc in self.procs.items():
                    with contextlib.suppress(psutil.Error):
                        self.peak[name] = max(self.peak[name], proc.memory_info().rss)
                time.sleep(0.1)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join(2)

    def growth_mb(self) -> dict[str, float]:
        return {name: round((self.peak[name] - self.start[name]) / 2**20, 1) for name in self.procs}


async def oversize_close(web: Web, session_id: str, cookie: str, size: int, wait: float = 30) -> int | str:
    """Send one text frame of ``size`` bytes; the close code the server answers with."""
    try:
        async with asyncio.timeout(wait), connect(
            f"{web.ws}/ws/sessions/{session_id}/",
            additional_headers={"Cookie": f"sessionid={cookie}", "Origin": web.base},
            open_timeout=10, max_size=None, close_timeout=5, compression=None,
        ) as ws:
            await ws.recv()
            await ws.send(json.dumps({"cmd": "user_input", "data": {"text": "x" * size}}))
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else 1006
    except TimeoutError:
        return f"no close within {wait:g} s"
    except OSError as exc:
        return f"{exc.__class__.__name__}"


@stopping_viewers
async def scenario_slow(workdir: Path, *, servers: tuple[str, ...] = ("uvicorn", "daphne"),
                        fast: int = 3, limit: int = 20000, rate: int = 2000,
                        stall_events: int = 45000, chars: int = 60, heartbeat: float = 15.0,
                        oversize: tuple[str, ...] | bool = True) -> dict[str, Any]:
    """A viewer stops reading while events flood at ``rate``/s, on each server kind at once
    (one web process per kind, ``fast`` normal viewers + one slow viewer on each).

    Phase 1 (control): ``stall_events`` events, everybody reads: the fast viewers' latency
    without a stalled viewer. Phase 2: the same flood while the slow viewers do not read
    (4 KiB socket receive buffer, no compression: the worst case for the server); the fast
    viewers' latency, each server's memory and the slow viewers' close codes are recorded.
    Phase 3: the slow viewers read again; where the limit bit they are closed with 4409 and
    catch up by replay. Every viewer must end at the log head with no gap and no duplicate.
    Then frames over WS_MAX_FRAME_BYTES are sent to each server (``oversize``: True, False
    or the server kinds to try). ``heartbeat``: seconds between the viewers' acknowledging
    pings (the page: 15 s); under daphne only they reveal the stalled reader."""
    result: dict[str, Any] = {"scenario": "slow-viewer", "limit": limit, "rate": rate,
                              "chunk_chars": chars}
    with Cluster(workdir, env={"WS_SEND_BUFFER_EVENTS": str(limit)}) as cluster:
        started, _ = cluster.start_processes(servers, ())
        webs = dict(zip(servers, started, strict=True))
        data = cluster.setup(users=["alice"], workflows=[chain_workflow(10)],
                             sessions=[{"owner": "alice", "workflow": "fault-chain"}])
        sid, cookie = data["sessions"][0], data["cookies"]["alice"]
        fasts = {kind: [Viewer(f"{kind}-fast-{k}", [web], sid, cookie, compression=None,
                               heartbeat=heartbeat)
                        for k in range(fast)] for kind, web in webs.items()}
        slows = {kind: Viewer(f"{kind}-slow", [web], sid, cookie, max_queue=1, rcvbuf=4096,
                              compression=None, heartbeat=heartbeat) for kind, web in webs.items()}
        everyone = [v for group in fasts.values() for v in group] + list(slows.values())
        await start_viewers(everyone)
        log("slow: control flood (everybody reads)")
        base = await in_thread(flood, cluster, sid, stall_events, rate, chars)
        await wait_viewers(everyone, {sid: base["last"]}, 60)
        t_stall = time.time()
        for slow in slows.values():
            slow.reading.clear()
        log("slow: stall flood")
        with RssSampler({kind: web.proc.pid for kind, web in webs.items()}) as rss:
            stall = await in_thread(flood, cluster, sid, stall_events, rate, chars)
            await wait_viewers([v for g in fasts.values() for v in g], {sid: stall["last"]}, 60)
        stalled_at = {kind: slow.last_seq for kind, slow in slows.items()}
        closed_while_stalled = {
            kind: (web.proc.log().count("too slow: closing with 4409") > 0) for kind, web in webs.items()}
        log("slow: resume reading")
        t_resume = time.time()
        for slow in slows.values():
            slow.reading.set()
        caught = {kind: await slow.wait_seq(stall["last"], 120) for kind, slow in slows.items()}
        catch_up = {kind: round(time.time() - t_resume, 2) for kind in slows}
        await asyncio.sleep(0.3)
        check = check_viewers(cluster, everyone, [sid], {}, transcripts=False)  # no Message rows
        await stop_viewers(everyone)
        per_server: dict[str, Any] = {}
        for kind in webs:
            baseline = latency_between(fasts[kind], 0, t_stall)
            during = latency_between(fasts[kind], t_stall)
            slow = slows[kind]
            per_server[kind] = {
                "fast_without_stalled_viewer": latency_summary(baseline),
                "fast_with_stalled_viewer": latency_summary(during),
                "slow_stalled_at_seq": stalled_at[kind],
                "slow_closes": [c for _, c, _ in slow.closes],
                "closed_4409_while_stalled": closed_while_stalled[kind],
                "slow_caught_up": caught[kind], "slow_catch_up_s": catch_up[kind],
                "server_rss_growth_mb": rss.growth_mb()[kind],
            }
        kinds = tuple(webs) if oversize is True else (oversize or ())
        if kinds:
            log("slow: oversize frames")
        for kind in kinds:
            per_server[kind]["oversize_close"] = {
                "100KiB": await oversize_close(webs[kind], sid, cookie, 100 * 1024),
                "2MiB": await oversize_close(webs[kind], sid, cookie, 2 * 2**20),
            }
        result.update(**check, servers=per_server, flood={"control": base, "stall": stall})
        result["ok"] = not check["problems"] and all(caught.values())
    return result
