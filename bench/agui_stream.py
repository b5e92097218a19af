"""The AG-UI stream workload of ``bench/run.py``: flood and busy over SSE, against WebSockets.

    .venv/bin/python bench/run.py --only agui

The same two workloads as ``flood`` and ``busy`` (same viewer counts, same server, same
load client process count), each run twice in the same run: once with WebSocket viewers of
the room's protocol, once with AG-UI clients reading ``GET /agui/sessions/<id>/events``
(``bench/load_sse.py``). Printed: each row, and SSE / WebSocket as a ratio of events/s and
of p99 latency. Events are our logged events (an SSE ``id:``); latency is receive time minus
the AG-UI ``timestamp`` (publish time), as the envelope ``timestamp`` is for WebSockets.

The flood is paced by acknowledgements, as ``flood`` is: WebSocket viewers send ``ping``s,
AG-UI viewers UDP datagrams to the server (``BENCH_ACK_PORT``); a busy run is started
through ``/bench/start`` (the same command path as a viewer's ``start_session``).
"""

from __future__ import annotations

from typing import Any


class AguiStreamWorkloads:
    """Mixed into ``bench.run.Bench``."""

    args: Any
    results: list[Any]
    summary_lines: list[str]

    def _agui_targets(self, kind: str, port: int, sid: str, n: int, cookie: str,
                      **extra: Any) -> list[dict[str, Any]]:
        if kind == "sse":
            url = f"http://127.0.0.1:{port}/agui/sessions/{sid}/events"
            return [{"kind": "sse", "url": url, "session": sid, "count": n, "cookie": cookie}]
        url = f"ws://127.0.0.1:{port}/ws/sessions/{sid}/"
        return [{"url": url, "session": sid, "count": n, "cookie": cookie, **extra}]

    def w_agui(self) -> None:
        from bench.run import free_port, http_json

        a = self.args
        print(f"[agui] flood ({a.flood_viewers} viewers) and busy ({a.busy_viewers} viewers): "
              "WebSocket and AG-UI SSE", flush=True)
        rows: dict[tuple[str, str], Any] = {}
        for kind in ("websocket", "sse"):
            ack_port = free_port()
            env, fx = self.sqlite_setup(f"agui-flood-{kind}", 1, "bench-solo",
                                        BENCH_ACK_PORT=str(ack_port))
            server = self.django_server(env)
            sid = fx["sessions"][0]
            rows["flood", kind] = self.measure(
                "agui flood", kind, [server],
                self._agui_targets(kind, server.port, sid, a.flood_viewers, fx["cookie"]),
                self.flood_trigger(server.port, sid, a.flood_viewers), procs=a.flood_procs,
                ack_ms=a.ack_ms, ack_port=ack_port)
            self.stop_all()
        for kind in ("websocket", "sse"):
            env, fx = self.sqlite_setup(f"agui-busy-{kind}", 1, "bench-parallel", a.busy_tokens,
                                        SCRIPTED_TOKENS_PER_SECOND="50")
            server = self.django_server(env)
            sid = fx["sessions"][0]
            port = server.port

            def trigger(load: Any, env: dict = env, sid: str = sid, port: int = port) -> Any:
                http_json(port, f"/bench/start?session={sid}")
                done = self.fixtures(env, "wait", "--sessions", sid, "--timeout", "120")
                return done["heads"], {"status": ",".join(sorted(set(done["status"].values())))}

            rows["busy", kind] = self.measure(
                "agui busy", kind, [server],
                self._agui_targets(kind, port, sid, a.busy_viewers, fx["cookie"]),
                trigger, procs=a.procs)
            self.stop_all()
        for workload in ("flood", "busy"):
            ws, sse = rows[workload, "websocket"], rows[workload, "sse"]
            events = f"{sse.ev_s / ws.ev_s:.2f}x" if ws.ev_s else "-"
            p99 = f"{sse.p99 / ws.p99:.2f}x" if ws.p99 else "-"
            self.summary_lines.append(
                f"agui {workload:<6} SSE / WebSocket: events/s {events} ({sse.ev_s:,.0f} vs "
                f"{ws.ev_s:,.0f}), p99 {p99} ({sse.p99} vs {ws.p99} ms), server CPU "
                f"{sse.server_cpu:.0f} vs {ws.server_cpu:.0f} %")
