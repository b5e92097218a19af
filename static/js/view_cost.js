// Cost panel: total (fixed decimals, tabular figures; "+ price unknown" when a model had no
// price), input tokens with the cached part and output tokens with the reasoning part (parts,
// never added on top), the budget and how much of it is used, an inline SVG sparkline of the
// session cost over time, and a per-node table.

import { byTestId, h, setAttr, setText, svg } from "./dom.js";
import { usageRows } from "./session_store.js";
import { formatCost, formatTokens, formatUsd, sparklinePoints } from "./format.js";
import { BudgetState, TokenType } from "./vocabulary.js";

// How a part of input or output is named under its count.
const PART_WORDS = Object.freeze({
  [TokenType.CACHED_INPUT]: "cached",
  [TokenType.REASONING]: "reasoning",
});

const BUDGET_WORDS = Object.freeze({
  [BudgetState.OK]: "",
  [BudgetState.WARNING]: " · nearly spent",
  [BudgetState.REACHED]: " · reached: the run waits",
});

/** A count and, when there is one, its part ("412" + "256 cached"). */
/** A token figure's cell: the total, and its part (cached, reasoning) in the cell's tooltip and
 *  accessible label; the panel's totals line shows the parts in words. Inline, the word made the
 *  dollar column run off a 280 px panel. */
function partCell(total, part, word) {
  const label = part ? `${formatTokens(total)}, of which ${formatTokens(part)} ${word}` : null;
  return h("td", { class: "num", title: label, "aria-label": label, "data-part": part ? `${formatTokens(part)} ${word}` : null },
    formatTokens(total), part ? h("span", { class: "cost-part-mark", "aria-hidden": "true" }, "*") : null);
}

const W = 240;
const H = 48;

export function createCostView(root) {
  const total = byTestId(root, "total-cost");
  const input = byTestId(root, "total-input");
  const output = byTestId(root, "total-output");
  const cached = byTestId(root, "total-cached");
  const reasoning = byTestId(root, "total-reasoning");
  const unknown = byTestId(root, "price-unknown");
  const budget = byTestId(root, "budget");
  const sparkWrap = root.querySelector("#cost-sparkline");
  const rows = root.querySelector("#cost-rows");

  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", height: H, class: "sparkline", role: "img", preserveAspectRatio: "none" });
  const title = svg("title");
  const area = svg("path", { class: "spark-area", d: "" });
  const line = svg("polyline", { class: "spark-line", points: "", fill: "none" });
  const dot = svg("circle", { class: "spark-dot", r: 2.5, cx: -10, cy: -10 });
  chart.append(title, area, line, dot);
  sparkWrap.append(chart, h("span", { class: "spark-caption muted" }, "cost over time"));

  let lastSeries = null;
  let lastUsage = null;
  let lastWorkflow = null;

  function renderSpark(series) {
    const pts = sparklinePoints(series, W, H, 3);
    if (pts.length === 0) {
      line.setAttribute("points", `3,${H - 3} ${W - 3},${H - 3}`);
      area.setAttribute("d", "");
      dot.setAttribute("visibility", "hidden");
      title.textContent = "No cost yet";
      setAttr(chart, "aria-label", "Cost over time: no cost yet");
      return;
    }
    const p = pts.map(([x, y]) => `${x},${y}`).join(" ");
    line.setAttribute("points", p);
    area.setAttribute("d", `M${pts[0][0]},${H - 3} L${pts.map(([x, y]) => `${x},${y}`).join(" L")} L${pts[pts.length - 1][0]},${H - 3} Z`);
    const [lx, ly] = pts[pts.length - 1];
    dot.setAttribute("visibility", "visible");
    dot.setAttribute("cx", lx);
    dot.setAttribute("cy", ly);
    const first = series[0][1];
    const last = series[series.length - 1][1];
    const text = `Cost over time: from ${formatUsd(first)} to ${formatUsd(last)} in ${series.length} updates`;
    title.textContent = text;
    setAttr(chart, "aria-label", text);
  }

  function renderRows(state, meta) {
    const wfNodes = meta.workflow?.nodes || [];
    const titles = new Map(wfNodes.map((n) => [n.id, n.title || n.id]));
    const agents = new Map(wfNodes.filter((n) => n.agent).map((n) => [n.agent.id, n.agent.name]));
    const data = usageRows(state, wfNodes.map((n) => n.id));
    if (data.length === 0) {
      rows.replaceChildren(h("tr", { class: "empty-row" }, h("td", { colspan: 4, class: "muted" }, "No tokens used yet")));
      return;
    }
    rows.replaceChildren(
      ...data.map((r) =>
        h(
          "tr",
          {
            "data-testid": `cost-row-${r.node_id}`,
            "data-inherited": r.inherited ? "true" : null,
            class: r.inherited ? "is-inherited" : null,
            title: [agents.get(r.agent_id) || r.agent_id, r.model, r.inherited ? "inherited: spent by the parent session, not in this total" : null].filter(Boolean).join(" · "),
          },
          h("td", {}, titles.get(r.node_id) || r.node_id, r.inherited ? h("span", { class: "muted" }, " (inherited)") : null),
          partCell(r.input_tokens, r.cached_input_tokens, PART_WORDS[TokenType.CACHED_INPUT]),
          partCell(r.output_tokens, r.reasoning_tokens, PART_WORDS[TokenType.REASONING]),
          h("td", { class: "num", "data-testid": "cost-cell" }, formatCost(r.cost_usd)),
        ),
      ),
    );
  }

  return {
    render({ state, meta }) {
      const usage = state.usage;
      setText(total, formatUsd(usage.cost_usd));
      setAttr(total, "title", formatUsd(usage.cost_usd, 6));
      setAttr(total, "data-value", usage.cost_usd);
      setText(input, formatTokens(usage.input_tokens));
      setText(output, formatTokens(usage.output_tokens));
      setText(cached, formatTokens(usage.cached_input_tokens));
      setText(reasoning, formatTokens(usage.reasoning_tokens));
      setAttr(cached.parentElement, "title", usage.cache_write_tokens ? `${formatTokens(usage.cache_write_tokens)} written to the cache` : "");
      unknown.hidden = !usage.price_unknown;
      const b = state.budget;
      budget.hidden = !b || b.budget_usd === null;
      if (!budget.hidden) {
        const spent = Math.max(Number(usage.cost_usd) || 0, Number(b.cost_usd) || 0);
        const share = b.budget_usd > 0 ? Math.round((100 * spent) / b.budget_usd) : 0;
        setText(budget, `Budget ${formatUsd(b.budget_usd)} · ${share}% used${BUDGET_WORDS[b.state] ?? ""}`);
        setAttr(budget, "data-state", b.state);
      }
      if (state.cost_series !== lastSeries) {
        lastSeries = state.cost_series;
        renderSpark(state.cost_series);
      }
      if (usage.nodes !== lastUsage || meta.workflow !== lastWorkflow) {
        lastUsage = usage.nodes;
        lastWorkflow = meta.workflow;
        renderRows(state, meta);
      }
    },
  };
}
