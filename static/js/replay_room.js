// The replay page's engine room: loads the log in pages (playing starts with the first one),
// drives the player on animation frames, puts the playhead's state into a store the room's
// views render (the same views as the live room), and leads or follows a shared replay
// through the socket (replay_control). room.js creates it when the config has `replay`.
//
// URL parameters: ?seq=N opens paused at that seq (refused beyond the log), ?speed=1|4|16|0,
// ?follow=1 follows a shared replay (the default; ?follow=0 opts out).

import { createStore } from "./store.js";
import { createPlayer, createTimeline, loadPages, SPEEDS } from "./replay.js";
import { CommandName } from "./vocabulary.js";

const SYNC_EVERY_MS = 5000;

export function createReplayRoom({ config, core, requestRender, toast, fetchImpl = globalThis.fetch, location = globalThis.location }) {
  const cfg = config.replay;
  const params = new URLSearchParams(location?.search || "");
  const store = createStore({
    meta: { session: cfg.header.session, workflow: cfg.header.workflow, canControl: false, hydrated: true },
  });
  const timeline = createTimeline();
  const marks = { start: performance.now(), firstFrame: null, loaded: null };
  let total = cfg.last_seq;
  let done = total === 0;
  let pendingSeq = null;
  let sharing = false;
  let sharedLeader = null;
  let following = params.get("follow") !== "0";
  let lastSync = 0;

  const player = createPlayer({
    timeline,
    onChange: () => {
      store.replace(player.state);
      requestRender();
    },
  });

  const wanted = Number(params.get("speed"));
  if (params.has("speed") && SPEEDS.includes(wanted)) player.setSpeed(wanted);
  const startSeq = params.has("seq") ? Number(params.get("seq")) : null;
  let autoplay = startSeq === null;
  if (startSeq !== null) {
    if (!Number.isInteger(startSeq) || startSeq < 0 || startSeq > total) {
      toast(`seq ${params.get("seq")} is beyond the log (its last event is ${total}); starting at the beginning.`, { kind: "error", title: "Cannot seek there" });
      autoplay = false;
    } else pendingSeq = startSeq;
  }

  function broadcast(active = true) {
    if (!sharing && active) return;
    lastSync = performance.now();
    core.sendCommand(CommandName.REPLAY_CONTROL, { seq: player.seq, playing: player.playing, speed: player.speed, active }).catch(() => {});
  }

  /** Go to seq (now if it has arrived, else when its page does). */
  function seekSeq(seq) {
    if (seq > timeline.events.at(-1)?.seq || (!done && timeline.length === 0)) {
      pendingSeq = seq;
      return;
    }
    pendingSeq = null;
    player.seekSeq(seq);
  }

  function applyPending() {
    if (pendingSeq !== null && (done || (timeline.length && timeline.events.at(-1).seq >= pendingSeq))) {
      const seq = pendingSeq;
      pendingSeq = null;
      player.seekSeq(seq);
    }
  }

  // ------------------------------------------------------------------ user actions
  function leaveShared() {
    if (sharedLeader && following) following = false; // scrubbing on one's own leaves it
  }
  const actions = {
    togglePlay() {
      leaveShared();
      if (player.playing) player.pause();
      else {
        if (player.atEnd && done) player.seek(0);
        player.play();
      }
      broadcast();
    },
    step(n) {
      leaveShared();
      player.step(n);
      broadcast();
    },
    setSpeed(value) {
      leaveShared();
      player.setSpeed(value);
      broadcast();
    },
    seek(position, { final = true } = {}) {
      leaveShared();
      player.seek(position);
      if (final) broadcast();
    },
    jumpToNode(nodeId) {
      leaveShared();
      player.jumpToNode(nodeId);
      broadcast();
    },
    toggleShare() {
      if (!config.can_control) return;
      sharing = !sharing;
      if (sharing) broadcast();
      else broadcast(false);
      requestRender();
    },
    setFollow(value) {
      following = Boolean(value);
      requestRender();
    },
  };

  /** A replay_control frame: someone leads a shared replay (or ended it). */
  function onShared(data) {
    if (sharing) return; // our own moves coming back
    if (!data.active) {
      if (sharedLeader) toast(`${data.by} ended the shared replay.`, { kind: "info" });
      sharedLeader = null;
      requestRender();
      return;
    }
    sharedLeader = data.by;
    if (following) {
      autoplay = false;
      player.setSpeed(data.speed);
      seekSeq(data.seq);
      if (data.playing) player.play();
      else player.pause();
    }
    requestRender();
  }

  // ------------------------------------------------------------------ the clock
  let last = null;
  function frame(t) {
    const dt = last === null ? 0 : Math.min(t - last, 250);
    last = t;
    player.tick(dt);
    if (player.playing && player.atEnd && done) player.pause(); // the end, like a film
    if (sharing && player.playing && t - lastSync > SYNC_EVERY_MS) broadcast();
    window.requestAnimationFrame(frame);
  }

  // ------------------------------------------------------------------ loading
  async function fetchPage(after) {
    const response = await fetchImpl(`${cfg.events_url}?after=${after}&limit=${cfg.page_size}`, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) throw new Error(`the log could not be read (HTTP ${response.status})`);
    return response.json();
  }

  function start() {
    window.requestAnimationFrame(frame);
    if (done) {
      marks.loaded = performance.now();
      requestRender();
      return;
    }
    loadPages({
      fetchPage,
      onPage(events, page) {
        total = Math.max(total, page.last_seq);
        timeline.append(events);
        if (page.done) {
          done = true;
          marks.loaded = performance.now();
        }
        applyPending();
        if (autoplay && timeline.length) {
          autoplay = false;
          player.play();
          player.tick(0);
        }
        requestRender();
      },
    }).catch((err) => toast(String(err.message || err), { kind: "error", title: "Replay" }));
  }

  return {
    store,
    player,
    timeline,
    actions,
    marks,
    onShared,
    start,
    /** What the timeline view reads. */
    get view() {
      return { player, timeline, total, done, sharing, sharedLeader, following, canShare: Boolean(config.can_control) };
    },
    /** Called after each render: the first frame that shows events is the one measured. */
    rendered() {
      if (marks.firstFrame === null && player.position > 0) marks.firstFrame = performance.now();
    },
  };
}
