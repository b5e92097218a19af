// Header: status badge, connection badge (+ Retry), watchers, workflow, start time, elapsed,
// and the notice line for final connection problems.

import { setAttr, setText, byTestId, h } from "./dom.js";
import { durationMs } from "./run_store.js";
import { formatClock, formatDuration, statusLabel } from "./format.js";
import { STATES } from "./connection.js";
import { SessionStatus } from "./vocabulary.js";

const CONN_LABELS = {
  [STATES.CONNECTED]: "connected",
  [STATES.CONNECTING]: "connecting…",
  [STATES.RECONNECTING]: "reconnecting",
  [STATES.DISCONNECTED]: "disconnected",
};

export function connectionLabel(conn) {
  if (conn.state === STATES.RECONNECTING) return `reconnecting (${conn.attempt})`;
  if (conn.state === STATES.DISCONNECTED && conn.finalCode) return "not connected";
  if (conn.state === STATES.DISCONNECTED && conn.gaveUp) return "offline";
  return CONN_LABELS[conn.state] || conn.state;
}

export function createHeaderView(root, { onRetry, loginUrl = "/accounts/login/" } = {}) {
  const statusBadge = byTestId(root, "status-badge");
  const connBadge = byTestId(root, "conn-badge");
  const retry = byTestId(root, "btn-retry");
  const watchers = byTestId(root, "watchers");
  const title = root.querySelector("#room-title");
  const workflow = root.querySelector("#room-workflow");
  const started = root.querySelector("#room-started");
  const elapsed = root.querySelector("#room-elapsed");
  const notice = root.querySelector("#room-notice");
  const runError = byTestId(root, "run-error");
  let noticeKey = null;

  retry.addEventListener("click", () => onRetry && onRetry());

  function renderNotice(conn) {
    let key = null;
    if (conn.state === STATES.DISCONNECTED && conn.finalCode) key = `final:${conn.finalCode}`;
    else if (conn.state === STATES.DISCONNECTED && conn.gaveUp) key = "gaveup";
    if (key === noticeKey) return;
    noticeKey = key;
    notice.replaceChildren();
    if (!key) {
      notice.hidden = true;
      return;
    }
    if (conn.finalCode) {
      notice.append(conn.finalMessage || "The server refused the connection.");
      if (conn.finalCode === 4401) {
        const next = encodeURIComponent(window.location.pathname);
        notice.append(" ", h("a", { href: `${loginUrl}?next=${next}` }, "Log in again"));
      }
    } else {
      notice.append(
        "The connection to the server was lost and could not be re-established. What you see is kept; press Retry to catch up.",
      );
    }
    notice.hidden = false;
  }

  return {
    render({ state, meta, conn, now }) {
      const status = meta.hydrated ? state.status : meta.session?.status || state.status;
      setAttr(statusBadge, "data-status", status);
      statusBadge.className = `badge badge-status status-${status}`;
      setText(statusBadge.querySelector(".badge-text"), statusLabel(status));
      setAttr(statusBadge, "aria-label", `Session status: ${statusLabel(status)}`);

      const connText = connectionLabel(conn);
      setAttr(connBadge, "data-state", conn.state);
      setAttr(connBadge, "data-attempt", conn.attempt);
      setText(connBadge.querySelector(".badge-text"), connText);
      setAttr(connBadge, "aria-label", `Connection: ${connText}`);
      retry.hidden = !(conn.state === STATES.DISCONNECTED && conn.gaveUp && !conn.finalCode);

      const count = meta.presence?.count ?? 0;
      const users = meta.presence?.users || [];
      setText(watchers.querySelector(".watchers-count"), count);
      setAttr(watchers, "data-count", count);
      setAttr(watchers, "aria-label", `${count} ${count === 1 ? "person" : "people"} watching`);
      setAttr(watchers, "title", users.map((u) => (typeof u === "string" ? u : u?.username || u?.name || "")).filter(Boolean).join(", ") || null);

      if (meta.session?.title) setText(title, meta.session.title);
      const wf = meta.workflow?.name || meta.session?.workflow;
      if (wf) setText(workflow, wf);
      setText(started, state.started_at ? `started ${formatClock(state.started_at)}` : "not started");
      setAttr(started, "title", state.started_at || null);
      setText(elapsed, formatDuration(durationMs(state, now)));
      renderNotice(conn);

      runError.hidden = !state.error;
      setText(runError.querySelector(".run-error-title"), state.status === SessionStatus.FAILED ? "Run failed:" : "Error:");
      setText(runError.querySelector(".run-error-text"), state.error || "");
    },
  };
}
