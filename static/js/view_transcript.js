// Transcript: one growing message per node answer (name, stable colour, initial, streaming
// caret until final, thinking folded in a <details>), and user messages. All text goes in
// through text nodes; nothing from the server is ever parsed as HTML.

import { h, setAttr, setText } from "./dom.js";
import { agentColor, formatClock, initialOf, statusLabel } from "./format.js";
import { STATES } from "./connection.js";
import { callsOfMessage } from "./tool_store.js";
import { MessageKind, NodeStatus } from "./vocabulary.js";
import { createToolCard } from "./view_tool_calls.js";

const NEAR_BOTTOM_PX = 80;

function agentDirectory(workflow) {
  const agents = new Map();
  const nodes = new Map();
  for (const node of workflow?.nodes || []) {
    nodes.set(node.id, node);
    if (node.agent) agents.set(node.agent.id, node.agent);
  }
  return { agents, nodes };
}

function lastKeyOf(messages, nodeId) {
  for (let i = messages.length - 1; i >= 0; i -= 1) if (messages[i].node_id === nodeId) return messages[i].key;
  return null;
}

/** Replace a text node's content, appending only the new tail while a message streams. */
function updateStreamText(textNode, previous, next) {
  if (previous === next) return;
  if (previous && next.startsWith(previous)) textNode.appendData(next.slice(previous.length));
  else textNode.data = next;
}

/**
 * A message's text with its tool calls: text up to the first call's offset, the call's card,
 * text up to the next, ... and the rest. Cards are kept across renders; text streams into the
 * last piece.
 */
function renderWithCalls(entry, msg, calls, context) {
  const key = calls.map((c) => c.call_id).join(",");
  if (entry.callsKey !== key) {
    entry.callsKey = key;
    entry.textEl.replaceChildren();
    entry.pieces = [];
    for (const call of calls) {
      const piece = document.createTextNode("");
      let card = entry.cards.get(call.call_id);
      if (!card) {
        card = createToolCard(call, context);
        entry.cards.set(call.call_id, card);
      }
      entry.textEl.append(piece, card.el);
      entry.pieces.push(piece);
    }
    const tail = document.createTextNode("");
    entry.textEl.append(tail);
    entry.pieces.push(tail);
  }
  const text = msg.text || "";
  let from = 0;
  calls.forEach((call, i) => {
    const to = Math.max(from, Math.min(call.offset, text.length));
    updateStreamText(entry.pieces[i], entry.pieces[i].data, text.slice(from, to));
    entry.cards.get(call.call_id).update(call, context);
    from = to;
  });
  const last = entry.pieces[entry.pieces.length - 1];
  updateStreamText(last, last.data, text.slice(from));
}

