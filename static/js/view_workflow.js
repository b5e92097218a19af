// Workflow panel: nodes grouped by level (parallel ones side by side), status colours,
// and the progress bar (finished nodes of total).

import { byTestId, h, setAttr, setText, svg } from "./dom.js";
import { defaultNode, nodeCounts } from "./run_store.js";
import { agentColor, formatDuration, initialOf, levelsOf, statusLabel } from "./format.js";
import { NodeStatus, NodeType } from "./vocabulary.js";

/** A branching arrow (the fork link's icon): an SVG, not a glyph fonts may lack. */
function forkIcon() {
  const icon = svg("svg", { class: "icon", viewBox: "0 0 16 16", "aria-hidden": "true", focusable: "false" });
  icon.append(svg("path", { d: "M5 2.5a1.5 1.5 0 1 1-1.5 1.5A1.5 1.5 0 0 1 5 2.5zm6 0A1.5 1.5 0 1 1 9.5 4 1.5 1.5 0 0 1 11 2.5zM5 10.5A1.5 1.5 0 1 1 3.5 12 1.5 1.5 0 0 1 5 10.5zM4.25 5.4h1.5v3.7a3 3 0 0 1 2.2-1h1a1.3 1.3 0 0 0 1.3-1.3v-1.4h1.5v1.4a2.8 2.8 0 0 1-2.8 2.8h-1a1.5 1.5 0 0 0-1.5 1.5v.2h-1.5z" }));
  return icon;
}

export const NODE_ICONS = Object.freeze({
  [NodeStatus.PENDING]: "○",
  [NodeStatus.RUNNING]: "●",
  [NodeStatus.PAUSED]: "‖",
  [NodeStatus.WAITING_REVIEW]: "◇",
  [NodeStatus.COMPLETED]: "✓",
  [NodeStatus.FAILED]: "✗",
  [NodeStatus.SKIPPED]: "–",
  [NodeStatus.STOPPED]: "■",
});

