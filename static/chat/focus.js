// Keeping the keyboard focus across a re-render of the message list: the focused
// control is remembered by its message's id and its data-testid, and found again in
// the new elements (a re-render replaces the nodes, which drops the focus).

/** Where the focus is inside the list, by message id and control, to put it back after a re-render. */
export function rememberFocus(root) {
  const active = document.activeElement;
  if (!active || !root.contains(active) || !active.dataset || !active.dataset.testid) return null;
  const article = active.closest('[data-testid="message"]');
  return { id: article ? article.dataset.id : null, testid: active.dataset.testid };
}

/** Puts the focus back where rememberFocus found it, unless it is already inside the list. */
export function restoreFocus(root, focus) {
  if (!focus || (document.activeElement && root.contains(document.activeElement))) return;
  const article = focus.id ? root.querySelector(`[data-testid="message"][data-id="${CSS.escape(focus.id)}"]`) : root;
  const target = article && article.querySelector(`[data-testid="${CSS.escape(focus.testid)}"]`);
  if (target && !target.disabled) target.focus();
}