export function createTranscriptView(root, { currentUser = null, onCommand = () => Promise.reject(new Error("offline")) } = {}) {
  const list = root.querySelector("#transcript");
  const scroller = root.querySelector("#transcript-scroll");
  const empty = root.querySelector("#transcript-empty");
  const rendered = new Map(); // key -> {msg, el, textNode, thinkingNode, details, ...}
  let directoryKey = null;
  let directory = agentDirectory(null);

  function header(msg) {
    if (msg.kind === MessageKind.USER) {
      const mine = currentUser && msg.user === currentUser;
      return { name: mine ? "You" : msg.user || "Someone", where: "", color: "#475569", initial: initialOf(msg.user || "?") };
    }
    const agent = directory.agents.get(msg.agent_id);
    const node = directory.nodes.get(msg.node_id);
    const name = agent?.name || msg.agent_id || "Agent";
    const take = Number(String(msg.key).split("#").pop());
    const where = `${node?.title || msg.node_id}${take > 1 ? ` · answer ${take}` : ""}`;
    return { name, where, color: agentColor(msg.agent_id), initial: initialOf(name), role: agent?.role || "" };
  }

  function create(msg) {
    const info = header(msg);
    const textNode = document.createTextNode("");
    const thinkingNode = document.createTextNode("");
    const details = h(
      "details",
      { class: "thinking", "data-testid": "thinking", hidden: true },
      h("summary", {}, "Thinking"),
      h("div", { class: "thinking-text" }, thinkingNode),
    );
    const nameEl = h("span", { class: "msg-name" }, info.name);
    const whereEl = h("span", { class: "msg-where" }, info.where ? `· ${info.where}` : "");
    const endedEl = h("span", { class: "msg-ended", hidden: true });
    const textEl = h("div", { class: "msg-text", "data-testid": "message-text" }, textNode);
    const el = h(
      "li",
      {
        class: `msg msg-${msg.kind}`,
        "data-testid": `message-${msg.key}`,
        "data-final": String(Boolean(msg.final)),
        "data-node-id": msg.node_id,
        style: `--agent-color: ${info.color}`,
      },
      h("span", { class: "avatar", "aria-hidden": "true" }, info.initial),
      h(
        "div",
        { class: "msg-body" },
        h(
          "div",
          { class: "msg-head" },
          nameEl,
          whereEl,
          endedEl,
          h("time", { class: "msg-time num", datetime: msg.started_at }, formatClock(msg.started_at)),
        ),
        details,
        textEl,
        h("span", { class: "caret", "aria-hidden": "true" }),
      ),
    );
    if (info.role) setAttr(nameEl, "title", info.role);
    return { msg: null, el, textNode, textEl, thinkingNode, details, nameEl, whereEl, endedEl, cards: new Map(), callsKey: "", pieces: [] };
  }

  function update(entry, msg, calls, context) {
    const prev = entry.msg;
    if (calls.length > 0) renderWithCalls(entry, msg, calls, context);
    if (prev === msg) return;
    if (calls.length === 0) updateStreamText(entry.textNode, prev ? prev.text : "", msg.text || "");
    updateStreamText(entry.thinkingNode, prev ? prev.thinking : "", msg.thinking || "");
    entry.details.hidden = !msg.thinking;
    setAttr(entry.el, "data-final", String(Boolean(msg.final)));
    entry.el.classList.toggle("is-streaming", !msg.final);
    entry.el.classList.toggle("is-empty", !msg.text);
    setAttr(entry.el, "aria-busy", msg.final ? null : "true");
    entry.msg = msg;
  }

  return {
    render({ state, meta, conn }) {
      const key = meta.workflow ? JSON.stringify(meta.workflow.nodes?.map((n) => [n.id, n.title, n.agent?.id, n.agent?.name])) : null;
      const directoryChanged = key !== directoryKey;
      if (directoryChanged) {
        directoryKey = key;
        directory = agentDirectory(meta.workflow);
      }
      const nearBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < NEAR_BOTTOM_PX;
      const messages = state.messages;
      const context = { canControl: Boolean(meta.canControl), connected: conn?.state === STATES.CONNECTED, onCommand };
      const seen = new Set();
      let previousEl = null;
      let appended = false;
      for (const msg of messages) {
        seen.add(msg.key);
        let entry = rendered.get(msg.key);
        if (!entry) {
          entry = create(msg);
          rendered.set(msg.key, entry);
          appended = true;
        } else if (directoryChanged) {
          const info = header(msg);
          setText(entry.nameEl, info.name);
          setText(entry.whereEl, info.where ? `· ${info.where}` : "");
          entry.el.style.setProperty("--agent-color", info.color);
        }
        update(entry, msg, msg.kind === MessageKind.AGENT ? callsOfMessage(state, msg.key) : [], context);
        // An answer cut short by a failed or stopped node says so.
        const nodeStatus = msg.kind === MessageKind.AGENT ? state.nodes[msg.node_id]?.status : null;
        const cut = msg.final && (nodeStatus === NodeStatus.FAILED || nodeStatus === NodeStatus.STOPPED) && lastKeyOf(messages, msg.node_id) === msg.key;
        entry.endedEl.hidden = !cut;
        setText(entry.endedEl, cut ? (nodeStatus === NodeStatus.FAILED ? "interrupted: node failed" : statusLabel(nodeStatus)) : "");
        // Keep DOM order equal to state order (a snapshot may replace everything).
        const expectedNext = previousEl ? previousEl.nextSibling : list.firstChild;
        if (expectedNext !== entry.el) list.insertBefore(entry.el, expectedNext);
        previousEl = entry.el;
      }
      for (const [key, entry] of rendered) {
        if (!seen.has(key)) {
          entry.el.remove();
          rendered.delete(key);
        }
      }
      empty.hidden = messages.length > 0;
      if (nearBottom || (appended && messages.length <= 1)) scroller.scrollTop = scroller.scrollHeight;
    },
  };
}
