// Tool-call cards, shown inside the transcript message where the agent made the call: the
// tool's name, its arguments filling in live, a running indicator, then the result (long
// results folded) or the error (in red), and Approve / Reject while a call waits for a person
// who may control the session. All text goes in through text nodes.

import { h, setAttr, setText } from "./dom.js";
import { CommandName, ReviewDecision, ToolCallStatus } from "./vocabulary.js";

export const TOOL_STATUS_LABELS = Object.freeze({
  [ToolCallStatus.STREAMING]: "asking…",
  [ToolCallStatus.WAITING_APPROVAL]: "waiting for approval",
  [ToolCallStatus.RUNNING]: "running…",
  [ToolCallStatus.SUCCEEDED]: "done",
  [ToolCallStatus.FAILED]: "failed",
  [ToolCallStatus.DENIED]: "denied",
  [ToolCallStatus.INTERRUPTED]: "interrupted",
});

const FOLD_OVER_CHARS = 280;

/** A card for one call; `update` it with the call as folded whenever the state changes. */
export function createToolCard(call, { onCommand }) {
  const name = h("span", { class: "tool-name" }, call.tool);
  const status = h("span", { class: "tool-status", "data-testid": "tool-status" });
  const args = h("pre", { class: "tool-args", "data-testid": "tool-args" });
  const resultText = h("pre", { class: "tool-result-text", "data-testid": "tool-result" });
  const result = h("details", { class: "tool-result", hidden: true }, h("summary", {}, "Result"), resultText);
  const error = h("div", { class: "tool-error", "data-testid": "tool-error", role: "alert", hidden: true });
  const problem = h("div", { class: "tool-problem", hidden: true });
  const approve = h("button", { type: "button", class: "btn btn-primary", "data-testid": "tool-approve" }, "Approve");
  const reject = h("button", { type: "button", class: "btn", "data-testid": "tool-reject" }, "Reject");
  const approval = h("div", { class: "tool-approval", "data-testid": "tool-approval", hidden: true },
    h("span", {}, "This tool needs your approval before it runs."), approve, reject, problem);
  const el = h("div", { class: "tool-card", "data-testid": "tool-call", "data-call-id": call.call_id },
    h("div", { class: "tool-head" }, h("span", { class: "tool-icon", "aria-hidden": "true" }, "⚙"), name, status),
    args, approval, result, error);
  let current = call;
  let busy = false;

  function decide(decision) {
    if (busy) return;
    busy = true;
    approve.disabled = reject.disabled = true;
    problem.hidden = true;
    onCommand(CommandName.SUBMIT_REVIEW, { node_id: current.node_id, decision, call_id: current.call_id })
      .catch((err) => {
        setText(problem, err?.error || "The decision could not be sent.");
        problem.hidden = false;
      })
      .finally(() => {
        busy = false;
        approve.disabled = reject.disabled = false;
      });
  }
  approve.addEventListener("click", () => decide(ReviewDecision.APPROVE));
  reject.addEventListener("click", () => decide(ReviewDecision.REJECT));

  return {
    el,
    update(next, { canControl, connected }) {
      current = next;
      setAttr(el, "data-status", next.status);
      const duration = next.duration_ms !== null && next.duration_ms !== undefined ? ` · ${next.duration_ms} ms` : "";
      setText(status, `${TOOL_STATUS_LABELS[next.status] || next.status}${duration}`);
      setText(args, next.arguments || "");
      const waiting = next.status === ToolCallStatus.WAITING_APPROVAL;
      approval.hidden = !(waiting && canControl);
      approve.disabled = reject.disabled = busy || !connected;
      const ok = next.status === ToolCallStatus.SUCCEEDED;
      result.hidden = !ok;
      if (ok && resultText.textContent !== next.result) {
        setText(resultText, next.result || "");
        result.open = (next.result || "").length <= FOLD_OVER_CHARS;
      }
      error.hidden = !next.error;
      setText(error, next.error || "");
    },
  };
}
