// Today's allowance of requests to hosted models (hello's `usage`), as one calm line in
// the account menu. Nothing is shown when the server sets no limit: then there is
// nothing to watch.

function known(value) {
  return value !== null && value !== undefined;
}

/** The allowance in plain words, or "" when there is no limit. */
export function usageText(usage) {
  if (!usage) return "";
  const { daily_requests: allowance, used, remaining } = usage;
  if (allowance) {
    const left = known(remaining) ? `, ${remaining} left` : "";
    return `Hosted models today: ${used} of ${allowance} requests used${left}. Resets at midnight UTC.`;
  }
  if (known(remaining)) return `Hosted models today: ${remaining} requests left on this server. Resets at midnight UTC.`;
  return "";
}

/** Shows the line in `node`, or hides it when there is no limit. */
export function showUsage(node, usage) {
  const text = usageText(usage);
  node.textContent = text;
  node.hidden = !text;
}
