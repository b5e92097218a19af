// Toasts: short messages for command errors and notable connection events.

import { h } from "./dom.js";

export function createToasts(container, { timers = globalThis, max = 4 } = {}) {
  function dismiss(el) {
    if (el.isConnected) el.remove();
  }
  return {
    /** Show a toast; kind is "error" | "info" | "success". Returns the element. */
    show(message, { kind = "error", timeoutMs = 7000, title = null } = {}) {
      const close = h("button", { type: "button", class: "toast-close", "aria-label": "Dismiss" }, "×");
      const el = h(
        "div",
        { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status", "data-testid": "toast" },
        h("div", { class: "toast-body" }, title ? h("strong", { class: "toast-title" }, title) : null, h("span", {}, String(message))),
        close,
      );
      close.addEventListener("click", () => dismiss(el));
      container.append(el);
      while (container.children.length > max) container.firstElementChild.remove();
      if (timeoutMs > 0) timers.setTimeout(() => dismiss(el), timeoutMs);
      return el;
    },
  };
}
