"""Fault scenarios against real processes (tests/reliability/cluster.py): Redis restarted or
its link reset, a web process or the worker SIGKILLed, PostgreSQL cut off, each while runs
stream to viewers on two web processes. Each returns its figures and ``ok``; the tests in
tests/reliability call them with small sizes, bench/faults.py with the recorded ones. The
slow-viewer scenario is in tests/reliability/slow_scenario.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from tests import procs
from tests.reliability.checks import (
    check_viewers,
    consistency_problems,
    first_error_time,
    takeover_problems,
)
from tests.reliability.cluster import Cluster, Web, log
from tests.reliability.definitions import chain_workflow
from tests.reliability.latency import latency_summary
from tests.reliability.viewers import (
    Viewer,
    fresh_snapshot,
    in_thread,
    latency_between,
    start_viewers,
    stop_viewers,
    stopping_viewers,
    wait_viewers,
)


async def _wait_progress(viewers: list[Viewer], seq: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(v.last_seq < seq for v in viewers):
        if time.monotonic() > deadline:
            raise TimeoutError(f"viewers did not reach seq {seq}: {[v.last_seq for v in viewers]}")
        await asyncio.sleep(0.05)


async def _say(viewer: Viewer, text: str, cid: str | None = None) -> None:
    if not await viewer.send("user_input", {"text": text}, cid):
        raise RuntimeError(f"{viewer.name} could not send")


def _delivery_times(viewers: list[Viewer], text: str, since: float) -> list[float]:
    """Seconds from ``since`` until each viewer had the user_message with ``text``."""
    out = []
    for v in viewers:
        for (recv, _, _), env in zip(v.latencies[-len(v.events):], v.events, strict=False):
            if env["event"] == "user_message" and env["data"]["text"] == text:
                out.append(recv - since)
    return out


def _watchers(webs: list[Web], sids: list[str], cookie: str, per_web: int) -> list[Viewer]:
    return [
        Viewer(f"s{i}-w{w}-{k}", webs, sid, cookie, server_index=w)
        for i, sid in enumerate(sids) for w in range(len(webs)) for k in range(per_web)
    ]


async def _watched_runs(cluster: Cluster, webs: list[Web], *, tokens: int, sessions: int,
                        per_web: int) -> tuple[list[str], str, list[Viewer]]:
    """``sessions`` fault-chain runs started, each watched by ``per_web`` viewers per web process:
    (session ids, alice's cookie, the viewers)."""
    data = cluster.setup(
        users=["alice"], workflows=[chain_workflow(tokens)],
        sessions=[{"owner": "alice", "workflow": "fault-chain"} for _ in range(sessions)],
    )
    sids, cookie = data["sessions"], data["cookies"]["alice"]
    viewers = _watchers(webs, sids, cookie, per_web)
    await start_viewers(viewers)
    await in_thread(cluster.start_runs, sids)
    return sids, cookie, viewers


@stopping_viewers
async def scenario_redis(workdir: Path, *, mode: str = "restart", per_web: int = 3, sessions: int = 2,
                         tokens: int = 60, rate: int = 20, outage: float = 3.0,
                         first_joiner: bool = True) -> dict[str, Any]:
    """Redis restarted (``mode="restart"``: our redis-server SIGKILLed and started again empty,
    every group membership lost) or its link reset (``mode="blip"``: TCP proxy cut, Redis
    keeps its data) while runs stream to viewers on two web processes.

    During the outage a command is sent (stored; its broadcast fails), a viewer joins a
    session already watched on its process ("late joiner") and one joins a session nobody
    watched on its process yet ("first joiner": the process must subscribe while Redis is
    down). After it, a command sent through web 0 is timed to the viewers of web 1, and the
    latency of live events is compared with before the outage."""
    result: dict[str, Any] = {"scenario": f"redis-{mode}", "outage_s": outage}
    with Cluster(workdir, redis="private", redis_proxy=(mode == "blip"),
                 env={"SCRIPTED_TOKENS_PER_SECOND": str(rate)}) as cluster:
        webs, _ = cluster.start_processes()
        data = cluster.setup(
            users=["alice"], workflows=[chain_workflow(tokens)],
            sessions=[{"owner": "alice", "workflow": "fault-chain"}
                      for _ in range(sessions + int(first_joiner))],
        )
        sids, cookie = data["sessions"], data["cookies"]["alice"]
        watched = sids[:sessions]
        lonely = sids[-1] if first_joiner else None  # watched by nobody until the outage
        viewers = _watchers(webs, watched, cookie, per_web)
        await start_viewers(viewers)
        await in_thread(cluster.start_runs, sids)
        await _wait_progress(viewers, 8, 30)
        t_cut = time.time()
        if mode == "restart":
            assert cluster.redis is not None
            cluster.redis.kill()
        else:
            assert cluster.redis_proxy is not None
            cluster.redis_proxy.cut()
        log(f"redis {mode}: cut")
        await asyncio.sleep(outage / 2)
        await _say(viewers[0], "said while Redis was down")
        late = Viewer("late-joiner", webs, sids[0], cookie, server_index=1)
        joiners = [late]
        if lonely is not None:
            joiners.append(Viewer("first-joiner", webs, lonely, cookie, server_index=1))
        for joiner in joiners:
            joiner.start()
        await asyncio.sleep(outage / 2)
        if mode == "restart":
            await in_thread(cluster.redis.start)
        else:
            cluster.redis_proxy.restore()
        t_back = time.time()
        log(f"redis {mode}: back")
        await asyncio.sleep(1.0)
        marker = "said after Redis came back"
        marker_at = time.time()
        await _say(viewers[0], marker)
        statuses = await in_thread(cluster.wait_finished, sids, 60)
        heads = {sid: cluster.session(sid)["last_seq"] for sid in sids}
        everyone = [*viewers, *joiners]
        await wait_viewers(everyone, heads, 15)
        snaps = {sid: await fresh_snapshot(webs[1], sid, cookie) for sid in sids}
        check = check_viewers(cluster, everyone, sids, snaps)
        await stop_viewers(everyone)
        on_web1 = [v for v in viewers if v.session_id == sids[0] and v.server_index == 1] + [late]
        before = latency_between(viewers, 0, t_cut)
        after = latency_between(viewers, t_back + 2)
        if lonely is not None:
            first = joiners[-1]
            result["first_joiner"] = {
                "connects": len(first.connected_at), "closes": [c for _, c, _ in first.closes],
                "last_seq": first.last_seq, "head": heads[lonely]}
        result.update(
            statuses=statuses, **check,
            latency_before=latency_summary(before),
            latency_after=latency_summary(after),
            command_after_outage_s=round(max(_delivery_times(on_web1, marker, marker_at), default=-1), 3),
        )
        result["ok"] = (not check["problems"] and all(s == "completed" for s in statuses.values()))
    return result


@stopping_viewers
async def scenario_kill(workdir: Path, *, kill_web: bool = True, kill_worker: bool = False,
                        freeze_worker: bool = False, per_web: int = 3, sessions: int = 2,
                        tokens: int = 60, rate: int = 20,
                        server: str = "daphne") -> dict[str, Any]:
    """SIGKILL, mid-stream, one of two web processes (its viewers reconnect with last_seq to
    the other, as behind a load balancer) and/or the worker running the sessions (a second
    worker takes the runs over once the 2 s lease expired).

    Checked: every viewer ends at the log head, no gap, no duplicate, its folded transcript
    equals the Message rows and a fresh snapshot; no completed node started again; one
    usage row per node and round; session totals = sum of usage rows = execution:completed.

    ``freeze_worker``: SIGSTOP the worker instead of killing it, and SIGCONT it once the second
    worker finished the runs: the thawed worker must store nothing (fencing)."""
    name = "+".join(n for n, on in (("web-kill", kill_web), ("worker-kill", kill_worker),
                                    ("worker-freeze", freeze_worker)) if on)
    kill_worker = kill_worker or freeze_worker
    result: dict[str, Any] = {"scenario": name, "server": server}
    with Cluster(workdir, env={"SCRIPTED_TOKENS_PER_SECOND": str(rate)}) as cluster:
        webs, (worker_a,) = cluster.start_processes((server, server), ("worker-a",))
        sids, cookie, viewers = await _watched_runs(cluster, webs, tokens=tokens, sessions=sessions,
                                                    per_web=per_web)
        t_web = t_worker = None
        victims = [v for v in viewers if v.server_index == 0]
        at_kill: dict[str, int] = {}
        if kill_web:
            await _wait_progress(viewers, 12, 30)
            at_kill = {v.name: v.last_seq for v in victims}
            webs[0].proc.kill()
            t_web = time.time()
            log("web 0 killed")
        before: dict[str, dict[str, dict[str, Any]]] = {}
        if kill_worker:
            def parallel_stage() -> bool:
                return all(
                    sum(1 for n in cluster.node_rows(sid).values() if n["status"] == "running") >= 2
                    for sid in sids
                )

            await in_thread(procs.wait_until, parallel_stage, timeout=30, interval=0.05,
                            what="parallel stage")
            if freeze_worker:
                os.kill(worker_a.pid, signal.SIGSTOP)
            else:
                worker_a.kill()
            t_worker = time.time()
            before = {sid: cluster.node_rows(sid) for sid in sids}  # what the dead worker left
            log("worker-a killed")
            cluster.add_worker("worker-b")
        statuses = await in_thread(cluster.wait_finished, sids, 60)
        t_end = time.time()
        heads = {sid: cluster.session(sid)["last_seq"] for sid in sids}
        if freeze_worker:
            os.kill(worker_a.pid, signal.SIGCONT)
            log("worker-a thawed")
            await asyncio.sleep(3)  # whatever it held has been tried by now
            after = {sid: cluster.session(sid)["last_seq"] for sid in sids}
            result["worker_freeze"] = {
                "events_stored_after_thaw": sum(after[s] - heads[s] for s in sids),
                "thawed_worker_noticed": "taken over" in worker_a.log()
                or "took it over" in worker_a.log(),
            }
        await wait_viewers(viewers, heads, 20)
        snaps = {sid: await fresh_snapshot(webs[1], sid, cookie) for sid in sids}
        check = check_viewers(cluster, viewers, sids, snaps)
        await stop_viewers(viewers)
        problems = check["problems"]
        for sid in sids:
            problems.extend(consistency_problems(cluster, sid))
            if kill_worker:
                problems.extend(takeover_problems(cluster, sid, before[sid]))
        result.update(statuses=statuses, **check)
        if kill_web:
            resumed = [next((t - t_web for t, port in v.connected_at if t > t_web), None) for v in victims]
            resumed = [r for r in resumed if r is not None]
            result["web_kill"] = {
                "moved_viewers": len(resumed), "of": len(victims),
                "reconnect_s_max": round(max(resumed), 2) if resumed else None,
                "events_recovered_per_viewer": round(statistics.mean(
                    sum(1 for recv, seq, _ in v.latencies if seq > at_kill[v.name] and recv > t_web)
                    for v in victims), 1),
            }
        if freeze_worker and result["worker_freeze"]["events_stored_after_thaw"]:
            problems.append(f"the thawed worker stored events: {result['worker_freeze']}")
        if kill_worker:
            takeover = [
                min((first_error_time(cluster, sid, "interrupted") or t_end) - t_worker for _ in [0])
                for sid in sids
            ]
            result["worker_freeze" if freeze_worker else "worker_kill"] = result.get(
                "worker_freeze", {}) | {
                "interrupted_nodes": sorted({n for b in before.values() for n, r in b.items()
                                             if r["status"] == "running"}),
                "completed_before": sorted({n for b in before.values() for n, r in b.items()
                                            if r["status"] == "completed"}),
                "takeover_s_max": round(max(takeover), 2),
                "kill_to_end_s": round(t_end - t_worker, 2),
            }
        result["ok"] = not problems and all(s == "completed" for s in statuses.values())
    return result


@stopping_viewers
async def scenario_postgres(workdir: Path, *, mode: str = "reset", outage: float = 3.0, per_web: int = 2,
                            sessions: int = 2, tokens: int = 80, rate: int = 20,
                            at_seq: int = 20) -> dict[str, Any]:
    """PostgreSQL unreachable for ``outage`` s while runs stream (TCP proxy in front of it
    for every process: ``reset`` = connections reset, ``hang`` = frozen, reset when it
    comes back), then reachable again.

    Checked: the stored rows agree with the event log (no half-state: messages, node and
    session states, usage), viewers end with the log's transcript, and every run ends
    (completed, or failed with an ``error`` event) or goes on when the database is back."""
    result: dict[str, Any] = {"scenario": f"postgres-{mode}", "outage_s": outage}
    with Cluster(workdir, pg_proxy=True, env={"SCRIPTED_TOKENS_PER_SECOND": str(rate)}) as cluster:
        webs, _ = cluster.start_processes()
        sids, cookie, viewers = await _watched_runs(cluster, webs, tokens=tokens, sessions=sessions,
                                                    per_web=per_web)
        await _wait_progress(viewers, at_seq, 30)
        assert cluster.pg_proxy is not None
        cluster.pg_proxy.cut(mode)
        t_cut = time.time()
        log(f"postgres cut ({mode})")
        await asyncio.sleep(outage / 2)
        sent = await viewers[0].send("user_input", {"text": "said while PostgreSQL was down"}, "pg-down")
        await asyncio.sleep(outage / 2)
        cluster.pg_proxy.restore()
        t_back = time.time()
        log("postgres back")
        try:
            statuses = await in_thread(cluster.wait_finished, sids, 60)
        except TimeoutError:
            statuses = {sid: cluster.session(sid)["status"] for sid in sids}
        heads = {sid: cluster.session(sid)["last_seq"] for sid in sids}
        await wait_viewers(viewers, heads, 20)
        snaps = {sid: await fresh_snapshot(webs[1], sid, cookie) for sid in sids}
        check = check_viewers(cluster, viewers, sids, snaps)
        await stop_viewers(viewers)
        consistency = [p for sid in sids for p in consistency_problems(cluster, sid)]
        errors = [(sid[:8], name, d.get("code") or d.get("error"))
                  for sid in sids for _, name, _, d in cluster.stored_events(sid)
                  if name in ("error", "execution:failed")]
        reply = [r["data"] for r in viewers[0].replies if r["data"].get("id") == "pg-down"]
        interrupted = [sid[:8] for sid in sids if first_error_time(cluster, sid, "interrupted")]
        gaps = [b - a for v in viewers
                for (a, _, _), (b, _, _) in zip(v.latencies, v.latencies[1:], strict=False)
                if b > t_cut - 1]
        result.update(
            statuses=statuses, **check, consistency=consistency, logged_errors=errors,
            taken_over_after_outage=interrupted,
            command_during_outage={"sent": sent, "reply": reply[:1]},
            longest_silence_s=round(max(gaps, default=0), 2),
            resumed_s_after_restore=round(min(
                (recv for v in viewers for recv, _, _ in v.latencies if recv > t_back), default=t_back) - t_back, 2),
        )
        ended_cleanly = all(
            s == "completed" or (s == "failed" and any(e[0] == sid[:8] for e in errors))
            for sid, s in statuses.items())
        result["ok"] = not check["problems"] and not consistency and ended_cleanly
    return result


@stopping_viewers
async def scenario_lost_commit(workdir: Path, *, per_web: int = 2, sessions: int = 1,
                               tokens: int = 40, rate: int = 30) -> dict[str, Any]:
    """The reply to a node-boundary write's COMMIT is lost (the TCP proxy resets the worker's
    connection after forwarding the COMMIT of the first transaction that inserts a usage
    row): the write committed, the worker saw an error and retries it.

    Checked: the retry logs nothing twice (one ``completed`` state and one final
    ``token_usage`` per node), rows equal the fold of the log, viewers complete."""
    result: dict[str, Any] = {"scenario": "postgres-lost-commit"}
    with Cluster(workdir, pg_proxy=True, env={"SCRIPTED_TOKENS_PER_SECOND": str(rate)}) as cluster:
        webs, _ = cluster.start_processes()
        assert cluster.pg_proxy is not None
        cluster.pg_proxy.lose_commit_reply(b'INSERT INTO "sessions_app_tokenusage"')
        sids, cookie, viewers = await _watched_runs(cluster, webs, tokens=tokens, sessions=sessions,
                                                    per_web=per_web)
        statuses = await in_thread(cluster.wait_finished, sids, 60)
        heads = {sid: cluster.session(sid)["last_seq"] for sid in sids}
        await wait_viewers(viewers, heads, 20)
        snaps = {sid: await fresh_snapshot(webs[1], sid, cookie) for sid in sids}
        check = check_viewers(cluster, viewers, sids, snaps)
        await stop_viewers(viewers)
        problems = check["problems"]
        repeated: dict[str, int] = {}
        for sid in sids:
            problems.extend(consistency_problems(cluster, sid))
            seen: dict[tuple[str, str | None], int] = {}
            for _, name, node, data in cluster.stored_events(sid):
                if (name == "node_state_change" and data["status"] == "completed") or (
                        name == "token_usage" and data["final"]):
                    seen[(name, node)] = seen.get((name, node), 0) + 1
            repeated.update({f"{sid[:8]} {name} {node}": n
                             for (name, node), n in seen.items() if n > 1})
        if repeated:
            problems.append(f"logged twice: {repeated}")
        lost = cluster.pg_proxy.commit_replies_lost
        if lost != 1:
            problems.append(f"the proxy lost {lost} COMMIT replies, not 1")
        result.update(statuses=statuses, **check, commit_replies_lost=lost, logged_twice=repeated,
                      retried=any("retrying" in w.log() for w in cluster.workers))
        result["ok"] = not problems and all(s == "completed" for s in statuses.values())
    return result