/** forkUrl: the fork page (those who may control get a "Fork from here" link on each node). */
export function createWorkflowView(root, { onOpenReview, forkUrl = null } = {}) {
  const graph = root.querySelector("#workflow-graph");
  const progress = byTestId(root, "progress");
  const fill = progress.querySelector(".progress-fill");
  const label = root.querySelector("#progress-label");
  let layoutKey = null;
  const items = new Map(); // node id -> {el, icon, status, time, reviewBtn}

  function buildLayout(workflowNodes, extraIds) {
    graph.replaceChildren();
    items.clear();
    const levels = levelsOf(workflowNodes);
    if (!workflowNodes.length && !extraIds.length) {
      graph.append(h("p", { class: "empty-hint" }, "The workflow appears here once the room is connected."));
      return;
    }
    if (extraIds.length) levels.push(extraIds.map((id) => ({ id, type: NodeType.AGENT, title: id, agent: null, depends_on: [] })));
    levels.forEach((level, index) => {
      const row = h("ol", {
        class: `level${level.length > 1 ? " level-parallel" : ""}`,
        "aria-label": level.length > 1 ? `Step ${index + 1}: ${level.length} in parallel` : `Step ${index + 1}`,
      });
      for (const node of level) {
        const icon = h("span", { class: "node-icon", "aria-hidden": "true" }, NODE_ICONS[NodeStatus.PENDING]);
        const status = h("span", { class: "node-status" }, statusLabel(NodeStatus.PENDING));
        const time = h("span", { class: "node-time num" });
        const error = h("span", { class: "node-error", hidden: true });
        const reviewBtn = h("button", { type: "button", class: "btn btn-xs btn-review", hidden: true }, "Review");
        reviewBtn.addEventListener("click", () => onOpenReview && onOpenReview());
        const inherited = h("span", { class: "node-inherited", hidden: true, title: "Copied from the session this one was forked from" }, "inherited");
        const fork = forkUrl
          ? h(
              "a",
              {
                class: "node-fork",
                href: `${forkUrl}?node=${encodeURIComponent(node.id)}`,
                "data-testid": `fork-${node.id}`,
                "aria-label": `Fork from here: ${node.title || node.id}`,
                title: "Fork from here",
              },
              forkIcon(),
            )
          : null;
        const agentName = node.agent?.name || (node.type === NodeType.HUMAN_REVIEW ? "Human review" : "");
        const el = h(
          "li",
          {
            class: `node node-type-${node.type || NodeType.AGENT} status-${NodeStatus.PENDING}`,
            "data-testid": `node-${node.id}`,
            "data-status": NodeStatus.PENDING,
            "data-node-type": node.type || NodeType.AGENT,
            style: node.agent ? `--agent-color: ${agentColor(node.agent.id)}` : null,
          },
          icon,
          h(
            "span",
            { class: "node-main" },
            h("span", { class: "node-title" }, node.title || node.id),
            h(
              "span",
              { class: "node-sub" },
              agentName ? h("span", { class: "node-agent", title: agentName }, agentName) : null,
              node.agent?.remote
                ? h("span", { class: "badge-remote", title: "A remote AG-UI agent", "data-testid": `remote-${node.id}` }, "remote")
                : null,
              status,
              time,
              inherited,
            ),
            error,
          ),
          reviewBtn,
          fork,
        );
        items.set(node.id, { el, icon, status, time, error, reviewBtn, inherited, nodeStatus: null });
        row.append(el);
      }
      graph.append(row);
    });
  }

  return {
    render({ state, meta, now }) {
      const wfNodes = meta.workflow?.nodes || [];
      const known = new Set(wfNodes.map((n) => n.id));
      const extra = Object.keys(state.nodes).filter((id) => !known.has(id));
      const key = JSON.stringify([wfNodes.map((n) => [n.id, n.depends_on, n.title, n.agent?.id]), extra]);
      if (key !== layoutKey) {
        layoutKey = key;
        buildLayout(wfNodes, extra);
      }
      const review = state.pending_review;
      for (const [id, item] of items) {
        const node = state.nodes[id] || defaultNode();
        if (item.nodeStatus !== node.status) {
          item.nodeStatus = node.status;
          item.el.className = item.el.className.replace(/status-[a-z_]+/, `status-${node.status}`);
          setAttr(item.el, "data-status", node.status);
          setText(item.icon, NODE_ICONS[node.status] || NODE_ICONS[NodeStatus.PENDING]);
          setText(item.status, statusLabel(node.status));
        }
        setAttr(item.el, "title", node.error || null);
        item.inherited.hidden = !node.inherited;
        setAttr(item.el, "data-inherited", node.inherited ? "true" : null);
        item.error.hidden = !node.error;
        setText(item.error, node.error || "");
        let t = "";
        if (node.started_at) {
          const end = node.finished_at ? Date.parse(node.finished_at) : now;
          if (node.status !== NodeStatus.PENDING) t = formatDuration(end - Date.parse(node.started_at));
        }
        setText(item.time, t);
        const canReview = Boolean(review && review.node_id === id && meta.canControl);
        item.reviewBtn.hidden = !canReview;
      }
      const counts = nodeCounts(state, wfNodes.map((n) => n.id));
      const pct = counts.total ? Math.round((counts.done / counts.total) * 100) : 0;
      fill.style.width = `${pct}%`;
      setAttr(progress, "aria-valuemax", counts.total);
      setAttr(progress, "aria-valuenow", counts.done);
      setAttr(progress, "aria-valuetext", `${counts.done} of ${counts.total} nodes finished`);
      setAttr(progress, "data-done", counts.done);
      setAttr(progress, "data-total", counts.total);
      setAttr(progress, "data-failed", counts.failed);
      setText(label, `${counts.done}/${counts.total}`);
    },
  };
}
