// Alerts: plain-text messages at the top of the message pane (what failed and what to
// do), from errors.js's descriptions. At most three are shown; the same text is never
// shown twice; each goes away by itself unless persistent, or with its close button.

import { buildAlert } from "./render.js";

const MAX_SHOWN = 3;
const DEFAULT_SECONDS = 8;

export class Alerts {
  constructor(area) {
    this.area = area;
    area.addEventListener("click", (event) => {
      const button = event.target.closest('[data-action="dismiss"]');
      if (button) button.closest(".app-alert").remove();
    });
  }

  /** Shows an alert; one that says "try again in N s" goes when N s have passed, others after 8 s. */
  show({ text, detail = "", code = "", variant = "danger", persistent = false, retry_after: retryAfter }) {
    for (const old of this.area.querySelectorAll(".app-alert")) {
      if (old.querySelector(".app-alert-text").textContent === text) old.remove();
    }
    const alert = buildAlert({ text, detail, code, variant });
    this.area.append(alert);
    while (this.area.childElementCount > MAX_SHOWN) this.area.firstElementChild.remove();
    if (!persistent) {
      const wait = Number(retryAfter);
      const seconds = Number.isFinite(wait) && wait > 0 ? Math.max(3, wait + 0.5) : DEFAULT_SECONDS;
      setTimeout(() => alert.remove(), seconds * 1000);
    }
  }
}
