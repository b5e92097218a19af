// Controls bar: Start / Pause / Resume / Stop (enabled only when they make sense for the
// status, the user may control, and the socket is connected), the "say something" input,
// and the button that reopens the review dialog.
//
// Input while offline: the text box stays editable (nothing typed is lost) but Send is
// disabled and the hint says why; nothing is queued behind the user's back. The text is
// cleared only once the server acknowledged it; on an error it stays for another try.

import { byTestId, setAttr, setText } from "./dom.js";
import { allowedControls, isFinished } from "./run_store.js";
import { formatCountdown } from "./format.js";
import { STATES } from "./connection.js";
import { CommandName, SessionStatus } from "./vocabulary.js";

// [key of allowedControls() and of the btn-<key> test id, command]
const BUTTONS = [
  ["start", CommandName.START_SESSION],
  ["pause", CommandName.PAUSE_SESSION],
  ["resume", CommandName.RESUME_SESSION],
  ["stop", CommandName.STOP_SESSION],
];

export function controlsHint({ state, meta, conn }) {
  if (conn.finalCode) return `Not connected: ${conn.finalMessage || "the server refused the connection."}`;
  if (conn.gaveUp) return "The connection was lost. Press Retry to reconnect; what you typed stays here.";
  if (conn.state !== STATES.CONNECTED) {
    return meta.hydrated || conn.state !== STATES.CONNECTING
      ? "Offline: controls are paused until the connection is back. You can keep typing; Send returns then."
      : "Connecting…";
  }
  if (!meta.hydrated) return "Loading the session…";
  if (!meta.canControl) return "You are watching. Only people who may control this session can steer it.";
  if (isFinished(state)) return "This session has ended.";
  if (state.status === SessionStatus.CREATED) return "Press Start to begin the meeting.";
  if (state.status === SessionStatus.PAUSED) return "Paused. Resume to continue.";
  if (state.status === SessionStatus.WAITING_REVIEW) return "Waiting for a reviewer's decision.";
  return "";
}

export function createControlsView(root, { onCommand, onOpenReview, requestRender }) {
  const buttons = Object.fromEntries(BUTTONS.map(([key]) => [key, byTestId(root, `btn-${key}`)]));
  const input = byTestId(root, "user-input");
  const send = byTestId(root, "btn-send");
  const form = root.querySelector("#say-form");
  const hint = root.querySelector("#controls-hint");
  const reviewBtn = byTestId(root, "btn-open-review");
  const reviewShort = root.querySelector("#review-countdown-short");
  const busy = new Set();
  let last = null;

  function run(key, cmd, data) {
    if (busy.has(key)) return Promise.resolve(null);
    busy.add(key);
    requestRender();
    return onCommand(cmd, data).finally(() => {
      busy.delete(key);
      requestRender();
    });
  }

  for (const [key, cmd] of BUTTONS) {
    buttons[key].addEventListener("click", () => {
      run(key, cmd, {}).catch(() => {});
    });
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || send.disabled) return;
    run("send", CommandName.USER_INPUT, { text })
      .then((ack) => {
        if (ack && input.value.trim() === text) input.value = "";
      })
      .catch(() => {});
  });
  input.addEventListener("input", () => requestRender());
  reviewBtn.addEventListener("click", () => onOpenReview());

  return {
    render(model) {
      last = model;
      const { state, meta, conn, now } = model;
      const live = conn.state === STATES.CONNECTED && meta.hydrated && meta.canControl;
      const allowed = allowedControls(state.status);
      for (const [key] of BUTTONS) {
        const enabled = live && allowed[key] && !busy.has(key);
        if (buttons[key].disabled === enabled) buttons[key].disabled = !enabled;
        setAttr(buttons[key], "aria-busy", busy.has(key) ? "true" : null);
      }
      const canSay = live && allowed.input;
      send.disabled = !(canSay && input.value.trim() && !busy.has("send"));
      setAttr(input, "aria-disabled", canSay ? null : "true");
      const closed = meta.hydrated && (isFinished(state) || !meta.canControl);
      input.readOnly = closed;
      setAttr(input, "placeholder", !closed ? "Say something to the meeting…" : isFinished(state) ? "This session has ended" : "Watching only");
      setText(hint, controlsHint(model));

      const review = state.pending_review;
      reviewBtn.hidden = !(review && meta.canControl);
      if (review && review.deadline) setText(reviewShort, formatCountdown(Date.parse(review.deadline) - now));
      else setText(reviewShort, "");
    },
    get lastModel() {
      return last;
    },
  };
}
