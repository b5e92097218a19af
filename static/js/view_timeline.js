// The replay's timeline (footer of the replay page): play/pause, step, speed, jump to a
// node's start, the scrubber with the idle stretches marked, the position, and the shared
// replay's controls. It draws what the player says; every move goes back through `actions`.

import { byTestId, h, setAttr, setText } from "./dom.js";
import { formatDuration } from "./format.js";

export function createTimelineView(root, { actions }) {
  const play = byTestId(root, "btn-play");
  const stepBack = byTestId(root, "btn-step-back");
  const step = byTestId(root, "btn-step");
  const speed = byTestId(root, "replay-speed");
  const jump = byTestId(root, "jump-node");
  const scrubber = byTestId(root, "scrubber");
  const marks = byTestId(root, "idle-marks");
  const position = byTestId(root, "replay-position");
  const loaded = byTestId(root, "replay-loaded");
  const idleText = byTestId(root, "replay-idle");
  const share = byTestId(root, "btn-share");
  const followWrap = byTestId(root, "follow-wrap");
  const follow = byTestId(root, "follow-shared");
  const sharedBy = byTestId(root, "shared-by");
  let marksKey = "";
  let jumpKey = "";

  play.addEventListener("click", () => actions.togglePlay());
  stepBack.addEventListener("click", () => actions.step(-1));
  step.addEventListener("click", () => actions.step(1));
  speed.addEventListener("change", () => actions.setSpeed(Number(speed.value)));
  jump.addEventListener("change", () => {
    if (jump.value) actions.jumpToNode(jump.value);
    jump.value = "";
  });
  // Dragging seeks locally at once; letting go is the move a shared replay broadcasts.
  scrubber.addEventListener("input", () => actions.seek(Number(scrubber.value), { final: false }));
  scrubber.addEventListener("change", () => actions.seek(Number(scrubber.value), { final: true }));
  share.addEventListener("click", () => actions.toggleShare());
  follow.addEventListener("change", () => actions.setFollow(follow.checked));

  function renderMarks(timeline) {
    const key = `${timeline.idle.length}:${timeline.length}`;
    if (key === marksKey) return;
    marksKey = key;
    const total = Math.max(1, timeline.length);
    marks.replaceChildren(
      ...timeline.idle.map(({ index, ms }) =>
        h("span", {
          class: "idle-mark",
          style: `left: ${((index / total) * 100).toFixed(3)}%`,
          title: `idle ${formatDuration(ms)} (compressed)`,
        }),
      ),
    );
    const longest = timeline.idle.reduce((sum, m) => sum + m.ms, 0);
    setText(idleText, timeline.idle.length ? `${timeline.idle.length} idle stretch${timeline.idle.length === 1 ? "" : "es"} (${formatDuration(longest)}) compressed` : "");
  }

  function renderJump(meta, timeline) {
    const nodes = (meta.workflow?.nodes || []).filter((n) => timeline.nodeStarts.has(n.id));
    const key = nodes.map((n) => n.id).join(",");
    if (key === jumpKey) return;
    jumpKey = key;
    jump.replaceChildren(
      h("option", { value: "" }, "jump to start…"),
      ...nodes.map((n) => h("option", { value: n.id }, n.title || n.id)),
    );
  }

  return {
    render({ meta, replay }) {
      const { player, timeline, total, done, sharing, sharedLeader, following, canShare } = replay;
      setText(play, player.playing ? "Pause" : "Play");
      setAttr(play, "aria-pressed", player.playing ? "true" : "false");
      setAttr(play, "data-playing", player.playing ? "true" : "false");
      if (document.activeElement !== speed) speed.value = String(player.speed);
      scrubber.max = String(timeline.length);
      if (document.activeElement !== scrubber || !scrubber.matches(":active")) scrubber.value = String(player.position);
      setAttr(scrubber, "aria-valuetext", `event ${player.seq} of ${total}`);
      setText(position, `${player.seq} / ${total}`);
      setAttr(position, "data-seq", player.seq);
      setText(loaded, done ? "all loaded" : `loading… ${timeline.length} of ${total}`);
      setAttr(loaded, "data-done", done ? "true" : "false");
      renderMarks(timeline);
      renderJump(meta, timeline);
      share.hidden = !canShare;
      setText(share, sharing ? "Stop sharing" : "Watch together");
      setAttr(share, "aria-pressed", sharing ? "true" : "false");
      followWrap.hidden = !sharedLeader || sharing;
      follow.checked = following;
      setText(sharedBy, sharedLeader ? `${sharedLeader}'s replay` : "");
    },
  };
}
