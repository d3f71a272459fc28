// Alerts: plain-text messages in a banner right above the composer, in place (what
// failed and what to do), from errors.js's descriptions; never over the conversation.
// At most three are shown; the same text is never shown twice; each goes away by
// itself unless persistent, or with its close button. One that says "in N s" counts
// down live and goes when N reaches 0.

import { startCountdown } from "./countdown.js";
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
    const wait = Number(retryAfter);
    if (Number.isFinite(wait) && wait > 0) {
      startCountdown(alert.querySelector(".app-alert-text"), Date.now() + Math.ceil(wait) * 1000, () => {
        if (!persistent) alert.remove();
      });
    } else if (!persistent) {
      setTimeout(() => alert.remove(), DEFAULT_SECONDS * 1000);
    }
  }
}
