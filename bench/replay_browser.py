"""Replay of a long session in headless Chromium: time to first frame, to load everything, to
seek to the end and back, and how smooth playback stays (docs/PERFORMANCE.md, "Replay").

    .venv/bin/python bench/replay_browser.py [--events 100000] [--runs 3]

A session's log is filled directly (realtime.eventlog.store_events, the publisher's own
insert) with a demo-like mix: 8 nodes, three in parallel, ~92 % token_stream chunks of a few
words, usage every 100 events, a 10-minute review wait (an idle stretch the timeline
compresses), then the page is opened at /sessions/<id>/replay/ by a logged-in Chromium
(daphne, SQLite, the same server the browser tests use).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.e2e.conftest import ARGS, CHROMIUM, PASSWORD  # noqa: E402
from tests.servers import create_user, daphne, manage, server_env  # noqa: E402

FILL = """
import datetime, json
from realtime.eventlog import PendingEvent, store_events
from sessions_app import services
from django.contrib.auth import get_user_model
N = {n}
s = services.session_create(owner=get_user_model().objects.get(username='alice'), workflow_slug='demo',
                            title='Long meeting')
sid = str(s.pk)
t = datetime.datetime(2026, 11, 24, 10, 0, tzinfo=datetime.UTC)
nodes = ['brief', 'research', 'market', 'tech', 'risk', 'merge', 'summary']
agents = dict(brief='moderator', research='researcher', market='analyst', tech='engineer',
              risk='risk_officer', merge='editor', summary='secretary')
batch, seq = [], 0
def add(event, data, node=None, ms=50):
    global t, seq
    t += datetime.timedelta(milliseconds=ms)
    seq += 1
    batch.append(PendingEvent(sid, event, data, node, t))
    if len(batch) >= 2000:
        store_events(batch); batch.clear()
add('execution:started', dict(workflow='demo', nodes=nodes + ['review']))
per_node = (N - 40) // len(nodes)
cost = 0.0
for phase in (['brief'], ['research'], ['market', 'tech', 'risk'], ['merge'], ['summary']):
    if phase == ['summary']:
        add('human_interaction_required', dict(node_id='review', reason='Check', timeout=None), 'review')
        add('review_submitted', dict(node_id='review', decision='approve', comment='ok', by='alice',
                                     timed_out=False), 'review', ms=600_000)
        add('node_state_change', dict(node_id='review', status='completed'), 'review')
        add('node_resumed', dict(node_id='review'), 'review')
    for node in phase:
        add('node_state_change', dict(node_id=node, status='running', agent_id=agents[node]), node)
    for i in range(per_node * len(phase)):
        node = phase[i % len(phase)]
        if i % 100 == 99:
            cost += 0.00001
            add('token_usage', dict(node_id=node, agent_id=agents[node], model='scripted-small',
                input_tokens=100, output_tokens=i // len(phase), estimated_cost_usd=cost, final=False,
                session_input_tokens=100, session_output_tokens=i, session_cost_usd=cost), node)
        else:
            add('token_stream', dict(chunk=f'word{{i}} and more ', agent_id=agents[node], node_id=node,
                is_thinking=i % 7 == 0), node, ms=20)
    for node in phase:
        add('node_state_change', dict(node_id=node, status='completed', agent_id=agents[node]), node)
while seq < N - 1:
    add('user_message', dict(text='noted', user='alice', message_id=str(seq)))
add('execution:completed', dict(input_tokens=800, output_tokens=N, cost_usd=cost))
store_events(batch)
print(json.dumps(dict(id=sid, events=seq)))
"""

MEASURE_SEEK = """async () => {
  const r = window.__room.replay;
  const frames = () => new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)));
  r.player.pause();
  r.player.seek(0); await frames();
  let t = performance.now(); r.player.seek(r.timeline.length); await frames();
  const end = performance.now() - t;
  t = performance.now(); r.player.seek(Math.floor(r.timeline.length / 2)); await frames();
  const middle = performance.now() - t;
  return {seek_end_ms: end, seek_middle_ms: middle, position: r.player.position};
}"""

MEASURE_PLAY = """async () => {
  const r = window.__room.replay;
  r.player.seek(Math.floor(r.timeline.length / 4));
  r.actions.setSpeed(16); r.player.play();
  const gaps = []; let last = performance.now();
  await new Promise((ok) => { const until = last + 3000;
    const f = (t) => { gaps.push(t - last); last = t; if (t < until) requestAnimationFrame(f); else ok(); };
    requestAnimationFrame(f); });
  r.player.pause();
  gaps.sort((a, b) => a - b);
  return {frame_p50_ms: gaps[Math.floor(gaps.length * 0.5)], frame_p95_ms: gaps[Math.floor(gaps.length * 0.95)]};
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    env = server_env(tmp)
    manage(env, "migrate", "-v0")
    create_user(env, "alice", PASSWORD)
    made = json.loads(manage(env, "shell", "-c", FILL.format(n=args.events), timeout=600).strip().splitlines()[-1])
    server = daphne(env, tmp, "daphne")
    results = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for _ in range(args.runs):
                context = browser.new_context(viewport={"width": 1400, "height": 900})
                page = context.new_page()
                page.set_default_timeout(300_000)
                page.goto(f"{server.base}/accounts/login/")
                page.fill("input[name=username]", "alice")
                page.fill("input[name=password]", PASSWORD)
                page.click("form button[type=submit]")
                page.wait_for_url("**/sessions/")
                page.goto(f"{server.base}/sessions/{made['id']}/replay/?speed=1")
                page.wait_for_function("() => window.__room.replay.marks.firstFrame !== null")
                page.wait_for_function("() => window.__room.replay.marks.loaded !== null")
                marks = page.evaluate("() => window.__room.replay.marks")
                seek = page.evaluate(MEASURE_SEEK)
                play = page.evaluate(MEASURE_PLAY)
                results.append({"first_frame_ms": marks["firstFrame"], "all_loaded_ms": marks["loaded"], **seek, **play})
                context.close()
            browser.close()
    finally:
        server.stop()
    print(json.dumps({"events": made["events"], "runs": results}, indent=1))
    keys = ["first_frame_ms", "all_loaded_ms", "seek_end_ms", "seek_middle_ms", "frame_p50_ms", "frame_p95_ms"]
    print(f"{made['events']:,} events, median of {len(results)} runs:")
    for key in keys:
        print(f"  {key:16} {statistics.median(r[key] for r in results):8.0f}")


if __name__ == "__main__":
    main()
