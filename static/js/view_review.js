// Review dialog: opens by itself once per review round for people who may control the
// session, shows the reason and a countdown, and submits approve / reject (reject needs a
// comment). It closes when the review is answered (by anyone) or the user picks "Later";
// the controls bar and the node keep a "Review" button to reopen it. A budget request (a
// review with `budget_usd`, no node) asks for a new budget instead: "Raise and continue"
// approves with it, "Stop the run" rejects (no comment needed).

import { byTestId, setAttr, setText } from "./dom.js";
import { formatCountdown, formatUsd } from "./format.js";
import { STATES } from "./connection.js";
import { CommandName, ReviewDecision } from "./vocabulary.js";

export function createReviewView(root, { onCommand, requestRender }) {
  const dialog = byTestId(root, "review-dialog");
  const reason = root.querySelector("#review-reason");
  const context = root.querySelector("#review-context");
  const countdown = root.querySelector("#review-countdown");
  const comment = byTestId(root, "review-comment");
  const error = root.querySelector("#review-error");
  const approve = byTestId(root, "btn-approve");
  const reject = byTestId(root, "btn-reject");
  const later = root.querySelector("#review-later");
  const budgetBox = root.querySelector("#review-budget");
  const budgetInput = byTestId(root, "review-budget-input");
  const commentHint = root.querySelector("#review-comment-hint");
  const title = root.querySelector("#review-title");
  let openedFor = null; // "<node>:<round>" the dialog opened for automatically
  let current = null; // the pending review shown
  let busy = false;
  let connected = false;

  const isOpen = () => dialog.open;

  function open() {
    if (!current || isOpen()) return;
    if (typeof dialog.showModal === "function") {
      try {
        dialog.showModal();
      } catch {
        dialog.setAttribute("open", "");
      }
    } else dialog.setAttribute("open", "");
    comment.focus();
  }

  function close() {
    if (!isOpen()) return;
    if (typeof dialog.close === "function") dialog.close();
    else dialog.removeAttribute("open");
  }

  function showError(text) {
    setText(error, text);
    error.hidden = !text;
  }

  const isBudget = (review) => review?.budget_usd !== null && review?.budget_usd !== undefined;

  function submit(decision) {
    if (!current || busy || !connected) return;
    const text = comment.value.trim();
    const payload = { node_id: current.node_id, decision, comment: text };
    if (isBudget(current)) {
      if (decision === ReviewDecision.APPROVE) {
        const value = Number(budgetInput.value);
        if (!Number.isFinite(value) || value <= current.budget_usd) {
          showError(`Give a budget above the current ${formatUsd(current.budget_usd)}.`);
          budgetInput.focus();
          return;
        }
        payload.budget_usd = value;
      }
    } else if (decision === ReviewDecision.REJECT && !text) {
      showError("Add a comment so the agents know what to change.");
      comment.focus();
      return;
    }
    showError("");
    busy = true;
    requestRender();
    onCommand(CommandName.SUBMIT_REVIEW, payload)
      .then(() => {
        comment.value = "";
        close();
      })
      .catch((err) => showError(err?.error || "The review could not be sent."))
      .finally(() => {
        busy = false;
        requestRender();
      });
  }

  approve.addEventListener("click", () => submit(ReviewDecision.APPROVE));
  reject.addEventListener("click", () => submit(ReviewDecision.REJECT));
  later.addEventListener("click", () => close());
  comment.addEventListener("input", () => {
    if (comment.value.trim()) showError("");
  });

  return {
    open,
    close,
    render({ state, meta, conn, now }) {
      connected = conn.state === STATES.CONNECTED;
      // A tool call's approval is answered on its card in the transcript, not in this dialog.
      const review = meta.canControl && !state.pending_review?.tool_call_id ? state.pending_review : null;
      current = review;
      if (!review) {
        close();
        return;
      }
      const nodes = meta.workflow?.nodes || [];
      const nodeTitle = (id) => nodes.find((n) => n.id === id)?.title || id;
      setText(reason, review.reason);
      const budget = isBudget(review);
      budgetBox.hidden = !budget;
      commentHint.hidden = budget;
      setText(title, budget ? "Budget reached" : "Your review is needed");
      setText(approve.querySelector(".btn-label"), budget ? "Raise budget and continue" : "Approve");
      setText(reject.querySelector(".btn-label"), budget ? "Stop the run" : "Reject with comment");
      const about = budget
        ? `Spent ${formatUsd(review.cost_usd)} of ${formatUsd(review.budget_usd)}`
        : review.reviewed_node_id ? `Reviewing the answer of ${nodeTitle(review.reviewed_node_id)}` : `Review step: ${nodeTitle(review.node_id)}`;
      setText(context, `${about}${review.round > 1 ? ` · round ${review.round}` : ""}`);
      if (review.deadline) {
        const left = Date.parse(review.deadline) - now;
        setText(countdown, left > 0 ? `${formatCountdown(left)} left` : "time is up");
        countdown.parentElement.classList.toggle("is-urgent", left < 60000);
      } else {
        setText(countdown, "no time limit");
        countdown.parentElement.classList.remove("is-urgent");
      }
      approve.disabled = busy || !connected;
      reject.disabled = busy || !connected;
      setAttr(dialog, "data-node-id", review.node_id);
      setAttr(dialog, "data-round", review.round);
      const key = `${review.node_id}:${review.round}`;
      if (openedFor !== key) {
        openedFor = key;
        comment.value = "";
        if (budget) budgetInput.value = String(Math.round(review.budget_usd * 2 * 1e6) / 1e6);
        showError("");
        open();
      }
    },
  };
}
