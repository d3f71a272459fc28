// Live "in N s" countdowns in plain-text messages (a rate limit's retry_after): the
// number in the text goes down every second until the deadline, then onDone runs.
// The timer stops by itself once the node has left the page (a re-render builds a new
// one, which counts down to the same deadline).

const SECONDS = /\b\d+ s\b/;

/** Counts down the "N s" in node's text to `deadline` (ms since the epoch). */
export function startCountdown(node, deadline, onDone = null) {
  let timer = null;
  let shown = false; // the node may not be on the page yet at the first tick
  const tick = () => {
    shown = shown || node.isConnected;
    const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
    if (SECONDS.test(node.textContent)) node.textContent = node.textContent.replace(SECONDS, `${left} s`);
    if (left > 0 && (node.isConnected || !shown)) return true;
    window.clearInterval(timer);
    if (left === 0 && onDone) onDone();
    return false;
  };
  if (tick()) timer = window.setInterval(tick, 1000);
}
